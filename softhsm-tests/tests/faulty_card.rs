//! A faulty card, through the whole stack: module → daemon → card emulator
//! with fault injection (`MESIGN_CARD_EMU_FAULTS`, see
//! `pci_driver_shim::emulator::faults`).
//!
//! A dropped completion reaches the client as CKR_DEVICE_ERROR within the
//! card deadline (shortened with `MESIGN_CARD_TIMEOUT_MS`) while other
//! clients keep being served; a late completion still gives a good
//! signature; a corrupt answer is CKR_DEVICE_ERROR; a tampered card refuses
//! to sign but its token still lists; a reset card is CKR_DEVICE_REMOVED for
//! the command it lost (the daemon then attaches again); a
//! card whose power-on self-test failed refuses key generation and random
//! numbers while its token still lists. Ours only: SoftHSM has no card.
//!
//! One test, phases in order: the module is initialised once per daemon,
//! and the environment the daemon inherits must be set per daemon.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::session::Session;
use softhsm_tests::daemon::Daemon;
use softhsm_tests::expect_rv;
use softhsm_tests::keys::{self, KeySpec};
use softhsm_tests::standalone::{load_module, only_slot, ready_session};
use softhsm_tests::verify::{assert_genuine, sha256, Curve};

/// The card deadline the daemon runs with in this test.
const CARD_TIMEOUT: Duration = Duration::from_millis(1500);
/// Scheduling slack on a loaded two-core machine.
const SLACK: Duration = Duration::from_secs(3);

struct Fixture {
    dir: PathBuf,
    socket: PathBuf,
    faults: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("faulty-card-")
            .tempdir()
            .expect("temp dir")
            .keep();
        let socket = dir.join("hsmd.sock");
        // The module reads it at C_Initialize; set before any module loads,
        // while this file's only test is the only thread that calls it.
        std::env::set_var("MESIGN_HSM_SOCKET", &socket);
        Fixture {
            faults: dir.join("faults"),
            socket,
            dir,
        }
    }

    fn daemon(&self, name: &str, extra: &[(&str, &OsStr)]) -> Daemon {
        let timeout = CARD_TIMEOUT.as_millis().to_string();
        let mut env: Vec<(&str, &OsStr)> = vec![
            ("MESIGN_CARD_TIMEOUT_MS", OsStr::new(&timeout)),
            ("MESIGN_CARD_EMU_FAULTS", self.faults.as_os_str()),
        ];
        env.extend_from_slice(extra);
        Daemon::start_with_env(
            &self.dir.join(name),
            &self.socket,
            &self.dir.join(format!("{name}.log")),
            &env,
        )
    }

    fn inject(&self, directives: &str) {
        std::fs::write(&self.faults, directives).expect("write the fault control file");
    }
}

#[test]
fn faulty_card_through_the_whole_stack() {
    let fixture = Fixture::new();
    faults_while_running(&fixture);
    failed_self_test(&fixture);
    let _ = std::fs::remove_dir_all(&fixture.dir);
}

fn faults_while_running(fixture: &Fixture) {
    fixture.inject("");
    let daemon = fixture.daemon("running", &[]);
    let pkcs11 = load_module();
    let slot = only_slot(&pkcs11);
    let session = ready_session(&pkcs11, slot, "faulty");
    let spec = KeySpec::Ec(Curve::P256);
    let pair = keys::generate(&session, spec, "faulty-card");
    let public = keys::public_key(&session, spec, pair.public);
    let hash = sha256(b"signed by a faulty card");
    let sign = |session: &Session| session.sign(&Mechanism::Ecdsa, pair.private, &hash);
    let verify = |what: &str, sig: &[u8]| {
        assert_genuine(what, &hash, |h| public.verify_ecdsa_prehash(h, sig));
    };
    verify("healthy card", &sign(&session).expect("sign"));

    // Dropped completions: the signer gets CKR_DEVICE_ERROR at the deadline;
    // another client, meanwhile, is answered at once, and a second signer
    // waits in parallel rather than behind the first.
    fixture.inject("drop\n");
    let other = pkcs11.open_rw_session(slot).expect("C_OpenSession");
    let waiting = Arc::new(AtomicBool::new(true));
    let prober = {
        let waiting = Arc::clone(&waiting);
        let pkcs11 = pkcs11.clone();
        std::thread::spawn(move || {
            let mut slowest = Duration::ZERO;
            let mut probes = 0;
            while waiting.load(Ordering::Acquire) {
                let started = Instant::now();
                pkcs11.get_token_info(slot).expect("C_GetTokenInfo");
                slowest = slowest.max(started.elapsed());
                probes += 1;
                std::thread::yield_now();
            }
            (probes, slowest)
        })
    };
    let second = {
        let pkcs11 = pkcs11.clone();
        let hash = hash.clone();
        let key = pair.private;
        std::thread::spawn(move || {
            let session = pkcs11.open_rw_session(slot).expect("C_OpenSession");
            let started = Instant::now();
            let result = session.sign(&Mechanism::Ecdsa, key, &hash);
            (result.map(drop), started.elapsed())
        })
    };
    let started = Instant::now();
    expect_rv(sign(&other), RvError::DeviceError);
    let first_took = started.elapsed();
    let (second_result, second_took) = second.join().expect("second signer");
    waiting.store(false, Ordering::Release);
    let (probes, slowest) = prober.join().expect("prober");
    expect_rv(second_result, RvError::DeviceError);
    for took in [first_took, second_took] {
        assert!(
            took >= CARD_TIMEOUT.mul_f32(0.9) && took < CARD_TIMEOUT + SLACK,
            "a dropped completion failed after {took:?}, deadline {CARD_TIMEOUT:?}"
        );
    }
    assert!(probes > 0, "the other client never got through");
    assert!(
        slowest < CARD_TIMEOUT / 2,
        "another client waited {slowest:?} while the card stalled"
    );

    // The card answers again: so does the stack, on the same sessions.
    fixture.inject("");
    verify("after dropped completions", &sign(&other).expect("sign"));

    // A late completion inside the deadline is a good signature.
    fixture.inject("delay 300\n");
    let started = Instant::now();
    let sig = sign(&session).expect("sign with a slow card");
    assert!(started.elapsed() >= Duration::from_millis(300));
    verify("slow card", &sig);

    // An answer that does not decode.
    fixture.inject("corrupt\n");
    expect_rv(sign(&session), RvError::DeviceError);
    fixture.inject("");
    verify("after a corrupt answer", &sign(&session).expect("sign"));

    // Tamper: the card refuses service until it restarts; the token lists.
    fixture.inject("tamper\n");
    expect_rv(sign(&session), RvError::DeviceError);
    fixture.inject("");
    expect_rv(sign(&session), RvError::DeviceError);
    expect_rv(session.generate_random_vec(16), RvError::DeviceError);
    assert_eq!(
        only_slot(&pkcs11),
        slot,
        "the tampered card's token is gone"
    );
    let info = pkcs11.get_token_info(slot).expect("C_GetTokenInfo");
    assert_eq!(info.label(), "faulty");

    // Reset: the daemon's session with the card ends; the client hears
    // CKR_DEVICE_REMOVED at once, not at the deadline.
    fixture.inject("reset\n");
    let started = Instant::now();
    expect_rv(sign(&session), RvError::DeviceRemoved);
    assert!(
        started.elapsed() < CARD_TIMEOUT,
        "a reset card took {:?} to notice",
        started.elapsed()
    );
    // The daemon attaches to the card again (see card_recovery.rs); this
    // card is still in its tamper error state, so it still refuses.
    expect_rv(sign(&session), RvError::DeviceError);

    drop((session, other));
    pkcs11.finalize().expect("C_Finalize");
    let log = daemon.log_text();
    let status = daemon.stop();
    assert!(status.success(), "daemon exit {status}; log:\n{log}");
}

fn failed_self_test(fixture: &Fixture) {
    fixture.inject("");
    let daemon = fixture.daemon(
        "selftest",
        &[("MESIGN_CARD_EMU_FAIL_SELFTEST", OsStr::new("1"))],
    );
    let pkcs11 = load_module();
    let slot = only_slot(&pkcs11);
    let session = ready_session(&pkcs11, slot, "faulty");
    let public = [
        cryptoki::object::Attribute::Token(true),
        cryptoki::object::Attribute::EcParams(Curve::P256.params_der()),
    ];
    let private = [
        cryptoki::object::Attribute::Token(true),
        cryptoki::object::Attribute::Sign(true),
    ];
    expect_rv(
        session.generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private),
        RvError::DeviceError,
    );
    expect_rv(session.generate_random_vec(16), RvError::DeviceError);
    assert_eq!(only_slot(&pkcs11), slot);
    drop(session);
    pkcs11.finalize().expect("C_Finalize");
    assert!(
        daemon.log_text().contains("self-test"),
        "the daemon log does not mention the failed self-test:\n{}",
        daemon.log_text()
    );
    daemon.stop();
}
