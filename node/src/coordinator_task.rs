//! The coordinator's TCP side, run by the `netstorm-cp` of the node named in
//! `[coordinator]`: accepts the cps' connections, maps each to its node by the connection's
//! [`Wire::Hello`], and drives a [`ClusterCoordinator`] (the sans-IO logic: hellos, the
//! two-phase install, the re-planning loop) with a monotonic clock. It also watches the
//! operator's `rates_file` (a change replaces the re-planner's prior), writes the counters
//! file `<shm_dir>/netstorm-<job>.coordinator.json` every 100 ms, and logs what the
//! coordinator decided.
//!
//! A connection's frames are read on a thread of their own and reach the loop over a
//! channel; writes happen on the loop (a failed write drops the connection: the cp
//! reconnects, says hello again, and the coordinator resends what is unacknowledged).

use crate::config::{ClusterConfig, RatesFile};
use crate::proto::{read_msg, write_msg, Wire};
use netstorm_controlplane::awareness::AwarenessConfig;
use netstorm_controlplane::cluster_coordinator::{ClusterCoordinator, CoordinatorEvent, NodeHello};
use netstorm_controlplane::coordinator::{ControlMsg, CoordinatorConfig};
use netstorm_controlplane::peer_loss::Outcome;
use netstorm_controlplane::planner::{by_name, PlanError, PlannerOptions};
use netstorm_controlplane::replanner::{ReplannerConfig, Trigger};
use netstorm_dataplane::topology::Topology;
use netstorm_dataplane::{Nanos, NodeId};
use std::collections::BTreeMap;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

/// Why the coordinator cannot run.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorTaskError {
    #[error("planner '{planner}': {err}")]
    Planner { planner: String, err: PlanError },
    #[error("planning: {0}")]
    Plan(PlanError),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Where the coordinator's log lines go (each without the `netstorm-cp: coordinator: `
/// prefix the default sink adds).
pub type LogSink = Box<dyn FnMut(&str) + Send>;

/// The coordinator's counters file (`<shm_dir>/netstorm-<job>.coordinator.json`).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct CoordStats {
    pub proposals: u64,
    pub commits: u64,
    pub aborts: u64,
    pub retries: u64,
    pub gave_up: u64,
    /// Re-plans triggered by the measured network (the estimator's change detection).
    pub replans_measured: u64,
    /// Re-plans triggered by the operator's rates file.
    pub replans_rates_file: u64,
    pub telemetry_accepted: u64,
    pub telemetry_rejected: u64,
    pub committed_epoch: u32,
    /// Current estimate per link, Mbit/s (`"a->b": rate`).
    pub estimate_mbps: BTreeMap<String, f64>,
    /// The messages of the measured re-plans, in order.
    pub replan_log: Vec<String>,
    /// Nodes declared lost (names).
    pub lost: Vec<String>,
    /// What happened at each loss.
    pub loss_log: Vec<String>,
}

/// The coordinator task (see the module documentation).
pub struct CoordinatorTask {
    cfg: ClusterConfig,
    cc: ClusterCoordinator,
    /// Per node: the connection its Hello came on (id, stream).
    conns: Vec<Option<(u64, TcpStream)>>,
    rates_mtime: Option<SystemTime>,
    replan_log: Vec<String>,
    /// Losses and the rounds decided after them, for the stats file.
    loss_log: Vec<String>,
    log: LogSink,
    t0: Instant,
    /// `NETSTORM_CP_TRACE=1`: log the estimates every stats interval.
    trace: bool,
}

impl std::fmt::Debug for CoordinatorTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoordinatorTask")
            .field("job", &self.cfg.job)
            .field("coordinator", &self.cc)
            .finish_non_exhaustive()
    }
}

/// The re-planner's tunables from the cluster config.
pub fn replanner_config(cfg: &ClusterConfig) -> ReplannerConfig {
    ReplannerConfig {
        awareness: AwarenessConfig {
            window_ns: cfg.replan.window_ms * 1_000_000,
            change_threshold: cfg.replan.threshold,
            min_replan_interval_ns: cfg.replan.min_interval_ms * 1_000_000,
            ..AwarenessConfig::default()
        },
        settle_ns: cfg.replan.settle_ms * 1_000_000,
        ..ReplannerConfig::default()
    }
}

impl CoordinatorTask {
    /// The coordinator of `cfg`'s cluster, logging to stderr. The rates file as it is now
    /// is part of the prior, not a change.
    pub fn new(cfg: ClusterConfig) -> Result<Self, CoordinatorTaskError> {
        let planner = by_name(&cfg.planner, &PlannerOptions::default()).map_err(|err| {
            CoordinatorTaskError::Planner {
                planner: cfg.planner.clone(),
                err,
            }
        })?;
        let mut log: LogSink = Box::new(|line| eprintln!("netstorm-cp: coordinator: {line}"));
        let mut rates_mtime = None;
        let prior = read_rates_if_changed(&cfg, &mut rates_mtime, &mut log)
            .unwrap_or_else(|| cfg.topology.clone());
        let cc = ClusterCoordinator::new(
            planner,
            cfg.buffer_elems as f64 * 32.0,
            prior,
            replanner_config(&cfg),
            CoordinatorConfig {
                lead_rounds: 2,
                ..CoordinatorConfig::default()
            },
        );
        let cc = match cfg.peer_timeout_ms {
            Some(ms) => cc.with_peer_timeout(ms * 1_000_000),
            None => cc,
        };
        Ok(Self {
            cc,
            conns: (0..cfg.nodes.len()).map(|_| None).collect(),
            rates_mtime,
            replan_log: Vec::new(),
            loss_log: Vec::new(),
            log,
            t0: Instant::now(),
            trace: std::env::var_os("NETSTORM_CP_TRACE").is_some_and(|v| v == "1"),
            cfg,
        })
    }

    /// Sends the log lines to `sink` instead of stderr.
    pub fn with_log(mut self, sink: LogSink) -> Self {
        self.log = sink;
        self
    }

    /// Serves `listener` until the process ends.
    pub fn run(self, listener: TcpListener) -> Result<(), CoordinatorTaskError> {
        self.run_until(listener, &AtomicBool::new(false))
    }

    /// Serves `listener` until `stop` is set (then closes every connection).
    pub fn run_until(
        mut self,
        listener: TcpListener,
        stop: &AtomicBool,
    ) -> Result<(), CoordinatorTaskError> {
        let io = |what| move |source| CoordinatorTaskError::Io { what, source };
        listener.set_nonblocking(true).map_err(io("listener"))?;
        let (tx, rx) = mpsc::channel::<(u64, Wire)>();
        let mut next_conn = 0u64;
        let mut anonymous: Vec<(u64, TcpStream)> = Vec::new();
        let mut next_stats = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            while let Ok((s, _)) = listener.accept() {
                s.set_nonblocking(false).map_err(io("accepting"))?;
                let _ = s.set_nodelay(true);
                next_conn += 1;
                let id = next_conn;
                let mut r = s.try_clone().map_err(io("accepting"))?;
                let tx = tx.clone();
                std::thread::spawn(move || {
                    while let Ok(m) = read_msg(&mut r) {
                        if tx.send((id, m)).is_err() {
                            break;
                        }
                    }
                });
                anonymous.push((id, s));
            }
            let now = self.now();
            while let Ok((id, m)) = rx.try_recv() {
                self.handle_frame(now, id, m, &mut anonymous);
            }
            if let Some(prior) =
                read_rates_if_changed(&self.cfg, &mut self.rates_mtime, &mut self.log)
            {
                (self.log)("replan: the operator's rates file changed");
                self.cc.handle_prior(prior);
            }
            self.cc
                .handle_timeout(now)
                .map_err(CoordinatorTaskError::Plan)?;
            self.log_events();
            while let Some((v, msg)) = self.cc.poll_transmit() {
                self.send(v, msg);
            }
            if Instant::now() >= next_stats {
                next_stats = Instant::now() + Duration::from_millis(100);
                self.write_stats();
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        for (_, s) in anonymous.iter().chain(self.conns.iter().flatten()) {
            let _ = s.shutdown(Shutdown::Both);
        }
        Ok(())
    }

    fn now(&self) -> Nanos {
        self.t0.elapsed().as_nanos() as Nanos + 1
    }

    fn handle_frame(
        &mut self,
        now: Nanos,
        id: u64,
        frame: Wire,
        anonymous: &mut Vec<(u64, TcpStream)>,
    ) {
        match frame {
            Wire::Hello {
                node,
                installed_epoch,
                started_round,
                barrier_epoch,
            } if (node as usize) < self.conns.len() => {
                if let Some(i) = anonymous.iter().position(|(c, _)| *c == id) {
                    let (_, s) = anonymous.swap_remove(i);
                    self.conns[node as usize] = Some((id, s));
                }
                self.cc.handle_hello(
                    now,
                    node,
                    NodeHello {
                        installed_epoch,
                        started_round,
                        barrier_epoch,
                    },
                );
            }
            Wire::Control(msg) => {
                let from = self
                    .conns
                    .iter()
                    .position(|c| c.as_ref().is_some_and(|(c, _)| *c == id));
                if let Some(v) = from {
                    self.cc.handle_control(now, v as NodeId, msg);
                }
            }
            other => (self.log)(&format!("ignored {other:?} from connection {id}")),
        }
    }

    fn send(&mut self, v: NodeId, msg: ControlMsg) {
        if let Some(slot) = self.conns.get_mut(v as usize) {
            if let Some((_, s)) = slot {
                if write_msg(s, &Wire::Control(msg)).is_err() {
                    *slot = None;
                }
            }
        }
    }

    fn log_events(&mut self) {
        while let Some(event) = self.cc.poll_event() {
            match event {
                CoordinatorEvent::Started { base_epoch } => (self.log)(&format!(
                    "every node said hello (epochs continue after {base_epoch})"
                )),
                CoordinatorEvent::Committed {
                    epoch,
                    activate_at_round,
                } => (self.log)(&format!(
                    "epoch {epoch} committed on every node, activates at round {activate_at_round}"
                )),
                CoordinatorEvent::NodeLost { node, members } => {
                    let names: Vec<String> = members.iter().map(|&v| self.name(v)).collect();
                    let line = format!(
                        "node {} lost: its data plane was silent at every other node for {} ms; members now {}",
                        self.name(node),
                        self.cfg.peer_timeout_ms.unwrap_or(0),
                        names.join(", ")
                    );
                    (self.log)(&line);
                    self.loss_log.push(line);
                }
                CoordinatorEvent::RoundDecided { round, outcome } => {
                    let line = match outcome {
                        Outcome::Succeeded => {
                            format!("round {round} (in flight at the loss) succeeded on every survivor")
                        }
                        Outcome::Failed { lost } => format!(
                            "round {round} failed: lost {}; re-planning over the survivors from round {}",
                            lost.iter().map(|&v| self.name(v)).collect::<Vec<_>>().join(", "),
                            round + 1
                        ),
                    };
                    (self.log)(&line);
                    self.loss_log.push(line);
                }
                CoordinatorEvent::Alone { node } => {
                    let line = format!(
                        "only node {} is left: nothing to synchronize with (rounds will fail)",
                        self.name(node)
                    );
                    (self.log)(&line);
                }
                CoordinatorEvent::LostNodeRefused { node, reason } => {
                    let line = format!(
                        "node {} said hello after it was declared lost; refused: {reason}",
                        self.name(node)
                    );
                    (self.log)(&line);
                }
                CoordinatorEvent::RejoinRequested { node } => {
                    let line = format!(
                        "node {} restarted after it was lost and asks to rejoin: admitted at the next round boundary",
                        self.name(node)
                    );
                    (self.log)(&line);
                }
                CoordinatorEvent::NodeRejoined { node, members } => {
                    let names: Vec<String> = members.iter().map(|&v| self.name(v)).collect();
                    let line = format!(
                        "node {} rejoins: the next policy admits it; members now {}",
                        self.name(node),
                        names.join(", ")
                    );
                    (self.log)(&line);
                    self.loss_log.push(line);
                }
                CoordinatorEvent::Proposed(p) => {
                    for c in &p.changed_links {
                        let line = format!(
                            "estimate of link {} changed from {:.1} to {:.1} Mbit/s",
                            self.link_name(c.from, c.to),
                            c.planned_bps / 1e6,
                            c.estimated_bps / 1e6
                        );
                        (self.log)(&format!("replan: {line}"));
                        self.replan_log.push(line);
                    }
                    let why = match &p.trigger {
                        Trigger::FirstPolicy => "initial plan",
                        Trigger::NewPrior => "rates file",
                        Trigger::MeasuredChange => "measured change",
                        Trigger::Requested(reason) => reason.as_str(),
                    };
                    let line = match &p.refused {
                        None => format!(
                            "proposing epoch {} ({why}) with planner {}: {} tree(s), activates at round {}",
                            p.epoch,
                            self.cc.replanner().planner().name(),
                            p.trees,
                            p.activate_at_round
                        ),
                        Some(e) => format!("proposal refused: {e}"),
                    };
                    (self.log)(&line);
                }
            }
        }
    }

    fn name(&self, v: NodeId) -> String {
        self.cfg
            .nodes
            .get(v as usize)
            .map_or_else(|| v.to_string(), |n| n.name.clone())
    }

    fn link_name(&self, from: NodeId, to: NodeId) -> String {
        let name = |v: NodeId| {
            self.cfg
                .nodes
                .get(v as usize)
                .map_or_else(|| v.to_string(), |n| n.name.clone())
        };
        format!("{}->{}", name(from), name(to))
    }

    /// The counters as the counters file holds them.
    pub fn stats(&self) -> CoordStats {
        let c = self.cc.counters();
        let model = self.cc.replanner().estimator().model();
        CoordStats {
            proposals: c.proposals,
            commits: c.commits,
            aborts: c.aborts,
            retries: c.retries,
            gave_up: c.gave_up,
            replans_measured: c.replans_measured,
            replans_rates_file: c.replans_prior,
            telemetry_accepted: c.telemetry_accepted,
            telemetry_rejected: c.telemetry_rejected,
            committed_epoch: c.committed_epoch,
            estimate_mbps: model
                .topology
                .links
                .iter()
                .map(|l| {
                    (
                        self.link_name(l.from, l.to),
                        (l.rate_bps / 1e4).round() / 100.0,
                    )
                })
                .collect(),
            replan_log: self.replan_log.clone(),
            lost: self
                .cc
                .peer_loss()
                .map(|l| l.lost().iter().map(|&v| self.name(v)).collect())
                .unwrap_or_default(),
            loss_log: self.loss_log.clone(),
        }
    }

    fn write_stats(&mut self) {
        let stats = self.stats();
        if self.trace {
            let line = format!(
                "t={:.2}s estimate_mbps {:?}",
                self.now() as f64 / 1e9,
                stats.estimate_mbps
            );
            (self.log)(&line);
        }
        let path = self
            .cfg
            .shm_dir
            .join(format!("netstorm-{}.coordinator.json", self.cfg.job));
        if let Ok(json) = serde_json::to_string(&stats) {
            let tmp = path.with_extension("json.tmp");
            if std::fs::write(&tmp, json).is_ok() {
                let _ = std::fs::rename(&tmp, &path);
            }
        }
    }
}

/// The rates file's topology, when the file changed since `last_mtime` (a bad file is
/// logged and ignored).
fn read_rates_if_changed(
    cfg: &ClusterConfig,
    last_mtime: &mut Option<SystemTime>,
    log: &mut LogSink,
) -> Option<Topology> {
    let path = cfg.rates_file.as_ref()?;
    let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok()?;
    if *last_mtime == Some(mtime) {
        return None;
    }
    *last_mtime = Some(mtime);
    match RatesFile::load(path)
        .map_err(|e| e.to_string())
        .and_then(|r| r.apply(&cfg.topology))
    {
        Ok(t) => Some(t),
        Err(e) => {
            log(&format!("rates file ignored: {e}"));
            None
        }
    }
}
