//! [`HeapRing`]: a ring on the heap, the model-checking (loom) and Miri backing of the ring
//! algorithm, usable between threads too.

use super::sync::{self, AtomicBool, AtomicU64, Ordering};
use super::{ConfigError, RingGeometry, RingMemory, Role, RoleTaken};
use std::sync::Arc;

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
