//! End-to-end tests of the real `mesign-hsmd` binary on the emulated card,
//! speaking mesign-proto frames directly.
//!
//! The card emulator `mesign-card-emu` must have been built into the same
//! target directory first (`cargo build --workspace`); the tests fail with
//! a message saying so if it is missing.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cryptoki_sys::*;
use mesign_proto::attr::{bool_value, ulong_value};
use mesign_proto::*;
use sha2::Digest;

const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const SO_PIN: &[u8] = b"so-secret";
const USER_PIN: &[u8] = b"1234";

struct Daemon {
    child: Child,
    socket: PathBuf,
}

fn emulator_present() -> PathBuf {
    let daemon = PathBuf::from(env!("CARGO_BIN_EXE_mesign-hsmd"));
    let emu = daemon.with_file_name("mesign-card-emu");
    assert!(
        emu.exists(),
        "{} is missing: run `cargo build --workspace` before these tests",
        emu.display()
    );
    emu
}

impl Daemon {
    fn start(dir: &Path) -> Daemon {
        Daemon::start_with(dir, "")
    }

    /// Starts with `extra` appended to the test configuration.
    fn start_with(dir: &Path, extra: &str) -> Daemon {
        emulator_present();
        let config = dir.join("hsmd.toml");
        std::fs::write(&config, format!("max_pin_attempts = 3\n{extra}")).unwrap();
        let socket = dir.join("hsmd.sock");
        let child = Command::new(env!("CARGO_BIN_EXE_mesign-hsmd"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--socket")
            .arg(&socket)
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start mesign-hsmd");
        let mut d = Daemon { child, socket };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if UnixStream::connect(&d.socket).is_ok() {
                return d;
            }
            if let Some(status) = d.child.try_wait().unwrap() {
                panic!("mesign-hsmd exited during start-up: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "mesign-hsmd did not become ready"
            );
            std::thread::yield_now();
        }
    }

    fn client(&self, app: u64) -> Client {
        let mut c = Client {
            stream: UnixStream::connect(&self.socket).unwrap(),
            next_id: 1,
            buf: Vec::new(),
        };
        assert!(matches!(
            c.call(RequestBody::Hello { app }),
            ReplyResult::Ok(ReplyBody::Hello { .. })
        ));
        c
    }

    /// Sends SIGTERM and waits for the exit status.
    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "mesign-hsmd did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Client {
    stream: UnixStream,
    next_id: u64,
    buf: Vec<u8>,
}

impl Client {
    fn call(&mut self, body: RequestBody) -> ReplyResult {
        let id = self.next_id;
        self.next_id += 1;
        let request = Request {
            version: PROTOCOL_VERSION,
            id,
            body,
        };
        write_frame(&mut self.stream, &request, &mut self.buf).unwrap();
        let mut body = Vec::new();
        read_frame(&mut self.stream, &mut body).expect("a reply");
        let reply: Reply = decode_frame_body(&body).unwrap();
        assert_eq!(reply.id, id);
        reply.result
    }

    fn ok(&mut self, body: RequestBody) -> ReplyBody {
        match self.call(body.clone()) {
            ReplyResult::Ok(b) => b,
            ReplyResult::Err(rv) => panic!("{body:?} failed with {rv:#x}"),
        }
    }

    fn err(&mut self, body: RequestBody) -> u64 {
        match self.call(body.clone()) {
            ReplyResult::Err(rv) => rv,
            ReplyResult::Ok(b) => panic!("{body:?} succeeded: {b:?}"),
        }
    }

    fn open_session(&mut self, rw: bool) -> u64 {
        let flags = CKF_SERIAL_SESSION | if rw { CKF_RW_SESSION } else { 0 };
        match self.ok(RequestBody::OpenSession { slot: 0, flags }) {
            ReplyBody::Session(s) => s,
            other => panic!("{other:?}"),
        }
    }

    fn login(&mut self, session: u64, user_type: u64, pin: &[u8]) -> ReplyResult {
        self.call(RequestBody::Login {
            session,
            user_type,
            pin: pin.to_vec(),
        })
    }

    fn attribute(&mut self, session: u64, object: u64, ty: u64) -> AttributeValue {
        match self.ok(RequestBody::GetAttributes {
            session,
            object,
            types: vec![ty],
        }) {
            ReplyBody::Attributes(mut v) => v.remove(0),
            other => panic!("{other:?}"),
        }
    }

    fn value(&mut self, session: u64, object: u64, ty: u64) -> Vec<u8> {
        match self.attribute(session, object, ty) {
            AttributeValue::Value(v) => v,
            other => panic!("attribute {ty:#x}: {other:?}"),
        }
    }

    fn token_flags(&mut self) -> u64 {
        match self.ok(RequestBody::TokenInfo { slot: 0 }) {
            ReplyBody::TokenInfo(t) => t.flags,
            other => panic!("{other:?}"),
        }
    }

    fn session_state(&mut self, session: u64) -> u64 {
        match self.ok(RequestBody::SessionInfo { session }) {
            ReplyBody::SessionInfo(i) => i.state,
            other => panic!("{other:?}"),
        }
    }

    fn sign(
        &mut self,
        session: u64,
        key: u64,
        mechanism: u64,
        scheme: SignScheme,
        input: &[u8],
    ) -> Vec<u8> {
        match self.ok(RequestBody::Sign {
            session,
            key,
            mechanism,
            scheme,
            input: input.to_vec(),
        }) {
            ReplyBody::Bytes(b) => b,
            other => panic!("{other:?}"),
        }
    }
}

fn a(ty: u64, value: Vec<u8>) -> Attribute {
    Attribute { ty, value }
}

/// Initializes the token and sets the user PIN; returns a logged-in user
/// session of `client`.
fn set_up_token(client: &mut Client) -> u64 {
    let label = b"test token".to_vec();
    client.ok(RequestBody::InitToken {
        slot: 0,
        so_pin: SO_PIN.to_vec(),
        label,
    });
    let session = client.open_session(true);
    assert!(matches!(
        client.login(session, CKU_SO, SO_PIN),
        ReplyResult::Ok(_)
    ));
    assert_eq!(client.session_state(session), CKS_RW_SO_FUNCTIONS);
    client.ok(RequestBody::InitPin {
        session,
        pin: USER_PIN.to_vec(),
    });
    client.ok(RequestBody::Logout { session });
    assert!(matches!(
        client.login(session, CKU_USER, USER_PIN),
        ReplyResult::Ok(_)
    ));
    assert_eq!(client.session_state(session), CKS_RW_USER_FUNCTIONS);
    session
}

fn generate(
    client: &mut Client,
    session: u64,
    mechanism: u64,
    public: Vec<Attribute>,
    id: &[u8],
) -> (u64, u64) {
    let mut public = public;
    public.push(a(CKA_TOKEN, bool_value(true)));
    public.push(a(CKA_ID, id.to_vec()));
    let private = vec![
        a(CKA_TOKEN, bool_value(true)),
        a(CKA_ID, id.to_vec()),
        a(CKA_SIGN, bool_value(true)),
    ];
    match client.ok(RequestBody::GenerateKeyPair {
        session,
        mechanism,
        public_template: public,
        private_template: private,
    }) {
        ReplyBody::KeyPair { public, private } => (public, private),
        other => panic!("{other:?}"),
    }
}

fn verify_p256(point_der: &[u8], digest: &[u8], signature: &[u8]) {
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    assert_eq!(
        &point_der[..2],
        &[0x04, 65],
        "CKA_EC_POINT is a DER OCTET STRING"
    );
    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point_der[2..]).unwrap();
    let sig = p256::ecdsa::Signature::from_slice(signature).unwrap();
    key.verify_prehash(digest, &sig)
        .expect("ECDSA signature verifies");
}

fn verify_rsa(modulus: &[u8], exponent: &[u8], digest: &[u8], signature: &[u8]) {
    let key = rsa::RsaPublicKey::new(
        rsa::BigUint::from_bytes_be(modulus),
        rsa::BigUint::from_bytes_be(exponent),
    )
    .unwrap();
    key.verify(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), digest, signature)
        .expect("RSA signature verifies");
}

fn find(client: &mut Client, session: u64, template: Vec<Attribute>) -> Vec<u64> {
    match client.ok(RequestBody::FindObjects { session, template }) {
        ReplyBody::Objects(v) => v,
        other => panic!("{other:?}"),
    }
}

#[test]
fn keys_sign_verifiably_survive_restart_and_never_reach_the_disk_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path());
    let mut c = daemon.client(1);
    let session = set_up_token(&mut c);

    let (ec_pub, ec_priv) = generate(
        &mut c,
        session,
        CKM_EC_KEY_PAIR_GEN,
        vec![a(CKA_EC_PARAMS, P256_OID.to_vec())],
        b"ec",
    );
    let (rsa_pub, rsa_priv) = generate(
        &mut c,
        session,
        CKM_RSA_PKCS_KEY_PAIR_GEN,
        vec![a(CKA_MODULUS_BITS, ulong_value(2048))],
        b"rsa",
    );

    let digest = sha2::Sha256::digest(b"a document to sign").to_vec();
    let point = c.value(session, ec_pub, CKA_EC_POINT);
    assert_eq!(c.value(session, ec_priv, CKA_EC_POINT), point);
    let sig = c.sign(
        session,
        ec_priv,
        CKM_ECDSA_SHA256,
        SignScheme::Ecdsa,
        &digest,
    );
    verify_p256(&point, &digest, &sig);

    let modulus = c.value(session, rsa_pub, CKA_MODULUS);
    let exponent = c.value(session, rsa_pub, CKA_PUBLIC_EXPONENT);
    assert_eq!(
        c.value(session, rsa_pub, CKA_MODULUS_BITS),
        ulong_value(2048)
    );
    let sig = c.sign(
        session,
        rsa_priv,
        CKM_SHA256_RSA_PKCS,
        SignScheme::RsaPkcs1(HashAlg::Sha256),
        &digest,
    );
    verify_rsa(&modulus, &exponent, &digest, &sig);

    assert_eq!(
        c.attribute(session, ec_priv, CKA_VALUE),
        AttributeValue::Sensitive
    );
    assert_eq!(
        c.attribute(session, rsa_priv, CKA_PRIVATE_EXPONENT),
        AttributeValue::Sensitive
    );
    assert_eq!(c.value(session, ec_priv, CKA_LOCAL), bool_value(true));
    assert_eq!(
        c.value(session, ec_priv, CKA_NEVER_EXTRACTABLE),
        bool_value(true)
    );
    // A public key cannot sign; a wrong scheme for the key type is refused.
    assert_eq!(
        c.err(RequestBody::Sign {
            session,
            key: ec_pub,
            mechanism: CKM_ECDSA,
            scheme: SignScheme::Ecdsa,
            input: digest.clone()
        }),
        CKR_KEY_FUNCTION_NOT_PERMITTED
    );
    assert_eq!(
        c.err(RequestBody::Sign {
            session,
            key: rsa_priv,
            mechanism: CKM_ECDSA,
            scheme: SignScheme::Ecdsa,
            input: digest.clone()
        }),
        CKR_KEY_TYPE_INCONSISTENT
    );

    // SIGTERM: exit 0, socket gone.
    drop(c);
    let socket = daemon.socket.clone();
    let status = daemon.terminate();
    assert!(status.success(), "{status}");
    assert!(!socket.exists(), "the socket file is removed on shutdown");

    // Restart: the token keys are still there and still sign.
    let daemon = Daemon::start(dir.path());
    let mut c = daemon.client(2);
    let session = c.open_session(false);
    assert!(
        find(
            &mut c,
            session,
            vec![a(CKA_CLASS, ulong_value(CKO_PRIVATE_KEY))]
        )
        .is_empty(),
        "private keys are hidden before login"
    );
    assert!(matches!(
        c.login(session, CKU_USER, USER_PIN),
        ReplyResult::Ok(_)
    ));
    let found = find(
        &mut c,
        session,
        vec![
            a(CKA_CLASS, ulong_value(CKO_PRIVATE_KEY)),
            a(CKA_ID, b"ec".to_vec()),
        ],
    );
    // Found again under the new login's handle: a private handle from
    // before the restart (hence before this login) is not valid any more.
    assert_eq!(found.len(), 1);
    let sig = c.sign(session, found[0], CKM_ECDSA, SignScheme::Ecdsa, &digest);
    verify_p256(&point, &digest, &sig);
    drop(c);
    drop(daemon);

    // The daemon never sees private keys; check no store file holds a
    // clear PKCS#8 P-256 key (a cheap canary, not a proof).
    let header = [0x30, 0x81, 0x87, 0x02, 0x01, 0x00, 0x30, 0x13];
    let mut files = vec![dir.path().to_path_buf()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else if let Ok(bytes) = std::fs::read(&path) {
            assert!(
                !bytes.windows(header.len()).any(|w| w == header),
                "{} holds a clear key",
                path.display()
            );
        }
    }
}

#[test]
fn login_is_per_application_and_pins_lock() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path());
    let mut c = daemon.client(7);
    let session = set_up_token(&mut c);
    let data = vec![
        a(CKA_CLASS, ulong_value(CKO_DATA)),
        a(CKA_PRIVATE, bool_value(true)),
        a(CKA_TOKEN, bool_value(true)),
        a(CKA_VALUE, b"secret note".to_vec()),
    ];
    let note = match c.ok(RequestBody::CreateObject {
        session,
        template: data,
    }) {
        ReplyBody::Object(h) => h,
        other => panic!("{other:?}"),
    };

    // A second connection of the same application shares the login.
    let mut same = daemon.client(7);
    assert_eq!(same.session_state(session), CKS_RW_USER_FUNCTIONS);
    assert_eq!(same.value(session, note, CKA_VALUE), b"secret note");

    // Another application neither sees the session nor the private object.
    let mut other = daemon.client(8);
    assert_eq!(
        other.err(RequestBody::SessionInfo { session }),
        CKR_SESSION_HANDLE_INVALID
    );
    let theirs = other.open_session(false);
    assert_eq!(other.session_state(theirs), CKS_RO_PUBLIC_SESSION);
    assert_eq!(
        other.err(RequestBody::GetAttributes {
            session: theirs,
            object: note,
            types: vec![CKA_VALUE]
        }),
        CKR_OBJECT_HANDLE_INVALID
    );
    assert_eq!(
        other.err(RequestBody::Login {
            session: theirs,
            user_type: CKU_SO,
            pin: SO_PIN.to_vec()
        }),
        CKR_SESSION_READ_ONLY_EXISTS
    );

    // A malformed frame closes only that connection.
    let mut raw = UnixStream::connect(&daemon.socket).unwrap();
    raw.write_all(&[0, 0, 0, 3, 0xff, 0x00, 0x13]).unwrap();
    let mut body = Vec::new();
    if read_frame(&mut raw, &mut body).is_ok() {
        let reply: Reply = decode_frame_body(&body).unwrap();
        assert_eq!(reply.result, ReplyResult::Err(CKR_DEVICE_ERROR));
    }
    assert!(
        read_frame(&mut raw, &mut body).is_err(),
        "the daemon closed the bad connection"
    );
    assert_eq!(same.session_state(session), CKS_RW_USER_FUNCTIONS);

    // Closing a connection that is an application's last ends its sessions.
    let before = match other.ok(RequestBody::TokenInfo { slot: 0 }) {
        ReplyBody::TokenInfo(t) => t.session_count,
        b => panic!("{b:?}"),
    };
    drop(c);
    drop(same);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = match other.ok(RequestBody::TokenInfo { slot: 0 }) {
            ReplyBody::TokenInfo(t) => t.session_count,
            b => panic!("{b:?}"),
        };
        if now == before - 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sessions of a closed application stay open ({now})"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    // Wrong PINs count, lock at max_pin_attempts (3), and stay locked.
    assert_eq!(
        other.err(RequestBody::Login {
            session: theirs,
            user_type: CKU_USER,
            pin: b"0000".to_vec()
        }),
        CKR_PIN_INCORRECT
    );
    assert_ne!(other.token_flags() & CKF_USER_PIN_COUNT_LOW, 0);
    assert_eq!(
        other.err(RequestBody::Login {
            session: theirs,
            user_type: CKU_USER,
            pin: b"0000".to_vec()
        }),
        CKR_PIN_INCORRECT
    );
    assert_ne!(other.token_flags() & CKF_USER_PIN_FINAL_TRY, 0);
    assert_eq!(
        other.err(RequestBody::Login {
            session: theirs,
            user_type: CKU_USER,
            pin: b"0000".to_vec()
        }),
        CKR_PIN_INCORRECT
    );
    assert_ne!(other.token_flags() & CKF_USER_PIN_LOCKED, 0);
    assert_eq!(
        other.err(RequestBody::Login {
            session: theirs,
            user_type: CKU_USER,
            pin: USER_PIN.to_vec()
        }),
        CKR_PIN_LOCKED
    );
    assert_eq!(
        other.err(RequestBody::Login {
            session: theirs,
            user_type: CKU_USER,
            pin: b"12".to_vec()
        }),
        CKR_PIN_LOCKED
    );
}

/// True once the daemon has closed `stream` (a read returns end of file or
/// an error), polled up to a deadline.
fn closed_by_daemon(stream: &mut UnixStream, within: Duration) -> bool {
    use std::io::Read;
    stream
        .set_read_timeout(Some(within))
        .expect("set a read timeout");
    let mut byte = [0u8; 1];
    !matches!(stream.read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
        || e.kind() == std::io::ErrorKind::TimedOut)
}

/// A greeted client, reconnecting while the daemon closes new connections
/// at once for want of a free place.
fn served_client(daemon: &Daemon, app: u64) -> Client {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut stream = UnixStream::connect(&daemon.socket).unwrap();
        if !closed_by_daemon(&mut stream, Duration::from_millis(100)) {
            stream.set_read_timeout(None).unwrap();
            let mut c = Client {
                stream,
                next_id: 1,
                buf: Vec::new(),
            };
            assert!(matches!(
                c.call(RequestBody::Hello { app }),
                ReplyResult::Ok(ReplyBody::Hello { .. })
            ));
            return c;
        }
        assert!(Instant::now() < deadline, "no place became free");
    }
}

#[test]
fn connection_limit_and_hello_timeout_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_with(dir.path(), "max_connections = 2\nhello_timeout_secs = 1\n");
    // The readiness probe's connection may still hold a place for a moment:
    // wait until two connections are served before counting on the limit.
    let mut first = served_client(&daemon, 1);
    let second = served_client(&daemon, 2);
    // The readiness probe's connection may still hold a place for a moment;
    // poll until a third connection is refused for the limit alone.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut third = UnixStream::connect(&daemon.socket).unwrap();
        if closed_by_daemon(&mut third, Duration::from_millis(300)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a third connection stayed open past max_connections = 2"
        );
    }
    // Served connections are unaffected, and a closed one frees its place.
    assert!(matches!(
        first.ok(RequestBody::Slots),
        ReplyBody::Slots(s) if s.len() == 1
    ));
    drop(second);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut again = loop {
        let mut c = UnixStream::connect(&daemon.socket).unwrap();
        // A silent connection is closed after the hello timeout, not at once.
        if !closed_by_daemon(&mut c, Duration::from_millis(300)) {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "the freed place was not given back"
        );
    };
    assert!(
        closed_by_daemon(&mut again, Duration::from_secs(5)),
        "a connection that never says Hello is closed after hello_timeout_secs"
    );
    assert!(matches!(first.ok(RequestBody::Slots), ReplyBody::Slots(_)));
}

/// The hello timeout bounds the whole wait for Hello: a client that sends
/// a byte now and then, each well within the timeout, is still closed once
/// the timeout has passed since it connected.
#[test]
fn a_client_dribbling_its_hello_is_closed_at_the_hello_timeout() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_with(dir.path(), "hello_timeout_secs = 1\n");
    let mut c = UnixStream::connect(&daemon.socket).unwrap();
    let connected = Instant::now();
    // A length prefix announcing a large frame, then its body a byte at a
    // time: the frame never completes.
    c.write_all(&[0, 0, 1, 0]).unwrap();
    loop {
        if c.write_all(&[0]).is_err() || closed_by_daemon(&mut c, Duration::from_millis(300)) {
            break;
        }
        assert!(
            connected.elapsed() < Duration::from_secs(5),
            "a dribbling client was kept past the hello timeout"
        );
    }
    assert!(
        connected.elapsed() >= Duration::from_millis(900),
        "closed before the hello timeout, after {:?}",
        connected.elapsed()
    );
}

/// SIGTERM stops the daemon even when its socket file was removed under it
/// (the accept loop is woken through the listening socket, not its path),
/// and a client served before keeps being served until then.
#[test]
fn sigterm_stops_the_daemon_after_its_socket_file_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_with(dir.path(), "");
    let mut client = daemon.client(1);
    std::fs::remove_file(&daemon.socket).unwrap();
    assert!(matches!(client.ok(RequestBody::Slots), ReplyBody::Slots(_)));
    let status = daemon.terminate();
    assert!(status.success(), "exit status {status}");
}

/// A client that sends requests and never reads the replies holds its
/// connection only until a reply has waited `write_timeout_secs`: then the
/// daemon closes it (its place and thread are free again).
#[test]
fn a_client_that_never_reads_is_closed_after_the_write_timeout() {
    use std::io::{ErrorKind, Write};
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_with(dir.path(), "write_timeout_secs = 1\n");
    let mut flooder = daemon.client(1);
    let mut frame = Vec::new();
    let request = Request {
        version: PROTOCOL_VERSION,
        id: 99,
        body: RequestBody::Slots,
    };
    mesign_proto::encode_frame(&request, &mut frame);
    // Send requests and read nothing: the replies fill the socket, the
    // daemon's write blocks and it stops reading, our own write blocks in
    // turn, and once a reply has waited the write timeout the daemon hangs
    // up, which fails our blocked write. Whole frames only, blocking: a
    // half-sent frame would leave the daemon waiting to read its rest.
    flooder
        .stream
        .set_write_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let started = Instant::now();
    let mut sent = 0usize;
    let closed = loop {
        match flooder.stream.write_all(&frame) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the daemon kept a client that never reads ({sent} requests sent)"
        );
    };
    assert!(
        matches!(
            closed.kind(),
            ErrorKind::BrokenPipe | ErrorKind::ConnectionReset
        ),
        "our write failed for another reason: {closed} ({sent} requests sent)"
    );
    // Everyone else is still served.
    let mut other = daemon.client(2);
    assert!(matches!(other.ok(RequestBody::Slots), ReplyBody::Slots(_)));
}
