//! netstorm-dp on DPDK: two nodes whose data planes talk over a `net_memif` pair (one EAL per
//! process, no hugepages, no NIC), with their cps and the coordinator over loopback TCP as
//! usual. Trainers check every element of every round bit for bit; the dps' counters show the
//! rounds, one policy epoch and no frame dropped by the ports. Bad DPDK files are refused
//! before anything starts, naming the file and the key.
//!
//! Needs libdpdk (scripts/test.sh runs it when pkg-config finds it) and root or a user allowed
//! to run the EAL with `--no-huge`.
#![cfg(feature = "dpdk")]

mod common;

use common::{loopback_pair, run_to_end, trainer, wait_file, Cluster, CP, DP};
use std::path::Path;
use std::time::{Duration, Instant};

/// `loopback_pair` with both nodes on backend "dpdk": node a serves the memif link, b joins it.
fn dpdk_pair(dir: &Path, port: u16) -> String {
    dpdk_pair_with(1)(dir, port)
}

/// [`dpdk_pair`] with `workers` workers per node: memif queue pairs (queue w reaches the peer's
/// queue w), worker ports `port + w`, node b's address moved up to keep them apart.
fn dpdk_pair_with(workers: u16) -> impl FnOnce(&Path, u16) -> String {
    move |dir: &Path, port: u16| {
        let sock = dir.join("memif.sock");
        // The temp dir's name is unique per test and process: so are the EALs' file prefixes.
        let prefix = runtime_prefix(dir);
        let addr = |v: u16| port + 1 + v * workers;
        let cores = |v: u16| {
            let c: Vec<String> = (0..workers).map(|w| ((v + w) % 2).to_string()).collect();
            format!("[{}]", c.join(", "))
        };
        for (v, node, role) in [(0u16, "a", "server"), (1, "b", "client")] {
            std::fs::write(
                dir.join(format!("dpdk-{node}.toml")),
                format!(
                    r#"[eal]
lcores = "{v}"
memory_mb = 256
vdevs = ["net_memif0,role={role},id=0,socket={}"]
file_prefix = "{prefix}-{node}"
no_huge = true
no_pci = true

[port]
device = "net_memif0"
node = {v}
mac = "02:00:00:00:00:0{v}"
ip = "127.0.0.1"
udp_port = {}
workers = {workers}
mempool_mbufs = 4095
rx_desc = 512
tx_desc = 512

[[port.neighbours]]
node = {}
mac = "02:00:00:00:00:0{}"
ip = "127.0.0.1"
udp_port = {}
"#,
                    sock.display(),
                    addr(v),
                    1 - v,
                    1 - v,
                    addr(1 - v)
                ),
            )
            .unwrap();
        }
        loopback_pair(dir, port)
            .replace(
                &format!("127.0.0.1:{}\"", port + 2),
                &format!("127.0.0.1:{}\"", addr(1)),
            )
            .replace(
                "name = \"a\"\n",
                &format!(
                    "name = \"a\"\ncores = {}\nbackend = \"dpdk\"\ndpdk = \"dpdk-a.toml\"\n",
                    cores(0)
                ),
            )
            .replace(
                "name = \"b\"\n",
                &format!(
                    "name = \"b\"\ncores = {}\nbackend = \"dpdk\"\ndpdk = \"dpdk-b.toml\"\n",
                    cores(1)
                ),
            )
    }
}

fn runtime_prefix(dir: &Path) -> String {
    dir.file_name().unwrap().to_string_lossy().into_owned()
}

/// The DPDK runtime directories the EALs made (named by file prefix) outlive the processes.
fn remove_runtime_dirs(dir: &Path) {
    for node in ["a", "b"] {
        let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{}-{node}", runtime_prefix(dir)));
    }
}

#[test]
fn two_dpdk_nodes_synchronize_bit_identical_rounds() {
    sync_rounds("dpdk", 25000, 1);
}

/// Each node's two workers on their own memif queue pair: worker w of a talks to worker w of
/// b on queue w, each owning half of the buffer.
#[test]
fn two_workers_per_dpdk_node_on_paired_queues() {
    sync_rounds("dpdk2w", 27000, 2);
}

fn sync_rounds(tag: &str, port_base: u16, workers: u16) {
    let mut cl = Cluster::with_config(tag, port_base, dpdk_pair_with(workers));
    let cfg = cl.cfg();
    // The memif client (b) starts first: its device start is retried until a's server
    // listens (memif_connect_wait_ms); a's dp waits for the link before it announces itself.
    cl.spawn(DP, "b");
    std::thread::sleep(Duration::from_millis(300));
    cl.spawn(DP, "a");
    for n in ["a", "b"] {
        wait_file(&cfg.node_file_path(n));
    }
    cl.spawn(CP, "a");
    cl.spawn(CP, "b");
    let rounds = 12;
    let (a, b) = (
        trainer("a", rounds, cfg.clone()),
        trainer("b", rounds, cfg.clone()),
    );
    a.join().unwrap();
    b.join().unwrap();
    // Every round, one epoch, and the ports dropped nothing (every frame parsed, addressed to
    // us and from a neighbour in the table).
    for node in ["a", "b"] {
        let path = cl.dir.join(format!("netstorm-9-{node}.dp-stats.json"));
        let t0 = Instant::now();
        let v: serde_json::Value = loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                if v["rounds_completed"] == rounds as u64 || t0.elapsed() > Duration::from_secs(10)
                {
                    break v;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(v["rounds_completed"], rounds as u64, "{node}: {v}");
        assert_eq!(
            v["installed_epochs"].as_array().map(Vec::len),
            Some(1),
            "{node}: {v}"
        );
        assert_eq!(v["policy_errors"], 0, "{node}: {v}");
        assert_eq!(v["workers"], workers, "{node}: {v}");
        assert_eq!(v["rx_port_dropped"], 0, "{node}: {v}");
        assert_eq!(v["rx_unknown_peer"], 0, "{node}: {v}");
        assert!(v["rx_datagrams"].as_u64().unwrap() > 0, "{node}: {v}");
    }
    let dir = cl.dir.clone();
    drop(cl);
    remove_runtime_dirs(&dir);
}

#[test]
fn bad_dpdk_files_are_refused_naming_file_and_key() {
    let cl = Cluster::with_config("dpdkbad", 26000, dpdk_pair);
    let file = cl.dir.join("dpdk-a.toml");
    let good = std::fs::read_to_string(&file).unwrap();
    let cases = [
        // The port is not this node.
        (
            good.replace("node = 0\n", "node = 2\n"),
            "invalid 'port.node': 2 but node 'a' is id 0",
        ),
        // No neighbour entry for b.
        (
            format!(
                "{}neighbours = []\n",
                &good[..good.find("[[port.neighbours]]").unwrap()]
            ),
            "invalid 'port.neighbours': no entry for node 'b' (id 1)",
        ),
        // b's address disagrees with the cluster's.
        (
            good.replace(
                &format!("udp_port = {}", cl.cfg().nodes[1].address.port()),
                "udp_port = 9",
            ),
            "invalid 'port.neighbours': node 1 ('b') at 127.0.0.1:9",
        ),
        // A port MTU below the job's (1500 by default): datagrams would not fit.
        (
            good.replace("rx_desc = 512", "rx_desc = 512\nmtu = 1280"),
            "invalid 'port.mtu': 1280 is smaller than the job's mtu 1500",
        ),
        // A key the port does not know.
        (
            good.replace("rx_desc", "rx_dsec"),
            "unknown field `rx_dsec`",
        ),
        // More queue pairs than workers.
        (
            good.replace("workers = 1", "workers = 2"),
            "invalid 'port.workers': 2 but node 'a' lists 1 core(s)",
        ),
        // A memif client with no server: it retries the start for memif_connect_wait_ms.
        (
            good.replace("role=server", "role=client")
                .replace("[port]\n", "[port]\nmemif_connect_wait_ms = 200\n"),
            "a net_memif client starts only once its server listens",
        ),
        // Not a vdev the EAL knows: the EAL failure names its arguments and the file.
        (
            good.replace("net_memif0,role", "net_nosuch0,role"),
            "--vdev",
        ),
    ];
    for (text, want) in cases {
        std::fs::write(&file, &text).unwrap();
        let (ok, err) = run_to_end(DP, &cl.config, "a");
        assert!(!ok, "started with {text}");
        assert!(err.contains(want), "want {want:?} in: {err}");
        assert!(err.contains(&file.display().to_string()), "{err}");
        // Refused before anything started: no ring or node file was made.
        assert!(!cl.cfg().node_file_path("a").exists(), "{err}");
    }
    remove_runtime_dirs(&cl.dir);
}

/// Several workers need a device that delivers worker w's frames to queue w.
#[test]
fn several_workers_need_a_queue_paired_device() {
    let cl = Cluster::with_config("dpdkaf", 28000, dpdk_pair_with(2));
    let file = cl.dir.join("dpdk-a.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("net_memif0", "net_af_packet0")).unwrap();
    let (ok, err) = run_to_end(DP, &cl.config, "a");
    assert!(!ok);
    assert!(
        err.contains("invalid 'port.workers': 2: several workers on \"net_af_packet0\" would need flow rules"),
        "{err}"
    );
    assert!(!cl.cfg().node_file_path("a").exists(), "{err}");
}
