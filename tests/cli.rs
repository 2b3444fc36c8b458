//! The CLI's bad-input paths: clear errors, non-zero exit, no panic.

use std::process::Command;

fn netstorm(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_netstorm"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("panicked"),
        "netstorm {args:?} panicked:\n{text}"
    );
    (out.status.success(), text)
}

#[test]
fn unknown_model_lists_the_known_ones() {
    let (ok, text) = netstorm(&[
        "compare",
        "--scenario",
        "scenarios/paper9-static100.toml",
        "--model",
        "gpt5",
        "--rounds",
        "1",
    ]);
    assert!(!ok);
    assert!(
        text.contains("gpt5") && text.to_lowercase().contains("resnet"),
        "{text}"
    );
}

#[test]
fn missing_scenario_names_the_file() {
    let (ok, text) = netstorm(&[
        "compare",
        "--scenario",
        "scenarios/nope.toml",
        "--model-mb",
        "1",
        "--rounds",
        "1",
    ]);
    assert!(!ok);
    assert!(text.contains("scenarios/nope.toml"), "{text}");
}

#[test]
fn zero_rounds_is_rejected() {
    let (ok, text) = netstorm(&[
        "compare",
        "--scenario",
        "scenarios/paper9-static100.toml",
        "--model-mb",
        "1",
        "--rounds",
        "0",
    ]);
    assert!(!ok);
    assert!(text.contains("--rounds"), "{text}");
}

#[test]
fn disconnected_network_is_rejected_before_running() {
    let dir = std::env::temp_dir().join(format!("netstorm-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("split.toml");
    std::fs::write(
        &f,
        "name = \"split\"\n[[node]]\nname = \"a\"\n[[node]]\nname = \"b\"\n[[node]]\nname = \"c\"\n\
         [[link]]\nfrom = \"a\"\nto = \"b\"\nmbps = 100\nbidirectional = true\n",
    )
    .unwrap();
    let (ok, text) = netstorm(&[
        "compare",
        "--scenario",
        f.to_str().unwrap(),
        "--model-mb",
        "1",
        "--rounds",
        "1",
    ]);
    assert!(!ok);
    assert!(
        text.contains("not connected") && text.contains('c'),
        "{text}"
    );
    let (ok, text) = netstorm(&["plan", "--scenario", f.to_str().unwrap(), "--model-mb", "1"]);
    assert!(!ok);
    assert!(text.contains("not connected"), "{text}");
}

#[test]
fn unknown_planner_and_strategy_are_rejected() {
    let (ok, text) = netstorm(&[
        "plan",
        "--scenario",
        "scenarios/paper9-static100.toml",
        "--model-mb",
        "1",
        "--planner",
        "magic",
    ]);
    assert!(!ok);
    assert!(text.contains("magic") && text.contains("packing"), "{text}");
    let (ok, text) = netstorm(&[
        "compare",
        "--scenario",
        "scenarios/paper9-static100.toml",
        "--model-mb",
        "1",
        "--strategies",
        "magic",
    ]);
    assert!(!ok);
    assert!(
        text.contains("magic") && text.contains("netstorm-packing"),
        "{text}"
    );
}

#[test]
fn bad_scenario_key_is_named_with_file_and_line() {
    let dir = std::env::temp_dir().join(format!("netstorm-cli-key-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("typo.toml");
    std::fs::write(&f, "name = \"t\"\n[[node]]\nname = \"a\"\n[[node]]\nname = \"b\"\n[[link]]\nfrom = \"a\"\nto = \"b\"\nmbsp = 100\n").unwrap();
    let (ok, text) = netstorm(&["scenario", f.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        text.contains("typo.toml:9") && text.contains("mbsp"),
        "{text}"
    );
}

#[test]
fn plan_json_has_the_documented_shape() {
    let out = Command::new(env!("CARGO_BIN_EXE_netstorm"))
        .args([
            "plan",
            "--scenario",
            "scenarios/paper9-static100.toml",
            "--model-mb",
            "100",
            "--planner",
            "paper",
            "--json",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["planner"], "paper");
    assert!((v["optimum_s"].as_f64().unwrap() - 5.0).abs() < 0.05, "{v}");
    assert!(v["modeled_s"].as_f64().unwrap() >= v["optimum_s"].as_f64().unwrap());
    let trees = v["trees"].as_array().unwrap();
    let share: f64 = trees.iter().map(|t| t["share"].as_f64().unwrap()).sum();
    assert!((share - 1.0).abs() < 1e-9);
    for t in trees {
        let root = t["root"].as_str().unwrap();
        for map in ["reduce_parent", "broadcast_parent"] {
            let m = t[map].as_object().unwrap();
            assert_eq!(m.len(), 8, "every non-root node appears in {map}");
            assert!(!m.contains_key(root));
        }
    }
}
