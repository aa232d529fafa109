//! Session management and login (PKCS#11 3.0 §5.6–5.7): C_OpenSession,
//! C_CloseSession, C_CloseAllSessions, C_GetSessionInfo, C_Login,
//! C_LoginUser, C_Logout, C_InitPIN, C_SetPIN, C_SessionCancel.

use std::ffi::c_void;

use cryptoki_sys::*;
use mesign_proto::{ReplyBody, RequestBody};

use crate::entry::with_library;
use crate::error::Error;
use crate::ffi::{self, write_out};
use crate::library::Library;
use crate::sign::end_unused_context_login;

/// Sends a request whose success is a plain `Done`.
pub(crate) fn done(lib: &Library, request: RequestBody) -> Result<(), Error> {
    match lib.daemon.call(request)? {
        ReplyBody::Done => Ok(()),
        _ => Err(Error::Transport),
    }
}

/// C_OpenSession: flags are passed on (the daemon checks
/// CKF_SERIAL_SESSION); notification callbacks are never made.
pub(crate) extern "C" fn fn_c_open_session(
    slot: CK_SLOT_ID,
    flags: CK_FLAGS,
    _application: *mut c_void,
    _notify: CK_NOTIFY,
    session: *mut CK_SESSION_HANDLE,
) -> CK_RV {
    with_library(|lib| {
        if session.is_null() {
            return Err(Error::ArgumentsBad);
        }
        let handle = lib.daemon.open_session(slot, flags)?;
        lib.sessions.insert(handle, slot);
        write_out(session, handle)
    })
}

pub(crate) extern "C" fn fn_c_close_session(session: CK_SESSION_HANDLE) -> CK_RV {
    with_library(|lib| {
        let slot = lib.sessions.slot(session)?;
        let result = lib.daemon.close_session(session);
        // The daemon may have ended the session already (e.g. after the
        // token was re-initialised); either way it is gone for us too.
        if matches!(
            result,
            Ok(())
                | Err(Error::Daemon(
                    CKR_SESSION_HANDLE_INVALID | CKR_SESSION_CLOSED
                ))
        ) {
            lib.sessions.remove(session);
            // Closing the last session logs the application out.
            if !lib.sessions.any_on(slot) {
                lib.keys.forget_slot(slot);
            }
        }
        result
    })
}

pub(crate) extern "C" fn fn_c_close_all_sessions(slot: CK_SLOT_ID) -> CK_RV {
    with_library(|lib| {
        lib.daemon.close_all_sessions(slot)?;
        lib.sessions.remove_slot(slot);
        lib.keys.forget_slot(slot);
        Ok(())
    })
}

pub(crate) extern "C" fn fn_c_get_session_info(
    session: CK_SESSION_HANDLE,
    out: *mut CK_SESSION_INFO,
) -> CK_RV {
    with_library(|lib| {
        lib.sessions.check(session)?;
        if out.is_null() {
            return Err(Error::ArgumentsBad);
        }
        match lib.daemon.call(RequestBody::SessionInfo { session })? {
            ReplyBody::SessionInfo(i) => write_out(
                out,
                CK_SESSION_INFO {
                    slotID: i.slot,
                    state: i.state,
                    flags: i.flags,
                    ulDeviceError: i.device_error,
                },
            ),
            _ => Err(Error::Transport),
        }
    })
}

/// C_Login's work once the PIN is read. `CKU_CONTEXT_SPECIFIC` authorises
/// the signing or decryption operation active in this session, once, for
/// a key with CKA_ALWAYS_AUTHENTICATE (the daemon lets the next signature
/// or decryption of the session consume it; the operation drops it if it
/// ends without one). Should both wait, the signing operation gets it and
/// the decryption waits for a login of its own. Without such an operation
/// waiting for it, it is `CKR_OPERATION_NOT_INITIALIZED` and the daemon is
/// not asked, as SoftHSMv2 answers.
fn login(
    lib: &Library,
    session: CK_SESSION_HANDLE,
    user_type: CK_USER_TYPE,
    pin: &[u8],
) -> Result<(), Error> {
    if user_type == CKU_CONTEXT_SPECIFIC
        && !lib.sessions.with(session, |s| {
            s.sign.as_ref().is_some_and(|op| op.awaits_context_login())
                || s.decrypt
                    .as_ref()
                    .is_some_and(|op| op.awaits_context_login())
        })?
    {
        return Err(Error::OperationNotInitialized);
    }
    done(
        lib,
        RequestBody::Login {
            session,
            user_type,
            pin: pin.to_vec(),
        },
    )?;
    lib.daemon.logged_in(session, user_type, pin);
    if user_type == CKU_CONTEXT_SPECIFIC {
        lib.sessions
            .with(session, |s| match (s.sign.as_mut(), s.decrypt.as_mut()) {
                (Some(op), _) if op.awaits_context_login() => op.context_login_done(),
                (_, Some(op)) if op.awaits_context_login() => op.context_login_done(),
                _ => {}
            })?;
    }
    Ok(())
}

/// C_Login (PKCS#11 3.0 §5.7): a NULL PIN is `CKR_ARGUMENTS_BAD` (no
/// protected authentication path).
pub(crate) extern "C" fn fn_c_login(
    session: CK_SESSION_HANDLE,
    user_type: CK_USER_TYPE,
    pin: *mut CK_UTF8CHAR,
    pin_len: CK_ULONG,
) -> CK_RV {
    with_library(|lib| {
        lib.sessions.check(session)?;
        login(lib, session, user_type, ffi::pin(pin, pin_len)?)
    })
}

/// C_LoginUser (3.0): the token has no named users, so only an empty or
/// NULL user name is accepted (then it is C_Login); any other name is
/// `CKR_ARGUMENTS_BAD`.
pub(crate) extern "C" fn fn_c_login_user(
    session: CK_SESSION_HANDLE,
    user_type: CK_USER_TYPE,
    pin: *mut CK_UTF8CHAR,
    pin_len: CK_ULONG,
    username: *mut CK_UTF8CHAR,
    username_len: CK_ULONG,
) -> CK_RV {
    with_library(|lib| {
        lib.sessions.check(session)?;
        if !ffi::input(username, username_len)?.is_empty() {
            return Err(Error::ArgumentsBad);
        }
        login(lib, session, user_type, ffi::pin(pin, pin_len)?)
    })
}

/// C_Logout: signing operations hold private keys, so they end too.
pub(crate) extern "C" fn fn_c_logout(session: CK_SESSION_HANDLE) -> CK_RV {
    with_library(|lib| {
        lib.sessions.check(session)?;
        let slot = lib.sessions.slot(session)?;
        done(lib, RequestBody::Logout { session })?;
        lib.daemon.logged_out(session);
        lib.sessions.end_sign_operations();
        lib.keys.forget_slot(slot);
        Ok(())
    })
}

pub(crate) extern "C" fn fn_c_init_pin(
    session: CK_SESSION_HANDLE,
    pin: *mut CK_UTF8CHAR,
    pin_len: CK_ULONG,
) -> CK_RV {
    with_library(|lib| {
        lib.sessions.check(session)?;
        done(
            lib,
            RequestBody::InitPin {
                session,
                pin: ffi::pin(pin, pin_len)?.to_vec(),
            },
        )
    })
}

pub(crate) extern "C" fn fn_c_set_pin(
    session: CK_SESSION_HANDLE,
    old_pin: *mut CK_UTF8CHAR,
    old_len: CK_ULONG,
    new_pin: *mut CK_UTF8CHAR,
    new_len: CK_ULONG,
) -> CK_RV {
    with_library(|lib| {
        lib.sessions.check(session)?;
        let old_pin = ffi::pin(old_pin, old_len)?.to_vec();
        let new_pin = ffi::pin(new_pin, new_len)?.to_vec();
        done(
            lib,
            RequestBody::SetPin {
                session,
                old_pin,
                new_pin,
            },
        )
    })
}

/// C_SessionCancel (3.0): ends the module-held operations named by `flags`
/// (find, sign, verify, digest, encrypt, decrypt); the other kinds never
/// become active here. A cancelled signing or decryption operation's
/// unused context-specific login is dropped with it.
pub(crate) extern "C" fn fn_c_session_cancel(session: CK_SESSION_HANDLE, flags: CK_FLAGS) -> CK_RV {
    with_library(|lib| {
        lib.sessions.with(session, |s| {
            if flags & CKF_FIND_OBJECTS != 0 {
                s.find = None;
            }
            if flags & CKF_SIGN != 0 {
                if let Some(op) = s.sign.take() {
                    end_unused_context_login(lib, session, &op);
                }
            }
            if flags & CKF_DECRYPT != 0 {
                if let Some(op) = s.decrypt.take() {
                    op.end_unused_context_login(lib, session);
                }
            }
            if flags & CKF_ENCRYPT != 0 {
                s.encrypt = None;
            }
            if flags & CKF_VERIFY != 0 {
                s.verify = None;
            }
            if flags & CKF_DIGEST != 0 {
                s.digest = None;
            }
            s.secret.cancel(flags);
        })
    })
}
