//! Exact correctness of synchronization under random topologies, trees, shares, loss,
//! reordering, duplication and rate changes — all in deterministic virtual time.

use netstorm_dataplane::emu::{EmuConfig, Simulation};
use netstorm_dataplane::engine::{Engine, EngineConfig};
use netstorm_dataplane::policy::{ForwardMode, Policy, PolicyBuilder};
use netstorm_dataplane::scenario::{Change, TimedChange};
use netstorm_dataplane::topology::{Link, Node, Topology};
use netstorm_dataplane::NodeId;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const SECOND: u64 = 1_000_000_000;

/// A random connected topology: a random spanning tree plus extra links, all bidirectional.
fn random_topology(rng: &mut ChaCha8Rng, n: usize) -> Topology {
    let nodes = (0..n)
        .map(|i| Node {
            name: format!("dc{i}"),
            egress_bps: None,
            ingress_bps: None,
        })
        .collect();
    let mut pairs = std::collections::BTreeSet::new();
    for v in 1..n {
        pairs.insert((rng.random_range(0..v), v));
    }
    for _ in 0..n {
        let (a, b) = (rng.random_range(0..n), rng.random_range(0..n));
        if a != b {
            pairs.insert((a.min(b), a.max(b)));
        }
    }
    let mut links = Vec::new();
    for (a, b) in pairs {
        let mbps = rng.random_range(50.0..1000.0);
        let latency_ns = rng.random_range(0..30) * 1_000_000;
        for (x, y) in [(a, b), (b, a)] {
            links.push(Link {
                from: x as NodeId,
                to: y as NodeId,
                rate_bps: mbps * 1e6,
                latency_ns,
                loss: 0.0,
            });
        }
    }
    Topology { nodes, links }
}

/// A random spanning tree over the links, rooted at `root`, as a parent map (random BFS).
fn random_tree(rng: &mut ChaCha8Rng, topo: &Topology, root: NodeId) -> Vec<Option<NodeId>> {
    let n = topo.node_count();
    let mut parent = vec![None; n];
    let mut seen = vec![false; n];
    seen[root as usize] = true;
    let mut frontier = vec![root];
    while let Some(i) = (!frontier.is_empty()).then(|| rng.random_range(0..frontier.len())) {
        let u = frontier[i];
        let mut nbrs: Vec<NodeId> = topo
            .out_neighbors(u)
            .filter(|&v| !seen[v as usize])
            .collect();
        if nbrs.is_empty() {
            frontier.swap_remove(i);
            continue;
        }
        nbrs.shuffle(rng);
        let v = nbrs[0];
        seen[v as usize] = true;
        parent[v as usize] = Some(u);
        frontier.push(v);
    }
    parent
}

/// Random policy: `trees` trees over random roots (roots may repeat), random shares; some
/// trees use relayed (fewest-hop) routes to random non-adjacent parents.
fn random_policy(rng: &mut ChaCha8Rng, topo: &Topology, trees: usize) -> Policy {
    let n = topo.node_count();
    let mut b = PolicyBuilder::new();
    let mut weights: Vec<f64> = (0..trees).map(|_| rng.random_range(0.05..1.0)).collect();
    let total: f64 = weights.iter().sum();
    weights.iter_mut().for_each(|w| *w /= total);
    for share in weights {
        let root = rng.random_range(0..n) as NodeId;
        let forward = if rng.random_bool(0.2) {
            ForwardMode::StoreAndForward
        } else {
            ForwardMode::Pipelined
        };
        if rng.random_bool(0.3) {
            // Star over routes: every node talks to the root directly, relayed if needed.
            let reduce: Vec<Option<Vec<NodeId>>> = (0..n as NodeId)
                .map(|v| (v != root).then(|| topo.fewest_hop_route(v, root).unwrap()))
                .collect();
            let bcast: Vec<Option<Vec<NodeId>>> = (0..n as NodeId)
                .map(|v| (v != root).then(|| topo.fewest_hop_route(root, v).unwrap()))
                .collect();
            b.tree_with_routes(root, share, &reduce, &bcast, forward);
        } else {
            let reduce = random_tree(rng, topo, root);
            let bcast = random_tree(rng, topo, root);
            b.tree(root, share, &reduce, &bcast, forward);
        }
    }
    b.link_rates_from(topo);
    b.build(1, n as u16)
}

struct Outcome {
    finish_ns: u64,
    retransmits: u64,
    duplicates: u64,
    relayed: u64,
    /// Data the MAC rejected, summed over nodes: must stay 0 on an honest network.
    bad_macs: u64,
    trace: u64,
    buffers: Vec<Vec<f32>>,
}

/// Runs `rounds` rounds; node v's input in round r is `input(v, r, i)`.
fn run(
    topo: &Topology,
    policy: &Policy,
    elems: usize,
    emu: EmuConfig,
    changes: Vec<TimedChange>,
    rounds: u32,
    input: &dyn Fn(usize, u32, usize) -> f32,
) -> Outcome {
    let n = topo.node_count();
    let engines = (0..n)
        .map(|v| {
            let mut cfg = EngineConfig::new(v as NodeId, n as u16, elems);
            cfg.segment_elems = 64;
            cfg.max_inflight = 1024;
            let mut e = Engine::new(cfg, topo).unwrap();
            e.install_policy(policy.clone(), 0).unwrap();
            e
        })
        .collect();
    let mut sim = Simulation::new(topo, engines, emu).unwrap();
    sim.set_changes(changes.into_iter());
    let mut buffers = Vec::new();
    for r in 0..rounds {
        for v in 0..n {
            for (i, x) in sim
                .engine_mut(v as NodeId)
                .buffer_mut()
                .iter_mut()
                .enumerate()
            {
                *x = input(v, r, i);
            }
        }
        let s = sim
            .run_round_all(r, 600 * SECOND)
            .unwrap_or_else(|e| panic!("round {r}: {e}"));
        assert_eq!(s.epoch, Some(policy.epoch), "round {r} mixed epochs");
        buffers = (0..n)
            .map(|v| sim.engine(v as NodeId).buffer().to_vec())
            .collect();
        // Exact check against the reference sum in node order (integer-valued inputs are
        // exact in f32 in any order, so any lost, duplicated or misplaced contribution shows).
        for (v, buf) in buffers.iter().enumerate() {
            for (i, &x) in buf.iter().enumerate() {
                let want: f32 = (0..n).map(|u| input(u, r, i)).sum();
                assert_eq!(
                    x.to_bits(),
                    want.to_bits(),
                    "round {r} node {v} element {i}: {x} != {want}"
                );
            }
        }
    }
    let sum = |f: &dyn Fn(&netstorm_dataplane::engine::Counters) -> u64| -> u64 {
        sim.engines().iter().map(|e| f(e.counters())).sum()
    };
    let out = Outcome {
        finish_ns: sim.now(),
        retransmits: sum(&|c| c.tx_retransmits),
        duplicates: sum(&|c| c.rx_duplicate),
        relayed: sum(&|c| c.relay_forwarded),
        bad_macs: sum(&|c| c.rx_bad_mac),
        trace: sim.trace_hash(),
        buffers,
    };
    // Corruption-free emulated links: a MAC failure means a sender tagged wrongly.
    assert_eq!(out.bad_macs, 0, "some datagrams failed the MAC");
    out
}

/// A mid-tree node forwards what it received to three children under loss, duplication and
/// reordering, with the MAC on (the default): its forwarded broadcasts, first sends and
/// retransmissions, are tagged with the payload hash kept from verifying the parent's copy,
/// and every child must accept them (no MAC failure anywhere) and end bit-identical.
#[test]
fn forwarded_broadcasts_carry_valid_macs_under_loss() {
    // 0 = root, 1 = mid, 2..=4 leaves under 1; links both ways.
    let nodes = Node::numbered(5);
    let mut links = Vec::new();
    for (a, b) in [(0, 1), (1, 2), (1, 3), (1, 4)] {
        for (x, y) in [(a, b), (b, a)] {
            links.push(Link {
                from: x,
                to: y,
                rate_bps: 200e6,
                latency_ns: 2_000_000,
                loss: 0.0,
            });
        }
    }
    let topo = Topology { nodes, links };
    let parent = vec![None, Some(0), Some(1), Some(1), Some(1)];
    let mut b = PolicyBuilder::new();
    b.tree(0, 1.0, &parent, &parent, ForwardMode::Pipelined);
    b.link_rates_from(&topo);
    let policy = b.build(1, 5);
    let out = run(
        &topo,
        &policy,
        20_000,
        lossy(7, 0.10),
        vec![],
        3,
        &int_input,
    );
    assert!(out.retransmits > 0, "loss was not exercised");
    assert_eq!(out.bad_macs, 0);
}

fn int_input(v: usize, r: u32, i: usize) -> f32 {
    (((v * 131 + i * 7 + r as usize * 17) % 2001) as f32) - 1000.0
}

#[test]
fn random_trees_and_shares_2_to_16_nodes_exact() {
    let mut relayed = 0;
    for case in 0..15u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(case);
        let n = 2 + case as usize;
        let topo = random_topology(&mut rng, n);
        let trees = rng.random_range(1..=2 * n);
        let policy = random_policy(&mut rng, &topo, trees);
        let elems = rng.random_range(1..6000);
        let o = run(
            &topo,
            &policy,
            elems,
            EmuConfig {
                seed: case,
                ..EmuConfig::default()
            },
            vec![],
            2,
            &int_input,
        );
        relayed += o.relayed;
    }
    assert!(relayed > 0, "no case exercised relayed routes");
}

#[test]
fn several_trees_per_root_exact() {
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    let topo = random_topology(&mut rng, 6);
    let mut b = PolicyBuilder::new();
    for k in 0..6 {
        let root = (k % 2) as NodeId; // three trees on each of two roots
        let reduce = random_tree(&mut rng, &topo, root);
        let bcast = random_tree(&mut rng, &topo, root);
        b.tree(root, 1.0 / 6.0, &reduce, &bcast, ForwardMode::Pipelined);
    }
    b.link_rates_from(&topo);
    let policy = b.build(3, 6);
    run(
        &topo,
        &policy,
        10_000,
        EmuConfig::default(),
        vec![],
        3,
        &int_input,
    );
}

fn lossy(seed: u64, loss: f64) -> EmuConfig {
    EmuConfig {
        seed,
        extra_loss: loss,
        reorder_prob: 0.05,
        reorder_delay_ns: 3_000_000,
        duplicate_prob: 0.02,
        ..EmuConfig::default()
    }
}

#[test]
fn exact_under_one_percent_loss_reorder_and_duplication() {
    for case in 0..6u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(100 + case);
        let n = 3 + case as usize * 2;
        let topo = random_topology(&mut rng, n);
        let policy = random_policy(&mut rng, &topo, n);
        let o = run(
            &topo,
            &policy,
            8000,
            lossy(case, 0.01),
            vec![],
            2,
            &int_input,
        );
        assert!(
            o.retransmits > 0 && o.duplicates > 0,
            "loss and duplication were not exercised"
        );
    }
}

#[test]
fn exact_under_ten_percent_loss_reorder_and_duplication() {
    for case in 0..4u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(200 + case);
        let n = 4 + case as usize * 3;
        let topo = random_topology(&mut rng, n);
        let policy = random_policy(&mut rng, &topo, n);
        let o = run(
            &topo,
            &policy,
            6000,
            lossy(case, 0.10),
            vec![],
            2,
            &int_input,
        );
        eprintln!(
            "case {case}: {} retransmits, {} duplicates, {} relayed",
            o.retransmits, o.duplicates, o.relayed
        );
        assert!(
            o.retransmits > 0 && o.duplicates > 0,
            "loss and duplication were not exercised"
        );
    }
}

#[test]
fn exact_across_rate_changes_mid_round() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let topo = random_topology(&mut rng, 8);
    let policy = random_policy(&mut rng, &topo, 8);
    // Every link direction changes rate every 20 ms of virtual time: 10x down, then back.
    let mut changes = Vec::new();
    for k in 1..200u64 {
        for (i, l) in topo.links.iter().enumerate() {
            let rate = if k % 2 == 1 {
                l.rate_bps / 10.0
            } else {
                l.rate_bps
            };
            changes.push(TimedChange {
                at_ns: k * 20_000_000,
                change: Change::LinkRate {
                    link: i,
                    rate_bps: rate,
                },
            });
        }
    }
    run(
        &topo,
        &policy,
        200_000,
        lossy(3, 0.01),
        changes,
        2,
        &int_input,
    );
}

#[test]
fn arbitrary_floats_are_bit_identical_on_every_node() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let topo = random_topology(&mut rng, 9);
    let policy = random_policy(&mut rng, &topo, 5);
    let n = topo.node_count();
    let elems = 7000;
    let engines = (0..n)
        .map(|v| {
            let mut e =
                Engine::new(EngineConfig::new(v as NodeId, n as u16, elems), &topo).unwrap();
            e.install_policy(policy.clone(), 0).unwrap();
            let mut r = ChaCha8Rng::seed_from_u64(v as u64);
            e.buffer_mut()
                .iter_mut()
                .for_each(|x| *x = r.random_range(-1.0f32..1.0) * 1e3);
            e
        })
        .collect();
    let inputs: Vec<Vec<f32>> = (0..n)
        .map(|v| {
            let mut r = ChaCha8Rng::seed_from_u64(v as u64);
            (0..elems)
                .map(|_| r.random_range(-1.0f32..1.0) * 1e3)
                .collect()
        })
        .collect();
    let mut sim = Simulation::new(&topo, engines, lossy(5, 0.05)).unwrap();
    sim.run_round_all(0, 600 * SECOND).unwrap();
    let first = sim.engine(0).buffer().to_vec();
    for v in 1..n {
        let buf = sim.engine(v as NodeId).buffer();
        assert!(
            first
                .iter()
                .zip(buf)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "node {v} differs from node 0"
        );
    }
    // Equal to the reference sum up to float reassociation.
    for i in 0..elems {
        let want: f64 = inputs.iter().map(|x| x[i] as f64).sum();
        assert!(
            (first[i] as f64 - want).abs() <= 1e-3 * (1.0 + want.abs()),
            "element {i}: {} vs {want}",
            first[i]
        );
    }
}

#[test]
fn same_seed_same_trace_and_finish_time() {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let topo = random_topology(&mut rng, 7);
    let policy = random_policy(&mut rng, &topo, 7);
    let a = run(&topo, &policy, 5000, lossy(42, 0.05), vec![], 2, &int_input);
    let b = run(&topo, &policy, 5000, lossy(42, 0.05), vec![], 2, &int_input);
    let c = run(&topo, &policy, 5000, lossy(43, 0.05), vec![], 2, &int_input);
    assert_eq!(a.trace, b.trace);
    assert_eq!(a.finish_ns, b.finish_ns);
    assert_eq!(a.buffers, b.buffers);
    assert_ne!(
        a.trace, c.trace,
        "a different seed should change the loss pattern"
    );
}
