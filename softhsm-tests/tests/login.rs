//! Token initialisation and the login state, on a blank token.
//!
//! Login is per application and C_Logout affects every session of it, so
//! these steps cannot share a process with other cases; they run as one
//! ordered case per target.

use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::{SessionState, UserType};
use softhsm_tests::keys::{self, KeySpec};
use softhsm_tests::target::pin;
use softhsm_tests::verify::{assert_genuine, sha256, Curve};
use softhsm_tests::{conformance, expect_rv, Divergence, Target, SO_PIN, USER_PIN};

conformance!(blank => token_lifecycle);

const LABEL: &str = "lifecycle";

fn token_lifecycle(t: &Target) {
    let info = t.pkcs11().get_token_info(t.slot()).expect("C_GetTokenInfo");
    assert!(
        !info.token_initialized(),
        "blank token claims CKF_TOKEN_INITIALIZED"
    );

    t.init_token(LABEL);
    let info = t.pkcs11().get_token_info(t.slot()).expect("C_GetTokenInfo");
    assert!(
        info.token_initialized(),
        "CKF_TOKEN_INITIALIZED after C_InitToken"
    );
    assert!(
        !info.user_pin_initialized(),
        "user PIN set before C_InitPIN"
    );
    assert_eq!(info.label(), LABEL);

    // SO session: init the user PIN.
    let s = t.session();
    assert_eq!(
        s.get_session_info().unwrap().session_state(),
        SessionState::RwPublic
    );
    expect_rv(
        s.login(UserType::So, Some(&pin("87654321"))),
        RvError::PinIncorrect,
    );
    s.login(UserType::So, Some(&pin(SO_PIN)))
        .expect("SO C_Login");
    assert_eq!(
        s.get_session_info().unwrap().session_state(),
        SessionState::RwSecurityOfficer
    );
    s.init_pin(&pin(USER_PIN)).expect("C_InitPIN");
    s.logout().expect("SO C_Logout");
    assert_eq!(
        s.get_session_info().unwrap().session_state(),
        SessionState::RwPublic
    );
    let info = t.pkcs11().get_token_info(t.slot()).expect("C_GetTokenInfo");
    assert!(
        info.user_pin_initialized(),
        "CKF_USER_PIN_INITIALIZED after C_InitPIN"
    );

    // Wrong user PIN, then the right one.
    expect_rv(
        s.login(UserType::User, Some(&pin("000000"))),
        RvError::PinIncorrect,
    );
    assert_eq!(
        s.get_session_info().unwrap().session_state(),
        SessionState::RwPublic
    );
    s.login(UserType::User, Some(&pin(USER_PIN)))
        .expect("user C_Login");
    assert_eq!(
        s.get_session_info().unwrap().session_state(),
        SessionState::RwUser
    );
    expect_rv(
        s.login(UserType::User, Some(&pin(USER_PIN))),
        RvError::UserAlreadyLoggedIn,
    );

    // Login is per application: a second session is logged in too.
    let other = t.session();
    assert_eq!(
        other.get_session_info().unwrap().session_state(),
        SessionState::RwUser
    );

    let spec = KeySpec::Ec(Curve::P256);
    let pair = keys::generate(&s, spec, "lifecycle-key");
    let public = keys::public_key(&s, spec, pair.public);
    s.logout().expect("user C_Logout");
    assert_eq!(
        other.get_session_info().unwrap().session_state(),
        SessionState::RwPublic
    );
    if t.diverges(Divergence::SoftHsmLogoutWithoutLoginIsOk) {
        s.logout().expect("SoftHSM's C_Logout while logged out");
    } else {
        expect_rv(s.logout(), RvError::UserNotLoggedIn);
    }

    // Logged out: the private key is invisible, the public one is not.
    let private_template = [
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::Label(b"lifecycle-key".to_vec()),
    ];
    assert!(
        keys::find(&other, &private_template).is_empty(),
        "private key visible before login"
    );
    keys::public_key_by_label(&other, "lifecycle-key");
    let hash = sha256(b"after relogin");
    assert!(
        other.sign(&Mechanism::Ecdsa, pair.private, &hash).is_err(),
        "signed with a private key while logged out"
    );

    other
        .login(UserType::User, Some(&pin(USER_PIN)))
        .expect("user C_Login again");
    let found = keys::private_key_by_label(&other, "lifecycle-key");
    let sig = other
        .sign(&Mechanism::Ecdsa, found, &hash)
        .expect("C_Sign after login");
    assert_genuine("ECDSA after relogin", &hash, |h| {
        public.verify_ecdsa_prehash(h, &sig)
    });
    other.logout().expect("C_Logout");
}
