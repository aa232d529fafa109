//! The card layer's one error type.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use crate::command::CardFault;
use crate::region::RegionError;

/// Everything that can go wrong between the daemon and a card.
#[derive(Debug)]
pub enum CardError {
    /// The card did not answer within the call's deadline (or no slot came
    /// free in time).
    Timeout { after: Duration },
    /// The card went away (emulator process died, device removed, ring
    /// corrupted beyond use); every later call fails the same way.
    Gone,
    /// The card executed the command and refused it.
    Fault(CardFault),
    /// The shared region or a ring is unusable.
    Region(RegionError),
    /// The encoded request does not fit a data slot.
    RequestTooLarge { len: usize, capacity: usize },
    /// The card's answer in `slot` does not decode.
    MalformedResponse { slot: u32 },
    /// The card answered with a response of the wrong kind for the request.
    UnexpectedResponse,
    /// A system call on a device file descriptor failed.
    Os {
        op: &'static str,
        errno: nix::errno::Errno,
    },
    /// The emulator socket could not be reached.
    Connect {
        socket: PathBuf,
        source: std::io::Error,
    },
    /// The emulator already serves another host.
    Busy { socket: PathBuf },
    /// The emulator's hand-over message was not what we expect.
    BadHandshake { fds: usize, payload_len: usize },
    /// The emulator executable could not be started.
    Spawn {
        exe: PathBuf,
        source: std::io::Error,
    },
    /// The emulator process exited before it accepted a connection.
    EmulatorExited { status: ExitStatus },
    /// The emulator did not start listening in time.
    NotReady { socket: PathBuf, waited: Duration },
}

impl std::fmt::Display for CardError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CardError::Timeout { after } => write!(f, "card did not answer within {after:?}"),
            CardError::Gone => write!(f, "card is gone"),
            CardError::Fault(fault) => write!(f, "card refused the command: {fault:?}"),
            CardError::Region(e) => write!(f, "card region: {e}"),
            CardError::RequestTooLarge { len, capacity } => {
                write!(
                    f,
                    "request of {len} bytes exceeds the slot capacity {capacity}"
                )
            }
            CardError::MalformedResponse { slot } => {
                write!(f, "card answer in slot {slot} does not decode")
            }
            CardError::UnexpectedResponse => write!(f, "card answered with the wrong kind"),
            CardError::Os { op, errno } => write!(f, "{op}: {errno}"),
            CardError::Connect { socket, source } => {
                write!(f, "cannot connect to {}: {source}", socket.display())
            }
            CardError::Busy { socket } => {
                write!(
                    f,
                    "card at {} already serves another host",
                    socket.display()
                )
            }
            CardError::BadHandshake { fds, payload_len } => write!(
                f,
                "bad emulator hand-over ({fds} descriptors, {payload_len} payload bytes)"
            ),
            CardError::Spawn { exe, source } => {
                write!(f, "cannot start {}: {source}", exe.display())
            }
            CardError::EmulatorExited { status } => {
                write!(f, "card emulator exited during start-up: {status}")
            }
            CardError::NotReady { socket, waited } => write!(
                f,
                "card emulator did not listen on {} within {waited:?}",
                socket.display()
            ),
        }
    }
}

impl std::error::Error for CardError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CardError::Region(e) => Some(e),
            CardError::Connect { source, .. } | CardError::Spawn { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<RegionError> for CardError {
    fn from(e: RegionError) -> Self {
        CardError::Region(e)
    }
}
