//! A signing server that signed from several threads keeps its loaded
//! module across a daemon restart: the module then holds several signing
//! pipes to the old daemon, and a fresh session's first C_Sign must still
//! succeed (each stale pipe fails to send once and is dropped, and the
//! request goes on until a fresh pipe takes it). Every signature is
//! verified with the `p256` crate. Ours only.

use cryptoki::mechanism::Mechanism;
use cryptoki::session::UserType;
use softhsm_tests::daemon::Daemon;
use softhsm_tests::keys::{self, KeySpec};
use softhsm_tests::standalone::{load_module, only_slot, ready_session};
use softhsm_tests::target::pin;
use softhsm_tests::verify::{assert_genuine, sha256, Curve};
use softhsm_tests::USER_PIN;

const THREADS: usize = 8;
const SIGNATURES_PER_THREAD: usize = 50;

#[test]
fn a_fresh_session_signs_after_a_restart_that_left_several_stale_pipes() {
    let dir = tempfile::Builder::new()
        .prefix("restart-pipes-")
        .tempdir()
        .expect("temp dir");
    let (state, socket) = (dir.path().join("state"), dir.path().join("hsmd.sock"));
    // Read by the module at C_Initialize; this is the file's only test.
    std::env::set_var("MESIGN_HSM_SOCKET", &socket);
    let daemon = Daemon::start(&state, &socket, &dir.path().join("hsmd-1.log"));
    let pkcs11 = load_module();
    let slot = only_slot(&pkcs11);
    let session = ready_session(&pkcs11, slot, "restart pipes");
    let pair = keys::generate(&session, KeySpec::Ec(Curve::P256), "restart-pipes-key");
    let public = keys::public_key(&session, KeySpec::Ec(Curve::P256), pair.public);

    // Concurrent signers make the module open its pipes.
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let (pkcs11, public) = (&pkcs11, &public);
            scope.spawn(move || {
                let session = pkcs11.open_ro_session(slot).expect("C_OpenSession");
                for i in 0..SIGNATURES_PER_THREAD {
                    let hash = sha256(format!("thread {thread} signature {i}").as_bytes());
                    let sig = session
                        .sign(&Mechanism::Ecdsa, pair.private, &hash)
                        .expect("C_Sign");
                    assert_genuine("before the restart", &hash, |h| {
                        public.verify_ecdsa_prehash(h, &sig)
                    });
                }
            });
        }
    });
    drop(session);

    assert!(daemon.stop().success(), "daemon stopped cleanly");
    let daemon = Daemon::start(&state, &socket, &dir.path().join("hsmd-2.log"));

    let session = pkcs11
        .open_ro_session(slot)
        .expect("C_OpenSession after the restart");
    session
        .login(UserType::User, Some(&pin(USER_PIN)))
        .expect("C_Login after the restart");
    let private = keys::private_key_by_label(&session, "restart-pipes-key");
    let hash = sha256(b"after the restart");
    let sig = session
        .sign(&Mechanism::Ecdsa, private, &hash)
        .unwrap_or_else(|e| panic!("first C_Sign after the restart: {e}\n{}", daemon.log_text()));
    assert_genuine("after the restart", &hash, |h| {
        public.verify_ecdsa_prehash(h, &sig)
    });
}
