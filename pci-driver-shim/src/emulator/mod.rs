//! The software emulator backend, host side.
//!
//! The emulator (`mesign-card-emu`, see [`server`]) owns the shared region
//! and both eventfds and listens on a Unix socket. Connecting to it is like
//! opening a device node: the host receives the region's memfd, the doorbell
//! and the interrupt eventfd via `SCM_RIGHTS`, and keeps the connection open
//! for as long as it uses the card. The card serves one host at a time and
//! accepts the next once the connection closes; the host, in turn, treats a
//! closed connection as a dead card ([`CardError::Gone`]).

pub mod faults;
pub mod server;

use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

use crate::device::Device;
use crate::error::CardError;
use crate::eventfd::{poll_retrying, EventLine};
use crate::region::{adopt_received_fds, SharedRegion};

/// Name of the emulator executable.
pub const EMULATOR_EXE_NAME: &str = "mesign-card-emu";
/// Hand-over payload sent with the three descriptors (region, doorbell,
/// interrupt), in that order.
pub(crate) const HELLO: &[u8] = b"MESIGN-CARD/1";
/// Payload sent, without descriptors, when another host is attached.
pub(crate) const BUSY: &[u8] = b"BUSY";
/// How long [`spawn_emulator`] waits for the emulator to listen.
const START_DEADLINE: Duration = Duration::from_secs(10);
/// How long [`connect_emulator`] retries while the previous host detaches.
const BUSY_DEADLINE: Duration = Duration::from_secs(3);
/// How long the emulator may take to hand over its descriptors.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// The emulator seen as a device.
pub struct EmulatorDevice {
    region: SharedRegion,
    doorbell: EventLine,
    interrupt: EventLine,
    connection: UnixStream,
    socket: PathBuf,
}

impl Device for EmulatorDevice {
    fn region(&self) -> &SharedRegion {
        &self.region
    }

    fn ring_doorbell(&self) -> Result<(), CardError> {
        self.doorbell.signal()
    }

    fn wait_interrupt(&self, timeout: Duration) -> Result<bool, CardError> {
        let mut fds = [
            PollFd::new(self.interrupt.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.connection.as_fd(), PollFlags::POLLIN),
        ];
        poll_retrying(&mut fds, timeout)?;
        let hung_up = fds[1].revents().is_some_and(|r| !r.is_empty());
        if hung_up {
            // The card never sends after the hand-over, so anything readable
            // on the connection is its end: EOF or an error.
            return Err(CardError::Gone);
        }
        self.interrupt.take()
    }

    fn check_alive(&self) -> Result<(), CardError> {
        let mut fds = [PollFd::new(self.connection.as_fd(), PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, PollTimeout::ZERO) {
            Ok(0) | Err(Errno::EINTR) => Ok(()),
            // As in `wait_interrupt`: anything on the connection is its end.
            Ok(_) => Err(CardError::Gone),
            Err(errno) => Err(CardError::Os { op: "poll", errno }),
        }
    }

    fn describe(&self) -> String {
        format!(
            "software emulator at {} ({} slots x {} bytes; not tamper-resistant)",
            self.socket.display(),
            self.region.slot_count(),
            self.region.slot_capacity()
        )
    }
    fn reconnect(&self) -> Result<Box<dyn Device>, CardError> {
        connect_emulator(&self.socket)
    }
}

/// Attaches to a running emulator listening on `socket`.
pub fn connect_emulator(socket: &Path) -> Result<Box<dyn Device>, CardError> {
    let deadline = Instant::now() + BUSY_DEADLINE;
    loop {
        match connect_once(socket) {
            Err(CardError::Busy { .. }) if Instant::now() < deadline => {
                std::thread::sleep(POLL_INTERVAL)
            }
            result => return result.map(|d| Box::new(d) as Box<dyn Device>),
        }
    }
}

fn connect_once(socket: &Path) -> Result<EmulatorDevice, CardError> {
    let connection = UnixStream::connect(socket).map_err(|source| CardError::Connect {
        socket: socket.to_path_buf(),
        source,
    })?;
    // A listener that accepts but never hands over must not hang the host.
    let handshake_timeout = Some(HANDSHAKE_TIMEOUT);
    let set_timeout = |timeout| {
        connection
            .set_read_timeout(timeout)
            .map_err(|e| CardError::Os {
                op: "SO_RCVTIMEO",
                errno: nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0)),
            })
    };
    set_timeout(handshake_timeout)?;
    let mut payload = [0u8; 64];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 3]);
    let (len, raw_fds) = {
        let mut iov = [IoSliceMut::new(&mut payload)];
        let msg = recvmsg::<()>(
            connection.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|errno| CardError::Os {
            op: "recvmsg",
            errno,
        })?;
        let mut raw_fds = Vec::new();
        for c in msg.cmsgs().map_err(|errno| CardError::Os {
            op: "recvmsg",
            errno,
        })? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                raw_fds.extend(fds);
            }
        }
        (msg.bytes, raw_fds)
    };
    // Own every received descriptor first so none leaks on the error paths.
    let mut fds = adopt_received_fds(&raw_fds);
    set_timeout(None)?;
    if &payload[..len] == BUSY && fds.is_empty() {
        return Err(CardError::Busy {
            socket: socket.to_path_buf(),
        });
    }
    if &payload[..len] != HELLO || fds.len() != 3 {
        return Err(CardError::BadHandshake {
            fds: fds.len(),
            payload_len: len,
        });
    }
    let interrupt = EventLine::from_fd(fds.pop().expect("three fds"));
    let doorbell = EventLine::from_fd(fds.pop().expect("three fds"));
    let region = SharedRegion::attach(fds.pop().expect("three fds"))?;
    Ok(EmulatorDevice {
        region,
        doorbell,
        interrupt,
        connection,
        socket: socket.to_path_buf(),
    })
}

/// A running `mesign-card-emu` child; killed and reaped on drop.
#[derive(Debug)]
pub struct EmulatorProcess {
    child: Child,
    socket: PathBuf,
}

impl EmulatorProcess {
    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The socket the emulator listens on.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Kills the emulator now (as a crash would) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for EmulatorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `exe --state-dir <state_dir> --listen <state_dir>/card.sock` and
/// waits (up to 10 s) until it accepts a connection.
pub fn spawn_emulator(
    exe: &Path,
    state_dir: &Path,
) -> Result<(EmulatorProcess, Box<dyn Device>), CardError> {
    spawn_emulator_on(exe, state_dir, "card.sock")
}

/// [`spawn_emulator`] listening on `<state_dir>/<socket_name>`: several
/// emulated cards can share one state directory, and so one master key,
/// as cards of one cloning domain share theirs. Start them one after the
/// other: the first creates the key, the others read it.
pub fn spawn_emulator_on(
    exe: &Path,
    state_dir: &Path,
    socket_name: &str,
) -> Result<(EmulatorProcess, Box<dyn Device>), CardError> {
    std::fs::create_dir_all(state_dir).map_err(|source| CardError::Spawn {
        exe: exe.to_path_buf(),
        source,
    })?;
    let socket = state_dir.join(socket_name);
    // Never mistake an older emulator's socket for the new one's.
    match std::fs::remove_file(&socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(CardError::Spawn {
                exe: exe.to_path_buf(),
                source,
            })
        }
    }
    let child = Command::new(exe)
        .arg("--state-dir")
        .arg(state_dir)
        .arg("--listen")
        .arg(&socket)
        // The card goes when its host process goes (see mesign-card-emu).
        // The kernel ties this to the spawning thread: call from a thread
        // that lives as long as the card is used.
        .arg("--parent-pid")
        .arg(std::process::id().to_string())
        .stdin(Stdio::null())
        .spawn()
        .map_err(|source| CardError::Spawn {
            exe: exe.to_path_buf(),
            source,
        })?;
    let mut process = EmulatorProcess { child, socket };
    let started = Instant::now();
    loop {
        if let Ok(Some(status)) = process.child.try_wait() {
            return Err(CardError::EmulatorExited { status });
        }
        match connect_once(&process.socket) {
            Ok(device) => return Ok((process, Box::new(device))),
            Err(CardError::Connect { .. } | CardError::Busy { .. }) => {}
            Err(other) => return Err(other),
        }
        if started.elapsed() >= START_DEADLINE {
            return Err(CardError::NotReady {
                socket: process.socket.clone(),
                waited: START_DEADLINE,
            });
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Where `mesign-card-emu` is expected: next to the current executable, or
/// one directory up when running from `target/*/deps` (test binaries).
pub fn emulator_exe() -> PathBuf {
    let current = std::env::current_exe().unwrap_or_default();
    let dir = current.parent().map(Path::to_path_buf).unwrap_or_default();
    let beside = dir.join(EMULATOR_EXE_NAME);
    if beside.exists() {
        return beside;
    }
    match dir.parent() {
        Some(parent) if dir.file_name().is_some_and(|n| n == "deps") => {
            parent.join(EMULATOR_EXE_NAME)
        }
        _ => beside,
    }
}
