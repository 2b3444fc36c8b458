//! Rounds: the gradient buffer is cut into one contiguous range per tree and each range into
//! fixed-size segments. Per segment a node adds its children's contributions into its own
//! buffer (a `u64` children mask per segment makes duplicates harmless), forwards the
//! partial sum as soon as the last child arrived (or once its whole share is complete, for
//! store-and-forward trees), and the root's value is broadcast down; the root's sum is the
//! single source of truth, so every node ends bit-identical.
//!
//! [`CompiledPolicy`] is a policy as seen from this node; [`RoundState`] the progress of
//! the running round; [`EarlyPool`] holds packets of the next round that arrive first.

use super::path::send::SendItem;
use super::Counters;
use crate::kernel16;
use crate::policy::{ForwardMode, PathId, Policy, TreeEdge};
use crate::wire::{Packet, PacketKind, PayloadType};
use crate::NodeId;
use std::ops::Range;

/// The paths of one tree edge; segments are spread over them by the planned weights (each
/// route's share of the edge, in proportion to its estimated rate; re-balanced by re-planning
/// when the estimates change). A backlog-driven pick (fewest queued segments per unit of
/// pacing rate) was tried: +2 % on one scenario, −3 % on another, so the plan decides.
#[derive(Debug, Clone)]
pub(crate) struct EdgeSend {
    paths: Vec<(PathId, f64)>,
    credit: Vec<f64>,
}

impl EdgeSend {
    fn new(edge: &TreeEdge) -> Self {
        Self {
            paths: edge.paths.iter().map(|p| (p.path, p.weight)).collect(),
            credit: vec![0.0; edge.paths.len()],
        }
    }

    /// Smooth weighted round-robin by the planned weights.
    #[inline]
    pub fn pick(&mut self) -> PathId {
        if self.paths.len() == 1 {
            return self.paths[0].0;
        }
        let total: f64 = self.paths.iter().map(|p| p.1).sum();
        let mut best = 0;
        for (i, (_, w)) in self.paths.iter().enumerate() {
            self.credit[i] += w;
            if self.credit[i] > self.credit[best] {
                best = i;
            }
        }
        self.credit[best] -= total;
        self.paths[best].0
    }
}

/// One tree as seen from this node.
#[derive(Debug, Clone)]
pub(crate) struct TreeAtNode {
    pub range: Range<usize>,
    /// Offset of this tree's segments in the per-node segment state arrays.
    pub seg_base: usize,
    seg_count: u32,
    pub is_root: bool,
    forward: ForwardMode,
    /// `child_slot[v]` = index of `v` among this node's reduce children, or `u8::MAX`.
    child_slot: Vec<u8>,
    pub full_mask: u64,
    reduce_send: Option<EdgeSend>,
    bcast_parent: Option<NodeId>,
    bcast_send: Vec<EdgeSend>,
}

impl TreeAtNode {
    /// The buffer elements of segment `seg`.
    #[inline]
    pub fn seg_range(&self, seg: u32, seg_elems: usize) -> Range<usize> {
        let start = self.range.start + seg as usize * seg_elems;
        start..(start + seg_elems).min(self.range.end)
    }
}

/// A policy compiled for this node.
#[derive(Debug)]
pub(crate) struct CompiledPolicy {
    pub epoch: u32,
    pub trees: Vec<TreeAtNode>,
    /// Segments over all trees.
    pub total_segs: usize,
}

impl CompiledPolicy {
    /// Compiles `policy` for node `me` of `node_count` over a buffer of `buffer_elems` in
    /// segments of `seg_elems`. Also returns, per path, how many segments one round may
    /// queue on it (to size its queue).
    pub fn compile(
        policy: &Policy,
        me: NodeId,
        node_count: usize,
        buffer_elems: usize,
        seg_elems: usize,
    ) -> (Self, Vec<usize>) {
        let ranges = policy.tree_ranges(buffer_elems);
        let mut trees = Vec::with_capacity(policy.trees.len());
        let mut seg_base = 0usize;
        let mut queue_need = vec![0usize; policy.routes.len()];
        for (t, tree) in policy.trees.iter().enumerate() {
            let range = ranges[t].clone();
            let seg_count = range.len().div_ceil(seg_elems) as u32;
            let mut child_slot = vec![u8::MAX; node_count];
            let mut children = 0u32;
            for (v, e) in tree.reduce.iter().enumerate() {
                if e.as_ref().is_some_and(|e| e.parent == me) {
                    child_slot[v] = children as u8;
                    children += 1;
                }
            }
            let full_mask = if children == 64 {
                u64::MAX
            } else {
                (1u64 << children) - 1
            };
            let reduce_send = tree.reduce[me as usize].as_ref().map(EdgeSend::new);
            let bcast_send: Vec<EdgeSend> = tree
                .broadcast
                .iter()
                .flatten()
                .filter(|e| e.parent == me)
                .map(EdgeSend::new)
                .collect();
            for e in reduce_send.iter().chain(bcast_send.iter()) {
                for (p, _) in &e.paths {
                    queue_need[*p as usize] += seg_count as usize;
                }
            }
            trees.push(TreeAtNode {
                range,
                seg_base,
                seg_count,
                is_root: tree.root == me,
                forward: tree.forward,
                child_slot,
                full_mask,
                reduce_send,
                bcast_parent: tree.broadcast[me as usize].as_ref().map(|e| e.parent),
                bcast_send,
            });
            seg_base += seg_count as usize;
        }
        let compiled = Self {
            epoch: policy.epoch,
            trees,
            total_segs: seg_base,
        };
        (compiled, queue_need)
    }
}

/// Segment flags.
const SEG_REDUCED: u8 = 1;
const SEG_FINAL: u8 = 2;

/// Per-segment and per-tree progress of the round, sized for the current policy.
#[derive(Debug, Default)]
pub(crate) struct Segments {
    /// Per segment: the children seen.
    mask: Vec<u64>,
    /// Per segment: REDUCED/FINAL flags.
    pub flags: Vec<u8>,
    /// Per store-and-forward tree: segments reduced, segments final.
    tree_reduced: Vec<u32>,
    tree_final: Vec<u32>,
}

/// What became of a data packet of the running round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// Its contribution or final value was applied.
    Applied,
    /// Already applied before (acknowledge it again, change nothing).
    Duplicate,
    /// Unusable under the current policy (counted).
    Rejected,
}

/// What a round saw of its values at this node (see [`crate::engine::Engine::round_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoundStats {
    /// NaN or infinite values in this node's contribution when the round started (reported,
    /// never replaced: they propagate into the sum as IEEE arithmetic makes them).
    pub nonfinite_inputs: u64,
    /// Finite values clamped to the largest finite value of a 16-bit payload type instead
    /// of overflowing to infinity (partial sums this node sent, final values it rounded).
    pub saturated: u64,
}

/// The round running (or last run) here.
#[derive(Debug, Default)]
pub(crate) struct RoundState {
    pub round: u32,
    pub active: bool,
    /// Highest round ever started (`None` before the first).
    pub last: Option<u32>,
    /// Segments whose final value is still missing.
    finals_left: usize,
    /// `ResultReady` was emitted for this round.
    pub result_reported: bool,
    pub segs: Segments,
    pub stats: RoundStats,
}

impl RoundState {
    /// Sizes the segment state for `policy`.
    pub fn resize(&mut self, policy: &CompiledPolicy) {
        let n = policy.total_segs;
        self.segs.mask = vec![0; n];
        self.segs.flags = vec![0; n];
        self.segs.tree_reduced = vec![0; policy.trees.len()];
        self.segs.tree_final = vec![0; policy.trees.len()];
    }

    /// Starts `round` with nothing received, then lets the trees in which this node has no
    /// children contribute at once (queueing their sends through `enqueue`).
    pub fn start(
        &mut self,
        round: u32,
        policy: &mut CompiledPolicy,
        enqueue: &mut impl FnMut(PathId, SendItem),
    ) {
        self.round = round;
        self.last = Some(round);
        self.active = true;
        self.result_reported = false;
        self.stats = RoundStats::default();
        self.finals_left = policy.total_segs;
        self.segs.mask.fill(0);
        self.segs.flags.fill(0);
        self.segs.tree_reduced.fill(0);
        self.segs.tree_final.fill(0);
        for t in 0..policy.trees.len() {
            if policy.trees[t].full_mask == 0 {
                for seg in 0..policy.trees[t].seg_count {
                    self.on_reduced(policy, t, seg, enqueue);
                }
            }
        }
    }

    /// Every final value is here.
    #[inline]
    pub fn all_final(&self) -> bool {
        self.finals_left == 0
    }

    /// Applies data packet `pkt` of the running round to `buf`. `wire`: the job's payload type (the
    /// caller dropped packets of other types); the root of a tree rounds a completed
    /// segment to it before it becomes final, so its own copy is the value it broadcasts.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub fn apply(
        &mut self,
        policy: &mut CompiledPolicy,
        seg_elems: usize,
        wire: PayloadType,
        buf: &mut [f32],
        pkt: &Packet<&[u8]>,
        counters: &mut Counters,
        enqueue: &mut impl FnMut(PathId, SendItem),
    ) -> Delivery {
        if pkt.epoch() != policy.epoch {
            counters.rx_stale_epoch += 1;
            return Delivery::Rejected;
        }
        let t = pkt.tree() as usize;
        let Some(tree) = policy.trees.get(t) else {
            counters.rx_invalid += 1;
            return Delivery::Rejected;
        };
        let seg = pkt.segment();
        if seg >= tree.seg_count {
            counters.rx_invalid += 1;
            return Delivery::Rejected;
        }
        let range = tree.seg_range(seg, seg_elems);
        if pkt.payload_type() != wire || pkt.payload().len() != range.len() * wire.elem_bytes() {
            counters.rx_invalid += 1;
            return Delivery::Rejected;
        }
        let idx = tree.seg_base + seg as usize;
        match pkt.kind() {
            PacketKind::ReduceData => {
                let slot = tree.child_slot[pkt.src() as usize];
                if slot == u8::MAX {
                    counters.rx_invalid += 1;
                    return Delivery::Rejected;
                }
                let bit = 1u64 << slot;
                if self.segs.mask[idx] & bit != 0 {
                    counters.rx_duplicate += 1;
                    return Delivery::Duplicate;
                }
                let full = tree.full_mask;
                let is_root = tree.is_root;
                kernel16::add_assign_wire(wire, &mut buf[range.clone()], pkt.payload());
                self.segs.mask[idx] |= bit;
                if self.segs.mask[idx] == full {
                    if is_root {
                        counters.saturated += self.round_final(wire, &mut buf[range]);
                    }
                    self.on_reduced(policy, t, seg, enqueue);
                }
            }
            PacketKind::BroadcastData => {
                if tree.bcast_parent != Some(pkt.src()) {
                    counters.rx_invalid += 1;
                    return Delivery::Rejected;
                }
                if self.segs.flags[idx] & SEG_FINAL != 0 {
                    counters.rx_duplicate += 1;
                    return Delivery::Duplicate;
                }
                kernel16::copy_from_wire(wire, &mut buf[range], pkt.payload());
                self.on_final(policy, t, seg, enqueue);
            }
            _ => return Delivery::Rejected,
        }
        Delivery::Applied
    }

    /// The root's final value of a segment, `values`, becomes what its payload type can
    /// carry: encoded once, so every node (the root included) ends with the same bits.
    #[inline]
    pub fn round_final(&mut self, wire: PayloadType, values: &mut [f32]) -> u64 {
        let saturated = u64::from(kernel16::round_trip_in_place(wire, values));
        self.stats.saturated += saturated;
        saturated
    }

    /// Segment `seg` of tree `t` holds this node's complete partial sum.
    fn on_reduced(
        &mut self,
        policy: &mut CompiledPolicy,
        t: usize,
        seg: u32,
        enqueue: &mut impl FnMut(PathId, SendItem),
    ) {
        let tree = &mut policy.trees[t];
        self.segs.flags[tree.seg_base + seg as usize] |= SEG_REDUCED;
        if tree.is_root {
            self.on_final(policy, t, seg, enqueue);
            return;
        }
        let Some(edge) = tree.reduce_send.as_mut() else {
            return;
        };
        let count = tree.seg_count;
        match tree.forward {
            ForwardMode::Pipelined => {
                enqueue(
                    edge.pick(),
                    SendItem::new(PacketKind::ReduceData, t, seg, count),
                );
            }
            ForwardMode::StoreAndForward => {
                self.segs.tree_reduced[t] += 1;
                if self.segs.tree_reduced[t] == count {
                    for s in 0..count {
                        enqueue(
                            edge.pick(),
                            SendItem::new(PacketKind::ReduceData, t, s, count),
                        );
                    }
                }
            }
        }
    }

    /// Segment `seg` of tree `t` holds its final value here.
    fn on_final(
        &mut self,
        policy: &mut CompiledPolicy,
        t: usize,
        seg: u32,
        enqueue: &mut impl FnMut(PathId, SendItem),
    ) {
        let tree = &mut policy.trees[t];
        self.segs.flags[tree.seg_base + seg as usize] |= SEG_FINAL;
        self.finals_left -= 1;
        let count = tree.seg_count;
        match tree.forward {
            ForwardMode::Pipelined => {
                let item = SendItem::new(PacketKind::BroadcastData, t, seg, count);
                for edge in &mut tree.bcast_send {
                    enqueue(edge.pick(), item);
                }
            }
            ForwardMode::StoreAndForward => {
                self.segs.tree_final[t] += 1;
                if self.segs.tree_final[t] == count {
                    for edge in &mut tree.bcast_send {
                        for s in 0..count {
                            enqueue(
                                edge.pick(),
                                SendItem::new(PacketKind::BroadcastData, t, s, count),
                            );
                        }
                    }
                }
            }
        }
    }
}

/// Packets of the next round that arrived before it started here: held (and acknowledged)
/// in a bounded pool of slots allocated once, replayed when the round starts.
#[derive(Debug, Default)]
pub(crate) struct EarlyPool {
    slots: Vec<Vec<u8>>,
    /// Slots in use.
    len: usize,
    capacity: usize,
    slot_len: usize,
}

impl EarlyPool {
    pub fn new(capacity: usize, slot_len: usize) -> Self {
        Self {
            slots: Vec::new(),
            len: 0,
            capacity,
            slot_len,
        }
    }

    /// Holds a copy of `data`; false if the pool is full.
    pub fn hold(&mut self, data: &[u8]) -> bool {
        if self.len >= self.capacity {
            return false;
        }
        if self.slots.len() <= self.len {
            self.slots.push(Vec::with_capacity(self.slot_len));
        }
        let slot = &mut self.slots[self.len];
        slot.clear();
        slot.extend_from_slice(data);
        self.len += 1;
        true
    }

    /// The packets held, oldest first.
    pub fn packets(&self) -> impl Iterator<Item = &[u8]> {
        self.slots.iter().take(self.len).map(|s| &s[..])
    }

    /// Empties the pool (keeping its slots).
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

#[cfg(test)]
mod tests;
