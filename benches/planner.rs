//! Planner and bound cost.
//!
//! * `planner/packing/16-nodes`, `planner/packing/64-nodes` — [`PackingPlanner`] on random
//!   complete-ish networks (every unordered pair linked with probability 0.9, each direction
//!   its own rate in 20..155 Mbit/s, no latency), 100 MB model;
//! * `planner/packing/16-nodes-latency` — the same 16-node network with 1..80 ms links
//!   (adds the latency-budgeted re-packing);
//! * `planner/packing/32-sparse-latency`, `64-sparse`, `64-sparse-latency` — sparse WANs
//!   (a path backbone plus each other pair linked with probability 0.25, 20..155 Mbit/s,
//!   5..120 ms where latency-bearing), the shape the 90 %-dense cases hide;
//! * `planner/round_bound/aws10-latency`, `planner/round_bound/32-sparse-latency` — the
//!   proven round bound (`round_bound`), uncached;
//! * `planner/fluid_optimum/aws11` — the fluid-optimum LP on `scenarios/aws11.toml`;
//! * `planner/min_arborescence/64-nodes` — one Chu–Liu/Edmonds solve on a dense 64-node graph.
//!
//! Before measuring, the packing benchmarks print the plan's bandwidth term as a ratio to
//! the fluid optimum where that LP is cheap enough (16 nodes), and on the sparse cases the
//! modeled round as a ratio to the proven round bound, with the tree count, so quality
//! and cost are read from the same run.
//!
//! Run: `cargo bench --bench planner` (the 64-node cases take minutes).

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use netstorm_controlplane::arborescence::min_arborescence;
use netstorm_controlplane::bounds::fluid_optimum;
use netstorm_controlplane::network::NetworkModel;
use netstorm_controlplane::planner::packing::PackingPlanner;
use netstorm_controlplane::planner::Planner;
use netstorm_controlplane::round_bound::round_lower_bound;
use netstorm_dataplane::scenario::Scenario;
use netstorm_dataplane::topology::{Link, Node, Topology};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// 100 MB.
const MODEL_BITS: f64 = 800e6;

fn random_network(n: usize, latency: bool, seed: u64) -> NetworkModel {
    network(n, 0.9, latency.then_some((1, 80)), seed)
}

/// A path backbone plus each other pair linked with probability `density`; each
/// direction its own rate in 20..155 Mbit/s; latency uniform in `latency_ms` per pair.
fn network(n: usize, density: f64, latency_ms: Option<(u64, u64)>, seed: u64) -> NetworkModel {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let nodes = Node::numbered(n);
    let mut topo = Topology {
        nodes,
        links: Vec::new(),
    };
    for u in 0..n {
        for v in u + 1..n {
            if v == u + 1 || rng.random_bool(density) {
                let latency_ns = match latency_ms {
                    Some((lo, hi)) => rng.random_range(lo * 1_000_000..hi * 1_000_000),
                    None => 0,
                };
                for (from, to) in [(u, v), (v, u)] {
                    topo.links.push(Link {
                        from: from as u16,
                        to: to as u16,
                        rate_bps: rng.random_range(20.0..155.0) * 1e6,
                        latency_ns,
                        loss: 0.0,
                    });
                }
            }
        }
    }
    NetworkModel::from_topology(topo)
}

fn aws11() -> NetworkModel {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/aws11.toml");
    let scenario =
        Scenario::load(&path).unwrap_or_else(|e| panic!("loading {}: {e}", path.display()));
    NetworkModel::from_topology(scenario.topology)
}

fn packing(c: &mut Criterion) {
    let mut group = c.benchmark_group("planner/packing");
    group.sample_size(10);
    for (name, n, latency) in [
        ("16-nodes", 16, false),
        ("16-nodes-latency", 16, true),
        ("64-nodes", 64, false),
    ] {
        let net = random_network(n, latency, 1);
        let planner = PackingPlanner::default();
        let plan = planner.plan(&net, MODEL_BITS).expect("plan");
        let m = plan.modeled_time(&net, MODEL_BITS);
        if n <= 24 {
            let opt = fluid_optimum(&net, MODEL_BITS).expect("fluid optimum");
            println!(
                "packing {name}: bandwidth {:.3} s = {:.3}x the fluid optimum ({:.3} s), latency {:.3} s, {} trees",
                m.bandwidth_s,
                m.bandwidth_s / opt.time_s,
                opt.time_s,
                m.latency_s,
                plan.trees.len()
            );
        } else {
            println!(
                "packing {name}: bandwidth {:.3} s, {} trees",
                m.bandwidth_s,
                plan.trees.len()
            );
        }
        group.measurement_time(Duration::from_secs(if n > 32 { 30 } else { 5 }));
        group.bench_function(name, |b| {
            b.iter(|| planner.plan(black_box(&net), MODEL_BITS).unwrap())
        });
    }
    for (name, n, latency) in [
        ("32-sparse-latency", 32, true),
        ("64-sparse", 64, false),
        ("64-sparse-latency", 64, true),
    ] {
        let net = network(n, 0.25, latency.then_some((5, 120)), 1);
        let planner = PackingPlanner::default();
        let plan = planner.plan(&net, MODEL_BITS).expect("plan");
        let m = plan.modeled_time(&net, MODEL_BITS);
        let bound = round_lower_bound(&net, MODEL_BITS).expect("round bound");
        println!(
            "packing {name}: modeled {:.3} s (bandwidth {:.3} + latency {:.3}) = {:.3}x the proven bound {:.3} s (certified within {:.1}%), {} trees",
            m.total_s,
            m.bandwidth_s,
            m.latency_s,
            m.total_s / bound.time_s,
            bound.time_s,
            bound.gap * 100.0,
            plan.trees.len()
        );
        group.measurement_time(Duration::from_secs(if n > 32 { 60 } else { 20 }));
        group.bench_function(name, |b| {
            b.iter(|| planner.plan(black_box(&net), MODEL_BITS).unwrap())
        });
    }
    group.finish();
}

fn round_bound(c: &mut Criterion) {
    let mut group = c.benchmark_group("planner/round_bound");
    group.sample_size(10);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/aws10-latency.toml");
    let aws10 = NetworkModel::from_topology(
        Scenario::load(&path)
            .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
            .topology,
    );
    for (name, net) in [
        ("aws10-latency", aws10),
        ("32-sparse-latency", network(32, 0.25, Some((5, 120)), 1)),
    ] {
        group.measurement_time(Duration::from_secs(20));
        group.bench_function(name, |b| {
            b.iter(|| round_lower_bound(black_box(&net), MODEL_BITS).unwrap())
        });
    }
    group.finish();
}

fn bounds(c: &mut Criterion) {
    let net = aws11();
    let opt = fluid_optimum(&net, MODEL_BITS).expect("fluid optimum");
    println!("fluid optimum aws11, 100 MB: {:.4} s", opt.time_s);
    let mut group = c.benchmark_group("planner/fluid_optimum");
    group.sample_size(20);
    group.bench_function("aws11", |b| {
        b.iter(|| fluid_optimum(black_box(&net), MODEL_BITS).unwrap())
    });
    group.finish();

    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let n = 64;
    let costs: Vec<f64> = (0..n * n).map(|_| rng.random_range(0.0..1.0)).collect();
    let cost = |u: usize, v: usize| Some(costs[u * n + v]);
    let mut group = c.benchmark_group("planner/min_arborescence");
    group.bench_function("64-nodes", |b| {
        b.iter(|| min_arborescence(n, black_box(0), &cost).unwrap())
    });
    group.finish();
}

criterion_group!(benches, packing, round_bound, bounds);
criterion_main!(benches);
