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

/// Reads the optional initialisation arguments (`None` for NULL).
pub(crate) fn initialize_args(args: *const c_void) -> Option<InitArgs> {
    if args.is_null() {
        return None;
    }
    // SAFETY: non-NULL; by the C_Initialize contract it points to a
    // CK_C_INITIALIZE_ARGS. read_unaligned copes with any alignment.
    let args = unsafe { std::ptr::read_unaligned(args.cast::<CK_C_INITIALIZE_ARGS>()) };
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
