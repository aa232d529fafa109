//! Independent checks of sampled signatures.
//!
//! ECDSA samples are verified with RustCrypto (`p256`, `p384`); RSA samples
//! with the `openssl` command line, so that neither aws-lc-rs (our card's
//! and the baseline's implementation) nor the `rsa` crate (kept out of every
//! normal dependency tree) is the judge. The hash is recomputed from the
//! sample's counter, so a signature over the wrong input fails too.

use std::path::{Path, PathBuf};
use std::process::Command;

use p256::ecdsa::signature::hazmat::PrehashVerifier;

use crate::der;
use crate::error::BenchError;
use crate::source::Source;
use crate::workload::{fresh_hash, KeyKind, Op};

/// RSA samples checked per run: each costs an `openssl` process.
const RSA_SAMPLES_PER_RUN: usize = 2;

/// A public key as read back from a module or from aws-lc-rs.
#[derive(Clone, Debug)]
pub enum PublicKey {
    /// Big-endian modulus and public exponent.
    Rsa {
        /// CKA_MODULUS.
        modulus: Vec<u8>,
        /// CKA_PUBLIC_EXPONENT.
        exponent: Vec<u8>,
    },
    /// An uncompressed SEC1 point.
    Ec {
        /// The curve.
        kind: KeyKind,
        /// 0x04 ‖ x ‖ y.
        point: Vec<u8>,
    },
}

impl PublicKey {
    /// Builds an EC key from CKA_EC_POINT, which modules return either as the
    /// DER OCTET STRING the specification asks for or as the bare point.
    pub fn from_ec_point(kind: KeyKind, value: &[u8]) -> Option<PublicKey> {
        let len = kind.point_len()?;
        let point = if value.len() == len {
            value
        } else if value.len() == len + 2 && value[0] == 0x04 && value[1] as usize == len {
            &value[2..]
        } else {
            return None;
        };
        (point[0] == 0x04).then(|| PublicKey::Ec {
            kind,
            point: point.to_vec(),
        })
    }
}

/// One signature kept for checking.
#[derive(Clone, Debug)]
pub struct Sample {
    /// The client thread that received it.
    pub thread: usize,
    /// Its operation number within the thread; the hash is derived from it.
    pub counter: u64,
    /// The signature bytes.
    pub signature: Vec<u8>,
}

/// Checks samples and counts how many passed.
pub struct Verifier {
    scratch: PathBuf,
    verified: usize,
}

impl Verifier {
    /// A verifier writing RSA inputs for `openssl` under `scratch`.
    pub fn new(scratch: &Path) -> Self {
        Self {
            scratch: scratch.to_path_buf(),
            verified: 0,
        }
    }

    /// How many signatures have been verified so far.
    pub fn verified(&self) -> usize {
        self.verified
    }

    /// Verifies the samples of one run (all ECDSA samples; the first and the
    /// last RSA sample).
    pub fn check(
        &mut self,
        source: Source,
        op: Op,
        key: &PublicKey,
        seed: u64,
        samples: &[Sample],
    ) -> Result<(), BenchError> {
        let chosen: Vec<&Sample> = match key {
            PublicKey::Ec { .. } => samples.iter().collect(),
            PublicKey::Rsa { .. } => {
                let mut picked: Vec<&Sample> = samples.first().into_iter().collect();
                picked.extend(samples.iter().skip(1).last());
                picked.truncate(RSA_SAMPLES_PER_RUN);
                picked
            }
        };
        for sample in chosen {
            let hash = fresh_hash(op, seed, sample.thread, sample.counter);
            let valid = match key {
                PublicKey::Ec { kind, point } => {
                    verify_ecdsa(*kind, point, hash.as_ref(), &sample.signature)
                }
                PublicKey::Rsa { modulus, exponent } => self.verify_rsa(
                    op,
                    &der::rsa_spki(modulus, exponent),
                    hash.as_ref(),
                    &sample.signature,
                )?,
            };
            if !valid {
                return Err(BenchError::BadSignature {
                    source_kind: source,
                    op,
                    thread: sample.thread,
                    counter: sample.counter,
                });
            }
            self.verified += 1;
        }
        Ok(())
    }

    /// `Ok(false)` when openssl says the signature is wrong; `Err` when
    /// openssl could not be run at all.
    fn verify_rsa(
        &self,
        op: Op,
        spki: &[u8],
        hash: &[u8],
        signature: &[u8],
    ) -> Result<bool, BenchError> {
        let key = self.scratch.join("rsa-public.der");
        let data = self.scratch.join("hash.bin");
        let sig = self.scratch.join("signature.bin");
        for (path, bytes) in [(&key, spki), (&data, hash), (&sig, signature)] {
            std::fs::write(path, bytes).map_err(|source| BenchError::Io {
                step: "write an openssl input",
                path: path.clone(),
                source,
            })?;
        }
        let mut command = Command::new("openssl");
        command
            .args(["pkeyutl", "-verify", "-pubin", "-keyform", "DER", "-inkey"])
            .arg(&key)
            .arg("-in")
            .arg(&data)
            .arg("-sigfile")
            .arg(&sig)
            // With a digest set, pkeyutl builds the DigestInfo itself, so the
            // PKCS#1 v1.5 check also covers the DigestInfo we sent.
            .args(["-pkeyopt", "digest:sha256"]);
        if op == Op::RsaPss {
            command.args([
                "-pkeyopt",
                "rsa_padding_mode:pss",
                "-pkeyopt",
                "rsa_pss_saltlen:32",
                "-pkeyopt",
                "rsa_mgf1_md:sha256",
            ]);
        }
        let output = command.output().map_err(|source| BenchError::Io {
            step: "run openssl (install the openssl package)",
            path: PathBuf::from("openssl"),
            source,
        })?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if output.status.success() && stdout.contains("Verified Successfully") {
            return Ok(true);
        }
        if stdout.contains("Verification Failure") {
            return Ok(false);
        }
        Err(BenchError::OpenSsl {
            status: output.status,
            stderr: output.stderr,
        })
    }
}

/// RustCrypto's verdict on a raw r‖s signature over a prehashed message.
fn verify_ecdsa(kind: KeyKind, point: &[u8], hash: &[u8], signature: &[u8]) -> bool {
    match kind {
        KeyKind::P256 => {
            let Ok(key) = p256::ecdsa::VerifyingKey::from_sec1_bytes(point) else {
                return false;
            };
            let Ok(sig) = p256::ecdsa::Signature::from_slice(signature) else {
                return false;
            };
            key.verify_prehash(hash, &sig).is_ok()
        }
        KeyKind::P384 => {
            let Ok(key) = p384::ecdsa::VerifyingKey::from_sec1_bytes(point) else {
                return false;
            };
            let Ok(sig) = p384::ecdsa::Signature::from_slice(signature) else {
                return false;
            };
            key.verify_prehash(hash, &sig).is_ok()
        }
        KeyKind::Rsa2048 => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inprocess::InProcessKey;

    fn samples_from(key: &InProcessKey, op: Op, seed: u64, n: u64) -> Vec<Sample> {
        let mut signer = key.signer(op);
        (0..n)
            .map(|counter| {
                let hash = fresh_hash(op, seed, 0, counter);
                Sample {
                    thread: 0,
                    counter,
                    signature: signer(&hash).unwrap(),
                }
            })
            .collect()
    }

    #[test]
    fn valid_signatures_pass_and_tampered_ones_fail() {
        let scratch = tempfile::tempdir().unwrap();
        for op in Op::ALL {
            let key = InProcessKey::generate(op.key_kind()).unwrap();
            let public = key.public_key();
            let mut samples = samples_from(&key, op, 42, 3);
            let mut verifier = Verifier::new(scratch.path());
            verifier
                .check(Source::InProcess, op, &public, 42, &samples)
                .unwrap_or_else(|e| panic!("{}: {e}", op.name()));
            assert!(verifier.verified() >= 2, "{}", op.name());

            // The wrong seed means a different hash: must fail.
            let err = verifier
                .check(Source::InProcess, op, &public, 43, &samples)
                .unwrap_err();
            assert!(
                matches!(err, BenchError::BadSignature { .. }),
                "{}: {err}",
                op.name()
            );

            samples[0].signature[10] ^= 1;
            let err = verifier
                .check(Source::InProcess, op, &public, 42, &samples)
                .unwrap_err();
            assert!(
                matches!(err, BenchError::BadSignature { counter: 0, .. }),
                "{}: {err}",
                op.name()
            );
        }
    }

    #[test]
    fn ec_points_are_accepted_bare_or_wrapped() {
        let point = {
            let mut p = vec![0x04];
            p.extend([7u8; 64]);
            p
        };
        let mut wrapped = vec![0x04, 65];
        wrapped.extend(&point);
        for value in [&point, &wrapped] {
            match PublicKey::from_ec_point(KeyKind::P256, value) {
                Some(PublicKey::Ec { point: p, .. }) => assert_eq!(p, point),
                other => panic!("{other:?}"),
            }
        }
        assert!(PublicKey::from_ec_point(KeyKind::P384, &point).is_none());
    }
}
