//! Connections to the TLS port that never finish a handshake cannot keep
//! local clients out: they wait under `[tls] handshake_limit` (closed at
//! once beyond it) and take one of the `max_connections` places only once
//! their certificate is verified. Twenty silent TCP connections against a
//! daemon with `max_connections = 8` and `handshake_limit = 4`: the fifth
//! and later are closed, and a Unix-socket client still connects, logs in
//! and signs (RustCrypto verifies the signature). A client whose
//! certificate was verified must still say Hello within the hello timeout
//! in all, however it spaces its bytes. Ours only.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cryptoki_sys::*;
use mesign_proto::attr::bool_value;
use mesign_proto::{
    Attribute, AttributeValue, Reply, ReplyBody, ReplyResult, Request, RequestBody, SignScheme,
    PROTOCOL_VERSION,
};
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use softhsm_tests::binaries;
use softhsm_tests::daemon::Daemon;

const SO_PIN: &str = "so-secret-1";
const USER_PIN: &str = "user-secret-1";
const DEADLINE: Duration = Duration::from_secs(20);
const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a box certificate under it, as `domain tls-cert` makes them.
fn certificates(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "1",
        "-subj",
        "/CN=test CA",
    ]);
    openssl(&ca, dir);
    let mut request = vec!["req"];
    request.extend(ec);
    request.extend([
        "-keyout",
        "box.key",
        "-out",
        "box.csr",
        "-subj",
        "/CN=mesign-box:box",
    ]);
    openssl(&request, dir);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName = IP:127.0.0.1\nextendedKeyUsage = serverAuth, clientAuth\n",
    )
    .unwrap();
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "box.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "box.crt",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
        ],
        dir,
    );
    let key = dir.join("box.key");
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o600);
    std::fs::set_permissions(&key, mode).unwrap();
}

fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !done() {
        assert!(Instant::now() < end, "timed out: {what}");
        std::thread::yield_now();
        std::thread::park_timeout(Duration::from_millis(20));
    }
}

/// Whether the daemon closed `tcp` (it sends nothing before a ClientHello,
/// so any answer within the short wait is the close).
fn closed(tcp: &mut TcpStream) -> bool {
    tcp.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut byte = [0u8; 1];
    match tcp.read(&mut byte) {
        Ok(0) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(_) => false,
    }
}

struct Wire {
    stream: UnixStream,
    next: u64,
}

impl Wire {
    fn call(&mut self, body: RequestBody) -> Result<ReplyBody, u64> {
        let id = self.next;
        self.next += 1;
        let request = Request {
            version: PROTOCOL_VERSION,
            id,
            body,
        };
        let mut buf = Vec::new();
        mesign_proto::write_frame(&mut self.stream, &request, &mut buf).expect("send");
        mesign_proto::read_frame(&mut self.stream, &mut buf).expect("reply");
        let reply: Reply = mesign_proto::decode_frame_body(&buf).unwrap();
        assert_eq!(reply.id, id);
        match reply.result {
            ReplyResult::Ok(body) => Ok(body),
            ReplyResult::Err(rv) => Err(rv),
        }
    }
}

fn attr(ty: u64, value: Vec<u8>) -> Attribute {
    Attribute { ty, value }
}

/// A daemon in `dir` (with the certificates of [`certificates`]) that
/// listens for TLS on a free port, with `settings` at the top of its
/// configuration: the daemon, its TLS port and its Unix socket.
fn tls_daemon(dir: &Path, settings: &str, handshake_limit: u32) -> (Daemon, u16, PathBuf) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.join("hsmd.toml");
    std::fs::write(
        &config,
        format!(
            "{settings}\n[tls]\nlisten = \"127.0.0.1:{port}\"\ncert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\nhandshake_limit = {handshake_limit}\n",
            dir.join("box.crt").display(),
            dir.join("box.key").display(),
            dir.join("ca.crt").display(),
        ),
    )
    .unwrap();
    let socket = dir.join("hsmd.sock");
    let daemon = Daemon::start_with_args(
        &dir.join("state"),
        &socket,
        &dir.join("hsmd.log"),
        &[],
        &["--config".as_ref(), config.as_os_str()],
    );
    eventually("the TLS listener accepts", || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (daemon, port, socket)
}

#[test]
fn silent_tls_connections_do_not_keep_local_clients_out() {
    binaries::require("mesign-hsm");
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    certificates(dir);
    let (daemon, port, socket) = tls_daemon(dir, "max_connections = 8\n", 4);
    let init = Command::new(binaries::profile_dir().join("mesign-hsm"))
        .args(["token", "init", "--label", "limits"])
        .env("MESIGN_HSM_SOCKET", &socket)
        .env("MESIGN_HSM_SO_PIN", SO_PIN)
        .env("MESIGN_HSM_PIN", USER_PIN)
        .env_remove("MESIGN_HSM_NEW_PIN")
        .output()
        .unwrap();
    assert!(init.status.success(), "{init:?}");

    // Twenty silent connections: four wait in their handshake, the rest
    // are closed at once.
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(("127.0.0.1", port)).unwrap());
    }
    eventually("connections beyond the handshake limit are closed", || {
        silent.last_mut().is_some_and(closed)
    });
    assert!(
        !closed(&mut silent[0]),
        "the first ones wait in their handshake"
    );
    assert!(daemon.log_text().contains("handshake limit reached"));

    // The Unix socket still serves: log in, make a key, sign.
    let mut wire = Wire {
        stream: UnixStream::connect(&socket).unwrap(),
        next: 1,
    };
    wire.stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert!(matches!(
        wire.call(RequestBody::Hello { app: 0x1157 }),
        Ok(ReplyBody::Hello { .. })
    ));
    let flags = CKF_SERIAL_SESSION | CKF_RW_SESSION;
    let Ok(ReplyBody::Session(session)) = wire.call(RequestBody::OpenSession { slot: 0, flags })
    else {
        panic!("no session")
    };
    wire.call(RequestBody::Login {
        session,
        user_type: CKU_USER,
        pin: USER_PIN.as_bytes().to_vec(),
    })
    .unwrap();
    let generate = RequestBody::GenerateKeyPair {
        session,
        mechanism: CKM_EC_KEY_PAIR_GEN,
        public_template: vec![attr(CKA_EC_PARAMS, P256_OID.to_vec())],
        private_template: vec![attr(CKA_SIGN, bool_value(true))],
    };
    let Ok(ReplyBody::KeyPair { public, private }) = wire.call(generate) else {
        panic!("key generation: {}", daemon.log_text())
    };
    let Ok(ReplyBody::Attributes(values)) = wire.call(RequestBody::GetAttributes {
        session,
        object: public,
        types: vec![CKA_EC_POINT],
    }) else {
        panic!("public point")
    };
    let [AttributeValue::Value(point)] = &values[..] else {
        panic!("{values:?}")
    };
    let digest = softhsm_tests::verify::sha256(b"signed while the TLS port is flooded");
    let Ok(ReplyBody::Bytes(signature)) = wire.call(RequestBody::Sign {
        session,
        key: private,
        mechanism: CKM_ECDSA,
        scheme: SignScheme::Ecdsa,
        input: digest.clone(),
    }) else {
        panic!("signing")
    };
    let point = softhsm_tests::verify::ec_point_from_attribute(point).unwrap();
    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).unwrap();
    let signature = p256::ecdsa::Signature::from_slice(&signature).unwrap();
    key.verify_prehash(&digest, &signature)
        .expect("the signature verifies");
    drop(silent);
    assert!(daemon.stop().success());
}

/// A client whose certificate was verified must still say Hello within the
/// hello timeout in all: one that sends its first frame a byte at a time,
/// each TLS record well within the timeout, is closed once the timeout has
/// passed since its handshake.
#[test]
fn a_verified_tls_client_dribbling_its_hello_is_closed_at_the_hello_timeout() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    certificates(dir);
    let (daemon, port, _) = tls_daemon(dir, "hello_timeout_secs = 1\n", 4);
    let mut tls = tls_client(dir, port);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).expect("handshake");
    }
    let verified = Instant::now();
    // A length prefix announcing a large frame, then its body a byte at a
    // time, each in a TLS record of its own: the frame never completes.
    let send = |tls: &mut rustls::StreamOwned<_, TcpStream>, bytes: &[u8]| {
        tls.write_all(bytes).and_then(|()| tls.flush()).is_ok()
    };
    assert!(send(&mut tls, &[0, 0, 1, 0]));
    loop {
        if !send(&mut tls, &[0]) || tls_closed(&mut tls, Duration::from_millis(300)) {
            break;
        }
        assert!(
            verified.elapsed() < Duration::from_secs(5),
            "a dribbling TLS client was kept past the hello timeout"
        );
    }
    assert!(
        verified.elapsed() >= Duration::from_millis(900),
        "closed before the hello timeout, after {:?}",
        verified.elapsed()
    );
    assert!(daemon.stop().success());
}

/// A TLS client of the daemon in `dir` with the box certificate.
fn tls_client(dir: &Path, port: u16) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(dir.join("ca.crt")).unwrap())
        .unwrap();
    let chain = vec![CertificateDer::from_pem_file(dir.join("box.crt")).unwrap()];
    let key = PrivateKeyDer::from_pem_file(dir.join("box.key")).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let connection = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(DEADLINE)).unwrap();
    rustls::StreamOwned::new(connection, tcp)
}

/// Whether the daemon closed the TLS connection within `wait` (it sends
/// nothing before a whole request, so any end of the stream is the close).
fn tls_closed(
    tls: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    wait: Duration,
) -> bool {
    tls.sock.set_read_timeout(Some(wait)).unwrap();
    let mut byte = [0u8; 1];
    match tls.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => panic!("the daemon answered an unfinished frame"),
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}
