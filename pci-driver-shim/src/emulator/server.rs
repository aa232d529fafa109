//! The emulator process's card side: the listener, one host session at a
//! time, and the firmware worker threads that serve the command ring.
//!
//! Each host connection gets a fresh region and fresh eventfds, so nothing
//! a previous host left in flight can leak into the next session. Workers
//! wait on the doorbell, take submission entries (consumer side serialized),
//! validate and execute them, post completions (producer side serialized)
//! and raise the interrupt. A worker that takes an entry while more remain
//! rings the doorbell again so another worker shares the load.
//!
//! Optionally ([`crate::card::SPIN_ENV`]) a worker polls the submission
//! ring for a few microseconds after a command before it blocks, and while
//! it does the host skips the doorbell; likewise the interrupt is not
//! raised while a host thread polls the completion ring (see
//! [`crate::region`] for the protocol and the bound on spinning threads).
//!
//! With a [`FaultControl`] (tests only, see [`super::faults`]) the workers
//! also drop, delay or spoil completions, and the card can be made to
//! detect tampering or to reset.

use std::io::{IoSlice, Read};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

use super::faults::{self, FaultControl, OneShot};
use super::{BUSY, HELLO};
use crate::error::CardError;
use crate::eventfd::EventLine;
use crate::firmware::Firmware;
use crate::region::{spin_budget, SharedRegion, DEFAULT_SLOT_COUNT, DEFAULT_SLOT_SIZE};

/// How often idle workers re-check whether their session ended.
const WORKER_TICK: Duration = Duration::from_millis(500);

/// Thread stacks are locked in memory with the rest of the process (see
/// `firmware::harden_process`), so they are kept far below the 8 MiB default;
/// RSA-4096 generation in aws-lc needs well under this.
pub const THREAD_STACK: usize = 1024 * 1024;

/// Binds the emulator's socket with mode 0600, replacing a stale one.
pub fn bind(socket: &Path) -> std::io::Result<UnixListener> {
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // The umask set by the binary keeps the socket private from creation;
    // the chmod states the intent regardless of the caller's umask.
    let listener = UnixListener::bind(socket)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Accepts hosts forever, serving one at a time.
pub fn serve(
    listener: UnixListener,
    firmware: Arc<Firmware>,
    socket: PathBuf,
    faults: Option<Arc<FaultControl>>,
) {
    let attached = Arc::new(AtomicBool::new(false));
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        if attached.swap(true, Ordering::AcqRel) {
            tracing::debug!("refusing a second host while one is attached");
            let _ = send(&stream, BUSY, &[]);
            continue;
        }
        let firmware = Arc::clone(&firmware);
        let attached = Arc::clone(&attached);
        let socket = socket.clone();
        let faults = faults.clone();
        let spawned = std::thread::Builder::new()
            .name("card-session".into())
            .stack_size(THREAD_STACK)
            .spawn(move || {
                tracing::info!(socket = %socket.display(), "host attached");
                if let Err(e) = run_session(stream, firmware, faults) {
                    tracing::error!(error = %e, "host session failed");
                }
                tracing::info!("host detached");
                attached.store(false, Ordering::Release);
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start a session thread");
        }
    }
}

fn send(stream: &UnixStream, payload: &[u8], fds: &[std::os::fd::RawFd]) -> Result<(), CardError> {
    let iov = [IoSlice::new(payload)];
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    sendmsg::<()>(stream.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None)
        .map(drop)
        .map_err(|errno| CardError::Os {
            op: "sendmsg",
            errno,
        })
}

struct Session {
    region: SharedRegion,
    doorbell: EventLine,
    interrupt: EventLine,
    consumer: Mutex<()>,
    producer: Mutex<()>,
    ended: AtomicBool,
    firmware: Arc<Firmware>,
    faults: Option<Arc<FaultControl>>,
    /// The host connection, shut down to emulate a card reset.
    connection: Option<UnixStream>,
    /// See [`SharedRegion::try_spin`].
    max_spinners: u32,
    /// Workers executing a command right now.
    busy: AtomicU32,
    /// How long an idle worker polls before it blocks on the doorbell.
    spin: Duration,
}

fn run_session(
    mut stream: UnixStream,
    firmware: Arc<Firmware>,
    faults: Option<Arc<FaultControl>>,
) -> Result<(), CardError> {
    let connection = match faults {
        Some(_) => Some(stream.try_clone().map_err(|e| CardError::Os {
            op: "dup",
            errno: nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0)),
        })?),
        None => None,
    };
    let session = Arc::new(Session {
        region: SharedRegion::create(DEFAULT_SLOT_COUNT, DEFAULT_SLOT_SIZE)?,
        doorbell: EventLine::new()?,
        interrupt: EventLine::new()?,
        consumer: Mutex::new(()),
        producer: Mutex::new(()),
        ended: AtomicBool::new(false),
        firmware,
        faults,
        connection,
        max_spinners: spin_budget(),
        busy: AtomicU32::new(0),
        spin: crate::card::spin_from_env(),
    });
    send(
        &stream,
        HELLO,
        &[
            session.region.fd().as_raw_fd(),
            session.doorbell.as_fd().as_raw_fd(),
            session.interrupt.as_fd().as_raw_fd(),
        ],
    )?;
    let workers = std::thread::available_parallelism().map_or(2, usize::from);
    let handles: Vec<_> = (0..workers)
        .filter_map(|i| {
            let session = Arc::clone(&session);
            std::thread::Builder::new()
                .name(format!("card-worker-{i}"))
                .stack_size(THREAD_STACK)
                .spawn(move || session.work())
                .map_err(|e| tracing::error!(error = %e, "cannot start a worker"))
                .ok()
        })
        .collect();
    // The host never sends after the hand-over; the read returns at EOF.
    let mut sink = [0u8; 64];
    while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
    session.ended.store(true, Ordering::Release);
    let _ = session.doorbell.signal();
    for handle in handles {
        let _ = handle.join();
    }
    Ok(())
}

impl Session {
    fn work(&self) {
        // Without an epoll descriptor (none left, say) the worker still
        // serves, woken with the others by every doorbell.
        let exclusive = self
            .doorbell
            .exclusive_waiter()
            .inspect_err(|e| tracing::warn!(error = %e, "waiting on the doorbell with the others"))
            .ok();
        while !self.ended.load(Ordering::Acquire) {
            while let Some(slot) = self.next_submission() {
                self.busy.fetch_add(1, Ordering::Relaxed);
                self.execute(slot);
                self.busy.fetch_sub(1, Ordering::Relaxed);
            }
            if self.poll_submissions() {
                continue;
            }
            let rung = match &exclusive {
                Some(waiter) => waiter.wait(WORKER_TICK),
                None => self.doorbell.wait(WORKER_TICK),
            };
            match rung {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "doorbell wait failed");
                    return;
                }
            }
            if self.ended.load(Ordering::Acquire) {
                // Pass the wake-up on so every worker sees the end.
                let _ = self.doorbell.signal();
                return;
            }
        }
    }

    /// Polls the submission ring for at most `spin` (the host's
    /// [`crate::card::SPIN_ENV`]), if the spin budget allows; true when an
    /// entry is waiting.
    fn poll_submissions(&self) -> bool {
        if self.spin.is_zero() {
            return false;
        }
        // A worker still executing holds a core; spinning beside it would
        // take the other one from the host threads preparing more work.
        if self.busy.load(Ordering::Relaxed) > 0 {
            return false;
        }
        let Some(_permit) = self.region.try_spin(self.max_spinners) else {
            return false;
        };
        let ring = self.region.submissions();
        let waiting = || ring.pending().is_ok_and(|n| n > 0);
        ring.start_polling();
        let until = Instant::now() + self.spin;
        while !waiting() && Instant::now() < until && !self.ended.load(Ordering::Relaxed) {
            std::thread::yield_now();
        }
        ring.stop_polling();
        // After the fence in `stop_polling`: an entry the host posted
        // without a doorbell, because it still saw us polling, is seen here.
        waiting()
    }

    fn next_submission(&self) -> Option<u32> {
        let _consumer = self.consumer.lock().unwrap_or_else(|p| p.into_inner());
        let ring = self.region.submissions();
        match ring.pop() {
            Ok(Some(slot)) => {
                if ring.pending().unwrap_or(0) > 0 && ring.needs_signal() {
                    let _ = self.doorbell.signal();
                }
                Some(slot)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::error!(error = %e, "host corrupted the submission ring");
                None
            }
        }
    }

    fn execute(&self, slot: u32) {
        let plan = self
            .faults
            .as_ref()
            .map(|control| control.poll())
            .unwrap_or_default();
        for fault in &plan.one_shot {
            match fault {
                OneShot::Tamper => self.firmware.enter_error_state("tamper detected"),
                OneShot::Reset => {
                    self.reset();
                    return;
                }
            }
        }
        let mut answer = match self.region.read_request(slot) {
            Ok(request) => self.firmware.execute(&request),
            Err(crate::region::RegionError::SlotOutOfRange { .. }) => {
                tracing::warn!(slot, "host submitted a slot outside the region");
                return;
            }
            Err(e) => {
                tracing::warn!(slot, error = %e, "unreadable request");
                Firmware::malformed()
            }
        };
        let faulty = plan.persistent;
        if faulty.drop_completions {
            tracing::warn!(slot, "fault injection: completion dropped");
            return;
        }
        if let Some(delay) = faulty.delay {
            std::thread::sleep(delay);
        }
        if faulty.corrupt_answers {
            faults::corrupt(&mut answer);
        }
        if let Err(e) = self.region.write_response(slot, &answer) {
            tracing::error!(slot, error = %e, "cannot write the response");
            return;
        }
        let pushed = {
            let _producer = self.producer.lock().unwrap_or_else(|p| p.into_inner());
            self.region.completions().push(slot)
        };
        match pushed {
            Ok(()) if self.region.completions().needs_signal() => {
                let _ = self.interrupt.signal();
            }
            // A host thread is polling the ring and will see the entry.
            Ok(()) => {}
            Err(e) => tracing::error!(slot, error = %e, "cannot post the completion"),
        }
    }

    /// A card reset as the host sees it: the session ends without answers
    /// to what was in flight, and the host has to attach again.
    fn reset(&self) {
        tracing::warn!("fault injection: card reset");
        self.ended.store(true, Ordering::Release);
        if let Some(connection) = &self.connection {
            let _ = connection.shutdown(std::net::Shutdown::Both);
        }
        let _ = self.doorbell.signal();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{CardFault, CardRequest, CardResponse, CardResult};

    fn session(dir: &Path) -> Session {
        Session {
            region: SharedRegion::create(8, 4096).unwrap(),
            doorbell: EventLine::new().unwrap(),
            interrupt: EventLine::new().unwrap(),
            consumer: Mutex::new(()),
            producer: Mutex::new(()),
            ended: AtomicBool::new(false),
            firmware: Arc::new(Firmware::start(dir, false).unwrap()),
            faults: None,
            connection: None,
            max_spinners: 1,
            busy: AtomicU32::new(0),
            spin: Duration::ZERO,
        }
    }

    fn answer(session: &Session, slot: u32) -> CardResult {
        minicbor::decode(&session.region.read_response(slot).unwrap()).unwrap()
    }

    #[test]
    fn host_errors_in_the_ring_are_contained() {
        let dir = tempfile::tempdir().unwrap();
        let s = session(dir.path());
        // A well-formed request is answered and completed.
        s.region
            .write_request(
                0,
                &minicbor::to_vec(CardRequest::Random { len: 4 }).unwrap(),
            )
            .unwrap();
        s.execute(0);
        assert_eq!(s.region.completions().pop().unwrap(), Some(0));
        assert!(matches!(answer(&s, 0), CardResult::Ok(CardResponse::Bytes(b)) if b.len() == 4));
        assert!(
            s.interrupt.take().unwrap(),
            "completion must raise the interrupt"
        );

        // A request length past the slot is answered as malformed.
        s.region.forge_request_len(1, u32::MAX);
        s.execute(1);
        assert_eq!(s.region.completions().pop().unwrap(), Some(1));
        assert_eq!(answer(&s, 1), CardResult::Err(CardFault::Malformed));

        // Garbage bytes are malformed too.
        s.region.write_request(2, &[0xff; 10]).unwrap();
        s.execute(2);
        assert_eq!(s.region.completions().pop().unwrap(), Some(2));
        assert_eq!(answer(&s, 2), CardResult::Err(CardFault::Malformed));

        // A slot outside the region cannot be answered at all.
        s.execute(8);
        s.execute(u32::MAX);
        assert_eq!(s.region.completions().pop().unwrap(), None);

        // A corrupt submission ring yields nothing rather than garbage.
        s.region.submissions().corrupt(0, 100);
        assert_eq!(s.next_submission(), None);
    }
}
