//! Runs scripts/pkcs11-tool-e2e.sh (OpenSC pkcs11-tool plus OpenSSL) against
//! the debug build, and against SoftHSM to show the script itself works.

use std::process::Command;

use softhsm_tests::binaries;

fn run_script(module_override: Option<&str>) {
    let root = binaries::workspace_root();
    let profile = binaries::profile_dir();
    if module_override.is_none() {
        for name in [
            binaries::MESIGN_DAEMON,
            binaries::MESIGN_CARD_EMU,
            binaries::MESIGN_MODULE,
        ] {
            binaries::require(name);
        }
    }
    let mut cmd = Command::new("bash");
    cmd.arg(root.join("scripts/pkcs11-tool-e2e.sh"))
        .arg(&profile)
        .current_dir(&root)
        .env_remove("MESIGN_E2E_MODULE");
    if let Some(module) = module_override {
        cmd.env("MESIGN_E2E_MODULE", module);
    }
    let out = cmd.output().expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pkcs11-tool-e2e.sh failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("SUMMARY:") && stdout.contains(" 0 failed"),
        "no clean summary:\n{stdout}"
    );
    assert!(!stdout.contains("FAIL:"), "{stdout}");
}

mod mesign {
    #[test]
    fn pkcs11_tool_e2e() {
        super::run_script(None);
    }
}

mod softhsm {
    #[test]
    fn pkcs11_tool_e2e() {
        super::run_script(Some(softhsm_tests::binaries::SOFTHSM_MODULE));
    }
}
