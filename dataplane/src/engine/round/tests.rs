//! Rounds driven directly: compiled policies, contributions and final values in, sums and
//! queued sends out.

use super::*;
use crate::policy::{PolicyBuilder, WeightedPath};
use crate::wire::{HeaderRepr, HEADER_LEN};

const SEG_ELEMS: usize = 4;
const ELEMS: usize = 10; // 3 segments: 4 + 4 + 2

/// Root 2 with children 0 and 1 (direct routes both ways); `forward` for the tree.
fn star(forward: ForwardMode) -> Policy {
    let mut b = PolicyBuilder::new();
    b.tree(
        2,
        1.0,
        &[Some(2), Some(2), None],
        &[Some(2), Some(2), None],
        forward,
    );
    b.build(7, 3)
}

/// Chain 0 → 1 → 2 (root 2): node 1 is an inner node.
fn chain(forward: ForwardMode) -> Policy {
    let mut b = PolicyBuilder::new();
    b.tree(
        2,
        1.0,
        &[Some(1), Some(2), None],
        &[Some(1), Some(2), None],
        forward,
    );
    b.build(7, 3)
}

fn compiled(policy: &Policy, me: NodeId) -> (CompiledPolicy, RoundState) {
    let (c, _) = CompiledPolicy::compile(policy, me, 3, ELEMS, SEG_ELEMS);
    let mut r = RoundState::default();
    r.resize(&c);
    (c, r)
}

/// A data packet of tree 0 from `src`, segment `seg`, with `values`.
fn data(kind: PacketKind, epoch: u32, src: NodeId, seg: u32, values: &[f32]) -> Vec<u8> {
    data_of_tree(0, kind, epoch, src, seg, values)
}

fn data_of_tree(
    tree: u16,
    kind: PacketKind,
    epoch: u32,
    src: NodeId,
    seg: u32,
    values: &[f32],
) -> Vec<u8> {
    let mut buf = vec![0u8; HEADER_LEN + values.len() * 4];
    HeaderRepr {
        kind,
        payload_len: (values.len() * 4) as u16,
        job: 1,
        epoch,
        tree,
        src,
        dst: 2,
        segment: seg,
        ttl: 1,
        ..HeaderRepr::default()
    }
    .emit(&mut buf)
    .unwrap();
    for (i, v) in values.iter().enumerate() {
        buf[HEADER_LEN + 4 * i..][..4].copy_from_slice(&v.to_le_bytes());
    }
    buf
}

struct Run {
    policy: CompiledPolicy,
    round: RoundState,
    buf: Vec<f32>,
    counters: Counters,
    sent: Vec<(PathId, u32, PacketKind)>,
}

impl Run {
    fn new(policy: &Policy, me: NodeId) -> Self {
        let (policy, round) = compiled(policy, me);
        Self {
            policy,
            round,
            buf: vec![1.0; ELEMS],
            counters: Counters::default(),
            sent: Vec::new(),
        }
    }

    fn start(&mut self) {
        let sent = &mut self.sent;
        self.round
            .start(3, &mut self.policy, &mut |p, item: SendItem| {
                sent.push((p, item.seg, item.packet_kind()))
            });
    }

    fn apply(&mut self, datagram: &[u8]) -> Delivery {
        let pkt = Packet::new_checked(datagram).unwrap();
        let sent = &mut self.sent;
        self.round.apply(
            &mut self.policy,
            SEG_ELEMS,
            crate::wire::PayloadType::F32,
            &mut self.buf,
            &pkt,
            &mut self.counters,
            &mut |p, item: SendItem| sent.push((p, item.seg, item.packet_kind())),
        )
    }
}

#[test]
fn compile_lays_out_segments_and_sizes_queues() {
    let policy = star(ForwardMode::Pipelined);
    let (c, need) = CompiledPolicy::compile(&policy, 2, 3, ELEMS, SEG_ELEMS);
    assert_eq!((c.epoch, c.total_segs), (7, 3));
    let tree = &c.trees[0];
    assert!(tree.is_root);
    assert_eq!(tree.full_mask, 0b11);
    assert_eq!(&tree.child_slot[..], [0, 1, u8::MAX]);
    assert_eq!(
        tree.seg_range(2, SEG_ELEMS),
        8..10,
        "the last segment is short"
    );
    // Routes 0 → 2 and 1 → 2 (reduce), 2 → 0 and 2 → 1 (broadcast): the root sends 3
    // segments on each broadcast route.
    let bcast: Vec<usize> = [&[2, 0][..], &[2, 1]]
        .iter()
        .map(|h| policy.routes.iter().position(|r| r.hops == *h).unwrap())
        .collect();
    for (id, n) in need.iter().enumerate() {
        assert_eq!(*n, if bcast.contains(&id) { 3 } else { 0 }, "path {id}");
    }
}

#[test]
fn root_sums_children_then_broadcasts() {
    let policy = star(ForwardMode::Pipelined);
    let mut run = Run::new(&policy, 2);
    run.start();
    assert!(run.sent.is_empty(), "the root waits for its children");
    let d = data(PacketKind::ReduceData, 7, 0, 1, &[1.0, 2.0, 3.0, 4.0]);
    assert_eq!(run.apply(&d), Delivery::Applied);
    assert_eq!(run.apply(&d), Delivery::Duplicate, "the children mask");
    assert_eq!(run.counters.rx_duplicate, 1);
    assert_eq!(&run.buf[4..8], [2.0, 3.0, 4.0, 5.0]);
    assert!(run.sent.is_empty());
    let d = data(PacketKind::ReduceData, 7, 1, 1, &[10.0; 4]);
    assert_eq!(run.apply(&d), Delivery::Applied);
    assert_eq!(&run.buf[4..8], [12.0, 13.0, 14.0, 15.0]);
    // Final at the root: broadcast on both broadcast routes at once.
    assert_eq!(run.sent.len(), 2);
    assert!(run
        .sent
        .iter()
        .all(|s| s.1 == 1 && s.2 == PacketKind::BroadcastData));
    assert!(!run.round.all_final());
    for seg in [0, 2] {
        let n = if seg == 2 { 2 } else { 4 };
        for src in [0, 1] {
            run.apply(&data(PacketKind::ReduceData, 7, src, seg, &vec![0.5; n]));
        }
    }
    assert!(run.round.all_final());
    assert_eq!(run.sent.len(), 6);
}

#[test]
fn a_leaf_contributes_every_segment_at_start_and_takes_the_broadcast() {
    let policy = star(ForwardMode::Pipelined);
    let mut run = Run::new(&policy, 0);
    run.start();
    let segs: Vec<(u32, PacketKind)> = run.sent.iter().map(|s| (s.1, s.2)).collect();
    assert_eq!(
        segs,
        [0, 1, 2].map(|s| (s, PacketKind::ReduceData)),
        "every segment, in order"
    );
    let d = data(PacketKind::BroadcastData, 7, 2, 0, &[9.0; 4]);
    assert_eq!(run.apply(&d), Delivery::Applied);
    assert_eq!(
        &run.buf[0..4],
        [9.0; 4],
        "the final value replaces the contribution"
    );
    assert_eq!(run.apply(&d), Delivery::Duplicate);
    assert_eq!(run.sent.len(), 3, "a leaf forwards nothing");
}

#[test]
fn pipelined_inner_node_forwards_each_segment_when_complete() {
    let mut run = Run::new(&chain(ForwardMode::Pipelined), 1);
    run.start();
    assert!(run.sent.is_empty());
    run.apply(&data(PacketKind::ReduceData, 7, 0, 1, &[1.0; 4]));
    assert_eq!(run.sent.len(), 1);
    assert_eq!((run.sent[0].1, run.sent[0].2), (1, PacketKind::ReduceData));
    // The root's final value is passed on down.
    run.apply(&data(PacketKind::BroadcastData, 7, 2, 1, &[5.0; 4]));
    assert_eq!(
        (run.sent[1].1, run.sent[1].2),
        (1, PacketKind::BroadcastData)
    );
}

#[test]
fn store_and_forward_waits_for_the_whole_share() {
    let mut run = Run::new(&chain(ForwardMode::StoreAndForward), 1);
    run.start();
    run.apply(&data(PacketKind::ReduceData, 7, 0, 2, &[1.0; 2]));
    run.apply(&data(PacketKind::ReduceData, 7, 0, 0, &[1.0; 4]));
    assert!(run.sent.is_empty(), "one segment still missing");
    run.apply(&data(PacketKind::ReduceData, 7, 0, 1, &[1.0; 4]));
    let segs: Vec<u32> = run.sent.iter().map(|s| s.1).collect();
    assert_eq!(segs, [0, 1, 2], "the whole share at once, in order");
    for seg in [1, 0] {
        run.apply(&data(PacketKind::BroadcastData, 7, 2, seg, &[1.0; 4]));
    }
    assert_eq!(run.sent.len(), 3);
    run.apply(&data(PacketKind::BroadcastData, 7, 2, 2, &[1.0; 2]));
    assert_eq!(run.sent.len(), 6);
    assert!(run.round.all_final());
}

#[test]
fn unusable_packets_are_rejected_and_counted() {
    let mut run = Run::new(&star(ForwardMode::Pipelined), 2);
    run.start();
    let bad = [
        data(PacketKind::ReduceData, 6, 0, 0, &[1.0; 4]), // other epoch
        data(PacketKind::ReduceData, 7, 0, 3, &[1.0; 4]), // no such segment
        data(PacketKind::ReduceData, 7, 0, 2, &[1.0; 4]), // the last segment is 2 long
        data(PacketKind::ReduceData, 7, 2, 0, &[1.0; 4]), // not a child
        data(PacketKind::BroadcastData, 7, 0, 0, &[1.0; 4]), // not the broadcast parent
    ];
    for d in &bad {
        assert_eq!(run.apply(d), Delivery::Rejected);
    }
    assert_eq!(run.counters.rx_stale_epoch, 1);
    assert_eq!(run.counters.rx_invalid, 4);
    assert_eq!(run.buf, vec![1.0; ELEMS], "nothing applied");
    let other_tree = data_of_tree(1, PacketKind::ReduceData, 7, 0, 0, &[1.0; 4]);
    assert_eq!(run.apply(&other_tree), Delivery::Rejected);
    assert_eq!(run.counters.rx_invalid, 5);
}

#[test]
fn a_new_round_starts_from_nothing() {
    let mut run = Run::new(&star(ForwardMode::Pipelined), 2);
    run.start();
    run.apply(&data(PacketKind::ReduceData, 7, 0, 0, &[1.0; 4]));
    run.round.start(4, &mut run.policy, &mut |_, _| {});
    assert_eq!((run.round.round, run.round.last), (4, Some(4)));
    assert_eq!(
        run.apply(&data(PacketKind::ReduceData, 7, 0, 0, &[1.0; 4])),
        Delivery::Applied,
        "not a duplicate of the last round's"
    );
}

#[test]
fn early_pool_is_bounded_and_reused() {
    let mut pool = EarlyPool::new(2, 64);
    assert!(pool.hold(b"one"));
    assert!(pool.hold(b"two"));
    assert!(!pool.hold(b"three"), "full");
    assert_eq!(pool.packets().collect::<Vec<_>>(), [&b"one"[..], b"two"]);
    pool.clear();
    assert_eq!(pool.packets().count(), 0);
    assert!(pool.hold(b"four"));
    assert_eq!(pool.packets().collect::<Vec<_>>(), [&b"four"[..]]);
    assert_eq!(pool.slots.len(), 2, "slots kept");
}

#[test]
fn edge_send_splits_by_weight() {
    let edge = TreeEdge {
        parent: 0,
        paths: vec![
            WeightedPath {
                path: 0,
                weight: 3.0,
            },
            WeightedPath {
                path: 1,
                weight: 1.0,
            },
        ],
    };
    let mut e = EdgeSend::new(&edge);
    let picks: Vec<PathId> = (0..8).map(|_| e.pick()).collect();
    assert_eq!(picks.iter().filter(|&&p| p == 0).count(), 6);
}
