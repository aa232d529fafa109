//! The connections to the daemon.
//!
//! Most calls borrow an idle connection from a pool (or open one and say
//! `Hello` with the application id), send one request, read one reply and
//! put the connection back, so threads run concurrently on separate
//! connections. Signing, the call that comes by the thousand, goes instead
//! through a few pipelined connections (see [`crate::pipeline`]): a thread
//! that finds them all busy shares one, and the daemon then takes the
//! requests queued on it as one batch. A connection that fails is dropped;
//! the daemon forgets the
//! application when its last connection closes, which is why idle
//! connections are kept open while the library is initialised.
//!
//! A daemon is reached over its Unix socket or, for a remote box, over
//! mutual TLS ([`crate::tls`]); both carry the same frames. TLS connections
//! are not pipelined: signing on them takes pooled connections too.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use mesign_proto::quiet_read::read_when_ready;
use mesign_proto::{
    decode_frame_body, encode_frame, read_frame, Reply, ReplyBody, ReplyResult, Request,
    RequestBody, PROTOCOL_VERSION,
};
use zeroize::Zeroize;

use crate::config::{Endpoint, TlsFiles};
use crate::error::Error;
use crate::pipeline::{self, Claim, Pipe};
use crate::tls::{TlsClient, TlsStream};

/// Most pipelined connections a library instance opens (see
/// [`Daemon::call_pipelined`]).
const MAX_PIPES: usize = 4;

/// The way to the daemon for one initialised library instance.
pub(crate) struct Daemon {
    endpoint: Endpoint,
    /// For a `tls:` endpoint: the client configuration.
    tls: Option<TlsClient>,
    app: u64,
    idle: Mutex<Vec<Connection>>,
    pipes: Mutex<Vec<Arc<Pipe>>>,
    next_id: AtomicU64,
}

struct Connection {
    stream: Stream,
    buf: Vec<u8>,
}

/// The byte stream under a connection.
enum Stream {
    Unix(UnixStream),
    Tls(Box<TlsStream>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Unix(s) => read_when_ready(s.as_fd(), buf, None),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Unix(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

impl Daemon {
    /// A daemon at `endpoint`, contacted lazily; a `tls:` endpoint reads
    /// the certificate files in `tls` now, and fails with
    /// [`Error::BadConfig`] when they are missing or unusable.
    pub(crate) fn new(endpoint: Endpoint, tls: Option<TlsFiles>, app: u64) -> Result<Self, Error> {
        let tls = match (&endpoint, tls) {
            (Endpoint::Tls { .. }, Some(files)) => Some(TlsClient::new(&files)?),
            (Endpoint::Tls { .. }, None) => return Err(Error::BadConfig),
            (Endpoint::Unix(_), _) => None,
        };
        Ok(Daemon {
            endpoint,
            tls,
            app,
            idle: Mutex::new(Vec::new()),
            pipes: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
        })
    }

    /// A daemon on a Unix socket.
    #[cfg(test)]
    pub(crate) fn unix(path: impl Into<std::path::PathBuf>, app: u64) -> Self {
        Self::new(Endpoint::Unix(path.into()), None, app).expect("a unix endpoint")
    }

    /// Sends one request and returns the daemon's successful answer; a
    /// refusal comes back as [`Error::Daemon`] with its `CK_RV`.
    ///
    /// A pooled connection may have been closed by a daemon that restarted
    /// since it was last used. When sending on it fails, nothing reached
    /// the daemon, so the request goes once more on a fresh connection: the
    /// caller then sees the new daemon's answer (for an old session,
    /// CKR_SESSION_HANDLE_INVALID) rather than a transport error.
    pub(crate) fn call(&self, body: RequestBody) -> Result<ReplyBody, Error> {
        let mut request = Request {
            version: PROTOCOL_VERSION,
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            body,
        };
        let result = self.call_pooled(&request);
        // PINs do not outlive the request in our memory.
        wipe_secrets(&mut request.body);
        match result? {
            ReplyResult::Ok(b) => Ok(b),
            ReplyResult::Err(rv) => Err(Error::Daemon(rv)),
        }
    }

    fn call_pooled(&self, request: &Request) -> Result<ReplyResult, Error> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let (conn, result) = match idle {
            Some(mut conn) => match conn.exchange(request) {
                Err(Failed::NotSent) => {
                    let mut fresh = self.connect()?;
                    let result = fresh.exchange(request);
                    (fresh, result)
                }
                result => (conn, result),
            },
            None => {
                let mut conn = self.connect()?;
                let result = conn.exchange(request);
                (conn, result)
            }
        };
        let result = result.map_err(|_| Error::Transport)?;
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(conn);
        Ok(result)
    }

    /// [`Daemon::call`] through a pipelined connection, for requests that
    /// carry no secret and are answered quickly (a slow one would hold up
    /// the replies queued behind it). A caller takes an idle pipe, or opens
    /// one while there are fewer than [`MAX_PIPES`], and only then shares
    /// the least busy: up to that many calls run side by side in the
    /// daemon, and beyond it they are pipelined and signed in batches.
    ///
    /// A request that could not be sent on a pipe the daemon closed (it
    /// restarted) goes again on another pipe, as in [`Daemon::call`]. Every
    /// pipe of the old daemon fails that way once and is dropped, so after
    /// at most [`MAX_PIPES`] such failures the request goes on a fresh one.
    pub(crate) fn call_pipelined(&self, body: RequestBody) -> Result<ReplyBody, Error> {
        debug_assert!(!carries_secret(&body), "secrets go through the pool");
        if self.tls.is_some() {
            return self.call(body);
        }
        let mut body = Some(body);
        let mut result = Err(Error::Transport);
        for _attempt in 0..=MAX_PIPES {
            let Some(request) = body.take() else { break };
            let claim = self.pipe()?;
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            result = match claim.call(id, request) {
                Ok(reply) => Ok(reply),
                Err(failed) => {
                    // The next call opens a fresh pipe in its place.
                    self.pipes
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .retain(|p| !Arc::ptr_eq(p, claim.pipe()));
                    if let pipeline::Failed::NotSent(request) = failed {
                        body = Some(request);
                    }
                    Err(Error::Transport)
                }
            };
        }
        match result? {
            ReplyResult::Ok(b) => Ok(b),
            ReplyResult::Err(rv) => Err(Error::Daemon(rv)),
        }
    }

    /// A turn on the pipe for the next call (see [`Daemon::call_pipelined`]).
    fn pipe(&self) -> Result<Claim, Error> {
        let mut pipes = self.pipes.lock().unwrap_or_else(PoisonError::into_inner);
        pipes.retain(|p| !p.is_broken());
        let least_busy = pipes.iter().min_by_key(|p| p.in_flight());
        match least_busy {
            Some(pipe) if pipe.in_flight() == 0 || pipes.len() >= MAX_PIPES => Ok(Claim::new(pipe)),
            _ => {
                let Stream::Unix(stream) = self.connect()?.stream else {
                    return Err(Error::Transport);
                };
                let pipe = Arc::new(Pipe::new(stream)?);
                let claim = Claim::new(&pipe);
                pipes.push(pipe);
                Ok(claim)
            }
        }
    }

    fn connect(&self) -> Result<Connection, Error> {
        let stream = match (&self.endpoint, &self.tls) {
            (Endpoint::Unix(path), _) => {
                Stream::Unix(UnixStream::connect(path).map_err(|_| Error::DaemonUnreachable)?)
            }
            (Endpoint::Tls { host, port }, Some(tls)) => {
                Stream::Tls(Box::new(tls.connect(host, *port)?))
            }
            (Endpoint::Tls { .. }, None) => return Err(Error::BadConfig),
        };
        let mut conn = Connection {
            stream,
            buf: Vec::with_capacity(512),
        };
        let hello = Request {
            version: PROTOCOL_VERSION,
            id: 0,
            body: RequestBody::Hello { app: self.app },
        };
        match conn.exchange(&hello).map_err(|_| Error::Transport)? {
            ReplyResult::Ok(ReplyBody::Hello { .. }) => Ok(conn),
            ReplyResult::Ok(_) => Err(Error::Transport),
            ReplyResult::Err(rv) => Err(Error::Daemon(rv)),
        }
    }

    /// Closes idle connections without sending anything, for a forked
    /// child: the parent's sessions must not be touched. A lock held by a
    /// parent thread at fork time is left alone rather than waited for.
    pub(crate) fn abandon(&self) {
        if let Ok(mut idle) = self.idle.try_lock() {
            idle.clear();
        }
        if let Ok(mut pipes) = self.pipes.try_lock() {
            pipes.clear();
        }
    }

    /// Closes every idle connection and forgets the pipes (calls in flight
    /// on them finish on their own): the daemon failed, and whatever comes
    /// next starts on fresh connections.
    pub(crate) fn drop_connections(&self) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.pipes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

/// How an exchange on a connection failed.
#[derive(Debug)]
enum Failed {
    /// The request did not go out: the daemon never saw it.
    NotSent,
    /// The request went out and no usable reply came back.
    Lost,
}

impl Connection {
    fn exchange(&mut self, request: &Request) -> Result<ReplyResult, Failed> {
        encode_frame(request, &mut self.buf);
        let sent = self.stream.write_all(&self.buf);
        if carries_secret(&request.body) {
            self.buf.zeroize();
        }
        sent.map_err(|_| Failed::NotSent)?;
        let len = read_frame(&mut self.stream, &mut self.buf).map_err(|_| Failed::Lost)?;
        let reply: Reply = decode_frame_body(&self.buf[..len]).map_err(|_| Failed::Lost)?;
        if reply.id != request.id {
            return Err(Failed::Lost);
        }
        Ok(reply.result)
    }
}

fn carries_secret(body: &RequestBody) -> bool {
    matches!(
        body,
        RequestBody::InitToken { .. }
            | RequestBody::InitPin { .. }
            | RequestBody::SetPin { .. }
            | RequestBody::Login { .. }
    )
}

/// Overwrites the PINs a request carries.
pub(crate) fn wipe_secrets(body: &mut RequestBody) {
    match body {
        RequestBody::InitToken { so_pin, .. } => so_pin.zeroize(),
        RequestBody::InitPin { pin, .. } | RequestBody::Login { pin, .. } => pin.zeroize(),
        RequestBody::SetPin {
            old_pin, new_pin, ..
        } => {
            old_pin.zeroize();
            new_pin.zeroize();
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesign_proto::write_frame;
    use std::os::unix::net::UnixListener;

    #[test]
    fn unreachable_daemon_is_device_removed() {
        let d = Daemon::unix("/nonexistent/mesign/hsmd.sock", 1);
        assert_eq!(
            d.call(RequestBody::Slots).unwrap_err(),
            Error::DaemonUnreachable
        );
    }

    /// A one-connection fake daemon: answers Hello, then one request with
    /// `answer`, then closes.
    fn fake_daemon(answer: ReplyResult) -> (tempfile::TempDir, std::thread::JoinHandle<u64>) {
        let dir = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(dir.path().join("s")).unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = Vec::new();
            let mut app = 0;
            for reply in [None, Some(answer)] {
                let n = read_frame(&mut s, &mut buf).unwrap();
                let req: Request = decode_frame_body(&buf[..n]).unwrap();
                if let RequestBody::Hello { app: a } = req.body {
                    app = a;
                }
                let result = reply.unwrap_or(ReplyResult::Ok(ReplyBody::Hello {
                    daemon_version: "t".into(),
                }));
                write_frame(&mut s, &Reply { id: req.id, result }, &mut Vec::new()).unwrap();
            }
            app
        });
        (dir, t)
    }

    #[test]
    fn hello_then_request_and_errors_pass_through() {
        let (dir, t) = fake_daemon(ReplyResult::Err(cryptoki_sys::CKR_PIN_INCORRECT));
        let d = Daemon::unix(dir.path().join("s"), 77);
        let r = d.call(RequestBody::Login {
            session: 1,
            user_type: 1,
            pin: b"1234".to_vec(),
        });
        assert_eq!(
            r.unwrap_err(),
            Error::Daemon(cryptoki_sys::CKR_PIN_INCORRECT)
        );
        assert_eq!(t.join().unwrap(), 77);
        // The fake closed its side and stopped listening: sending on the
        // pooled connection fails, and the fresh connection tried in its
        // place finds nobody.
        assert_eq!(
            d.call(RequestBody::Slots).unwrap_err(),
            Error::DaemonUnreachable
        );
    }

    /// A daemon that restarted between two calls: the request that could
    /// not be sent on the old connection goes out on a new one and is
    /// answered there.
    #[test]
    fn a_request_not_sent_on_a_closed_connection_goes_on_a_fresh_one() {
        let dir = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(dir.path().join("s")).unwrap();
        let t = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut served = Vec::new();
            for _connection in 0..2 {
                let (mut s, _) = listener.accept().unwrap();
                for _request in 0..2 {
                    let n = read_frame(&mut s, &mut buf).unwrap();
                    let req: Request = decode_frame_body(&buf[..n]).unwrap();
                    let result = match req.body {
                        RequestBody::Hello { .. } => ReplyBody::Hello {
                            daemon_version: "t".into(),
                        },
                        ref other => {
                            served.push(other.clone());
                            ReplyBody::Done
                        }
                    };
                    let reply = Reply {
                        id: req.id,
                        result: ReplyResult::Ok(result),
                    };
                    write_frame(&mut s, &reply, &mut Vec::new()).unwrap();
                }
                // Closes this connection, as a stopping daemon would.
            }
            served
        });
        let d = Daemon::unix(dir.path().join("s"), 5);
        assert_eq!(d.call(RequestBody::Slots), Ok(ReplyBody::Done));
        // Let the fake close the first connection before the next call.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !peer_closed(&d) {
            assert!(std::time::Instant::now() < deadline, "fake never closed");
            std::thread::yield_now();
        }
        assert_eq!(d.call(RequestBody::Status), Ok(ReplyBody::Done));
        assert_eq!(
            t.join().unwrap(),
            vec![RequestBody::Slots, RequestBody::Status]
        );
    }

    /// Two callers that take turns on pipes one right after the other get
    /// separate pipes: a turn counts as in flight from the moment it is
    /// taken, not only once its request is on the way.
    #[test]
    fn callers_taking_turns_at_once_get_separate_pipes() {
        let dir = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(dir.path().join("s")).unwrap();
        // The fake daemon greets every connection until told to stop, so a
        // pipe opened where none should be fails the test instead of
        // hanging it.
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let fake = std::thread::spawn(move || {
            let mut open = Vec::new();
            let mut buf = Vec::new();
            listener.set_nonblocking(true).unwrap();
            while stopped.try_recv().is_err() {
                let mut s = match listener.accept() {
                    Ok((s, _)) => s,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::park_timeout(std::time::Duration::from_millis(1));
                        continue;
                    }
                    Err(e) => panic!("accept: {e}"),
                };
                s.set_nonblocking(false).unwrap();
                let n = read_frame(&mut s, &mut buf).unwrap();
                let req: Request = decode_frame_body(&buf[..n]).unwrap();
                assert!(matches!(req.body, RequestBody::Hello { .. }));
                let result = ReplyResult::Ok(ReplyBody::Hello {
                    daemon_version: "t".into(),
                });
                write_frame(&mut s, &Reply { id: req.id, result }, &mut Vec::new()).unwrap();
                open.push(s);
            }
            open
        });
        let d = Daemon::unix(dir.path().join("s"), 3);
        let first = d.pipe().unwrap();
        let second = d.pipe().unwrap();
        assert!(!Arc::ptr_eq(first.pipe(), second.pipe()));
        let first_pipe = Arc::clone(first.pipe());
        drop(first);
        // The pipe whose turn ended is idle again and taken next.
        let third = d.pipe().unwrap();
        assert!(Arc::ptr_eq(third.pipe(), &first_pipe));
        assert_eq!(first_pipe.in_flight(), 1);
        drop(third);
        assert_eq!(first_pipe.in_flight(), 0);
        stop.send(()).unwrap();
        assert_eq!(fake.join().unwrap().len(), 2, "connections opened");
    }

    /// True when the pooled connection's peer has hung up.
    fn peer_closed(d: &Daemon) -> bool {
        let idle = d.idle.lock().unwrap();
        let Some(conn) = idle.first() else {
            return true;
        };
        let Stream::Unix(stream) = &conn.stream else {
            return true;
        };
        stream.set_nonblocking(true).unwrap();
        let mut byte = [0u8; 1];
        let closed = matches!(std::io::Read::read(&mut &*stream, &mut byte), Ok(0));
        stream.set_nonblocking(false).unwrap();
        closed
    }
}
