//! One `mesign-hsmd` child process: start, wait until it accepts, stop.

use std::fs::File;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::binaries;

/// How long a daemon may take to accept its first connection.
pub const READY_DEADLINE: Duration = Duration::from_secs(20);
/// How long a daemon may take to exit after SIGTERM.
pub const STOP_DEADLINE: Duration = Duration::from_secs(20);
/// Interval between readiness probes.
const POLL: Duration = Duration::from_millis(10);

/// A running daemon; stopped with SIGTERM on drop.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    state_dir: PathBuf,
    socket: PathBuf,
    log: PathBuf,
}

impl Daemon {
    /// Starts `mesign-hsmd --state-dir STATE --socket SOCKET` with its output in
    /// `log`, and returns once the socket accepts a connection.
    pub fn start(state_dir: &Path, socket: &Path, log: &Path) -> Self {
        Self::start_with_env(state_dir, socket, log, &[])
    }

    /// [`Daemon::start`] with extra environment variables for the daemon and
    /// the card emulator it spawns (fault injection, card timeouts).
    pub fn start_with_env(
        state_dir: &Path,
        socket: &Path,
        log: &Path,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Self {
        Self::start_with_args(state_dir, socket, log, env, &[])
    }

    /// [`Daemon::start_with_env`] with extra command-line arguments (e.g.
    /// `--config FILE`).
    pub fn start_with_args(
        state_dir: &Path,
        socket: &Path,
        log: &Path,
        env: &[(&str, &std::ffi::OsStr)],
        args: &[&std::ffi::OsStr],
    ) -> Self {
        binaries::require(binaries::MESIGN_CARD_EMU);
        let exe = binaries::require(binaries::MESIGN_DAEMON);
        std::fs::create_dir_all(state_dir).expect("create daemon state dir");
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .expect("open daemon log");
        let err = out.try_clone().expect("clone daemon log handle");
        let child = Command::new(&exe)
            .arg("--state-dir")
            .arg(state_dir)
            .arg("--socket")
            .arg(socket)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));
        let mut daemon = Self {
            child: Some(child),
            state_dir: state_dir.to_path_buf(),
            socket: socket.to_path_buf(),
            log: log.to_path_buf(),
        };
        daemon.wait_ready();
        daemon
    }

    /// The directory the daemon keeps its store in.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The socket the daemon listens on.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .expect("daemon child present until stopped")
            .id()
    }

    /// SIGKILL, as a crash would, and reap the process.
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Everything the daemon wrote to stdout and stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if let Some(status) = self.child_mut().try_wait().expect("poll daemon") {
                panic!(
                    "mesign-hsmd exited with {status} before accepting connections; its output:\n{}",
                    self.log_text()
                );
            }
            if UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if Instant::now() >= deadline {
                let log = self.log_text();
                self.terminate();
                panic!(
                    "mesign-hsmd did not accept on {} within {:?}; its output:\n{log}",
                    self.socket.display(),
                    READY_DEADLINE
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// SIGTERM, then wait for exit; returns the exit status.
    ///
    /// Panics when the daemon ignores SIGTERM past the deadline (after
    /// killing it), because a daemon that cannot shut down cleanly is a bug.
    pub fn stop(mut self) -> ExitStatus {
        self.terminate()
            .unwrap_or_else(|| panic!("mesign-hsmd ignored SIGTERM for {STOP_DEADLINE:?}; killed"))
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child
            .as_mut()
            .expect("daemon child present until stopped")
    }

    /// Returns `None` when SIGKILL was needed.
    fn terminate(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_DEADLINE;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(POLL);
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.terminate();
    }
}
