//! RSA encryption and decryption (CKM_RSA_PKCS, CKM_RSA_PKCS_OAEP) against
//! our module and SoftHSMv2.
//!
//! Every ciphertext the token decrypts is checked against an independent
//! implementation: RustCrypto `rsa` encrypts to the token's public key and
//! the token must recover the message. What the token encrypts comes back
//! through the token's own decryption and, for OAEP with every hash pair,
//! through the openssl CLI: the token encrypts to an imported public key
//! whose private half only openssl holds.

use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::session::UserType;
use cryptoki_sys::{
    CKR_BUFFER_TOO_SMALL, CKR_ENCRYPTED_DATA_LEN_RANGE, CKR_OK, CKR_USER_NOT_LOGGED_IN,
    CK_SESSION_HANDLE,
};
use rsa::{BigUint, Oaep, Pkcs1v15Encrypt, RsaPublicKey};
use softhsm_tests::ffi::Output;
use softhsm_tests::keys::{self, bytes};
use softhsm_tests::target::pin;
use softhsm_tests::{conformance, expect_rv, Divergence, Target, USER_PIN};

use cryptoki::error::{Error, RvError};
use cryptoki::object::AttributeType;

const MESSAGE: &[u8] = b"content-encryption key 0123456789";

/// A session RSA-2048 pair whose private half may decrypt (`decrypt`) and
/// public half encrypt.
struct Pair {
    public: ObjectHandle,
    private: ObjectHandle,
    independent: RsaPublicKey,
}

fn pair(s: &Session, decrypt: bool, encrypt: bool) -> Pair {
    pair_with(s, decrypt, encrypt, false)
}

fn pair_with(s: &Session, decrypt: bool, encrypt: bool, always_authenticate: bool) -> Pair {
    let public = [
        Attribute::Token(false),
        Attribute::Encrypt(encrypt),
        Attribute::Verify(true),
        Attribute::ModulusBits(2048.into()),
        Attribute::PublicExponent(vec![1, 0, 1]),
    ];
    let private = [
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Decrypt(decrypt),
        Attribute::Sign(false),
        Attribute::AlwaysAuthenticate(always_authenticate),
    ];
    let (public, private) = s
        .generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private)
        .expect("C_GenerateKeyPair RSA-2048");
    let n = bytes(s, public, AttributeType::Modulus).expect("CKA_MODULUS");
    let e = bytes(s, public, AttributeType::PublicExponent).expect("CKA_PUBLIC_EXPONENT");
    let independent =
        RsaPublicKey::new(BigUint::from_bytes_be(&n), BigUint::from_bytes_be(&e)).unwrap();
    Pair {
        public,
        private,
        independent,
    }
}

fn oaep_mechanism<'a>(hash: MechanismType, mgf: PkcsMgfType, label: &'a [u8]) -> Mechanism<'a> {
    let source = if label.is_empty() {
        PkcsOaepSource::empty()
    } else {
        PkcsOaepSource::data_specified(label)
    };
    Mechanism::RsaPkcsOaep(PkcsOaepParams::new(hash, mgf, source))
}

/// RustCrypto's OAEP with `hash` for both the label hash and MGF1.
fn independent_oaep(hash: MechanismType, label: &str) -> Oaep {
    let label = label.to_string();
    let mut padding = match hash {
        MechanismType::SHA1 => Oaep::new::<sha1::Sha1>(),
        MechanismType::SHA256 => Oaep::new::<sha2::Sha256>(),
        MechanismType::SHA384 => Oaep::new::<sha2::Sha384>(),
        MechanismType::SHA512 => Oaep::new::<sha2::Sha512>(),
        other => panic!("no independent OAEP for {other}"),
    };
    if !label.is_empty() {
        padding.label = Some(label);
    }
    padding
}

const OAEP_HASHES: [(MechanismType, PkcsMgfType); 4] = [
    (MechanismType::SHA1, PkcsMgfType::MGF1_SHA1),
    (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
    (MechanismType::SHA384, PkcsMgfType::MGF1_SHA384),
    (MechanismType::SHA512, PkcsMgfType::MGF1_SHA512),
];

fn pkcs1_round_trips_and_independent_ciphertexts(t: &Target) {
    let s = t.user_session();
    let k = pair(&s, true, true);
    let mut rng = rsa::rand_core::OsRng;
    let theirs = k
        .independent
        .encrypt(&mut rng, Pkcs1v15Encrypt, MESSAGE)
        .unwrap();
    assert_eq!(
        s.decrypt(&Mechanism::RsaPkcs, k.private, &theirs).unwrap(),
        MESSAGE
    );
    let ours = s.encrypt(&Mechanism::RsaPkcs, k.public, MESSAGE).unwrap();
    assert_eq!(ours.len(), 256);
    assert_ne!(ours, theirs, "PKCS#1 v1.5 encryption is randomised");
    assert_eq!(
        s.decrypt(&Mechanism::RsaPkcs, k.private, &ours).unwrap(),
        MESSAGE
    );
    // The longest message one block carries, and one byte more.
    let longest = vec![0x5a; 245];
    let c = s.encrypt(&Mechanism::RsaPkcs, k.public, &longest).unwrap();
    assert_eq!(
        s.decrypt(&Mechanism::RsaPkcs, k.private, &c).unwrap(),
        longest
    );
    let too_long = s.encrypt(&Mechanism::RsaPkcs, k.public, &[0x5a; 246]);
    if t.diverges(Divergence::SoftHsmRsaErrorsAreGeneral) {
        expect_rv(too_long, RvError::GeneralError);
    } else {
        expect_rv(too_long, RvError::DataLenRange);
    }
}

fn oaep_round_trips_for_every_hash_and_label(t: &Target) {
    let s = t.user_session();
    let k = pair(&s, true, true);
    let mut rng = rsa::rand_core::OsRng;
    for (hash, mgf) in OAEP_HASHES {
        for label in ["", "S/MIME label"] {
            let m = oaep_mechanism(hash, mgf, label.as_bytes());
            let theirs = k
                .independent
                .encrypt(&mut rng, independent_oaep(hash, label), MESSAGE)
                .unwrap();
            match s.decrypt(&m, k.private, &theirs) {
                Ok(plain) => assert_eq!(plain, MESSAGE, "{hash} label {label:?}"),
                Err(Error::Pkcs11(rv, _)) => {
                    let limited = hash != MechanismType::SHA1 || !label.is_empty();
                    assert!(
                        limited && t.diverges(Divergence::SoftHsmOaepOnlySha1WithoutLabel),
                        "{hash} label {label:?}: {rv:?}"
                    );
                    // CKR_ARGUMENTS_BAD for a label, CKR_GENERAL_ERROR for
                    // a SHA-2 ciphertext decrypted as SHA-1.
                    assert!(
                        matches!(rv, RvError::ArgumentsBad | RvError::GeneralError),
                        "{rv:?}"
                    );
                    continue;
                }
                Err(e) => panic!("{e}"),
            }
            let ours = s.encrypt(&m, k.public, MESSAGE).unwrap();
            assert_eq!(s.decrypt(&m, k.private, &ours).unwrap(), MESSAGE);
            // The label is bound: another one does not decrypt.
            let other = oaep_mechanism(hash, mgf, b"another label");
            let mislabelled = s.decrypt(&other, k.private, &ours);
            if t.diverges(Divergence::SoftHsmOaepOnlySha1WithoutLabel) {
                assert_eq!(mislabelled.unwrap(), MESSAGE);
            } else {
                expect_rv(mislabelled, RvError::EncryptedDataInvalid);
            }
        }
    }
}

/// Every label hash with every MGF1 hash (PKCS#11 3.0 §2.1.8): the 5 × 5
/// pairs of SHA-1, SHA-224, SHA-256, SHA-384 and SHA-512.
const EVERY_HASH: [(MechanismType, PkcsMgfType, &str); 5] = [
    (MechanismType::SHA1, PkcsMgfType::MGF1_SHA1, "sha1"),
    (MechanismType::SHA224, PkcsMgfType::MGF1_SHA224, "sha224"),
    (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256, "sha256"),
    (MechanismType::SHA384, PkcsMgfType::MGF1_SHA384, "sha384"),
    (MechanismType::SHA512, PkcsMgfType::MGF1_SHA512, "sha512"),
];

/// RustCrypto's OAEP with label hash `hash` and MGF1 over `mgf`.
fn independent_oaep_pair(hash: &str, mgf: &str, label: &str) -> Oaep {
    use sha1::Sha1;
    use sha2::{Sha224, Sha256, Sha384, Sha512};
    macro_rules! with_mgf {
        ($d:ty) => {
            match mgf {
                "sha1" => Oaep::new_with_mgf_hash::<$d, Sha1>(),
                "sha224" => Oaep::new_with_mgf_hash::<$d, Sha224>(),
                "sha256" => Oaep::new_with_mgf_hash::<$d, Sha256>(),
                "sha384" => Oaep::new_with_mgf_hash::<$d, Sha384>(),
                _ => Oaep::new_with_mgf_hash::<$d, Sha512>(),
            }
        };
    }
    let mut padding = match hash {
        "sha1" => with_mgf!(Sha1),
        "sha224" => with_mgf!(Sha224),
        "sha256" => with_mgf!(Sha256),
        "sha384" => with_mgf!(Sha384),
        _ => with_mgf!(Sha512),
    };
    if !label.is_empty() {
        padding.label = Some(label.to_string());
    }
    padding
}

/// Runs the openssl CLI in `dir`, feeding `input`; its output on success.
fn openssl(dir: &std::path::Path, args: &[&str], input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run openssl");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Makes an RSA-2048 key with openssl as `dir/key.pem` and imports its
/// public half into the token as a session object with `usage` true.
fn openssl_key(s: &Session, dir: &std::path::Path, usage: Attribute) -> ObjectHandle {
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "key.pem",
        ],
        b"",
    );
    let der = openssl(
        dir,
        &["pkey", "-in", "key.pem", "-pubout", "-outform", "DER"],
        b"",
    );
    let theirs = {
        use rsa::pkcs8::DecodePublicKey;
        RsaPublicKey::from_public_key_der(&der).unwrap()
    };
    use rsa::traits::PublicKeyParts;
    s.create_object(&[
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(KeyType::RSA),
        Attribute::Token(false),
        Attribute::Modulus(theirs.n().to_bytes_be()),
        Attribute::PublicExponent(theirs.e().to_bytes_be()),
        usage,
    ])
    .expect("C_CreateObject of an RSA public key")
}

/// openssl's RSA-OAEP decryption with `dir/key.pem`.
fn openssl_oaep_decrypt(
    dir: &std::path::Path,
    hash: &str,
    mgf: &str,
    label: &[u8],
    ciphertext: &[u8],
) -> Vec<u8> {
    let md = format!("rsa_oaep_md:{hash}");
    let mgf_md = format!("rsa_mgf1_md:{mgf}");
    let label_hex: String = label.iter().map(|b| format!("{b:02x}")).collect();
    let label_opt = format!("rsa_oaep_label:{label_hex}");
    let mut args = vec![
        "pkeyutl",
        "-decrypt",
        "-inkey",
        "key.pem",
        "-pkeyopt",
        "rsa_padding_mode:oaep",
        "-pkeyopt",
        &md,
        "-pkeyopt",
        &mgf_md,
    ];
    if !label.is_empty() {
        args.extend(["-pkeyopt", &label_opt]);
    }
    openssl(dir, &args, ciphertext)
}

/// C_WrapKey and C_UnwrapKey with OAEP take the same hash pairs: a secret
/// key wrapped under an imported public key with SHA-224, or with an MGF1
/// hash other than the label hash, is recovered by openssl with the
/// private key; one RustCrypto wrapped to the token's key unwraps to the
/// same value (and not with another label).
fn oaep_wrapping_with_every_kind_of_hash_pair(t: &Target) {
    let s = t.user_session();
    let dir = tempfile::tempdir().unwrap();
    let wrapping = openssl_key(&s, dir.path(), Attribute::Wrap(true));
    let unwrapper = unwrap_pair(&s);
    let value = [0x42u8; 32];
    let secret = s
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::Token(false),
            Attribute::Value(value.to_vec()),
            Attribute::Sensitive(false),
            Attribute::Extractable(true),
        ])
        .expect("C_CreateObject of a generic secret");
    for (hash, mgf, hash_name, mgf_name) in [
        (
            MechanismType::SHA224,
            PkcsMgfType::MGF1_SHA224,
            "sha224",
            "sha224",
        ),
        (
            MechanismType::SHA384,
            PkcsMgfType::MGF1_SHA1,
            "sha384",
            "sha1",
        ),
        (
            MechanismType::SHA1,
            PkcsMgfType::MGF1_SHA256,
            "sha1",
            "sha256",
        ),
    ] {
        let m = oaep_mechanism(hash, mgf, b"wrap");
        let wrapped = s.wrap_key(&m, wrapping, secret);
        if t.diverges(Divergence::SoftHsmOaepOnlySha1WithoutLabel) {
            assert!(wrapped.is_err(), "{hash_name}/{mgf_name}");
            continue;
        }
        let wrapped = wrapped.unwrap_or_else(|e| panic!("{hash_name}/{mgf_name}: {e}"));
        assert_eq!(
            openssl_oaep_decrypt(dir.path(), hash_name, mgf_name, b"wrap", &wrapped),
            value,
            "{hash_name}/{mgf_name}"
        );
        // RustCrypto wraps to an unwrap-only key of the token; the token
        // unwraps with the same parameters and nothing else.
        let theirs = unwrapper
            .independent
            .encrypt(
                &mut rsa::rand_core::OsRng,
                independent_oaep_pair(hash_name, mgf_name, "wrap"),
                &value,
            )
            .unwrap();
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::Token(false),
        ];
        let unwrapped = s
            .unwrap_key(&m, unwrapper.private, &theirs, &template)
            .unwrap_or_else(|e| panic!("{hash_name}/{mgf_name}: {e}"));
        // The value stays on the card; its check value (PKCS#11 3.0
        // §4.10: the first 3 bytes of its SHA-1 for a generic secret)
        // shows it.
        use sha1::Digest as _;
        let check = match s
            .get_attributes(unwrapped, &[AttributeType::CheckValue])
            .unwrap()
            .pop()
        {
            Some(Attribute::CheckValue(v)) => v,
            other => panic!("CKA_CHECK_VALUE: {other:?}"),
        };
        assert_eq!(
            check,
            sha1::Sha1::digest(value)[..3],
            "{hash_name}/{mgf_name}"
        );
        let other = oaep_mechanism(hash, mgf, b"other");
        expect_rv(
            s.unwrap_key(&other, unwrapper.private, &theirs, &template),
            RvError::WrappedKeyInvalid,
        );
    }
}

/// A session RSA-2048 pair whose private half only unwraps.
fn unwrap_pair(s: &Session) -> Pair {
    let (public, private) = keys::rsa_2048_pair(
        s,
        &[],
        &[
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Unwrap(true),
            Attribute::Decrypt(false),
            Attribute::Sign(false),
        ],
    )
    .expect("C_GenerateKeyPair RSA-2048");
    let n = bytes(s, public, AttributeType::Modulus).expect("CKA_MODULUS");
    let e = bytes(s, public, AttributeType::PublicExponent).expect("CKA_PUBLIC_EXPONENT");
    let independent =
        RsaPublicKey::new(BigUint::from_bytes_be(&n), BigUint::from_bytes_be(&e)).unwrap();
    Pair {
        public,
        private,
        independent,
    }
}

/// OAEP with SHA-224 and with an MGF1 hash other than the label hash, all
/// 25 pairs, with and without a label: RustCrypto encrypts and the token
/// decrypts; the token encrypts and openssl decrypts; a wrong label or
/// MGF1 hash is CKR_ENCRYPTED_DATA_INVALID.
fn oaep_every_hash_pair_against_independent_implementations(t: &Target) {
    let s = t.user_session();
    let k = pair(&s, true, true);
    let dir = tempfile::tempdir().unwrap();
    let imported = openssl_key(&s, dir.path(), Attribute::Encrypt(true));
    let limited = t.diverges(Divergence::SoftHsmOaepOnlySha1WithoutLabel);
    let mut rng = rsa::rand_core::OsRng;
    let mut pairs = 0;
    for (hash, _, hash_name) in EVERY_HASH {
        for (other_hash, mgf, mgf_name) in EVERY_HASH {
            let label = if other_hash == hash { "" } else { "mixed" };
            let name = format!("OAEP {hash_name} MGF1-{mgf_name} label {label:?}");
            let m = oaep_mechanism(hash, mgf, label.as_bytes());
            if limited && (hash, other_hash) != (MechanismType::SHA1, MechanismType::SHA1) {
                // SoftHSMv2 has OAEP with SHA-1 only.
                expect_rv(s.encrypt_init(&m, k.public), RvError::ArgumentsBad);
                continue;
            }
            // RustCrypto encrypts, the token decrypts.
            let c = k
                .independent
                .encrypt(
                    &mut rng,
                    independent_oaep_pair(hash_name, mgf_name, label),
                    MESSAGE,
                )
                .unwrap();
            let plain = s.decrypt(&m, k.private, &c);
            assert_eq!(plain.unwrap_or_else(|e| panic!("{name}: {e}")), MESSAGE);
            // The token encrypts, openssl decrypts.
            let ours = s
                .encrypt(&m, imported, MESSAGE)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(ours.len(), 256, "{name}");
            let theirs =
                openssl_oaep_decrypt(dir.path(), hash_name, mgf_name, label.as_bytes(), &ours);
            assert_eq!(theirs, MESSAGE, "{name}");
            pairs += 1;
            if limited {
                continue;
            }
            // A wrong label, and the wrong MGF1 hash, do not decode.
            let wrong_label = oaep_mechanism(hash, mgf, b"another label");
            expect_rv(
                s.decrypt(&wrong_label, k.private, &c),
                RvError::EncryptedDataInvalid,
            );
            let other_mgf = if mgf == PkcsMgfType::MGF1_SHA1 {
                PkcsMgfType::MGF1_SHA224
            } else {
                PkcsMgfType::MGF1_SHA1
            };
            let wrong_mgf = oaep_mechanism(hash, other_mgf, label.as_bytes());
            expect_rv(
                s.decrypt(&wrong_mgf, k.private, &c),
                RvError::EncryptedDataInvalid,
            );
        }
    }
    assert_eq!(pairs, if limited { 1 } else { 25 });
    // The longest message one block carries with SHA-512 (k − 2·64 − 2)
    // goes through the card; one byte more is refused before.
    if !limited {
        let m = oaep_mechanism(MechanismType::SHA512, PkcsMgfType::MGF1_SHA1, b"");
        let longest = vec![0x5a; 126];
        let c = s.encrypt(&m, k.public, &longest).unwrap();
        assert_eq!(s.decrypt(&m, k.private, &c).unwrap(), longest);
        expect_rv(s.encrypt(&m, k.public, &[0x5a; 127]), RvError::DataLenRange);
    }
}

/// Parameters no token offers are still refused: a label hash that is not
/// SHA-1 or SHA-2.
fn oaep_parameters_the_token_lacks_are_refused(t: &Target) {
    let s = t.user_session();
    let k = pair(&s, true, true);
    let want = if t.diverges(Divergence::SoftHsmOaepOnlySha1WithoutLabel) {
        RvError::ArgumentsBad
    } else {
        RvError::MechanismParamInvalid
    };
    // A mechanism that is not a hash as the label hash.
    let not_a_hash = oaep_mechanism(MechanismType::RSA_PKCS, PkcsMgfType::MGF1_SHA1, b"");
    expect_rv(s.encrypt_init(&not_a_hash, k.public), want);
    if !t.diverges(Divergence::SoftHsmOaepOnlySha1WithoutLabel) {
        // SoftHSMv2's C_DecryptInit checks only the MGF.
        expect_rv(s.decrypt_init(&not_a_hash, k.private), want);
    }
}

fn usage_flags_are_enforced(t: &Target) {
    let s = t.user_session();
    let k = pair(&s, false, false);
    expect_rv(
        s.decrypt_init(&Mechanism::RsaPkcs, k.private),
        RvError::KeyFunctionNotPermitted,
    );
    expect_rv(
        s.encrypt_init(&Mechanism::RsaPkcs, k.public),
        RvError::KeyFunctionNotPermitted,
    );
    let info = t
        .pkcs11()
        .get_mechanism_info(t.slot(), MechanismType::RSA_PKCS_OAEP)
        .unwrap();
    assert!(info.encrypt() && info.decrypt(), "{info:?}");
    assert!(info.min_key_size() <= 2048 && info.max_key_size() >= 4096);
    let info = t
        .pkcs11()
        .get_mechanism_info(t.slot(), MechanismType::RSA_PKCS)
        .unwrap();
    assert!(info.encrypt() && info.decrypt() && info.sign(), "{info:?}");
}

fn handle(s: &Session) -> CK_SESSION_HANDLE {
    s.handle()
}

fn length_queries_short_buffers_and_bad_lengths(t: &Target) {
    let s = t.user_session();
    let k = pair(&s, true, true);
    let c = s.encrypt(&Mechanism::RsaPkcs, k.public, MESSAGE).unwrap();
    s.decrypt_init(&Mechanism::RsaPkcs, k.private).unwrap();
    let query = t.raw().decrypt(handle(&s), &c, Output::Null);
    assert_eq!(query.rv, CKR_OK);
    // At least the message; ours answers the most one block carries
    // (k - 11), SoftHSMv2 the modulus length.
    assert!(
        (MESSAGE.len() as u64..=256).contains(&query.len),
        "{query:?}"
    );
    let small = t
        .raw()
        .decrypt(handle(&s), &c, Output::Bytes(MESSAGE.len() - 1));
    assert_eq!(small.rv, CKR_BUFFER_TOO_SMALL);
    assert!(small.len >= MESSAGE.len() as u64);
    // Still active after CKR_BUFFER_TOO_SMALL.
    let done = t.raw().decrypt(handle(&s), &c, Output::Bytes(256));
    assert_eq!((done.rv, done.bytes.as_slice()), (CKR_OK, MESSAGE));
    // Finished now.
    let want = if t.diverges(Divergence::SoftHsmRsaErrorsAreGeneral) {
        cryptoki_sys::CKR_GENERAL_ERROR
    } else {
        CKR_ENCRYPTED_DATA_LEN_RANGE
    };
    s.decrypt_init(&Mechanism::RsaPkcs, k.private).unwrap();
    assert_eq!(
        t.raw()
            .decrypt(handle(&s), &c[..255], Output::Bytes(256))
            .rv,
        want
    );
    s.decrypt_init(&Mechanism::RsaPkcs, k.private).unwrap();
    let long = [c.as_slice(), &[0]].concat();
    assert_eq!(
        t.raw().decrypt(handle(&s), &long, Output::Bytes(256)).rv,
        want
    );
    // The wrong length ended the operation.
    assert_eq!(
        t.raw().decrypt(handle(&s), &c, Output::Bytes(256)).rv,
        cryptoki_sys::CKR_OPERATION_NOT_INITIALIZED
    );
}

fn invalid_ciphertexts(t: &Target) {
    let s = t.user_session();
    let k = pair(&s, true, true);
    // A block whose PKCS#1 v1.5 padding is (all but certainly) invalid.
    let garbage = vec![0x42; 256];
    let first = s.decrypt(&Mechanism::RsaPkcs, k.private, &garbage);
    if t.diverges(Divergence::SoftHsmPkcs1PaddingOracle) {
        expect_rv(first, RvError::GeneralError);
    } else {
        // Implicit rejection: a synthetic message, the same every time.
        let first = first.expect("implicit rejection answers CKR_OK");
        assert!(first.len() <= 245);
        let again = s.decrypt(&Mechanism::RsaPkcs, k.private, &garbage).unwrap();
        assert_eq!(first, again);
    }
    let m = oaep_mechanism(MechanismType::SHA1, PkcsMgfType::MGF1_SHA1, b"");
    let oaep = s.decrypt(&m, k.private, &garbage);
    if t.diverges(Divergence::SoftHsmRsaErrorsAreGeneral) {
        expect_rv(oaep, RvError::GeneralError);
    } else {
        expect_rv(oaep, RvError::EncryptedDataInvalid);
    }
}

fn rsa_is_single_part(t: &Target) {
    let s = t.user_session();
    let k = pair(&s, true, true);
    let keeps = t.diverges(Divergence::SoftHsmFailedUpdateKeepsOperation);
    s.decrypt_init(&Mechanism::RsaPkcs, k.private).unwrap();
    expect_rv(s.decrypt_update(&[0; 256]), RvError::FunctionNotSupported);
    let again = s.decrypt_init(&Mechanism::RsaPkcs, k.private);
    if keeps {
        expect_rv(again, RvError::OperationActive);
        return;
    }
    again.expect("the failed update ended the operation");
    expect_rv(s.decrypt_final(), RvError::FunctionNotSupported);
    s.encrypt_init(&Mechanism::RsaPkcs, k.public).unwrap();
    expect_rv(s.encrypt_update(MESSAGE), RvError::FunctionNotSupported);
    s.encrypt_init(&Mechanism::RsaPkcs, k.public)
        .expect("the failed update ended the operation");
    expect_rv(s.encrypt_final(), RvError::FunctionNotSupported);
}

/// A key with CKA_ALWAYS_AUTHENTICATE decrypts once per
/// C_Login(CKU_CONTEXT_SPECIFIC), and a grant whose operation failed does
/// not authorise the next one.
fn always_authenticate_keys_decrypt_once_per_context_login(t: &Target) {
    let s = t.user_session();
    let k = pair_with(&s, true, false, true);
    let theirs = k
        .independent
        .encrypt(&mut rsa::rand_core::OsRng, Pkcs1v15Encrypt, MESSAGE)
        .unwrap();
    let context = |p: &str| s.login(UserType::ContextSpecific, Some(&pin(p)));
    let decrypt = |c: &[u8], output| t.raw().decrypt(handle(&s), c, output);

    s.decrypt_init(&Mechanism::RsaPkcs, k.private).unwrap();
    let refused = decrypt(&theirs, Output::Bytes(256));
    assert_eq!(refused.rv, CKR_USER_NOT_LOGGED_IN, "no context login");

    s.decrypt_init(&Mechanism::RsaPkcs, k.private).unwrap();
    expect_rv(context("999999"), RvError::PinIncorrect);
    context(USER_PIN).expect("C_Login(CKU_CONTEXT_SPECIFIC)");
    expect_rv(context(USER_PIN), RvError::OperationNotInitialized);
    // A length query and a short buffer keep the operation and its grant.
    assert_eq!(decrypt(&theirs, Output::Null).rv, CKR_OK);
    assert_eq!(decrypt(&theirs, Output::Bytes(4)).rv, CKR_BUFFER_TOO_SMALL);
    let plain = decrypt(&theirs, Output::Bytes(256));
    assert_eq!(plain.rv, CKR_OK, "C_Decrypt after the context login");
    assert_eq!(plain.bytes, MESSAGE);

    s.decrypt_init(&Mechanism::RsaPkcs, k.private).unwrap();
    let again = decrypt(&theirs, Output::Bytes(256));
    assert_eq!(
        again.rv, CKR_USER_NOT_LOGGED_IN,
        "the context login was used up by one decryption"
    );

    // A granted operation that fails (a ciphertext one byte short) takes
    // its grant with it.
    s.decrypt_init(&Mechanism::RsaPkcs, k.private).unwrap();
    context(USER_PIN).expect("C_Login(CKU_CONTEXT_SPECIFIC)");
    let short = decrypt(&theirs[1..], Output::Bytes(256));
    assert_ne!(short.rv, CKR_OK);
    s.decrypt_init(&Mechanism::RsaPkcs, k.private).unwrap();
    let after = decrypt(&theirs, Output::Bytes(256));
    assert_eq!(
        after.rv, CKR_USER_NOT_LOGGED_IN,
        "a grant outlived the operation it was given for"
    );
}

conformance!(ready =>
    always_authenticate_keys_decrypt_once_per_context_login,
    pkcs1_round_trips_and_independent_ciphertexts,
    oaep_round_trips_for_every_hash_and_label,
    oaep_parameters_the_token_lacks_are_refused,
    oaep_every_hash_pair_against_independent_implementations,
    oaep_wrapping_with_every_kind_of_hash_pair,
    usage_flags_are_enforced,
    length_queries_short_buffers_and_bad_lengths,
    invalid_ciphertexts,
    rsa_is_single_part,
);
