//! Opening the configured cards, keeping them attached, and the adapter
//! that lets the daemon's logic call them as [`CardPort`]s.
//!
//! A card can go away under a running daemon: it resets (its session with
//! us ends), its emulator process dies, or it drops so many completions
//! that the ring runs out of slots. Each card therefore has a supervisor
//! thread that brings it back: it attaches to the card again, and if the
//! emulator we started is no longer there, starts a new one first. The
//! command that met the failure gets `CKR_DEVICE_REMOVED` (card gone) or
//! `CKR_DEVICE_ERROR` (timeout); commands arriving during the recovery wait
//! up to [`RECOVERY_WAIT`] for it and then get `CKR_DEVICE_ERROR`; no
//! client ever hangs on a dead card.
//!
//! The supervisor, not a connection thread, starts replacement emulators:
//! the emulator's parent-death signal is tied to the thread that started
//! it, and the supervisor lives as long as the daemon.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pci_driver_shim::command::{CardInfo, CardRequest, CardResponse};
use pci_driver_shim::{Card, CardError, EmulatorProcess, SubmittedBatch};

use crate::card::{CardFailure, CardPort};
use crate::config::CardConfig;

/// How long a command waits for a card being recovered before it fails.
pub const RECOVERY_WAIT: Duration = Duration::from_secs(2);
/// How often the supervisor looks at an idle card, so that a card that died
/// between commands is back before the next one.
const SUPERVISOR_TICK: Duration = Duration::from_millis(500);
/// Back-off between failed attempts to bring a card back.
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// Where a card comes from, and so how to get it back.
enum Source {
    /// An emulator someone else runs, listening on this socket.
    Socket(PathBuf),
    /// An emulator this daemon started (and restarts when it dies).
    Spawned {
        exe: PathBuf,
        dir: PathBuf,
        /// The socket's file name inside `dir`.
        socket_name: String,
        process: Mutex<Option<EmulatorProcess>>,
    },
}

/// A card that is put back when it fails.
struct SupervisedCard {
    /// The attached card; `None` while the supervisor brings it back.
    card: RwLock<Option<Arc<Card>>>,
    /// Identity as last read (kept while the card is away).
    info: RwLock<CardInfo>,
    backend: String,
    source: Source,
    control: Mutex<Control>,
    /// Wakes the supervisor (recovery wanted, or stop).
    wake: Condvar,
    /// Wakes commands waiting for a recovery.
    recovered: Condvar,
}

#[derive(Default)]
struct Control {
    recovery_wanted: bool,
    stopping: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Flags and an optional process handle: always consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl CardPort for SupervisedCard {
    fn call(&self, request: &CardRequest) -> Result<CardResponse, CardFailure> {
        let card = self.attached()?;
        card.call(request).map_err(|e| self.failed(&card, e))
    }

    fn call_batch(&self, requests: &[CardRequest]) -> Vec<Result<CardResponse, CardFailure>> {
        if let [request] = requests {
            return vec![self.call(request)];
        }
        let started = self.submit_batch(requests);
        self.finish_batch(started, requests)
    }

    fn info(&self) -> CardInfo {
        self.info.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn backend(&self) -> String {
        self.backend.clone()
    }
}

/// A batch posted to one card, or why it could not be.
type StartedBatch = Result<(Arc<Card>, SubmittedBatch), CardFailure>;

impl SupervisedCard {
    /// The first half of [`CardPort::call_batch`], so that a batch can be
    /// posted to several cards before waiting on any.
    fn submit_batch(&self, requests: &[CardRequest]) -> StartedBatch {
        let card = self.attached()?;
        let batch = card.submit_batch(requests);
        Ok((card, batch))
    }

    fn finish_batch(
        &self,
        started: StartedBatch,
        requests: &[CardRequest],
    ) -> Vec<Result<CardResponse, CardFailure>> {
        match started {
            Err(failure) => requests.iter().map(|_| Err(failure)).collect(),
            Ok((card, batch)) => card
                .finish_batch(batch, requests)
                .into_iter()
                .map(|answer| answer.map_err(|e| self.failed(&card, e)))
                .collect(),
        }
    }

    /// Attached and not known to be gone.
    fn available(&self) -> bool {
        self.current().is_some_and(|card| !card.is_gone())
    }

    /// Logs a failed call and starts a recovery when the failure calls for
    /// one.
    fn failed(&self, card: &Arc<Card>, e: CardError) -> CardFailure {
        tracing::warn!(error = %e, backend = %self.backend, "card call failed");
        let failure = failure(e);
        match failure {
            CardFailure::Gone => self.want_recovery(card, "the card is gone"),
            CardFailure::Timeout if 2 * card.abandoned_slots() >= card.slot_count() => {
                // Each dropped completion keeps a slot reserved; a fresh
                // session with the card gives them all back.
                self.want_recovery(card, "too many completions lost")
            }
            _ => {}
        }
        failure
    }

    fn current(&self) -> Option<Arc<Card>> {
        self.card.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The attached card, waiting (bounded) if it is being recovered.
    fn attached(&self) -> Result<Arc<Card>, CardFailure> {
        match self.current() {
            Some(card) if !card.is_gone() => return Ok(card),
            Some(card) => self.want_recovery(&card, "the card is gone"),
            // The supervisor is at it already.
            None => {}
        }
        let deadline = Instant::now() + RECOVERY_WAIT;
        let mut control = lock(&self.control);
        loop {
            // Checked under the control lock, which the supervisor takes to
            // announce a new card: no wake-up is missed.
            if let Some(card) = self.current().filter(|c| !c.is_gone()) {
                return Ok(card);
            }
            let now = Instant::now();
            if now >= deadline || control.stopping {
                return Err(CardFailure::Recovering);
            }
            control = self
                .recovered
                .wait_timeout(control, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Asks the supervisor to recover `failed`, unless it has been replaced
    /// already (a command still running on the old attachment reports late).
    fn want_recovery(&self, failed: &Arc<Card>, why: &'static str) {
        let current = self.current();
        if !current.is_some_and(|c| Arc::ptr_eq(&c, failed)) {
            return;
        }
        let mut control = lock(&self.control);
        if !control.recovery_wanted {
            tracing::warn!(backend = %self.backend, why, "card recovery requested");
            control.recovery_wanted = true;
            self.wake.notify_all();
        }
    }

    /// The supervisor thread: waits for trouble and recovers the card.
    fn supervise(&self) {
        let mut control = lock(&self.control);
        loop {
            if control.stopping {
                return;
            }
            let gone = self.current().is_none_or(|c| c.is_gone());
            if !control.recovery_wanted && !gone {
                control = self
                    .wake
                    .wait_timeout(control, SUPERVISOR_TICK)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
                continue;
            }
            // Requests made from here on concern the card being replaced
            // (ignored, see `want_recovery`) or the new one.
            control.recovery_wanted = false;
            // Our side closes first: the card serves one host at a time.
            // Commands still in flight on the old attachment keep it until
            // their own deadline at most.
            let old = self.card.write().unwrap_or_else(|e| e.into_inner()).take();
            drop(control);
            drop(old);
            self.recover();
            control = lock(&self.control);
        }
    }

    /// Attaches to the card again (the old attachment is already dropped),
    /// retrying with back-off until it works or the daemon stops.
    fn recover(&self) {
        let started = Instant::now();
        let mut pause = RETRY_MIN;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            match self.reattach() {
                Ok(card) => {
                    let info = card.info().clone();
                    let previous = self.info();
                    if info.serial != previous.serial {
                        tracing::error!(
                            expected = %previous.serial,
                            found = %info.serial,
                            "a different card answered after recovery"
                        );
                    }
                    *self.info.write().unwrap_or_else(|e| e.into_inner()) = info;
                    *self.card.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(card));
                    let _control = lock(&self.control);
                    self.recovered.notify_all();
                    tracing::warn!(
                        backend = %self.backend,
                        attempts,
                        took_ms = started.elapsed().as_millis() as u64,
                        "card recovered"
                    );
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, backend = %self.backend, attempts, "card recovery failed; retrying");
                }
            }
            let control = lock(&self.control);
            if control.stopping {
                return;
            }
            let control = self
                .wake
                .wait_timeout(control, pause)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            if control.stopping {
                return;
            }
            pause = (pause * 2).min(RETRY_MAX);
        }
    }

    /// Attaches to the card again; an emulator we started that no longer
    /// listens is replaced by a new one first.
    fn reattach(&self) -> Result<Card, CardError> {
        match &self.source {
            Source::Socket(socket) => Card::open(pci_driver_shim::connect_emulator(socket)?),
            Source::Spawned {
                exe,
                dir,
                socket_name,
                process,
            } => {
                let mut process = lock(process);
                let alive = process.as_ref().map(|p| p.socket().to_path_buf());
                if let Some(socket) = alive {
                    match pci_driver_shim::connect_emulator(&socket) {
                        Ok(device) => return Card::open(device),
                        // Nobody listens: the emulator died.
                        Err(CardError::Connect { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                if let Some(mut dead) = process.take() {
                    tracing::warn!(pid = dead.id(), "card emulator is gone; starting a new one");
                    // Reaps it (or ends it, if it only stopped listening).
                    dead.kill();
                }
                let (new, device) = pci_driver_shim::spawn_emulator_on(exe, dir, socket_name)?;
                tracing::info!(pid = new.id(), "card emulator started");
                *process = Some(new);
                Card::open(device)
            }
        }
    }

    fn stop(&self) {
        lock(&self.control).stopping = true;
        self.wake.notify_all();
        self.recovered.notify_all();
    }
}

/// What the daemon needs to know about a card-layer error.
fn failure(e: CardError) -> CardFailure {
    match e {
        CardError::Fault(fault) => CardFailure::Fault(fault),
        CardError::Timeout { .. } => CardFailure::Timeout,
        CardError::Gone => CardFailure::Gone,
        CardError::UnexpectedResponse => CardFailure::UnexpectedResponse,
        CardError::Region(_)
        | CardError::RequestTooLarge { .. }
        | CardError::MalformedResponse { .. }
        | CardError::Os { .. }
        | CardError::Connect { .. }
        | CardError::Busy { .. }
        | CardError::BadHandshake { .. }
        | CardError::Spawn { .. }
        | CardError::EmulatorExited { .. }
        | CardError::NotReady { .. } => CardFailure::Transport,
    }
}

/// An opened card (or set of cards) and its supervisors; dropping it stops
/// the supervisors and the emulators the daemon started.
pub struct OpenedCard {
    pub port: Arc<dyn CardPort>,
    pub supervisors: Vec<Supervisor>,
}

/// The handle on a card's supervisor thread.
pub struct Supervisor {
    card: Arc<SupervisedCard>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.card.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if let Source::Spawned { process, .. } = &self.card.source {
            drop(lock(process).take());
        }
    }
}

/// Opens the card(s) of slot `index` as configured; `state_dir` is the
/// daemon's. Several emulator instances become one [`CardSet`].
pub fn open_card(
    index: usize,
    config: &CardConfig,
    state_dir: &Path,
) -> Result<OpenedCard, CardError> {
    let CardConfig::Emulator {
        state_dir: card_dir,
        socket,
        exe,
        instances,
    } = config;
    if let Some(socket) = socket {
        let card = Card::open(pci_driver_shim::connect_emulator(socket)?)?;
        let backend = format!("emulator at {}", socket.display());
        let (port, supervisor) = supervise(card, backend, Source::Socket(socket.clone()));
        return Ok(OpenedCard {
            port,
            supervisors: vec![supervisor],
        });
    }
    let dir = card_dir
        .clone()
        .unwrap_or_else(|| state_dir.join(format!("card{index}")));
    let exe = exe.clone().unwrap_or_else(pci_driver_shim::emulator_exe);
    let mut members = Vec::new();
    let mut supervisors = Vec::new();
    // One after the other: the first creates the shared master key.
    for instance in 0..instances.unwrap_or(1) {
        let socket_name = match instance {
            0 => "card.sock".to_string(),
            n => format!("card-{n}.sock"),
        };
        let (process, device) = pci_driver_shim::spawn_emulator_on(&exe, &dir, &socket_name)?;
        let card = Card::open(device)?;
        let source = Source::Spawned {
            exe: exe.clone(),
            dir: dir.clone(),
            socket_name,
            process: Mutex::new(Some(process)),
        };
        let (port, supervisor) = supervise(card, "emulator".to_string(), source);
        members.push(port);
        supervisors.push(supervisor);
    }
    let port: Arc<dyn CardPort> = if members.len() == 1 {
        members.remove(0)
    } else {
        Arc::new(CardSet::new(members))
    };
    Ok(OpenedCard { port, supervisors })
}

fn supervise(card: Card, backend: String, source: Source) -> (Arc<SupervisedCard>, Supervisor) {
    let supervised = Arc::new(SupervisedCard {
        info: RwLock::new(card.info().clone()),
        card: RwLock::new(Some(Arc::new(card))),
        backend,
        source,
        control: Mutex::new(Control::default()),
        wake: Condvar::new(),
        recovered: Condvar::new(),
    });
    let thread = {
        let supervised = Arc::clone(&supervised);
        std::thread::Builder::new()
            .name("card-supervisor".into())
            .spawn(move || supervised.supervise())
            .expect("spawning a thread")
    };
    let supervisor = Supervisor {
        card: Arc::clone(&supervised),
        thread: Some(thread),
    };
    (supervised, supervisor)
}

/// Several cards behind one slot, sharing their master key (so each can
/// use every key blob): a command goes to the least busy card, a batch is
/// split across the cards and runs on all of them at once. Cards being
/// recovered are left out while others are there.
pub struct CardSet {
    members: Vec<Arc<SupervisedCard>>,
    /// Commands each member is running for us.
    busy: Vec<AtomicUsize>,
    /// Rotates the choice among equally busy members.
    turn: AtomicUsize,
}

impl CardSet {
    fn new(members: Vec<Arc<SupervisedCard>>) -> CardSet {
        CardSet {
            busy: members.iter().map(|_| AtomicUsize::new(0)).collect(),
            members,
            turn: AtomicUsize::new(0),
        }
    }

    /// Member indices, least busy first; available members before the
    /// others (which only fail fast or wait for their recovery).
    fn by_load(&self) -> Vec<usize> {
        let n = self.members.len();
        let start = self.turn.fetch_add(1, Ordering::Relaxed);
        let mut order: Vec<usize> = (0..n).map(|i| (start + i) % n).collect();
        order.sort_by_key(|&i| {
            (
                !self.members[i].available(),
                self.busy[i].load(Ordering::Relaxed),
            )
        });
        order
    }
}

impl CardPort for CardSet {
    fn call(&self, request: &CardRequest) -> Result<CardResponse, CardFailure> {
        let member = self.by_load()[0];
        self.busy[member].fetch_add(1, Ordering::Relaxed);
        let answer = self.members[member].call(request);
        self.busy[member].fetch_sub(1, Ordering::Relaxed);
        answer
    }

    fn call_batch(&self, requests: &[CardRequest]) -> Vec<Result<CardResponse, CardFailure>> {
        let available = self.members.iter().filter(|m| m.available()).count();
        let shares = available.max(1).min(requests.len());
        if shares <= 1 {
            let member = self.by_load()[0];
            self.busy[member].fetch_add(requests.len(), Ordering::Relaxed);
            let answers = self.members[member].call_batch(requests);
            self.busy[member].fetch_sub(requests.len(), Ordering::Relaxed);
            return answers;
        }
        // Contiguous, nearly equal shares, so the answers concatenate in
        // request order.
        let order = self.by_load();
        let mut started = Vec::with_capacity(shares);
        let mut from = 0;
        for (k, &member) in order.iter().take(shares).enumerate() {
            let len = (requests.len() - from) / (shares - k);
            let share = &requests[from..from + len];
            self.busy[member].fetch_add(len, Ordering::Relaxed);
            started.push((member, share, self.members[member].submit_batch(share)));
            from += len;
        }
        let mut answers = Vec::with_capacity(requests.len());
        for (member, share, batch) in started {
            answers.extend(self.members[member].finish_batch(batch, share));
            self.busy[member].fetch_sub(share.len(), Ordering::Relaxed);
        }
        answers
    }

    fn info(&self) -> CardInfo {
        self.members[0].info()
    }

    fn backend(&self) -> String {
        format!("{} × {}", self.members.len(), self.members[0].backend())
    }
}
