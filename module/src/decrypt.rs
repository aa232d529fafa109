//! C_DecryptInit / C_Decrypt / C_DecryptUpdate / C_DecryptFinal
//! (PKCS#11 3.0 §5.9) with RSA private keys on the card.
//!
//! C_DecryptInit fetches the key's metadata (cached for token keys), so a
//! ciphertext of the wrong length and a length query are answered without
//! the daemon; each C_Decrypt with a buffer is one `Decrypt` round trip.
//!
//! Length query: a NULL buffer gets the longest message the mechanism can
//! carry in one block (k − 11 for PKCS#1 v1.5, k − 2·hLen − 2 for OAEP),
//! which PKCS#11 allows to exceed the actual length. A buffer at least
//! that long always suffices; a shorter one is tried, and if the message
//! does not fit the answer is CKR_BUFFER_TOO_SMALL with the exact length
//! and the operation stays active (the card's answer for a ciphertext is
//! deterministic, so the retry gets the same message).
//!
//! CKM_RSA_PKCS is implicitly rejecting: a ciphertext with invalid padding
//! decrypts to a synthetic message and C_Decrypt returns CKR_OK, so that
//! neither the return value nor the timing tells valid padding from invalid
//! (the Marvin / Bleichenbacher attack). The module never looks at the
//! plaintext, so it adds no branch of its own. OAEP failures are
//! CKR_ENCRYPTED_DATA_INVALID.
//!
//! Keys with CKA_ALWAYS_AUTHENTICATE cannot decrypt yet: the daemon asks
//! for a context-specific login that the module's C_Login accepts only for
//! a signing operation (CKR_USER_NOT_LOGGED_IN at C_Decrypt).
//!
//! RSA decryption is single-part: C_DecryptUpdate and C_DecryptFinal answer
//! CKR_FUNCTION_NOT_SUPPORTED and end the operation.

use cryptoki_sys::*;
use mesign_proto::{ReplyBody, RequestBody};
use zeroize::Zeroizing;

use crate::entry::with_library;
use crate::error::Error;
use crate::ffi::{self, OutBuf};
use crate::library::Library;
use crate::rsa_crypt::{check_key, crypt_mechanism, Crypt};
use crate::sessions::{drive, ensure_idle, Step};

/// An active decryption operation.
pub(crate) struct DecryptOp {
    key: CK_OBJECT_HANDLE,
    mechanism: Crypt,
    block_len: usize,
}

impl DecryptOp {
    fn decrypt(
        &self,
        lib: &Library,
        session: CK_SESSION_HANDLE,
        ciphertext: &[u8],
        out: &mut OutBuf<u8>,
    ) -> Result<Step, Error> {
        if ciphertext.len() != self.block_len {
            return Err(Error::EncryptedDataLenRange {
                len: ciphertext.len(),
                expected: self.block_len,
            });
        }
        let request = RequestBody::Decrypt {
            session,
            key: self.key,
            mechanism: self.mechanism.ty(),
            scheme: self.mechanism.scheme(),
            input: ciphertext.to_vec(),
        };
        match lib.daemon.call(request)? {
            ReplyBody::Bytes(plaintext) => {
                let plaintext = Zeroizing::new(plaintext);
                out.put(&plaintext)?;
                Ok(Step::Finished)
            }
            _ => Err(Error::Transport),
        }
    }
}

pub(crate) extern "C" fn fn_c_decrypt_init(
    session: CK_SESSION_HANDLE,
    mechanism: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    with_library(|lib| {
        let mechanism = crypt_mechanism(&ffi::mechanism(mechanism)?)?;
        lib.sessions.with(session, |s| {
            ensure_idle(&s.decrypt)?;
            let attrs = lib.keys.attrs(lib, session, s.slot, key, CKA_DECRYPT)?;
            let block_len = check_key(&attrs, CKO_PRIVATE_KEY, mechanism.ty())?;
            s.decrypt = Some(DecryptOp {
                key,
                mechanism,
                block_len,
            });
            Ok(())
        })?
    })
}

pub(crate) extern "C" fn fn_c_decrypt(
    session: CK_SESSION_HANDLE,
    encrypted: *mut CK_BYTE,
    encrypted_len: CK_ULONG,
    data: *mut CK_BYTE,
    data_len: *mut CK_ULONG,
) -> CK_RV {
    with_library(|lib| {
        lib.sessions.with(session, |s| {
            drive(&mut s.decrypt, |op| {
                let ciphertext = ffi::input(encrypted, encrypted_len)?;
                let mut out = OutBuf::new(data, data_len)?;
                if data.is_null() {
                    if ciphertext.len() != op.block_len {
                        return Err(Error::EncryptedDataLenRange {
                            len: ciphertext.len(),
                            expected: op.block_len,
                        });
                    }
                    out.prepare(op.mechanism.max_message_len(op.block_len))?;
                    return Ok(Step::Continue);
                }
                let step = op.decrypt(lib, session, ciphertext, &mut out);
                debug_assert!(!matches!(step, Ok(Step::Continue)));
                step
            })
        })?
    })
}

/// RSA decryption is single-part.
pub(crate) extern "C" fn fn_c_decrypt_update(
    session: CK_SESSION_HANDLE,
    _part: *mut CK_BYTE,
    _part_len: CK_ULONG,
    _data: *mut CK_BYTE,
    _data_len: *mut CK_ULONG,
) -> CK_RV {
    with_library(|lib| {
        lib.sessions.with(session, |s| {
            drive(&mut s.decrypt, |_| Err(Error::FunctionNotSupported))
        })?
    })
}

/// RSA decryption is single-part.
pub(crate) extern "C" fn fn_c_decrypt_final(
    session: CK_SESSION_HANDLE,
    _data: *mut CK_BYTE,
    _data_len: *mut CK_ULONG,
) -> CK_RV {
    with_library(|lib| {
        lib.sessions.with(session, |s| {
            drive(&mut s.decrypt, |_| Err(Error::FunctionNotSupported))
        })?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_ciphertext_lengths_are_refused_without_the_daemon() {
        let op = DecryptOp {
            key: 1,
            mechanism: Crypt::Pkcs1,
            block_len: 256,
        };
        // The daemon is contacted lazily; this test never reaches it.
        let lib = Library::new().unwrap();
        let mut len: CK_ULONG = 0;
        let mut out = OutBuf::new(std::ptr::null_mut(), &mut len).unwrap();
        assert_eq!(
            op.decrypt(&lib, 1, &[0; 255], &mut out),
            Err(Error::EncryptedDataLenRange {
                len: 255,
                expected: 256
            })
        );
    }
}
