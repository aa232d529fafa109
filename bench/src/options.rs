//! The command line: `mesign-bench [--module ours|softhsm|both] [--threads
//! 1,2,4,16] [--seconds 1.5] [--rounds 3] [--ops rsa-pkcs,rsa-pss,p256,p384]
//! [--profile release] [--cards 1] [--find] [--find-objects 10000]
//! [--soak SECONDS] [--one-core]`.

use std::fmt;
use std::time::Duration;

use crate::workload::Op;

/// The usage text printed by `--help`.
pub const USAGE: &str = "\
usage: mesign-bench [--module ours|softhsm|both] [--threads 1,2,4,16] [--seconds 1.5]
                    [--rounds 3] [--ops rsa-pkcs,rsa-pss,p256,p384] [--profile release]
                    [--cards 1] [--find] [--find-objects 10000] [--soak SECONDS]
                    [--one-core]

Signs with our PKCS#11 module and SoftHSMv2 in one run, alternating them, and
with aws-lc-rs in-process as the ceiling for these cores; prints a Markdown
table. --find instead creates --find-objects data objects on each token and
measures C_FindObjects by label and by id. --cards runs our slot on that many
emulated cards (at most 8), which the daemon spreads signing across. --soak
runs our stack alone under a mixed load (the --ops signed from the largest
--threads count, plus key generation, object creation and sessions) for that
long and prints the daemon's and cards' resident memory over time.
--one-core pins the whole run (client threads, daemon, card, SoftHSM and the
in-process signers) to one core, so that no wake-up crosses cores.

Our module, daemon and card emulator are taken from target/<profile>; build
them first with `cargo build --release --workspace`.";

/// Which PKCS#11 modules to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Modules {
    /// Only libmesign_pkcs11.so.
    Ours,
    /// Only SoftHSMv2.
    SoftHsm,
    /// Both, alternating.
    Both,
}

impl Modules {
    /// Whether our module is measured.
    pub fn ours(self) -> bool {
        matches!(self, Modules::Ours | Modules::Both)
    }

    /// Whether SoftHSMv2 is measured.
    pub fn softhsm(self) -> bool {
        matches!(self, Modules::SoftHsm | Modules::Both)
    }
}

/// Everything the command line chose.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// Modules under test.
    pub modules: Modules,
    /// Client thread counts, each measured in turn.
    pub threads: Vec<usize>,
    /// How long each (source, op, threads) run signs.
    pub run_time: Duration,
    /// How many times the whole grid is repeated; medians are reported.
    pub rounds: usize,
    /// Operations to measure.
    pub ops: Vec<Op>,
    /// The cargo profile directory our binaries come from.
    pub profile: String,
    /// Emulated cards behind our slot.
    pub cards: u32,
    /// Run the object-search scenario instead of signing.
    pub find: bool,
    /// Objects the search scenario creates per token.
    pub find_objects: usize,
    /// Run the memory soak for this long instead of the signing grid.
    pub soak: Option<Duration>,
    /// Pin every thread and process of the run to one core.
    pub one_core: bool,
    /// `--help` was given.
    pub help: bool,
}

impl Default for Options {
    /// Defaults chosen so that the full grid (4 ops × 4 thread counts × 3
    /// sources × 3 rounds × 1.5 s) finishes in about four minutes.
    fn default() -> Self {
        Self {
            modules: Modules::Both,
            threads: vec![1, 2, 4, 16],
            run_time: Duration::from_millis(1500),
            rounds: 3,
            ops: Op::ALL.to_vec(),
            profile: "release".to_owned(),
            cards: 1,
            find: false,
            find_objects: 10_000,
            soak: None,
            one_core: false,
            help: false,
        }
    }
}

/// A command line that could not be understood.
#[derive(Debug, PartialEq, Eq)]
pub enum UsageError {
    /// A flag this program does not have.
    UnknownFlag(String),
    /// A flag given without its value.
    MissingValue(&'static str),
    /// A value the flag does not accept.
    BadValue {
        /// The flag.
        flag: &'static str,
        /// What was given.
        value: String,
    },
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsageError::UnknownFlag(flag) => write!(f, "unknown flag {flag}\n\n{USAGE}"),
            UsageError::MissingValue(flag) => write!(f, "{flag} needs a value\n\n{USAGE}"),
            UsageError::BadValue { flag, value } => {
                write!(f, "{flag}: cannot use {value:?}\n\n{USAGE}")
            }
        }
    }
}

/// Parses the arguments after the program name.
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Options, UsageError> {
    let mut options = Options::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        // Accept `--flag=value` as well as `--flag value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_owned(), Some(v.to_owned())),
            None => (arg, None),
        };
        let mut value = |name: &'static str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or(UsageError::MissingValue(name))
        };
        match flag.as_str() {
            "--module" => {
                let v = value("--module")?;
                options.modules = match v.as_str() {
                    "ours" => Modules::Ours,
                    "softhsm" => Modules::SoftHsm,
                    "both" => Modules::Both,
                    _ => return Err(bad("--module", v)),
                };
            }
            "--threads" => {
                let v = value("--threads")?;
                options.threads = list(&v, |t| t.parse::<usize>().ok().filter(|n| *n > 0))
                    .ok_or_else(|| bad("--threads", v))?;
            }
            "--seconds" => {
                let v = value("--seconds")?;
                options.run_time = v
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s > 0.0 && *s <= 3600.0)
                    .map(Duration::from_secs_f64)
                    .ok_or_else(|| bad("--seconds", v))?;
            }
            "--rounds" => {
                let v = value("--rounds")?;
                options.rounds = positive(&v).ok_or_else(|| bad("--rounds", v))?;
            }
            "--ops" => {
                let v = value("--ops")?;
                options.ops = list(&v, Op::parse).ok_or_else(|| bad("--ops", v))?;
            }
            "--profile" => {
                let v = value("--profile")?;
                if v.is_empty() || v.contains('/') {
                    return Err(bad("--profile", v));
                }
                options.profile = v;
            }
            "--cards" => {
                let v = value("--cards")?;
                options.cards = v
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=8).contains(n))
                    .ok_or_else(|| bad("--cards", v))?;
            }
            "--find-objects" => {
                let v = value("--find-objects")?;
                options.find_objects = positive(&v).ok_or_else(|| bad("--find-objects", v))?;
            }
            "--find" if inline.is_none() => options.find = true,
            "--one-core" if inline.is_none() => options.one_core = true,
            "--soak" => {
                let v = value("--soak")?;
                let seconds = positive(&v).ok_or_else(|| bad("--soak", v))?;
                options.soak = Some(Duration::from_secs(seconds as u64));
            }
            "--help" | "-h" if inline.is_none() => options.help = true,
            _ => return Err(UsageError::UnknownFlag(flag)),
        }
    }
    Ok(options)
}

fn bad(flag: &'static str, value: String) -> UsageError {
    UsageError::BadValue { flag, value }
}

fn positive(text: &str) -> Option<usize> {
    text.parse::<usize>().ok().filter(|n| *n > 0)
}

/// A non-empty comma-separated list without duplicates.
fn list<T: PartialEq>(text: &str, item: impl Fn(&str) -> Option<T>) -> Option<Vec<T>> {
    let mut out = Vec::new();
    for part in text.split(',') {
        let value = item(part.trim())?;
        if !out.contains(&value) {
            out.push(value);
        }
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn no_arguments_give_the_defaults() {
        assert_eq!(parse(Vec::new()).unwrap(), Options::default());
    }

    #[test]
    fn every_flag_is_read() {
        let o = parse(args(
            "--module ours --threads 2,8 --seconds=0.5 --rounds 1 --ops p384,rsa-pss --profile debug --cards 2 --find --find-objects 50 --soak 60 --one-core",
        ))
        .unwrap();
        assert_eq!(o.modules, Modules::Ours);
        assert_eq!(o.threads, vec![2, 8]);
        assert_eq!(o.run_time, Duration::from_millis(500));
        assert_eq!(o.rounds, 1);
        assert_eq!(o.ops, vec![Op::P384, Op::RsaPss]);
        assert_eq!(o.profile, "debug");
        assert_eq!(o.cards, 2);
        assert!(o.find);
        assert_eq!(o.find_objects, 50);
        assert_eq!(o.soak, Some(Duration::from_secs(60)));
        assert!(o.one_core);
    }

    #[test]
    fn bad_input_is_refused_with_the_flag_named() {
        assert_eq!(
            parse(args("--threads 0")),
            Err(UsageError::BadValue {
                flag: "--threads",
                value: "0".into()
            })
        );
        assert!(matches!(
            parse(args("--ops p521")),
            Err(UsageError::BadValue { flag: "--ops", .. })
        ));
        assert_eq!(
            parse(args("--rounds")),
            Err(UsageError::MissingValue("--rounds"))
        );
        assert_eq!(
            parse(args("--fast")),
            Err(UsageError::UnknownFlag("--fast".into()))
        );
        assert!(matches!(
            parse(args("--cards 9")),
            Err(UsageError::BadValue {
                flag: "--cards",
                ..
            })
        ));
        assert!(matches!(
            parse(args("--seconds -1")),
            Err(UsageError::BadValue {
                flag: "--seconds",
                ..
            })
        ));
    }
}
