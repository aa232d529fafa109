//! Connections that several signing threads share: requests pipelined,
//! replies matched by id.
//!
//! Threads write their request frames one after another and do not wait for
//! each other's replies to come back first, so the daemon reads several
//! requests at once and sends their signatures to the card as one batch.
//! Nobody runs a reader thread for the replies: one waiting caller at a time
//! takes the reader's role, reads frames and hands each to its caller, until
//! its own reply has come; then it wakes one caller still waiting to take
//! over. A caller alone on its pipe simply reads its own reply. A frame with
//! an id nobody waits for, or a transport error, breaks the pipe: every
//! caller on it fails with [`Error::Transport`] and the next call opens a
//! new one.

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use mesign_proto::quiet_read::QuietStream;
use mesign_proto::{
    decode_frame_body, encode_frame, read_frame, Reply, ReplyResult, Request, RequestBody,
    PROTOCOL_VERSION,
};

use crate::error::Error;

/// How a call on a pipe failed.
#[derive(Debug, PartialEq)]
pub(crate) enum Failed {
    /// The request did not go out (here it is back): the daemon never saw
    /// it.
    NotSent(RequestBody),
    /// The request went out and no reply came back.
    Lost,
}

/// A greeted connection in pipelined use.
pub(crate) struct Pipe {
    writer: Mutex<Writer>,
    /// Taken only by the caller in the reader's role.
    reader: Mutex<Reader>,
    state: Mutex<State>,
    /// Calls between their send and their return, for choosing a pipe.
    in_flight: AtomicUsize,
}

struct Writer {
    stream: UnixStream,
    buf: Vec<u8>,
}

struct Reader {
    stream: BufReader<QuietStream<UnixStream>>,
    body: Vec<u8>,
}

#[derive(Default)]
struct State {
    /// A caller holds the reader's role.
    reading: bool,
    broken: bool,
    waiting: HashMap<u64, Waiter>,
}

struct Waiter {
    reply: Option<ReplyResult>,
    wake: Arc<Condvar>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Pipe {
    /// Takes over `stream`, on which Hello has been answered.
    pub(crate) fn new(stream: UnixStream) -> Result<Pipe, Error> {
        let reading = stream.try_clone().map_err(|_| Error::Transport)?;
        Ok(Pipe {
            writer: Mutex::new(Writer {
                stream,
                buf: Vec::with_capacity(512),
            }),
            reader: Mutex::new(Reader {
                stream: BufReader::with_capacity(16 * 1024, QuietStream(reading)),
                body: Vec::with_capacity(512),
            }),
            state: Mutex::new(State::default()),
            in_flight: AtomicUsize::new(0),
        })
    }

    /// True once a caller saw the connection fail.
    pub(crate) fn is_broken(&self) -> bool {
        lock(&self.state).broken
    }

    /// Calls in flight on this pipe right now.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    // The request comes back by value only when it was not sent; boxing
    // it would cost an allocation on every signature.
    fn call_claimed(&self, id: u64, body: RequestBody) -> Result<ReplyResult, Failed> {
        let wake = Arc::new(Condvar::new());
        {
            let mut state = lock(&self.state);
            if state.broken {
                return Err(Failed::NotSent(body));
            }
            let waiter = Waiter {
                reply: None,
                wake: Arc::clone(&wake),
            };
            state.waiting.insert(id, waiter);
        }
        if let Err(body) = self.send(id, body) {
            let mut state = lock(&self.state);
            state.waiting.remove(&id);
            break_down(&mut state);
            return Err(Failed::NotSent(body));
        }
        let mut state = lock(&self.state);
        loop {
            let reply = state.waiting.get_mut(&id).and_then(|w| w.reply.take());
            if let Some(reply) = reply {
                state.waiting.remove(&id);
                return Ok(reply);
            }
            if state.broken {
                state.waiting.remove(&id);
                return Err(Failed::Lost);
            }
            if state.reading {
                state = wake.wait(state).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            state.reading = true;
            drop(state);
            let read = self.read_until(id);
            state = lock(&self.state);
            state.reading = false;
            match read {
                Ok(()) => hand_over(&state, id),
                Err(_) => break_down(&mut state),
            }
        }
    }

    /// Writes the request; on failure hands its body back.
    // The request comes back by value only when it was not sent; boxing
    // it would cost an allocation on every signature.
    fn send(&self, id: u64, body: RequestBody) -> Result<(), RequestBody> {
        let request = Request {
            version: PROTOCOL_VERSION,
            id,
            body,
        };
        let mut writer = lock(&self.writer);
        let Writer { stream, buf } = &mut *writer;
        encode_frame(&request, buf);
        stream.write_all(buf).map_err(|_| request.body)
    }

    /// The reader's role: reads replies, handing each to its caller, until
    /// the one for `id` is in.
    fn read_until(&self, id: u64) -> Result<(), Error> {
        let mut reader = lock(&self.reader);
        let Reader { stream, body } = &mut *reader;
        loop {
            let len = read_frame(stream, body).map_err(|_| Error::Transport)?;
            let reply: Reply = decode_frame_body(&body[..len]).map_err(|_| Error::Transport)?;
            let mut state = lock(&self.state);
            let waiter = state.waiting.get_mut(&reply.id).ok_or(Error::Transport)?;
            waiter.reply = Some(reply.result);
            if reply.id == id {
                return Ok(());
            }
            waiter.wake.notify_one();
        }
    }
}

/// A caller's turn on a pipe, counted in [`Pipe::in_flight`] from the
/// moment it is taken until it is dropped. The caller that picks a pipe
/// takes its turn under the same lock, so two callers never both see one
/// idle pipe and end up sharing it while another stays idle: a shared pipe
/// costs its second caller an extra wake-up per call.
pub(crate) struct Claim(Arc<Pipe>);

impl Claim {
    pub(crate) fn new(pipe: &Arc<Pipe>) -> Claim {
        pipe.in_flight.fetch_add(1, Ordering::Relaxed);
        Claim(Arc::clone(pipe))
    }

    pub(crate) fn pipe(&self) -> &Arc<Pipe> {
        &self.0
    }

    /// Sends request `id` and waits for its reply. `id` must be unique
    /// among the calls in flight on this pipe. [`Failed::NotSent`] hands
    /// the request back: the daemon never saw it.
    // The request comes back by value only when it was not sent; boxing
    // it would cost an allocation on every signature.
    pub(crate) fn call(&self, id: u64, body: RequestBody) -> Result<ReplyResult, Failed> {
        self.0.call_claimed(id, body)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Wakes one caller whose reply has not come to read in the place of the
/// one (`leaving`) that got its own.
fn hand_over(state: &State, leaving: u64) {
    let next = state
        .waiting
        .iter()
        .find(|(&id, w)| id != leaving && w.reply.is_none());
    if let Some((_, waiter)) = next {
        waiter.wake.notify_one();
    }
}

/// Marks the pipe broken and wakes every caller to fail.
fn break_down(state: &mut State) {
    state.broken = true;
    for waiter in state.waiting.values() {
        waiter.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesign_proto::{write_frame, ReplyBody};
    use std::os::unix::net::UnixStream;

    /// A fake daemon on the other end of a socket pair: reads `expect`
    /// requests, then answers each with its id as bytes, in reverse order,
    /// and hands its end back (open).
    fn reversing_daemon(
        mut theirs: UnixStream,
        expect: usize,
    ) -> std::thread::JoinHandle<UnixStream> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut ids = Vec::new();
            for _ in 0..expect {
                let n = read_frame(&mut theirs, &mut buf).unwrap();
                let request: Request = decode_frame_body(&buf[..n]).unwrap();
                ids.push(request.id);
            }
            for id in ids.into_iter().rev() {
                let reply = Reply {
                    id,
                    result: ReplyResult::Ok(ReplyBody::Bytes(id.to_be_bytes().to_vec())),
                };
                write_frame(&mut theirs, &reply, &mut Vec::new()).unwrap();
            }
            theirs
        })
    }

    #[test]
    fn replies_out_of_order_reach_their_callers() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let threads = 8u64;
        let daemon = reversing_daemon(theirs, threads as usize);
        let pipe = Arc::new(Pipe::new(ours).unwrap());
        std::thread::scope(|scope| {
            for id in 1..=threads {
                let pipe = &pipe;
                scope.spawn(move || {
                    let reply = Claim::new(pipe).call(id, RequestBody::Slots).unwrap();
                    assert_eq!(
                        reply,
                        ReplyResult::Ok(ReplyBody::Bytes(id.to_be_bytes().to_vec()))
                    );
                });
            }
        });
        let theirs = daemon.join().unwrap();
        assert!(!pipe.is_broken());
        drop(theirs);
    }

    #[test]
    fn a_hang_up_fails_every_waiting_caller_and_breaks_the_pipe() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let pipe = Arc::new(Pipe::new(ours).unwrap());
        let daemon = std::thread::spawn(move || {
            let mut buf = Vec::new();
            for _ in 0..3 {
                read_frame(&mut theirs, &mut buf).unwrap();
            }
            // Hangs up without answering.
        });
        std::thread::scope(|scope| {
            for id in 1..=3 {
                let pipe = &pipe;
                scope.spawn(move || {
                    assert_eq!(
                        Claim::new(pipe).call(id, RequestBody::Slots),
                        Err(Failed::Lost)
                    );
                });
            }
        });
        daemon.join().unwrap();
        assert!(pipe.is_broken());
        // A broken pipe sends nothing and hands the request back.
        assert_eq!(
            Claim::new(&pipe).call(9, RequestBody::Slots),
            Err(Failed::NotSent(RequestBody::Slots))
        );
    }

    #[test]
    fn a_reply_nobody_waits_for_breaks_the_pipe() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let pipe = Arc::new(Pipe::new(ours).unwrap());
        let daemon = std::thread::spawn(move || {
            let mut buf = Vec::new();
            read_frame(&mut theirs, &mut buf).unwrap();
            let stray = Reply {
                id: 999,
                result: ReplyResult::Ok(ReplyBody::Done),
            };
            write_frame(&mut theirs, &stray, &mut Vec::new()).unwrap();
            theirs
        });
        assert_eq!(
            Claim::new(&pipe).call(1, RequestBody::Slots),
            Err(Failed::Lost)
        );
        drop(daemon.join().unwrap());
        assert!(pipe.is_broken());
    }
}
