//! Sizing the pool of next-round packets that arrive before the round starts here.
//!
//! A peer that finishes a round first starts the next one and sends at once; until this node
//! starts that round too, its packets are held ([`EarlyPool`]) and acknowledged. What does
//! not fit is dropped unacknowledged and costs a retransmission timeout — on a 326 ms path,
//! about a second of the round. A fixed pool (the old 4096 packets) is far below what one
//! bandwidth-delay product of a fast long link brings, so the pool is sized per policy from
//! what can actually arrive early: at most one round of the packets addressed to this node
//! (its reduce children's segments and its broadcast parent's), as no sender can be more
//! than one round ahead. The bound only grows (it is sized when a policy is installed, so
//! packets of a pending policy fit too), from [`AUTO_EARLY_PACKETS_FLOOR`]. This is the
//! default (`early_packets = 0`); a configured `early_packets` is an exact bound instead.
//!
//! Memory: the pool's slots are allocated the first time the pool gets that deep and reused
//! for the engine's life, so a bigger bound costs memory only where packets do arrive early,
//! and holding a packet never allocates once the pool has been that deep.

use super::config::AUTO_EARLY_PACKETS_FLOOR;
use super::round::EarlyPool;
use crate::policy::Policy;
use crate::NodeId;
use std::ops::{Deref, DerefMut};

/// Data packets addressed to `me` in one round of `policy`: per tree, its segments times the
/// edges that end here (one per reduce child, one from the broadcast parent).
pub(crate) fn packets_addressed_to(
    policy: &Policy,
    me: NodeId,
    buffer_elems: usize,
    segment_elems: usize,
) -> usize {
    let ranges = policy.tree_ranges(buffer_elems);
    policy
        .trees
        .iter()
        .zip(ranges)
        .map(|(tree, range)| {
            let segments = range.len().div_ceil(segment_elems.max(1));
            let children = tree
                .reduce
                .iter()
                .flatten()
                .filter(|e| e.parent == me)
                .count();
            let from_parent = tree.broadcast.get(me as usize).is_some_and(|e| e.is_some());
            segments * (children + usize::from(from_parent))
        })
        .sum()
}

/// The engine's [`EarlyPool`] with its bound, resized when a policy activates.
#[derive(Debug, Default)]
pub(crate) struct EarlyHold {
    pool: EarlyPool,
    capacity: usize,
    slot_len: usize,
    /// Sized per policy (`early_packets = 0`), else fixed.
    auto: bool,
}

impl EarlyHold {
    /// A pool of `early_packets` (the config key: 0 = sized per policy).
    pub fn new(early_packets: usize, slot_len: usize) -> Self {
        let auto = early_packets == 0;
        let capacity = if auto {
            AUTO_EARLY_PACKETS_FLOOR
        } else {
            early_packets
        };
        Self {
            pool: EarlyPool::new(capacity, slot_len),
            capacity,
            slot_len,
            auto,
        }
    }

    /// Packets that may be held.
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Grows the bound to what `policy` can send `me` in one round (when sized per policy).
    /// A new bound replaces the pool (not on the hot path: once per policy), keeping what it
    /// holds.
    pub fn size_for(
        &mut self,
        policy: &Policy,
        me: NodeId,
        buffer_elems: usize,
        segment_elems: usize,
    ) {
        let capacity = packets_addressed_to(policy, me, buffer_elems, segment_elems);
        if !self.auto || capacity <= self.capacity {
            return;
        }
        let mut pool = EarlyPool::new(capacity, self.slot_len);
        for p in self.pool.packets() {
            pool.hold(p);
        }
        self.pool = pool;
        self.capacity = capacity;
    }
}

impl Deref for EarlyHold {
    type Target = EarlyPool;
    fn deref(&self) -> &EarlyPool {
        &self.pool
    }
}

impl DerefMut for EarlyHold {
    fn deref_mut(&mut self) -> &mut EarlyPool {
        &mut self.pool
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{ForwardMode, PolicyBuilder};

    /// Three nodes, two trees: tree 0 (root 0) reduces 1 -> 0 and 2 -> 0 and broadcasts
    /// 0 -> 1 -> 2; tree 1 (root 2) is a chain 0 -> 1 -> 2 both ways.
    fn policy() -> Policy {
        let mut b = PolicyBuilder::new();
        b.tree(
            0,
            0.5,
            &[None, Some(0), Some(0)],
            &[None, Some(0), Some(1)],
            ForwardMode::Pipelined,
        );
        b.tree(
            2,
            0.5,
            &[Some(1), Some(2), None],
            &[Some(1), Some(2), None],
            ForwardMode::Pipelined,
        );
        b.build(1, 3)
    }

    #[test]
    fn counts_the_segments_of_every_edge_ending_here() {
        let p = policy();
        // 1000 elements, 100 per segment: 5 segments per tree.
        // Node 0: two reduce children in tree 0; its broadcast parent in tree 1.
        assert_eq!(packets_addressed_to(&p, 0, 1000, 100), 5 * 2 + 5);
        // Node 1: broadcast parent in tree 0; reduce child 0 and broadcast parent 2 in tree 1.
        assert_eq!(packets_addressed_to(&p, 1, 1000, 100), 5 + 5 * 2);
        // Node 2: broadcast parent in tree 0; reduce child 1 in tree 1.
        assert_eq!(packets_addressed_to(&p, 2, 1000, 100), 5 + 5);
        // A partial last segment counts.
        assert_eq!(packets_addressed_to(&p, 2, 1002, 100), 6 + 6);
    }

    #[test]
    fn the_pool_grows_to_a_round_and_keeps_what_it_holds() {
        let p = policy();
        let mut early = EarlyHold::new(0, 64);
        assert_eq!(early.capacity(), AUTO_EARLY_PACKETS_FLOOR);
        // A full floor-sized pool keeps what it holds when it grows.
        for i in 0..AUTO_EARLY_PACKETS_FLOOR {
            assert!(early.hold(&[i as u8]));
        }
        assert!(!early.hold(&[0]));
        early.size_for(&p, 0, 20_000 * 100, 100);
        assert_eq!(
            early.capacity(),
            30_000,
            "10,000 segments per tree, 3 edges to node 0"
        );
        assert_eq!(early.packets().count(), AUTO_EARLY_PACKETS_FLOOR);
        assert!(early.hold(&[1]));
        let mut early = EarlyHold::new(0, 64);
        assert!(early.hold(&[1, 2, 3]));
        // 5,000 segments per tree: node 0 can be sent 15,000 packets of the next round.
        early.size_for(&p, 0, 1_000_000, 100);
        assert_eq!(early.capacity(), 15_000);
        assert_eq!(early.packets().collect::<Vec<_>>(), [&[1u8, 2, 3][..]]);
        for i in 1..15_000 {
            assert!(early.hold(&[i as u8]), "packet {i} fits");
        }
        assert!(!early.hold(&[0]), "the 15,001st does not");
        // The bound never shrinks: a smaller policy keeps the larger bound.
        early.size_for(&p, 0, 1000, 100);
        assert_eq!(early.capacity(), 15_000);
        // A configured bound is exact.
        let mut early = EarlyHold::new(256, 64);
        early.size_for(&p, 0, 1_000_000, 100);
        assert_eq!(early.capacity(), 256);
    }
}
