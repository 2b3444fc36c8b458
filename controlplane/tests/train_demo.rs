//! The trainer demo as a library, in process: the reference and every strategy reach the
//! same weights (up to the order of f32 additions), bad configurations are refused (the
//! CLI's end-to-end checks on the shipped data and scenario are in the root `tests/`).

use netstorm_controlplane::train_demo::{Progress, TrainDemo, TrainDemoConfig, TrainDemoError};
use netstorm_dataplane::scenario::Scenario;
use std::sync::Mutex;

/// Three DCs at 100 Mbit/s, 20 ms, one pair at 10 Mbit/s.
fn three_dcs() -> Scenario {
    let mut t = String::from("name = \"three\"\n");
    for i in 0..3 {
        t += &format!("[[node]]\nname = \"dc{i}\"\n");
    }
    for (a, b, mbps) in [(0, 1, 100), (0, 2, 100), (1, 2, 10)] {
        t += &format!("[[link]]\nfrom = \"dc{a}\"\nto = \"dc{b}\"\nmbps = {mbps}\nlatency_ms = 20\nbidirectional = true\n");
    }
    Scenario::parse_str(&t, "three.toml").unwrap()
}

fn config(strategies: &[&str]) -> TrainDemoConfig {
    TrainDemoConfig {
        dataset: "iris".into(),
        rounds: 12,
        lr: 0.5,
        momentum: 0.9,
        strategies: strategies.iter().map(|s| s.to_string()).collect(),
        compute_ms: 10.0,
        pad_mb: 0.2,
        seed: 3,
        jobs: Some(2),
    }
}

#[test]
fn every_strategy_trains_the_reference_model() {
    let scenario = three_dcs();
    let demo = TrainDemo::new(
        &scenario,
        &config(&["ring", "netstorm-packing", "mxnet-ps"]),
    )
    .unwrap();
    let setup = demo.setup().clone();
    assert_eq!(
        (setup.dataset, setup.nodes, setup.parameters),
        ("iris", 3, 15)
    );
    assert_eq!(setup.synchronized_elements, 50_000);
    assert_eq!(setup.train_rows + setup.test_rows, setup.rows);
    assert!(setup.reference_accuracy > 0.8, "{setup:?}");
    let rounds = Mutex::new(vec![0u32; 3]);
    let done = Mutex::new(vec![false; 3]);
    let report = demo
        .run(&|i, p| match p {
            Progress::Round { sync_s } => {
                assert!(sync_s > 0.0);
                rounds.lock().unwrap()[i] += 1;
            }
            Progress::Done => done.lock().unwrap()[i] = true,
        })
        .unwrap();
    assert_eq!(*rounds.lock().unwrap(), [12, 12, 12]);
    assert_eq!(*done.lock().unwrap(), [true, true, true]);
    assert!(
        report.same_accuracy(),
        "spread {} pp",
        report.accuracy_spread_pp
    );
    assert!(report.max_abs_dw_between_strategies < 1e-5);
    let names: Vec<&str> = report.results.iter().map(|r| r.strategy.as_str()).collect();
    assert_eq!(names, ["ring", "netstorm-packing", "mxnet-ps"]);
    for r in &report.results {
        assert!(r.max_abs_dw_vs_reference < 1e-5, "{}", r.strategy);
        assert_eq!(r.curve.len(), 13);
        assert!(r.curve.windows(2).all(|w| w[1].0 > w[0].0), "{:?}", r.curve);
        assert_eq!(r.accuracy_at(r.emulated_s), r.final_accuracy);
        assert!(r.accuracy_at(-1.0).is_nan());
        assert!(r.time_to_target_s <= r.emulated_s);
        // Every round costs the emulated compute plus a positive sync time.
        assert!(r.emulated_s > 12.0 * (0.01 + r.mean_sync_s) - 1e-6);
    }
}

#[test]
fn bad_configurations_are_refused_before_anything_runs() {
    let scenario = three_dcs();
    let err = TrainDemo::new(&scenario, &config(&["ring", "bogus"])).unwrap_err();
    assert!(
        matches!(&err, TrainDemoError::UnknownStrategy { name, .. } if name == "bogus"),
        "{err}"
    );
    assert!(err
        .to_string()
        .starts_with("unknown strategy 'bogus' (known: mxnet-ps,"));
    for (cfg, want) in [
        (
            TrainDemoConfig {
                rounds: 0,
                ..config(&["ring"])
            },
            "--rounds must be at least 1",
        ),
        (
            TrainDemoConfig {
                momentum: 1.0,
                ..config(&["ring"])
            },
            "--momentum must be in [0, 1)",
        ),
        (
            TrainDemoConfig {
                pad_mb: f64::NAN,
                ..config(&["ring"])
            },
            "--pad-mb must be in [0, 1000]",
        ),
        (config(&["ring", "ring"]), "strategy 'ring' given twice"),
        (config(&[]), "give at least one strategy"),
        (
            TrainDemoConfig {
                dataset: "mnist".into(),
                ..config(&["ring"])
            },
            "unknown data set 'mnist'",
        ),
    ] {
        let err = TrainDemo::new(&scenario, &cfg).unwrap_err().to_string();
        assert!(err.starts_with(want), "{err}");
    }
}
