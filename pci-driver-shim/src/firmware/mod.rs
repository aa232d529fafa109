//! The card firmware: what runs inside `mesign-card-emu` (and, on a real
//! card, on the card itself). It decodes a command from a data slot,
//! executes it with aws-lc-rs and encodes the answer.
//!
//! Key material exists in clear only in this process: the master key from
//! the state file, freshly generated keys, and unwrapped keys in the cache.
//! The firmware refuses service (except `Info`) when a power-on self-test or
//! a pairwise consistency test has failed.

mod decrypt;
mod domain;
mod ecdh;
mod hardening;
mod key_cache;
mod key_wrapping;
mod keys;
// The crate's second unsafe boundary: aws-lc's EVP OAEP for the hash pairs
// aws-lc-rs lacks.
#[allow(unsafe_code)]
mod oaep_any_hash;
mod selftest;
mod signing;
mod state_file;
mod symmetric;
mod wrap;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub use hardening::harden_process;
pub use selftest::{SelfTest, FORCE_FAILURE_ENV};

use crate::command::{
    CardFault, CardInfo, CardRequest, CardResponse, CardResult, KeyPolicy, MAX_RANDOM,
};
use key_cache::KeyCache;
use keys::{GenerateError, LoadedKey};
use wrap::Wrapper;

const MODEL: &str = "MeSign emulated HSM (software, not tamper-resistant)";
const HARDWARE_VERSION: (u8, u8) = (1, 0);
const FIRMWARE_VERSION: (u8, u8) = (0, 1);
const KEY_CACHE_ENTRIES: usize = 1024;

/// Why the firmware could not start.
#[derive(Debug)]
pub enum FirmwareError {
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    CorruptState {
        path: PathBuf,
    },
    Random,
}

impl std::fmt::Display for FirmwareError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FirmwareError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            FirmwareError::CorruptState { path } => {
                write!(
                    f,
                    "card state {} is corrupt; refusing to replace it",
                    path.display()
                )
            }
            FirmwareError::Random => write!(f, "the random generator failed"),
        }
    }
}

impl std::error::Error for FirmwareError {}

/// The card's firmware state, shared by all worker threads.
pub struct Firmware {
    serial: String,
    wrapper: Wrapper,
    cache: KeyCache,
    decryption: decrypt::Decryption,
    domains: domain::Domains,
    operational: AtomicBool,
}

impl Firmware {
    /// Loads (or creates) the card state in `state_dir` and runs the
    /// power-on self-tests. A failed self-test does not fail start-up: the
    /// card comes up in its error state and says so in `Info`.
    pub fn start(
        state_dir: &Path,
        force_selftest_failure: bool,
    ) -> Result<Firmware, FirmwareError> {
        let state = state_file::load_or_create(state_dir)?;
        let operational = match selftest::run_all(force_selftest_failure) {
            Ok(()) => {
                tracing::info!("power-on self-tests passed");
                true
            }
            Err(test) => {
                tracing::error!(?test, "power-on self-test failed; the card refuses service");
                false
            }
        };
        Ok(Firmware {
            serial: state.serial,
            wrapper: Wrapper::new(&state.master_key),
            cache: KeyCache::new(KEY_CACHE_ENTRIES),
            decryption: decrypt::Decryption::new(&state.master_key),
            domains: domain::Domains::new(state_dir),
            operational: AtomicBool::new(operational),
        })
    }

    /// Puts the card in its error state, as a failed self-test does: every
    /// command but `Info` is refused until the card restarts.
    pub fn enter_error_state(&self, why: &str) {
        tracing::error!(why, "entering the error state; the card refuses service");
        self.operational.store(false, Ordering::Release);
    }

    /// Executes one encoded command and returns the encoded result.
    pub fn execute(&self, request: &[u8]) -> Vec<u8> {
        let result = match minicbor::decode::<CardRequest>(request) {
            Ok(request) => match self.handle(request) {
                Ok(response) => CardResult::Ok(response),
                Err(fault) => CardResult::Err(fault),
            },
            Err(_) => CardResult::Err(CardFault::Malformed),
        };
        minicbor::to_vec(&result).expect("encoding into a Vec is infallible")
    }

    /// The answer for a command that could not even be read from its slot.
    pub fn malformed() -> Vec<u8> {
        minicbor::to_vec(CardResult::Err(CardFault::Malformed)).expect("encoding into a Vec")
    }

    fn handle(&self, request: CardRequest) -> Result<CardResponse, CardFault> {
        if let CardRequest::Info = request {
            return Ok(CardResponse::Info(self.info()));
        }
        if !self.operational.load(Ordering::Acquire) {
            return Err(CardFault::SelfTestFailed);
        }
        match request {
            CardRequest::Info => unreachable!("answered above"),
            CardRequest::GenerateKeyPair { policy } => self.generate(&policy),
            CardRequest::Sign {
                blob,
                policy,
                scheme,
                input,
            } => {
                let key = self.unwrap_key(&blob, &policy)?;
                if !policy.sign {
                    return Err(CardFault::NotPermitted);
                }
                signing::sign(&key, scheme, &input).map(CardResponse::Bytes)
            }
            CardRequest::Decrypt {
                blob,
                policy,
                scheme,
                input,
            } => {
                let key = self.unwrap_key(&blob, &policy)?;
                if !policy.decrypt {
                    return Err(CardFault::NotPermitted);
                }
                decrypt::decrypt(&key, &self.decryption, &blob, &scheme, &input)
                    .map(CardResponse::Bytes)
            }
            CardRequest::OaepEncrypt {
                modulus,
                exponent,
                hash,
                mgf_hash,
                label,
                input,
            } => {
                let spki = oaep_any_hash::public_key_der(&modulus, &exponent)?;
                oaep_any_hash::encrypt(spki.as_ref(), hash, mgf_hash, &label, &input)
                    .map(CardResponse::Bytes)
            }
            request @ (CardRequest::GenerateSecret { .. }
            | CardRequest::ImportSecret { .. }
            | CardRequest::Cipher { .. }
            | CardRequest::Mac { .. }) => symmetric::execute(&self.wrapper, request),
            CardRequest::DeriveEcdh {
                blob,
                policy,
                peer,
                kdf,
                shared_data,
                derived,
            } => ecdh::derive(
                &self.wrapper,
                ecdh::DeriveEcdh {
                    blob: &blob,
                    policy: &policy,
                    peer: &peer,
                    kdf,
                    shared_data: &shared_data,
                    derived: &derived,
                },
            ),
            request @ (CardRequest::DomainCreate { .. }
            | CardRequest::DomainJoin { .. }
            | CardRequest::DomainInfo
            | CardRequest::ExportKey { .. }
            | CardRequest::ImportKey { .. }
            | CardRequest::BackupTag { .. }
            | CardRequest::ReplicaTag { .. }
            | CardRequest::DomainCaPublic
            | CardRequest::DomainCaSign { .. }) => {
                domain::execute(&self.domains, &self.wrapper, request)
            }
            request @ (CardRequest::WrapKey { .. } | CardRequest::UnwrapKey { .. }) => {
                key_wrapping::execute(self, request)
            }
            CardRequest::Random { len } => {
                if len > MAX_RANDOM {
                    return Err(CardFault::BadInput);
                }
                let mut bytes = vec![0; len as usize];
                aws_lc_rs::rand::fill(&mut bytes).map_err(|_| CardFault::Internal)?;
                Ok(CardResponse::Bytes(bytes))
            }
        }
    }

    fn info(&self) -> CardInfo {
        CardInfo {
            serial: self.serial.clone(),
            model: MODEL.into(),
            hardware_version: HARDWARE_VERSION,
            firmware_version: FIRMWARE_VERSION,
            operational: self.operational.load(Ordering::Acquire),
            emulated: true,
        }
    }

    fn generate(&self, policy: &KeyPolicy) -> Result<CardResponse, CardFault> {
        let generated = match keys::generate(policy.spec) {
            Ok(generated) => generated,
            Err(GenerateError::Unsupported) => return Err(CardFault::BadParameters),
            Err(GenerateError::Internal) => return Err(CardFault::Internal),
            Err(GenerateError::PairwiseTestFailed) => {
                tracing::error!(spec = ?policy.spec, "pairwise consistency test failed; entering the error state");
                self.operational.store(false, Ordering::Release);
                return Err(CardFault::SelfTestFailed);
            }
        };
        let aad = policy.to_aad();
        let blob = self.wrapper.wrap(&generated.pkcs8, &aad)?;
        self.cache.insert(&blob, &aad, Arc::new(generated.key));
        Ok(CardResponse::KeyPair {
            blob,
            public: generated.public,
        })
    }

    /// Wraps arbitrary bytes as if they were a PKCS#8 key made by this
    /// card, so the fuzz targets reach the key parser behind the unwrap.
    #[cfg(feature = "fuzzing")]
    pub fn wrap_for_fuzzing(&self, pkcs8: &[u8], policy: &KeyPolicy) -> Vec<u8> {
        self.wrapper
            .wrap(pkcs8, &policy.to_aad())
            .expect("wrapping with a valid key succeeds")
    }

    fn unwrap_key(&self, blob: &[u8], policy: &KeyPolicy) -> Result<Arc<LoadedKey>, CardFault> {
        let aad = policy.to_aad();
        if let Some(key) = self.cache.lookup(blob, &aad) {
            return Ok(key);
        }
        let pkcs8 = self.wrapper.unwrap(blob, &aad)?;
        let key = Arc::new(keys::load(policy.spec, &pkcs8)?);
        self.cache.insert(blob, &aad, Arc::clone(&key));
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Curve, Hash, KeySpec, SignScheme};

    fn policy(spec: KeySpec) -> KeyPolicy {
        KeyPolicy {
            object_id: 7,
            spec,
            sign: true,
            decrypt: false,
            unwrap: false,
            derive: false,
            sensitive: true,
            extractable: false,
            secret: None,
        }
    }

    fn run(fw: &Firmware, request: CardRequest) -> Result<CardResponse, CardFault> {
        match minicbor::decode(&fw.execute(&minicbor::to_vec(&request).unwrap())).unwrap() {
            CardResult::Ok(response) => Ok(response),
            CardResult::Err(fault) => Err(fault),
        }
    }

    fn keypair(fw: &Firmware, policy: &KeyPolicy) -> Vec<u8> {
        match run(
            fw,
            CardRequest::GenerateKeyPair {
                policy: policy.clone(),
            },
        )
        .unwrap()
        {
            CardResponse::KeyPair { blob, .. } => blob,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn scheme_and_key_type_must_match() {
        let dir = tempfile::tempdir().unwrap();
        let fw = Firmware::start(dir.path(), false).unwrap();
        let ec = policy(KeySpec::Ec(Curve::P256));
        let blob = keypair(&fw, &ec);
        let sign = |scheme, input: &[u8]| {
            run(
                &fw,
                CardRequest::Sign {
                    blob: blob.clone(),
                    policy: ec.clone(),
                    scheme,
                    input: input.to_vec(),
                },
            )
        };
        assert_eq!(
            sign(SignScheme::RsaPkcs1(Hash::Sha256), &[0; 32]),
            Err(CardFault::KeyTypeMismatch)
        );
        assert!(sign(SignScheme::Ecdsa, &[0; 32]).is_ok());
        assert_eq!(sign(SignScheme::Ecdsa, &[]), Err(CardFault::BadInput));
    }

    #[test]
    fn ed25519_signs_whole_messages_and_only_with_its_scheme() {
        use aws_lc_rs::signature::{UnparsedPublicKey, ED25519};
        let dir = tempfile::tempdir().unwrap();
        let fw = Firmware::start(dir.path(), false).unwrap();
        let ed = policy(KeySpec::Ed25519);
        let Ok(CardResponse::KeyPair {
            blob,
            public: crate::command::PublicKey::Ed25519 { point },
        }) = run(&fw, CardRequest::GenerateKeyPair { policy: ed.clone() })
        else {
            panic!("no Ed25519 key pair")
        };
        let sign = |scheme, input: &[u8]| {
            run(
                &fw,
                CardRequest::Sign {
                    blob: blob.clone(),
                    policy: ed.clone(),
                    scheme,
                    input: input.to_vec(),
                },
            )
        };
        for message in [&b""[..], b"a contract", &[7; 5000]] {
            let Ok(CardResponse::Bytes(sig)) = sign(SignScheme::Ed25519, message) else {
                panic!("no signature")
            };
            assert_eq!(sig.len(), 64);
            UnparsedPublicKey::new(&ED25519, &point)
                .verify(message, &sig)
                .unwrap();
        }
        assert_eq!(
            sign(SignScheme::Ecdsa, &[1; 32]),
            Err(CardFault::KeyTypeMismatch)
        );
        let ec = policy(KeySpec::Ec(Curve::P256));
        let ec_blob = keypair(&fw, &ec);
        assert_eq!(
            run(
                &fw,
                CardRequest::Sign {
                    blob: ec_blob,
                    policy: ec,
                    scheme: SignScheme::Ed25519,
                    input: b"x".to_vec(),
                },
            ),
            Err(CardFault::KeyTypeMismatch)
        );
    }

    #[test]
    fn rsa_parameter_and_input_checks() {
        let dir = tempfile::tempdir().unwrap();
        let fw = Firmware::start(dir.path(), false).unwrap();
        let rsa = policy(KeySpec::Rsa { bits: 2048 });
        let blob = keypair(&fw, &rsa);
        let sign = |scheme, input: &[u8]| {
            run(
                &fw,
                CardRequest::Sign {
                    blob: blob.clone(),
                    policy: rsa.clone(),
                    scheme,
                    input: input.to_vec(),
                },
            )
        };
        assert!(sign(SignScheme::RsaPkcs1(Hash::Sha256), &[1; 32]).is_ok());
        assert_eq!(
            sign(SignScheme::RsaPkcs1(Hash::Sha256), &[1; 31]),
            Err(CardFault::BadInput)
        );
        assert_eq!(
            sign(SignScheme::RsaPkcs1DigestInfo, &[1; 32]),
            Err(CardFault::BadInput)
        );
        let pss = |hash, mgf_hash, salt_len| SignScheme::RsaPss {
            hash,
            mgf_hash,
            salt_len,
        };
        assert!(sign(pss(Hash::Sha384, Hash::Sha384, 48), &[1; 48]).is_ok());
        assert_eq!(
            sign(pss(Hash::Sha384, Hash::Sha256, 48), &[1; 48]),
            Err(CardFault::BadParameters)
        );
        assert_eq!(
            sign(pss(Hash::Sha384, Hash::Sha384, 20), &[1; 48]),
            Err(CardFault::BadParameters)
        );
        assert_eq!(
            sign(pss(Hash::Sha384, Hash::Sha384, 48), &[1; 32]),
            Err(CardFault::BadInput)
        );
        assert_eq!(
            sign(SignScheme::Ecdsa, &[1; 32]),
            Err(CardFault::KeyTypeMismatch)
        );
    }

    #[test]
    fn random_is_bounded_and_malformed_requests_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let fw = Firmware::start(dir.path(), false).unwrap();
        let Ok(CardResponse::Bytes(bytes)) = run(&fw, CardRequest::Random { len: 33 }) else {
            panic!("no random bytes")
        };
        assert_eq!(bytes.len(), 33);
        assert_eq!(
            run(
                &fw,
                CardRequest::Random {
                    len: MAX_RANDOM + 1
                }
            ),
            Err(CardFault::BadInput)
        );
        let answer: CardResult = minicbor::decode(&fw.execute(&[0xff, 0x00])).unwrap();
        assert_eq!(answer, CardResult::Err(CardFault::Malformed));
    }

    #[test]
    fn error_state_refuses_everything_but_info() {
        let dir = tempfile::tempdir().unwrap();
        let fw = Firmware::start(dir.path(), true).unwrap();
        let Ok(CardResponse::Info(info)) = run(&fw, CardRequest::Info) else {
            panic!("no info")
        };
        assert!(!info.operational);
        assert_eq!(
            run(&fw, CardRequest::Random { len: 1 }),
            Err(CardFault::SelfTestFailed)
        );
        let p = policy(KeySpec::Ec(Curve::P256));
        assert_eq!(
            run(&fw, CardRequest::GenerateKeyPair { policy: p }),
            Err(CardFault::SelfTestFailed)
        );
    }
}
