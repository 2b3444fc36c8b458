//! Emulated-time checks of pipelining: the round time of big buffers over slow links.

use netstorm_dataplane::emu::{EmuConfig, Simulation};
use netstorm_dataplane::engine::{Engine, EngineConfig};
use netstorm_dataplane::policy::{ForwardMode, PolicyBuilder};
use netstorm_dataplane::protect::Protection;
use netstorm_dataplane::topology::{Link, Node, Topology};
use netstorm_dataplane::NodeId;

fn chain(n: usize, mbps: f64, latency_ms: u64) -> Topology {
    let nodes = Node::numbered(n);
    let mut links = Vec::new();
    for i in 0..n - 1 {
        for (a, b) in [(i, i + 1), (i + 1, i)] {
            links.push(Link {
                from: a as NodeId,
                to: b as NodeId,
                rate_bps: mbps * 1e6,
                latency_ns: latency_ms * 1_000_000,
                loss: 0.0,
            });
        }
    }
    Topology { nodes, links }
}

/// Rounds the buffer of `elems` f32 over a chain rooted at its last node; returns emulated seconds.
fn chain_round_s(n: usize, elems: usize) -> f64 {
    let topo = chain(n, 100.0, 20);
    let root = (n - 1) as NodeId;
    let reduce: Vec<Option<NodeId>> = (0..n)
        .map(|v| (v + 1 < n).then_some(v as NodeId + 1))
        .collect();
    let bcast = reduce.clone();
    let mut b = PolicyBuilder::new();
    b.tree(root, 1.0, &reduce, &bcast, ForwardMode::Pipelined)
        .link_rates_from(&topo);
    let policy = b.build(1, n as u16);
    let engines: Vec<Engine> = (0..n)
        .map(|v| {
            // Issue 2's 8.0–8.8 s target was set for untagged 1498-byte frames: this checks
            // pipelining, so it runs without the 16-byte tag (see `max_round_s`).
            let cfg = EngineConfig {
                protection: Protection::off(),
                ..EngineConfig::new(v as NodeId, n as u16, elems)
            };
            let mut e = Engine::new(cfg, &topo).unwrap();
            e.install_policy(policy.clone(), 0).unwrap();
            for (i, x) in e.buffer_mut().iter_mut().enumerate() {
                *x = ((i + v) % 7) as f32;
            }
            e
        })
        .collect();
    let mut sim = Simulation::new(&topo, engines, EmuConfig::default()).unwrap();
    let s = sim.run_round_all(0, 100 * 1_000_000_000).unwrap();
    // Everyone holds the same, correct sum.
    for v in 0..n {
        let buf = sim.engine(v as NodeId).buffer();
        for i in (0..elems).step_by(9973) {
            let want: f32 = (0..n).map(|u| ((i + u) % 7) as f32).sum();
            assert_eq!(buf[i], want, "node {v} element {i}");
        }
    }
    s.sync_ns() as f64 / 1e9
}

/// Issue 2's 8.8 s bound, set when a 1498-byte frame carried 1408 payload bytes (48-byte
/// header); the 64-byte header of wire version 2 (packet number, sender start) leaves 1392
/// per frame of the same size, so the same bound per payload byte is 8.8 × 1408 / 1392
/// ≈ 8.90 s (the runs take 8.82 s / 8.90 s; 8.72 s / 8.79 s with the 48-byte header).
fn max_round_s() -> f64 {
    8.8 * 1408.0 / (EngineConfig::new(0, 2, 1).segment_bytes() as f64)
}

#[test]
fn two_nodes_100mb_pipeline_near_line_rate() {
    let t = chain_round_s(2, 25_000_000);
    eprintln!("2 nodes, 100 MB, 100 Mbit/s, 20 ms: {t:.3} s");
    assert!((8.0..=max_round_s()).contains(&t), "round took {t} s");
}

#[test]
fn four_node_chain_pipelines_through_inner_nodes() {
    let t2 = chain_round_s(2, 25_000_000);
    let t4 = chain_round_s(4, 25_000_000);
    eprintln!("chain of 4: {t4:.3} s vs 2 nodes {t2:.3} s");
    assert!((8.0..=max_round_s()).contains(&t4), "round took {t4} s");
    assert!(
        t4 < t2 * 1.05,
        "chain of 4 ({t4}) should pipeline like 2 nodes ({t2})"
    );
}
