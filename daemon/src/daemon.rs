//! Start-up, the accept loop and clean shutdown.
//!
//! SIGTERM and SIGINT are blocked in every thread (the mask is set before
//! any thread starts, and threads inherit it); one thread waits for them
//! with sigwait, then stops the accept loop. The main thread removes the
//! socket file and stops the card emulators it spawned.
//!
//! With `[tls] listen`, a second thread accepts TCP connections and serves
//! each on its own thread over mutual TLS (`crate::tls`): at most `[tls]
//! handshake_limit` in their handshake at once, and one shares the
//! connection limit with the Unix socket only once its certificate is
//! verified; with `[replication]`, the replicator starts before either
//! accepts.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use nix::sys::signal::{SigSet, SigmaskHow, Signal};

use crate::cards::{self, OpenedCard};
use crate::config::Config;
use crate::hsm::{Hsm, Slot};
use crate::replication::Replicator;
use crate::server::{self, Allowed, BindError, ReplicaService};

/// Why the daemon could not run.
#[derive(Debug)]
pub enum RunError {
    Signals(nix::Error),
    Card {
        index: usize,
        error: pci_driver_shim::CardError,
    },
    Store {
        index: usize,
        error: crate::error::HsmError,
    },
    Bind(BindError),
    Tls(crate::tls::TlsError),
    TlsBind(std::io::Error),
    Replication(redb::Error),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Signals(e) => write!(f, "cannot block signals: {e}"),
            RunError::Card { index, error } => write!(f, "card {index}: {error}"),
            RunError::Store { index, error } => write!(f, "token store of slot {index}: {error}"),
            RunError::Bind(e) => write!(f, "socket: {e}"),
            RunError::Tls(e) => write!(f, "tls: {e}"),
            RunError::TlsBind(e) => write!(f, "tls listen: {e}"),
            RunError::Replication(e) => write!(f, "replication state: {e}"),
        }
    }
}

impl std::error::Error for RunError {}

/// One place in the connection count, given back when dropped (also when
/// the connection thread panics or could not be started).
struct ConnectionSlot(Arc<AtomicUsize>);

impl ConnectionSlot {
    /// A place in `count` if fewer than `max` are taken.
    fn take(count: &Arc<AtomicUsize>, max: usize) -> Option<ConnectionSlot> {
        if count.fetch_add(1, Ordering::SeqCst) >= max {
            count.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(ConnectionSlot(count.clone()))
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The signals that end the daemon.
fn shutdown_signals() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set
}

/// Blocks the shutdown signals in the calling thread (and so in every
/// thread it starts). Call first thing in `main`.
pub fn block_shutdown_signals() -> Result<(), RunError> {
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&shutdown_signals()), None)
        .map_err(RunError::Signals)
}

/// Accepts TLS connections until the process ends (the thread is not
/// joined: it holds no state that needs an orderly end).
struct TlsAccept {
    hsm: Arc<Hsm>,
    server: Arc<rustls::ServerConfig>,
    replicator: Option<Arc<Replicator>>,
    connections: Arc<AtomicUsize>,
    limits: crate::config::Limits,
    handshake_limit: usize,
}

fn accept_tls(listener: std::net::TcpListener, accept: TlsAccept) {
    let TlsAccept {
        hsm,
        server,
        replicator,
        connections,
        limits,
        handshake_limit,
    } = accept;
    let handshaking = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let Ok(stream) = stream else {
            continue;
        };
        let Some(handshake) = ConnectionSlot::take(&handshaking, handshake_limit) else {
            tracing::warn!(
                max = handshake_limit,
                "handshake limit reached; closing a new TLS connection"
            );
            continue;
        };
        let (hsm, server, replicator) = (hsm.clone(), server.clone(), replicator.clone());
        let connections = connections.clone();
        let spawned = std::thread::Builder::new()
            .name("tls-connection".into())
            .spawn(move || {
                let verified =
                    crate::tls::handshake(stream, server, crate::tls::HANDSHAKE_DEADLINE);
                drop(handshake);
                let Some(verified) = verified else {
                    return;
                };
                let Some(_slot) = ConnectionSlot::take(&connections, limits.max_connections) else {
                    tracing::warn!(
                        max = limits.max_connections,
                        "connection limit reached; closing a verified TLS connection"
                    );
                    return;
                };
                let replica = replicator.as_deref().map(|r| r as &dyn ReplicaService);
                crate::tls::serve_verified(hsm, verified, replica, limits)
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start a connection thread");
        }
    }
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(config: Config) -> Result<(), RunError> {
    let mut supervisors = Vec::new();
    let mut slots = Vec::new();
    for (index, card_config) in config.cards.iter().enumerate() {
        let OpenedCard {
            port,
            supervisors: opened,
        } = cards::open_card(index, card_config, &config.state_dir)
            .map_err(|error| RunError::Card { index, error })?;
        supervisors.extend(opened);
        let info = port.info();
        tracing::info!(slot = index, serial = %info.serial, model = %info.model, backend = %port.backend(), emulated = info.emulated, "card opened");
        let db = config
            .state_dir
            .join(format!("slot-{index}"))
            .join("token.redb");
        let slot = Slot::open(port, &db).map_err(|error| RunError::Store { index, error })?;
        slots.push(slot);
    }
    let hsm = Arc::new(Hsm::new(config.pins, slots));
    let listener = server::bind(&config.socket, config.socket_mode).map_err(RunError::Bind)?;
    let allowed = Arc::new(Allowed {
        uids: config.allowed_uids.clone(),
        gids: config.allowed_gids.clone(),
    });

    let limits = config.limits;
    let connections = Arc::new(AtomicUsize::new(0));
    let tls = match &config.tls {
        Some(settings) => Some(crate::tls::Tls::load(settings).map_err(RunError::Tls)?),
        None => None,
    };
    let replicator = match (&config.replication, &tls) {
        (Some(settings), Some(tls)) => Some(
            Replicator::start(settings, tls.client.clone(), &hsm, &config.state_dir)
                .map_err(RunError::Replication)?,
        ),
        _ => None,
    };
    if let (Some(tls), Some(settings)) = (&tls, &config.tls) {
        if let Some(address) = &settings.listen {
            let listener = std::net::TcpListener::bind(address).map_err(RunError::TlsBind)?;
            tracing::info!(%address, "TLS listener ready");
            let accept = TlsAccept {
                hsm: hsm.clone(),
                server: tls.server.clone(),
                replicator,
                connections: connections.clone(),
                limits,
                handshake_limit: settings.handshake_limit,
            };
            std::thread::Builder::new()
                .name("tls-accept".into())
                .spawn(move || accept_tls(listener, accept))
                .expect("spawning a thread");
        }
    }
    let stopping = Arc::new(AtomicBool::new(false));
    let signals = {
        let stopping = stopping.clone();
        let listening = listener.as_raw_fd();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                let signal = shutdown_signals().wait();
                tracing::info!(?signal, "shutting down");
                stopping.store(true, Ordering::SeqCst);
                // Wakes the accept loop: a listening socket that is shut
                // down fails accept(). It works whatever became of the
                // socket's path; the loop joins this thread before it drops
                // the listener, so the descriptor is still ours here.
                let _ = nix::sys::socket::shutdown(listening, nix::sys::socket::Shutdown::Both);
            })
            .expect("spawning a thread")
    };
    tracing::info!(socket = %config.socket.display(), slots = config.cards.len(), "ready");

    for stream in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            break;
        }
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        // Counted here, before the thread exists, so that a burst of
        // connections cannot overshoot the limit.
        let Some(slot) = ConnectionSlot::take(&connections, limits.max_connections) else {
            tracing::warn!(
                max = limits.max_connections,
                "connection limit reached; closing a new connection"
            );
            continue;
        };
        let (hsm, allowed) = (hsm.clone(), allowed.clone());
        let spawned = std::thread::Builder::new()
            .name("connection".into())
            .spawn(move || {
                let _slot = slot;
                server::serve_connection(hsm, stream, &allowed, limits)
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start a connection thread");
        }
    }
    let _ = signals.join();
    drop(listener);
    if let Err(e) = std::fs::remove_file(&config.socket) {
        tracing::warn!(error = %e, "cannot remove the socket file");
    }
    // Every acknowledged change is already committed; the signing volume
    // counted since the last audit flush is written now. Stopping the card
    // supervisors and the emulators is all that is left.
    hsm.flush_audit();
    drop(supervisors);
    tracing::info!("stopped");
    Ok(())
}
