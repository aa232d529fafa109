//! RSA decryption on the card: RSAES-OAEP and RSAES-PKCS1-v1_5.
//!
//! PKCS#1 v1.5 decryption is the classic padding oracle (Bleichenbacher
//! 1998; the Marvin attack, 2023): if the answer, or its timing, tells
//! valid padding from invalid, an attacker who can submit ciphertexts
//! decrypts any message. aws-lc checks the padding in constant time but
//! then reports the outcome, and it has no implicit-rejection mode. So the
//! firmware adds implicit rejection around it (the idea of
//! draft-irtf-cfrg-rsa-guidance, as OpenSSL 3.2 does): for *every*
//! ciphertext it first derives a synthetic message from a secret key, the
//! key blob and the ciphertext; if the padding turns out invalid, that
//! synthetic message is the answer. Valid and invalid ciphertexts therefore
//! both succeed, with a plaintext that only the key holder can tell apart,
//! and both do the same work (HMACs, one RSA private operation). No RSA or
//! padding arithmetic is written here: aws-lc does all of it.
//!
//! OAEP needs no such measure beyond aws-lc's constant-time decoding (its
//! failure is indistinguishable by cause); a ciphertext that does not
//! decode is refused. The four pairs aws-lc-rs offers (MGF1 over the label
//! hash, SHA-1/256/384/512) take its reviewed path; SHA-224 and differing
//! MGF1 hashes go to aws-lc's EVP interface ([`super::oaep_any_hash`]),
//! with the same single fault for every decoding failure.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::hmac;
use aws_lc_rs::rsa::{
    OaepAlgorithm, OaepPrivateDecryptingKey, Pkcs1PrivateDecryptingKey, PrivateDecryptingKey,
    OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256, OAEP_SHA384_MGF1SHA384, OAEP_SHA512_MGF1SHA512,
};
use zeroize::Zeroizing;

use super::keys::LoadedKey;
use super::oaep_any_hash;
use crate::command::{CardFault, DecryptScheme, Hash};

/// The label under which the implicit-rejection key is derived from the
/// master key (HMAC-SHA256 as a KDF keeps it apart from the wrapping use).
const REJECTION_KEY_LABEL: &[u8] = b"MeSign card: PKCS#1 v1.5 implicit rejection key v1";

/// PKCS#1 v1.5 padding takes at least 11 bytes of the block.
const PKCS1_OVERHEAD: usize = 11;

/// Decrypting keys kept, like the signing key cache, so that repeated
/// decryptions skip re-parsing the PKCS#8 (about 0.2 ms for RSA-2048).
const DECRYPTING_KEYS: usize = 256;

/// The decryption state: the secret behind synthetic messages for PKCS#1
/// v1.5 ciphertexts whose padding is invalid, and parsed decrypting keys
/// by blob (a blob is only looked up here after it opened with its policy).
pub struct Decryption {
    rejection: hmac::Key,
    keys: Mutex<HashMap<Vec<u8>, Arc<PrivateDecryptingKey>>>,
}

impl Decryption {
    pub fn new(master_key: &[u8; 32]) -> Decryption {
        let derived = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, master_key),
            REJECTION_KEY_LABEL,
        );
        Decryption {
            rejection: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()),
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// The aws-lc-rs decrypting key for the RSA key in `blob`. The cached
    /// key is a signing key; the decrypting type is made from the same
    /// PKCS#8 (zeroized when dropped).
    fn decrypting_key(
        &self,
        blob: &[u8],
        pair: &aws_lc_rs::rsa::KeyPair,
    ) -> Result<Arc<PrivateDecryptingKey>, CardFault> {
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(key) = keys.get(blob) {
            return Ok(Arc::clone(key));
        }
        let pkcs8 = pair.as_der().map_err(|_| CardFault::Internal)?;
        let key = Arc::new(
            PrivateDecryptingKey::from_pkcs8(pkcs8.as_ref()).map_err(|_| CardFault::BadBlob)?,
        );
        if keys.len() >= DECRYPTING_KEYS {
            keys.clear();
        }
        keys.insert(blob.to_vec(), Arc::clone(&key));
        Ok(key)
    }

    /// The message an invalid ciphertext decrypts to: deterministic for a
    /// given key blob and ciphertext (so a retry gives the same answer),
    /// unpredictable without the card's secret, and of a length between 0
    /// and `max_len` derived the same way.
    fn synthetic(&self, blob: &[u8], ciphertext: &[u8], max_len: usize) -> Zeroizing<Vec<u8>> {
        let mut ctx = hmac::Context::with_key(&self.rejection);
        ctx.update(&(blob.len() as u64).to_be_bytes());
        ctx.update(blob);
        ctx.update(ciphertext);
        let kdk = hmac::Key::new(hmac::HMAC_SHA256, ctx.sign().as_ref());
        let block = |label: &[u8], counter: u32| {
            let mut ctx = hmac::Context::with_key(&kdk);
            ctx.update(label);
            ctx.update(&counter.to_be_bytes());
            ctx.sign()
        };
        let length_block = block(b"length", 0);
        let mut random = [0u8; 8];
        random.copy_from_slice(&length_block.as_ref()[..8]);
        // Multiply-shift rather than `%`: a division's timing may depend on
        // its operands; this maps uniformly onto 0..=max_len.
        let len = ((u64::from_be_bytes(random) as u128 * (max_len as u128 + 1)) >> 64) as usize;
        let mut message = Zeroizing::new(Vec::with_capacity(max_len + 32));
        let mut counter = 0;
        while message.len() < max_len {
            message.extend_from_slice(block(b"message", counter).as_ref());
            counter += 1;
        }
        message.truncate(len);
        message
    }
}

/// Decrypts one ciphertext block; the caller has already opened `blob`
/// with its policy and checked that the policy allows decryption. `blob`
/// also names the key for the implicit-rejection derivation.
pub fn decrypt(
    key: &LoadedKey,
    state: &Decryption,
    blob: &[u8],
    scheme: &DecryptScheme,
    input: &[u8],
) -> Result<Vec<u8>, CardFault> {
    let LoadedKey::Rsa(pair) = key else {
        return Err(CardFault::KeyTypeMismatch);
    };
    let private = PrivateDecryptingKey::clone(&*state.decrypting_key(blob, pair)?);
    let block_len = private.key_size_bytes();
    if input.len() != block_len {
        return Err(CardFault::BadInput);
    }
    let mut out = Zeroizing::new(vec![0u8; block_len]);
    match scheme {
        DecryptScheme::RsaPkcs1 => {
            // Derived before decrypting, for every ciphertext, so that valid
            // and invalid ones cost the same.
            let synthetic = state.synthetic(blob, input, block_len - PKCS1_OVERHEAD);
            let key = Pkcs1PrivateDecryptingKey::new(private).map_err(|_| CardFault::Internal)?;
            let chosen: &[u8] = match key.decrypt(input, &mut out) {
                Ok(message) => message,
                Err(_) => &synthetic,
            };
            Ok(chosen.to_vec())
        }
        DecryptScheme::RsaOaep {
            hash,
            mgf_hash,
            label,
        } => {
            let Some(algorithm) = oaep_algorithm(*hash, *mgf_hash) else {
                let pkcs8 = pair.as_der().map_err(|_| CardFault::Internal)?;
                return oaep_any_hash::decrypt(pkcs8.as_ref(), *hash, *mgf_hash, label, input)
                    .map(|message| message.to_vec());
            };
            let key = OaepPrivateDecryptingKey::new(private).map_err(|_| CardFault::Internal)?;
            let label = (!label.is_empty()).then_some(label.as_slice());
            key.decrypt(algorithm, input, &mut out, label)
                .map(|message| message.to_vec())
                .map_err(|_| CardFault::BadInput)
        }
    }
}

/// The OAEP variants aws-lc-rs offers: MGF1 over the label hash, SHA-1 or
/// SHA-2 but not SHA-224. The other pairs go through
/// [`super::oaep_any_hash`].
pub fn oaep_algorithm(hash: Hash, mgf_hash: Hash) -> Option<&'static OaepAlgorithm> {
    match (hash, mgf_hash) {
        (Hash::Sha1, Hash::Sha1) => Some(&OAEP_SHA1_MGF1SHA1),
        (Hash::Sha256, Hash::Sha256) => Some(&OAEP_SHA256_MGF1SHA256),
        (Hash::Sha384, Hash::Sha384) => Some(&OAEP_SHA384_MGF1SHA384),
        (Hash::Sha512, Hash::Sha512) => Some(&OAEP_SHA512_MGF1SHA512),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Curve, KeySpec};
    use crate::firmware::keys::generate;
    use aws_lc_rs::rsa::{OaepPublicEncryptingKey, Pkcs1PublicEncryptingKey};

    fn rsa() -> (LoadedKey, PrivateDecryptingKey) {
        let g = generate(KeySpec::Rsa { bits: 2048 }).unwrap();
        let private = PrivateDecryptingKey::from_pkcs8(&g.pkcs8).unwrap();
        (g.key, private)
    }

    #[test]
    fn pkcs1_round_trip_and_implicit_rejection() {
        let (key, private) = rsa();
        let rejection = Decryption::new(&[9; 32]);
        let public = Pkcs1PublicEncryptingKey::new(private.public_key()).unwrap();
        let mut ct = vec![0; 256];
        public.encrypt(b"session key", &mut ct).unwrap();
        let plain = decrypt(&key, &rejection, b"blob", &DecryptScheme::RsaPkcs1, &ct).unwrap();
        assert_eq!(plain, b"session key");

        // A random block almost never has valid padding: it still
        // "decrypts", deterministically, to something else.
        let bad = vec![0x42; 256];
        let first = decrypt(&key, &rejection, b"blob", &DecryptScheme::RsaPkcs1, &bad).unwrap();
        let again = decrypt(&key, &rejection, b"blob", &DecryptScheme::RsaPkcs1, &bad).unwrap();
        assert_eq!(first, again);
        assert!(first.len() <= 256 - PKCS1_OVERHEAD);
        let other_key = decrypt(&key, &rejection, b"blob2", &DecryptScheme::RsaPkcs1, &bad);
        assert_ne!(first, other_key.unwrap());
        assert_eq!(
            decrypt(
                &key,
                &rejection,
                b"blob",
                &DecryptScheme::RsaPkcs1,
                &ct[1..]
            ),
            Err(CardFault::BadInput)
        );
    }

    #[test]
    fn the_card_enforces_the_decrypt_permission_of_the_policy() {
        use crate::command::{CardRequest, CardResponse, CardResult, KeyPolicy};
        use crate::firmware::Firmware;
        let dir = tempfile::tempdir().unwrap();
        let fw = Firmware::start(dir.path(), false).unwrap();
        let run = |request: CardRequest| -> CardResult {
            minicbor::decode(&fw.execute(&minicbor::to_vec(&request).unwrap())).unwrap()
        };
        let policy = |decrypt| KeyPolicy {
            object_id: 3,
            spec: KeySpec::Rsa { bits: 2048 },
            sign: false,
            decrypt,
            unwrap: false,
            derive: false,
            sensitive: true,
            extractable: false,
            secret: None,
        };
        for allowed in [true, false] {
            let CardResult::Ok(CardResponse::KeyPair { blob, .. }) =
                run(CardRequest::GenerateKeyPair {
                    policy: policy(allowed),
                })
            else {
                panic!("no key pair")
            };
            let decrypt = |policy| CardRequest::Decrypt {
                blob: blob.clone(),
                policy,
                scheme: DecryptScheme::RsaPkcs1,
                input: vec![0x42; 256],
            };
            let answer = run(decrypt(policy(allowed)));
            if allowed {
                assert!(matches!(answer, CardResult::Ok(CardResponse::Bytes(_))));
            } else {
                assert_eq!(answer, CardResult::Err(CardFault::NotPermitted));
                // Claiming the permission the blob was not made with does
                // not open it.
                assert_eq!(
                    run(decrypt(policy(true))),
                    CardResult::Err(CardFault::BadBlob)
                );
            }
        }
    }

    #[test]
    fn the_card_encrypts_oaep_pairs_the_module_lacks_for_its_own_decryption() {
        use crate::command::{CardRequest, CardResponse, CardResult, KeyPolicy, PublicKey};
        use crate::firmware::Firmware;
        let dir = tempfile::tempdir().unwrap();
        let fw = Firmware::start(dir.path(), false).unwrap();
        let run = |request: CardRequest| -> CardResult {
            minicbor::decode(&fw.execute(&minicbor::to_vec(&request).unwrap())).unwrap()
        };
        let policy = KeyPolicy {
            object_id: 3,
            spec: KeySpec::Rsa { bits: 2048 },
            sign: false,
            decrypt: true,
            unwrap: false,
            derive: false,
            sensitive: true,
            extractable: false,
            secret: None,
        };
        let CardResult::Ok(CardResponse::KeyPair {
            blob,
            public: PublicKey::Rsa { modulus, exponent },
        }) = run(CardRequest::GenerateKeyPair {
            policy: policy.clone(),
        })
        else {
            panic!("no key pair")
        };
        let encrypt = |modulus: &[u8], input: &[u8]| {
            run(CardRequest::OaepEncrypt {
                modulus: modulus.to_vec(),
                exponent: exponent.clone(),
                hash: Hash::Sha224,
                mgf_hash: Hash::Sha512,
                label: b"l".to_vec(),
                input: input.to_vec(),
            })
        };
        let CardResult::Ok(CardResponse::Bytes(ct)) = encrypt(&modulus, b"cek") else {
            panic!("no ciphertext")
        };
        let decrypt = CardRequest::Decrypt {
            blob,
            policy,
            scheme: DecryptScheme::RsaOaep {
                hash: Hash::Sha224,
                mgf_hash: Hash::Sha512,
                label: b"l".to_vec(),
            },
            input: ct,
        };
        assert_eq!(
            run(decrypt),
            CardResult::Ok(CardResponse::Bytes(b"cek".to_vec()))
        );
        // Too long for one block (k − 2·28 − 2 = 198), and not a key.
        assert_eq!(
            encrypt(&modulus, &[0; 199]),
            CardResult::Err(CardFault::BadInput)
        );
        assert_eq!(
            encrypt(&[0; 256], b"cek"),
            CardResult::Err(CardFault::KeyTypeMismatch)
        );
    }

    #[test]
    fn synthetic_lengths_spread_over_the_range() {
        let rejection = Decryption::new(&[1; 32]);
        let lengths: Vec<usize> = (0u32..200)
            .map(|i| rejection.synthetic(b"b", &i.to_be_bytes(), 245).len())
            .collect();
        assert!(lengths.iter().all(|&l| l <= 245));
        assert!(lengths.iter().any(|&l| l < 60) && lengths.iter().any(|&l| l > 185));
    }

    #[test]
    fn oaep_round_trips_with_labels_for_every_hash_pair() {
        let (key, private) = rsa();
        let rejection = Decryption::new(&[9; 32]);
        let public = OaepPublicEncryptingKey::new(private.public_key()).unwrap();
        for (hash, algorithm) in [
            (Hash::Sha1, &OAEP_SHA1_MGF1SHA1),
            (Hash::Sha256, &OAEP_SHA256_MGF1SHA256),
            (Hash::Sha384, &OAEP_SHA384_MGF1SHA384),
            (Hash::Sha512, &OAEP_SHA512_MGF1SHA512),
        ] {
            for label in [&b""[..], b"label"] {
                let mut ct = vec![0; 256];
                let l = (!label.is_empty()).then_some(label);
                public.encrypt(algorithm, b"cek", &mut ct, l).unwrap();
                let scheme = DecryptScheme::RsaOaep {
                    hash,
                    mgf_hash: hash,
                    label: label.to_vec(),
                };
                assert_eq!(
                    decrypt(&key, &rejection, b"b", &scheme, &ct).unwrap(),
                    b"cek"
                );
                let wrong = DecryptScheme::RsaOaep {
                    hash,
                    mgf_hash: hash,
                    label: b"other".to_vec(),
                };
                assert_eq!(
                    decrypt(&key, &rejection, b"b", &wrong, &ct),
                    Err(CardFault::BadInput)
                );
            }
        }
        // The pairs aws-lc-rs lacks go through aws-lc's EVP interface, with
        // the same fault for a block that does not decode.
        let spki = private.public_key().as_der().unwrap();
        for (hash, mgf_hash) in [(Hash::Sha224, Hash::Sha224), (Hash::Sha256, Hash::Sha1)] {
            let ct = oaep_any_hash::encrypt(spki.as_ref(), hash, mgf_hash, b"l", b"cek").unwrap();
            let scheme = |label: &[u8]| DecryptScheme::RsaOaep {
                hash,
                mgf_hash,
                label: label.to_vec(),
            };
            assert_eq!(
                decrypt(&key, &rejection, b"b", &scheme(b"l"), &ct).unwrap(),
                b"cek"
            );
            assert_eq!(
                decrypt(&key, &rejection, b"b", &scheme(b"x"), &ct),
                Err(CardFault::BadInput)
            );
            assert_eq!(
                decrypt(&key, &rejection, b"b", &scheme(b""), &[1; 256]),
                Err(CardFault::BadInput)
            );
        }
        let ec = generate(KeySpec::Ec(Curve::P256)).unwrap().key;
        assert_eq!(
            decrypt(&ec, &rejection, b"b", &DecryptScheme::RsaPkcs1, &[1; 64]),
            Err(CardFault::KeyTypeMismatch)
        );
    }
}
