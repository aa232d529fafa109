//! A key's public half as the token stores it (CKA_MODULUS and
//! CKA_PUBLIC_EXPONENT, or CKA_EC_PARAMS and CKA_EC_POINT) and as X.509
//! carries it (SubjectPublicKeyInfo), with the conversions both ways, so a
//! certificate can be matched against a key and a key exported as PEM.

use cryptoki_sys::*;
use x509_cert::der::asn1::{BitString, ObjectIdentifier, OctetString, UintRef};
use x509_cert::der::{Any, Decode, Encode};
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};

use crate::error::CliError;

/// rsaEncryption (RFC 8017).
pub const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
/// id-ecPublicKey (RFC 5480).
pub const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// id-Ed25519 (RFC 8410), the SPKI algorithm and the signature algorithm.
pub const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
/// CKA_EC_PARAMS for Ed25519 as pkcs11-tool and the token write it: the
/// PrintableString "edwards25519".
pub const ED25519_PARAMS: &[u8] = b"\x13\x0cedwards25519";

/// The named curves the card supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
    P521,
}

impl Curve {
    /// The curve's OID, as CKA_EC_PARAMS and the SPKI parameters name it.
    pub fn oid(self) -> ObjectIdentifier {
        match self {
            Curve::P256 => ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7"),
            Curve::P384 => ObjectIdentifier::new_unwrap("1.3.132.0.34"),
            Curve::P521 => ObjectIdentifier::new_unwrap("1.3.132.0.35"),
        }
    }

    fn from_oid(oid: &ObjectIdentifier) -> Option<Curve> {
        [Curve::P256, Curve::P384, Curve::P521]
            .into_iter()
            .find(|c| c.oid() == *oid)
    }

    /// Field size in bits.
    pub fn bits(self) -> u32 {
        match self {
            Curve::P256 => 256,
            Curve::P384 => 384,
            Curve::P521 => 521,
        }
    }

    /// Length of an uncompressed point.
    fn point_len(self) -> usize {
        1 + 2 * (self.bits() as usize).div_ceil(8)
    }
}

/// A public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// Modulus and exponent, big-endian without leading zeros.
    Rsa { modulus: Vec<u8>, exponent: Vec<u8> },
    /// A named curve and its uncompressed point.
    Ec { curve: Curve, point: Vec<u8> },
    /// The 32-byte encoded Ed25519 point (RFC 8032).
    Ed25519 { point: Vec<u8> },
}

impl PublicKey {
    /// The key described by a key object's attributes: `key_type`
    /// (CKA_KEY_TYPE), then CKA_MODULUS, CKA_PUBLIC_EXPONENT, CKA_EC_PARAMS,
    /// CKA_EC_POINT (each `None` when absent).
    pub fn from_attributes(
        key_type: CK_KEY_TYPE,
        modulus: Option<&[u8]>,
        exponent: Option<&[u8]>,
        ec_params: Option<&[u8]>,
        ec_point: Option<&[u8]>,
    ) -> Result<PublicKey, CliError> {
        let bad = |why: &str| CliError::malformed("the key's public attributes", why);
        match key_type {
            CKK_RSA => {
                let modulus = strip_zeros(modulus.ok_or_else(|| bad("no CKA_MODULUS"))?);
                let exponent = strip_zeros(exponent.ok_or_else(|| bad("no CKA_PUBLIC_EXPONENT"))?);
                if modulus.is_empty() || exponent.is_empty() {
                    return Err(bad("empty RSA modulus or exponent"));
                }
                Ok(PublicKey::Rsa {
                    modulus: modulus.to_vec(),
                    exponent: exponent.to_vec(),
                })
            }
            CKK_EC => {
                let oid =
                    ObjectIdentifier::from_der(ec_params.ok_or_else(|| bad("no CKA_EC_PARAMS"))?)
                        .map_err(|_| bad("CKA_EC_PARAMS is not a named curve"))?;
                let curve = Curve::from_oid(&oid).ok_or_else(|| bad("unsupported curve"))?;
                let point = ec_point.ok_or_else(|| bad("no CKA_EC_POINT"))?;
                // PKCS#11 2.40 wraps the point in a DER OCTET STRING; some
                // tokens give it raw.
                let point = match OctetString::from_der(point) {
                    Ok(os) if os.as_bytes().len() == curve.point_len() => os.as_bytes().to_vec(),
                    _ => point.to_vec(),
                };
                if point.len() != curve.point_len() || point[0] != 0x04 {
                    return Err(bad(
                        "CKA_EC_POINT is not an uncompressed point on its curve",
                    ));
                }
                Ok(PublicKey::Ec { curve, point })
            }
            CKK_EC_EDWARDS => {
                let params = ec_params.ok_or_else(|| bad("no CKA_EC_PARAMS"))?;
                if params != ED25519_PARAMS && params != ED25519.to_der().unwrap_or_default() {
                    return Err(bad("an Edwards curve other than Ed25519"));
                }
                let point = ec_point.ok_or_else(|| bad("no CKA_EC_POINT"))?;
                let point = match OctetString::from_der(point) {
                    Ok(os) => os.as_bytes().to_vec(),
                    Err(_) => point.to_vec(),
                };
                if point.len() != 32 {
                    return Err(bad("CKA_EC_POINT is not a 32-byte Ed25519 point"));
                }
                Ok(PublicKey::Ed25519 { point })
            }
            _ => Err(bad("neither an RSA, EC nor Ed25519 key")),
        }
    }

    /// The key in a SubjectPublicKeyInfo.
    pub fn from_spki(spki: &SubjectPublicKeyInfoOwned) -> Result<PublicKey, CliError> {
        let bad = |why: &str| CliError::malformed("the certificate's public key", why);
        let bits = spki
            .subject_public_key
            .as_bytes()
            .ok_or_else(|| bad("unused bits in the key"))?;
        if spki.algorithm.oid == RSA_ENCRYPTION {
            let parts: Vec<UintRef<'_>> =
                Vec::from_der(bits).map_err(|_| bad("not an RSAPublicKey"))?;
            match parts.as_slice() {
                [n, e] => Ok(PublicKey::Rsa {
                    modulus: n.as_bytes().to_vec(),
                    exponent: e.as_bytes().to_vec(),
                }),
                _ => Err(bad("not an RSAPublicKey")),
            }
        } else if spki.algorithm.oid == EC_PUBLIC_KEY {
            let oid: ObjectIdentifier = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as().ok())
                .ok_or_else(|| bad("EC key without a named curve"))?;
            let curve = Curve::from_oid(&oid).ok_or_else(|| bad("unsupported curve"))?;
            if bits.len() != curve.point_len() || bits[0] != 0x04 {
                return Err(bad("not an uncompressed point"));
            }
            Ok(PublicKey::Ec {
                curve,
                point: bits.to_vec(),
            })
        } else if spki.algorithm.oid == ED25519 {
            if spki.algorithm.parameters.is_some() || bits.len() != 32 {
                return Err(bad("not an Ed25519 key (RFC 8410)"));
            }
            Ok(PublicKey::Ed25519 {
                point: bits.to_vec(),
            })
        } else {
            Err(bad(&format!(
                "unsupported algorithm {}",
                spki.algorithm.oid
            )))
        }
    }

    /// The SubjectPublicKeyInfo, DER encoded.
    pub fn spki_der(&self) -> Result<Vec<u8>, CliError> {
        let fail = |e: x509_cert::der::Error| CliError::malformed("encoding the public key", e);
        let (algorithm, key) = match self {
            PublicKey::Rsa { modulus, exponent } => {
                let rsa_public_key = vec![
                    UintRef::new(modulus).map_err(fail)?,
                    UintRef::new(exponent).map_err(fail)?,
                ]
                .to_der()
                .map_err(fail)?;
                (
                    AlgorithmIdentifierOwned {
                        oid: RSA_ENCRYPTION,
                        parameters: Some(Any::null()),
                    },
                    rsa_public_key,
                )
            }
            PublicKey::Ec { curve, point } => (
                AlgorithmIdentifierOwned {
                    oid: EC_PUBLIC_KEY,
                    parameters: Some(Any::encode_from(&curve.oid()).map_err(fail)?),
                },
                point.clone(),
            ),
            PublicKey::Ed25519 { point } => (
                AlgorithmIdentifierOwned {
                    oid: ED25519,
                    parameters: None,
                },
                point.clone(),
            ),
        };
        SubjectPublicKeyInfoOwned {
            algorithm,
            subject_public_key: BitString::from_bytes(&key).map_err(fail)?,
        }
        .to_der()
        .map_err(fail)
    }

    /// The SubjectPublicKeyInfo as a PEM "PUBLIC KEY" block.
    pub fn pem(&self) -> Result<String, CliError> {
        let der = self.spki_der()?;
        Ok(pem_block("PUBLIC KEY", &der))
    }

    /// The key's kind as the CLI names it: `ec-p256`, `rsa-3072`, ...
    pub fn kind(&self) -> String {
        match self {
            PublicKey::Rsa { modulus, .. } => format!("rsa-{}", bit_length(modulus)),
            PublicKey::Ec { curve, .. } => format!("ec-p{}", curve.bits()),
            PublicKey::Ed25519 { .. } => "ed25519".into(),
        }
    }
}

fn strip_zeros(v: &[u8]) -> &[u8] {
    let first = v.iter().position(|&b| b != 0).unwrap_or(v.len());
    &v[first..]
}

fn bit_length(v: &[u8]) -> usize {
    let v = strip_zeros(v);
    match v.first() {
        Some(b) => v.len() * 8 - b.leading_zeros() as usize,
        None => 0,
    }
}

/// A PEM block with 64-column base64 lines (RFC 7468).
pub fn pem_block(label: &str, der: &[u8]) -> String {
    use x509_cert::der::pem::{encode_string, LineEnding};
    encode_string(label, LineEnding::LF, der).expect("PEM encoding of in-memory DER cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};

    #[test]
    fn ec_key_round_trips_through_attributes_and_spki() {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref()).unwrap();
        let point = pair.public_key().as_ref().to_vec();
        let params = Curve::P256.oid().to_der().unwrap();
        let wrapped = OctetString::new(point.clone()).unwrap().to_der().unwrap();
        let key =
            PublicKey::from_attributes(CKK_EC, None, None, Some(&params), Some(&wrapped)).unwrap();
        assert_eq!(key.kind(), "ec-p256");
        let der = key.spki_der().unwrap();
        let spki = SubjectPublicKeyInfoOwned::from_der(&der).unwrap();
        assert_eq!(PublicKey::from_spki(&spki).unwrap(), key);
        // A raw point reads the same.
        let raw =
            PublicKey::from_attributes(CKK_EC, None, None, Some(&params), Some(&point)).unwrap();
        assert_eq!(raw, key);
        assert!(key
            .pem()
            .unwrap()
            .starts_with("-----BEGIN PUBLIC KEY-----\n"));
    }

    #[test]
    fn rsa_key_encodes_with_leading_zero_and_null_params() {
        let mut modulus = vec![0xc1; 256];
        modulus[255] = 0x01;
        let key =
            PublicKey::from_attributes(CKK_RSA, Some(&modulus), Some(&[0, 1, 0, 1]), None, None)
                .unwrap();
        assert_eq!(key.kind(), "rsa-2048");
        let der = key.spki_der().unwrap();
        let spki = SubjectPublicKeyInfoOwned::from_der(&der).unwrap();
        assert_eq!(spki.algorithm.oid, RSA_ENCRYPTION);
        assert_eq!(spki.algorithm.parameters, Some(Any::null()));
        let inner = spki.subject_public_key.as_bytes().unwrap();
        // SEQUENCE, long length, INTEGER with a leading zero before 0xc1.
        assert_eq!(&inner[..4], &[0x30, 0x82, 0x01, 0x0a]);
        assert_eq!(&inner[4..9], &[0x02, 0x82, 0x01, 0x01, 0x00]);
        assert_eq!(PublicKey::from_spki(&spki).unwrap(), key);
    }

    #[test]
    fn ed25519_key_round_trips_through_attributes_and_spki() {
        let mut der_point = vec![0x04, 0x20];
        der_point.extend_from_slice(&[0xab; 32]);
        let key = PublicKey::from_attributes(
            CKK_EC_EDWARDS,
            None,
            None,
            Some(ED25519_PARAMS),
            Some(&der_point),
        )
        .unwrap();
        assert_eq!(key.kind(), "ed25519");
        // RFC 8410 §10.1: SEQUENCE { SEQUENCE { id-Ed25519 }, BIT STRING }.
        let spki = key.spki_der().unwrap();
        assert_eq!(
            &spki[..12],
            &[0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00]
        );
        assert_eq!(&spki[12..], &[0xab; 32]);
        let parsed = SubjectPublicKeyInfoOwned::from_der(&spki).unwrap();
        assert_eq!(PublicKey::from_spki(&parsed).unwrap(), key);
        let ed448 = b"\x13\x0aedwards448";
        assert!(PublicKey::from_attributes(
            CKK_EC_EDWARDS,
            None,
            None,
            Some(ed448),
            Some(&der_point)
        )
        .is_err());
    }

    #[test]
    fn bad_attributes_are_refused() {
        let params = Curve::P384.oid().to_der().unwrap();
        assert!(
            PublicKey::from_attributes(CKK_EC, None, None, Some(&params), Some(&[4; 65])).is_err()
        );
        assert!(PublicKey::from_attributes(CKK_RSA, None, Some(&[3]), None, None).is_err());
        assert!(PublicKey::from_attributes(CKK_AES, None, None, None, None).is_err());
    }
}
