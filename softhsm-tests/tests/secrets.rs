//! Secrets stay in their processes (issue #6, item 6): the daemon and the
//! card process are not dumpable, the card's memory is locked, and no PIN
//! reaches a log, a client's output or the state directory even at the most
//! verbose log level. Ours only; needs root (setpriv, chown).

use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use softhsm_tests::binaries;
use softhsm_tests::daemon::{Daemon, READY_DEADLINE};
use softhsm_tests::standalone::card_pid;

const POLL: Duration = Duration::from_millis(10);
const NOBODY: u32 = 65534;

/// Owner of `/proc/PID/environ`: the process's uid while it is dumpable,
/// root once it called `prctl(PR_SET_DUMPABLE, 0)` (proc(5)).
fn proc_owner(pid: u32) -> u32 {
    std::fs::metadata(format!("/proc/{pid}/environ"))
        .expect("/proc/PID/environ")
        .uid()
}

fn real_uid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + READY_DEADLINE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {READY_DEADLINE:?}"
        );
        std::thread::sleep(POLL);
    }
}

#[test]
fn daemon_and_card_are_not_dumpable_and_card_memory_is_locked() {
    let dir = tempfile::Builder::new()
        .prefix("secrets-dump-")
        .tempdir()
        .unwrap();
    nix::unistd::chown(dir.path(), Some(NOBODY.into()), Some(NOBODY.into())).unwrap();
    let socket = dir.path().join("hsmd.sock");
    let mut daemon = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(binaries::require(binaries::MESIGN_DAEMON))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--socket")
        .arg(&socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mesign-hsmd as nobody");
    let pid = daemon.id();
    poll("daemon accepting", || UnixStream::connect(&socket).ok());
    let card = poll("card process", || card_pid(pid));
    // A control process of the same uid that does nothing special.
    let mut control = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            "cat",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .expect("control process");
    let control_pid = control.id();
    // setpriv changes its uid before it runs `cat`, and a process that
    // changed its uid is not dumpable until its next exec: wait for `cat`
    // itself, which shows that a dumpable nobody process owns its /proc
    // files (the check below can tell the two apart).
    poll("control process dumpable as nobody", || {
        (real_uid(control_pid) == Some(NOBODY) && proc_owner(control_pid) == NOBODY).then_some(())
    });

    assert_eq!(real_uid(pid), Some(NOBODY));
    assert_eq!(real_uid(card), Some(NOBODY));
    assert_eq!(proc_owner(pid), 0, "mesign-hsmd is dumpable");
    assert_eq!(proc_owner(card), 0, "mesign-card-emu is dumpable");
    let _ = control.kill();
    let _ = control.wait();
    let _ = daemon.kill();
    let _ = daemon.wait();

    // As root (CAP_IPC_LOCK), the card locks all of its memory, present and
    // future: every mapping carries the "lo" VmFlag.
    let root_dir = tempfile::Builder::new()
        .prefix("secrets-lock-")
        .tempdir()
        .unwrap();
    let socket = root_dir.path().join("hsmd.sock");
    let daemon = Daemon::start(
        &root_dir.path().join("state"),
        &socket,
        &root_dir.path().join("log"),
    );
    let card = poll("card process", || card_pid(daemon.pid()));
    let smaps = std::fs::read_to_string(format!("/proc/{card}/smaps")).expect("card smaps");
    // Each mapping: a header line ("start-end perms offset dev inode path")
    // and, last of its fields, "VmFlags: ...". Writable private mappings
    // (heap, stacks, anonymous memory: where keys live) must be locked.
    let mut header = "";
    let mut writable = 0;
    let mut unlocked = Vec::new();
    for line in smaps.lines() {
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            let perms = header.split_whitespace().nth(1).unwrap_or("");
            if perms.starts_with("rw") && perms.ends_with('p') {
                writable += 1;
                if !flags.split_whitespace().any(|f| f == "lo") {
                    unlocked.push(header.to_string());
                }
            }
        } else if !line.contains(':') || line.split_whitespace().count() >= 5 {
            header = line;
        }
    }
    assert!(writable > 3, "found only {writable} writable mappings");
    assert!(
        unlocked.is_empty(),
        "card mappings not locked:\n{}",
        unlocked.join("\n")
    );
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn pins_appear_in_no_log_output_or_state_file_at_trace_level() {
    const SO_PIN: &str = "SoPin-7391";
    const USER_PIN: &str = "UsrPin-52841";
    const NEW_PIN: &str = "NewPin-90417";
    const WRONG_PIN: &str = "BadPin-66102";
    let dir = tempfile::Builder::new()
        .prefix("secrets-pins-")
        .tempdir()
        .unwrap();
    let socket = dir.path().join("hsmd.sock");
    let log = dir.path().join("hsmd.log");
    let trace = std::ffi::OsStr::new("trace");
    let daemon = Daemon::start_with_env(
        &dir.path().join("state"),
        &socket,
        &log,
        &[("RUST_LOG", trace)],
    );
    let module = binaries::require(binaries::MESIGN_MODULE);
    let mut outputs = String::new();
    let mut tool = |args: &[&str], ok: bool| {
        let out = Command::new("pkcs11-tool")
            .arg("--module")
            .arg(&module)
            .args(args)
            .env("MESIGN_HSM_SOCKET", &socket)
            .env("RUST_LOG", "trace")
            .output()
            .expect("pkcs11-tool");
        assert_eq!(out.status.success(), ok, "pkcs11-tool {args:?}: {out:?}");
        outputs.push_str(&String::from_utf8_lossy(&out.stdout));
        outputs.push_str(&String::from_utf8_lossy(&out.stderr));
    };
    tool(
        &["--init-token", "--label", "pins", "--so-pin", SO_PIN],
        true,
    );
    tool(
        &[
            "--init-pin",
            "--login",
            "--so-pin",
            SO_PIN,
            "--pin",
            USER_PIN,
        ],
        true,
    );
    tool(&["--login", "--pin", WRONG_PIN, "-O"], false);
    tool(
        &[
            "--change-pin",
            "--login",
            "--pin",
            USER_PIN,
            "--new-pin",
            NEW_PIN,
        ],
        true,
    );
    tool(&["--login", "--pin", NEW_PIN, "-O"], true);
    let daemon_log = daemon.log_text();
    assert!(
        daemon_log.contains("TRACE") || daemon_log.contains("DEBUG"),
        "the daemon did not log at the verbose level, so this test proves nothing:\n{daemon_log}"
    );
    let state_dir = daemon.state_dir().to_path_buf();
    drop(daemon);
    let mut sources = vec![("daemon log".to_string(), daemon_log.into_bytes())];
    sources.push(("pkcs11-tool output".to_string(), outputs.into_bytes()));
    for file in files(&state_dir) {
        sources.push((
            file.display().to_string(),
            std::fs::read(&file).unwrap_or_default(),
        ));
    }
    for pin in [SO_PIN, USER_PIN, NEW_PIN, WRONG_PIN] {
        for (name, bytes) in &sources {
            assert!(
                !bytes.windows(pin.len()).any(|w| w == pin.as_bytes()),
                "PIN {pin:?} found in {name}"
            );
        }
    }
}
