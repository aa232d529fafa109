//! Key pairs inside the card: generation with its pairwise consistency test,
//! PKCS#8 (de)serialisation for wrapping, and public key export.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{
    self, EcdsaKeyPair, EcdsaSigningAlgorithm, Ed25519KeyPair, KeyPair, UnparsedPublicKey,
};
use zeroize::Zeroizing;

use crate::command::{CardFault, Curve, KeySpec, PublicKey};

/// The message every new key pair must sign and verify before it is handed
/// out.
const PAIRWISE_MESSAGE: &[u8] = b"MeSign pairwise consistency test";

/// An unwrapped private key, ready to sign.
pub enum LoadedKey {
    Rsa(RsaKeyPair),
    Ec { curve: Curve, key: EcdsaKeyPair },
    Ed25519(Ed25519KeyPair),
}

/// Why generation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenerateError {
    /// The spec asks for something the card does not do.
    Unsupported,
    /// The crypto library failed.
    Internal,
    /// The new pair failed its pairwise consistency test: the card must go
    /// into its error state.
    PairwiseTestFailed,
}

/// The fixed signing algorithm per curve; inputs are normalised to its
/// digest size before signing (see `signing`).
pub fn ecdsa_algorithm(curve: Curve) -> &'static EcdsaSigningAlgorithm {
    match curve {
        Curve::P256 => &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        Curve::P384 => &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
        Curve::P521 => &signature::ECDSA_P521_SHA512_FIXED_SIGNING,
    }
}

fn ecdsa_verification(curve: Curve) -> &'static signature::EcdsaVerificationAlgorithm {
    match curve {
        Curve::P256 => &signature::ECDSA_P256_SHA256_FIXED,
        Curve::P384 => &signature::ECDSA_P384_SHA384_FIXED,
        Curve::P521 => &signature::ECDSA_P521_SHA512_FIXED,
    }
}

/// A new key pair with its PKCS#8 encoding and public key.
pub struct Generated {
    pub key: LoadedKey,
    pub pkcs8: Zeroizing<Vec<u8>>,
    pub public: PublicKey,
}

/// Generates a key pair and runs the pairwise consistency test on it.
pub fn generate(spec: KeySpec) -> Result<Generated, GenerateError> {
    let generated = match spec {
        KeySpec::Rsa { bits } => {
            let size = match bits {
                2048 => KeySize::Rsa2048,
                3072 => KeySize::Rsa3072,
                4096 => KeySize::Rsa4096,
                _ => return Err(GenerateError::Unsupported),
            };
            let key = RsaKeyPair::generate(size).map_err(|_| GenerateError::Internal)?;
            let pkcs8 = Zeroizing::new(
                key.as_der()
                    .map_err(|_| GenerateError::Internal)?
                    .as_ref()
                    .to_vec(),
            );
            let components = PublicKeyComponents::<Vec<u8>>::from(key.public_key());
            let public = PublicKey::Rsa {
                modulus: strip_leading_zeros(&components.n),
                exponent: strip_leading_zeros(&components.e),
            };
            Generated {
                key: LoadedKey::Rsa(key),
                pkcs8,
                public,
            }
        }
        KeySpec::Ec(curve) => {
            let key = EcdsaKeyPair::generate(ecdsa_algorithm(curve))
                .map_err(|_| GenerateError::Internal)?;
            let pkcs8 = Zeroizing::new(
                key.to_pkcs8v1()
                    .map_err(|_| GenerateError::Internal)?
                    .as_ref()
                    .to_vec(),
            );
            let public = PublicKey::Ec {
                curve,
                point: key.public_key().as_ref().to_vec(),
            };
            Generated {
                key: LoadedKey::Ec { curve, key },
                pkcs8,
                public,
            }
        }
        KeySpec::Ed25519 => {
            let key = Ed25519KeyPair::generate().map_err(|_| GenerateError::Internal)?;
            // PKCS#8 v1 (the seed only): the public half is derived again
            // when the blob is loaded, so it cannot disagree with the seed.
            let pkcs8 = Zeroizing::new(
                key.to_pkcs8v1()
                    .map_err(|_| GenerateError::Internal)?
                    .as_ref()
                    .to_vec(),
            );
            let public = PublicKey::Ed25519 {
                point: key.public_key().as_ref().to_vec(),
            };
            Generated {
                key: LoadedKey::Ed25519(key),
                pkcs8,
                public,
            }
        }
        // Secret keys are not pairs: see `symmetric::generate`.
        KeySpec::Aes { .. } | KeySpec::GenericSecret { .. } => {
            return Err(GenerateError::Unsupported)
        }
    };
    pairwise_test(&generated.key).map_err(|()| GenerateError::PairwiseTestFailed)?;
    Ok(generated)
}

/// Signs a fixed message with the private half and verifies it with the
/// public half (FIPS 140-3 pairwise consistency test).
pub fn pairwise_test(key: &LoadedKey) -> Result<(), ()> {
    match key {
        LoadedKey::Rsa(key) => {
            let mut sig = vec![0; key.public_modulus_len()];
            key.sign(
                &signature::RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                PAIRWISE_MESSAGE,
                &mut sig,
            )
            .map_err(|_| ())?;
            UnparsedPublicKey::new(
                &signature::RSA_PKCS1_2048_8192_SHA256,
                key.public_key().as_ref(),
            )
            .verify(PAIRWISE_MESSAGE, &sig)
            .map_err(|_| ())
        }
        LoadedKey::Ec { curve, key } => {
            let sig = key
                .sign(&SystemRandom::new(), PAIRWISE_MESSAGE)
                .map_err(|_| ())?;
            UnparsedPublicKey::new(ecdsa_verification(*curve), key.public_key().as_ref())
                .verify(PAIRWISE_MESSAGE, sig.as_ref())
                .map_err(|_| ())
        }
        LoadedKey::Ed25519(key) => {
            let sig = key.try_sign(PAIRWISE_MESSAGE).map_err(|_| ())?;
            UnparsedPublicKey::new(&signature::ED25519, key.public_key().as_ref())
                .verify(PAIRWISE_MESSAGE, sig.as_ref())
                .map_err(|_| ())
        }
    }
}

/// Parses an unwrapped PKCS#8 key of the kind `spec` says. The spec comes
/// from the authenticated policy, so a mismatch means a corrupt card.
pub fn load(spec: KeySpec, pkcs8: &[u8]) -> Result<LoadedKey, CardFault> {
    match spec {
        KeySpec::Rsa { .. } => RsaKeyPair::from_pkcs8(pkcs8)
            .map(LoadedKey::Rsa)
            .map_err(|_| CardFault::BadBlob),
        KeySpec::Ec(curve) => EcdsaKeyPair::from_pkcs8(ecdsa_algorithm(curve), pkcs8)
            .map(|key| LoadedKey::Ec { curve, key })
            .map_err(|_| CardFault::BadBlob),
        KeySpec::Ed25519 => Ed25519KeyPair::from_pkcs8(pkcs8)
            .map(LoadedKey::Ed25519)
            .map_err(|_| CardFault::BadBlob),
        // A secret key's blob holds its raw value, which the asymmetric
        // commands must not parse.
        KeySpec::Aes { .. } | KeySpec::GenericSecret { .. } => Err(CardFault::KeyTypeMismatch),
    }
}

fn strip_leading_zeros(bytes: &[u8]) -> Vec<u8> {
    let first = bytes
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    bytes[first..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec_generation_exports_an_uncompressed_point() {
        for curve in [Curve::P256, Curve::P384, Curve::P521] {
            let g = generate(KeySpec::Ec(curve)).unwrap();
            let PublicKey::Ec { point, .. } = &g.public else {
                panic!("not EC")
            };
            assert_eq!(point.len(), 1 + 2 * curve.scalar_len());
            assert_eq!(point[0], 4);
            assert!(load(KeySpec::Ec(curve), &g.pkcs8).is_ok());
        }
    }

    #[test]
    fn rsa_generation_exports_modulus_and_exponent() {
        let g = generate(KeySpec::Rsa { bits: 2048 }).unwrap();
        let PublicKey::Rsa { modulus, exponent } = &g.public else {
            panic!("not RSA")
        };
        assert_eq!(modulus.len(), 256);
        assert_ne!(modulus[0], 0);
        assert_eq!(exponent, &[1, 0, 1]);
        assert!(matches!(
            generate(KeySpec::Rsa { bits: 1024 }),
            Err(GenerateError::Unsupported)
        ));
    }

    #[test]
    fn loading_with_the_wrong_curve_fails() {
        let g = generate(KeySpec::Ec(Curve::P256)).unwrap();
        assert!(matches!(
            load(KeySpec::Ec(Curve::P384), &g.pkcs8),
            Err(CardFault::BadBlob)
        ));
        assert!(matches!(
            load(KeySpec::Rsa { bits: 2048 }, &g.pkcs8),
            Err(CardFault::BadBlob)
        ));
    }

    #[test]
    fn ed25519_generation_exports_the_point_and_reloads() {
        let g = generate(KeySpec::Ed25519).unwrap();
        let PublicKey::Ed25519 { point } = &g.public else {
            panic!("not Ed25519")
        };
        assert_eq!(point.len(), 32);
        let LoadedKey::Ed25519(loaded) = load(KeySpec::Ed25519, &g.pkcs8).unwrap() else {
            panic!("not Ed25519")
        };
        assert_eq!(loaded.public_key().as_ref(), point.as_slice());
        // An EC blob does not load as Ed25519, nor the other way round.
        let ec = generate(KeySpec::Ec(Curve::P256)).unwrap();
        assert!(matches!(
            load(KeySpec::Ed25519, &ec.pkcs8),
            Err(CardFault::BadBlob)
        ));
        assert!(matches!(
            load(KeySpec::Ec(Curve::P256), &g.pkcs8),
            Err(CardFault::BadBlob)
        ));
    }

    #[test]
    fn leading_zeros_are_stripped() {
        assert_eq!(strip_leading_zeros(&[0, 0, 1, 0]), vec![1, 0]);
        assert_eq!(strip_leading_zeros(&[0, 0]), vec![0]);
    }
}
