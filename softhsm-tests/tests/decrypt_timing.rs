//! The Marvin / Bleichenbacher check for CKM_RSA_PKCS decryption through
//! the whole stack (module → daemon → card), ours only.
//!
//! Many ciphertexts with valid PKCS#1 v1.5 padding and many with invalid
//! padding (wrong block type, no separator, padding string too short,
//! non-zero first byte) are decrypted in random interleaved order; each
//! C_Decrypt is timed. Both classes must return CKR_OK (implicit
//! rejection), and Welch's t statistic between the two classes' trimmed
//! samples must stay below [`T_THRESHOLD`].
//!
//! That the statistic can fail is shown twice: a unit test feeds it
//! synthetic samples with and without a small leak, and the stack test
//! itself adds a simulated leak to the invalid class's real measurements
//! (as a padding check that took longer on bad padding would) and asserts
//! that the statistic flags it; a round too noisy for that is measured
//! again (at most [`ROUNDS`] in all). The numbers are printed
//! (`--nocapture`).
//!
//! SoftHSMv2 is not measured: it answers bad padding with an error code
//! (see `Divergence::SoftHsmPkcs1PaddingOracle`), which is an oracle
//! whatever the timing.

use std::time::Instant;

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType};
use cryptoki_sys::CKR_OK;
use rsa::rand_core::{OsRng, RngCore};
use rsa::BigUint;
use softhsm_tests::ffi::Output;
use softhsm_tests::keys::bytes;
use softhsm_tests::{Kind, Target};

/// Ciphertexts per class.
const SAMPLES: usize = 1000;
/// Measurement rounds tried before a run too noisy to see the simulated
/// leak counts as a failure.
const ROUNDS: usize = 3;
/// Welch's |t| above this means the classes differ (the dudect
/// convention: 4.5 is far beyond chance for thousands of samples).
const T_THRESHOLD: f64 = 4.5;
/// The fraction of each class's slowest samples dropped before the test
/// (dudect's percentile cropping): on a shared 2-core machine most of the
/// spread above the fastest quarter is other processes.
const TRIM: f64 = 0.75;
/// The simulated leak the stack test must see, as a fraction of the
/// median decryption time, so that a run too noisy to see anything fails
/// instead of passing vacuously.
const SIMULATED_LEAK: f64 = 0.02;

/// Mean, variance and size of a sample.
fn moments(xs: &[f64]) -> (f64, f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var, n)
}

/// The sample sorted with its slowest `TRIM` fraction removed.
fn trimmed(xs: &[f64]) -> Vec<f64> {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v.truncate(((1.0 - TRIM) * v.len() as f64) as usize);
    v
}

/// Welch's t statistic between the trimmed samples `a` and `b`.
fn welch_t(a: &[f64], b: &[f64]) -> f64 {
    let (ma, va, na) = moments(&trimmed(a));
    let (mb, vb, nb) = moments(&trimmed(b));
    (ma - mb) / (va / na + vb / nb).sqrt()
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `em` (one block) raised to the public exponent: a ciphertext whose
/// decryption is exactly `em`.
fn raw_encrypt(em: &[u8], n: &BigUint, e: &BigUint) -> Vec<u8> {
    let c = BigUint::from_bytes_be(em).modpow(e, n).to_bytes_be();
    let mut out = vec![0u8; em.len() - c.len()];
    out.extend_from_slice(&c);
    out
}

fn nonzero_random(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    OsRng.fill_bytes(&mut v);
    for b in &mut v {
        if *b == 0 {
            *b = 1;
        }
    }
    v
}

/// A correctly padded block carrying a random message of random length
/// (as long as the synthetic messages of invalid ones can be).
fn valid_block(k: usize) -> Vec<u8> {
    let len = (OsRng.next_u32() as usize) % (k - 11 + 1);
    let mut em = vec![0x00, 0x02];
    em.extend(nonzero_random(k - 3 - len));
    em.push(0);
    let mut message = vec![0u8; len];
    OsRng.fill_bytes(&mut message);
    em.extend(message);
    em
}

/// A block whose padding is invalid in one of four ways.
fn invalid_block(k: usize, kind: usize) -> Vec<u8> {
    let mut em = vec![0x00, 0x02];
    em.extend(nonzero_random(k - 2));
    match kind % 4 {
        0 => em[1] = 0x03,  // wrong block type
        1 => {}             // no zero separator at all
        2 => em[2 + 5] = 0, // padding string of 5 bytes (< 8)
        _ => em[0] = 0x01,  // leading byte not zero (still below n)
    }
    em
}

#[test]
fn pkcs1_decryption_is_not_an_oracle() {
    let t = Target::ready(Kind::Mesign);
    let s = t.user_session();
    let (public, private) = s
        .generate_key_pair(
            &Mechanism::RsaPkcsKeyPairGen,
            &[Attribute::Token(false), Attribute::ModulusBits(2048.into())],
            &[
                Attribute::Token(false),
                Attribute::Private(true),
                Attribute::Decrypt(true),
                Attribute::Sign(false),
            ],
        )
        .unwrap();
    let n = BigUint::from_bytes_be(&bytes(&s, public, AttributeType::Modulus).unwrap());
    let e = BigUint::from_bytes_be(&bytes(&s, public, AttributeType::PublicExponent).unwrap());
    let k = 256;

    // A round whose noise would hide the simulated leak proves nothing
    // either way; such a round is measured again, a few times at most.
    for round in 1..=ROUNDS {
        let (valid, invalid) = measure(&t, &s, private, &n, &e, k);
        let t_stat = welch_t(&valid, &invalid);
        let leak_ns = SIMULATED_LEAK * median(&valid);
        let leaky: Vec<f64> = invalid.iter().map(|x| x + leak_ns).collect();
        let t_leaky = welch_t(&valid, &leaky);
        eprintln!(
            "round {round}: CKM_RSA_PKCS decrypt through the stack, {SAMPLES} valid + {SAMPLES} \
             invalid, interleaved: median valid {:.1} µs, invalid {:.1} µs; Welch t (slowest \
             {:.0}% dropped) = {t_stat:.2} (threshold {T_THRESHOLD}); with a simulated {:.1} µs \
             leak t = {t_leaky:.2}",
            median(&valid) / 1e3,
            median(&invalid) / 1e3,
            TRIM * 100.0,
            leak_ns / 1e3,
        );
        if t_leaky.abs() <= T_THRESHOLD {
            eprintln!("round {round} too noisy to see a {leak_ns:.0} ns leak; measuring again");
            continue;
        }
        assert!(
            t_stat.abs() < T_THRESHOLD,
            "valid and invalid padding are distinguishable by time: t = {t_stat:.2}"
        );
        return;
    }
    panic!("{ROUNDS} rounds were all too noisy to see the simulated leak: the test has no power");
}

/// Decrypts `SAMPLES` ciphertexts with valid and as many with invalid
/// padding, shuffled, and returns each class's times in nanoseconds.
fn measure(
    t: &Target,
    s: &cryptoki::session::Session,
    private: cryptoki::object::ObjectHandle,
    n: &BigUint,
    e: &BigUint,
    k: usize,
) -> (Vec<f64>, Vec<f64>) {
    // (is_valid, ciphertext, expected plaintext for valid ones), shuffled.
    let mut cases: Vec<(bool, Vec<u8>, Vec<u8>)> = Vec::with_capacity(2 * SAMPLES);
    for i in 0..SAMPLES {
        let em = valid_block(k);
        let message = em[em[2..].iter().position(|&b| b == 0).unwrap() + 3..].to_vec();
        cases.push((true, raw_encrypt(&em, n, e), message));
        cases.push((false, raw_encrypt(&invalid_block(k, i), n, e), Vec::new()));
    }
    for i in (1..cases.len()).rev() {
        cases.swap(i, OsRng.next_u32() as usize % (i + 1));
    }

    let mut valid = Vec::with_capacity(SAMPLES);
    let mut invalid = Vec::with_capacity(SAMPLES);
    for (is_valid, ciphertext, message) in &cases {
        s.decrypt_init(&Mechanism::RsaPkcs, private).unwrap();
        let start = Instant::now();
        let answer = t.raw().decrypt(s.handle(), ciphertext, Output::Bytes(k));
        let ns = start.elapsed().as_nanos() as f64;
        assert_eq!(answer.rv, CKR_OK, "valid padding: {is_valid}");
        if *is_valid {
            assert_eq!(&answer.bytes, message);
            valid.push(ns);
        } else {
            assert!(answer.bytes.len() <= k - 11);
            invalid.push(ns);
        }
    }
    (valid, invalid)
}

#[test]
fn the_statistic_tells_a_leak_from_noise() {
    // Deterministic noisy samples: a base time, jitter, and rare long
    // scheduler stalls.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut noisy = |offset: f64| -> Vec<f64> {
        (0..2000)
            .map(|_| {
                let stall = if next() < 0.02 { 500_000.0 } else { 0.0 };
                400_000.0 + 40_000.0 * next() + stall + offset
            })
            .collect()
    };
    let a = noisy(0.0);
    let b = noisy(0.0);
    let leaky = noisy(3_000.0);
    assert!(welch_t(&a, &b).abs() < T_THRESHOLD, "{}", welch_t(&a, &b));
    assert!(
        welch_t(&a, &leaky).abs() > T_THRESHOLD,
        "{}",
        welch_t(&a, &leaky)
    );
}
