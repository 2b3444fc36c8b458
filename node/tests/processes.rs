//! netstorm-dp / netstorm-cp as processes on loopback (no root needed): bad input is refused
//! with clear messages, and killing + restarting a netstorm-cp does not disturb its dp.

mod common;

use common::{run_to_end, trainer, wait_file, Cluster, CP, DP};
use netstorm_dataplane::shm::{RingConfig, ShmRegion};
use std::time::{Duration, Instant};

#[test]
fn config_errors_name_file_line_and_key() {
    let cl = Cluster::new("cfg", 21000);
    let text = std::fs::read_to_string(&cl.config).unwrap();
    std::fs::write(&cl.config, text.replace("mbps = 500", "mbsp = 500")).unwrap();
    let (ok, err) = run_to_end(DP, &cl.config, "a");
    assert!(!ok);
    assert!(
        err.contains("cluster.toml:24:1: unknown key 'mbsp'"),
        "{err}"
    );
    std::fs::write(&cl.config, text.replace("name = \"b\"", "name = \"a\"")).unwrap();
    let (ok, err) = run_to_end(CP, &cl.config, "a");
    assert!(!ok);
    assert!(
        err.contains("cluster.toml:18: invalid 'name': duplicate node name 'a'"),
        "{err}"
    );
    std::fs::write(&cl.config, text.clone()).unwrap();
    let (ok, err) = run_to_end(DP, &cl.config, "zz");
    assert!(!ok);
    assert!(err.contains("no node named 'zz'"), "{err}");
    std::fs::write(
        &cl.config,
        text.replace(
            "address = \"127.0.0.1",
            "backend = \"dpdk\"\naddress = \"127.0.0.1",
        ),
    )
    .unwrap();
    let (ok, err) = run_to_end(DP, &cl.config, "a");
    assert!(!ok);
    assert!(
        err.contains("invalid 'dpdk': [[node]] 'a' has backend \"dpdk\" but no `dpdk = "),
        "{err}"
    );
    std::fs::write(
        &cl.config,
        text.replace(
            "address = \"127.0.0.1",
            "backend = \"dpdk\"\ndpdk = \"dpdk-a.toml\"\naddress = \"127.0.0.1",
        ),
    )
    .unwrap();
    let (ok, err) = run_to_end(DP, &cl.config, "a");
    assert!(!ok);
    if cfg!(feature = "dpdk") {
        // The DPDK file is looked for beside the cluster config.
        let want = cl.dir.join("dpdk-a.toml");
        assert!(
            err.contains(&format!(
                "invalid 'dpdk': node 'a': cannot read {}: No such file",
                want.display()
            )),
            "{err}"
        );
    } else {
        assert!(err.contains("built without DPDK support"), "{err}");
    }
}

#[test]
fn second_dp_on_the_same_node_refuses() {
    let mut cl = Cluster::new("dup", 22000);
    cl.spawn(DP, "a");
    let cfg = cl.cfg();
    wait_file(&cfg.node_file_path("a"));
    let (ok, err) = run_to_end(DP, &cl.config, "a");
    assert!(!ok, "a second dp started");
    assert!(
        err.contains("node 'a' of job 9 is already served by a live netstorm-dp (pid"),
        "{err}"
    );
    // The first one is unaffected.
    assert!(cl.children[0].try_wait().unwrap().is_none());
}

#[test]
fn bad_ring_file_is_refused() {
    let cl = Cluster::new("ring", 23000);
    let cfg = cl.cfg();
    let ring = cfg.ring_path("a");
    // A ring file of another layout version.
    drop(ShmRegion::create(&ring, RingConfig::default()).unwrap());
    let mut bytes = std::fs::read(&ring).unwrap();
    bytes[8..12].copy_from_slice(&99u32.to_ne_bytes());
    std::fs::write(&ring, &bytes).unwrap();
    let (ok, err) = run_to_end(CP, &cl.config, "a");
    assert!(!ok);
    assert!(err.contains("layout version 99, expected 1"), "{err}");
    // A ring file of the wrong size.
    drop(ShmRegion::create(&ring, RingConfig::default()).unwrap());
    let len = std::fs::metadata(&ring).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&ring)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let (ok, err) = run_to_end(CP, &cl.config, "a");
    assert!(!ok);
    assert!(err.contains(&ring.display().to_string()), "{err}");
    assert!(err.contains("size") || err.contains("truncated"), "{err}");
}

#[test]
fn killing_and_restarting_a_cp_does_not_disturb_its_dp() {
    let mut cl = Cluster::new("cpkill", 24000);
    let cfg = cl.cfg();
    let dp_a = cl.spawn(DP, "a");
    let _cp_a = cl.spawn(CP, "a");
    let dp_b = cl.spawn(DP, "b");
    let cp_b = cl.spawn(CP, "b");
    for n in ["a", "b"] {
        wait_file(&cfg.node_file_path(n));
    }
    // Three rounds with every process up.
    let (a, b) = (trainer("a", 3, cfg.clone()), trainer("b", 3, cfg.clone()));
    a.join().unwrap();
    b.join().unwrap();
    // Kill b's cp (SIGKILL: no goodbye) and keep training: with no activation undecided there
    // is no start barrier, so the dps keep running rounds under the committed policy.
    cl.children[cp_b].kill().unwrap();
    cl.children[cp_b].wait().unwrap();
    let (a, b) = (trainer("a", 3, cfg.clone()), trainer("b", 3, cfg.clone()));
    a.join().unwrap();
    b.join().unwrap();
    // Restart it: it re-attaches to the rings and the node file, says hello to the
    // coordinator again and reports b's rounds; training goes on undisturbed.
    cl.spawn(CP, "b");
    let (a, b) = (trainer("a", 12, cfg.clone()), trainer("b", 12, cfg.clone()));
    a.join().unwrap();
    b.join().unwrap();
    for i in [dp_a, dp_b] {
        assert!(cl.children[i].try_wait().unwrap().is_none(), "a dp died");
    }
    // The dp's counters file (rewritten every 500 ms) shows every round and one epoch.
    let t0 = Instant::now();
    let stats = loop {
        let s = std::fs::read_to_string(cl.dir.join("netstorm-9-b.dp-stats.json")).unwrap();
        if s.contains("\"rounds_completed\":18,") || t0.elapsed() > Duration::from_secs(10) {
            break s;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(stats.contains("\"rounds_completed\":18,"), "{stats}");
    // One epoch: the initial plan (its number is 1 unless a loaded host timed out its first
    // prepare and the coordinator proposed it again from round 0).
    let v: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(
        v["installed_epochs"].as_array().map(Vec::len),
        Some(1),
        "{stats}"
    );
    assert!(stats.contains("\"policy_errors\":0"), "{stats}");
}
