//! What a path has to send: [`SendItem`]s (segment descriptors) in a [`SendQueue`] served
//! smallest progress first.

use crate::wire::PacketKind;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

/// A segment waiting to be sent. Ordered by `progress` first: every path serves the item
/// whose tree is least far along (segment index / segment count, 32-bit fixed point), so all
/// trees advance at the same fractional rate, as the fluid model assumes; FIFO order would
/// let one tree monopolize a link while another tree's downstream links sit idle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct SendItem {
    progress: u32,
    kind: u8,
    pub tree: u16,
    pub seg: u32,
}

impl SendItem {
    /// Segment `seg` of `seg_count` of tree `tree`, as a `kind` (reduce or broadcast) packet.
    #[inline]
    pub fn new(kind: PacketKind, tree: usize, seg: u32, seg_count: u32) -> Self {
        let progress = ((seg as u64) << 32) / (seg_count.max(1) as u64);
        Self {
            progress: progress as u32,
            kind: kind as u8,
            tree: tree as u16,
            seg,
        }
    }

    #[inline]
    pub fn is_broadcast(&self) -> bool {
        self.kind == PacketKind::BroadcastData as u8
    }

    #[inline]
    pub fn packet_kind(&self) -> PacketKind {
        if self.is_broadcast() {
            PacketKind::BroadcastData
        } else {
            PacketKind::ReduceData
        }
    }
}

/// The per-path queue of [`SendItem`]s, served smallest first. Items mostly arrive in
/// increasing order (segments complete in order), so they go to a FIFO while they do and
/// only out-of-order pushes pay for the heap: a binary heap's O(log n) pop per packet was a
/// third of the engine's time with 1024-segment rounds. Pops return exactly what one binary
/// heap would: the FIFO is sorted, so the minimum is the smaller of its front and the heap's.
#[derive(Debug, Default)]
pub(crate) struct SendQueue {
    fifo: VecDeque<SendItem>,
    heap: BinaryHeap<Reverse<SendItem>>,
}

impl SendQueue {
    #[inline]
    pub fn push(&mut self, item: SendItem) {
        match self.fifo.back() {
            Some(&last) if item < last => self.heap.push(Reverse(item)),
            _ => self.fifo.push_back(item),
        }
    }

    #[inline]
    pub fn pop(&mut self) -> Option<SendItem> {
        match (self.fifo.front(), self.heap.peek()) {
            (Some(&f), Some(&Reverse(h))) if h < f => self.heap.pop().map(|r| r.0),
            (Some(_), _) => self.fifo.pop_front(),
            (None, _) => self.heap.pop().map(|r| r.0),
        }
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.fifo.is_empty() && self.heap.is_empty()
    }

    /// Room for `n` items in either part without growing.
    pub fn reserve_total(&mut self, n: usize) {
        if self.fifo.capacity() < n {
            self.fifo.reserve(n - self.fifo.len());
        }
        if self.heap.capacity() < n {
            self.heap.reserve(n - self.heap.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_queue_pops_what_a_binary_heap_would() {
        use rand::{Rng, SeedableRng};
        for seed in 0..200u64 {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let (mut q, mut reference) = (SendQueue::default(), BinaryHeap::new());
            // Mostly increasing pushes with some out-of-order ones, interleaved with pops.
            let mut next = 0u32;
            for _ in 0..500 {
                if rng.random_bool(0.6) {
                    let seg = if rng.random_bool(0.8) {
                        next += rng.random_range(0..3);
                        next
                    } else {
                        rng.random_range(0..next.max(1))
                    };
                    let item =
                        SendItem::new(PacketKind::ReduceData, rng.random_range(0..3), seg, 1000);
                    q.push(item);
                    reference.push(Reverse(item));
                } else {
                    assert_eq!(q.pop(), reference.pop().map(|r| r.0), "seed {seed}");
                }
                assert_eq!(q.is_empty(), reference.is_empty());
            }
            while let Some(Reverse(want)) = reference.pop() {
                assert_eq!(q.pop(), Some(want), "seed {seed}");
            }
            assert_eq!(q.pop(), None);
        }
    }

    #[test]
    fn queue_serves_the_least_advanced_tree_first() {
        let mut q = SendQueue::default();
        // Tree 0 has 4 segments, tree 1 has 8: segment 2 of tree 1 (25 % through) goes
        // after segment 1 of tree 0 (25 %: ties go to the lower tree) and before segment 2
        // of tree 0 (50 %).
        for (tree, seg, count) in [
            (0, 0, 4),
            (0, 1, 4),
            (0, 2, 4),
            (1, 0, 8),
            (1, 2, 8),
            (1, 4, 8),
        ] {
            q.push(SendItem::new(PacketKind::ReduceData, tree, seg, count));
        }
        let order: Vec<(u16, u32)> =
            std::iter::from_fn(|| q.pop().map(|i| (i.tree, i.seg))).collect();
        assert_eq!(order, [(0, 0), (1, 0), (0, 1), (1, 2), (0, 2), (1, 4)]);
    }

    #[test]
    fn queue_orders_reduce_before_broadcast_at_equal_progress() {
        let mut q = SendQueue::default();
        q.push(SendItem::new(PacketKind::BroadcastData, 0, 1, 4));
        q.push(SendItem::new(PacketKind::ReduceData, 1, 1, 4));
        let first = q.pop().unwrap();
        assert_eq!(first.packet_kind(), PacketKind::ReduceData);
        assert!(q.pop().unwrap().is_broadcast());
        assert!(q.is_empty());
    }

    #[test]
    fn reserve_total_makes_room_without_growing_later() {
        let mut q = SendQueue::default();
        q.reserve_total(100);
        let (fifo, heap) = (q.fifo.capacity(), q.heap.capacity());
        for seg in (0..100).rev() {
            q.push(SendItem::new(PacketKind::ReduceData, 0, seg, 100));
        }
        assert_eq!((q.fifo.capacity(), q.heap.capacity()), (fifo, heap));
        for seg in 0..100 {
            assert_eq!(q.pop().unwrap().seg, seg);
        }
    }
}
