//! Key blobs: private keys wrapped under the master key.
//!
//! `blob = version(1) || nonce(12) || AES-256-GCM(PKCS#8) || tag(16)`, with
//! the key's policy encoding as associated data, so the daemon cannot change
//! a stored attribute (or move the blob to another object) without the blob
//! ceasing to open. Nonces are random; 2^32 wraps per master key stay far
//! below the GCM random-nonce bound.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use zeroize::Zeroizing;

use crate::command::CardFault;

const BLOB_VERSION: u8 = 1;
const TAG_LEN: usize = 16;

/// The master key, ready to wrap and unwrap.
pub struct Wrapper {
    key: LessSafeKey,
}

impl Wrapper {
    pub fn new(master_key: &[u8; 32]) -> Wrapper {
        let key = UnboundKey::new(&AES_256_GCM, master_key).expect("32 bytes is an AES-256 key");
        Wrapper {
            key: LessSafeKey::new(key),
        }
    }

    /// Wraps a PKCS#8 private key, binding `aad`.
    pub fn wrap(&self, pkcs8: &[u8], aad: &[u8]) -> Result<Vec<u8>, CardFault> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| CardFault::Internal)?;
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + pkcs8.len() + TAG_LEN);
        sealed.push(BLOB_VERSION);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(pkcs8);
        let mut body = sealed.split_off(1 + NONCE_LEN);
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut body,
            )
            .map_err(|_| CardFault::Internal)?;
        sealed.extend_from_slice(&body);
        Ok(sealed)
    }

    /// Opens a blob made by [`wrap`] with the same `aad`; any mismatch is
    /// [`CardFault::BadBlob`].
    ///
    /// [`wrap`]: Wrapper::wrap
    pub fn unwrap(&self, blob: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, CardFault> {
        if blob.len() < 1 + NONCE_LEN + TAG_LEN || blob[0] != BLOB_VERSION {
            return Err(CardFault::BadBlob);
        }
        let nonce = Nonce::try_assume_unique_for_key(&blob[1..1 + NONCE_LEN])
            .map_err(|_| CardFault::BadBlob)?;
        let mut body = Zeroizing::new(blob[1 + NONCE_LEN..].to_vec());
        let plain_len = self
            .key
            .open_in_place(nonce, Aad::from(aad), &mut body)
            .map_err(|_| CardFault::BadBlob)?
            .len();
        body.truncate(plain_len);
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper_detection() {
        let w = Wrapper::new(&[7; 32]);
        let blob = w.wrap(b"secret pkcs8", b"policy").unwrap();
        assert_eq!(&w.unwrap(&blob, b"policy").unwrap()[..], b"secret pkcs8");
        assert!(!blob.windows(6).any(|win| win == b"secret"));
        assert_eq!(w.unwrap(&blob, b"policz").unwrap_err(), CardFault::BadBlob);
        for i in 0..blob.len() {
            let mut bad = blob.clone();
            bad[i] ^= 1;
            assert_eq!(
                w.unwrap(&bad, b"policy").unwrap_err(),
                CardFault::BadBlob,
                "byte {i}"
            );
        }
        assert_eq!(
            w.unwrap(&blob[..20], b"policy").unwrap_err(),
            CardFault::BadBlob
        );
        let other = Wrapper::new(&[8; 32]);
        assert_eq!(
            other.unwrap(&blob, b"policy").unwrap_err(),
            CardFault::BadBlob
        );
    }
}
