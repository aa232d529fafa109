//! For test files that run one daemon of their own outside the [`Target`]
//! harness (crash, fault and recovery tests): load our module, find its one
//! slot, set up the token, find the card process.
//!
//! [`Target`]: crate::Target

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use std::ffi::OsStr;
use std::time::{Duration, Instant};

use crate::binaries;
use crate::daemon::Daemon;
use crate::target::pin;
use crate::{SO_PIN, USER_PIN};

/// Our module, loaded and initialised for the rest of the process: a real
/// host keeps it loaded across daemon restarts, and so do these tests.
pub fn load_module() -> Pkcs11 {
    let pkcs11 = Pkcs11::new(binaries::require(binaries::MESIGN_MODULE)).expect("load module");
    // Dropping the last handle would call C_Finalize; keep one for good.
    std::mem::forget(pkcs11.clone());
    pkcs11
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("C_Initialize");
    pkcs11
}

/// The one slot of a one-card daemon.
pub fn only_slot(pkcs11: &Pkcs11) -> Slot {
    let slots = pkcs11.get_slots_with_token().expect("C_GetSlotList");
    assert_eq!(slots.len(), 1, "one card, one slot");
    slots[0]
}

/// Initialises the token as `label` with the suite's SO and user PINs.
pub fn init_token(pkcs11: &Pkcs11, slot: Slot, label: &str) {
    pkcs11
        .init_token(slot, &pin(SO_PIN), label)
        .expect("C_InitToken");
    let so = pkcs11.open_rw_session(slot).expect("C_OpenSession");
    so.login(UserType::So, Some(&pin(SO_PIN)))
        .expect("SO login");
    so.init_pin(&pin(USER_PIN)).expect("C_InitPIN");
    so.logout().expect("SO logout");
}

/// [`init_token`], then a R/W session logged in as the user.
pub fn ready_session(pkcs11: &Pkcs11, slot: Slot, label: &str) -> Session {
    init_token(pkcs11, slot, label);
    let session = pkcs11.open_rw_session(slot).expect("C_OpenSession");
    session
        .login(UserType::User, Some(&pin(USER_PIN)))
        .expect("user login");
    session
}

/// The card emulator: the daemon's child process, started by whichever
/// daemon thread started it, hence the walk over all its tasks.
pub fn card_pid(daemon: u32) -> Option<u32> {
    card_pids(daemon).first().copied()
}

/// Every child process of the daemon (its card emulators), by walking
/// all its tasks: each card is started by whichever thread opened it.
pub fn card_pids(daemon: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    let tasks = std::fs::read_dir(format!("/proc/{daemon}/task")).expect("daemon tasks");
    for task in tasks {
        let children = task.expect("task").path().join("children");
        if let Ok(text) = std::fs::read_to_string(children) {
            pids.extend(
                text.split_whitespace()
                    .map(|p| p.parse::<u32>().expect("child pid")),
            );
        }
    }
    pids.sort_unstable();
    pids
}

/// Nanoseconds process `pid` has run on a CPU, summed over its threads
/// (from /proc/PID/task/*/schedstat); 0 once it is gone.
pub fn cpu_time_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// How long a daemon may take to replace a killed card.
pub const CARD_RECOVERY_DEADLINE: Duration = Duration::from_secs(15);

/// A daemon in a fresh temporary directory (named after `prefix`) whose
/// one slot has the cards that `cards` describes (the body of a `[[cards]]`
/// table after its backend), with a 2 s card deadline; the module is
/// pointed at it through `MESIGN_HSM_SOCKET`. For test files whose one
/// test is the only thread that loads the module.
pub fn daemon_with_cards(prefix: &str, cards: &str) -> (tempfile::TempDir, Daemon) {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("temp dir");
    let socket = dir.path().join("hsmd.sock");
    let config = dir.path().join("hsmd.toml");
    std::fs::write(
        &config,
        format!("[[cards]]\nbackend = \"emulator\"\n{cards}\n"),
    )
    .expect("config");
    std::env::set_var("MESIGN_HSM_SOCKET", &socket);
    let daemon = Daemon::start_with_args(
        &dir.path().join("state"),
        &socket,
        &dir.path().join("hsmd.log"),
        &[("MESIGN_CARD_TIMEOUT_MS", OsStr::new("2000"))],
        &[OsStr::new("--config"), config.as_os_str()],
    );
    (dir, daemon)
}

/// Waits until the daemon runs `count` cards again, none of them the
/// killed `victim`, and `settled` holds for every one; fails after
/// [`CARD_RECOVERY_DEADLINE`].
pub fn wait_for_replaced_card(
    daemon: &Daemon,
    victim: u32,
    count: usize,
    settled: impl Fn(u32) -> bool,
) {
    let deadline = Instant::now() + CARD_RECOVERY_DEADLINE;
    loop {
        let now = card_pids(daemon.pid());
        if now.len() == count && !now.contains(&victim) && now.iter().all(|&pid| settled(pid)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the killed card was not replaced within {CARD_RECOVERY_DEADLINE:?}: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
