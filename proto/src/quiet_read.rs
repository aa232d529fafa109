//! Reading a Unix stream socket without being woken for nothing.
//!
//! A thread blocked in `recv` on a Unix stream socket sleeps on the
//! socket's one wait queue, and the kernel signals that queue not only when
//! data arrives but also whenever the peer consumes data this side sent
//! ("write space"). A caller that sends a request and then waits for the
//! reply is therefore woken once for nothing as soon as the other side
//! reads the request, and the other side's reader likewise when the caller
//! reads the reply: two extra wake-ups per round trip, each a context
//! switch and, with a second core idle, an inter-processor interrupt.
//! `poll` waiters are filtered by the events they asked for, so waiting in
//! `poll(POLLIN)` and then reading without blocking sleeps until data (or
//! hang-up) really is there.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recv, MsgFlags};

/// Reads into `buf` from the stream socket `fd`, waiting in `poll` for
/// data, hang-up or an error. With a `timeout`, a wait longer than that
/// fails with `WouldBlock`, as a socket read timeout does.
pub fn read_when_ready(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    timeout: Option<Duration>,
) -> io::Result<usize> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        wait_readable(fd, deadline)?;
        match recv(fd.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
            Ok(n) => return Ok(n),
            // Readable by `poll` yet nothing to read: the deadline still
            // holds, so such a socket cannot keep the caller spinning.
            Err(Errno::EAGAIN) if deadline.is_some_and(|at| Instant::now() >= at) => {
                return Err(io::ErrorKind::WouldBlock.into())
            }
            Err(Errno::EAGAIN | Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

fn wait_readable(fd: BorrowedFd<'_>, deadline: Option<Instant>) -> io::Result<()> {
    loop {
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some(at) => {
                let left = at.saturating_duration_since(Instant::now());
                // Rounded up, so that a wait never ends just short of the
                // deadline and spins on a zero timeout.
                let millis = left.as_micros().div_ceil(1000);
                PollTimeout::try_from(millis.min(i32::MAX as u128) as i32)
                    .unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(0) => {
                if deadline.is_some_and(|at| Instant::now() >= at) {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
            }
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// A Unix stream whose reads wait with [`read_when_ready`]; writes and
/// everything else go to the stream itself.
#[derive(Debug)]
pub struct QuietStream<S>(pub S);

impl<S: AsFd> io::Read for QuietStream<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        read_when_ready(self.0.as_fd(), buf, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::time::{Duration, Instant};

    #[test]
    fn reads_what_is_there_then_the_end() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        theirs.write_all(b"frame").unwrap();
        let mut buf = [0u8; 16];
        let n = read_when_ready(ours.as_fd(), &mut buf, None).unwrap();
        assert_eq!(&buf[..n], b"frame");
        drop(theirs);
        assert_eq!(read_when_ready(ours.as_fd(), &mut buf, None).unwrap(), 0);
    }

    #[test]
    fn a_silent_peer_times_out_as_a_socket_read_timeout_does() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let started = Instant::now();
        let timeout = Duration::from_millis(60);
        let err = read_when_ready(ours.as_fd(), &mut [0u8; 4], Some(timeout)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert!(
            started.elapsed() >= timeout,
            "gave up after {:?}",
            started.elapsed()
        );
    }

    /// Voluntary context switches of one thread of this process.
    fn sleeps_of(tid: i32) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    fn is_asleep(tid: i32) -> bool {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
        // The state follows the parenthesised command name.
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('S'))
    }

    /// Sends a request on one end, waits for the reply with `wait`, and
    /// tells whether the waiting thread was woken (and went back to sleep)
    /// between the peer reading the request and the peer answering.
    fn woken_while_the_peer_reads(wait: fn(&UnixStream, &mut [u8]) -> usize) -> bool {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let caller = std::thread::spawn(move || {
            tid_tx.send(nix::unistd::gettid().as_raw()).unwrap();
            (&ours).write_all(&[7u8; 4096]).unwrap();
            let mut reply = [0u8; 8];
            assert_eq!(wait(&ours, &mut reply), 8);
        });
        let tid = tid_rx.recv().unwrap();
        let mut request = [0u8; 4096];
        // The request is in the socket once the caller sleeps for the reply.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !is_asleep(tid) {
            assert!(Instant::now() < deadline, "the caller never waited");
            std::thread::yield_now();
        }
        let before = sleeps_of(tid);
        theirs.read_exact(&mut request).unwrap();
        // A wake-up for nothing shows as one more sleep. It comes at once
        // but, on a loaded machine, may take a while to run: look until
        // it shows or for a second, whichever is first.
        let deadline = Instant::now() + Duration::from_secs(1);
        let woken = loop {
            if sleeps_of(tid) > before {
                break true;
            }
            if Instant::now() >= deadline {
                break false;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        theirs.write_all(&[1u8; 8]).unwrap();
        caller.join().unwrap();
        woken
    }

    #[test]
    fn a_waiting_reader_is_not_woken_when_the_peer_reads_its_request() {
        let blocking: fn(&UnixStream, &mut [u8]) -> usize = |s, buf| {
            let mut s = s;
            s.read(buf).unwrap()
        };
        let quiet: fn(&UnixStream, &mut [u8]) -> usize =
            |s, buf| read_when_ready(s.as_fd(), buf, None).unwrap();
        // What this module is for: a plain blocking read is woken (and
        // sleeps again) when the peer consumes the request.
        assert!(woken_while_the_peer_reads(blocking));
        assert!(!woken_while_the_peer_reads(quiet));
    }
}
