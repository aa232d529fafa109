//! Two boxes (and a third of another domain), each a daemon with its own
//! emulated card, state directory and socket, driven through the admin CLI
//! `mesign-hsm`: a cloning domain made on box A and joined on box B from 2
//! of its 3 custodian shares (one share alone, a wrong passphrase and a
//! modified share file are refused, and leave B in no domain); keys and a
//! certificate backed up on A and restored on B, where the restored keys
//! sign and OpenSSL verifies the signatures with A's public keys; box C, in
//! a domain of its own, and a modified backup file are refused with nothing
//! imported. Ours only: SoftHSMv2 has no cloning domain.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use softhsm_tests::binaries;
use softhsm_tests::daemon::Daemon;

const SO_PIN: &str = "so-secret-1";
const USER_PIN: &str = "user-secret-1";

/// One box: a daemon in its own directory, and the CLI pointed at it.
struct Box {
    daemon: Daemon,
    dir: PathBuf,
}

impl Box {
    fn start(root: &Path, name: &str) -> Box {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let daemon = Daemon::start(
            &dir.join("state"),
            &dir.join("hsmd.sock"),
            &dir.join("hsmd.log"),
        );
        let b = Box { daemon, dir };
        b.ok(&["token", "init", "--label", name]);
        b
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(binaries::profile_dir().join("mesign-hsm"))
            .args(args)
            .current_dir(&self.dir)
            .env("MESIGN_HSM_SOCKET", self.daemon.socket())
            .env("MESIGN_HSM_SO_PIN", SO_PIN)
            .env("MESIGN_HSM_PIN", USER_PIN)
            .env_remove("MESIGN_HSM_NEW_PIN")
            .output()
            .expect("run mesign-hsm")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "mesign-hsm {args:?} failed ({}):\n{}\n{}\ndaemon log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.daemon.log_text()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a command that must fail; returns its message.
    fn refused(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "mesign-hsm {args:?} succeeded but must not:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn domain(&self) -> String {
        self.ok(&["domain", "show"]).trim().to_string()
    }

    /// Token objects on the card, as the daemon counts them.
    fn objects(&self) -> u64 {
        let status: serde_json::Value =
            serde_json::from_str(&self.ok(&["--json", "status"])).unwrap();
        status["cards"][0]["objects"].as_u64().unwrap()
    }
}

fn openssl(args: &[&str], dir: &Path) -> Output {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl")
}

fn openssl_ok(args: &[&str], dir: &Path) -> String {
    let out = openssl(args, dir);
    assert!(
        out.status.success(),
        "openssl {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn write(path: &Path, text: &str) -> String {
    std::fs::write(path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// Changes one base64 character in the middle of a share file's PEM body.
fn flip_share_byte(text: &str) -> String {
    let start = text.find("-----BEGIN").unwrap();
    let body_start = start + text[start..].find('\n').unwrap() + 1;
    let mut bytes = text.as_bytes().to_vec();
    let at = body_start + 40;
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

#[test]
fn a_domain_made_on_one_box_lets_another_restore_its_keys_and_no_one_else() {
    binaries::require("mesign-hsm");
    let root = tempfile::tempdir().unwrap();
    let shares_dir = root.path().join("shares");
    std::fs::create_dir_all(&shares_dir).unwrap();
    let a = Box::start(root.path(), "box-a");
    let b = Box::start(root.path(), "box-b");
    let c = Box::start(root.path(), "box-c");
    let words: Vec<String> = (1..=3)
        .map(|i| {
            write(
                &root.path().join(format!("p{i}")),
                &format!("custodian {i} words\n"),
            )
        })
        .collect();

    // The domain: created on A as 3 shares, threshold 2.
    assert_eq!(a.domain(), "none");
    let created: serde_json::Value = serde_json::from_str(&a.ok(&[
        "--json",
        "domain",
        "create",
        "--shares",
        "3",
        "--threshold",
        "2",
        "--out-dir",
        shares_dir.to_str().unwrap(),
        "--passphrase-file",
        &words[0],
        "--passphrase-file",
        &words[1],
        "--passphrase-file",
        &words[2],
    ]))
    .unwrap();
    let id = created["domain"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 32);
    assert_eq!(a.domain(), id);
    let shares: Vec<String> = created["shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    assert_eq!(shares.len(), 3);
    let text = std::fs::read_to_string(&shares[1]).unwrap();
    assert!(text.contains(&format!("Domain: {id}")), "{text}");
    assert!(text.contains("share 2 of 3"), "{text}");
    // A second create is refused without --replace.
    let again = a.refused(&[
        "domain",
        "create",
        "--shares",
        "2",
        "--threshold",
        "2",
        "--out-dir",
        shares_dir.to_str().unwrap(),
        "--passphrase-file",
        &words[0],
        "--passphrase-file",
        &words[1],
    ]);
    assert!(again.contains("--replace"), "{again}");
    assert_eq!(a.domain(), id);

    // Joining B: one share, a wrong passphrase, a modified share: refused.
    let one = b.refused(&["domain", "join", &shares[0], "--passphrase-file", &words[0]]);
    assert!(one.contains("needs 2 of its 3 shares"), "{one}");
    let wrong = b.refused(&[
        "domain",
        "join",
        &shares[0],
        &shares[2],
        "--passphrase-file",
        &words[0],
        "--passphrase-file",
        &words[1],
    ]);
    assert!(wrong.contains("passphrase is wrong"), "{wrong}");
    let flipped = write(
        &root.path().join("flipped-share.txt"),
        &flip_share_byte(&text),
    );
    let modified = b.refused(&[
        "domain",
        "join",
        &shares[0],
        &flipped,
        "--passphrase-file",
        &words[0],
        "--passphrase-file",
        &words[1],
    ]);
    assert!(
        modified.contains("was modified") || modified.contains("not a MeSign domain share"),
        "{modified}"
    );
    assert_eq!(b.domain(), "none", "nothing installed by refused joins");
    b.ok(&[
        "domain",
        "join",
        &shares[0],
        &shares[2],
        "--passphrase-file",
        &words[0],
        "--passphrase-file",
        &words[2],
    ]);
    assert_eq!(b.domain(), id);

    // C: a domain of its own.
    let c_dir = root.path().join("c-shares");
    std::fs::create_dir_all(&c_dir).unwrap();
    c.ok(&[
        "domain",
        "create",
        "--shares",
        "2",
        "--threshold",
        "2",
        "--out-dir",
        c_dir.to_str().unwrap(),
        "--passphrase-file",
        &words[0],
        "--passphrase-file",
        &words[1],
    ]);
    assert_ne!(c.domain(), id);

    // Keys and a certificate on A.
    a.ok(&[
        "key", "generate", "--type", "ec-p256", "--label", "ec-key", "--id", "01",
    ]);
    a.ok(&[
        "key", "generate", "--type", "rsa-2048", "--label", "rsa-key", "--id", "02",
    ]);
    let adir = &a.dir;
    a.ok(&[
        "csr",
        "--key",
        "ec-key",
        "--subject",
        "CN=Box A signer",
        "--out",
        "a.csr",
    ]);
    openssl_ok(
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=Backup Test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
        adir,
    );
    openssl_ok(
        &[
            "x509",
            "-req",
            "-in",
            "a.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "77",
            "-days",
            "1",
            "-out",
            "a.pem",
        ],
        adir,
    );
    a.ok(&["cert", "import", "--key", "ec-key", "a.pem"]);
    let a_objects = a.objects();
    let mut a_public = Vec::new();
    for key in ["ec-key", "rsa-key"] {
        a_public.push(a.ok(&["export-public", "--key", key]));
    }
    let cert_public = openssl_ok(&["x509", "-in", "a.pem", "-noout", "-pubkey"], adir);
    assert_eq!(cert_public, a_public[0]);

    // Backup on A, restore on B.
    let backup = root.path().join("a.backup");
    let backup_arg = backup.to_str().unwrap();
    a.ok(&["backup", "export", "--out", backup_arg]);
    let bytes = std::fs::read(&backup).unwrap();
    assert!(
        bytes.windows(6).any(|w| w == b"ec-key"),
        "labels are readable"
    );
    assert_eq!(b.objects(), 0);
    let restored: serde_json::Value =
        serde_json::from_str(&b.ok(&["--json", "backup", "import", backup_arg])).unwrap();
    // Every token object: two key pairs and the certificate.
    assert_eq!(restored["restored"], 5);
    assert!(restored["skipped"].as_array().unwrap().is_empty());
    assert_eq!(b.objects(), a_objects);
    // A second import skips what is there.
    let second: serde_json::Value =
        serde_json::from_str(&b.ok(&["--json", "backup", "import", backup_arg])).unwrap();
    assert_eq!(second["restored"], 0);
    assert_eq!(second["skipped"].as_array().unwrap().len(), 5);
    assert_eq!(b.objects(), a_objects);

    // The restored keys sign on B; OpenSSL verifies with A's public keys.
    for (key, public) in ["ec-key", "rsa-key"].iter().zip(&a_public) {
        let csr = format!("b-{key}.csr");
        b.ok(&[
            "csr",
            "--key",
            key,
            "--subject",
            "CN=Box B restored",
            "--out",
            &csr,
        ]);
        let in_request = openssl_ok(&["req", "-in", &csr, "-noout", "-pubkey"], &b.dir);
        assert_eq!(&in_request, public, "{key}: B signs with A's key");
        let verified = openssl(&["req", "-in", &csr, "-verify", "-noout"], &b.dir);
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&verified.stdout),
            String::from_utf8_lossy(&verified.stderr)
        );
        assert!(
            verified.status.success() && said.contains("verify OK"),
            "{said}"
        );
    }
    assert_eq!(b.ok(&["export-public", "--key", "ec-key"]), a_public[0]);

    // C, of another domain, refuses the backup; nothing imported.
    let foreign = c.refused(&["backup", "import", backup_arg]);
    assert!(foreign.contains("belongs to cloning domain"), "{foreign}");
    assert_eq!(c.objects(), 0);

    // A modified backup is refused by the card's tag (a flipped byte in a
    // label keeps the file readable; the last byte is in the tag itself).
    let at = bytes.windows(6).position(|w| w == b"ec-key").unwrap();
    for index in [at + 1, bytes.len() - 1] {
        let mut bad = bytes.clone();
        bad[index] ^= 0x01;
        let bad_path = root.path().join(format!("bad-{index}.backup"));
        std::fs::write(&bad_path, &bad).unwrap();
        let fresh = c.refused(&["backup", "import", bad_path.to_str().unwrap()]);
        assert!(fresh.contains("domain"), "{fresh}");
        let modified = b.refused(&["backup", "import", bad_path.to_str().unwrap()]);
        assert!(modified.contains("was modified"), "{modified}");
    }
    assert_eq!(b.objects(), a_objects);
}
