//! The tail-loss timer: on a short link, a round whose last datagrams were lost recovers
//! within a few round trips, not one retransmission timeout (srtt + 4 x max(rttvar, 1 ms)).
//!
//! Two engines (child 0, root 1) in a small deterministic event loop over a 10 us link; the
//! wire drops chosen data datagrams of round 1. Times are virtual: nothing reads a clock.

use netstorm_dataplane::engine::{Engine, EngineConfig, EngineEvent};
use netstorm_dataplane::policy::Policy;
use netstorm_dataplane::probe::ProbeConfig;
use netstorm_dataplane::topology::Topology;
use netstorm_dataplane::wire::{Packet, PacketKind};
use netstorm_dataplane::Nanos;
use std::collections::VecDeque;

const LATENCY_NS: Nanos = 10_000;
const SEGMENTS: usize = 64;
const ELEMS: usize = 256;

fn engines() -> Vec<Engine> {
    let topo = Topology::pair(10e9, LATENCY_NS);
    let policy = Policy::pair(&topo, 1);
    (0..2)
        .map(|v| {
            let mut cfg = EngineConfig::new(v, 2, ELEMS * SEGMENTS);
            cfg.segment_elems = ELEMS;
            cfg.ack_delay_ns = 20_000;
            cfg.min_rto_ns = 2_000_000;
            cfg.initial_rto_ns = 20_000_000;
            cfg.probe = ProbeConfig {
                interval_ns: 0,
                ..ProbeConfig::default()
            };
            let mut e = Engine::new(cfg, &topo).unwrap();
            e.install_policy(policy.clone(), 0).unwrap();
            e
        })
        .collect()
}

fn input(v: usize, r: u32, i: usize) -> f32 {
    ((v * 7 + r as usize * 3 + i) % 251) as f32
}

/// Runs `rounds` rounds back to back; `drop(round, seq_of_data_from_child)` says which data
/// datagrams child 0 sends are lost. Returns each round's completion time at the child (from
/// its start) and the engines.
fn run(rounds: u32, drop: impl Fn(u32, u64) -> bool) -> (Vec<Nanos>, Vec<Engine>) {
    let mut e = engines();
    let mut wire: VecDeque<(Nanos, usize, Vec<u8>)> = VecDeque::new();
    let mut out = vec![0u8; 2048];
    let mut now: Nanos = 1;
    let mut times = Vec::new();
    let mut child_data_sent = 0u64;
    for r in 0..rounds {
        let start = now;
        for (v, eng) in e.iter_mut().enumerate() {
            for (i, x) in eng.buffer_mut().iter_mut().enumerate() {
                *x = input(v, r, i);
            }
            eng.start_round(now, r).unwrap();
        }
        let mut done = [false; 2];
        while !(done[0] && done[1]) {
            assert!(now - start < 1_000_000_000, "round {r} stuck");
            // Deliver what is due, then let both engines send and time out.
            while wire.front().is_some_and(|(t, _, _)| *t <= now) {
                let (_, to, d) = wire.pop_front().unwrap();
                e[to].handle_packet(now, &d);
            }
            for v in 0..2 {
                if e[v].poll_timeout().is_some_and(|t| t <= now) {
                    e[v].handle_timeout(now);
                }
                while let Some(t) = e[v].poll_transmit(now, &mut out) {
                    let is_data = Packet::new_checked(&out[..t.len]).unwrap().kind()
                        == PacketKind::ReduceData;
                    if v == 0 && is_data {
                        child_data_sent += 1;
                        if drop(r, child_data_sent) {
                            continue;
                        }
                    }
                    wire.push_back((now + LATENCY_NS, t.next_hop as usize, out[..t.len].to_vec()));
                }
                while let Some(ev) = e[v].poll_event() {
                    if let EngineEvent::RoundComplete { round, at, .. } = ev {
                        assert_eq!(round, r);
                        done[v] = true;
                        if v == 0 {
                            times.push(at - start);
                        }
                    }
                }
            }
            // Next instant anything happens.
            let next = [
                e[0].poll_timeout(),
                e[1].poll_timeout(),
                wire.front().map(|w| w.0),
            ]
            .into_iter()
            .flatten()
            .min()
            .expect("something is pending while the round runs");
            now = next.max(now + 1);
        }
        for (v, eng) in e.iter().enumerate() {
            for (i, &x) in eng.buffer().iter().enumerate() {
                assert_eq!(
                    x,
                    input(0, r, i) + input(1, r, i),
                    "node {v} round {r} element {i}"
                );
            }
        }
    }
    (times, e)
}

#[test]
fn a_lost_tail_is_resent_within_a_few_round_trips() {
    // Round 0 is clean (it gives the RTT estimate); round 1 loses its last 5 data datagrams.
    let (clean, _) = run(2, |_, _| false);
    // Child data datagrams are counted from 1 over the whole run, retransmissions included:
    // round 1's first transmissions are 65..=128.
    let last = 2 * SEGMENTS as u64;
    let (lossy, e) = run(2, |r, seq| r == 1 && seq > last - 5 && seq <= last);
    let c = e[0].counters();
    assert!(c.tail_timer_fired >= 1, "{c:?}");
    assert_eq!(c.rto_fired, 0, "the tail timer came first: {c:?}");
    assert_eq!(c.tx_retransmits, 5, "{c:?}");
    // Clean round: about 2 RTT + ack delay. The lost tail costs one tail timeout (2 srtt +
    // ack delay) and one more round trip: well under the 4 ms an RTO would take.
    let extra = lossy[1] - clean[1];
    assert!(
        extra < 400_000,
        "a lost tail cost {extra} ns (clean round {} ns, lossy {} ns)",
        clean[1],
        lossy[1]
    );
}

#[test]
fn a_lost_retransmission_still_ends_in_the_rto() {
    // The tail and then its first retransmission are lost: the tail timer fires once per
    // tail, and the RTO (with backoff) takes over; the round still completes exactly.
    let last = 2 * SEGMENTS as u64;
    let (times, e) = run(2, |r, seq| r == 1 && seq > last - 3 && seq <= last + 3);
    let c = e[0].counters();
    assert_eq!(c.tail_timer_fired, 1, "{c:?}");
    assert!(c.rto_fired >= 1, "{c:?}");
    assert!(times[1] >= 2_000_000, "the RTO ({}) bounds it", times[1]);
}
