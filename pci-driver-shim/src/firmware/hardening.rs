//! Process hardening for the card emulator, best effort: the process holds
//! the master key and unwrapped private keys, so it must not be dumped,
//! ptrace-attached by other users, or swapped.

use nix::sys::mman::{mlockall, MlockAllFlags};
use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};

/// Locking future mappings too needs a memory-lock limit that fits every
/// thread stack and heap growth (or CAP_IPC_LOCK, which lifts the limit);
/// below this, lock only what exists now so a later allocation cannot fail
/// with EAGAIN.
const MLOCK_FUTURE_MIN: u64 = 512 * 1024 * 1024;
/// Bit of CAP_IPC_LOCK in the capability sets.
const CAP_IPC_LOCK: u32 = 14;

/// Applies what the OS allows and logs what it refuses.
pub fn harden_process() {
    if let Err(errno) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!(%errno, "cannot mark the process non-dumpable");
    }
    if let Err(errno) = setrlimit(Resource::RLIMIT_CORE, 0, 0) {
        tracing::warn!(%errno, "cannot disable core dumps");
    }
    let future_ok = has_ipc_lock_capability()
        || matches!(
            getrlimit(Resource::RLIMIT_MEMLOCK),
            Ok((soft, _)) if soft == RLIM_INFINITY || soft >= MLOCK_FUTURE_MIN
        );
    let flags = if future_ok {
        MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE
    } else {
        MlockAllFlags::MCL_CURRENT
    };
    match mlockall(flags) {
        Ok(()) if future_ok => tracing::debug!("memory locked"),
        Ok(()) => tracing::warn!(
            "RLIMIT_MEMLOCK too low to lock future allocations; only current memory is locked"
        ),
        Err(errno) => tracing::warn!(%errno, "cannot lock memory; key material may be swapped"),
    }
}

/// Reads the effective capability set from `/proc/self/status`.
fn has_ipc_lock_capability() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}
