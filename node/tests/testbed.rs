//! The namespace testbed (scripts/testbed.sh) as a test: 3 network namespaces joined by
//! tbf-shaped veth pairs (50 Mbit/s), one netstorm-dp + netstorm-cp each, 80 all-reduce rounds
//! over kernel UDP checked bit-for-bit by the trainers, the n1 -> n2 rate cut to 10 Mbit/s with
//! `tc` mid-run and nothing else told: the dps measure it, the coordinator's estimator sees the
//! change and re-plans, and a new policy epoch is installed through every dp's shared-memory
//! policy ring and used. A netstorm-cp is killed and restarted mid-run. With the `dpdk`
//! feature, the same with 2 namespaces and n1 on DPDK (`--dpdk`). Needs root and `ip netns`;
//! skipped otherwise.

use std::path::Path;
use std::process::Command;

fn can_run() -> Result<(), String> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map_err(|e| e.to_string())?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Err("not running as root".into());
    }
    let probe = format!("nstbprobe{}", std::process::id());
    let ok = Command::new("ip").args(["netns", "add", &probe]).status();
    match ok {
        Ok(s) if s.success() => {
            let _ = Command::new("ip").args(["netns", "del", &probe]).status();
        }
        _ => return Err("`ip netns add` does not work here".into()),
    }
    let tc = Command::new("tc").arg("-V").output();
    if !tc.is_ok_and(|o| o.status.success()) {
        return Err("`tc` is not available".into());
    }
    Ok(())
}

#[test]
fn three_namespaces_tbf_rate_change_new_epoch_cp_restart() {
    if let Err(why) = can_run() {
        eprintln!("SKIPPED testbed: {why} (needs root, ip netns and tc)");
        return;
    }
    let stdout = run_testbed(&["-k", "3", "-r", "80", "-e", "30000", "--restart-cp"]);
    check_run(&stdout, &["n1", "n2", "n3"], 80);
}

/// n1 on DPDK (net_af_packet on its veth, frames built by the DPDK port) against n2's kernel
/// UDP stack: the same run, so the kernel is an independent implementation that must accept
/// and answer every frame, and the DPDK node's own measurements find the cut.
#[cfg(feature = "dpdk")]
#[test]
fn dpdk_node_against_a_kernel_udp_node_in_the_testbed() {
    if let Err(why) = can_run() {
        eprintln!("SKIPPED testbed --dpdk: {why} (needs root, ip netns and tc)");
        return;
    }
    let stdout = run_testbed(&[
        "-k",
        "2",
        "-r",
        "60",
        "-e",
        "30000",
        "--restart-cp",
        "--dpdk",
    ]);
    assert!(
        stdout.contains("n1 runs on DPDK (net_af_packet"),
        "{stdout}"
    );
    check_run(&stdout, &["n1", "n2"], 60);
}

/// Runs scripts/testbed.sh with the binaries of this build; its stdout when it passed.
fn run_testbed(args: &[&str]) -> String {
    let dp = Path::new(env!("CARGO_BIN_EXE_netstorm-dp"));
    let bin_dir = dp.parent().expect("bin dir");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/testbed.sh");
    let out = Command::new("timeout")
        .args(["180", "bash"])
        .arg(&script)
        .args(args)
        .env("NETSTORM_BIN_DIR", bin_dir)
        .output()
        .expect("run testbed.sh");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "testbed failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("testbed: PASS"), "{stdout}");
    stdout
}

/// What a passed run must show beyond its PASS line.
fn check_run(stdout: &str, nodes: &[&str], rounds: u32) {
    // Every trainer checked every round and saw at least two epochs; every dp installed them
    // through its policy ring and ran its last rounds under a newer one.
    for n in nodes {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("testbed: {n} trainer: OK {rounds} rounds")))
            .unwrap_or_else(|| panic!("no OK line for {n}:\n{stdout}"));
        assert!(line.contains("epochs [1, 2"), "{line}");
        let stats = stdout
            .lines()
            .find(|l| l.starts_with(&format!("testbed: {n} installed_epochs")))
            .unwrap_or_else(|| panic!("no counters for {n}:\n{stdout}"));
        assert!(stats.contains("installed_epochs [1,2"), "{stats}");
        assert!(
            stats.contains(&format!("\"rounds_completed\":{rounds}")),
            "{stats}"
        );
        assert!(stats.contains("\"policy_errors\":0"), "{stats}");
    }
    // The new epoch came from measurement: the coordinator's estimator saw n1 -> n2 change
    // (no rates file exists), and its final estimate reflects the cut (10 Mbit/s, was 50).
    assert!(
        stdout.contains("coordinator: replan: estimate of link n1->n2 changed from 50.0 to"),
        "{stdout}"
    );
    let coord = stdout
        .lines()
        .find_map(|l| l.strip_prefix("testbed: coordinator "))
        .unwrap_or_else(|| panic!("no coordinator counters:\n{stdout}"));
    let v: serde_json::Value = serde_json::from_str(coord).expect("coordinator counters JSON");
    assert!(v["replans_measured"].as_u64().unwrap_or(0) >= 1, "{coord}");
    assert_eq!(v["replans_rates_file"].as_u64(), Some(0), "{coord}");
    let est = v["estimate_mbps"]["n1->n2"]
        .as_f64()
        .expect("n1->n2 estimate");
    assert!(
        est < 25.0,
        "n1->n2 still estimated at {est} Mbit/s: {coord}"
    );
    // No other link is taken for a cut one: a queue that delays only acks (n2 -> n1's come
    // back over the cut link) or a sender that backed off is not a slower link.
    for (link, v) in v["estimate_mbps"].as_object().expect("estimates") {
        let mbps = v.as_f64().unwrap_or(0.0);
        assert!(
            link == "n1->n2" || mbps > 25.0,
            "{link} estimated at {mbps} Mbit/s on a 50 Mbit/s link: {coord}"
        );
    }
    assert!(
        stdout.contains("rate 10Mbit"),
        "tc change not in effect:\n{stdout}"
    );
}
