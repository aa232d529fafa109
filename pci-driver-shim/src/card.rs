//! The host side of the command ring: what the daemon calls.
//!
//! [`Card::call`] is blocking and thread-safe. A caller takes a free data
//! slot (waiting if all are busy), writes its CBOR-encoded request there,
//! appends the slot index to the submission ring and rings the doorbell.
//! A reaper thread waits on the completion interrupt, drains the completion
//! ring, checks each entry against the slots actually in flight, copies the
//! answer out of shared memory and wakes the caller, who decodes it.
//! Concurrent callers batch naturally: the card drains every entry present
//! when it wakes, however many doorbell writes announced them.
//!
//! A call that outlives its deadline fails with [`CardError::Timeout`]; its
//! slot stays reserved until the card completes it (the card may still write
//! there). A card that dies fails every call with [`CardError::Gone`];
//! [`Card::reopen`] attaches to it again once it is back (after a reset).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::command::{CardInfo, CardRequest, CardResponse, CardResult, KeySpec};
use crate::device::Device;
use crate::error::CardError;
use crate::region::RegionError;

/// Deadline for RSA key generation (4096-bit primes can take a while).
pub const RSA_KEYGEN_TIMEOUT: Duration = Duration::from_secs(60);
/// Deadline for every other command.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Overrides [`DEFAULT_TIMEOUT`] (milliseconds), read when a card is opened:
/// tests of a card that drops completions need not wait ten seconds.
pub const TIMEOUT_ENV: &str = "MESIGN_CARD_TIMEOUT_MS";
/// How long the reaper blocks before re-checking the ring on its own; a
/// safety net against a lost interrupt, and how soon `Drop` is noticed.
const REAPER_TICK: Duration = Duration::from_millis(200);

/// An opened card.
pub struct Card {
    shared: Arc<Shared>,
    reaper: Option<JoinHandle<()>>,
    info: CardInfo,
    default_timeout: Duration,
}

pub(crate) struct Shared {
    device: Box<dyn Device>,
    slots: Vec<Slot>,
    free: Mutex<Vec<u32>>,
    slot_freed: Condvar,
    /// Serializes the submission ring's producer side.
    submit: Mutex<()>,
    gone: AtomicBool,
    closing: AtomicBool,
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
    /// Starts the reaper on `device` and asks the card who it is.
    pub fn open(device: Box<dyn Device>) -> Result<Card, CardError> {
        let shared = Arc::new(Shared::new(device));
        let reaper_shared = Arc::clone(&shared);
        let reaper = std::thread::Builder::new()
            .name("card-reaper".into())
            .spawn(move || reaper_shared.reap())
            .map_err(|e| CardError::Os {
                op: "spawn reaper",
                errno: nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0)),
            })?;
        let mut card = Card {
            shared,
            reaper: Some(reaper),
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
        let encoded = minicbor::to_vec(request).expect("encoding into a Vec is infallible");
        let capacity = self.shared.device.region().slot_capacity();
        if encoded.len() > capacity {
            return Err(CardError::RequestTooLarge {
                len: encoded.len(),
                capacity,
            });
        }
        let slot = self.shared.take_slot(deadline, timeout)?;
        let raw = self
            .shared
            .submit_and_wait(slot, &encoded, deadline, timeout)?;
        decode_answer(&raw, slot)
    }

    fn timeout_for(&self, request: &CardRequest) -> Duration {
        match request {
            CardRequest::GenerateKeyPair { policy }
                if matches!(policy.spec, KeySpec::Rsa { .. }) =>
            {
                RSA_KEYGEN_TIMEOUT.max(self.default_timeout)
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
        self.shared.closing.store(true, Ordering::Release);
        if let Some(reaper) = self.reaper.take() {
            let _ = reaper.join();
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
            gone: AtomicBool::new(false),
            closing: AtomicBool::new(false),
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

    /// Writes the request into `slot` (taken with [`Shared::take_slot`]),
    /// posts it and rings the doorbell; on failure the slot is free again.
    pub(crate) fn submit(&self, slot: u32, encoded: &[u8]) -> Result<(), CardError> {
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
        if let Err(e) = self.device.ring_doorbell() {
            // The entry is in the ring; the card may still pick it up.
            tracing::warn!(error = %e, "doorbell write failed");
        }
        Ok(())
    }

    /// Waits for the answer to the request in `slot`; gives up (leaving the
    /// slot abandoned) at `deadline` or when the card is gone.
    pub(crate) fn wait_answer(
        &self,
        slot: u32,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Vec<u8>, CardError> {
        let cell = &self.slots[slot as usize];
        let mut state = lock(&cell.state);
        loop {
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
            state = cell
                .done
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }

    fn reap(&self) {
        while !self.closing.load(Ordering::Acquire) {
            let waited = self.device.wait_interrupt(REAPER_TICK);
            if let Err(e) = waited {
                if !matches!(e, CardError::Gone) {
                    tracing::error!(error = %e, "waiting for the card interrupt failed");
                }
                // Answers the card posted before it died are still good.
                let _ = self.drain_completions();
                self.mark_gone();
                return;
            }
            if let Err(e) = self.drain_completions() {
                tracing::error!(error = %e, "completion ring corrupt; giving up on the card");
                self.mark_gone();
                return;
            }
        }
    }

    pub(crate) fn drain_completions(&self) -> Result<(), RegionError> {
        let region = self.device.region();
        while let Some(slot) = region.completions().pop()? {
            if let Err(problem) = self.complete(slot) {
                tracing::warn!(?problem, "ignoring a bad completion entry from the card");
            }
        }
        Ok(())
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
        // The reaper gives up on its first look and fails every caller.
        s.reap();
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
