//! What the process tests share: a temp-dir cluster whose processes die with it (their logs
//! shown when a test fails), running a binary to its end, trainers checking every element.
#![allow(dead_code)] // each test file uses a part

use netstorm_dataplane::reference::{fill_test_gradient, reference_sum};
use netstorm_node::{ClusterConfig, Session};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const DP: &str = env!("CARGO_BIN_EXE_netstorm-dp");
pub const CP: &str = env!("CARGO_BIN_EXE_netstorm-cp");

/// A temp dir holding a cluster config; the processes it spawned are killed on drop.
pub struct Cluster {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub children: Vec<Child>,
}

impl Cluster {
    /// The 2-node loopback UDP cluster (nodes "a" and "b", coordinator on "a").
    pub fn new(tag: &str, port_base: u16) -> Self {
        Self::with_config(tag, port_base, loopback_pair)
    }

    /// A cluster whose `cluster.toml` is `config(dir, port)`: `port` is free for the
    /// coordinator, `port + 1 ..` for the nodes (spread by pid so parallel runs do not meet).
    pub fn with_config(
        tag: &str,
        port_base: u16,
        config_text: impl FnOnce(&Path, u16) -> String,
    ) -> Self {
        let dir = std::env::temp_dir().join(format!("nsproc-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("cluster.toml");
        let port = port_base + (std::process::id() % 500) as u16 * 8;
        // Real-host binaries refuse to run without the job secret: a fresh one per cluster.
        let mut secret = [0u8; 32];
        std::io::Read::read_exact(
            &mut std::fs::File::open("/dev/urandom").unwrap(),
            &mut secret,
        )
        .unwrap();
        netstorm_node::secret::write_secret_file(&dir.join("job.key"), &secret, false).unwrap();
        let text = format!("secret_file = \"job.key\"\n{}", config_text(&dir, port));
        std::fs::write(&config, text).unwrap();
        Self {
            dir,
            config,
            children: Vec::new(),
        }
    }

    pub fn spawn(&mut self, bin: &str, node: &str) -> usize {
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

    pub fn cfg(&self) -> ClusterConfig {
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
pub fn run_to_end(bin: &str, config: &Path, node: &str) -> (bool, String) {
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

pub fn wait_file(p: &Path) {
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

/// Nodes "a" (127.0.0.1:port+1) and "b" (port+2) over loopback UDP, coordinator on "a" at
/// `port`, a 500 Mbit/s link between them; 4000-element rounds of 200-element segments.
pub fn loopback_pair(dir: &Path, port: u16) -> String {
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
    )
}

/// A trainer on `node` running `rounds` all-reduces of test-gradient data over a 2-node
/// cluster, asserting every element bit for bit.
pub fn trainer(node: &'static str, rounds: u32, cfg: ClusterConfig) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let t0 = Instant::now();
        let mut s = loop {
            match Session::connect(&cfg, node) {
                Ok(s) => break s,
                Err(_) if t0.elapsed() < Duration::from_secs(20) => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("{e}"),
            }
        };
        let me = cfg.node(node).unwrap().id as usize;
        let mut buf = vec![0.0f32; cfg.buffer_elems];
        for _ in 0..rounds {
            let r = s.next_round() as u32;
            fill_test_gradient(&mut buf, me, r);
            s.allreduce(&mut buf).unwrap();
            for (i, x) in buf.iter().enumerate() {
                let want = reference_sum(0..2, r, i);
                assert_eq!(
                    x.to_bits(),
                    want.to_bits(),
                    "round {r} element {i} at {node}"
                );
            }
        }
    })
}

/// Nodes "a", "b", "c" (127.0.0.1:port+1..3) in a full mesh at 500 Mbit/s, coordinator on
/// "a", loss detection at 1.5 s: the losing and rejoining tests' cluster.
pub fn three_nodes(dir: &Path, port: u16) -> String {
    let mut s = format!(
        r#"job = 9
buffer_elems = 4000
segment_elems = 200
shm_dir = "{}"
idle_backoff_us = 200
replan_interval_ms = 600000
trainer_timeout_s = 30
peer_timeout_ms = 1500

[coordinator]
node = "a"
port = {port}
"#,
        dir.display()
    );
    for (i, n) in ["a", "b", "c"].iter().enumerate() {
        s += &format!(
            "\n[[node]]\nname = \"{n}\"\naddress = \"127.0.0.1:{}\"\n",
            port + 1 + i as u16
        );
    }
    for (x, y) in [("a", "b"), ("a", "c"), ("b", "c")] {
        s += &format!(
            "\n[[link]]\nfrom = \"{x}\"\nto = \"{y}\"\nmbps = 500\nbidirectional = true\n"
        );
    }
    s
}
