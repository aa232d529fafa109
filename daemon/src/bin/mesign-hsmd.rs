//! `mesign-hsmd`: the MeSign HSM daemon (runs in the foreground).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use mesign_hsmd::config::{self, USAGE};
use mesign_hsmd::daemon;

fn main() -> ExitCode {
    // Before any thread exists, so that every thread inherits the mask.
    if let Err(e) = daemon::block_shutdown_signals() {
        eprintln!("mesign-hsmd: {e}");
        return ExitCode::FAILURE;
    }
    let dump_refused = forbid_dumps();
    let config = match load() {
        Ok(Some(c)) => c,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("mesign-hsmd: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    if let Err(errno) = dump_refused {
        tracing::warn!(%errno, "cannot make the process non-dumpable");
    }
    match daemon::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "mesign-hsmd failed");
            eprintln!("mesign-hsmd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The daemon sees PINs in clear (briefly, while it hashes them), PIN
/// hashes and every client's session state: no core file, no ptrace by
/// other users of the same uid, /proc/<pid>/mem and environ owned by root.
/// Before the card process is started, which then inherits the core limit.
fn forbid_dumps() -> nix::Result<()> {
    use nix::sys::resource::{setrlimit, Resource};
    nix::sys::prctl::set_dumpable(false)?;
    setrlimit(Resource::RLIMIT_CORE, 0, 0)
}

fn load() -> Result<Option<config::Config>, config::ConfigError> {
    let flags = config::parse_flags(std::env::args_os().skip(1))?;
    if flags.help {
        return Ok(None);
    }
    let file = match &flags.config {
        Some(path) => config::read_file(path)?,
        None => config::FileConfig::default(),
    };
    config::resolve(file, &flags, nix::unistd::getuid().as_raw()).map(Some)
}
