//! Runs scripts/two-boxes-e2e.sh against the debug build: the README's
//! two-box walkthrough as a newcomer types it (token init, domain create and
//! join, TLS certificates from the domain CA, replication, a module
//! configured with both boxes), ending with pkcs11-tool still signing after
//! one box is killed, every signature verified by OpenSSL.

use std::process::Command;

use softhsm_tests::binaries;

#[test]
fn two_boxes_walkthrough_e2e() {
    let root = binaries::workspace_root();
    for name in [
        binaries::MESIGN_DAEMON,
        binaries::MESIGN_CARD_EMU,
        binaries::MESIGN_MODULE,
        "mesign-hsm",
    ] {
        binaries::require(name);
    }
    let out = Command::new("bash")
        .arg(root.join("scripts/two-boxes-e2e.sh"))
        .arg(binaries::profile_dir())
        .current_dir(&root)
        .env_remove("MESIGN_E2E_KEEP")
        .env_remove("MESIGN_HSM_SOCKET")
        .env_remove("MESIGN_HSM_DAEMONS")
        .env_remove("MESIGN_HSM_CONF")
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "two-boxes-e2e.sh failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(!stdout.contains("FAIL:"), "{stdout}");
    for step in [
        "PASS: the key replicated to B",
        "PASS: 5 signatures after box A was killed verify",
    ] {
        assert!(stdout.contains(step), "missing {step:?}:\n{stdout}");
    }
}
