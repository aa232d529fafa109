//! Runs scripts/pdf-e2e.sh against the debug build: the administrator's
//! workflow with `mesign-hsm` (token, EC P-256 and RSA-3072 keys, requests,
//! a throwaway OpenSSL CA, certificate import), then PAdES signatures made
//! by pyHanko through libmesign_pkcs11.so, judged valid and trusted by
//! pyHanko and poppler's pdfsig, and a changed byte detected by both.

use softhsm_tests::binaries;

#[test]
fn pdf_signing_e2e() {
    let stdout = binaries::run_e2e_script("pdf-e2e.sh", &[], &["MESIGN_E2E_KEEP"]);
    // Both signers went through every step.
    for signer in ["ec-p256", "rsa-3072"] {
        assert!(
            stdout.contains(&format!("PASS: {signer}: pdfsig detects the changed byte")),
            "{stdout}"
        );
    }
}
