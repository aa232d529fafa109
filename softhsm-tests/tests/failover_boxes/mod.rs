//! Two boxes of one cloning domain for the failover tests: each a daemon
//! with its own emulated card, state directory and socket (and, when
//! started with a `[tls]` section, a TLS listener), a key generated on A and
//! cloned to B by backup export/import, and the module-side helpers.

// Each test file that includes this module uses part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cryptoki::context::Pkcs11;
use cryptoki::error::Error;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::ObjectHandle;
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use softhsm_tests::binaries;
use softhsm_tests::daemon::Daemon;
use softhsm_tests::keys::{self, KeySpec};
use softhsm_tests::target::pin;
use softhsm_tests::verify::{sha256, Curve, PublicKey};
use softhsm_tests::{SO_PIN, USER_PIN};

/// The label of the key both boxes hold.
pub const KEY: &str = "failover-key";

/// One box: its directory, and the daemon when it runs.
pub struct Box {
    pub dir: PathBuf,
    daemon: Option<Daemon>,
    /// Starts so far, for log file names.
    starts: u32,
    /// The daemon's `--config` file, once TLS is set up.
    config: Option<PathBuf>,
    /// The TLS port, once TLS is set up.
    pub port: Option<u16>,
}

impl Box {
    pub fn new(root: &Path, name: &str) -> Box {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let mut b = Box {
            dir,
            daemon: None,
            starts: 0,
            config: None,
            port: None,
        };
        b.start();
        b
    }

    pub fn name(&self) -> &str {
        self.dir.file_name().unwrap().to_str().unwrap()
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("hsmd.sock")
    }

    pub fn start(&mut self) {
        self.starts += 1;
        let log = self.dir.join(format!("hsmd-{}.log", self.starts));
        let mut args: Vec<&std::ffi::OsStr> = Vec::new();
        if let Some(config) = &self.config {
            args = vec!["--config".as_ref(), config.as_os_str()];
        }
        let daemon =
            Daemon::start_with_args(&self.dir.join("state"), &self.socket(), &log, &[], &args);
        self.daemon = Some(daemon);
        if let Some(port) = self.port {
            // The Unix socket accepting does not mean the TLS port is bound.
            let deadline = Instant::now() + Duration::from_secs(20);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "TLS port {port} never bound");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    pub fn stop(&mut self) {
        let daemon = self.daemon.take().expect("running");
        assert!(daemon.stop().success(), "daemon stopped cleanly");
    }

    pub fn kill(&mut self) {
        self.daemon.take().expect("running").kill();
    }

    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(binaries::require("mesign-hsm"))
            .args(args)
            .current_dir(&self.dir)
            .env("MESIGN_HSM_SOCKET", self.socket())
            .env("MESIGN_HSM_SO_PIN", SO_PIN)
            .env("MESIGN_HSM_PIN", USER_PIN)
            .env_remove("MESIGN_HSM_NEW_PIN")
            .output()
            .expect("run mesign-hsm");
        assert!(
            out.status.success(),
            "mesign-hsm {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Issues this box's TLS certificate (for 127.0.0.1) and restarts it
    /// with a TLS listener on a free port.
    pub fn listen_tls(&mut self) {
        let certs = self.dir.join("certs");
        std::fs::create_dir_all(&certs).unwrap();
        let name = self.name().to_string();
        self.cli(&[
            "domain",
            "tls-cert",
            "--name",
            &name,
            "--ip",
            "127.0.0.1",
            "--out-dir",
            certs.to_str().unwrap(),
        ]);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = self.dir.join("hsmd.toml");
        std::fs::write(
            &config,
            format!(
                "[tls]\nlisten = \"127.0.0.1:{port}\"\ncert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\n",
                certs.join(format!("{name}.crt")).display(),
                certs.join(format!("{name}.key")).display(),
                certs.join("domain-ca.crt").display(),
            ),
        )
        .unwrap();
        self.config = Some(config);
        self.port = Some(port);
        self.stop();
        self.start();
    }

    /// The audit log of the box's one card.
    pub fn audit_log(&self) -> PathBuf {
        find_file(&self.dir.join("state"), "audit.log").expect("an audit log")
    }

    /// The audit log's length now, to count what comes after.
    pub fn audit_len(&self) -> u64 {
        std::fs::metadata(self.audit_log()).map_or(0, |m| m.len())
    }

    /// Signatures the audit log recorded past byte `from` (the daemon
    /// writes its counts at least every 10 s and when it stops).
    pub fn signatures_since(&self, from: u64) -> u64 {
        let text = std::fs::read(self.audit_log()).unwrap();
        String::from_utf8_lossy(&text[from as usize..])
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|record| record["event"] == "signatures")
            .map(|record| record["detail"]["count"].as_u64().unwrap())
            .sum()
    }
}

fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()? {
        let path = entry.ok()?.path();
        if path.file_name().is_some_and(|n| n == name) {
            return Some(path);
        }
        if path.is_dir() {
            if let Some(found) = find_file(&path, name) {
                return Some(found);
            }
        }
    }
    None
}

/// A and B in one domain, with [`KEY`] generated on A and restored on B.
pub fn two_boxes(root: &Path) -> (Box, Box) {
    let a = Box::new(root, "box-a");
    let b = Box::new(root, "box-b");
    let shares = root.join("shares");
    std::fs::create_dir_all(&shares).unwrap();
    let words: Vec<String> = (1..=2)
        .map(|i| {
            let p = root.join(format!("words-{i}"));
            std::fs::write(&p, format!("custodian {i} words\n")).unwrap();
            p.to_str().unwrap().to_string()
        })
        .collect();
    a.cli(&["token", "init", "--label", "box-a"]);
    b.cli(&["token", "init", "--label", "box-b"]);
    let created: serde_json::Value = serde_json::from_str(&a.cli(&[
        "--json",
        "domain",
        "create",
        "--shares",
        "2",
        "--threshold",
        "2",
        "--out-dir",
        shares.to_str().unwrap(),
        "--passphrase-file",
        &words[0],
        "--passphrase-file",
        &words[1],
    ]))
    .unwrap();
    let files: Vec<&str> = created["shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    b.cli(&[
        "domain",
        "join",
        files[0],
        files[1],
        "--passphrase-file",
        &words[0],
        "--passphrase-file",
        &words[1],
    ]);
    a.cli(&[
        "key", "generate", "--type", "ec-p256", "--label", KEY, "--id", "01",
    ]);
    let backup = root.join("a.backup");
    a.cli(&["backup", "export", "--out", backup.to_str().unwrap()]);
    b.cli(&["backup", "import", backup.to_str().unwrap()]);
    (a, b)
}

/// A logged-in session and the key's handle and public key.
pub fn logged_in(pkcs11: &Pkcs11, slot: Slot) -> (Session, ObjectHandle, PublicKey) {
    let session = pkcs11.open_rw_session(slot).expect("C_OpenSession");
    session
        .login(UserType::User, Some(&pin(USER_PIN)))
        .expect("C_Login");
    let private = keys::private_key_by_label(&session, KEY);
    let public = keys::public_key_by_label(&session, KEY);
    let public = keys::public_key(&session, KeySpec::Ec(Curve::P256), public);
    (session, private, public)
}

/// Signs `message` and verifies the signature with the `p256` crate.
pub fn sign_verified(
    session: &Session,
    key: ObjectHandle,
    public: &PublicKey,
    message: &[u8],
) -> Result<(), Error> {
    let hash = sha256(message);
    let signature = session.sign(&Mechanism::Ecdsa, key, &hash)?;
    public
        .verify_ecdsa_prehash(&hash, &signature)
        .unwrap_or_else(|e| panic!("signature over {message:?} does not verify: {e}"));
    Ok(())
}

/// Signs at least `count` times and for at least `at_least` (a daemon that
/// failed is tried again at most every 500 ms); returns how many.
pub fn sign_for(
    session: &Session,
    key: ObjectHandle,
    public: &PublicKey,
    count: u64,
    at_least: Duration,
    what: &str,
) -> u64 {
    let since = Instant::now();
    let mut i = 0;
    while i < count || since.elapsed() < at_least {
        sign_verified(session, key, public, format!("{what} {i}").as_bytes())
            .unwrap_or_else(|e| panic!("{what}: signature {i}: {e}"));
        i += 1;
    }
    i
}

/// Signs through `pkcs11` for longer than the module's 500 ms retry pause
/// and asserts that both boxes served signatures, counted from their audit
/// logs (stopping a daemon flushes its counts; both are started again).
/// Either box's count may include signatures from before this call.
pub fn assert_signing_spreads(pkcs11: &Pkcs11, slot: Slot, a: &mut Box, b: &mut Box, what: &str) {
    let (a_from, b_from) = (a.audit_len(), b.audit_len());
    let (session, key, public) = logged_in(pkcs11, slot);
    let signed = sign_for(
        &session,
        key,
        &public,
        40,
        Duration::from_millis(1200),
        what,
    );
    a.stop();
    b.stop();
    let (on_a, on_b) = (a.signatures_since(a_from), b.signatures_since(b_from));
    println!(
        "{what}: {on_a} signatures on {}, {on_b} on {}",
        a.name(),
        b.name()
    );
    assert!(on_a > 0 && on_b > 0, "A {on_a}, B {on_b}: not spread");
    assert!(on_a + on_b >= signed, "A {on_a} + B {on_b} < {signed}");
    a.start();
    b.start();
}
