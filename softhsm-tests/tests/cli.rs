//! The admin CLI `mesign-hsm` against a real daemon: exit codes and
//! messages, `--json` output, certificate requests checked by OpenSSL,
//! certificate import (including the refusal of a foreign certificate), and
//! exported public keys checked against signatures made on the token
//! through the PKCS#11 module (by OpenSC's pkcs11-tool, verified by
//! OpenSSL).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use softhsm_tests::binaries;
use softhsm_tests::daemon::Daemon;

const SO_PIN: &str = "so-secret-1";
const USER_PIN: &str = "user-secret-1";

/// A daemon in its own directory, and the CLI pointed at it.
struct Box {
    daemon: Daemon,
    dir: tempfile::TempDir,
}

impl Box {
    fn start() -> Box {
        binaries::require("mesign-hsm");
        let dir = tempfile::tempdir().expect("temp dir");
        let daemon = Daemon::start(
            &dir.path().join("state"),
            &dir.path().join("hsmd.sock"),
            &dir.path().join("hsmd.log"),
        );
        Box { daemon, dir }
    }

    /// A box with an initialised token.
    fn ready() -> Box {
        let b = Box::start();
        b.ok(&["token", "init", "--label", "cli-test"]);
        b
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The CLI with the socket and both PINs in the environment.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(binaries::profile_dir().join("mesign-hsm"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("MESIGN_HSM_SOCKET", self.daemon.socket())
            .env("MESIGN_HSM_SO_PIN", SO_PIN)
            .env("MESIGN_HSM_PIN", USER_PIN)
            .env_remove("MESIGN_HSM_NEW_PIN");
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run mesign-hsm")
    }

    /// Runs and asserts success; returns stdout.
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
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// Runs `list --json` and parses it.
    fn list(&self) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["--json", "list"])).expect("list --json is JSON")
    }
}

/// Exit code and stderr of a command expected to fail.
fn failure(out: &Output) -> (i32, String) {
    assert!(
        !out.status.success(),
        "unexpectedly succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    (
        out.status.code().expect("exit code, not a signal"),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
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
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn exit_codes_and_messages() {
    // Daemon unreachable: 3.
    let unreachable = Command::new(binaries::require("mesign-hsm"))
        .args(["--socket", "/nonexistent/mesign.sock", "status"])
        .output()
        .unwrap();
    let (code, err) = failure(&unreachable);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("cannot reach mesign-hsmd"), "{err}");

    let b = Box::start();
    // Usage errors: 2. A PIN argument is refused, loudly.
    let (code, err) = failure(&b.run(&["token", "init", "--label", "x", "--pin", "1234"]));
    assert_eq!(code, 2);
    assert!(err.contains("shell history"), "{err}");
    let (code, _) = failure(&b.run(&["key", "generate", "--type", "rsa-1024", "--label", "k"]));
    assert_eq!(code, 2);
    let (code, _) = failure(&b.run(&["frobnicate"]));
    assert_eq!(code, 2);
    // --help documents the exit codes.
    let help = b.ok(&["--help"]);
    assert!(
        help.contains("Exit codes") && help.contains("5 wrong or locked PIN"),
        "{help}"
    );

    // Not initialised: a clear message naming the fix.
    let (code, err) = failure(&b.run(&["key", "generate", "--type", "ec-p256", "--label", "k"]));
    assert_eq!(code, 1);
    assert!(err.contains("token init") && err.contains("0xe1"), "{err}");

    b.ok(&["token", "init", "--label", "cli-test"]);
    // Initialising again needs --force.
    let (code, err) = failure(&b.run(&["token", "init", "--label", "again"]));
    assert_eq!(code, 1);
    assert!(err.contains("--force"), "{err}");

    // Wrong PIN: 5, with the message and the PKCS#11 code.
    let mut cmd = b.command(&["list"]);
    cmd.env("MESIGN_HSM_PIN", "not-the-pin");
    let (code, err) = failure(&cmd.output().unwrap());
    assert_eq!(code, 5);
    assert!(err.contains("wrong PIN") && err.contains("0xa0"), "{err}");

    // No such key: 4.
    let (code, err) = failure(&b.run(&["export-public", "--key", "nope"]));
    assert_eq!(code, 4);
    assert!(err.contains("no key labelled \"nope\""), "{err}");

    // No PIN source and no terminal (setsid drops the controlling
    // terminal): 2, naming the sources.
    let mut cmd = Command::new("setsid");
    cmd.arg("-w")
        .arg(binaries::profile_dir().join("mesign-hsm"))
        .args(["key", "generate", "--type", "ec-p256", "--label", "k"])
        .env("MESIGN_HSM_SOCKET", b.daemon.socket())
        .env_remove("MESIGN_HSM_PIN")
        .stdin(std::process::Stdio::null());
    let (code, err) = failure(&cmd.output().unwrap());
    assert_eq!(code, 2);
    assert!(err.contains("MESIGN_HSM_PIN"), "{err}");

    // A PIN file works (first line only).
    std::fs::write(b.path("pin.txt"), format!("{USER_PIN}\nignored\n")).unwrap();
    let mut cmd = b.command(&["list", "--pin-file", "pin.txt"]);
    cmd.env_remove("MESIGN_HSM_PIN");
    assert!(cmd.output().unwrap().status.success());

    // Duplicate labels are refused.
    b.ok(&["key", "generate", "--type", "ec-p256", "--label", "k"]);
    let (code, err) = failure(&b.run(&["key", "generate", "--type", "ec-p256", "--label", "k"]));
    assert_eq!(code, 1);
    assert!(err.contains("exists already"), "{err}");

    // delete without --yes off a terminal is refused; with --yes it works.
    let mut cmd = Command::new("setsid");
    cmd.arg("-w")
        .arg(binaries::profile_dir().join("mesign-hsm"))
        .args(["delete", "--label", "k"])
        .env("MESIGN_HSM_SOCKET", b.daemon.socket())
        .env("MESIGN_HSM_PIN", USER_PIN)
        .stdin(std::process::Stdio::null());
    let (code, _) = failure(&cmd.output().unwrap());
    assert_eq!(code, 2);
    assert_eq!(b.list()["keys"].as_array().unwrap().len(), 1);
    b.ok(&["delete", "--label", "k", "--yes"]);
    assert!(b.list()["keys"].as_array().unwrap().is_empty());
}

#[test]
fn pin_change_lockout_and_unlock() {
    let b = Box::ready();
    let mut change = b.command(&["pin", "change"]);
    change.env("MESIGN_HSM_NEW_PIN", "changed-pin-2");
    assert!(change.output().unwrap().status.success());
    // The old PIN no longer works; the new one does.
    let (code, _) = failure(&b.run(&["list"]));
    assert_eq!(code, 5);
    let mut list = b.command(&["list"]);
    list.env("MESIGN_HSM_PIN", "changed-pin-2");
    assert!(list.output().unwrap().status.success());
    // A new PIN the token would refuse is refused before anything changes.
    let mut short = b.command(&["pin", "change"]);
    short
        .env("MESIGN_HSM_PIN", "changed-pin-2")
        .env("MESIGN_HSM_NEW_PIN", "12");
    let (code, err) = failure(&short.output().unwrap());
    assert_eq!(code, 1);
    assert!(err.contains("4 to 64"), "{err}");

    // Wrong PINs until the user PIN locks (the failed login above counted).
    let mut locked = None;
    for _ in 0..12 {
        let (code, err) = failure(&b.run(&["list"]));
        assert_eq!(code, 5);
        if err.contains("locked") {
            locked = Some(err);
            break;
        }
    }
    let err = locked.expect("the user PIN never locked");
    assert!(err.contains("pin unlock") && err.contains("0xa4"), "{err}");
    let status: serde_json::Value =
        serde_json::from_str(&b.ok(&["--json", "token", "status"])).unwrap();
    assert!(
        status["flags"]
            .as_array()
            .unwrap()
            .contains(&"user-pin-locked".into()),
        "{status}"
    );
    // Even the right PIN is refused now.
    let mut right = b.command(&["list"]);
    right.env("MESIGN_HSM_PIN", "changed-pin-2");
    assert_eq!(failure(&right.output().unwrap()).0, 5);

    // The SO unlocks with a new user PIN.
    let mut unlock = b.command(&["pin", "unlock"]);
    unlock.env("MESIGN_HSM_NEW_PIN", "after-unlock-3");
    assert!(unlock.output().unwrap().status.success());
    let mut list = b.command(&["list"]);
    list.env("MESIGN_HSM_PIN", "after-unlock-3");
    assert!(list.output().unwrap().status.success());
    // A wrong SO PIN is refused with 5.
    let mut bad_so = b.command(&["pin", "unlock"]);
    bad_so
        .env("MESIGN_HSM_SO_PIN", "wrong-so-pin")
        .env("MESIGN_HSM_NEW_PIN", "whatever-4");
    assert_eq!(failure(&bad_so.output().unwrap()).0, 5);
}

#[test]
fn json_output_parses_and_describes_the_token() {
    let b = Box::ready();
    let status: serde_json::Value = serde_json::from_str(&b.ok(&["--json", "status"])).unwrap();
    assert_eq!(status["cards"][0]["token_initialized"], true);
    let token: serde_json::Value =
        serde_json::from_str(&b.ok(&["--json", "token", "status"])).unwrap();
    assert_eq!(token["label"], "cli-test");
    assert!(token["flags"]
        .as_array()
        .unwrap()
        .contains(&"user-pin-initialized".into()));

    let generated: serde_json::Value = serde_json::from_str(&b.ok(&[
        "--json", "key", "generate", "--type", "ec-p384", "--label", "ec", "--id", "a1b2",
    ]))
    .unwrap();
    assert_eq!(generated["id"], "a1b2");
    b.ok(&["key", "generate", "--type", "rsa-2048", "--label", "rsa"]);

    let list = b.list();
    assert_eq!(list["logged_in"], true);
    let keys = list["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "{list}");
    let ec = keys.iter().find(|k| k["label"] == "ec").unwrap();
    assert_eq!(ec["type"], "ec-p384");
    assert_eq!(ec["id"], "a1b2");
    assert_eq!(ec["private_key"], true);
    assert_eq!(ec["public_key"], true);
    assert_eq!(ec["usage"], serde_json::json!(["sign"]));
    let rsa = keys.iter().find(|k| k["label"] == "rsa").unwrap();
    assert_eq!(rsa["type"], "rsa-2048");
    assert_eq!(rsa["id"].as_str().unwrap().len(), 16, "8 random bytes");
    assert!(list["certificates"].as_array().unwrap().is_empty());

    // Without a PIN the private halves are unknown, not claimed absent.
    let mut public = b.command(&["--json", "list"]);
    public.env_remove("MESIGN_HSM_PIN");
    let out = public.output().unwrap();
    assert!(out.status.success());
    let public: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(public["logged_in"], false);
    assert!(public["keys"][0]["private_key"].is_null(), "{public}");
}

#[test]
fn csr_verifies_with_openssl_and_carries_what_was_asked() {
    let b = Box::ready();
    let dir = b.dir.path();
    b.ok(&["key", "generate", "--type", "ec-p384", "--label", "ec"]);
    b.ok(&["key", "generate", "--type", "rsa-2048", "--label", "rsa"]);
    let cases: &[(&str, &[&str], &str)] = &[
        ("ec", &[], "ecdsa-with-SHA384"),
        ("rsa", &[], "sha256WithRSAEncryption"),
        ("rsa", &["--rsa-pss"], "rsassaPss"),
    ];
    for (i, (key, extra, algorithm)) in cases.iter().enumerate() {
        let out = format!("req{i}.pem");
        let mut args = vec![
            "csr",
            "--key",
            key,
            "--subject",
            "CN=Erika Mustermann,O=Beispiel GmbH,C=DE",
            "--san",
            "email:erika@example.com",
            "--eku",
            "document-signing",
            "--out",
            &out,
        ];
        args.extend_from_slice(extra);
        b.ok(&args);
        let text = openssl_ok(&["req", "-in", &out, "-verify", "-noout", "-text"], dir);
        assert!(text.contains("verify OK"), "{text}");
        assert!(text.contains(algorithm), "{text}");
        assert!(
            text.contains("C = DE, O = Beispiel GmbH, CN = Erika Mustermann"),
            "{text}"
        );
        assert!(text.contains("email:erika@example.com"), "{text}");
        assert!(text.contains("1.3.6.1.5.5.7.3.36"), "{text}");
        assert!(
            text.contains("Digital Signature, Non Repudiation"),
            "{text}"
        );
        if extra.contains(&"--rsa-pss") {
            assert!(text.contains("Salt Length: 0x20"), "{text}");
        }
        // The request's key is the exported public key.
        b.ok(&["export-public", "--key", key, "--out", "pub.pem"]);
        let from_req = openssl_ok(&["req", "-in", &out, "-noout", "-pubkey"], dir);
        let exported = std::fs::read_to_string(dir.join("pub.pem")).unwrap();
        assert!(from_req.contains(exported.trim()), "{from_req}\n{exported}");

        // One flipped bit in the signature and OpenSSL refuses it: the
        // check above can fail.
        let der_path = dir.join("req.der");
        openssl_ok(
            &["req", "-in", &out, "-outform", "DER", "-out", "req.der"],
            dir,
        );
        let mut der = std::fs::read(&der_path).unwrap();
        let last = der.len() - 3;
        der[last] ^= 1;
        std::fs::write(&der_path, der).unwrap();
        let bad = openssl(
            &[
                "req", "-inform", "DER", "-in", "req.der", "-verify", "-noout",
            ],
            dir,
        );
        let said = String::from_utf8_lossy(&bad.stdout).to_string()
            + &String::from_utf8_lossy(&bad.stderr);
        assert!(!said.contains("verify OK"), "{said}");
    }
    // PSS with an EC key is a usage error.
    let (code, _) = failure(&b.run(&[
        "csr",
        "--key",
        "ec",
        "--subject",
        "CN=x",
        "--rsa-pss",
        "--out",
        "x.pem",
    ]));
    assert_eq!(code, 2);
    assert!(!dir.join("x.pem").exists());
}

/// A throwaway CA in `dir`: ca.key, ca.pem.
fn make_ca(dir: &Path) {
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
            "/CN=CLI Test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
        dir,
    );
}

fn issue(dir: &Path, csr: &str, out: &str) {
    openssl_ok(
        &[
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "4660",
            "-days",
            "1",
            "-copy_extensions",
            "copy",
            "-out",
            out,
        ],
        dir,
    );
}

#[test]
fn cert_import_refuses_a_foreign_certificate_and_stores_the_right_one() {
    let b = Box::ready();
    let dir = b.dir.path();
    make_ca(dir);
    b.ok(&["key", "generate", "--type", "ec-p256", "--label", "signer"]);
    b.ok(&["key", "generate", "--type", "ec-p256", "--label", "other"]);

    // A certificate for another key (here: OTHER's request) is refused.
    b.ok(&[
        "csr",
        "--key",
        "other",
        "--subject",
        "CN=Other",
        "--out",
        "other.csr",
    ]);
    issue(dir, "other.csr", "other.pem");
    let (code, err) = failure(&b.run(&["cert", "import", "--key", "signer", "other.pem"]));
    assert_eq!(code, 1);
    assert!(err.contains("is not the public key of \"signer\""), "{err}");
    // So is one for a key that is not on the token at all.
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
            "soft.key",
            "-out",
            "soft.pem",
            "-days",
            "1",
            "-subj",
            "/CN=Soft",
        ],
        dir,
    );
    let (code, _) = failure(&b.run(&["cert", "import", "--key", "signer", "soft.pem"]));
    assert_eq!(code, 1);
    assert!(b.list()["certificates"].as_array().unwrap().is_empty());

    // The right certificate, with the chain.
    b.ok(&[
        "csr",
        "--key",
        "signer",
        "--subject",
        "CN=Signer,O=Test,C=DE",
        "--eku",
        "document-signing",
        "--out",
        "signer.csr",
    ]);
    issue(dir, "signer.csr", "signer.pem");
    b.ok(&[
        "cert",
        "import",
        "--key",
        "signer",
        "signer.pem",
        "--chain",
        "ca.pem",
    ]);
    let list = b.list();
    let certs = list["certificates"].as_array().unwrap();
    assert_eq!(certs.len(), 2, "{list}");
    let signer_id = list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["label"] == "signer")
        .unwrap()["id"]
        .clone();
    let leaf = certs
        .iter()
        .find(|c| c["category"] == "token-user")
        .unwrap();
    assert_eq!(leaf["label"], "signer");
    assert_eq!(leaf["id"], signer_id);
    assert_eq!(leaf["subject"], "CN=Signer,O=Test,C=DE");
    assert_eq!(leaf["issuer"], "CN=CLI Test CA");
    assert_eq!(leaf["serial"], "1234");
    assert!(leaf["not_after"].as_str().unwrap().ends_with('Z'));
    let ca = certs.iter().find(|c| c["category"] == "authority").unwrap();
    assert_eq!(ca["label"], "CLI Test CA");

    // Importing again needs --replace, and then replaces (the CA is not
    // duplicated).
    let (code, err) = failure(&b.run(&["cert", "import", "--key", "signer", "signer.pem"]));
    assert_eq!(code, 1);
    assert!(err.contains("--replace"), "{err}");
    b.ok(&[
        "cert",
        "import",
        "--key",
        "signer",
        "signer.pem",
        "--chain",
        "ca.pem",
        "--replace",
    ]);
    assert_eq!(b.list()["certificates"].as_array().unwrap().len(), 2);

    // Deleting the key deletes its certificate, not the CA's.
    b.ok(&["delete", "--label", "signer", "--yes"]);
    let list = b.list();
    let certs = list["certificates"].as_array().unwrap();
    assert_eq!(certs.len(), 1, "{list}");
    assert_eq!(certs[0]["category"], "authority");
}

#[test]
fn exported_public_key_verifies_token_signatures() {
    let b = Box::ready();
    let dir = b.dir.path();
    let module = binaries::require(binaries::MESIGN_MODULE);
    b.ok(&["key", "generate", "--type", "ec-p256", "--label", "ec"]);
    b.ok(&["key", "generate", "--type", "rsa-2048", "--label", "rsa"]);
    std::fs::write(dir.join("data.txt"), b"contract text\n").unwrap();
    let list = b.list();
    let id_of = |label: &str| {
        list["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["label"] == label)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    for (key, mechanism, other) in [
        ("ec", "ECDSA-SHA256", "rsa"),
        ("rsa", "SHA256-RSA-PKCS", "ec"),
    ] {
        let pem = b.ok(&["export-public", "--key", key]);
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");
        std::fs::write(dir.join(format!("{key}.pub.pem")), &pem).unwrap();
        let sig = format!("{key}.sig");
        let out = Command::new("pkcs11-tool")
            .arg("--module")
            .arg(&module)
            // pkcs11-tool picks the signing key by id, not by label.
            .args(["--login", "--pin", USER_PIN, "--sign", "--id", &id_of(key)])
            .args(["-m", mechanism])
            .args([
                "--signature-format",
                "openssl",
                "-i",
                "data.txt",
                "-o",
                &sig,
            ])
            .current_dir(dir)
            .env("MESIGN_HSM_SOCKET", b.daemon.socket())
            .output()
            .expect("run pkcs11-tool (Debian package opensc)");
        assert!(
            out.status.success(),
            "pkcs11-tool failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pubkey = format!("{key}.pub.pem");
        let verified = openssl_ok(
            &[
                "dgst",
                "-sha256",
                "-verify",
                &pubkey,
                "-signature",
                &sig,
                "data.txt",
            ],
            dir,
        );
        assert!(verified.contains("Verified OK"), "{verified}");
        // The other key's export does not verify it.
        std::fs::write(
            dir.join("other.pub.pem"),
            b.ok(&["export-public", "--key", other]),
        )
        .unwrap();
        let wrong = openssl(
            &[
                "dgst",
                "-sha256",
                "-verify",
                "other.pub.pem",
                "-signature",
                &sig,
                "data.txt",
            ],
            dir,
        );
        assert!(!wrong.status.success());
    }
}
