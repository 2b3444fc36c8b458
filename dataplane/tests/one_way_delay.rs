//! Rate samples tell a saturated route by the forward one-way delay: a queue that delays
//! only a path's acks (on the way back) does not make its samples claim a saturated route,
//! a queue on the way out does. (The back-off still follows the RTT; see the engine.)
//!
//! Two engines (child 0, root 1: 0 sends reduce data to 1, 1 broadcasts back) in a small
//! deterministic event loop over a 5 ms link whose 1 -> 0 direction gains a growing queueing
//! delay (up to 30 ms) while the round runs. Times are virtual: nothing reads a clock.

use netstorm_dataplane::engine::{Engine, EngineConfig, EngineEvent};
use netstorm_dataplane::policy::Policy;
use netstorm_dataplane::probe::ProbeConfig;
use netstorm_dataplane::topology::Topology;
use netstorm_dataplane::Nanos;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

const LATENCY_NS: Nanos = 5_000_000;
const ELEMS: usize = 1 << 20;

/// Extra delay of the 1 -> 0 direction at `t`: grows by 1 ms every 4 ms of the round, up to
/// 30 ms.
fn queue_delay(t: Nanos) -> Nanos {
    (t / 4).min(30_000_000)
}

/// Datagrams in flight: (arrival time, send order, destination, bytes), earliest first.
type Wire = BinaryHeap<Reverse<(Nanos, u64, usize, Vec<u8>)>>;

struct Seen {
    /// Lowest pacing rate of each node's path, relative to where it started.
    min_pace: [f64; 2],
    /// Each node's path: some rate sample claimed a saturated route.
    saturated: [bool; 2],
    /// Each node's path: largest smoothed RTT.
    max_srtt: [Nanos; 2],
}

fn run() -> Seen {
    let topo = Topology::pair(100e6, LATENCY_NS);
    let policy = Policy::pair(&topo, 1);
    let mut e: Vec<Engine> = (0..2)
        .map(|v| {
            let mut cfg = EngineConfig::new(v, 2, ELEMS);
            cfg.probe = ProbeConfig {
                interval_ns: 0,
                ..ProbeConfig::default()
            };
            let mut e = Engine::new(cfg, &topo).unwrap();
            e.install_policy(policy.clone(), 0).unwrap();
            for (i, x) in e.buffer_mut().iter_mut().enumerate() {
                *x = (v as usize * 3 + i % 97) as f32;
            }
            e
        })
        .collect();
    let mut wire = Wire::new();
    let mut seq = 0u64;
    let mut out = vec![0u8; 2048];
    let mut now: Nanos = 1;
    for eng in e.iter_mut() {
        eng.start_round(now, 0).unwrap();
    }
    let nominal: Vec<f64> = e
        .iter()
        .map(|x| x.telemetry().next().unwrap().pacing_bps)
        .collect();
    let mut seen = Seen {
        min_pace: [1.0; 2],
        saturated: [false; 2],
        max_srtt: [0; 2],
    };
    let mut done = [false; 2];
    while !(done[0] && done[1]) {
        assert!(now < 30_000_000_000, "the round is stuck");
        while wire.peek().is_some_and(|Reverse((t, ..))| *t <= now) {
            let Reverse((_, _, to, d)) = wire.pop().unwrap();
            e[to].handle_packet(now, &d);
        }
        for v in 0..2 {
            if e[v].poll_timeout().is_some_and(|t| t <= now) {
                e[v].handle_timeout(now);
            }
            while let Some(t) = e[v].poll_transmit(now, &mut out) {
                let delay = LATENCY_NS + if v == 1 { queue_delay(now) } else { 0 };
                seq += 1;
                wire.push(Reverse((
                    now + delay,
                    seq,
                    t.next_hop as usize,
                    out[..t.len].to_vec(),
                )));
            }
            while let Some(ev) = e[v].poll_event() {
                if let EngineEvent::RoundComplete { .. } = ev {
                    done[v] = true;
                }
            }
            if let Some(p) = e[v].telemetry().next() {
                seen.min_pace[v] = seen.min_pace[v].min(p.pacing_bps / nominal[v]);
                seen.saturated[v] |= p.rate_sample.is_some_and(|s| s.saturated);
                seen.max_srtt[v] = seen.max_srtt[v].max(p.srtt_ns.unwrap_or(0));
            }
        }
        let next = [
            e[0].poll_timeout(),
            e[1].poll_timeout(),
            wire.peek().map(|Reverse((t, ..))| *t),
        ]
        .into_iter()
        .flatten()
        .min()
        .expect("something is pending while the round runs");
        now = next.max(now + 1);
    }
    for eng in &e {
        for (i, &x) in eng.buffer().iter().enumerate() {
            assert_eq!(x, (3 + 2 * (i % 97)) as f32, "element {i}");
        }
    }
    seen
}

#[test]
fn a_queue_on_the_way_back_is_not_taken_for_one_on_the_route() {
    let seen = run();
    // Node 0's acks come back through the queue: its RTT grows well past the threshold...
    assert!(
        seen.max_srtt[0] > 2 * LATENCY_NS + 10_000_000,
        "node 0's srtt peaked at {} ns",
        seen.max_srtt[0]
    );
    // ...but its route is empty: it never claims a saturated route.
    assert!(!seen.saturated[0], "node 0 claimed a saturated route");
    // Node 1's data waits in the queue: it backs off and says so in its samples.
    assert!(
        seen.min_pace[1] < 0.75,
        "node 1 kept {} of its pace",
        seen.min_pace[1]
    );
    assert!(seen.saturated[1], "node 1 never saw its queue");
}
