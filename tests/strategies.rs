//! Every strategy, on every shipped scenario, through the real engine in virtual time:
//! every round's result is bit-identical on all nodes and equal to the reference sum
//! (`run_strategy` checks each node's buffer before it is overwritten and fails otherwise),
//! and no round mixes policy epochs.

use netstorm_controlplane::experiment::{run_strategy, ExperimentConfig};
use netstorm_controlplane::planner::{by_name, PlannerOptions, PLANNER_NAMES};
use netstorm_dataplane::scenario::Scenario;
use std::path::Path;

fn scenario(name: &str) -> Scenario {
    Scenario::load(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("scenarios")
            .join(name),
    )
    .unwrap()
}

fn check_all(file: &str, elems: usize, rounds: u32) -> Vec<(String, f64)> {
    let s = scenario(file);
    let opts = PlannerOptions {
        tensor_sizes: Some(vec![1000, elems as u64 - 3000, 2000]),
        ..PlannerOptions::default()
    };
    let cfg = ExperimentConfig {
        rounds,
        ..ExperimentConfig::default()
    };
    let mut out = Vec::new();
    for name in PLANNER_NAMES {
        let planner = by_name(name, &opts).unwrap();
        let r = run_strategy(&s, elems, planner.as_ref(), &cfg, |_| {})
            .unwrap_or_else(|e| panic!("{file}, {name}: {e}"));
        assert_eq!(r.rounds.len(), rounds as usize);
        let mean = r.rounds.iter().map(|x| x.sync_s).sum::<f64>() / rounds as f64;
        out.push((name.to_string(), mean));
    }
    out
}

#[test]
fn every_strategy_is_exact_on_paper9_static() {
    check_all("paper9-static100.toml", 300_000, 2);
}

#[test]
fn every_strategy_is_exact_on_aws11() {
    check_all("aws11.toml", 300_000, 2);
}

#[test]
fn every_strategy_is_exact_on_aws10_with_latency() {
    check_all("aws10-latency.toml", 200_000, 2);
}

#[test]
fn every_strategy_is_exact_across_dynamic_replanning() {
    // Large enough that rounds span several 180 s redraws for the slow strategies.
    let s = scenario("paper9-dynamic.toml");
    let cfg = ExperimentConfig {
        rounds: 4,
        compute_ns: 150_000_000_000,
        ..ExperimentConfig::default()
    };
    for name in ["packing", "paper", "ring"] {
        let planner = by_name(name, &PlannerOptions::default()).unwrap();
        let r = run_strategy(&s, 400_000, planner.as_ref(), &cfg, |_| {}).unwrap();
        assert!(
            r.policies_installed >= 2,
            "{name}: the network changed but no new policy was installed"
        );
        let epochs: Vec<u32> = r.rounds.iter().map(|x| x.epoch).collect();
        assert!(
            epochs.windows(2).all(|w| w[0] <= w[1]),
            "{name}: epochs went backwards: {epochs:?}"
        );
    }
}

#[test]
fn packing_is_fastest_on_paper9_static() {
    let times = check_all("paper9-static100.toml", 2_000_000, 1);
    let packing = times.iter().find(|(n, _)| n == "packing").unwrap().1;
    for (name, t) in &times {
        assert!(
            packing <= *t * 1.001,
            "packing ({packing:.3} s) slower than {name} ({t:.3} s)"
        );
    }
}
