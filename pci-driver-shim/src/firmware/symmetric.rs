//! Secret keys inside the card: AES and generic secret (HMAC) keys,
//! generated here or imported by value, and what the card does with them:
//! AES-GCM, AES-CBC with PKCS#7 padding, AES-CTR, AES-CMAC and HMAC-SHA-2.
//!
//! A secret key's blob is made by the same [`Wrapper`] as a private key's,
//! around the raw key value instead of a PKCS#8 document, with the key's
//! [`KeyPolicy`] (including its [`SecretUsage`]) as associated data: the
//! spec inside the policy says which kind of value the blob holds, so a
//! secret blob never reaches the PKCS#8 parsers and a key-pair blob never
//! reaches these ciphers. Every usage is checked against that policy here,
//! whatever the daemon checked before. All cryptography is aws-lc-rs's;
//! MAC verification uses its constant-time comparisons.

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, NONCE_LEN};
use aws_lc_rs::cipher::{
    self, DecryptingKey, DecryptionContext, EncryptingKey, EncryptionContext,
    PaddedBlockDecryptingKey, PaddedBlockEncryptingKey, UnboundCipherKey,
};
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::{cmac, digest, hmac};
use zeroize::Zeroizing;

use super::wrap::Wrapper;
use crate::command::{
    CardFault, CardRequest, CardResponse, Cipher, Hash, KeyPolicy, KeySpec, Mac,
    MAX_GENERIC_SECRET, MAX_SYMMETRIC_INPUT,
};

/// AES block (and CBC IV, CTR counter block) length.
const BLOCK: usize = 16;

/// CKA_CHECK_VALUE is three bytes.
const CHECK_VALUE_LEN: usize = 3;

/// Executes one of the secret-key commands; the caller has checked that
/// the card is operational.
pub fn execute(wrapper: &Wrapper, request: CardRequest) -> Result<CardResponse, CardFault> {
    match request {
        CardRequest::GenerateSecret { policy } => {
            let len = key_len(policy.spec)?;
            let mut value = Zeroizing::new(vec![0; len]);
            aws_lc_rs::rand::fill(&mut value).map_err(|_| CardFault::Internal)?;
            new_secret(wrapper, &policy, &value)
        }
        CardRequest::ImportSecret { policy, value } => {
            let value = Zeroizing::new(value);
            if value.len() != key_len(policy.spec)? {
                return Err(CardFault::BadInput);
            }
            new_secret(wrapper, &policy, &value)
        }
        CardRequest::Cipher {
            blob,
            policy,
            cipher,
            encrypt,
            input,
        } => {
            let value = open(wrapper, &blob, &policy)?;
            let usage = policy.secret.unwrap_or_default();
            let allowed = if encrypt {
                usage.encrypt
            } else {
                policy.decrypt
            };
            if !allowed {
                return Err(CardFault::NotPermitted);
            }
            if !matches!(policy.spec, KeySpec::Aes { .. }) {
                return Err(CardFault::KeyTypeMismatch);
            }
            if input.len() > MAX_SYMMETRIC_INPUT {
                return Err(CardFault::BadInput);
            }
            let input = Zeroizing::new(input);
            crypt(&value, &cipher, encrypt, &input).map(CardResponse::Bytes)
        }
        CardRequest::Mac {
            blob,
            policy,
            mac,
            input,
            expected,
        } => {
            let value = open(wrapper, &blob, &policy)?;
            let usage = policy.secret.unwrap_or_default();
            let allowed = if expected.is_some() {
                usage.verify
            } else {
                policy.sign
            };
            if !allowed {
                return Err(CardFault::NotPermitted);
            }
            let fits = match mac {
                Mac::Hmac(_) => matches!(policy.spec, KeySpec::GenericSecret { .. }),
                Mac::AesCmac => matches!(policy.spec, KeySpec::Aes { .. }),
            };
            if !fits {
                return Err(CardFault::KeyTypeMismatch);
            }
            if input.len() > MAX_SYMMETRIC_INPUT {
                return Err(CardFault::BadInput);
            }
            match expected {
                None => compute_mac(&value, mac, &input).map(CardResponse::Bytes),
                Some(tag) => verify_mac(&value, mac, &input, &tag).map(CardResponse::Verified),
            }
        }
        _ => Err(CardFault::Malformed),
    }
}

/// The value length a secret spec asks for; key-pair specs and sizes the
/// card does not make are bad parameters.
pub(super) fn key_len(spec: KeySpec) -> Result<usize, CardFault> {
    match spec {
        KeySpec::Aes { bytes } if matches!(bytes, 16 | 24 | 32) => Ok(bytes as usize),
        KeySpec::GenericSecret { bytes } if (1..=MAX_GENERIC_SECRET).contains(&bytes) => {
            Ok(bytes as usize)
        }
        _ => Err(CardFault::BadParameters),
    }
}

pub(super) fn new_secret(
    wrapper: &Wrapper,
    policy: &KeyPolicy,
    value: &[u8],
) -> Result<CardResponse, CardFault> {
    let check_value = check_value(policy.spec, value)?;
    let blob = wrapper.wrap(value, &policy.to_aad())?;
    Ok(CardResponse::SecretKey { blob, check_value })
}

/// Opens a secret key's blob; a value of the wrong length for the
/// authenticated spec means a corrupt card.
fn open(
    wrapper: &Wrapper,
    blob: &[u8],
    policy: &KeyPolicy,
) -> Result<Zeroizing<Vec<u8>>, CardFault> {
    if !policy.spec.is_secret() {
        return Err(CardFault::KeyTypeMismatch);
    }
    let value = wrapper.unwrap(blob, &policy.to_aad())?;
    if key_len(policy.spec) != Ok(value.len()) {
        return Err(CardFault::BadBlob);
    }
    Ok(value)
}

/// CKA_CHECK_VALUE as PKCS#11 3.0 defines it for AES key objects (the
/// first three bytes of the encryption of a zero block) and for generic
/// secret key objects (the first three bytes of the value's SHA-1).
fn check_value(spec: KeySpec, value: &[u8]) -> Result<Vec<u8>, CardFault> {
    match spec {
        KeySpec::Aes { .. } => {
            let key = EncryptingKey::ecb(unbound(value)?).map_err(|_| CardFault::Internal)?;
            let mut block = [0u8; BLOCK];
            key.encrypt(&mut block).map_err(|_| CardFault::Internal)?;
            Ok(block[..CHECK_VALUE_LEN].to_vec())
        }
        KeySpec::GenericSecret { .. } => {
            let hash = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, value);
            Ok(hash.as_ref()[..CHECK_VALUE_LEN].to_vec())
        }
        _ => Err(CardFault::BadParameters),
    }
}

fn cipher_algorithm(value: &[u8]) -> Result<&'static cipher::Algorithm, CardFault> {
    match value.len() {
        16 => Ok(&cipher::AES_128),
        24 => Ok(&cipher::AES_192),
        32 => Ok(&cipher::AES_256),
        _ => Err(CardFault::BadBlob),
    }
}

fn unbound(value: &[u8]) -> Result<UnboundCipherKey, CardFault> {
    UnboundCipherKey::new(cipher_algorithm(value)?, value).map_err(|_| CardFault::Internal)
}

fn block(bytes: &[u8]) -> Result<FixedLength<BLOCK>, CardFault> {
    FixedLength::try_from(bytes).map_err(|_| CardFault::BadParameters)
}

/// One single-part encryption or decryption. Inputs that cannot be
/// decrypted (a GCM tag that does not verify, CBC padding that is wrong, a
/// CBC ciphertext that is not whole blocks) are [`CardFault::BadInput`].
fn crypt(value: &[u8], cipher: &Cipher, encrypt: bool, input: &[u8]) -> Result<Vec<u8>, CardFault> {
    let mut data = input.to_vec();
    match cipher {
        Cipher::AesGcm { iv, aad } => {
            let algorithm = match value.len() {
                16 => &aead::AES_128_GCM,
                24 => &aead::AES_192_GCM,
                32 => &aead::AES_256_GCM,
                _ => return Err(CardFault::BadBlob),
            };
            let key = LessSafeKey::new(
                UnboundKey::new(algorithm, value).map_err(|_| CardFault::Internal)?,
            );
            if iv.len() != NONCE_LEN {
                return Err(CardFault::BadParameters);
            }
            let nonce =
                Nonce::try_assume_unique_for_key(iv).map_err(|_| CardFault::BadParameters)?;
            if encrypt {
                key.seal_in_place_append_tag(nonce, Aad::from(aad), &mut data)
                    .map_err(|_| CardFault::Internal)?;
            } else {
                let len = key
                    .open_in_place(nonce, Aad::from(aad), &mut data)
                    .map_err(|_| CardFault::BadInput)?
                    .len();
                data.truncate(len);
            }
        }
        Cipher::AesCbcPad { iv } => {
            let iv = block(iv)?;
            if encrypt {
                PaddedBlockEncryptingKey::cbc_pkcs7(unbound(value)?)
                    .and_then(|k| k.less_safe_encrypt(&mut data, EncryptionContext::Iv128(iv)))
                    .map_err(|_| CardFault::Internal)?;
            } else {
                if data.is_empty() || data.len() % BLOCK != 0 {
                    return Err(CardFault::BadInput);
                }
                let key = PaddedBlockDecryptingKey::cbc_pkcs7(unbound(value)?)
                    .map_err(|_| CardFault::Internal)?;
                let len = key
                    .decrypt(&mut data, DecryptionContext::Iv128(iv))
                    .map_err(|_| CardFault::BadInput)?
                    .len();
                data.truncate(len);
            }
        }
        Cipher::AesCbcBlocks { iv } => {
            let iv = block(iv)?;
            if data.len() % BLOCK != 0 {
                return Err(CardFault::BadInput);
            }
            if encrypt {
                EncryptingKey::cbc(unbound(value)?)
                    .and_then(|k| k.less_safe_encrypt(&mut data, EncryptionContext::Iv128(iv)))
                    .map_err(|_| CardFault::Internal)?;
            } else {
                DecryptingKey::cbc(unbound(value)?)
                    .and_then(|k| {
                        k.decrypt(&mut data, DecryptionContext::Iv128(iv))
                            .map(|_| ())
                    })
                    .map_err(|_| CardFault::Internal)?;
            }
        }
        Cipher::AesCtr {
            counter,
            counter_bits,
        } => {
            check_counter(counter, *counter_bits, data.len())?;
            let counter = block(counter)?;
            if encrypt {
                EncryptingKey::ctr(unbound(value)?)
                    .and_then(|k| k.less_safe_encrypt(&mut data, EncryptionContext::Iv128(counter)))
                    .map_err(|_| CardFault::Internal)?;
            } else {
                DecryptingKey::ctr(unbound(value)?)
                    .and_then(|k| {
                        k.decrypt(&mut data, DecryptionContext::Iv128(counter))
                            .map(|_| ())
                    })
                    .map_err(|_| CardFault::Internal)?;
            }
        }
    }
    Ok(data)
}

/// aws-lc increments the whole 16-byte counter block; that equals
/// PKCS#11's counter of `counter_bits` low bits as long as those bits do
/// not wrap within the message, which is therefore refused.
fn check_counter(counter: &[u8], counter_bits: u32, len: usize) -> Result<(), CardFault> {
    let counter: [u8; BLOCK] = counter.try_into().map_err(|_| CardFault::BadParameters)?;
    if !(1..=128).contains(&counter_bits) {
        return Err(CardFault::BadParameters);
    }
    let max = u128::MAX >> (128 - counter_bits);
    let start = u128::from_be_bytes(counter) & max;
    let blocks = len.div_ceil(BLOCK) as u128;
    match start.checked_add(blocks.saturating_sub(1)) {
        Some(last) if last <= max => Ok(()),
        _ => Err(CardFault::BadInput),
    }
}

fn hmac_algorithm(hash: Hash) -> Result<hmac::Algorithm, CardFault> {
    match hash {
        Hash::Sha256 => Ok(hmac::HMAC_SHA256),
        Hash::Sha384 => Ok(hmac::HMAC_SHA384),
        Hash::Sha512 => Ok(hmac::HMAC_SHA512),
        Hash::Sha1 | Hash::Sha224 => Err(CardFault::BadParameters),
    }
}

fn cmac_key(value: &[u8]) -> Result<cmac::Key, CardFault> {
    let algorithm = match value.len() {
        16 => cmac::AES_128,
        24 => cmac::AES_192,
        32 => cmac::AES_256,
        _ => return Err(CardFault::BadBlob),
    };
    cmac::Key::new(algorithm, value).map_err(|_| CardFault::Internal)
}

fn compute_mac(value: &[u8], mac: Mac, input: &[u8]) -> Result<Vec<u8>, CardFault> {
    match mac {
        Mac::Hmac(hash) => {
            let key = hmac::Key::new(hmac_algorithm(hash)?, value);
            Ok(hmac::sign(&key, input).as_ref().to_vec())
        }
        Mac::AesCmac => cmac::sign(&cmac_key(value)?, input)
            .map(|tag| tag.as_ref().to_vec())
            .map_err(|_| CardFault::Internal),
    }
}

/// Compares in constant time (aws-lc-rs's verify functions).
fn verify_mac(value: &[u8], mac: Mac, input: &[u8], expected: &[u8]) -> Result<bool, CardFault> {
    Ok(match mac {
        Mac::Hmac(hash) => {
            let key = hmac::Key::new(hmac_algorithm(hash)?, value);
            hmac::verify(&key, input, expected).is_ok()
        }
        Mac::AesCmac => cmac::verify(&cmac_key(value)?, input, expected).is_ok(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::SecretUsage;

    fn policy(spec: KeySpec, usage: SecretUsage, sign: bool, decrypt: bool) -> KeyPolicy {
        KeyPolicy {
            object_id: 9,
            spec,
            sign,
            decrypt,
            unwrap: false,
            derive: false,
            sensitive: true,
            extractable: false,
            secret: Some(usage),
        }
    }

    fn all(spec: KeySpec) -> KeyPolicy {
        let usage = SecretUsage {
            encrypt: true,
            verify: true,
            wrap: false,
        };
        policy(spec, usage, true, true)
    }

    fn import(w: &Wrapper, policy: &KeyPolicy, value: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let request = CardRequest::ImportSecret {
            policy: policy.clone(),
            value: value.to_vec(),
        };
        match execute(w, request).unwrap() {
            CardResponse::SecretKey { blob, check_value } => (blob, check_value),
            other => panic!("{other:?}"),
        }
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn check_values_follow_pkcs11() {
        // FIPS 197 appendix C.1: AES-128 of 00..0f under 00..0f; here the
        // zero block under the zero key, as published for key check values.
        let aes = check_value(KeySpec::Aes { bytes: 16 }, &[0; 16]).unwrap();
        assert_eq!(aes, hex("66e94b"));
        let generic = check_value(KeySpec::GenericSecret { bytes: 3 }, b"abc").unwrap();
        assert_eq!(generic, hex("a9993e"));
    }

    #[test]
    fn generation_sizes_and_blob_binding() {
        let w = Wrapper::new(&[3; 32]);
        for (spec, ok) in [
            (KeySpec::Aes { bytes: 16 }, true),
            (KeySpec::Aes { bytes: 32 }, true),
            (KeySpec::Aes { bytes: 20 }, false),
            (KeySpec::GenericSecret { bytes: 1 }, true),
            (KeySpec::GenericSecret { bytes: 64 }, true),
            (KeySpec::GenericSecret { bytes: 65 }, false),
            (KeySpec::GenericSecret { bytes: 0 }, false),
            (KeySpec::Ed25519, false),
        ] {
            let got = execute(&w, CardRequest::GenerateSecret { policy: all(spec) });
            assert_eq!(got.is_ok(), ok, "{spec:?}");
        }
        let p = all(KeySpec::Aes { bytes: 16 });
        let (blob, _) = import(&w, &p, &[1; 16]);
        let loosened = KeyPolicy {
            sensitive: false,
            ..p.clone()
        };
        assert_eq!(open(&w, &blob, &loosened).unwrap_err(), CardFault::BadBlob);
        assert_eq!(open(&w, &blob, &p).unwrap().as_slice(), &[1; 16]);
        let wrong_length = CardRequest::ImportSecret {
            policy: p,
            value: vec![1; 15],
        };
        assert_eq!(execute(&w, wrong_length), Err(CardFault::BadInput));
    }

    #[test]
    fn usage_flags_are_enforced() {
        let w = Wrapper::new(&[3; 32]);
        let spec = KeySpec::Aes { bytes: 16 };
        let none = policy(spec, SecretUsage::default(), false, false);
        let (blob, _) = import(&w, &none, &[2; 16]);
        let cipher = |encrypt| CardRequest::Cipher {
            blob: blob.clone(),
            policy: none.clone(),
            cipher: Cipher::AesCbcPad { iv: vec![0; 16] },
            encrypt,
            input: vec![0; 16],
        };
        assert_eq!(execute(&w, cipher(true)), Err(CardFault::NotPermitted));
        assert_eq!(execute(&w, cipher(false)), Err(CardFault::NotPermitted));
        let mac = |expected| CardRequest::Mac {
            blob: blob.clone(),
            policy: none.clone(),
            mac: Mac::AesCmac,
            input: vec![],
            expected,
        };
        assert_eq!(execute(&w, mac(None)), Err(CardFault::NotPermitted));
        assert_eq!(
            execute(&w, mac(Some(vec![0; 16]))),
            Err(CardFault::NotPermitted)
        );
    }

    #[test]
    fn known_answers() {
        // NIST SP 800-38A F.2.1 (CBC-AES128), first block; F.5.1 (CTR).
        let key = hex("2b7e151628aed2a6abf7158809cf4f3c");
        let plain = hex("6bc1bee22e409f96e93d7e117393172a");
        let cbc = Cipher::AesCbcPad {
            iv: hex("000102030405060708090a0b0c0d0e0f"),
        };
        let out = crypt(&key, &cbc, true, &plain).unwrap();
        assert_eq!(out[..16], hex("7649abac8119b246cee98e9b12e9197d"));
        assert_eq!(out.len(), 32);
        assert_eq!(crypt(&key, &cbc, false, &out).unwrap(), plain);
        let ctr = Cipher::AesCtr {
            counter: hex("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff"),
            counter_bits: 128,
        };
        assert_eq!(
            crypt(&key, &ctr, true, &plain).unwrap(),
            hex("874d6191b620e3261bef6864990db6ce")
        );
        // RFC 4493 example 2 (AES-CMAC, 16-byte message).
        assert_eq!(
            compute_mac(&key, Mac::AesCmac, &plain).unwrap(),
            hex("070a16b46b4d4144f79bdd9dd04a287c")
        );
        // RFC 4231 test case 2 (HMAC-SHA-256).
        let tag = compute_mac(
            b"Jefe",
            Mac::Hmac(Hash::Sha256),
            b"what do ya want for nothing?",
        )
        .unwrap();
        assert_eq!(
            tag,
            hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
        assert_eq!(
            verify_mac(
                b"Jefe",
                Mac::Hmac(Hash::Sha256),
                b"what do ya want for nothing?",
                &tag
            ),
            Ok(true)
        );
        assert_eq!(
            verify_mac(
                b"Jefe",
                Mac::Hmac(Hash::Sha256),
                b"what do ya want for nothing!",
                &tag
            ),
            Ok(false)
        );
    }

    #[test]
    fn cbc_blocks_chain_into_cbc_pad() {
        // SP 800-38A F.2.1: the first block through AesCbcBlocks, then the
        // rest through AesCbcPad with the first ciphertext block as IV,
        // equals one AesCbcPad over everything.
        let key = hex("2b7e151628aed2a6abf7158809cf4f3c");
        let iv = hex("000102030405060708090a0b0c0d0e0f");
        let plain = [7u8; 40];
        let whole = crypt(&key, &Cipher::AesCbcPad { iv: iv.clone() }, true, &plain).unwrap();
        let first = crypt(
            &key,
            &Cipher::AesCbcBlocks { iv: iv.clone() },
            true,
            &plain[..16],
        );
        let first = first.unwrap();
        let rest = Cipher::AesCbcPad { iv: first.clone() };
        let mut parts = first.clone();
        parts.extend(crypt(&key, &rest, true, &plain[16..]).unwrap());
        assert_eq!(parts, whole);
        let back = crypt(&key, &Cipher::AesCbcBlocks { iv }, false, &whole[..32]).unwrap();
        assert_eq!(back, plain[..32]);
        assert_eq!(
            crypt(
                &key,
                &Cipher::AesCbcBlocks { iv: vec![0; 16] },
                true,
                &[1; 15]
            ),
            Err(CardFault::BadInput)
        );
        let f21 = crypt(
            &key,
            &Cipher::AesCbcBlocks {
                iv: hex("000102030405060708090a0b0c0d0e0f"),
            },
            true,
            &hex("6bc1bee22e409f96e93d7e117393172a"),
        );
        assert_eq!(f21.unwrap(), hex("7649abac8119b246cee98e9b12e9197d"));
    }

    #[test]
    fn gcm_tags_and_bad_inputs() {
        let key = [7u8; 32];
        let gcm = Cipher::AesGcm {
            iv: vec![1; 12],
            aad: b"header".to_vec(),
        };
        let mut sealed = crypt(&key, &gcm, true, b"secret").unwrap();
        assert_eq!(sealed.len(), 6 + 16);
        assert_eq!(crypt(&key, &gcm, false, &sealed).unwrap(), b"secret");
        sealed[0] ^= 1;
        assert_eq!(crypt(&key, &gcm, false, &sealed), Err(CardFault::BadInput));
        let short_iv = Cipher::AesGcm {
            iv: vec![1; 16],
            aad: vec![],
        };
        assert_eq!(
            crypt(&key, &short_iv, true, b"x"),
            Err(CardFault::BadParameters)
        );
        let cbc = Cipher::AesCbcPad { iv: vec![0; 16] };
        assert_eq!(crypt(&key, &cbc, false, &[0; 15]), Err(CardFault::BadInput));
        // A counter of 8 bits at 0xff has room for one block only.
        let mut counter = vec![0; 16];
        counter[15] = 0xff;
        assert!(check_counter(&counter, 8, 16).is_ok());
        assert_eq!(check_counter(&counter, 8, 17), Err(CardFault::BadInput));
        assert!(check_counter(&counter, 9, 17).is_ok());
        assert_eq!(check_counter(&counter, 0, 1), Err(CardFault::BadParameters));
        assert!(check_counter(&[0xff; 16], 128, 16).is_ok());
        assert_eq!(
            check_counter(&[0xff; 16], 128, 17),
            Err(CardFault::BadInput)
        );
    }
}
