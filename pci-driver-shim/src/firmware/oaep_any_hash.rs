//! RSAES-OAEP with any label hash and any MGF1 hash (SHA-1, SHA-224,
//! SHA-256, SHA-384, SHA-512 in every combination), through aws-lc's own
//! EVP interface.
//!
//! aws-lc-rs offers OAEP only as four fixed algorithms (MGF1 over the label
//! hash; SHA-1/256/384/512), which stay the path for those pairs. PKCS#11
//! also names SHA-224 and an MGF1 hash that differs from the label hash;
//! aws-lc itself does all of them (`EVP_PKEY_CTX_set_rsa_oaep_md`,
//! `EVP_PKEY_CTX_set_rsa_mgf1_md`), so this module calls it directly rather
//! than writing any padding by hand. It is the crate's second unsafe
//! boundary (the first is `region`): every foreign call is here, each with
//! its `// SAFETY:` reason, and every aws-lc object is owned by a guard that
//! frees it on every path. aws-lc's allocator cleanses memory when it frees
//! it, so the parsed private key leaves no copy behind; the PKCS#8 and the
//! plaintext are held in `Zeroizing` buffers on our side.
//!
//! Decoding failures of every kind are one answer, [`CardFault::BadInput`],
//! like aws-lc-rs's OAEP path, and aws-lc's OAEP decoding is constant time
//! in the cause.

use std::ptr::NonNull;

use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rsa::{PublicEncryptingKey, PublicKeyComponents};
use aws_lc_sys as sys;
use zeroize::Zeroizing;

use crate::command::{CardFault, Hash};

/// An `EVP_PKEY` that is freed when dropped.
struct Pkey(NonNull<sys::EVP_PKEY>);

impl Pkey {
    /// Parses a DER structure with `parse` (`EVP_parse_private_key` for a
    /// PKCS#8 PrivateKeyInfo, `EVP_parse_public_key` for a
    /// SubjectPublicKeyInfo); the whole input must be consumed.
    fn parse(
        der: &[u8],
        parse: unsafe extern "C" fn(*mut sys::CBS) -> *mut sys::EVP_PKEY,
    ) -> Option<Pkey> {
        let mut cbs = sys::CBS {
            data: std::ptr::null(),
            len: 0,
        };
        // SAFETY: `cbs` is a valid CBS to initialise; it borrows `der`,
        // which outlives every use of `cbs` in this function.
        unsafe { sys::CBS_init(&mut cbs, der.as_ptr(), der.len()) };
        // SAFETY: `cbs` points into `der` (alive); the parser reads from it
        // and returns a new EVP_PKEY we own, or NULL.
        let key = NonNull::new(unsafe { parse(&mut cbs) }).map(Pkey);
        // Trailing bytes would mean the DER is not what we think it is.
        key.filter(|_| cbs.len == 0)
    }
}

impl Drop for Pkey {
    fn drop(&mut self) {
        // SAFETY: we own this reference to the key (from the parser) and
        // drop it once; aws-lc cleanses the key's memory when it frees it.
        unsafe { sys::EVP_PKEY_free(self.0.as_ptr()) }
    }
}

/// An `EVP_PKEY_CTX` that is freed (with the label it owns) when dropped.
struct PkeyCtx(NonNull<sys::EVP_PKEY_CTX>);

impl PkeyCtx {
    fn new(key: &Pkey) -> Option<PkeyCtx> {
        // SAFETY: `key` is a valid EVP_PKEY; the context takes its own
        // reference to it, so it may outlive the borrow.
        NonNull::new(unsafe { sys::EVP_PKEY_CTX_new(key.0.as_ptr(), std::ptr::null_mut()) })
            .map(PkeyCtx)
    }

    fn ptr(&self) -> *mut sys::EVP_PKEY_CTX {
        self.0.as_ptr()
    }

    /// Sets OAEP padding with the label hash, the MGF1 hash and the label,
    /// after the context was initialised for encryption or decryption.
    fn set_oaep(&self, hash: Hash, mgf_hash: Hash, label: &[u8]) -> Option<()> {
        // SAFETY: the context is valid and initialised; the EVP_MDs are
        // static objects of aws-lc.
        let ok = unsafe {
            sys::EVP_PKEY_CTX_set_rsa_padding(self.ptr(), sys::RSA_PKCS1_OAEP_PADDING) == 1
                && sys::EVP_PKEY_CTX_set_rsa_oaep_md(self.ptr(), md(hash)) == 1
                && sys::EVP_PKEY_CTX_set_rsa_mgf1_md(self.ptr(), md(mgf_hash)) == 1
        };
        if !ok {
            return None;
        }
        if label.is_empty() {
            return Some(());
        }
        // The context takes ownership of the label and frees it with
        // OPENSSL_free, so it must come from OPENSSL_malloc.
        // SAFETY: a plain allocation of `label.len()` (> 0) bytes.
        let copy = NonNull::new(unsafe { sys::OPENSSL_malloc(label.len()) }.cast::<u8>())?;
        // SAFETY: `copy` has room for `label.len()` bytes and does not
        // overlap `label`.
        unsafe { std::ptr::copy_nonoverlapping(label.as_ptr(), copy.as_ptr(), label.len()) };
        // SAFETY: on success the context owns `copy`; on failure it is
        // still ours and freed here, exactly once.
        unsafe {
            if sys::EVP_PKEY_CTX_set0_rsa_oaep_label(self.ptr(), copy.as_ptr(), label.len()) != 1 {
                sys::OPENSSL_free(copy.as_ptr().cast());
                return None;
            }
        }
        Some(())
    }
}

impl Drop for PkeyCtx {
    fn drop(&mut self) {
        // SAFETY: we own the context and free it once; it releases its key
        // reference and its label.
        unsafe { sys::EVP_PKEY_CTX_free(self.0.as_ptr()) }
    }
}

/// aws-lc's digest for `hash` (static; never freed).
fn md(hash: Hash) -> *const sys::EVP_MD {
    // SAFETY: these functions return pointers to static EVP_MD objects.
    unsafe {
        match hash {
            Hash::Sha1 => sys::EVP_sha1(),
            Hash::Sha224 => sys::EVP_sha224(),
            Hash::Sha256 => sys::EVP_sha256(),
            Hash::Sha384 => sys::EVP_sha384(),
            Hash::Sha512 => sys::EVP_sha512(),
        }
    }
}

/// Forgets aws-lc's queued errors of a failed call, so that they do not
/// surface in a later, unrelated operation on this thread.
fn clear_errors() {
    // SAFETY: clears this thread's error queue; no arguments.
    unsafe { sys::ERR_clear_error() }
}

/// Decrypts one OAEP block with the RSA private key in `pkcs8`. Any
/// failure to decode (wrong label, wrong hashes, tampered block) is
/// [`CardFault::BadInput`]; a key that does not parse is
/// [`CardFault::BadBlob`].
pub fn decrypt(
    pkcs8: &[u8],
    hash: Hash,
    mgf_hash: Hash,
    label: &[u8],
    input: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CardFault> {
    let key = Pkey::parse(pkcs8, sys::EVP_parse_private_key).ok_or_else(|| {
        clear_errors();
        CardFault::BadBlob
    })?;
    let result = run(&key, Direction::Decrypt, hash, mgf_hash, label, input);
    if result.is_err() {
        clear_errors();
    }
    result.map_err(|()| CardFault::BadInput)
}

/// Encrypts `message` to the RSA public key in `spki` (a DER
/// SubjectPublicKeyInfo). A key that does not parse is
/// [`CardFault::KeyTypeMismatch`]; a message too long for the key is
/// [`CardFault::BadInput`].
pub fn encrypt(
    spki: &[u8],
    hash: Hash,
    mgf_hash: Hash,
    label: &[u8],
    message: &[u8],
) -> Result<Vec<u8>, CardFault> {
    let key = Pkey::parse(spki, sys::EVP_parse_public_key).ok_or_else(|| {
        clear_errors();
        CardFault::KeyTypeMismatch
    })?;
    // SAFETY: `key` is a valid EVP_PKEY; the call only reads its type.
    if unsafe { sys::EVP_PKEY_id(key.0.as_ptr()) } != sys::EVP_PKEY_RSA {
        return Err(CardFault::KeyTypeMismatch);
    }
    let result = run(&key, Direction::Encrypt, hash, mgf_hash, label, message);
    if result.is_err() {
        clear_errors();
    }
    result
        .map(|ciphertext| ciphertext.to_vec())
        .map_err(|()| CardFault::BadInput)
}

/// The DER SubjectPublicKeyInfo of the RSA public key (`modulus`,
/// `exponent`), checked and encoded by aws-lc-rs; a key it refuses is
/// [`CardFault::KeyTypeMismatch`].
pub fn public_key_der(
    modulus: &[u8],
    exponent: &[u8],
) -> Result<PublicKeyX509Der<'static>, CardFault> {
    let components = PublicKeyComponents {
        n: modulus,
        e: exponent,
    };
    let key: PublicEncryptingKey = components
        .try_into()
        .map_err(|_| CardFault::KeyTypeMismatch)?;
    key.as_der().map_err(|_| CardFault::Internal)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Encrypt,
    Decrypt,
}

/// One EVP_PKEY_encrypt or EVP_PKEY_decrypt with OAEP parameters.
fn run(
    key: &Pkey,
    direction: Direction,
    hash: Hash,
    mgf_hash: Hash,
    label: &[u8],
    input: &[u8],
) -> Result<Zeroizing<Vec<u8>>, ()> {
    let ctx = PkeyCtx::new(key).ok_or(())?;
    // SAFETY: the context is valid.
    let initialised = unsafe {
        match direction {
            Direction::Encrypt => sys::EVP_PKEY_encrypt_init(ctx.ptr()),
            Direction::Decrypt => sys::EVP_PKEY_decrypt_init(ctx.ptr()),
        }
    };
    if initialised != 1 {
        return Err(());
    }
    ctx.set_oaep(hash, mgf_hash, label).ok_or(())?;
    // SAFETY: `key` is a valid RSA EVP_PKEY; the size is the modulus
    // length, enough for any output of either direction.
    let size = unsafe { sys::EVP_PKEY_size(key.0.as_ptr()) };
    let mut out = Zeroizing::new(vec![0u8; usize::try_from(size).map_err(|_| ())?]);
    let mut out_len = out.len();
    // SAFETY: `out` has `out_len` writable bytes and `input` is readable
    // for its length; aws-lc writes at most `out_len` bytes and stores the
    // length written.
    let done = unsafe {
        match direction {
            Direction::Encrypt => sys::EVP_PKEY_encrypt(
                ctx.ptr(),
                out.as_mut_ptr(),
                &mut out_len,
                input.as_ptr(),
                input.len(),
            ),
            Direction::Decrypt => sys::EVP_PKEY_decrypt(
                ctx.ptr(),
                out.as_mut_ptr(),
                &mut out_len,
                input.as_ptr(),
                input.len(),
            ),
        }
    };
    if done != 1 || out_len > out.len() {
        return Err(());
    }
    out.truncate(out_len);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Hash, KeySpec};
    use crate::firmware::keys::generate;
    use aws_lc_rs::rsa::PrivateDecryptingKey;

    const HASHES: [Hash; 5] = [
        Hash::Sha1,
        Hash::Sha224,
        Hash::Sha256,
        Hash::Sha384,
        Hash::Sha512,
    ];

    fn key() -> (Zeroizing<Vec<u8>>, Vec<u8>) {
        let g = generate(KeySpec::Rsa { bits: 2048 }).unwrap();
        let private = PrivateDecryptingKey::from_pkcs8(&g.pkcs8).unwrap();
        let spki = private.public_key().as_der().unwrap().as_ref().to_vec();
        (g.pkcs8, spki)
    }

    /// RustCrypto's `rsa` encrypts and decrypts independently of aws-lc.
    fn independent(hash: Hash, mgf: Hash, label: &[u8]) -> rsa::Oaep {
        use sha1::Sha1;
        use sha2::{Sha224, Sha256, Sha384, Sha512};
        macro_rules! pick {
            ($d:ty) => {
                match mgf {
                    Hash::Sha1 => rsa::Oaep::new_with_mgf_hash::<$d, Sha1>(),
                    Hash::Sha224 => rsa::Oaep::new_with_mgf_hash::<$d, Sha224>(),
                    Hash::Sha256 => rsa::Oaep::new_with_mgf_hash::<$d, Sha256>(),
                    Hash::Sha384 => rsa::Oaep::new_with_mgf_hash::<$d, Sha384>(),
                    Hash::Sha512 => rsa::Oaep::new_with_mgf_hash::<$d, Sha512>(),
                }
            };
        }
        let mut padding = match hash {
            Hash::Sha1 => pick!(Sha1),
            Hash::Sha224 => pick!(Sha224),
            Hash::Sha256 => pick!(Sha256),
            Hash::Sha384 => pick!(Sha384),
            Hash::Sha512 => pick!(Sha512),
        };
        if !label.is_empty() {
            padding.label = Some(String::from_utf8(label.to_vec()).unwrap());
        }
        padding
    }

    #[test]
    fn every_hash_pair_round_trips_against_an_independent_implementation() {
        use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
        let (pkcs8, spki) = key();
        let theirs_private = rsa::RsaPrivateKey::from_pkcs8_der(&pkcs8).unwrap();
        let theirs_public = rsa::RsaPublicKey::from_public_key_der(&spki).unwrap();
        let mut rng = rsa::rand_core::OsRng;
        for hash in HASHES {
            for mgf in HASHES {
                for label in [&b""[..], b"label"] {
                    let name = format!("{hash:?}/{mgf:?}/{label:?}");
                    // Ours encrypts, RustCrypto decrypts.
                    let ct = encrypt(&spki, hash, mgf, label, b"cek").unwrap();
                    assert_eq!(ct.len(), 256);
                    let plain = theirs_private
                        .decrypt(independent(hash, mgf, label), &ct)
                        .unwrap_or_else(|e| panic!("{name}: {e}"));
                    assert_eq!(plain, b"cek", "{name}");
                    // RustCrypto encrypts, ours decrypts.
                    let ct = theirs_public
                        .encrypt(&mut rng, independent(hash, mgf, label), b"secret")
                        .unwrap();
                    let plain = decrypt(&pkcs8, hash, mgf, label, &ct).unwrap();
                    assert_eq!(plain.as_slice(), b"secret", "{name}");
                    // Another MGF1 hash or label does not decode.
                    let other = if mgf == Hash::Sha1 {
                        Hash::Sha256
                    } else {
                        Hash::Sha1
                    };
                    assert_eq!(
                        decrypt(&pkcs8, hash, other, label, &ct),
                        Err(CardFault::BadInput),
                        "{name}"
                    );
                    assert_eq!(
                        decrypt(&pkcs8, hash, mgf, b"other", &ct),
                        Err(CardFault::BadInput),
                        "{name}"
                    );
                }
            }
        }
    }

    #[test]
    fn tampered_blocks_and_bad_keys_are_refused_uniformly() {
        let (pkcs8, spki) = key();
        let ct = encrypt(&spki, Hash::Sha224, Hash::Sha1, b"", b"cek").unwrap();
        assert_eq!(
            decrypt(&pkcs8, Hash::Sha224, Hash::Sha1, b"", &ct)
                .unwrap()
                .as_slice(),
            b"cek"
        );
        for i in [0, 1, 100, 255] {
            let mut bad = ct.clone();
            bad[i] ^= 0x01;
            assert_eq!(
                decrypt(&pkcs8, Hash::Sha224, Hash::Sha1, b"", &bad),
                Err(CardFault::BadInput),
                "byte {i}"
            );
        }
        // Wrong lengths and a block above the modulus are the same fault.
        assert_eq!(
            decrypt(&pkcs8, Hash::Sha224, Hash::Sha1, b"", &ct[1..]),
            Err(CardFault::BadInput)
        );
        assert_eq!(
            decrypt(&pkcs8, Hash::Sha224, Hash::Sha1, b"", &[0xff; 256]),
            Err(CardFault::BadInput)
        );
        // A message longer than k - 2·hLen - 2 does not encrypt.
        assert_eq!(
            encrypt(&spki, Hash::Sha512, Hash::Sha1, b"", &[0; 127]),
            Err(CardFault::BadInput)
        );
        assert!(encrypt(&spki, Hash::Sha512, Hash::Sha1, b"", &[0; 126]).is_ok());
        assert_eq!(
            decrypt(&pkcs8[1..], Hash::Sha1, Hash::Sha1, b"", &ct),
            Err(CardFault::BadBlob)
        );
        assert_eq!(
            encrypt(&spki[..spki.len() - 1], Hash::Sha1, Hash::Sha1, b"", b"x"),
            Err(CardFault::KeyTypeMismatch)
        );
        let ec = aws_lc_rs::signature::EcdsaKeyPair::generate(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        )
        .unwrap();
        let ec_spki = aws_lc_rs::signature::KeyPair::public_key(&ec)
            .as_der()
            .unwrap();
        assert_eq!(
            encrypt(ec_spki.as_ref(), Hash::Sha1, Hash::Sha1, b"", b"x"),
            Err(CardFault::KeyTypeMismatch)
        );
    }
}
