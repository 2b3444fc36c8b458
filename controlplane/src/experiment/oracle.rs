//! Oracle knowledge: planners read the emulator's *current* link rates at the moment the
//! first node finishes a round; a new plan is installed on every node at that instant and
//! activates with the next round, so no round ever mixes epochs. A reference point, not
//! something a real deployment has (see `experiment::learned` for that).

use super::harness::{build_simulation, check_finished_round, current_network, install_everywhere};
use super::spec::{ExperimentConfig, ExperimentError, RoundResult, StrategyResult};
use crate::network::NetworkModel;
use crate::planner::{Plan, Planner};
use crate::replanner::{plan_policy, PlannerHandle};
use netstorm_dataplane::emu::Simulation;
use netstorm_dataplane::policy::PolicyBuilder;
use netstorm_dataplane::scenario::Scenario;
use netstorm_dataplane::topology::Topology;
use netstorm_dataplane::NodeId;

/// The plan in force with oracle knowledge, and the rates it was made on.
#[derive(Debug)]
pub(crate) struct OracleKnowledge<'p> {
    planner: PlannerHandle<'p>,
    builder: PolicyBuilder,
    base: Topology,
    model_bits: f64,
    rates: Vec<f64>,
    net: NetworkModel,
    plan: Plan,
    epoch: u32,
    /// Policies installed so far (the first included).
    pub(crate) installed: u32,
}

impl<'p> OracleKnowledge<'p> {
    /// Plans on the emulator's current rates and installs the policy (epoch 1) on every
    /// node from round 0.
    pub(crate) fn new(
        planner: impl Into<PlannerHandle<'p>>,
        base: &Topology,
        sim: &mut Simulation,
        model_bits: f64,
    ) -> Result<Self, ExperimentError> {
        let planner = planner.into();
        let mut builder = PolicyBuilder::new();
        let rates = sim.link_rates_bps();
        let net = current_network(base, &rates);
        let (plan, policy) = plan_policy(planner.get(), &net, model_bits, &mut builder, 1)
            .map_err(|err| ExperimentError::plan(planner.get(), err))?;
        install_everywhere(sim, &policy, 0)?;
        Ok(Self {
            planner,
            builder,
            base: base.clone(),
            model_bits,
            rates,
            net,
            plan,
            epoch: 1,
            installed: 1,
        })
    }

    /// If the emulator's rates changed since the last plan: plans again, and installs the
    /// new plan on every node for rounds `>= activate_round` if it differs.
    pub(crate) fn follow(
        &mut self,
        sim: &mut Simulation,
        activate_round: u32,
    ) -> Result<(), ExperimentError> {
        let rates = sim.link_rates_bps();
        if rates == self.rates {
            return Ok(());
        }
        self.rates = rates;
        self.net = current_network(&self.base, &self.rates);
        let planner = self.planner.get();
        let (plan, policy) = plan_policy(
            planner,
            &self.net,
            self.model_bits,
            &mut self.builder,
            self.epoch + 1,
        )
        .map_err(|err| ExperimentError::plan(planner, err))?;
        if plan != self.plan {
            self.epoch += 1;
            self.plan = plan;
            install_everywhere(sim, &policy, activate_round)?;
            self.installed += 1;
        }
        Ok(())
    }

    pub(crate) fn planner(&self) -> &dyn Planner {
        self.planner.get()
    }

    /// The network the plan in force was made on.
    pub(crate) fn network(&self) -> &NetworkModel {
        &self.net
    }

    /// The plan's fluid-model round time on that network.
    pub(crate) fn modeled_s(&self) -> f64 {
        self.plan.modeled_time(&self.net, self.model_bits).total_s
    }
}

/// Runs `planner` on `scenario` with oracle knowledge.
pub(crate) fn run_oracle(
    scenario: &Scenario,
    elems: usize,
    planner: &dyn Planner,
    cfg: &ExperimentConfig,
    mut on_round: impl FnMut(&RoundResult),
) -> Result<StrategyResult, ExperimentError> {
    let n = scenario.topology.node_count();
    let (mut sim, checker) = build_simulation(scenario, elems, cfg)?;
    let mut oracle = OracleKnowledge::new(
        planner,
        &scenario.topology,
        &mut sim,
        elems as f64 * 8.0 * cfg.wire.elem_bytes() as f64,
    )?;
    let mut round_nets = vec![(oracle.network().topology.clone(), oracle.modeled_s())];
    sim.set_auto_advance(cfg.rounds - 1, cfg.compute_ns);
    for v in 0..n {
        sim.schedule_start(v as NodeId, 0, 0);
    }
    let mut results = Vec::with_capacity(cfg.rounds as usize);
    for r in 0..cfg.rounds {
        sim.run_until_first_complete(r, cfg.max_round_virtual_ns)?;
        // The control plane acts between the first completion of r and any start of r + 1.
        if r + 1 < cfg.rounds {
            if cfg.replan {
                oracle.follow(&mut sim, r + 1)?;
            }
            round_nets.push((oracle.network().topology.clone(), oracle.modeled_s()));
        }
        sim.run_round(r, cfg.max_round_virtual_ns)?;
        let s = sim.summary(r).expect("round completed");
        let epoch = check_finished_round(&sim, &checker, &s, cfg.rounds)?;
        let (topology, modeled_s) = round_nets[r as usize].clone();
        let rr = RoundResult {
            round: r,
            started_s: s.started_at as f64 / 1e9,
            sync_s: s.sync_ns() as f64 / 1e9,
            epoch,
            modeled_s,
            topology,
            estimated_bps: None,
        };
        on_round(&rr);
        results.push(rr);
    }
    Ok(StrategyResult {
        strategy: planner.name().to_string(),
        rounds: results,
        wan_bytes: sim.wan_bytes(),
        policies_installed: oracle.installed,
        retransmits: sim.retransmits(),
        early_dropped: sim.early_dropped(),
        cpu_limited_acks: sim.cpu_limited_acks(),
        events: sim.events_processed(),
        learning: None,
    })
}
