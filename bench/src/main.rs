//! `mesign-bench`: signing throughput of our PKCS#11 stack against SoftHSMv2
//! and against aws-lc-rs in-process, in one run on the same cores.
//!
//! Both modules are loaded into this process through `cryptoki`, one
//! `Pkcs11` each. Per round, per operation and per thread count, our module
//! runs, then SoftHSM, then the in-process baseline, so that drift (thermal,
//! noisy neighbours) hits all three alike. The report goes to stdout as
//! Markdown; progress goes to stderr.
#![forbid(unsafe_code)]

mod daemon;
mod der;
mod error;
mod find;
mod inprocess;
mod measure;
mod options;
mod report;
mod soak;
mod source;
mod token;
mod verify;
mod wakeups;
mod workload;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use aws_lc_rs::digest::Digest;

use crate::daemon::{Artefacts, Daemon};
use crate::error::BenchError;
use crate::inprocess::InProcessKey;
use crate::measure::{RunSpec, Stats};
use crate::options::Options;
use crate::report::Results;
use crate::source::Source;
use crate::token::Token;
use crate::verify::{PublicKey, Verifier};
use crate::workload::{run_seed, KeyKind, Op};

/// SoftHSMv2 as shipped by the Debian package `softhsm2`.
const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let options = match options::parse(args.iter().skip(1).cloned()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("mesign-bench: {e}");
            return ExitCode::from(2);
        }
    };
    if options.help {
        println!("{}", options::USAGE);
        return ExitCode::SUCCESS;
    }
    let command_line = command_line(&args);
    match bench(&options, &command_line) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("mesign-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The command as typed, with the program shortened to its name.
fn command_line(args: &[String]) -> String {
    let program = args
        .first()
        .map(|p| {
            Path::new(p)
                .file_name()
                .map_or(p.clone(), |n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "mesign-bench".into());
    std::iter::once(program)
        .chain(args.iter().skip(1).cloned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A run that failed: printed under the table with its scenario.
struct Failure {
    round: usize,
    op: Op,
    threads: usize,
    source: Source,
    error: BenchError,
}

/// Everything the modules need on disk, removed at the end.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    /// A temporary directory with SoftHSM's configuration, and both modules'
    /// environment pointing into it. Called before either module is loaded
    /// and before any thread exists.
    fn new() -> Result<Self, BenchError> {
        let dir = tempfile::Builder::new()
            .prefix("mesign-bench-")
            .tempdir()
            .map_err(|source| BenchError::Io {
                step: "create the scratch directory",
                path: std::env::temp_dir(),
                source,
            })?;
        let tokens = dir.path().join("softhsm-tokens");
        let conf = dir.path().join("softhsm2.conf");
        let io = |step, path: &Path| {
            let path = path.to_path_buf();
            move |source| BenchError::Io { step, path, source }
        };
        std::fs::create_dir_all(&tokens).map_err(io("create SoftHSM's token dir", &tokens))?;
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                tokens.display()
            ),
        )
        .map_err(io("write softhsm2.conf", &conf))?;
        let scratch = Self { dir };
        std::env::set_var("SOFTHSM2_CONF", &conf);
        std::env::set_var("MESIGN_HSM_SOCKET", scratch.socket());
        Ok(scratch)
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn socket(&self) -> PathBuf {
        self.path().join("hsmd.sock")
    }
}

/// Sets up, measures, prints; `Ok(false)` when a run failed or a signature
/// did not verify.
fn bench(options: &Options, command_line: &str) -> Result<bool, BenchError> {
    let scratch = Scratch::new()?;
    let wake_ups = wakeups::measure();
    if options.one_core {
        let cpu = wakeups::allowed_cores()
            .and_then(|cores| cores.first().copied())
            .ok_or_else(|| BenchError::Pin("no core in this process's affinity mask".into()))?;
        // Before the daemon and every measuring thread start: they inherit it.
        wakeups::pin_to(cpu).map_err(|e| BenchError::Pin(format!("CPU {cpu}: {e}")))?;
    }
    let mut daemon = None;
    let mut tokens = Vec::new();
    if options.modules.ours() {
        let artefacts = Artefacts::find(&options.profile)?;
        eprintln!("starting {}", artefacts.daemon.display());
        daemon = Some(Daemon::start(
            &artefacts.daemon,
            &scratch.path().join("hsmd-state"),
            &scratch.socket(),
            &scratch.path().join("hsmd.log"),
            options.cards,
        )?);
        tokens.push(Token::open(Source::Ours, &artefacts.module)?);
    }
    if options.modules.softhsm() {
        if !Path::new(SOFTHSM_MODULE).is_file() {
            return Err(BenchError::MissingArtefact {
                path: SOFTHSM_MODULE.into(),
                fix: "apt-get install softhsm2",
            });
        }
        tokens.push(Token::open(Source::SoftHsm, Path::new(SOFTHSM_MODULE))?);
    }

    print!("{}", report::header(options, command_line, wake_ups));
    let ok = if options.find {
        find_scenario(options, &tokens)?;
        true
    } else if let Some(duration) = options.soak {
        soak_scenario(options, duration, &mut tokens, &daemon, scratch.path())?
    } else {
        signing(options, &mut tokens, scratch.path())?
    };

    // Finalize the modules while the daemon still answers, then stop it.
    drop(tokens);
    if let Some(mut daemon) = daemon {
        if !daemon.stop() {
            eprintln!("mesign-bench: mesign-hsmd ignored SIGTERM and was killed");
            return Ok(false);
        }
    }
    Ok(ok)
}

fn signing(options: &Options, tokens: &mut [Token], scratch: &Path) -> Result<bool, BenchError> {
    let mut kinds: Vec<KeyKind> = Vec::new();
    for op in &options.ops {
        if !kinds.contains(&op.key_kind()) {
            kinds.push(op.key_kind());
        }
    }
    let mut in_process = Vec::new();
    for &kind in &kinds {
        in_process.push((kind, InProcessKey::generate(kind)?));
        for token in tokens.iter_mut() {
            let start = std::time::Instant::now();
            token.ensure_key(kind)?;
            eprintln!(
                "{}: generated {kind:?} in {:.2} s",
                token.source().name(),
                start.elapsed().as_secs_f64()
            );
        }
    }
    let in_process_key = |op: Op| {
        &in_process
            .iter()
            .find(|(k, _)| *k == op.key_kind())
            .expect("generated above")
            .1
    };

    let mut results = Results::default();
    let mut failures = Vec::new();
    let mut verifier = Verifier::new(scratch);
    for round in 1..=options.rounds {
        for &op in &options.ops {
            for &threads in &options.threads {
                let mut measured = Vec::new();
                for token in tokens.iter() {
                    let spec = spec(options, round, token.source(), op, threads);
                    let public = token.key(op).public.clone();
                    measured.push((spec, public, pkcs11_run(token, &spec)));
                }
                let key = in_process_key(op);
                let spec = spec(options, round, Source::InProcess, op, threads);
                let run = measure::run(&spec, |_| {
                    let mut sign = key.signer(op);
                    Ok(move |hash: &Digest, _: &[u8]| sign(hash))
                });
                measured.push((spec, key.public_key(), run));

                // Verification runs after the timed windows, never inside them.
                for (spec, public, run) in measured {
                    match checked(&mut verifier, &spec, &public, run) {
                        Ok(stats) => {
                            eprintln!(
                                "round {round} {} {threads} thread(s) {}: {:.0} ops/s, p50 {} µs",
                                op.name(),
                                spec.source.name(),
                                stats.ops_per_sec,
                                stats.p50_us
                            );
                            results.record(op, threads, spec.source, stats);
                        }
                        Err(error) => {
                            eprintln!(
                                "round {round} {} {threads} thread(s) {}: FAILED: {error}",
                                op.name(),
                                spec.source.name()
                            );
                            failures.push(Failure {
                                round,
                                op,
                                threads,
                                source: spec.source,
                                error,
                            });
                        }
                    }
                }
            }
        }
    }

    println!();
    print!("{}", report::signing_table(&results, options));
    println!();
    if options.one_core {
        println!("Targets are judged on runs over every core, not on this --one-core run.");
        println!();
    } else if options.modules == options::Modules::Both {
        print!("{}", report::targets(&results));
        println!();
    }
    println!(
        "{} sampled signatures verified independently (ECDSA: RustCrypto p256/p384; RSA: openssl pkeyutl).",
        verifier.verified()
    );
    if !failures.is_empty() {
        println!("\nFailed runs (not in the table):\n");
        for f in &failures {
            println!(
                "- round {} {} {} thread(s) {}: {}",
                f.round,
                f.op.name(),
                f.threads,
                f.source.name(),
                f.error
            );
        }
    }
    Ok(failures.is_empty())
}

fn spec(options: &Options, round: usize, source: Source, op: Op, threads: usize) -> RunSpec {
    RunSpec {
        source,
        op,
        threads,
        duration: options.run_time,
        seed: run_seed(round, source.seed_tag(), op, threads),
    }
}

/// One timed run against a module: each client thread opens its own session.
fn pkcs11_run(token: &Token, spec: &RunSpec) -> Result<measure::RunOutcome, BenchError> {
    let sessions = token.sessions();
    let key = token.key(spec.op).private;
    let source = spec.source;
    measure::run(spec, |_| {
        let session = sessions.open()?;
        let mechanism = spec.op.mechanism();
        Ok(move |_: &Digest, input: &[u8]| {
            session
                .sign(&mechanism, key, input)
                .map_err(|error| BenchError::Pkcs11 {
                    source_kind: source,
                    step: "C_Sign",
                    error,
                })
        })
    })
}

/// A run's numbers, counted only when its samples verify.
fn checked(
    verifier: &mut Verifier,
    spec: &RunSpec,
    public: &PublicKey,
    run: Result<measure::RunOutcome, BenchError>,
) -> Result<Stats, BenchError> {
    let outcome = run?;
    verifier.check(spec.source, spec.op, public, spec.seed, &outcome.samples)?;
    Ok(outcome.stats)
}

fn soak_scenario(
    options: &Options,
    duration: Duration,
    tokens: &mut [Token],
    daemon: &Option<Daemon>,
    scratch: &Path,
) -> Result<bool, BenchError> {
    let (Some(token), Some(pid)) = (
        tokens.iter_mut().find(|t| t.source() == Source::Ours),
        daemon.as_ref().and_then(Daemon::pid),
    ) else {
        eprintln!("mesign-bench: --soak measures our stack: use --module ours");
        return Ok(false);
    };
    for op in &options.ops {
        token.ensure_key(op.key_kind())?;
    }
    let threads = options.threads.iter().copied().max().unwrap_or(4);
    let mut verifier = Verifier::new(scratch);
    let ok = soak::run(token, &options.ops, threads, duration, pid, &mut verifier)?;
    println!(
        "\n{} sampled signatures verified independently.",
        verifier.verified()
    );
    Ok(ok)
}

fn find_scenario(options: &Options, tokens: &[Token]) -> Result<(), BenchError> {
    let ec_point = find::ec_point()?;
    for token in tokens {
        eprintln!(
            "{}: creating {} objects",
            token.source().name(),
            options.find_objects
        );
        let took = find::populate(token, options.find_objects, &ec_point)?;
        eprintln!(
            "{}: created in {:.1} s",
            token.source().name(),
            took.as_secs_f64()
        );
    }
    let mut latencies = vec![Vec::new(); tokens.len() * find::Key::ALL.len()];
    for round in 0..options.rounds {
        for (k, key) in find::Key::ALL.into_iter().enumerate() {
            // Alternate the modules within each round, as for signing.
            for (t, token) in tokens.iter().enumerate() {
                find::lookups(
                    token,
                    key,
                    options.find_objects,
                    0x9e37_79b9_7f4a_7c15 ^ (round as u64) << 8 ^ k as u64,
                    &mut latencies[t * find::Key::ALL.len() + k],
                )?;
            }
        }
    }
    let mut rows = Vec::new();
    for (t, token) in tokens.iter().enumerate() {
        for (k, key) in find::Key::ALL.into_iter().enumerate() {
            let (median, p99) = find::median_and_p99(&mut latencies[t * find::Key::ALL.len() + k]);
            let searches = latencies[t * find::Key::ALL.len() + k].len();
            rows.push((token.source(), key.name(), searches, median, p99));
        }
    }
    println!();
    print!(
        "{}",
        report::find_table(&rows, options.find_objects, options.rounds)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_names_the_program_briefly() {
        let args = ["/work/main/target/release/mesign-bench", "--rounds", "1"].map(String::from);
        assert_eq!(command_line(&args), "mesign-bench --rounds 1");
    }
}
