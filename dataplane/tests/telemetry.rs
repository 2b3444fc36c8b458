//! Per-path telemetry from the engine: delivery rate, RTT from echoed timestamps, losses.

use netstorm_dataplane::emu::{EmuConfig, Simulation};
use netstorm_dataplane::engine::{Engine, EngineConfig};
use netstorm_dataplane::policy::Policy;
use netstorm_dataplane::topology::Topology;

fn pair(mbps: f64, latency_ms: u64) -> Topology {
    Topology::pair(mbps * 1e6, latency_ms * 1_000_000)
}

fn run(topo: &Topology, extra_loss: f64) -> Simulation {
    let policy = Policy::pair(topo, 1);
    let engines = (0..2)
        .map(|v| {
            let mut e = Engine::new(EngineConfig::new(v, 2, 2_000_000), topo).unwrap();
            e.install_policy(policy.clone(), 0).unwrap();
            e
        })
        .collect();
    let mut sim = Simulation::new(
        topo,
        engines,
        EmuConfig {
            extra_loss,
            ..EmuConfig::default()
        },
    )
    .unwrap();
    sim.run_round_all(0, 600_000_000_000).unwrap();
    sim
}

#[test]
fn delivery_rate_and_rtt_match_the_link() {
    let topo = pair(100.0, 20);
    let sim = run(&topo, 0.0);
    let t: Vec<_> = sim.engine(0).telemetry().collect();
    assert_eq!(t.len(), 1);
    let p = &t[0];
    assert_eq!(p.hops, vec![0, 1]);
    let sample = p.rate_sample.expect("a rate sample after 8 MB");
    assert!(
        (sample.bps / 100e6 - 1.0).abs() < 0.05,
        "delivery rate {} bit/s on a 100 Mbit/s link",
        sample.bps
    );
    let min_rtt = p.min_rtt_ns.unwrap() as f64 / 1e6;
    assert!(
        (40.0..42.0).contains(&min_rtt),
        "min RTT {min_rtt} ms over 2 x 20 ms"
    );
    assert_eq!(p.lost_packets, 0);
    assert!(p.delivered_bytes >= 8_000_000);
}

#[test]
fn losses_are_counted() {
    let topo = pair(100.0, 5);
    let sim = run(&topo, 0.05);
    let lost: u64 = sim.engine(0).telemetry().map(|p| p.lost_packets).sum();
    let retx = sim.engine(0).counters().tx_retransmits;
    assert!(lost > 100, "5 % loss on ~5700 packets, {lost} counted");
    // A packet declared lost and acknowledged before its turn to be resent is skipped
    // (a spurious loss); nearly every loss is a real one here.
    assert!(
        retx as f64 >= 0.95 * lost as f64,
        "losses are retransmitted ({retx} retransmits for {lost} losses)"
    );
}

/// Runs one 8 MB round with the senders pacing as if every link had `believed_mbps`.
fn run_believing(topo: &Topology, believed_mbps: f64) -> Simulation {
    let mut believed = topo.clone();
    for l in &mut believed.links {
        l.rate_bps = believed_mbps * 1e6;
    }
    let policy = Policy::pair(&believed, 1);
    let engines = (0..2)
        .map(|v| {
            let mut e = Engine::new(EngineConfig::new(v, 2, 2_000_000), topo).unwrap();
            e.install_policy(policy.clone(), 0).unwrap();
            e
        })
        .collect();
    let mut sim = Simulation::new(topo, engines, EmuConfig::default()).unwrap();
    sim.run_round_all(0, 600_000_000_000).unwrap();
    sim
}

#[test]
fn probes_see_a_link_faster_than_the_policy_assumes_within_budget() {
    // The policy believes 20 Mbit/s, the link does 100: data never shows more than ~20,
    // the probe trains measure the real capacity.
    let topo = pair(100.0, 20);
    let sim = run_believing(&topo, 20.0);
    let data = sim.engine(0).telemetry().next().unwrap();
    let rate = data.rate_sample.unwrap().bps;
    assert!(
        rate < 30e6,
        "paced data delivers about 20 Mbit/s, saw {rate}"
    );
    for (v, from) in [(1u16, 0u16), (0, 1)] {
        let s: Vec<_> = sim.engine(v).probe_samples().collect();
        assert_eq!(s.len(), 1, "node {v} measured its one in-link");
        assert_eq!(s[0].from, from);
        assert!(
            (s[0].bps / 100e6 - 1.0).abs() < 0.01,
            "probe measured {} bit/s on a 100 Mbit/s link",
            s[0].bps
        );
    }
    for v in 0..2 {
        let c = sim.engine(v).counters();
        assert!(c.tx_probes >= 8, "node {v} sent {} probes", c.tx_probes);
        let other = c.tx_bytes - c.tx_probe_bytes;
        // Budget: one start-up train (8 frames) on its one link + 1 % of the other bytes.
        let startup = 8 * sim.engine(v).config().max_datagram_len();
        assert!(
            c.tx_probe_bytes as f64 <= 0.01 * other as f64 + startup as f64,
            "node {v}: {} probe bytes for {other} other bytes (budget 1 % + start-up)",
            c.tx_probe_bytes
        );
        assert!(
            c.tx_probe_bytes as f64 >= 0.005 * other as f64,
            "node {v}: probing used the budget ({} bytes)",
            c.tx_probe_bytes
        );
    }
    // A link 5x slower than believed is measured slow too.
    let sim = run_believing(&pair(20.0, 20), 100.0);
    let s = sim.engine(1).probe_samples().next().unwrap();
    assert!((s.bps / 20e6 - 1.0).abs() < 0.01, "{}", s.bps);
}

/// One 10 MB round between two nodes, 100 Mbit/s and 20 ms each way, with `loss` random
/// loss on every frame; the senders' loss tolerance is `tolerance`.
fn lossy_round_s(loss: f64, tolerance: f64) -> f64 {
    let topo = pair(100.0, 20);
    let policy = Policy::pair(&topo, 1);
    let engines = (0..2)
        .map(|v| {
            let mut cfg = EngineConfig::new(v, 2, 2_500_000);
            cfg.loss_tolerance = tolerance;
            let mut e = Engine::new(cfg, &topo).unwrap();
            e.install_policy(policy.clone(), 0).unwrap();
            e
        })
        .collect();
    let mut sim = Simulation::new(
        &topo,
        engines,
        EmuConfig {
            extra_loss: loss,
            ..EmuConfig::default()
        },
    )
    .unwrap();
    let s = sim.run_round_all(0, 600_000_000_000).unwrap();
    s.sync_ns() as f64 / 1e9
}

#[test]
fn random_loss_below_the_tolerance_is_not_taken_as_congestion() {
    let clean = lossy_round_s(0.0, 0.02);
    let tolerant = lossy_round_s(0.01, 0.02);
    let every_loss_backs_off = lossy_round_s(0.01, 0.0);
    assert!(
        tolerant < 1.6 * clean,
        "1 % loss: {tolerant:.2} s vs {clean:.2} s lossless"
    );
    assert!(
        every_loss_backs_off > 3.0 * clean,
        "backing off on every loss: {every_loss_backs_off:.2} s vs {clean:.2} s"
    );
}
