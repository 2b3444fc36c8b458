//! The coordinator task in process, over real TCP: two stand-in control planes (each a
//! `NodeAgent` speaking the cp's wire) say hello, install the first policy, run rounds and
//! ship link telemetry. A steady network is planned once; a rate cut on one link is
//! re-planned exactly once, logged naming the link, and counted in the counters file.
//! Outcomes only: the waits are bounded, never timed.

use netstorm_controlplane::awareness::LinkSample;
use netstorm_controlplane::coordinator::{ControlMsg, NodeAgent};
use netstorm_node::config::ClusterConfig;
use netstorm_node::coordinator_task::CoordinatorTask;
use netstorm_node::proto::{read_msg, write_msg, Wire};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

const MBPS: f64 = 1e6;

fn config(dir: &Path) -> ClusterConfig {
    let text = format!(
        r#"job = 5
buffer_elems = 100000
shm_dir = "{}"
replan_interval_ms = 400
replan_settle_ms = 100
telemetry_window_ms = 300

[coordinator]
node = "a"
port = 1

[[node]]
name = "a"
address = "127.0.0.1:2"

[[node]]
name = "b"
address = "127.0.0.1:3"

[[link]]
from = "a"
to = "b"
mbps = 100
bidirectional = true
"#,
        dir.display()
    );
    ClusterConfig::parse_str(&text, "cluster.toml").unwrap()
}

/// A stand-in cp: its agent, its connection, the policies it committed.
struct FakeCp {
    agent: NodeAgent,
    conn: TcpStream,
    incoming: mpsc::Receiver<Wire>,
    /// Committed `(epoch, activation round)`.
    installed: Vec<(u32, u32)>,
}

impl FakeCp {
    fn connect(addr: std::net::SocketAddr, node: u16) -> Self {
        let conn = TcpStream::connect(addr).unwrap();
        let mut reader = conn.try_clone().unwrap();
        let (tx, incoming) = mpsc::channel();
        std::thread::spawn(move || {
            while let Ok(m) = read_msg(&mut reader) {
                if tx.send(m).is_err() {
                    break;
                }
            }
        });
        let mut cp = Self {
            agent: NodeAgent::new(node, 0),
            conn,
            incoming,
            installed: Vec::new(),
        };
        cp.send(Wire::Hello {
            node,
            installed_epoch: 0,
            started_round: None,
            barrier_epoch: None,
        });
        cp
    }

    fn send(&mut self, msg: Wire) {
        write_msg(&mut self.conn, &msg).unwrap();
    }

    /// Answers what the coordinator sent.
    fn serve(&mut self) {
        while let Ok(Wire::Control(msg)) = self.incoming.try_recv() {
            if let Some(reply) = self.agent.handle(msg) {
                self.send(Wire::Control(reply));
            }
            while let Some((policy, at)) = self.agent.take_install() {
                self.installed.push((policy.epoch, at));
            }
        }
    }

    fn covers(&self, round: u32) -> bool {
        self.installed.iter().any(|&(_, at)| at <= round)
    }
}

/// Runs both cps for `wall` (rounds every 20 ms when both may start, telemetry every 50 ms
/// with the rate of a -> b), or until `done` says so.
fn drive(
    cps: &mut [FakeCp; 2],
    round: &mut u32,
    t0: Instant,
    wall: Duration,
    a_to_b_mbps: f64,
    mut done: impl FnMut(&[FakeCp; 2]) -> bool,
) {
    let start = Instant::now();
    let mut next_telemetry = Instant::now();
    while start.elapsed() < wall && !done(cps) {
        for cp in cps.iter_mut() {
            cp.serve();
        }
        if cps
            .iter()
            .all(|cp| cp.covers(*round) && cp.agent.may_start(*round))
        {
            for cp in cps.iter_mut() {
                let hb = cp.agent.started(*round);
                cp.send(Wire::Control(hb));
            }
            *round += 1;
        }
        if Instant::now() >= next_telemetry {
            next_telemetry += Duration::from_millis(50);
            let at = t0.elapsed().as_nanos() as u64;
            for (v, cp) in cps.iter_mut().enumerate() {
                let mbps = if v == 0 { a_to_b_mbps } else { 100.0 };
                let samples = vec![LinkSample {
                    from: v as u16,
                    to: 1 - v as u16,
                    at,
                    rate_bps: Some(mbps * MBPS),
                    app_limited: false,
                    rtt_ns: Some(1_000_000),
                    sent: 0,
                    lost: 0,
                }];
                cp.send(Wire::Control(ControlMsg::Telemetry {
                    node: v as u16,
                    samples,
                }));
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn one_replan_for_a_rate_cut_none_for_a_steady_network() {
    let dir = std::env::temp_dir().join(format!("ns-coordtask-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = config(&dir);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = Arc::clone(&log);
    let stop = Arc::new(AtomicBool::new(false));
    let stop_task = Arc::clone(&stop);
    let task = CoordinatorTask::new(cfg.clone())
        .unwrap()
        .with_log(Box::new(move |line| {
            sink.lock().unwrap().push(line.to_string())
        }));
    let coordinator = std::thread::spawn(move || task.run_until(listener, &stop_task));
    let lines = || log.lock().unwrap().clone();
    let replans = || lines().iter().filter(|l| l.starts_with("replan:")).count();

    let t0 = Instant::now();
    let mut cps = [FakeCp::connect(addr, 0), FakeCp::connect(addr, 1)];
    let mut round = 0;
    // The first policy, committed at round 0 on both; then a steady second and a half
    // (several minimum intervals between plans): nothing to re-plan.
    drive(
        &mut cps,
        &mut round,
        t0,
        Duration::from_secs(30),
        100.0,
        |cps| cps.iter().all(|cp| cp.covers(0)),
    );
    assert!(
        cps.iter().all(|cp| cp.installed == [(1, 0)]),
        "{:?}",
        lines()
    );
    drive(
        &mut cps,
        &mut round,
        t0,
        Duration::from_millis(1500),
        100.0,
        |_| false,
    );
    assert_eq!(replans(), 0, "{:?}", lines());
    assert!(round > 5, "rounds ran: {round}");

    // a -> b cut to a fifth: one re-plan, committed on both nodes; then steady again.
    drive(
        &mut cps,
        &mut round,
        t0,
        Duration::from_secs(30),
        20.0,
        |cps| cps.iter().all(|cp| cp.installed.len() == 2),
    );
    drive(
        &mut cps,
        &mut round,
        t0,
        Duration::from_millis(1500),
        20.0,
        |_| false,
    );
    stop.store(true, Ordering::Relaxed);
    coordinator.join().unwrap().unwrap();

    let lines = lines();
    assert_eq!(replans(), 1, "{lines:?}");
    assert!(
        lines.contains(&"replan: estimate of link a->b changed from 100.0 to 20.0 Mbit/s".into()),
        "{lines:?}"
    );
    assert!(lines
        .iter()
        .any(|l| l.starts_with("proposing epoch 2 (measured change)")));
    for cp in &cps {
        assert_eq!(cp.installed.len(), 2, "{lines:?}");
        assert_eq!(cp.installed[1].0, 2, "{lines:?}");
    }
    // The counters file says the same.
    let stats: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("netstorm-5.coordinator.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(stats["replans_measured"], 1, "{stats}");
    assert_eq!(stats["replans_rates_file"], 0, "{stats}");
    assert_eq!(stats["committed_epoch"], 2, "{stats}");
    assert!(
        stats["estimate_mbps"]["a->b"].as_f64().unwrap() < 25.0,
        "{stats}"
    );
    assert_eq!(
        stats["replan_log"].as_array().map(Vec::len),
        Some(1),
        "{stats}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
