//! Runs scripts/pdf-e2e.sh against the debug build: the administrator's
//! workflow with `mesign-hsm` (token, EC P-256 and RSA-3072 keys, requests,
//! a throwaway OpenSSL CA, certificate import), then PAdES signatures made
//! by pyHanko through libmesign_pkcs11.so, judged valid and trusted by
//! pyHanko and poppler's pdfsig, and a changed byte detected by both.

use std::process::Command;

use softhsm_tests::binaries;

#[test]
fn pdf_signing_e2e() {
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
        .arg(root.join("scripts/pdf-e2e.sh"))
        .arg(binaries::profile_dir())
        .current_dir(&root)
        .env_remove("MESIGN_E2E_KEEP")
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pdf-e2e.sh failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("SUMMARY:") && stdout.contains(" 0 failed"),
        "no clean summary:\n{stdout}"
    );
    assert!(!stdout.contains("FAIL:"), "{stdout}");
    // Both signers went through every step.
    for signer in ["ec-p256", "rsa-3072"] {
        assert!(
            stdout.contains(&format!("PASS: {signer}: pdfsig detects the changed byte")),
            "{stdout}"
        );
    }
}
