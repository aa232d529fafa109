//! C_EncryptInit / C_Encrypt / C_EncryptUpdate / C_EncryptFinal
//! (PKCS#11 3.0 §5.8) with RSA public keys.
//!
//! Encryption needs only the public key, so it runs here in the module with
//! aws-lc-rs, like verification: no round trip beyond C_EncryptInit's
//! attribute fetch (none at all for a cached token key), no card time spent
//! on public operations, and the daemon never sees the plaintext. The
//! public key's CKA_ENCRYPT must be true.
//!
//! The exception is OAEP with a hash pair aws-lc-rs does not offer
//! (SHA-224, or an MGF1 hash other than the label hash): rather than write
//! OAEP padding here, C_Encrypt sends `OaepEncrypt` and the card encrypts
//! with aws-lc's EVP interface, one round trip; for those pairs the daemon
//! and the card see the plaintext on its way through (the daemon checks
//! CKA_ENCRYPT again).
//!
//! RSA mechanisms are single-part (§2.1.6, §2.1.8): C_EncryptUpdate and
//! C_EncryptFinal answer CKR_FUNCTION_NOT_SUPPORTED and end the operation.
//!
//! AES mechanisms with secret keys are dispatched to [`crate::symmetric`]
//! (the card encrypts; the key is secret).

use aws_lc_rs::rsa::{
    OaepPublicEncryptingKey, Pkcs1PublicEncryptingKey, PublicEncryptingKey, PublicKeyComponents,
};
use cryptoki_sys::*;
use mesign_proto::{ReplyBody, RequestBody};

use crate::entry::with_library;
use crate::error::Error;
use crate::ffi::{self, Fill, OutBuf};
use crate::key_info::strip_zeros;
use crate::library::Library;
use crate::rsa_crypt::{check_key, crypt_mechanism, Crypt};
use crate::sessions::{drive, ensure_idle, Step};
use crate::symmetric;

/// An active encryption operation.
pub(crate) struct EncryptOp {
    mechanism: Crypt,
    /// The key object, for encryptions the card does.
    handle: CK_OBJECT_HANDLE,
    key: PublicEncryptingKey,
    block_len: usize,
}

impl EncryptOp {
    /// Encrypts one message into `out`.
    fn encrypt(
        &self,
        lib: &Library,
        session: CK_SESSION_HANDLE,
        data: &[u8],
        out: &mut OutBuf<u8>,
    ) -> Result<Step, Error> {
        if data.len() > self.mechanism.max_message_len(self.block_len) {
            return Err(Error::DataLenRange { len: data.len() });
        }
        let mut ciphertext = vec![0u8; self.block_len];
        let written = match &self.mechanism {
            Crypt::Pkcs1 => Pkcs1PublicEncryptingKey::new(self.key.clone())
                .and_then(|k| k.encrypt(data, &mut ciphertext).map(|c| c.len())),
            Crypt::Oaep {
                hash,
                mgf_hash,
                label,
            } => match Crypt::oaep_algorithm(*hash, *mgf_hash) {
                Some(algorithm) => OaepPublicEncryptingKey::new(self.key.clone()).and_then(|k| {
                    let label = (!label.is_empty()).then_some(label.as_slice());
                    k.encrypt(algorithm, data, &mut ciphertext, label)
                        .map(|c| c.len())
                }),
                None => return self.encrypt_on_card(lib, session, data, out),
            },
        }
        .map_err(|_| Error::DataInvalid)?;
        out.put(&ciphertext[..written])?;
        Ok(Step::Finished)
    }

    /// OAEP with a hash pair aws-lc-rs lacks: the card encrypts.
    fn encrypt_on_card(
        &self,
        lib: &Library,
        session: CK_SESSION_HANDLE,
        data: &[u8],
        out: &mut OutBuf<u8>,
    ) -> Result<Step, Error> {
        let request = RequestBody::OaepEncrypt {
            session,
            key: self.handle,
            scheme: self.mechanism.scheme(),
            input: data.to_vec(),
        };
        match lib.daemon.call(request)? {
            ReplyBody::Bytes(ciphertext) if ciphertext.len() == self.block_len => {
                out.put(&ciphertext)?;
                Ok(Step::Finished)
            }
            _ => Err(Error::Transport),
        }
    }
}

pub(crate) extern "C" fn fn_c_encrypt_init(
    session: CK_SESSION_HANDLE,
    mechanism: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    with_library(|lib| {
        let raw = ffi::mechanism(mechanism)?;
        if symmetric::is_cipher(raw.ty) {
            return symmetric::cipher_init(lib, session, &raw, key, true);
        }
        let mechanism = crypt_mechanism(&raw)?;
        let key_handle = key;
        lib.sessions.with(session, |s| {
            ensure_idle(&s.encrypt)?;
            ensure_idle(&s.secret.encrypt)?;
            let attrs = lib.keys.attrs(lib, session, s.slot, key, CKA_ENCRYPT)?;
            let block_len = check_key(&attrs, CKO_PUBLIC_KEY, mechanism.ty())?;
            let components = PublicKeyComponents {
                n: attrs.modulus()?,
                e: strip_zeros(attrs.public_exponent.as_deref().unwrap_or_default()),
            };
            let key: PublicEncryptingKey = components
                .try_into()
                .map_err(|_| Error::KeyTypeInconsistent)?;
            s.encrypt = Some(EncryptOp {
                mechanism,
                handle: key_handle,
                key,
                block_len,
            });
            Ok(())
        })?
    })
}

pub(crate) extern "C" fn fn_c_encrypt(
    session: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    data_len: CK_ULONG,
    encrypted: *mut CK_BYTE,
    encrypted_len: *mut CK_ULONG,
) -> CK_RV {
    with_library(|lib| {
        lib.sessions.with(session, |s| {
            if s.secret.encrypt.is_some() {
                let (input, output) = ((data, data_len), (encrypted, encrypted_len));
                return symmetric::crypt(lib, session, &mut s.secret.encrypt, input, output, true);
            }
            drive(&mut s.encrypt, |op| {
                let mut out = OutBuf::new(encrypted, encrypted_len)?;
                // The ciphertext is always one block.
                if out.prepare(op.block_len)? == Fill::LengthOnly {
                    return Ok(Step::Continue);
                }
                op.encrypt(lib, session, ffi::input(data, data_len)?, &mut out)
            })
        })?
    })
}

/// RSA encryption is single-part; AES is multi-part (see
/// [`crate::symmetric`]).
pub(crate) extern "C" fn fn_c_encrypt_update(
    session: CK_SESSION_HANDLE,
    part: *mut CK_BYTE,
    part_len: CK_ULONG,
    encrypted: *mut CK_BYTE,
    encrypted_len: *mut CK_ULONG,
) -> CK_RV {
    with_library(|lib| {
        lib.sessions.with(session, |s| {
            if s.secret.encrypt.is_some() {
                let (part, output) = ((part, part_len), (encrypted, encrypted_len));
                let op = &mut s.secret.encrypt;
                return symmetric::crypt_update(lib, session, op, part, output, true);
            }
            drive(&mut s.encrypt, |_| Err(Error::FunctionNotSupported))
        })?
    })
}

/// RSA encryption is single-part; AES is multi-part.
pub(crate) extern "C" fn fn_c_encrypt_final(
    session: CK_SESSION_HANDLE,
    encrypted: *mut CK_BYTE,
    encrypted_len: *mut CK_ULONG,
) -> CK_RV {
    with_library(|lib| {
        lib.sessions.with(session, |s| {
            if s.secret.encrypt.is_some() {
                let output = (encrypted, encrypted_len);
                return symmetric::crypt_final(lib, session, &mut s.secret.encrypt, output, true);
            }
            drive(&mut s.encrypt, |_| Err(Error::FunctionNotSupported))
        })?
    })
}
