//! At rest, the daemon's state directory holds no private key in clear.
//!
//! Weak on purpose but able to fail: a daemon that stored the PKCS#8 encoding
//! of a generated P-256 key, or the raw scalar next to its public point, would
//! be caught by the prefix scan.

use softhsm_tests::keys::{self, KeySpec};
use softhsm_tests::verify::Curve;
use softhsm_tests::{conformance, Divergence, Target};

conformance!(ready => no_private_key_in_clear_at_rest);

/// DER prefix of an unencrypted P-256 PKCS#8 PrivateKeyInfo.
const P256_PKCS8_PREFIX: [u8; 17] = [
    0x30, 0x81, 0x87, 0x02, 0x01, 0x00, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02,
    0x01,
];
/// DER prefix of a SEC1 ECPrivateKey (version 1, 32-byte scalar).
const SEC1_EC_PRIVATE_PREFIX: [u8; 7] = [0x30, 0x77, 0x02, 0x01, 0x01, 0x04, 0x20];

fn no_private_key_in_clear_at_rest(t: &Target) {
    let s = t.user_session();
    let spec = KeySpec::Ec(Curve::P256);
    let mut points = Vec::new();
    for n in 0..3 {
        let pair = keys::generate(&s, spec, &format!("at-rest-{n}"));
        match keys::public_key(&s, spec, pair.public) {
            softhsm_tests::verify::PublicKey::Ec { point, .. } => points.push(point),
            other => panic!("{other:?}"),
        }
    }
    drop(s);
    if t.diverges(Divergence::StateDirOnlyOurs) {
        assert!(t.daemon_state_dir().is_none());
        return;
    }
    let dir = t.daemon_state_dir().expect("our daemon has a state dir");
    let files = files_under(&dir);
    assert!(!files.is_empty(), "state dir {} is empty", dir.display());
    let mut saw_public_point = false;
    for file in &files {
        let bytes = std::fs::read(file).expect("read state file");
        for (name, needle) in [
            ("PKCS#8 P-256 private key", &P256_PKCS8_PREFIX[..]),
            ("SEC1 EC private key", &SEC1_EC_PRIVATE_PREFIX[..]),
        ] {
            assert!(
                !contains(&bytes, needle),
                "{} contains a {name} prefix",
                file.display()
            );
        }
        saw_public_point |= points.iter().any(|p| contains(&bytes, p));
    }
    // The scan looks at the right files: the public points are stored somewhere.
    assert!(
        saw_public_point,
        "no public EC point found under {}: the scan did not see the store",
        dir.display()
    );
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read state dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.is_file() {
                out.push(path);
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
