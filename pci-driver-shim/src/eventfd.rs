//! Doorbell and interrupt lines as Linux eventfds.
//!
//! Both are created non-blocking by the card side and shared with the host;
//! waiting is a `poll` followed by a read that resets the counter, so a
//! signal that arrives between two waits is never lost.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::error::CardError;

/// One signalling line.
#[derive(Debug)]
pub struct EventLine(OwnedFd);

impl EventLine {
    /// A fresh line (card side).
    pub fn new() -> Result<EventLine, CardError> {
        EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map(|fd| EventLine(OwnedFd::from(fd)))
            .map_err(|errno| CardError::Os {
                op: "eventfd",
                errno,
            })
    }

    /// Wraps a descriptor received from the other side.
    pub fn from_fd(fd: OwnedFd) -> EventLine {
        EventLine(fd)
    }

    /// Raises the line.
    pub fn signal(&self) -> Result<(), CardError> {
        match nix::unistd::write(&self.0, &1u64.to_ne_bytes()) {
            // EAGAIN means the counter is saturated: the line is raised anyway.
            Ok(_) | Err(Errno::EAGAIN) => Ok(()),
            Err(errno) => Err(CardError::Os {
                op: "eventfd write",
                errno,
            }),
        }
    }

    /// Clears the line; true when it was raised.
    pub fn take(&self) -> Result<bool, CardError> {
        let mut buf = [0u8; 8];
        match nix::unistd::read(&self.0, &mut buf) {
            Ok(_) => Ok(true),
            Err(Errno::EAGAIN) => Ok(false),
            Err(errno) => Err(CardError::Os {
                op: "eventfd read",
                errno,
            }),
        }
    }

    /// Waits until the line is raised or `timeout` passes, then clears it.
    pub fn wait(&self, timeout: Duration) -> Result<bool, CardError> {
        let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
        poll_retrying(&mut fds, timeout)?;
        self.take()
    }
}

impl AsFd for EventLine {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// `poll` that treats EINTR as a spurious wake-up.
pub(crate) fn poll_retrying(fds: &mut [PollFd<'_>], timeout: Duration) -> Result<usize, CardError> {
    let millis = u16::try_from(timeout.as_millis().max(1)).unwrap_or(u16::MAX);
    match poll(fds, PollTimeout::from(millis)) {
        Ok(n) => Ok(n as usize),
        Err(Errno::EINTR) => Ok(0),
        Err(errno) => Err(CardError::Os { op: "poll", errno }),
    }
}
