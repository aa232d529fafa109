//! One timed run: N client threads signing fresh hashes for a fixed time.
//!
//! Each thread builds its own signer (for a PKCS#11 module: its own
//! session), waits at a barrier so that all start together, then signs until
//! its deadline, recording each call's latency in a preallocated vector and
//! keeping a few signatures for independent verification. Nothing but the
//! sign call itself sits between the two clock reads.

use std::sync::Barrier;
use std::time::{Duration, Instant};

use aws_lc_rs::digest::Digest;

use crate::error::BenchError;
use crate::source::Source;
use crate::verify::Sample;
use crate::workload::{fresh_hash, Op};

/// Every this-many-th signature of a thread is kept for verification.
const SAMPLE_STRIDE: u64 = 509;
/// At most this many samples per thread per run.
const MAX_SAMPLES_PER_THREAD: usize = 12;
/// Latency slots reserved per thread-second, so that the timed loop does not
/// reallocate at realistic rates (in-process P-256 is ~50k/s per core).
const LATENCY_SLOTS_PER_SECOND: f64 = 80_000.0;

/// What one run measures.
#[derive(Clone, Copy, Debug)]
pub struct RunSpec {
    /// Who signs.
    pub source: Source,
    /// What is signed.
    pub op: Op,
    /// Client threads.
    pub threads: usize,
    /// How long each thread keeps signing.
    pub duration: Duration,
    /// Seed of the fresh hashes.
    pub seed: u64,
}

/// Throughput and latency of one run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stats {
    /// Completed signatures per second, all threads together.
    pub ops_per_sec: f64,
    /// Median latency of one sign call, microseconds.
    pub p50_us: u32,
    /// 99th percentile latency, microseconds.
    pub p99_us: u32,
    /// Signatures counted.
    pub signatures: u64,
}

/// Result of one run: the numbers and the kept signatures.
#[derive(Debug)]
pub struct RunOutcome {
    /// The numbers.
    pub stats: Stats,
    /// Signatures to verify.
    pub samples: Vec<Sample>,
}

struct ThreadResult {
    latencies: Vec<u32>,
    samples: Vec<Sample>,
    elapsed: Duration,
}

/// Runs `spec`. `make_signer(thread)` is called on the client thread; the
/// signer gets the fresh hash and the C_Sign input built from it.
pub fn run<S, F>(spec: &RunSpec, make_signer: F) -> Result<RunOutcome, BenchError>
where
    F: Fn(usize) -> Result<S, BenchError> + Sync,
    S: FnMut(&Digest, &[u8]) -> Result<Vec<u8>, BenchError>,
{
    let barrier = Barrier::new(spec.threads);
    let capacity = (spec.duration.as_secs_f64() * LATENCY_SLOTS_PER_SECOND / spec.threads as f64)
        as usize
        + 1024;
    let results: Vec<Result<ThreadResult, BenchError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..spec.threads)
            .map(|thread| {
                let barrier = &barrier;
                let make_signer = &make_signer;
                scope.spawn(move || {
                    let signer = make_signer(thread);
                    // Wait even when setup failed, or the others never start.
                    barrier.wait();
                    sign_until_deadline(spec, thread, signer?, capacity)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client threads do not panic"))
            .collect()
    });

    let mut latencies = Vec::new();
    let mut samples = Vec::new();
    let mut ops_per_sec = 0.0;
    for result in results {
        let result = result?;
        if !result.latencies.is_empty() {
            ops_per_sec += result.latencies.len() as f64 / result.elapsed.as_secs_f64();
        }
        latencies.extend(result.latencies);
        samples.extend(result.samples);
    }
    latencies.sort_unstable();
    Ok(RunOutcome {
        stats: Stats {
            ops_per_sec,
            p50_us: percentile(&latencies, 50),
            p99_us: percentile(&latencies, 99),
            signatures: latencies.len() as u64,
        },
        samples,
    })
}

fn sign_until_deadline<S>(
    spec: &RunSpec,
    thread: usize,
    mut signer: S,
    capacity: usize,
) -> Result<ThreadResult, BenchError>
where
    S: FnMut(&Digest, &[u8]) -> Result<Vec<u8>, BenchError>,
{
    let mut latencies = Vec::with_capacity(capacity);
    let mut samples = Vec::with_capacity(MAX_SAMPLES_PER_THREAD);
    let mut input = Vec::with_capacity(64);
    let start = Instant::now();
    let deadline = start + spec.duration;
    let mut counter = 0u64;
    let mut now = start;
    while now < deadline {
        let hash = fresh_hash(spec.op, spec.seed, thread, counter);
        spec.op.sign_input(&hash, &mut input);
        let before = Instant::now();
        let signature = signer(&hash, &input)?;
        now = Instant::now();
        if signature.len() != spec.op.signature_len() {
            return Err(BenchError::SignatureLength {
                source_kind: spec.source,
                op: spec.op,
                actual: signature.len(),
            });
        }
        let micros = (now - before).as_micros();
        latencies.push(u32::try_from(micros).unwrap_or(u32::MAX));
        if counter % SAMPLE_STRIDE == 0 && samples.len() < MAX_SAMPLES_PER_THREAD {
            samples.push(Sample {
                thread,
                counter,
                signature,
            });
        }
        counter += 1;
    }
    Ok(ThreadResult {
        latencies,
        samples,
        elapsed: now - start,
    })
}

/// Nearest-rank percentile of sorted values; 0 for none.
pub fn percentile(sorted: &[u32], p: usize) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inprocess::InProcessKey;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50), 50);
        assert_eq!(percentile(&v, 99), 99);
        assert_eq!(percentile(&[7], 99), 7);
        assert_eq!(percentile(&[], 50), 0);
        assert_eq!(percentile(&[1, 2, 3], 50), 2);
    }

    #[test]
    fn a_run_counts_every_thread_and_keeps_samples() {
        let key = InProcessKey::generate(Op::P256.key_kind()).unwrap();
        let spec = RunSpec {
            source: Source::InProcess,
            op: Op::P256,
            threads: 2,
            duration: Duration::from_millis(100),
            seed: 5,
        };
        let outcome = run(&spec, |_| {
            let mut sign = key.signer(Op::P256);
            Ok(move |hash: &Digest, _: &[u8]| sign(hash))
        })
        .unwrap();
        assert!(outcome.stats.signatures > 10, "{:?}", outcome.stats);
        assert!(outcome.stats.ops_per_sec > 100.0, "{:?}", outcome.stats);
        assert!(outcome.stats.p50_us <= outcome.stats.p99_us);
        let threads: Vec<usize> = outcome.samples.iter().map(|s| s.thread).collect();
        assert!(threads.contains(&0) && threads.contains(&1), "{threads:?}");
    }

    #[test]
    fn a_failing_signer_fails_the_run() {
        let spec = RunSpec {
            source: Source::Ours,
            op: Op::P384,
            threads: 2,
            duration: Duration::from_millis(20),
            seed: 1,
        };
        let err = run(&spec, |_| Ok(|_: &Digest, _: &[u8]| Ok(vec![0u8; 64]))).unwrap_err();
        assert!(
            matches!(err, BenchError::SignatureLength { actual: 64, .. }),
            "{err}"
        );
        let err = run(&spec, |thread| {
            if thread == 1 {
                Err(BenchError::InProcess { op: Op::P384 })
            } else {
                Ok(|_: &Digest, _: &[u8]| Ok(vec![0u8; 96]))
            }
        })
        .unwrap_err();
        assert!(matches!(err, BenchError::InProcess { .. }), "{err}");
    }
}
