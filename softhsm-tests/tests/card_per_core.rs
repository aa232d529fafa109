//! One slot backed by one emulated card per core (`per_core = true`): each
//! card process runs on its own core only, signatures from several threads
//! are all genuine, and a card that dies is replaced by one on the same
//! core. Ours only; every signature is verified with the `p256` crate.

use std::collections::BTreeSet;

use cryptoki::mechanism::Mechanism;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use softhsm_tests::keys::{self, KeySpec};
use softhsm_tests::standalone::{
    card_pids, daemon_with_cards, load_module, only_slot, ready_session, wait_for_replaced_card,
};
use softhsm_tests::verify::{assert_genuine, sha256, Curve};

const THREADS: usize = 4;
const SIGNATURES_PER_THREAD: usize = 50;

/// The CPUs a process may run on, from `/proc/<pid>/status`.
fn allowed_cpus(pid: u32) -> BTreeSet<usize> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .expect("Cpus_allowed_list")
        .trim()
        .to_owned();
    let mut cpus = BTreeSet::new();
    for part in list.split(',') {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<usize>().unwrap()..=b.parse().unwrap()),
            None => {
                cpus.insert(part.parse().unwrap());
            }
        }
    }
    cpus
}

/// The core each card process is pinned to; fails unless every one is
/// pinned to exactly one core and no two share one.
fn card_cores(daemon: u32) -> BTreeSet<usize> {
    let cards = card_pids(daemon);
    let cores: BTreeSet<usize> = cards
        .iter()
        .map(|&pid| {
            let cpus = allowed_cpus(pid);
            assert_eq!(cpus.len(), 1, "card {pid} may run on {cpus:?}");
            *cpus.first().unwrap()
        })
        .collect();
    assert_eq!(cores.len(), cards.len(), "cards share a core: {cards:?}");
    cores
}

#[test]
fn a_card_per_core_signs_and_is_replaced_on_its_core() {
    let (_dir, daemon) = daemon_with_cards("card-per-core-", "per_core = true");
    let ours = allowed_cpus(std::process::id());
    let cores = card_cores(daemon.pid());
    let expected: BTreeSet<usize> = ours.iter().copied().take(8).collect();
    assert_eq!(cores, expected, "one card on each of our cores");

    let pkcs11 = load_module();
    let slot = only_slot(&pkcs11);
    let session = ready_session(&pkcs11, slot, "per core");
    let spec = KeySpec::Ec(Curve::P256);
    let pair = keys::generate(&session, spec, "per-core");
    let public = keys::public_key(&session, spec, pair.public);
    let sign_from_threads = |round: &str| {
        std::thread::scope(|scope| {
            for thread in 0..THREADS {
                let (pkcs11, public) = (&pkcs11, &public);
                scope.spawn(move || {
                    let session = pkcs11.open_ro_session(slot).expect("C_OpenSession");
                    for i in 0..SIGNATURES_PER_THREAD {
                        let hash = sha256(format!("{round} {thread} {i}").as_bytes());
                        let sig = session
                            .sign(&Mechanism::Ecdsa, pair.private, &hash)
                            .expect("C_Sign");
                        assert_genuine(round, &hash, |h| public.verify_ecdsa_prehash(h, &sig));
                    }
                });
            }
        });
    };
    sign_from_threads("per core");

    // A dead card comes back on the core it had.
    let victim = card_pids(daemon.pid())[0];
    let victim_core = *allowed_cpus(victim).first().unwrap();
    kill(Pid::from_raw(victim as i32), Signal::SIGKILL).expect("SIGKILL one card");
    // A new card pins itself before it listens; the daemon may list it a
    // moment earlier.
    wait_for_replaced_card(&daemon, victim, cores.len(), |pid| {
        allowed_cpus(pid).len() == 1
    });
    assert_eq!(card_cores(daemon.pid()), cores);
    assert!(cores.contains(&victim_core));
    sign_from_threads("after recovery");
    daemon.stop();
}
