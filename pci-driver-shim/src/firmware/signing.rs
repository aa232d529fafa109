//! Signature schemes: checking a request's scheme and input against the key
//! and turning the input into the digest aws-lc-rs signs.

use aws_lc_rs::digest::{self, Digest};
use aws_lc_rs::signature::{self, RsaEncoding};

use super::keys::LoadedKey;
use crate::command::{CardFault, Curve, Hash, SignScheme};

/// Signs `input` under `scheme`; the caller has already checked the policy.
pub fn sign(key: &LoadedKey, scheme: SignScheme, input: &[u8]) -> Result<Vec<u8>, CardFault> {
    match (key, scheme) {
        (LoadedKey::Rsa(key), SignScheme::RsaPkcs1(hash)) => {
            rsa_sign(key, pkcs1_encoding(hash)?, hash, input)
        }
        (LoadedKey::Rsa(key), SignScheme::RsaPkcs1DigestInfo) => {
            let (hash, digest) = parse_digest_info(input)?;
            rsa_sign(key, pkcs1_encoding(hash)?, hash, digest)
        }
        (
            LoadedKey::Rsa(key),
            SignScheme::RsaPss {
                hash,
                mgf_hash,
                salt_len,
            },
        ) => {
            // aws-lc-rs signs PSS with MGF1 over the same hash and a salt as
            // long as the digest; other combinations are refused rather than
            // silently signed differently from what was asked.
            if mgf_hash != hash || salt_len as usize != hash_len(hash) {
                return Err(CardFault::BadParameters);
            }
            rsa_sign(key, pss_encoding(hash)?, hash, input)
        }
        (LoadedKey::Ec { curve, key }, SignScheme::Ecdsa) => {
            let digest = ecdsa_digest(*curve, input)?;
            let sig = key.sign_digest(&digest).map_err(|_| CardFault::Internal)?;
            Ok(sig.as_ref().to_vec())
        }
        // Pure Ed25519 signs the message itself; an empty one is valid.
        (LoadedKey::Ed25519(key), SignScheme::Ed25519) => key
            .try_sign(input)
            .map(|sig| sig.as_ref().to_vec())
            .map_err(|_| CardFault::Internal),
        _ => Err(CardFault::KeyTypeMismatch),
    }
}

fn rsa_sign(
    key: &aws_lc_rs::rsa::KeyPair,
    encoding: &'static dyn RsaEncoding,
    hash: Hash,
    input: &[u8],
) -> Result<Vec<u8>, CardFault> {
    let digest = Digest::import_less_safe(input, digest_algorithm(hash)?)
        .map_err(|_| CardFault::BadInput)?;
    let mut sig = vec![0; key.public_modulus_len()];
    key.sign_digest(encoding, &digest, &mut sig)
        .map_err(|_| CardFault::Internal)?;
    Ok(sig)
}

pub fn hash_len(hash: Hash) -> usize {
    match hash {
        Hash::Sha1 => 20,
        Hash::Sha224 => 28,
        Hash::Sha256 => 32,
        Hash::Sha384 => 48,
        Hash::Sha512 => 64,
    }
}

fn digest_algorithm(hash: Hash) -> Result<&'static digest::Algorithm, CardFault> {
    match hash {
        Hash::Sha256 => Ok(&digest::SHA256),
        Hash::Sha384 => Ok(&digest::SHA384),
        Hash::Sha512 => Ok(&digest::SHA512),
        // aws-lc-rs offers no RSA signing encodings for these.
        Hash::Sha1 | Hash::Sha224 => Err(CardFault::BadParameters),
    }
}

fn pkcs1_encoding(hash: Hash) -> Result<&'static dyn RsaEncoding, CardFault> {
    match hash {
        Hash::Sha256 => Ok(&signature::RSA_PKCS1_SHA256),
        Hash::Sha384 => Ok(&signature::RSA_PKCS1_SHA384),
        Hash::Sha512 => Ok(&signature::RSA_PKCS1_SHA512),
        Hash::Sha1 | Hash::Sha224 => Err(CardFault::BadParameters),
    }
}

fn pss_encoding(hash: Hash) -> Result<&'static dyn RsaEncoding, CardFault> {
    match hash {
        Hash::Sha256 => Ok(&signature::RSA_PSS_SHA256),
        Hash::Sha384 => Ok(&signature::RSA_PSS_SHA384),
        Hash::Sha512 => Ok(&signature::RSA_PSS_SHA512),
        Hash::Sha1 | Hash::Sha224 => Err(CardFault::BadParameters),
    }
}

/// The DER prefix of a DigestInfo (SEQUENCE { AlgorithmIdentifier with NULL
/// parameters, OCTET STRING }) for each hash, up to the digest bytes.
const DIGEST_INFO_PREFIXES: [(Hash, &[u8]); 5] = [
    (
        Hash::Sha1,
        &[
            0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04,
            0x14,
        ],
    ),
    (
        Hash::Sha224,
        &[
            0x30, 0x2d, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x04, 0x05, 0x00, 0x04, 0x1c,
        ],
    ),
    (
        Hash::Sha256,
        &[
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x01, 0x05, 0x00, 0x04, 0x20,
        ],
    ),
    (
        Hash::Sha384,
        &[
            0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x02, 0x05, 0x00, 0x04, 0x30,
        ],
    ),
    (
        Hash::Sha512,
        &[
            0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x03, 0x05, 0x00, 0x04, 0x40,
        ],
    ),
];

/// Strictly parses a DER DigestInfo: exactly a known prefix followed by a
/// digest of the right length, nothing else. Because aws-lc-rs re-encodes
/// the DigestInfo itself, only these exact encodings can be honoured.
pub fn parse_digest_info(input: &[u8]) -> Result<(Hash, &[u8]), CardFault> {
    DIGEST_INFO_PREFIXES
        .iter()
        .find_map(|(hash, prefix)| {
            let digest = input.strip_prefix(*prefix)?;
            (digest.len() == hash_len(*hash)).then_some((*hash, digest))
        })
        .ok_or(CardFault::BadInput)
}

/// Normalises an ECDSA input (a hash of any length) to the digest size of
/// the curve's fixed signing algorithm, preserving the integer ECDSA
/// derives from it (leftmost order-size bytes; shorter inputs left-padded).
fn ecdsa_digest(curve: Curve, input: &[u8]) -> Result<Digest, CardFault> {
    if input.is_empty() {
        return Err(CardFault::BadInput);
    }
    let (size, algorithm) = match curve {
        Curve::P256 => (32, &digest::SHA256),
        Curve::P384 => (48, &digest::SHA384),
        // The P-521 order is 521 bits, longer than any hash the signing
        // algorithm takes; a zero-padded 64-byte value is the same integer.
        Curve::P521 => {
            if input.len() > 64 {
                return Err(CardFault::BadInput);
            }
            (64, &digest::SHA512)
        }
    };
    let mut padded = [0u8; 64];
    let taken = &input[..input.len().min(size)];
    padded[size - taken.len()..size].copy_from_slice(taken);
    Digest::import_less_safe(&padded[..size], algorithm).map_err(|_| CardFault::Internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_info_parsing_is_exact() {
        let mut di = DIGEST_INFO_PREFIXES[2].1.to_vec();
        di.extend_from_slice(&[0xab; 32]);
        assert_eq!(
            parse_digest_info(&di).unwrap(),
            (Hash::Sha256, &[0xab; 32][..])
        );
        // One byte short, one byte long, empty, trailing garbage.
        assert_eq!(
            parse_digest_info(&di[..di.len() - 1]),
            Err(CardFault::BadInput)
        );
        let mut long = di.clone();
        long.push(0);
        assert_eq!(parse_digest_info(&long), Err(CardFault::BadInput));
        assert_eq!(parse_digest_info(&[]), Err(CardFault::BadInput));
        // A raw digest is not a DigestInfo.
        assert_eq!(parse_digest_info(&[0xab; 32]), Err(CardFault::BadInput));
        // The SHA-1 variant is recognised (and later refused as a parameter).
        let mut sha1 = DIGEST_INFO_PREFIXES[0].1.to_vec();
        sha1.extend_from_slice(&[1; 20]);
        assert_eq!(parse_digest_info(&sha1).unwrap().0, Hash::Sha1);
    }

    #[test]
    fn ecdsa_inputs_are_truncated_or_padded() {
        let d = ecdsa_digest(Curve::P256, &[1; 64]).unwrap();
        assert_eq!(d.as_ref(), &[1; 32]);
        let d = ecdsa_digest(Curve::P256, &[2; 20]).unwrap();
        assert_eq!(&d.as_ref()[..12], &[0; 12]);
        assert_eq!(&d.as_ref()[12..], &[2; 20]);
        let d = ecdsa_digest(Curve::P384, &[3; 32]).unwrap();
        assert_eq!(d.as_ref().len(), 48);
        let d = ecdsa_digest(Curve::P521, &[4; 64]).unwrap();
        assert_eq!(d.as_ref(), &[4; 64]);
        assert!(matches!(
            ecdsa_digest(Curve::P521, &[4; 65]),
            Err(CardFault::BadInput)
        ));
        assert!(matches!(
            ecdsa_digest(Curve::P256, &[]),
            Err(CardFault::BadInput)
        ));
    }
}
