//! Hostile local clients (issue #6, item 4), against a real daemon.
//!
//! - Only authorised users get in: a client running as another uid
//!   (`setpriv` to nobody) is refused by a daemon that allows only root,
//!   and served once its uid, or its group, is in the configuration.
//! - A thousand idle connections plus a client that floods requests and
//!   never reads a reply leave the daemon serving a normal client (ECDSA
//!   signatures verified with the `p256` crate), with its resident memory
//!   bounded (see `RSS_GROWTH_BOUND`).
//!
//! Ours only. Needs root (setpriv) — the test command runs as root.

use std::io::{ErrorKind, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cryptoki::mechanism::Mechanism;
use mesign_proto::{encode_frame, Request, RequestBody, PROTOCOL_VERSION};
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use softhsm_tests::binaries;
use softhsm_tests::daemon::{Daemon, READY_DEADLINE};
use softhsm_tests::keys::{self, KeySpec};
use softhsm_tests::standalone::{load_module, only_slot, ready_session};
use softhsm_tests::verify::{assert_genuine, sha256, Curve};

/// How many silent connections the daemon must carry.
const IDLE_CONNECTIONS: usize = 1000;
/// The daemon's resident memory may grow by at most this much under the
/// idle connections and the flood (measured: see the README).
const RSS_GROWTH_BOUND_KIB: u64 = 64 * 1024;
const POLL: Duration = Duration::from_millis(10);

/// A daemon started with a configuration file, as the unit starts it.
struct ConfiguredDaemon {
    child: Child,
    log: PathBuf,
}

impl ConfiguredDaemon {
    fn start(dir: &Path, config: &str) -> Self {
        binaries::require(binaries::MESIGN_CARD_EMU);
        let conf = dir.join("hsmd.toml");
        std::fs::write(&conf, config).expect("write config");
        let log = dir.join("hsmd.log");
        let out = std::fs::File::create(&log).expect("daemon log");
        let socket = dir.join("hsmd.sock");
        let child = Command::new(binaries::require(binaries::MESIGN_DAEMON))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--socket")
            .arg(&socket)
            .arg("--config")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log handle"))
            .stderr(out)
            .spawn()
            .expect("start mesign-hsmd");
        let mut daemon = ConfiguredDaemon { child, log };
        let deadline = Instant::now() + READY_DEADLINE;
        while UnixStream::connect(&socket).is_err() {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!("mesign-hsmd exited with {status}:\n{}", daemon.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "daemon not ready:\n{}",
                daemon.log_text()
            );
            std::thread::sleep(POLL);
        }
        daemon
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ConfiguredDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `pkcs11-tool -L` through our module as uid/gid 65534 (nobody/nogroup).
fn list_slots_as_nobody(socket: &Path) -> std::process::Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg("pkcs11-tool")
        .arg("--module")
        .arg(binaries::require(binaries::MESIGN_MODULE))
        .arg("-L")
        .env("MESIGN_HSM_SOCKET", socket)
        .output()
        .expect("run pkcs11-tool through setpriv")
}

fn served(out: &std::process::Output) -> bool {
    let text = String::from_utf8_lossy(&out.stdout);
    out.status.success() && text.contains("MeSign emulated HSM")
}

#[test]
fn only_configured_uids_and_groups_reach_the_daemon() {
    let dir = tempfile::Builder::new()
        .prefix("hostile-uid-")
        .tempdir()
        .expect("temp dir");
    // The socket's directory must be reachable by nobody; the socket's
    // mode lets anyone connect, so the peer check alone decides.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.path().join("hsmd.sock");
    let common = "socket_mode = 0o666\nhello_timeout_secs = 5\n";

    let daemon = ConfiguredDaemon::start(dir.path(), &format!("{common}allowed_uids = [0]\n"));
    let refused = list_slots_as_nobody(&socket);
    assert!(
        !served(&refused),
        "uid 65534 was served by a daemon that allows only root:\n{}",
        String::from_utf8_lossy(&refused.stdout)
    );
    assert!(
        daemon.log_text().contains("not allowed"),
        "the refusal is logged:\n{}",
        daemon.log_text()
    );
    drop(daemon);

    for allowed in [
        "allowed_uids = [0, 65534]\n",
        "allowed_uids = [0]\nallowed_gids = [65534]\n",
    ] {
        let daemon = ConfiguredDaemon::start(dir.path(), &format!("{common}{allowed}"));
        let out = list_slots_as_nobody(&socket);
        assert!(
            served(&out),
            "uid 65534 not served with {allowed:?}: {}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        drop(daemon);
    }
}

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("daemon status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

fn frame(id: u64, body: RequestBody) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(
        &Request {
            version: PROTOCOL_VERSION,
            id,
            body,
        },
        &mut out,
    );
    out
}

#[test]
fn idle_connections_and_a_client_that_never_reads_do_not_starve_others() {
    // The test process holds the idle connections and the daemon serves
    // them; the daemon inherits the raised limit.
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("RLIMIT_NOFILE");
    let needed = (IDLE_CONNECTIONS as u64) * 2 + 256;
    if soft < needed {
        assert!(
            hard >= needed,
            "RLIMIT_NOFILE hard limit {hard} is below {needed}"
        );
        setrlimit(Resource::RLIMIT_NOFILE, needed, hard).expect("raise RLIMIT_NOFILE");
    }
    let dir = tempfile::Builder::new()
        .prefix("hostile-flood-")
        .tempdir()
        .expect("temp dir");
    let socket = dir.path().join("hsmd.sock");
    std::env::set_var("MESIGN_HSM_SOCKET", &socket);
    let daemon = Daemon::start(
        &dir.path().join("state"),
        &socket,
        &dir.path().join("hsmd.log"),
    );
    let pkcs11 = load_module();
    let slot = only_slot(&pkcs11);
    let session = ready_session(&pkcs11, slot, "hostile");
    let pair = keys::generate(&session, KeySpec::Ec(Curve::P256), "hostile-key");
    let public = keys::public_key(&session, KeySpec::Ec(Curve::P256), pair.public);
    let sign_and_verify = |what: &str| {
        let hash = sha256(what.as_bytes());
        let started = Instant::now();
        let sig = session
            .sign(&Mechanism::Ecdsa, pair.private, &hash)
            .unwrap_or_else(|e| panic!("{what}: {e}\n{}", daemon.log_text()));
        assert_genuine(what, &hash, |h| public.verify_ecdsa_prehash(h, &sig));
        started.elapsed()
    };
    sign_and_verify("warm-up");
    let before = vm_rss_kib(daemon.pid());

    // A thousand connections that never say a word (the default hello
    // timeout of 10 s outlasts this test).
    let idle: Vec<UnixStream> = (0..IDLE_CONNECTIONS)
        .map(|i| {
            UnixStream::connect(&socket)
                .unwrap_or_else(|e| panic!("idle connection {i}: {e}\n{}", daemon.log_text()))
        })
        .collect();

    // A client that says Hello and then sends requests until the socket
    // is full, reading nothing.
    let mut flood = UnixStream::connect(&socket).expect("flooding client");
    flood
        .write_all(&frame(0, RequestBody::Hello { app: 0xF100D }))
        .expect("hello");
    flood.set_nonblocking(true).expect("non-blocking");
    // Many frames per write, so the socket buffers fill with requests
    // rather than with per-write overhead.
    let request = frame(1, RequestBody::Slots).repeat(4096);
    let mut sent = 0usize;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match flood.write(&request) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("flood write: {e}"),
        }
        assert!(
            Instant::now() < deadline,
            "the daemon kept reading for 20 s"
        );
    }
    assert!(sent > 64 * 1024, "flooded only {sent} bytes");

    // Everyone else is still served, promptly.
    for i in 0..20 {
        let took = sign_and_verify(&format!("signature {i} under load"));
        assert!(took < Duration::from_secs(2), "signature {i} took {took:?}");
    }
    let new_session = pkcs11
        .open_ro_session(slot)
        .expect("C_OpenSession under load");
    drop(new_session);
    let after = vm_rss_kib(daemon.pid());
    eprintln!(
        "daemon VmRSS: {before} KiB before, {after} KiB with {IDLE_CONNECTIONS} idle connections \
         and a {sent}-byte unread flood"
    );
    assert!(
        after.saturating_sub(before) < RSS_GROWTH_BOUND_KIB,
        "daemon RSS grew from {before} KiB to {after} KiB"
    );
    drop(idle);
    drop(flood);
    sign_and_verify("after the hostile clients left");
}
