//! netstorm-dp / netstorm-cp as processes on loopback (no root needed): bad input is refused
//! with clear messages, and killing + restarting a netstorm-cp does not disturb its dp.

mod common;

use common::{loopback_pair, run_to_end, trainer, wait_file, Cluster, CP, DP};
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
        err.contains("cluster.toml:25:1: unknown key 'mbsp'"),
        "{err}"
    );
    std::fs::write(&cl.config, text.replace("name = \"b\"", "name = \"a\"")).unwrap();
    let (ok, err) = run_to_end(CP, &cl.config, "a");
    assert!(!ok);
    assert!(
        err.contains("cluster.toml:19: invalid 'name': duplicate node name 'a'"),
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

/// A bf16 job on real sockets: both dps send 16-bit payloads (`wire = "bf16"`), every round
/// ends bit-identical on both nodes, within the documented error bound of the exact sum, and
/// genuinely rounded (some elements differ from the f32 sum: the test gradients need 11 bits,
/// bf16 keeps 8), with no packet dropped for a foreign payload type.
#[test]
fn bf16_wire_on_real_sockets_is_bit_identical_and_within_bound() {
    use netstorm_dataplane::reference::{fill_test_gradient, reference_sum, result_ok};
    use netstorm_dataplane::wire::PayloadType;
    let mut cl = Cluster::with_config("bf16", 24500, |dir, port| {
        loopback_pair(dir, port).replace("segment_elems = 200\n", "wire = \"bf16\"\n")
    });
    let cfg = cl.cfg();
    assert_eq!((cfg.wire, cfg.segment_elems), (PayloadType::Bf16, 696));
    for n in ["a", "b"] {
        cl.spawn(DP, n);
        cl.spawn(CP, n);
    }
    const ROUNDS: usize = 5;
    let run = |node: &'static str, cfg: netstorm_node::ClusterConfig| {
        std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut s = loop {
                match netstorm_node::Session::connect(&cfg, node) {
                    Ok(s) => break s,
                    Err(_) if t0.elapsed() < Duration::from_secs(20) => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Err(e) => panic!("{e}"),
                }
            };
            let me = cfg.node(node).unwrap().id as usize;
            let mut out = Vec::new();
            for _ in 0..ROUNDS {
                let mut buf = vec![0.0f32; cfg.buffer_elems];
                let r = s.next_round() as u32;
                fill_test_gradient(&mut buf, me, r);
                s.allreduce(&mut buf).unwrap();
                out.push((r, buf));
            }
            out
        })
    };
    let (a, b) = (run("a", cfg.clone()), run("b", cfg.clone()));
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    let mut rounded = 0;
    for ((ra, xa), (rb, xb)) in a.iter().zip(&b) {
        assert_eq!(ra, rb);
        for (i, (x, y)) in xa.iter().zip(xb).enumerate() {
            assert_eq!(
                x.to_bits(),
                y.to_bits(),
                "round {ra} element {i}: nodes differ"
            );
            assert!(
                result_ok(PayloadType::Bf16, 2, *ra, i, *x),
                "round {ra} element {i}: {x}"
            );
            rounded += usize::from(x.to_bits() != reference_sum(0..2, *ra, i).to_bits());
        }
    }
    assert!(
        rounded > 0,
        "no element was rounded: the job did not run in bf16"
    );
    // The dp's counters file (rewritten every 500 ms) reports the payload counters.
    let path = cl.dir.join("netstorm-9-a.dp-stats.json");
    let t0 = Instant::now();
    let stats: serde_json::Value = loop {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        if v["rounds_completed"].as_u64() >= Some(ROUNDS as u64)
            || t0.elapsed() > Duration::from_secs(10)
        {
            break v;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        stats["rounds_completed"].as_u64(),
        Some(ROUNDS as u64),
        "{stats}"
    );
    for key in ["rx_wrong_payload", "saturated", "nonfinite_inputs"] {
        assert_eq!(stats[key].as_u64(), Some(0), "{key}: {stats}");
    }
}

/// A node that listens on a different address than peers use to reach it (`bind` beside
/// `address`, as behind NAT or with several interfaces): node a binds the wildcard address for
/// its worker and its coordinator, peers reach it at 127.0.0.1, and training runs exact.
#[test]
fn a_node_bound_to_another_address_than_it_advertises_trains() {
    let mut cl = Cluster::with_config("bind", 25000, |dir, port| {
        loopback_pair(dir, port).replacen(
            &format!("address = \"127.0.0.1:{}\"\n", port + 1),
            &format!(
                "address = \"127.0.0.1:{}\"\nbind = \"0.0.0.0:{}\"\n",
                port + 1,
                port + 1
            ),
            1,
        )
    });
    let cfg = cl.cfg();
    assert_eq!(
        cfg.nodes[0].bind.map(|b| b.ip().is_unspecified()),
        Some(true)
    );
    for n in ["a", "b"] {
        cl.spawn(DP, n);
        cl.spawn(CP, n);
    }
    let (a, b) = (trainer("a", 3, cfg.clone()), trainer("b", 3, cfg.clone()));
    a.join().unwrap();
    b.join().unwrap();

    // The dp listens on `bind`, not on `address`: advertised at a documentation address no
    // interface here has (binding it would fail), bound to loopback, it starts and stays up.
    let mut cl = Cluster::with_config("bind2", 25100, |dir, port| {
        loopback_pair(dir, port).replacen(
            &format!("address = \"127.0.0.1:{}\"\n", port + 1),
            &format!(
                "address = \"192.0.2.1:{}\"\nbind = \"127.0.0.1:{}\"\n",
                port + 1,
                port + 1
            ),
            1,
        )
    });
    let cfg = cl.cfg();
    let dp = cl.spawn(DP, "a");
    wait_file(&cfg.node_file_path("a"));
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        cl.children[dp].try_wait().unwrap().is_none(),
        "the dp exited: {}",
        std::fs::read_to_string(cl.dir.join("0-netstorm-dp-a.log")).unwrap_or_default()
    );
}

/// `GET /metrics` from a node's cp during a run: counters that must move (rounds, bytes,
/// round durations) move between two scrapes, and the text parses with a Prometheus parser.
#[test]
fn metrics_endpoint_serves_moving_counters_in_prometheus_syntax() {
    use std::io::{Read, Write};
    let metrics_port = std::cell::Cell::new(0u16);
    let mut cl = Cluster::with_config("metrics", 25200, |dir, port| {
        metrics_port.set(port + 5);
        loopback_pair(dir, port).replacen(
            &format!("address = \"127.0.0.1:{}\"\n", port + 1),
            &format!(
                "address = \"127.0.0.1:{}\"\nmetrics = \"127.0.0.1:{}\"\n",
                port + 1,
                port + 5
            ),
            1,
        )
    });
    let cfg = cl.cfg();
    for n in ["a", "b"] {
        cl.spawn(DP, n);
        cl.spawn(CP, n);
    }
    let get = |path: &str| -> (String, String) {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", metrics_port.get())).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        (head.to_string(), body.to_string())
    };
    let scrape = || {
        let (head, body) = get("/metrics");
        assert!(
            head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
            "{head}"
        );
        let lines = body.lines().map(|l| Ok(l.to_string()));
        let parsed = prometheus_parse::Scrape::parse(lines).unwrap();
        (parsed, body)
    };
    let value = |s: &prometheus_parse::Scrape, name: &str| -> Option<f64> {
        s.samples
            .iter()
            .find(|x| x.metric == name)
            .and_then(|x| match &x.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => Some(*v),
                _ => None,
            })
    };
    // Waits (bounded) until the dp's counters file, rewritten every 500 ms, shows `rounds`.
    let scrape_after = |rounds: f64| {
        let t0 = Instant::now();
        loop {
            let (s, body) = scrape();
            if value(&s, "netstorm_rounds_completed_total") >= Some(rounds)
                || t0.elapsed() > Duration::from_secs(10)
            {
                return (s, body);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let (a, b) = (trainer("a", 3, cfg.clone()), trainer("b", 3, cfg.clone()));
    a.join().unwrap();
    b.join().unwrap();
    let (first, body) = scrape_after(3.0);
    assert_eq!(
        value(&first, "netstorm_rounds_completed_total"),
        Some(3.0),
        "{body}"
    );
    assert_eq!(value(&first, "netstorm_dp_up"), Some(1.0), "{body}");
    assert_eq!(value(&first, "netstorm_members"), Some(2.0), "{body}");
    assert!(
        value(&first, "netstorm_coordinator_commits_total") >= Some(1.0),
        "{body}"
    );
    assert!(
        value(&first, "netstorm_auth_failures_total") == Some(0.0),
        "{body}"
    );
    let leader = first
        .samples
        .iter()
        .find(|x| x.metric == "netstorm_leader")
        .unwrap();
    assert_eq!(leader.labels.get("node"), Some("a"), "{body}");
    let (a, b) = (trainer("a", 4, cfg.clone()), trainer("b", 4, cfg.clone()));
    a.join().unwrap();
    b.join().unwrap();
    let (second, body) = scrape_after(7.0);
    assert_eq!(
        value(&second, "netstorm_rounds_completed_total"),
        Some(7.0),
        "{body}"
    );
    for moving in [
        "netstorm_sent_bytes_total",
        "netstorm_received_bytes_total",
        "netstorm_datagrams_sent_total",
    ] {
        let (x, y) = (value(&first, moving), value(&second, moving));
        assert!(x > Some(0.0) && y > x, "{moving}: {x:?} then {y:?}\n{body}");
    }
    let rounds_seen = second
        .samples
        .iter()
        .find(|x| x.metric == "netstorm_round_duration_seconds")
        .and_then(|x| match &x.value {
            prometheus_parse::Value::Histogram(h) => h.last().map(|b| b.count),
            _ => None,
        });
    assert_eq!(rounds_seen, Some(7.0), "{body}");
    let (head, _) = get("/other");
    assert!(head.contains(" 404"), "{head}");
    // `netstorm status` reads the same endpoints: node a in full, node b (no metrics address)
    // as an alert.
    let st = netstorm_node::status::query(&cfg, Duration::from_secs(2));
    let a = &st.nodes[0];
    assert_eq!(
        (a.unreachable.as_ref(), a.dp_up, a.rounds_completed),
        (None, true, 7),
        "{st:?}"
    );
    assert_eq!(
        (a.installed_epoch, st.committed_epoch),
        (1, Some(1)),
        "{st:?}"
    );
    assert!(
        a.round_mean_s.is_some_and(|s| s > 0.0) && a.sent_bytes > 0,
        "{st:?}"
    );
    assert_eq!(st.leader, "a");
    assert!(st.nodes[1].unreachable.is_some(), "{st:?}");
    assert!(
        st.alerts.iter().any(|x| x.starts_with("b: not read")),
        "{st:?}"
    );
    assert!(!st.link_estimates_mbps.is_empty(), "{st:?}");
    let text = netstorm_node::status::render_text(&st);
    assert!(
        text.contains("leader a") && text.contains("alerts:"),
        "{text}"
    );
}
