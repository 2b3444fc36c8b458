//! Runs a strategy (a planner) through the real engine on the emulated WAN, round after
//! round, in virtual time, re-planning when the network changes, and checks every result.
//!
//! Knowledge: planners read the emulator's *current* link rates (the "oracle" view) at the
//! moment the first node finishes a round; the new policy is installed on every node at that
//! instant and activates with the next round, so no round ever mixes epochs.

pub use crate::adaptive::{LearnedConfig, LearningStats};
use crate::network::NetworkModel;
use crate::planner::{Plan, PlanError, Planner};
use netstorm_dataplane::emu::{EmuConfig, EmuError, Simulation};
use netstorm_dataplane::engine::{Engine, EngineConfig, EngineError};
use netstorm_dataplane::policy::{Policy, PolicyBuilder};
use netstorm_dataplane::scenario::Scenario;
use netstorm_dataplane::topology::Topology;
use netstorm_dataplane::{Nanos, NodeId, NANOS_PER_SEC};
use std::sync::{Arc, Mutex};

/// How to run a strategy.
#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentConfig {
    pub rounds: u32,
    /// Compute time between receiving a result and starting the next round.
    pub compute_ns: Nanos,
    pub segment_elems: usize,
    pub seed: u64,
    /// A round that takes longer than this (virtual time) is reported as stuck.
    pub max_round_virtual_ns: Nanos,
    /// Re-plan when the network changed since the last plan.
    pub replan: bool,
    /// Where the planner's picture of the network comes from.
    pub knowledge: Knowledge,
}

/// What the control plane knows about the network.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Knowledge {
    /// The emulator's current truth, read at the moment the first node finishes a round;
    /// installed everywhere at that instant (a reference point, not something a real
    /// deployment has).
    #[default]
    Oracle,
    /// Learned from the engines' telemetry and probes, installed by the coordinator's
    /// two-phase protocol over an emulated control channel (see [`crate::adaptive`]).
    Learned(LearnedConfig),
}

impl Default for ExperimentConfig {
    fn default() -> Self {
        Self {
            rounds: 5,
            compute_ns: 0,
            segment_elems: 352,
            seed: 1,
            max_round_virtual_ns: 3600 * NANOS_PER_SEC,
            replan: true,
            knowledge: Knowledge::Oracle,
        }
    }
}

/// One round of one strategy.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundResult {
    pub round: u32,
    /// Virtual time the round started (first node), seconds.
    pub started_s: f64,
    /// First start to the last node holding the result, seconds.
    pub sync_s: f64,
    pub epoch: u32,
    /// The plan's fluid-model time on the network the round started on.
    pub modeled_s: f64,
    /// The network (current rates) when the round started.
    pub topology: Topology,
    /// With learned knowledge: the estimated rate of every link (indexed like
    /// `topology.links`) when the round finished.
    pub estimated_bps: Option<Vec<f64>>,
}

/// Everything a strategy did.
#[derive(Debug, Clone, PartialEq)]
pub struct StrategyResult {
    pub strategy: String,
    pub rounds: Vec<RoundResult>,
    /// Bytes that crossed WAN links, frame overhead included.
    pub wan_bytes: u64,
    pub policies_installed: u32,
    pub retransmits: u64,
    /// Events the emulator processed (for speed accounting).
    pub events: u64,
    /// With learned knowledge: what the control plane did.
    pub learning: Option<LearningStats>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExperimentError {
    #[error("planner '{planner}': {err}")]
    Plan { planner: String, err: PlanError },
    #[error(transparent)]
    Emu(#[from] EmuError),
    #[error("engine {node}: {err}")]
    Engine { node: NodeId, err: EngineError },
    #[error("round {round}: node {node} element {index} is {got}, expected {want}")]
    Mismatch {
        round: u32,
        node: NodeId,
        index: usize,
        got: f32,
        want: f32,
    },
    #[error("round {round} ran under mixed policy epochs")]
    MixedEpochs { round: u32 },
    #[error("zero rounds requested")]
    NoRounds,
}

/// The contribution of node `v` in round `r` at element `i`: small integers, so that the
/// sum is exact in f32 in any order and the check against the reference is bit-exact.
pub fn test_gradient(v: usize, r: u32, i: usize) -> f32 {
    ((v * 131 + i * 7 + r as usize * 17) & 2047) as f32 - 1024.0
}

pub(crate) fn fill(buf: &mut [f32], v: usize, r: u32) {
    for (i, x) in buf.iter_mut().enumerate() {
        *x = test_gradient(v, r, i);
    }
}

/// Installs `policy` on every node for rounds `>= activate_round`. The control plane does this
/// at an instant when no node can start that round yet, so no round mixes epochs.
pub(crate) fn install_everywhere(
    sim: &mut Simulation,
    policy: &Policy,
    activate_round: u32,
) -> Result<(), ExperimentError> {
    for v in 0..sim.engines().len() {
        sim.engine_mut(v as NodeId)
            .install_policy(policy.clone(), activate_round)
            .map_err(|err| ExperimentError::Engine {
                node: v as NodeId,
                err,
            })?;
    }
    Ok(())
}

/// The network model a planner sees: the scenario's nodes with the emulator's current rates.
pub fn current_network(base: &Topology, rates_bps: &[f64]) -> NetworkModel {
    let mut topo = base.clone();
    for (l, &r) in topo.links.iter_mut().zip(rates_bps) {
        l.rate_bps = r;
    }
    NetworkModel::from_topology(topo)
}

pub(crate) fn plan_policy(
    planner: &dyn Planner,
    net: &NetworkModel,
    model_bits: f64,
    builder: &mut PolicyBuilder,
    epoch: u32,
) -> Result<(Plan, Policy), ExperimentError> {
    let plan = planner
        .plan(net, model_bits)
        .map_err(|err| ExperimentError::Plan {
            planner: planner.name().to_string(),
            err,
        })?;
    let policy = plan.to_policy(builder, net, epoch);
    Ok((plan, policy))
}

/// The engines on the emulated WAN for `scenario`, with the scenario's changes queued (those
/// at t = 0 applied), and the start hook that fills each round's test gradients and checks
/// each node's previous result before it is overwritten.
pub(crate) fn build_simulation(
    scenario: &Scenario,
    elems: usize,
    cfg: &ExperimentConfig,
) -> Result<(Simulation, Arc<Mutex<Checker>>), ExperimentError> {
    let topo = &scenario.topology;
    let n = topo.node_count();
    let engines = (0..n)
        .map(|v| {
            let mut ec = EngineConfig::new(v as NodeId, n as u16, elems);
            ec.segment_elems = cfg.segment_elems;
            Engine::new(ec, topo).map_err(|err| ExperimentError::Engine {
                node: v as NodeId,
                err,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut sim = Simulation::new(
        topo,
        engines,
        EmuConfig {
            seed: cfg.seed,
            ..EmuConfig::default()
        },
    )?;
    sim.set_changes(scenario.changes());
    // Changes at t = 0 (dynamic redraws) take effect before the first plan.
    sim.apply_changes_until(0);
    let checker = Arc::new(Mutex::new(Checker::new(n)));
    let hook_checker = Arc::clone(&checker);
    sim.set_start_hook(Box::new(move |v, r, buf| {
        let mut c = hook_checker.lock().expect("checker lock");
        if r > 0 {
            c.check(v as usize, r - 1, buf);
        }
        fill(buf, v as usize, r);
    }));
    Ok((sim, checker))
}

/// Runs `planner` on `scenario` for a buffer of `elems` f32.
pub fn run_strategy(
    scenario: &Scenario,
    elems: usize,
    planner: &dyn Planner,
    cfg: &ExperimentConfig,
    mut on_round: impl FnMut(&RoundResult),
) -> Result<StrategyResult, ExperimentError> {
    if cfg.rounds == 0 {
        return Err(ExperimentError::NoRounds);
    }
    if let Knowledge::Learned(lc) = &cfg.knowledge {
        return crate::adaptive::run_learned(scenario, elems, planner, cfg, lc, on_round);
    }
    let topo = &scenario.topology;
    let n = topo.node_count();
    let model_bits = elems as f64 * 32.0;
    let (mut sim, checker) = build_simulation(scenario, elems, cfg)?;
    let mut builder = PolicyBuilder::new();
    let mut epoch = 1;
    let mut rates = sim.link_rates_bps();
    let mut net = current_network(topo, &rates);
    let (mut plan, policy) = plan_policy(planner, &net, model_bits, &mut builder, epoch)?;
    let mut policies_installed = 1;
    install_everywhere(&mut sim, &policy, 0)?;
    let mut modeled = plan.modeled_time(&net, model_bits).total_s;
    let mut round_nets = vec![(net.topology.clone(), modeled)];
    sim.set_auto_advance(cfg.rounds - 1, cfg.compute_ns);
    for v in 0..n {
        sim.schedule_start(v as NodeId, 0, 0);
    }
    let mut results = Vec::with_capacity(cfg.rounds as usize);
    for r in 0..cfg.rounds {
        sim.run_until_first_complete(r, cfg.max_round_virtual_ns)?;
        // The control plane acts between the first completion of r and any start of r + 1.
        let new_rates = sim.link_rates_bps();
        if r + 1 < cfg.rounds {
            if cfg.replan && new_rates != rates {
                rates = new_rates;
                net = current_network(topo, &rates);
                let (new_plan, new_policy) =
                    plan_policy(planner, &net, model_bits, &mut builder, epoch + 1)?;
                if new_plan != plan {
                    epoch += 1;
                    plan = new_plan;
                    install_everywhere(&mut sim, &new_policy, r + 1)?;
                    policies_installed += 1;
                }
                modeled = plan.modeled_time(&net, model_bits).total_s;
            }
            round_nets.push((net.topology.clone(), modeled));
        }
        sim.run_round(r, cfg.max_round_virtual_ns)?;
        let s = sim.summary(r).expect("round completed");
        let epoch_r = check_finished_round(&sim, &checker, &s, cfg.rounds)?;
        let (topology, modeled_s) = round_nets[r as usize].clone();
        let rr = RoundResult {
            round: r,
            started_s: s.started_at as f64 / 1e9,
            sync_s: s.sync_ns() as f64 / 1e9,
            epoch: epoch_r,
            modeled_s,
            topology,
            estimated_bps: None,
        };
        on_round(&rr);
        results.push(rr);
    }
    let retransmits = sim.retransmits();
    Ok(StrategyResult {
        strategy: planner.name().to_string(),
        rounds: results,
        wan_bytes: sim.wan_bytes(),
        policies_installed,
        retransmits,
        events: sim.events_processed(),
        learning: None,
    })
}

/// A finished round's epoch, after the checks: one epoch on every node, and (for the last
/// round, which no later start hook sees) every node's result against the reference.
pub(crate) fn check_finished_round(
    sim: &Simulation,
    checker: &Mutex<Checker>,
    s: &netstorm_dataplane::emu::RoundSummary,
    rounds: u32,
) -> Result<u32, ExperimentError> {
    let r = s.round;
    let epoch = s.epoch.ok_or(ExperimentError::MixedEpochs { round: r })?;
    let mut c = checker.lock().expect("checker lock");
    if r + 1 == rounds {
        for v in 0..sim.engines().len() {
            c.check(v, r, sim.engine(v as NodeId).buffer());
        }
    }
    match c.error.take() {
        Some(err) => Err(err),
        None => Ok(epoch),
    }
}

/// Checks each node's result of a round when it is about to be overwritten: every element
/// bit-identical to the reference sum (computed once per round, in node order).
#[derive(Debug)]
pub(crate) struct Checker {
    n: usize,
    reference_round: Option<u32>,
    reference: Vec<f32>,
    pub(crate) error: Option<ExperimentError>,
}

impl Checker {
    fn new(n: usize) -> Self {
        Self {
            n,
            reference_round: None,
            reference: Vec::new(),
            error: None,
        }
    }

    pub(crate) fn check(&mut self, v: usize, r: u32, buf: &[f32]) {
        if self.error.is_some() {
            return;
        }
        if self.reference_round != Some(r) {
            // Every node checks round r before any node can check round r + 1.
            self.reference.clear();
            self.reference.resize(buf.len(), 0.0);
            for u in 0..self.n {
                for (i, x) in self.reference.iter_mut().enumerate() {
                    *x += test_gradient(u, r, i);
                }
            }
            self.reference_round = Some(r);
        }
        if let Some(i) = buf
            .iter()
            .zip(&self.reference)
            .position(|(a, b)| a.to_bits() != b.to_bits())
        {
            self.error = Some(ExperimentError::Mismatch {
                round: r,
                node: v as NodeId,
                index: i,
                got: buf[i],
                want: self.reference[i],
            });
        }
    }
}

/// A cluster of engines on an emulated WAN that synchronizes caller-provided buffers, one
/// all-reduce at a time (every node starts together), re-planning with oracle knowledge when
/// the network changed. For trainers and examples; `run_strategy` is the benchmark driver.
pub struct EmulatedCluster {
    sim: Simulation,
    planner: Box<dyn Planner>,
    builder: PolicyBuilder,
    base: Topology,
    rates: Vec<f64>,
    plan: Plan,
    epoch: u32,
    round: u32,
    elems: usize,
    max_round_virtual_ns: Nanos,
}

impl std::fmt::Debug for EmulatedCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatedCluster")
            .field("planner", &self.planner.name())
            .field("round", &self.round)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl EmulatedCluster {
    /// One engine per scenario node, each with a buffer of `elems` f32.
    pub fn new(
        scenario: &Scenario,
        elems: usize,
        planner: Box<dyn Planner>,
        cfg: &ExperimentConfig,
    ) -> Result<Self, ExperimentError> {
        let topo = scenario.topology.clone();
        let n = topo.node_count();
        let engines = (0..n)
            .map(|v| {
                let mut ec = EngineConfig::new(v as NodeId, n as u16, elems);
                ec.segment_elems = cfg.segment_elems;
                Engine::new(ec, &topo).map_err(|err| ExperimentError::Engine {
                    node: v as NodeId,
                    err,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut sim = Simulation::new(
            &topo,
            engines,
            EmuConfig {
                seed: cfg.seed,
                ..EmuConfig::default()
            },
        )?;
        sim.set_changes(scenario.changes());
        sim.apply_changes_until(0);
        let rates = sim.link_rates_bps();
        let net = current_network(&topo, &rates);
        let mut builder = PolicyBuilder::new();
        let (plan, policy) =
            plan_policy(planner.as_ref(), &net, elems as f64 * 32.0, &mut builder, 1)?;
        install_everywhere(&mut sim, &policy, 0)?;
        Ok(Self {
            sim,
            planner,
            builder,
            base: topo,
            rates,
            plan,
            epoch: 1,
            round: 0,
            elems,
            max_round_virtual_ns: cfg.max_round_virtual_ns,
        })
    }

    pub fn node_count(&self) -> usize {
        self.base.node_count()
    }

    /// Emulated time now, seconds.
    pub fn now_s(&self) -> f64 {
        self.sim.now() as f64 / 1e9
    }

    /// Lets `seconds` of emulated time pass (e.g. local computation).
    pub fn advance_s(&mut self, seconds: f64) -> Result<(), ExperimentError> {
        let t = self.sim.now() + (seconds.max(0.0) * 1e9) as Nanos;
        Ok(self.sim.advance_to(t)?)
    }

    /// Sums `inputs[v]` over all nodes through the engine; returns the sum (identical on
    /// every node — checked) and the round's synchronization time in seconds.
    pub fn allreduce(&mut self, inputs: &[Vec<f32>]) -> Result<(Vec<f32>, f64), ExperimentError> {
        let n = self.node_count();
        assert_eq!(inputs.len(), n, "one input per node");
        let r = self.round;
        let rates = self.sim.link_rates_bps();
        if rates != self.rates && r > 0 {
            self.rates = rates;
            let net = current_network(&self.base, &self.rates);
            let (plan, policy) = plan_policy(
                self.planner.as_ref(),
                &net,
                self.elems as f64 * 32.0,
                &mut self.builder,
                self.epoch + 1,
            )?;
            if plan != self.plan {
                self.epoch += 1;
                self.plan = plan;
                install_everywhere(&mut self.sim, &policy, r)?;
            }
        }
        for (v, input) in inputs.iter().enumerate() {
            assert_eq!(input.len(), self.elems, "input {v} has the wrong length");
            self.sim
                .engine_mut(v as NodeId)
                .buffer_mut()
                .copy_from_slice(input);
        }
        let summary = self.sim.run_round_all(r, self.max_round_virtual_ns)?;
        self.round += 1;
        let result = self.sim.engine(0).buffer().to_vec();
        for v in 1..n {
            let other = self.sim.engine(v as NodeId).buffer();
            if let Some(i) = result
                .iter()
                .zip(other)
                .position(|(a, b)| a.to_bits() != b.to_bits())
            {
                return Err(ExperimentError::Mismatch {
                    round: r,
                    node: v as NodeId,
                    index: i,
                    got: other[i],
                    want: result[i],
                });
            }
        }
        Ok((result, summary.sync_ns() as f64 / 1e9))
    }
}
