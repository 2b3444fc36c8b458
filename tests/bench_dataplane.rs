//! `netstorm bench dataplane`: short runs on every backend this build has, checked through
//! their JSON (positive rates, ordered percentiles, verified sums), and bad arguments.
//! Nothing here asserts wall-clock durations; runs are bounded by --max-rounds.

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};

fn netstorm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_netstorm"))
        .args(args)
        .output()
        .expect("run netstorm")
}

fn json_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "netstorm-bench-dataplane-{name}-{}.json",
        std::process::id()
    ))
}

/// Runs `bench dataplane` with `args` plus `--json`, asserts success, returns the JSON.
fn bench(name: &str, args: &[&str]) -> Value {
    let path = json_path(name);
    let mut all = vec!["bench", "dataplane"];
    all.extend_from_slice(args);
    let p = path.to_str().unwrap().to_string();
    all.extend_from_slice(&["--json", &p]);
    let out = netstorm(&all);
    assert!(
        out.status.success(),
        "{name}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    std::fs::remove_file(&path).ok();
    v
}

fn f(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing or not a number in {v}"))
}

/// The fields every backend reports, with sane values.
fn check_sane(v: &Value, backend: &str, children: u64, max_rounds: u64) {
    assert_eq!(v["backend"], backend);
    assert_eq!(v["children"].as_u64(), Some(children));
    assert!(f(v, "child_mpps") > 0.0, "{v}");
    assert!(f(v, "child_payload_gbps") > 0.0, "{v}");
    assert!(f(v, "seconds") > 0.0, "{v}");
    assert!(
        f(v, "aggregator_rx_mpps") >= f(v, "child_mpps") * 0.99,
        "{v}"
    );
    let rounds = v["rounds"].as_u64().unwrap();
    assert!(rounds >= 1 && rounds <= max_rounds, "rounds {rounds}: {v}");
    // Mpps and Gbit/s describe the same segments.
    let seg = v["segment_bytes"].as_f64().unwrap();
    let gbps_from_mpps = f(v, "child_mpps") * 1e6 * seg * 8.0 / 1e9;
    assert!(
        (gbps_from_mpps - f(v, "child_payload_gbps")).abs() <= 1e-6 * gbps_from_mpps.max(1.0),
        "{v}"
    );
    let lat = &v["latency"];
    let (p50, p99, p999) = (f(lat, "p50_us"), f(lat, "p99_us"), f(lat, "p999_us"));
    assert!(
        p50 > 0.0 && p50 <= p99 && p99 <= p999 && p999 <= f(lat, "max_us"),
        "{lat}"
    );
    assert!(lat["samples"].as_u64().unwrap() >= 1, "{lat}");
    let ver = &v["verification"];
    assert!(ver["verified_rounds"].as_u64().unwrap() >= 1, "{ver}");
    assert_eq!(ver["mismatches"].as_u64(), Some(0), "{ver}");
    let cores = &v["cores"];
    assert!(cores["used"].as_u64().unwrap() >= 1, "{cores}");
    assert!(cores["used"].as_u64() <= cores["available"].as_u64().map(|x| x.max(1)));
}

#[test]
fn emu_backend_reports_emulated_and_wall_figures() {
    let v = bench(
        "emu",
        &[
            "--backend",
            "emu",
            "--children",
            "3",
            "--segment-bytes",
            "1024",
            "--segments-per-round",
            "32",
            "--seconds",
            "60",
            "--max-rounds",
            "40",
            "--verify-every",
            "4",
        ],
    );
    check_sane(&v, "emu", 3, 40);
    assert_eq!(v["protection"], "encrypt", "{v}");
    // --max-rounds bounds the run (--seconds is far away): exactly 40 rounds, 10 verified.
    assert_eq!(v["rounds"].as_u64(), Some(40));
    assert_eq!(v["child_segments"].as_u64(), Some(40 * 32 * 3));
    assert_eq!(v["verification"]["verified_rounds"].as_u64(), Some(10));
    let emu = &v["emu"];
    assert!(f(emu, "virtual_seconds") > 0.0, "{emu}");
    assert!(f(emu, "wall_seconds") > 0.0, "{emu}");
    assert!(f(emu, "wall_child_payload_gbps") > 0.0, "{emu}");
    assert!(f(emu, "events") > 0.0, "{emu}");
    // The emulated rate cannot beat the emulated links: 3 children share nothing but each
    // child link runs at 100 Gbit/s, so at most 3 x 100 Gbit/s of payload reaches the
    // aggregator.
    assert!(f(emu, "emulated_child_payload_gbps") <= 300.0, "{emu}");
    assert_eq!(
        f(emu, "emulated_child_payload_gbps"),
        f(&v, "child_payload_gbps")
    );
    // Without packet MACs the sums are just as exact.
    let v = bench(
        "emu-no-mac",
        &[
            "--backend",
            "emu",
            "--max-rounds",
            "5",
            "--no-mac",
            "--segments-per-round",
            "64",
        ],
    );
    check_sane(&v, "emu", 2, 5);
    // --no-mac is an alias of --protection off.
    assert_eq!(v["protection"], "off", "{v}");
    assert!(
        v["notes"].to_string().contains("packet protection: off"),
        "{v}"
    );
    // Payload in clear, tags over header and payload: the sums are just as exact.
    let v = bench(
        "emu-authenticate",
        &[
            "--backend",
            "emu",
            "--max-rounds",
            "5",
            "--protection",
            "authenticate",
            "--segments-per-round",
            "64",
        ],
    );
    check_sane(&v, "emu", 2, 5);
    assert_eq!(v["protection"], "authenticate", "{v}");
}

#[test]
fn udp_backend_runs_over_loopback() {
    let v = bench(
        "udp",
        &[
            "--backend",
            "udp",
            "--children",
            "2",
            "--segment-bytes",
            "512",
            "--segments-per-round",
            "16",
            "--seconds",
            "60",
            "--max-rounds",
            "24",
        ],
    );
    check_sane(&v, "udp", 2, 24);
    assert_eq!(v["mode"], "engine");
    assert_eq!(v["cores"]["aggregator_thread"], "aggregator");
    let names: Vec<&str> = v["cores"]["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    // The aggregator's own thread, then the other nodes spread over the other cores' threads
    // (here 2 cores: one thread whose engines take turns), each node on exactly one.
    assert_eq!(names[0], "aggregator");
    let mut peers: Vec<&str> = names[1..].iter().flat_map(|n| n.split('+')).collect();
    peers.sort_unstable();
    assert_eq!(peers, ["child0", "child1", "root"]);
}

fn fails_with(args: &[&str], needle: &str) {
    let mut all = vec!["bench", "dataplane"];
    all.extend_from_slice(args);
    let out = netstorm(&all);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} should fail");
    assert!(
        err.contains(needle),
        "{args:?}: stderr {err:?} lacks {needle:?}"
    );
}

#[test]
fn bad_arguments_give_clear_errors() {
    fails_with(&["--backend", "emu", "--children", "0"], "--children 0");
    fails_with(&["--backend", "carrier-pigeon"], "carrier-pigeon");
    fails_with(
        &["--backend", "emu", "--segment-bytes", "1023"],
        "--segment-bytes 1023",
    );
    fails_with(&["--backend", "emu", "--seconds", "0"], "--seconds 0");
    fails_with(
        &["--backend", "udp", "--mode", "raw"],
        "--mode raw needs --backend dpdk",
    );
    fails_with(&["--segment-bytes", "1024"], "--backend");
    fails_with(
        &["--backend", "dpdk", "--mode", "raw", "--no-mac"],
        "--protection and --no-mac apply to the engine mode",
    );
    fails_with(
        &["--backend", "emu", "--no-mac", "--protection", "encrypt"],
        "cannot be used with",
    );
    fails_with(&["--backend", "emu", "--protection", "gmac"], "gmac");
}

#[cfg(not(feature = "dpdk"))]
#[test]
fn dpdk_backend_without_the_feature_says_how_to_rebuild() {
    fails_with(&["--backend", "dpdk"], "--features dpdk");
}

#[cfg(feature = "dpdk")]
#[test]
fn dpdk_backend_raw_and_engine_modes() {
    let raw = bench(
        "dpdk-raw",
        &[
            "--backend",
            "dpdk",
            "--mode",
            "raw",
            "--seconds",
            "60",
            "--max-rounds",
            "200",
            "--segments-per-round",
            "64",
        ],
    );
    check_sane(&raw, "dpdk", 2, 200);
    assert!(raw["protection"].is_null(), "{raw}");
    // Every forwarded sum was compared with the reference at the root: all 200 x 64.
    assert_eq!(
        raw["verification"]["verified_rounds"].as_u64(),
        Some(200 * 64)
    );
    assert!(raw["aggregator_busy_fraction"].as_f64().unwrap() > 0.0);
    let eng = bench(
        "dpdk-engine",
        &[
            "--backend",
            "dpdk",
            "--seconds",
            "60",
            "--max-rounds",
            "20",
            "--segments-per-round",
            "16",
        ],
    );
    check_sane(&eng, "dpdk", 2, 20);
    assert_eq!(eng["mode"], "engine");
    // The driver's busy time: a fraction of the run, and a capacity at least the achieved rate.
    let busy = f(&eng, "aggregator_busy_fraction");
    assert!(busy > 0.0 && busy <= 1.0, "{eng}");
    assert!(
        f(&eng, "aggregator_capacity_gbps") >= f(&eng, "child_payload_gbps") * 0.999,
        "{eng}"
    );
    assert!(eng["dpdk"]["eal_args"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a == "--no-huge"));
}
