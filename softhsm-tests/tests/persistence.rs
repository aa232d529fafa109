//! Token objects survive a restart of everything below the application.
//!
//! Ours: C_Finalize, SIGTERM the daemon, start it again on the same state
//! directory, C_Initialize. SoftHSM: C_Finalize and C_Initialize, which makes
//! it reload its file store. Own file: the restart affects the whole process.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use softhsm_tests::keys::{self, KeySpec};
use softhsm_tests::verify::{assert_genuine, sha256, Curve};
use softhsm_tests::{conformance, Target};

conformance!(ready => key_pairs_and_data_survive_restart);

const MESSAGE: &[u8] = b"signed before and after a restart";

fn key_pairs_and_data_survive_restart(t: &Target) {
    let ec_spec = KeySpec::Ec(Curve::P256);
    let rsa_spec = KeySpec::Rsa(2048);
    let (ec_public, rsa_public) = {
        let s = t.user_session();
        let ec = keys::generate(&s, ec_spec, "persist-ec");
        let rsa = keys::generate(&s, rsa_spec, "persist-rsa");
        s.create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(true),
            Attribute::Label(b"persist-data".to_vec()),
            Attribute::Value(b"kept".to_vec()),
        ])
        .expect("C_CreateObject");
        // A session object must not survive.
        s.create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(false),
            Attribute::Label(b"persist-session-data".to_vec()),
            Attribute::Value(b"gone".to_vec()),
        ])
        .expect("C_CreateObject session object");
        (
            keys::public_key(&s, ec_spec, ec.public),
            keys::public_key(&s, rsa_spec, rsa.public),
        )
    };

    t.restart();

    let s = t.user_session();
    let ec = keys::private_key_by_label(&s, "persist-ec");
    let rsa = keys::private_key_by_label(&s, "persist-rsa");
    assert_eq!(
        keys::public_key(&s, ec_spec, keys::public_key_by_label(&s, "persist-ec")),
        ec_public,
        "EC public key changed across the restart"
    );
    let hash = sha256(MESSAGE);
    let sig = s
        .sign(&Mechanism::Ecdsa, ec, &hash)
        .unwrap_or_else(|e| panic!("ECDSA after restart: {e}\n{}", t.daemon_log()));
    assert_genuine("ECDSA after restart", &hash, |h| {
        ec_public.verify_ecdsa_prehash(h, &sig)
    });
    let sig = s
        .sign(&Mechanism::Sha256RsaPkcs, rsa, MESSAGE)
        .expect("RSA after restart");
    assert_genuine("SHA256_RSA_PKCS after restart", MESSAGE, |m| {
        rsa_public.verify_rsa_pkcs1_sha256(m, &sig)
    });
    let data = keys::find(&s, &[Attribute::Label(b"persist-data".to_vec())]);
    assert_eq!(data.len(), 1, "token data object after restart");
    assert!(
        keys::find(&s, &[Attribute::Label(b"persist-session-data".to_vec())]).is_empty(),
        "a session object survived the restart"
    );
}
