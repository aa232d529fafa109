//! The operations measured, and the fresh input each signature gets.
//!
//! Every signature signs a hash nobody has signed before in this run: the
//! hash of (run seed, thread, counter). A module cannot cache, and a sampled
//! signature can be checked later by recomputing its hash from the counter.

use aws_lc_rs::digest::{self, Digest};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};

/// DER of `DigestInfo { sha256, NULL }` up to the hash value (RFC 8017 §9.2).
const SHA256_DIGEST_INFO_PREFIX: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// One signing workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// RSA-2048, CKM_RSA_PKCS over a SHA-256 DigestInfo.
    RsaPkcs,
    /// RSA-2048, CKM_RSA_PKCS_PSS over a SHA-256 hash, MGF1-SHA256, salt 32.
    RsaPss,
    /// ECDSA P-256, CKM_ECDSA over a raw SHA-256 hash.
    P256,
    /// ECDSA P-384, CKM_ECDSA over a raw SHA-384 hash.
    P384,
}

/// The key an operation signs with; both RSA operations share one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// RSA, 2048-bit modulus, e = 65537.
    Rsa2048,
    /// ECDSA on secp256r1.
    P256,
    /// ECDSA on secp384r1.
    P384,
}

impl Op {
    /// All operations, in report order.
    pub const ALL: [Op; 4] = [Op::RsaPkcs, Op::RsaPss, Op::P256, Op::P384];

    /// The name used on the command line and in the table.
    pub fn name(self) -> &'static str {
        match self {
            Op::RsaPkcs => "rsa-pkcs",
            Op::RsaPss => "rsa-pss",
            Op::P256 => "p256",
            Op::P384 => "p384",
        }
    }

    /// The inverse of [`Op::name`].
    pub fn parse(name: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.name() == name)
    }

    /// What the operation is, for the table's legend.
    pub fn description(self) -> &'static str {
        match self {
            Op::RsaPkcs => "RSA-2048 CKM_RSA_PKCS over a SHA-256 DigestInfo",
            Op::RsaPss => "RSA-2048 CKM_RSA_PKCS_PSS over a SHA-256 hash, MGF1-SHA256, salt 32",
            Op::P256 => "ECDSA P-256 CKM_ECDSA over a raw SHA-256 hash",
            Op::P384 => "ECDSA P-384 CKM_ECDSA over a raw SHA-384 hash",
        }
    }

    /// The key this operation uses.
    pub fn key_kind(self) -> KeyKind {
        match self {
            Op::RsaPkcs | Op::RsaPss => KeyKind::Rsa2048,
            Op::P256 => KeyKind::P256,
            Op::P384 => KeyKind::P384,
        }
    }

    /// The hash that is signed.
    pub fn hash_algorithm(self) -> &'static digest::Algorithm {
        match self {
            Op::RsaPkcs | Op::RsaPss | Op::P256 => &digest::SHA256,
            Op::P384 => &digest::SHA384,
        }
    }

    /// Length of every valid signature: the modulus, or r‖s.
    pub fn signature_len(self) -> usize {
        match self {
            Op::RsaPkcs | Op::RsaPss => 256,
            Op::P256 => 64,
            Op::P384 => 96,
        }
    }

    /// The PKCS#11 mechanism, with its parameters.
    pub fn mechanism(self) -> Mechanism<'static> {
        match self {
            Op::RsaPkcs => Mechanism::RsaPkcs,
            Op::RsaPss => Mechanism::RsaPkcsPss(PkcsPssParams {
                hash_alg: MechanismType::SHA256,
                mgf: PkcsMgfType::MGF1_SHA256,
                s_len: 32.into(),
            }),
            Op::P256 | Op::P384 => Mechanism::Ecdsa,
        }
    }

    /// Writes the bytes handed to C_Sign for `hash` into `out`.
    pub fn sign_input(self, hash: &Digest, out: &mut Vec<u8>) {
        out.clear();
        if self == Op::RsaPkcs {
            out.extend_from_slice(&SHA256_DIGEST_INFO_PREFIX);
        }
        out.extend_from_slice(hash.as_ref());
    }
}

impl KeyKind {
    /// DER of the named curve's OID, the value of CKA_EC_PARAMS.
    pub fn ec_params(self) -> Option<&'static [u8]> {
        match self {
            KeyKind::Rsa2048 => None,
            // 1.2.840.10045.3.1.7
            KeyKind::P256 => Some(&[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]),
            // 1.3.132.0.34
            KeyKind::P384 => Some(&[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22]),
        }
    }

    /// Length of an uncompressed SEC1 point on the curve.
    pub fn point_len(self) -> Option<usize> {
        match self {
            KeyKind::Rsa2048 => None,
            KeyKind::P256 => Some(65),
            KeyKind::P384 => Some(97),
        }
    }

    /// A label for the key objects.
    pub fn label(self) -> &'static str {
        match self {
            KeyKind::Rsa2048 => "bench-rsa2048",
            KeyKind::P256 => "bench-p256",
            KeyKind::P384 => "bench-p384",
        }
    }
}

/// The seed of one run: distinct per round, source, operation and thread count.
pub fn run_seed(round: usize, source_tag: u64, op: Op, threads: usize) -> u64 {
    let op_index = Op::ALL.iter().position(|o| *o == op).unwrap_or(0) as u64;
    ((round as u64) << 40) | (source_tag << 32) | (op_index << 24) | threads as u64
}

/// The hash signed as operation `counter` of `thread` in the run `seed`.
pub fn fresh_hash(op: Op, seed: u64, thread: usize, counter: u64) -> Digest {
    let mut message = [0u8; 24];
    message[..8].copy_from_slice(&seed.to_be_bytes());
    message[8..16].copy_from_slice(&(thread as u64).to_be_bytes());
    message[16..].copy_from_slice(&counter.to_be_bytes());
    digest::digest(op.hash_algorithm(), &message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_gives_a_new_hash() {
        let a = fresh_hash(Op::P256, 7, 0, 0);
        let b = fresh_hash(Op::P256, 7, 0, 1);
        let c = fresh_hash(Op::P256, 7, 1, 0);
        let d = fresh_hash(Op::P256, 8, 0, 0);
        let all = [a.as_ref(), b.as_ref(), c.as_ref(), d.as_ref()];
        for (i, x) in all.iter().enumerate() {
            for y in &all[i + 1..] {
                assert_ne!(x, y);
            }
        }
        assert_eq!(fresh_hash(Op::P384, 7, 0, 0).as_ref().len(), 48);
    }

    #[test]
    fn seeds_differ_per_run() {
        let a = run_seed(1, 1, Op::P256, 4);
        assert_ne!(a, run_seed(1, 2, Op::P256, 4));
        assert_ne!(a, run_seed(2, 1, Op::P256, 4));
        assert_ne!(a, run_seed(1, 1, Op::P384, 4));
        assert_ne!(a, run_seed(1, 1, Op::P256, 16));
    }

    #[test]
    fn pkcs1_input_is_a_sha256_digest_info() {
        let hash = fresh_hash(Op::RsaPkcs, 1, 0, 0);
        let mut input = Vec::new();
        Op::RsaPkcs.sign_input(&hash, &mut input);
        assert_eq!(input.len(), 51);
        assert_eq!(input[0], 0x30);
        assert_eq!(input[1] as usize, input.len() - 2);
        assert_eq!(&input[19..], hash.as_ref());
        Op::RsaPss.sign_input(&hash, &mut input);
        assert_eq!(input, hash.as_ref());
    }

    #[test]
    fn names_round_trip() {
        for op in Op::ALL {
            assert_eq!(Op::parse(op.name()), Some(op));
        }
        assert_eq!(Op::parse("ed25519"), None);
    }
}
