//! Slot and token management (PKCS#11 3.0 §5.5): C_GetSlotList,
//! C_GetSlotInfo, C_GetTokenInfo, C_GetMechanismList, C_GetMechanismInfo,
//! C_InitToken.

use cryptoki_sys::*;
use mesign_proto::{MechanismInfo, ReplyBody, RequestBody, SlotInfo};

use crate::entry::with_library;
use crate::error::Error;
use crate::ffi::{self, write_out, OutBuf};
use crate::library::Library;
use crate::text::{padded, padded_bytes};

fn version((major, minor): (u8, u8)) -> CK_VERSION {
    CK_VERSION { major, minor }
}

fn slots(lib: &Library) -> Result<Vec<SlotInfo>, Error> {
    match lib.daemon.call(RequestBody::Slots)? {
        ReplyBody::Slots(s) => Ok(s),
        _ => Err(Error::Transport),
    }
}

fn mechanisms(lib: &Library, slot: CK_SLOT_ID) -> Result<Vec<MechanismInfo>, Error> {
    match lib.daemon.call(RequestBody::Mechanisms { slot })? {
        ReplyBody::Mechanisms(m) => Ok(m),
        _ => Err(Error::Transport),
    }
}

pub(crate) extern "C" fn fn_c_get_slot_list(
    token_present: CK_BBOOL,
    list: *mut CK_SLOT_ID,
    count: *mut CK_ULONG,
) -> CK_RV {
    with_library(|lib| {
        let mut out = OutBuf::new(list, count)?;
        let ids: Vec<CK_SLOT_ID> = slots(lib)?
            .iter()
            .filter(|s| token_present == CK_FALSE || s.flags & CKF_TOKEN_PRESENT != 0)
            .map(|s| s.slot)
            .collect();
        out.put(&ids).map(drop)
    })
}

pub(crate) extern "C" fn fn_c_get_slot_info(slot: CK_SLOT_ID, out: *mut CK_SLOT_INFO) -> CK_RV {
    with_library(|lib| {
        if out.is_null() {
            return Err(Error::ArgumentsBad);
        }
        let s = slots(lib)?
            .into_iter()
            .find(|s| s.slot == slot)
            .ok_or(Error::SlotIdInvalid(slot))?;
        write_out(
            out,
            CK_SLOT_INFO {
                slotDescription: padded(&s.description),
                manufacturerID: padded(&s.manufacturer),
                flags: s.flags,
                hardwareVersion: version(s.hardware_version),
                firmwareVersion: version(s.firmware_version),
            },
        )
    })
}

pub(crate) extern "C" fn fn_c_get_token_info(slot: CK_SLOT_ID, out: *mut CK_TOKEN_INFO) -> CK_RV {
    with_library(|lib| {
        if out.is_null() {
            return Err(Error::ArgumentsBad);
        }
        let t = match lib.daemon.call(RequestBody::TokenInfo { slot })? {
            ReplyBody::TokenInfo(t) => t,
            _ => return Err(Error::Transport),
        };
        write_out(
            out,
            CK_TOKEN_INFO {
                label: padded_bytes(&t.label),
                manufacturerID: padded(&t.manufacturer),
                model: padded(&t.model),
                serialNumber: padded(&t.serial),
                flags: t.flags,
                ulMaxSessionCount: t.max_session_count,
                ulSessionCount: t.session_count,
                ulMaxRwSessionCount: t.max_rw_session_count,
                ulRwSessionCount: t.rw_session_count,
                ulMaxPinLen: t.max_pin_len,
                ulMinPinLen: t.min_pin_len,
                ulTotalPublicMemory: t.total_public_memory,
                ulFreePublicMemory: t.free_public_memory,
                ulTotalPrivateMemory: t.total_private_memory,
                ulFreePrivateMemory: t.free_private_memory,
                hardwareVersion: version(t.hardware_version),
                firmwareVersion: version(t.firmware_version),
                utcTime: padded(&t.utc_time),
            },
        )
    })
}

pub(crate) extern "C" fn fn_c_get_mechanism_list(
    slot: CK_SLOT_ID,
    list: *mut CK_MECHANISM_TYPE,
    count: *mut CK_ULONG,
) -> CK_RV {
    with_library(|lib| {
        let mut out = OutBuf::new(list, count)?;
        let types: Vec<CK_MECHANISM_TYPE> =
            mechanisms(lib, slot)?.iter().map(|m| m.mechanism).collect();
        out.put(&types).map(drop)
    })
}

pub(crate) extern "C" fn fn_c_get_mechanism_info(
    slot: CK_SLOT_ID,
    ty: CK_MECHANISM_TYPE,
    out: *mut CK_MECHANISM_INFO,
) -> CK_RV {
    with_library(|lib| {
        if out.is_null() {
            return Err(Error::ArgumentsBad);
        }
        let m = mechanisms(lib, slot)?
            .into_iter()
            .find(|m| m.mechanism == ty)
            .ok_or(Error::MechanismInvalid(ty))?;
        write_out(
            out,
            CK_MECHANISM_INFO {
                ulMinKeySize: m.min_key_size,
                ulMaxKeySize: m.max_key_size,
                flags: m.flags,
            },
        )
    })
}

/// C_InitToken: the label is exactly 32 blank-padded bytes.
pub(crate) extern "C" fn fn_c_init_token(
    slot: CK_SLOT_ID,
    pin: *mut CK_UTF8CHAR,
    pin_len: CK_ULONG,
    label: *mut CK_UTF8CHAR,
) -> CK_RV {
    with_library(|lib| {
        if label.is_null() {
            return Err(Error::ArgumentsBad);
        }
        let so_pin = ffi::pin(pin, pin_len)?.to_vec();
        let label = ffi::input(label, 32)?.to_vec();
        match lib.daemon.call(RequestBody::InitToken {
            slot,
            so_pin,
            label,
        })? {
            ReplyBody::Done => {
                lib.keys.forget_slot(slot);
                Ok(())
            }
            _ => Err(Error::Transport),
        }
    })
}
