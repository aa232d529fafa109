//! The object-search scenario: many objects on each token, then the latency
//! of one C_FindObjectsInit / C_FindObjects / C_FindObjectsFinal lookup by
//! CKA_LABEL and by CKA_ID.
//!
//! The objects are EC public keys rather than CKO_DATA objects: a data
//! object has no CKA_ID (PKCS#11 4.5; SoftHSM answers
//! CKR_ATTRIBUTE_TYPE_INVALID), and a signing server looks up its keys by
//! exactly these two attributes. They are token and private objects, so
//! the search pays whatever a module pays for private token objects.

use std::time::{Duration, Instant};

use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use cryptoki::object::{Attribute, KeyType, ObjectClass};

use crate::error::BenchError;
use crate::token::Token;
use crate::workload::{KeyKind, Op};

/// How objects are looked up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    /// By CKA_LABEL.
    Label,
    /// By CKA_ID.
    Id,
}

impl Key {
    /// Both, in report order.
    pub const ALL: [Key; 2] = [Key::Label, Key::Id];

    /// Name for the table.
    pub fn name(self) -> &'static str {
        match self {
            Key::Label => "CKA_LABEL",
            Key::Id => "CKA_ID",
        }
    }

    /// The search template that finds object `index` and nothing else.
    pub fn template(self, index: usize) -> Vec<Attribute> {
        match self {
            Key::Label => vec![Attribute::Label(label(index))],
            Key::Id => vec![Attribute::Id(id(index))],
        }
    }
}

fn label(index: usize) -> Vec<u8> {
    format!("bench-find-{index:06}").into_bytes()
}

fn id(index: usize) -> Vec<u8> {
    let mut id = b"bf".to_vec();
    id.extend_from_slice(&(index as u32).to_be_bytes());
    id
}

/// CKA_EC_POINT for the objects: a valid P-256 point as a DER OCTET STRING
/// (modules may check that the point is on the curve).
pub fn ec_point() -> Result<Vec<u8>, BenchError> {
    let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
        .map_err(|_| BenchError::InProcess { op: Op::P256 })?;
    let point = key.public_key().as_ref();
    let mut value = vec![0x04, point.len() as u8];
    value.extend_from_slice(point);
    Ok(value)
}

/// Creates `count` private token EC public-key objects, each with its own
/// label and id; returns how long it took.
pub fn populate(token: &Token, count: usize, ec_point: &[u8]) -> Result<Duration, BenchError> {
    let session = token.rw_session()?;
    let params = KeyKind::P256.ec_params().unwrap_or_default().to_vec();
    let start = Instant::now();
    for index in 0..count {
        session
            .create_object(&[
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::KeyType(KeyType::EC),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Verify(true),
                Attribute::Label(label(index)),
                Attribute::Id(id(index)),
                Attribute::EcParams(params.clone()),
                Attribute::EcPoint(ec_point.to_vec()),
            ])
            .map_err(|error| token.error("C_CreateObject", error))?;
        if (index + 1) % 2000 == 0 {
            eprintln!(
                "  {}: {} objects in {:.1} s",
                token.source().name(),
                index + 1,
                start.elapsed().as_secs_f64()
            );
        }
    }
    Ok(start.elapsed())
}

/// Searches per module, lookup key and round, unless the time budget ends first.
const LOOKUPS: usize = 100;
/// SoftHSM's file store rescans every object file per search (~0.1 s at a
/// few thousand objects), so each batch is also bounded in time...
const LOOKUP_BUDGET: Duration = Duration::from_secs(5);
/// ...but never below this many searches, or the median means little.
const MIN_LOOKUPS: usize = 5;

/// Times searches for pseudo-randomly chosen objects, checking that each
/// finds exactly its one object; appends the latencies.
pub fn lookups(
    token: &Token,
    key: Key,
    count: usize,
    seed: u64,
    latencies: &mut Vec<Duration>,
) -> Result<(), BenchError> {
    let session = token.session()?;
    let mut state = seed | 1;
    let start = Instant::now();
    for done in 0..LOOKUPS {
        if done >= MIN_LOOKUPS && start.elapsed() > LOOKUP_BUDGET {
            break;
        }
        // xorshift64: spreads lookups over the whole store, reproducibly.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let index = (state % count as u64) as usize;
        let template = key.template(index);
        let before = Instant::now();
        let found = session
            .find_objects(&template)
            .map_err(|error| token.error("C_FindObjects", error))?;
        latencies.push(before.elapsed());
        if found.len() != 1 {
            return Err(BenchError::FindMismatch {
                source_kind: token.source(),
                index,
                found: found.len(),
            });
        }
    }
    Ok(())
}

/// The median and 99th percentile of `latencies` (sorted in place).
pub fn median_and_p99(latencies: &mut [Duration]) -> (Duration, Duration) {
    latencies.sort_unstable();
    let at = |p: usize| {
        if latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = (p * latencies.len()).div_ceil(100).max(1);
        latencies[rank.min(latencies.len()) - 1]
    };
    (at(50), at(99))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_ids_are_unique() {
        assert_ne!(label(1), label(10));
        assert_ne!(id(1), id(256));
        assert_eq!(id(258), b"bf\x00\x00\x01\x02");
        assert_eq!(Key::Label.template(3), vec![Attribute::Label(label(3))]);
    }

    #[test]
    fn the_ec_point_is_a_wrapped_uncompressed_point() {
        let value = ec_point().unwrap();
        assert_eq!(value.len(), 67);
        assert_eq!(&value[..3], &[0x04, 65, 0x04]);
    }

    #[test]
    fn median_of_durations() {
        let mut v: Vec<Duration> = (1..=9).rev().map(Duration::from_micros).collect();
        assert_eq!(
            median_and_p99(&mut v),
            (Duration::from_micros(5), Duration::from_micros(9))
        );
    }
}
