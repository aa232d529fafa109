//! The printed report: machine, command line, the Markdown table and the
//! issue's targets checked against the same numbers.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::measure::Stats;
use crate::options::Options;
use crate::source::Source;
use crate::wakeups::WakeUps;
use crate::workload::Op;

/// Every run's numbers, by (op, threads, source), one entry per round.
#[derive(Default)]
pub struct Results {
    cells: HashMap<(Op, usize, Source), Vec<Stats>>,
}

impl Results {
    /// Adds one run's numbers.
    pub fn record(&mut self, op: Op, threads: usize, source: Source, stats: Stats) {
        self.cells
            .entry((op, threads, source))
            .or_default()
            .push(stats);
    }

    /// The median over rounds of each figure; `None` when no run succeeded.
    pub fn median(&self, op: Op, threads: usize, source: Source) -> Option<Stats> {
        let runs = self.cells.get(&(op, threads, source))?;
        if runs.is_empty() {
            return None;
        }
        let ops = median_f64(runs.iter().map(|s| s.ops_per_sec).collect());
        let p50 = median_u32(runs.iter().map(|s| s.p50_us).collect());
        let p99 = median_u32(runs.iter().map(|s| s.p99_us).collect());
        Some(Stats {
            ops_per_sec: ops,
            p50_us: p50,
            p99_us: p99,
            signatures: runs.iter().map(|s| s.signatures).sum(),
        })
    }
}

fn median_f64(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[(v.len() - 1) / 2]
}

fn median_u32(mut v: Vec<u32>) -> u32 {
    v.sort_unstable();
    v[(v.len() - 1) / 2]
}

/// What the run was and where: the lines above the table.
pub fn header(options: &Options, command_line: &str, wake_ups: Option<WakeUps>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## mesign-bench\n");
    let _ = writeln!(out, "- command: `{command_line}`");
    let _ = writeln!(out, "- machine: {}", machine());
    if let Some(w) = wake_ups {
        let across = w
            .across_cores
            .map_or_else(|| "–".to_owned(), |d| format!("{:.1} µs", micros(d)));
        let _ = writeln!(
            out,
            "- wake-up round trip between two threads (Unix socket, median): same core {:.1} µs, across cores {across}",
            micros(w.same_core)
        );
    }
    if options.one_core {
        let _ = writeln!(
            out,
            "- --one-core: every thread and process of this run on one core"
        );
    }
    if options.modules.ours() {
        let _ = writeln!(
            out,
            "- our binaries: target/{} (module → mesign-hsmd → {} × mesign-card-emu, all on these cores)",
            options.profile, options.cards
        );
    }
    if options.modules.softhsm() {
        let _ = writeln!(
            out,
            "- SoftHSMv2: /usr/lib/softhsm/libsofthsm2.so, file object store"
        );
    }
    if cfg!(debug_assertions) {
        let _ = writeln!(
            out,
            "- WARNING: mesign-bench itself is a debug build; the in-process column may be understated"
        );
    }
    out
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// `nproc` and the CPU model.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    format!("nproc {cores}, {model}")
}

/// The signing table.
pub fn signing_table(results: &Results, options: &Options) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Median of {} round(s) of {:.1} s per cell; ours and SoftHSM alternate within each round; \
         every digest is fresh; sampled signatures verified independently.\n",
        options.rounds,
        options.run_time.as_secs_f64()
    );
    for op in &options.ops {
        let _ = writeln!(out, "- `{}`: {}", op.name(), op.description());
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| op | threads | ours ops/s | SoftHSM ops/s | ours÷SoftHSM | in-process aws-lc-rs ops/s | ours÷in-process | ours p50/p99 µs | SoftHSM p50/p99 µs |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &op in &options.ops {
        for &threads in &options.threads {
            let ours = results.median(op, threads, Source::Ours);
            let soft = results.median(op, threads, Source::SoftHsm);
            let inproc = results.median(op, threads, Source::InProcess);
            let _ = writeln!(
                out,
                "| {} | {threads} | {} | {} | {} | {} | {} | {} | {} |",
                op.name(),
                ops(ours),
                ops(soft),
                ratio(ours, soft),
                ops(inproc),
                percent(ours, inproc),
                latency(ours),
                latency(soft),
            );
        }
    }
    out
}

fn ops(s: Option<Stats>) -> String {
    s.map_or("–".into(), |s| format!("{:.0}", s.ops_per_sec))
}

fn ratio(a: Option<Stats>, b: Option<Stats>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b.ops_per_sec > 0.0 => {
            format!("{:.2}×", a.ops_per_sec / b.ops_per_sec)
        }
        _ => "–".into(),
    }
}

fn percent(a: Option<Stats>, b: Option<Stats>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b.ops_per_sec > 0.0 => {
            format!("{:.0}%", 100.0 * a.ops_per_sec / b.ops_per_sec)
        }
        _ => "–".into(),
    }
}

fn latency(s: Option<Stats>) -> String {
    s.map_or("–".into(), |s| format!("{}/{}", s.p50_us, s.p99_us))
}

/// The targets, each met, missed or not measured.
pub fn targets(results: &Results) -> String {
    let mut out = String::from("Targets (from the issue):\n\n");
    let against_softhsm = [
        (Op::P256, 3.0),
        (Op::RsaPkcs, 2.2),
        (Op::RsaPss, 2.2),
        (Op::P384, 7.0),
    ];
    for (op, goal) in against_softhsm {
        let value = match (
            results.median(op, 4, Source::Ours),
            results.median(op, 4, Source::SoftHsm),
        ) {
            (Some(o), Some(s)) if s.ops_per_sec > 0.0 => Some(o.ops_per_sec / s.ops_per_sec),
            _ => None,
        };
        line(
            &mut out,
            &format!("{} ours÷SoftHSM at 4 threads ≥ {goal}×", op.name()),
            value.map(|v| (format!("{v:.2}×"), v >= goal)),
        );
    }
    for (op, goal) in [(Op::P256, 0.65), (Op::RsaPkcs, 0.85), (Op::RsaPss, 0.85)] {
        let value = match (
            results.median(op, 4, Source::Ours),
            results.median(op, 2, Source::InProcess),
        ) {
            (Some(o), Some(i)) if i.ops_per_sec > 0.0 => Some(o.ops_per_sec / i.ops_per_sec),
            _ => None,
        };
        line(
            &mut out,
            &format!(
                "{} ours at 4 threads ≥ {:.0}% of in-process aws-lc-rs at 2 threads",
                op.name(),
                goal * 100.0
            ),
            value.map(|v| (format!("{:.0}%", v * 100.0), v >= goal)),
        );
    }
    let p50 = match (
        results.median(Op::P256, 1, Source::Ours),
        results.median(Op::P256, 1, Source::SoftHsm),
    ) {
        (Some(o), Some(s)) => Some((
            format!("{} µs vs {} µs", o.p50_us, s.p50_us),
            o.p50_us < s.p50_us,
        )),
        _ => None,
    };
    line(
        &mut out,
        "p256 single-thread p50 latency below SoftHSM's",
        p50,
    );
    out
}

/// The search scenario's table: one row per (module, lookup key).
pub fn find_table(
    rows: &[(Source, &'static str, usize, Duration, Duration)],
    objects: usize,
    rounds: usize,
) -> String {
    let mut out = format!(
        "C_FindObjectsInit/C_FindObjects/C_FindObjectsFinal for one object among {objects} private token \
         objects (EC public keys, each with its own CKA_LABEL and CKA_ID) per token; \
         {rounds} round(s), the modules alternating\n\n\
         | module | by | searches | median µs | p99 µs | median under 1 ms |\n|---|---|---:|---:|---:|---|\n"
    );
    for (source, key, searches, median, p99) in rows {
        let _ = writeln!(
            out,
            "| {} | {key} | {searches} | {:.1} | {:.1} | {} |",
            source.name(),
            median.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6,
            if *median < Duration::from_millis(1) {
                "yes"
            } else {
                "no"
            }
        );
    }
    out
}

fn line(out: &mut String, what: &str, value: Option<(String, bool)>) {
    let _ = match value {
        Some((v, true)) => writeln!(out, "- met: {what} — {v}"),
        Some((v, false)) => writeln!(out, "- MISSED: {what} — {v}"),
        None => writeln!(out, "- not measured: {what}"),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(ops: f64, p50: u32) -> Stats {
        Stats {
            ops_per_sec: ops,
            p50_us: p50,
            p99_us: p50 * 2,
            signatures: 10,
        }
    }

    #[test]
    fn medians_are_taken_per_figure() {
        let mut r = Results::default();
        for (ops, p50) in [(100.0, 9), (300.0, 1), (200.0, 5)] {
            r.record(Op::P256, 4, Source::Ours, stats(ops, p50));
        }
        let m = r.median(Op::P256, 4, Source::Ours).unwrap();
        assert_eq!(m.ops_per_sec, 200.0);
        assert_eq!(m.p50_us, 5);
        assert_eq!(m.p99_us, 10);
        assert_eq!(m.signatures, 30);
        assert!(r.median(Op::P256, 2, Source::Ours).is_none());
    }

    #[test]
    fn the_table_shows_ratios_and_dashes() {
        let mut r = Results::default();
        r.record(Op::P256, 4, Source::Ours, stats(300.0, 10));
        r.record(Op::P256, 4, Source::SoftHsm, stats(100.0, 30));
        r.record(Op::P256, 4, Source::InProcess, stats(600.0, 5));
        let options = Options {
            ops: vec![Op::P256],
            threads: vec![4],
            ..Options::default()
        };
        let table = signing_table(&r, &options);
        assert!(
            table.contains("| p256 | 4 | 300 | 100 | 3.00× | 600 | 50% | 10/20 | 30/60 |"),
            "{table}"
        );
        let targets = targets(&r);
        assert!(
            targets.contains("- met: p256 ours÷SoftHSM at 4 threads ≥ 3×"),
            "{targets}"
        );
        assert!(targets.contains("- not measured: p384"), "{targets}");
    }
}
