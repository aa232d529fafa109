//! Work to do when the test process exits: stop daemons, remove temp dirs.
//!
//! Process-wide fixtures live in statics, which Rust never drops, so without
//! this a `cargo test` run would leave daemons and card emulators behind.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, Once};

type Hook = Box<dyn FnOnce() + Send>;

static HOOKS: Mutex<Vec<Hook>> = Mutex::new(Vec::new());
static REGISTER: Once = Once::new();

/// Schedules `hook` for process exit; hooks run last-registered first, like
/// destructors, so a daemon stops before its directory is removed.
pub fn at_exit(hook: impl FnOnce() + Send + 'static) {
    REGISTER.call_once(|| crate::ffi::at_process_exit(run_hooks));
    HOOKS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Box::new(hook));
}

extern "C" fn run_hooks() {
    let hooks = std::mem::take(&mut *HOOKS.lock().unwrap_or_else(|p| p.into_inner()));
    for hook in hooks.into_iter().rev() {
        // A panic must not unwind into libc's exit path.
        let _ = catch_unwind(AssertUnwindSafe(hook));
    }
}
