//! The in-process baseline: aws-lc-rs signing the same hashes in this
//! process, with no PKCS#11, no socket and no card in the way.

use aws_lc_rs::digest::Digest;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    EcdsaKeyPair, KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
    ECDSA_P384_SHA384_FIXED_SIGNING, RSA_PKCS1_SHA256, RSA_PSS_SHA256,
};

use crate::error::BenchError;
use crate::verify::PublicKey;
use crate::workload::{KeyKind, Op};

/// A key generated in this process.
pub enum InProcessKey {
    /// RSA-2048.
    Rsa(RsaKeyPair),
    /// ECDSA with the curve it was generated on.
    Ec(KeyKind, EcdsaKeyPair),
}

impl InProcessKey {
    /// Generates a fresh key of `kind`.
    pub fn generate(kind: KeyKind) -> Result<Self, BenchError> {
        let failed = |_| BenchError::InProcess {
            op: match kind {
                KeyKind::Rsa2048 => Op::RsaPkcs,
                KeyKind::P256 => Op::P256,
                KeyKind::P384 => Op::P384,
            },
        };
        Ok(match kind {
            KeyKind::Rsa2048 => {
                InProcessKey::Rsa(RsaKeyPair::generate(KeySize::Rsa2048).map_err(failed)?)
            }
            KeyKind::P256 => InProcessKey::Ec(
                kind,
                EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).map_err(failed)?,
            ),
            KeyKind::P384 => InProcessKey::Ec(
                kind,
                EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING).map_err(failed)?,
            ),
        })
    }

    /// The public half, for the independent verifier.
    pub fn public_key(&self) -> PublicKey {
        match self {
            InProcessKey::Rsa(key) => {
                let public = key.public_key();
                PublicKey::Rsa {
                    modulus: public.modulus().big_endian_without_leading_zero().to_vec(),
                    exponent: public.exponent().big_endian_without_leading_zero().to_vec(),
                }
            }
            InProcessKey::Ec(kind, key) => PublicKey::Ec {
                kind: *kind,
                point: key.public_key().as_ref().to_vec(),
            },
        }
    }

    /// A signing function for `op`: the hash in, the signature out, in the
    /// same format the PKCS#11 modules return (raw r‖s for ECDSA).
    pub fn signer(&self, op: Op) -> impl FnMut(&Digest) -> Result<Vec<u8>, BenchError> + '_ {
        let padding: &'static dyn aws_lc_rs::signature::RsaEncoding = match op {
            Op::RsaPss => &RSA_PSS_SHA256,
            _ => &RSA_PKCS1_SHA256,
        };
        move |hash| match self {
            InProcessKey::Rsa(key) => {
                let mut signature = vec![0; key.public_modulus_len()];
                key.sign_digest(padding, hash, &mut signature)
                    .map_err(|_| BenchError::InProcess { op })?;
                Ok(signature)
            }
            InProcessKey::Ec(_, key) => key
                .sign_digest(hash)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| BenchError::InProcess { op }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::fresh_hash;

    #[test]
    fn signatures_have_the_pkcs11_lengths() {
        for op in Op::ALL {
            let key = InProcessKey::generate(op.key_kind()).unwrap();
            let mut sign = key.signer(op);
            let signature = sign(&fresh_hash(op, 1, 0, 0)).unwrap();
            assert_eq!(signature.len(), op.signature_len(), "{}", op.name());
        }
    }

    #[test]
    fn a_hash_of_the_wrong_algorithm_is_refused() {
        let key = InProcessKey::generate(KeyKind::P384).unwrap();
        let mut sign = key.signer(Op::P384);
        assert!(sign(&fresh_hash(Op::P256, 1, 0, 0)).is_err());
    }
}
