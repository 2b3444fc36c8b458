//! The fault-injection suite (`netstorm faults`), in deterministic virtual time.
//!
//! Every fault runs the same job — a planner's policy on a scenario, `rounds` rounds of a
//! `model_mb` buffer of small-integer gradients (exact in f32 in any order) — with one
//! fault injected, and checks every completed round bit-for-bit against the reference sum.
//! Heartbeats (100 ms, timeout 1 s) run in every case, so a false "node dead" would show.
//!
//! Faults: Gilbert–Elliott loss bursts on every link, 30 % loss on the busiest link,
//! reordering, duplication, corruption (the MAC drops corrupted packets), the busiest link
//! down for 10 s mid-round, a tree root crashing mid-round (detected by heartbeat timeout,
//! the round reported failed naming the node, the next rounds re-planned without it), a
//! control-plane restart in the middle of a two-phase policy install, and a coordinator
//! crash (with no install in flight, and in the middle of one).
//!
//! Each job's control plane is the real one: plans come from a [`Replanner`], installs go
//! through the [`Coordinator`] and the nodes' [`NodeAgent`]s, with instant message delivery
//! between rounds; the crash itself, the restart and the agents' "coordinator unreachable"
//! view are modelled here, at the harness level.

use crate::coordinator::{Coordinator, CoordinatorConfig, NodeAgent, ProposeError};
use crate::network::NetworkModel;
use crate::planner::{by_name, Plan, PlanError, Planner, PlannerOptions};
use crate::replanner::{Replanner, ReplannerConfig};
use netstorm_dataplane::emu::{
    EmuConfig, EmuError, GilbertElliott, Heartbeat, LinkOutage, Simulation,
};
use netstorm_dataplane::engine::{Counters, Engine, EngineConfig, EngineError};
use netstorm_dataplane::reference::{fill_test_gradient, reference_sum};
use netstorm_dataplane::scenario::{Change, Scenario, TimedChange};
use netstorm_dataplane::topology::Topology;
use netstorm_dataplane::{Nanos, NodeId, NANOS_PER_SEC};
use serde::Serialize;

/// What to run: the same job for every fault.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultSuiteConfig {
    /// Planner that makes the policy (and re-plans after a crash).
    pub planner: String,
    /// Rounds per fault (at least 3: faults hit round 1, recovery shows in round 2).
    pub rounds: u32,
    /// Buffer size in MB (10^6 bytes) of f32.
    pub model_mb: f64,
    pub seed: u64,
    /// Only the faults whose name contains this (the baseline always runs: the others
    /// are measured against it).
    pub only: Option<String>,
}

/// Why the suite could not run (a fault's outcome, however bad, is a result instead).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FaultsError {
    #[error("rounds must be at least 3 (faults hit round 1, recovery shows in round 2), got {0}")]
    TooFewRounds(u32),
    #[error("planner {planner} on {nodes} nodes: {err}")]
    Plan {
        planner: String,
        nodes: usize,
        err: PlanError,
    },
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Emu(#[from] EmuError),
    #[error("coordinator refused a proposal: {0}")]
    Propose(#[from] ProposeError),
    #[error("{fault}: round {round} mixed epochs")]
    MixedEpochs { fault: &'static str, round: u32 },
}

const SECOND: Nanos = NANOS_PER_SEC;
const ROUND_LIMIT_NS: Nanos = 300 * SECOND;
const HEARTBEAT: Heartbeat = Heartbeat {
    interval_ns: 100_000_000,
    timeout_ns: SECOND,
};
/// Segment size used to count lost segments (the engine's default).
const SEGMENT_ELEMS: usize = 352;

/// One fault of the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    Bursts,
    LossyLink,
    Reorder,
    Duplicate,
    Corrupt,
    LinkDown,
    NodeCrash,
    CpRestart,
    CoordinatorCrash,
    CoordinatorCrashMidInstall,
}

const FAULTS: [Fault; 11] = [
    Fault::None,
    Fault::Bursts,
    Fault::LossyLink,
    Fault::Reorder,
    Fault::Duplicate,
    Fault::Corrupt,
    Fault::LinkDown,
    Fault::NodeCrash,
    Fault::CpRestart,
    Fault::CoordinatorCrash,
    Fault::CoordinatorCrashMidInstall,
];

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::None => "none (baseline)",
            Fault::Bursts => "loss bursts (Gilbert-Elliott)",
            Fault::LossyLink => "30% loss on one link",
            Fault::Reorder => "reordering",
            Fault::Duplicate => "duplication",
            Fault::Corrupt => "corruption",
            Fault::LinkDown => "link down 10 s",
            Fault::NodeCrash => "node crash",
            Fault::CpRestart => "control-plane restart",
            Fault::CoordinatorCrash => "coordinator crash",
            Fault::CoordinatorCrashMidInstall => "coordinator crash mid-install",
        }
    }
}

/// What one fault did.
#[derive(Debug, Clone, Serialize)]
pub struct FaultResult {
    pub fault: String,
    /// The injection, concretely.
    pub injected: String,
    /// What happened, in words.
    pub outcome: String,
    pub rounds_completed: u32,
    pub rounds_failed: u32,
    /// Segments whose result is missing or wrong: in completed rounds (must be 0), plus every
    /// segment of a round reported failed.
    pub segments_lost: u64,
    /// Virtual seconds from the end of the fault (link back up, crash, restart) to normal
    /// operation (the round done, the node declared dead, the new epoch running).
    pub recover_s: Option<f64>,
    /// Synchronization time of each completed round (virtual seconds).
    pub round_s: Vec<f64>,
    /// Epoch of each completed round.
    pub epochs: Vec<u32>,
    pub retransmits: u64,
    pub rx_bad_mac: u64,
    pub rx_duplicate: u64,
    /// Datagrams the receivers' anti-replay windows dropped (duplicated frames included).
    pub rx_replayed: u64,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct FaultsReport {
    pub scenario: String,
    pub planner: String,
    pub model_mb: f64,
    pub rounds: u32,
    pub seed: u64,
    pub results: Vec<FaultResult>,
}

/// A running job: the emulator, which original node each engine is, the policy epoch, and
/// the control plane's re-planner.
struct Job<'p> {
    base: Topology,
    sim: Simulation,
    /// `members[i]` = original node id of engine `i`.
    members: Vec<NodeId>,
    /// Virtual time elapsed in earlier simulations (after a re-plan without a node).
    offset_ns: Nanos,
    elems: usize,
    epoch: u32,
    plan: Plan,
    replanner: Replanner<'p>,
    counters: Counters,
}

/// The topology without `dead`, nodes renumbered in order; returns it and the kept ids.
fn without(topo: &Topology, dead: NodeId) -> (Topology, Vec<NodeId>) {
    let kept: Vec<NodeId> = (0..topo.node_count() as NodeId)
        .filter(|&v| v != dead)
        .collect();
    (crate::network::restricted(topo, &kept), kept)
}

/// A control plane (re-planner) for `topo`: a fresh one per job, and after a restart.
fn control_plane<'p>(planner: &'p dyn Planner, topo: &Topology, elems: usize) -> Replanner<'p> {
    Replanner::new(
        planner,
        elems as f64 * 32.0,
        topo.clone(),
        ReplannerConfig::default(),
    )
}

impl<'p> Job<'p> {
    /// The job on `topo` with its first policy (epoch `epoch`) planned and installed on
    /// every node from round 0.
    fn new(
        planner: &'p dyn Planner,
        cfg: &FaultSuiteConfig,
        topo: &Topology,
        members: Vec<NodeId>,
        emu: EmuConfig,
        epoch: u32,
        offset_ns: Nanos,
    ) -> Result<Self, FaultsError> {
        let elems = (cfg.model_mb * 1e6 / 4.0) as usize;
        let n = topo.node_count();
        let mut replanner = control_plane(planner, topo, elems);
        let (plan, policy) =
            replanner
                .plan_now(offset_ns, epoch)
                .map_err(|err| FaultsError::Plan {
                    planner: cfg.planner.clone(),
                    nodes: n,
                    err,
                })?;
        let engines = (0..n)
            .map(|v| {
                let mut e = Engine::new(EngineConfig::new(v as NodeId, n as u16, elems), topo)?;
                e.install_policy(policy.clone(), 0)?;
                Ok(e)
            })
            .collect::<Result<Vec<_>, EngineError>>()?;
        let mut sim = Simulation::new(topo, engines, emu)?;
        let ids = members.clone();
        sim.set_start_hook(Box::new(move |v, r, buf| {
            fill_test_gradient(buf, ids[v as usize] as usize, r);
        }));
        Ok(Self {
            base: topo.clone(),
            sim,
            members,
            offset_ns,
            elems,
            epoch,
            plan,
            replanner,
            counters: Counters::default(),
        })
    }

    /// Has the job's re-planner propose a fresh plan of the network through `coord`,
    /// activating at `round`; returns its epoch.
    fn propose(
        &mut self,
        coord: &mut Coordinator,
        reason: &str,
        round: u32,
    ) -> Result<u32, FaultsError> {
        self.replanner.request(reason, Some(round));
        let now = self.now();
        self.replanner
            .handle_timeout(now, coord)
            .map_err(|err| FaultsError::Plan {
                planner: self.replanner.planner().name().to_string(),
                nodes: self.base.node_count(),
                err,
            })?;
        let p = self
            .replanner
            .poll_proposal()
            .expect("a requested plan is proposed to an idle coordinator");
        match p.refused {
            Some(e) => Err(e.into()),
            None => Ok(p.epoch),
        }
    }

    fn now(&self) -> Nanos {
        self.offset_ns + self.sim.now()
    }

    /// Runs `round` on every node from now. `Ok(true)` = completed and exact.
    fn run_round(&mut self, round: u32) -> Result<RoundOutcome, FaultsError> {
        let start = self.sim.now();
        for v in 0..self.members.len() {
            self.sim.schedule_start(v as NodeId, round, start);
        }
        match self.sim.run_round_watching(round, ROUND_LIMIT_NS) {
            Ok(()) => {
                let s = self.sim.summary(round).expect("round completed");
                let wrong = self.wrong_segments(round);
                Ok(RoundOutcome::Done {
                    sync_s: s.sync_ns() as f64 / 1e9,
                    epoch: s.epoch,
                    wrong,
                    completed_at: self.offset_ns + s.completed_at,
                })
            }
            Err(EmuError::NodeDead {
                node,
                last_heard_s,
                at_s,
                timeout_s,
                ..
            }) => Ok(RoundOutcome::NodeDead {
                node: self.members[node as usize],
                last_heard_ns: self.offset_ns + (last_heard_s * 1e9) as Nanos,
                detected_ns: self.offset_ns + (at_s * 1e9) as Nanos,
                timeout_s,
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Segments (of the whole buffer) where some node's result differs from the reference.
    fn wrong_segments(&self, round: u32) -> u64 {
        let mut wrong = 0;
        for start in (0..self.elems).step_by(SEGMENT_ELEMS) {
            let end = (start + SEGMENT_ELEMS).min(self.elems);
            let bad = (start..end).any(|i| {
                let want = reference_sum(self.members.iter().map(|&v| v as usize), round, i);
                (0..self.members.len()).any(|e| self.sim.engine(e as NodeId).buffer()[i] != want)
            });
            wrong += bad as u64;
        }
        wrong
    }

    fn segments(&self) -> u64 {
        self.elems.div_ceil(SEGMENT_ELEMS) as u64
    }

    fn add_counters(&mut self) {
        for e in self.sim.engines() {
            let c = e.counters();
            self.counters.tx_retransmits += c.tx_retransmits;
            self.counters.rx_bad_mac += c.rx_bad_mac;
            self.counters.rx_duplicate += c.rx_duplicate;
            self.counters.rx_replayed += c.rx_replayed;
        }
    }

    /// The heaviest-loaded directed link of the plan and its reverse (indices).
    fn busiest_link(&self) -> (usize, Option<usize>) {
        let net = NetworkModel::from_topology(self.base.clone());
        let loads = self.plan.link_loads_bits(&net, self.elems as f64 * 32.0);
        let (i, _) =
            loads.iter().enumerate().fold(
                (0, f64::MIN),
                |best, (i, &l)| if l > best.1 { (i, l) } else { best },
            );
        let l = &self.base.links[i];
        (i, self.base.link_index(l.to, l.from))
    }

    fn link_name(&self, i: usize) -> String {
        let l = &self.base.links[i];
        format!(
            "{}<->{}",
            self.base.node_name(l.from),
            self.base.node_name(l.to)
        )
    }
}

enum RoundOutcome {
    Done {
        sync_s: f64,
        epoch: Option<u32>,
        wrong: u64,
        completed_at: Nanos,
    },
    NodeDead {
        node: NodeId,
        last_heard_ns: Nanos,
        detected_ns: Nanos,
        timeout_s: f64,
    },
}

/// Delivers every queued coordinator message to the agents and the replies back, until
/// quiet; `deliver_to_agents = false` drops the coordinator's messages (it crashed).
fn pump(coord: &mut Coordinator, agents: &mut [NodeAgent], now: Nanos) {
    for _ in 0..16 {
        let mut any = false;
        while let Some((to, msg)) = coord.poll_transmit() {
            any = true;
            if let Some(reply) = agents[to as usize].handle(msg) {
                coord.handle(now, to, reply);
            }
        }
        if !any {
            break;
        }
    }
}

fn install_committed(job: &mut Job<'_>, agents: &mut [NodeAgent]) -> Result<(), FaultsError> {
    for (v, a) in agents.iter_mut().enumerate() {
        while let Some((policy, at)) = a.take_install() {
            job.sim.engine_mut(v as NodeId).install_policy(policy, at)?;
        }
    }
    Ok(())
}

fn emu_for(fault: Fault, seed: u64, lossy: (usize, Option<usize>)) -> EmuConfig {
    let mut emu = EmuConfig {
        seed,
        heartbeat: Some(HEARTBEAT),
        ..EmuConfig::default()
    };
    match fault {
        Fault::Bursts => {
            emu.burst_loss = Some(GilbertElliott {
                p_good_to_bad: 0.01,
                p_bad_to_good: 0.2,
                loss_good: 0.0,
                loss_bad: 0.5,
                links: Vec::new(),
            })
        }
        Fault::LossyLink => {
            emu.burst_loss = Some(GilbertElliott {
                p_good_to_bad: 0.0,
                p_bad_to_good: 1.0,
                loss_good: 0.3,
                loss_bad: 0.3,
                links: std::iter::once(lossy.0).chain(lossy.1).collect(),
            })
        }
        Fault::Reorder => {
            emu.reorder_prob = 0.05;
            emu.reorder_delay_ns = 20_000_000;
        }
        Fault::Duplicate => emu.duplicate_prob = 0.02,
        Fault::Corrupt => emu.corrupt_prob = 0.01,
        _ => {}
    }
    emu
}

fn describe(fault: Fault, job: &Job<'_>, lossy: (usize, Option<usize>)) -> String {
    match fault {
        Fault::None => "nothing".into(),
        Fault::Bursts => "every link: Good->Bad 1 %/frame, Bad->Good 20 %/frame, 50 % loss in Bad (mean 2.4 %, bursts of 5 frames)".into(),
        Fault::LossyLink => format!("30 % random loss on {} (the plan's busiest link)", job.link_name(lossy.0)),
        Fault::Reorder => "5 % of frames delayed by up to 20 ms, every link".into(),
        Fault::Duplicate => "2 % of frames delivered twice, every link".into(),
        Fault::Corrupt => "1 % of frames get one bit flipped, every link".into(),
        Fault::LinkDown => format!("{} down (both directions) for 10 s, from 30 % into round 1", job.link_name(lossy.0)),
        Fault::NodeCrash => "the root of the first tree crashes (fail-stop) 30 % into round 1".into(),
        Fault::CpRestart => "coordinator restarts after Prepare of epoch 2 (before Commit), down 2 s".into(),
        Fault::CoordinatorCrash => "coordinator dies for good before round 1 (no install in flight)".into(),
        Fault::CoordinatorCrashMidInstall => "coordinator dies for good after Prepare of epoch 2 (before Commit)".into(),
    }
}

fn run_fault(
    planner: &dyn Planner,
    cfg: &FaultSuiteConfig,
    scenario: &Scenario,
    fault: Fault,
    baseline_s: Option<f64>,
) -> Result<FaultResult, FaultsError> {
    let topo = scenario.topology.clone();
    let n = topo.node_count();
    let members: Vec<NodeId> = (0..n as NodeId).collect();
    // The busiest link needs the plan: make a throwaway job for it (cheap: no rounds run).
    let probe = Job::new(
        planner,
        cfg,
        &topo,
        members.clone(),
        EmuConfig::default(),
        1,
        0,
    )?;
    let lossy = probe.busiest_link();
    let injected = describe(fault, &probe, lossy);
    drop(probe);
    let emu = emu_for(fault, cfg.seed, lossy);
    let mut job = Job::new(planner, cfg, &topo, members, emu, 1, 0)?;
    let mut res = FaultResult {
        fault: fault.name().into(),
        injected,
        outcome: String::new(),
        rounds_completed: 0,
        rounds_failed: 0,
        segments_lost: 0,
        recover_s: None,
        round_s: Vec::new(),
        epochs: Vec::new(),
        retransmits: 0,
        rx_bad_mac: 0,
        rx_duplicate: 0,
        rx_replayed: 0,
    };
    let mut notes: Vec<String> = Vec::new();
    let base_round_ns = (baseline_s.unwrap_or(1.0) * 1e9) as Nanos;
    // Control plane state for the coordinator cases.
    let mut coord = Some(Coordinator::new(n, 1, CoordinatorConfig::default()));
    let mut agents: Vec<NodeAgent> = (0..n as NodeId).map(|v| NodeAgent::new(v, 1)).collect();
    let mut fault_end_ns: Option<Nanos> = None;
    let mut coordinator_dead_since: Option<Nanos> = None;
    let mut wrong_in_completed = 0u64;
    for r in 0..cfg.rounds {
        // Fault actions before round r.
        if r == 1 {
            let t = job.sim.now() + base_round_ns * 3 / 10;
            match fault {
                Fault::LinkDown => {
                    for l in std::iter::once(lossy.0).chain(lossy.1) {
                        job.sim.add_outage(LinkOutage {
                            link: l,
                            from_ns: t,
                            until_ns: t + 10 * SECOND,
                        });
                    }
                    fault_end_ns = Some(job.offset_ns + t + 10 * SECOND);
                }
                Fault::NodeCrash => {
                    let root = job.plan.trees[0].root;
                    job.sim.set_changes(std::iter::once(TimedChange {
                        at_ns: t,
                        change: Change::NodeDown(root),
                    }));
                    fault_end_ns = Some(job.offset_ns + t);
                }
                Fault::CpRestart | Fault::CoordinatorCrashMidInstall => {
                    // Epoch 2 (a fresh plan of the same network) for round 2: every node
                    // prepares it; the coordinator dies before its Commits leave.
                    let c = coord.as_mut().expect("coordinator alive");
                    job.propose(c, "a fresh plan of the same network", 2)?;
                    let now = job.now();
                    let prepares: Vec<_> = std::iter::from_fn(|| c.poll_transmit()).collect();
                    for (to, msg) in prepares {
                        if let Some(reply) = agents[to as usize].handle(msg) {
                            c.handle(now, to, reply);
                        }
                    }
                    coord = None; // crash: the Commits it queued are lost with it
                    coordinator_dead_since = Some(now);
                    notes.push(format!(
                        "epoch 2 prepared at all {n} nodes for round 2, coordinator died before Commit"
                    ));
                }
                Fault::CoordinatorCrash => {
                    coord = None;
                    coordinator_dead_since = Some(job.now());
                }
                _ => {}
            }
        }
        // Round gating by the two-phase install: a prepared, undecided epoch blocks its
        // activation round.
        if !agents.iter().all(|a| a.may_start(r)) {
            match fault {
                Fault::CpRestart => {
                    // The restarted coordinator comes back after 2 s. It does not know what its
                    // predecessor proposed, so it skips past every epoch the agents may hold
                    // (committed + 2) and proposes a fresh plan for the blocked round.
                    let dead_since = coordinator_dead_since.expect("crashed");
                    let back = dead_since + 2 * SECOND;
                    let waiting_from = job.now();
                    if job.now() < back {
                        job.sim.advance_to(back - job.offset_ns)?;
                    }
                    res.recover_s = Some((job.now() - waiting_from) as f64 / 1e9);
                    let committed = agents
                        .iter()
                        .map(|a| a.committed_epoch())
                        .max()
                        .unwrap_or(0);
                    let mut c = Coordinator::new(n, committed + 1, CoordinatorConfig::default());
                    // A new process: its control plane has learned nothing yet.
                    job.replanner = control_plane(planner, &job.base, job.elems);
                    let epoch = job.propose(&mut c, "the restarted coordinator takes over", r)?;
                    pump(&mut c, &mut agents, job.now());
                    install_committed(&mut job, &mut agents)?;
                    job.epoch = epoch;
                    coord = Some(c);
                    fault_end_ns = Some(back);
                    notes.push(format!(
                        "restarted coordinator committed epoch {epoch} for round {r}; nodes waited at round {r} meanwhile"
                    ));
                }
                _ => {
                    // Nobody can decide the prepared epoch: round r cannot start. Reported,
                    // bounded — not a hang.
                    let e = agents
                        .iter()
                        .map(|a| a.committed_epoch())
                        .max()
                        .unwrap_or(0);
                    notes.push(format!(
                        "round {r} blocked: epoch 2 prepared but undecided and the coordinator is dead \
                         (two-phase commit's blocking window); the cluster stays on epoch {e}"
                    ));
                    break;
                }
            }
        }
        for a in agents.iter_mut() {
            a.started(r);
        }
        match job.run_round(r)? {
            RoundOutcome::Done {
                sync_s,
                epoch,
                wrong,
                completed_at,
            } => {
                res.rounds_completed += 1;
                res.round_s.push(sync_s);
                res.epochs.push(epoch.unwrap_or(u32::MAX));
                res.segments_lost += wrong;
                wrong_in_completed += wrong;
                if fault == Fault::LinkDown && r == 1 {
                    if let Some(up) = fault_end_ns {
                        res.recover_s = Some(completed_at.saturating_sub(up) as f64 / 1e9);
                    }
                }
                if epoch.is_none() {
                    return Err(FaultsError::MixedEpochs {
                        fault: fault.name(),
                        round: r,
                    });
                }
            }
            RoundOutcome::NodeDead {
                node,
                last_heard_ns,
                detected_ns,
                timeout_s,
            } => {
                res.rounds_failed += 1;
                res.segments_lost += job.segments();
                let name = job
                    .base
                    .node_name(job.members.iter().position(|&m| m == node).unwrap_or(0) as NodeId)
                    .to_string();
                notes.push(format!(
                    "round {r} reported failed: node {name} dead (silent since {:.2} s, timeout {timeout_s:.0} s, detected at {:.2} s)",
                    last_heard_ns as f64 / 1e9,
                    detected_ns as f64 / 1e9
                ));
                if let Some(crash) = fault_end_ns {
                    res.recover_s = Some(detected_ns.saturating_sub(crash) as f64 / 1e9);
                }
                // Re-plan without the dead node; survivors restart the job at round r + 1.
                job.add_counters();
                let dead_local =
                    job.members.iter().position(|&m| m == node).expect("member") as NodeId;
                let (sub, kept_local) = without(&job.base, dead_local);
                let members: Vec<NodeId> = kept_local
                    .iter()
                    .map(|&k| job.members[k as usize])
                    .collect();
                let offset = job.now();
                let counters = job.counters;
                let epoch = job.epoch + 1;
                let emu = emu_for(fault, cfg.seed, lossy);
                job = Job::new(planner, cfg, &sub, members, emu, epoch, offset)?;
                job.counters = counters;
                // Agents of the survivors (the control plane re-plans for n - 1 nodes).
                agents = (0..sub.node_count() as NodeId)
                    .map(|v| NodeAgent::new(v, epoch))
                    .collect();
                notes.push(format!(
                    "re-planned ({}) for the {} survivors as epoch {epoch}",
                    cfg.planner,
                    sub.node_count()
                ));
            }
        }
    }
    if let Some(t) = coordinator_dead_since {
        if coord.is_none() {
            let e = job.sim.engine(0).epoch().unwrap_or(0);
            notes.push(format!(
                "coordinator unreachable since {:.2} s: the cluster keeps epoch {e} and says so",
                t as f64 / 1e9
            ));
        }
    }
    job.add_counters();
    res.retransmits = job.counters.tx_retransmits;
    res.rx_bad_mac = job.counters.rx_bad_mac;
    res.rx_duplicate = job.counters.rx_duplicate;
    res.rx_replayed = job.counters.rx_replayed;
    let exact = if wrong_in_completed == 0 {
        "every completed round bit-exact"
    } else {
        "WRONG RESULTS"
    };
    let mut outcome = vec![exact.to_string()];
    if let (Some(b), Some(max)) = (baseline_s, res.round_s.iter().cloned().reduce(f64::max)) {
        if fault != Fault::None {
            outcome.push(format!("slowest round {:.2}x baseline", max / b));
        }
    }
    outcome.extend(notes);
    if res.rx_bad_mac > 0 {
        outcome.push(format!(
            "{} packets failed the MAC and were dropped",
            res.rx_bad_mac
        ));
    }
    res.outcome = outcome.join("; ");
    Ok(res)
}

/// Runs every fault (or those `cfg.only` names, after the baseline) on `scenario`;
/// `scenario_label` names it in the report.
pub fn run_suite(
    scenario: &Scenario,
    scenario_label: &str,
    cfg: &FaultSuiteConfig,
) -> Result<FaultsReport, FaultsError> {
    if cfg.rounds < 3 {
        return Err(FaultsError::TooFewRounds(cfg.rounds));
    }
    let planner =
        by_name(&cfg.planner, &PlannerOptions::default()).map_err(|err| FaultsError::Plan {
            planner: cfg.planner.clone(),
            nodes: scenario.topology.node_count(),
            err,
        })?;
    let mut results = Vec::new();
    let mut baseline_s = None;
    for fault in FAULTS {
        let selected = cfg
            .only
            .as_ref()
            .is_none_or(|o| fault.name().contains(o.as_str()));
        if !selected && fault != Fault::None {
            continue;
        }
        let r = run_fault(planner.as_ref(), cfg, scenario, fault, baseline_s)?;
        if fault == Fault::None {
            baseline_s = r.round_s.iter().cloned().reduce(f64::max);
        }
        if selected {
            results.push(r);
        }
    }
    Ok(FaultsReport {
        scenario: scenario_label.to_string(),
        planner: cfg.planner.clone(),
        model_mb: cfg.model_mb,
        rounds: cfg.rounds,
        seed: cfg.seed,
        results,
    })
}
