//! Our stack's moving parts: finding the built artefacts and running
//! `mesign-hsmd` (which spawns the card emulator from its own directory).

use std::fs::File;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::error::BenchError;

/// How long the daemon may take to accept its first connection.
const READY_DEADLINE: Duration = Duration::from_secs(30);
/// How long the daemon may take to exit after SIGTERM before it is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(20);
/// Interval between readiness and exit probes.
const POLL: Duration = Duration::from_millis(10);

/// The module, daemon and card emulator of one cargo profile.
#[derive(Clone, Debug)]
pub struct Artefacts {
    /// libmesign_pkcs11.so.
    pub module: PathBuf,
    /// mesign-hsmd.
    pub daemon: PathBuf,
}

impl Artefacts {
    /// Finds the artefacts in `target/<profile>`, failing with the build
    /// command when one is missing.
    pub fn find(profile: &str) -> Result<Self, BenchError> {
        let dir = target_dir().join(profile);
        let fix = if profile == "release" {
            "cargo build --release --workspace"
        } else if profile == "debug" {
            "cargo build --workspace"
        } else {
            "cargo build --profile <profile> --workspace"
        };
        let require = |name: &str| {
            let path = dir.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                Err(BenchError::MissingArtefact { path, fix })
            }
        };
        require("mesign-card-emu")?;
        Ok(Self {
            module: require("libmesign_pkcs11.so")?,
            daemon: require("mesign-hsmd")?,
        })
    }
}

/// `CARGO_TARGET_DIR` when set, else the workspace's `target/`.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the bench crate sits inside the workspace")
            .join("target"),
    }
}

/// A running `mesign-hsmd`; SIGTERM on [`Daemon::stop`] or drop.
pub struct Daemon {
    child: Option<Child>,
}

impl Daemon {
    /// Starts the daemon on `socket` with its store in `state_dir`, its
    /// slot on `cards` emulated cards and its output appended to `log`;
    /// returns once the socket accepts.
    pub fn start(
        exe: &Path,
        state_dir: &Path,
        socket: &Path,
        log: &Path,
        cards: u32,
    ) -> Result<Self, BenchError> {
        let io = |step, path: &Path| {
            let path = path.to_path_buf();
            move |source| BenchError::Io { step, path, source }
        };
        std::fs::create_dir_all(state_dir).map_err(io("create the daemon state dir", state_dir))?;
        let out = File::create(log).map_err(io("create the daemon log", log))?;
        let err = out.try_clone().map_err(io("clone the daemon log", log))?;
        let mut command = Command::new(exe);
        if cards > 1 {
            let config = state_dir.join("hsmd.toml");
            let settings = format!("[[cards]]\nbackend = \"emulator\"\ninstances = {cards}\n");
            std::fs::write(&config, settings).map_err(io("write the daemon config", &config))?;
            command.arg("--config").arg(config);
        }
        let child = command
            .arg("--state-dir")
            .arg(state_dir)
            .arg("--socket")
            .arg(socket)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(io("start mesign-hsmd", exe))?;
        let mut daemon = Self { child: Some(child) };
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if let Some(child) = daemon.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    daemon.child = None;
                    return Err(BenchError::DaemonExited {
                        status,
                        log: log.to_path_buf(),
                    });
                }
            }
            if UnixStream::connect(socket).is_ok() {
                return Ok(daemon);
            }
            if Instant::now() >= deadline {
                daemon.stop();
                return Err(BenchError::DaemonNotReady {
                    socket: socket.to_path_buf(),
                    waited: READY_DEADLINE,
                    log: log.to_path_buf(),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// The daemon's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM and wait; SIGKILL past the deadline. Returns whether the
    /// daemon exited on its own.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + STOP_DEADLINE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(POLL);
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_profile_names_the_fix() {
        let err = Artefacts::find("no-such-profile").unwrap_err();
        assert!(matches!(err, BenchError::MissingArtefact { .. }), "{err}");
        assert!(err.to_string().contains("cargo build"), "{err}");
    }

    #[test]
    fn a_daemon_that_exits_at_once_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let err = Daemon::start(
            Path::new("/bin/false"),
            &dir.path().join("state"),
            &dir.path().join("s.sock"),
            &dir.path().join("log"),
            1,
        )
        .err()
        .unwrap();
        assert!(matches!(err, BenchError::DaemonExited { .. }), "{err}");
    }
}
