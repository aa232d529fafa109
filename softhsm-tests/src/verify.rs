//! Independent verification of everything a token signs, with RustCrypto.
//!
//! A conformance suite that trusts the token's own C_Verify would pass a
//! module that signs garbage and verifies garbage. Every signature is checked
//! here from the public key attributes, and every check is also run on a
//! tampered input that must fail, so the checks themselves can fail.

use p256::ecdsa::signature::hazmat::PrehashVerifier;
use rsa::{BigUint, Pkcs1v15Sign, Pss, RsaPublicKey};
use sha2::{Digest, Sha256};

/// NIST curves the suite generates keys on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Curve {
    /// secp256r1 / prime256v1.
    P256,
    /// secp384r1.
    P384,
}

impl Curve {
    /// CKA_EC_PARAMS: the DER-encoded named-curve OID.
    pub fn params_der(self) -> Vec<u8> {
        match self {
            Curve::P256 => vec![0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
            Curve::P384 => vec![0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22],
        }
    }

    /// Bytes in one coordinate (and in each of r and s).
    pub fn field_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
        }
    }
}

/// A public key as read from the token's attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicKey {
    /// CKA_MODULUS and CKA_PUBLIC_EXPONENT, big-endian.
    Rsa {
        /// Modulus.
        n: Vec<u8>,
        /// Public exponent.
        e: Vec<u8>,
    },
    /// The SEC1 point from inside CKA_EC_POINT.
    Ec {
        /// Curve.
        curve: Curve,
        /// Uncompressed SEC1 point.
        point: Vec<u8>,
    },
}

/// Why a signature did not verify (or a key did not parse).
pub type Failure = String;

impl PublicKey {
    fn rsa(&self) -> Result<RsaPublicKey, Failure> {
        match self {
            PublicKey::Rsa { n, e } => {
                RsaPublicKey::new(BigUint::from_bytes_be(n), BigUint::from_bytes_be(e))
                    .map_err(|err| format!("bad RSA public key: {err}"))
            }
            PublicKey::Ec { .. } => Err("not an RSA key".into()),
        }
    }

    /// RSASSA-PKCS1-v1_5 with SHA-256 over `message`.
    pub fn verify_rsa_pkcs1_sha256(&self, message: &[u8], sig: &[u8]) -> Result<(), Failure> {
        self.rsa()?
            .verify(Pkcs1v15Sign::new::<Sha256>(), &sha256(message), sig)
            .map_err(|e| format!("RSA PKCS#1 v1.5 verification failed: {e}"))
    }

    /// RSASSA-PSS, SHA-256 and MGF1-SHA-256, with the given salt length, over `message`.
    pub fn verify_rsa_pss_sha256(
        &self,
        message: &[u8],
        sig: &[u8],
        salt_len: usize,
    ) -> Result<(), Failure> {
        self.rsa()?
            .verify(
                Pss::new_with_salt::<Sha256>(salt_len),
                &sha256(message),
                sig,
            )
            .map_err(|e| format!("RSA-PSS verification failed: {e}"))
    }

    /// ECDSA over a precomputed hash, signature as raw `r || s`.
    pub fn verify_ecdsa_prehash(&self, hash: &[u8], sig: &[u8]) -> Result<(), Failure> {
        let PublicKey::Ec { curve, point } = self else {
            return Err("not an EC key".into());
        };
        if sig.len() != 2 * curve.field_len() {
            return Err(format!(
                "ECDSA signature is {} bytes, want raw r||s of {}",
                sig.len(),
                2 * curve.field_len()
            ));
        }
        match curve {
            Curve::P256 => {
                let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(point)
                    .map_err(|e| format!("bad P-256 point: {e}"))?;
                let sig = p256::ecdsa::Signature::from_slice(sig)
                    .map_err(|e| format!("bad P-256 signature: {e}"))?;
                key.verify_prehash(hash, &sig)
                    .map_err(|e| format!("P-256 verification failed: {e}"))
            }
            Curve::P384 => {
                let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(point)
                    .map_err(|e| format!("bad P-384 point: {e}"))?;
                let sig = p384::ecdsa::Signature::from_slice(sig)
                    .map_err(|e| format!("bad P-384 signature: {e}"))?;
                key.verify_prehash(hash, &sig)
                    .map_err(|e| format!("P-384 verification failed: {e}"))
            }
        }
    }

    /// ECDSA with SHA-256 over `message`, signature as raw `r || s`.
    pub fn verify_ecdsa_sha256(&self, message: &[u8], sig: &[u8]) -> Result<(), Failure> {
        self.verify_ecdsa_prehash(&sha256(message), sig)
    }
}

/// Asserts `check` accepts `input` and rejects a copy with one bit flipped,
/// so a check that accepts everything cannot pass a test.
pub fn assert_genuine(what: &str, input: &[u8], check: impl Fn(&[u8]) -> Result<(), Failure>) {
    if let Err(e) = check(input) {
        panic!("{what}: independent verification failed: {e}");
    }
    let mut tampered = input.to_vec();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    assert!(
        check(&tampered).is_err(),
        "{what}: a tampered input verified too, so the check proves nothing"
    );
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> Vec<u8> {
    Sha256::digest(data).to_vec()
}

/// The DER DigestInfo for SHA-256 that CKM_RSA_PKCS signs around a hash.
pub fn sha256_digest_info(data: &[u8]) -> Vec<u8> {
    const PREFIX: [u8; 19] = [
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        0x05, 0x00, 0x04, 0x20,
    ];
    let mut out = PREFIX.to_vec();
    out.extend_from_slice(&sha256(data));
    out
}

/// The SEC1 point inside CKA_EC_POINT, which PKCS#11 defines as a DER OCTET
/// STRING. A module returning the bare point fails here on purpose.
pub fn ec_point_from_attribute(value: &[u8]) -> Result<Vec<u8>, Failure> {
    let (tag, content, rest) = crate::der::tlv(value)?;
    if tag != 0x04 {
        return Err(format!(
            "CKA_EC_POINT starts with tag {tag:#04x}, want OCTET STRING"
        ));
    }
    if !rest.is_empty() {
        return Err(format!("{} bytes after the OCTET STRING", rest.len()));
    }
    if content.first() != Some(&0x04) {
        return Err("EC point is not uncompressed SEC1".into());
    }
    Ok(content.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::hazmat::PrehashSigner;

    #[test]
    fn ecdsa_check_accepts_real_and_rejects_tampered() {
        let sk = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
        let point = sk
            .verifying_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec();
        let hash = sha256(b"hello");
        let sig: p256::ecdsa::Signature = sk.sign_prehash(&hash).unwrap();
        let key = PublicKey::Ec {
            curve: Curve::P256,
            point,
        };
        assert_genuine("self-test", &hash, |h| {
            key.verify_ecdsa_prehash(h, &sig.to_bytes())
        });
    }

    #[test]
    fn assert_genuine_catches_a_check_that_accepts_everything() {
        let r = std::panic::catch_unwind(|| assert_genuine("always-ok", b"x", |_| Ok(())));
        assert!(r.is_err());
    }

    #[test]
    fn ec_point_must_be_wrapped() {
        let point = [0x04u8; 65];
        let mut wrapped = vec![0x04, 65];
        wrapped.extend_from_slice(&point);
        assert_eq!(ec_point_from_attribute(&wrapped).unwrap(), point.to_vec());
        assert!(ec_point_from_attribute(&point).is_err());
    }

    #[test]
    fn digest_info_has_the_sha256_prefix() {
        let di = sha256_digest_info(b"abc");
        assert_eq!(di.len(), 51);
        assert_eq!(&di[19..], sha256(b"abc").as_slice());
    }
}
