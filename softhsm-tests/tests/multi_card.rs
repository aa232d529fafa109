//! One slot backed by two emulated cards (`instances = 2`): signatures from
//! several threads of one process (all pipelined on one connection, so the
//! daemon splits each batch between the cards) are all genuine, both cards
//! do part of the work, a key generated on one card signs on the other, and
//! when one card process is killed signing goes on: only calls in flight on
//! that card fail, with a device error, and the daemon starts a new card.
//! Ours only; every signature is verified with the `p256` crate.

use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use softhsm_tests::keys::{self, KeySpec};
use softhsm_tests::standalone::{
    card_pids, cpu_time_ns, daemon_with_cards, load_module, only_slot, ready_session,
    wait_for_replaced_card,
};
use softhsm_tests::verify::{assert_genuine, sha256, Curve};

const THREADS: usize = 4;
const SIGNATURES_PER_THREAD: usize = 100;

#[test]
fn two_cards_share_the_load_and_survive_losing_one() {
    let (_dir, daemon) = daemon_with_cards("multi-card-", "instances = 2");
    let cards = card_pids(daemon.pid());
    assert_eq!(cards.len(), 2, "two card processes: {cards:?}");

    let pkcs11 = load_module();
    let slot = only_slot(&pkcs11);
    let session = ready_session(&pkcs11, slot, "two cards");
    let spec = KeySpec::Ec(Curve::P256);
    let pair = keys::generate(&session, spec, "multi-card");
    let public = keys::public_key(&session, spec, pair.public);

    let cpu_before: Vec<u64> = cards.iter().map(|&pid| cpu_time_ns(pid)).collect();
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
                    assert_genuine("two cards", &hash, |h| public.verify_ecdsa_prehash(h, &sig));
                }
            });
        }
    });
    let used: Vec<u64> = cards
        .iter()
        .zip(&cpu_before)
        .map(|(&pid, before)| cpu_time_ns(pid) - before)
        .collect();
    eprintln!(
        "multi_card: CPU ns per card for {} signatures: {used:?}",
        THREADS * SIGNATURES_PER_THREAD
    );
    // An idle card process only wakes on its workers' tick: far below a
    // millisecond of CPU in this time. Signing 400 P-256 hashes costs
    // tens of milliseconds, split between the cards.
    for (pid, ns) in cards.iter().zip(&used) {
        assert!(
            *ns > 2_000_000,
            "card process {pid} ran only {ns} ns: it took no share of the load ({used:?})"
        );
    }

    // One card dies under load: in-flight calls on it fail with a device
    // error, the others go on, and the daemon replaces the dead card.
    let victim = cards[0];
    let failures = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|thread| {
                let (pkcs11, public) = (&pkcs11, &public);
                scope.spawn(move || {
                    let session = pkcs11.open_ro_session(slot).expect("C_OpenSession");
                    let mut failed = 0;
                    for i in 0..SIGNATURES_PER_THREAD {
                        let hash = sha256(format!("kill {thread} {i}").as_bytes());
                        match session.sign(&Mechanism::Ecdsa, pair.private, &hash) {
                            Ok(sig) => assert_genuine("one card killed", &hash, |h| {
                                public.verify_ecdsa_prehash(h, &sig)
                            }),
                            Err(Error::Pkcs11(
                                RvError::DeviceError | RvError::DeviceRemoved,
                                _,
                            )) => failed += 1,
                            Err(e) => panic!("signature {i} of thread {thread}: {e}"),
                        }
                    }
                    failed
                })
            })
            .collect();
        kill(Pid::from_raw(victim as i32), Signal::SIGKILL).expect("SIGKILL one card");
        workers
            .into_iter()
            .map(|w| w.join().expect("worker"))
            .sum::<usize>()
    });
    let total = THREADS * SIGNATURES_PER_THREAD;
    eprintln!("multi_card: {failures} of {total} calls failed while a card was killed");
    assert!(
        failures <= total / 4,
        "{failures} of {total} calls failed: more than the killed card's in-flight share"
    );

    wait_for_replaced_card(&daemon, victim, 2, |_| true);
    for i in 0..20 {
        let hash = sha256(format!("after recovery {i}").as_bytes());
        let sig = session
            .sign(&Mechanism::Ecdsa, pair.private, &hash)
            .expect("signing after the card was replaced");
        assert_genuine("after recovery", &hash, |h| {
            public.verify_ecdsa_prehash(h, &sig)
        });
    }
    daemon.stop();
}
