//! C_Initialize, C_Finalize, C_GetInfo (PKCS#11 3.0 §5.4).

use std::ffi::c_void;

use cryptoki_sys::*;

use crate::entry::{self, guarded, with_library};
use crate::ffi::{self, write_out};
use crate::text::padded;

pub(crate) const VERSION_2_40: CK_VERSION = CK_VERSION {
    major: 2,
    minor: 40,
};
pub(crate) const VERSION_3_0: CK_VERSION = CK_VERSION { major: 3, minor: 0 };

/// C_Initialize: connects lazily, so it works without the daemon.
pub(crate) extern "C" fn fn_c_initialize(init_args: *mut c_void) -> CK_RV {
    guarded(|| entry::initialize(ffi::initialize_args(init_args)))
}

/// C_Finalize: pReserved must be NULL.
pub(crate) extern "C" fn fn_c_finalize(reserved: *mut c_void) -> CK_RV {
    guarded(|| entry::finalize(reserved.is_null()))
}

fn info(version: CK_VERSION) -> CK_INFO {
    CK_INFO {
        cryptokiVersion: version,
        manufacturerID: padded("MeSign"),
        flags: 0,
        libraryDescription: padded("MeSign HSM PKCS#11 module"),
        libraryVersion: CK_VERSION {
            major: env!("CARGO_PKG_VERSION_MAJOR").parse().unwrap_or(0),
            minor: env!("CARGO_PKG_VERSION_MINOR").parse().unwrap_or(0),
        },
    }
}

/// C_GetInfo as reached through the 2.40 function list.
pub(crate) extern "C" fn fn_c_get_info(out: *mut CK_INFO) -> CK_RV {
    with_library(|_| write_out(out, info(VERSION_2_40)))
}

/// C_GetInfo as reached through the 3.0 interface.
pub(crate) extern "C" fn fn_c_get_info_v3(out: *mut CK_INFO) -> CK_RV {
    with_library(|_| write_out(out, info(VERSION_3_0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::tests::GLOBAL;
    use std::ptr;

    #[test]
    fn initialize_arguments_and_info() {
        let _g = GLOBAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = fn_c_finalize(ptr::null_mut());
        let mut info = CK_INFO::default();
        assert_eq!(fn_c_get_info(&mut info), CKR_CRYPTOKI_NOT_INITIALIZED);

        let mut bad = CK_C_INITIALIZE_ARGS {
            CreateMutex: None,
            DestroyMutex: None,
            LockMutex: None,
            UnlockMutex: None,
            flags: 0,
            pReserved: std::ptr::dangling_mut::<c_void>(),
        };
        assert_eq!(
            fn_c_initialize((&mut bad as *mut CK_C_INITIALIZE_ARGS).cast()),
            CKR_ARGUMENTS_BAD
        );
        let mut os = CK_C_INITIALIZE_ARGS {
            flags: CKF_OS_LOCKING_OK,
            pReserved: ptr::null_mut(),
            ..bad
        };
        assert_eq!(
            fn_c_initialize((&mut os as *mut CK_C_INITIALIZE_ARGS).cast()),
            CKR_OK
        );
        assert_eq!(
            fn_c_initialize(ptr::null_mut()),
            CKR_CRYPTOKI_ALREADY_INITIALIZED
        );

        assert_eq!(fn_c_get_info(&mut info), CKR_OK);
        assert_eq!(
            (info.cryptokiVersion.major, info.cryptokiVersion.minor),
            (2, 40)
        );
        assert_eq!(&info.manufacturerID[..8], b"MeSign  ");
        assert_eq!(fn_c_get_info(ptr::null_mut()), CKR_ARGUMENTS_BAD);

        assert_eq!(
            fn_c_finalize(std::ptr::dangling_mut::<c_void>()),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(fn_c_finalize(ptr::null_mut()), CKR_OK);
        assert_eq!(fn_c_finalize(ptr::null_mut()), CKR_CRYPTOKI_NOT_INITIALIZED);
    }
}
