//! Session states, the login rules between SO and user, C_Logout
//! invalidating private handles (for good: also after the next C_Login) and
//! destroying private session objects, and CKA_ALWAYS_AUTHENTICATE with
//! CKU_CONTEXT_SPECIFIC (PKCS#11 3.0 §5.6–5.7), on a token of its own.
//!
//! Login is per application, so these steps change state every other case
//! in the process would see; they run as one ordered case per target.

use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki_sys::{CKR_OK, CKR_USER_NOT_LOGGED_IN};
use softhsm_tests::ffi::Output;
use softhsm_tests::keys::{self, KeySpec};
use softhsm_tests::target::pin;
use softhsm_tests::verify::{assert_genuine, sha256, Curve};
use softhsm_tests::{conformance, expect_rv, Divergence, Target, SO_PIN, USER_PIN};

conformance!(blank => session_states_logins_and_context_specific_login);

fn state(s: &Session) -> SessionState {
    s.get_session_info()
        .expect("C_GetSessionInfo")
        .session_state()
}

fn session_states_logins_and_context_specific_login(t: &Target) {
    t.init_token("sessions");
    t.init_user_pin();
    let pkcs11 = t.pkcs11();

    // Public sessions; an SO login is refused while a read-only one exists.
    let ro = pkcs11.open_ro_session(t.slot()).expect("R/O C_OpenSession");
    let rw = t.session();
    assert_eq!(state(&ro), SessionState::RoPublic);
    assert_eq!(state(&rw), SessionState::RwPublic);
    expect_rv(
        rw.login(UserType::So, Some(&pin(SO_PIN))),
        RvError::SessionReadOnlyExists,
    );
    drop(ro);

    // SO: no read-only sessions, no second login of either kind.
    rw.login(UserType::So, Some(&pin(SO_PIN)))
        .expect("SO C_Login");
    assert_eq!(state(&rw), SessionState::RwSecurityOfficer);
    expect_rv(
        pkcs11.open_ro_session(t.slot()),
        RvError::SessionReadWriteSoExists,
    );
    expect_rv(
        rw.login(UserType::So, Some(&pin(SO_PIN))),
        RvError::UserAlreadyLoggedIn,
    );
    expect_rv(
        rw.login(UserType::User, Some(&pin(USER_PIN))),
        RvError::UserAnotherAlreadyLoggedIn,
    );
    rw.logout().expect("SO C_Logout");

    // User: shared by every session of the application, old and new.
    rw.login(UserType::User, Some(&pin(USER_PIN)))
        .expect("user C_Login");
    let ro = pkcs11.open_ro_session(t.slot()).expect("R/O C_OpenSession");
    assert_eq!(state(&rw), SessionState::RwUser);
    assert_eq!(state(&ro), SessionState::RoUser);
    expect_rv(
        ro.login(UserType::User, Some(&pin(USER_PIN))),
        RvError::UserAlreadyLoggedIn,
    );
    read_only_sessions_make_no_token_objects(&ro, &rw);
    // (With the read-only session still open, SoftHSMv2 reports
    // CKR_SESSION_READ_ONLY_EXISTS first; the specification orders neither.)
    drop(ro);
    expect_rv(
        rw.login(UserType::So, Some(&pin(SO_PIN))),
        RvError::UserAnotherAlreadyLoggedIn,
    );

    logout_invalidates_private_handles(t, &rw);
    always_authenticate_needs_a_context_login_per_signature(t, &rw);
    rw.logout().expect("final C_Logout");
}

/// A read-only session may make and destroy session objects but may not
/// create, change or destroy token objects: CKR_SESSION_READ_ONLY.
fn read_only_sessions_make_no_token_objects(ro: &Session, rw: &Session) {
    let data = |token: bool| {
        vec![
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(token),
            Attribute::Label(b"sessions-read-only".to_vec()),
        ]
    };
    expect_rv(ro.create_object(&data(true)), RvError::SessionReadOnly);
    let mine = ro
        .create_object(&data(false))
        .expect("a session object in a read-only session");
    ro.destroy_object(mine)
        .expect("C_DestroyObject of a session object in a read-only session");
    let token = rw.create_object(&data(true)).expect("C_CreateObject");
    expect_rv(
        ro.update_attributes(token, &[Attribute::Label(b"renamed".to_vec())]),
        RvError::SessionReadOnly,
    );
    expect_rv(ro.destroy_object(token), RvError::SessionReadOnly);
    rw.destroy_object(token).expect("C_DestroyObject");
}

fn logout_invalidates_private_handles(t: &Target, rw: &Session) {
    let data = rw
        .create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Label(b"sessions-private-data".to_vec()),
            Attribute::Value(b"private".to_vec()),
        ])
        .expect("C_CreateObject of a private data object");
    let session_data = rw
        .create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(false),
            Attribute::Private(true),
            Attribute::Label(b"sessions-private-session-data".to_vec()),
        ])
        .expect("C_CreateObject of a private session object");
    let spec = KeySpec::Ec(Curve::P256);
    let pair = keys::generate(rw, spec, "sessions-key");
    let hash = sha256(b"signed before logout");

    // An operation holding the private key is running when the user logs
    // out (from another session: login state is per application).
    rw.sign_init(&Mechanism::Ecdsa, pair.private)
        .expect("C_SignInit");
    let other = t.session();
    other.logout().expect("C_Logout");
    let after = t.raw().sign(rw.handle(), &hash, Output::Bytes(64));
    if t.diverges(Divergence::SoftHsmSignsAfterLogout) {
        assert_eq!(after.rv, CKR_OK);
    } else {
        assert_ne!(
            after.rv, CKR_OK,
            "C_Sign with a private key after C_Logout produced a signature"
        );
    }

    expect_rv(
        rw.get_attributes(data, &[AttributeType::Label]),
        RvError::ObjectHandleInvalid,
    );
    expect_rv(
        rw.get_attributes(pair.private, &[AttributeType::Label]),
        RvError::ObjectHandleInvalid,
    );
    let key_gone = if t.diverges(Divergence::SoftHsmSignInitObjectHandleInvalid) {
        RvError::ObjectHandleInvalid
    } else {
        RvError::KeyHandleInvalid
    };
    expect_rv(rw.sign_init(&Mechanism::Ecdsa, pair.private), key_gone);
    assert!(
        keys::find(rw, &[Attribute::Label(b"sessions-private-data".to_vec())]).is_empty(),
        "a private object is found after C_Logout"
    );
    // Public objects stay reachable.
    keys::public_key_by_label(rw, "sessions-key");

    rw.login(UserType::User, Some(&pin(USER_PIN)))
        .expect("user C_Login again");
    // Handles from before the logout stay invalid (2.40 §5.6: "even if a
    // user is later logged back in").
    for (what, object) in [
        ("private data object", data),
        ("private key", pair.private),
        ("private session object", session_data),
    ] {
        let after = rw.get_attributes(object, &[AttributeType::Label]);
        assert!(
            matches!(
                after,
                Err(cryptoki::error::Error::Pkcs11(
                    RvError::ObjectHandleInvalid,
                    _
                ))
            ),
            "old handle of the {what} after a new C_Login: {after:?}"
        );
    }
    expect_rv(rw.sign_init(&Mechanism::Ecdsa, pair.private), key_gone);
    assert!(
        keys::find(
            rw,
            &[Attribute::Label(b"sessions-private-session-data".to_vec())]
        )
        .is_empty(),
        "C_Logout destroys the application's private session objects"
    );
    // The token objects themselves are found again, under working handles.
    let found = keys::find(rw, &[Attribute::Label(b"sessions-private-data".to_vec())]);
    assert_eq!(found.len(), 1, "the private object is back after login");
    assert_eq!(
        keys::bytes(rw, found[0], AttributeType::Value),
        Some(b"private".to_vec())
    );
    let key = keys::private_key_by_label(rw, "sessions-key");
    let signature = rw
        .sign(&Mechanism::Ecdsa, key, &hash)
        .expect("C_Sign with the key found again");
    let public = keys::public_key(rw, spec, pair.public);
    assert_genuine("ECDSA with the key found after a new login", &hash, |h| {
        public.verify_ecdsa_prehash(h, &signature)
    });
}

fn generate_always_authenticate(s: &Session) -> keys::KeyPair {
    let (public, private) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::Token(false),
                Attribute::EcParams(Curve::P256.params_der()),
                Attribute::Label(b"sessions-always-auth".to_vec()),
            ],
            &[
                Attribute::Token(false),
                Attribute::Private(true),
                Attribute::Sign(true),
                Attribute::AlwaysAuthenticate(true),
                Attribute::Label(b"sessions-always-auth".to_vec()),
            ],
        )
        .expect("C_GenerateKeyPair with CKA_ALWAYS_AUTHENTICATE");
    keys::KeyPair { public, private }
}

/// A context login authorises exactly the operation it was given for: not
/// an operation whose key does not ask for one, not twice, and not a later
/// operation once its own ended in an error.
fn grant_is_for_one_operation_only(
    t: &Target,
    s: &Session,
    pair: &keys::KeyPair,
    public: &softhsm_tests::verify::PublicKey,
    hash: &[u8],
) {
    let context = || s.login(UserType::ContextSpecific, Some(&pin(USER_PIN)));
    let plain = keys::generate(s, KeySpec::Ec(Curve::P256), "sessions-plain");
    s.sign_init(&Mechanism::Ecdsa, plain.private)
        .expect("C_SignInit with an ordinary key");
    expect_rv(context(), RvError::OperationNotInitialized);
    let signed = t.raw().sign(s.handle(), hash, Output::Bytes(64));
    assert_eq!(signed.rv, CKR_OK, "the ordinary key signs without one");

    s.sign_init(&Mechanism::Ecdsa, pair.private)
        .expect("C_SignInit");
    context().expect("C_Login(CKU_CONTEXT_SPECIFIC)");
    expect_rv(context(), RvError::OperationNotInitialized);
    // CKM_ECDSA is single-part: C_SignUpdate fails and ends the operation
    // before the granted signature is made.
    assert!(s.sign_update(hash).is_err(), "C_SignUpdate with CKM_ECDSA");
    // Another key's operation, then the always-authenticate key again: the
    // grant of the failed operation authorises neither.
    let other = s
        .sign(&Mechanism::Ecdsa, plain.private, hash)
        .expect("C_Sign with another key");
    let plain_public = keys::public_key(s, KeySpec::Ec(Curve::P256), plain.public);
    assert_genuine("ECDSA with the ordinary key", hash, |h| {
        plain_public.verify_ecdsa_prehash(h, &other)
    });
    s.sign_init(&Mechanism::Ecdsa, pair.private)
        .expect("C_SignInit");
    let refused = t.raw().sign(s.handle(), hash, Output::Bytes(64));
    assert_eq!(
        refused.rv, CKR_USER_NOT_LOGGED_IN,
        "a grant outlived the operation it was given for"
    );
    s.sign_init(&Mechanism::Ecdsa, pair.private)
        .expect("C_SignInit");
    context().expect("C_Login(CKU_CONTEXT_SPECIFIC)");
    let signed = t.raw().sign(s.handle(), hash, Output::Bytes(64));
    assert_eq!(signed.rv, CKR_OK);
    assert_genuine("ECDSA after a fresh context login", hash, |h| {
        public.verify_ecdsa_prehash(h, &signed.bytes)
    });
}

fn always_authenticate(s: &Session, key: ObjectHandle) -> bool {
    match s.get_attributes(key, &[AttributeType::AlwaysAuthenticate]) {
        Ok(list) => matches!(list.as_slice(), [Attribute::AlwaysAuthenticate(true)]),
        Err(e) => panic!("C_GetAttributeValue CKA_ALWAYS_AUTHENTICATE: {e}"),
    }
}

fn always_authenticate_needs_a_context_login_per_signature(t: &Target, s: &Session) {
    let spec = KeySpec::Ec(Curve::P256);
    let pair = generate_always_authenticate(s);
    assert!(always_authenticate(s, pair.private));
    let public = keys::public_key(s, spec, pair.public);
    let hash = sha256(b"a signature that needs its own PIN entry");

    // Without the context login the signature is refused.
    s.sign_init(&Mechanism::Ecdsa, pair.private)
        .expect("C_SignInit");
    let refused = t.raw().sign(s.handle(), &hash, Output::Bytes(64));
    assert_eq!(refused.rv, CKR_USER_NOT_LOGGED_IN);

    // A wrong PIN is refused; the right one allows exactly one signature.
    s.sign_init(&Mechanism::Ecdsa, pair.private)
        .expect("C_SignInit");
    expect_rv(
        s.login(UserType::ContextSpecific, Some(&pin("999999"))),
        RvError::PinIncorrect,
    );
    s.login(UserType::ContextSpecific, Some(&pin(USER_PIN)))
        .expect("C_Login(CKU_CONTEXT_SPECIFIC)");
    let signed = t.raw().sign(s.handle(), &hash, Output::Bytes(64));
    assert_eq!(signed.rv, CKR_OK, "C_Sign after the context login");
    assert_genuine("ECDSA with CKA_ALWAYS_AUTHENTICATE", &hash, |h| {
        public.verify_ecdsa_prehash(h, &signed.bytes)
    });
    s.sign_init(&Mechanism::Ecdsa, pair.private)
        .expect("C_SignInit");
    let again = t.raw().sign(s.handle(), &hash, Output::Bytes(64));
    assert_eq!(
        again.rv, CKR_USER_NOT_LOGGED_IN,
        "the context login was used up by one signature"
    );

    // A context login needs an operation to apply to.
    expect_rv(
        s.login(UserType::ContextSpecific, Some(&pin(USER_PIN))),
        RvError::OperationNotInitialized,
    );
    grant_is_for_one_operation_only(t, s, &pair, &public, &hash);
    // The ordinary login is untouched by all this.
    assert_eq!(state(s), SessionState::RwUser);
}
