//! The ring algorithm over any [`RingMemory`]: [`Producer`] and [`Consumer`] (the protocol
//! and delivery rule are in the module docs of [`crate::shm`]).

use super::sync::Ordering;
use super::{PopError, PushError, RingMemory, Role, RoleTaken, SLOT_LEN_PREFIX};
use std::sync::Arc;

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
