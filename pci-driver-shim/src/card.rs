//! The host side of the command ring: what the daemon calls.
//!
//! [`Card::call`] is blocking and thread-safe. A caller takes a free data
//! slot (waiting if all are busy), writes its CBOR-encoded request there,
//! appends the slot index to the submission ring and rings the doorbell,
//! unless a card worker is polling the ring anyway (event suppression, see
//! [`crate::region`]). Concurrent callers batch naturally: the card drains
//! every entry present when it wakes, however many doorbell writes
//! announced them.
//!
//! The callers collect the answers themselves, without a thread in between:
//! a thread hop costs more than an ECDSA signature on a loaded machine. One
//! waiting caller at a time is the *reaper*: it drains the completion ring,
//! checks each entry against the slots actually in flight, copies answers
//! out of shared memory and hands them to their callers, and blocks on the
//! interrupt in between; optionally ([`SPIN_ENV`]) it first polls the ring
//! for a few microseconds, and then the card need not raise the interrupt. The other
//! callers sleep on their own slot; when the reaper's own answer has come
//! it leaves and wakes one of them to take over. A watchdog thread looks at
//! an idle card now and then: it notices a card that died between commands
//! and collects completions whose interrupt got lost.
//!
//! A call that outlives its deadline fails with [`CardError::Timeout`]; its
//! slot stays reserved until the card completes it (the card may still write
//! there). A card that dies fails every call with [`CardError::Gone`];
//! [`Card::reopen`] attaches to it again once it is back (after a reset).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::command::{CardInfo, CardRequest, CardResponse, CardResult, KeySpec};
use crate::device::Device;
use crate::error::CardError;
use crate::region::{spin_budget, RegionError};

/// Deadline for the slow commands: RSA key generation (4096-bit primes can
/// take a while) and the domain commands, which run PBKDF2 with 600,000
/// iterations once per custodian share.
pub const SLOW_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Deadline for every other command.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Overrides [`DEFAULT_TIMEOUT`] (milliseconds), read when a card is opened:
/// tests of a card that drops completions need not wait ten seconds.
pub const TIMEOUT_ENV: &str = "MESIGN_CARD_TIMEOUT_MS";
/// How long (microseconds, at most 1000) a waiting caller polls the
/// completion ring before it blocks on the interrupt, and a card worker
/// (the emulator's, which inherits the daemon's environment) polls the
/// submission ring before it blocks on the doorbell. Unset or 0: never.
pub const SPIN_ENV: &str = "MESIGN_CARD_SPIN_US";
/// Longest a reaper blocks before re-checking the ring on its own, and how
/// often the watchdog looks at an idle card: the safety net against a lost
/// interrupt or hand-over.
const REAPER_TICK: Duration = Duration::from_millis(200);

/// An opened card.
pub struct Card {
    shared: Arc<Shared>,
    watchdog: Option<JoinHandle<()>>,
    info: CardInfo,
    default_timeout: Duration,
}

/// A batch of commands on their way through one card (see
/// [`Card::submit_batch`]).
#[must_use = "a submitted batch holds ring slots until it is finished"]
pub struct SubmittedBatch {
    deadline: Instant,
    timeout: Duration,
    answers: Vec<Option<Result<CardResponse, CardError>>>,
    /// (command index, slot) of the commands in the ring.
    posted: Vec<(usize, u32)>,
    /// The first command not posted yet.
    next: usize,
}

pub(crate) struct Shared {
    device: Box<dyn Device>,
    slots: Vec<Slot>,
    free: Mutex<Vec<u32>>,
    slot_freed: Condvar,
    /// Serializes the submission ring's producer side.
    submit: Mutex<()>,
    /// Held by the one thread draining the completion ring: a waiting
    /// caller, or the watchdog for a moment.
    reaper: Mutex<()>,
    /// Callers asleep on their slot while another reaps; the reaper wakes
    /// one of them to take over when it leaves.
    standby: Mutex<Vec<u32>>,
    /// Callers waiting for an answer.
    waiting: AtomicU32,
    gone: AtomicBool,
    closing: Mutex<bool>,
    closed: Condvar,
    /// Threads of host and card that may busy-poll at once (see
    /// [`crate::region::SharedRegion::try_spin`]).
    max_spinners: u32,
    /// [`REAPER_TICK`]; tests make it long so a lost wake-up shows.
    tick: Duration,
    /// How long a reaper polls before it blocks on the interrupt.
    spin: Duration,
}

struct Slot {
    state: Mutex<SlotState>,
    done: Condvar,
}

#[derive(Debug)]
enum SlotState {
    Free,
    /// Submitted; the caller is waiting.
    InFlight,
    /// Completed; the raw answer awaits its caller.
    Done(Result<Vec<u8>, RegionError>),
    /// The caller gave up (timeout); the slot returns to the free list when
    /// the card finally completes it, never before, because the card may
    /// still write into it.
    Abandoned,
}

/// Why the reaper ignored a completion entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CompletionProblem {
    SlotOutOfRange { slot: u32 },
    NotInFlight { slot: u32 },
}

impl Card {
    /// Starts the watchdog on `device` and asks the card who it is.
    pub fn open(device: Box<dyn Device>) -> Result<Card, CardError> {
        let shared = Arc::new(Shared::new(device));
        let watchdog_shared = Arc::clone(&shared);
        let watchdog = std::thread::Builder::new()
            .name("card-watchdog".into())
            .spawn(move || watchdog_shared.watch())
            .map_err(|e| CardError::Os {
                op: "spawn watchdog",
                errno: nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0)),
            })?;
        let mut card = Card {
            shared,
            watchdog: Some(watchdog),
            info: CardInfo {
                serial: String::new(),
                model: String::new(),
                hardware_version: (0, 0),
                firmware_version: (0, 0),
                operational: false,
                emulated: false,
            },
            default_timeout: default_timeout_from_env(),
        };
        match card.call(&CardRequest::Info)? {
            CardResponse::Info(info) => card.info = info,
            _ => return Err(CardError::UnexpectedResponse),
        }
        tracing::info!(
            serial = %card.info.serial,
            model = %card.info.model,
            operational = card.info.operational,
            emulated = card.info.emulated,
            device = %card.shared.device.describe(),
            "card opened"
        );
        Ok(card)
    }

    /// The card's identity as reported when it was opened.
    pub fn info(&self) -> &CardInfo {
        &self.info
    }

    /// The backend's description.
    pub fn describe(&self) -> String {
        self.shared.device.describe()
    }

    /// True once the card was found dead: every call fails with
    /// [`CardError::Gone`] until the caller reopens it.
    pub fn is_gone(&self) -> bool {
        self.shared.gone.load(Ordering::Acquire)
    }

    /// Attaches to the same card again (after it reset or its process was
    /// restarted on the same socket) and returns the new handle; this one
    /// keeps failing. Backends that cannot reattach answer
    /// [`CardError::Gone`].
    pub fn reopen(&self) -> Result<Card, CardError> {
        Card::open(self.shared.device.reconnect()?)
    }

    /// Number of data slots in the ring.
    pub fn slot_count(&self) -> usize {
        self.shared.slots.len()
    }

    /// Slots whose callers gave up (timed out) and whose completion has not
    /// come: they stay reserved until it does, so a card that drops
    /// completions runs out of slots unless the host resets it.
    pub fn abandoned_slots(&self) -> usize {
        self.shared
            .slots
            .iter()
            .filter(|cell| matches!(*lock(&cell.state), SlotState::Abandoned))
            .count()
    }

    /// Runs one command with the default deadline for its kind.
    pub fn call(&self, request: &CardRequest) -> Result<CardResponse, CardError> {
        self.call_with_timeout(request, self.timeout_for(request))
    }

    /// Runs one command; fails with [`CardError::Timeout`] after `timeout`.
    pub fn call_with_timeout(
        &self,
        request: &CardRequest,
        timeout: Duration,
    ) -> Result<CardResponse, CardError> {
        let deadline = Instant::now() + timeout;
        let encoded = self.encode(request)?;
        let slot = self.shared.take_slot(deadline, timeout)?;
        let raw = self
            .shared
            .submit_and_wait(slot, &encoded, deadline, timeout)?;
        decode_answer(&raw, slot)
    }

    /// Runs several commands at once: all of them are posted to the ring
    /// before one doorbell, so the card's workers take them in one wake-up,
    /// and their answers come back in the order of `requests`. Each command
    /// succeeds or fails on its own.
    pub fn call_batch(&self, requests: &[CardRequest]) -> Vec<Result<CardResponse, CardError>> {
        if let [request] = requests {
            return vec![self.call(request)];
        }
        let submitted = self.submit_batch(requests);
        self.finish_batch(submitted, requests)
    }

    /// The first half of [`Card::call_batch`]: posts what the free slots
    /// allow (at least the first command, waiting for a slot if need be)
    /// and rings the doorbell. A caller can submit to several cards before
    /// it waits on any of them with [`Card::finish_batch`].
    pub fn submit_batch(&self, requests: &[CardRequest]) -> SubmittedBatch {
        let timeout = requests
            .iter()
            .map(|r| self.timeout_for(r))
            .max()
            .unwrap_or(self.default_timeout);
        let mut batch = SubmittedBatch {
            deadline: Instant::now() + timeout,
            timeout,
            answers: requests.iter().map(|_| None).collect(),
            posted: Vec::new(),
            next: 0,
        };
        self.post_part(requests, &mut batch);
        batch
    }

    /// Waits for the answers of a batch from [`Card::submit_batch`] with
    /// the same `requests`. Commands that found no free slot go in further
    /// parts; a part never waits for a slot while it holds others, so
    /// concurrent batches cannot starve each other.
    pub fn finish_batch(
        &self,
        mut batch: SubmittedBatch,
        requests: &[CardRequest],
    ) -> Vec<Result<CardResponse, CardError>> {
        loop {
            for (index, slot) in std::mem::take(&mut batch.posted) {
                let answer = self
                    .shared
                    .wait_answer(slot, batch.deadline, batch.timeout)
                    .and_then(|raw| decode_answer(&raw, slot));
                batch.answers[index] = Some(answer);
            }
            if batch.next >= requests.len() {
                break;
            }
            self.post_part(requests, &mut batch);
        }
        batch
            .answers
            .into_iter()
            .map(|a| a.expect("every command of the batch was answered or failed"))
            .collect()
    }

    /// Posts commands from `batch.next` on while slots are free, then rings.
    fn post_part(&self, requests: &[CardRequest], batch: &mut SubmittedBatch) {
        while let Some(request) = requests.get(batch.next) {
            let slot = if batch.posted.is_empty() {
                self.shared.take_slot(batch.deadline, batch.timeout)
            } else {
                match self.shared.try_take_slot() {
                    Some(slot) => Ok(slot),
                    None => break,
                }
            };
            let outcome = slot.and_then(|slot| {
                let encoded = self.encode(request).inspect_err(|_| {
                    self.shared.release_slot(slot);
                })?;
                self.shared.post(slot, &encoded).map(|()| slot)
            });
            match outcome {
                Ok(slot) => batch.posted.push((batch.next, slot)),
                Err(e) => batch.answers[batch.next] = Some(Err(e)),
            }
            batch.next += 1;
        }
        if !batch.posted.is_empty() {
            self.shared.ring_doorbell();
        }
    }

    /// The command's bytes as they go into a slot.
    fn encode(&self, request: &CardRequest) -> Result<Vec<u8>, CardError> {
        let encoded = minicbor::to_vec(request).expect("encoding into a Vec is infallible");
        let capacity = self.shared.device.region().slot_capacity();
        if encoded.len() > capacity {
            return Err(CardError::RequestTooLarge {
                len: encoded.len(),
                capacity,
            });
        }
        Ok(encoded)
    }

    fn timeout_for(&self, request: &CardRequest) -> Duration {
        match request {
            CardRequest::GenerateKeyPair { policy }
                if matches!(policy.spec, KeySpec::Rsa { .. }) =>
            {
                SLOW_COMMAND_TIMEOUT.max(self.default_timeout)
            }
            CardRequest::DomainCreate { .. } | CardRequest::DomainJoin { .. } => {
                SLOW_COMMAND_TIMEOUT.max(self.default_timeout)
            }
            _ => self.default_timeout,
        }
    }
}

/// Turns the bytes a card wrote into a slot into the caller's answer. The
/// bytes come from the card and are not trusted: anything that does not
/// decode is [`CardError::MalformedResponse`].
pub fn decode_answer(raw: &[u8], slot: u32) -> Result<CardResponse, CardError> {
    match minicbor::decode::<CardResult>(raw) {
        Ok(CardResult::Ok(response)) => Ok(response),
        Ok(CardResult::Err(fault)) => Err(CardError::Fault(fault)),
        Err(_) => Err(CardError::MalformedResponse { slot }),
    }
}

/// [`DEFAULT_TIMEOUT`], or what [`TIMEOUT_ENV`] says when it holds a
/// positive number of milliseconds.
fn default_timeout_from_env() -> Duration {
    let configured = std::env::var(TIMEOUT_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&ms| ms > 0);
    match configured {
        Some(ms) => {
            tracing::info!(ms, "card command deadline set by {TIMEOUT_ENV}");
            Duration::from_millis(ms)
        }
        None => DEFAULT_TIMEOUT,
    }
}

impl Drop for Card {
    fn drop(&mut self) {
        *lock(&self.shared.closing) = true;
        self.shared.closed.notify_all();
        if let Some(watchdog) = self.watchdog.take() {
            let _ = watchdog.join();
        }
    }
}

impl std::fmt::Debug for Card {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Card")
            .field("device", &self.shared.device.describe())
            .field("info", &self.info)
            .finish()
    }
}

/// What [`SPIN_ENV`] says (microseconds), or no polling at all.
///
/// Polling saves the wake-up when the answer comes within the window and
/// an idle core is there to poll on. On the shared 2-core machine this was
/// measured on, the cores were never idle, and polling (by the reaper, by
/// the card's workers, or both; `spin_loop` or yielding) lost throughput
/// at 1 and 4 client threads, so it is off unless configured.
pub fn spin_from_env() -> Duration {
    std::env::var(SPIN_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::ZERO, |us| Duration::from_micros(us.min(1000)))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking holder cannot leave these small state machines
    // half-updated in a way later users would misread.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    pub(crate) fn new(device: Box<dyn Device>) -> Shared {
        let slot_count = device.region().slot_count();
        Shared {
            slots: (0..slot_count)
                .map(|_| Slot {
                    state: Mutex::new(SlotState::Free),
                    done: Condvar::new(),
                })
                .collect(),
            // Popped from the back: hand out low slots first.
            free: Mutex::new((0..slot_count).rev().collect()),
            slot_freed: Condvar::new(),
            submit: Mutex::new(()),
            reaper: Mutex::new(()),
            standby: Mutex::new(Vec::with_capacity(slot_count as usize)),
            waiting: AtomicU32::new(0),
            gone: AtomicBool::new(false),
            closing: Mutex::new(false),
            closed: Condvar::new(),
            max_spinners: spin_budget(),
            tick: REAPER_TICK,
            spin: spin_from_env(),
            device,
        }
    }

    pub(crate) fn take_slot(&self, deadline: Instant, timeout: Duration) -> Result<u32, CardError> {
        let mut free = lock(&self.free);
        loop {
            if self.gone.load(Ordering::Acquire) {
                return Err(CardError::Gone);
            }
            if let Some(slot) = free.pop() {
                return Ok(slot);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(CardError::Timeout { after: timeout });
            }
            free = self
                .slot_freed
                .wait_timeout(free, deadline - now)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }

    /// Panics when the slot bookkeeping is inconsistent: a slot listed free
    /// twice, or listed free while not in the free state. Whatever the card
    /// writes into the region must never get us there.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn assert_consistent(&self) {
        let free = lock(&self.free).clone();
        let mut seen = vec![false; self.slots.len()];
        for &slot in &free {
            assert!(!seen[slot as usize], "slot {slot} listed free twice");
            seen[slot as usize] = true;
            assert!(
                matches!(*lock(&self.slots[slot as usize].state), SlotState::Free),
                "slot {slot} listed free while in use"
            );
        }
    }

    /// The finished answer in `slot`, if the reaper delivered one (the
    /// caller's side of [`Shared::wait_answer`] without blocking).
    #[cfg(feature = "fuzzing")]
    pub(crate) fn take_answer(&self, slot: u32) -> Option<Result<Vec<u8>, CardError>> {
        let cell = self.slots.get(slot as usize)?;
        let mut state = lock(&cell.state);
        if !matches!(*state, SlotState::Done(_)) {
            return None;
        }
        let SlotState::Done(raw) = std::mem::replace(&mut *state, SlotState::Free) else {
            unreachable!("checked just above")
        };
        drop(state);
        self.release_slot(slot);
        Some(raw.map_err(CardError::from))
    }

    fn release_slot(&self, slot: u32) {
        *lock(&self.slots[slot as usize].state) = SlotState::Free;
        lock(&self.free).push(slot);
        self.slot_freed.notify_one();
    }

    fn submit_and_wait(
        &self,
        slot: u32,
        encoded: &[u8],
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Vec<u8>, CardError> {
        self.submit(slot, encoded)?;
        self.wait_answer(slot, deadline, timeout)
    }

    /// A free slot if there is one now.
    fn try_take_slot(&self) -> Option<u32> {
        if self.gone.load(Ordering::Acquire) {
            return None;
        }
        lock(&self.free).pop()
    }

    /// Writes the request into `slot` (taken with [`Shared::take_slot`]),
    /// posts it and rings the doorbell; on failure the slot is free again.
    pub(crate) fn submit(&self, slot: u32, encoded: &[u8]) -> Result<(), CardError> {
        self.post(slot, encoded)?;
        self.ring_doorbell();
        Ok(())
    }

    /// Rings the doorbell unless a card worker polls the ring anyway.
    fn ring_doorbell(&self) {
        if self.device.region().submissions().needs_signal() {
            if let Err(e) = self.device.ring_doorbell() {
                // The entries are in the ring; the card may still pick them up.
                tracing::warn!(error = %e, "doorbell write failed");
            }
        }
    }

    /// [`Shared::submit`] without the doorbell.
    fn post(&self, slot: u32, encoded: &[u8]) -> Result<(), CardError> {
        let region = self.device.region();
        if let Err(e) = region.write_request(slot, encoded) {
            self.release_slot(slot);
            return Err(e.into());
        }
        let cell = &self.slots[slot as usize];
        *lock(&cell.state) = SlotState::InFlight;
        let pushed = {
            let _producer = lock(&self.submit);
            region.submissions().push(slot)
        };
        if let Err(e) = pushed {
            // The ring holds at most one entry per slot we own, so this means
            // the card corrupted it.
            self.release_slot(slot);
            return Err(e.into());
        }
        Ok(())
    }

    /// Waits for the answer to the request in `slot`, reaping for everyone
    /// while no other caller does; gives up (leaving the slot abandoned) at
    /// `deadline` or when the card is gone.
    pub(crate) fn wait_answer(
        &self,
        slot: u32,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Vec<u8>, CardError> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let answer = self.wait_answer_counted(slot, deadline, timeout);
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        answer
    }

    fn wait_answer_counted(
        &self,
        slot: u32,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Vec<u8>, CardError> {
        let cell = &self.slots[slot as usize];
        loop {
            let mut state = lock(&cell.state);
            if matches!(*state, SlotState::Done(_)) {
                let SlotState::Done(raw) = std::mem::replace(&mut *state, SlotState::Free) else {
                    unreachable!("checked just above")
                };
                drop(state);
                self.release_slot(slot);
                return raw.map_err(CardError::from);
            }
            if self.gone.load(Ordering::Acquire) {
                *state = SlotState::Abandoned;
                return Err(CardError::Gone);
            }
            let now = Instant::now();
            if now >= deadline {
                *state = SlotState::Abandoned;
                return Err(CardError::Timeout { after: timeout });
            }
            // On standby before trying for the reaper's role: a reaper that
            // leaves after our try finds us there (see `hand_over`).
            lock(&self.standby).push(slot);
            match self.try_reaper() {
                Some(reaper) => {
                    drop(state);
                    self.leave_standby(slot);
                    self.reap_until(slot, deadline);
                    drop(reaper);
                    self.hand_over();
                }
                None => {
                    // Woken with our answer, to take over, or at the tick.
                    let nap = (deadline - now).min(self.tick);
                    drop(
                        cell.done
                            .wait_timeout(state, nap)
                            .unwrap_or_else(|poisoned| poisoned.into_inner()),
                    );
                    self.leave_standby(slot);
                }
            }
        }
    }

    /// The reaper's role, unless another thread has it.
    fn try_reaper(&self) -> Option<MutexGuard<'_, ()>> {
        match self.reaper.try_lock() {
            Ok(reaper) => Some(reaper),
            // The role guards no data: a reaper that panicked left nothing
            // half-done.
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    fn leave_standby(&self, slot: u32) {
        lock(&self.standby).retain(|&waiting| waiting != slot);
    }

    /// Wakes one caller on standby whose answer has not come, to reap in
    /// the place of the one that just left.
    fn hand_over(&self) {
        loop {
            let Some(next) = lock(&self.standby).pop() else {
                return;
            };
            let cell = &self.slots[next as usize];
            // Under its lock the caller is either still before its wait (and
            // will find the reaper's role free) or inside it.
            let state = lock(&cell.state);
            if matches!(*state, SlotState::InFlight) {
                cell.done.notify_one();
                return;
            }
        }
    }

    /// Drains completions until the answer for `slot` is in, the card is
    /// gone or `deadline` passes. The caller holds the reaper's role.
    fn reap_until(&self, slot: u32, deadline: Instant) {
        // The previous reaper may have delivered our answer as it left.
        if !matches!(*lock(&self.slots[slot as usize].state), SlotState::InFlight) {
            return;
        }
        if self.poll_completions(slot, deadline) {
            return;
        }
        loop {
            match self.drain(Some(slot)) {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(error = %e, "completion ring corrupt; giving up on the card");
                    self.mark_gone();
                    return;
                }
            }
            let now = Instant::now();
            if now >= deadline || self.gone.load(Ordering::Acquire) {
                return;
            }
            if let Err(e) = self.device.wait_interrupt((deadline - now).min(self.tick)) {
                if !matches!(e, CardError::Gone) {
                    tracing::error!(error = %e, "waiting for the card interrupt failed");
                }
                // Answers the card posted before it died are still good.
                let _ = self.drain(Some(slot));
                self.mark_gone();
                return;
            }
        }
    }

    /// Polls the completion ring for at most `spin` (see [`spin_from_env`]),
    /// if the spin budget allows; true when the answer for `slot` came
    /// meanwhile.
    fn poll_completions(&self, slot: u32, deadline: Instant) -> bool {
        if self.spin.is_zero() {
            return false;
        }
        // With other callers about, the cores are busy with their commands
        // (on the card, and in their clients when the card is an emulator):
        // spinning would take a core from work, not from idleness.
        if self.waiting.load(Ordering::Relaxed) > 1 {
            return false;
        }
        let region = self.device.region();
        let Some(_permit) = region.try_spin(self.max_spinners) else {
            return false;
        };
        let completions = region.completions();
        completions.start_polling();
        let until = (Instant::now() + self.spin).min(deadline);
        let mut answered = false;
        loop {
            if completions.pending() != Ok(0) {
                // Errors are left to the blocking path, which gives up.
                match self.drain(Some(slot)) {
                    Ok(true) => answered = true,
                    Ok(false) => {}
                    Err(_) => break,
                }
            }
            if answered || Instant::now() >= until {
                break;
            }
            // Yielding rather than `spin_loop`: a thread woken on this core
            // (the card worker, when the card is an emulator) runs at once.
            std::thread::yield_now();
        }
        completions.stop_polling();
        answered
    }

    /// The watchdog: every [`REAPER_TICK`], unless a caller is reaping
    /// already, checks that the card is alive and drains what completed
    /// without an interrupt. Ends when the card is closed or gone.
    fn watch(&self) {
        loop {
            {
                let closing = lock(&self.closing);
                let (closing, _) = self
                    .closed
                    .wait_timeout_while(closing, self.tick, |closing| !*closing)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                if *closing {
                    return;
                }
            }
            if self.gone.load(Ordering::Acquire) {
                return;
            }
            self.look();
        }
    }

    /// One look by the watchdog.
    fn look(&self) {
        let Some(reaper) = self.try_reaper() else {
            return;
        };
        let alive = self.device.check_alive();
        let drained = self.drain(None);
        if let Err(e) = &drained {
            tracing::error!(error = %e, "completion ring corrupt; giving up on the card");
        }
        if alive.is_err() || drained.is_err() {
            self.mark_gone();
        }
        drop(reaper);
        self.hand_over();
    }

    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn drain_completions(&self) -> Result<(), RegionError> {
        self.drain(None).map(drop)
    }

    /// Hands every posted completion to its caller; true when one of them
    /// was for `mine`.
    fn drain(&self, mine: Option<u32>) -> Result<bool, RegionError> {
        let region = self.device.region();
        let mut found = false;
        while let Some(slot) = region.completions().pop()? {
            match self.complete(slot) {
                Ok(()) => found |= mine == Some(slot),
                Err(problem) => {
                    tracing::warn!(?problem, "ignoring a bad completion entry from the card")
                }
            }
        }
        Ok(found)
    }

    /// Accepts one completion entry if it names a slot that is in flight.
    fn complete(&self, slot: u32) -> Result<(), CompletionProblem> {
        let cell = self
            .slots
            .get(slot as usize)
            .ok_or(CompletionProblem::SlotOutOfRange { slot })?;
        let mut state = lock(&cell.state);
        match *state {
            SlotState::InFlight => {
                *state = SlotState::Done(self.device.region().read_response(slot));
                cell.done.notify_one();
                Ok(())
            }
            SlotState::Abandoned => {
                drop(state);
                self.release_slot(slot);
                Ok(())
            }
            SlotState::Free | SlotState::Done(_) => Err(CompletionProblem::NotInFlight { slot }),
        }
    }

    pub(crate) fn mark_gone(&self) {
        self.gone.store(true, Ordering::Release);
        for cell in &self.slots {
            // Take the lock so a caller between its check and its wait does
            // not miss the notification.
            let _state = lock(&cell.state);
            cell.done.notify_all();
        }
        let _free = lock(&self.free);
        self.slot_freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    use crate::eventfd::EventLine;
    use crate::region::SharedRegion;

    /// A device whose "card" is the test itself.
    struct LoopbackDevice {
        region: SharedRegion,
        interrupt: EventLine,
        doorbell: EventLine,
    }

    impl Device for LoopbackDevice {
        fn region(&self) -> &SharedRegion {
            &self.region
        }
        fn ring_doorbell(&self) -> Result<(), CardError> {
            self.doorbell.signal()
        }
        fn wait_interrupt(&self, timeout: Duration) -> Result<bool, CardError> {
            self.interrupt.wait(timeout)
        }
        fn describe(&self) -> String {
            "loopback".into()
        }
    }

    fn shared() -> Arc<Shared> {
        let device = LoopbackDevice {
            region: SharedRegion::create(4, 4096).unwrap(),
            interrupt: EventLine::new().unwrap(),
            doorbell: EventLine::new().unwrap(),
        };
        Arc::new(Shared::new(Box::new(device)))
    }

    /// The card's side of a loopback device: its own view of the region
    /// and its ends of the doorbell and interrupt.
    struct LoopbackCard {
        region: SharedRegion,
        doorbell: EventLine,
        interrupt: EventLine,
    }

    /// A host with `slots` slots whose waits never time out on their own
    /// (a lost wake-up shows as a failed call) and a card for the test.
    fn host_and_card(slots: u32, max_spinners: u32) -> (Arc<Shared>, LoopbackCard) {
        let region = SharedRegion::create(slots, 4096).unwrap();
        let doorbell = EventLine::new().unwrap();
        let interrupt = EventLine::new().unwrap();
        let card = LoopbackCard {
            region: SharedRegion::attach(region.fd().try_clone_to_owned().unwrap()).unwrap(),
            doorbell: EventLine::from_fd(doorbell.as_fd().try_clone_to_owned().unwrap()),
            interrupt: EventLine::from_fd(interrupt.as_fd().try_clone_to_owned().unwrap()),
        };
        let device = LoopbackDevice {
            region,
            interrupt,
            doorbell,
        };
        let mut shared = Shared::new(Box::new(device));
        shared.tick = Duration::from_secs(600);
        shared.max_spinners = max_spinners;
        (Arc::new(shared), card)
    }

    impl LoopbackCard {
        /// Echoes every request, newest first, raising the interrupt only
        /// when no host thread polls the completion ring.
        fn serve(&self, stop: &AtomicBool) {
            while !stop.load(Ordering::Acquire) {
                let _ = self.doorbell.wait(Duration::from_millis(5));
                let mut batch = Vec::new();
                while let Some(slot) = self.region.submissions().pop().unwrap() {
                    batch.push(slot);
                }
                for slot in batch.into_iter().rev() {
                    let request = self.region.read_request(slot).unwrap();
                    self.region.write_response(slot, &request).unwrap();
                    self.region.completions().push(slot).unwrap();
                    if self.region.completions().needs_signal() {
                        self.interrupt.signal().unwrap();
                    }
                }
            }
        }
    }

    /// Six callers on four slots, answers out of order: every caller gets
    /// its own answer, with reaping passed from caller to caller, spinning
    /// or not. The waits have no tick, so a lost interrupt or hand-over
    /// makes a call time out.
    #[test]
    fn callers_reap_for_each_other_without_lost_wake_ups() {
        for max_spinners in [0, 8] {
            let (host, card) = host_and_card(4, max_spinners);
            let mut host = Arc::into_inner(host).unwrap();
            host.spin = Duration::from_micros(40);
            let host = Arc::new(host);
            let stop = AtomicBool::new(false);
            std::thread::scope(|scope| {
                scope.spawn(|| card.serve(&stop));
                let callers: Vec<_> = (0..6u8)
                    .map(|thread| {
                        let host = &host;
                        scope.spawn(move || {
                            for i in 0..300u16 {
                                let timeout = Duration::from_secs(5);
                                let deadline = Instant::now() + timeout;
                                let slot = host.take_slot(deadline, timeout).unwrap();
                                let payload = [&[thread][..], &i.to_le_bytes()].concat();
                                let answer = host
                                    .submit_and_wait(slot, &payload, deadline, timeout)
                                    .unwrap_or_else(|e| {
                                        panic!("caller {thread} call {i} (spinners {max_spinners}): {e}")
                                    });
                                assert_eq!(answer, payload);
                            }
                        })
                    })
                    .collect();
                for caller in callers {
                    caller.join().unwrap();
                }
                stop.store(true, Ordering::Release);
            });
            host.assert_consistent();
            assert_eq!(lock(&host.free).len(), 4);
            assert!(lock(&host.standby).is_empty());
            assert_eq!(host.waiting.load(Ordering::Relaxed), 0);
        }
    }

    /// A completion posted without an interrupt still reaches its caller:
    /// the reaper re-checks the ring at every tick.
    #[test]
    fn a_lost_interrupt_costs_a_tick_not_the_answer() {
        let (host, card) = host_and_card(4, 0);
        let mut host = Arc::into_inner(host).unwrap();
        host.tick = Duration::from_millis(20);
        let timeout = Duration::from_secs(10);
        let deadline = Instant::now() + timeout;
        let slot = host.take_slot(deadline, timeout).unwrap();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let deadline = Instant::now() + Duration::from_secs(5);
                let slot = loop {
                    if let Some(slot) = card.region.submissions().pop().unwrap() {
                        break slot;
                    }
                    assert!(Instant::now() < deadline, "nothing submitted");
                    std::thread::yield_now();
                };
                card.region.write_response(slot, b"quiet").unwrap();
                card.region.completions().push(slot).unwrap();
            });
            let answer = host.submit_and_wait(slot, b"x", deadline, timeout).unwrap();
            assert_eq!(answer, b"quiet");
        });
    }

    /// The doorbell is skipped while a card thread polls the submission
    /// ring, and rung otherwise.
    #[test]
    fn doorbell_is_suppressed_while_the_card_polls() {
        let (host, card) = host_and_card(4, 0);
        let far = Instant::now() + DEFAULT_TIMEOUT;
        card.region.submissions().start_polling();
        let slot = host.take_slot(far, DEFAULT_TIMEOUT).unwrap();
        host.submit(slot, b"a").unwrap();
        assert!(
            !card.doorbell.take().unwrap(),
            "doorbell rung for a polling card"
        );
        card.region.submissions().stop_polling();
        let slot = host.take_slot(far, DEFAULT_TIMEOUT).unwrap();
        host.submit(slot, b"b").unwrap();
        assert!(card.doorbell.take().unwrap(), "doorbell not rung");
    }

    #[test]
    fn completions_for_unknown_or_idle_slots_are_rejected() {
        let s = shared();
        assert_eq!(
            s.complete(4),
            Err(CompletionProblem::SlotOutOfRange { slot: 4 })
        );
        assert_eq!(
            s.complete(u32::MAX),
            Err(CompletionProblem::SlotOutOfRange { slot: u32::MAX })
        );
        assert_eq!(
            s.complete(1),
            Err(CompletionProblem::NotInFlight { slot: 1 })
        );
        *lock(&s.slots[1].state) = SlotState::InFlight;
        assert_eq!(s.complete(1), Ok(()));
        // A duplicate completion of the same slot is refused.
        assert_eq!(
            s.complete(1),
            Err(CompletionProblem::NotInFlight { slot: 1 })
        );
    }

    #[test]
    fn oversized_response_length_reaches_the_caller_as_an_error() {
        let s = shared();
        let region = s.device.region();
        *lock(&s.slots[0].state) = SlotState::InFlight;
        region.forge_response_len(0, region.slot_capacity() as u32 + 1);
        s.complete(0).unwrap();
        assert!(matches!(
            *lock(&s.slots[0].state),
            SlotState::Done(Err(RegionError::PayloadTooLarge { .. }))
        ));
        // A full-size answer is fine.
        *lock(&s.slots[1].state) = SlotState::InFlight;
        region
            .write_response(1, &vec![9; region.slot_capacity()])
            .unwrap();
        s.complete(1).unwrap();
        assert!(
            matches!(&*lock(&s.slots[1].state), SlotState::Done(Ok(b)) if b.len() == region.slot_capacity())
        );
    }

    #[test]
    fn bogus_completion_entries_are_skipped() {
        let s = shared();
        let region = s.device.region();
        *lock(&s.slots[2].state) = SlotState::InFlight;
        // Idle slots and the real one, in one batch.
        for slot in [0, 1, 2, 3] {
            region.completions().push(slot).unwrap();
        }
        s.drain_completions().unwrap();
        assert!(matches!(*lock(&s.slots[2].state), SlotState::Done(Ok(_))));
        assert!(matches!(*lock(&s.slots[0].state), SlotState::Free));
    }

    #[test]
    fn corrupt_completion_ring_marks_the_card_gone() {
        let s = shared();
        s.device.region().completions().corrupt(0, 1000);
        assert!(s.drain_completions().is_err());
        // The watchdog gives up on its first look and fails every caller.
        s.look();
        assert!(s.gone.load(Ordering::Acquire));
        let now = Instant::now();
        assert!(matches!(
            s.take_slot(now, DEFAULT_TIMEOUT),
            Err(CardError::Gone)
        ));
    }

    #[test]
    fn caller_times_out_and_slot_is_reclaimed_on_late_completion() {
        let s = shared();
        let slot = s
            .take_slot(Instant::now() + DEFAULT_TIMEOUT, DEFAULT_TIMEOUT)
            .unwrap();
        let short = Duration::from_millis(30);
        let err = s
            .submit_and_wait(slot, b"x", Instant::now() + short, short)
            .unwrap_err();
        assert!(matches!(err, CardError::Timeout { .. }));
        assert_eq!(
            lock(&s.free).len(),
            3,
            "an abandoned slot stays out of the pool"
        );
        s.device.region().write_response(slot, b"late").unwrap();
        s.device.region().completions().push(slot).unwrap();
        s.drain_completions().unwrap();
        assert_eq!(lock(&s.free).len(), 4);
        s.assert_consistent();
    }

    #[test]
    fn gone_card_wakes_waiters() {
        let s = shared();
        let slot = s
            .take_slot(Instant::now() + DEFAULT_TIMEOUT, DEFAULT_TIMEOUT)
            .unwrap();
        let waiter = {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                s.submit_and_wait(
                    slot,
                    b"x",
                    Instant::now() + DEFAULT_TIMEOUT,
                    DEFAULT_TIMEOUT,
                )
            })
        };
        // Wait until the request is visibly submitted, then kill the card.
        let deadline = Instant::now() + Duration::from_secs(5);
        while s.device.region().submissions().pending().unwrap() == 0 {
            assert!(Instant::now() < deadline, "request never submitted");
            std::thread::yield_now();
        }
        s.mark_gone();
        assert!(matches!(waiter.join().unwrap(), Err(CardError::Gone)));
        assert!(matches!(
            s.take_slot(Instant::now(), DEFAULT_TIMEOUT),
            Err(CardError::Gone)
        ));
    }
}
