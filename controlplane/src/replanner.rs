//! The re-planning loop, sans-IO: telemetry → [`NetworkEstimator`] → change detection →
//! settle → plan → propose through the [`Coordinator`] → mark planned.
//!
//! One [`Replanner`] serves every coordinator: the emulated learned runs
//! ([`crate::experiment`]), the real-host coordinator ([`crate::cluster_coordinator`], driven
//! over TCP by `netstorm-cp`) and the fault suite ([`crate::faults`]). It never reads a clock
//! or does I/O: the caller hands in the time, and drives it by calling
//! [`Replanner::handle_timeout`] every tick with the coordinator it proposes through. What it
//! proposed comes out of [`Replanner::poll_proposal`], for logs and counters.
//!
//! A plan is due for one of these reasons ([`Trigger`]):
//! * **first policy**: no policy is committed yet (proposed again `first_policy_retry_ns`
//!   after the coordinator gave one up); a caller that installs the first policy itself
//!   (the emulator, before round 0) uses [`Replanner::plan_now`] instead;
//! * **new prior**: the operator's picture of the network changed
//!   ([`Replanner::handle_prior`]): planned at once, without waiting for a measurement;
//! * **requested**: the caller asks for a plan ([`Replanner::request`]), e.g. a coordinator
//!   that takes over nodes waiting at a round for an undecided install;
//! * **measured change**: [`NetworkEstimator::should_replan`], then `settle_ns` so that one
//!   plan covers related changes (both directions of a link, a shared bottleneck).
//!
//! A request comes first, then a first policy, then a measured change. A proposal waits
//! until the coordinator may take one ([`Coordinator::may_propose`]) and activates at
//! [`Coordinator::safe_activation_round`] (or the requested round; while no policy is
//! committed and no round was heard of, at round 0: a first policy must cover every round).

use crate::awareness::{AwarenessConfig, LinkChange, LinkSample, NetworkEstimator};
use crate::coordinator::{Coordinator, ProposeError};
use crate::network::{restricted, NetworkModel};
use crate::planner::{Plan, PlanError, Planner};
use netstorm_dataplane::policy::{Policy, PolicyBuilder};
use netstorm_dataplane::topology::Topology;
use netstorm_dataplane::{Nanos, NodeId};
use std::collections::{BTreeMap, VecDeque};

/// Tunables of the re-planning loop.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplannerConfig {
    /// The estimator's tunables (change threshold, minimum time between plans, ...).
    pub awareness: AwarenessConfig,
    /// Time between the first sign of a change and planning for it. Default 1 s.
    pub settle_ns: Nanos,
    /// A first policy the coordinator gave up on is proposed again after this long.
    /// Default 1 s.
    pub first_policy_retry_ns: Nanos,
}

impl Default for ReplannerConfig {
    fn default() -> Self {
        Self {
            awareness: AwarenessConfig::default(),
            settle_ns: 1_000_000_000,
            first_policy_retry_ns: 1_000_000_000,
        }
    }
}

/// Why a plan was made.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// No policy committed yet.
    FirstPolicy,
    /// The prior (the operator's rates) was replaced.
    NewPrior,
    /// The caller asked, for this reason.
    Requested(String),
    /// The estimates moved past the threshold on a confident link, and settled.
    MeasuredChange,
}

/// A plan proposed through the coordinator (or refused by it).
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    pub epoch: u32,
    pub activate_at_round: u32,
    pub trigger: Trigger,
    /// Trees of the proposed policy.
    pub trees: usize,
    /// Links whose estimate moved past the change threshold since the previous plan (what a
    /// measured change saw; empty for other triggers).
    pub changed_links: Vec<LinkChange>,
    /// Why the coordinator refused it, if it did.
    pub refused: Option<ProposeError>,
}

/// What the loop did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplannerCounters {
    /// Proposals the coordinator took (the first policy included, unless made by
    /// [`Replanner::plan_now`]).
    pub proposals: u64,
    pub refused: u64,
    /// Plans for a measured change / a new prior / a request (taken or refused).
    pub replans_measured: u64,
    pub replans_prior: u64,
    pub replans_requested: u64,
    pub telemetry_accepted: u64,
    pub telemetry_rejected: u64,
}

/// The planner a [`Replanner`] plans with: borrowed (a run of one strategy) or owned (a
/// long-lived coordinator).
#[derive(Debug)]
pub enum PlannerHandle<'p> {
    Borrowed(&'p dyn Planner),
    Owned(Box<dyn Planner>),
}

impl PlannerHandle<'_> {
    pub(crate) fn get(&self) -> &dyn Planner {
        match self {
            PlannerHandle::Borrowed(p) => *p,
            PlannerHandle::Owned(p) => p.as_ref(),
        }
    }
}

impl<'p> From<&'p dyn Planner> for PlannerHandle<'p> {
    fn from(p: &'p dyn Planner) -> Self {
        PlannerHandle::Borrowed(p)
    }
}

impl From<Box<dyn Planner>> for PlannerHandle<'_> {
    fn from(p: Box<dyn Planner>) -> Self {
        PlannerHandle::Owned(p)
    }
}

/// Plans `net` with `planner` and turns the plan into the policy of `epoch`.
pub fn plan_policy(
    planner: &dyn Planner,
    net: &NetworkModel,
    model_bits: f64,
    builder: &mut PolicyBuilder,
    epoch: u32,
) -> Result<(Plan, Policy), PlanError> {
    let plan = planner.plan(net, model_bits)?;
    let policy = plan.to_policy(builder, net, epoch);
    Ok((plan, policy))
}

/// The re-planning loop (see the module documentation).
#[derive(Debug)]
pub struct Replanner<'p> {
    cfg: ReplannerConfig,
    planner: PlannerHandle<'p>,
    model_bits: f64,
    estimator: NetworkEstimator,
    builder: PolicyBuilder,
    /// When the estimator first said a re-plan is due (reset when it stops saying so).
    change_seen_at: Option<Nanos>,
    awaiting_first_policy: bool,
    last_first_try: Option<Nanos>,
    /// A plan due at once, with the round it must activate at (else the safe one).
    requested: Option<(Trigger, Option<u32>)>,
    proposals_enabled: bool,
    /// Plans by the epoch they were first proposed under (a coordinator's retry reuses
    /// the trees under a later epoch).
    plans: BTreeMap<u32, Plan>,
    proposed: VecDeque<Proposal>,
    /// The nodes plans cover (ascending); `None`: every node.
    members: Option<Vec<NodeId>>,
    pub counters: ReplannerCounters,
}

impl<'p> Replanner<'p> {
    /// A loop planning for a buffer of `model_bits`, starting from `prior` (the configured
    /// network) and waiting for its first policy.
    pub fn new(
        planner: impl Into<PlannerHandle<'p>>,
        model_bits: f64,
        prior: Topology,
        cfg: ReplannerConfig,
    ) -> Self {
        Self {
            estimator: NetworkEstimator::new(prior, cfg.awareness.clone()),
            cfg,
            planner: planner.into(),
            model_bits,
            builder: PolicyBuilder::new(),
            change_seen_at: None,
            awaiting_first_policy: true,
            last_first_try: None,
            requested: None,
            proposals_enabled: true,
            plans: BTreeMap::new(),
            proposed: VecDeque::new(),
            members: None,
            counters: ReplannerCounters::default(),
        }
    }

    pub fn planner(&self) -> &dyn Planner {
        self.planner.get()
    }

    /// What the loop believes about the network.
    pub fn estimator(&self) -> &NetworkEstimator {
        &self.estimator
    }

    /// The plan a policy of `epoch` runs: the newest planned at or before it (a retry
    /// reuses its trees under a later epoch).
    pub fn plan_for_epoch(&self, epoch: u32) -> Option<&Plan> {
        self.plans.range(..=epoch).next_back().map(|(_, p)| p)
    }

    /// Folds telemetry in (impossible samples are rejected and counted).
    pub fn handle_telemetry(&mut self, now: Nanos, samples: &[LinkSample]) {
        for s in samples {
            match self.estimator.ingest(now, s) {
                Ok(()) => self.counters.telemetry_accepted += 1,
                Err(_) => self.counters.telemetry_rejected += 1,
            }
        }
    }

    /// Replaces the prior (e.g. the operator's rates file changed): what was learned is
    /// dropped, and a plan on the new prior is due at once.
    pub fn handle_prior(&mut self, prior: Topology) {
        self.estimator = NetworkEstimator::new(prior, self.cfg.awareness.clone());
        self.requested = Some((Trigger::NewPrior, None));
    }

    /// Asks for a plan at the next opportunity, activating at `activate_at_round` (else at
    /// the coordinator's safe round).
    pub fn request(&mut self, reason: impl Into<String>, activate_at_round: Option<u32>) {
        self.requested = Some((Trigger::Requested(reason.into()), activate_at_round));
    }

    /// Whether a requested plan (a caller's request or a new prior) waits to be proposed.
    pub fn request_pending(&self) -> bool {
        self.requested.is_some()
    }

    /// Plans from now on cover only `members` (ascending node ids; `None`: every node): a
    /// lost node is left out of every tree and route (issue 19). The caller requests the
    /// plan ([`Replanner::request`]).
    pub fn set_members(&mut self, members: Option<Vec<NodeId>>) {
        self.members = members;
    }

    /// The nodes plans cover (`None`: every node).
    pub fn members(&self) -> Option<&[NodeId]> {
        self.members.as_deref()
    }

    /// While disabled, the loop still learns but proposes nothing (e.g. no round is left
    /// that a new policy could activate at).
    pub fn set_proposals_enabled(&mut self, enabled: bool) {
        self.proposals_enabled = enabled;
    }

    /// Plans now, outside the coordinator, for a caller that installs the policy itself
    /// (the first policy, before any round runs): returns the plan and the policy of
    /// `epoch`, and counts as planned.
    pub fn plan_now(&mut self, now: Nanos, epoch: u32) -> Result<(Plan, Policy), PlanError> {
        let (plan, policy) = self.plan(epoch)?;
        self.plans.insert(epoch, plan.clone());
        self.estimator.mark_planned(now);
        self.awaiting_first_policy = false;
        Ok((plan, policy))
    }

    /// Runs the loop at `now`: the coordinator's telemetry into the estimator, the
    /// coordinator's timers, then a proposal if one is due and the coordinator may take it.
    pub fn handle_timeout(&mut self, now: Nanos, coord: &mut Coordinator) -> Result<(), PlanError> {
        while let Some((_, samples)) = coord.poll_telemetry() {
            self.handle_telemetry(now, &samples);
        }
        if coord.poll_timeout().is_some_and(|t| t <= now) {
            coord.handle_timeout(now);
        }
        if !self.proposals_enabled {
            return Ok(());
        }
        if self.awaiting_first_policy && coord.committed().is_some() {
            self.awaiting_first_policy = false;
        }
        // What is due: a request first (the caller knows better), then a first policy,
        // then a measured change (tracked while the coordinator is busy, too).
        let due = if let Some(requested) = self.requested.clone() {
            Some(requested)
        } else if self.awaiting_first_policy {
            self.last_first_try
                .is_none_or(|t| now >= t + self.cfg.first_policy_retry_ns)
                .then_some((Trigger::FirstPolicy, None))
        } else {
            if self.estimator.should_replan(now) {
                self.change_seen_at.get_or_insert(now);
            } else {
                self.change_seen_at = None;
            }
            self.change_seen_at
                .is_some_and(|c| now >= c + self.cfg.settle_ns)
                .then_some((Trigger::MeasuredChange, None))
        };
        let Some((trigger, at)) = due else {
            return Ok(());
        };
        if !coord.may_propose() {
            return Ok(());
        }
        match trigger {
            Trigger::FirstPolicy => self.last_first_try = Some(now),
            Trigger::MeasuredChange => self.change_seen_at = None,
            _ => {}
        }
        // A first policy activates at round 0 unless a node already started a round: it
        // must cover every round the nodes run.
        let at = at.unwrap_or_else(|| match coord.newest_round() {
            None if self.awaiting_first_policy => 0,
            _ => coord.safe_activation_round(),
        });
        self.propose(now, coord, trigger, at)
    }

    /// Plans on the current estimates; the policy of `epoch`.
    fn plan(&mut self, epoch: u32) -> Result<(Plan, Policy), PlanError> {
        let net = self.estimator.model();
        if let Some(kept) = self.members.clone() {
            // Planned over the members' network, in their original ids.
            let n = net.node_count();
            let sub = NetworkModel::from_topology(restricted(&net.topology, &kept));
            let plan = self
                .planner
                .get()
                .plan(&sub, self.model_bits)?
                .lifted(&kept, n);
            let mut policy = plan.to_policy(&mut self.builder, &net, epoch);
            policy.members = Some(kept);
            return Ok((plan, policy));
        }
        plan_policy(
            self.planner.get(),
            &net,
            self.model_bits,
            &mut self.builder,
            epoch,
        )
    }

    /// What was proposed, oldest first.
    pub fn poll_proposal(&mut self) -> Option<Proposal> {
        self.proposed.pop_front()
    }

    /// Plans on the current estimates and proposes the policy from round `at`. The plan
    /// counts as made even if the coordinator refuses it (no retry loop on a refusal).
    fn propose(
        &mut self,
        now: Nanos,
        coord: &mut Coordinator,
        trigger: Trigger,
        at: u32,
    ) -> Result<(), PlanError> {
        let changed_links = match trigger {
            Trigger::MeasuredChange => self.estimator.changed_links(),
            _ => Vec::new(),
        };
        match trigger {
            Trigger::FirstPolicy => {}
            Trigger::NewPrior => self.counters.replans_prior += 1,
            Trigger::Requested(_) => self.counters.replans_requested += 1,
            Trigger::MeasuredChange => self.counters.replans_measured += 1,
        }
        let epoch = coord.newest_epoch() + 1;
        let (plan, policy) = self.plan(epoch)?;
        let trees = policy.trees.len();
        let refused = coord.propose(now, policy, at).err();
        if refused.is_none() {
            self.plans.insert(epoch, plan);
            self.counters.proposals += 1;
        } else {
            self.counters.refused += 1;
        }
        self.estimator.mark_planned(now);
        // The plan covers whatever was asked for: it is made on the newest estimates.
        self.requested = None;
        self.proposed.push_back(Proposal {
            epoch,
            activate_at_round: at,
            trigger,
            trees,
            changed_links,
            refused,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::{ControlMsg, CoordinatorConfig};
    use crate::planner::{by_name, PlannerOptions};
    use crate::test_support::{run, CoordinatorSide, Nodes, SECOND};
    use netstorm_dataplane::NodeId;

    const MBPS: f64 = 1e6;

    /// A re-planner driving a coordinator of 3 nodes on a 100 Mbit/s mesh.
    struct Loop {
        replanner: Replanner<'static>,
        coord: Coordinator,
        proposals: Vec<Proposal>,
    }

    impl Loop {
        fn new(coordinator: CoordinatorConfig) -> (Self, Nodes, Topology) {
            let topo = Topology::full_mesh(3, 100.0 * MBPS, 10_000_000);
            let planner = by_name("spt", &PlannerOptions::default()).unwrap();
            let replanner = Replanner::new(planner, 1e6, topo.clone(), ReplannerConfig::default());
            let coord = Coordinator::new(3, 0, coordinator);
            let l = Self {
                replanner,
                coord,
                proposals: Vec::new(),
            };
            (l, Nodes::new(3), topo)
        }

        fn triggers(&self) -> Vec<Trigger> {
            self.proposals.iter().map(|p| p.trigger.clone()).collect()
        }
    }

    impl CoordinatorSide for Loop {
        fn handle(&mut self, now: Nanos, from: NodeId, msg: ControlMsg) {
            self.coord.handle(now, from, msg);
        }

        fn tick(&mut self, now: Nanos) {
            self.replanner.handle_timeout(now, &mut self.coord).unwrap();
            self.proposals
                .extend(std::iter::from_fn(|| self.replanner.poll_proposal()));
        }

        fn poll_transmit(&mut self) -> Option<(NodeId, ControlMsg)> {
            self.coord.poll_transmit()
        }
    }

    #[test]
    fn the_first_policy_covers_round_0_and_is_proposed_again_after_being_given_up() {
        let cfg = CoordinatorConfig {
            max_retries: 0,
            ..CoordinatorConfig::default()
        };
        let (mut l, mut nodes, topo) = Loop::new(cfg);
        // Node 2 is unreachable for the first 3 s: the prepare times out (2 s), the
        // coordinator gives the proposal up, the loop proposes again 1 s after its try.
        let mut now = 0;
        while now < 3 * SECOND {
            now += 10_000_000;
            l.tick(now);
            while let Some((to, msg)) = l.poll_transmit() {
                if to != 2 {
                    if let Some(reply) = nodes.handle(to, msg) {
                        l.handle(now, to, reply);
                    }
                }
            }
        }
        assert_eq!(l.coord.counters.gave_up, 1);
        run(&mut l, &mut nodes, &topo, now, 6 * SECOND, |_, _| {
            100.0 * MBPS
        });
        assert_eq!(
            l.triggers(),
            [Trigger::FirstPolicy, Trigger::FirstPolicy],
            "{:?}",
            l.proposals
        );
        assert_eq!(
            l.proposals
                .iter()
                .map(|p| (p.epoch, p.activate_at_round))
                .collect::<Vec<_>>(),
            [(1, 0), (2, 0)],
            "a first policy activates at round 0"
        );
        assert_eq!(l.coord.committed(), Some((2, 0)));
        assert!(nodes.next_round > 10, "the nodes run on epoch 2");
        assert_eq!(nodes.epoch_of_round(2, 0), Some(2));
    }

    #[test]
    fn a_request_wins_and_activates_at_the_round_asked_for() {
        let (mut l, mut nodes, topo) = Loop::new(CoordinatorConfig::default());
        l.coord = Coordinator::new(3, 7, CoordinatorConfig::default());
        l.replanner.request("take over", Some(4));
        run(&mut l, &mut nodes, &topo, 0, SECOND, |_, _| 100.0 * MBPS);
        let p = &l.proposals[0];
        assert_eq!(p.trigger, Trigger::Requested("take over".into()));
        assert_eq!((p.epoch, p.activate_at_round), (8, 4));
        assert_eq!(l.replanner.counters.replans_requested, 1);
        // Nothing covers rounds 0..4 here, so nothing ran; the request is not repeated.
        assert_eq!(l.proposals.len(), 1, "{:?}", l.proposals);
    }

    #[test]
    fn a_new_prior_is_planned_at_once_and_a_disabled_loop_only_learns() {
        let (mut l, mut nodes, topo) = Loop::new(CoordinatorConfig::default());
        run(&mut l, &mut nodes, &topo, 0, 2 * SECOND, |_, _| {
            100.0 * MBPS
        });
        assert_eq!(l.triggers(), [Trigger::FirstPolicy]);
        // The operator says a link is slower: planned within a tick, long before the
        // estimator's minimum interval between plans (5 s) would allow a measured change.
        let mut prior = topo.clone();
        prior.links[0].rate_bps = 10.0 * MBPS;
        l.replanner.handle_prior(prior);
        run(
            &mut l,
            &mut nodes,
            &topo,
            2 * SECOND,
            2 * SECOND + 20_000_000,
            |_, _| 100.0 * MBPS,
        );
        assert_eq!(l.triggers(), [Trigger::FirstPolicy, Trigger::NewPrior]);
        assert_eq!(l.replanner.counters.replans_prior, 1);
        // Disabled: a halved network is learned, and nothing is proposed.
        l.replanner.set_proposals_enabled(false);
        let accepted = l.replanner.counters.telemetry_accepted;
        run(
            &mut l,
            &mut nodes,
            &topo,
            3 * SECOND,
            30 * SECOND,
            |_, _| 50.0 * MBPS,
        );
        assert_eq!(l.proposals.len(), 2, "{:?}", l.proposals);
        assert!(l.replanner.counters.telemetry_accepted > accepted + 100);
        assert!(l.replanner.estimator().should_replan(30 * SECOND));
        // Enabled again: the change is planned for, once.
        l.replanner.set_proposals_enabled(true);
        run(
            &mut l,
            &mut nodes,
            &topo,
            30 * SECOND,
            60 * SECOND,
            |_, _| 50.0 * MBPS,
        );
        assert_eq!(
            l.triggers(),
            [
                Trigger::FirstPolicy,
                Trigger::NewPrior,
                Trigger::MeasuredChange
            ]
        );
    }

    #[test]
    fn plan_now_plans_outside_the_coordinator_and_keeps_the_plan_by_epoch() {
        let (mut l, mut nodes, topo) = Loop::new(CoordinatorConfig::default());
        let (plan, policy) = l.replanner.plan_now(0, 1).unwrap();
        assert_eq!(policy.epoch, 1);
        assert_eq!(l.replanner.plan_for_epoch(1), Some(&plan));
        assert_eq!(
            l.replanner.plan_for_epoch(5),
            Some(&plan),
            "a retry reuses the trees"
        );
        assert_eq!(l.replanner.plan_for_epoch(0), None);
        // No first policy is proposed after it.
        l.coord = Coordinator::new(3, 1, CoordinatorConfig::default());
        run(&mut l, &mut nodes, &topo, 0, 10 * SECOND, |_, _| {
            100.0 * MBPS
        });
        assert!(l.proposals.is_empty(), "{:?}", l.proposals);
    }
}
