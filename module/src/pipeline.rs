//! One connection shared by every thread that signs: requests pipelined,
//! replies matched by id.
//!
//! Threads write their request frames one after another and do not wait for
//! each other's replies to come back first, so the daemon reads several
//! requests at once and sends their signatures to the card as one batch. A
//! reader thread of the pipe's own takes the replies off the socket, a
//! batch per read, and hands each to the thread parked for it. A frame with
//! an id nobody waits for, or a transport error, breaks the pipe: every
//! caller on it fails with [`Error::Transport`] and the next call opens a
//! new one.

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use mesign_proto::{
    decode_frame_body, encode_frame, read_frame, Reply, ReplyResult, Request, RequestBody,
    PROTOCOL_VERSION,
};

use crate::error::Error;

/// How long a caller with no other call in flight polls for its reply
/// before it sleeps: a signature often comes back within this, and then
/// the caller saves being woken. With other calls in flight the cores are
/// busy with them, and callers sleep at once.
const SPIN: Duration = Duration::from_micros(50);

/// A greeted connection in pipelined use.
pub(crate) struct Pipe {
    writer: Mutex<Writer>,
    shared: Arc<Mutex<State>>,
    reader: Option<JoinHandle<()>>,
}

struct Writer {
    stream: UnixStream,
    buf: Vec<u8>,
}

#[derive(Default)]
struct State {
    broken: bool,
    waiting: HashMap<u64, Waiter>,
}

struct Waiter {
    reply: Option<ReplyResult>,
    thread: Thread,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Pipe {
    /// Takes over `stream`, on which Hello has been answered, and starts
    /// its reader thread.
    pub(crate) fn new(stream: UnixStream) -> Result<Pipe, Error> {
        let reading = stream.try_clone().map_err(|_| Error::Transport)?;
        let shared = Arc::new(Mutex::new(State::default()));
        let reader = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("mesign-pipe".into())
                .spawn(move || read_replies(reading, &shared))
                .map_err(|_| Error::Transport)?
        };
        Ok(Pipe {
            writer: Mutex::new(Writer {
                stream,
                buf: Vec::with_capacity(512),
            }),
            shared,
            reader: Some(reader),
        })
    }

    /// True once the connection failed.
    pub(crate) fn is_broken(&self) -> bool {
        lock(&self.shared).broken
    }

    /// Sends request `id` and waits for its reply. `id` must be unique
    /// among the calls in flight on this pipe.
    pub(crate) fn call(&self, id: u64, body: RequestBody) -> Result<ReplyResult, Error> {
        {
            let mut state = lock(&self.shared);
            if state.broken {
                return Err(Error::Transport);
            }
            let waiter = Waiter {
                reply: None,
                thread: std::thread::current(),
            };
            state.waiting.insert(id, waiter);
        }
        if self.send(id, body).is_err() {
            let mut state = lock(&self.shared);
            state.waiting.remove(&id);
            break_down(&mut state);
            return Err(Error::Transport);
        }
        let sent = Instant::now();
        loop {
            let alone = {
                let mut state = lock(&self.shared);
                let reply = state.waiting.get_mut(&id).and_then(|w| w.reply.take());
                if let Some(reply) = reply {
                    state.waiting.remove(&id);
                    return Ok(reply);
                }
                if state.broken {
                    state.waiting.remove(&id);
                    return Err(Error::Transport);
                }
                state.waiting.len() == 1
            };
            if alone && sent.elapsed() < SPIN {
                // Yielding lets the reader thread (or the daemon and the
                // card, on a small machine) run here.
                std::thread::yield_now();
                continue;
            }
            // An unpark that came before this park makes it return at once.
            std::thread::park();
        }
    }

    fn send(&self, id: u64, body: RequestBody) -> std::io::Result<()> {
        let request = Request {
            version: PROTOCOL_VERSION,
            id,
            body,
        };
        let mut writer = lock(&self.writer);
        let Writer { stream, buf } = &mut *writer;
        encode_frame(&request, buf);
        stream.write_all(buf)
    }

    /// Leaves the pipe without touching the connection, for a forked child:
    /// the socket is the parent's too (shutting it down would cut the
    /// parent off) and the reader thread exists only in the parent. The
    /// child's copies of the two descriptors stay open until it exits.
    pub(crate) fn abandon(self: Arc<Self>) {
        std::mem::forget(self);
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        // Wakes the reader thread out of its read with end-of-file.
        let _ = lock(&self.writer).stream.shutdown(Shutdown::Both);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// The reader thread: hands each reply to its caller until the connection
/// ends or breaks.
fn read_replies(stream: UnixStream, shared: &Mutex<State>) {
    let mut stream = BufReader::with_capacity(16 * 1024, stream);
    let mut body = Vec::with_capacity(512);
    loop {
        let reply = read_frame(&mut stream, &mut body)
            .ok()
            .and_then(|len| decode_frame_body::<Reply>(&body[..len]).ok());
        let mut state = lock(shared);
        let waiter = reply.and_then(|reply| {
            let waiter = state.waiting.get_mut(&reply.id)?;
            waiter.reply = Some(reply.result);
            Some(waiter)
        });
        match waiter {
            Some(waiter) => waiter.thread.unpark(),
            None => {
                break_down(&mut state);
                return;
            }
        }
    }
}

/// Marks the pipe broken and wakes every caller to fail.
fn break_down(state: &mut State) {
    state.broken = true;
    for waiter in state.waiting.values() {
        waiter.thread.unpark();
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
        let pipe = Pipe::new(ours).unwrap();
        std::thread::scope(|scope| {
            for id in 1..=threads {
                let pipe = &pipe;
                scope.spawn(move || {
                    let reply = pipe.call(id, RequestBody::Slots).unwrap();
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
        let pipe = Pipe::new(ours).unwrap();
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
                    assert_eq!(pipe.call(id, RequestBody::Slots), Err(Error::Transport));
                });
            }
        });
        daemon.join().unwrap();
        assert!(pipe.is_broken());
        assert_eq!(pipe.call(9, RequestBody::Slots), Err(Error::Transport));
    }

    #[test]
    fn a_reply_nobody_waits_for_breaks_the_pipe() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let pipe = Pipe::new(ours).unwrap();
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
        assert_eq!(pipe.call(1, RequestBody::Slots), Err(Error::Transport));
        drop(daemon.join().unwrap());
        assert!(pipe.is_broken());
    }
}
