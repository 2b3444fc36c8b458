//! Whole-engine unit tests through the public API, without the emulator: two engines (child
//! 0 → root 1) over a pair link, datagrams passed (or dropped) by hand.

use super::*;
use crate::probe::ProbeConfig;
use crate::wire::HEADER_LEN;
use crate::NANOS_PER_SEC;

const MS: Nanos = 1_000_000;

/// Node `v` of a pair at 1 Gbit/s with 1 ms latency; probes off; `segments` segments of
/// 256 elements.
fn engine(v: NodeId, segments: usize) -> Engine {
    let topo = Topology::pair(1e9, MS);
    let mut cfg = EngineConfig::new(v, 2, 256 * segments);
    cfg.segment_elems = 256;
    cfg.probe = ProbeConfig {
        interval_ns: 0,
        ..ProbeConfig::default()
    };
    // The tests read the acknowledgements the engines send: payloads in clear.
    cfg.protection =
        crate::protect::Protection::insecure(crate::protect::ProtectionMode::Authenticate);
    let mut e = Engine::new(cfg, &topo).unwrap();
    e.install_policy(Policy::pair(&topo, 1), 0).unwrap();
    e
}

/// Wire time of one full data frame at 1 Gbit/s.
fn frame_ns(e: &Engine) -> Nanos {
    e.config().frame_bytes() as Nanos * 8
}

/// Lets `e`'s timers fire at `now`, then takes everything it may send.
fn drain(e: &mut Engine, now: Nanos) -> Vec<Vec<u8>> {
    e.handle_timeout(now);
    let mut out = vec![0u8; 2048];
    std::iter::from_fn(|| {
        let tx = e.poll_transmit(now, &mut out)?;
        Some(out[..tx.len].to_vec())
    })
    .collect()
}

/// A child whose every datagram is lost on the wire: only the retransmission timeout can
/// declare its data lost, and the engine's `loss_detected` must count those losses as the
/// path's telemetry does. (Before the losses were declared in one place, the RTO branch
/// did not count them: this test failed with `loss_detected` 0.)
#[test]
fn loss_detected_counts_rto_losses() {
    let topo = Topology::pair(1e9, 1_000_000);
    let mut cfg = EngineConfig::new(0, 2, 4 * 348);
    // All four segments leave at once, so one RTO finds all of them due.
    cfg.pacing_burst_ns = 1_000_000;
    cfg.probe = ProbeConfig {
        interval_ns: 0,
        ..ProbeConfig::default()
    };
    let mut child = Engine::new(cfg, &topo).unwrap();
    child.install_policy(Policy::pair(&topo, 1), 0).unwrap();
    child.start_round(1, 0).unwrap();
    let mut out = vec![0u8; 2048];
    let mut now: Nanos = 1;
    while child.counters().rto_fired == 0 {
        assert!(now < 10 * NANOS_PER_SEC, "no RTO fired");
        child.handle_timeout(now);
        if child.counters().rto_fired > 0 {
            break;
        }
        while child.poll_transmit(now, &mut out).is_some() {}
        now = child.poll_timeout().expect("a timer is armed").max(now + 1);
    }
    let c = *child.counters();
    assert_eq!(c.tx_data, 4, "every segment was sent once before the RTO");
    let lost: u64 = child.telemetry().map(|t| t.lost_packets).sum();
    assert_eq!(lost, 4, "the RTO declared every segment lost");
    assert_eq!(c.loss_detected, 4, "loss_detected counts RTO losses");
}

#[test]
fn data_leaves_paced_with_a_burst_allowance() {
    let mut child = engine(0, 64);
    let f = frame_ns(&child);
    let burst = child.config().pacing_burst_ns;
    let start = 10 * MS;
    child.start_round(start, 0).unwrap();
    // The k-th frame may leave at start + k f - burst: those with k f <= burst go now.
    let now_batch = (burst / f + 1) as usize;
    assert_eq!(drain(&mut child, start).len(), now_batch);
    let next = child.poll_timeout().unwrap();
    assert_eq!(next, start + now_batch as Nanos * f - burst);
    assert!(
        drain(&mut child, next - 1).is_empty(),
        "not before its time"
    );
    assert_eq!(drain(&mut child, next).len(), 1);
    // In the long run: one frame per frame time.
    let mut now = next;
    let mut sent = now_batch + 1;
    while sent < 64 {
        now = child.poll_timeout().unwrap();
        sent += drain(&mut child, now).len();
    }
    assert_eq!(now, start + 63 * f - burst);
}

#[test]
fn poll_timeout_is_the_rto_once_everything_is_sent() {
    let mut child = engine(0, 4);
    child.start_round(MS, 0).unwrap();
    let mut now = MS;
    let mut sent = 0;
    while sent < 4 {
        sent += drain(&mut child, now).len();
        now = child.poll_timeout().unwrap();
    }
    // The initial RTO after the first datagram left: seeded from the pair's 1 ms latency,
    // 3x the round trip plus the ack delay (RFC 9002), not the unseeded default.
    let rtt = 2 * MS + child.config().ack_delay_ns;
    assert_eq!(child.poll_timeout(), Some(MS + 3 * rtt));
}

#[test]
fn a_lone_segment_is_acknowledged_after_the_ack_delay() {
    let mut child = engine(0, 4);
    let mut root = engine(1, 4);
    child.start_round(MS, 0).unwrap();
    root.start_round(MS, 0).unwrap();
    let first = drain(&mut child, MS).remove(0);
    assert_eq!(
        Packet::new_checked(&first[..]).unwrap().kind(),
        PacketKind::ReduceData
    );
    let arrival = 2 * MS;
    root.handle_packet(arrival, &first);
    let delay = root.config().ack_delay_ns;
    // In order and fewer than `ack_every`: the ack waits (the root's broadcast of the
    // segment's final value leaves at once).
    let sent = drain(&mut root, arrival);
    assert_eq!(kinds(&sent), [PacketKind::BroadcastData]);
    assert_eq!(root.poll_timeout(), Some(arrival + delay));
    let sent = drain(&mut root, arrival + delay);
    assert_eq!(kinds(&sent), [PacketKind::Ack]);
    let ack = Packet::new_checked(&sent[0][..]).unwrap();
    assert_eq!(ack.kind(), PacketKind::Ack);
    let repr = AckRepr::parse(ack.payload()).unwrap();
    assert_eq!((repr.cum_ack, repr.top, repr.bits), (1, 1, 1));
    // The child takes it: an RTT sample of 1 ms + the ack delay, nothing lost.
    child.handle_packet(arrival + delay + MS, &sent[0]);
    let (srtt, _) = child.path_stats(0).unwrap();
    assert_eq!(srtt, Some(2 * MS + delay));
    assert_eq!(child.counters().loss_detected, 0);
}

#[test]
fn an_out_of_order_segment_is_acknowledged_at_once() {
    let mut child = engine(0, 4);
    let mut root = engine(1, 4);
    child.start_round(MS, 0).unwrap();
    root.start_round(MS, 0).unwrap();
    let mut sent = drain(&mut child, MS);
    while sent.len() < 2 {
        let now = child.poll_timeout().unwrap();
        sent.extend(drain(&mut child, now));
    }
    // The first is lost: the second arrives out of order.
    root.handle_packet(2 * MS, &sent[1]);
    let sent = drain(&mut root, 2 * MS);
    assert_eq!(kinds(&sent), [PacketKind::Ack, PacketKind::BroadcastData]);
    let ack = Packet::new_checked(&sent[0][..]).unwrap();
    let repr = AckRepr::parse(ack.payload()).unwrap();
    assert_eq!((repr.cum_ack, repr.top, repr.bits), (0, 2, 1));
    assert_eq!(sent[0].len(), HEADER_LEN + wire_ack_len(&root));
}

fn kinds(datagrams: &[Vec<u8>]) -> Vec<PacketKind> {
    datagrams
        .iter()
        .map(|d| Packet::new_checked(&d[..]).unwrap().kind())
        .collect()
}

/// Length of an ack datagram after its header (payload and tag).
fn wire_ack_len(e: &Engine) -> usize {
    crate::wire::ACK_PAYLOAD_LEN + e.config().protection.tag_len()
}

#[test]
fn two_engines_complete_a_round_bit_identically() {
    let mut e = [engine(0, 8), engine(1, 8)];
    for (v, eng) in e.iter_mut().enumerate() {
        for (i, x) in eng.buffer_mut().iter_mut().enumerate() {
            *x = (v * 1000 + i % 97) as f32;
        }
        eng.start_round(MS, 0).unwrap();
    }
    // A lossless wire with 1 ms latency, in virtual time.
    let mut wire: Vec<(Nanos, usize, Vec<u8>)> = Vec::new();
    let mut now = MS;
    let mut done = [false; 2];
    while !(done[0] && done[1]) {
        assert!(now < NANOS_PER_SEC, "round stuck");
        wire.sort_by_key(|w| w.0);
        while wire.first().is_some_and(|w| w.0 <= now) {
            let (_, to, d) = wire.remove(0);
            e[to].handle_packet(now, &d);
        }
        for v in 0..2 {
            e[v].handle_timeout(now);
            for d in drain(&mut e[v], now) {
                wire.push((now + MS, 1 - v, d));
            }
            while let Some(ev) = e[v].poll_event() {
                done[v] |= matches!(ev, EngineEvent::RoundComplete { .. });
            }
        }
        let next = [e[0].poll_timeout(), e[1].poll_timeout()]
            .into_iter()
            .flatten()
            .chain(wire.iter().map(|w| w.0))
            .min();
        now = next.unwrap_or(now + 1).max(now + 1);
    }
    assert_eq!(e[0].buffer(), e[1].buffer());
    assert!(e[0]
        .buffer()
        .iter()
        .enumerate()
        .all(|(i, x)| *x == (1000 + 2 * (i % 97)) as f32));
    for eng in &e {
        let c = eng.counters();
        assert_eq!(
            (c.loss_detected, c.rto_fired, c.tail_timer_fired),
            (0, 0, 0)
        );
    }
}
