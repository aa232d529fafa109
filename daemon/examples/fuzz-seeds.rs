//! Writes the seed corpora of the daemon's fuzz targets:
//!
//! ```text
//! cargo run -p mesign-hsmd --features fuzzing --example fuzz-seeds -- fuzz/corpus
//! ```
//!
//! `daemon_requests` gets request sequences that reach every handler in the
//! states that matter (logged in or not, SO or user, token and session
//! objects, key pairs and signatures, PIN changes and lockout, protocol
//! errors), for the fresh token of `mesign_hsmd::fuzzing::daemon` (its first
//! client session is handle 2, its first token object 1); `certificate`
//! gets the suite's test certificate. Each seed is also run through its
//! target here, so a seed that breaks an invariant is noticed before it is
//! committed. The other certificate seeds came from openssl:
//!
//! ```text
//! openssl req -x509 -newkey rsa:2048 -nodes -keyout /dev/null -days 20000 \
//!   -subj "/C=DE/O=MeSign Test/CN=rsa seed" -outform DER -out seed-02 \
//!   -addext "keyUsage=critical,digitalSignature,nonRepudiation" \
//!   -addext "subjectAltName=email:a@example.org"
//! openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-384 -nodes \
//!   -keyout /dev/null -days 30 -subj "/CN=p384 seed/serialNumber=42" \
//!   -outform DER -out seed-03
//! ```

use std::path::{Path, PathBuf};

use cryptoki_sys::*;
use mesign_hsmd::fuzzing::{self, USER_PIN};
use mesign_proto::attr::{attribute_array_value, bool_value, ulong_array_value, ulong_value};
use mesign_proto::backup::BackupObject;
use mesign_proto::{
    Attribute, EcdhParams, HashAlg, ReplicaChange, ReplicaVersion, ReplyBody, ReplyResult,
    RequestBody as R, SignScheme, WrapMechanism,
};

/// The session the first OpenSession of a seed gets.
const S: u64 = 2;
/// The login generation in a private object's handle for the seeds' user
/// login (the set-up's SO login had the first): `mesign_hsmd::objects`.
const USER_LOGIN: u64 = 2 << 41;
/// The handles of the first generated token key pair: private, then public.
const PRIVATE: u64 = USER_LOGIN | 1;
const PUBLIC: u64 = 2;
/// The first session object's id.
const SESSION_OBJECT: u64 = 1 << 40;
const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384_OID: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
const CERT: &[u8] = include_bytes!("../../softhsm-tests/testdata/cert-p256.der");

fn a(ty: u64, value: Vec<u8>) -> Attribute {
    Attribute { ty, value }
}

fn hello() -> Vec<R> {
    vec![
        R::Hello { app: 7 },
        R::OpenSession {
            slot: 0,
            flags: CKF_SERIAL_SESSION | CKF_RW_SESSION,
        },
    ]
}

fn user() -> Vec<R> {
    let mut v = hello();
    v.push(R::Login {
        session: S,
        user_type: CKU_USER,
        pin: USER_PIN.to_vec(),
    });
    v
}

fn ec_pair(oid: &[u8], private: Vec<Attribute>) -> R {
    R::GenerateKeyPair {
        session: S,
        mechanism: CKM_EC_KEY_PAIR_GEN,
        public_template: vec![
            a(CKA_EC_PARAMS, oid.to_vec()),
            a(CKA_TOKEN, bool_value(true)),
            a(CKA_ID, b"k1".to_vec()),
        ],
        private_template: [
            vec![
                a(CKA_TOKEN, bool_value(true)),
                a(CKA_SIGN, bool_value(true)),
                a(CKA_ID, b"k1".to_vec()),
            ],
            private,
        ]
        .concat(),
    }
}

fn sign(mechanism: u64, scheme: SignScheme, len: usize) -> R {
    R::Sign {
        session: S,
        key: PRIVATE,
        mechanism,
        scheme,
        input: vec![0xab; len],
    }
}

fn secret(ty: u64, len: u64, extra: Vec<Attribute>) -> Vec<Attribute> {
    [
        vec![
            a(CKA_CLASS, ulong_value(CKO_SECRET_KEY)),
            a(CKA_KEY_TYPE, ulong_value(ty)),
            a(CKA_VALUE_LEN, ulong_value(len)),
        ],
        extra,
    ]
    .concat()
}

fn derive(kdf: u64, shared: &[u8], point: Vec<u8>, template: Vec<Attribute>) -> R {
    R::DeriveKey {
        session: S,
        mechanism: CKM_ECDH1_DERIVE,
        base: PRIVATE,
        params: EcdhParams {
            kdf,
            shared_data: shared.to_vec(),
            public_data: point,
        },
        template,
    }
}

/// The seeds of the requests added with ECDH, key wrapping, the domain CA
/// and replication.
fn new_request_seeds() -> Vec<Vec<R>> {
    let mut seeds = Vec::new();
    let point = [&[4u8][..], &[0x11; 64]].concat();

    // ECDH: every KDF shape, a wrapped (DER) point, a bad KDF, a base key
    // that may not derive, then the derived key's attributes.
    let mut v = user();
    v.extend([
        ec_pair(P256_OID, vec![a(CKA_DERIVE, bool_value(true))]),
        derive(
            CKD_NULL,
            b"",
            point.clone(),
            secret(CKK_AES, 16, vec![a(CKA_ENCRYPT, bool_value(true))]),
        ),
        derive(
            CKD_SHA256_KDF,
            b"shared info",
            point.clone(),
            secret(CKK_GENERIC_SECRET, 32, vec![a(CKA_SIGN, bool_value(true))]),
        ),
        derive(
            CKD_SHA256_KDF,
            b"",
            [&[4u8, 65][..], &point].concat(),
            secret(CKK_AES, 32, vec![a(CKA_TOKEN, bool_value(true))]),
        ),
        derive(
            CKD_SHA1_KDF_ASN1,
            b"",
            point.clone(),
            secret(CKK_AES, 16, vec![]),
        ),
        derive(
            CKD_NULL,
            b"",
            point[..33].to_vec(),
            secret(CKK_AES, 16, vec![]),
        ),
        R::GetAttributes {
            session: S,
            object: USER_LOGIN | SESSION_OBJECT,
            types: vec![CKA_VALUE, CKA_LOCAL, CKA_KEY_TYPE, CKA_CHECK_VALUE],
        },
    ]);
    seeds.push(v);

    // Wrapping: an AES wrapping key with an unwrap template, a key to wrap,
    // both AES mechanisms, unwrapping with a template that agrees and one
    // that conflicts, and the refused role mixes.
    let unwrap_template = attribute_array_value(&[
        a(CKA_SENSITIVE, bool_value(true)),
        a(CKA_EXTRACTABLE, bool_value(false)),
    ]);
    let wrap_template = attribute_array_value(&[a(CKA_KEY_TYPE, ulong_value(CKK_AES))]);
    let mut v = user();
    v.extend([
        R::GenerateKey {
            session: S,
            mechanism: CKM_AES_KEY_GEN,
            template: secret(
                CKK_AES,
                32,
                vec![
                    a(CKA_TOKEN, bool_value(true)),
                    a(CKA_WRAP, bool_value(true)),
                    a(CKA_UNWRAP, bool_value(true)),
                    a(CKA_UNWRAP_TEMPLATE, unwrap_template),
                    a(CKA_WRAP_TEMPLATE, wrap_template),
                ],
            ),
        },
        R::GenerateKey {
            session: S,
            mechanism: CKM_AES_KEY_GEN,
            template: secret(
                CKK_AES,
                16,
                vec![
                    a(CKA_TOKEN, bool_value(true)),
                    a(CKA_EXTRACTABLE, bool_value(true)),
                    a(CKA_ENCRYPT, bool_value(true)),
                ],
            ),
        },
        R::WrapKey {
            session: S,
            mechanism: WrapMechanism::AesKeyWrap,
            wrapping: PRIVATE,
            key: PRIVATE + 1,
        },
        R::WrapKey {
            session: S,
            mechanism: WrapMechanism::AesKeyWrapPad,
            wrapping: PRIVATE,
            key: PRIVATE + 1,
        },
        R::UnwrapKey {
            session: S,
            mechanism: WrapMechanism::AesKeyWrap,
            unwrapping: PRIVATE,
            wrapped: vec![0xa6; 40],
            // The scripted card unwraps 32-byte keys.
            template: secret(
                CKK_AES,
                32,
                vec![
                    a(CKA_SENSITIVE, bool_value(true)),
                    a(CKA_EXTRACTABLE, bool_value(false)),
                    a(CKA_ENCRYPT, bool_value(true)),
                ],
            ),
        },
        R::UnwrapKey {
            session: S,
            mechanism: WrapMechanism::AesKeyWrapPad,
            unwrapping: PRIVATE,
            wrapped: vec![0xa6; 40],
            template: secret(
                CKK_AES,
                16,
                vec![
                    a(CKA_EXTRACTABLE, bool_value(true)),
                    a(CKA_WRAP, bool_value(true)),
                    a(CKA_DECRYPT, bool_value(true)),
                ],
            ),
        },
        R::GetAttributes {
            session: S,
            object: PRIVATE,
            types: vec![
                CKA_UNWRAP_TEMPLATE,
                CKA_WRAP_TEMPLATE,
                CKA_WRAP_WITH_TRUSTED,
            ],
        },
        R::SetAttributes {
            session: S,
            object: PRIVATE + 1,
            template: vec![a(CKA_WRAP_WITH_TRUSTED, bool_value(true))],
        },
        R::WrapKey {
            session: S,
            mechanism: WrapMechanism::AesKeyWrap,
            wrapping: PRIVATE,
            key: PRIVATE + 1,
        },
    ]);
    seeds.push(v);

    // RSA-OAEP wrapping under a public key, and the role conflict of a
    // public key that wraps beside a private key that decrypts.
    let mut v = user();
    v.extend([
        R::GenerateKeyPair {
            session: S,
            mechanism: CKM_RSA_PKCS_KEY_PAIR_GEN,
            public_template: vec![
                a(CKA_MODULUS_BITS, ulong_value(2048)),
                a(CKA_PUBLIC_EXPONENT, vec![1, 0, 1]),
                a(CKA_WRAP, bool_value(true)),
            ],
            private_template: vec![a(CKA_UNWRAP, bool_value(true))],
        },
        R::GenerateKey {
            session: S,
            mechanism: CKM_GENERIC_SECRET_KEY_GEN,
            template: secret(
                CKK_GENERIC_SECRET,
                32,
                vec![a(CKA_EXTRACTABLE, bool_value(true))],
            ),
        },
        R::WrapKey {
            session: S,
            mechanism: WrapMechanism::RsaOaep {
                hash: HashAlg::Sha256,
                mgf_hash: HashAlg::Sha256,
                label: b"label".to_vec(),
            },
            wrapping: SESSION_OBJECT + 1,
            key: USER_LOGIN | (SESSION_OBJECT + 2),
        },
        R::UnwrapKey {
            session: S,
            mechanism: WrapMechanism::RsaOaep {
                hash: HashAlg::Sha1,
                mgf_hash: HashAlg::Sha1,
                label: vec![],
            },
            unwrapping: USER_LOGIN | SESSION_OBJECT,
            wrapped: vec![0x5c; 256],
            template: secret(CKK_GENERIC_SECRET, 32, vec![]),
        },
        R::GenerateKeyPair {
            session: S,
            mechanism: CKM_RSA_PKCS_KEY_PAIR_GEN,
            public_template: vec![
                a(CKA_MODULUS_BITS, ulong_value(2048)),
                a(CKA_WRAP, bool_value(true)),
            ],
            private_template: vec![a(CKA_DECRYPT, bool_value(true))],
        },
    ]);
    seeds.push(v);

    // The domain CA (public without a login, signing for the SO only) and
    // the replication requests, which a socket client may not send.
    let change = ReplicaChange {
        version: ReplicaVersion {
            unique_id: "0123456789abcdef".into(),
            version: 2,
            digest: vec![0; 32],
            deleted: false,
        },
        object: Some(BackupObject {
            attributes: vec![
                a(CKA_CLASS, ulong_value(CKO_DATA)),
                a(CKA_TOKEN, bool_value(true)),
            ],
            key: None,
        }),
        tag: vec![0; 32],
    };
    let mut v = hello();
    v.extend([
        R::DomainCaPublic { slot: 0 },
        R::DomainCaPublic { slot: 7 },
        R::ReplicaVersions { slot: 0 },
        R::ReplicaApply {
            slot: 0,
            change: Box::new(change),
        },
        R::DomainCaSign {
            session: S,
            tbs: vec![0x30, 3, 2, 1, 1],
        },
        R::Login {
            session: S,
            user_type: CKU_SO,
            pin: fuzzing::SO_PIN.to_vec(),
        },
        R::DomainCaSign {
            session: S,
            tbs: vec![0x30, 3, 2, 1, 1],
        },
        R::DomainShow { slot: 0 },
        R::ReplicaVersions { slot: 0 },
    ]);
    seeds.push(v);
    seeds
}

fn request_seeds() -> Vec<Vec<R>> {
    let mut seeds = Vec::new();

    // Key pair, signatures, searches and attribute reads and writes.
    let mut v = user();
    v.extend([
        R::Slots,
        R::TokenInfo { slot: 0 },
        R::Mechanisms { slot: 0 },
        ec_pair(P256_OID, vec![a(CKA_LABEL, b"doc-signing".to_vec())]),
        sign(CKM_ECDSA, SignScheme::Ecdsa, 32),
        sign(CKM_ECDSA_SHA256, SignScheme::Ecdsa, 32),
        R::FindObjects {
            session: S,
            template: vec![a(CKA_ID, b"k1".to_vec())],
        },
        R::FindObjects {
            session: S,
            template: vec![
                a(CKA_CLASS, ulong_value(CKO_PRIVATE_KEY)),
                a(CKA_LABEL, b"doc-signing".to_vec()),
            ],
        },
        R::GetAttributes {
            session: S,
            object: PUBLIC,
            types: vec![CKA_EC_POINT, CKA_EC_PARAMS, CKA_CLASS, CKA_VALUE],
        },
        R::GetAttributes {
            session: S,
            object: PRIVATE,
            types: vec![CKA_VALUE, CKA_SENSITIVE, CKA_ALWAYS_SENSITIVE],
        },
        R::SetAttributes {
            session: S,
            object: PUBLIC,
            template: vec![a(CKA_LABEL, b"renamed".to_vec())],
        },
        R::ObjectSize {
            session: S,
            object: PRIVATE,
        },
        R::CopyObject {
            session: S,
            object: PUBLIC,
            template: vec![a(CKA_TOKEN, bool_value(false))],
        },
        R::DestroyObject {
            session: S,
            object: PUBLIC,
        },
        R::Logout { session: S },
        R::CloseSession { session: S },
    ]);
    seeds.push(v);

    // PINs: SO work, a PIN change, wrong PINs up to the lockout.
    let mut v = hello();
    v.extend([
        R::Login {
            session: S,
            user_type: CKU_SO,
            pin: fuzzing::SO_PIN.to_vec(),
        },
        R::InitPin {
            session: S,
            pin: b"654321".to_vec(),
        },
        R::SetPin {
            session: S,
            old_pin: fuzzing::SO_PIN.to_vec(),
            new_pin: b"87654321".to_vec(),
        },
        R::Logout { session: S },
    ]);
    for _ in 0..11 {
        v.push(R::Login {
            session: S,
            user_type: CKU_USER,
            pin: b"000000".to_vec(),
        });
    }
    v.push(R::TokenInfo { slot: 0 });
    seeds.push(v);

    // Data, certificate and session objects left behind by a closing
    // connection.
    let mut v = user();
    v.extend([
        R::CreateObject {
            session: S,
            template: vec![
                a(CKA_CLASS, ulong_value(CKO_DATA)),
                a(CKA_TOKEN, bool_value(true)),
                a(CKA_LABEL, b"data".to_vec()),
                a(CKA_VALUE, b"hello".to_vec()),
            ],
        },
        R::CreateObject {
            session: S,
            template: vec![
                a(CKA_CLASS, ulong_value(CKO_CERTIFICATE)),
                a(CKA_CERTIFICATE_TYPE, ulong_value(CKC_X_509)),
                a(CKA_TOKEN, bool_value(true)),
                a(CKA_VALUE, CERT.to_vec()),
            ],
        },
        R::CreateObject {
            session: S,
            template: vec![
                a(CKA_CLASS, ulong_value(CKO_DATA)),
                a(CKA_TOKEN, bool_value(false)),
                a(CKA_PRIVATE, bool_value(true)),
            ],
        },
        R::OpenSession {
            slot: 0,
            flags: CKF_SERIAL_SESSION,
        },
        R::CreateObject {
            session: S + 1,
            template: vec![
                a(CKA_CLASS, ulong_value(CKO_DATA)),
                a(CKA_TOKEN, bool_value(true)),
            ],
        },
        R::FindObjects {
            session: S + 1,
            template: vec![],
        },
        R::SessionInfo { session: S + 1 },
        R::CheckSession { session: S + 1 },
        R::GenerateRandom {
            session: S + 1,
            len: 64,
        },
        R::Status,
    ]);
    seeds.push(v);

    // RSA signatures of every scheme.
    let mut v = user();
    v.extend([
        R::GenerateKeyPair {
            session: S,
            mechanism: CKM_RSA_PKCS_KEY_PAIR_GEN,
            public_template: vec![
                a(CKA_MODULUS_BITS, ulong_value(2048)),
                a(CKA_PUBLIC_EXPONENT, vec![1, 0, 1]),
                a(CKA_TOKEN, bool_value(true)),
            ],
            private_template: vec![
                a(CKA_TOKEN, bool_value(true)),
                a(CKA_SIGN, bool_value(true)),
            ],
        },
        sign(CKM_RSA_PKCS, SignScheme::RsaPkcs1DigestInfo, 51),
        sign(
            CKM_SHA256_RSA_PKCS,
            SignScheme::RsaPkcs1(HashAlg::Sha256),
            32,
        ),
        sign(
            CKM_RSA_PKCS_PSS,
            SignScheme::RsaPss {
                hash: HashAlg::Sha256,
                mgf_hash: HashAlg::Sha256,
                salt_len: 32,
            },
            32,
        ),
    ]);
    seeds.push(v);

    // Always-authenticate keys and context logins; P-384.
    let mut v = user();
    v.extend([
        ec_pair(
            P384_OID,
            vec![
                a(CKA_ALWAYS_AUTHENTICATE, bool_value(true)),
                a(CKA_ALLOWED_MECHANISMS, ulong_array_value(&[CKM_ECDSA])),
            ],
        ),
        sign(CKM_ECDSA, SignScheme::Ecdsa, 48),
        R::Login {
            session: S,
            user_type: CKU_CONTEXT_SPECIFIC,
            pin: USER_PIN.to_vec(),
        },
        sign(CKM_ECDSA, SignScheme::Ecdsa, 48),
        R::CloseAllSessions { slot: 0 },
    ]);
    seeds.push(v);

    // Protocol order: a request before Hello, then a second Hello; and a
    // token re-initialization refused while sessions are open.
    seeds.push(vec![
        R::Slots,
        R::Hello { app: 1 },
        R::Hello { app: 2 },
        R::InitToken {
            slot: 0,
            so_pin: fuzzing::SO_PIN.to_vec(),
            label: b"again".to_vec(),
        },
        R::OpenSession { slot: 9, flags: 0 },
    ]);
    seeds.extend(new_request_seeds());
    seeds
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("create the corpus dir");
    std::fs::write(dir.join(name), bytes).expect("write a seed");
}

fn main() {
    let corpus = PathBuf::from(
        std::env::args_os()
            .nth(1)
            .expect("usage: fuzz-seeds <corpus dir>"),
    );
    for (n, seed) in request_seeds().iter().enumerate() {
        let bytes = fuzzing::frames(seed);
        fuzzing::requests(&bytes);
        let outcome: Vec<String> = fuzzing::replies(&bytes)
            .iter()
            .zip(seed)
            .map(|(reply, request)| {
                let name = format!("{request:?}");
                let name = name.split([' ', '{']).next().unwrap_or("").to_string();
                match &reply.result {
                    ReplyResult::Ok(ReplyBody::Object(h)) => format!("{name}({h})"),
                    ReplyResult::Ok(ReplyBody::KeyPair { public, private }) => {
                        format!("{name}({public},{private})")
                    }
                    ReplyResult::Ok(_) => name,
                    ReplyResult::Err(rv) => format!("{name}={rv:#x}"),
                }
            })
            .collect();
        eprintln!("seed-{:02}: {}", n + 1, outcome.join(" "));
        write(
            &corpus.join("daemon_requests"),
            &format!("seed-{:02}", n + 1),
            &bytes,
        );
    }
    // A wrong protocol version ends the connection.
    let mut bad = fuzzing::frames(&hello());
    let mut wrong = Vec::new();
    mesign_proto::encode_frame(
        &mesign_proto::Request {
            version: 0xffff,
            id: 9,
            body: R::Status,
        },
        &mut wrong,
    );
    bad.extend(wrong);
    fuzzing::requests(&bad);
    write(&corpus.join("daemon_requests"), "seed-90", &bad);

    fuzzing::certificate(CERT);
    write(&corpus.join("certificate"), "seed-01", CERT);
}
