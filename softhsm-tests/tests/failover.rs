//! Failover across two daemons (issue 8, items 4 and 5): two boxes of one
//! cloning domain, a key generated on A and cloned to B by backup
//! export/import, and one module configured with both
//! (`MESIGN_HSM_DAEMONS=unix:A,unix:B`).
//!
//! - A configured but down from the start: the module signs on B.
//! - Both up: single-part signatures are spread over both (each daemon's
//!   audit log counts signatures it made).
//! - 8 threads sign in a loop, one session each; A is SIGKILLed mid-run and
//!   restarted later: at most the calls in flight (one per thread) fail,
//!   and with CKR_DEVICE_ERROR; signing goes on; the restarted A gets
//!   traffic again. The longest time without a successful signature is
//!   printed.
//!
//! Every signature is verified with the `p256` crate. Ours only (SoftHSMv2
//! has no daemons).

mod failover_boxes;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cryptoki::error::{Error, RvError};
use failover_boxes::{assert_signing_spreads, logged_in, sign_for, sign_verified, two_boxes};
use softhsm_tests::standalone::{load_module, only_slot};

const THREADS: usize = 8;

/// One signing thread's record: when each signature came, and the errors.
#[derive(Default)]
struct Record {
    ok: Vec<Instant>,
    failed: Vec<(Instant, RvError)>,
}

#[test]
fn signing_goes_on_when_one_of_two_daemons_dies() {
    let root = tempfile::Builder::new()
        .prefix("failover-")
        .tempdir()
        .unwrap();
    let (mut a, mut b) = two_boxes(root.path());

    // A configured but down from the start.
    a.stop();
    std::env::remove_var("MESIGN_HSM_SOCKET");
    std::env::set_var(
        "MESIGN_HSM_DAEMONS",
        format!(
            "unix:{},unix:{}",
            a.socket().display(),
            b.socket().display()
        ),
    );
    let pkcs11 = load_module();
    let slot = only_slot(&pkcs11);
    {
        let (session, key, public) = logged_in(&pkcs11, slot);
        sign_for(&session, key, &public, 5, Duration::ZERO, "A down");
    }

    // Both up: signatures spread over both.
    a.start();
    // A is tried again at most every 500 ms after its last failure: the
    // helper signs for longer than that.
    assert_signing_spreads(&pkcs11, slot, &mut a, &mut b, "spread");

    // 8 threads; A killed mid-run, restarted later.
    let (main, key, public) = logged_in(&pkcs11, slot);
    let stop = AtomicBool::new(false);
    let signed = AtomicUsize::new(0);
    let records: Mutex<Vec<Record>> = Mutex::new(Vec::new());
    let (killed_at, restarted_at, a_from) = std::thread::scope(|scope| {
        for t in 0..THREADS {
            let (pkcs11, stop, records, public) = (&pkcs11, &stop, &records, &public);
            let signed = &signed;
            scope.spawn(move || {
                let session = pkcs11.open_ro_session(slot).expect("thread session");
                let mut record = Record::default();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let message = format!("thread {t} signature {i}");
                    match sign_verified(&session, key, public, message.as_bytes()) {
                        Ok(()) => {
                            record.ok.push(Instant::now());
                            signed.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(Error::Pkcs11(rv, _)) => record.failed.push((Instant::now(), rv)),
                        Err(e) => panic!("thread {t}: {e}"),
                    }
                }
                records.lock().unwrap().push(record);
            });
        }
        let progress = |more: usize, at_least: Duration, what: &str| {
            let (from, since) = (signed.load(Ordering::Relaxed), Instant::now());
            let deadline = since + Duration::from_secs(10);
            while signed.load(Ordering::Relaxed) < from + more || since.elapsed() < at_least {
                assert!(Instant::now() < deadline, "no progress {what}");
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        progress(300, Duration::from_millis(500), "with both up");
        let killed_at = Instant::now();
        a.kill();
        progress(300, Duration::from_millis(1000), "after the kill");
        a.start();
        let a_from = a.audit_len();
        let restarted_at = Instant::now();
        // A is tried again at most every 500 ms.
        progress(300, Duration::from_millis(1500), "after the restart");
        stop.store(true, Ordering::Relaxed);
        (killed_at, restarted_at, a_from)
    });
    drop(main);
    let records = records.into_inner().unwrap();
    let mut ok: Vec<Instant> = records.iter().flat_map(|r| r.ok.clone()).collect();
    ok.sort();
    let failed: Vec<(Instant, RvError)> = records.iter().flat_map(|r| r.failed.clone()).collect();
    let relative = |t: Instant| match t.checked_duration_since(killed_at) {
        Some(d) => format!("+{d:?}"),
        None => format!("-{:?}", killed_at - t),
    };
    let shown: Vec<String> = failed
        .iter()
        .take(12)
        .map(|(t, rv)| format!("{rv:?} at {} from the kill", relative(*t)))
        .collect();
    println!(
        "load: {} signatures verified, {} failed calls {shown:?}",
        ok.len(),
        failed.len(),
    );
    assert!(
        failed.len() <= THREADS,
        "more than the in-flight calls failed: {} ({shown:?})",
        failed.len()
    );
    for (at, rv) in &failed {
        assert_eq!(*rv, RvError::DeviceError, "a retryable error");
        assert!(*at >= killed_at, "a failure before the kill");
    }
    let before_kill = ok.iter().filter(|&&t| t < killed_at).count();
    let while_down = ok
        .iter()
        .filter(|&&t| t > killed_at && t < restarted_at)
        .count();
    let after_restart = ok.iter().filter(|&&t| t > restarted_at).count();
    println!("load: {before_kill} before the kill, {while_down} while A was down, {after_restart} after its restart");
    assert!(before_kill > 0 && while_down > 0 && after_restart > 0);
    let gap = ok.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default();
    let gap_at_kill = ok
        .iter()
        .find(|&&t| t > killed_at)
        .map(|&t| t - killed_at)
        .unwrap();
    let gap_end = ok
        .windows(2)
        .find(|w| w[1] - w[0] == gap)
        .map(|w| w[1])
        .unwrap_or(killed_at);
    let when = |t: Instant, what: &str, at: Instant| match t.checked_duration_since(at) {
        Some(d) => format!("{d:?} after {what}"),
        None => format!("{:?} before {what}", at - t),
    };
    println!(
        "load: longest gap without a signature {gap:?}, ending {} ({}); first signature {gap_at_kill:?} after the kill",
        when(gap_end, "the kill", killed_at),
        when(gap_end, "the restart", restarted_at),
    );
    assert!(gap < Duration::from_secs(2), "gap {gap:?}");

    // The restarted A got traffic again.
    a.stop();
    let on_a = a.signatures_since(a_from);
    println!("load: {on_a} signatures on A after its restart");
    assert!(on_a > 0, "the restarted daemon got no signatures");
    b.stop();
}
