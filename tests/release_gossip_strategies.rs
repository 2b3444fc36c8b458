//! Release gossip on every strategy, through the real engine in virtual time: with every
//! engine releasing a round only once every member completed it, each round is still exact
//! on every node (`run_strategy` checks each buffer before it is overwritten) and its
//! synchronization time (first start to the last node's release) is never shorter than
//! without gossip, and longer by at most a bounded amount: about one one-way latency (the
//! last completer's RoundDone reaching the farthest member) plus queueing behind data.
//! Run with `--nocapture` for the per-strategy cost.

use netstorm_controlplane::experiment::{run_strategy, ExperimentConfig};
use netstorm_controlplane::planner::{by_name, PlannerOptions, PLANNER_NAMES};
use netstorm_dataplane::scenario::Scenario;
use std::path::Path;

fn mean_sync_s(s: &Scenario, name: &str, elems: usize, gossip: bool) -> f64 {
    let opts = PlannerOptions {
        tensor_sizes: Some(vec![1000, elems as u64 - 3000, 2000]),
        ..PlannerOptions::default()
    };
    let cfg = ExperimentConfig {
        rounds: 2,
        release_gossip: gossip,
        ..ExperimentConfig::default()
    };
    let planner = by_name(name, &opts).unwrap();
    let r = run_strategy(s, elems, planner.as_ref(), &cfg, |_| {})
        .unwrap_or_else(|e| panic!("{name}, gossip {gossip}: {e}"));
    assert_eq!(r.rounds.len(), 2);
    r.rounds.iter().map(|x| x.sync_s).sum::<f64>() / 2.0
}

#[test]
fn every_strategy_is_exact_with_release_gossip_at_a_bounded_cost() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/aws10-latency.toml");
    let s = Scenario::load(&path).unwrap();
    let max_latency_s = s.topology.links.iter().map(|l| l.latency_ns).max().unwrap() as f64 / 1e9;
    for name in PLANNER_NAMES {
        let off = mean_sync_s(&s, name, 200_000, false);
        let on = mean_sync_s(&s, name, 200_000, true);
        eprintln!(
            "{name:<20} off {off:.4} s  on {on:.4} s  +{:.1} ms ({:+.2} %)",
            (on - off) * 1e3,
            (on / off - 1.0) * 100.0
        );
        assert!(
            on >= off,
            "{name}: released before the result? {on} < {off}"
        );
        // RoundDone may cross up to a few relays of the slowest links; never several RTTs.
        assert!(
            on - off <= 4.0 * max_latency_s + 0.05,
            "{name}: gossip cost {:.3} s, largest latency {max_latency_s:.3} s",
            on - off
        );
    }
}
