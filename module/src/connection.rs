//! The connections to the daemon.
//!
//! Most calls borrow an idle connection from a pool (or open one and say
//! `Hello` with the application id), send one request, read one reply and
//! put the connection back, so threads run concurrently on separate
//! connections. Signing, the call that comes by the thousand, goes instead
//! through one shared connection on which every thread's requests are
//! pipelined (see [`crate::pipeline`]), so that the daemon takes them in
//! batches. A connection that fails is dropped; the daemon forgets the
//! application when its last connection closes, which is why idle
//! connections are kept open while the library is initialised.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use mesign_proto::{
    decode_frame_body, encode_frame, read_frame, Reply, ReplyBody, ReplyResult, Request,
    RequestBody, PROTOCOL_VERSION,
};
use zeroize::Zeroize;

use crate::error::Error;
use crate::pipeline::Pipe;

/// The way to the daemon for one initialised library instance.
pub(crate) struct Daemon {
    path: PathBuf,
    app: u64,
    idle: Mutex<Vec<Connection>>,
    pipe: Mutex<Option<Arc<Pipe>>>,
    next_id: AtomicU64,
}

struct Connection {
    stream: UnixStream,
    buf: Vec<u8>,
}

impl Daemon {
    pub(crate) fn new(path: PathBuf, app: u64) -> Self {
        Daemon {
            path,
            app,
            idle: Mutex::new(Vec::new()),
            pipe: Mutex::new(None),
            next_id: AtomicU64::new(1),
        }
    }

    /// Sends one request and returns the daemon's successful answer; a
    /// refusal comes back as [`Error::Daemon`] with its `CK_RV`.
    pub(crate) fn call(&self, body: RequestBody) -> Result<ReplyBody, Error> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut conn = match idle {
            Some(c) => c,
            None => self.connect()?,
        };
        let result = conn.exchange(self.next_id.fetch_add(1, Ordering::Relaxed), body)?;
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(conn);
        match result {
            ReplyResult::Ok(b) => Ok(b),
            ReplyResult::Err(rv) => Err(Error::Daemon(rv)),
        }
    }

    /// [`Daemon::call`] through the shared pipelined connection, for
    /// requests that carry no secret and are answered quickly (a slow one
    /// would hold up the replies queued behind it).
    pub(crate) fn call_pipelined(&self, body: RequestBody) -> Result<ReplyBody, Error> {
        debug_assert!(!carries_secret(&body), "secrets go through the pool");
        let pipe = self.pipe()?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let result = pipe.call(id, body);
        if result.is_err() {
            // The next call opens a fresh pipe.
            let mut current = self.pipe.lock().unwrap_or_else(PoisonError::into_inner);
            if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, &pipe)) {
                *current = None;
            }
        }
        match result? {
            ReplyResult::Ok(b) => Ok(b),
            ReplyResult::Err(rv) => Err(Error::Daemon(rv)),
        }
    }

    /// The shared pipe, opened on first use or after the last one broke.
    fn pipe(&self) -> Result<Arc<Pipe>, Error> {
        let mut current = self.pipe.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(pipe) = current.as_ref().filter(|p| !p.is_broken()) {
            return Ok(Arc::clone(pipe));
        }
        let pipe = Arc::new(Pipe::new(self.connect()?.stream)?);
        *current = Some(Arc::clone(&pipe));
        Ok(pipe)
    }

    fn connect(&self) -> Result<Connection, Error> {
        let stream = UnixStream::connect(&self.path).map_err(|_| Error::DaemonUnreachable)?;
        let mut conn = Connection {
            stream,
            buf: Vec::with_capacity(512),
        };
        match conn.exchange(0, RequestBody::Hello { app: self.app })? {
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
        if let Ok(mut pipe) = self.pipe.try_lock() {
            if let Some(pipe) = pipe.take() {
                pipe.abandon();
            }
        }
    }
}

impl Connection {
    fn exchange(&mut self, id: u64, body: RequestBody) -> Result<ReplyResult, Error> {
        let secret = carries_secret(&body);
        let mut request = Request {
            version: PROTOCOL_VERSION,
            id,
            body,
        };
        encode_frame(&request, &mut self.buf);
        let sent = self.stream.write_all(&self.buf);
        if secret {
            self.buf.zeroize();
            wipe_secrets(&mut request.body);
        }
        sent.map_err(|_| Error::Transport)?;
        let len = read_frame(&mut self.stream, &mut self.buf).map_err(|_| Error::Transport)?;
        let reply: Reply = decode_frame_body(&self.buf[..len]).map_err(|_| Error::Transport)?;
        if reply.id != id {
            return Err(Error::Transport);
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

/// PINs do not outlive the request in our memory.
fn wipe_secrets(body: &mut RequestBody) {
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
        let d = Daemon::new("/nonexistent/mesign/hsmd.sock".into(), 1);
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
        let d = Daemon::new(dir.path().join("s"), 77);
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
        // The fake closed its side: the pooled connection fails, is dropped,
        // and the next connect finds no listener.
        assert_eq!(d.call(RequestBody::Slots).unwrap_err(), Error::Transport);
        assert_eq!(
            d.call(RequestBody::Slots).unwrap_err(),
            Error::DaemonUnreachable
        );
    }
}
