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
//! dp's link-rate estimates from the telemetry ring as `ControlMsg::Telemetry`. A Prepare
//! that admits lost nodes back (`joined`, issue 19) becomes, at its Commit and before the
//! policy reaches the dp, the node file's join words (and a rejoined node's first round).
//! A cp refused by the coordinator (its node was lost and came back without restarting its
//! dp) logs why.
//!
//! Killing a cp does not disturb its dp: without a barrier the dp keeps running its committed
//! policy. If the cp dies while an activation is undecided, its barrier stays in the node
//! file and the dp waits at that round; a restarted cp inherits the barrier and lifts it when
//! the coordinator's resent Commit (with Prepare) or Abort reaches it, or when the dp holds
//! the epoch.
//!
//! The coordinator runs on a thread of its own ([`netstorm_node::coordinator_task`]): it
//! waits for every node's Hello, plans the first policy from the config's links with the
//! configured planner and installs it at round 0; then it learns from the telemetry and
//! re-plans on measured changes (after `replan_settle_ms`), or at once when the operator's
//! `rates_file` changes ([`netstorm_controlplane::replanner`]).

use anyhow::{bail, Context};
use clap::Parser;
use netstorm_controlplane::awareness::LinkSample;
use netstorm_controlplane::coordinator::{ControlMsg, NodeAgent};
use netstorm_dataplane::shm::{RingConfig, ShmError, ShmProducer, ShmRegion};
use netstorm_dataplane::shm_records::{PolicyRecord, TelemetryRecord};
use netstorm_node::config::ClusterConfig;
use netstorm_node::coordinator_task::CoordinatorTask;
use netstorm_node::loss_agent::LossAgent;
use netstorm_node::metrics::{self, SharedCpMetrics};
use netstorm_node::nodefile::{NodeFile, NodeFileError, NodeSet, NO_BARRIER};
use netstorm_node::proto::{parse_link_record, parse_peer_record, read_msg, write_msg, Wire};
use netstorm_node::sys;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

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

/// How often the cp checks that its dp still serves the node file.
const SERVED_CHECK_EVERY: Duration = Duration::from_millis(250);

/// Why [`run`] returned.
enum Exit {
    /// A termination signal.
    Signal,
    /// The node file is no longer served: the dp died or a new dp replaced it.
    DpGone,
}

fn main() {
    match run() {
        Ok(Exit::Signal) => {}
        Ok(Exit::DpGone) => {
            // Start over in this process (same pid, so scripts and supervisors keep their
            // handle): the fresh start waits for a live dp and attaches to it. Every ring
            // claim and mapping was dropped when `run` returned; sockets are close-on-exec.
            use std::os::unix::process::CommandExt;
            let exe = std::env::current_exe();
            let err = match exe {
                Ok(exe) => std::process::Command::new(exe)
                    .args(std::env::args_os().skip(1))
                    .exec(),
                Err(e) => e,
            };
            eprintln!("netstorm-cp: error: restarting after the dp went away: {err}");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("netstorm-cp: error: {e:#}");
            std::process::exit(1);
        }
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

fn run() -> anyhow::Result<Exit> {
    let args = Args::parse();
    let cfg = ClusterConfig::load(&args.config)?;
    // Real hosts never run on keys derived from the public job id (issue 20).
    cfg.require_secret()?;
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
    // Only a node file a live dp serves: one left by a dead dp (the whole node restarting)
    // is waited out until the new dp replaces it. (A ring file left by a dead dp is fine:
    // the new dp keeps a mapped ring file's layout and takes over the dead claims.)
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
        NodeFileError::is_dp_pending,
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
        let listener = TcpListener::bind(cfg.coordinator_bind_addr())
            .with_context(|| format!("coordinator: binding {}", cfg.coordinator_bind_addr()))?;
        let ccfg = cfg.clone();
        std::thread::Builder::new()
            .name("coordinator".into())
            .spawn(move || {
                if let Err(e) = CoordinatorTask::new(ccfg).and_then(|c| c.run(listener)) {
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

    let metrics: SharedCpMetrics = Default::default();
    if let Some(addr) = me.metrics {
        metrics::serve(addr, cfg.clone(), me.name.clone(), metrics.clone())?;
        eprintln!("netstorm-cp: metrics at http://{addr}/metrics");
    }
    let node_name = |id: u16| {
        cfg.nodes
            .get(usize::from(id))
            .map_or_else(|| id.to_string(), |n| n.name.clone())
    };
    let mut agent = NodeAgent::new(me.id, node_file.installed_epoch() as u32);
    // Epochs prepared with rejoining nodes (`Prepare::joined`), until they commit.
    let mut joins: Vec<(u32, NodeSet)> = Vec::new();
    let mut loss = LossAgent::new(me.id);
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
    let mut last_silences = Instant::now();
    let mut next_connect = Instant::now();
    let mut tbuf = [0u8; 256];
    let mut next_served_check = Instant::now() + SERVED_CHECK_EVERY;
    loop {
        if let Some(sig) = sys::take_signal() {
            eprintln!("netstorm-cp: signal {sig}, exiting (the dp keeps running)");
            return Ok(Exit::Signal);
        }
        if Instant::now() >= next_served_check {
            next_served_check = Instant::now() + SERVED_CHECK_EVERY;
            if !node_file.is_served() {
                eprintln!(
                    "netstorm-cp: netstorm-dp (pid {}) is gone or was replaced; starting over to attach to a live one",
                    node_file.dp_pid()
                );
                return Ok(Exit::DpGone);
            }
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
            if loss.handle(&node_file, &msg) {
                if let ControlMsg::Decide { round, lost } = &msg {
                    if lost.is_empty() {
                        eprintln!("netstorm-cp: round {round} (frozen after a loss) succeeded");
                    } else {
                        let names: Vec<String> = lost.iter().map(|&v| node_name(v)).collect();
                        eprintln!(
                            "netstorm-cp: round {round} failed: lost {}",
                            names.join(", ")
                        );
                    }
                }
                continue;
            }
            match msg {
                ControlMsg::Prepare {
                    epoch,
                    activate_at_round,
                    ref joined,
                    ..
                } => {
                    if !joined.is_empty() {
                        joins.retain(|&(e, _)| e + 8 > epoch);
                        joins.push((epoch, joined.iter().copied().collect()));
                    }
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
                        if let Some(&(_, joined)) = joins.iter().find(|&&(je, _)| je == e) {
                            // Before the policy reaches the dp, so before the barrier at
                            // `at` lifts: no round from `at` on starts without the trainer
                            // knowing (see nodefile).
                            if joined.contains(me.id) {
                                node_file.set_first_round(at as u64);
                            }
                            let members: NodeSet = match &policy.members {
                                Some(m) => m.iter().copied().collect(),
                                None => NodeSet::first(policy.node_count as usize),
                            };
                            node_file.set_join(at as u64, joined, members);
                            let names: Vec<String> = joined.iter().map(node_name).collect();
                            eprintln!("netstorm-cp: epoch {e} admits {} back from round {at}: trainers sync state before contributing", names.join(", "));
                        }
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
                ControlMsg::Refused { reason } => {
                    eprintln!("netstorm-cp: the coordinator refused this node: {reason}");
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
            let Ok(rec) = TelemetryRecord::parse(&tbuf[..n]) else {
                continue;
            };
            if let Some(p) = parse_peer_record(&rec) {
                loss.peer_record(&p);
                continue;
            }
            let Some(e) = parse_link_record(&rec) else {
                continue;
            };
            metrics
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .link_estimate_bps
                .insert((node_name(e.from), node_name(e.to)), (e.bps, e.lower_bound));
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
        out.extend(loss.poll(&node_file));
        if last_silences.elapsed() > Duration::from_millis(200) {
            last_silences = Instant::now();
            out.extend(loss.take_silences());
        }
        if !samples.is_empty() && last_telemetry.elapsed() > Duration::from_millis(200) {
            last_telemetry = Instant::now();
            out.push(ControlMsg::Telemetry {
                node: me.id,
                samples: std::mem::take(&mut samples),
            });
            metrics
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .telemetry_messages += 1;
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
        {
            let mut m = metrics.lock().unwrap_or_else(|p| p.into_inner());
            m.installed_epoch = node_file.installed_epoch();
            m.active_epoch = node_file.active_epoch();
            m.coordinator_connected = conn.is_some();
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
