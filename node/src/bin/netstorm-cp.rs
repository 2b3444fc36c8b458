//! `netstorm-cp`: the control plane of one node; the one named in `[coordinator]` also runs
//! the coordinator.
//!
//! Every cp attaches to its dp's rings and node file (waiting for the dp to create them;
//! refusing a ring file of the wrong version or size), connects to the coordinator over TCP
//! and runs the node's side of the project's two-phase epoch protocol
//! ([`netstorm_controlplane::coordinator::NodeAgent`]): a heartbeat whenever the dp starts a
//! new round, Prepare → the agent's start barrier published to the dp through the node file
//! (then PrepareAck, or PrepareNack if the dp already started the activation round), Commit
//! → the policy pushed through the shared-memory policy ring (then CommitAck) and the barrier
//! held until the dp reports the epoch installed, Abort → barrier lifted. It also ships the
//! dp's link-rate estimates from the telemetry ring as `ControlMsg::Telemetry`.
//!
//! Killing a cp does not disturb its dp: without a barrier the dp keeps running its committed
//! policy. If the cp dies while an activation is undecided, its barrier stays in the node
//! file and the dp waits at that round; a restarted cp inherits the barrier and lifts it when
//! the coordinator's resent Commit (with Prepare) or Abort reaches it, or when the dp holds
//! the epoch.
//!
//! The coordinator ([`netstorm_controlplane::coordinator::Coordinator`]) waits for every
//! node's Hello, plans the first policy from the config's links with the configured planner
//! and installs it at round 0; then it feeds the telemetry into a
//! [`netstorm_controlplane::awareness::NetworkEstimator`] and re-plans on the learned model
//! when `should_replan` says so (after `replan_settle_ms`, only when `may_propose`, activating
//! at `safe_activation_round`). The operator's `rates_file`, when it changes, replaces the
//! estimator's prior and re-plans at once.

use anyhow::{bail, Context};
use clap::Parser;
use netstorm_controlplane::awareness::{AwarenessConfig, LinkSample, NetworkEstimator};
use netstorm_controlplane::coordinator::{ControlMsg, Coordinator, CoordinatorConfig, NodeAgent};
use netstorm_controlplane::planner::{by_name, Planner, PlannerOptions};
use netstorm_dataplane::policy::PolicyBuilder;
use netstorm_dataplane::shm::{RingConfig, ShmError, ShmProducer, ShmRegion};
use netstorm_dataplane::shm_records::{PolicyRecord, TelemetryRecord};
use netstorm_dataplane::topology::Topology;
use netstorm_dataplane::{Nanos, NodeId};
use netstorm_node::config::{ClusterConfig, RatesFile};
use netstorm_node::nodefile::{NodeFile, NodeFileError, NO_BARRIER};
use netstorm_node::proto::{parse_link_record, read_msg, write_msg, Wire};
use netstorm_node::sys;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

#[derive(Debug, Parser)]
#[command(name = "netstorm-cp", about = "NetStorm control plane for one node")]
struct Args {
    /// Cluster config (TOML).
    #[arg(long)]
    config: PathBuf,
    /// This node's name in the config.
    #[arg(long)]
    node: String,
    /// How long to wait for the dp to create its rings and node file.
    #[arg(long, default_value_t = 30.0)]
    attach_timeout_s: f64,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("netstorm-cp: error: {e:#}");
        std::process::exit(1);
    }
}

/// Waits for a file the dp creates; other errors are final.
fn wait_for<T, E: std::fmt::Display>(
    deadline: Instant,
    what: &str,
    mut f: impl FnMut() -> Result<T, E>,
    retry: impl Fn(&E) -> bool,
) -> anyhow::Result<T> {
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if retry(&e) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => bail!("{what}: {e}"),
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let cfg = ClusterConfig::load(&args.config)?;
    let me = cfg.node(&args.node)?.clone();
    sys::catch_termination_signals();
    let deadline = Instant::now() + Duration::from_secs_f64(args.attach_timeout_s);
    let not_found = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    let region = wait_for(
        deadline,
        "attaching to the dp's rings",
        || ShmRegion::attach(cfg.ring_path(&me.name), RingConfig::default()),
        |e| {
            // An empty file: the dp created it and has not locked it for initialising yet.
            matches!(e, ShmError::Io { source, .. } if not_found(source))
                || matches!(
                    e,
                    ShmError::Busy { .. }
                        | ShmError::NotReady { .. }
                        | ShmError::Truncated { len: 0, .. }
                )
        },
    )?;
    let node_file = wait_for(
        deadline,
        "opening the node file",
        || {
            NodeFile::open(
                &cfg.node_file_path(&me.name),
                cfg.buffer_elems,
                Some(me.cores.len()),
            )
        },
        |e| {
            // Incomplete: the dp created the file and has not sized it yet (was fatal: a cp
            // started alongside its dp could die here, leaving the cluster without a policy).
            matches!(e, NodeFileError::Io { source, .. } if not_found(source))
                || matches!(
                    e,
                    NodeFileError::BadMagic { .. } | NodeFileError::Incomplete { .. }
                )
        },
    )?;
    // A killed predecessor's claim is taken over; a live one's is refused (retry briefly: it
    // may still be exiting).
    let mut policy_tx = wait_for(
        deadline,
        "policy ring",
        || region.policy_producer(),
        |e| matches!(e, ShmError::RoleTaken { .. }),
    )?;
    let mut telemetry_rx = wait_for(
        deadline,
        "telemetry ring",
        || region.telemetry_consumer(),
        |e| matches!(e, ShmError::RoleTaken { .. }),
    )?;
    if me.id == cfg.coordinator {
        let listener = TcpListener::bind(cfg.coordinator_addr())
            .with_context(|| format!("coordinator: binding {}", cfg.coordinator_addr()))?;
        let ccfg = cfg.clone();
        std::thread::Builder::new()
            .name("coordinator".into())
            .spawn(move || {
                if let Err(e) = CoordTask::new(ccfg).and_then(|c| c.run(listener)) {
                    eprintln!("netstorm-cp: coordinator: error: {e:#}");
                    std::process::exit(1);
                }
            })?;
    }
    eprintln!(
        "netstorm-cp: node '{}' attached to {} (generation {}), coordinator {}",
        me.name,
        region.path().display(),
        region.generation(),
        cfg.coordinator_addr()
    );

    let mut agent = NodeAgent::new(me.id, node_file.installed_epoch() as u32);
    // A barrier left by a predecessor cp that died while an activation was undecided.
    let mut inherited: Option<(u64, u32)> = (node_file.barrier() != NO_BARRIER)
        .then(|| (node_file.barrier(), node_file.barrier_epoch() as u32));
    if let Some((at, e)) = inherited {
        eprintln!("netstorm-cp: inherited a start barrier at round {at} for epoch {e}; holding it until the coordinator decides");
    }
    let mut gate = Gate {
        published: inherited,
        ..Gate::default()
    };
    let mut conn: Option<TcpStream> = None;
    // `(connection, None)`: that connection's reader ended (EOF or error).
    let (in_tx, in_rx) = mpsc::channel::<(u64, Option<Wire>)>();
    let mut conn_gen = 0u64;
    let mut last_started: Option<u32> = None;
    let mut last_hb_at = Instant::now();
    let mut samples: Vec<LinkSample> = Vec::new();
    let mut last_telemetry = Instant::now();
    let mut next_connect = Instant::now();
    let mut tbuf = [0u8; 256];
    loop {
        if let Some(sig) = sys::take_signal() {
            eprintln!("netstorm-cp: signal {sig}, exiting (the dp keeps running)");
            return Ok(());
        }
        if conn.is_none() && Instant::now() >= next_connect {
            next_connect = Instant::now() + Duration::from_millis(100);
            if let Ok(s) =
                TcpStream::connect_timeout(&cfg.coordinator_addr(), Duration::from_secs(1))
            {
                let _ = s.set_nodelay(true);
                conn_gen += 1;
                let mut r = s.try_clone()?;
                let tx = in_tx.clone();
                let gen = conn_gen;
                std::thread::spawn(move || {
                    while let Ok(m) = read_msg(&mut r) {
                        if tx.send((gen, Some(m))).is_err() {
                            return;
                        }
                    }
                    let _ = tx.send((gen, None));
                });
                let mut w = s;
                let hello = Wire::Hello {
                    node: me.id,
                    installed_epoch: node_file.installed_epoch() as u32,
                    started_round: node_file.started_round(),
                    barrier_epoch: gate.published.map(|(_, e)| e),
                };
                if write_msg(&mut w, &hello).is_ok() {
                    conn = Some(w);
                    last_started = None;
                }
            }
        }
        let mut out: Vec<ControlMsg> = Vec::new();
        // Rounds the dp started: heartbeats (and the agent's knowledge for Nacks).
        let mut sync_started = |agent: &mut NodeAgent, out: &mut Vec<ControlMsg>| {
            if let Some(r) = node_file.started_round() {
                if last_started != Some(r) || last_hb_at.elapsed() > Duration::from_millis(500) {
                    last_started = Some(r);
                    last_hb_at = Instant::now();
                    out.push(agent.started(r));
                }
            }
        };
        sync_started(&mut agent, &mut out);
        while let Ok((gen, m)) = in_rx.try_recv() {
            if gen != conn_gen {
                continue;
            }
            // A connection that can no longer deliver the coordinator's messages is replaced
            // at once (a fresh Hello; the coordinator resends what is unacknowledged). Before
            // the first round a cp writes nothing, so a failed write would never notice it.
            let Some(m) = m else {
                if conn.take().is_some() {
                    eprintln!("netstorm-cp: the coordinator closed the connection; reconnecting");
                }
                continue;
            };
            let Wire::Control(msg) = m else { continue };
            match msg {
                ControlMsg::Prepare {
                    epoch,
                    activate_at_round,
                    ..
                } => {
                    // Close the gate first, then look at what the dp started: either the dp
                    // sees the barrier or we see its start (and Nack).
                    gate.publish(&node_file, &agent, Some((activate_at_round as u64, epoch)));
                    sync_started(&mut agent, &mut out);
                    let reply = agent.handle(msg);
                    if matches!(reply, Some(ControlMsg::PrepareAck { .. })) {
                        gate.prepared_epoch = epoch;
                    }
                    gate.publish(&node_file, &agent, None);
                    out.extend(reply);
                }
                ControlMsg::Commit { epoch, .. } => {
                    let reply = agent.handle(msg);
                    while let Some((policy, at)) = agent.take_install() {
                        let e = policy.epoch;
                        let rec = PolicyRecord {
                            epoch: e,
                            activate_round: at as u64,
                            policy: serde_json::to_vec(&policy)?,
                        };
                        push_policy(&mut policy_tx, &rec)?;
                        eprintln!("netstorm-cp: epoch {e} committed (activates at round {at}); pushed to the policy ring");
                        gate.installing.push((e, at));
                    }
                    if gate.inherited_is(epoch) && reply.is_some() {
                        inherited = None;
                        gate.inherited = None;
                    }
                    gate.publish(&node_file, &agent, None);
                    // Acknowledged only once the policy is in the ring (it survives us).
                    out.extend(reply);
                }
                ControlMsg::Abort { epoch } => {
                    let reply = agent.handle(msg);
                    if gate.inherited_is(epoch) {
                        inherited = None;
                        gate.inherited = None;
                    }
                    gate.publish(&node_file, &agent, None);
                    out.extend(reply);
                }
                other => out.extend(agent.handle(other)),
            }
        }
        // Committed policies the dp now holds lift their barrier.
        let installed = node_file.installed_epoch() as u32;
        gate.installing.retain(|&(e, _)| installed < e);
        if inherited.is_some_and(|(_, e)| installed >= e) {
            inherited = None;
        }
        gate.inherited = inherited;
        gate.publish(&node_file, &agent, None);
        // Telemetry ring → coordinator (batched).
        while let Ok(Some(n)) = telemetry_rx.try_pop(&mut tbuf) {
            let Some(e) = TelemetryRecord::parse(&tbuf[..n])
                .ok()
                .as_ref()
                .and_then(parse_link_record)
            else {
                continue;
            };
            samples.push(LinkSample {
                from: e.from,
                to: e.to,
                at: e.at,
                rate_bps: Some(e.bps),
                app_limited: e.lower_bound,
                rtt_ns: (e.rtt_ns > 0).then_some(e.rtt_ns),
                sent: 0,
                lost: 0,
            });
        }
        if !samples.is_empty() && last_telemetry.elapsed() > Duration::from_millis(200) {
            last_telemetry = Instant::now();
            out.push(ControlMsg::Telemetry {
                node: me.id,
                samples: std::mem::take(&mut samples),
            });
        }
        if let Some(c) = conn.as_mut() {
            for m in out {
                if write_msg(c, &Wire::Control(m)).is_err() {
                    eprintln!("netstorm-cp: lost the coordinator; reconnecting");
                    conn = None;
                    break;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The start barrier this cp publishes to its dp: the earliest of the agent's undecided
/// activation, committed activations whose policy the dp does not hold yet, and a barrier
/// inherited from a predecessor.
#[derive(Debug, Default)]
struct Gate {
    prepared_epoch: u32,
    /// Committed `(epoch, activation round)` not yet installed by the dp.
    installing: Vec<(u32, u32)>,
    inherited: Option<(u64, u32)>,
    published: Option<(u64, u32)>,
}

impl Gate {
    fn inherited_is(&self, epoch: u32) -> bool {
        self.inherited.is_some_and(|(_, e)| e == epoch)
    }

    fn publish(&mut self, nf: &NodeFile, agent: &NodeAgent, tentative: Option<(u64, u32)>) {
        let want = agent
            .barrier()
            .map(|at| (at as u64, self.prepared_epoch))
            .into_iter()
            .chain(self.installing.iter().map(|&(e, at)| (at as u64, e)))
            .chain(self.inherited)
            .chain(tentative)
            .min_by_key(|&(at, _)| at);
        if want != self.published {
            nf.set_barrier(want);
            self.published = want;
        }
    }
}

/// Pushes a policy through the ring (chunked), waiting up to 5 s for room.
fn push_policy(tx: &mut ShmProducer, rec: &PolicyRecord) -> anyhow::Result<()> {
    for chunk in rec.chunks(tx.max_payload())? {
        let t0 = Instant::now();
        loop {
            match tx.try_push(&chunk) {
                Ok(()) => break,
                Err(_) if t0.elapsed() < Duration::from_secs(5) => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => bail!("policy ring: {e} (is the dp consuming?)"),
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The coordinator.

/// What a node said in its Hello.
#[derive(Debug, Clone, Copy)]
struct HelloInfo {
    installed_epoch: u32,
    started_round: Option<u32>,
    barrier_epoch: Option<u32>,
}

/// The coordinator's counters file (`<shm_dir>/netstorm-<job>.coordinator.json`).
#[derive(Debug, Default, serde::Serialize)]
struct CoordStats {
    proposals: u64,
    commits: u64,
    aborts: u64,
    retries: u64,
    gave_up: u64,
    /// Re-plans triggered by the measured network (the estimator's change detection).
    replans_measured: u64,
    /// Re-plans triggered by the operator's rates file.
    replans_rates_file: u64,
    telemetry_accepted: u64,
    telemetry_rejected: u64,
    committed_epoch: u32,
    /// Current estimate per link, Mbit/s (`"a->b": rate`).
    estimate_mbps: std::collections::BTreeMap<String, f64>,
    /// The messages of the measured re-plans, in order.
    replan_log: Vec<String>,
}

struct CoordTask {
    cfg: ClusterConfig,
    planner: Box<dyn Planner>,
    builder: PolicyBuilder,
    conns: Vec<Option<(u64, TcpStream)>>,
    hellos: Vec<Option<HelloInfo>>,
    coord: Option<Coordinator>,
    est: NetworkEstimator,
    awareness: AwarenessConfig,
    /// Link rates the plan in force was made with.
    planned_bps: Vec<f64>,
    change_seen_at: Option<Nanos>,
    rates_mtime: Option<SystemTime>,
    last_initial_try: Option<Nanos>,
    last_committed: Option<(u32, u32)>,
    stats: CoordStats,
    t0: Instant,
    /// `NETSTORM_CP_TRACE=1`: print the estimates every stats interval.
    trace: bool,
}

impl CoordTask {
    fn new(cfg: ClusterConfig) -> anyhow::Result<Self> {
        let planner = by_name(&cfg.planner, &PlannerOptions::default())?;
        let awareness = AwarenessConfig {
            window_ns: cfg.replan.window_ms * 1_000_000,
            change_threshold: cfg.replan.threshold,
            min_replan_interval_ns: cfg.replan.min_interval_ms * 1_000_000,
            ..AwarenessConfig::default()
        };
        let n = cfg.nodes.len();
        Ok(Self {
            planner,
            builder: PolicyBuilder::new(),
            conns: (0..n).map(|_| None).collect(),
            hellos: vec![None; n],
            coord: None,
            est: NetworkEstimator::new(cfg.topology.clone(), awareness.clone()),
            planned_bps: cfg.topology.links.iter().map(|l| l.rate_bps).collect(),
            awareness,
            change_seen_at: None,
            rates_mtime: None,
            last_initial_try: None,
            last_committed: None,
            stats: CoordStats::default(),
            t0: Instant::now(),
            trace: std::env::var_os("NETSTORM_CP_TRACE").is_some_and(|v| v == "1"),
            cfg,
        })
    }

    fn now(&self) -> Nanos {
        self.t0.elapsed().as_nanos() as Nanos + 1
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

    /// Plans on the estimator's model and proposes it from `at`.
    fn propose(&mut self, now: Nanos, at: u32, why: &str) -> anyhow::Result<()> {
        let coord = self.coord.as_mut().expect("coordinator running");
        let net = self.est.model();
        let plan = self
            .planner
            .plan(&net, self.cfg.buffer_elems as f64 * 32.0)
            .context("planning")?;
        let epoch = coord.newest_epoch() + 1;
        let policy = plan.to_policy(&mut self.builder, &net, epoch);
        let trees = policy.trees.len();
        match coord.propose(now, policy, at) {
            Ok(()) => {
                self.stats.proposals += 1;
                eprintln!(
                    "netstorm-cp: coordinator: proposing epoch {epoch} ({why}) with planner {}: {trees} tree(s), activates at round {at}",
                    self.planner.name()
                );
            }
            Err(e) => eprintln!("netstorm-cp: coordinator: proposal refused: {e}"),
        }
        self.planned_bps = net.topology.links.iter().map(|l| l.rate_bps).collect();
        self.est.mark_planned(now);
        Ok(())
    }

    /// Links whose estimate moved past the threshold since the plan in force.
    fn changed_links(&self) -> Vec<String> {
        let model = self.est.model();
        model
            .topology
            .links
            .iter()
            .zip(&self.planned_bps)
            .filter(|(l, &p)| {
                p > 0.0 && (l.rate_bps - p).abs() / p > self.awareness.change_threshold
            })
            .map(|(l, &p)| {
                format!(
                    "estimate of link {} changed from {:.1} to {:.1} Mbit/s",
                    self.link_name(l.from, l.to),
                    p / 1e6,
                    l.rate_bps / 1e6
                )
            })
            .collect()
    }

    fn rates_changed(&mut self) -> Option<Topology> {
        let path = self.cfg.rates_file.clone()?;
        let mtime = std::fs::metadata(&path).and_then(|m| m.modified()).ok()?;
        if self.rates_mtime == Some(mtime) {
            return None;
        }
        self.rates_mtime = Some(mtime);
        match RatesFile::load(&path)
            .map_err(|e| e.to_string())
            .and_then(|r| r.apply(&self.cfg.topology))
        {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("netstorm-cp: coordinator: rates file ignored: {e}");
                None
            }
        }
    }

    fn send(&mut self, v: NodeId, msg: ControlMsg) {
        if let Some(Some((_, s))) = self.conns.get_mut(v as usize) {
            if write_msg(s, &Wire::Control(msg)).is_err() {
                self.conns[v as usize] = None;
            }
        }
    }

    fn step(&mut self, now: Nanos) -> anyhow::Result<()> {
        let n = self.cfg.nodes.len();
        if self.coord.is_none() {
            if !self.hellos.iter().all(Option::is_some) {
                return Ok(());
            }
            // Epochs continue past anything a node holds or waits for (coordinator restart).
            let base = self
                .hellos
                .iter()
                .flatten()
                .map(|h| h.installed_epoch.max(h.barrier_epoch.unwrap_or(0)))
                .max()
                .unwrap_or(0);
            let ccfg = CoordinatorConfig {
                lead_rounds: 2,
                ..CoordinatorConfig::default()
            };
            let mut c = Coordinator::new(n, base, ccfg);
            for (v, h) in self.hellos.iter().enumerate() {
                if let Some(r) = h.and_then(|h| h.started_round) {
                    c.handle(
                        now,
                        v as NodeId,
                        ControlMsg::Heartbeat {
                            node: v as NodeId,
                            round: r,
                        },
                    );
                }
            }
            self.coord = Some(c);
            eprintln!(
                "netstorm-cp: coordinator: every node said hello (epochs continue after {base})"
            );
        }
        let coord = self.coord.as_mut().expect("set above");
        while let Some((_, samples)) = coord.poll_telemetry() {
            for s in &samples {
                match self.est.ingest(now, s) {
                    Ok(()) => self.stats.telemetry_accepted += 1,
                    Err(_) => self.stats.telemetry_rejected += 1,
                }
            }
        }
        if coord.poll_timeout().is_some_and(|d| d <= now) {
            coord.handle_timeout(now);
        }
        if coord.committed() != self.last_committed {
            self.last_committed = coord.committed();
            if let Some((e, at)) = self.last_committed {
                eprintln!("netstorm-cp: coordinator: epoch {e} committed on every node, activates at round {at}");
            }
        }
        let first = coord.committed().is_none();
        let at = match coord.newest_round() {
            None => 0,
            Some(_) => coord.safe_activation_round(),
        };
        let idle = !coord.deciding() && coord.may_propose();
        if first {
            // The first policy (again, if a proposal was given up after its retries).
            let due = match self.last_initial_try {
                None => true,
                Some(t) => now >= t + 1_000_000_000,
            };
            if idle && due {
                self.last_initial_try = Some(now);
                self.propose(now, at, "initial plan")?;
            }
        } else if let Some(prior) = self.rates_changed() {
            if self.rates_mtime.is_some() && idle {
                eprintln!("netstorm-cp: coordinator: replan: the operator's rates file changed");
                self.est = NetworkEstimator::new(prior, self.awareness.clone());
                self.stats.replans_rates_file += 1;
                self.propose(now, at, "rates file")?;
            }
        } else {
            // Learned knowledge: wait `settle` after the first sign of a change so one plan
            // covers related changes, then plan on what was measured.
            if self.est.should_replan(now) {
                self.change_seen_at.get_or_insert(now);
            } else {
                self.change_seen_at = None;
            }
            let settled = self
                .change_seen_at
                .is_some_and(|c| now >= c + self.cfg.replan.settle_ms * 1_000_000);
            if settled && idle {
                self.change_seen_at = None;
                let changes = self.changed_links();
                for c in &changes {
                    eprintln!("netstorm-cp: coordinator: replan: {c}");
                    self.stats.replan_log.push(c.clone());
                }
                self.stats.replans_measured += 1;
                self.propose(now, at, "measured change")?;
            }
        }
        let coord = self.coord.as_mut().expect("set above");
        let mut out = Vec::new();
        while let Some(m) = coord.poll_transmit() {
            out.push(m);
        }
        for (v, m) in out {
            self.send(v, m);
        }
        Ok(())
    }

    fn write_stats(&mut self) {
        if let Some(c) = &self.coord {
            self.stats.commits = c.counters.committed;
            self.stats.aborts = c.counters.aborted;
            self.stats.retries = c.counters.retries;
            self.stats.gave_up = c.counters.gave_up;
            self.stats.committed_epoch = c.committed().map_or(0, |(e, _)| e);
        }
        let model = self.est.model();
        self.stats.estimate_mbps = model
            .topology
            .links
            .iter()
            .map(|l| {
                (
                    self.link_name(l.from, l.to),
                    (l.rate_bps / 1e4).round() / 100.0,
                )
            })
            .collect();
        if self.trace {
            eprintln!(
                "netstorm-cp: coordinator: t={:.2}s estimate_mbps {:?}",
                self.now() as f64 / 1e9,
                self.stats.estimate_mbps
            );
        }
        let path = self
            .cfg
            .shm_dir
            .join(format!("netstorm-{}.coordinator.json", self.cfg.job));
        if let Ok(json) = serde_json::to_string(&self.stats) {
            let tmp = path.with_extension("json.tmp");
            if std::fs::write(&tmp, json).is_ok() {
                let _ = std::fs::rename(&tmp, &path);
            }
        }
    }

    fn run(mut self, listener: TcpListener) -> anyhow::Result<()> {
        listener.set_nonblocking(true)?;
        // The rates file as it is at start is part of the prior, not a change.
        if let Some(t) = self.rates_changed() {
            self.est = NetworkEstimator::new(t, self.awareness.clone());
            self.planned_bps = self
                .est
                .model()
                .topology
                .links
                .iter()
                .map(|l| l.rate_bps)
                .collect();
        }
        let (tx, rx) = mpsc::channel::<(u64, Wire)>();
        let mut next_conn = 0u64;
        let mut anonymous: Vec<(u64, TcpStream)> = Vec::new();
        let n = self.cfg.nodes.len();
        let mut next_stats = Instant::now();
        loop {
            while let Ok((s, _)) = listener.accept() {
                s.set_nonblocking(false)?;
                let _ = s.set_nodelay(true);
                next_conn += 1;
                let id = next_conn;
                let mut r = s.try_clone()?;
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
                match m {
                    Wire::Hello {
                        node,
                        installed_epoch,
                        started_round,
                        barrier_epoch,
                    } if (node as usize) < n => {
                        let v = node as usize;
                        if let Some(i) = anonymous.iter().position(|(c, _)| *c == id) {
                            let (_, s) = anonymous.swap_remove(i);
                            self.conns[v] = Some((id, s));
                        }
                        self.hellos[v] = Some(HelloInfo {
                            installed_epoch,
                            started_round,
                            barrier_epoch,
                        });
                        if let (Some(c), Some(r)) = (self.coord.as_mut(), started_round) {
                            c.handle(now, node, ControlMsg::Heartbeat { node, round: r });
                        }
                    }
                    Wire::Control(msg) => {
                        let Some(v) = self
                            .conns
                            .iter()
                            .position(|c| c.as_ref().is_some_and(|(c, _)| *c == id))
                        else {
                            continue;
                        };
                        let Some(c) = self.coord.as_mut() else {
                            continue;
                        };
                        let msg = match msg {
                            // The node's clock is not ours: the newest sample of a batch is
                            // taken as of its arrival, the others keep their spacing.
                            ControlMsg::Telemetry { node, mut samples } => {
                                let newest = samples.iter().map(|s| s.at).max().unwrap_or(0);
                                for s in &mut samples {
                                    s.at = now.saturating_sub(newest - s.at);
                                }
                                ControlMsg::Telemetry { node, samples }
                            }
                            other => other,
                        };
                        c.handle(now, v as NodeId, msg);
                    }
                    other => {
                        eprintln!(
                            "netstorm-cp: coordinator: ignored {other:?} from connection {id}"
                        )
                    }
                }
            }
            self.step(now)?;
            if Instant::now() >= next_stats {
                next_stats = Instant::now() + Duration::from_millis(100);
                self.write_stats();
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}
