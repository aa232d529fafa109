//! The wrapper every `C_*` function goes through, and the library's global
//! state.
//!
//! The wrapper catches panics (a signing server must never be unwound into
//! or aborted by us), checks that C_Initialize ran in *this* process (after
//! fork() the child starts uninitialised), and maps `Result` to `CK_RV`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, PoisonError, RwLock};

use cryptoki_sys::{CKF_OS_LOCKING_OK, CK_RV};

use crate::error::{rv, Error};
use crate::ffi::InitArgs;
use crate::library::Library;

/// The initialised library, if any. Calls hold an `Arc` for their duration,
/// so C_Finalize never frees state under a running call.
static LIBRARY: RwLock<Option<Arc<Library>>> = RwLock::new(None);

/// Runs `f` with panics contained and the result mapped to `CK_RV`. For
/// functions that work without initialisation.
pub(crate) fn guarded(f: impl FnOnce() -> Result<(), Error>) -> CK_RV {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => rv(result),
        Err(_) => Error::Panicked.rv(),
    }
}

/// Runs `f` with the initialised library, like [`guarded`].
pub(crate) fn with_library(f: impl FnOnce(&Library) -> Result<(), Error>) -> CK_RV {
    guarded(|| f(&*current()?))
}

/// The library initialised in this process.
fn current() -> Result<Arc<Library>, Error> {
    let guard = LIBRARY.read().unwrap_or_else(PoisonError::into_inner);
    match &*guard {
        None => Err(Error::NotInitialized),
        Some(lib) if !forked(lib.pid, std::process::id()) => Ok(Arc::clone(lib)),
        Some(_) => {
            drop(guard);
            forget_parent_state();
            Err(Error::NotInitialized)
        }
    }
}

/// True when the library was initialised by another process (our parent
/// before a fork()).
fn forked(initialised_by: u32, now: u32) -> bool {
    initialised_by != now
}

/// In a forked child: the inherited connections belong to the parent's
/// application, so they are closed without a word sent on them and the
/// state is dropped; the child must call C_Initialize again.
fn forget_parent_state() {
    let mut guard = LIBRARY.write().unwrap_or_else(PoisonError::into_inner);
    if let Some(lib) = guard.take_if(|lib| forked(lib.pid, std::process::id())) {
        lib.daemon.abandon();
    }
}

/// C_Initialize's decision on `CK_C_INITIALIZE_ARGS` (PKCS#11 2.40 §5.4):
/// the module locks with OS primitives internally, so it accepts "no
/// locking" and "OS locking", refuses "application locking only" with
/// `CKR_CANT_LOCK`, and a partial set of mutex functions is bad arguments.
pub(crate) fn check_init_args(args: Option<InitArgs>) -> Result<(), Error> {
    let Some(args) = args else { return Ok(()) };
    if !args.reserved_is_null {
        return Err(Error::ArgumentsBad);
    }
    match args.mutex_functions.iter().filter(|&&set| set).count() {
        0 => Ok(()),
        4 if args.flags & CKF_OS_LOCKING_OK != 0 => Ok(()),
        4 => Err(Error::CantLock),
        _ => Err(Error::ArgumentsBad),
    }
}

/// Installs a freshly initialised library (C_Initialize).
pub(crate) fn initialize(args: Option<InitArgs>) -> Result<(), Error> {
    check_init_args(args)?;
    let mut guard = LIBRARY.write().unwrap_or_else(PoisonError::into_inner);
    if let Some(lib) = &*guard {
        if !forked(lib.pid, std::process::id()) {
            return Err(Error::AlreadyInitialized);
        }
        lib.daemon.abandon();
    }
    *guard = Some(Arc::new(Library::new()?));
    Ok(())
}

/// Drops the library (C_Finalize): connections close when the last running
/// call finishes, and the daemon then ends the application's sessions.
pub(crate) fn finalize(reserved_is_null: bool) -> Result<(), Error> {
    current()?;
    if !reserved_is_null {
        return Err(Error::ArgumentsBad);
    }
    let lib = LIBRARY
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    drop(lib);
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Tests that initialise the global library take this lock.
    pub(crate) static GLOBAL: Mutex<()> = Mutex::new(());

    fn args(fns: [bool; 4], flags: u64) -> Option<InitArgs> {
        Some(InitArgs {
            mutex_functions: fns,
            flags,
            reserved_is_null: true,
        })
    }

    #[test]
    fn the_four_locking_cases() {
        assert_eq!(check_init_args(None), Ok(()));
        assert_eq!(check_init_args(args([false; 4], 0)), Ok(()));
        assert_eq!(check_init_args(args([false; 4], CKF_OS_LOCKING_OK)), Ok(()));
        assert_eq!(check_init_args(args([true; 4], 0)), Err(Error::CantLock));
        assert_eq!(check_init_args(args([true; 4], CKF_OS_LOCKING_OK)), Ok(()));
        assert_eq!(
            check_init_args(args([true, true, false, true], CKF_OS_LOCKING_OK)),
            Err(Error::ArgumentsBad)
        );
        let reserved = Some(InitArgs {
            reserved_is_null: false,
            ..Default::default()
        });
        assert_eq!(check_init_args(reserved), Err(Error::ArgumentsBad));
    }

    #[test]
    fn panics_are_contained() {
        assert_eq!(
            guarded(|| panic!("test-only panic inside the wrapper")),
            cryptoki_sys::CKR_GENERAL_ERROR
        );
    }

    #[test]
    fn fork_is_detected_by_pid() {
        assert!(!forked(10, 10));
        assert!(forked(10, 11));
    }

    #[test]
    fn initialize_twice_and_finalize() {
        let _g = GLOBAL.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = finalize(true);
        assert_eq!(
            with_library(|_| Ok(())),
            cryptoki_sys::CKR_CRYPTOKI_NOT_INITIALIZED
        );
        assert_eq!(initialize(None), Ok(()));
        assert_eq!(initialize(None), Err(Error::AlreadyInitialized));
        assert_eq!(with_library(|_| Ok(())), cryptoki_sys::CKR_OK);
        assert_eq!(finalize(true), Ok(()));
        assert_eq!(finalize(true), Err(Error::NotInitialized));
    }
}
