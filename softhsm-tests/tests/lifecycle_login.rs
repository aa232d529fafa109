//! Operation lifecycle around login, against our module and SoftHSMv2:
//! C_Login(CKU_CONTEXT_SPECIFIC) needs an active operation, and a
//! CKA_ALWAYS_AUTHENTICATE key signs once per context login (PKCS#11 3.0
//! §5.7 and §4.9); CKA_ALLOWED_MECHANISMS is enforced at C_SignInit and
//! C_VerifyInit with CKR_MECHANISM_INVALID.
//!
//! Every signature received is verified with RustCrypto.

use cryptoki::error::RvError;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::Attribute;
use cryptoki::session::{Session, UserType};
use softhsm_tests::keys::{public_key, KeyPair, KeySpec};
use softhsm_tests::target::pin;
use softhsm_tests::verify::assert_genuine;
use softhsm_tests::{conformance, expect_rv, Target, USER_PIN};

/// An RSA-2048 token key pair with extra private-key attributes.
fn rsa_pair(
    session: &Session,
    label: &str,
    public_extra: &[Attribute],
    private_extra: &[Attribute],
) -> KeyPair {
    let id = label.as_bytes().to_vec();
    let mut public = vec![
        Attribute::Token(true),
        Attribute::Verify(true),
        Attribute::ModulusBits(2048.into()),
        Attribute::PublicExponent(vec![1, 0, 1]),
        Attribute::Label(label.into()),
        Attribute::Id(id.clone()),
    ];
    public.extend_from_slice(public_extra);
    let mut private = vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Sign(true),
        Attribute::Label(label.into()),
        Attribute::Id(id),
    ];
    private.extend_from_slice(private_extra);
    let (public, private) = session
        .generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private)
        .expect("C_GenerateKeyPair");
    KeyPair { public, private }
}

fn context_login_needs_an_operation(t: &Target) {
    let session = t.user_session();
    expect_rv(
        session.login(UserType::ContextSpecific, Some(&pin(USER_PIN))),
        RvError::OperationNotInitialized,
    );
}

fn always_authenticate_key_signs_once_per_context_login(t: &Target) {
    let session = t.user_session();
    let pair = rsa_pair(
        &session,
        "always-auth",
        &[],
        &[Attribute::AlwaysAuthenticate(true)],
    );
    let key = public_key(&session, KeySpec::Rsa(2048), pair.public);
    let mechanism = Mechanism::Sha256RsaPkcs;
    let data = b"one PIN entry, one signature";

    // Without the context login the operation is refused at its first
    // step, which ends it.
    session.sign_init(&mechanism, pair.private).unwrap();
    expect_rv(session.sign_update(data), RvError::UserNotLoggedIn);
    expect_rv(session.sign_final(), RvError::OperationNotInitialized);

    // With it, exactly one signature.
    session.sign_init(&mechanism, pair.private).unwrap();
    session
        .login(UserType::ContextSpecific, Some(&pin(USER_PIN)))
        .expect("C_Login(CKU_CONTEXT_SPECIFIC) during the operation");
    session.sign_update(data).unwrap();
    let signature = session.sign_final().expect("signature after context login");
    assert_genuine("always-authenticate signature", &signature, |sig| {
        key.verify_rsa_pkcs1_sha256(data, sig)
    });

    // The next operation needs a login of its own, also single-part.
    session.sign_init(&mechanism, pair.private).unwrap();
    expect_rv(session.sign_update(data), RvError::UserNotLoggedIn);
    expect_rv(
        session.sign(&mechanism, pair.private, data),
        RvError::UserNotLoggedIn,
    );
}

fn allowed_mechanisms_are_enforced_at_init(t: &Target) {
    let session = t.user_session();
    let allowed = Attribute::AllowedMechanisms(vec![MechanismType::SHA256_RSA_PKCS]);
    let both = std::slice::from_ref(&allowed);
    let pair = rsa_pair(&session, "allowed-mechs", both, both);
    expect_rv(
        session.sign_init(&Mechanism::Sha384RsaPkcs, pair.private),
        RvError::MechanismInvalid,
    );
    expect_rv(
        session.verify_init(&Mechanism::Sha384RsaPkcs, pair.public),
        RvError::MechanismInvalid,
    );
    let data = b"allowed mechanism";
    let signature = session
        .sign(&Mechanism::Sha256RsaPkcs, pair.private, data)
        .expect("the allowed mechanism signs");
    let key = public_key(&session, KeySpec::Rsa(2048), pair.public);
    assert_genuine("allowed-mechanism signature", &signature, |sig| {
        key.verify_rsa_pkcs1_sha256(data, sig)
    });
    session
        .verify(&Mechanism::Sha256RsaPkcs, pair.public, data, &signature)
        .expect("the allowed mechanism verifies");
}

conformance!(ready =>
    context_login_needs_an_operation,
    always_authenticate_key_signs_once_per_context_login,
    allowed_mechanisms_are_enforced_at_init,
);
