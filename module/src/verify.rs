//! C_VerifyInit / C_Verify / C_VerifyUpdate / C_VerifyFinal (PKCS#11 3.0
//! §5.13), computed in the module with aws-lc-rs from the public key's
//! attributes, fetched once at init. No key material is secret here, so
//! the daemon and card are not involved.
//!
//! Limits of aws-lc-rs's verification API, refused at init with
//! `CKR_MECHANISM_INVALID` / `CKR_MECHANISM_PARAM_INVALID`: PKCS#1 v1.5
//! with SHA-224; PSS with SHA-1/SHA-224, an MGF hash different from the
//! message hash, or a salt length other than the hash length; RSA keys
//! below 1024 bits (2048 for SHA-384). CKM_RSA_PKCS verifies DigestInfo
//! inputs only (`CKR_DATA_INVALID` otherwise), and CKM_ECDSA on P-521 takes
//! inputs of at most 64 bytes.

use aws_lc_rs::digest::{Context, Digest};
use aws_lc_rs::signature::{self, RsaParameters, RsaPublicKeyComponents, UnparsedPublicKey};
use cryptoki_sys::*;
use mesign_proto::HashAlg;

use crate::digest::algorithm;
use crate::entry::with_library;
use crate::error::Error;
use crate::ffi;
use crate::key_info::{strip_zeros, Curve, KeyAttrs, ED25519_SIGNATURE_LEN};
use crate::mechanism::{sign_mechanism, KeyFamily, Pss, SignKind, SignMechanism};
use crate::sessions::{drive, ensure_idle, Step};
use crate::symmetric;

/// A public key ready for verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PublicKey {
    Rsa { n: Vec<u8>, e: Vec<u8> },
    Ec { curve: Curve, point: Vec<u8> },
    Ed25519 { point: Vec<u8> },
}

impl PublicKey {
    fn from_attrs(attrs: &KeyAttrs, family: KeyFamily) -> Result<Self, Error> {
        Ok(match family {
            KeyFamily::Rsa => {
                let e = strip_zeros(attrs.public_exponent.as_deref().unwrap_or_default());
                if e.is_empty() {
                    return Err(Error::KeyTypeInconsistent);
                }
                PublicKey::Rsa {
                    n: attrs.modulus()?.to_vec(),
                    e: e.to_vec(),
                }
            }
            KeyFamily::Ec => {
                let curve = attrs.curve()?;
                let point = attrs
                    .ec_point
                    .as_deref()
                    .ok_or(Error::KeyTypeInconsistent)?;
                let point = uncompressed_point(point, curve).ok_or(Error::KeyTypeInconsistent)?;
                PublicKey::Ec {
                    curve,
                    point: point.to_vec(),
                }
            }
            KeyFamily::Edwards => PublicKey::Ed25519 {
                point: attrs.ed25519_point()?.to_vec(),
            },
        })
    }

    fn signature_len(&self) -> usize {
        match self {
            PublicKey::Rsa { n, .. } => n.len(),
            PublicKey::Ec { curve, .. } => 2 * curve.scalar_len(),
            PublicKey::Ed25519 { .. } => ED25519_SIGNATURE_LEN,
        }
    }
}

/// CKA_EC_POINT is a DER OCTET STRING around the uncompressed point; some
/// producers store the raw point, which is accepted too.
fn uncompressed_point(value: &[u8], curve: Curve) -> Option<&[u8]> {
    let len = 2 * curve.scalar_len() + 1;
    if value.len() == len && value[0] == 0x04 {
        return Some(value);
    }
    let body = match value {
        [0x04, n, rest @ ..] if usize::from(*n) < 0x80 => rest,
        [0x04, 0x81, n, rest @ ..] if *n >= 0x80 => rest,
        _ => return None,
    };
    (body.len() == len && body[0] == 0x04).then_some(body)
}

/// The aws-lc-rs parameters for PKCS#1 v1.5 with `hash`.
fn pkcs1_params(hash: HashAlg) -> Option<&'static RsaParameters> {
    match hash {
        HashAlg::Sha1 => Some(&signature::RSA_PKCS1_1024_8192_SHA1_FOR_LEGACY_USE_ONLY),
        HashAlg::Sha224 => None,
        HashAlg::Sha256 => Some(&signature::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY),
        HashAlg::Sha384 => Some(&signature::RSA_PKCS1_2048_8192_SHA384),
        HashAlg::Sha512 => Some(&signature::RSA_PKCS1_1024_8192_SHA512_FOR_LEGACY_USE_ONLY),
    }
}

/// The aws-lc-rs parameters for PSS (salt length = hash length, MGF1 with
/// the same hash).
fn pss_params(p: &Pss) -> Option<&'static RsaParameters> {
    if p.mgf_hash != p.hash || p.salt_len as usize != p.hash.len() {
        return None;
    }
    match p.hash {
        HashAlg::Sha256 => Some(&signature::RSA_PSS_2048_8192_SHA256),
        HashAlg::Sha384 => Some(&signature::RSA_PSS_2048_8192_SHA384),
        HashAlg::Sha512 => Some(&signature::RSA_PSS_2048_8192_SHA512),
        HashAlg::Sha1 | HashAlg::Sha224 => None,
    }
}

/// Refuses at init what [`verify`] could not do later.
fn check_supported(m: &SignMechanism) -> Result<(), Error> {
    match m.kind {
        SignKind::RsaPkcsHashed(h) if pkcs1_params(h).is_none() => {
            Err(Error::MechanismInvalid(m.ty))
        }
        SignKind::RsaPss(p) | SignKind::RsaPssHashed(p) if pss_params(&p).is_none() => {
            Err(Error::MechanismParamInvalid(m.ty))
        }
        _ => Ok(()),
    }
}

/// DER DigestInfo prefixes (RFC 8017 §9.2 note 1) by hash.
const DIGEST_INFO: [(HashAlg, &[u8]); 5] = [
    (
        HashAlg::Sha1,
        &[
            0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04,
            0x14,
        ],
    ),
    (
        HashAlg::Sha224,
        &[
            0x30, 0x2d, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x04, 0x05, 0x00, 0x04, 0x1c,
        ],
    ),
    (
        HashAlg::Sha256,
        &[
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x01, 0x05, 0x00, 0x04, 0x20,
        ],
    ),
    (
        HashAlg::Sha384,
        &[
            0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x02, 0x05, 0x00, 0x04, 0x30,
        ],
    ),
    (
        HashAlg::Sha512,
        &[
            0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x03, 0x05, 0x00, 0x04, 0x40,
        ],
    ),
];

/// The hash and digest of a DER DigestInfo, if `input` is exactly one.
pub(crate) fn parse_digest_info(input: &[u8]) -> Option<(HashAlg, &[u8])> {
    DIGEST_INFO.iter().find_map(|(h, prefix)| {
        let digest = input.strip_prefix(*prefix)?;
        (digest.len() == h.len()).then_some((*h, digest))
    })
}

/// ECDSA works on the hash truncated to the group order's bit length
/// (SEC 1 §4.1.4); expressing that as a digest of the curve's own hash
/// size lets aws-lc-rs verify any input length. Shorter inputs are the
/// same integer when zero-extended on the left.
fn ec_digest(curve: Curve, hash: &[u8]) -> Result<Digest, Error> {
    let (alg, n) = match curve {
        Curve::P256 => (HashAlg::Sha256, 32),
        Curve::P384 => (HashAlg::Sha384, 48),
        // The P-521 order has 521 bits; only inputs up to 64 bytes are
        // exactly representable as a SHA-512-sized digest.
        Curve::P521 => (HashAlg::Sha512, 64),
    };
    let mut bytes = vec![0u8; n];
    if hash.len() >= n {
        if curve == Curve::P521 && hash.len() > n {
            return Err(Error::DataLenRange { len: hash.len() });
        }
        bytes.copy_from_slice(&hash[..n]);
    } else {
        bytes[n - hash.len()..].copy_from_slice(hash);
    }
    Digest::import_less_safe(&bytes, algorithm(alg)).map_err(|_| Error::DataInvalid)
}

/// What is being verified: single-part data, or the final digest of a
/// multi-part hash-and-sign operation.
enum Message<'a> {
    Data(&'a [u8]),
    Digest(Digest),
}

/// Verifies `signature` over `message` with `key` per `m`.
fn verify(
    m: &SignMechanism,
    key: &PublicKey,
    message: Message<'_>,
    sig: &[u8],
) -> Result<(), Error> {
    if sig.len() != key.signature_len() {
        return Err(Error::SignatureLenRange {
            len: sig.len(),
            expected: key.signature_len(),
        });
    }
    let hashed = |h: HashAlg| -> Result<Digest, Error> {
        Ok(match &message {
            Message::Digest(d) => *d,
            Message::Data(data) => aws_lc_rs::digest::digest(algorithm(h), data),
        })
    };
    let bad = |_| Error::SignatureInvalid;
    match (key, m.kind) {
        (PublicKey::Rsa { n, e }, kind) => {
            let (params, digest) = match (kind, &message) {
                (SignKind::RsaPkcsHashed(h), _) => (pkcs1_params(h), hashed(h)?),
                (SignKind::RsaPssHashed(p), _) => (pss_params(&p), hashed(p.hash)?),
                (SignKind::RsaPkcs, Message::Data(data)) => {
                    if data.len() + 11 > n.len() {
                        return Err(Error::DataLenRange { len: data.len() });
                    }
                    let (h, d) = parse_digest_info(data).ok_or(Error::DataInvalid)?;
                    let d = Digest::import_less_safe(d, algorithm(h))
                        .map_err(|_| Error::DataInvalid)?;
                    (pkcs1_params(h), d)
                }
                (SignKind::RsaPss(p), Message::Data(data)) => {
                    if data.len() != p.hash.len() {
                        return Err(Error::DataLenRange { len: data.len() });
                    }
                    let d = Digest::import_less_safe(data, algorithm(p.hash))
                        .map_err(|_| Error::DataInvalid)?;
                    (pss_params(&p), d)
                }
                _ => return Err(Error::KeyTypeInconsistent),
            };
            let params = params.ok_or(Error::DataInvalid)?;
            let parsed = RsaPublicKeyComponents {
                n: n.as_slice(),
                e: e.as_slice(),
            }
            .to_parsed_public_key(params)
            .map_err(|_| Error::KeyTypeInconsistent)?;
            parsed.verify_digest_sig(&digest, sig).map_err(bad)
        }
        (PublicKey::Ec { curve, point }, kind) => {
            let hash = match (kind, message) {
                (SignKind::EcdsaHashed(h), message) => {
                    let d = match message {
                        Message::Digest(d) => d,
                        Message::Data(data) => aws_lc_rs::digest::digest(algorithm(h), data),
                    };
                    d.as_ref().to_vec()
                }
                (SignKind::Ecdsa, Message::Data(data)) => data.to_vec(),
                _ => return Err(Error::KeyTypeInconsistent),
            };
            let digest = ec_digest(*curve, &hash)?;
            let alg = match curve {
                Curve::P256 => &signature::ECDSA_P256_SHA256_FIXED,
                Curve::P384 => &signature::ECDSA_P384_SHA384_FIXED,
                Curve::P521 => &signature::ECDSA_P521_SHA512_FIXED,
            };
            UnparsedPublicKey::new(alg, point)
                .verify_digest(&digest, sig)
                .map_err(bad)
        }
        // Pure Ed25519 is single-part: the message, not a digest.
        (PublicKey::Ed25519 { point }, SignKind::Eddsa) => match message {
            Message::Data(data) => UnparsedPublicKey::new(&signature::ED25519, point)
                .verify(data, sig)
                .map_err(bad),
            Message::Digest(_) => Err(Error::FunctionNotSupported),
        },
        (PublicKey::Ed25519 { .. }, _) => Err(Error::KeyTypeInconsistent),
    }
}

/// An active verification.
pub(crate) struct VerifyOp {
    mechanism: SignMechanism,
    key: PublicKey,
    hasher: Option<Context>,
    multi_part: bool,
}

pub(crate) extern "C" fn fn_c_verify_init(
    session: CK_SESSION_HANDLE,
    mechanism: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    with_library(|lib| {
        let raw = ffi::mechanism(mechanism)?;
        if symmetric::mac_len(raw.ty).is_some() {
            return symmetric::mac_init(lib, session, &raw, key, false);
        }
        let mechanism = sign_mechanism(&raw)?;
        check_supported(&mechanism)?;
        lib.sessions.with(session, |s| {
            ensure_idle(&s.verify)?;
            ensure_idle(&s.secret.verify)?;
            let attrs = lib.keys.attrs(lib, session, s.slot, key, CKA_VERIFY)?;
            attrs.check(CKO_PUBLIC_KEY, &mechanism)?;
            s.verify = Some(VerifyOp {
                mechanism,
                key: PublicKey::from_attrs(&attrs, mechanism.family())?,
                hasher: mechanism.module_hash().map(|h| Context::new(algorithm(h))),
                multi_part: false,
            });
            Ok(())
        })?
    })
}

pub(crate) extern "C" fn fn_c_verify(
    session: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    data_len: CK_ULONG,
    signature: *mut CK_BYTE,
    signature_len: CK_ULONG,
) -> CK_RV {
    with_library(|lib| {
        lib.sessions.with(session, |s| {
            if s.secret.verify.is_some() {
                let mac = (signature, signature_len);
                return symmetric::mac_verify(lib, session, s, Some((data, data_len)), mac);
            }
            drive(&mut s.verify, |op| {
                if op.multi_part {
                    return Err(Error::OperationActive);
                }
                let data = ffi::input(data, data_len)?;
                let sig = ffi::input(signature, signature_len)?;
                verify(&op.mechanism, &op.key, Message::Data(data), sig)?;
                Ok(Step::Finished)
            })
        })?
    })
}

pub(crate) extern "C" fn fn_c_verify_update(
    session: CK_SESSION_HANDLE,
    part: *mut CK_BYTE,
    part_len: CK_ULONG,
) -> CK_RV {
    with_library(|lib| {
        lib.sessions.with(session, |s| {
            if s.secret.verify.is_some() {
                return symmetric::mac_update(&mut s.secret.verify, (part, part_len));
            }
            drive(&mut s.verify, |op| {
                let hasher = op.hasher.as_mut().ok_or(Error::FunctionNotSupported)?;
                hasher.update(ffi::input(part, part_len)?);
                op.multi_part = true;
                Ok(Step::Continue)
            })
        })?
    })
}

pub(crate) extern "C" fn fn_c_verify_final(
    session: CK_SESSION_HANDLE,
    signature: *mut CK_BYTE,
    signature_len: CK_ULONG,
) -> CK_RV {
    with_library(|lib| {
        lib.sessions.with(session, |s| {
            if s.secret.verify.is_some() {
                let mac = (signature, signature_len);
                return symmetric::mac_verify(lib, session, s, None, mac);
            }
            drive(&mut s.verify, |op| {
                let hasher = op.hasher.clone().ok_or(Error::FunctionNotSupported)?;
                let sig = ffi::input(signature, signature_len)?;
                verify(
                    &op.mechanism,
                    &op.key,
                    Message::Digest(hasher.finish()),
                    sig,
                )?;
                Ok(Step::Finished)
            })
        })?
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::rsa::KeySize;
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, RsaKeyPair};

    fn mech(ty: CK_MECHANISM_TYPE, kind: SignKind) -> SignMechanism {
        SignMechanism { ty, kind }
    }

    /// A DigestInfo over the hash of "doc".
    pub(crate) fn digest_info(hash: HashAlg) -> Vec<u8> {
        let (_, prefix) = DIGEST_INFO.iter().find(|(h, _)| *h == hash).unwrap();
        let mut info = prefix.to_vec();
        info.extend_from_slice(aws_lc_rs::digest::digest(algorithm(hash), b"doc").as_ref());
        info
    }

    #[test]
    fn ecdsa_raw_and_hashed_verify_and_reject_tampering() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap();
        let kp =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
                .unwrap();
        let mut der_point = vec![0x04, 65];
        der_point.extend_from_slice(kp.public_key().as_ref());
        let point = uncompressed_point(&der_point, Curve::P256)
            .unwrap()
            .to_vec();
        let key = PublicKey::Ec {
            curve: Curve::P256,
            point,
        };
        let sig = kp.sign(&rng, b"hello").unwrap();

        let hashed = mech(CKM_ECDSA_SHA256, SignKind::EcdsaHashed(HashAlg::Sha256));
        assert_eq!(
            verify(&hashed, &key, Message::Data(b"hello"), sig.as_ref()),
            Ok(())
        );
        assert_eq!(
            verify(&hashed, &key, Message::Data(b"hellO"), sig.as_ref()),
            Err(Error::SignatureInvalid)
        );
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b"hello");
        let raw = mech(CKM_ECDSA, SignKind::Ecdsa);
        assert_eq!(
            verify(&raw, &key, Message::Data(digest.as_ref()), sig.as_ref()),
            Ok(())
        );
        assert_eq!(
            verify(
                &raw,
                &key,
                Message::Data(digest.as_ref()),
                &sig.as_ref()[1..]
            ),
            Err(Error::SignatureLenRange {
                len: 63,
                expected: 64
            })
        );
        // A SHA-384 digest on P-256 is truncated to its leftmost 32 bytes.
        let sig384 = kp
            .sign_digest(
                &Digest::import_less_safe(
                    &aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA384, b"x").as_ref()[..32],
                    &aws_lc_rs::digest::SHA256,
                )
                .unwrap(),
            )
            .unwrap();
        let h384 = mech(CKM_ECDSA_SHA384, SignKind::EcdsaHashed(HashAlg::Sha384));
        assert_eq!(
            verify(&h384, &key, Message::Data(b"x"), sig384.as_ref()),
            Ok(())
        );
    }

    #[test]
    fn ed25519_verifies_single_part_messages_only() {
        use aws_lc_rs::signature::Ed25519KeyPair;
        let kp = Ed25519KeyPair::generate().unwrap();
        let key = PublicKey::Ed25519 {
            point: kp.public_key().as_ref().to_vec(),
        };
        let m = mech(CKM_EDDSA, SignKind::Eddsa);
        let sig = kp.sign(b"contract");
        assert_eq!(
            verify(&m, &key, Message::Data(b"contract"), sig.as_ref()),
            Ok(())
        );
        assert_eq!(
            verify(&m, &key, Message::Data(b"contracT"), sig.as_ref()),
            Err(Error::SignatureInvalid)
        );
        assert_eq!(
            verify(&m, &key, Message::Data(b"contract"), &sig.as_ref()[..63]),
            Err(Error::SignatureLenRange {
                len: 63,
                expected: 64
            })
        );
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b"x");
        assert_eq!(
            verify(&m, &key, Message::Digest(digest), sig.as_ref()),
            Err(Error::FunctionNotSupported)
        );
        let ecdsa = mech(CKM_ECDSA, SignKind::Ecdsa);
        assert_eq!(
            verify(&ecdsa, &key, Message::Data(b"x"), sig.as_ref()),
            Err(Error::KeyTypeInconsistent)
        );
    }

    #[test]
    fn rsa_pkcs1_and_pss_verify() {
        let kp = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
        let n = kp
            .public_key()
            .modulus()
            .big_endian_without_leading_zero()
            .to_vec();
        let e = kp
            .public_key()
            .exponent()
            .big_endian_without_leading_zero()
            .to_vec();
        let key = PublicKey::Rsa { n, e };
        let rng = SystemRandom::new();
        let mut sig = vec![0; kp.public_modulus_len()];
        kp.sign(&signature::RSA_PKCS1_SHA256, &rng, b"doc", &mut sig)
            .unwrap();
        let hashed = mech(
            CKM_SHA256_RSA_PKCS,
            SignKind::RsaPkcsHashed(HashAlg::Sha256),
        );
        assert_eq!(verify(&hashed, &key, Message::Data(b"doc"), &sig), Ok(()));
        let mut info = DIGEST_INFO[2].1.to_vec();
        info.extend_from_slice(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b"doc").as_ref(),
        );
        let raw = mech(CKM_RSA_PKCS, SignKind::RsaPkcs);
        assert_eq!(verify(&raw, &key, Message::Data(&info), &sig), Ok(()));
        assert_eq!(
            verify(&raw, &key, Message::Data(b"not a digest info"), &sig),
            Err(Error::DataInvalid)
        );
        sig[10] ^= 1;
        assert_eq!(
            verify(&hashed, &key, Message::Data(b"doc"), &sig),
            Err(Error::SignatureInvalid)
        );

        let mut pss_sig = vec![0; kp.public_modulus_len()];
        kp.sign(&signature::RSA_PSS_SHA256, &rng, b"doc", &mut pss_sig)
            .unwrap();
        let p = Pss {
            hash: HashAlg::Sha256,
            mgf_hash: HashAlg::Sha256,
            salt_len: 32,
        };
        let pss = mech(CKM_SHA256_RSA_PKCS_PSS, SignKind::RsaPssHashed(p));
        assert_eq!(verify(&pss, &key, Message::Data(b"doc"), &pss_sig), Ok(()));
        let odd_salt = mech(CKM_RSA_PKCS_PSS, SignKind::RsaPss(Pss { salt_len: 0, ..p }));
        assert_eq!(
            check_supported(&odd_salt),
            Err(Error::MechanismParamInvalid(CKM_RSA_PKCS_PSS))
        );
    }

    #[test]
    fn ec_point_forms_and_short_hashes() {
        let raw = [0x04; 65];
        assert_eq!(uncompressed_point(&raw, Curve::P256), Some(&raw[..]));
        let mut der = vec![0x04, 0x81, 133];
        der.extend([0x04; 133]);
        assert_eq!(
            uncompressed_point(&der, Curve::P521).map(<[u8]>::len),
            Some(133)
        );
        assert_eq!(uncompressed_point(&[0x04, 2, 0x04, 1], Curve::P256), None);
        let d = ec_digest(Curve::P256, &[1, 2]).unwrap();
        assert_eq!(&d.as_ref()[30..], &[1, 2]);
        assert!(ec_digest(Curve::P521, &[0; 66]).is_err());
    }
}
