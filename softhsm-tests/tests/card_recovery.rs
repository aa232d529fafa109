//! The daemon brings its card back without being restarted: after a card
//! reset, after the card's emulator process is killed (the daemon starts a
//! new one), and after the card dropped so many completions that the ring
//! ran out of slots. Through the whole stack (module → daemon → emulator
//! with fault injection, see `pci_driver_shim::emulator::faults`), on the
//! same module instance and the same session throughout; every signature is
//! verified with the `p256` crate. Meanwhile, failed calls get only
//! CKR_DEVICE_REMOVED or CKR_DEVICE_ERROR, never a hang. Ours only.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use softhsm_tests::daemon::Daemon;
use softhsm_tests::keys::{self, KeySpec};
use softhsm_tests::standalone::{card_pid, load_module, ready_session};
use softhsm_tests::verify::{assert_genuine, sha256, Curve, PublicKey};

/// The card deadline the daemon runs with here: dropped completions cost
/// this much each.
const CARD_TIMEOUT: Duration = Duration::from_millis(400);
/// How long the daemon may take to bring the card back.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(15);
/// Interval between attempts while the card comes back.
const POLL: Duration = Duration::from_millis(20);

#[track_caller]
fn assert_card_failure(e: &Error, phase: &str) {
    assert!(
        matches!(
            e,
            Error::Pkcs11(RvError::DeviceRemoved | RvError::DeviceError, _)
        ),
        "{phase}: a call failed with {e}, not a device error"
    );
}

struct Signer<'a> {
    session: &'a Session,
    key: ObjectHandle,
    public: PublicKey,
}

impl Signer<'_> {
    /// Signs until it works (card failures allowed meanwhile); returns how
    /// many calls failed first. Every signature is verified.
    fn until_it_works(&self, phase: &str) -> u32 {
        let hash = sha256(phase.as_bytes());
        let deadline = Instant::now() + RECOVERY_DEADLINE;
        let mut failures = 0;
        loop {
            let started = Instant::now();
            match self.session.sign(&Mechanism::Ecdsa, self.key, &hash) {
                Ok(sig) => {
                    assert_genuine(phase, &hash, |h| self.public.verify_ecdsa_prehash(h, &sig));
                    return failures;
                }
                Err(e) => {
                    assert_card_failure(&e, phase);
                    assert!(
                        started.elapsed() < CARD_TIMEOUT + Duration::from_secs(5),
                        "{phase}: one call took {:?}",
                        started.elapsed()
                    );
                    failures += 1;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{phase}: the card did not come back within {RECOVERY_DEADLINE:?} ({failures} failed calls)"
            );
            std::thread::sleep(POLL);
        }
    }
}

#[test]
fn the_daemon_brings_its_card_back() {
    let dir = tempfile::Builder::new()
        .prefix("card-recovery-")
        .tempdir()
        .expect("temp dir")
        .keep();
    let socket = dir.join("hsmd.sock");
    let faults: PathBuf = dir.join("faults");
    std::fs::write(&faults, "").expect("fault control file");
    // Read by the module at C_Initialize; this file's only test is the only
    // thread that loads it.
    std::env::set_var("MESIGN_HSM_SOCKET", &socket);
    let timeout = CARD_TIMEOUT.as_millis().to_string();
    let daemon = Daemon::start_with_env(
        &dir.join("state"),
        &socket,
        &dir.join("hsmd.log"),
        &[
            ("MESIGN_CARD_TIMEOUT_MS", OsStr::new(&timeout)),
            ("MESIGN_CARD_EMU_FAULTS", faults.as_os_str()),
        ],
    );
    let pkcs11 = load_module();
    let slots = pkcs11.get_slots_with_token().expect("C_GetSlotList");
    assert_eq!(slots.len(), 1, "one card, one slot");
    let session = ready_session(&pkcs11, slots[0], "recovery");
    let spec = KeySpec::Ec(Curve::P256);
    let pair = keys::generate(&session, spec, "card-recovery");
    let signer = Signer {
        session: &session,
        key: pair.private,
        public: keys::public_key(&session, spec, pair.public),
    };
    assert_eq!(signer.until_it_works("healthy card"), 0);
    let log = || daemon.log_text();

    // A reset ends the daemon's session with the card: the command it lost
    // is CKR_DEVICE_REMOVED; the daemon attaches again by itself.
    std::fs::write(&faults, "reset # 1\n").expect("inject reset");
    let hash = sha256(b"lost to the reset");
    match session.sign(&Mechanism::Ecdsa, pair.private, &hash) {
        Err(Error::Pkcs11(RvError::DeviceRemoved, _)) => {}
        other => panic!("the signature the reset cut off: {other:?}"),
    }
    let failed = signer.until_it_works("after a reset");
    eprintln!("card_recovery: reset recovered after {failed} failed calls");

    // The emulator process dies: the daemon starts a new one.
    let before = card_pid(daemon.pid()).expect("the daemon's card process");
    kill(Pid::from_raw(before as i32), Signal::SIGKILL).expect("SIGKILL the card");
    let failed = signer.until_it_works("after the card process was killed");
    let after = card_pid(daemon.pid()).expect("a card process after recovery");
    assert_ne!(after, before, "the card process was not replaced");
    eprintln!(
        "card_recovery: killed card replaced ({before} -> {after}) after {failed} failed calls"
    );

    // Dropped completions keep ring slots reserved; far more are lost than
    // the ring has (64), so without a reset of the card the ring would stay
    // exhausted once the card answers again.
    std::fs::write(&faults, "drop\n").expect("inject drop");
    std::thread::scope(|scope| {
        for worker in 0..16 {
            let pkcs11 = &pkcs11;
            let (key, slot) = (pair.private, slots[0]);
            scope.spawn(move || {
                let session = pkcs11.open_rw_session(slot).expect("C_OpenSession");
                for n in 0..6 {
                    let hash = sha256(format!("dropped {worker}/{n}").as_bytes());
                    let result = session.sign(&Mechanism::Ecdsa, key, &hash);
                    let e = result.expect_err("a card that drops completions signed");
                    assert_card_failure(&e, "while completions are dropped");
                }
            });
        }
    });
    std::fs::write(&faults, "").expect("clear faults");
    let failed = signer.until_it_works("after lost completions");
    eprintln!("card_recovery: lost completions recovered after {failed} failed calls");
    assert!(
        log().contains("too many completions lost"),
        "the daemon never reset the card for lost completions; log:\n{}",
        log()
    );

    drop(session);
    pkcs11.finalize().expect("C_Finalize");
    let text = log();
    let status = daemon.stop();
    assert!(status.success(), "daemon exit {status}; log:\n{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
