//! The engine's own cost at one aggregating node, without any port: nanoseconds of the
//! aggregator's `handle_packet` + `poll_transmit` (+ timers, events) per child segment.
//!
//! Four engines in one thread — child 0, child 1 → aggregator → root, the result broadcast
//! back down, as `netstorm bench dataplane` runs them — exchange datagrams through in-memory
//! queues in virtual time (1 us per step, 1 Tbit/s links, so pacing never holds a frame and
//! a step moves a batch like a busy driver iteration). Only the aggregator's calls are timed
//! (two clock reads per step of the bench, none inside the engine; the mean batch is printed). The datagrams sit in this core's cache, so this is the engine's CPU floor; the
//! DPDK bench's capacity adds the port and datagrams whose lines live in another core's cache.
//!
//! A 40 Gbit/s aggregator has 205 ns per 1 KiB child segment. Criterion's "time" below is per
//! child segment (one iteration = one child segment's share of a run of whole rounds).
//!
//! Run: `cargo bench --bench aggregator`.

use criterion::{criterion_group, criterion_main, Criterion};
use netstorm_dataplane::engine::{Engine, EngineConfig, EngineEvent};
use netstorm_dataplane::policy::{ForwardMode, PolicyBuilder};
use netstorm_dataplane::protect::{Protection, ProtectionMode};
use netstorm_dataplane::topology::{Link, Node, Topology};
use netstorm_dataplane::NodeId;
use std::time::{Duration, Instant};

const CHILDREN: usize = 2;
const AGG: usize = CHILDREN;
const ROOT: usize = CHILDREN + 1;
const SEGMENT_ELEMS: usize = 256; // 1 KiB
const SEGMENTS_PER_ROUND: usize = 1024;
const BATCH: usize = 32;
/// Virtual time per step: long enough that the pacer lets a full batch leave (1 Tbit/s moves
/// ~120 KiB per step), so each step is one busy driver iteration of up to `BATCH` datagrams.
const STEP_NS: u64 = 1_000;

struct Cluster {
    engines: Vec<Engine>,
    /// Datagrams in flight to each node: a buffer of the largest datagram's size and the
    /// length used (buffers are recycled through `spare` without resizing or zeroing).
    inbox: Vec<Vec<(Vec<u8>, usize)>>,
    complete: Vec<bool>,
    spare: Vec<Vec<u8>>,
    round: u32,
    now: u64,
    /// Aggregator steps that moved something, and datagrams it received + sent.
    agg_steps: u64,
    agg_datagrams: u64,
}

impl Cluster {
    fn new(protection: Protection) -> Self {
        let n = CHILDREN + 2;
        let mut links = Vec::new();
        let mut link = |from: usize, to: usize| {
            for (a, b) in [(from, to), (to, from)] {
                links.push(Link {
                    from: a as NodeId,
                    to: b as NodeId,
                    rate_bps: 1e12,
                    latency_ns: 0,
                    loss: 0.0,
                });
            }
        };
        for c in 0..CHILDREN {
            link(c, AGG);
        }
        link(AGG, ROOT);
        let topo = Topology {
            nodes: Node::numbered(n),
            links,
        };
        let mut reduce: Vec<Option<NodeId>> = vec![Some(AGG as NodeId); n];
        reduce[AGG] = Some(ROOT as NodeId);
        reduce[ROOT] = None;
        let mut b = PolicyBuilder::new();
        b.tree(
            ROOT as NodeId,
            1.0,
            &reduce,
            &reduce,
            ForwardMode::Pipelined,
        );
        b.link_rates_from(&topo);
        let policy = b.build(1, n as u16);
        let engines = (0..n)
            .map(|v| {
                let mut cfg =
                    EngineConfig::new(v as NodeId, n as u16, SEGMENT_ELEMS * SEGMENTS_PER_ROUND);
                cfg.segment_elems = SEGMENT_ELEMS;
                cfg.protection = protection.clone();
                cfg.ack_delay_ns = 20_000;
                let mut e = Engine::new(cfg, &topo).expect("engine");
                e.install_policy(policy.clone(), 0).expect("policy");
                for (i, x) in e.buffer_mut().iter_mut().enumerate() {
                    *x = (v * 7 + i % 13) as f32;
                }
                e
            })
            .collect();
        let mut c = Self {
            engines,
            inbox: vec![Vec::new(); n],
            complete: vec![false; n],
            spare: Vec::new(),
            round: 0,
            now: 1,
            agg_steps: 0,
            agg_datagrams: 0,
        };
        for e in &mut c.engines {
            e.start_round(c.now, 0).expect("start");
        }
        c
    }

    /// Runs whole rounds until `child_segments` child segments went into the aggregator;
    /// returns the aggregator's time and how many child segments it took.
    fn run(&mut self, child_segments: u64) -> (Duration, u64) {
        let per_round = (CHILDREN * SEGMENTS_PER_ROUND) as u64;
        let rounds = child_segments.div_ceil(per_round).max(1);
        let mut agg_time = Duration::ZERO;
        let mut done = 0u64;
        let max_len = self.engines[0].config().max_datagram_len();
        while done < rounds {
            self.now += STEP_NS;
            for v in 0..self.engines.len() {
                let t0 = (v == AGG).then(Instant::now);
                let e = &mut self.engines[v];
                let mut moved = self.inbox[v].len() as u64;
                for (d, len) in self.inbox[v].drain(..) {
                    e.handle_packet(self.now, &d[..len]);
                    self.spare.push(d);
                }
                if e.poll_timeout().is_some_and(|t| t <= self.now) {
                    e.handle_timeout(self.now);
                }
                for _ in 0..BATCH {
                    let mut out = self.spare.pop().unwrap_or_else(|| vec![0; max_len]);
                    match e.poll_transmit(self.now, &mut out) {
                        Some(t) => {
                            moved += 1;
                            self.inbox[t.next_hop as usize].push((out, t.len));
                        }
                        None => {
                            self.spare.push(out);
                            break;
                        }
                    }
                }
                while let Some(ev) = e.poll_event() {
                    if let EngineEvent::RoundComplete { .. } = ev {
                        self.complete[v] = true;
                    }
                }
                if let Some(t0) = t0 {
                    agg_time += t0.elapsed();
                    if moved > 0 {
                        self.agg_steps += 1;
                        self.agg_datagrams += moved;
                    }
                }
            }
            // The next round starts on every node once the last has finished this one.
            if self.complete.iter().all(|&c| c) {
                self.complete.fill(false);
                self.round += 1;
                done += 1;
                for e in &mut self.engines {
                    e.start_round(self.now, self.round).expect("start");
                }
            }
        }
        (agg_time, rounds * per_round)
    }
}

fn aggregator(c: &mut Criterion) {
    let mut group = c.benchmark_group("engine_aggregator");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    for (name, mode) in [
        ("per_child_segment_1KiB_mac", ProtectionMode::Encrypt),
        (
            "per_child_segment_1KiB_authenticate",
            ProtectionMode::Authenticate,
        ),
        ("per_child_segment_1KiB_no_mac", ProtectionMode::Off),
    ] {
        let mut cluster = Cluster::new(Protection::insecure(mode));
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let (t, segs) = cluster.run(iters);
                // Scaled to exactly `iters` child segments (runs are whole rounds).
                t.mul_f64(iters as f64 / segs as f64)
            })
        });
        eprintln!(
            "{name}: aggregator batch {:.1} datagrams in + out per busy step",
            cluster.agg_datagrams as f64 / cluster.agg_steps.max(1) as f64
        );
    }
    group.finish();
}

criterion_group!(benches, aggregator);
criterion_main!(benches);
