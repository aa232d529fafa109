//! C_DeriveKey (PKCS#11 3.0 §5.18.5) with CKM_ECDH1_DERIVE: the module
//! reads the `CK_ECDH1_DERIVE_PARAMS` and the template and sends them on;
//! the card computes the shared secret, applies the KDF and keeps the new
//! secret key, so neither the module nor the daemon ever holds either.
//! The daemon checks the base key, the KDF and the template, the card
//! validates the peer's point.

use cryptoki_sys::*;
use mesign_proto::{EcdhParams, ReplyBody, RequestBody};

use crate::attributes::template_to_wire;
use crate::entry::with_library;
use crate::error::Error;
use crate::ffi::{self, write_out, Template};

/// C_DeriveKey.
pub(crate) extern "C" fn fn_c_derive_key(
    session: CK_SESSION_HANDLE,
    mechanism: *mut CK_MECHANISM,
    base: CK_OBJECT_HANDLE,
    template: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
    key: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    with_library(|lib| {
        lib.sessions.check(session)?;
        let raw = ffi::mechanism(mechanism)?;
        if raw.ty != CKM_ECDH1_DERIVE {
            return Err(Error::MechanismInvalid(raw.ty));
        }
        let p = raw.ecdh1_params()?;
        if key.is_null() {
            return Err(Error::ArgumentsBad);
        }
        let template = template_to_wire(&Template::new(template, count)?.entries()?)?;
        let request = RequestBody::DeriveKey {
            session,
            mechanism: raw.ty,
            base,
            params: EcdhParams {
                kdf: p.kdf,
                shared_data: p.shared_data,
                public_data: p.public_data,
            },
            template,
        };
        match lib.daemon.call(request)? {
            ReplyBody::Object(handle) => write_out(key, handle),
            _ => Err(Error::Transport),
        }
    })
}
