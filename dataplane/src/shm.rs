//! Shared-memory rings between `netstorm-cp` and `netstorm-dp` on one host.
//!
//! One named shared-memory file (for example `/dev/shm/netstorm-<job>`, path from the
//! configuration) holds two single-producer/single-consumer rings:
//!
//! * the **policy ring**, control plane → data plane (chunks of [`PolicyRecord`]s), and
//! * the **telemetry ring**, data plane → control plane ([`TelemetryRecord`]s).
//!
//! [`PolicyRecord`]: crate::shm_records::PolicyRecord
//! [`TelemetryRecord`]: crate::shm_records::TelemetryRecord
//!
//! # File layout (layout version [`LAYOUT_VERSION`])
//!
//! All integers are native-endian (the file never leaves the host). Offsets in bytes:
//!
//! ```text
//! 0    header (HEADER_SIZE = 128)
//!        0  magic               [u8; 8] = b"NSTMRING"
//!        8  layout version      u32     = LAYOUT_VERSION
//!       12  header size         u32     = HEADER_SIZE
//!       16  total size          u64     = the file length
//!       24  policy slot size    u32     (bytes per slot, including the 4-byte length)
//!       28  policy slot count   u32
//!       32  telemetry slot size u32
//!       36  telemetry slot count u32
//!       40  generation          u64     (+1 at every (re)initialisation)
//!       48  creator pid         u32
//!       52  state               u32     = READY once initialisation finished
//!       56  policy ring offset  u64
//!       64  telemetry ring offset u64
//! 128  policy ring, then (128-byte aligned) the telemetry ring. Each ring:
//!        +0    head (u64 sequence, written by the producer only)
//!        +8    producer pid (u32, the live producer's claim, 0 = none)
//!        +128  tail (u64 sequence, written by the consumer only)   — its own cache lines
//!        +136  consumer pid (u32, the live consumer's claim, 0 = none)
//!        +256  slot_count slots of slot_size bytes: [len: u32][payload: len bytes][unused]
//! ```
//!
//! # Ring invariants (the protocol both processes follow)
//!
//! * `head` and `tail` are monotonically increasing `u64` message sequence numbers (never
//!   wrapped indices); message `s` lives in slot `s % slot_count`; `tail <= head <= tail + N`.
//! * Only the producer writes `head` and slot contents; it writes only slots of sequences in
//!   `[head, tail + N)`, i.e. slots the consumer has released. It stores `head + 1` with
//!   `Release` **after** the slot (length and payload) is complete.
//! * Only the consumer writes `tail`; it reads `head` with `Acquire`, reads only slots of
//!   sequences in `[tail, head)`, and stores `tail + 1` with `Release` after it has finished
//!   reading the slot, which hands the slot back to the producer (who reads `tail` with
//!   `Acquire` before reusing it).
//! * A torn message is never visible: a producer that dies mid-write has not bumped `head`, so
//!   the half-written slot is outside `[tail, head)` and the next producer overwrites it.
//! * A re-attaching producer resumes at the published `head`, a re-attaching consumer at the
//!   published `tail`; neither side keeps state the other depends on.
//! * The consumer never trusts slot contents: a length larger than the slot is reported as
//!   [`PopError::CorruptSlot`] (and skipped), counters violating `tail <= head <= tail + N` as
//!   [`PopError::Corrupt`] / [`PushError::Corrupt`]; nothing panics.
//!
//! # Delivery rule
//!
//! While both sides live, every message whose `try_push` returned `Ok` is delivered exactly
//! once and in order. Across restarts:
//! * **producer restart**: every push that returned `Ok` is still delivered (exactly once); a
//!   push interrupted by the crash is lost entirely (never half-visible). The restarted
//!   producer can learn where it stands from [`Producer::next_seq`].
//! * **consumer restart**: the message the consumer was reading when it died (popped but not
//!   committed, i.e. inside [`Consumer::pop_with`]'s closure) is delivered again to the next
//!   consumer: *at-least-once* for that one message, exactly-once for all others. Records
//!   carry epochs/rounds so a duplicate is harmless.
//!
//! # Single producer / single consumer
//!
//! Within a process, handles are not `Clone` and a ring hands out one live producer and one
//! live consumer at a time ([`RoleTaken`] otherwise). Across processes, the claim is the pid
//! word in the ring's control block: [`ShmRegion`] refuses a role whose recorded pid is a live
//! process (checked with `kill(pid, 0)`), and takes over the claim of a dead one. Dropping a
//! handle releases its claim. Cross-process contract: every process that maps the file uses
//! this module (or follows the protocol above); nobody truncates or rewrites a file that
//! another process has mapped (see the creation rule). Caveats: a killed process that has not
//! been reaped yet (a zombie) still counts as live, and pid reuse by an unrelated process can
//! make a stale claim look live until the file is re-initialised.
//!
//! # Creation rule ([`ShmRegion::create`], the data plane's side)
//!
//! Every process holds a **shared `flock`** on the file for as long as it has it mapped.
//! `create` tries to take an **exclusive** lock without blocking:
//! * it gets it → nobody has the file mapped: the file is (re)initialised from scratch
//!   (truncated, sized, zeroed, header written, `state = READY` last, generation + 1), whatever
//!   it contained (stale, other geometry, other version, garbage). Then the lock is downgraded
//!   to shared.
//! * it does not → another process (the control plane) has it mapped: `create` attaches to
//!   the existing rings if their layout matches `config` (a data-plane restart keeps the
//!   control plane's pending messages) and otherwise refuses with
//!   [`ShmError::InUseMismatch`], naming the field.
//!
//! [`ShmRegion::attach`] (the control plane's side) never initialises anything: it takes the
//! shared lock and checks magic, layout version, header size, ring geometry, ring offsets,
//! total size and the file length, refusing with an error naming the file and the field.
//!
//! # Model checking
//!
//! The ring algorithm ([`Producer`], [`Consumer`]) is generic over a [`RingMemory`]: the mmap
//! file ([`ShmRingMemory`]) is one backing, a heap buffer ([`HeapRing`]) another. Its atomics
//! and cells go through a shim that is `loom`'s under `cfg(loom)`, so
//! `RUSTFLAGS="--cfg loom" cargo test -p netstorm-dataplane --release --test shm_loom`
//! model-checks it (the mmap backing is not compiled under loom). Unit tests use small sizes
//! under `cfg(miri)`.
#![allow(unsafe_code)]

use std::sync::Arc;

use serde::{Deserialize, Serialize};

#[cfg(not(loom))]
pub use region::{ShmConsumer, ShmError, ShmProducer, ShmRegion, ShmRingMemory};

/// The atomics and cells the ring algorithm uses: `loom`'s under `cfg(loom)`, std otherwise.
mod sync {
    #[cfg(loom)]
    pub(crate) use loom::cell::UnsafeCell;
    #[cfg(loom)]
    pub use loom::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    #[cfg(not(loom))]
    pub use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    /// `std`'s `UnsafeCell` with loom's closure-based API.
    #[cfg(not(loom))]
    #[derive(Debug)]
    pub(crate) struct UnsafeCell<T>(core::cell::UnsafeCell<T>);

    #[cfg(not(loom))]
    impl<T> UnsafeCell<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(core::cell::UnsafeCell::new(value))
        }
        pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }
        pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }
}

use sync::{AtomicBool, AtomicU64, Ordering};

/// Magic bytes at offset 0 of a ring file.
pub const MAGIC: [u8; 8] = *b"NSTMRING";
/// Version of the file layout described in the module docs.
pub const LAYOUT_VERSION: u32 = 1;
/// Bytes of the file header.
pub const HEADER_SIZE: usize = 128;
/// Separation of the producer's and the consumer's counters (two 64-byte lines, so the
/// adjacent-line prefetcher does not couple them either).
pub const CACHE_LINE: usize = 128;
/// Bytes of a ring's control block (head line + tail line) before its slots.
pub const RING_CONTROL_SIZE: usize = 2 * CACHE_LINE;
/// Bytes of the length prefix at the start of every slot.
pub const SLOT_LEN_PREFIX: usize = 4;
/// Value of the header's state word once initialisation finished.
pub const STATE_READY: u32 = u32::from_le_bytes(*b"REDY");

/// Geometry of one ring: fixed-size slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RingGeometry {
    /// Bytes per slot including the 4-byte length prefix; a multiple of 8 in
    /// [`RingGeometry::MIN_SLOT_SIZE`]`..=`[`RingGeometry::MAX_SLOT_SIZE`].
    pub slot_size: u32,
    /// Slots in the ring, `1..=`[`RingGeometry::MAX_SLOT_COUNT`].
    pub slot_count: u32,
}

impl RingGeometry {
    pub const MIN_SLOT_SIZE: u32 = 16;
    pub const MAX_SLOT_SIZE: u32 = 1 << 20;
    pub const MAX_SLOT_COUNT: u32 = 1 << 20;

    /// Largest payload one slot carries.
    pub fn max_payload(&self) -> usize {
        (self.slot_size as usize).saturating_sub(SLOT_LEN_PREFIX)
    }

    /// Checks the bounds documented on the fields; `ring` names the ring in the error.
    pub fn validate(&self, ring: &'static str) -> Result<(), ConfigError> {
        if self.slot_size < Self::MIN_SLOT_SIZE
            || self.slot_size > Self::MAX_SLOT_SIZE
            || self.slot_size & 7 != 0
        {
            return Err(ConfigError::SlotSize {
                ring,
                value: self.slot_size,
            });
        }
        if self.slot_count == 0 || self.slot_count > Self::MAX_SLOT_COUNT {
            return Err(ConfigError::SlotCount {
                ring,
                value: self.slot_count,
            });
        }
        Ok(())
    }

    /// Bytes this ring occupies in the file (control block + slots, 128-byte aligned).
    fn file_bytes(&self) -> u64 {
        let raw = RING_CONTROL_SIZE as u64 + u64::from(self.slot_size) * u64::from(self.slot_count);
        raw.div_ceil(CACHE_LINE as u64) * CACHE_LINE as u64
    }
}

/// Geometry of both rings of a ring file.
///
/// Defaults: policy ring 64 slots × 4096 B (policies larger than a slot are chunked, see
/// [`crate::shm_records`]); telemetry ring 4096 slots × 64 B (one
/// [`crate::shm_records::TelemetryRecord`] per slot). About 512 KiB in total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RingConfig {
    /// Control plane → data plane.
    pub policy: RingGeometry,
    /// Data plane → control plane.
    pub telemetry: RingGeometry,
}

impl Default for RingConfig {
    fn default() -> Self {
        Self {
            policy: RingGeometry {
                slot_size: 4096,
                slot_count: 64,
            },
            telemetry: RingGeometry {
                slot_size: 64,
                slot_count: 4096,
            },
        }
    }
}

impl RingConfig {
    /// Largest ring file accepted (1 GiB).
    pub const MAX_TOTAL_SIZE: u64 = 1 << 30;

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.policy.validate("policy")?;
        self.telemetry.validate("telemetry")?;
        if self.total_size() > Self::MAX_TOTAL_SIZE {
            return Err(ConfigError::TooLarge {
                total: self.total_size(),
            });
        }
        Ok(())
    }

    /// Offset of the policy ring in the file.
    pub fn policy_offset(&self) -> u64 {
        HEADER_SIZE as u64
    }

    /// Offset of the telemetry ring in the file.
    pub fn telemetry_offset(&self) -> u64 {
        self.policy_offset() + self.policy.file_bytes()
    }

    /// Length of the ring file.
    pub fn total_size(&self) -> u64 {
        self.telemetry_offset() + self.telemetry.file_bytes()
    }
}

/// A ring configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "{ring} ring: slot_size {value} must be a multiple of 8 in {}..={}",
        RingGeometry::MIN_SLOT_SIZE,
        RingGeometry::MAX_SLOT_SIZE
    )]
    SlotSize { ring: &'static str, value: u32 },
    #[error(
        "{ring} ring: slot_count {value} must be in 1..={}",
        RingGeometry::MAX_SLOT_COUNT
    )]
    SlotCount { ring: &'static str, value: u32 },
    #[error(
        "rings need {total} bytes, more than the {} allowed",
        RingConfig::MAX_TOTAL_SIZE
    )]
    TooLarge { total: u64 },
}

/// Which end of a ring a handle is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Producer,
    Consumer,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Producer => "producer",
            Role::Consumer => "consumer",
        }
    }
}

/// The role is held by another live handle (`holder_pid`: its process, when known).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleTaken {
    pub role: Role,
    pub holder_pid: Option<u32>,
}

impl std::fmt::Display for RoleTaken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ring {} already attached", self.role.name())?;
        match self.holder_pid {
            Some(pid) => write!(f, " by pid {pid}"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for RoleTaken {}

/// Why a push did not happen (the message was not enqueued).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// Every slot holds an unconsumed message; retry later.
    #[error("ring full")]
    Full,
    #[error("message of {len} bytes exceeds the slot payload of {max} bytes")]
    TooLarge { len: usize, max: usize },
    /// The shared counters violate `tail <= head <= tail + N`: another process broke the
    /// protocol; the file must be re-initialised.
    #[error("ring counters corrupt: head {head}, tail {tail}, {slot_count} slots")]
    Corrupt {
        head: u64,
        tail: u64,
        slot_count: u64,
    },
}

/// Why a pop did not deliver a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PopError {
    /// The output buffer is too small; the message stays in the ring.
    #[error("message {seq} has {needed} bytes, buffer has {got}")]
    BufferTooSmall { seq: u64, needed: usize, got: usize },
    /// The slot's length prefix exceeds the slot; the message was skipped.
    #[error("message {seq}: slot length {len} exceeds the slot payload of {max} bytes (skipped)")]
    CorruptSlot { seq: u64, len: u32, max: usize },
    /// The shared counters violate `tail <= head <= tail + N` (nothing consumed).
    #[error("ring counters corrupt: head {head}, tail {tail}, {slot_count} slots")]
    Corrupt {
        head: u64,
        tail: u64,
        slot_count: u64,
    },
}

/// Memory holding one ring: the two counters, the role claims and the slots.
///
/// # Safety
///
/// Implementors guarantee that `head`/`tail` return the same two counters for the lifetime of
/// the value (shared by every handle attached to this ring, in any process), that slots
/// `0..geometry().slot_count` are distinct, `slot_size` bytes long and valid for reads and
/// writes for the lifetime of the value, and that `claim` grants each role to at most one
/// live handle at a time (with `Acquire` on claim and `Release` on release, so a new holder
/// sees everything the previous one did).
pub unsafe trait RingMemory: Send + Sync {
    fn geometry(&self) -> RingGeometry;
    /// The producer's sequence counter.
    fn head(&self) -> &AtomicU64;
    /// The consumer's sequence counter.
    fn tail(&self) -> &AtomicU64;
    /// Claims `role` for a new handle.
    fn claim(&self, role: Role) -> Result<(), RoleTaken>;
    /// Releases a claim taken by [`RingMemory::claim`].
    fn release(&self, role: Role);
    /// Runs `f` over the whole of slot `index` for writing.
    ///
    /// # Safety
    ///
    /// `index < slot_count`, and the caller has exclusive access to the slot under the ring
    /// protocol (it is the producer and the slot's sequence is in `[head, tail + N)`).
    unsafe fn with_slot_mut<R>(&self, index: usize, f: impl FnOnce(&mut [u8]) -> R) -> R;
    /// Runs `f` over the whole of slot `index` for reading.
    ///
    /// # Safety
    ///
    /// `index < slot_count`, and nobody writes the slot meanwhile under the ring protocol (the
    /// caller is the consumer and the slot's sequence is in `[tail, head)`).
    unsafe fn with_slot<R>(&self, index: usize, f: impl FnOnce(&[u8]) -> R) -> R;
}

fn slot_index(seq: u64, slot_count: u64) -> usize {
    // slot_count <= 2^20, so the remainder fits any usize.
    (seq % slot_count) as usize
}

/// The producing end of a ring. Not `Clone`: at most one per ring (see the module docs).
#[derive(Debug)]
pub struct Producer<M: RingMemory> {
    mem: Arc<M>,
    /// Equal to the shared head (only this handle writes it).
    head: u64,
    /// Last tail seen; refreshed only when the ring looks full.
    tail_seen: u64,
    slot_count: u64,
    max_payload: usize,
}

impl<M: RingMemory> Producer<M> {
    /// Claims the producer role and resumes at the published head.
    pub fn attach(mem: Arc<M>) -> Result<Self, RoleTaken> {
        mem.claim(Role::Producer)?;
        let head = mem.head().load(Ordering::Acquire);
        let tail_seen = mem.tail().load(Ordering::Acquire);
        let geometry = mem.geometry();
        Ok(Self {
            head,
            tail_seen,
            slot_count: u64::from(geometry.slot_count),
            max_payload: geometry.max_payload(),
            mem,
        })
    }

    /// Sequence number the next successful push gets (messages pushed so far, by any
    /// producer of this ring).
    pub fn next_seq(&self) -> u64 {
        self.head
    }

    /// Largest payload a push accepts.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Enqueues `payload` as one message, or returns why not (nothing was enqueued then).
    pub fn try_push(&mut self, payload: &[u8]) -> Result<(), PushError> {
        if payload.len() > self.max_payload {
            return Err(PushError::TooLarge {
                len: payload.len(),
                max: self.max_payload,
            });
        }
        let head = self.head;
        if head.wrapping_sub(self.tail_seen) >= self.slot_count || self.tail_seen > head {
            // Acquire: the consumer finished reading the slots it released.
            self.tail_seen = self.mem.tail().load(Ordering::Acquire);
            let tail = self.tail_seen;
            if tail > head || head - tail > self.slot_count {
                return Err(PushError::Corrupt {
                    head,
                    tail,
                    slot_count: self.slot_count,
                });
            }
            if head - tail == self.slot_count {
                return Err(PushError::Full);
            }
        }
        let index = slot_index(head, self.slot_count);
        // SAFETY: index < slot_count by `slot_index`; we are the only producer (claimed in
        // `attach`) and `head < tail_seen + N <= tail + N`, so the consumer has released this
        // slot and will not read it before we publish `head + 1` below.
        unsafe {
            self.mem.with_slot_mut(index, |slot| {
                let len = payload.len() as u32; // <= max_payload <= 2^20
                slot[..SLOT_LEN_PREFIX].copy_from_slice(&len.to_ne_bytes());
                slot[SLOT_LEN_PREFIX..SLOT_LEN_PREFIX + payload.len()].copy_from_slice(payload);
            });
        }
        // Release: the slot contents are visible before the new head.
        self.mem.head().store(head + 1, Ordering::Release);
        self.head = head + 1;
        Ok(())
    }
}

impl<M: RingMemory> Drop for Producer<M> {
    fn drop(&mut self) {
        self.mem.release(Role::Producer);
    }
}

/// The consuming end of a ring. Not `Clone`: at most one per ring (see the module docs).
#[derive(Debug)]
pub struct Consumer<M: RingMemory> {
    mem: Arc<M>,
    /// Equal to the shared tail (only this handle writes it).
    tail: u64,
    /// Last head seen; refreshed only when the ring looks empty.
    head_seen: u64,
    slot_count: u64,
    max_payload: usize,
}

impl<M: RingMemory> Consumer<M> {
    /// Claims the consumer role and resumes at the published tail.
    pub fn attach(mem: Arc<M>) -> Result<Self, RoleTaken> {
        mem.claim(Role::Consumer)?;
        let tail = mem.tail().load(Ordering::Acquire);
        let head_seen = mem.head().load(Ordering::Acquire);
        let geometry = mem.geometry();
        Ok(Self {
            tail,
            head_seen,
            slot_count: u64::from(geometry.slot_count),
            max_payload: geometry.max_payload(),
            mem,
        })
    }

    /// Sequence number of the next message to be delivered.
    pub fn next_seq(&self) -> u64 {
        self.tail
    }

    /// Largest payload a message can have.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Messages ready to pop.
    pub fn pending(&mut self) -> Result<u64, PopError> {
        self.refresh_head()?;
        Ok(self.head_seen - self.tail)
    }

    fn refresh_head(&mut self) -> Result<(), PopError> {
        // Acquire: the slots below the new head are complete.
        let head = self.mem.head().load(Ordering::Acquire);
        let tail = self.tail;
        if head < tail || head - tail > self.slot_count {
            return Err(PopError::Corrupt {
                head,
                tail,
                slot_count: self.slot_count,
            });
        }
        self.head_seen = head;
        Ok(())
    }

    /// Reads the next message with `read` (which sees the raw slot and the validated length)
    /// and commits it if `read` says so.
    fn pop_inner<R>(
        &mut self,
        read: impl FnOnce(u64, &[u8]) -> (Result<R, PopError>, bool),
    ) -> Result<Option<R>, PopError> {
        if self.head_seen == self.tail {
            self.refresh_head()?;
            if self.head_seen == self.tail {
                return Ok(None);
            }
        }
        let seq = self.tail;
        let index = slot_index(seq, self.slot_count);
        let max = self.max_payload;
        // SAFETY: index < slot_count by `slot_index`; we are the only consumer (claimed in
        // `attach`) and `tail < head_seen <= head`, so the producer published this slot
        // (Acquire above) and will not write it again before we publish `tail + 1`.
        let (result, commit) = unsafe {
            self.mem.with_slot(index, |slot| {
                let mut len_bytes = [0u8; SLOT_LEN_PREFIX];
                len_bytes.copy_from_slice(&slot[..SLOT_LEN_PREFIX]);
                let len = u32::from_ne_bytes(len_bytes);
                if len as usize > max {
                    return (Err(PopError::CorruptSlot { seq, len, max }), true);
                }
                read(seq, &slot[SLOT_LEN_PREFIX..SLOT_LEN_PREFIX + len as usize])
            })
        };
        if commit {
            // Release: our reads of the slot happen before the producer reuses it.
            self.mem.tail().store(seq + 1, Ordering::Release);
            self.tail = seq + 1;
        }
        result.map(Some)
    }

    /// Copies the next message into `out` and returns its length; `Ok(None)` if the ring is
    /// empty. A too-small `out` leaves the message in the ring.
    pub fn try_pop(&mut self, out: &mut [u8]) -> Result<Option<usize>, PopError> {
        self.pop_inner(|seq, payload| {
            if payload.len() > out.len() {
                let err = PopError::BufferTooSmall {
                    seq,
                    needed: payload.len(),
                    got: out.len(),
                };
                return (Err(err), false);
            }
            out[..payload.len()].copy_from_slice(payload);
            (Ok(payload.len()), true)
        })
    }

    /// Hands the next message to `f` in place and commits it after `f` returns (so a consumer
    /// that dies inside `f` gets the message again after a restart). `Ok(None)` if empty.
    pub fn pop_with<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Result<Option<R>, PopError> {
        self.pop_inner(|_, payload| (Ok(f(payload)), true))
    }
}

impl<M: RingMemory> Drop for Consumer<M> {
    fn drop(&mut self) {
        self.mem.release(Role::Consumer);
    }
}

#[cfg_attr(any(target_arch = "x86_64", target_arch = "aarch64"), repr(align(128)))]
#[derive(Debug)]
struct CachePadded<T>(T);

/// An in-process ring on the heap: the model-checking (loom) and Miri backing of the ring
/// algorithm, usable between threads too.
pub struct HeapRing {
    geometry: RingGeometry,
    head: CachePadded<AtomicU64>,
    tail: CachePadded<AtomicU64>,
    producer_claimed: AtomicBool,
    consumer_claimed: AtomicBool,
    slots: Box<[sync::UnsafeCell<Box<[u8]>>]>,
}

impl std::fmt::Debug for HeapRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeapRing")
            .field("geometry", &self.geometry)
            .field("head", &self.head.0)
            .field("tail", &self.tail.0)
            .finish_non_exhaustive()
    }
}

impl HeapRing {
    /// A ring with empty (zeroed) slots; counters at 0.
    pub fn new(geometry: RingGeometry) -> Result<Arc<Self>, ConfigError> {
        geometry.validate("heap")?;
        let slots = (0..geometry.slot_count)
            .map(|_| {
                sync::UnsafeCell::new(vec![0u8; geometry.slot_size as usize].into_boxed_slice())
            })
            .collect();
        Ok(Arc::new(Self {
            geometry,
            head: CachePadded(AtomicU64::new(0)),
            tail: CachePadded(AtomicU64::new(0)),
            producer_claimed: AtomicBool::new(false),
            consumer_claimed: AtomicBool::new(false),
            slots,
        }))
    }

    fn claim_flag(&self, role: Role) -> &AtomicBool {
        match role {
            Role::Producer => &self.producer_claimed,
            Role::Consumer => &self.consumer_claimed,
        }
    }
}

// SAFETY: the slots are only accessed through `with_slot`/`with_slot_mut`, whose callers
// (the producer and consumer handles, one of each thanks to the claims) access a slot
// exclusively per the ring protocol; everything else is atomics.
unsafe impl Sync for HeapRing {}

// SAFETY: counters are two distinct atomics, slots are `slot_count` distinct boxes of
// `slot_size` bytes owned by `self`, claims are flags taken with an Acquire CAS and released
// with a Release store.
unsafe impl RingMemory for HeapRing {
    fn geometry(&self) -> RingGeometry {
        self.geometry
    }
    fn head(&self) -> &AtomicU64 {
        &self.head.0
    }
    fn tail(&self) -> &AtomicU64 {
        &self.tail.0
    }
    fn claim(&self, role: Role) -> Result<(), RoleTaken> {
        self.claim_flag(role)
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .map(drop)
            .map_err(|_| RoleTaken {
                role,
                holder_pid: None,
            })
    }
    fn release(&self, role: Role) {
        self.claim_flag(role).store(false, Ordering::Release);
    }
    unsafe fn with_slot_mut<R>(&self, index: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
        self.slots[index].with_mut(|slot| {
            // SAFETY: the caller has exclusive access to this slot (our contract), and the
            // pointer comes from a live cell owned by `self`.
            f(unsafe { &mut *slot })
        })
    }
    unsafe fn with_slot<R>(&self, index: usize, f: impl FnOnce(&[u8]) -> R) -> R {
        self.slots[index].with(|slot| {
            // SAFETY: nobody writes this slot meanwhile (our contract), and the pointer comes
            // from a live cell owned by `self`.
            f(unsafe { &*slot })
        })
    }
}

/// The mmap backing: the named ring file and the handles on it.
#[cfg(not(loom))]
mod region {
    use super::*;
    use std::fs::{File, OpenOptions};
    use std::io;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU32, AtomicU64 as StdAtomicU64};
    use std::time::{Duration, Instant};

    const OFF_VERSION: usize = 8;
    const OFF_HEADER_SIZE: usize = 12;
    const OFF_TOTAL_SIZE: usize = 16;
    const OFF_POLICY_GEOMETRY: usize = 24;
    const OFF_TELEMETRY_GEOMETRY: usize = 32;
    const OFF_GENERATION: usize = 40;
    const OFF_CREATOR_PID: usize = 48;
    const OFF_STATE: usize = 52;
    const OFF_POLICY_RING: usize = 56;
    const OFF_TELEMETRY_RING: usize = 64;
    /// Offsets within a ring's control block.
    const RING_HEAD: usize = 0;
    const RING_PRODUCER_PID: usize = 8;
    const RING_TAIL: usize = CACHE_LINE;
    const RING_CONSUMER_PID: usize = CACHE_LINE + 8;
    /// How long `create`/`attach` wait for another process to finish initialising the file.
    const LOCK_WAIT: Duration = Duration::from_secs(2);

    /// Why a ring file could not be created or attached.
    #[derive(Debug, thiserror::Error)]
    pub enum ShmError {
        #[error("ring file {path}: {op}: {source}")]
        Io {
            path: String,
            op: &'static str,
            source: io::Error,
        },
        #[error("ring file {path}: invalid configuration: {source}")]
        Config { path: String, source: ConfigError },
        #[error(
            "ring file {path}: not a NetStorm ring file (magic {found:02x?}, expected {:02x?})",
            MAGIC
        )]
        NotARingFile { path: String, found: [u8; 8] },
        #[error("ring file {path}: truncated: {len} bytes, {what} needs {needed}")]
        Truncated {
            path: String,
            len: u64,
            what: &'static str,
            needed: u64,
        },
        #[error("ring file {path}: {field} {found}, expected {expected}")]
        Mismatch {
            path: String,
            field: &'static str,
            found: u64,
            expected: u64,
        },
        #[error("ring file {path}: {field} {found}, expected {expected}; not re-initialised because another process has it mapped")]
        InUseMismatch {
            path: String,
            field: &'static str,
            found: u64,
            expected: u64,
        },
        #[error("ring file {path}: not initialised (state {state:#x}): its creator died while initialising it")]
        NotReady { path: String, state: u32 },
        #[error(
            "ring file {path}: still locked by another process after {:?} (initialising it?)",
            LOCK_WAIT
        )]
        Busy { path: String },
        #[error("ring file {path}: {ring} ring: {source}")]
        RoleTaken {
            path: String,
            ring: &'static str,
            source: RoleTaken,
        },
    }

    /// A mapped ring file; dropping it (and every handle) unmaps it and releases the lock.
    #[derive(Debug)]
    struct Mapping {
        map: memmap2::MmapRaw,
        /// Holds the shared `flock` for as long as the file is mapped. Dropped after `map`.
        _file: File,
    }

    /// One ring inside a mapped ring file.
    #[derive(Debug)]
    pub struct ShmRingMemory {
        mapping: Arc<Mapping>,
        /// Offset of the ring's control block in the mapping.
        offset: usize,
        geometry: RingGeometry,
    }

    impl ShmRingMemory {
        fn ptr(&self, at: usize) -> *mut u8 {
            // In bounds: `at` < the ring's file bytes, checked against the mapping length in
            // `ShmRegion::map`; `wrapping_add` keeps this safe code anyway.
            self.mapping.map.as_mut_ptr().wrapping_add(self.offset + at)
        }
        fn pid_word(&self, role: Role) -> &AtomicU32 {
            let at = match role {
                Role::Producer => RING_PRODUCER_PID,
                Role::Consumer => RING_CONSUMER_PID,
            };
            // SAFETY: the word is inside the mapping (checked in `ShmRegion::map`), 4-aligned
            // (the mapping is page-aligned, ring offsets are multiples of 128), lives as long
            // as `self.mapping`, and is only ever accessed atomically by every process.
            unsafe { AtomicU32::from_ptr(self.ptr(at).cast()) }
        }
    }

    fn pid_alive(pid: u32) -> bool {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return false;
        };
        if pid <= 0 {
            return false;
        }
        // SAFETY: kill with signal 0 only checks for existence/permission; pid > 0 names one
        // process, never a group.
        let rc = unsafe { libc::kill(pid, 0) };
        rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }

    // SAFETY: head/tail are fixed 8-aligned words in the ring's control block; slots are the
    // `slot_count` distinct `slot_size`-byte ranges after it, all inside the mapping (checked
    // in `ShmRegion::map`) that the Arc keeps alive; claims are pid words taken with AcqRel CAS
    // and released with Release stores, refusing live holders.
    unsafe impl RingMemory for ShmRingMemory {
        fn geometry(&self) -> RingGeometry {
            self.geometry
        }
        fn head(&self) -> &StdAtomicU64 {
            // SAFETY: in the mapping, 8-aligned (page-aligned mapping, offsets multiples of
            // 128), alive as long as `self`, only accessed atomically.
            unsafe { StdAtomicU64::from_ptr(self.ptr(RING_HEAD).cast()) }
        }
        fn tail(&self) -> &StdAtomicU64 {
            // SAFETY: as for `head`.
            unsafe { StdAtomicU64::from_ptr(self.ptr(RING_TAIL).cast()) }
        }
        fn claim(&self, role: Role) -> Result<(), RoleTaken> {
            let word = self.pid_word(role);
            let me = std::process::id();
            let mut current = word.load(Ordering::Acquire);
            loop {
                if current != 0 && (current == me || pid_alive(current)) {
                    return Err(RoleTaken {
                        role,
                        holder_pid: Some(current),
                    });
                }
                // Free, or its holder died without releasing it: take it over.
                match word.compare_exchange(current, me, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => return Ok(()),
                    Err(now) => current = now,
                }
            }
        }
        fn release(&self, role: Role) {
            let me = std::process::id();
            let _ =
                self.pid_word(role)
                    .compare_exchange(me, 0, Ordering::Release, Ordering::Relaxed);
        }
        unsafe fn with_slot_mut<R>(&self, index: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
            let at = RING_CONTROL_SIZE + index * self.geometry.slot_size as usize;
            // SAFETY: index < slot_count (caller), so the slot is inside the mapping and
            // disjoint from the counters and other slots; the caller has exclusive access to
            // it under the ring protocol, so no other reference to these bytes exists.
            f(unsafe {
                std::slice::from_raw_parts_mut(self.ptr(at), self.geometry.slot_size as usize)
            })
        }
        unsafe fn with_slot<R>(&self, index: usize, f: impl FnOnce(&[u8]) -> R) -> R {
            let at = RING_CONTROL_SIZE + index * self.geometry.slot_size as usize;
            // SAFETY: index < slot_count (caller), so the slot is inside the mapping; nobody
            // writes it while we read under the ring protocol.
            f(
                unsafe {
                    std::slice::from_raw_parts(self.ptr(at), self.geometry.slot_size as usize)
                },
            )
        }
    }

    /// Producer handle on a ring file.
    pub type ShmProducer = Producer<ShmRingMemory>;
    /// Consumer handle on a ring file.
    pub type ShmConsumer = Consumer<ShmRingMemory>;

    /// A mapped ring file with a policy ring and a telemetry ring.
    #[derive(Debug)]
    pub struct ShmRegion {
        path: PathBuf,
        config: RingConfig,
        generation: u64,
        mapping: Arc<Mapping>,
    }

    fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> ShmError + 'a {
        move |source| ShmError::Io {
            path: path.display().to_string(),
            op,
            source,
        }
    }

    /// `flock(op | LOCK_NB)`: Ok(true) locked, Ok(false) would block.
    fn try_flock(file: &File, op: libc::c_int) -> io::Result<bool> {
        loop {
            // SAFETY: flock on a file descriptor we own; no memory is passed.
            let rc = unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) };
            if rc == 0 {
                return Ok(true);
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EWOULDBLOCK) => return Ok(false),
                Some(libc::EINTR) => continue,
                _ => return Err(err),
            }
        }
    }

    /// Takes the shared lock, waiting up to [`LOCK_WAIT`] for an initialising creator.
    fn lock_shared(file: &File, path: &Path) -> Result<(), ShmError> {
        let start = Instant::now();
        while !try_flock(file, libc::LOCK_SH).map_err(io_err(path, "flock"))? {
            if start.elapsed() > LOCK_WAIT {
                return Err(ShmError::Busy {
                    path: path.display().to_string(),
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    fn rd_u32(h: &[u8], at: usize) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&h[at..at + 4]);
        u32::from_ne_bytes(b)
    }
    fn rd_u64(h: &[u8], at: usize) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&h[at..at + 8]);
        u64::from_ne_bytes(b)
    }

    fn encode_header(config: &RingConfig, generation: u64, state: u32) -> [u8; HEADER_SIZE] {
        let mut h = [0u8; HEADER_SIZE];
        h[..8].copy_from_slice(&MAGIC);
        h[OFF_VERSION..][..4].copy_from_slice(&LAYOUT_VERSION.to_ne_bytes());
        h[OFF_HEADER_SIZE..][..4].copy_from_slice(&(HEADER_SIZE as u32).to_ne_bytes());
        h[OFF_TOTAL_SIZE..][..8].copy_from_slice(&config.total_size().to_ne_bytes());
        h[OFF_POLICY_GEOMETRY..][..4].copy_from_slice(&config.policy.slot_size.to_ne_bytes());
        h[OFF_POLICY_GEOMETRY + 4..][..4].copy_from_slice(&config.policy.slot_count.to_ne_bytes());
        h[OFF_TELEMETRY_GEOMETRY..][..4].copy_from_slice(&config.telemetry.slot_size.to_ne_bytes());
        h[OFF_TELEMETRY_GEOMETRY + 4..][..4]
            .copy_from_slice(&config.telemetry.slot_count.to_ne_bytes());
        h[OFF_GENERATION..][..8].copy_from_slice(&generation.to_ne_bytes());
        h[OFF_CREATOR_PID..][..4].copy_from_slice(&std::process::id().to_ne_bytes());
        h[OFF_STATE..][..4].copy_from_slice(&state.to_ne_bytes());
        h[OFF_POLICY_RING..][..8].copy_from_slice(&config.policy_offset().to_ne_bytes());
        h[OFF_TELEMETRY_RING..][..8].copy_from_slice(&config.telemetry_offset().to_ne_bytes());
        h
    }

    /// Reads and checks the header and the file length against `expected`; returns the
    /// generation. Errors name the file and the first mismatching field.
    fn check_file(file: &File, path: &Path, expected: &RingConfig) -> Result<u64, ShmError> {
        let p = || path.display().to_string();
        let len = file.metadata().map_err(io_err(path, "stat"))?.len();
        let mut h = [0u8; HEADER_SIZE];
        let readable = (len as usize).min(HEADER_SIZE);
        file.read_exact_at(&mut h[..readable], 0)
            .map_err(io_err(path, "read header"))?;
        if len < MAGIC.len() as u64 {
            return Err(ShmError::Truncated {
                path: p(),
                len,
                what: "the header",
                needed: HEADER_SIZE as u64,
            });
        }
        if h[..8] != MAGIC {
            let mut found = [0u8; 8];
            found.copy_from_slice(&h[..8]);
            return Err(ShmError::NotARingFile { path: p(), found });
        }
        if len < HEADER_SIZE as u64 {
            return Err(ShmError::Truncated {
                path: p(),
                len,
                what: "the header",
                needed: HEADER_SIZE as u64,
            });
        }
        let mismatch = |field, found: u64, expected: u64| {
            if found == expected {
                Ok(())
            } else {
                Err(ShmError::Mismatch {
                    path: p(),
                    field,
                    found,
                    expected,
                })
            }
        };
        mismatch(
            "layout version",
            rd_u32(&h, OFF_VERSION).into(),
            LAYOUT_VERSION.into(),
        )?;
        mismatch(
            "header size",
            rd_u32(&h, OFF_HEADER_SIZE).into(),
            HEADER_SIZE as u64,
        )?;
        let state = rd_u32(&h, OFF_STATE);
        if state != STATE_READY {
            return Err(ShmError::NotReady { path: p(), state });
        }
        mismatch(
            "policy slot size",
            rd_u32(&h, OFF_POLICY_GEOMETRY).into(),
            expected.policy.slot_size.into(),
        )?;
        mismatch(
            "policy slot count",
            rd_u32(&h, OFF_POLICY_GEOMETRY + 4).into(),
            expected.policy.slot_count.into(),
        )?;
        mismatch(
            "telemetry slot size",
            rd_u32(&h, OFF_TELEMETRY_GEOMETRY).into(),
            expected.telemetry.slot_size.into(),
        )?;
        mismatch(
            "telemetry slot count",
            rd_u32(&h, OFF_TELEMETRY_GEOMETRY + 4).into(),
            expected.telemetry.slot_count.into(),
        )?;
        mismatch(
            "policy ring offset",
            rd_u64(&h, OFF_POLICY_RING),
            expected.policy_offset(),
        )?;
        mismatch(
            "telemetry ring offset",
            rd_u64(&h, OFF_TELEMETRY_RING),
            expected.telemetry_offset(),
        )?;
        mismatch(
            "total size",
            rd_u64(&h, OFF_TOTAL_SIZE),
            expected.total_size(),
        )?;
        if len < expected.total_size() {
            return Err(ShmError::Truncated {
                path: p(),
                len,
                what: "the rings",
                needed: expected.total_size(),
            });
        }
        mismatch("file length", len, expected.total_size())?;
        Ok(rd_u64(&h, OFF_GENERATION))
    }

    impl ShmRegion {
        /// The data plane's side: creates the ring file, or re-initialises it if nobody has it
        /// mapped, or attaches to it if another process has it mapped and its layout matches
        /// (see "Creation rule" in the module docs).
        pub fn create(path: impl AsRef<Path>, config: RingConfig) -> Result<Self, ShmError> {
            let path = path.as_ref();
            config.validate().map_err(|source| ShmError::Config {
                path: path.display().to_string(),
                source,
            })?;
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(path)
                .map_err(io_err(path, "open"))?;
            for _ in 0..100 {
                if try_flock(&file, libc::LOCK_EX).map_err(io_err(path, "flock"))? {
                    let generation = Self::initialise(&file, path, &config)?;
                    // Downgrade; another creator sneaking in meanwhile finds an initialised file
                    // nobody has mapped and initialises it again, which harms nobody.
                    lock_shared(&file, path)?;
                    return Self::map(file, path, config, generation);
                }
                // Somebody has it mapped (shared) or is initialising it (exclusive).
                if try_flock(&file, libc::LOCK_SH).map_err(io_err(path, "flock"))? {
                    return match check_file(&file, path, &config) {
                        Ok(generation) => Self::map(file, path, config, generation),
                        // Still empty: an attacher held the lock for a moment while checking
                        // the fresh file (and found it not ready). Try again to initialise it.
                        Err(ShmError::Truncated { len: 0, .. }) => {
                            std::thread::sleep(Duration::from_millis(
                                LOCK_WAIT.as_millis() as u64 / 100,
                            ));
                            continue;
                        }
                        Err(ShmError::Mismatch {
                            path,
                            field,
                            found,
                            expected,
                        }) => Err(ShmError::InUseMismatch {
                            path,
                            field,
                            found,
                            expected,
                        }),
                        Err(e) => Err(e),
                    };
                }
                std::thread::sleep(Duration::from_millis(LOCK_WAIT.as_millis() as u64 / 100));
            }
            Err(ShmError::Busy {
                path: path.display().to_string(),
            })
        }

        /// Writes a fresh layout; the caller holds the exclusive lock. Returns the generation.
        fn initialise(file: &File, path: &Path, config: &RingConfig) -> Result<u64, ShmError> {
            let mut old = [0u8; HEADER_SIZE];
            let previous_generation = match file.read_exact_at(&mut old, 0) {
                Ok(()) if old[..8] == MAGIC => rd_u64(&old, OFF_GENERATION),
                _ => 0,
            };
            let generation = previous_generation.wrapping_add(1);
            // Truncating to 0 zeroes everything (counters, claims, state) before sizing.
            file.set_len(0).map_err(io_err(path, "truncate"))?;
            file.set_len(config.total_size())
                .map_err(io_err(path, "resize"))?;
            let header = encode_header(config, generation, 0);
            file.write_all_at(&header, 0)
                .map_err(io_err(path, "write header"))?;
            // The state word last: a creator dying before this leaves a file attach refuses.
            file.write_all_at(&STATE_READY.to_ne_bytes(), OFF_STATE as u64)
                .map_err(io_err(path, "write header"))?;
            Ok(generation)
        }

        /// The control plane's side: attaches to an initialised ring file whose layout matches
        /// `expected`; never modifies the layout.
        pub fn attach(path: impl AsRef<Path>, expected: RingConfig) -> Result<Self, ShmError> {
            let path = path.as_ref();
            expected.validate().map_err(|source| ShmError::Config {
                path: path.display().to_string(),
                source,
            })?;
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(io_err(path, "open"))?;
            lock_shared(&file, path)?;
            let generation = check_file(&file, path, &expected)?;
            Self::map(file, path, expected, generation)
        }

        fn map(
            file: File,
            path: &Path,
            config: RingConfig,
            generation: u64,
        ) -> Result<Self, ShmError> {
            let map = memmap2::MmapRaw::map_raw(&file).map_err(io_err(path, "mmap"))?;
            if (map.len() as u64) < config.total_size() {
                return Err(ShmError::Truncated {
                    path: path.display().to_string(),
                    len: map.len() as u64,
                    what: "the rings",
                    needed: config.total_size(),
                });
            }
            Ok(Self {
                path: path.to_path_buf(),
                config,
                generation,
                mapping: Arc::new(Mapping { map, _file: file }),
            })
        }

        pub fn path(&self) -> &Path {
            &self.path
        }
        pub fn config(&self) -> RingConfig {
            self.config
        }
        /// Initialisation count of the file (changes when the data plane re-initialised it).
        pub fn generation(&self) -> u64 {
            self.generation
        }

        fn ring(&self, ring: &'static str) -> Arc<ShmRingMemory> {
            let (offset, geometry) = match ring {
                "policy" => (self.config.policy_offset(), self.config.policy),
                _ => (self.config.telemetry_offset(), self.config.telemetry),
            };
            Arc::new(ShmRingMemory {
                mapping: self.mapping.clone(),
                offset: offset as usize,
                geometry,
            })
        }

        fn role_err(&self, ring: &'static str) -> impl FnOnce(RoleTaken) -> ShmError + '_ {
            move |source| ShmError::RoleTaken {
                path: self.path.display().to_string(),
                ring,
                source,
            }
        }

        /// The control plane's end of the policy ring.
        pub fn policy_producer(&self) -> Result<ShmProducer, ShmError> {
            Producer::attach(self.ring("policy")).map_err(self.role_err("policy"))
        }
        /// The data plane's end of the policy ring.
        pub fn policy_consumer(&self) -> Result<ShmConsumer, ShmError> {
            Consumer::attach(self.ring("policy")).map_err(self.role_err("policy"))
        }
        /// The data plane's end of the telemetry ring.
        pub fn telemetry_producer(&self) -> Result<ShmProducer, ShmError> {
            Producer::attach(self.ring("telemetry")).map_err(self.role_err("telemetry"))
        }
        /// The control plane's end of the telemetry ring.
        pub fn telemetry_consumer(&self) -> Result<ShmConsumer, ShmError> {
            Consumer::attach(self.ring("telemetry")).map_err(self.role_err("telemetry"))
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[cfg(miri)]
    const MESSAGES: u64 = 40;
    #[cfg(not(miri))]
    const MESSAGES: u64 = 10_000;

    fn geometry(slot_size: u32, slot_count: u32) -> RingGeometry {
        RingGeometry {
            slot_size,
            slot_count,
        }
    }

    fn message(seq: u64) -> Vec<u8> {
        let len = (seq % 13) as usize;
        let mut m = seq.to_le_bytes().to_vec();
        m.extend((0..len).map(|i| (seq as u8).wrapping_mul(31).wrapping_add(i as u8)));
        m
    }

    #[test]
    fn shm_heap_fifo_full_and_empty() {
        let ring = HeapRing::new(geometry(32, 3)).unwrap();
        let mut p = Producer::attach(ring.clone()).unwrap();
        let mut c = Consumer::attach(ring.clone()).unwrap();
        let mut buf = [0u8; 28];
        assert_eq!(c.try_pop(&mut buf), Ok(None));
        for i in 0..3u8 {
            p.try_push(&[i; 5]).unwrap();
        }
        assert_eq!(p.try_push(b"x"), Err(PushError::Full));
        assert_eq!(c.pending(), Ok(3));
        assert_eq!(c.try_pop(&mut buf), Ok(Some(5)));
        assert_eq!(&buf[..5], &[0; 5]);
        p.try_push(b"x").unwrap();
        for expected in [&[1u8; 5][..], &[2; 5], b"x"] {
            let got = c.pop_with(|m| m.to_vec()).unwrap().unwrap();
            assert_eq!(got, expected);
        }
        assert_eq!(c.pop_with(|m| m.len()), Ok(None));
        assert_eq!((p.next_seq(), c.next_seq()), (4, 4));
    }

    #[test]
    fn shm_heap_limits_and_small_buffer() {
        let ring = HeapRing::new(geometry(16, 2)).unwrap();
        let mut p = Producer::attach(ring.clone()).unwrap();
        let mut c = Consumer::attach(ring.clone()).unwrap();
        assert_eq!(p.max_payload(), 12);
        assert_eq!(
            p.try_push(&[0; 13]),
            Err(PushError::TooLarge { len: 13, max: 12 })
        );
        p.try_push(&[7; 12]).unwrap();
        p.try_push(&[]).unwrap();
        let mut small = [0u8; 4];
        assert_eq!(
            c.try_pop(&mut small),
            Err(PopError::BufferTooSmall {
                seq: 0,
                needed: 12,
                got: 4
            })
        );
        // Still there.
        let mut buf = [0u8; 12];
        assert_eq!(c.try_pop(&mut buf), Ok(Some(12)));
        assert_eq!(c.try_pop(&mut small), Ok(Some(0)));
        assert!(HeapRing::new(geometry(12, 2)).is_err());
        assert!(HeapRing::new(geometry(20, 2)).is_err());
        assert!(HeapRing::new(geometry(16, 0)).is_err());
    }

    #[test]
    fn shm_heap_single_producer_single_consumer_enforced() {
        let ring = HeapRing::new(geometry(16, 2)).unwrap();
        let p = Producer::attach(ring.clone()).unwrap();
        let c = Consumer::attach(ring.clone()).unwrap();
        let taken = Producer::attach(ring.clone()).unwrap_err();
        assert_eq!(
            taken,
            RoleTaken {
                role: Role::Producer,
                holder_pid: None
            }
        );
        assert!(Consumer::attach(ring.clone()).is_err());
        drop((p, c));
        Producer::attach(ring.clone()).unwrap();
        Consumer::attach(ring).unwrap();
    }

    #[test]
    fn shm_heap_reattach_both_sides_exactly_once_in_order() {
        let ring = HeapRing::new(geometry(32, 4)).unwrap();
        let mut p = Producer::attach(ring.clone()).unwrap();
        let mut c = Consumer::attach(ring.clone()).unwrap();
        let mut buf = [0u8; 28];
        let mut next_expected = 0;
        let mut seq = 0;
        while seq < MESSAGES {
            if seq % 7 == 3 {
                // Producer restart: resumes at the published head.
                drop(p);
                p = Producer::attach(ring.clone()).unwrap();
                assert_eq!(p.next_seq(), seq);
            }
            match p.try_push(&message(seq)) {
                Ok(()) => seq += 1,
                Err(PushError::Full) => {}
                Err(e) => panic!("{e}"),
            }
            if seq % 5 == 0 {
                drop(c);
                c = Consumer::attach(ring.clone()).unwrap();
                assert_eq!(c.next_seq(), next_expected);
            }
            if seq % 3 != 0 {
                while let Some(n) = c.try_pop(&mut buf).unwrap() {
                    assert_eq!(&buf[..n], &message(next_expected)[..]);
                    next_expected += 1;
                }
            }
        }
        while let Some(n) = c.try_pop(&mut buf).unwrap() {
            assert_eq!(&buf[..n], &message(next_expected)[..]);
            next_expected += 1;
        }
        assert_eq!(next_expected, MESSAGES);
    }

    #[test]
    fn shm_heap_threads() {
        let ring = HeapRing::new(geometry(32, 4)).unwrap();
        let mut p = Producer::attach(ring.clone()).unwrap();
        let mut c = Consumer::attach(ring).unwrap();
        let producer = std::thread::spawn(move || {
            let mut seq = 0;
            while seq < MESSAGES {
                match p.try_push(&message(seq)) {
                    Ok(()) => seq += 1,
                    Err(PushError::Full) => std::thread::yield_now(),
                    Err(e) => panic!("{e}"),
                }
            }
        });
        let mut next = 0;
        while next < MESSAGES {
            match c.pop_with(|m| m.to_vec()).unwrap() {
                Some(m) => {
                    assert_eq!(m, message(next));
                    next += 1;
                }
                None => std::thread::yield_now(),
            }
        }
        producer.join().unwrap();
    }

    #[test]
    fn shm_heap_corruption_is_reported_not_panicking() {
        let ring = HeapRing::new(geometry(16, 2)).unwrap();
        let mut p = Producer::attach(ring.clone()).unwrap();
        let mut c = Consumer::attach(ring.clone()).unwrap();
        p.try_push(b"ok").unwrap();
        p.try_push(b"bad").unwrap();
        // A protocol-breaking writer scribbles a huge length into slot 1.
        // SAFETY: single-threaded test; nobody else touches slot 1 right now.
        unsafe { ring.with_slot_mut(1, |s| s[..4].copy_from_slice(&u32::MAX.to_ne_bytes())) };
        let mut buf = [0u8; 12];
        assert_eq!(c.try_pop(&mut buf), Ok(Some(2)));
        assert_eq!(
            c.try_pop(&mut buf),
            Err(PopError::CorruptSlot {
                seq: 1,
                len: u32::MAX,
                max: 12
            })
        );
        assert_eq!(c.try_pop(&mut buf), Ok(None), "corrupt slot skipped");
        // Counters out of range.
        ring.head().store(100, Ordering::Release);
        assert!(matches!(
            c.try_pop(&mut buf),
            Err(PopError::Corrupt {
                head: 100,
                tail: 2,
                ..
            })
        ));
        ring.tail().store(200, Ordering::Release);
        assert_eq!(
            p.try_push(b"a"),
            Err(PushError::Corrupt {
                head: 2,
                tail: 200,
                slot_count: 2
            })
        );
    }

    /// mmap tests: real files (flock and mmap are not available under Miri).
    #[cfg(not(miri))]
    mod file {
        use super::*;
        use std::os::unix::fs::FileExt;
        use std::path::PathBuf;

        pub(super) struct TempRingFile(pub PathBuf);
        impl TempRingFile {
            pub fn new(tag: &str) -> Self {
                let dir = if std::path::Path::new("/dev/shm").is_dir() {
                    PathBuf::from("/dev/shm")
                } else {
                    std::env::temp_dir()
                };
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .subsec_nanos();
                Self(dir.join(format!(
                    "netstorm-unit-{tag}-{}-{nanos}",
                    std::process::id()
                )))
            }
        }
        impl Drop for TempRingFile {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }

        fn small() -> RingConfig {
            RingConfig {
                policy: geometry(64, 4),
                telemetry: geometry(16, 8),
            }
        }

        #[test]
        fn shm_file_roundtrip_and_layout() {
            let f = TempRingFile::new("roundtrip");
            let dp = ShmRegion::create(&f.0, small()).unwrap();
            let cp = ShmRegion::attach(&f.0, small()).unwrap();
            assert_eq!(dp.generation(), 1);
            assert_eq!(std::fs::metadata(&f.0).unwrap().len(), small().total_size());
            assert_eq!(small().telemetry_offset(), 128 + 256 + 256);
            let mut policy_tx = cp.policy_producer().unwrap();
            let mut policy_rx = dp.policy_consumer().unwrap();
            let mut tele_tx = dp.telemetry_producer().unwrap();
            let mut tele_rx = cp.telemetry_consumer().unwrap();
            policy_tx.try_push(b"policy-1").unwrap();
            tele_tx.try_push(b"t1").unwrap();
            let mut buf = [0u8; 64];
            assert_eq!(policy_rx.try_pop(&mut buf), Ok(Some(8)));
            assert_eq!(&buf[..8], b"policy-1");
            assert_eq!(tele_rx.try_pop(&mut buf), Ok(Some(2)));
            assert_eq!(&buf[..2], b"t1");
            assert_eq!(tele_rx.try_pop(&mut buf), Ok(None));
            // Roles are exclusive across mappings within this process too.
            let err = dp.policy_producer().unwrap_err();
            assert!(
                err.to_string()
                    .contains("policy ring: ring producer already attached by pid"),
                "{err}"
            );
        }

        #[test]
        fn shm_file_producer_reattach_new_mapping_exactly_once() {
            let f = TempRingFile::new("reattach");
            let dp = ShmRegion::create(&f.0, small()).unwrap();
            let mut rx = dp.policy_consumer().unwrap();
            let mut buf = [0u8; 64];
            let mut next = 0u64;
            let mut seq = 0u64;
            for incarnation in 0..4 {
                // A "new process": a new mapping of the same file.
                let cp = ShmRegion::attach(&f.0, small()).unwrap();
                let mut tx = cp.policy_producer().unwrap();
                assert_eq!(
                    tx.next_seq(),
                    seq,
                    "incarnation {incarnation} resumes at the head"
                );
                for _ in 0..3 {
                    tx.try_push(&message(seq)).unwrap();
                    seq += 1;
                }
                // Consume only some, leave the rest pending across the restart.
                while rx.pending().unwrap() > 1 {
                    let n = rx.try_pop(&mut buf).unwrap().unwrap();
                    assert_eq!(&buf[..n], &message(next)[..]);
                    next += 1;
                }
                drop(tx);
                drop(cp);
            }
            while let Some(n) = rx.try_pop(&mut buf).unwrap() {
                assert_eq!(&buf[..n], &message(next)[..]);
                next += 1;
            }
            assert_eq!(next, seq);
            // And the consumer side re-attaching through a fresh create (data-plane restart
            // while nobody else has it mapped re-initialises: generation 2, empty rings).
            drop(rx);
            drop(dp);
            let dp = ShmRegion::create(&f.0, small()).unwrap();
            assert_eq!(dp.generation(), 2);
            assert_eq!(dp.policy_consumer().unwrap().pending(), Ok(0));
        }

        #[test]
        fn shm_file_create_while_mapped_keeps_pending_messages() {
            let f = TempRingFile::new("dp-restart");
            let dp = ShmRegion::create(&f.0, small()).unwrap();
            let cp = ShmRegion::attach(&f.0, small()).unwrap();
            let mut tx = cp.policy_producer().unwrap();
            tx.try_push(b"before").unwrap();
            drop(dp); // the data plane restarts; the control plane keeps the file mapped
            let dp = ShmRegion::create(&f.0, small()).unwrap();
            assert_eq!(dp.generation(), 1, "not re-initialised while mapped");
            let mut rx = dp.policy_consumer().unwrap();
            assert_eq!(rx.pop_with(|m| m.to_vec()), Ok(Some(b"before".to_vec())));
            // A mismatching create is refused while the file is mapped.
            let other = RingConfig {
                policy: geometry(128, 4),
                ..small()
            };
            let err = ShmRegion::create(&f.0, other).unwrap_err();
            assert!(
                matches!(
                    err,
                    ShmError::InUseMismatch {
                        field: "policy slot size",
                        ..
                    }
                ),
                "{err}"
            );
            drop((tx, rx, cp, dp));
            // Nobody has it mapped: re-initialised with the new geometry.
            let dp = ShmRegion::create(&f.0, other).unwrap();
            assert_eq!(dp.generation(), 2);
            assert_eq!(dp.config(), other);
        }

        fn attach_err(f: &TempRingFile, expected: RingConfig) -> String {
            ShmRegion::attach(&f.0, expected).unwrap_err().to_string()
        }

        #[test]
        fn shm_file_attach_refuses_mismatches_naming_the_field() {
            let f = TempRingFile::new("mismatch");
            let p = f.0.display().to_string();
            drop(ShmRegion::create(&f.0, small()).unwrap());
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&f.0)
                .unwrap();

            // Wrong slot size / count (the expectation differs from the file).
            let wrong_slot = RingConfig {
                telemetry: geometry(32, 8),
                ..small()
            };
            assert_eq!(
                attach_err(&f, wrong_slot),
                format!("ring file {p}: telemetry slot size 16, expected 32")
            );
            let wrong_count = RingConfig {
                policy: geometry(64, 8),
                ..small()
            };
            assert_eq!(
                attach_err(&f, wrong_count),
                format!("ring file {p}: policy slot count 4, expected 8")
            );

            // Wrong layout version.
            file.write_all_at(&3u32.to_ne_bytes(), 8).unwrap();
            assert_eq!(
                attach_err(&f, small()),
                format!("ring file {p}: layout version 3, expected 1")
            );
            file.write_all_at(&LAYOUT_VERSION.to_ne_bytes(), 8).unwrap();

            // Wrong total size in the header.
            let total = small().total_size();
            file.write_all_at(&(total + 128).to_ne_bytes(), 16).unwrap();
            assert_eq!(
                attach_err(&f, small()),
                format!(
                    "ring file {p}: total size {}, expected {total}",
                    total + 128
                )
            );
            file.write_all_at(&total.to_ne_bytes(), 16).unwrap();
            ShmRegion::attach(&f.0, small()).unwrap();

            // File longer than its header says.
            file.set_len(total + 4096).unwrap();
            assert_eq!(
                attach_err(&f, small()),
                format!(
                    "ring file {p}: file length {}, expected {total}",
                    total + 4096
                )
            );

            // Truncated rings, truncated header.
            file.set_len(total - 100).unwrap();
            let err = attach_err(&f, small());
            assert!(
                err.starts_with(&format!("ring file {p}: truncated: {} bytes", total - 100)),
                "{err}"
            );
            file.set_len(60).unwrap();
            let err = attach_err(&f, small());
            assert_eq!(
                err,
                format!("ring file {p}: truncated: 60 bytes, the header needs 128")
            );

            // Not initialised (creator died before writing the state word).
            file.set_len(0).unwrap();
            file.set_len(total).unwrap();
            file.write_all_at(&MAGIC, 0).unwrap();
            file.write_all_at(&LAYOUT_VERSION.to_ne_bytes(), 8).unwrap();
            file.write_all_at(&(HEADER_SIZE as u32).to_ne_bytes(), 12)
                .unwrap();
            let err = attach_err(&f, small());
            assert!(err.contains("not initialised"), "{err}");

            // Not a ring file at all.
            file.write_all_at(b"[scenario]\nname = 1\n", 0).unwrap();
            let err = attach_err(&f, small());
            assert!(
                err.starts_with(&format!("ring file {p}: not a NetStorm ring file")),
                "{err}"
            );

            // Missing file.
            drop(file);
            drop(f);
            let missing = TempRingFile::new("missing");
            let err = attach_err(&missing, small());
            assert!(
                err.starts_with(&format!("ring file {}: open:", missing.0.display())),
                "{err}"
            );

            // Bad configuration.
            let bad = RingConfig {
                policy: geometry(17, 4),
                ..small()
            };
            let err = ShmRegion::create(&missing.0, bad).unwrap_err().to_string();
            assert!(err.contains("policy ring: slot_size 17"), "{err}");
        }

        #[test]
        fn shm_file_create_reinitialises_garbage() {
            let f = TempRingFile::new("garbage");
            std::fs::write(&f.0, b"definitely not a ring file").unwrap();
            let dp = ShmRegion::create(&f.0, small()).unwrap();
            assert_eq!(dp.generation(), 1);
            let cp = ShmRegion::attach(&f.0, small()).unwrap();
            let mut tx = cp.telemetry_consumer().unwrap();
            assert_eq!(tx.pending(), Ok(0));
        }

        #[test]
        fn shm_config_toml_defaults_and_unknown_keys() {
            let c: RingConfig =
                toml::from_str("[policy]\nslot_size = 8192\nslot_count = 16\n").unwrap();
            assert_eq!(c.policy, geometry(8192, 16));
            assert_eq!(c.telemetry, RingConfig::default().telemetry);
            c.validate().unwrap();
            let err =
                toml::from_str::<RingConfig>("[policy]\nslot_size = 64\nslots = 2\n").unwrap_err();
            assert!(err.to_string().contains("slots"), "{err}");
            RingConfig::default().validate().unwrap();
            assert!(
                RingConfig::default().telemetry.max_payload()
                    >= crate::shm_records::TelemetryRecord::LEN
            );
        }
    }
}
