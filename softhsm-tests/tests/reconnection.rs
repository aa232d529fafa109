//! A signing server keeps its loaded module across a daemon restart (issue
//! #6, item 3): while the daemon is down every call fails fast with a
//! device error instead of hanging; after the restart the sessions opened
//! before it answer CKR_SESSION_HANDLE_INVALID (the daemon forgot them), and
//! new sessions, a new login and signing work without C_Finalize /
//! C_Initialize. Every signature is verified with the `p256` crate. Ours
//! only (SoftHSMv2 has no daemon).

use std::time::{Duration, Instant};

use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::session::UserType;
use softhsm_tests::daemon::Daemon;
use softhsm_tests::keys::{self, KeySpec};
use softhsm_tests::standalone::{load_module, only_slot, ready_session};
use softhsm_tests::target::pin;
use softhsm_tests::verify::{assert_genuine, sha256, Curve};
use softhsm_tests::USER_PIN;

/// How long a call may take while the daemon is down.
const FAIL_FAST: Duration = Duration::from_millis(500);

#[track_caller]
fn assert_rv<T: std::fmt::Debug>(result: Result<T, Error>, want: &[RvError], what: &str) {
    match result {
        Err(Error::Pkcs11(rv, _)) if want.contains(&rv) => {}
        other => panic!("{what}: {other:?}, want one of {want:?}"),
    }
}

#[test]
fn sessions_survive_as_defined_errors_and_new_ones_work_after_a_restart() {
    let dir = tempfile::Builder::new()
        .prefix("reconnection-")
        .tempdir()
        .expect("temp dir");
    let (state, socket) = (dir.path().join("state"), dir.path().join("hsmd.sock"));
    // Read by the module at C_Initialize; this is the file's only test.
    std::env::set_var("MESIGN_HSM_SOCKET", &socket);
    let daemon = Daemon::start(&state, &socket, &dir.path().join("hsmd-1.log"));
    let pkcs11 = load_module();
    let slot = only_slot(&pkcs11);
    let old = ready_session(&pkcs11, slot, "reconnection");
    let pair = keys::generate(&old, KeySpec::Ec(Curve::P256), "reconnection-key");
    let public = keys::public_key(&old, KeySpec::Ec(Curve::P256), pair.public);
    let hash = sha256(b"before the restart");
    let sig = old
        .sign(&Mechanism::Ecdsa, pair.private, &hash)
        .expect("sign");
    assert_genuine("before the restart", &hash, |h| {
        public.verify_ecdsa_prehash(h, &sig)
    });
    let second_old = pkcs11.open_ro_session(slot).expect("second session");

    assert!(daemon.stop().success(), "daemon stopped cleanly");

    // Down: every kind of call fails fast with CKR_DEVICE_REMOVED (a
    // pooled connection the daemon closed is noticed when sending on it
    // fails, and the module then finds nobody to connect to).
    for attempt in 0..3 {
        let started = Instant::now();
        assert_rv(
            old.sign(&Mechanism::Ecdsa, pair.private, &hash),
            &[RvError::DeviceRemoved],
            &format!("C_Sign while the daemon is down (attempt {attempt})"),
        );
        assert_rv(
            pkcs11.open_ro_session(slot),
            &[RvError::DeviceRemoved],
            "C_OpenSession while the daemon is down",
        );
        assert_rv(
            pkcs11.get_token_info(slot),
            &[RvError::DeviceRemoved],
            "C_GetTokenInfo while the daemon is down",
        );
        let took = started.elapsed();
        assert!(
            took < FAIL_FAST * 3,
            "three calls took {took:?} with the daemon down"
        );
    }
    assert_rv(
        pkcs11.get_slots_with_token(),
        &[RvError::DeviceRemoved],
        "C_GetSlotList while the daemon is down",
    );

    let daemon = Daemon::start(&state, &socket, &dir.path().join("hsmd-2.log"));

    // Sessions opened before the restart are gone: a defined error, not a
    // transport failure, and not another application's (or a new) session.
    assert_rv(
        old.sign(&Mechanism::Ecdsa, pair.private, &hash),
        &[RvError::SessionHandleInvalid],
        "C_SignInit on a session from before the restart",
    );
    assert_rv(
        second_old.get_session_info(),
        &[RvError::SessionHandleInvalid],
        "C_GetSessionInfo on a session from before the restart",
    );

    // New sessions work on the same loaded module.
    let new = pkcs11
        .open_rw_session(slot)
        .expect("C_OpenSession after the restart");
    new.login(UserType::User, Some(&pin(USER_PIN)))
        .expect("C_Login after the restart");
    let private = keys::private_key_by_label(&new, "reconnection-key");
    let hash = sha256(b"after the restart");
    let sig = new
        .sign(&Mechanism::Ecdsa, private, &hash)
        .unwrap_or_else(|e| panic!("sign after the restart: {e}\n{}", daemon.log_text()));
    assert_genuine("after the restart", &hash, |h| {
        public.verify_ecdsa_prehash(h, &sig)
    });

    // The old handles stay dead, and no new session takes one of them: the
    // daemon starts numbering sessions at a random offset on every start
    // (a stale handle must never name a session opened after the restart).
    let more: Vec<_> = (0..4)
        .map(|_| pkcs11.open_ro_session(slot).expect("C_OpenSession"))
        .collect();
    for s in more.iter().chain([&new]) {
        assert!(
            s.handle() != old.handle() && s.handle() != second_old.handle(),
            "a new session got the handle of a session from before the restart"
        );
    }
    drop(more);
    assert_rv(
        second_old.get_session_info(),
        &[RvError::SessionHandleInvalid],
        "C_GetSessionInfo on an old session after new ones opened",
    );
    drop(new);
    // Closing a forgotten session is not an error worth failing a host for.
    let _ = old.close();
    let _ = second_old.close();
    drop(daemon);
}
