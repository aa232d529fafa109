//! The soak scenario (`--soak SECONDS`, our stack only): a mixed load for a
//! long time while the resident memory of the daemon and of its card
//! processes is sampled, to show whether memory stays flat.
//!
//! The load: client threads sign, each cycling through the chosen
//! operations with fresh hashes (their last signatures are verified at each
//! sample); one admin thread keeps opening and closing sessions, generating
//! and destroying session key pairs, and creating, finding and destroying
//! token data objects, so every table and cache of the daemon sees entries
//! come and go. The object count returns to where it started after each
//! admin cycle, so memory that keeps growing is a leak, not data.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass};

use crate::error::BenchError;
use crate::token::{SessionSource, Token};
use crate::verify::{Sample, Verifier};
use crate::workload::{fresh_hash, Op};

/// How many memory samples a soak run takes (plus one at the start).
const SAMPLES: u32 = 20;

/// One row of the memory table.
struct MemorySample {
    elapsed: Duration,
    daemon_kib: u64,
    cards_kib: u64,
    signatures: u64,
    admin_cycles: u64,
}

/// What the threads share.
struct Shared {
    stop: AtomicBool,
    signatures: AtomicU64,
    admin_cycles: AtomicU64,
    /// The latest signature of each (thread, op), for verification.
    latest: Mutex<Vec<Option<(Op, Sample)>>>,
    failure: Mutex<Option<BenchError>>,
}

impl Shared {
    fn fail(&self, error: BenchError) {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(error);
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Runs the soak on `token` (ours) for `duration` with `threads` signing
/// threads; prints the memory table and returns whether every check passed.
pub fn run(
    token: &Token,
    ops: &[Op],
    threads: usize,
    duration: Duration,
    daemon_pid: u32,
    verifier: &mut Verifier,
) -> Result<bool, BenchError> {
    const SEED: u64 = 0x50a4_0000_0000;
    let shared = Shared {
        stop: AtomicBool::new(false),
        signatures: AtomicU64::new(0),
        admin_cycles: AtomicU64::new(0),
        latest: Mutex::new(vec![None; threads]),
        failure: Mutex::new(None),
    };
    let mut samples = Vec::new();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let (shared, sessions) = (&shared, token.sessions());
            let keys: Vec<_> = ops.iter().map(|&op| (op, token.key(op).private)).collect();
            scope.spawn(move || {
                let session = match sessions.open() {
                    Ok(s) => s,
                    Err(e) => return shared.fail(e),
                };
                let mut input = Vec::new();
                let mut counter = 0u64;
                while !shared.stop.load(Ordering::Relaxed) {
                    let (op, key) = keys[(counter as usize) % keys.len()];
                    let hash = fresh_hash(op, SEED, thread, counter);
                    op.sign_input(&hash, &mut input);
                    match session.sign(&op.mechanism(), key, &input) {
                        Ok(signature) => {
                            let sample = Sample {
                                thread,
                                counter,
                                signature,
                            };
                            shared.latest.lock().unwrap_or_else(|e| e.into_inner())[thread] =
                                Some((op, sample));
                            shared.signatures.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(error) => return shared.fail(token_error("C_Sign", error)),
                    }
                    counter += 1;
                }
            });
        }
        let (admin, shared_ref) = (token.sessions(), &shared);
        scope.spawn(move || {
            let shared = shared_ref;
            while !shared.stop.load(Ordering::Relaxed) {
                match admin_cycle(&admin) {
                    Ok(()) => shared.admin_cycles.fetch_add(1, Ordering::Relaxed),
                    Err(e) => return shared.fail(e),
                };
            }
        });
        let interval = duration / SAMPLES;
        for tick in 0..=SAMPLES {
            let due = started + interval * tick;
            while Instant::now() < due && !shared.stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50).min(due - Instant::now()));
            }
            if shared.stop.load(Ordering::Relaxed) {
                break;
            }
            let daemon_kib = resident_kib(daemon_pid);
            let cards_kib = children(daemon_pid).into_iter().map(resident_kib).sum();
            let sample = MemorySample {
                elapsed: started.elapsed(),
                daemon_kib,
                cards_kib,
                signatures: shared.signatures.load(Ordering::Relaxed),
                admin_cycles: shared.admin_cycles.load(Ordering::Relaxed),
            };
            eprintln!(
                "soak {:>5.0} s: daemon {} KiB, cards {} KiB, {} signatures, {} admin cycles",
                sample.elapsed.as_secs_f64(),
                sample.daemon_kib,
                sample.cards_kib,
                sample.signatures,
                sample.admin_cycles
            );
            samples.push(sample);
            let latest: Vec<_> = shared
                .latest
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .flatten()
                .cloned()
                .collect();
            for (op, sample) in latest {
                let public = &token.key(op).public;
                if let Err(e) = verifier.check(token.source(), op, public, SEED, &[sample]) {
                    shared.fail(e);
                }
            }
        }
        shared.stop.store(true, Ordering::Relaxed);
    });
    print!("{}", table(&samples));
    match shared
        .failure
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
    {
        Some(error) => {
            eprintln!("soak: FAILED: {error}");
            Ok(false)
        }
        None => Ok(true),
    }
}

/// One admin round: a session opened and closed, a session key pair
/// generated and destroyed, a token data object created, found and
/// destroyed.
fn admin_cycle(sessions: &SessionSource) -> Result<(), BenchError> {
    let session = sessions.open_rw()?;
    let params = crate::workload::KeyKind::P256
        .ec_params()
        .unwrap_or_default()
        .to_vec();
    let (public, private) = session
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::Token(false),
                Attribute::EcParams(params),
                Attribute::Verify(true),
            ],
            &[
                Attribute::Token(false),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Sign(true),
            ],
        )
        .map_err(|e| token_error("C_GenerateKeyPair", e))?;
    session
        .get_attributes(public, &[AttributeType::EcPoint])
        .map_err(|e| token_error("C_GetAttributeValue", e))?;
    session
        .destroy_object(private)
        .map_err(|e| token_error("C_DestroyObject", e))?;
    session
        .destroy_object(public)
        .map_err(|e| token_error("C_DestroyObject", e))?;
    let label = b"soak-data".to_vec();
    let data = session
        .create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Label(label.clone()),
            Attribute::Value(vec![0x5a; 256]),
        ])
        .map_err(|e| token_error("C_CreateObject", e))?;
    let found = session
        .find_objects(&[Attribute::Label(label)])
        .map_err(|e| token_error("C_FindObjects", e))?;
    if found != [data] {
        return Err(BenchError::Soak("a data object was not found exactly once"));
    }
    session
        .destroy_object(data)
        .map_err(|e| token_error("C_DestroyObject", e))?;
    Ok(())
}

fn token_error(step: &'static str, error: cryptoki::error::Error) -> BenchError {
    BenchError::Pkcs11 {
        source_kind: crate::source::Source::Ours,
        step,
        error,
    }
}

/// VmRSS of `pid` in KiB (0 once it is gone).
fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The child processes of `pid` (the daemon's card emulators).
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// The memory table, and the growth from the first sample after warm-up
/// (a tenth of the run) to the last.
fn table(samples: &[MemorySample]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n| elapsed s | daemon VmRSS MiB | card processes VmRSS MiB | signatures | admin cycles |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|");
    for s in samples {
        let _ = writeln!(
            out,
            "| {:.0} | {:.1} | {:.1} | {} | {} |",
            s.elapsed.as_secs_f64(),
            s.daemon_kib as f64 / 1024.0,
            s.cards_kib as f64 / 1024.0,
            s.signatures,
            s.admin_cycles
        );
    }
    let warm = samples.get(SAMPLES as usize / 10);
    if let (Some(first), Some(last)) = (warm, samples.last()) {
        let mib = |kib: u64| kib as f64 / 1024.0;
        let _ = writeln!(
            out,
            "\nAfter warm-up ({:.0} s) to the end ({:.0} s): daemon {:.1} → {:.1} MiB, card processes {:.1} → {:.1} MiB, over {} signatures and {} admin cycles.",
            first.elapsed.as_secs_f64(),
            last.elapsed.as_secs_f64(),
            mib(first.daemon_kib),
            mib(last.daemon_kib),
            mib(first.cards_kib),
            mib(last.cards_kib),
            last.signatures - first.signatures,
            last.admin_cycles - first.admin_cycles,
        );
    }
    out
}
