//! PKCS#11 3.0 C_LoginUser and C_SessionCancel through the raw 3.0 function
//! list (C_GetInterface "PKCS 11" 3.0), on a token of its own: login state
//! is per application.
//!
//! The token has no named users, so ours documents C_LoginUser as C_Login
//! for a NULL or empty user name and `CKR_ARGUMENTS_BAD` for any other.
//! SoftHSMv2 2.6.1 is a 2.40 module without C_GetInterface; its case checks
//! exactly that (`Divergence::SoftHsmHasNoInterfaces`).

use cryptoki::mechanism::Mechanism;
use cryptoki::object::Attribute;
use cryptoki::session::{Session, SessionState};
use cryptoki_sys::{
    CKF_SIGN, CKR_ARGUMENTS_BAD, CKR_OK, CKR_OPERATION_NOT_INITIALIZED, CKR_PIN_INCORRECT,
    CKR_USER_ALREADY_LOGGED_IN, CKR_USER_ANOTHER_ALREADY_LOGGED_IN, CKR_USER_NOT_LOGGED_IN,
    CKR_USER_TYPE_INVALID, CKU_CONTEXT_SPECIFIC, CKU_SO, CKU_USER,
};
use softhsm_tests::ffi::Output;
use softhsm_tests::keys::{self, KeySpec};
use softhsm_tests::verify::{assert_genuine, sha256, Curve};
use softhsm_tests::{conformance, Divergence, Target, SO_PIN, USER_PIN};

conformance!(blank => login_user_and_session_cancel_through_the_3_0_interface);

fn state(s: &Session) -> SessionState {
    s.get_session_info()
        .expect("C_GetSessionInfo")
        .session_state()
}

fn login_user_and_session_cancel_through_the_3_0_interface(t: &Target) {
    t.init_token("login-user");
    t.init_user_pin();
    let s = t.session();
    let raw = t.raw();
    let login_user = |user_type, pin: &str, name: Option<&[u8]>| {
        raw.login_user(s.handle(), user_type, pin.as_bytes(), name)
    };
    let Some(wrong) = login_user(CKU_USER, "000000", None) else {
        assert!(
            t.diverges(Divergence::SoftHsmHasNoInterfaces),
            "{}: no 3.0 interface",
            t.kind().name()
        );
        assert_eq!(raw.session_cancel(s.handle(), CKF_SIGN), None);
        return;
    };
    assert_eq!(wrong, CKR_PIN_INCORRECT);
    assert_eq!(
        login_user(CKU_USER, USER_PIN, Some(b"alice")),
        Some(CKR_ARGUMENTS_BAD),
        "a user name the token does not have"
    );
    assert_eq!(login_user(7, USER_PIN, None), Some(CKR_USER_TYPE_INVALID));
    assert_eq!(state(&s), SessionState::RwPublic, "no login so far");

    assert_eq!(login_user(CKU_USER, USER_PIN, None), Some(CKR_OK));
    assert_eq!(state(&s), SessionState::RwUser);
    assert_eq!(
        login_user(CKU_USER, USER_PIN, None),
        Some(CKR_USER_ALREADY_LOGGED_IN)
    );
    assert_eq!(
        login_user(CKU_SO, SO_PIN, None),
        Some(CKR_USER_ANOTHER_ALREADY_LOGGED_IN)
    );
    s.logout().expect("C_Logout");
    // An empty (not NULL) name is no name either; the SO logs in the same way.
    assert_eq!(login_user(CKU_SO, SO_PIN, Some(b"")), Some(CKR_OK));
    assert_eq!(state(&s), SessionState::RwSecurityOfficer);
    s.logout().expect("SO C_Logout");
    assert_eq!(login_user(CKU_USER, USER_PIN, Some(b"")), Some(CKR_OK));

    // CKU_CONTEXT_SPECIFIC through C_LoginUser, and C_SessionCancel ending
    // the operation it authorised: the grant goes with the operation.
    assert_eq!(
        login_user(CKU_CONTEXT_SPECIFIC, USER_PIN, None),
        Some(CKR_OPERATION_NOT_INITIALIZED)
    );
    let (public, private) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::Token(true),
                Attribute::EcParams(Curve::P256.params_der()),
                Attribute::Label(b"login-user-always".to_vec()),
            ],
            &[
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sign(true),
                Attribute::AlwaysAuthenticate(true),
                Attribute::Label(b"login-user-always".to_vec()),
            ],
        )
        .expect("C_GenerateKeyPair with CKA_ALWAYS_AUTHENTICATE");
    let hash = sha256(b"cancelled, then signed");
    s.sign_init(&Mechanism::Ecdsa, private).expect("C_SignInit");
    assert_eq!(
        login_user(CKU_CONTEXT_SPECIFIC, "999999", None),
        Some(CKR_PIN_INCORRECT)
    );
    assert_eq!(
        login_user(CKU_CONTEXT_SPECIFIC, USER_PIN, None),
        Some(CKR_OK)
    );
    assert_eq!(raw.session_cancel(s.handle(), CKF_SIGN), Some(CKR_OK));
    let cancelled = raw.sign(s.handle(), &hash, Output::Bytes(64));
    assert_eq!(cancelled.rv, CKR_OPERATION_NOT_INITIALIZED);
    s.sign_init(&Mechanism::Ecdsa, private)
        .expect("C_SignInit after C_SessionCancel");
    let refused = raw.sign(s.handle(), &hash, Output::Bytes(64));
    assert_eq!(
        refused.rv, CKR_USER_NOT_LOGGED_IN,
        "the grant of a cancelled operation authorised the next one"
    );
    s.sign_init(&Mechanism::Ecdsa, private).expect("C_SignInit");
    assert_eq!(
        login_user(CKU_CONTEXT_SPECIFIC, USER_PIN, None),
        Some(CKR_OK)
    );
    let signed = raw.sign(s.handle(), &hash, Output::Bytes(64));
    assert_eq!(signed.rv, CKR_OK);
    let key = keys::public_key(&s, KeySpec::Ec(Curve::P256), public);
    assert_genuine(
        "ECDSA after C_LoginUser(CKU_CONTEXT_SPECIFIC)",
        &hash,
        |h| key.verify_ecdsa_prehash(h, &signed.bytes),
    );
    s.logout().expect("C_Logout");
}
