//! The physical limit (fluid optimum, latency bound), the arborescence solver and the
//! `packing` planner.

use netstorm_controlplane::arborescence::{arborescence_cost, min_arborescence};
use netstorm_controlplane::bounds::{
    fluid_optimum, fluid_optimum_flow_lp, latency_bound_s, BoundError,
};
use netstorm_controlplane::network::NetworkModel;
use netstorm_controlplane::planner::packing::PackingPlanner;
use netstorm_controlplane::planner::{Plan, Planner};
use netstorm_dataplane::policy::PolicyBuilder;
use netstorm_dataplane::topology::{Link, Node, Topology};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// 100 MB.
const MODEL_BITS: f64 = 800e6;

const PAPER9_LINKS: [(&str, &str); 13] = [
    ("dc1", "dc2"),
    ("dc1", "dc3"),
    ("dc2", "dc3"),
    ("dc2", "dc5"),
    ("dc3", "dc4"),
    ("dc4", "dc5"),
    ("dc4", "dc6"),
    ("dc5", "dc7"),
    ("dc6", "dc7"),
    ("dc6", "dc8"),
    ("dc6", "dc9"),
    ("dc7", "dc8"),
    ("dc8", "dc9"),
];

/// data/aws11-gbps.csv: row = source, Gbit/s (IE → TYO really is 3.14).
#[allow(clippy::approx_constant)]
const AWS11: [[f64; 11]; 11] = [
    [
        0.0, 4.36, 4.35, 4.32, 4.12, 3.65, 3.39, 3.03, 3.12, 3.04, 3.91,
    ],
    [
        4.36, 0.0, 4.68, 3.72, 3.58, 3.99, 3.73, 3.37, 3.67, 2.84, 3.38,
    ],
    [
        4.35, 4.68, 0.0, 3.85, 3.65, 4.07, 3.82, 3.44, 3.66, 2.90, 3.35,
    ],
    [
        4.31, 3.71, 3.87, 0.0, 4.66, 3.14, 2.87, 3.31, 2.59, 3.62, 3.33,
    ],
    [
        4.11, 3.59, 3.66, 4.66, 0.0, 2.87, 2.87, 3.50, 2.61, 3.74, 3.09,
    ],
    [
        3.66, 3.98, 4.08, 3.12, 2.90, 0.0, 4.59, 4.29, 3.95, 3.79, 2.57,
    ],
    [
        3.39, 3.73, 3.81, 2.84, 2.85, 4.59, 0.0, 4.28, 3.66, 3.69, 2.29,
    ],
    [
        3.05, 3.37, 3.45, 3.31, 3.50, 4.28, 4.24, 0.0, 4.11, 4.37, 1.93,
    ],
    [
        3.11, 3.68, 3.66, 2.62, 2.63, 3.99, 3.65, 4.11, 0.0, 3.60, 2.06,
    ],
    [
        3.04, 2.81, 2.93, 3.63, 3.76, 3.78, 3.68, 4.39, 3.60, 0.0, 1.95,
    ],
    [
        3.91, 3.39, 3.36, 3.34, 3.08, 2.57, 2.29, 1.92, 2.04, 1.94, 0.0,
    ],
];

fn nodes(n: usize) -> Vec<Node> {
    (0..n)
        .map(|i| Node {
            name: format!("n{}", i + 1),
            egress_bps: None,
            ingress_bps: None,
        })
        .collect()
}

fn link(from: usize, to: usize, rate_bps: f64, latency_ns: u64) -> Link {
    Link {
        from: from as u16,
        to: to as u16,
        rate_bps,
        latency_ns,
        loss: 0.0,
    }
}

fn paper9(mbps: f64) -> NetworkModel {
    let mut topo = Topology {
        nodes: (1..=9)
            .map(|i| Node {
                name: format!("dc{i}"),
                egress_bps: None,
                ingress_bps: None,
            })
            .collect(),
        links: Vec::new(),
    };
    for (a, b) in PAPER9_LINKS {
        let a = topo.node_id(a).unwrap() as usize;
        let b = topo.node_id(b).unwrap() as usize;
        topo.links.push(link(a, b, mbps * 1e6, 0));
        topo.links.push(link(b, a, mbps * 1e6, 0));
    }
    NetworkModel::from_topology(topo)
}

fn aws11() -> NetworkModel {
    let mut topo = Topology {
        nodes: nodes(11),
        links: Vec::new(),
    };
    for (u, row) in AWS11.iter().enumerate() {
        for (v, &gbps) in row.iter().enumerate() {
            if u != v {
                topo.links.push(link(u, v, gbps * 1e9, 0));
            }
        }
    }
    NetworkModel::from_topology(topo)
}

/// A random strongly connected network: a bidirectional ring-path backbone plus random
/// extra bidirectional links (`density`), every direction with its own rate in
/// 20..155 Mbit/s; optional latency (1..80 ms) and node caps.
fn random_net(n: usize, density: f64, latency: bool, caps: bool, seed: u64) -> NetworkModel {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut topo = Topology {
        nodes: nodes(n),
        links: Vec::new(),
    };
    if caps {
        for node in &mut topo.nodes {
            if rng.random_bool(0.5) {
                node.egress_bps = Some(rng.random_range(60.0..300.0) * 1e6);
            }
            if rng.random_bool(0.5) {
                node.ingress_bps = Some(rng.random_range(60.0..300.0) * 1e6);
            }
        }
    }
    for u in 0..n {
        for v in u + 1..n {
            if v == u + 1 || rng.random_bool(density) {
                let lat = if latency {
                    rng.random_range(1_000_000..80_000_000u64)
                } else {
                    0
                };
                topo.links
                    .push(link(u, v, rng.random_range(20.0..155.0) * 1e6, lat));
                topo.links
                    .push(link(v, u, rng.random_range(20.0..155.0) * 1e6, lat));
            }
        }
    }
    NetworkModel::from_topology(topo)
}

fn assert_close(got: f64, want: f64, rel: f64, what: &str) {
    assert!(
        (got - want).abs() <= rel * want,
        "{what}: got {got}, want {want} ± {:.3}%",
        rel * 100.0
    );
}

/// Every invariant a packing plan must satisfy on `net`.
fn check_plan(plan: &Plan, net: &NetworkModel) {
    assert_eq!(plan.planner, "packing");
    assert!(!plan.trees.is_empty());
    let sum: f64 = plan.trees.iter().map(|t| t.share).sum();
    assert!((sum - 1.0).abs() < 1e-9, "shares sum to {sum}");
    assert!(plan
        .trees
        .iter()
        .all(|t| t.share >= 0.0 && t.share.is_finite()));
    let policy = plan.to_policy(&mut PolicyBuilder::new(), net, 1);
    policy
        .validate(&net.topology)
        .expect("packing plan converts to a valid policy");
}

// ---------------------------------------------------------------------------------------
// The fluid optimum and the latency bound.

#[test]
fn fluid_optimum_paper9_100mbps_is_5s() {
    let opt = fluid_optimum(&paper9(100.0), MODEL_BITS).unwrap();
    assert_close(opt.time_s, 5.0, 0.01, "paper9 @ 100 Mbit/s");
    assert_eq!(opt.shares.len(), 9);
    assert!((opt.shares.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    assert!(opt.shares.iter().all(|&s| s >= 0.0));
    // Scales linearly with the model and inversely with the rates.
    let half = fluid_optimum(&paper9(500.0), MODEL_BITS / 2.0).unwrap();
    assert_close(half.time_s, 0.5, 0.01, "paper9 @ 500 Mbit/s, 50 MB");
}

#[test]
fn fluid_optimum_aws11_is_42ms() {
    let opt = fluid_optimum(&aws11(), MODEL_BITS).unwrap();
    assert_close(opt.time_s, 0.042, 0.02, "aws11");
    assert_eq!(opt.shares.len(), 11);
    assert!((opt.shares.iter().sum::<f64>() - 1.0).abs() < 1e-9);
}

#[test]
fn flow_lp_agrees_with_column_generation() {
    let mut nets = vec![paper9(100.0), aws11()];
    for seed in 0..4 {
        nets.push(random_net(
            5 + seed as usize,
            0.4,
            false,
            seed % 2 == 1,
            seed,
        ));
    }
    for net in nets {
        let a = fluid_optimum(&net, MODEL_BITS).unwrap();
        let b = fluid_optimum_flow_lp(&net, MODEL_BITS).unwrap();
        assert_close(a.time_s, b.time_s, 1e-4, "column generation vs flow LP");
    }
}

#[test]
fn fluid_optimum_of_two_nodes_is_set_by_the_slower_direction() {
    // Reduce and broadcast both cross each direction once per shard:
    // a→b carries s_a (broadcast) + s_b (reduce) = 1 whatever the shares.
    let topo = Topology {
        nodes: nodes(2),
        links: vec![link(0, 1, 100e6, 0), link(1, 0, 50e6, 0)],
    };
    let opt = fluid_optimum(&NetworkModel::from_topology(topo), 100e6).unwrap();
    assert_close(opt.time_s, 2.0, 1e-6, "two nodes");
}

#[test]
fn node_caps_bind() {
    // A full mesh of fast links behind a 100 Mbit/s egress cap at every node: the egress
    // caps, not the links, bound the round.
    let n = 4;
    let mut topo = Topology {
        nodes: nodes(n),
        links: Vec::new(),
    };
    for node in &mut topo.nodes {
        node.egress_bps = Some(100e6);
    }
    for u in 0..n {
        for v in 0..n {
            if u != v {
                topo.links.push(link(u, v, 10e9, 0));
            }
        }
    }
    let net = NetworkModel::from_topology(topo);
    let opt = fluid_optimum(&net, MODEL_BITS).unwrap();
    // Total traffic 2(n-1)·M over n egress caps of 100 Mbit/s.
    let want = 2.0 * (n - 1) as f64 * MODEL_BITS / (n as f64 * 100e6);
    assert_close(opt.time_s, want, 1e-4, "egress-capped mesh");
    let plan = PackingPlanner::default().plan(&net, MODEL_BITS).unwrap();
    check_plan(&plan, &net);
    assert!(plan.modeled_time(&net, MODEL_BITS).bandwidth_s <= opt.time_s * 1.05);
}

#[test]
fn bound_errors_are_typed() {
    let empty = NetworkModel::from_topology(Topology::default());
    assert_eq!(fluid_optimum(&empty, MODEL_BITS), Err(BoundError::Empty));
    let one_way = Topology {
        nodes: nodes(2),
        links: vec![link(0, 1, 1e6, 0)],
    };
    assert!(matches!(
        fluid_optimum(&NetworkModel::from_topology(one_way), MODEL_BITS),
        Err(BoundError::Disconnected { .. })
    ));
    let dead = Topology {
        nodes: nodes(2),
        links: vec![link(0, 1, 0.0, 0), link(1, 0, 0.0, 0)],
    };
    assert!(matches!(
        fluid_optimum(&NetworkModel::from_topology(dead), MODEL_BITS),
        Err(BoundError::ZeroCapacity(_))
    ));
    assert!(matches!(
        fluid_optimum(&paper9(100.0), f64::NAN),
        Err(BoundError::BadModelSize(_))
    ));
    let single = NetworkModel::from_topology(Topology {
        nodes: nodes(1),
        links: Vec::new(),
    });
    let opt = fluid_optimum(&single, MODEL_BITS).unwrap();
    assert_eq!((opt.time_s, opt.shares), (0.0, vec![1.0]));
}

#[test]
fn latency_bound_on_a_hand_graph() {
    // 0 → 1 → 2 at 10 ms per hop, 0 → 2 direct at 50 ms; back 2 → 0 at 30 ms, 1 → 0 at 5 ms,
    // 2 → 1 at 40 ms. Shortest paths: 0→2 = 20 ms (via 1), 2→1 = min(40, 30 + 10) = 40 ms,
    // 1→2 = 10, 2→0 = 30, 1→0 = 5, 0→1 = 10. The largest is 40 ms.
    let ms = 1_000_000;
    let topo = Topology {
        nodes: nodes(3),
        links: vec![
            link(0, 1, 1e6, 10 * ms),
            link(1, 2, 1e6, 10 * ms),
            link(0, 2, 1e6, 50 * ms),
            link(2, 0, 1e6, 30 * ms),
            link(1, 0, 1e6, 5 * ms),
            link(2, 1, 1e6, 40 * ms),
        ],
    };
    let net = NetworkModel::from_topology(topo);
    assert!((latency_bound_s(&net) - 0.040).abs() < 1e-12);
    assert_eq!(latency_bound_s(&paper9(100.0)), 0.0);
    let cut = Topology {
        nodes: nodes(2),
        links: vec![link(0, 1, 1e6, ms)],
    };
    assert_eq!(
        latency_bound_s(&NetworkModel::from_topology(cut)),
        f64::INFINITY
    );
}

// ---------------------------------------------------------------------------------------
// Minimum arborescences.

/// Minimum arborescence cost by enumerating every parent assignment.
fn brute_force(n: usize, root: usize, cost: &dyn Fn(usize, usize) -> Option<f64>) -> Option<f64> {
    let others: Vec<usize> = (0..n).filter(|&v| v != root).collect();
    let mut best: Option<f64> = None;
    let total = (n as u64).pow(others.len() as u32);
    for code in 0..total {
        let mut parent = vec![None; n];
        let mut c = code;
        for &v in &others {
            parent[v] = Some((c % n as u64) as usize);
            c /= n as u64;
        }
        // Every node must reach the root.
        let spans = (0..n).all(|v| {
            let (mut cur, mut steps) = (v, 0);
            while cur != root && steps <= n {
                cur = parent[cur].unwrap();
                steps += 1;
            }
            cur == root
        });
        if !spans || others.iter().any(|&v| parent[v] == Some(v)) {
            continue;
        }
        if let Some(c) = arborescence_cost(&parent, cost) {
            if best.is_none_or(|b| c < b) {
                best = Some(c);
            }
        }
    }
    best
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn min_arborescence_matches_brute_force(
        n in 1usize..=5,
        root_pick in 0usize..5,
        raw in proptest::collection::vec(proptest::option::weighted(0.75, -5.0f64..20.0), 25),
    ) {
        let root = root_pick % n;
        let cost = |u: usize, v: usize| -> Option<f64> { raw[u * 5 + v] };
        let got = min_arborescence(n, root, &cost);
        let want = brute_force(n, root, &cost);
        match (got, want) {
            (None, None) => {}
            (Some(parent), Some(want)) => {
                prop_assert_eq!(parent[root], None);
                prop_assert!(parent.iter().enumerate().all(|(v, p)| v == root || p.is_some()));
                let got_cost = arborescence_cost(&parent, &cost);
                prop_assert!(got_cost.is_some(), "uses a missing edge: {:?}", parent);
                prop_assert!((got_cost.unwrap() - want).abs() < 1e-9, "cost {:?} vs brute force {}", got_cost, want);
                // And it is a real arborescence.
                prop_assert!(brute_force_is_tree(&parent, root));
            }
            (got, want) => prop_assert!(false, "solver {:?} vs brute force {:?}", got, want),
        }
    }
}

fn brute_force_is_tree(parent: &[Option<usize>], root: usize) -> bool {
    (0..parent.len()).all(|v| {
        let (mut cur, mut steps) = (v, 0);
        while cur != root && steps <= parent.len() {
            match parent[cur] {
                Some(p) => cur = p,
                None => return false,
            }
            steps += 1;
        }
        cur == root
    })
}

#[test]
fn min_arborescence_on_64_nodes_spans() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let n = 64;
    let costs: Vec<f64> = (0..n * n).map(|_| rng.random_range(0.0..1.0)).collect();
    let cost = |u: usize, v: usize| Some(costs[u * n + v]);
    let parent = min_arborescence(n, 3, &cost).unwrap();
    assert!(brute_force_is_tree(&parent, 3));
    // No worse than the cheapest star and than every node's cheapest in-edge bound.
    let star: f64 = (0..n).filter(|&v| v != 3).map(|v| costs[3 * n + v]).sum();
    let lower: f64 = (0..n)
        .filter(|&v| v != 3)
        .map(|v| {
            (0..n)
                .filter(|&u| u != v)
                .map(|u| costs[u * n + v])
                .fold(f64::INFINITY, f64::min)
        })
        .sum();
    let got = arborescence_cost(&parent, &cost).unwrap();
    assert!(got <= star + 1e-12 && got >= lower - 1e-12);
}

// ---------------------------------------------------------------------------------------
// The packing planner.

#[test]
fn packing_is_within_5_percent_on_paper9_and_aws11() {
    for (name, net) in [("paper9 @ 100 Mbit/s", paper9(100.0)), ("aws11", aws11())] {
        let opt = fluid_optimum(&net, MODEL_BITS).unwrap();
        let plan = PackingPlanner::default().plan(&net, MODEL_BITS).unwrap();
        check_plan(&plan, &net);
        let m = plan.modeled_time(&net, MODEL_BITS);
        assert_eq!(m.latency_s, 0.0);
        let ratio = m.bandwidth_s / opt.time_s;
        assert!(
            ratio >= 1.0 - 1e-6,
            "{name}: plan beats the optimum: {ratio}"
        );
        assert!(
            ratio <= 1.05,
            "{name}: packing is {ratio:.4}x the fluid optimum"
        );
        // At most 3 in-trees and 3 out-trees per root: at most 5 trees of the plan.
        for r in 0..net.node_count() as u16 {
            assert!(plan.trees.iter().filter(|t| t.root == r).count() <= 5);
        }
    }
}

#[test]
fn packing_is_deterministic() {
    let net = random_net(8, 0.5, true, true, 3);
    let a = PackingPlanner::default().plan(&net, MODEL_BITS).unwrap();
    let b = PackingPlanner::default().plan(&net, MODEL_BITS).unwrap();
    assert_eq!(a, b);
}

#[test]
fn packing_handles_trivial_and_broken_networks() {
    let single = NetworkModel::from_topology(Topology {
        nodes: nodes(1),
        links: Vec::new(),
    });
    let plan = PackingPlanner::default().plan(&single, MODEL_BITS).unwrap();
    check_plan(&plan, &single);
    let one_way = NetworkModel::from_topology(Topology {
        nodes: nodes(2),
        links: vec![link(0, 1, 1e6, 0)],
    });
    assert!(PackingPlanner::default()
        .plan(&one_way, MODEL_BITS)
        .is_err());
    assert!(PackingPlanner::default().plan(&paper9(100.0), 0.0).is_err());
    let two = NetworkModel::from_topology(Topology {
        nodes: nodes(2),
        links: vec![link(0, 1, 100e6, 0), link(1, 0, 50e6, 0)],
    });
    let plan = PackingPlanner::default().plan(&two, 100e6).unwrap();
    check_plan(&plan, &two);
    assert_close(
        plan.modeled_time(&two, 100e6).bandwidth_s,
        2.0,
        1e-6,
        "two nodes",
    );
}

#[test]
fn packing_trades_bandwidth_for_latency() {
    // Latency-dominated: 10 Gbit/s links with 20..80 ms latency and a 1 Mbit model. The
    // plan's latency must be close to the bound, i.e. shallow trees.
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let n = 8;
    let mut topo = Topology {
        nodes: nodes(n),
        links: Vec::new(),
    };
    for u in 0..n {
        for v in u + 1..n {
            let lat = rng.random_range(20_000_000..80_000_000u64);
            topo.links.push(link(u, v, 10e9, lat));
            topo.links.push(link(v, u, 10e9, lat));
        }
    }
    let net = NetworkModel::from_topology(topo);
    let plan = PackingPlanner::default().plan(&net, 1e6).unwrap();
    check_plan(&plan, &net);
    let m = plan.modeled_time(&net, 1e6);
    let bound = latency_bound_s(&net);
    assert!(
        m.latency_s <= 2.0 * bound + 1e-9,
        "latency {} vs bound {}",
        m.latency_s,
        bound
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The fluid optimum and the latency bound never exceed what the packing plan
    /// achieves, and the plan is a valid policy with shares summing to 1.
    #[test]
    fn optimum_bounds_every_packing_plan(
        n in 2usize..=8,
        density in 0.0f64..1.0,
        latency in any::<bool>(),
        caps in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let net = random_net(n, density, latency, caps, seed);
        let opt = fluid_optimum(&net, MODEL_BITS).unwrap();
        let plan = PackingPlanner::default().plan(&net, MODEL_BITS).unwrap();
        check_plan(&plan, &net);
        let m = plan.modeled_time(&net, MODEL_BITS);
        prop_assert!(opt.time_s <= m.bandwidth_s * (1.0 + 1e-6), "optimum {} > plan {}", opt.time_s, m.bandwidth_s);
        let lower = opt.time_s + latency_bound_s(&net);
        prop_assert!(lower <= m.total_s * (1.0 + 1e-6), "lower bound {} > plan total {}", lower, m.total_s);
    }
}
