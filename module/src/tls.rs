//! Mutual TLS to a remote box: rustls with the aws-lc-rs provider, TLS 1.3
//! only, our client certificate presented, and the box's certificate
//! checked against the domain CA alone (no system roots: only a box of our
//! cloning domain may serve this module). Plain blocking I/O on the calling
//! thread, like the Unix socket: no runtime, no thread.

use std::io::ErrorKind;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::config::TlsFiles;
use crate::error::Error;

/// How long a connection attempt to a box may take before it counts as
/// down (a dead host would otherwise hold the calling thread for minutes).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// An established TLS connection to a box.
pub(crate) type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// The client side of the TLS contract, built once at C_Initialize.
pub(crate) struct TlsClient {
    config: Arc<ClientConfig>,
}

impl TlsClient {
    /// Reads the certificate chain, key and domain CA; any of them missing
    /// or unreadable is [`Error::BadConfig`].
    pub(crate) fn new(files: &TlsFiles) -> Result<Self, Error> {
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_file_iter(&files.ca).map_err(|_| Error::BadConfig)? {
            roots
                .add(ca.map_err(|_| Error::BadConfig)?)
                .map_err(|_| Error::BadConfig)?;
        }
        let chain = CertificateDer::pem_file_iter(&files.cert)
            .map_err(|_| Error::BadConfig)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| Error::BadConfig)?;
        let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|_| Error::BadConfig)?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|_| Error::BadConfig)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|_| Error::BadConfig)?;
        Ok(TlsClient {
            config: Arc::new(config),
        })
    }

    /// Connects and completes the handshake, so that a box that is down or
    /// refuses us is [`Error::DaemonUnreachable`] before any request goes
    /// out.
    pub(crate) fn connect(&self, host: &str, port: u16) -> Result<TlsStream, Error> {
        let name = ServerName::try_from(host.to_string()).map_err(|_| Error::BadConfig)?;
        let address = (host, port)
            .to_socket_addrs()
            .map_err(|_| Error::DaemonUnreachable)?
            .next()
            .ok_or(Error::DaemonUnreachable)?;
        let tcp = TcpStream::connect_timeout(&address, CONNECT_TIMEOUT)
            .map_err(|_| Error::DaemonUnreachable)?;
        // Requests are small and answered at once: no Nagle delay.
        tcp.set_nodelay(true)
            .map_err(|_| Error::DaemonUnreachable)?;
        let connection = ClientConnection::new(Arc::clone(&self.config), name)
            .map_err(|_| Error::DaemonUnreachable)?;
        let mut stream = StreamOwned::new(connection, tcp);
        while stream.conn.is_handshaking() {
            match stream.conn.complete_io(&mut stream.sock) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Err(Error::DaemonUnreachable),
            }
        }
        Ok(stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_certificate_files_are_a_configuration_error() {
        let files = TlsFiles {
            cert: "/nonexistent/client.crt".into(),
            key: "/nonexistent/client.key".into(),
            ca: "/nonexistent/domain-ca.crt".into(),
        };
        assert!(matches!(TlsClient::new(&files), Err(Error::BadConfig)));
    }
}
