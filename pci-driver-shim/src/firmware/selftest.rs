//! Power-on self-tests: known-answer tests of every algorithm the card
//! offers, run before it serves anything. A failure puts the card in its
//! error state (see `Firmware`).

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::digest;
use aws_lc_rs::rsa::KeyPair as RsaKeyPair;
use aws_lc_rs::signature::{self, UnparsedPublicKey};

/// Set to `1` to make the self-tests fail (for testing the error state).
pub const FORCE_FAILURE_ENV: &str = "MESIGN_CARD_EMU_FAIL_SELFTEST";

/// The test that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelfTest {
    Sha256,
    Aes256Gcm,
    RsaPkcs1Sha256,
    EcdsaP256Verify,
}

const MESSAGE: &[u8] = b"MeSign power-on self-test message";

/// SHA-256("abc") from FIPS 180-2, appendix B.1.
const SHA256_ABC: [u8; 32] = [
    0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40, 0xde, 0x5d, 0xae, 0x22, 0x23,
    0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad,
];

/// AES-256-GCM with key 00..1f, nonce 64..6f, AAD "mesign-kat"; the expected
/// ciphertext and tag were computed once with Python's `cryptography`.
const GCM_PLAINTEXT: &[u8] = b"MeSign AES-256-GCM known answer";
const GCM_AAD: &[u8] = b"mesign-kat";
const GCM_EXPECTED: [u8; 47] = [
    0x05, 0x7e, 0x8d, 0x0f, 0x1e, 0x87, 0x76, 0xdf, 0x7b, 0x31, 0x72, 0xda, 0xef, 0x53, 0x47, 0xba,
    0x01, 0x8f, 0x26, 0x61, 0xe5, 0x03, 0x84, 0x1c, 0x87, 0xb0, 0xc2, 0x3b, 0x8c, 0xc6, 0xd7, 0xd4,
    0x33, 0x81, 0x07, 0xf3, 0x3d, 0xf3, 0x4a, 0x65, 0xc7, 0x42, 0xda, 0xf1, 0x47, 0x52, 0x82,
];

const RSA_KEY_PKCS8: &[u8] = include_bytes!("kat/rsa2048-pkcs8.der");
const RSA_EXPECTED_SIGNATURE: &[u8] = include_bytes!("kat/rsa2048-pkcs1-sha256.sig");
const P256_PUBLIC: &[u8] = include_bytes!("kat/p256-public.bin");
const P256_SIGNATURE_DER: &[u8] = include_bytes!("kat/p256-sha256.sig.der");

/// Runs every known-answer test; `force_failure` corrupts one expectation.
pub fn run_all(force_failure: bool) -> Result<(), SelfTest> {
    sha256(force_failure)?;
    aes_256_gcm()?;
    rsa_pkcs1_sha256()?;
    ecdsa_p256_verify()?;
    Ok(())
}

fn sha256(force_failure: bool) -> Result<(), SelfTest> {
    let mut expected = SHA256_ABC;
    if force_failure {
        expected[0] ^= 1;
    }
    let ok = digest::digest(&digest::SHA256, b"abc").as_ref() == expected;
    ok.then_some(()).ok_or(SelfTest::Sha256)
}

fn aes_256_gcm() -> Result<(), SelfTest> {
    let fail = |_| SelfTest::Aes256Gcm;
    let key: Vec<u8> = (0u8..32).collect();
    let nonce: Vec<u8> = (100u8..112).collect();
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).map_err(fail)?);
    let mut buf = GCM_PLAINTEXT.to_vec();
    key.seal_in_place_append_tag(
        Nonce::try_assume_unique_for_key(&nonce).map_err(fail)?,
        Aad::from(GCM_AAD),
        &mut buf,
    )
    .map_err(fail)?;
    if buf != GCM_EXPECTED {
        return Err(SelfTest::Aes256Gcm);
    }
    let opened = key
        .open_in_place(
            Nonce::try_assume_unique_for_key(&nonce).map_err(fail)?,
            Aad::from(GCM_AAD),
            &mut buf,
        )
        .map_err(fail)?;
    (opened == GCM_PLAINTEXT)
        .then_some(())
        .ok_or(SelfTest::Aes256Gcm)
}

fn rsa_pkcs1_sha256() -> Result<(), SelfTest> {
    let key = RsaKeyPair::from_pkcs8(RSA_KEY_PKCS8).map_err(|_| SelfTest::RsaPkcs1Sha256)?;
    let digest = digest::digest(&digest::SHA256, MESSAGE);
    let mut sig = vec![0; key.public_modulus_len()];
    key.sign_digest(&signature::RSA_PKCS1_SHA256, &digest, &mut sig)
        .map_err(|_| SelfTest::RsaPkcs1Sha256)?;
    (sig == RSA_EXPECTED_SIGNATURE)
        .then_some(())
        .ok_or(SelfTest::RsaPkcs1Sha256)
}

fn ecdsa_p256_verify() -> Result<(), SelfTest> {
    let key = UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, P256_PUBLIC);
    key.verify(MESSAGE, P256_SIGNATURE_DER)
        .map_err(|_| SelfTest::EcdsaP256Verify)?;
    // A verifier that accepts everything would pass the line above.
    let mut tampered = MESSAGE.to_vec();
    tampered[0] ^= 1;
    match key.verify(&tampered, P256_SIGNATURE_DER) {
        Err(_) => Ok(()),
        Ok(()) => Err(SelfTest::EcdsaP256Verify),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_known_answers_pass() {
        assert_eq!(run_all(false), Ok(()));
    }

    #[test]
    fn forced_failure_fails() {
        assert_eq!(run_all(true), Err(SelfTest::Sha256));
    }
}
