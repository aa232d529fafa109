//! A connection to one peer box: TCP, the TLS handshake with this box's
//! certificate (the peer checks it chains to the domain CA and is a box
//! certificate; this side checks the peer's the same way), Hello, then
//! one request at a time.

use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use mesign_proto::{Reply, ReplyBody, ReplyResult, Request, RequestBody, PROTOCOL_VERSION};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

/// How long connecting, and each request, may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Why a peer could not be reached or did not answer as it should.
#[derive(Debug)]
pub enum PeerError {
    /// The address does not name a host and port.
    Address(String),
    Io(std::io::Error),
    Tls(rustls::Error),
    Frame(mesign_proto::FrameError),
    /// The peer answered with this CK_RV.
    Refused(u64),
    /// The peer answered something else than the request asks for.
    Unexpected,
}

impl std::fmt::Display for PeerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerError::Address(a) => write!(f, "not a host:port: {a:?}"),
            PeerError::Io(e) => write!(f, "{e}"),
            PeerError::Tls(e) => write!(f, "TLS: {e}"),
            PeerError::Frame(e) => write!(f, "{e}"),
            PeerError::Refused(rv) => write!(f, "refused with CK_RV {rv:#x}"),
            PeerError::Unexpected => write!(f, "unexpected reply"),
        }
    }
}

impl From<std::io::Error> for PeerError {
    fn from(e: std::io::Error) -> Self {
        PeerError::Io(e)
    }
}

impl From<mesign_proto::FrameError> for PeerError {
    fn from(e: mesign_proto::FrameError) -> Self {
        PeerError::Frame(e)
    }
}

/// An established connection to a peer.
pub struct PeerConnection {
    stream: StreamOwned<ClientConnection, TcpStream>,
    next_id: u64,
    buf: Vec<u8>,
}

impl PeerConnection {
    /// Connects to `address` (`host:port`) and says Hello.
    pub fn open(address: &str, config: Arc<ClientConfig>) -> Result<PeerConnection, PeerError> {
        let (host, _) = address
            .rsplit_once(':')
            .ok_or_else(|| PeerError::Address(address.into()))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| PeerError::Address(address.into()))?;
        let socket = address
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| PeerError::Address(address.into()))?;
        let tcp = TcpStream::connect_timeout(&socket, TIMEOUT)?;
        tcp.set_read_timeout(Some(TIMEOUT))?;
        tcp.set_write_timeout(Some(TIMEOUT))?;
        tcp.set_nodelay(true)?;
        let tls = ClientConnection::new(config, name).map_err(PeerError::Tls)?;
        let mut connection = PeerConnection {
            stream: StreamOwned::new(tls, tcp),
            next_id: 1,
            buf: Vec::new(),
        };
        let mut app = [0u8; 8];
        aws_lc_rs::rand::fill(&mut app).expect("the system random generator works");
        let hello = RequestBody::Hello {
            app: u64::from_be_bytes(app),
        };
        match connection.call(hello)? {
            ReplyBody::Hello { .. } => Ok(connection),
            _ => Err(PeerError::Unexpected),
        }
    }

    /// Sends one request and reads its reply.
    pub fn call(&mut self, body: RequestBody) -> Result<ReplyBody, PeerError> {
        let id = self.next_id;
        self.next_id += 1;
        let request = Request {
            version: PROTOCOL_VERSION,
            id,
            body,
        };
        mesign_proto::write_frame(&mut self.stream, &request, &mut self.buf)?;
        std::io::Write::flush(&mut self.stream)?;
        mesign_proto::read_frame(&mut self.stream, &mut self.buf)?;
        let reply: Reply = mesign_proto::decode_frame_body(&self.buf)?;
        if reply.id != id {
            return Err(PeerError::Unexpected);
        }
        match reply.result {
            ReplyResult::Ok(body) => Ok(body),
            ReplyResult::Err(rv) => Err(PeerError::Refused(rv)),
        }
    }
}
