//! Reading `CK_C_INITIALIZE_ARGS` for C_Initialize.

use std::ffi::c_void;

use cryptoki_sys::{CK_C_INITIALIZE_ARGS, CK_FLAGS};

/// The parts of `CK_C_INITIALIZE_ARGS` the module decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct InitArgs {
    /// Which of CreateMutex, DestroyMutex, LockMutex, UnlockMutex are set.
    pub mutex_functions: [bool; 4],
    pub flags: CK_FLAGS,
    pub reserved_is_null: bool,
}

/// A vendor-defined C_Initialize flag that makes a *debug* build panic
/// inside the call, so `softhsm-tests/tests/c_boundary.rs` can show that a
/// panic never crosses into the host. Release builds ignore it like any
/// unknown flag.
pub const TEST_PANIC_FLAG: CK_FLAGS = 0x8000_0000;

/// Reads the optional initialisation arguments (`None` for NULL).
pub(crate) fn initialize_args(args: *const c_void) -> Option<InitArgs> {
    if args.is_null() {
        return None;
    }
    // SAFETY: non-NULL; by the C_Initialize contract it points to a
    // CK_C_INITIALIZE_ARGS. read_unaligned copes with any alignment.
    let args = unsafe { std::ptr::read_unaligned(args.cast::<CK_C_INITIALIZE_ARGS>()) };
    if cfg!(debug_assertions) && args.flags & TEST_PANIC_FLAG != 0 {
        panic!("C_Initialize: test panic requested with TEST_PANIC_FLAG");
    }
    Some(InitArgs {
        mutex_functions: [
            args.CreateMutex.is_some(),
            args.DestroyMutex.is_some(),
            args.LockMutex.is_some(),
            args.UnlockMutex.is_some(),
        ],
        flags: args.flags,
        reserved_is_null: args.pReserved.is_null(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_panic_flag_panics_in_debug_builds_only() {
        let args = CK_C_INITIALIZE_ARGS {
            CreateMutex: None,
            DestroyMutex: None,
            LockMutex: None,
            UnlockMutex: None,
            flags: TEST_PANIC_FLAG,
            pReserved: std::ptr::null_mut(),
        };
        let p = (&args as *const CK_C_INITIALIZE_ARGS).cast();
        let outcome = std::panic::catch_unwind(|| initialize_args(p));
        assert_eq!(outcome.is_err(), cfg!(debug_assertions));
    }
}
