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
//! Keys with CKA_ALWAYS_AUTHENTICATE need a C_Login(CKU_CONTEXT_SPECIFIC)
//! after C_DecryptInit, good for one C_Decrypt (CKR_USER_NOT_LOGGED_IN
//! without it, as for signing). The daemon consumes the grant when it asks
//! the card, so for such keys a buffer shorter than the length query's
//! answer is CKR_BUFFER_TOO_SMALL before the daemon is asked: a retry
//! after the card's answer would need another login. An operation that
//! ends without decrypting tells the daemon to drop its unused grant.
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
use crate::sign::drop_context_login;
use crate::symmetric;

/// An active decryption operation.
pub(crate) struct DecryptOp {
    key: CK_OBJECT_HANDLE,
    mechanism: Crypt,
    block_len: usize,
    /// The key has CKA_ALWAYS_AUTHENTICATE (see the module docs).
    always_authenticate: bool,
    /// No C_Login(CKU_CONTEXT_SPECIFIC) has authorised this operation yet.
    awaiting_context_login: bool,
    /// A context-specific login authorised this operation and the daemon
    /// holds it until a decryption uses it.
    context_granted: bool,
}

impl DecryptOp {
    /// Whether C_Login(CKU_CONTEXT_SPECIFIC) applies to this operation.
    pub(crate) fn awaits_context_login(&self) -> bool {
        self.awaiting_context_login
    }

    /// A successful C_Login(CKU_CONTEXT_SPECIFIC) authorises this operation.
    pub(crate) fn context_login_done(&mut self) {
        self.awaiting_context_login = false;
        self.context_granted = true;
    }

    /// Tells the daemon to drop this operation's unused context-specific
    /// login, if it had one (the operation ends without decrypting).
    pub(crate) fn end_unused_context_login(&self, lib: &Library, session: CK_SESSION_HANDLE) {
        if self.context_granted {
            drop_context_login(lib, session);
        }
    }

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
        let raw = ffi::mechanism(mechanism)?;
        if symmetric::is_cipher(raw.ty) {
            return symmetric::cipher_init(lib, session, &raw, key, false);
        }
        let mechanism = crypt_mechanism(&raw)?;
        lib.sessions.with(session, |s| {
            ensure_idle(&s.decrypt)?;
            ensure_idle(&s.secret.decrypt)?;
            let attrs = lib.keys.attrs(lib, session, s.slot, key, CKA_DECRYPT)?;
            let block_len = check_key(&attrs, CKO_PRIVATE_KEY, mechanism.ty())?;
            let always_authenticate = attrs.always_authenticate == Some(true);
            s.decrypt = Some(DecryptOp {
                key,
                mechanism,
                block_len,
                always_authenticate,
                awaiting_context_login: always_authenticate,
                context_granted: false,
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
            if s.secret.decrypt.is_some() {
                let (input, output) = ((encrypted, encrypted_len), (data, data_len));
                return symmetric::crypt(lib, session, &mut s.secret.decrypt, input, output, false);
            }
            drive_decrypt(lib, session, &mut s.decrypt, |op| {
                let ciphertext = ffi::input(encrypted, encrypted_len)?;
                let mut out = OutBuf::new(data, data_len)?;
                let max_len = op.mechanism.max_message_len(op.block_len);
                if data.is_null() {
                    if ciphertext.len() != op.block_len {
                        return Err(Error::EncryptedDataLenRange {
                            len: ciphertext.len(),
                            expected: op.block_len,
                        });
                    }
                    out.prepare(max_len)?;
                    return Ok(Step::Continue);
                }
                if op.awaiting_context_login {
                    return Err(Error::ContextLoginRequired);
                }
                if op.always_authenticate {
                    // The grant is used up once the daemon asks the card.
                    out.prepare(max_len)?;
                }
                let step = op.decrypt(lib, session, ciphertext, &mut out);
                debug_assert!(!matches!(step, Ok(Step::Continue)));
                step
            })
        })?
    })
}

/// [`drive`] for decryption steps, as `drive_sign` for signing: an
/// operation a step ends with an error releases its unused
/// context-specific login (a decryption the card answered used it up in
/// the daemon).
fn drive_decrypt(
    lib: &Library,
    session: CK_SESSION_HANDLE,
    slot: &mut Option<DecryptOp>,
    step: impl FnOnce(&mut DecryptOp) -> Result<Step, Error>,
) -> Result<(), Error> {
    let Some((key, granted)) = slot.as_ref().map(|op| (op.key, op.context_granted)) else {
        return drive(slot, step);
    };
    let result = drive(slot, step);
    if granted && slot.is_none() && result.is_err() {
        drop_context_login(lib, session);
    }
    // The daemon wants a login the cached metadata did not expect: fetch
    // the key afresh at the next C_DecryptInit.
    if result == Err(Error::Daemon(CKR_USER_NOT_LOGGED_IN)) {
        lib.keys.forget(key);
    }
    result
}

/// RSA decryption is single-part; AES is multi-part (see
/// [`crate::symmetric`]).
pub(crate) extern "C" fn fn_c_decrypt_update(
    session: CK_SESSION_HANDLE,
    part: *mut CK_BYTE,
    part_len: CK_ULONG,
    data: *mut CK_BYTE,
    data_len: *mut CK_ULONG,
) -> CK_RV {
    with_library(|lib| {
        lib.sessions.with(session, |s| {
            if s.secret.decrypt.is_some() {
                let (part, output) = ((part, part_len), (data, data_len));
                let op = &mut s.secret.decrypt;
                return symmetric::crypt_update(lib, session, op, part, output, false);
            }
            drive_decrypt(lib, session, &mut s.decrypt, |_| {
                Err(Error::FunctionNotSupported)
            })
        })?
    })
}

/// RSA decryption is single-part; AES is multi-part.
pub(crate) extern "C" fn fn_c_decrypt_final(
    session: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    data_len: *mut CK_ULONG,
) -> CK_RV {
    with_library(|lib| {
        lib.sessions.with(session, |s| {
            if s.secret.decrypt.is_some() {
                let output = (data, data_len);
                return symmetric::crypt_final(lib, session, &mut s.secret.decrypt, output, false);
            }
            drive_decrypt(lib, session, &mut s.decrypt, |_| {
                Err(Error::FunctionNotSupported)
            })
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
            always_authenticate: false,
            awaiting_context_login: false,
            context_granted: false,
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
