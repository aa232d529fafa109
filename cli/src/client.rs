//! A connection to `mesign-hsmd` in the daemon's own protocol
//! (`mesign-proto`), with the few PKCS#11-shaped steps the commands are
//! made of: open a session, log in, find objects, read attributes.
//!
//! The CLI is its own application to the daemon: `Hello` carries a random
//! application number, so its sessions and login are separate from any
//! signing server's, exactly as if it were one more PKCS#11 application.

use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::path::Path;

use cryptoki_sys::*;
use mesign_proto::attr;
use mesign_proto::{
    decode_frame_body, read_frame, write_frame, Attribute, AttributeValue, Reply, ReplyBody,
    ReplyResult, Request, RequestBody, PROTOCOL_VERSION,
};

use crate::error::CliError;

/// One connection to the daemon, acting as its own application.
pub struct Connection {
    stream: BufReader<UnixStream>,
    buf: Vec<u8>,
    next_id: u64,
}

impl Connection {
    /// Connects and introduces itself with a random application number.
    pub fn open(path: &Path) -> Result<Self, CliError> {
        let stream =
            UnixStream::connect(path).map_err(|e| CliError::Unreachable(path.to_path_buf(), e))?;
        let mut conn = Connection {
            stream: BufReader::new(stream),
            buf: Vec::new(),
            next_id: 1,
        };
        let mut app = [0u8; 8];
        aws_lc_rs::rand::fill(&mut app).map_err(|_| CliError::UnexpectedReply)?;
        conn.call(RequestBody::Hello {
            app: u64::from_le_bytes(app),
        })?;
        Ok(conn)
    }

    /// Sends one request and returns the reply body, or the daemon's CK_RV.
    pub fn call(&mut self, body: RequestBody) -> Result<ReplyBody, CliError> {
        let id = self.next_id;
        self.next_id += 1;
        let req = Request {
            version: PROTOCOL_VERSION,
            id,
            body,
        };
        write_frame(self.stream.get_mut(), &req, &mut self.buf)
            .map_err(|e| CliError::Protocol(e.into()))?;
        read_frame(&mut self.stream, &mut self.buf).map_err(CliError::Protocol)?;
        let reply: Reply = decode_frame_body(&self.buf).map_err(CliError::Protocol)?;
        if reply.id != id {
            return Err(CliError::UnexpectedReply);
        }
        match reply.result {
            ReplyResult::Ok(body) => Ok(body),
            ReplyResult::Err(rv) => Err(CliError::Refused(rv)),
        }
    }

    /// A request whose answer is `Done`.
    pub fn done(&mut self, body: RequestBody) -> Result<(), CliError> {
        match self.call(body)? {
            ReplyBody::Done => Ok(()),
            _ => Err(CliError::UnexpectedReply),
        }
    }

    /// The slot to work on: `wanted`, or the first slot the daemon lists.
    pub fn slot(&mut self, wanted: Option<u64>) -> Result<u64, CliError> {
        match self.call(RequestBody::Slots)? {
            ReplyBody::Slots(slots) => match wanted {
                Some(s) if slots.iter().any(|i| i.slot == s) => Ok(s),
                Some(_) => Err(CliError::Refused(CKR_SLOT_ID_INVALID)),
                None => slots
                    .first()
                    .map(|i| i.slot)
                    .ok_or(CliError::Refused(CKR_SLOT_ID_INVALID)),
            },
            _ => Err(CliError::UnexpectedReply),
        }
    }

    /// Opens a read-write session on `slot`.
    pub fn open_session(&mut self, slot: u64) -> Result<Session<'_>, CliError> {
        match self.call(RequestBody::OpenSession {
            slot,
            flags: (CKF_SERIAL_SESSION | CKF_RW_SESSION),
        })? {
            ReplyBody::Session(handle) => Ok(Session { conn: self, handle }),
            _ => Err(CliError::UnexpectedReply),
        }
    }
}

/// An open read-write session; closed when dropped (closing also ends the
/// login, which belongs to this connection's application alone).
pub struct Session<'c> {
    conn: &'c mut Connection,
    handle: u64,
}

impl Session<'_> {
    /// The connection, for requests that do not need the session.
    pub fn conn(&mut self) -> &mut Connection {
        self.conn
    }

    /// The session handle.
    pub fn handle(&self) -> u64 {
        self.handle
    }

    /// Logs in as `user_type` (CKU_USER or CKU_SO).
    pub fn login(&mut self, user_type: CK_USER_TYPE, pin: &[u8]) -> Result<(), CliError> {
        let session = self.handle;
        self.conn.done(RequestBody::Login {
            session,
            user_type,
            pin: pin.to_vec(),
        })
    }

    /// Handles of every visible object matching `template`.
    pub fn find(&mut self, template: Vec<Attribute>) -> Result<Vec<u64>, CliError> {
        let session = self.handle;
        match self
            .conn
            .call(RequestBody::FindObjects { session, template })?
        {
            ReplyBody::Objects(handles) => Ok(handles),
            _ => Err(CliError::UnexpectedReply),
        }
    }

    /// The values of `types` on `object`; `None` where the object has no
    /// such attribute or may not reveal it.
    pub fn attributes(
        &mut self,
        object: u64,
        types: &[CK_ATTRIBUTE_TYPE],
    ) -> Result<Vec<Option<Vec<u8>>>, CliError> {
        let session = self.handle;
        match self.conn.call(RequestBody::GetAttributes {
            session,
            object,
            types: types.to_vec(),
        })? {
            ReplyBody::Attributes(values) if values.len() == types.len() => Ok(values
                .into_iter()
                .map(|v| match v {
                    AttributeValue::Value(bytes) => Some(bytes),
                    AttributeValue::Sensitive | AttributeValue::Invalid => None,
                })
                .collect()),
            _ => Err(CliError::UnexpectedReply),
        }
    }

    /// Creates a token object from `template`.
    pub fn create(&mut self, template: Vec<Attribute>) -> Result<u64, CliError> {
        let session = self.handle;
        match self
            .conn
            .call(RequestBody::CreateObject { session, template })?
        {
            ReplyBody::Object(handle) => Ok(handle),
            _ => Err(CliError::UnexpectedReply),
        }
    }

    /// Destroys `object`.
    pub fn destroy(&mut self, object: u64) -> Result<(), CliError> {
        let session = self.handle;
        self.conn
            .done(RequestBody::DestroyObject { session, object })
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        // Best effort: the daemon also closes the session when the
        // connection ends.
        let session = self.handle;
        let _ = self.conn.call(RequestBody::CloseSession { session });
    }
}

/// A template attribute holding a `CK_ULONG`.
pub fn ulong(ty: CK_ATTRIBUTE_TYPE, v: CK_ULONG) -> Attribute {
    Attribute {
        ty,
        value: attr::ulong_value(v),
    }
}

/// A template attribute holding a `CK_BBOOL`.
pub fn flag(ty: CK_ATTRIBUTE_TYPE, v: bool) -> Attribute {
    Attribute {
        ty,
        value: attr::bool_value(v),
    }
}

/// A template attribute holding bytes.
pub fn bytes(ty: CK_ATTRIBUTE_TYPE, v: &[u8]) -> Attribute {
    Attribute {
        ty,
        value: v.to_vec(),
    }
}
