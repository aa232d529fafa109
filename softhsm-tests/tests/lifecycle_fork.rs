//! fork() (PKCS#11 3.0 §6.7.7, DESIGN checklist item 5), against our module
//! with its daemon and against SoftHSMv2: the child of an initialised,
//! logged-in application starts with an uninitialised library, initialises
//! it again and works on its own; the parent's session and login are
//! unaffected. (Processes that exit with the module still initialised are
//! the real clients of tests/clients.rs; a forked test child cannot show
//! it, as its exit handlers would stop the parent's daemon.)
//!
//! The two tests run one at a time (a fork while another test thread is
//! inside a module could leave the child stuck on a lock that thread held).

use std::sync::Mutex;

use cryptoki::mechanism::Mechanism;
use cryptoki::session::SessionState;
use cryptoki_sys::*;
use softhsm_tests::ffi::in_forked_child;
use softhsm_tests::keys::{generate, public_key, KeySpec};
use softhsm_tests::verify::{assert_genuine, sha256, Curve};
use softhsm_tests::{Divergence, Target};

/// The cases fork, so they run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Child exit-status bits: which expectation failed.
const CHILD_SAW_PARENT_STATE: i32 = 1;
const CHILD_INIT_FAILED: i32 = 2;
const CHILD_TOKEN_FAILED: i32 = 4;
const CHILD_SESSION_FAILED: i32 = 8;

fn child_starts_clean_parent_keeps_working(t: &Target) {
    let session = t.user_session();
    let spec = KeySpec::Ec(Curve::P256);
    let pair = generate(&session, spec, "fork-key");
    let keeps_state = t.diverges(Divergence::SoftHsmKeepsStateAcrossFork);
    let raw = t.raw();
    let pkcs11 = t.pkcs11();
    let slot = t.slot();

    let status = in_forked_child(|| {
        let mut code = 0;
        let (info_rv, _) = raw.info();
        let init_rv = raw.initialize_with(None);
        if keeps_state {
            // Asserted exactly, so a SoftHSM that learns fork() is noticed.
            if info_rv != CKR_OK {
                code |= CHILD_SAW_PARENT_STATE;
            }
            if init_rv != CKR_CRYPTOKI_ALREADY_INITIALIZED {
                code |= CHILD_INIT_FAILED;
            }
            return code;
        }
        if info_rv != CKR_CRYPTOKI_NOT_INITIALIZED {
            code |= CHILD_SAW_PARENT_STATE;
        }
        if init_rv != CKR_OK {
            return code | CHILD_INIT_FAILED;
        }
        if let Err(e) = pkcs11.get_token_info(slot) {
            eprintln!("child: C_GetTokenInfo: {e}");
            code |= CHILD_TOKEN_FAILED;
        }
        // A session of the child's own, not logged in: the parent's login
        // belongs to the parent's application.
        match pkcs11.open_ro_session(slot) {
            Ok(s)
                if s.get_session_info()
                    .is_ok_and(|i| i.session_state() == SessionState::RoPublic) => {}
            _ => code |= CHILD_SESSION_FAILED,
        }
        code
    });
    assert_eq!(
        status,
        Some(0),
        "child status bits: see the CHILD_* constants"
    );

    // The parent: same session, still logged in, still signing.
    let info = session
        .get_session_info()
        .expect("parent's session survives");
    assert_eq!(info.session_state(), SessionState::RwUser);
    let data = b"signed after a fork";
    let signature = session
        .sign(&Mechanism::Ecdsa, pair.private, &sha256(data))
        .expect("parent signs after the child is gone");
    let key = public_key(&session, spec, pair.public);
    assert_genuine("signature after fork", &signature, |sig| {
        key.verify_ecdsa_sha256(data, sig)
    });
}

// One test per module, each taking the lock before its target exists, so
// no fork happens while the other module is being set up.
mod mesign {
    #[test]
    fn child_starts_clean_parent_keeps_working() {
        let _serial = super::SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        super::child_starts_clean_parent_keeps_working(&softhsm_tests::Target::ready(
            softhsm_tests::Kind::Mesign,
        ));
    }
}

mod softhsm {
    #[test]
    fn child_starts_clean_parent_keeps_working() {
        let _serial = super::SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        super::child_starts_clean_parent_keeps_working(&softhsm_tests::Target::ready(
            softhsm_tests::Kind::SoftHsm,
        ));
    }
}
