//! Two boxes of one cloning domain keep their token objects in step over
//! mutual TLS, and nothing outside the domain gets in.
//!
//! Box A replicates in mode "both" (a change is acknowledged only once B
//! holds it), box B in mode "async". Certificates come from `mesign-hsm
//! domain tls-cert`, signed by the cards' domain CA; box C, in a domain of
//! its own, issues certificates no other box accepts. The test speaks the
//! wire protocol itself over TLS with a signing server's `--client`
//! certificate: a key pair generated on A signs on B (RustCrypto verifies
//! the signature with the public point read on A); a certificate created on
//! B appears on A with the same CKA_ID, label and CKA_UNIQUE_ID; a deletion
//! on A reaches B; with B down, A refuses a creation (CKR_DEVICE_ERROR, and
//! keeps nothing); with A down, B creates, and A catches up when it comes
//! back. Refused at the handshake: no client certificate, a self-signed
//! one, box C's. Replication requests from a client certificate or the
//! Unix socket are refused (CKR_FUNCTION_REJECTED). Ours only.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cryptoki_sys::*;
use mesign_proto::attr::{bool_value, ulong_value};
use mesign_proto::{
    Attribute, AttributeValue, Reply, ReplyBody, ReplyResult, Request, RequestBody, SignScheme,
    PROTOCOL_VERSION,
};
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use softhsm_tests::binaries;
use softhsm_tests::daemon::Daemon;

const SO_PIN: &str = "so-secret-1";
const USER_PIN: &str = "user-secret-1";
/// How long a replicated change may take to arrive.
const DEADLINE: Duration = Duration::from_secs(20);
const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// One box: its directory and socket; the daemon when it runs.
struct HsmBox {
    dir: PathBuf,
    daemon: Option<Daemon>,
    port: u16,
}

impl HsmBox {
    fn new(root: &Path, name: &str) -> HsmBox {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        HsmBox {
            dir,
            daemon: None,
            port: free_port(),
        }
    }

    fn start(&mut self, config: Option<&str>) {
        let mut args: Vec<std::ffi::OsString> = Vec::new();
        if let Some(text) = config {
            let path = self.dir.join("hsmd.toml");
            std::fs::write(&path, text).unwrap();
            args.push("--config".into());
            args.push(path.into());
        }
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        self.daemon = Some(Daemon::start_with_args(
            &self.dir.join("state"),
            &self.dir.join("hsmd.sock"),
            &self.dir.join("hsmd.log"),
            &[],
            &args,
        ));
    }

    fn stop(&mut self) {
        if let Some(d) = self.daemon.take() {
            assert!(d.stop().success());
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("hsmd.log")).unwrap_or_default()
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(binaries::profile_dir().join("mesign-hsm"))
            .args(args)
            .current_dir(&self.dir)
            .env("MESIGN_HSM_SOCKET", self.dir.join("hsmd.sock"))
            .env("MESIGN_HSM_SO_PIN", SO_PIN)
            .env("MESIGN_HSM_PIN", USER_PIN)
            .env_remove("MESIGN_HSM_NEW_PIN")
            .output()
            .expect("run mesign-hsm")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "mesign-hsm {args:?} failed:\n{}\n{}\ndaemon log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The `[tls]` and `[replication]` settings of this box.
    fn config(&self, peer: &HsmBox, mode: &str) -> String {
        let certs = self.dir.join("certs");
        let name = self.dir.file_name().unwrap().to_str().unwrap();
        format!(
            "[tls]\nlisten = \"127.0.0.1:{}\"\ncert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\n\n[replication]\npeers = [\"127.0.0.1:{}\"]\nmode = \"{mode}\"\n",
            self.port,
            certs.join(format!("{name}.crt")).display(),
            certs.join(format!("{name}.key")).display(),
            certs.join("domain-ca.crt").display(),
            peer.port
        )
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

/// A wire-protocol client: one request at a time.
struct Wire {
    stream: Box<dyn Stream>,
    next: u64,
}

/// A certificate and key to present, or none.
type Identity<'a> = Option<(&'a Path, &'a Path)>;

impl Wire {
    fn unix(socket: &Path) -> Wire {
        let mut wire = Wire {
            stream: Box::new(UnixStream::connect(socket).unwrap()),
            next: 1,
        };
        wire.hello().unwrap();
        wire
    }

    /// Connects over TLS (trusting only `ca`) and says Hello; `Err` when
    /// the handshake or the Hello fails.
    fn tls(port: u16, ca: &Path, identity: Identity) -> Result<Wire, String> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots);
        let config = match identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain: Vec<_> = CertificateDer::pem_file_iter(cert)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect();
                let key = PrivateKeyDer::from_pem_file(key).unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
        };
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut wire = Wire {
            stream: Box::new(rustls::StreamOwned::new(connection, tcp)),
            next: 1,
        };
        wire.hello()?;
        Ok(wire)
    }

    fn hello(&mut self) -> Result<(), String> {
        match self.send(RequestBody::Hello { app: 0x5eed })? {
            ReplyResult::Ok(ReplyBody::Hello { .. }) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    }

    fn send(&mut self, body: RequestBody) -> Result<ReplyResult, String> {
        let id = self.next;
        self.next += 1;
        let request = Request {
            version: PROTOCOL_VERSION,
            id,
            body,
        };
        let mut buf = Vec::new();
        mesign_proto::write_frame(&mut self.stream, &request, &mut buf)
            .map_err(|e| e.to_string())?;
        self.stream.flush().map_err(|e| e.to_string())?;
        mesign_proto::read_frame(&mut self.stream, &mut buf).map_err(|e| e.to_string())?;
        let reply: Reply = mesign_proto::decode_frame_body(&buf).map_err(|e| e.to_string())?;
        assert_eq!(reply.id, id);
        Ok(reply.result)
    }

    /// The reply, or the CK_RV of a refusal.
    fn call(&mut self, body: RequestBody) -> Result<ReplyBody, u64> {
        match self.send(body).expect("connection") {
            ReplyResult::Ok(body) => Ok(body),
            ReplyResult::Err(rv) => Err(rv),
        }
    }

    /// An R/W session logged in as the user.
    fn user_session(&mut self) -> u64 {
        let flags = CKF_SERIAL_SESSION | CKF_RW_SESSION;
        let Ok(ReplyBody::Session(session)) =
            self.call(RequestBody::OpenSession { slot: 0, flags })
        else {
            panic!("no session")
        };
        let login = RequestBody::Login {
            session,
            user_type: CKU_USER,
            pin: USER_PIN.as_bytes().to_vec(),
        };
        match self.call(login) {
            Ok(_) | Err(CKR_USER_ALREADY_LOGGED_IN) => session,
            Err(rv) => panic!("login: {rv:#x}"),
        }
    }

    fn find(&mut self, session: u64, template: Vec<Attribute>) -> Vec<u64> {
        match self.call(RequestBody::FindObjects { session, template }) {
            Ok(ReplyBody::Objects(found)) => found,
            other => panic!("find: {other:?}"),
        }
    }

    fn attribute(&mut self, session: u64, object: u64, ty: u64) -> Vec<u8> {
        let get = RequestBody::GetAttributes {
            session,
            object,
            types: vec![ty],
        };
        match self.call(get) {
            Ok(ReplyBody::Attributes(values)) => match &values[..] {
                [AttributeValue::Value(v)] => v.clone(),
                other => panic!("attribute {ty:#x}: {other:?}"),
            },
            other => panic!("attribute {ty:#x}: {other:?}"),
        }
    }
}

fn attr(ty: u64, value: Vec<u8>) -> Attribute {
    Attribute { ty, value }
}

fn labelled(class: u64, label: &str) -> Vec<Attribute> {
    vec![
        attr(CKA_CLASS, ulong_value(class)),
        attr(CKA_LABEL, label.as_bytes().to_vec()),
    ]
}

/// Polls `found` until it is true, failing after [`DEADLINE`].
fn eventually(what: &str, mut found: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !found() {
        assert!(Instant::now() < deadline, "{what} within {DEADLINE:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

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

fn public_key_pem(cert: &Path) -> Vec<u8> {
    Command::new("openssl")
        .args(["x509", "-noout", "-pubkey", "-in"])
        .arg(cert)
        .output()
        .unwrap()
        .stdout
}

#[test]
fn two_boxes_replicate_over_mutual_tls_and_nothing_else_gets_in() {
    binaries::require("mesign-hsm");
    let root = tempfile::tempdir().unwrap();
    let mut a = HsmBox::new(root.path(), "box-a");
    let mut b = HsmBox::new(root.path(), "box-b");
    let mut c = HsmBox::new(root.path(), "box-c");
    for x in [&mut a, &mut b, &mut c] {
        x.start(None);
        x.ok(&["token", "init", "--label", "repl"]);
    }

    // C, in no domain yet, has no CA to issue with.
    let c_certs = c.dir.join("certs");
    std::fs::create_dir_all(&c_certs).unwrap();
    let c_certs = c_certs.to_str().unwrap().to_string();
    let tls_cert = |name: &str, dir: &str| {
        vec![
            "domain".to_string(),
            "tls-cert".into(),
            "--name".into(),
            name.into(),
            "--out-dir".into(),
            dir.into(),
            "--ip".into(),
            "127.0.0.1".into(),
        ]
    };
    let args = tls_cert("box-c", &c_certs);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = c.run(&args);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("no cloning domain"), "{said}");

    // The domain: made on A, joined on B; C makes its own.
    let shares = root.path().join("shares");
    std::fs::create_dir_all(&shares).unwrap();
    let words: Vec<String> = (1..=2)
        .map(|i| {
            let p = root.path().join(format!("p{i}"));
            std::fs::write(&p, format!("custodian {i} words\n")).unwrap();
            p.to_str().unwrap().to_string()
        })
        .collect();
    let create = |x: &HsmBox, dir: &Path| {
        let created = x.ok(&[
            "--json",
            "domain",
            "create",
            "--shares",
            "2",
            "--threshold",
            "2",
            "--out-dir",
            dir.to_str().unwrap(),
            "--passphrase-file",
            &words[0],
            "--passphrase-file",
            &words[1],
        ]);
        let created: serde_json::Value = serde_json::from_str(&created).unwrap();
        created["shares"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let files = create(&a, &shares);
    b.ok(&[
        "domain",
        "join",
        &files[0],
        &files[1],
        "--passphrase-file",
        &words[0],
        "--passphrase-file",
        &words[1],
    ]);
    let c_shares = root.path().join("c-shares");
    std::fs::create_dir_all(&c_shares).unwrap();
    create(&c, &c_shares);

    // Certificates: each box's own; a signing server's from A.
    for (x, name) in [(&a, "box-a"), (&b, "box-b"), (&c, "box-c")] {
        let dir = x.dir.join("certs");
        std::fs::create_dir_all(&dir).unwrap();
        let args = tls_cert(name, dir.to_str().unwrap());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        x.ok(&args);
    }
    let client_dir = root.path().join("client");
    std::fs::create_dir_all(&client_dir).unwrap();
    a.ok(&[
        "domain",
        "tls-cert",
        "--name",
        "signer",
        "--client",
        "--out-dir",
        client_dir.to_str().unwrap(),
    ]);
    let key_mode = std::fs::metadata(client_dir.join("signer.key")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key_mode.permissions()) & 0o777,
        0o600
    );
    // Both cards derived the same CA; C's is another.
    let ca = a.dir.join("certs/domain-ca.crt");
    assert_eq!(
        public_key_pem(&ca),
        public_key_pem(&b.dir.join("certs/domain-ca.crt"))
    );
    assert_ne!(
        public_key_pem(&ca),
        public_key_pem(&c.dir.join("certs/domain-ca.crt"))
    );
    openssl(
        &[
            "verify",
            "-CAfile",
            ca.to_str().unwrap(),
            b.dir.join("certs/box-b.crt").to_str().unwrap(),
        ],
        root.path(),
    );
    let signer = (client_dir.join("signer.crt"), client_dir.join("signer.key"));
    let signer = Some((signer.0.as_path(), signer.1.as_path()));

    // Both daemons again, now with TLS and replication.
    let (a_config, b_config) = (a.config(&b, "both"), b.config(&a, "async"));
    a.stop();
    b.stop();
    a.start(Some(&a_config));
    b.start(Some(&b_config));
    let connect = |x: &HsmBox| {
        let mut wire = None;
        eventually("the TLS listener accepts", || {
            wire = Wire::tls(x.port, &ca, signer).ok();
            wire.is_some()
        });
        wire.unwrap()
    };
    let (mut on_a, mut on_b) = (connect(&a), connect(&b));
    let (sa, sb) = (on_a.user_session(), on_b.user_session());

    // A key pair generated on A ("both") is on B when the call returns,
    // with the same CKA_UNIQUE_ID, and signs there.
    let generate = RequestBody::GenerateKeyPair {
        session: sa,
        mechanism: CKM_EC_KEY_PAIR_GEN,
        public_template: vec![
            attr(CKA_TOKEN, bool_value(true)),
            attr(CKA_EC_PARAMS, P256_OID.to_vec()),
            attr(CKA_LABEL, b"repl-ec".to_vec()),
        ],
        private_template: vec![
            attr(CKA_TOKEN, bool_value(true)),
            attr(CKA_SIGN, bool_value(true)),
            attr(CKA_LABEL, b"repl-ec".to_vec()),
            attr(CKA_ID, vec![0x0a]),
        ],
    };
    let Ok(ReplyBody::KeyPair { public, private }) = on_a.call(generate) else {
        panic!("key generation on A: {}", a.log())
    };
    let point = on_a.attribute(sa, public, CKA_EC_POINT);
    let unique = on_a.attribute(sa, private, CKA_UNIQUE_ID);
    assert_eq!(unique.len(), 32, "16 random bytes, hex");
    assert_ne!(unique, on_a.attribute(sa, public, CKA_UNIQUE_ID));
    let on_b_key = on_b.find(sb, labelled(CKO_PRIVATE_KEY, "repl-ec"));
    assert_eq!(on_b_key.len(), 1, "replicated before acknowledged");
    assert_eq!(on_b.attribute(sb, on_b_key[0], CKA_UNIQUE_ID), unique);
    let by_unique = vec![attr(CKA_UNIQUE_ID, unique.clone())];
    assert_eq!(on_b.find(sb, by_unique.clone()), on_b_key);
    let digest = softhsm_tests::verify::sha256(b"signed on box B");
    let sign = RequestBody::Sign {
        session: sb,
        key: on_b_key[0],
        mechanism: CKM_ECDSA,
        scheme: SignScheme::Ecdsa,
        input: digest.clone(),
    };
    let Ok(ReplyBody::Bytes(signature)) = on_b.call(sign) else {
        panic!("signing on B")
    };
    let point = softhsm_tests::verify::ec_point_from_attribute(&point).unwrap();
    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).unwrap();
    let signature = p256::ecdsa::Signature::from_slice(&signature).unwrap();
    key.verify_prehash(&digest, &signature)
        .expect("B's signature verifies with A's public key");
    // A renamed key travels as a new domain blob bound to the new
    // attributes, which B's card rewraps: it still signs there.
    let rename_key = RequestBody::SetAttributes {
        session: sa,
        object: private,
        template: vec![attr(CKA_LABEL, b"repl-ec-renamed".to_vec())],
    };
    on_a.call(rename_key).unwrap();
    assert_eq!(
        on_b.attribute(sb, on_b_key[0], CKA_LABEL),
        b"repl-ec-renamed"
    );
    let sign = RequestBody::Sign {
        session: sb,
        key: on_b_key[0],
        mechanism: CKM_ECDSA,
        scheme: SignScheme::Ecdsa,
        input: digest.clone(),
    };
    let Ok(ReplyBody::Bytes(signature)) = on_b.call(sign) else {
        panic!("signing on B after the rename: {}", b.log())
    };
    let signature = p256::ecdsa::Signature::from_slice(&signature).unwrap();
    key.verify_prehash(&digest, &signature)
        .expect("the renamed key still signs on B");
    // The unique id is the token's: a template may not set it.
    let forged = RequestBody::CreateObject {
        session: sa,
        template: vec![
            attr(CKA_CLASS, ulong_value(CKO_DATA)),
            attr(CKA_UNIQUE_ID, b"mine".to_vec()),
        ],
    };
    assert_eq!(on_a.call(forged), Err(CKR_ATTRIBUTE_READ_ONLY));
    // A copy is a new object with an identity of its own; session objects
    // have one too (and stay on their box).
    let session_object = RequestBody::CreateObject {
        session: sa,
        template: vec![
            attr(CKA_CLASS, ulong_value(CKO_DATA)),
            attr(CKA_LABEL, b"session-only".to_vec()),
        ],
    };
    let Ok(ReplyBody::Object(original)) = on_a.call(session_object) else {
        panic!("session object")
    };
    let copy = RequestBody::CopyObject {
        session: sa,
        object: original,
        template: vec![attr(CKA_TOKEN, bool_value(true))],
    };
    let Ok(ReplyBody::Object(copied)) = on_a.call(copy) else {
        panic!("copy")
    };
    let original_unique = on_a.attribute(sa, original, CKA_UNIQUE_ID);
    let copied_unique = on_a.attribute(sa, copied, CKA_UNIQUE_ID);
    assert_eq!(original_unique.len(), 32);
    assert_ne!(original_unique, copied_unique);
    let on_b_copy = on_b.find(sb, vec![attr(CKA_UNIQUE_ID, copied_unique)]);
    assert_eq!(on_b_copy.len(), 1, "the token copy is on B");
    assert!(on_b
        .find(sb, vec![attr(CKA_UNIQUE_ID, original_unique)])
        .is_empty());
    // C_SetAttributeValue travels too.
    let rename = RequestBody::SetAttributes {
        session: sa,
        object: copied,
        template: vec![attr(CKA_LABEL, b"renamed".to_vec())],
    };
    on_a.call(rename).unwrap();
    assert_eq!(on_b.attribute(sb, on_b_copy[0], CKA_LABEL), b"renamed");

    // A certificate created on B ("async") reaches A.
    let certificate = RequestBody::CreateObject {
        session: sb,
        template: vec![
            attr(CKA_CLASS, ulong_value(CKO_CERTIFICATE)),
            attr(CKA_CERTIFICATE_TYPE, ulong_value(CKC_X_509)),
            attr(CKA_TOKEN, bool_value(true)),
            attr(CKA_LABEL, b"repl-cert".to_vec()),
            attr(CKA_ID, vec![0x0b]),
            attr(CKA_VALUE, softhsm_tests::TEST_CERTIFICATE.to_vec()),
        ],
    };
    let Ok(ReplyBody::Object(cert_b)) = on_b.call(certificate) else {
        panic!("certificate on B: {}", b.log())
    };
    let cert_unique = on_b.attribute(sb, cert_b, CKA_UNIQUE_ID);
    let mut cert_a = Vec::new();
    eventually("the certificate reaches A", || {
        cert_a = on_a.find(sa, labelled(CKO_CERTIFICATE, "repl-cert"));
        !cert_a.is_empty()
    });
    assert_eq!(on_a.attribute(sa, cert_a[0], CKA_UNIQUE_ID), cert_unique);
    assert_eq!(on_a.attribute(sa, cert_a[0], CKA_ID), [0x0b]);
    assert_eq!(
        on_a.attribute(sa, cert_a[0], CKA_VALUE),
        softhsm_tests::TEST_CERTIFICATE
    );

    // A deletion on A is on B when the call returns.
    let destroy = RequestBody::DestroyObject {
        session: sa,
        object: private,
    };
    on_a.call(destroy).unwrap();
    assert!(on_b.find(sb, by_unique).is_empty());

    // Replication requests: only from boxes.
    assert_eq!(
        on_a.call(RequestBody::ReplicaVersions { slot: 0 }),
        Err(CKR_FUNCTION_REJECTED)
    );
    let mut local = Wire::unix(&a.dir.join("hsmd.sock"));
    assert_eq!(
        local.call(RequestBody::ReplicaVersions { slot: 0 }),
        Err(CKR_FUNCTION_REJECTED)
    );

    // A box certificate alone (B's TLS key, say, copied off the box) makes
    // no change: without the tag of a card of the domain, a deletion and a
    // planted trusted wrapping key are refused and change nothing.
    let box_b = (b.dir.join("certs/box-b.crt"), b.dir.join("certs/box-b.key"));
    let mut thief = Wire::tls(a.port, &ca, Some((box_b.0.as_path(), box_b.1.as_path()))).unwrap();
    let Ok(ReplyBody::ReplicaVersions(versions)) =
        thief.call(RequestBody::ReplicaVersions { slot: 0 })
    else {
        panic!("a box may ask for versions")
    };
    let cert_version = versions
        .iter()
        .find(|v| v.unique_id.as_bytes() == cert_unique)
        .expect("the certificate's version")
        .version;
    let forged_deletion = mesign_proto::ReplicaChange {
        version: mesign_proto::ReplicaVersion {
            unique_id: String::from_utf8(cert_unique.clone()).unwrap(),
            version: cert_version + 1,
            digest: vec![0xff; 32],
            deleted: true,
        },
        object: None,
        tag: vec![0; 32],
    };
    let planted: Vec<Attribute> = vec![
        attr(CKA_CLASS, ulong_value(CKO_PUBLIC_KEY)),
        attr(CKA_TOKEN, bool_value(true)),
        attr(CKA_LABEL, b"planted".to_vec()),
        attr(CKA_WRAP, bool_value(true)),
        attr(CKA_TRUSTED, bool_value(true)),
        attr(CKA_UNIQUE_ID, b"00112233445566778899aabbccddeeff".to_vec()),
    ];
    let mut sorted = planted.clone();
    sorted.sort_by_key(|a| a.ty);
    let forged_creation = mesign_proto::ReplicaChange {
        version: mesign_proto::ReplicaVersion {
            unique_id: "00112233445566778899aabbccddeeff".into(),
            version: 1,
            digest: softhsm_tests::verify::sha256(&mesign_proto::attr::attribute_array_value(
                &sorted,
            )),
            deleted: false,
        },
        object: Some(mesign_proto::backup::BackupObject {
            attributes: sorted,
            key: None,
        }),
        tag: vec![0; 32],
    };
    for change in [forged_deletion, forged_creation] {
        let apply = RequestBody::ReplicaApply {
            slot: 0,
            change: Box::new(change),
        };
        assert_eq!(thief.call(apply), Err(CKR_SIGNATURE_INVALID));
    }
    assert_eq!(
        on_a.find(sa, labelled(CKO_CERTIFICATE, "repl-cert")),
        cert_a
    );
    assert!(on_a
        .find(sa, labelled(CKO_PUBLIC_KEY, "planted"))
        .is_empty());
    let refused = a.ok(&["audit", "show"]);
    assert!(
        refused.contains("replication_refused") && refused.contains("card tag"),
        "A's audit log names the forgeries:\n{refused}"
    );

    // A properly tagged change must still pass the local rules: B's SO
    // marks a public key trusted on B, and A (where only its own SO may do
    // that) refuses the change.
    on_b.call(RequestBody::Logout { session: sb }).unwrap();
    let mut so_on_b = Wire::tls(b.port, &ca, signer).unwrap();
    let Ok(ReplyBody::Session(so_session)) = so_on_b.call(RequestBody::OpenSession {
        slot: 0,
        flags: CKF_SERIAL_SESSION | CKF_RW_SESSION,
    }) else {
        panic!("session on B")
    };
    so_on_b
        .call(RequestBody::Login {
            session: so_session,
            user_type: CKU_SO,
            pin: SO_PIN.as_bytes().to_vec(),
        })
        .unwrap();
    let public_on_b = so_on_b.find(so_session, labelled(CKO_PUBLIC_KEY, "repl-ec"));
    assert_eq!(public_on_b.len(), 1);
    let trust = RequestBody::SetAttributes {
        session: so_session,
        object: public_on_b[0],
        template: vec![attr(CKA_TRUSTED, bool_value(true))],
    };
    let refusals = |x: &HsmBox| {
        x.ok(&["audit", "show"])
            .matches("replication_refused")
            .count()
    };
    let before = refusals(&a);
    so_on_b.call(trust).unwrap();
    eventually("A refuses B's trusted mark", || refusals(&a) > before);
    assert_eq!(
        on_a.attribute(sa, public, CKA_TRUSTED),
        bool_value(false),
        "still untrusted on A"
    );

    // Refused at the handshake: no certificate, a self-signed one, one of
    // another domain's CA.
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "self.key",
            "-out",
            "self.crt",
            "-days",
            "1",
            "-subj",
            "/CN=mesign-box:self",
        ],
        root.path(),
    );
    let (self_crt, self_key) = (root.path().join("self.crt"), root.path().join("self.key"));
    let (c_crt, c_key) = (c.dir.join("certs/box-c.crt"), c.dir.join("certs/box-c.key"));
    for (what, identity) in [
        ("no certificate", None),
        (
            "self-signed",
            Some((self_crt.as_path(), self_key.as_path())),
        ),
        ("another domain's", Some((c_crt.as_path(), c_key.as_path()))),
    ] {
        assert!(Wire::tls(a.port, &ca, identity).is_err(), "{what} accepted");
    }
    // And C's listener is not trusted by A's CA either way round.
    c.stop();

    // "both" with B down: the creation fails and A keeps nothing.
    drop(on_b);
    b.stop();
    let data = |session, label: &str| RequestBody::CreateObject {
        session,
        template: vec![
            attr(CKA_CLASS, ulong_value(CKO_DATA)),
            attr(CKA_TOKEN, bool_value(true)),
            attr(CKA_LABEL, label.as_bytes().to_vec()),
            attr(CKA_VALUE, b"payload".to_vec()),
        ],
    };
    assert_eq!(on_a.call(data(sa, "while-b-down")), Err(CKR_DEVICE_ERROR));
    assert!(on_a.find(sa, labelled(CKO_DATA, "while-b-down")).is_empty());

    // A down, B ("async") creates; A catches up when it is back.
    drop(on_a);
    a.stop();
    b.start(Some(&b_config));
    let mut on_b = connect(&b);
    let sb = on_b.user_session();
    let Ok(ReplyBody::Object(made)) = on_b.call(data(sb, "while-a-down")) else {
        panic!("data object on B")
    };
    let made_unique = on_b.attribute(sb, made, CKA_UNIQUE_ID);
    a.start(Some(&a_config));
    let mut on_a = connect(&a);
    let sa = on_a.user_session();
    let mut found = Vec::new();
    eventually("A catches up with B", || {
        found = on_a.find(sa, labelled(CKO_DATA, "while-a-down"));
        !found.is_empty()
    });
    assert_eq!(on_a.attribute(sa, found[0], CKA_UNIQUE_ID), made_unique);

    // The audit logs name what travelled.
    let audit_a = a.ok(&["audit", "show"]);
    for event in ["replication_sent", "replication_applied", "domain_created"] {
        assert!(
            audit_a.contains(event),
            "A's audit log lacks {event}:\n{audit_a}"
        );
    }
    let audit_b = b.ok(&["audit", "show"]);
    for event in [
        "replication_applied",
        "domain_joined",
        "tls_certificate_signed",
    ] {
        assert!(
            audit_b.contains(event),
            "B's audit log lacks {event}:\n{audit_b}"
        );
    }
}
