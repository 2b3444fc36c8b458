//! netstorm-dp / netstorm-cp as processes on loopback (no root needed): bad input is refused
//! with clear messages, and killing + restarting a netstorm-cp does not disturb its dp.

use netstorm_controlplane::experiment::test_gradient;
use netstorm_dataplane::shm::{RingConfig, ShmRegion};
use netstorm_node::{ClusterConfig, Session};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DP: &str = env!("CARGO_BIN_EXE_netstorm-dp");
const CP: &str = env!("CARGO_BIN_EXE_netstorm-cp");

/// A temp dir with a 2-node loopback cluster config; processes are killed on drop.
struct Cluster {
    dir: PathBuf,
    config: PathBuf,
    children: Vec<Child>,
}

impl Cluster {
    fn new(tag: &str, port_base: u16) -> Self {
        let dir = std::env::temp_dir().join(format!("nsproc-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("cluster.toml");
        let port = port_base + (std::process::id() % 500) as u16 * 8;
        std::fs::write(
            &config,
            format!(
                r#"job = 9
buffer_elems = 4000
segment_elems = 200
shm_dir = "{}"
idle_backoff_us = 200
replan_interval_ms = 600000
trainer_timeout_s = 20

[coordinator]
node = "a"
port = {}

[[node]]
name = "a"
address = "127.0.0.1:{}"

[[node]]
name = "b"
address = "127.0.0.1:{}"

[[link]]
from = "a"
to = "b"
mbps = 500
bidirectional = true
"#,
                dir.display(),
                port,
                port + 1,
                port + 2
            ),
        )
        .unwrap();
        Self {
            dir,
            config,
            children: Vec::new(),
        }
    }

    fn spawn(&mut self, bin: &str, node: &str) -> usize {
        let c = Command::new(bin)
            .arg("--config")
            .arg(&self.config)
            .args(["--node", node])
            .stdout(Stdio::null())
            .stderr(self.log_file(bin, node))
            .spawn()
            .unwrap();
        self.children.push(c);
        self.children.len() - 1
    }

    /// stderr of the `len()`-th child, kept for the failure report.
    fn log_file(&self, bin: &str, node: &str) -> std::fs::File {
        let name = Path::new(bin)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let path = self
            .dir
            .join(format!("{}-{name}-{node}.log", self.children.len()));
        std::fs::File::create(path).unwrap()
    }

    fn cfg(&self) -> ClusterConfig {
        ClusterConfig::load(&self.config).unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            // A failed test shows what its processes said and keeps their files.
            let mut logs: Vec<_> = std::fs::read_dir(&self.dir)
                .map(|d| d.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            logs.retain(|p| p.extension().is_some_and(|x| x == "log"));
            logs.sort();
            for p in logs {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(20).collect();
                eprintln!("--- {} (last lines)", p.display());
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
            eprintln!("kept {}", self.dir.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs a binary to completion (bounded) and returns (success, stderr).
fn run_to_end(bin: &str, config: &Path, node: &str) -> (bool, String) {
    let mut c = Command::new(bin)
        .arg("--config")
        .arg(config)
        .args(
            ["--node", node, "--attach-timeout-s", "1"]
                .iter()
                .take(if bin == CP { 4 } else { 2 }),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    loop {
        if let Some(st) = c.try_wait().unwrap() {
            let out = c.wait_with_output().unwrap();
            return (
                st.success(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
        }
        if t0.elapsed() > Duration::from_secs(20) {
            let _ = c.kill();
            panic!("{bin} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_file(p: &Path) {
    let t0 = Instant::now();
    while !p.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{} never appeared",
            p.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

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
    assert!(err.contains("not supported by netstorm-dp yet"), "{err}");
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
    let trainer = |node: &'static str, rounds: u32, cfg: ClusterConfig| {
        std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut s = loop {
                match Session::connect(&cfg, node) {
                    Ok(s) => break s,
                    Err(e) if t0.elapsed() < Duration::from_secs(20) => {
                        let _ = e;
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Err(e) => panic!("{e}"),
                }
            };
            let me = cfg.node(node).unwrap().id as usize;
            let mut buf = vec![0.0f32; cfg.buffer_elems];
            for _ in 0..rounds {
                let r = s.next_round() as u32;
                for (i, x) in buf.iter_mut().enumerate() {
                    *x = test_gradient(me, r, i);
                }
                s.allreduce(&mut buf).unwrap();
                for (i, x) in buf.iter().enumerate() {
                    let want = test_gradient(0, r, i) + test_gradient(1, r, i);
                    assert_eq!(
                        x.to_bits(),
                        want.to_bits(),
                        "round {r} element {i} at {node}"
                    );
                }
            }
        })
    };
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
