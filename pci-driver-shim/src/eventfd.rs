//! Doorbell and interrupt lines as Linux eventfds.
//!
//! Both are created non-blocking by the card side and shared with the host;
//! waiting is a `poll` followed by a read that resets the counter, so a
//! signal that arrives between two waits is never lost.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
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

/// One of several threads waiting on the same line, of which a signal
/// wakes only one (`EPOLLEXCLUSIVE`): with plain `poll` every waiter wakes
/// for every signal, and all but one of them find nothing to do.
#[derive(Debug)]
pub struct ExclusiveWaiter<'a> {
    line: &'a EventLine,
    epoll: Epoll,
}

impl EventLine {
    /// A waiter that shares the line's signals with the other exclusive
    /// waiters instead of every waiter getting each of them.
    pub fn exclusive_waiter(&self) -> Result<ExclusiveWaiter<'_>, CardError> {
        let os = |op| move |errno| CardError::Os { op, errno };
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(os("epoll_create"))?;
        let event = EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE, 0);
        epoll.add(&self.0, event).map_err(os("epoll_ctl"))?;
        Ok(ExclusiveWaiter { line: self, epoll })
    }
}

impl ExclusiveWaiter<'_> {
    /// [`EventLine::wait`] for this waiter.
    pub fn wait(&self, timeout: Duration) -> Result<bool, CardError> {
        let millis = u16::try_from(timeout.as_millis().max(1)).unwrap_or(u16::MAX);
        let mut events = [EpollEvent::empty()];
        match self.epoll.wait(&mut events, EpollTimeout::from(millis)) {
            Ok(_) | Err(Errno::EINTR) => self.line.take(),
            Err(errno) => Err(CardError::Os {
                op: "epoll_wait",
                errno,
            }),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn proc_task(tid: i32, file: &str) -> String {
        std::fs::read_to_string(format!("/proc/self/task/{tid}/{file}")).unwrap()
    }

    fn is_asleep(tid: i32) -> bool {
        let stat = proc_task(tid, "stat");
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('S'))
    }

    fn sleeps_of(tid: i32) -> u64 {
        proc_task(tid, "status")
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap()
    }

    /// Two threads wait on one line with `wait`, which is signalled once.
    /// Returns how many got the signal and whether the other one was woken
    /// (and went back to sleep) meanwhile.
    fn two_waiters_one_signal(wait: fn(&EventLine, Duration) -> bool) -> (usize, bool) {
        let line = EventLine::new().unwrap();
        std::thread::scope(|scope| {
            let (tid_tx, tid_rx) = std::sync::mpsc::channel();
            let (done_tx, done_rx) = std::sync::mpsc::channel();
            let waiters: Vec<_> = (0..2)
                .map(|_| {
                    let (line, tid_tx, done_tx) = (&line, tid_tx.clone(), done_tx.clone());
                    scope.spawn(move || {
                        let tid = nix::unistd::gettid().as_raw();
                        tid_tx.send(tid).unwrap();
                        let got = wait(line, Duration::from_secs(3));
                        done_tx.send(tid).unwrap();
                        got
                    })
                })
                .collect();
            let tids: Vec<i32> = tid_rx.iter().take(2).collect();
            let deadline = Instant::now() + Duration::from_secs(10);
            while !tids.iter().all(|&tid| is_asleep(tid)) {
                assert!(Instant::now() < deadline, "the waiters never slept");
                std::thread::yield_now();
            }
            let before: Vec<u64> = tids.iter().map(|&tid| sleeps_of(tid)).collect();
            line.signal().unwrap();
            let first = done_rx.recv().unwrap();
            let other = tids.iter().position(|&tid| tid != first).unwrap();
            // A wake-up for nothing shows as one more sleep of the other
            // waiter. It comes at once but, on a loaded machine, may take a
            // while to run: look for a second (the waits last three).
            let deadline = Instant::now() + Duration::from_secs(1);
            let woken_for_nothing = loop {
                if sleeps_of(tids[other]) > before[other] {
                    break true;
                }
                if Instant::now() >= deadline {
                    break false;
                }
                std::thread::sleep(Duration::from_millis(5));
            };
            let got = waiters.into_iter().map(|w| w.join().unwrap());
            (got.filter(|&g| g).count(), woken_for_nothing)
        })
    }

    /// Waits as the card's workers do: until the line is found raised or
    /// `timeout` has passed, whatever woke the thread meanwhile.
    fn wait_until_raised(timeout: Duration, mut wait: impl FnMut(Duration) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            if wait(left) {
                return true;
            }
        }
    }

    #[test]
    fn a_signal_wakes_one_exclusive_waiter_only() {
        let exclusive: fn(&EventLine, Duration) -> bool = |line, timeout| {
            let waiter = line.exclusive_waiter().unwrap();
            wait_until_raised(timeout, |left| waiter.wait(left).unwrap())
        };
        assert_eq!(two_waiters_one_signal(exclusive), (1, false));
    }

    #[test]
    fn a_signal_wakes_every_plain_waiter() {
        // Why the card's workers wait as exclusive waiters: with `poll`
        // both wake, and the one that finds the line cleared goes back to
        // sleep, having woken for nothing.
        let plain: fn(&EventLine, Duration) -> bool =
            |line, timeout| wait_until_raised(timeout, |left| line.wait(left).unwrap());
        assert_eq!(two_waiters_one_signal(plain), (1, true));
    }
}
