//! The fault suite as a library, in process, on a small mesh: every fault's outcome is a
//! result (the CLI's end-to-end checks on the shipped scenario are in the root `tests/`).

use netstorm_controlplane::faults::{run_suite, FaultResult, FaultSuiteConfig, FaultsError};
use netstorm_dataplane::scenario::Scenario;

/// Five DCs, full mesh at 200 Mbit/s, 10 ms.
fn mesh5() -> Scenario {
    let mut t = String::from("name = \"mesh5\"\n");
    for i in 0..5 {
        t += &format!("[[node]]\nname = \"dc{i}\"\n");
    }
    for a in 0..5 {
        for b in (a + 1)..5 {
            t += &format!("[[link]]\nfrom = \"dc{a}\"\nto = \"dc{b}\"\nmbps = 200\nlatency_ms = 10\nbidirectional = true\n");
        }
    }
    Scenario::parse_str(&t, "mesh5.toml").unwrap()
}

fn config(only: &str) -> FaultSuiteConfig {
    FaultSuiteConfig {
        planner: "packing".into(),
        rounds: 3,
        model_mb: 1.0,
        seed: 1,
        only: Some(only.into()),
    }
}

fn result<'a>(results: &'a [FaultResult], fault: &str) -> &'a FaultResult {
    results
        .iter()
        .find(|r| r.fault == fault)
        .unwrap_or_else(|| panic!("no result for {fault}"))
}

#[test]
fn crashes_are_reported_planned_around_or_held_consistent() {
    let report = run_suite(&mesh5(), "mesh5", &config("crash")).unwrap();
    assert_eq!(report.scenario, "mesh5");
    let names: Vec<&str> = report.results.iter().map(|r| r.fault.as_str()).collect();
    assert_eq!(
        names,
        [
            "node crash",
            "coordinator crash",
            "coordinator crash mid-install"
        ],
        "the baseline runs but is reported only when selected"
    );
    for r in &report.results {
        assert!(
            r.outcome.starts_with("every completed round bit-exact"),
            "{}: {}",
            r.fault,
            r.outcome
        );
    }
    let crash = result(&report.results, "node crash");
    assert_eq!((crash.rounds_completed, crash.rounds_failed), (2, 1));
    assert!(
        crash.outcome.contains("round 1 reported failed: node dc"),
        "{}",
        crash.outcome
    );
    assert!(
        crash
            .outcome
            .contains("re-planned (packing) for the 4 survivors as epoch 2"),
        "{}",
        crash.outcome
    );
    assert_eq!(crash.epochs, [1, 2]);
    let detect = crash.recover_s.unwrap();
    assert!((1.0..1.5).contains(&detect), "detected after {detect} s");

    let gone = result(&report.results, "coordinator crash");
    assert_eq!(gone.epochs, [1, 1, 1]);
    assert!(gone
        .outcome
        .contains("the cluster keeps epoch 1 and says so"));
    let mid = result(&report.results, "coordinator crash mid-install");
    assert_eq!((mid.rounds_completed, mid.segments_lost), (2, 0));
    assert!(mid.outcome.contains("round 2 blocked"), "{}", mid.outcome);
    assert!(mid
        .outcome
        .contains("epoch 2 prepared at all 5 nodes for round 2"));
}

#[test]
fn a_restarted_coordinator_proposes_a_fresh_epoch_for_the_waiting_round() {
    let report = run_suite(&mesh5(), "mesh5", &config("control-plane")).unwrap();
    let r = result(&report.results, "control-plane restart");
    assert_eq!(r.epochs, [1, 1, 3], "{}", r.outcome);
    assert!(
        r.outcome
            .contains("restarted coordinator committed epoch 3 for round 2"),
        "{}",
        r.outcome
    );
    let waited = r.recover_s.unwrap();
    assert!(waited > 0.0 && waited <= 2.0, "{waited}");
}

#[test]
fn bad_configurations_are_typed_errors() {
    let mut cfg = config("none");
    cfg.rounds = 2;
    assert_eq!(
        run_suite(&mesh5(), "mesh5", &cfg).unwrap_err(),
        FaultsError::TooFewRounds(2)
    );
    let mut cfg = config("none");
    cfg.planner = "bogus".into();
    let err = run_suite(&mesh5(), "mesh5", &cfg).unwrap_err();
    assert!(
        matches!(&err, FaultsError::Plan { planner, nodes: 5, .. } if planner == "bogus"),
        "{err}"
    );
}
