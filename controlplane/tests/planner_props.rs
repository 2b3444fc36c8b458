//! Properties across planners on random networks (≤ 8 nodes): every plan is a valid policy,
//! shares sum to 1, the fluid optimum bounds every plan's bandwidth time, and `packing` is
//! never worse than `paper`, the direct mesh or the single-root tree (fluid model).

use netstorm_controlplane::bounds::fluid_optimum;
use netstorm_controlplane::network::NetworkModel;
use netstorm_controlplane::planner::{by_name, PlannerOptions, PLANNER_NAMES};
use netstorm_dataplane::policy::PolicyBuilder;
use netstorm_dataplane::topology::{Link, Node, Topology};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random_net(seed: u64, n: usize, latency: bool) -> NetworkModel {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let nodes = Node::numbered(n);
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
        for (x, y) in [(a, b), (b, a)] {
            links.push(Link {
                from: x as u16,
                to: y as u16,
                rate_bps: rng.random_range(20.0..1000.0) * 1e6,
                latency_ns: if latency {
                    rng.random_range(0..50) * 1_000_000
                } else {
                    0
                },
                loss: 0.0,
            });
        }
    }
    NetworkModel::from_topology(Topology { nodes, links })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn planners_are_valid_bounded_and_packing_wins(seed in 0u64..1_000_000, n in 2usize..=8, latency in any::<bool>()) {
        let net = random_net(seed, n, latency);
        let bits = 800e6;
        let optimum = fluid_optimum(&net, bits).unwrap().time_s;
        let opts = PlannerOptions::default();
        let mut total = std::collections::HashMap::new();
        for name in PLANNER_NAMES {
            let plan = by_name(name, &opts).unwrap().plan(&net, bits).unwrap();
            let policy = plan.to_policy(&mut PolicyBuilder::new(), &net, 1);
            prop_assert!(policy.validate(&net.topology).is_ok(), "{name}: {:?}", policy.validate(&net.topology));
            let shares: f64 = plan.trees.iter().map(|t| t.share).sum();
            prop_assert!((shares - 1.0).abs() < 1e-6, "{name}: shares sum to {shares}");
            let m = plan.modeled_time(&net, bits);
            prop_assert!(optimum <= m.bandwidth_s * (1.0 + 1e-6), "{name}: optimum {optimum} > bandwidth time {}", m.bandwidth_s);
            total.insert(*name, m.total_s);
        }
        for other in ["paper", "mesh", "spt"] {
            prop_assert!(total["packing"] <= total[other] * (1.0 + 1e-9),
                "packing {} worse than {other} {}", total["packing"], total[other]);
        }
    }
}
