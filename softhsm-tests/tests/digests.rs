//! C_Digest* with SHA-1, SHA-224, SHA-256, SHA-384 and SHA-512, single- and
//! multi-part, against our module and SoftHSMv2; every digest is compared
//! with RustCrypto's `sha1` / `sha2`.

use cryptoki::error::RvError;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::session::Session;
use sha2::Digest;
use softhsm_tests::{conformance, expect_rv, Target};

/// An independent hash implementation.
type Independent = fn(&[u8]) -> Vec<u8>;

/// The five hashes: mechanism, and the independent implementation.
fn hashes() -> [(Mechanism<'static>, Independent); 5] {
    [
        (Mechanism::Sha1, |m| sha1::Sha1::digest(m).to_vec()),
        (Mechanism::Sha224, |m| sha2::Sha224::digest(m).to_vec()),
        (Mechanism::Sha256, |m| sha2::Sha256::digest(m).to_vec()),
        (Mechanism::Sha384, |m| sha2::Sha384::digest(m).to_vec()),
        (Mechanism::Sha512, |m| sha2::Sha512::digest(m).to_vec()),
    ]
}

/// 300 KB with no period short enough to hide a chunking bug.
fn document() -> Vec<u8> {
    (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn multi_part(s: &Session, m: &Mechanism, parts: &[&[u8]]) -> Vec<u8> {
    s.digest_init(m).expect("C_DigestInit");
    for part in parts {
        s.digest_update(part).expect("C_DigestUpdate");
    }
    s.digest_final().expect("C_DigestFinal")
}

fn every_hash_is_listed_for_digesting(t: &Target) {
    for ty in [
        MechanismType::SHA1,
        MechanismType::SHA224,
        MechanismType::SHA256,
        MechanismType::SHA384,
        MechanismType::SHA512,
    ] {
        let info = t.pkcs11().get_mechanism_info(t.slot(), ty).unwrap();
        assert!(info.digest(), "{ty}: {info:?}");
    }
}

fn single_part_digests_match(t: &Target) {
    let s = t.session();
    let doc = document();
    for (m, independent) in hashes() {
        for message in [&b""[..], b"abc", &doc[..1000], &doc] {
            assert_eq!(
                s.digest(&m, message).expect("C_Digest"),
                independent(message),
                "{m:?} over {} bytes",
                message.len()
            );
        }
    }
}

fn multi_part_digests_match(t: &Target) {
    let s = t.session();
    let doc = document();
    for (m, independent) in hashes() {
        let expected = independent(&doc);
        // One part; block-sized parts; odd parts with empty ones between.
        assert_eq!(multi_part(&s, &m, &[&doc]), expected);
        let blocks: Vec<&[u8]> = doc.chunks(128).collect();
        assert_eq!(multi_part(&s, &m, &blocks), expected);
        let (a, rest) = doc.split_at(1);
        let (b, c) = rest.split_at(65_537);
        assert_eq!(multi_part(&s, &m, &[a, b"", b, c, b""]), expected);
        // No part at all is the empty message.
        assert_eq!(multi_part(&s, &m, &[]), independent(b""));
    }
}

fn digest_operations_follow_the_state_rules(t: &Target) {
    let s = t.session();
    expect_rv(s.digest_final(), RvError::OperationNotInitialized);
    expect_rv(s.digest_update(b"x"), RvError::OperationNotInitialized);
    s.digest_init(&Mechanism::Sha384).unwrap();
    expect_rv(s.digest_init(&Mechanism::Sha256), RvError::OperationActive);
    s.digest_update(b"still SHA-384").unwrap();
    assert_eq!(
        s.digest_final().unwrap(),
        sha2::Sha384::digest(b"still SHA-384").to_vec()
    );
    // The operation ended with C_DigestFinal.
    expect_rv(s.digest_final(), RvError::OperationNotInitialized);
    // Each C_Digest is its own operation.
    let first = s.digest(&Mechanism::Sha1, b"one").unwrap();
    let second = s.digest(&Mechanism::Sha1, b"one").unwrap();
    assert_eq!(first, second);
    assert_eq!(first, sha1::Sha1::digest(b"one").to_vec());
}

conformance!(ready =>
    every_hash_is_listed_for_digesting,
    single_part_digests_match,
    multi_part_digests_match,
    digest_operations_follow_the_state_rules,
);
