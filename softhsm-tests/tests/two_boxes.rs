//! Runs scripts/two-boxes-e2e.sh against the debug build: the README's
//! two-box walkthrough as a newcomer types it (token init, domain create and
//! join, TLS certificates from the domain CA, replication, a module
//! configured with both boxes), ending with pkcs11-tool still signing after
//! one box is killed, every signature verified by OpenSSL.

use softhsm_tests::binaries;

#[test]
fn two_boxes_walkthrough_e2e() {
    let stdout = binaries::run_e2e_script(
        "two-boxes-e2e.sh",
        &[],
        &[
            "MESIGN_E2E_KEEP",
            "MESIGN_HSM_SOCKET",
            "MESIGN_HSM_DAEMONS",
            "MESIGN_HSM_CONF",
        ],
    );
    for step in [
        "PASS: the key replicated to B",
        "PASS: 5 signatures after box A was killed verify",
    ] {
        assert!(stdout.contains(step), "missing {step:?}:\n{stdout}");
    }
}
