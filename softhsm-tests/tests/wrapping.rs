//! C_WrapKey / C_UnwrapKey against our module and SoftHSMv2: AES Key Wrap
//! (RFC 3394) and Key Wrap with Padding (RFC 5649) of secret keys and of
//! an EC private key (PKCS#8 inside), RSA-OAEP wrapping of secret keys,
//! length queries, and the attributes of unwrapped keys.
//!
//! Every wrapped key is opened independently: the wrapping keys are
//! imported with known values so that RustCrypto `aes-kw` unwraps what the
//! token wrapped (and wraps what the token unwraps); the EC key's PKCS#8
//! is parsed by RustCrypto `p256` and its signatures after unwrapping are
//! verified with the original public key; RSA-OAEP goes through RustCrypto
//! `rsa` with a key pair made by the openssl CLI.

use aes_gcm::aead::{Aead, KeyInit};
use cryptoki::error::RvError;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki_sys::{
    CKA_CLASS, CKA_DECRYPT, CKA_ENCRYPT, CKA_KEY_TYPE, CKA_LABEL, CKA_SENSITIVE, CKA_TOKEN,
    CKA_VALUE, CKA_WRAP, CKA_WRAP_TEMPLATE, CKK_AES, CKM_AES_KEY_WRAP, CKO_SECRET_KEY,
    CKR_BUFFER_TOO_SMALL, CKR_OK, CK_ULONG,
};
use p256::pkcs8::DecodePrivateKey;
use rsa::pkcs1::DecodeRsaPrivateKey;
use softhsm_tests::ffi::Output;
use softhsm_tests::keys::{self, bytes, find, flag};
use softhsm_tests::verify::ec_point_from_attribute;
use softhsm_tests::{conformance, expect_rv, Divergence, Target};

const KEK: [u8; 32] = *b"wrapping key, known to the test!";
const VALUE: [u8; 32] = *b"the AES key that is to be moved.";
const MESSAGE: &[u8] = b"data under the moved key";

/// An AES key-encryption key with a known value: wraps and unwraps only.
fn kek(s: &Session, value: &[u8]) -> ObjectHandle {
    s.create_object(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(false),
        Attribute::Value(value.to_vec()),
        Attribute::Wrap(true),
        Attribute::Unwrap(true),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
    ])
    .expect("C_CreateObject wrapping key")
}

/// An extractable, sensitive AES data key with a known value.
fn data_key(s: &Session, value: &[u8]) -> ObjectHandle {
    s.create_object(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(false),
        Attribute::Value(value.to_vec()),
        Attribute::Sensitive(true),
        Attribute::Extractable(true),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
    ])
    .expect("C_CreateObject data key")
}

fn unwrap_template() -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
    ]
}

/// AES-GCM under `key` on the token equals RustCrypto's under `value`.
fn assert_key_value(s: &Session, key: ObjectHandle, value: &[u8; 32]) {
    let iv = [9u8; 12];
    let mut token_iv = iv;
    let params = cryptoki::mechanism::aead::GcmParams::new(&mut token_iv, b"", 128.into()).unwrap();
    let theirs = aes_gcm::Aes256Gcm::new(value.into())
        .encrypt(&iv.into(), MESSAGE)
        .unwrap();
    let ours = s
        .encrypt(&Mechanism::AesGcm(params), key, MESSAGE)
        .expect("C_Encrypt with the unwrapped key");
    assert_eq!(ours, theirs, "the unwrapped key has the wrapped value");
}

fn aes_key_wrap_round_trips_match_rfc_3394_and_5649(t: &Target) {
    let s = t.user_session();
    let kek = kek(&s, &KEK);
    let key = data_key(&s, &VALUE);
    let independent = aes_kw::KekAes256::from(KEK);
    for mechanism in [Mechanism::AesKeyWrap, Mechanism::AesKeyWrapPad] {
        let wrapped = s.wrap_key(&mechanism, kek, key).expect("C_WrapKey");
        assert_eq!(wrapped.len(), 40, "{mechanism:?}");
        let (theirs, opened) = match mechanism {
            Mechanism::AesKeyWrap => (
                independent.wrap_vec(&VALUE).unwrap(),
                independent.unwrap_vec(&wrapped).unwrap(),
            ),
            _ => (
                independent.wrap_with_padding_vec(&VALUE).unwrap(),
                independent.unwrap_with_padding_vec(&wrapped).unwrap(),
            ),
        };
        assert_eq!(opened, VALUE, "{mechanism:?}: RustCrypto opens it");
        assert_eq!(wrapped, theirs, "{mechanism:?} is deterministic");
        let unwrapped = s
            .unwrap_key(&mechanism, kek, &wrapped, &unwrap_template())
            .expect("C_UnwrapKey");
        assert_key_value(&s, unwrapped, &VALUE);
        for (ty, want) in [
            (AttributeType::Local, false),
            (AttributeType::AlwaysSensitive, false),
            (AttributeType::NeverExtractable, false),
        ] {
            assert_eq!(flag(&s, unwrapped, ty), Some(want), "{ty:?}");
        }
        // A key wrapped by RustCrypto unwraps on the token too.
        let other = [0x42u8; 32];
        let wrapped = match mechanism {
            Mechanism::AesKeyWrap => independent.wrap_vec(&other).unwrap(),
            _ => independent.wrap_with_padding_vec(&other).unwrap(),
        };
        let unwrapped = s
            .unwrap_key(&mechanism, kek, &wrapped, &unwrap_template())
            .expect("C_UnwrapKey of RustCrypto's wrap");
        assert_key_value(&s, unwrapped, &other);
        let mut tampered = wrapped;
        tampered[3] ^= 1;
        assert!(
            s.unwrap_key(&mechanism, kek, &tampered, &unwrap_template())
                .is_err(),
            "{mechanism:?}: a tampered wrap must not unwrap"
        );
    }
}

fn length_queries_and_short_buffers(t: &Target) {
    let s = t.user_session();
    let kek = kek(&s, &KEK);
    let key = data_key(&s, &VALUE);
    let raw = t.raw();
    let query = raw.wrap_key(
        s.handle(),
        CKM_AES_KEY_WRAP,
        kek.handle(),
        key.handle(),
        Output::Null,
    );
    assert_eq!((query.rv, query.len), (CKR_OK, 40));
    let short = raw.wrap_key(
        s.handle(),
        CKM_AES_KEY_WRAP,
        kek.handle(),
        key.handle(),
        Output::Bytes(39),
    );
    assert_eq!((short.rv, short.len), (CKR_BUFFER_TOO_SMALL, 40));
    let full = raw.wrap_key(
        s.handle(),
        CKM_AES_KEY_WRAP,
        kek.handle(),
        key.handle(),
        Output::Bytes(64),
    );
    assert_eq!((full.rv, full.len), (CKR_OK, 40));
    assert_eq!(
        aes_kw::KekAes256::from(KEK)
            .unwrap_vec(&full.bytes)
            .unwrap(),
        VALUE
    );
}

fn ec_private_keys_travel_as_pkcs8_and_sign_after_unwrapping(t: &Target) {
    let s = t.user_session();
    let kek = kek(&s, &KEK);
    let (public, private) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::Token(false),
                Attribute::EcParams(softhsm_tests::verify::Curve::P256.params_der()),
            ],
            &[
                Attribute::Token(false),
                Attribute::Sign(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(true),
            ],
        )
        .expect("C_GenerateKeyPair P-256");
    let point =
        ec_point_from_attribute(&bytes(&s, public, AttributeType::EcPoint).unwrap()).unwrap();
    let wrapped = s
        .wrap_key(&Mechanism::AesKeyWrapPad, kek, private)
        .expect("C_WrapKey of a private key");
    let mut pkcs8 = aes_kw::KekAes256::from(KEK)
        .unwrap_with_padding_vec(&wrapped)
        .expect("RustCrypto opens the RFC 5649 wrap");
    let der_len = der_length(&pkcs8);
    if t.diverges(Divergence::SoftHsmPadsWrappedPkcs8) {
        assert!(der_len < pkcs8.len() && pkcs8.len() % 8 == 0);
        pkcs8.truncate(der_len);
    }
    assert_eq!(der_len, pkcs8.len(), "exactly one PrivateKeyInfo inside");
    let secret = p256::SecretKey::from_pkcs8_der(&pkcs8).expect("a P-256 PKCS#8 PrivateKeyInfo");
    assert_eq!(
        secret.public_key().to_sec1_bytes().as_ref(),
        point.as_slice(),
        "the PKCS#8 holds the token's key"
    );
    let unwrapped = s
        .unwrap_key(
            &Mechanism::AesKeyWrapPad,
            kek,
            &wrapped,
            &[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::KeyType(KeyType::EC),
                Attribute::Token(false),
                Attribute::Sign(true),
            ],
        )
        .expect("C_UnwrapKey of a private key");
    assert_eq!(flag(&s, unwrapped, AttributeType::Local), Some(false));
    let digest = softhsm_tests::verify::sha256(b"signed after the move");
    let signature = s
        .sign(&Mechanism::Ecdsa, unwrapped, &digest)
        .expect("C_Sign with the unwrapped key");
    let verifier = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).unwrap();
    let signature = p256::ecdsa::Signature::from_slice(&signature).unwrap();
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    verifier
        .verify_prehash(&digest, &signature)
        .expect("RustCrypto verifies the unwrapped key's signature");
    // And the other way: a PKCS#8 made by RustCrypto, wrapped by aes-kw,
    // unwraps on the token into a key that signs as that key.
    use p256::pkcs8::EncodePrivateKey;
    let theirs = p256::SecretKey::from_slice(&[0x5c; 32]).unwrap();
    let pkcs8 = theirs.to_pkcs8_der().unwrap();
    let wrapped = aes_kw::KekAes256::from(KEK)
        .wrap_with_padding_vec(pkcs8.as_bytes())
        .unwrap();
    let imported = s
        .unwrap_key(
            &Mechanism::AesKeyWrapPad,
            kek,
            &wrapped,
            &[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::KeyType(KeyType::EC),
                Attribute::Token(false),
                Attribute::Sign(true),
            ],
        )
        .expect("C_UnwrapKey of RustCrypto's PKCS#8");
    let signature = s.sign(&Mechanism::Ecdsa, imported, &digest).unwrap();
    let signature = p256::ecdsa::Signature::from_slice(&signature).unwrap();
    p256::ecdsa::VerifyingKey::from(theirs.public_key())
        .verify_prehash(&digest, &signature)
        .expect("the unwrapped key is RustCrypto's key");
}

fn rsa_private_keys_travel_as_pkcs8_and_sign_after_unwrapping(t: &Target) {
    use rsa::pkcs8::DecodePrivateKey as _;
    use rsa::traits::PublicKeyParts;
    let s = t.user_session();
    let kek = kek(&s, &KEK);
    let (public, private) = keys::rsa_2048_pair(
        &s,
        &[],
        &[
            Attribute::Sign(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(true),
        ],
    )
    .expect("C_GenerateKeyPair RSA-2048");
    let n = bytes(&s, public, AttributeType::Modulus).unwrap();
    let e = bytes(&s, public, AttributeType::PublicExponent).unwrap();
    let wrapped = s
        .wrap_key(&Mechanism::AesKeyWrapPad, kek, private)
        .expect("C_WrapKey of an RSA private key");
    let mut pkcs8 = aes_kw::KekAes256::from(KEK)
        .unwrap_with_padding_vec(&wrapped)
        .expect("RustCrypto opens the RFC 5649 wrap");
    let der_len = der_length(&pkcs8);
    if t.diverges(Divergence::SoftHsmPadsWrappedPkcs8) && der_len < pkcs8.len() {
        pkcs8.truncate(der_len);
    }
    assert_eq!(der_len, pkcs8.len(), "exactly one PrivateKeyInfo inside");
    let theirs = rsa::RsaPrivateKey::from_pkcs8_der(&pkcs8).expect("an RSA PKCS#8 PrivateKeyInfo");
    assert_eq!(
        theirs.n().to_bytes_be(),
        n,
        "the PKCS#8 holds the token's key"
    );
    let unwrapped = s
        .unwrap_key(
            &Mechanism::AesKeyWrapPad,
            kek,
            &wrapped,
            &[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::KeyType(KeyType::RSA),
                Attribute::Token(false),
                Attribute::Sign(true),
            ],
        )
        .expect("C_UnwrapKey of an RSA private key");
    assert_eq!(
        bytes(&s, unwrapped, AttributeType::Modulus),
        Some(n.clone())
    );
    let message = b"signed by the moved RSA key";
    let signature = s
        .sign(&Mechanism::Sha256RsaPkcs, unwrapped, message)
        .expect("C_Sign with the unwrapped key");
    softhsm_tests::verify::PublicKey::Rsa { n, e }
        .verify_rsa_pkcs1_sha256(message, &signature)
        .expect("RustCrypto verifies the unwrapped key's signature");
}

/// The length of the DER element at the start of `der` (a SEQUENCE with
/// a short or a one- or two-byte long form length).
fn der_length(der: &[u8]) -> usize {
    match der[1] {
        short @ 0..=0x7f => 2 + usize::from(short),
        0x81 => 3 + usize::from(der[2]),
        0x82 => 4 + (usize::from(der[2]) << 8 | usize::from(der[3])),
        other => panic!("unexpected DER length byte {other:#x}"),
    }
}

fn oaep_sha1() -> Mechanism<'static> {
    Mechanism::RsaPkcsOaep(PkcsOaepParams::new(
        MechanismType::SHA1,
        PkcsMgfType::MGF1_SHA1,
        PkcsOaepSource::empty(),
    ))
}

/// An RSA-2048 key pair made by the openssl CLI (PKCS#1 DER).
fn openssl_rsa_key() -> rsa::RsaPrivateKey {
    let out = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-outform",
            "DER",
        ])
        .output()
        .expect("run openssl genpkey");
    assert!(out.status.success(), "openssl genpkey failed");
    rsa::RsaPrivateKey::from_pkcs1_der(&out.stdout).expect("openssl's RSAPrivateKey")
}

fn rsa_oaep_wraps_secret_keys_both_ways(t: &Target) {
    use rsa::traits::PublicKeyParts;
    let s = t.user_session();
    let key = data_key(&s, &VALUE);
    // Token → RustCrypto: wrap under an imported RSA public key.
    let theirs = openssl_rsa_key();
    let imported = s
        .create_object(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(KeyType::RSA),
            Attribute::Token(false),
            Attribute::Modulus(theirs.n().to_bytes_be()),
            Attribute::PublicExponent(theirs.e().to_bytes_be()),
            Attribute::Wrap(true),
        ])
        .expect("C_CreateObject RSA public key");
    let wrapped = s
        .wrap_key(&oaep_sha1(), imported, key)
        .expect("C_WrapKey OAEP");
    assert_eq!(wrapped.len(), 256);
    let opened = theirs
        .decrypt(rsa::Oaep::new::<sha1::Sha1>(), &wrapped)
        .expect("RustCrypto decrypts the OAEP wrap");
    assert_eq!(opened, VALUE);
    // RustCrypto → token: encrypt to a key pair generated on the token
    // whose private half unwraps (and does not decrypt).
    let (public, private) = keys::rsa_2048_pair(
        &s,
        &[Attribute::Wrap(true)],
        &[
            Attribute::Unwrap(true),
            Attribute::Decrypt(false),
            Attribute::Sign(false),
        ],
    )
    .expect("C_GenerateKeyPair RSA-2048 for unwrapping");
    let n = bytes(&s, public, AttributeType::Modulus).unwrap();
    let e = bytes(&s, public, AttributeType::PublicExponent).unwrap();
    let token_public = rsa::RsaPublicKey::new(
        rsa::BigUint::from_bytes_be(&n),
        rsa::BigUint::from_bytes_be(&e),
    )
    .unwrap();
    let other = [0x17u8; 32];
    let wrapped = token_public
        .encrypt(
            &mut rsa::rand_core::OsRng,
            rsa::Oaep::new::<sha1::Sha1>(),
            &other,
        )
        .unwrap();
    let unwrapped = s
        .unwrap_key(&oaep_sha1(), private, &wrapped, &unwrap_template())
        .expect("C_UnwrapKey OAEP");
    assert_key_value(&s, unwrapped, &other);
    // And the token's own wrap under its own public key round-trips.
    let wrapped = s
        .wrap_key(&oaep_sha1(), public, key)
        .expect("C_WrapKey OAEP");
    let unwrapped = s
        .unwrap_key(&oaep_sha1(), private, &wrapped, &unwrap_template())
        .expect("C_UnwrapKey OAEP of the token's wrap");
    assert_key_value(&s, unwrapped, &VALUE);
}

/// CKA_WRAP_TEMPLATE: a wrapping key wraps only keys that match it.
fn the_wrap_template_limits_what_a_key_wraps(t: &Target) {
    let s = t.user_session();
    let label = format!("template-bound wrapping key of {}", t.kind().name());
    let c_bool = |v: bool| vec![u8::from(v)];
    let c_ulong = |v: CK_ULONG| v.to_ne_bytes().to_vec();
    let flat = vec![
        (CKA_LABEL, label.as_bytes().to_vec()),
        (CKA_CLASS, c_ulong(CKO_SECRET_KEY)),
        (CKA_KEY_TYPE, c_ulong(CKK_AES)),
        (CKA_TOKEN, c_bool(false)),
        (CKA_VALUE, KEK.to_vec()),
        (CKA_WRAP, c_bool(true)),
        (CKA_ENCRYPT, c_bool(false)),
        (CKA_DECRYPT, c_bool(false)),
    ];
    let only_sensitive = vec![(CKA_SENSITIVE, c_bool(true))];
    let (rv, _) =
        t.raw()
            .create_object_nested(s.handle(), &flat, &[(CKA_WRAP_TEMPLATE, only_sensitive)]);
    assert_eq!(rv, CKR_OK, "C_CreateObject with CKA_WRAP_TEMPLATE");
    let found = find(&s, &[Attribute::Label(label.into_bytes())]);
    assert_eq!(found.len(), 1);
    let kek = found[0];
    let sensitive = data_key(&s, &VALUE);
    let wrapped = s
        .wrap_key(&Mechanism::AesKeyWrap, kek, sensitive)
        .expect("C_WrapKey of a key that matches the wrap template");
    assert_eq!(
        aes_kw::KekAes256::from(KEK).unwrap_vec(&wrapped).unwrap(),
        VALUE
    );
    let plain = s
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
            Attribute::Value(VALUE.to_vec()),
            Attribute::Sensitive(false),
            Attribute::Extractable(true),
        ])
        .unwrap();
    expect_rv(
        s.wrap_key(&Mechanism::AesKeyWrap, kek, plain),
        RvError::KeyNotWrappable,
    );
}

fn wrapping_mechanisms_are_listed(t: &Target) {
    for ty in [
        MechanismType::AES_KEY_WRAP,
        MechanismType::AES_KEY_WRAP_PAD,
        MechanismType::RSA_PKCS_OAEP,
    ] {
        let info = t
            .pkcs11()
            .get_mechanism_info(t.slot(), ty)
            .unwrap_or_else(|e| panic!("{ty}: {e}"));
        assert!(info.wrap() && info.unwrap(), "{ty}: {info:?}");
    }
}

conformance!(ready =>
    aes_key_wrap_round_trips_match_rfc_3394_and_5649,
    length_queries_and_short_buffers,
    ec_private_keys_travel_as_pkcs8_and_sign_after_unwrapping,
    rsa_private_keys_travel_as_pkcs8_and_sign_after_unwrapping,
    rsa_oaep_wraps_secret_keys_both_ways,
    the_wrap_template_limits_what_a_key_wraps,
    wrapping_mechanisms_are_listed,
);
