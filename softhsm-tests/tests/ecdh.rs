//! ECDH key agreement (CKM_ECDH1_DERIVE) against our module and SoftHSMv2:
//! both sides of two key pairs derive the same key, the derived keys match
//! an independent computation (RustCrypto `p256` / `p384` ECDH, the X9.63
//! KDF written out here over `sha2`), the derived key's attributes, and
//! the refusals: points off the curve, the point at infinity, points of
//! another curve or truncated (the invalid-curve attack, opencryptoki
//! CVE-2021-3798), and base keys without CKA_DERIVE.
//!
//! A derived key's value is never readable on our token, so the cases
//! compare by use: the derived AES key's GCM ciphertext, or the derived
//! generic secret's HMAC, against the same operation under the key
//! RustCrypto computes.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use cryptoki::error::RvError;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use hmac::Mac;
use sha2::Digest;
use softhsm_tests::keys::{bytes, flag};
use softhsm_tests::verify::ec_point_from_attribute;
use softhsm_tests::{conformance, expect_rv, Divergence, Kind, Target};

const MESSAGE: &[u8] = b"agreed keys encrypt this";

/// The curves, by their DER-encoded named-curve OIDs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Curve {
    P256,
    P384,
    P521,
}

impl Curve {
    fn params(self) -> Vec<u8> {
        match self {
            Curve::P256 => vec![0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
            Curve::P384 => vec![0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22],
            Curve::P521 => vec![0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23],
        }
    }
}

/// A session EC key pair whose private half may derive (or not); returns
/// the private handle and the raw uncompressed public point.
fn ec_pair(s: &Session, curve: Curve, derive: bool) -> (ObjectHandle, Vec<u8>) {
    let (public, private) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[Attribute::Token(false), Attribute::EcParams(curve.params())],
            &[
                Attribute::Token(false),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Derive(derive),
            ],
        )
        .expect("C_GenerateKeyPair EC");
    let point = bytes(s, public, AttributeType::EcPoint).expect("CKA_EC_POINT");
    (
        private,
        ec_point_from_attribute(&point).expect("an uncompressed point"),
    )
}

fn aes_template(len: u64) -> Vec<Attribute> {
    vec![
        Attribute::Token(false),
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(len.into()),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        // SoftHSMv2 defaults to false (as PKCS#11 does), ours to true.
        Attribute::Sensitive(true),
    ]
}

fn generic_template(len: Option<u64>) -> Vec<Attribute> {
    let mut template = vec![
        Attribute::Token(false),
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::GENERIC_SECRET),
        Attribute::Sign(true),
        Attribute::Verify(true),
    ];
    if let Some(len) = len {
        template.push(Attribute::ValueLen(len.into()));
    }
    template
}

fn derive(
    s: &Session,
    base: ObjectHandle,
    kdf: EcKdf<'_>,
    peer: &[u8],
    template: &[Attribute],
) -> cryptoki::error::Result<ObjectHandle> {
    let params = Ecdh1DeriveParams::new(kdf, peer);
    s.derive_key(&Mechanism::Ecdh1Derive(params), base, template)
}

fn seal(s: &Session, key: ObjectHandle) -> Vec<u8> {
    let mut iv = [9u8; 12];
    let gcm = Mechanism::AesGcm(GcmParams::new(&mut iv, b"aad", 128.into()).unwrap());
    s.encrypt(&gcm, key, MESSAGE).expect("C_Encrypt AES-GCM")
}

fn open(s: &Session, key: ObjectHandle, sealed: &[u8]) -> Vec<u8> {
    let mut iv = [9u8; 12];
    let gcm = Mechanism::AesGcm(GcmParams::new(&mut iv, b"aad", 128.into()).unwrap());
    s.decrypt(&gcm, key, sealed).expect("C_Decrypt AES-GCM")
}

/// What RustCrypto's AES-GCM makes of MESSAGE under `key`.
fn rustcrypto_seal(key: &[u8]) -> Vec<u8> {
    let payload = Payload {
        msg: MESSAGE,
        aad: b"aad",
    };
    let nonce = aes_gcm::Nonce::from([9u8; 12]);
    match key.len() {
        16 => aes_gcm::Aes128Gcm::new_from_slice(key)
            .unwrap()
            .encrypt(&nonce, payload),
        32 => aes_gcm::Aes256Gcm::new_from_slice(key)
            .unwrap()
            .encrypt(&nonce, payload),
        other => panic!("no AES-GCM for {other}-byte keys here"),
    }
    .unwrap()
}

/// The ANSI X9.63 KDF over SHA-256, written from SEC 1 §3.6.1.
fn x963_sha256(z: &[u8], shared: &[u8], len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for counter in 1u32.. {
        if out.len() >= len {
            break;
        }
        let mut h = sha2::Sha256::new();
        h.update(z);
        h.update(counter.to_be_bytes());
        h.update(shared);
        out.extend_from_slice(&h.finalize());
    }
    out.truncate(len);
    out
}

/// A peer key whose scalar RustCrypto knows, its uncompressed point, and
/// the shared secret with the token's point `ours`.
fn rustcrypto_peer(curve: Curve, ours: &[u8]) -> (Vec<u8>, Vec<u8>) {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    match curve {
        Curve::P256 => {
            let secret = p256::SecretKey::from_slice(&[0x5a; 32]).unwrap();
            let point = secret
                .public_key()
                .to_encoded_point(false)
                .as_bytes()
                .to_vec();
            let theirs = p256::PublicKey::from_sec1_bytes(ours).unwrap();
            let z = p256::ecdh::diffie_hellman(secret.to_nonzero_scalar(), theirs.as_affine());
            (point, z.raw_secret_bytes().to_vec())
        }
        Curve::P384 => {
            let secret = p384::SecretKey::from_slice(&[0x5a; 48]).unwrap();
            let point = secret
                .public_key()
                .to_encoded_point(false)
                .as_bytes()
                .to_vec();
            let theirs = p384::PublicKey::from_sec1_bytes(ours).unwrap();
            let z = p384::ecdh::diffie_hellman(secret.to_nonzero_scalar(), theirs.as_affine());
            (point, z.raw_secret_bytes().to_vec())
        }
        Curve::P521 => unreachable!("no RustCrypto P-521 here"),
    }
}

/// DER OCTET STRING around a point (what older clients send).
fn octet_string(point: &[u8]) -> Vec<u8> {
    let mut der = vec![0x04];
    if point.len() >= 0x80 {
        der.push(0x81);
    }
    der.push(point.len() as u8);
    der.extend_from_slice(point);
    der
}

fn both_sides_agree_on_every_curve(t: &Target) {
    let s = t.user_session();
    for curve in [Curve::P256, Curve::P384, Curve::P521] {
        let (a, a_point) = ec_pair(&s, curve, true);
        let (b, b_point) = ec_pair(&s, curve, true);
        let mut kdfs = vec![("CKD_NULL", EcKdf::null())];
        if !t.diverges(Divergence::SoftHsmEcdhOnlyNullKdf) {
            kdfs.push(("CKD_SHA256_KDF", EcKdf::sha256(b"session 1")));
            kdfs.push(("CKD_SHA224_KDF", EcKdf::sha224(b"x")));
            kdfs.push(("CKD_SHA384_KDF", EcKdf::sha384(b"y")));
            kdfs.push(("CKD_SHA512_KDF", EcKdf::sha512(b"")));
        }
        for (name, kdf) in kdfs {
            let ab = derive(&s, a, kdf, &b_point, &aes_template(32)).expect(name);
            // The other side gives its peer's point DER-wrapped.
            let wrapped = octet_string(&a_point);
            let ba = derive(&s, b, kdf, &wrapped, &aes_template(32)).expect(name);
            let sealed = seal(&s, ab);
            assert_eq!(open(&s, ba, &sealed), MESSAGE, "{curve:?} {name}");
            assert_eq!(seal(&s, ba), sealed, "{curve:?} {name}");
        }
    }
}

fn derived_keys_match_rustcrypto(t: &Target) {
    let s = t.user_session();
    for curve in [Curve::P256, Curve::P384] {
        let (ours, our_point) = ec_pair(&s, curve, true);
        let (peer_point, z) = rustcrypto_peer(curve, &our_point);
        // CKD_NULL: an AES-128 key is the trailing 16 bytes of Z (PKCS#11
        // truncates shared secrets from the leading end).
        let aes = derive(&s, ours, EcKdf::null(), &peer_point, &aes_template(16)).unwrap();
        assert_eq!(
            seal(&s, aes),
            rustcrypto_seal(&z[z.len() - 16..]),
            "{curve:?} CKD_NULL AES-128"
        );
        // CKD_NULL, generic secret without CKA_VALUE_LEN: all of Z.
        let generic = derive(
            &s,
            ours,
            EcKdf::null(),
            &peer_point,
            &generic_template(None),
        )
        .unwrap();
        let mac = s.sign(&Mechanism::Sha256Hmac, generic, MESSAGE).unwrap();
        let mut want = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(&z).unwrap();
        want.update(MESSAGE);
        assert_eq!(mac, want.finalize().into_bytes().to_vec(), "{curve:?} HMAC");
        if t.diverges(Divergence::SoftHsmEcdhOnlyNullKdf) {
            expect_rv(
                derive(
                    &s,
                    ours,
                    EcKdf::sha256(b"info"),
                    &peer_point,
                    &aes_template(32),
                ),
                RvError::MechanismParamInvalid,
            );
            continue;
        }
        let kdf = derive(
            &s,
            ours,
            EcKdf::sha256(b"shared info"),
            &peer_point,
            &aes_template(32),
        )
        .unwrap();
        assert_eq!(
            seal(&s, kdf),
            rustcrypto_seal(&x963_sha256(&z, b"shared info", 32)),
            "{curve:?} CKD_SHA256_KDF"
        );
        // More bytes than one hash gives, through HMAC.
        let long = derive(
            &s,
            ours,
            EcKdf::sha256(b""),
            &peer_point,
            &generic_template(Some(40)),
        )
        .unwrap();
        let mac = s.sign(&Mechanism::Sha256Hmac, long, MESSAGE).unwrap();
        let mut want =
            <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(&x963_sha256(&z, b"", 40)).unwrap();
        want.update(MESSAGE);
        assert_eq!(mac, want.finalize().into_bytes().to_vec());
    }
}

fn derived_key_attributes(t: &Target) {
    let s = t.user_session();
    let (a, _) = ec_pair(&s, Curve::P256, true);
    let (_, b_point) = ec_pair(&s, Curve::P256, true);
    let key = derive(&s, a, EcKdf::null(), &b_point, &aes_template(16)).unwrap();
    for (ty, want) in [
        (AttributeType::Local, false),
        (AttributeType::Sensitive, true),
        (AttributeType::AlwaysSensitive, true),
        (AttributeType::NeverExtractable, true),
    ] {
        assert_eq!(flag(&s, key, ty), Some(want), "{ty:?}");
    }
    // A derived key that is made extractable was never unextractable.
    let mut template = aes_template(16);
    template.push(Attribute::Extractable(true));
    let key = derive(&s, a, EcKdf::null(), &b_point, &template).unwrap();
    assert_eq!(flag(&s, key, AttributeType::NeverExtractable), Some(false));
    if t.kind() == Kind::Mesign {
        // Our template rules: AES needs CKA_VALUE_LEN, CKD_NULL cannot
        // give more than Z.
        let mut no_len = aes_template(16);
        no_len.retain(|a| a.attribute_type() != AttributeType::ValueLen);
        expect_rv(
            derive(&s, a, EcKdf::null(), &b_point, &no_len),
            RvError::TemplateIncomplete,
        );
        expect_rv(
            derive(&s, a, EcKdf::null(), &b_point, &generic_template(Some(33))),
            RvError::AttributeValueInvalid,
        );
        // P-521's shared secret (66 bytes) is longer than our generic
        // secrets: the length must be given, and then it works.
        let (c, _) = ec_pair(&s, Curve::P521, true);
        let (_, d_point) = ec_pair(&s, Curve::P521, true);
        expect_rv(
            derive(&s, c, EcKdf::null(), &d_point, &generic_template(None)),
            RvError::TemplateIncomplete,
        );
        derive(&s, c, EcKdf::null(), &d_point, &generic_template(Some(64))).unwrap();
    }
}

fn invalid_peer_points_are_refused(t: &Target) {
    let s = t.user_session();
    let (a, _) = ec_pair(&s, Curve::P256, true);
    let (_, good) = ec_pair(&s, Curve::P256, true);
    let (_, p384) = ec_pair(&s, Curve::P384, true);
    let mut off_curve = good.clone();
    off_curve[64] ^= 1;
    let mut zeros = vec![0u8; 65];
    zeros[0] = 4;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("off the curve", off_curve.clone()),
        ("off the curve, DER-wrapped", octet_string(&off_curve)),
        ("the point at infinity", vec![0]),
        ("all-zero coordinates", zeros),
        ("a P-384 point", p384),
        ("truncated", good[..64].to_vec()),
        ("compressed form of another length", good[..33].to_vec()),
    ];
    for (what, point) in cases {
        let got = derive(&s, a, EcKdf::null(), &point, &aes_template(16));
        match got {
            Err(cryptoki::error::Error::Pkcs11(rv, _)) => {
                let want = if t.diverges(Divergence::SoftHsmEcdhBadPointIsGeneralError) {
                    RvError::GeneralError
                } else {
                    RvError::MechanismParamInvalid
                };
                assert_eq!(rv, want, "{what}");
            }
            other => panic!("{what}: accepted ({other:?})"),
        }
    }
    // The good point still works after all that.
    derive(&s, a, EcKdf::null(), &good, &aes_template(16)).unwrap();
}

fn keys_that_may_not_derive_are_refused(t: &Target) {
    let s = t.user_session();
    let (no_derive, _) = ec_pair(&s, Curve::P256, false);
    let (_, peer) = ec_pair(&s, Curve::P256, true);
    expect_rv(
        derive(&s, no_derive, EcKdf::null(), &peer, &aes_template(16)),
        RvError::KeyFunctionNotPermitted,
    );
    // CKA_ALLOWED_MECHANISMS without CKM_ECDH1_DERIVE.
    let (public, private) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::Token(false),
                Attribute::EcParams(Curve::P256.params()),
            ],
            &[
                Attribute::Token(false),
                Attribute::Derive(true),
                Attribute::AllowedMechanisms(vec![MechanismType::ECDSA]),
            ],
        )
        .unwrap();
    let _ = public;
    let got = derive(&s, private, EcKdf::null(), &peer, &aes_template(16));
    if t.kind() == Kind::Mesign {
        expect_rv(got, RvError::MechanismInvalid);
    } else {
        assert!(
            got.is_err(),
            "SoftHSMv2 derived despite CKA_ALLOWED_MECHANISMS"
        );
    }
}

fn mechanism_info_lists_ecdh(t: &Target) {
    let info = t
        .pkcs11()
        .get_mechanism_info(t.slot(), MechanismType::ECDH1_DERIVE)
        .expect("C_GetMechanismInfo CKM_ECDH1_DERIVE");
    assert!(info.derive(), "CKF_DERIVE");
    if t.kind() == Kind::Mesign {
        assert!(info.ec_f_p() && info.ec_uncompressed());
        assert_eq!((info.min_key_size(), info.max_key_size()), (256, 521));
    }
}

conformance!(ready =>
    both_sides_agree_on_every_curve,
    derived_keys_match_rustcrypto,
    derived_key_attributes,
    invalid_peer_points_are_refused,
    keys_that_may_not_derive_are_refused,
    mechanism_info_lists_ecdh,
);
