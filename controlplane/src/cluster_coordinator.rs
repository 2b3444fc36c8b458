//! The coordinator of a cluster of real hosts, sans-IO: what `netstorm-cp` runs on the
//! node named in `[coordinator]` (the TCP side is `netstorm_node::coordinator_task`).
//!
//! It waits until every node said hello (what its data plane holds: the installed epoch,
//! the newest round started, the epoch of a start barrier it waits on), then starts the
//! two-phase [`Coordinator`] with epochs continuing past everything a node holds or waits
//! for (so a restarted coordinator never reuses an epoch), and the [`Replanner`]: the first
//! policy, then re-plans on measured changes or a new prior (the operator's rates file).
//!
//! Time is the caller's monotonic clock; the nodes' clocks are not ours, so telemetry is
//! re-timed on arrival ([`ClusterCoordinator::handle_control`]).
//!
//! With loss detection on ([`ClusterCoordinator::with_peer_timeout`]), a lost node whose
//! control plane says hello again from a *fresh* data plane (nothing installed, no round
//! started: it restarted) is admitted back at a round boundary — once the loss is settled
//! and nothing else is being planned — under a new epoch: a policy over the members and it,
//! proposed with it as `joined`, activating at the coordinator's safe round (past every
//! round a member reported, so every member can still reach it; a member already past it
//! Nacks and the install is retried later). One that says hello with its old data plane
//! (stale epoch: it was cut off, not restarted) stays out and is told why
//! ([`ControlMsg::Refused`]). Inputs: `handle_hello`,
//! `handle_control`, `handle_prior`, `handle_timeout` (every tick); outputs: `poll_transmit`
//! (messages to nodes), `poll_event` (what to tell the operator), `counters`.

use crate::coordinator::{ControlMsg, Coordinator, CoordinatorConfig};
use crate::peer_loss::{LossEvent, Outcome, PeerLoss};
use crate::planner::{PlanError, Planner};
use crate::replanner::{Proposal, Replanner, ReplannerConfig};
use netstorm_dataplane::topology::Topology;
use netstorm_dataplane::{Nanos, NodeId};
use std::collections::VecDeque;

/// What a node's control plane says first on every connection to the coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeHello {
    /// The epoch its data plane runs (0 when none).
    pub installed_epoch: u32,
    /// Newest round started at the node (`None` before the first).
    pub started_round: Option<u32>,
    /// Epoch a start barrier of the node waits for, if one is set.
    pub barrier_epoch: Option<u32>,
}

/// What happened, for the operator's log.
#[derive(Debug, Clone, PartialEq)]
pub enum CoordinatorEvent {
    /// Every node said hello; the coordinator runs, its epochs continuing after `base_epoch`.
    Started { base_epoch: u32 },
    /// A plan was proposed (or refused by the coordinator).
    Proposed(Proposal),
    /// Every node committed `epoch`, activating at `activate_at_round`.
    Committed { epoch: u32, activate_at_round: u32 },
    /// A node's data plane went silent everywhere for the peer timeout (issue 19).
    NodeLost { node: NodeId, members: Vec<NodeId> },
    /// A round in flight at a loss was decided.
    RoundDecided { round: u32, outcome: Outcome },
    /// One member is left: nothing to synchronize with.
    Alone { node: NodeId },
    /// A lost node said hello again from its old data plane (stale epoch): it stays out
    /// and its cp is told `reason`.
    LostNodeRefused { node: NodeId, reason: String },
    /// A lost node restarted (fresh data plane) and asked to rejoin: admitted at the next
    /// round boundary.
    RejoinRequested { node: NodeId },
    /// A lost node is a member again: the next policy (over `members`) admits it.
    NodeRejoined { node: NodeId, members: Vec<NodeId> },
}

/// Protocol and learning counters, for the coordinator's counters file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterCounters {
    pub proposals: u64,
    pub commits: u64,
    pub aborts: u64,
    pub retries: u64,
    pub gave_up: u64,
    pub replans_measured: u64,
    pub replans_prior: u64,
    pub telemetry_accepted: u64,
    pub telemetry_rejected: u64,
    /// Newest committed epoch (0 before the first commit).
    pub committed_epoch: u32,
}

/// The cluster's coordinator (see the module documentation).
#[derive(Debug)]
pub struct ClusterCoordinator {
    coordinator_cfg: CoordinatorConfig,
    hellos: Vec<Option<NodeHello>>,
    coord: Option<Coordinator>,
    replanner: Replanner<'static>,
    last_committed: Option<(u32, u32)>,
    events: VecDeque<CoordinatorEvent>,
    /// Loss detection and round resolution (`None`: off).
    loss: Option<PeerLoss>,
    loss_out: VecDeque<(NodeId, ControlMsg)>,
    /// Lost nodes that restarted and wait to be admitted.
    rejoining: Vec<NodeId>,
}

impl ClusterCoordinator {
    /// The coordinator of `prior.node_count()` nodes, planning with `planner` for a buffer
    /// of `model_bits` from `prior` (the configured network).
    pub fn new(
        planner: Box<dyn Planner>,
        model_bits: f64,
        prior: Topology,
        replan: ReplannerConfig,
        coordinator: CoordinatorConfig,
    ) -> Self {
        let n = prior.node_count();
        Self {
            coordinator_cfg: coordinator,
            hellos: vec![None; n],
            coord: None,
            replanner: Replanner::new(planner, model_bits, prior, replan),
            last_committed: None,
            events: VecDeque::new(),
            loss: None,
            loss_out: VecDeque::new(),
            rejoining: Vec::new(),
        }
    }

    /// Declares a member lost once its data plane was silent for `peer_timeout_ns` at
    /// every other member, and resolves its rounds ([`crate::peer_loss`]).
    pub fn with_peer_timeout(mut self, peer_timeout_ns: Nanos) -> Self {
        self.loss = Some(PeerLoss::new(self.hellos.len(), peer_timeout_ns));
        self
    }

    /// The loss state, when detection is on.
    pub fn peer_loss(&self) -> Option<&PeerLoss> {
        self.loss.as_ref()
    }

    pub fn node_count(&self) -> usize {
        self.hellos.len()
    }

    /// Whether every node said hello (the two-phase coordinator runs).
    pub fn running(&self) -> bool {
        self.coord.is_some()
    }

    pub fn replanner(&self) -> &Replanner<'static> {
        &self.replanner
    }

    /// Node `node` (re)connected. Unknown nodes are ignored.
    pub fn handle_hello(&mut self, now: Nanos, node: NodeId, hello: NodeHello) {
        let Some(slot) = self.hellos.get_mut(node as usize) else {
            return;
        };
        *slot = Some(hello);
        if let Some(loss) = self.loss.as_mut() {
            if loss.lost().contains(&node) {
                let fresh = hello.installed_epoch == 0
                    && hello.started_round.is_none()
                    && hello.barrier_epoch.is_none();
                if fresh {
                    if !self.rejoining.contains(&node) {
                        self.rejoining.push(node);
                        self.events
                            .push_back(CoordinatorEvent::RejoinRequested { node });
                    }
                } else {
                    // Its data plane still runs the epoch it was lost under: it was cut off,
                    // not restarted, and its rounds can never match the members' again.
                    let reason = format!(
                        "node {node} was declared lost and its data plane still holds epoch {} (round {:?}): stale; restart its netstorm-dp (and netstorm-cp) to rejoin",
                        hello.installed_epoch, hello.started_round
                    );
                    self.rejoining.retain(|&v| v != node);
                    self.loss_out.push_back((
                        node,
                        ControlMsg::Refused {
                            reason: reason.clone(),
                        },
                    ));
                    self.events
                        .push_back(CoordinatorEvent::LostNodeRefused { node, reason });
                }
                return;
            }
            let fresh = hello.installed_epoch == 0
                && hello.started_round.is_none()
                && hello.barrier_epoch.is_none();
            let was_running = self.coord.as_ref().is_some_and(|c| {
                c.committed().is_some() && c.node_round(node).is_some() && c.is_member(node)
            });
            if fresh && was_running {
                // Restarted before anyone noticed it silent: its fresh dp holds no policy and
                // can take no part in the rounds in flight, yet it is heard. Lost now (the
                // rounds in flight are decided without it), then admitted like any rejoin.
                loss.declare_lost(node);
                if !self.rejoining.contains(&node) {
                    self.rejoining.push(node);
                    self.events
                        .push_back(CoordinatorEvent::RejoinRequested { node });
                }
                return;
            }
            loss.on_hello(node);
        }
        if let (Some(c), Some(round)) = (self.coord.as_mut(), hello.started_round) {
            c.handle(now, node, ControlMsg::Heartbeat { node, round });
        }
    }

    /// A message from node `node`. Before every node said hello there is nothing to
    /// decide, and messages are dropped (a node's agent resends what matters).
    pub fn handle_control(&mut self, now: Nanos, node: NodeId, msg: ControlMsg) {
        let Some(c) = self.coord.as_mut() else {
            return;
        };
        let msg = match msg {
            // The node's clock is not ours: the newest sample of a batch is taken as of
            // its arrival, the others keep their spacing.
            ControlMsg::Telemetry { node, mut samples } => {
                let newest = samples.iter().map(|s| s.at).max().unwrap_or(0);
                for s in &mut samples {
                    s.at = now.saturating_sub(newest - s.at);
                }
                ControlMsg::Telemetry { node, samples }
            }
            ControlMsg::PeerSilence { peers, .. } => {
                if let Some(loss) = self.loss.as_mut() {
                    loss.handle_silence(now, node, &peers);
                }
                return;
            }
            ControlMsg::FrozenStatus { round, status, .. } => {
                if let Some(loss) = self.loss.as_mut() {
                    loss.handle_status(node, round, status);
                }
                return;
            }
            other => other,
        };
        c.handle(now, node, msg);
    }

    /// The operator's picture of the network changed (rates file): re-plan on it.
    pub fn handle_prior(&mut self, prior: Topology) {
        self.replanner.handle_prior(prior);
    }

    /// Runs the coordinator at `now`: starts it once every node said hello, then its timers
    /// and the re-planning loop.
    pub fn handle_timeout(&mut self, now: Nanos) -> Result<(), PlanError> {
        if self.coord.is_none() {
            if !self.hellos.iter().all(Option::is_some) {
                return Ok(());
            }
            // Epochs continue past anything a node holds or waits for (coordinator restart).
            let base_epoch = self
                .hellos
                .iter()
                .flatten()
                .map(|h| h.installed_epoch.max(h.barrier_epoch.unwrap_or(0)))
                .max()
                .unwrap_or(0);
            let mut c =
                Coordinator::new(self.hellos.len(), base_epoch, self.coordinator_cfg.clone());
            for (v, h) in self.hellos.iter().enumerate() {
                if let Some(round) = h.and_then(|h| h.started_round) {
                    let node = v as NodeId;
                    c.handle(now, node, ControlMsg::Heartbeat { node, round });
                }
            }
            self.coord = Some(c);
            self.events
                .push_back(CoordinatorEvent::Started { base_epoch });
        }
        let coord = self.coord.as_mut().expect("started above");
        self.replanner.handle_timeout(now, coord)?;
        if coord.committed() != self.last_committed {
            self.last_committed = coord.committed();
            if let Some((epoch, activate_at_round)) = self.last_committed {
                self.events.push_back(CoordinatorEvent::Committed {
                    epoch,
                    activate_at_round,
                });
            }
        }
        while let Some(p) = self.replanner.poll_proposal() {
            self.events.push_back(CoordinatorEvent::Proposed(p));
        }
        self.handle_loss(now);
        Ok(())
    }

    /// Loss detection and round resolution, once a policy runs.
    fn handle_loss(&mut self, now: Nanos) {
        let (Some(loss), Some(coord)) = (self.loss.as_mut(), self.coord.as_mut()) else {
            return;
        };
        if coord.committed().is_none() {
            return;
        }
        let started: Vec<Option<u32>> = (0..self.hellos.len() as NodeId)
            .map(|v| coord.node_round(v))
            .collect();
        for event in loss.handle_timeout(now, &started) {
            match event {
                LossEvent::Lost { node } => {
                    coord.remove_member(now, node);
                    let members = loss.members();
                    self.replanner.set_members(Some(members.clone()));
                    self.events.push_back(CoordinatorEvent::NodeLost {
                        node,
                        members: members.clone(),
                    });
                    if members.len() == 1 {
                        // Told before the round in flight is decided, so its trainer's next
                        // call hears it instead of waiting for a policy that never comes.
                        self.loss_out.push_back((members[0], ControlMsg::Alone));
                        self.events
                            .push_back(CoordinatorEvent::Alone { node: members[0] });
                    }
                }
                LossEvent::Decided { round, outcome } => {
                    if let Outcome::Failed { lost } = &outcome {
                        if loss.members().len() > 1 {
                            self.replanner
                                .request(format!("lost node(s) {lost:?}"), Some(round + 1));
                        }
                    }
                    self.events
                        .push_back(CoordinatorEvent::RoundDecided { round, outcome });
                }
            }
        }
        self.loss_out.extend(loss.drain_transmit());
        // Rejoins at a round boundary: the loss settled (its rounds decided, the survivors'
        // policy asked for and committed), nothing else being planned or installed.
        if !self.rejoining.is_empty()
            && loss.settled()
            && !self.replanner.request_pending()
            && coord.may_propose()
        {
            let joined = std::mem::take(&mut self.rejoining);
            for &node in &joined {
                if loss.readmit(node) {
                    coord.add_member(node);
                    let members = loss.members();
                    self.events
                        .push_back(CoordinatorEvent::NodeRejoined { node, members });
                }
            }
            let members = loss.members();
            let all = members.len() == self.hellos.len();
            self.replanner.set_members((!all).then(|| members.clone()));
            self.replanner
                .request(format!("rejoin of node(s) {joined:?}"), None);
        }
    }

    /// The next message for a node.
    pub fn poll_transmit(&mut self) -> Option<(NodeId, ControlMsg)> {
        if let Some(m) = self.loss_out.pop_front() {
            return Some(m);
        }
        self.coord.as_mut()?.poll_transmit()
    }

    /// The next thing to tell the operator.
    pub fn poll_event(&mut self) -> Option<CoordinatorEvent> {
        self.events.pop_front()
    }

    pub fn counters(&self) -> ClusterCounters {
        let r = &self.replanner.counters;
        let mut out = ClusterCounters {
            proposals: r.proposals,
            replans_measured: r.replans_measured,
            replans_prior: r.replans_prior,
            telemetry_accepted: r.telemetry_accepted,
            telemetry_rejected: r.telemetry_rejected,
            ..ClusterCounters::default()
        };
        if let Some(c) = &self.coord {
            out.commits = c.counters.committed;
            out.aborts = c.counters.aborted;
            out.retries = c.counters.retries;
            out.gave_up = c.counters.gave_up;
            out.committed_epoch = c.committed().map_or(0, |(e, _)| e);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::awareness::LinkSample;
    use crate::coordinator::{NodeAgent, NodeRoundStatus};
    use crate::planner::{by_name, PlannerOptions};
    use crate::replanner::Trigger;
    use crate::test_support::{link_samples, run, CoordinatorSide, Nodes, SECOND};

    const MBPS: f64 = 1e6;

    fn coordinator(topo: &Topology) -> ClusterCoordinator {
        let planner = by_name("spt", &PlannerOptions::default()).unwrap();
        ClusterCoordinator::new(
            planner,
            1e6,
            topo.clone(),
            ReplannerConfig::default(),
            CoordinatorConfig {
                lead_rounds: 2,
                ..CoordinatorConfig::default()
            },
        )
    }

    /// The coordinator with its events collected.
    struct Driven {
        cc: ClusterCoordinator,
        events: Vec<CoordinatorEvent>,
    }

    impl CoordinatorSide for Driven {
        fn handle(&mut self, now: Nanos, from: NodeId, msg: ControlMsg) {
            self.cc.handle_control(now, from, msg);
        }

        fn tick(&mut self, now: Nanos) {
            self.cc.handle_timeout(now).unwrap();
            self.events
                .extend(std::iter::from_fn(|| self.cc.poll_event()));
        }

        fn poll_transmit(&mut self) -> Option<(NodeId, ControlMsg)> {
            self.cc.poll_transmit()
        }
    }

    impl Driven {
        fn proposals(&self) -> Vec<&Proposal> {
            self.events
                .iter()
                .filter_map(|e| match e {
                    CoordinatorEvent::Proposed(p) => Some(p),
                    _ => None,
                })
                .collect()
        }
    }

    /// The coordinator of `topo` whose nodes all said hello at t = 0 (nothing installed).
    fn driven(topo: &Topology) -> Driven {
        let mut cc = coordinator(topo);
        let fresh = NodeHello {
            installed_epoch: 0,
            started_round: None,
            barrier_epoch: None,
        };
        for v in 0..topo.node_count() as NodeId {
            cc.handle_hello(0, v, fresh);
        }
        Driven {
            cc,
            events: Vec::new(),
        }
    }

    /// A 4-node mesh at 100 Mbit/s, driven, and its nodes.
    fn started() -> (Driven, Nodes, Topology) {
        let topo = Topology::full_mesh(4, 100.0 * MBPS, 20_000_000);
        (driven(&topo), Nodes::new(4), topo)
    }

    #[test]
    fn a_static_network_is_planned_once() {
        let (mut d, mut nodes, topo) = started();
        run(&mut d, &mut nodes, &topo, 0, 120 * SECOND, |_, _| {
            100.0 * MBPS
        });
        assert_eq!(d.events[0], CoordinatorEvent::Started { base_epoch: 0 });
        let proposals = d.proposals();
        assert_eq!(proposals.len(), 1, "{proposals:?}");
        assert_eq!(proposals[0].trigger, Trigger::FirstPolicy);
        assert_eq!(proposals[0].activate_at_round, 0);
        let c = d.cc.counters();
        assert_eq!((c.proposals, c.commits, c.replans_measured), (1, 1, 0));
        assert!(
            c.telemetry_accepted > 1000 && c.telemetry_rejected == 0,
            "{c:?}"
        );
        assert!(nodes.next_round > 1000, "rounds ran: {}", nodes.next_round);
    }

    #[test]
    fn a_rate_drop_is_planned_for_exactly_once() {
        let (mut d, mut nodes, topo) = started();
        // Link 1 -> 2 drops to a fifth at t = 30 s and stays there.
        let rate = |t: Nanos| {
            move |from: NodeId, to: NodeId| {
                if (from, to) == (1, 2) && t >= 30 * SECOND {
                    20.0 * MBPS
                } else {
                    100.0 * MBPS
                }
            }
        };
        run(&mut d, &mut nodes, &topo, 0, 30 * SECOND, rate(0));
        run(
            &mut d,
            &mut nodes,
            &topo,
            30 * SECOND,
            120 * SECOND,
            rate(30 * SECOND),
        );
        let proposals = d.proposals();
        assert_eq!(proposals.len(), 2, "{proposals:?}");
        let replan = proposals[1];
        assert_eq!(replan.trigger, Trigger::MeasuredChange);
        assert_eq!(replan.epoch, 2);
        assert_eq!(replan.refused, None);
        assert_eq!(
            replan.changed_links,
            [crate::awareness::LinkChange {
                from: 1,
                to: 2,
                planned_bps: 100.0 * MBPS,
                estimated_bps: 20.0 * MBPS
            }]
        );
        let c = d.cc.counters();
        assert_eq!(
            (c.replans_measured, c.commits, c.committed_epoch),
            (1, 2, 2)
        );
        // Committed everywhere, activated at a round no node had started; earlier rounds
        // ran under epoch 1 on every node, later ones under epoch 2.
        let at = replan.activate_at_round;
        assert!(d.events.contains(&CoordinatorEvent::Committed {
            epoch: 2,
            activate_at_round: at
        }));
        for v in 0..4 {
            assert_eq!(nodes.epoch_of_round(v, at - 1), Some(1));
            assert_eq!(nodes.epoch_of_round(v, at), Some(2));
        }
        assert!(nodes.next_round > at + 100);
        let estimate = d.cc.replanner().estimator().model();
        assert_eq!(estimate.topology.link(1, 2).unwrap().rate_bps, 20.0 * MBPS);
    }

    #[test]
    fn nothing_is_decided_before_every_hello_and_epochs_continue_after_a_restart() {
        let topo = Topology::full_mesh(3, 100.0 * MBPS, 20_000_000);
        let mut cc = coordinator(&topo);
        // A restarted coordinator: the nodes run epoch 4 at round 9, one waits on epoch 5.
        let hello = |barrier_epoch| NodeHello {
            installed_epoch: 4,
            started_round: Some(9),
            barrier_epoch,
        };
        cc.handle_hello(1, 0, hello(None));
        cc.handle_hello(1, 2, hello(Some(5)));
        cc.handle_control(2, 0, ControlMsg::Heartbeat { node: 0, round: 10 });
        cc.handle_timeout(3).unwrap();
        assert!(!cc.running());
        assert_eq!(cc.poll_event(), None);
        assert_eq!(cc.poll_transmit(), None);
        cc.handle_hello(4, 7, hello(None)); // not a node: ignored
        cc.handle_hello(4, 1, hello(None));
        cc.handle_timeout(5).unwrap();
        assert!(cc.running());
        assert_eq!(
            cc.poll_event(),
            Some(CoordinatorEvent::Started { base_epoch: 5 })
        );
        // A first policy after the rounds the nodes reported (9, from their hellos): 9 + 2.
        let Some(CoordinatorEvent::Proposed(p)) = cc.poll_event() else {
            panic!("no proposal");
        };
        assert_eq!((p.epoch, p.activate_at_round), (6, 11));
        let sent: Vec<NodeId> = std::iter::from_fn(|| cc.poll_transmit())
            .map(|(v, _)| v)
            .collect();
        assert_eq!(sent, [0, 1, 2]);
    }

    #[test]
    fn telemetry_is_retimed_to_the_coordinators_clock() {
        let topo = Topology::full_mesh(2, 100.0 * MBPS, 20_000_000);
        let mut d = driven(&topo);
        d.tick(SECOND);
        // A node whose clock is days ahead: its newest sample counts as of the arrival,
        // the older one keeps its distance (250 ms).
        let far = 200_000 * SECOND;
        let mut samples: Vec<LinkSample> = link_samples(&topo, far, |_, _| 90.0 * MBPS);
        samples[0].at = far - 250_000_000;
        samples.truncate(1);
        samples.extend(
            link_samples(&topo, far, |_, _| 90.0 * MBPS)
                .into_iter()
                .take(1),
        );
        d.cc.handle_control(2 * SECOND, 0, ControlMsg::Telemetry { node: 0, samples });
        d.tick(2 * SECOND);
        let c = d.cc.counters();
        assert_eq!((c.telemetry_accepted, c.telemetry_rejected), (2, 0));
        let est = d.cc.replanner().estimator().estimate(0, 1).unwrap();
        assert_eq!(est.updated_at, Some(2 * SECOND));
    }
    #[test]
    fn a_lost_node_fails_its_round_and_the_survivors_get_a_policy_without_it() {
        let (mut d, mut nodes, topo) = started();
        d.cc = std::mem::replace(&mut d.cc, coordinator(&topo)).with_peer_timeout(SECOND);
        run(&mut d, &mut nodes, &topo, 0, 5 * SECOND, |_, _| {
            100.0 * MBPS
        });
        let round = nodes.next_round - 1;
        // Node 3's data plane goes silent; the others say so for 1.2 s.
        let mut now = 5 * SECOND;
        for step in 0..=12 {
            now = 5 * SECOND + step * SECOND / 10;
            for v in 0..3 {
                let peers = vec![(3, Some(step * SECOND / 10)), ((v + 1) % 3, Some(0))];
                d.cc.handle_control(now, v, ControlMsg::PeerSilence { node: v, peers });
            }
            d.tick(now);
        }
        assert!(d.events.contains(&CoordinatorEvent::NodeLost {
            node: 3,
            members: vec![0, 1, 2]
        }));
        let sent: Vec<_> = std::iter::from_fn(|| d.cc.poll_transmit()).collect();
        assert_eq!(
            sent,
            (0..3)
                .map(|v| (v, ControlMsg::Freeze { round }))
                .collect::<Vec<_>>()
        );
        for v in 0..3 {
            let status = if v == 0 {
                NodeRoundStatus::Completed
            } else {
                NodeRoundStatus::Incomplete
            };
            d.cc.handle_control(
                now,
                v,
                ControlMsg::FrozenStatus {
                    node: v,
                    round,
                    status,
                },
            );
        }
        d.tick(now + SECOND / 100);
        assert!(d.events.contains(&CoordinatorEvent::RoundDecided {
            round,
            outcome: Outcome::Failed { lost: vec![3] }
        }));
        let sent: Vec<_> = std::iter::from_fn(|| d.cc.poll_transmit()).collect();
        let decides: Vec<_> = sent
            .iter()
            .filter(|(_, m)| matches!(m, ControlMsg::Decide { .. }))
            .collect();
        assert_eq!(decides.len(), 3, "{sent:?}");
        // The re-plan: prepared at the survivors only, over the survivors, from round + 1.
        d.tick(now + SECOND / 50);
        let sent: Vec<_> = std::iter::from_fn(|| d.cc.poll_transmit()).collect();
        let prepares: Vec<_> = sent
            .iter()
            .filter_map(|(v, m)| match m {
                ControlMsg::Prepare {
                    activate_at_round,
                    policy,
                    ..
                } => Some((*v, *activate_at_round, policy.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(
            prepares.iter().map(|p| p.0).collect::<Vec<_>>(),
            [0, 1, 2],
            "{sent:?}"
        );
        for (_, at, policy) in &prepares {
            assert_eq!(*at, round + 1);
            assert_eq!(policy.members.as_deref(), Some(&[0, 1, 2][..]));
            policy.validate(&topo).unwrap();
        }
    }

    #[test]
    fn the_last_member_is_told_it_is_alone_before_its_round_is_decided() {
        let topo = Topology::full_mesh(2, 100.0 * MBPS, 20_000_000);
        let mut d = driven(&topo);
        d.cc = std::mem::replace(&mut d.cc, coordinator(&topo)).with_peer_timeout(SECOND);
        let mut nodes = Nodes::new(2);
        run(&mut d, &mut nodes, &topo, 0, 3 * SECOND, |_, _| {
            100.0 * MBPS
        });
        let round = nodes.next_round - 1;
        for step in 0..=12 {
            let now = 3 * SECOND + step * SECOND / 10;
            let peers = vec![(1, Some(step * SECOND / 10))];
            d.cc.handle_control(now, 0, ControlMsg::PeerSilence { node: 0, peers });
            d.tick(now);
        }
        let sent: Vec<_> = std::iter::from_fn(|| d.cc.poll_transmit()).collect();
        assert_eq!(
            sent[..2],
            [(0, ControlMsg::Alone), (0, ControlMsg::Freeze { round })]
        );
        assert!(d.events.contains(&CoordinatorEvent::Alone { node: 0 }));
    }

    /// A 4-node cluster run by hand through a loss of node 3 and, optionally, its restart:
    /// a round every 100 ms among the alive nodes whose installed policies cover it, dp
    /// silences from the alive nodes every 100 ms, freezes answered "incomplete".
    struct LossSim {
        d: Driven,
        nodes: Nodes,
        alive: Vec<bool>,
        died_at: Nanos,
        now: Nanos,
        prepares: Vec<(NodeId, u32, u32, Policy, Vec<NodeId>)>,
        refusals: Vec<(NodeId, String)>,
        /// Per node, the rounds it started.
        rounds: Vec<Vec<u32>>,
    }

    use netstorm_dataplane::policy::Policy;

    impl LossSim {
        fn new() -> Self {
            let topo = Topology::full_mesh(4, 100.0 * MBPS, 20_000_000);
            let mut d = driven(&topo);
            d.cc = std::mem::replace(&mut d.cc, coordinator(&topo)).with_peer_timeout(SECOND);
            let mut sim = Self {
                d,
                nodes: Nodes::new(4),
                alive: vec![true; 4],
                died_at: 0,
                now: 0,
                prepares: Vec::new(),
                refusals: Vec::new(),
                rounds: vec![Vec::new(); 4],
            };
            sim.run_for(3 * SECOND);
            sim
        }

        fn covered(&self, v: usize, r: u32) -> bool {
            self.nodes.installed[v].iter().any(|&(_, at)| at <= r)
        }

        fn run_for(&mut self, span: Nanos) {
            let until = self.now + span;
            while self.now < until {
                self.now += 10_000_000;
                let now = self.now;
                if now.is_multiple_of(100_000_000) {
                    let r = self.nodes.next_round;
                    let part: Vec<usize> = (0..4)
                        .filter(|&v| self.alive[v] && self.covered(v, r))
                        .collect();
                    if !part.is_empty() && part.iter().all(|&v| self.nodes.agents[v].may_start(r)) {
                        self.nodes.next_round += 1;
                        for &v in &part {
                            self.rounds[v].push(r);
                            let hb = self.nodes.agents[v].started(r);
                            self.d.cc.handle_control(now, v as NodeId, hb);
                        }
                    }
                    for v in (0..4).filter(|&v| self.alive[v]) {
                        let peers = (0..4u16)
                            .filter(|&u| u as usize != v)
                            .map(|u| {
                                let s = if self.alive[u as usize] {
                                    0
                                } else {
                                    now - self.died_at
                                };
                                (u, Some(s))
                            })
                            .collect();
                        let node = v as NodeId;
                        self.d.cc.handle_control(
                            now,
                            node,
                            ControlMsg::PeerSilence { node, peers },
                        );
                    }
                }
                self.d.tick(now);
                while let Some((to, msg)) = self.d.cc.poll_transmit() {
                    if !self.alive[to as usize] {
                        continue;
                    }
                    let reply = match msg {
                        ControlMsg::Freeze { round } => Some(ControlMsg::FrozenStatus {
                            node: to,
                            round,
                            status: NodeRoundStatus::Incomplete,
                        }),
                        ControlMsg::Decide { .. } | ControlMsg::Alone => None,
                        ControlMsg::Refused { reason } => {
                            self.refusals.push((to, reason));
                            None
                        }
                        m => {
                            if let ControlMsg::Prepare {
                                epoch,
                                activate_at_round,
                                policy,
                                joined,
                            } = &m
                            {
                                self.prepares.push((
                                    to,
                                    *epoch,
                                    *activate_at_round,
                                    policy.clone(),
                                    joined.clone(),
                                ));
                            }
                            self.nodes.handle(to, m)
                        }
                    };
                    if let Some(reply) = reply {
                        self.d.cc.handle_control(now, to, reply);
                    }
                }
            }
        }

        /// Node 3's dp, cp and trainer die; the survivors run until its loss is settled
        /// and their policy runs.
        fn lose_3(&mut self) {
            self.alive[3] = false;
            self.died_at = self.now;
            self.run_for(4 * SECOND);
            assert!(self.d.events.iter().any(|e| matches!(
                e,
                CoordinatorEvent::RoundDecided {
                    outcome: Outcome::Failed { .. },
                    ..
                }
            )));
            assert_eq!(self.d.cc.peer_loss().unwrap().members(), [0, 1, 2]);
        }
    }

    #[test]
    fn a_lost_node_that_restarts_is_admitted_at_a_round_boundary_under_a_new_epoch() {
        let mut sim = LossSim::new();
        sim.lose_3();
        let survivors_epoch = sim.d.cc.counters().committed_epoch;
        let before = sim.nodes.next_round;
        assert!(
            sim.rounds[0].contains(&(before - 1)),
            "the survivors train on"
        );
        // Node 3 restarts: fresh dp (nothing installed, no round), fresh cp and agent.
        sim.nodes.agents[3] = NodeAgent::new(3, 0);
        sim.nodes.installed[3].clear();
        sim.rounds[3].clear();
        sim.alive[3] = true;
        sim.prepares.clear();
        let fresh = NodeHello {
            installed_epoch: 0,
            started_round: None,
            barrier_epoch: None,
        };
        sim.d.cc.handle_hello(sim.now, 3, fresh);
        sim.run_for(3 * SECOND);
        assert!(sim
            .d
            .events
            .contains(&CoordinatorEvent::RejoinRequested { node: 3 }));
        assert!(sim.d.events.contains(&CoordinatorEvent::NodeRejoined {
            node: 3,
            members: vec![0, 1, 2, 3]
        }));
        let loss = sim.d.cc.peer_loss().unwrap();
        assert!(loss.lost().is_empty() && loss.members() == [0, 1, 2, 3]);
        // One admitting Prepare per node, the rejoiner included, under a newer epoch, with
        // it as `joined`, over every node, at a round no member had started.
        let admitting: Vec<_> = sim.prepares.iter().filter(|p| p.4 == [3]).collect();
        assert_eq!(
            admitting.iter().map(|p| p.0).collect::<Vec<_>>(),
            [0, 1, 2, 3],
            "{:?}",
            sim.prepares
        );
        let (_, epoch, at, policy, _) = admitting[0].clone();
        assert!(epoch > survivors_epoch);
        assert!(
            at >= before,
            "activates at {at}, a member had started {}",
            before - 1
        );
        assert_eq!(policy.members, None, "over every node again");
        assert_eq!(sim.d.cc.counters().committed_epoch, epoch);
        // The rejoiner's first round is the activation round; from it on, every node runs
        // every round under the new epoch.
        assert_eq!(sim.rounds[3].first(), Some(&at), "{:?}", sim.rounds[3]);
        assert!(sim.nodes.next_round > at + 5);
        for v in 0..4 {
            assert_eq!(sim.nodes.epoch_of_round(v, at), Some(epoch));
            assert!(sim.rounds[v].contains(&(at + 5)));
        }
        assert!(sim.refusals.is_empty());
    }

    #[test]
    fn a_lost_node_back_with_its_old_data_plane_stays_refused_and_is_told_why() {
        let mut sim = LossSim::new();
        sim.lose_3();
        // Node 3 was cut off, not restarted: its dp still holds epoch 1 and round 20.
        sim.alive[3] = true;
        sim.prepares.clear();
        let stale = NodeHello {
            installed_epoch: 1,
            started_round: Some(20),
            barrier_epoch: None,
        };
        sim.d.cc.handle_hello(sim.now, 3, stale);
        sim.run_for(3 * SECOND);
        assert!(sim.d.events.iter().any(
            |e| matches!(e, CoordinatorEvent::LostNodeRefused { node: 3, reason } if reason.contains("stale"))
        ));
        assert_eq!(sim.refusals.len(), 1, "{:?}", sim.refusals);
        assert!(
            sim.refusals[0].1.contains("restart its netstorm-dp"),
            "{:?}",
            sim.refusals
        );
        assert!(!sim.d.events.iter().any(|e| matches!(
            e,
            CoordinatorEvent::NodeRejoined { .. } | CoordinatorEvent::RejoinRequested { .. }
        )));
        assert!(sim.prepares.iter().all(|p| p.0 != 3), "{:?}", sim.prepares);
        assert_eq!(sim.d.cc.peer_loss().unwrap().members(), [0, 1, 2]);
    }

    #[test]
    fn a_node_restarted_before_it_was_declared_lost_is_lost_then_admitted() {
        let mut sim = LossSim::new();
        // Node 3 restarts at once (its dp never went silent for the timeout).
        sim.nodes.agents[3] = NodeAgent::new(3, 0);
        sim.nodes.installed[3].clear();
        sim.rounds[3].clear();
        let fresh = NodeHello {
            installed_epoch: 0,
            started_round: None,
            barrier_epoch: None,
        };
        sim.d.cc.handle_hello(sim.now, 3, fresh);
        sim.run_for(4 * SECOND);
        let lost = sim
            .d
            .events
            .iter()
            .position(|e| matches!(e, CoordinatorEvent::NodeLost { node: 3, .. }));
        let failed = sim.d.events.iter().position(|e| {
            matches!(e, CoordinatorEvent::RoundDecided { outcome: Outcome::Failed { lost }, .. } if lost == &[3])
        });
        let rejoined = sim
            .d
            .events
            .iter()
            .position(|e| matches!(e, CoordinatorEvent::NodeRejoined { node: 3, .. }));
        assert!(
            lost < failed && failed < rejoined && lost.is_some(),
            "{:?}",
            sim.d.events
        );
        let at = sim.rounds[3]
            .first()
            .copied()
            .expect("node 3 runs rounds again");
        for v in 0..4 {
            assert!(
                sim.rounds[v].contains(&(at + 3)),
                "{v}: {:?}",
                sim.rounds[v]
            );
        }
    }
}
