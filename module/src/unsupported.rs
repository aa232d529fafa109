//! Functions the module deliberately does not implement, and what they
//! answer. The README quotes this list.
//!
//! | Functions | Answer |
//! |---|---|
//! | C_SignRecoverInit, C_VerifyRecoverInit | session checked, then `CKR_MECHANISM_INVALID`: the token lists no such mechanism yet |
//! | C_SignRecover, C_VerifyRecover | session checked, then `CKR_OPERATION_NOT_INITIALIZED` (no such operation can be active) |
//! | C_EncryptUpdate, C_EncryptFinal, C_DecryptUpdate, C_DecryptFinal with RSA | `CKR_FUNCTION_NOT_SUPPORTED`, ending the operation: RSA is single-part here (the AES mechanisms are multi-part) |
//! | C_GetOperationState, C_SetOperationState, C_DigestEncryptUpdate, C_DecryptDigestUpdate, C_SignEncryptUpdate, C_DecryptVerifyUpdate, C_DigestKey | `CKR_FUNCTION_NOT_SUPPORTED` |
//! | C_WaitForSlotEvent | `CKR_NO_EVENT` with CKF_DONT_BLOCK, else `CKR_FUNCTION_NOT_SUPPORTED` |
//! | the 3.0 message functions (C_MessageEncryptInit … C_MessageVerifyFinal) | `CKR_FUNCTION_NOT_SUPPORTED` |
//! | C_GetFunctionStatus, C_CancelFunction | `CKR_FUNCTION_NOT_PARALLEL` (legacy) |
//!
//! Other decisions: C_LoginUser accepts only an empty user name
//! (`CKR_ARGUMENTS_BAD` otherwise); a NULL PIN (C_Login, C_InitPIN,
//! C_SetPIN, C_InitToken) is `CKR_ARGUMENTS_BAD`, as the token has no
//! protected authentication path; no signatures with SHA-1 or SHA-224
//! (CKM_SHA1_RSA_PKCS, CKM_ECDSA_SHA1, their PSS and SHA-224 forms:
//! `CKR_MECHANISM_INVALID` at C_SignInit; PSS parameters naming them, or an
//! MGF hash other than the message hash, or a salt length other than the
//! hash length: `CKR_MECHANISM_PARAM_INVALID`), and CKM_RSA_PKCS signs only
//! a DigestInfo over SHA-256/384/512 (`CKR_DATA_INVALID` otherwise);
//! C_GetInterface offers no CKF_INTERFACE_FORK_SAFE interface (a forked
//! child starts uninitialised instead); C_SeedRandom answers
//! `CKR_RANDOM_SEED_NOT_SUPPORTED`; raw mechanisms (CKM_RSA_PKCS,
//! CKM_RSA_PKCS_PSS, CKM_ECDSA) are single-part only and answer
//! C_SignUpdate/C_VerifyUpdate with `CKR_FUNCTION_NOT_SUPPORTED`, as
//! SoftHSMv2 does; C_Sign/C_Verify/C_Digest after an Update answer
//! `CKR_OPERATION_ACTIVE`; C_WrapKey / C_UnwrapKey do not offer
//! CKM_RSA_PKCS (`CKR_MECHANISM_INVALID`; see the `wrap` module) nor an IV
//! parameter for CKM_AES_KEY_WRAP (`CKR_MECHANISM_PARAM_INVALID`).

use std::ffi::c_void;

use cryptoki_sys::*;

use crate::entry::with_library;
use crate::error::Error;
use crate::ffi;

/// Session check, then "no such mechanism".
fn no_mechanism(session: CK_SESSION_HANDLE, mechanism: *mut CK_MECHANISM) -> CK_RV {
    with_library(|lib| {
        lib.sessions.check(session)?;
        Err(Error::MechanismInvalid(ffi::mechanism(mechanism)?.ty))
    })
}

/// Session check, then "no such operation is active".
fn no_operation(session: CK_SESSION_HANDLE) -> CK_RV {
    with_library(|lib| {
        lib.sessions.check(session)?;
        Err(Error::OperationNotInitialized)
    })
}

fn not_supported() -> CK_RV {
    with_library(|_| Err(Error::FunctionNotSupported))
}

macro_rules! mechanism_invalid {
    ($($name:ident($($arg:ident: $ty:ty),*);)*) => {$(
        pub(crate) extern "C" fn $name(session: CK_SESSION_HANDLE, mechanism: *mut CK_MECHANISM, $(_: $ty),*) -> CK_RV {
            no_mechanism(session, mechanism)
        }
    )*};
}

macro_rules! operation_not_initialized {
    ($($name:ident($($arg:ident: $ty:ty),*);)*) => {$(
        pub(crate) extern "C" fn $name(session: CK_SESSION_HANDLE, $(_: $ty),*) -> CK_RV {
            no_operation(session)
        }
    )*};
}

macro_rules! function_not_supported {
    ($($name:ident($($arg:ident: $ty:ty),*);)*) => {$(
        pub(crate) extern "C" fn $name($(_: $ty),*) -> CK_RV {
            not_supported()
        }
    )*};
}

mechanism_invalid! {
    fn_c_sign_recover_init(key: CK_OBJECT_HANDLE);
    fn_c_verify_recover_init(key: CK_OBJECT_HANDLE);
}

operation_not_initialized! {
    fn_c_sign_recover(i: *mut CK_BYTE, il: CK_ULONG, o: *mut CK_BYTE, ol: *mut CK_ULONG);
    fn_c_verify_recover(i: *mut CK_BYTE, il: CK_ULONG, o: *mut CK_BYTE, ol: *mut CK_ULONG);
}

function_not_supported! {
    fn_c_get_operation_state(s: CK_SESSION_HANDLE, o: *mut CK_BYTE, ol: *mut CK_ULONG);
    fn_c_set_operation_state(
        s: CK_SESSION_HANDLE, i: *mut CK_BYTE, il: CK_ULONG, e: CK_OBJECT_HANDLE, a: CK_OBJECT_HANDLE
    );
    fn_c_digest_encrypt_update(s: CK_SESSION_HANDLE, i: *mut CK_BYTE, il: CK_ULONG, o: *mut CK_BYTE, ol: *mut CK_ULONG);
    fn_c_decrypt_digest_update(s: CK_SESSION_HANDLE, i: *mut CK_BYTE, il: CK_ULONG, o: *mut CK_BYTE, ol: *mut CK_ULONG);
    fn_c_sign_encrypt_update(s: CK_SESSION_HANDLE, i: *mut CK_BYTE, il: CK_ULONG, o: *mut CK_BYTE, ol: *mut CK_ULONG);
    fn_c_decrypt_verify_update(s: CK_SESSION_HANDLE, i: *mut CK_BYTE, il: CK_ULONG, o: *mut CK_BYTE, ol: *mut CK_ULONG);
    fn_c_digest_key(s: CK_SESSION_HANDLE, k: CK_OBJECT_HANDLE);
    fn_c_message_encrypt_init(s: CK_SESSION_HANDLE, m: *mut CK_MECHANISM, k: CK_OBJECT_HANDLE);
    fn_c_encrypt_message(
        s: CK_SESSION_HANDLE, p: *mut c_void, pl: CK_ULONG, a: *mut CK_BYTE, al: CK_ULONG,
        i: *mut CK_BYTE, il: CK_ULONG, o: *mut CK_BYTE, ol: *mut CK_ULONG
    );
    fn_c_encrypt_message_begin(s: CK_SESSION_HANDLE, p: *mut c_void, pl: CK_ULONG, a: *mut CK_BYTE, al: CK_ULONG);
    fn_c_encrypt_message_next(
        s: CK_SESSION_HANDLE, p: *mut c_void, pl: CK_ULONG, i: *mut CK_BYTE, il: CK_ULONG,
        o: *mut CK_BYTE, ol: *mut CK_ULONG, f: CK_FLAGS
    );
    fn_c_message_encrypt_final(s: CK_SESSION_HANDLE);
    fn_c_message_decrypt_init(s: CK_SESSION_HANDLE, m: *mut CK_MECHANISM, k: CK_OBJECT_HANDLE);
    fn_c_decrypt_message(
        s: CK_SESSION_HANDLE, p: *mut c_void, pl: CK_ULONG, a: *mut CK_BYTE, al: CK_ULONG,
        i: *mut CK_BYTE, il: CK_ULONG, o: *mut CK_BYTE, ol: *mut CK_ULONG
    );
    fn_c_decrypt_message_begin(s: CK_SESSION_HANDLE, p: *mut c_void, pl: CK_ULONG, a: *mut CK_BYTE, al: CK_ULONG);
    fn_c_decrypt_message_next(
        s: CK_SESSION_HANDLE, p: *mut c_void, pl: CK_ULONG, i: *mut CK_BYTE, il: CK_ULONG,
        o: *mut CK_BYTE, ol: *mut CK_ULONG, f: CK_FLAGS
    );
    fn_c_message_decrypt_final(s: CK_SESSION_HANDLE);
    fn_c_message_sign_init(s: CK_SESSION_HANDLE, m: *mut CK_MECHANISM, k: CK_OBJECT_HANDLE);
    fn_c_sign_message(
        s: CK_SESSION_HANDLE, p: *mut c_void, pl: CK_ULONG, i: *mut CK_BYTE, il: CK_ULONG,
        o: *mut CK_BYTE, ol: *mut CK_ULONG
    );
    fn_c_sign_message_begin(s: CK_SESSION_HANDLE, p: *mut c_void, pl: CK_ULONG);
    fn_c_sign_message_next(
        s: CK_SESSION_HANDLE, p: *mut c_void, pl: CK_ULONG, i: *mut CK_BYTE, il: CK_ULONG,
        o: *mut CK_BYTE, ol: *mut CK_ULONG
    );
    fn_c_message_sign_final(s: CK_SESSION_HANDLE);
    fn_c_message_verify_init(s: CK_SESSION_HANDLE, m: *mut CK_MECHANISM, k: CK_OBJECT_HANDLE);
    fn_c_verify_message(
        s: CK_SESSION_HANDLE, p: *mut c_void, pl: CK_ULONG, i: *mut CK_BYTE, il: CK_ULONG,
        g: *mut CK_BYTE, gl: CK_ULONG
    );
    fn_c_verify_message_begin(s: CK_SESSION_HANDLE, p: *mut c_void, pl: CK_ULONG);
    fn_c_verify_message_next(
        s: CK_SESSION_HANDLE, p: *mut c_void, pl: CK_ULONG, i: *mut CK_BYTE, il: CK_ULONG,
        g: *mut CK_BYTE, gl: CK_ULONG
    );
    fn_c_message_verify_final(s: CK_SESSION_HANDLE);
}

/// C_WaitForSlotEvent: slots never change while the daemon runs.
pub(crate) extern "C" fn fn_c_wait_for_slot_event(
    flags: CK_FLAGS,
    _slot: *mut CK_SLOT_ID,
    _reserved: *mut c_void,
) -> CK_RV {
    with_library(|_| {
        if flags & CKF_DONT_BLOCK != 0 {
            Err(Error::NoEvent)
        } else {
            Err(Error::FunctionNotSupported)
        }
    })
}

/// C_GetFunctionStatus (legacy).
pub(crate) extern "C" fn fn_c_get_function_status(_session: CK_SESSION_HANDLE) -> CK_RV {
    with_library(|_| Err(Error::FunctionNotParallel))
}

/// C_CancelFunction (legacy).
pub(crate) extern "C" fn fn_c_cancel_function(_session: CK_SESSION_HANDLE) -> CK_RV {
    with_library(|_| Err(Error::FunctionNotParallel))
}
