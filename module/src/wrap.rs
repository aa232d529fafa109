//! C_WrapKey and C_UnwrapKey (PKCS#11 3.0 §5.18) with CKM_AES_KEY_WRAP
//! (RFC 3394), CKM_AES_KEY_WRAP_PAD and CKM_AES_KEY_WRAP_KWP (both RFC
//! 5649) and CKM_RSA_PKCS_OAEP (secret keys under an RSA public key).
//!
//! The keys involved are secret from the module too: both calls are one
//! request to the daemon, which checks the keys' attributes, and the card
//! does the work. The module only reads the mechanism and its parameter.
//!
//! A C_WrapKey length query (NULL output) asks the card to wrap and
//! answers the exact length. The module keeps those wrapped bytes with the
//! session ([`PendingWrap`]) and hands them out on the next C_WrapKey of
//! the same key, wrapping key and mechanism, so the usual two calls wrap
//! once: the daemon's audit log records one `key_wrapped` per wrap that
//! reached the application. Any other C_WrapKey on the session drops them.
//! CKM_RSA_PKCS is not offered for wrapping (see the
//! daemon's `wrapping` module: it would make unwrapping a padding
//! oracle): CKR_MECHANISM_INVALID.

use cryptoki_sys::*;
use mesign_proto::{ReplyBody, RequestBody, WrapMechanism};

use crate::attributes::template_to_wire;
use crate::entry::with_library;
use crate::error::Error;
use crate::ffi::{self, write_out, Fill, OutBuf, RawMechanism, Template};
use crate::rsa_crypt::{crypt_mechanism, Crypt};

/// Reads a wrapping mechanism and its parameter.
pub(crate) fn wrap_mechanism(raw: &RawMechanism) -> Result<WrapMechanism, Error> {
    match raw.ty {
        CKM_AES_KEY_WRAP => {
            raw.no_parameter()?;
            Ok(WrapMechanism::AesKeyWrap)
        }
        CKM_AES_KEY_WRAP_PAD | CKM_AES_KEY_WRAP_KWP => {
            raw.no_parameter()?;
            Ok(WrapMechanism::AesKeyWrapPad)
        }
        CKM_RSA_PKCS_OAEP => match crypt_mechanism(raw)? {
            Crypt::Oaep {
                hash,
                mgf_hash,
                label,
            } => Ok(WrapMechanism::RsaOaep {
                hash,
                mgf_hash,
                label,
            }),
            Crypt::Pkcs1 => Err(Error::MechanismInvalid(raw.ty)),
        },
        ty => Err(Error::MechanismInvalid(ty)),
    }
}

pub(crate) extern "C" fn fn_c_wrap_key(
    session: CK_SESSION_HANDLE,
    mechanism: *mut CK_MECHANISM,
    wrapping: CK_OBJECT_HANDLE,
    key: CK_OBJECT_HANDLE,
    wrapped: *mut CK_BYTE,
    wrapped_len: *mut CK_ULONG,
) -> CK_RV {
    with_library(|lib| {
        let pending = lib.sessions.with(session, |s| s.pending_wrap.take())?;
        let mechanism = wrap_mechanism(&ffi::mechanism(mechanism)?)?;
        let mut out = OutBuf::new(wrapped, wrapped_len)?;
        let bytes = match pending {
            Some(p) if !out.is_length_query() && p.is_for(&mechanism, wrapping, key) => p.bytes,
            _ => {
                let request = RequestBody::WrapKey {
                    session,
                    mechanism: mechanism.clone(),
                    wrapping,
                    key,
                };
                match lib.daemon.call(request)? {
                    ReplyBody::Bytes(bytes) => bytes,
                    _ => return Err(Error::Transport),
                }
            }
        };
        let put = out.put(&bytes);
        // Kept for the call that fetches them: after a length query, or a
        // buffer too small.
        if matches!(
            put,
            Ok(Fill::LengthOnly) | Err(Error::BufferTooSmall { .. })
        ) {
            let pending = PendingWrap {
                mechanism,
                wrapping,
                key,
                bytes,
            };
            lib.sessions
                .with(session, |s| s.pending_wrap = Some(pending))?;
        }
        put.map(|_| ())
    })
}

/// Wrapped bytes the application has been told the length of but has not
/// fetched yet.
pub(crate) struct PendingWrap {
    mechanism: WrapMechanism,
    wrapping: CK_OBJECT_HANDLE,
    key: CK_OBJECT_HANDLE,
    bytes: Vec<u8>,
}

impl PendingWrap {
    fn is_for(
        &self,
        mechanism: &WrapMechanism,
        wrapping: CK_OBJECT_HANDLE,
        key: CK_OBJECT_HANDLE,
    ) -> bool {
        self.mechanism == *mechanism && self.wrapping == wrapping && self.key == key
    }
}

pub(crate) extern "C" fn fn_c_unwrap_key(
    session: CK_SESSION_HANDLE,
    mechanism: *mut CK_MECHANISM,
    unwrapping: CK_OBJECT_HANDLE,
    wrapped: *mut CK_BYTE,
    wrapped_len: CK_ULONG,
    template: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
    key: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    with_library(|lib| {
        lib.sessions.check(session)?;
        let mechanism = wrap_mechanism(&ffi::mechanism(mechanism)?)?;
        let wrapped = ffi::input(wrapped, wrapped_len)?;
        if key.is_null() || wrapped.is_empty() {
            return Err(Error::ArgumentsBad);
        }
        let template = template_to_wire(&Template::new(template, count)?.entries()?)?;
        let request = RequestBody::UnwrapKey {
            session,
            mechanism,
            unwrapping,
            wrapped: wrapped.to_vec(),
            template,
        };
        match lib.daemon.call(request)? {
            ReplyBody::Object(handle) => write_out(key, handle),
            _ => Err(Error::Transport),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesign_proto::HashAlg;

    fn raw(ty: CK_MECHANISM_TYPE, parameter: *const std::ffi::c_void, len: usize) -> RawMechanism {
        RawMechanism::from_parts(ty, parameter, len)
    }

    #[test]
    fn mechanisms_and_parameters_are_checked() {
        let none = std::ptr::null();
        assert_eq!(
            wrap_mechanism(&raw(CKM_AES_KEY_WRAP, none, 0)),
            Ok(WrapMechanism::AesKeyWrap)
        );
        for ty in [CKM_AES_KEY_WRAP_PAD, CKM_AES_KEY_WRAP_KWP] {
            assert_eq!(
                wrap_mechanism(&raw(ty, none, 0)),
                Ok(WrapMechanism::AesKeyWrapPad)
            );
        }
        let iv = [0xa6u8; 8];
        assert_eq!(
            wrap_mechanism(&raw(CKM_AES_KEY_WRAP, iv.as_ptr().cast(), 8)),
            Err(Error::MechanismParamInvalid(CKM_AES_KEY_WRAP))
        );
        let label = *b"l";
        let params = CK_RSA_PKCS_OAEP_PARAMS {
            hashAlg: CKM_SHA256,
            mgf: CKG_MGF1_SHA256,
            source: CKZ_DATA_SPECIFIED,
            pSourceData: label.as_ptr() as *mut _,
            ulSourceDataLen: 1,
        };
        let oaep = raw(
            CKM_RSA_PKCS_OAEP,
            std::ptr::from_ref(&params).cast(),
            size_of::<CK_RSA_PKCS_OAEP_PARAMS>(),
        );
        assert_eq!(
            wrap_mechanism(&oaep),
            Ok(WrapMechanism::RsaOaep {
                hash: HashAlg::Sha256,
                mgf_hash: HashAlg::Sha256,
                label: b"l".to_vec()
            })
        );
        for ty in [CKM_RSA_PKCS, CKM_AES_CBC_PAD, CKM_AES_ECB] {
            assert_eq!(
                wrap_mechanism(&raw(ty, none, 0)),
                Err(Error::MechanismInvalid(ty))
            );
        }
    }
}
