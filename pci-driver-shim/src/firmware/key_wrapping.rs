//! Key wrapping for C_WrapKey and C_UnwrapKey: a card key leaves the card
//! encrypted under another key (AES Key Wrap, RFC 3394; AES Key Wrap with
//! Padding, RFC 5649; RSA-OAEP for secret keys under an RSA public key),
//! and a key wrapped that way comes in and is re-wrapped under the master
//! key as a new blob.
//!
//! Not to be confused with [`super::wrap`], the master-key blobs. Here the
//! card enforces what its blobs' policies bind: the key to be wrapped must
//! be extractable, the AES wrapping key must allow wrapping, the unwrapping
//! key must allow unwrapping (an RSA key that only unwraps cannot be made
//! to decrypt, nor the other way round). The daemon checks the rest
//! (CKA_WRAP_WITH_TRUSTED, CKA_WRAP_TEMPLATE, the unwrap templates) before
//! it asks.
//!
//! A secret key travels as its raw value; a private key as its PKCS#8
//! PrivateKeyInfo, which on the way in is parsed, checked with a pairwise
//! consistency test and re-encoded the way the card encodes the keys it
//! generates.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::key_wrap::{AesKek, KeyWrap, KeyWrapPadded, AES_128, AES_256};
use aws_lc_rs::rsa::{OaepPublicEncryptingKey, PublicEncryptingKey, PublicKeyComponents};
use aws_lc_rs::signature::KeyPair;
use zeroize::Zeroizing;

use super::keys::{self, LoadedKey};
use super::{decrypt, oaep_any_hash, symmetric, Firmware};
use crate::command::{
    CardFault, CardRequest, CardResponse, Curve, DecryptScheme, KeyPolicy, KeySpec, PublicKey,
    WrapAlgorithm, WrappingKey,
};

/// RFC 3394 / 5649 add one 64-bit block (the integrity check value).
const KW_OVERHEAD: usize = 8;
/// RFC 3394 wraps at least two 64-bit blocks.
const KW_MIN_INPUT: usize = 16;

/// Executes [`CardRequest::WrapKey`] or [`CardRequest::UnwrapKey`]; the
/// caller has checked that the card is operational.
pub fn execute(fw: &Firmware, request: CardRequest) -> Result<CardResponse, CardFault> {
    match request {
        CardRequest::WrapKey {
            algorithm,
            wrapping,
            blob,
            policy,
        } => wrap(fw, &algorithm, &wrapping, &blob, &policy).map(CardResponse::Bytes),
        CardRequest::UnwrapKey {
            algorithm,
            blob,
            policy,
            wrapped,
            new_policy,
        } => {
            if !policy.unwrap {
                return Err(CardFault::NotPermitted);
            }
            let plain = unwrap(fw, &algorithm, &blob, &policy, &wrapped)?;
            new_key(fw, new_policy, &plain)
        }
        _ => Err(CardFault::Malformed),
    }
}

fn wrap(
    fw: &Firmware,
    algorithm: &WrapAlgorithm,
    wrapping: &WrappingKey,
    blob: &[u8],
    policy: &KeyPolicy,
) -> Result<Vec<u8>, CardFault> {
    if !policy.extractable {
        return Err(CardFault::NotPermitted);
    }
    // Secret blobs hold the raw value, key-pair blobs the PKCS#8 document:
    // either is what travels.
    let plain = fw.wrapper.unwrap(blob, &policy.to_aad())?;
    match (algorithm, wrapping) {
        (WrapAlgorithm::AesKw | WrapAlgorithm::AesKwp, WrappingKey::Card { blob, policy }) => {
            let kek = kek(fw, blob, policy, |p| {
                p.secret.is_some_and(|usage| usage.wrap)
            })?;
            let mut out = vec![0u8; plain.len() + 2 * KW_OVERHEAD];
            let len = if *algorithm == WrapAlgorithm::AesKw {
                if plain.len() % 8 != 0 || plain.len() < KW_MIN_INPUT {
                    return Err(CardFault::BadInput);
                }
                kek.wrap(&plain, &mut out).map(|w| w.len())
            } else {
                kek.wrap_with_padding(&plain, &mut out).map(|w| w.len())
            }
            .map_err(|_| CardFault::Internal)?;
            out.truncate(len);
            Ok(out)
        }
        (
            WrapAlgorithm::RsaOaep {
                hash,
                mgf_hash,
                label,
            },
            WrappingKey::RsaPublic { modulus, exponent },
        ) => {
            if !policy.spec.is_secret() {
                // A PKCS#8 document does not fit one RSA block.
                return Err(CardFault::KeyTypeMismatch);
            }
            let public: PublicEncryptingKey = PublicKeyComponents {
                n: modulus.as_slice(),
                e: exponent.as_slice(),
            }
            .try_into()
            .map_err(|_| CardFault::BadParameters)?;
            let Some(algorithm) = decrypt::oaep_algorithm(*hash, *mgf_hash) else {
                // A pair aws-lc-rs lacks: aws-lc's EVP interface.
                let spki = public.as_der().map_err(|_| CardFault::Internal)?;
                return oaep_any_hash::encrypt(spki.as_ref(), *hash, *mgf_hash, label, &plain);
            };
            let key = OaepPublicEncryptingKey::new(public).map_err(|_| CardFault::BadParameters)?;
            let mut out = vec![0u8; key.ciphertext_size()];
            let label = (!label.is_empty()).then_some(label.as_slice());
            let len = key
                .encrypt(algorithm, &plain, &mut out, label)
                .map_err(|_| CardFault::BadInput)?
                .len();
            out.truncate(len);
            Ok(out)
        }
        _ => Err(CardFault::KeyTypeMismatch),
    }
}

/// The plaintext of `wrapped` under the card key in `blob`.
fn unwrap(
    fw: &Firmware,
    algorithm: &WrapAlgorithm,
    blob: &[u8],
    policy: &KeyPolicy,
    wrapped: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CardFault> {
    match algorithm {
        WrapAlgorithm::AesKw | WrapAlgorithm::AesKwp => {
            let kek = kek(fw, blob, policy, |_| true)?;
            if wrapped.len() < KW_MIN_INPUT || wrapped.len() % 8 != 0 {
                return Err(CardFault::BadInput);
            }
            let mut out = Zeroizing::new(vec![0u8; wrapped.len()]);
            let len = if *algorithm == WrapAlgorithm::AesKw {
                kek.unwrap(wrapped, &mut out).map(|p| p.len())
            } else {
                kek.unwrap_with_padding(wrapped, &mut out).map(|p| p.len())
            }
            .map_err(|_| CardFault::BadInput)?;
            out.truncate(len);
            Ok(out)
        }
        WrapAlgorithm::RsaOaep {
            hash,
            mgf_hash,
            label,
        } => {
            if !matches!(policy.spec, KeySpec::Rsa { .. }) {
                return Err(CardFault::KeyTypeMismatch);
            }
            let key = fw.unwrap_key(blob, policy)?;
            let scheme = DecryptScheme::RsaOaep {
                hash: *hash,
                mgf_hash: *mgf_hash,
                label: label.clone(),
            };
            decrypt::decrypt(&key, &fw.decryption, blob, &scheme, wrapped).map(Zeroizing::new)
        }
    }
}

/// The AES key-encryption key in `blob`, if its policy passes `allowed`.
/// AES-192 keys cannot wrap: aws-lc-rs offers key wrap with AES-128 and
/// AES-256 only.
fn kek(
    fw: &Firmware,
    blob: &[u8],
    policy: &KeyPolicy,
    allowed: impl Fn(&KeyPolicy) -> bool,
) -> Result<AesKek, CardFault> {
    if !matches!(policy.spec, KeySpec::Aes { .. }) {
        return Err(CardFault::KeyTypeMismatch);
    }
    let value = fw.wrapper.unwrap(blob, &policy.to_aad())?;
    if !allowed(policy) {
        return Err(CardFault::NotPermitted);
    }
    let cipher = match value.len() {
        16 => &AES_128,
        32 => &AES_256,
        _ => return Err(CardFault::BadParameters),
    };
    AesKek::new(cipher, &value).map_err(|_| CardFault::Internal)
}

/// Makes the new blob for an unwrapped key. The kind of key is the
/// requested spec's; its size (or curve) is the unwrapped key's. A value
/// that is not such a key is [`CardFault::BadInput`].
fn new_key(fw: &Firmware, mut policy: KeyPolicy, plain: &[u8]) -> Result<CardResponse, CardFault> {
    let bytes = u32::try_from(plain.len()).map_err(|_| CardFault::BadInput)?;
    policy.spec = match policy.spec {
        KeySpec::Aes { .. } => KeySpec::Aes { bytes },
        KeySpec::GenericSecret { .. } => KeySpec::GenericSecret { bytes },
        private => {
            let (spec, pkcs8, public) = private_key(private, plain)?;
            policy.spec = spec;
            let blob = fw.wrapper.wrap(&pkcs8, &policy.to_aad())?;
            return Ok(CardResponse::Unwrapped {
                blob,
                spec,
                check_value: Vec::new(),
                public: Some(public),
            });
        }
    };
    let spec = policy.spec;
    let import = CardRequest::ImportSecret {
        policy,
        value: plain.to_vec(),
    };
    match symmetric::execute(&fw.wrapper, import) {
        Ok(CardResponse::SecretKey { blob, check_value }) => Ok(CardResponse::Unwrapped {
            blob,
            spec,
            check_value,
            public: None,
        }),
        // A value of a length the key type does not have.
        Err(CardFault::BadInput | CardFault::BadParameters) => Err(CardFault::BadInput),
        Err(fault) => Err(fault),
        Ok(_) => Err(CardFault::Internal),
    }
}

/// Parses a PKCS#8 private key of the kind `kind` names, runs the pairwise
/// consistency test, and returns its spec, its canonical PKCS#8 and its
/// public key.
fn private_key(
    kind: KeySpec,
    pkcs8: &[u8],
) -> Result<(KeySpec, Zeroizing<Vec<u8>>, PublicKey), CardFault> {
    let candidates: Vec<KeySpec> = match kind {
        KeySpec::Rsa { .. } => vec![KeySpec::Rsa { bits: 0 }],
        KeySpec::Ec(_) => [Curve::P256, Curve::P384, Curve::P521]
            .into_iter()
            .map(KeySpec::Ec)
            .collect(),
        KeySpec::Ed25519 => vec![KeySpec::Ed25519],
        KeySpec::Aes { .. } | KeySpec::GenericSecret { .. } => {
            return Err(CardFault::BadParameters)
        }
    };
    let (spec, key) = candidates
        .into_iter()
        .find_map(|spec| keys::load(spec, pkcs8).ok().map(|key| (spec, key)))
        .ok_or(CardFault::BadInput)?;
    keys::pairwise_test(&key).map_err(|()| CardFault::BadInput)?;
    let der = |r: Result<Vec<u8>, aws_lc_rs::error::Unspecified>| {
        r.map(Zeroizing::new).map_err(|_| CardFault::Internal)
    };
    match (spec, &key) {
        (KeySpec::Rsa { .. }, LoadedKey::Rsa(pair)) => {
            let bits =
                u32::try_from(pair.public_modulus_len() * 8).map_err(|_| CardFault::BadInput)?;
            if !matches!(bits, 2048 | 3072 | 4096) {
                return Err(CardFault::BadParameters);
            }
            let components = PublicKeyComponents::<Vec<u8>>::from(pair.public_key());
            let public = PublicKey::Rsa {
                modulus: strip_leading_zeros(&components.n),
                exponent: strip_leading_zeros(&components.e),
            };
            let pkcs8 = der(pair.as_der().map(|d| d.as_ref().to_vec()))?;
            Ok((KeySpec::Rsa { bits }, pkcs8, public))
        }
        (KeySpec::Ec(curve), LoadedKey::Ec { key: pair, .. }) => {
            let public = PublicKey::Ec {
                curve,
                point: pair.public_key().as_ref().to_vec(),
            };
            let pkcs8 = der(pair.to_pkcs8v1().map(|d| d.as_ref().to_vec()))?;
            Ok((spec, pkcs8, public))
        }
        (KeySpec::Ed25519, LoadedKey::Ed25519(pair)) => {
            let public = PublicKey::Ed25519 {
                point: pair.public_key().as_ref().to_vec(),
            };
            let pkcs8 = der(pair.to_pkcs8v1().map(|d| d.as_ref().to_vec()))?;
            Ok((spec, pkcs8, public))
        }
        _ => Err(CardFault::Internal),
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
    use crate::command::{CardResult, Hash, SecretUsage, SignScheme};

    fn run(fw: &Firmware, request: CardRequest) -> Result<CardResponse, CardFault> {
        match minicbor::decode(&fw.execute(&minicbor::to_vec(&request).unwrap())).unwrap() {
            CardResult::Ok(response) => Ok(response),
            CardResult::Err(fault) => Err(fault),
        }
    }

    fn policy(object_id: u64, spec: KeySpec, wrap: bool, unwrap: bool) -> KeyPolicy {
        KeyPolicy {
            object_id,
            spec,
            sign: true,
            decrypt: false,
            unwrap,
            derive: false,
            sensitive: true,
            extractable: true,
            secret: spec.is_secret().then_some(SecretUsage {
                encrypt: false,
                verify: true,
                wrap,
            }),
        }
    }

    fn import(fw: &Firmware, policy: &KeyPolicy, value: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let request = CardRequest::ImportSecret {
            policy: policy.clone(),
            value: value.to_vec(),
        };
        match run(fw, request).unwrap() {
            CardResponse::SecretKey { blob, check_value } => (blob, check_value),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn wrap_request(
        algorithm: WrapAlgorithm,
        kek: (&[u8], &KeyPolicy),
        key: (&[u8], &KeyPolicy),
    ) -> CardRequest {
        CardRequest::WrapKey {
            algorithm,
            wrapping: WrappingKey::Card {
                blob: kek.0.to_vec(),
                policy: kek.1.clone(),
            },
            blob: key.0.to_vec(),
            policy: key.1.clone(),
        }
    }

    #[test]
    fn aes_key_wrap_matches_rfc_3394_and_unwraps_into_a_new_blob() {
        let dir = tempfile::tempdir().unwrap();
        let fw = Firmware::start(dir.path(), false).unwrap();
        let kek_policy = policy(1, KeySpec::Aes { bytes: 16 }, true, true);
        let (kek, _) = import(&fw, &kek_policy, &hex("000102030405060708090A0B0C0D0E0F"));
        let key_policy = policy(2, KeySpec::Aes { bytes: 16 }, false, false);
        let (key, check) = import(&fw, &key_policy, &hex("00112233445566778899AABBCCDDEEFF"));
        // RFC 3394 §4.1: 128-bit key data with a 128-bit KEK.
        let want = hex("1FA68B0A8112B447AEF34BD8FB5A7B829D3E862371D2CFE5");
        let wrapped = match run(
            &fw,
            wrap_request(
                WrapAlgorithm::AesKw,
                (&kek, &kek_policy),
                (&key, &key_policy),
            ),
        ) {
            Ok(CardResponse::Bytes(w)) => w,
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(wrapped, want);
        let new_policy = policy(3, KeySpec::Aes { bytes: 0 }, false, false);
        let unwrap = |wrapped: Vec<u8>, algorithm| CardRequest::UnwrapKey {
            algorithm,
            blob: kek.clone(),
            policy: kek_policy.clone(),
            wrapped,
            new_policy: new_policy.clone(),
        };
        let Ok(CardResponse::Unwrapped {
            spec,
            check_value,
            public,
            ..
        }) = run(&fw, unwrap(wrapped.clone(), WrapAlgorithm::AesKw))
        else {
            panic!("no key")
        };
        assert_eq!(
            (spec, check_value, public),
            (KeySpec::Aes { bytes: 16 }, check, None)
        );
        let mut tampered = wrapped;
        tampered[5] ^= 1;
        assert_eq!(
            run(&fw, unwrap(tampered, WrapAlgorithm::AesKw)),
            Err(CardFault::BadInput)
        );
        // KWP: any length; a 20-byte generic secret round-trips.
        let hmac_policy = policy(4, KeySpec::GenericSecret { bytes: 20 }, false, false);
        let (hmac, hmac_check) = import(&fw, &hmac_policy, &[7; 20]);
        assert_eq!(
            run(
                &fw,
                wrap_request(
                    WrapAlgorithm::AesKw,
                    (&kek, &kek_policy),
                    (&hmac, &hmac_policy)
                )
            ),
            Err(CardFault::BadInput),
            "RFC 3394 wraps whole 64-bit blocks only"
        );
        let Ok(CardResponse::Bytes(padded)) = run(
            &fw,
            wrap_request(
                WrapAlgorithm::AesKwp,
                (&kek, &kek_policy),
                (&hmac, &hmac_policy),
            ),
        ) else {
            panic!("no KWP")
        };
        assert_eq!(padded.len(), 32);
        let request = CardRequest::UnwrapKey {
            algorithm: WrapAlgorithm::AesKwp,
            blob: kek.clone(),
            policy: kek_policy.clone(),
            wrapped: padded,
            new_policy: policy(5, KeySpec::GenericSecret { bytes: 0 }, false, false),
        };
        let Ok(CardResponse::Unwrapped {
            spec, check_value, ..
        }) = run(&fw, request)
        else {
            panic!("no key")
        };
        assert_eq!(
            (spec, check_value),
            (KeySpec::GenericSecret { bytes: 20 }, hmac_check)
        );
    }

    #[test]
    fn the_card_enforces_extractable_wrap_and_unwrap() {
        let dir = tempfile::tempdir().unwrap();
        let fw = Firmware::start(dir.path(), false).unwrap();
        let kek_policy = policy(1, KeySpec::Aes { bytes: 32 }, true, false);
        let (kek, _) = import(&fw, &kek_policy, &[1; 32]);
        let mut locked = policy(2, KeySpec::Aes { bytes: 16 }, false, false);
        locked.extractable = false;
        let (key, _) = import(&fw, &locked, &[2; 16]);
        let wrap = |locked: &KeyPolicy| {
            run(
                &fw,
                wrap_request(WrapAlgorithm::AesKwp, (&kek, &kek_policy), (&key, locked)),
            )
        };
        assert_eq!(wrap(&locked), Err(CardFault::NotPermitted));
        locked.extractable = true;
        assert_eq!(
            wrap(&locked),
            Err(CardFault::BadBlob),
            "the policy is bound"
        );
        let (key, _) = import(&fw, &locked, &[2; 16]);
        let no_wrap = policy(3, KeySpec::Aes { bytes: 32 }, false, true);
        let (plain_key, _) = import(&fw, &no_wrap, &[1; 32]);
        let request = wrap_request(
            WrapAlgorithm::AesKwp,
            (&plain_key, &no_wrap),
            (&key, &locked),
        );
        assert_eq!(run(&fw, request), Err(CardFault::NotPermitted));
        let Ok(CardResponse::Bytes(wrapped)) = run(
            &fw,
            wrap_request(WrapAlgorithm::AesKwp, (&kek, &kek_policy), (&key, &locked)),
        ) else {
            panic!("no wrap")
        };
        let request = CardRequest::UnwrapKey {
            algorithm: WrapAlgorithm::AesKwp,
            blob: kek,
            policy: kek_policy,
            wrapped,
            new_policy: policy(4, KeySpec::Aes { bytes: 0 }, false, false),
        };
        assert_eq!(
            run(&fw, request),
            Err(CardFault::NotPermitted),
            "no CKA_UNWRAP"
        );
    }

    #[test]
    fn private_keys_travel_as_pkcs8_and_sign_after_unwrapping() {
        let dir = tempfile::tempdir().unwrap();
        let fw = Firmware::start(dir.path(), false).unwrap();
        let kek_policy = policy(1, KeySpec::Aes { bytes: 32 }, true, true);
        let (kek, _) = import(&fw, &kek_policy, &[9; 32]);
        for spec in [KeySpec::Ec(Curve::P384), KeySpec::Ed25519] {
            let pair_policy = policy(2, spec, false, false);
            let Ok(CardResponse::KeyPair { blob, public }) = run(
                &fw,
                CardRequest::GenerateKeyPair {
                    policy: pair_policy.clone(),
                },
            ) else {
                panic!("no pair")
            };
            let Ok(CardResponse::Bytes(wrapped)) = run(
                &fw,
                wrap_request(
                    WrapAlgorithm::AesKwp,
                    (&kek, &kek_policy),
                    (&blob, &pair_policy),
                ),
            ) else {
                panic!("no wrap")
            };
            let kind = match spec {
                KeySpec::Ec(_) => KeySpec::Ec(Curve::P256),
                other => other,
            };
            let request = CardRequest::UnwrapKey {
                algorithm: WrapAlgorithm::AesKwp,
                blob: kek.clone(),
                policy: kek_policy.clone(),
                wrapped,
                new_policy: policy(3, kind, false, false),
            };
            let Ok(CardResponse::Unwrapped {
                blob: new_blob,
                spec: found,
                public: Some(new_public),
                ..
            }) = run(&fw, request)
            else {
                panic!("no key")
            };
            assert_eq!((found, &new_public), (spec, &public));
            let scheme = match spec {
                KeySpec::Ed25519 => SignScheme::Ed25519,
                _ => SignScheme::Ecdsa,
            };
            let sign = CardRequest::Sign {
                blob: new_blob,
                policy: policy(3, spec, false, false),
                scheme,
                input: vec![1; 48],
            };
            assert!(matches!(run(&fw, sign), Ok(CardResponse::Bytes(_))));
        }
    }

    #[test]
    fn rsa_oaep_wraps_secret_keys_and_an_unwrap_only_key_does_not_decrypt() {
        let dir = tempfile::tempdir().unwrap();
        let fw = Firmware::start(dir.path(), false).unwrap();
        let mut rsa_policy = policy(1, KeySpec::Rsa { bits: 2048 }, false, true);
        rsa_policy.sign = false;
        let Ok(CardResponse::KeyPair {
            blob: rsa,
            public: PublicKey::Rsa { modulus, exponent },
        }) = run(
            &fw,
            CardRequest::GenerateKeyPair {
                policy: rsa_policy.clone(),
            },
        )
        else {
            panic!("no RSA pair")
        };
        let key_policy = policy(2, KeySpec::Aes { bytes: 32 }, false, false);
        let (key, check) = import(&fw, &key_policy, &[4; 32]);
        // SHA-256 takes aws-lc-rs's path, SHA-224 and a differing MGF1
        // hash aws-lc's EVP interface.
        let mut wrapped_sha256 = vec![];
        for (hash, mgf_hash) in [
            (Hash::Sha224, Hash::Sha224),
            (Hash::Sha384, Hash::Sha1),
            (Hash::Sha256, Hash::Sha256),
        ] {
            let algorithm = WrapAlgorithm::RsaOaep {
                hash,
                mgf_hash,
                label: b"l".to_vec(),
            };
            let Ok(CardResponse::Bytes(wrapped)) = run(
                &fw,
                CardRequest::WrapKey {
                    algorithm: algorithm.clone(),
                    wrapping: WrappingKey::RsaPublic {
                        modulus: modulus.clone(),
                        exponent: exponent.clone(),
                    },
                    blob: key.clone(),
                    policy: key_policy.clone(),
                },
            ) else {
                panic!("no wrap with {hash:?}")
            };
            assert_eq!(wrapped.len(), 256);
            let request = CardRequest::UnwrapKey {
                algorithm,
                blob: rsa.clone(),
                policy: rsa_policy.clone(),
                wrapped: wrapped.clone(),
                new_policy: policy(3, KeySpec::Aes { bytes: 0 }, false, false),
            };
            let Ok(CardResponse::Unwrapped { check_value, .. }) = run(&fw, request) else {
                panic!("no key with {hash:?}")
            };
            assert_eq!(check_value, check);
            wrapped_sha256 = wrapped;
        }
        let wrapped = wrapped_sha256;
        let decrypt = CardRequest::Decrypt {
            blob: rsa,
            policy: rsa_policy,
            scheme: DecryptScheme::RsaOaep {
                hash: Hash::Sha256,
                mgf_hash: Hash::Sha256,
                label: b"l".to_vec(),
            },
            input: wrapped,
        };
        assert_eq!(run(&fw, decrypt), Err(CardFault::NotPermitted));
    }
}
