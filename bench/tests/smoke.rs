//! Runs the built `mesign-bench` binary briefly against SoftHSMv2 alone (our
//! stack needs a release build, which `cargo test` does not make): the
//! setup, the timed loop, verification and the report must all work.

use std::process::Command;

fn bench(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_mesign-bench"))
        .args(args)
        .output()
        .expect("run mesign-bench");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_short_softhsm_run_prints_a_verified_table() {
    let (ok, stdout, stderr) = bench(&[
        "--module",
        "softhsm",
        "--seconds",
        "0.1",
        "--rounds",
        "1",
        "--threads",
        "1,2",
        "--ops",
        "rsa-pss,p384",
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("- command: `mesign-bench --module softhsm"),
        "{stdout}"
    );
    assert!(stdout.contains("- machine: nproc "), "{stdout}");
    for row in [
        "| rsa-pss | 1 | – | ",
        "| rsa-pss | 2 | – | ",
        "| p384 | 2 | – | ",
    ] {
        assert!(stdout.contains(row), "missing {row:?} in\n{stdout}");
    }
    assert!(!stdout.contains("| p256 |"), "{stdout}");
    let verified: usize = stdout
        .lines()
        .find_map(|l| {
            l.split_once(" sampled signatures verified")
                .and_then(|(n, _)| n.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no verification count in\n{stdout}"));
    // Every thread's first signature is kept: (1 + 2) threads × 2 sources
    // (SoftHSM, in-process) × 2 operations.
    assert!(verified >= 12, "{verified}\n{stdout}");
}

#[test]
fn a_small_find_scenario_reports_both_lookups() {
    let (ok, stdout, stderr) = bench(&[
        "--module",
        "softhsm",
        "--find",
        "--find-objects",
        "30",
        "--rounds",
        "1",
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("among 30 private token objects"),
        "{stdout}"
    );
    assert!(stdout.contains("| softhsm | CKA_LABEL | "), "{stdout}");
    assert!(stdout.contains("| softhsm | CKA_ID | "), "{stdout}");
}

#[test]
fn a_missing_profile_fails_with_the_build_command() {
    let (ok, _, stderr) = bench(&["--module", "ours", "--profile", "no-such-profile"]);
    assert!(!ok);
    assert!(stderr.contains("cargo build"), "{stderr}");
}

#[test]
fn bad_flags_are_refused() {
    let (ok, _, stderr) = bench(&["--threads", "zero"]);
    assert!(!ok);
    assert!(stderr.contains("--threads"), "{stderr}");
}
