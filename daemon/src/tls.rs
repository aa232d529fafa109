//! The daemon's mutual-TLS side: the listener's configuration, the client
//! configuration replication uses to reach peer boxes, and who a peer is.
//!
//! Both directions use TLS 1.3 only (rustls, aws-lc-rs provider) and trust
//! exactly one anchor, the domain CA (`[tls] ca`), whose key only cards of
//! the domain hold: a certificate that does not chain to it, or no
//! certificate at all, ends the connection in the handshake. Over an
//! established connection the bytes are the Unix socket's frame protocol,
//! served by the same handler ([`crate::server`]); the client certificate
//! takes the place of the peer-credential check.
//!
//! Two kinds of certificate are issued under the domain CA (`mesign-hsm
//! domain tls-cert`): a **box** certificate (extended key usage serverAuth
//! and clientAuth) for a daemon, and a **client** certificate (clientAuth
//! only, `--client`) for a signing server. Only a box may send replication
//! requests.
//!
//! The handshake ([`handshake`]) runs before the connection counts
//! against `max_connections`, under a limit of its own (`[tls]
//! handshake_limit`) and a deadline for the whole of it
//! ([`HANDSHAKE_DEADLINE`]), so that connections that never finish one
//! cannot keep local clients out.

use std::io::{BufReader, BufWriter, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::digest;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig, ServerConnection, StreamOwned};
use x509_cert::der::asn1::ObjectIdentifier;
use x509_cert::der::Decode;

use crate::config::{Limits, TlsConfig};
use crate::hsm::Hsm;
use crate::server::{self, ReadLimit, ReplicaService, TimedSocket};

/// id-ce-extKeyUsage.
const EXTENDED_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
/// id-kp-serverAuth: present in box certificates, absent from clients'.
const SERVER_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.1");

/// Why the TLS settings could not be loaded.
#[derive(Debug)]
pub enum TlsError {
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// The file holds no PEM item of the kind needed.
    Pem {
        path: std::path::PathBuf,
        what: &'static str,
    },
    /// The private key file can be read by others than its owner.
    KeyPermissions {
        path: std::path::PathBuf,
        mode: u32,
    },
    Rustls(rustls::Error),
    Verifier(rustls::server::VerifierBuilderError),
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsError::Read { path, source } => {
                write!(f, "cannot read {}: {source}", path.display())
            }
            TlsError::Pem { path, what } => write!(f, "{}: no {what} in it", path.display()),
            TlsError::KeyPermissions { path, mode } => write!(
                f,
                "{}: a private key must be readable by its owner only (mode {mode:o}; chmod 600)",
                path.display()
            ),
            TlsError::Rustls(e) => write!(f, "{e}"),
            TlsError::Verifier(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for TlsError {}

/// The loaded `[tls]` settings.
pub struct Tls {
    pub server: Arc<ServerConfig>,
    /// For replication: this box's certificate towards its peers.
    pub client: Arc<ClientConfig>,
}

impl Tls {
    /// Reads the certificate, key and CA named in `config`.
    pub fn load(config: &TlsConfig) -> Result<Tls, TlsError> {
        let chain = read_certificates(&config.cert)?;
        let roots = {
            let mut roots = RootCertStore::empty();
            for ca in read_certificates(&config.ca)? {
                roots.add(ca).map_err(TlsError::Rustls)?;
            }
            Arc::new(roots)
        };
        let key = read_key(&config.key)?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(TlsError::Verifier)?;
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(TlsError::Rustls)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(TlsError::Rustls)?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(TlsError::Rustls)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(TlsError::Rustls)?;
        Ok(Tls {
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.into(),
        source,
    })
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.into(),
            what: "CERTIFICATE",
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let mode = std::fs::metadata(path)
        .map_err(|source| TlsError::Read {
            path: path.into(),
            source,
        })?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(TlsError::KeyPermissions {
            path: path.into(),
            mode: mode & 0o777,
        });
    }
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| TlsError::Pem {
        path: path.into(),
        what: "PRIVATE KEY",
    })
}

/// What a verified client certificate says its holder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerKind {
    /// Another daemon of the domain: may replicate.
    Box,
    /// A signing server: PKCS#11 requests only.
    Client,
}

/// A box certificate carries serverAuth in its extended key usage; a
/// client certificate does not (and cannot act as a box's listener).
pub fn peer_kind(cert: &[u8]) -> PeerKind {
    let Ok(cert) = x509_cert::Certificate::from_der(cert) else {
        return PeerKind::Client;
    };
    let server_auth = cert
        .tbs_certificate
        .extensions
        .iter()
        .flatten()
        .filter(|e| e.extn_id == EXTENDED_KEY_USAGE)
        .filter_map(|e| {
            x509_cert::ext::pkix::ExtendedKeyUsage::from_der(e.extn_value.as_bytes()).ok()
        })
        .any(|usage| usage.0.contains(&SERVER_AUTH));
    if server_auth {
        PeerKind::Box
    } else {
        PeerKind::Client
    }
}

/// The process id under which a TLS client's applications are known: it
/// has no real one, so one is made from its certificate (negative, so it
/// never meets a local process's). Together with the random application
/// number of its Hello it names the application, as a pid does locally.
pub fn pid_of(cert: &[u8]) -> i32 {
    let d = digest::digest(&digest::SHA256, cert);
    let bits = u32::from_be_bytes([d.as_ref()[0], d.as_ref()[1], d.as_ref()[2], d.as_ref()[3]]);
    (bits | 0x8000_0000) as i32
}

/// One TLS stream shared by the connection's buffered reader and writer,
/// which take turns on its one thread.
struct Shared(
    std::rc::Rc<std::cell::RefCell<StreamOwned<ServerConnection, TimedSocket<TcpStream>>>>,
);

impl Read for Shared {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().read(buf)
    }
}

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.borrow_mut().flush()
    }
}

/// The longest a TLS handshake may take in all, however the peer spaces
/// its bytes: an unverified connection holds one of the few handshake
/// places ([`crate::config::TlsConfig::handshake_limit`]) only this long.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);

/// A connection whose handshake finished with a certificate under the
/// domain CA.
pub struct Verified {
    connection: ServerConnection,
    tcp: TcpStream,
    cert: Vec<u8>,
    remote: String,
}

/// The handshake of one accepted TCP connection, within `deadline` in
/// all: `None` for any peer without a certificate under the domain CA,
/// or one too slow.
pub fn handshake(
    tcp: TcpStream,
    config: Arc<ServerConfig>,
    deadline: Duration,
) -> Option<Verified> {
    let remote = tcp.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let _ = tcp.set_nodelay(true);
    let mut connection = match ServerConnection::new(config) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot start a TLS session");
            return None;
        }
    };
    let mut tcp = tcp;
    let ends = Instant::now() + deadline;
    // By hand rather than `complete_io`, which reads on until the
    // handshake ends: every read and write here waits at most for what is
    // left of the deadline.
    let done = loop {
        let left = ends.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break Err("the handshake took too long".to_string());
        }
        if tcp.set_read_timeout(Some(left)).is_err() || tcp.set_write_timeout(Some(left)).is_err() {
            break Err("cannot set timeouts".into());
        }
        if connection.wants_write() {
            if let Err(e) = connection.write_tls(&mut tcp) {
                break Err(e.to_string());
            }
            continue;
        }
        if !connection.is_handshaking() {
            break Ok(());
        }
        match connection.read_tls(&mut tcp) {
            Ok(0) => break Err("closed during the handshake".into()),
            Ok(_) => {}
            Err(e) => break Err(e.to_string()),
        }
        if let Err(e) = connection.process_new_packets() {
            // Tell the peer why (best effort), then close.
            let _ = connection.write_tls(&mut tcp);
            break Err(e.to_string());
        }
    };
    if let Err(e) = done {
        tracing::warn!(%remote, error = %e, "TLS handshake refused");
        return None;
    }
    let cert = connection
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())?;
    Some(Verified {
        connection,
        tcp,
        cert,
        remote,
    })
}

/// Serves a verified connection: frames as on the Unix socket.
/// Replication requests are served only for box certificates, and only
/// when this daemon replicates (`replica`).
pub fn serve_verified(
    hsm: Arc<Hsm>,
    verified: Verified,
    replica: Option<&dyn ReplicaService>,
    limits: Limits,
) {
    let Verified {
        connection,
        tcp,
        cert,
        remote,
    } = verified;
    if tcp.set_write_timeout(limits.write_timeout).is_err() {
        return;
    }
    let kind = peer_kind(&cert);
    let pid = pid_of(&cert);
    tracing::debug!(%remote, ?kind, pid, "TLS connection");
    let replica = replica.filter(|_| kind == PeerKind::Box);
    // As on the Unix socket: Hello within the hello timeout in all, then
    // each wait at most the idle timeout.
    let limit = ReadLimit::for_hello(&limits);
    let stream = StreamOwned::new(connection, TimedSocket::new(tcp, limit.clone()));
    let shared = std::rc::Rc::new(std::cell::RefCell::new(stream));
    let reader = BufReader::with_capacity(16 * 1024, Shared(shared.clone()));
    let writer = BufWriter::with_capacity(16 * 1024, Shared(shared));
    let greeted = || {
        limit.set(ReadLimit::EachWait(limits.idle_timeout));
        true
    };
    server::serve_stream(&hsm, reader, writer, pid, greeted, replica);
    tracing::debug!(%remote, "TLS connection closed");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("box.key");
        std::fs::write(&path, "no PEM here\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            read_key(&path),
            Err(TlsError::KeyPermissions { mode: 0o640, .. })
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(read_key(&path), Err(TlsError::Pem { .. })));
        assert!(matches!(
            read_certificates(&path),
            Err(TlsError::Pem { .. })
        ));
    }

    /// A peer that sends a byte now and then never finishes: the deadline
    /// is for the whole handshake, not for each read.
    #[test]
    fn a_trickled_handshake_ends_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let made = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:P-256", "-nodes", "-keyout", "k.pem"])
            .args(["-out", "c.pem", "-days", "1", "-subj", "/CN=t"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(made.status.success());
        let chain = read_certificates(&dir.path().join("c.pem")).unwrap();
        let key = PrivateKeyDer::from_pem_file(dir.path().join("k.pem")).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let trickler = std::thread::spawn(move || {
            let mut tcp = TcpStream::connect(address).unwrap();
            // A handshake record announcing 16 KiB, then a byte every 50 ms.
            let _ = tcp.write_all(&[0x16, 0x03, 0x01, 0x40, 0x00]);
            let ends = Instant::now() + Duration::from_secs(5);
            while Instant::now() < ends && tcp.write_all(&[0]).is_ok() {
                std::thread::park_timeout(Duration::from_millis(50));
            }
        });
        let (tcp, _) = listener.accept().unwrap();
        let started = Instant::now();
        let verified = handshake(tcp, Arc::new(config), Duration::from_millis(300));
        let took = started.elapsed();
        assert!(verified.is_none());
        assert!(took < Duration::from_secs(2), "took {took:?}");
        trickler.join().unwrap();
    }

    #[test]
    fn tls_pids_are_negative_and_stable() {
        assert!(pid_of(b"cert a") < 0);
        assert_eq!(pid_of(b"cert a"), pid_of(b"cert a"));
        assert_ne!(pid_of(b"cert a"), pid_of(b"cert b"));
        assert_eq!(peer_kind(b"not a certificate"), PeerKind::Client);
    }
}
