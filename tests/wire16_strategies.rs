//! 16-bit payloads through every strategy on the shipped paper9 scenario, in virtual time:
//! every round's result bit-identical on all nodes and within the documented bound of the
//! exact sum (`run_strategy` checks both and fails otherwise), half the WAN bytes, and
//! NetStorm-packing still the fastest strategy when every strategy uses the same type.

use netstorm_controlplane::experiment::{run_strategy, ExperimentConfig};
use netstorm_controlplane::planner::{by_name, PlannerOptions, PLANNER_NAMES};
use netstorm_dataplane::scenario::Scenario;
use netstorm_dataplane::wire::PayloadType;
use std::path::Path;

/// Mean round time and WAN bytes of every planner with payload type `wire`.
fn run_all(file: &str, elems: usize, wire: PayloadType) -> Vec<(String, f64, u64)> {
    let s = Scenario::load(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("scenarios")
            .join(file),
    )
    .unwrap();
    let opts = PlannerOptions {
        tensor_sizes: Some(vec![1000, elems as u64 - 3000, 2000]),
        ..PlannerOptions::default()
    };
    let cfg = ExperimentConfig {
        rounds: 2,
        wire,
        ..ExperimentConfig::default()
    };
    PLANNER_NAMES
        .iter()
        .map(|name| {
            let planner = by_name(name, &opts).unwrap();
            let r = run_strategy(&s, elems, planner.as_ref(), &cfg, |_| {})
                .unwrap_or_else(|e| panic!("{file}, {name}, {wire}: {e}"));
            let mean = r.rounds.iter().map(|x| x.sync_s).sum::<f64>() / r.rounds.len() as f64;
            (name.to_string(), mean, r.wan_bytes)
        })
        .collect()
}

#[test]
fn every_strategy_is_bit_identical_and_within_bound_in_bf16_and_f16() {
    let elems = 400_000;
    let f32_runs = run_all("paper9-static100.toml", elems, PayloadType::F32);
    for wire in [PayloadType::Bf16, PayloadType::F16] {
        let runs = run_all("paper9-static100.toml", elems, wire);
        for ((name, s16, b16), (_, s32, b32)) in runs.iter().zip(&f32_runs) {
            let bytes = *b16 as f64 / *b32 as f64;
            assert!(
                (0.45..0.56).contains(&bytes),
                "{name} {wire}: WAN bytes x{bytes}"
            );
            assert!(s16 < s32, "{name} {wire}: {s16} s vs f32 {s32} s");
        }
        let packing =
            |runs: &[(String, f64, u64)]| runs.iter().find(|r| r.0 == "packing").unwrap().1;
        let ratio = packing(&runs) / packing(&f32_runs);
        assert!(ratio <= 0.55, "packing {wire} / f32 round time = {ratio}");
        let best = runs.iter().min_by(|a, b| a.1.total_cmp(&b.1)).unwrap();
        assert!(
            best.1 >= packing(&runs) * 0.999,
            "{wire}: {} ({} s) beat packing ({} s)",
            best.0,
            best.1,
            packing(&runs)
        );
    }
}
