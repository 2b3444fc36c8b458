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

mod heap;
#[cfg(not(loom))]
mod region;
mod ring;
#[cfg(all(test, not(loom)))]
mod tests;

pub use heap::HeapRing;
#[cfg(not(loom))]
pub use region::{ShmConsumer, ShmError, ShmProducer, ShmRegion, ShmRingMemory};
pub use ring::{Consumer, Producer};

use serde::{Deserialize, Serialize};

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

use sync::AtomicU64;

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
