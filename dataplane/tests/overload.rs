//! Overload: a sender far faster than the path, floods of packets a node cannot use yet, a
//! slow consumer of the telemetry ring and a trainer that never hands in its gradient. Memory
//! stays bounded (pools and queues have configured limits), the excess is counted, nothing
//! blocks, nothing is corrupted, and every wait ends with an error naming what it waits for.

use netstorm_dataplane::emu::{EmuConfig, EmuError, Heartbeat, Simulation};
use netstorm_dataplane::engine::{Engine, EngineConfig};
use netstorm_dataplane::policy::{ForwardMode, Policy, PolicyBuilder};
use netstorm_dataplane::protect::{new_sender_start, Protection, Sealer};
use netstorm_dataplane::shm::{Consumer, HeapRing, Producer, PushError, RingGeometry};
use netstorm_dataplane::shm_records::TelemetryRecord;
use netstorm_dataplane::topology::{Link, Node, Topology};
use netstorm_dataplane::wire::{emit_packet, HeaderRepr, PacketKind, AUTH_TAG_LEN};
use netstorm_dataplane::NodeId;

const SECOND: u64 = 1_000_000_000;

fn topology(n: usize, pairs: &[(NodeId, NodeId)], mbps: f64, latency_ms: u64) -> Topology {
    let nodes = (0..n)
        .map(|i| Node {
            name: format!("dc{i}"),
            egress_bps: None,
            ingress_bps: None,
        })
        .collect();
    let mut links = Vec::new();
    for &(a, b) in pairs {
        for (from, to) in [(a, b), (b, a)] {
            links.push(Link {
                from,
                to,
                rate_bps: mbps * 1e6,
                latency_ns: latency_ms * 1_000_000,
                loss: 0.0,
            });
        }
    }
    Topology { nodes, links }
}

fn fill(sim: &mut Simulation, n: usize) {
    for v in 0..n as NodeId {
        for (i, x) in sim.engine_mut(v).buffer_mut().iter_mut().enumerate() {
            *x = ((i + v as usize) % 64) as f32;
        }
    }
}

fn exact(sim: &Simulation, n: usize) -> bool {
    (0..n as NodeId).all(|v| {
        sim.engine(v)
            .buffer()
            .iter()
            .enumerate()
            .all(|(i, &x)| x == (0..n).map(|u| ((i + u) % 64) as f32).sum::<f32>())
    })
}

/// The sender is told its link runs at 1 Gbit/s (the policy's pacing rate) but the link
/// carries 20 Mbit/s: 50x too fast. The drop-tail queue drops the excess, the sender sees
/// losses and queueing delay and backs off to near the real rate; the round completes
/// exactly, with bounded retransmission overhead.
#[test]
fn a_sender_50x_faster_than_its_path_backs_off() {
    let believed = topology(2, &[(0, 1)], 1000.0, 10);
    let actual = topology(2, &[(0, 1)], 20.0, 10);
    let mut b = PolicyBuilder::new();
    let p = [None, Some(0)];
    b.tree(0, 1.0, &p, &p, ForwardMode::Pipelined)
        .link_rates_from(&believed);
    let policy = b.build(1, 2);
    let elems = 1_000_000; // 4 MB
    let engines = (0..2)
        .map(|v| {
            let mut e = Engine::new(EngineConfig::new(v, 2, elems), &actual).unwrap();
            e.install_policy(policy.clone(), 0).unwrap();
            e
        })
        .collect();
    let mut sim = Simulation::new(&actual, engines, EmuConfig::default()).unwrap();
    fill(&mut sim, 2);
    let s = sim.run_round_all(0, 600 * SECOND).unwrap();
    assert!(exact(&sim, 2));
    let drops: u64 = sim.link_stats().iter().map(|l| l.queue_drops).sum();
    assert!(drops > 0, "the bottleneck queue must have overflowed");
    let c = *sim.engine(1).counters();
    assert!(c.loss_detected > 0 && c.tx_retransmits > 0);
    // Back-pressure: the pacing rate came down from 1 Gbit/s to the path's order of
    // magnitude.
    let (_, rate) = sim.engine(1).path_stats(0).unwrap();
    assert!(rate < 100e6, "still pacing at {rate} bit/s");
    // Bounded overhead. Not small: the first window leaves at 50x the path rate before any
    // feedback, and most of it is dropped (about 7 retransmissions per segment here).
    let segments = elems.div_ceil(352) as u64;
    eprintln!(
        "{} retransmits for {segments} segments, round {:.2} s, final pacing {:.1} Mbit/s",
        c.tx_retransmits,
        s.sync_ns() as f64 / 1e9,
        rate / 1e6
    );
    assert!(
        c.tx_retransmits < 10 * segments,
        "{} retransmits for {segments} segments",
        c.tx_retransmits
    );
    // And the round is not absurdly slow: 4 MB at 20 Mbit/s is 1.6 s + overheads.
    assert!(s.sync_ns() < 20 * SECOND, "{} s", s.sync_ns() as f64 / 1e9);
}

/// Chain 0 - 1 - 2, one tree rooted at 0; node 2 reaches 0 through relay node 1.
fn chain_policy() -> (Topology, Policy) {
    let topo = topology(3, &[(0, 1), (1, 2)], 100.0, 5);
    let mut b = PolicyBuilder::new();
    let reduce = [None, Some(vec![1, 0]), Some(vec![2, 1, 0])];
    let bcast = [None, Some(vec![0, 1]), Some(vec![0, 1, 2])];
    b.tree_with_routes(0, 1.0, &reduce, &bcast, ForwardMode::Pipelined)
        .link_rates_from(&topo);
    let policy = b.build(1, 3);
    (topo, policy)
}

fn path_id(policy: &Policy, hops: &[NodeId]) -> u16 {
    policy.routes.iter().position(|r| r.hops == hops).unwrap() as u16
}

/// An authentic ReduceData packet (default job-derived keys) on `path`, `src -> dst`,
/// sequence `seq`, sealed by `src`'s sealer (one per node and test thread).
fn packet(path: u16, src: NodeId, dst: NodeId, seq: u32, ttl: u8, round: u32) -> Vec<u8> {
    thread_local! {
        static SEALERS: std::cell::RefCell<Vec<Sealer>> = std::cell::RefCell::new(
            (0..3)
                .map(|v| Sealer::new(&Protection::default(), 1, 0, v, new_sender_start()))
                .collect(),
        );
    }
    let hdr = HeaderRepr {
        kind: PacketKind::ReduceData,
        flags: Protection::default().mode.flags(),
        job: 1,
        epoch: 1,
        round,
        path,
        src,
        dst,
        seq,
        ttl,
        timestamp_ns: 1,
        ..HeaderRepr::default()
    };
    let payload = vec![0u8; 348 * 4];
    let mut buf = vec![0u8; 2000];
    let n = emit_packet(&hdr, &payload, &mut buf).unwrap();
    SEALERS.with(|s| {
        assert_eq!(
            s.borrow_mut()[src as usize].seal(&mut buf, n - AUTH_TAG_LEN),
            n
        )
    });
    buf.truncate(n);
    buf
}

/// 10,000 valid packets a node cannot use yet: for a round it has not started (held in the
/// early pool up to its limit) and for a relay whose outgoing link nobody drains (relay
/// queue up to its limit). The rest is counted and dropped.
#[test]
fn floods_fill_bounded_pools_and_the_rest_is_counted() {
    let (topo, policy) = chain_policy();
    let cfg = |v| EngineConfig {
        early_packets: 256,
        relay_packets: 128,
        ..EngineConfig::new(v, 3, 100_000)
    };
    // Root 0 runs round 0: data of round 1 is held for later, up to 256 packets.
    let mut root = Engine::new(cfg(0), &topo).unwrap();
    root.install_policy(policy.clone(), 0).unwrap();
    root.start_round(0, 0).unwrap();
    let direct = path_id(&policy, &[1, 0]);
    for seq in 0..10_000 {
        root.handle_packet(1, &packet(direct, 1, 0, seq, 1, 1));
    }
    let c = root.counters();
    assert_eq!(c.rx_early_held, 256);
    assert_eq!(c.rx_early_dropped, 10_000 - 256);
    assert_eq!(c.rx_bad_mac, 0);
    // Relay 1 forwards 2 -> 0 but nobody polls its output: queue bounded at 128.
    let mut relay = Engine::new(cfg(1), &topo).unwrap();
    relay.install_policy(policy.clone(), 0).unwrap();
    let relayed = path_id(&policy, &[2, 1, 0]);
    for seq in 0..10_000 {
        relay.handle_packet(1, &packet(relayed, 2, 0, seq, 2, 0));
    }
    let c = relay.counters();
    assert_eq!(c.relay_dropped, 10_000 - 128);
    // What was queued drains: exactly 128 datagrams, then nothing (path probes aside).
    let mut out = vec![0u8; 2000];
    let mut sent = 0;
    let mut now = 1;
    while sent < 1_000 {
        match relay.poll_transmit(now, &mut out) {
            Some(t) => {
                let h = HeaderRepr::parse(&out[..t.len]).unwrap();
                if h.kind == PacketKind::ReduceData {
                    assert_eq!((t.next_hop, h.src, h.dst), (0, 2, 0));
                    sent += 1;
                }
            }
            None if now > 10 * SECOND => break,
            None => now += 1_000_000,
        }
    }
    assert_eq!(sent, 128);
    assert_eq!(relay.counters().relay_forwarded, 128);
}

/// The data plane pushes telemetry records into a small ring whose consumer pops one record
/// per 50 pushes. `try_push` never blocks: a full ring is an error the producer counts as a
/// drop (as netstorm-dp's `telemetry_dropped` does). Every record the consumer gets is intact
/// and in order; pushed = delivered + dropped.
#[test]
fn a_slow_telemetry_consumer_costs_drops_never_blocking_or_corruption() {
    let ring = HeapRing::new(RingGeometry {
        slot_size: 64,
        slot_count: 16,
    })
    .unwrap();
    let mut producer = Producer::attach(ring.clone()).unwrap();
    let mut consumer = Consumer::attach(ring).unwrap();
    let record = |i: u64| TelemetryRecord {
        node: (i % 7) as u16,
        path: (i % 5) as u16,
        epoch: 3,
        round: i,
        delivered_bytes: i * 1_000,
        interval_ns: 1_000_000,
        rtt_ns: 50_000_000 + i,
        losses: (i % 3) as u32,
        timestamp_ns: i * 10,
    };
    let (mut dropped, mut delivered, mut last) = (0u64, 0u64, None::<u64>);
    let mut buf = [0u8; 64];
    let mut pop =
        |consumer: &mut Consumer<HeapRing>, delivered: &mut u64, last: &mut Option<u64>| {
            if let Some(n) = consumer.try_pop(&mut buf).unwrap() {
                let r = TelemetryRecord::parse(&buf[..n]).expect("an intact record");
                assert_eq!(r, record(r.round), "record {} corrupted", r.round);
                assert!(last.is_none_or(|l| r.round > l), "out of order");
                *last = Some(r.round);
                *delivered += 1;
            }
        };
    let pushed = 10_000u64;
    for i in 0..pushed {
        match producer.try_push(&record(i).to_bytes()) {
            Ok(()) => {}
            Err(PushError::Full) => dropped += 1,
            Err(e) => panic!("{e}"),
        }
        if i % 50 == 0 {
            pop(&mut consumer, &mut delivered, &mut last);
        }
    }
    while consumer.pending().unwrap() > 0 {
        pop(&mut consumer, &mut delivered, &mut last);
    }
    assert!(
        dropped > 9_000,
        "a 16-slot ring at 1/50 drain rate drops most ({dropped})"
    );
    assert_eq!(delivered + dropped, pushed);
}

/// Node 2 (an inner node of the tree) never starts round 1: its trainer never calls back.
/// Nodes 0 and 1 are alive (heartbeats flow), so nobody is declared dead; the round ends
/// with an error after the bounded wait, naming node 2 as "not started". Meanwhile node 2
/// holds at most `early_packets` of its child's round-1 packets and counts the rest. When
/// the trainer finally calls back, the round completes exactly.
#[test]
fn a_trainer_that_never_calls_back_is_a_bounded_wait_with_a_clear_error() {
    let topo = topology(3, &[(0, 1), (1, 2), (0, 2)], 100.0, 5);
    let mut b = PolicyBuilder::new();
    let reduce = [None, Some(2), Some(0)]; // 1 -> 2 -> 0
    b.tree(0, 1.0, &reduce, &reduce, ForwardMode::Pipelined)
        .link_rates_from(&topo);
    let policy = b.build(1, 3);
    let engines = (0..3)
        .map(|v| {
            let cfg = EngineConfig {
                early_packets: 64,
                ..EngineConfig::new(v, 3, 200_000)
            };
            let mut e = Engine::new(cfg, &topo).unwrap();
            e.install_policy(policy.clone(), 0).unwrap();
            e
        })
        .collect();
    let emu = EmuConfig {
        heartbeat: Some(Heartbeat {
            interval_ns: 100_000_000,
            timeout_ns: SECOND,
        }),
        ..EmuConfig::default()
    };
    let mut sim = Simulation::new(&topo, engines, emu).unwrap();
    fill(&mut sim, 3);
    sim.run_round_all(0, 60 * SECOND).unwrap();
    fill(&mut sim, 3);
    let now = sim.now();
    sim.schedule_start(0, 1, now);
    sim.schedule_start(1, 1, now);
    let err = sim.run_round_watching(1, 20 * SECOND).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, EmuError::Stuck { round: 1, .. }), "{msg}");
    assert!(msg.contains("node 2 (not started)"), "{msg}");
    let c = *sim.engine(2).counters();
    assert_eq!(c.rx_early_held, 64, "{c:?}");
    assert!(c.rx_early_dropped > 0);
    // The trainer calls back at last: the round completes, exactly.
    let now = sim.now();
    sim.schedule_start(2, 1, now);
    sim.run_round_watching(1, 120 * SECOND).unwrap();
    assert!(exact(&sim, 3));
}
