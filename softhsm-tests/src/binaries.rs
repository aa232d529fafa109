//! Where the binaries under test live.
//!
//! The suite runs from `target/<profile>/deps/<test>-<hash>`, so the profile
//! directory that holds `libmesign_pkcs11.so`, `mesign-hsmd` and
//! `mesign-card-emu` is two levels above the running executable. Honouring
//! `CARGO_TARGET_DIR` only matters when the executable was moved, which cargo
//! never does, so the executable's own location wins.

use std::path::{Path, PathBuf};

/// SoftHSMv2 as shipped by the Debian package `softhsm2`.
pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// Names of the artefacts our half of the suite needs.
pub const MESIGN_MODULE: &str = "libmesign_pkcs11.so";
/// The daemon binary.
pub const MESIGN_DAEMON: &str = "mesign-hsmd";
/// The card emulator the daemon spawns from its own directory.
pub const MESIGN_CARD_EMU: &str = "mesign-card-emu";

/// The cargo profile directory (`target/debug`, `target/release`) this test
/// executable was built into.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable knows its own path");
    let deps = exe
        .parent()
        .expect("test executable has a parent directory");
    let profile = if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().expect("deps/ has a parent")
    } else {
        deps
    };
    profile.to_path_buf()
}

/// The workspace root (the parent of this crate's manifest directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("softhsm-tests sits inside the workspace")
        .to_path_buf()
}

/// Path of one of our artefacts, panicking with the fix when it is missing:
/// `cargo test -p softhsm-tests` alone does not build the other crates' binaries.
pub fn require(name: &str) -> PathBuf {
    let path = profile_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` first (looked in {})",
        name,
        profile_dir().display()
    );
    path
}

/// Runs `scripts/<script>` (an end-to-end driver printing `PASS:`/`FAIL:`
/// lines and a `SUMMARY:`) with this build's profile directory as its
/// argument, after checking that our binaries were built. `env` is set and
/// `unset` removed from the script's environment, so a developer's own
/// settings do not leak in. Panics unless the script exits 0 with a clean
/// summary; returns its standard output for further checks.
pub fn run_e2e_script(script: &str, env: &[(&str, &str)], unset: &[&str]) -> String {
    for name in [MESIGN_DAEMON, MESIGN_CARD_EMU, MESIGN_MODULE, "mesign-hsm"] {
        require(name);
    }
    let root = workspace_root();
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(root.join("scripts").join(script))
        .arg(profile_dir())
        .current_dir(&root);
    for name in unset {
        cmd.env_remove(name);
    }
    for (name, value) in env {
        cmd.env(name, value);
    }
    let out = cmd.output().expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{script} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("SUMMARY:") && stdout.contains(" 0 failed"),
        "no clean summary:\n{stdout}"
    );
    assert!(!stdout.contains("FAIL:"), "{stdout}");
    stdout
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_dir_is_a_cargo_profile() {
        let dir = profile_dir();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            ["debug", "release"].contains(&name.as_str()) || dir.join("deps").is_dir(),
            "unexpected profile dir {}",
            dir.display()
        );
    }

    #[test]
    fn require_names_the_fix() {
        let err = std::panic::catch_unwind(|| require("no-such-artefact")).unwrap_err();
        let msg = err.downcast_ref::<String>().unwrap();
        assert!(msg.contains("cargo build --workspace"), "{msg}");
    }
}
