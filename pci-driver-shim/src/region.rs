//! The shared-memory region between host and card: the crate's one unsafe
//! boundary.
//!
//! A real card exposes this as a BAR or a DMA buffer; the emulator backs it
//! with a memfd that both processes map. The layout is fixed and versioned:
//!
//! ```text
//! offset 0      header: magic, layout version, slot count, slot size,
//!               spinner count
//! offset 64     submission ring (host produces, card consumes)
//! after that    completion ring (card produces, host consumes)
//! page aligned  data area: `slot_count` slots of `slot_size` bytes each,
//!               [request len u32][response len u32][8 bytes pad][payload]
//! ```
//!
//! Each ring is a single-producer single-consumer queue of `u32` slot
//! indices with its head (consumer-owned) and tail (producer-owned) as
//! `AtomicU32` in the shared memory, published with release and read with
//! acquire ordering. The capacity equals the slot count, so a host that only
//! submits slots it owns can never overflow either ring.
//!
//! Event suppression, as in virtio: next to each ring's head the consumer
//! keeps a count of its threads that are polling the ring right now. While
//! it is non-zero the producer skips the doorbell (or the interrupt), which
//! would only wake a thread that is already awake. A consumer stops polling
//! in the order "decrement, full fence, look at the ring once more" and the
//! producer in the order "publish the entry, full fence, read the count", so
//! at least one of them sees the other and no entry goes unannounced. The
//! header's spinner count bounds how many threads of host and card together
//! busy-poll at once: they share the machine's cores when the card is the
//! emulator. Both words are hints: a peer that leaves them zero (older
//! layouts never wrote them) just gets every signal, and a hostile value
//! costs the writer its own wake-ups, nothing more.
//!
//! The other side of the region may be buggy or hostile. Everything here is
//! reached through atomics (so concurrent writes from the other process are
//! never undefined behaviour, just garbage), every index and length read
//! from shared memory is bounds-checked, and payloads are copied out before
//! anyone decodes them, so the peer cannot change bytes under a parser.
//!
//! The only `unsafe` code of the crate lives here: mapping and unmapping the
//! region, viewing it as atomics, and adopting file descriptors received
//! over `SCM_RIGHTS`.

use std::num::NonZeroUsize;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU32, AtomicU8, Ordering};

use nix::errno::Errno;
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

/// "MSCR" — MeSign card region.
pub const MAGIC: u32 = u32::from_le_bytes(*b"MSCR");
/// Bumped on any incompatible layout change.
pub const LAYOUT_VERSION: u32 = 1;
/// Slots the host side creates by default (also the ring capacity).
pub const DEFAULT_SLOT_COUNT: u32 = 64;
/// Bytes per slot, including its 16-byte slot header.
pub const DEFAULT_SLOT_SIZE: u32 = 64 * 1024;

const MAX_SLOT_COUNT: u32 = 1024;
const MIN_SLOT_SIZE: u32 = 4096;
const MAX_SLOT_SIZE: u32 = 1024 * 1024;
const HEADER_LEN: usize = 64;
/// Head and tail sit on separate cache lines so producer and consumer do not
/// bounce one line between cores.
const RING_CONTROL_LEN: usize = 128;
const SLOT_HEADER_LEN: usize = 16;
/// Header word counting the threads (host and card) busy-polling a ring.
const SPINNERS_OFFSET: usize = 16;
/// Word after a ring's head: the consumer's polling threads.
const POLLERS_OFFSET: usize = 4;
const PAGE: usize = 4096;

/// How many threads may busy-poll at once on this machine (the `max` of
/// [`SharedRegion::try_spin`]): one fewer than there are cores, and at least
/// one; the other cores are for the threads doing the work.
pub fn spin_budget() -> u32 {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    u32::try_from(cores.saturating_sub(1).max(1)).unwrap_or(u32::MAX)
}

/// What went wrong with the region or one of its rings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionError {
    /// The header does not start with [`MAGIC`].
    BadMagic { found: u32 },
    /// The peer speaks another layout version.
    UnsupportedVersion { found: u32 },
    /// Slot count or size outside what this implementation accepts.
    BadGeometry { slot_count: u32, slot_size: u32 },
    /// The mapping is smaller than the geometry requires.
    TooSmall { required: usize, actual: usize },
    /// A system call failed.
    Os { op: &'static str, errno: Errno },
    /// A slot index outside the region.
    SlotOutOfRange { slot: u32, slot_count: u32 },
    /// A payload longer than the slot can hold.
    PayloadTooLarge { len: usize, capacity: usize },
    /// A ring's head and tail are inconsistent (more entries than capacity).
    RingCorrupt { head: u32, tail: u32, capacity: u32 },
    /// The producer found the ring full.
    RingFull,
}

impl std::fmt::Display for RegionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegionError::BadMagic { found } => write!(f, "bad region magic {found:#010x}"),
            RegionError::UnsupportedVersion { found } => {
                write!(f, "unsupported region layout version {found}")
            }
            RegionError::BadGeometry {
                slot_count,
                slot_size,
            } => {
                write!(
                    f,
                    "bad region geometry: {slot_count} slots of {slot_size} bytes"
                )
            }
            RegionError::TooSmall { required, actual } => {
                write!(f, "region is {actual} bytes, layout needs {required}")
            }
            RegionError::Os { op, errno } => write!(f, "{op}: {errno}"),
            RegionError::SlotOutOfRange { slot, slot_count } => {
                write!(f, "slot {slot} out of range (0..{slot_count})")
            }
            RegionError::PayloadTooLarge { len, capacity } => {
                write!(f, "payload of {len} bytes exceeds slot capacity {capacity}")
            }
            RegionError::RingCorrupt {
                head,
                tail,
                capacity,
            } => {
                write!(
                    f,
                    "ring corrupt: head {head}, tail {tail}, capacity {capacity}"
                )
            }
            RegionError::RingFull => write!(f, "ring full"),
        }
    }
}

impl std::error::Error for RegionError {}

fn os(op: &'static str) -> impl FnOnce(Errno) -> RegionError {
    move |errno| RegionError::Os { op, errno }
}

/// Byte offsets of the region's parts, derived from the geometry alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    slot_count: u32,
    slot_size: u32,
    submissions: usize,
    completions: usize,
    data: usize,
    total: usize,
}

impl Layout {
    fn new(slot_count: u32, slot_size: u32) -> Result<Layout, RegionError> {
        let geometry_ok = slot_count.is_power_of_two()
            && slot_count <= MAX_SLOT_COUNT
            && (MIN_SLOT_SIZE..=MAX_SLOT_SIZE).contains(&slot_size)
            && slot_size % 64 == 0;
        if !geometry_ok {
            return Err(RegionError::BadGeometry {
                slot_count,
                slot_size,
            });
        }
        let ring_len = round_up(RING_CONTROL_LEN + 4 * slot_count as usize, 64);
        let submissions = HEADER_LEN;
        let completions = submissions + ring_len;
        let data = round_up(completions + ring_len, PAGE);
        let total = data + slot_count as usize * slot_size as usize;
        Ok(Layout {
            slot_count,
            slot_size,
            submissions,
            completions,
            data,
            total,
        })
    }

    fn slot_offset(&self, slot: u32) -> Result<usize, RegionError> {
        if slot >= self.slot_count {
            return Err(RegionError::SlotOutOfRange {
                slot,
                slot_count: self.slot_count,
            });
        }
        Ok(self.data + slot as usize * self.slot_size as usize)
    }
}

fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

/// A mapped command region. Both sides hold one; see the module docs.
pub struct SharedRegion {
    base: NonNull<u8>,
    layout: Layout,
    fd: OwnedFd,
}

// SAFETY: the mapping is plain shared memory that lives until `Drop`; every
// access after construction goes through `AtomicU32`/`AtomicU8` views, which
// are themselves `Sync`, so sharing the pointer between threads is sound.
unsafe impl Send for SharedRegion {}
// SAFETY: as above — no non-atomic access to the mapping exists.
unsafe impl Sync for SharedRegion {}

impl SharedRegion {
    /// Creates a fresh memfd-backed region and writes its header (the card
    /// side does this; the host receives the fd and calls [`attach`]).
    ///
    /// [`attach`]: SharedRegion::attach
    pub fn create(slot_count: u32, slot_size: u32) -> Result<SharedRegion, RegionError> {
        let layout = Layout::new(slot_count, slot_size)?;
        let fd = memfd_create(c"mesign-card-region", MFdFlags::MFD_CLOEXEC)
            .map_err(os("memfd_create"))?;
        nix::unistd::ftruncate(&fd, layout.total as i64).map_err(os("ftruncate"))?;
        let region = SharedRegion::map(fd, layout)?;
        region.u32_at(4).store(LAYOUT_VERSION, Ordering::Relaxed);
        region.u32_at(8).store(slot_count, Ordering::Relaxed);
        region.u32_at(12).store(slot_size, Ordering::Relaxed);
        // The magic goes last with release so a reader that sees it sees the
        // geometry too.
        region.u32_at(0).store(MAGIC, Ordering::Release);
        Ok(region)
    }

    /// Maps a region created by the other side and validates its header. The
    /// geometry is read once here and never trusted from shared memory again.
    pub fn attach(fd: OwnedFd) -> Result<SharedRegion, RegionError> {
        let actual = nix::sys::stat::fstat(&fd).map_err(os("fstat"))?.st_size;
        let actual = usize::try_from(actual).unwrap_or(0);
        if actual < PAGE {
            return Err(RegionError::TooSmall {
                required: PAGE,
                actual,
            });
        }
        let header = SharedRegion::map(
            fd,
            Layout {
                total: PAGE,
                ..Layout::new(1, MIN_SLOT_SIZE)?
            },
        )?;
        let magic = header.u32_at(0).load(Ordering::Acquire);
        if magic != MAGIC {
            return Err(RegionError::BadMagic { found: magic });
        }
        let version = header.u32_at(4).load(Ordering::Relaxed);
        if version != LAYOUT_VERSION {
            return Err(RegionError::UnsupportedVersion { found: version });
        }
        let layout = Layout::new(
            header.u32_at(8).load(Ordering::Relaxed),
            header.u32_at(12).load(Ordering::Relaxed),
        )?;
        if actual < layout.total {
            return Err(RegionError::TooSmall {
                required: layout.total,
                actual,
            });
        }
        let fd = header.fd.try_clone().map_err(|e| RegionError::Os {
            op: "dup",
            errno: Errno::from_raw(e.raw_os_error().unwrap_or(0)),
        })?;
        drop(header);
        SharedRegion::map(fd, layout)
    }

    fn map(fd: OwnedFd, layout: Layout) -> Result<SharedRegion, RegionError> {
        let len = NonZeroUsize::new(layout.total).ok_or(RegionError::TooSmall {
            required: 1,
            actual: 0,
        })?;
        // SAFETY: we ask the kernel for a fresh shared mapping of `fd` at an
        // address of its choosing, so no existing Rust object is aliased; the
        // file is at least `len` bytes long (created with ftruncate or checked
        // with fstat by the callers).
        let ptr = unsafe {
            mmap(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                &fd,
                0,
            )
        }
        .map_err(os("mmap"))?;
        Ok(SharedRegion {
            base: ptr.cast(),
            layout,
            fd,
        })
    }

    /// The memfd, to hand to the other side.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Number of data slots (and ring capacity).
    pub fn slot_count(&self) -> u32 {
        self.layout.slot_count
    }

    /// Payload bytes one slot can hold.
    pub fn slot_capacity(&self) -> usize {
        self.layout.slot_size as usize - SLOT_HEADER_LEN
    }

    /// The ring the host produces into and the card consumes from.
    pub fn submissions(&self) -> Ring<'_> {
        self.ring(self.layout.submissions)
    }

    /// The ring the card produces into and the host consumes from.
    pub fn completions(&self) -> Ring<'_> {
        self.ring(self.layout.completions)
    }

    /// Writes a request payload into `slot` (host side).
    pub fn write_request(&self, slot: u32, bytes: &[u8]) -> Result<(), RegionError> {
        self.write_payload(slot, 0, bytes)
    }

    /// Writes a response payload into `slot` (card side); it overwrites the
    /// request, which the card has already copied out.
    pub fn write_response(&self, slot: u32, bytes: &[u8]) -> Result<(), RegionError> {
        self.write_payload(slot, 4, bytes)
    }

    /// Copies the request payload of `slot` out of shared memory.
    pub fn read_request(&self, slot: u32) -> Result<Vec<u8>, RegionError> {
        self.read_payload(slot, 0)
    }

    /// Copies the response payload of `slot` out of shared memory.
    pub fn read_response(&self, slot: u32) -> Result<Vec<u8>, RegionError> {
        self.read_payload(slot, 4)
    }

    fn write_payload(&self, slot: u32, len_field: usize, bytes: &[u8]) -> Result<(), RegionError> {
        let offset = self.layout.slot_offset(slot)?;
        let capacity = self.slot_capacity();
        if bytes.len() > capacity {
            return Err(RegionError::PayloadTooLarge {
                len: bytes.len(),
                capacity,
            });
        }
        let payload = self.bytes_at(offset + SLOT_HEADER_LEN, bytes.len());
        for (cell, byte) in payload.iter().zip(bytes) {
            cell.store(*byte, Ordering::Relaxed);
        }
        // Release: the length is published after the bytes, and the ring
        // entry (also release) after the length.
        self.u32_at(offset + len_field)
            .store(bytes.len() as u32, Ordering::Release);
        Ok(())
    }

    fn read_payload(&self, slot: u32, len_field: usize) -> Result<Vec<u8>, RegionError> {
        let offset = self.layout.slot_offset(slot)?;
        let capacity = self.slot_capacity();
        let len = self.u32_at(offset + len_field).load(Ordering::Acquire) as usize;
        if len > capacity {
            return Err(RegionError::PayloadTooLarge { len, capacity });
        }
        let payload = self.bytes_at(offset + SLOT_HEADER_LEN, len);
        Ok(payload
            .iter()
            .map(|cell| cell.load(Ordering::Relaxed))
            .collect())
    }

    /// Writes `value` at the 4-byte word `index` (wrapped into the region),
    /// as a buggy or hostile peer can: headers, ring indices, ring entries,
    /// slot lengths, payloads alike. For the fuzz targets.
    #[cfg(feature = "fuzzing")]
    pub fn poke_word(&self, index: u32, value: u32) {
        let words = self.layout.total / 4;
        let offset = (index as usize % words) * 4;
        self.u32_at(offset).store(value, Ordering::Release);
    }

    /// Writes a response length without a payload, as a hostile card might.
    #[cfg(test)]
    pub(crate) fn forge_response_len(&self, slot: u32, len: u32) {
        let offset = self.layout.slot_offset(slot).unwrap();
        self.u32_at(offset + 4).store(len, Ordering::Release);
    }

    /// Writes a request length without a payload, as a hostile host might.
    #[cfg(test)]
    pub(crate) fn forge_request_len(&self, slot: u32, len: u32) {
        let offset = self.layout.slot_offset(slot).unwrap();
        self.u32_at(offset).store(len, Ordering::Release);
    }

    /// A permit to busy-poll, if fewer than `max` threads of host and card
    /// hold one; spinning threads that outnumber the cores only steal time
    /// from the threads doing the work.
    pub fn try_spin(&self, max: u32) -> Option<SpinPermit<'_>> {
        let spinners = self.u32_at(SPINNERS_OFFSET);
        spinners
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| SpinPermit { spinners })
    }

    fn ring(&self, offset: usize) -> Ring<'_> {
        let capacity = self.layout.slot_count;
        let entries = self.u32s_at(offset + RING_CONTROL_LEN, capacity as usize);
        Ring {
            head: self.u32_at(offset),
            pollers: self.u32_at(offset + POLLERS_OFFSET),
            tail: self.u32_at(offset + 64),
            entries,
            capacity,
        }
    }

    fn u32_at(&self, offset: usize) -> &AtomicU32 {
        &self.u32s_at(offset, 1)[0]
    }

    fn u32s_at(&self, offset: usize, count: usize) -> &[AtomicU32] {
        assert!(offset % 4 == 0 && offset + 4 * count <= self.layout.total);
        // SAFETY: the range is inside the live mapping (asserted above), it is
        // 4-byte aligned (the mapping is page aligned, offset checked), and
        // memory shared with another process may only be accessed atomically,
        // which is all `AtomicU32` allows. The borrow cannot outlive `self`,
        // which owns the mapping.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(offset).cast(), count) }
    }

    fn bytes_at(&self, offset: usize, count: usize) -> &[AtomicU8] {
        assert!(offset + count <= self.layout.total);
        // SAFETY: inside the live mapping (asserted above); `AtomicU8` has no
        // alignment requirement; access is atomic, so writes by the peer are
        // never a data race. The borrow is tied to `self`.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(offset).cast(), count) }
    }
}

impl Drop for SharedRegion {
    fn drop(&mut self) {
        // SAFETY: `base`/`total` are exactly what mmap returned and was asked
        // for, and no borrow of the mapping can outlive `self`.
        if let Err(errno) = unsafe { munmap(self.base.cast(), self.layout.total) } {
            tracing::warn!(%errno, "munmap of the card region failed");
        }
    }
}

impl std::fmt::Debug for SharedRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedRegion")
            .field("slot_count", &self.layout.slot_count)
            .field("slot_size", &self.layout.slot_size)
            .finish()
    }
}

/// Takes ownership of file descriptors that arrived in an `SCM_RIGHTS`
/// control message.
pub(crate) fn adopt_received_fds(raw: &[RawFd]) -> Vec<OwnedFd> {
    raw.iter()
        // SAFETY: the kernel installed these descriptors in our table for this
        // message only; nothing else in the process knows or owns them.
        .map(|&fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect()
}

/// Held while busy-polling; see [`SharedRegion::try_spin`].
#[derive(Debug)]
pub struct SpinPermit<'a> {
    spinners: &'a AtomicU32,
}

impl Drop for SpinPermit<'_> {
    fn drop(&mut self) {
        // Saturating: a peer that zeroed the count must not make it wrap to
        // "everyone is spinning".
        let _ = self
            .spinners
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| n.checked_sub(1));
    }
}

/// One SPSC ring of slot indices in shared memory.
pub struct Ring<'a> {
    head: &'a AtomicU32,
    pollers: &'a AtomicU32,
    tail: &'a AtomicU32,
    entries: &'a [AtomicU32],
    capacity: u32,
}

impl Ring<'_> {
    /// Producer side: appends `entry`. Callers serialize producers.
    pub fn push(&self, entry: u32) -> Result<(), RegionError> {
        let tail = self.tail.load(Ordering::Relaxed);
        let head = self.head.load(Ordering::Acquire);
        let used = self.used(head, tail)?;
        if used == self.capacity {
            return Err(RegionError::RingFull);
        }
        self.entries[(tail % self.capacity) as usize].store(entry, Ordering::Relaxed);
        self.tail.store(tail.wrapping_add(1), Ordering::Release);
        Ok(())
    }

    /// Consumer side: takes the oldest entry, if any. Callers serialize
    /// consumers. The entry itself is not validated here: only its owner
    /// knows which slots are legitimately in flight.
    pub fn pop(&self) -> Result<Option<u32>, RegionError> {
        let head = self.head.load(Ordering::Relaxed);
        let tail = self.tail.load(Ordering::Acquire);
        if self.used(head, tail)? == 0 {
            return Ok(None);
        }
        let entry = self.entries[(head % self.capacity) as usize].load(Ordering::Relaxed);
        self.head.store(head.wrapping_add(1), Ordering::Release);
        Ok(Some(entry))
    }

    /// Consumer side: one more thread polls this ring, so the producer
    /// need not signal (see the module docs).
    pub fn start_polling(&self) {
        self.pollers.fetch_add(1, Ordering::SeqCst);
    }

    /// Consumer side: a thread stops polling. Afterwards it must look at
    /// the ring once more before it blocks on the signal; the fence here
    /// orders that look after the decrement.
    pub fn stop_polling(&self) {
        let _ = self
            .pollers
            .fetch_update(Ordering::SeqCst, Ordering::Relaxed, |n| n.checked_sub(1));
        fence(Ordering::SeqCst);
    }

    /// Producer side, after [`Ring::push`]: true when no consumer thread is
    /// polling, so the entry must be announced with a signal.
    pub fn needs_signal(&self) -> bool {
        fence(Ordering::SeqCst);
        self.pollers.load(Ordering::Relaxed) == 0
    }

    /// Entries waiting to be consumed.
    pub fn pending(&self) -> Result<u32, RegionError> {
        let head = self.head.load(Ordering::Acquire);
        let tail = self.tail.load(Ordering::Acquire);
        self.used(head, tail)
    }

    fn used(&self, head: u32, tail: u32) -> Result<u32, RegionError> {
        let used = tail.wrapping_sub(head);
        if used > self.capacity {
            return Err(RegionError::RingCorrupt {
                head,
                tail,
                capacity: self.capacity,
            });
        }
        Ok(used)
    }

    /// Sets head and tail as a buggy or hostile peer might.
    #[cfg(test)]
    pub(crate) fn corrupt(&self, head: u32, tail: u32) {
        self.head.store(head, Ordering::Relaxed);
        self.tail.store(tail, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region() -> SharedRegion {
        SharedRegion::create(8, MIN_SLOT_SIZE).unwrap()
    }

    #[test]
    fn attach_sees_the_same_memory() {
        let card = region();
        let host = SharedRegion::attach(card.fd().try_clone_to_owned().unwrap()).unwrap();
        assert_eq!(host.slot_count(), 8);
        host.write_request(3, b"hello").unwrap();
        host.submissions().push(3).unwrap();
        assert_eq!(card.submissions().pop().unwrap(), Some(3));
        assert_eq!(card.read_request(3).unwrap(), b"hello");
        card.write_response(3, b"world!").unwrap();
        card.completions().push(3).unwrap();
        assert_eq!(host.completions().pop().unwrap(), Some(3));
        assert_eq!(host.read_response(3).unwrap(), b"world!");
        assert_eq!(host.completions().pop().unwrap(), None);
    }

    #[test]
    fn ring_wraps_and_reports_full() {
        let r = region();
        let ring = r.submissions();
        for round in 0..5u32 {
            for i in 0..8 {
                ring.push(round * 8 + i).unwrap();
            }
            assert_eq!(ring.push(99), Err(RegionError::RingFull));
            for i in 0..8 {
                assert_eq!(ring.pop().unwrap(), Some(round * 8 + i));
            }
            assert_eq!(ring.pop().unwrap(), None);
        }
    }

    #[test]
    fn polling_consumers_suppress_signals() {
        let card = region();
        let host = SharedRegion::attach(card.fd().try_clone_to_owned().unwrap()).unwrap();
        assert!(host.submissions().needs_signal());
        card.submissions().start_polling();
        card.submissions().start_polling();
        assert!(!host.submissions().needs_signal());
        card.submissions().stop_polling();
        assert!(!host.submissions().needs_signal(), "one poller is left");
        card.submissions().stop_polling();
        assert!(host.submissions().needs_signal());
        // More stops than starts (or a peer zeroing the count) never wrap
        // around to "polling".
        card.submissions().stop_polling();
        assert!(host.submissions().needs_signal());
        // The rings keep separate counts.
        host.completions().start_polling();
        assert!(!card.completions().needs_signal());
        assert!(card.submissions().needs_signal());
    }

    #[test]
    fn spin_permits_are_bounded_across_both_sides() {
        let card = region();
        let host = SharedRegion::attach(card.fd().try_clone_to_owned().unwrap()).unwrap();
        let first = host.try_spin(2).expect("nobody spins yet");
        let second = card.try_spin(2).expect("one of two permits left");
        assert!(host.try_spin(2).is_none());
        assert!(card.try_spin(2).is_none());
        drop(first);
        let third = card.try_spin(2).expect("a permit came back");
        assert!(host.try_spin(0).is_none(), "a budget of zero never spins");
        drop((second, third));
        // A peer that zeroes the count while permits are out: returning them
        // must not wrap the count to "everyone spins".
        let permit = host.try_spin(1).unwrap();
        host.u32_at(SPINNERS_OFFSET).store(0, Ordering::Release);
        drop(permit);
        assert_eq!(host.u32_at(SPINNERS_OFFSET).load(Ordering::Acquire), 0);
        assert!(host.try_spin(1).is_some());
    }

    #[test]
    fn ring_rejects_inconsistent_indices() {
        let r = region();
        let ring = r.completions();
        ring.corrupt(0, 9);
        assert_eq!(
            ring.pop(),
            Err(RegionError::RingCorrupt {
                head: 0,
                tail: 9,
                capacity: 8
            })
        );
        // A tail behind the head is just as corrupt (it wraps to a huge count).
        ring.corrupt(5, 4);
        assert!(matches!(ring.pop(), Err(RegionError::RingCorrupt { .. })));
        // Indices near wrap-around that are consistent are fine.
        ring.corrupt(u32::MAX, u32::MAX);
        ring.push(7).unwrap();
        assert_eq!(ring.pop().unwrap(), Some(7));
    }

    #[test]
    fn slot_bounds_are_enforced() {
        let r = region();
        assert_eq!(
            r.write_request(8, b"x"),
            Err(RegionError::SlotOutOfRange {
                slot: 8,
                slot_count: 8
            })
        );
        let capacity = r.slot_capacity();
        assert!(matches!(
            r.write_request(0, &vec![0; capacity + 1]),
            Err(RegionError::PayloadTooLarge { .. })
        ));
        r.write_request(0, &vec![1; capacity]).unwrap();
        // A hostile peer announcing a length past the slot is refused.
        let offset = r.layout.slot_offset(1).unwrap();
        r.u32_at(offset + 4)
            .store(capacity as u32 + 1, Ordering::Release);
        assert!(matches!(
            r.read_response(1),
            Err(RegionError::PayloadTooLarge { .. })
        ));
        r.u32_at(offset + 4).store(u32::MAX, Ordering::Release);
        assert!(matches!(
            r.read_response(1),
            Err(RegionError::PayloadTooLarge { .. })
        ));
    }

    #[test]
    fn attach_validates_the_header() {
        let r = region();
        r.u32_at(0).store(0xdead_beef, Ordering::Release);
        let err = SharedRegion::attach(r.fd().try_clone_to_owned().unwrap()).unwrap_err();
        assert_eq!(err, RegionError::BadMagic { found: 0xdead_beef });
        r.u32_at(0).store(MAGIC, Ordering::Release);
        r.u32_at(8).store(3, Ordering::Relaxed);
        let err = SharedRegion::attach(r.fd().try_clone_to_owned().unwrap()).unwrap_err();
        assert!(matches!(
            err,
            RegionError::BadGeometry { slot_count: 3, .. }
        ));
        // A geometry that claims more memory than the file has.
        r.u32_at(8).store(1024, Ordering::Relaxed);
        let err = SharedRegion::attach(r.fd().try_clone_to_owned().unwrap()).unwrap_err();
        assert!(matches!(err, RegionError::TooSmall { .. }));
        r.u32_at(8).store(8, Ordering::Relaxed);
        r.u32_at(4).store(2, Ordering::Relaxed);
        let err = SharedRegion::attach(r.fd().try_clone_to_owned().unwrap()).unwrap_err();
        assert_eq!(err, RegionError::UnsupportedVersion { found: 2 });
    }
}
