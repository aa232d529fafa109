//! The three exported symbols and the interface descriptions they hand out
//! (PKCS#11 3.0 §5.2 "General-purpose functions": C_GetFunctionList,
//! C_GetInterfaceList, C_GetInterface).

use std::cell::UnsafeCell;
use std::ffi::CStr;

use cryptoki_sys::*;

use crate::entry::guarded;
use crate::error::Error;
use crate::functions::{FUNCTION_LIST, FUNCTION_LIST_3_0};

use super::{write_out, OutBuf};

/// The interface name every PKCS#11 consumer asks for.
const PKCS11_NAME: &CStr = c"PKCS 11";

/// `CK_INTERFACE` holds raw pointers, so a static of them needs a `Sync`
/// wrapper.
struct Interfaces([CK_INTERFACE; 2]);

// SAFETY: the pointers refer to immutable statics (a C string and the
// function tables) that are never written through; sharing them is safe.
unsafe impl Sync for Interfaces {}

/// The interface descriptions, 3.0 first: C_GetInterface without a name or
/// version picks the first.
const fn descriptions() -> [CK_INTERFACE; 2] {
    [
        CK_INTERFACE {
            pInterfaceName: PKCS11_NAME.as_ptr().cast::<CK_UTF8CHAR>().cast_mut(),
            pFunctionList: (&FUNCTION_LIST_3_0 as *const CK_FUNCTION_LIST_3_0)
                .cast_mut()
                .cast(),
            flags: 0,
        },
        CK_INTERFACE {
            pInterfaceName: PKCS11_NAME.as_ptr().cast::<CK_UTF8CHAR>().cast_mut(),
            pFunctionList: (&FUNCTION_LIST as *const CK_FUNCTION_LIST)
                .cast_mut()
                .cast(),
            flags: 0,
        },
    ]
}

/// What the module reads when matching and listing interfaces.
static INTERFACES: Interfaces = Interfaces(descriptions());

/// The copies whose addresses C_GetInterface hands out. They live in
/// writable memory because some callers write into the returned
/// `CK_INTERFACE` (OpenSC 0.23's pkcs11-spy replaces `pFunctionList` with
/// its own table), which crashed them on our read-only static. The module
/// never reads these copies, so such writes cannot change its answers.
struct HandedOut(UnsafeCell<[CK_INTERFACE; 2]>);

// SAFETY: the module never reads or writes through the cell; only callers
// do, through the pointers C_GetInterface gives them, as with any C module
// that hands out pointers to its globals.
unsafe impl Sync for HandedOut {}

static HANDED_OUT: HandedOut = HandedOut(UnsafeCell::new(descriptions()));

/// The version of each entry of [`INTERFACES`] (the tables' own versions).
fn interface_version(i: usize) -> CK_VERSION {
    if i == 0 {
        FUNCTION_LIST_3_0.version
    } else {
        FUNCTION_LIST.version
    }
}

/// Reads a non-NULL `CK_VERSION` argument.
fn read_version(version: *const CK_VERSION) -> CK_VERSION {
    // SAFETY: checked non-NULL by the caller; a CK_VERSION by the calling
    // contract; read_unaligned copes with any alignment.
    unsafe { std::ptr::read_unaligned(version) }
}

/// C_GetFunctionList (PKCS#11 2.40 §5.4): the 2.40 table; works before
/// C_Initialize.
#[no_mangle]
pub extern "C" fn C_GetFunctionList(list: *mut *mut CK_FUNCTION_LIST) -> CK_RV {
    guarded(|| write_out(list, (&FUNCTION_LIST as *const CK_FUNCTION_LIST).cast_mut()))
}

/// C_GetInterfaceList (PKCS#11 3.0 §5.2): "PKCS 11" 3.0 and 2.40, with the
/// two-call length convention.
#[no_mangle]
pub extern "C" fn C_GetInterfaceList(list: *mut CK_INTERFACE, count: *mut CK_ULONG) -> CK_RV {
    guarded(|| OutBuf::new(list, count)?.put(&INTERFACES.0).map(|_| ()))
}

/// C_GetInterface (PKCS#11 3.0 §5.2): a NULL name means "PKCS 11", a NULL
/// version the newest (3.0); `flags` must be offered by the interface.
#[no_mangle]
pub extern "C" fn C_GetInterface(
    name: *mut CK_UTF8CHAR,
    version: *mut CK_VERSION,
    interface: *mut *mut CK_INTERFACE,
    flags: CK_FLAGS,
) -> CK_RV {
    guarded(|| {
        if interface.is_null() {
            return Err(Error::ArgumentsBad);
        }
        if !name.is_null() {
            // SAFETY: non-NULL; the contract makes it a NUL-terminated string.
            let name = unsafe { CStr::from_ptr(name.cast_const().cast()) };
            if name != PKCS11_NAME {
                return Err(Error::ArgumentsBad);
            }
        }
        let wanted = if version.is_null() {
            None
        } else {
            Some(read_version(version))
        };
        let found = (0..INTERFACES.0.len()).find(|&i| {
            let v = interface_version(i);
            let version_ok = wanted.is_none_or(|w| w.major == v.major && w.minor == v.minor);
            version_ok && flags & !INTERFACES.0[i].flags == 0
        });
        let i = found.ok_or(Error::ArgumentsBad)?;
        // SAFETY: `i` indexes the two-element array (found above); only an
        // address is computed, nothing is read or written.
        let handed_out = unsafe { HANDED_OUT.0.get().cast::<CK_INTERFACE>().add(i) };
        write_out(interface, handed_out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_list_is_available_before_initialize() {
        let mut list: *mut CK_FUNCTION_LIST = std::ptr::null_mut();
        assert_eq!(C_GetFunctionList(&mut list), CKR_OK);
        // SAFETY: the pointer was just set to our static table.
        let list = unsafe { &*list };
        assert_eq!((list.version.major, list.version.minor), (2, 40));
        assert_eq!(C_GetFunctionList(std::ptr::null_mut()), CKR_ARGUMENTS_BAD);
    }

    #[test]
    fn interface_list_follows_the_two_call_convention() {
        let mut count: CK_ULONG = 0;
        assert_eq!(C_GetInterfaceList(std::ptr::null_mut(), &mut count), CKR_OK);
        assert_eq!(count, 2);
        let mut one = [INTERFACES.0[0]; 1];
        count = 1;
        assert_eq!(
            C_GetInterfaceList(one.as_mut_ptr(), &mut count),
            CKR_BUFFER_TOO_SMALL
        );
        assert_eq!(count, 2);
    }

    #[test]
    fn get_interface_prefers_3_0_and_matches_versions() {
        let mut iface: *mut CK_INTERFACE = std::ptr::null_mut();
        assert_eq!(
            C_GetInterface(std::ptr::null_mut(), std::ptr::null_mut(), &mut iface, 0),
            CKR_OK
        );
        // SAFETY: points into our static interface table.
        let list = unsafe { &*((*iface).pFunctionList as *const CK_FUNCTION_LIST_3_0) };
        assert_eq!((list.version.major, list.version.minor), (3, 0));

        let mut v2 = CK_VERSION {
            major: 2,
            minor: 40,
        };
        let mut name = *b"PKCS 11\0";
        assert_eq!(
            C_GetInterface(name.as_mut_ptr(), &mut v2, &mut iface, 0),
            CKR_OK
        );
        // SAFETY: as above.
        let list = unsafe { &*((*iface).pFunctionList as *const CK_FUNCTION_LIST) };
        assert_eq!((list.version.major, list.version.minor), (2, 40));

        let mut other = *b"Vendor\0";
        assert_eq!(
            C_GetInterface(other.as_mut_ptr(), std::ptr::null_mut(), &mut iface, 0),
            CKR_ARGUMENTS_BAD
        );
        let mut v9 = CK_VERSION { major: 9, minor: 0 };
        assert_eq!(
            C_GetInterface(std::ptr::null_mut(), &mut v9, &mut iface, 0),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            C_GetInterface(
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                &mut iface,
                CKF_INTERFACE_FORK_SAFE
            ),
            CKR_ARGUMENTS_BAD
        );
    }

    #[test]
    fn callers_may_write_into_the_returned_interface() {
        let mut iface: *mut CK_INTERFACE = std::ptr::null_mut();
        assert_eq!(
            C_GetInterface(std::ptr::null_mut(), std::ptr::null_mut(), &mut iface, 0),
            CKR_OK
        );
        let original = INTERFACES.0[0].pFunctionList;
        // What pkcs11-spy does; a read-only static made this a SIGSEGV.
        // SAFETY: the pointer was just handed out by C_GetInterface.
        unsafe { (*iface).pFunctionList = std::ptr::null_mut() };
        // SAFETY: as above.
        unsafe { (*iface).pFunctionList = original };
        let mut count: CK_ULONG = 2;
        let mut listed = [INTERFACES.0[1]; 2];
        assert_eq!(C_GetInterfaceList(listed.as_mut_ptr(), &mut count), CKR_OK);
        assert_eq!(listed[0].pFunctionList, original);
    }
}
