//! The Unix socket server: one thread per connection, blocking I/O.
//!
//! Each connection is checked with SO_PEERCRED against the allowed uids and
//! gids and closed at once if the peer is not allowed. Its first frame must
//! be `Hello`; after that every frame is one request and gets one reply.
//!
//! Protocol errors (documented decision): a body that does not decode, or a
//! request of another protocol version, gets a reply with CKR_DEVICE_ERROR
//! (id 0 when the id could not be read) and the connection is closed, since
//! the peer no longer speaks our protocol. A length prefix above
//! `MAX_FRAME` closes the connection without reading the body. A request
//! before `Hello`, or a second `Hello`, is answered with CKR_DEVICE_ERROR.
//! None of this affects other connections.
//!
//! The same frame handling serves mutual-TLS connections ([`crate::tls`]),
//! where the client certificate replaces the peer-credential check and
//! box certificates may also send replication requests.
//!
//! Limits ([`crate::config::Limits`]): a connection must say Hello within
//! the hello timeout and may then stay silent at most the idle timeout; a
//! read that times out closes it like a peer that hung up, and so does a
//! reply that waits longer than the write timeout for a client that does
//! not read.

use std::cell::Cell;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesign_proto::quiet_read::read_when_ready;
use mesign_proto::{
    FrameError, Reply, ReplyBody, ReplyResult, Request, RequestBody, PROTOCOL_VERSION,
};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

use crate::config::Limits;
use crate::error::HsmError;
use crate::hsm::{Hsm, SignCall};
use crate::sessions::AppKey;

/// Buffers above this size are released after the frame that needed them.
const KEEP_BUFFER: usize = 64 * 1024;

/// Serves the replication requests of a peer box ([`crate::replication`]).
pub trait ReplicaService: Send + Sync {
    fn serve(&self, body: RequestBody) -> Result<ReplyBody, HsmError>;
}

/// Who may connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    pub uids: Vec<u32>,
    pub gids: Vec<u32>,
}

impl Allowed {
    /// A peer is allowed by its uid, its primary gid, or any of its
    /// supplementary groups (read only when the first two do not decide).
    fn permits(&self, uid: u32, gid: u32, supplementary: impl FnOnce() -> Vec<u32>) -> bool {
        self.uids.contains(&uid)
            || self.gids.contains(&gid)
            || (!self.gids.is_empty() && supplementary().iter().any(|g| self.gids.contains(g)))
    }
}

/// The supplementary groups of process `pid`, from /proc (SO_PEERCRED
/// carries only the primary gid). A process that is gone has none.
fn supplementary_groups(pid: i32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|groups| {
            groups
                .split_whitespace()
                .filter_map(|g| g.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Why the socket could not be set up.
#[derive(Debug)]
pub enum BindError {
    /// Something answers on the socket path: another daemon runs.
    InUse,
    Io(std::io::Error),
}

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BindError::InUse => write!(f, "another process is serving on the socket"),
            BindError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Binds the socket at `path` with permission bits `mode`. A stale socket
/// file is removed only if nothing answers on it.
pub fn bind(path: &Path, mode: u32) -> Result<UnixListener, BindError> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(BindError::InUse);
        }
        std::fs::remove_file(path).map_err(BindError::Io)?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(BindError::Io)?;
    }
    // The socket must never exist with wider permissions than `mode`, not
    // even between bind and chmod: bind under a strict umask.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let listener = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = listener.map_err(BindError::Io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(BindError::Io)?;
    Ok(listener)
}

/// Serves one connection until it closes.
pub fn serve_connection(hsm: Arc<Hsm>, stream: UnixStream, allowed: &Allowed, limits: Limits) {
    let cred = match getsockopt(&stream, PeerCredentials) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read peer credentials; closing");
            return;
        }
    };
    let (pid, uid, gid) = (cred.pid(), cred.uid(), cred.gid());
    if !allowed.permits(uid, gid, || supplementary_groups(pid)) {
        tracing::warn!(
            pid,
            uid,
            gid,
            "connection from a user that is not allowed; closed"
        );
        return;
    }
    tracing::debug!(pid, uid, gid, "connection");
    // A client that stops reading its replies holds its thread and its
    // place among `max_connections` only this long.
    if let Err(e) = stream.set_write_timeout(limits.write_timeout) {
        tracing::warn!(error = %e, "cannot set a write timeout; closing");
        return;
    }
    let limit = ReadLimit::for_hello(&limits);
    let mut app = None;
    let reader = BufReader::with_capacity(16 * 1024, TimedSocket::new(&stream, limit.clone()));
    let writer = BufWriter::with_capacity(16 * 1024, &stream);
    let greeted = || {
        limit.set(ReadLimit::EachWait(limits.idle_timeout));
        true
    };
    serve_frames(&hsm, reader, writer, pid, &mut app, greeted, None);
    if let Some(app) = app {
        hsm.disconnect(app);
    }
    tracing::debug!(pid, "connection closed");
}

/// How long reading a client's socket may wait.
#[derive(Clone, Copy)]
pub(crate) enum ReadLimit {
    /// Until this moment, over all reads.
    Until(Instant),
    /// This long for each read (`None`: no limit).
    EachWait(Option<Duration>),
}

impl ReadLimit {
    /// The limit of a new connection: Hello must be in within the hello
    /// timeout, however the client spreads its bytes. After Hello the
    /// server sets [`ReadLimit::EachWait`] with the idle timeout.
    pub(crate) fn for_hello(limits: &Limits) -> Rc<Cell<ReadLimit>> {
        Rc::new(Cell::new(match limits.hello_timeout {
            Some(t) => ReadLimit::Until(Instant::now() + t),
            None => ReadLimit::EachWait(None),
        }))
    }
}

/// A client's socket read with [`read_when_ready`], so that the thread
/// waiting for the next request is not woken each time the client reads a
/// reply; a read past its [`ReadLimit`] fails as a socket read timeout
/// does. Writes go straight to the socket.
pub(crate) struct TimedSocket<S> {
    socket: S,
    limit: Rc<Cell<ReadLimit>>,
}

impl<S> TimedSocket<S> {
    pub(crate) fn new(socket: S, limit: Rc<Cell<ReadLimit>>) -> Self {
        Self { socket, limit }
    }
}

impl<S: AsFd> Read for TimedSocket<S> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let timeout = match self.limit.get() {
            ReadLimit::Until(at) => {
                let left = at.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(std::io::ErrorKind::WouldBlock.into());
                }
                Some(left)
            }
            ReadLimit::EachWait(timeout) => timeout,
        };
        read_when_ready(self.socket.as_fd(), buf, timeout)
    }
}

impl<S: Write> Write for TimedSocket<S> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.socket.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.socket.flush()
    }
}

/// Serves a connection other than a Unix socket's (TLS) until it closes,
/// as [`serve_connection`] does: `pid` names its applications, `replica`
/// answers replication requests (refused when `None`).
pub(crate) fn serve_stream<R: Read>(
    hsm: &Hsm,
    reader: BufReader<R>,
    writer: impl Write,
    pid: i32,
    greeted: impl FnMut() -> bool,
    replica: Option<&dyn ReplicaService>,
) {
    let mut app = None;
    serve_frames(hsm, reader, writer, pid, &mut app, greeted, replica);
    if let Some(app) = app {
        hsm.disconnect(app);
    }
}

/// Serves the frames in `input` as one connection of process `pid` would
/// be served, appending the reply frames to `replies`, then closes the
/// connection (ending its application's sessions if it was the last). The
/// socket-free core of [`serve_connection`], for fuzzing and tests.
pub fn serve_buffer(hsm: &Hsm, pid: i32, input: &[u8], replies: &mut Vec<u8>) {
    let mut app = None;
    serve_frames(hsm, input, &mut *replies, pid, &mut app, || true, None);
    if let Some(app) = app {
        hsm.disconnect(app);
    }
}

/// The most requests answered as one batch.
const MAX_BATCH: usize = 64;

/// Where a connection's frames come from: a reader that can tell whether
/// another whole frame is already at hand, so that reading it cannot block.
trait FrameSource: Read {
    fn frame_buffered(&self) -> bool;
}

impl<R: Read> FrameSource for BufReader<R> {
    fn frame_buffered(&self) -> bool {
        whole_frame(self.buffer())
    }
}

impl FrameSource for &[u8] {
    fn frame_buffered(&self) -> bool {
        whole_frame(self)
    }
}

/// True when `buf` starts with a whole frame, or with a length prefix that
/// reading refuses at once.
fn whole_frame(buf: &[u8]) -> bool {
    let Some((prefix, body)) = buf.split_first_chunk::<4>() else {
        return false;
    };
    let len = u32::from_be_bytes(*prefix) as usize;
    len > mesign_proto::MAX_FRAME || body.len() >= len
}

/// A frame read from the connection.
enum Incoming {
    Request(Request),
    /// The peer broke the protocol: this is its last answer.
    Fatal(Reply),
}

/// Reads frames until the peer hangs up or breaks the protocol, answering
/// each; `greeted` runs once after Hello and closes the connection if it
/// returns false.
///
/// A client that pipelines (the module does, for C_Sign from many threads)
/// has several requests buffered by the time one is read: all of them are
/// taken as one batch, their signatures go to the card together, and their
/// replies leave in one write.
fn serve_frames(
    hsm: &Hsm,
    mut reader: impl FrameSource,
    mut writer: impl Write,
    pid: i32,
    app: &mut Option<AppKey>,
    mut greeted: impl FnMut() -> bool,
    replica: Option<&dyn ReplicaService>,
) {
    let mut body = Vec::new();
    let mut scratch = Vec::new();
    let mut batch = Vec::new();
    loop {
        let closing = read_batch(&mut reader, &mut body, pid, &mut batch);
        if body.capacity() > KEEP_BUFFER {
            body = Vec::new();
        }
        let (replies, keep_open) = answer_batch(hsm, pid, app, &mut batch, &mut greeted, replica);
        let mut written = Ok(());
        for reply in &replies {
            written =
                written.and_then(|()| mesign_proto::write_frame(&mut writer, reply, &mut scratch));
        }
        let written = written.and_then(|()| writer.flush());
        if scratch.capacity() > KEEP_BUFFER {
            scratch = Vec::new();
        }
        if closing || written.is_err() || !keep_open {
            return;
        }
    }
}

/// Reads one frame, blocking, then every whole frame already buffered, into
/// `batch`; true when the connection is to close after answering them.
fn read_batch(
    reader: &mut impl FrameSource,
    body: &mut Vec<u8>,
    pid: i32,
    batch: &mut Vec<Incoming>,
) -> bool {
    loop {
        match mesign_proto::read_frame(reader, body) {
            Ok(_) => {}
            Err(FrameError::TooLarge(len)) => {
                tracing::warn!(pid, len, "oversize frame; closing");
                return true;
            }
            Err(FrameError::Io(_) | FrameError::Malformed(_)) => return true,
        }
        let incoming = match mesign_proto::decode_frame_body::<Request>(body) {
            Err(e) => {
                tracing::warn!(pid, error = %e, "malformed frame; closing");
                Incoming::Fatal(error_reply(0, &HsmError::ProtocolOrder))
            }
            Ok(request) if request.version != PROTOCOL_VERSION => {
                tracing::warn!(
                    pid,
                    version = request.version,
                    "wrong protocol version; closing"
                );
                let e = HsmError::ProtocolVersion(request.version);
                Incoming::Fatal(error_reply(request.id, &e))
            }
            Ok(request) => Incoming::Request(request),
        };
        let fatal = matches!(incoming, Incoming::Fatal(_));
        batch.push(incoming);
        if fatal || batch.len() >= MAX_BATCH || !reader.frame_buffered() {
            return fatal;
        }
    }
}

/// Answers a batch in order (draining it); consecutive signatures are
/// signed together. False when the connection is to close.
fn answer_batch(
    hsm: &Hsm,
    pid: i32,
    app: &mut Option<AppKey>,
    batch: &mut Vec<Incoming>,
    greeted: &mut impl FnMut() -> bool,
    replica: Option<&dyn ReplicaService>,
) -> (Vec<Reply>, bool) {
    let mut replies = Vec::with_capacity(batch.len());
    let mut signs = Vec::new();
    for incoming in batch.drain(..) {
        let request = match incoming {
            Incoming::Request(request) => request,
            Incoming::Fatal(reply) => {
                answer_signs(hsm, pid, *app, &mut signs, &mut replies);
                replies.push(reply);
                return (replies, false);
            }
        };
        match (*app, request.body) {
            (
                Some(_),
                RequestBody::Sign {
                    session,
                    key,
                    mechanism,
                    scheme,
                    input,
                },
            ) => signs.push((
                request.id,
                SignCall {
                    session,
                    key,
                    mechanism,
                    scheme,
                    input,
                },
            )),
            (_, body) => {
                answer_signs(hsm, pid, *app, &mut signs, &mut replies);
                let was_greeted = app.is_some();
                let request = Request { body, ..request };
                replies.push(answer(hsm, pid, app, request, replica));
                if !was_greeted && app.is_some() && !greeted() {
                    return (replies, false);
                }
            }
        }
    }
    answer_signs(hsm, pid, *app, &mut signs, &mut replies);
    (replies, true)
}

/// Signs the collected C_Sign requests (draining them) as one batch.
fn answer_signs(
    hsm: &Hsm,
    pid: i32,
    app: Option<AppKey>,
    signs: &mut Vec<(u64, SignCall)>,
    replies: &mut Vec<Reply>,
) {
    let Some(key) = app else {
        return;
    };
    if signs.is_empty() {
        return;
    }
    let (ids, calls): (Vec<u64>, Vec<SignCall>) = signs.drain(..).unzip();
    // A bug in one handler must not take the daemon down.
    let results = catch_unwind(AssertUnwindSafe(|| hsm.sign_many(key, calls)))
        .unwrap_or_else(|_| ids.iter().map(|_| Err(HsmError::Internal)).collect());
    for (id, result) in ids.into_iter().zip(results) {
        replies.push(reply(pid, id, result.map(ReplyBody::Bytes)));
    }
}

fn answer(
    hsm: &Hsm,
    pid: i32,
    app: &mut Option<AppKey>,
    request: Request,
    replica: Option<&dyn ReplicaService>,
) -> Reply {
    let id = request.id;
    let result = match (*app, request.body) {
        (None, RequestBody::Hello { app: number }) => {
            let key = AppKey { pid, app: number };
            hsm.connect(key);
            *app = Some(key);
            Ok(ReplyBody::Hello {
                daemon_version: env!("CARGO_PKG_VERSION").into(),
            })
        }
        (None, _) => Err(HsmError::ProtocolOrder),
        (
            Some(_),
            body @ (RequestBody::ReplicaVersions { .. } | RequestBody::ReplicaApply { .. }),
        ) => match replica {
            Some(replica) => catch_unwind(AssertUnwindSafe(|| replica.serve(body)))
                .unwrap_or(Err(HsmError::Internal)),
            None => Err(HsmError::NotAPeer),
        },
        (Some(key), body) => {
            let span = tracing::trace_span!("request", pid, app = key.app, id);
            let _entered = span.enter();
            // A bug in one handler must not take the daemon down.
            catch_unwind(AssertUnwindSafe(|| hsm.handle(key, body)))
                .unwrap_or(Err(HsmError::Internal))
        }
    };
    reply(pid, id, result)
}

fn reply(pid: i32, id: u64, result: Result<ReplyBody, HsmError>) -> Reply {
    match result {
        Ok(body) => Reply {
            id,
            result: ReplyResult::Ok(body),
        },
        Err(e) => {
            tracing::debug!(pid, id, error = %e, "request failed");
            error_reply(id, &e)
        }
    }
}

fn error_reply(id: u64, e: &HsmError) -> Reply {
    Reply {
        id,
        result: ReplyResult::Err(e.rv()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn peers_are_allowed_by_uid_primary_or_supplementary_group() {
        let allowed = super::Allowed {
            uids: vec![0],
            gids: vec![900],
        };
        assert!(allowed.permits(0, 5, Vec::new));
        assert!(allowed.permits(1000, 900, Vec::new));
        assert!(allowed.permits(1000, 1000, || vec![27, 900]));
        assert!(!allowed.permits(1000, 1000, || vec![27]));
        let no_groups = super::Allowed {
            uids: vec![0],
            gids: vec![],
        };
        assert!(!no_groups.permits(1000, 1000, || panic!("groups read needlessly")));
    }

    #[test]
    fn own_supplementary_groups_are_read_from_proc() {
        let pid = std::process::id() as i32;
        let ours = nix::unistd::getgroups().unwrap();
        let read = super::supplementary_groups(pid);
        for g in ours {
            assert!(
                read.contains(&g.as_raw()),
                "group {g} missing from {read:?}"
            );
        }
        assert!(super::supplementary_groups(-1).is_empty());
    }
}
