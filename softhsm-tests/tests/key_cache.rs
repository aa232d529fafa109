//! The module answers a repeated C_SignInit / C_VerifyInit on a token key
//! from what the first one learnt, so that a signature costs one round trip.
//! This case pins down that a key this application destroyed is never
//! answered from stale knowledge (tests/sessions.rs covers C_Logout, which
//! must run on a token of its own).

use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use softhsm_tests::keys::{self, KeySpec};
use softhsm_tests::verify::{assert_genuine, sha256, Curve};
use softhsm_tests::{conformance, expect_rv, Divergence, Target};

conformance!(ready =>
    repeated_sign_init_signs_and_a_destroyed_key_is_refused,
);

const MESSAGE: &[u8] = b"key metadata cache";

fn key_gone(t: &Target) -> RvError {
    if t.diverges(Divergence::SoftHsmSignInitObjectHandleInvalid) {
        RvError::ObjectHandleInvalid
    } else {
        RvError::KeyHandleInvalid
    }
}

fn repeated_sign_init_signs_and_a_destroyed_key_is_refused(t: &Target) {
    let s = t.user_session();
    let spec = KeySpec::Ec(Curve::P256);
    let pair = keys::generate(&s, spec, "cache-destroy");
    let public = keys::public_key(&s, spec, pair.public);
    let hash = sha256(MESSAGE);
    for round in 0..3 {
        let sig = s
            .sign(&Mechanism::Ecdsa, pair.private, &hash)
            .unwrap_or_else(|e| panic!("C_Sign round {round}: {e}"));
        assert_genuine("CKM_ECDSA after a repeated C_SignInit", &hash, |h| {
            public.verify_ecdsa_prehash(h, &sig)
        });
        s.verify(&Mechanism::Ecdsa, pair.public, &hash, &sig)
            .unwrap_or_else(|e| panic!("C_Verify round {round}: {e}"));
    }
    s.destroy_object(pair.private)
        .expect("C_DestroyObject private");
    expect_rv(s.sign_init(&Mechanism::Ecdsa, pair.private), key_gone(t));
    s.destroy_object(pair.public)
        .expect("C_DestroyObject public");
    expect_rv(s.verify_init(&Mechanism::Ecdsa, pair.public), key_gone(t));
}
