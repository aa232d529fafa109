//! `mesign-card-emu`: the MeSign software card.
//!
//! Runs the card firmware in its own process so key material never enters
//! the daemon's address space, and serves one host at a time on a Unix
//! socket (see `pci_driver_shim::emulator`). It is a faithful emulator of the
//! card's interface, not a tamper-resistant device.
//!
//! ```text
//! mesign-card-emu --state-dir DIR --listen SOCKET [--parent-pid PID]
//! ```
//!
//! `MESIGN_CARD_EMU_FAULTS=FILE` turns on fault injection for tests (see
//! `pci_driver_shim::emulator::faults`); `MESIGN_CARD_EMU_FAIL_SELFTEST=1`
//! makes the power-on self-tests fail.
//!
//! With `--parent-pid` (how the daemon starts it) the emulator ends when that
//! process dies, even by SIGKILL, so a killed daemon leaves no orphan card
//! holding the state directory.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use nix::sys::signal::{SigSet, Signal};
use nix::sys::stat::{umask, Mode};
use pci_driver_shim::emulator::faults::FaultControl;
use pci_driver_shim::emulator::server;
use pci_driver_shim::firmware::{harden_process, Firmware, FORCE_FAILURE_ENV};

const USAGE: &str = "usage: mesign-card-emu --state-dir DIR --listen SOCKET [--parent-pid PID]";

struct Args {
    state_dir: PathBuf,
    listen: PathBuf,
    parent_pid: Option<u32>,
}

fn parse_args() -> Result<Args, String> {
    let mut state_dir = None;
    let mut listen = None;
    let mut parent_pid = None;
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        let slot = match arg.to_str() {
            Some("--state-dir") => &mut state_dir,
            Some("--listen") => &mut listen,
            Some("--parent-pid") => &mut parent_pid,
            Some("--help" | "-h") => return Err(USAGE.into()),
            _ => return Err(format!("unknown argument {arg:?}\n{USAGE}")),
        };
        *slot = Some(PathBuf::from(
            args.next()
                .ok_or_else(|| format!("{arg:?} needs a value"))?,
        ));
    }
    Ok(Args {
        state_dir: state_dir.ok_or_else(|| format!("--state-dir is required\n{USAGE}"))?,
        listen: listen.ok_or_else(|| format!("--listen is required\n{USAGE}"))?,
        parent_pid: parent_pid
            .map(|p: PathBuf| {
                p.to_str()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| format!("--parent-pid needs a process id\n{USAGE}"))
            })
            .transpose()?,
    })
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    // Files and the socket this process creates are for its owner only.
    umask(Mode::from_bits_truncate(0o077));
    harden_process();

    // Block the termination signals before any thread exists, so they all
    // inherit the mask and the main thread alone receives them in `wait`.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    if let Err(errno) = signals.thread_block() {
        tracing::error!(%errno, "cannot block termination signals");
        return ExitCode::FAILURE;
    }

    if let Some(parent) = args.parent_pid {
        // SIGTERM is blocked and waited for below, so the parent's death
        // takes the orderly shutdown path. Checking the parent after arming
        // the signal closes the race with a parent that died first.
        if let Err(errno) = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM) {
            tracing::error!(%errno, "cannot tie the emulator to its parent");
            return ExitCode::FAILURE;
        }
        if nix::unistd::getppid().as_raw() as u32 != parent {
            tracing::error!(parent, "the starting process is gone");
            return ExitCode::FAILURE;
        }
    }

    let force_failure = std::env::var_os(FORCE_FAILURE_ENV).is_some_and(|v| v == "1");
    let firmware = match Firmware::start(&args.state_dir, force_failure) {
        Ok(firmware) => Arc::new(firmware),
        Err(e) => {
            tracing::error!(error = %e, "card firmware cannot start");
            return ExitCode::FAILURE;
        }
    };
    let listener = match server::bind(&args.listen) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(socket = %args.listen.display(), error = %e, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    let bound = socket_identity(&args.listen);
    tracing::info!(socket = %args.listen.display(), state_dir = %args.state_dir.display(), "card emulator ready");
    let socket = args.listen.clone();
    let faults = FaultControl::from_env().map(Arc::new);
    let accept = std::thread::Builder::new()
        .name("card-accept".into())
        .stack_size(server::THREAD_STACK)
        .spawn(move || server::serve(listener, firmware, socket, faults));
    if let Err(e) = accept {
        tracing::error!(error = %e, "cannot start the accept thread");
        return ExitCode::FAILURE;
    }
    match signals.wait() {
        Ok(signal) => tracing::info!(?signal, "shutting down"),
        Err(errno) => tracing::error!(%errno, "waiting for signals failed; shutting down"),
    }
    // A successor started after our parent died may already listen at the
    // same path; its socket is not ours to remove.
    if bound.is_some() && socket_identity(&args.listen) == bound {
        let _ = std::fs::remove_file(&args.listen);
    }
    ExitCode::SUCCESS
}

/// Device and inode of the socket file, to recognise our own.
fn socket_identity(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}
