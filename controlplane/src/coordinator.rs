//! Consistent policy updates: the coordinator's two-phase install and each node's agent.
//!
//! Sans-IO like the engine: both sides take messages and the time in, and hand messages out
//! (`poll_transmit`); the caller moves them (TCP between processes, delayed queues in the
//! emulator). The protocol, for a policy of epoch `E` that activates at round `A`:
//!
//! 1. **Prepare** `{E, A, policy}` to every node. A node that has not started round `A`
//!    stores it and answers **PrepareAck**, and from then on does not start round `A` or later
//!    until it learns the outcome ([`NodeAgent::may_start`]). A node already at or past `A`
//!    answers **PrepareNack** with its current round.
//! 2. Every node acknowledged → **Commit** `{E, A}` (the decision is final; it is resent
//!    until each node answers **CommitAck**). A node installs the policy in its engine at
//!    once; the engine switches at the start of round `A`.
//! 3. A Nack or no full set of acks within `prepare_timeout_ns` → **Abort** `{E}` (resent
//!    until **AbortAck**), and the coordinator retries by itself with a fresh epoch and an
//!    activation round beyond every round it has heard of.
//!
//! So every node runs round `A` under `E` or none does: a lost or late acknowledgement delays
//! activation (the nodes wait at round `A`, or the install is retried later), it never splits
//! the cluster. Rounds in flight finish under their own policy because the engine switches
//! only at a round start. Stale messages (older epochs) are ignored.

use crate::awareness::LinkSample;
use netstorm_dataplane::policy::Policy;
use netstorm_dataplane::{Nanos, NodeId};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Every message between the coordinator and the nodes' control planes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ControlMsg {
    /// Coordinator → node: get ready to run `policy` from round `activate_at_round` on.
    Prepare {
        epoch: u32,
        activate_at_round: u32,
        policy: Policy,
        /// Nodes this policy admits back (issue 19 rejoin): from `activate_at_round` on they
        /// take part, and every member's trainer must sync state before contributing.
        /// Empty (and absent on the wire) for every other policy.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        joined: Vec<NodeId>,
    },
    PrepareAck {
        node: NodeId,
        epoch: u32,
    },
    /// The node already started `current_round` ≥ the activation round.
    PrepareNack {
        node: NodeId,
        epoch: u32,
        current_round: u32,
    },
    Commit {
        epoch: u32,
        activate_at_round: u32,
    },
    CommitAck {
        node: NodeId,
        epoch: u32,
    },
    Abort {
        epoch: u32,
    },
    AbortAck {
        node: NodeId,
        epoch: u32,
    },
    /// Node → coordinator: liveness and the newest round the node started.
    Heartbeat {
        node: NodeId,
        round: u32,
    },
    /// Node → coordinator: link measurements for the network model.
    Telemetry {
        node: NodeId,
        samples: Vec<LinkSample>,
    },
    /// Node → leader: how long its data plane has not heard from each peer, nanoseconds
    /// (`None`: never). Feeds loss detection ([`crate::peer_loss`]).
    PeerSilence {
        node: NodeId,
        peers: Vec<(NodeId, Option<u64>)>,
    },
    /// Leader → node: a node was lost; stop releasing `round` on your own and say where it
    /// stands.
    Freeze {
        round: u32,
    },
    /// Node → leader: where `round` stands over all the node's workers.
    FrozenStatus {
        node: NodeId,
        round: u32,
        status: NodeRoundStatus,
    },
    /// Leader → node: the outcome of a frozen round: succeeded when `lost` is empty, else
    /// failed, losing `lost`.
    Decide {
        round: u32,
        lost: Vec<NodeId>,
    },
    /// Leader → node: every other node was lost; no round can run.
    Alone,
    /// Leader → node: your hello was refused (a node declared lost that came back without
    /// restarting its data plane: its epoch is stale); `reason` says what to do.
    Refused {
        reason: String,
    },
}

/// Where a frozen round stands at a node (all its workers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeRoundStatus {
    /// Every worker released it: the trainer has (or may have) the result.
    Released,
    /// Every worker holds the full result (some not released).
    Completed,
    /// Some worker has no full result (and, frozen, never releases it on its own).
    Incomplete,
}

/// Coordinator timers.
#[derive(Debug, Clone, PartialEq)]
pub struct CoordinatorConfig {
    /// Resend an unanswered Prepare / Commit / Abort after this long.
    pub retransmit_ns: Nanos,
    /// Give up on a Prepare that is not fully acknowledged after this long (then Abort and
    /// retry with a later activation round).
    pub prepare_timeout_ns: Nanos,
    /// A retry activates this many rounds after the newest round any node reported.
    pub lead_rounds: u32,
    /// Retries of one proposal after Nacks or timeouts before giving up on it (the cluster
    /// keeps its current policy; the caller may propose again later).
    pub max_retries: u32,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            retransmit_ns: 200_000_000,
            prepare_timeout_ns: 2_000_000_000,
            lead_rounds: 1,
            max_retries: 3,
        }
    }
}

/// What the coordinator is doing about one epoch.
#[derive(Debug, Clone, PartialEq)]
enum Phase {
    Preparing { acked: Vec<bool>, started_at: Nanos },
    Committing { acked: Vec<bool> },
    Aborting { acked: Vec<bool> },
}

#[derive(Debug, Clone)]
struct Txn {
    epoch: u32,
    activate_at_round: u32,
    policy: Policy,
    /// Nodes the policy admits back (see [`ControlMsg::Prepare`]).
    joined: Vec<NodeId>,
    phase: Phase,
    last_send: Nanos,
    /// Retries behind this attempt.
    retry: u32,
}

/// Counters of the coordinator's protocol work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoordinatorCounters {
    pub proposed: u64,
    pub committed: u64,
    pub aborted: u64,
    pub retries: u64,
    /// Proposals abandoned after `max_retries`.
    pub gave_up: u64,
    pub resent: u64,
    pub stale_ignored: u64,
}

/// Why a proposal was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProposeError {
    #[error("policy epoch {epoch} is not newer than epoch {newest}")]
    StaleEpoch { epoch: u32, newest: u32 },
    #[error("policy is for {policy} nodes, the cluster has {cluster}")]
    NodeCount { policy: usize, cluster: usize },
}

/// The coordinator's side of the two-phase install, for nodes `0..n`.
#[derive(Debug)]
pub struct Coordinator {
    cfg: CoordinatorConfig,
    n: usize,
    /// Open transactions, oldest first (a commit may still be collecting acks while the
    /// next epoch prepares).
    txns: Vec<Txn>,
    /// Newest epoch proposed (committed or not).
    newest_epoch: u32,
    committed: Option<(u32, u32)>,
    /// Newest round each node reported.
    node_round: Vec<Option<u32>>,
    last_heard: Vec<Option<Nanos>>,
    /// Nodes taking part (issue 19): a lost node is sent nothing and acknowledges nothing.
    member: Vec<bool>,
    /// Members added back whose admitting policy has not committed yet: every proposal
    /// carries them as `joined` (retries too), and [`Coordinator::may_propose`] does not
    /// wait for their rounds (a fresh data plane has started none).
    joining: Vec<NodeId>,
    out: VecDeque<(NodeId, ControlMsg)>,
    telemetry: VecDeque<(NodeId, Vec<LinkSample>)>,
    pub counters: CoordinatorCounters,
}

impl Coordinator {
    /// A coordinator for nodes `0..node_count`; `installed_epoch` is the epoch every node
    /// already runs (0 when none).
    pub fn new(node_count: usize, installed_epoch: u32, cfg: CoordinatorConfig) -> Self {
        Self {
            cfg,
            n: node_count,
            txns: Vec::new(),
            newest_epoch: installed_epoch,
            committed: None,
            node_round: vec![None; node_count],
            last_heard: vec![None; node_count],
            member: vec![true; node_count],
            joining: Vec::new(),
            out: VecDeque::new(),
            telemetry: VecDeque::new(),
            counters: CoordinatorCounters::default(),
        }
    }

    /// An acknowledgement vector: non-members count as acknowledged.
    fn unacked(&self) -> Vec<bool> {
        self.member.iter().map(|&m| !m).collect()
    }

    fn member_ids(&self) -> Vec<usize> {
        (0..self.n).filter(|&v| self.member[v]).collect()
    }

    /// Whether `node` takes part in installs.
    pub fn is_member(&self, node: NodeId) -> bool {
        self.member.get(node as usize).copied().unwrap_or(false)
    }

    /// Takes `node` out of the installs (it was lost): it is sent nothing more, and the
    /// open transactions stop waiting for it.
    pub fn remove_member(&mut self, now: Nanos, node: NodeId) {
        let v = node as usize;
        if !self.is_member(node) {
            return;
        }
        self.member[v] = false;
        self.joining.retain(|&j| j != node);
        let mut i = 0;
        while i < self.txns.len() {
            let all = match &mut self.txns[i].phase {
                Phase::Preparing { acked, .. }
                | Phase::Committing { acked }
                | Phase::Aborting { acked } => {
                    acked[v] = true;
                    acked.iter().all(|&a| a)
                }
            };
            if all {
                match self.txns[i].phase {
                    Phase::Preparing { .. } => self.decide_commit(now, i),
                    _ => {
                        self.txns.remove(i);
                        continue;
                    }
                }
            }
            i += 1;
        }
    }

    /// Lets `node` take part in installs again (it rejoined with a fresh data plane): the
    /// rounds it reported before are forgotten, and the next proposals carry it as `joined`
    /// until one commits.
    pub fn add_member(&mut self, node: NodeId) {
        let v = node as usize;
        if v >= self.n || self.member[v] {
            return;
        }
        self.member[v] = true;
        self.node_round[v] = None;
        if !self.joining.contains(&node) {
            self.joining.push(node);
            self.joining.sort_unstable();
        }
    }

    /// Members added back whose admitting policy has not committed yet.
    pub fn joining(&self) -> &[NodeId] {
        &self.joining
    }

    /// The newest committed `(epoch, activate_at_round)`.
    pub fn committed(&self) -> Option<(u32, u32)> {
        self.committed
    }

    /// Newest epoch proposed so far (the next proposal must be newer).
    pub fn newest_epoch(&self) -> u32 {
        self.newest_epoch
    }

    /// Whether an install is still undecided (prepared but neither committed nor aborted).
    pub fn deciding(&self) -> bool {
        self.txns
            .iter()
            .any(|t| matches!(t.phase, Phase::Preparing { .. }))
    }

    /// Whether a new proposal is safe now: nothing undecided, and every node has reported
    /// starting the last committed activation round (an engine holds one pending policy;
    /// a second commit before the first activated everywhere could skip an epoch on a
    /// lagging node).
    pub fn may_propose(&self) -> bool {
        if self.deciding() {
            return false;
        }
        match self.committed {
            None => true,
            Some((_, at)) => {
                self.node_round
                    .iter()
                    .zip(&self.member)
                    .enumerate()
                    .all(|(v, (r, &m))| {
                        !m || self.joining.contains(&(v as NodeId)) || r.is_some_and(|r| r >= at)
                    })
            }
        }
    }

    /// Newest round any node reported.
    pub fn newest_round(&self) -> Option<u32> {
        self.node_round.iter().flatten().copied().max()
    }

    /// The newest round `node` reported starting.
    pub fn node_round(&self, node: NodeId) -> Option<u32> {
        self.node_round.get(node as usize).copied().flatten()
    }

    /// When each node was last heard from (for liveness checks).
    pub fn last_heard(&self, node: NodeId) -> Option<Nanos> {
        self.last_heard.get(node as usize).copied().flatten()
    }

    /// The earliest round a new proposal can safely activate at: past every round heard of.
    pub fn safe_activation_round(&self) -> u32 {
        self.newest_round()
            .map_or(self.cfg.lead_rounds, |r| r + self.cfg.lead_rounds)
    }

    /// Starts installing `policy` (its epoch must be newer than any proposed) from round
    /// `activate_at_round`. An undecided earlier proposal is aborted: the newest wins.
    pub fn propose(
        &mut self,
        now: Nanos,
        policy: Policy,
        activate_at_round: u32,
    ) -> Result<(), ProposeError> {
        if policy.epoch <= self.newest_epoch {
            return Err(ProposeError::StaleEpoch {
                epoch: policy.epoch,
                newest: self.newest_epoch,
            });
        }
        if policy.node_count as usize != self.n {
            return Err(ProposeError::NodeCount {
                policy: policy.node_count as usize,
                cluster: self.n,
            });
        }
        let (unacked, members) = (self.unacked(), self.member_ids());
        for t in &mut self.txns {
            if matches!(t.phase, Phase::Preparing { .. }) {
                t.phase = Phase::Aborting {
                    acked: unacked.clone(),
                };
                t.last_send = now;
                self.counters.aborted += 1;
                for &v in &members {
                    self.out
                        .push_back((v as NodeId, ControlMsg::Abort { epoch: t.epoch }));
                }
            }
        }
        self.counters.proposed += 1;
        self.newest_epoch = policy.epoch;
        self.start_prepare(now, policy, activate_at_round, 0);
        Ok(())
    }

    fn start_prepare(&mut self, now: Nanos, policy: Policy, activate_at_round: u32, retry: u32) {
        let epoch = policy.epoch;
        let joined = self.joining.clone();
        for v in self.member_ids() {
            self.out.push_back((
                v as NodeId,
                ControlMsg::Prepare {
                    epoch,
                    activate_at_round,
                    policy: policy.clone(),
                    joined: joined.clone(),
                },
            ));
        }
        self.txns.push(Txn {
            epoch,
            activate_at_round,
            policy,
            joined,
            phase: Phase::Preparing {
                acked: self.unacked(),
                started_at: now,
            },
            last_send: now,
            retry,
        });
    }

    /// Handles a message from `from`.
    pub fn handle(&mut self, now: Nanos, from: NodeId, msg: ControlMsg) {
        let v = from as usize;
        if v >= self.n {
            self.counters.stale_ignored += 1;
            return;
        }
        self.last_heard[v] = Some(now);
        let Some(i) = (match &msg {
            ControlMsg::PrepareAck { epoch, .. }
            | ControlMsg::PrepareNack { epoch, .. }
            | ControlMsg::CommitAck { epoch, .. }
            | ControlMsg::AbortAck { epoch, .. } => {
                let e = *epoch;
                let i = self.txns.iter().position(|t| t.epoch == e);
                if i.is_none() {
                    self.counters.stale_ignored += 1;
                }
                i
            }
            ControlMsg::Heartbeat { round, .. } => {
                let r = &mut self.node_round[v];
                *r = Some(r.map_or(*round, |x| x.max(*round)));
                None
            }
            ControlMsg::Telemetry { samples, .. } => {
                self.telemetry.push_back((from, samples.clone()));
                None
            }
            _ => {
                self.counters.stale_ignored += 1;
                None
            }
        }) else {
            return;
        };
        match (&msg, &mut self.txns[i].phase) {
            (ControlMsg::PrepareAck { .. }, Phase::Preparing { acked, .. }) => {
                acked[v] = true;
                if acked.iter().all(|&a| a) {
                    self.decide_commit(now, i);
                }
            }
            (ControlMsg::PrepareNack { current_round, .. }, Phase::Preparing { .. }) => {
                let r = &mut self.node_round[v];
                *r = Some(r.map_or(*current_round, |x| x.max(*current_round)));
                self.abort_and_retry(now, i);
            }
            (ControlMsg::CommitAck { .. }, Phase::Committing { acked })
            | (ControlMsg::AbortAck { .. }, Phase::Aborting { acked }) => {
                acked[v] = true;
                if acked.iter().all(|&a| a) {
                    self.txns.remove(i);
                }
            }
            _ => self.counters.stale_ignored += 1,
        }
    }

    fn decide_commit(&mut self, now: Nanos, i: usize) {
        let (unacked, members) = (self.unacked(), self.member_ids());
        let t = &mut self.txns[i];
        t.phase = Phase::Committing { acked: unacked };
        t.last_send = now;
        self.committed = Some((t.epoch, t.activate_at_round));
        self.counters.committed += 1;
        self.joining.retain(|v| !t.joined.contains(v));
        for v in members {
            self.out.push_back((
                v as NodeId,
                ControlMsg::Commit {
                    epoch: t.epoch,
                    activate_at_round: t.activate_at_round,
                },
            ));
        }
    }

    /// Aborts transaction `i` and proposes the same trees again under a new epoch, after
    /// every round heard of.
    fn abort_and_retry(&mut self, now: Nanos, i: usize) {
        let (unacked, members) = (self.unacked(), self.member_ids());
        let t = &mut self.txns[i];
        t.phase = Phase::Aborting { acked: unacked };
        t.last_send = now;
        let epoch = t.epoch;
        let retry = t.retry + 1;
        let aborted_at = t.activate_at_round;
        let mut policy = t.policy.clone();
        self.counters.aborted += 1;
        for v in members {
            self.out
                .push_back((v as NodeId, ControlMsg::Abort { epoch }));
        }
        // Only the newest proposal is retried; an older one was superseded anyway.
        if epoch != self.newest_epoch {
            return;
        }
        if retry > self.cfg.max_retries {
            self.counters.gave_up += 1;
            return;
        }
        self.counters.retries += 1;
        self.newest_epoch += 1;
        policy.epoch = self.newest_epoch;
        // Past every round heard of. With none heard, the aborted proposal's own round is
        // still safe (a node already past it refuses with PrepareNack), and it must be kept:
        // moved to `lead_rounds`, a first policy would leave rounds 0.. uncovered, and no
        // node could ever start (found as a start-up hang on a loaded host).
        let at = match self.newest_round() {
            Some(_) => self.safe_activation_round(),
            None => aborted_at,
        };
        self.start_prepare(now, policy, at, retry);
    }

    /// The next message to send, with its destination.
    pub fn poll_transmit(&mut self) -> Option<(NodeId, ControlMsg)> {
        self.out.pop_front()
    }

    /// Telemetry received from the nodes, oldest first.
    pub fn poll_telemetry(&mut self) -> Option<(NodeId, Vec<LinkSample>)> {
        self.telemetry.pop_front()
    }

    /// When [`Coordinator::handle_timeout`] must next run.
    pub fn poll_timeout(&self) -> Option<Nanos> {
        self.txns
            .iter()
            .map(|t| {
                let resend = t.last_send + self.cfg.retransmit_ns;
                match t.phase {
                    Phase::Preparing { started_at, .. } => {
                        resend.min(started_at + self.cfg.prepare_timeout_ns)
                    }
                    _ => resend,
                }
            })
            .min()
    }

    /// Resends what is unanswered; aborts prepares that took too long.
    pub fn handle_timeout(&mut self, now: Nanos) {
        let mut i = 0;
        while i < self.txns.len() {
            let t = &self.txns[i];
            if let Phase::Preparing { started_at, .. } = t.phase {
                if now >= started_at + self.cfg.prepare_timeout_ns {
                    self.abort_and_retry(now, i);
                    i += 1;
                    continue;
                }
            }
            if now >= t.last_send + self.cfg.retransmit_ns {
                let t = &mut self.txns[i];
                t.last_send = now;
                let (acked, msg) = match &t.phase {
                    Phase::Preparing { acked, .. } => (
                        acked,
                        ControlMsg::Prepare {
                            epoch: t.epoch,
                            activate_at_round: t.activate_at_round,
                            policy: t.policy.clone(),
                            joined: t.joined.clone(),
                        },
                    ),
                    Phase::Committing { acked } => (
                        acked,
                        ControlMsg::Commit {
                            epoch: t.epoch,
                            activate_at_round: t.activate_at_round,
                        },
                    ),
                    Phase::Aborting { acked } => (acked, ControlMsg::Abort { epoch: t.epoch }),
                };
                for (v, _) in acked.iter().enumerate().filter(|(_, a)| !**a) {
                    self.counters.resent += 1;
                    // A node that lost its prepared copy (restart) needs the policy again
                    // before the commit means anything to it.
                    if let ControlMsg::Commit { .. } = msg {
                        self.out.push_back((
                            v as NodeId,
                            ControlMsg::Prepare {
                                epoch: t.epoch,
                                activate_at_round: t.activate_at_round,
                                policy: t.policy.clone(),
                                joined: t.joined.clone(),
                            },
                        ));
                    }
                    self.out.push_back((v as NodeId, msg.clone()));
                }
            }
            i += 1;
        }
    }
}

/// Counters of a node agent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AgentCounters {
    pub prepared: u64,
    pub nacked: u64,
    pub committed: u64,
    pub aborted: u64,
    pub stale_ignored: u64,
}

/// One node's side: remembers what it prepared, gates round starts on undecided
/// activations, and hands committed policies to the engine.
#[derive(Debug)]
pub struct NodeAgent {
    node: NodeId,
    /// Newest epoch committed here.
    committed_epoch: u32,
    /// Prepared and undecided: `(epoch, activate_at_round, policy)`.
    prepared: Option<(u32, u32, Policy)>,
    /// Committed, not yet handed to the engine.
    to_install: VecDeque<(Policy, u32)>,
    /// Newest round this node started.
    current_round: Option<u32>,
    pub counters: AgentCounters,
}

impl NodeAgent {
    /// The agent of `node`, whose engine already runs `installed_epoch` (0 when none).
    pub fn new(node: NodeId, installed_epoch: u32) -> Self {
        Self {
            node,
            committed_epoch: installed_epoch,
            prepared: None,
            to_install: VecDeque::new(),
            current_round: None,
            counters: AgentCounters::default(),
        }
    }

    pub fn node(&self) -> NodeId {
        self.node
    }

    /// Newest epoch committed at this node.
    pub fn committed_epoch(&self) -> u32 {
        self.committed_epoch
    }

    /// Whether the node may start `round` now: not while a prepared, undecided policy would
    /// activate at or before it (the coordinator may still commit it).
    pub fn may_start(&self, round: u32) -> bool {
        self.prepared.as_ref().is_none_or(|(_, at, _)| *at > round)
    }

    /// The first round this node must not start yet (an undecided activation), if any.
    pub fn barrier(&self) -> Option<u32> {
        self.prepared.as_ref().map(|(_, at, _)| *at)
    }

    /// Records that the node started `round` (call right after `may_start` said yes).
    /// Returns the heartbeat to send.
    pub fn started(&mut self, round: u32) -> ControlMsg {
        self.current_round = Some(self.current_round.map_or(round, |r| r.max(round)));
        ControlMsg::Heartbeat {
            node: self.node,
            round,
        }
    }

    /// A committed policy for the engine: `(policy, activate_round)`.
    pub fn take_install(&mut self) -> Option<(Policy, u32)> {
        self.to_install.pop_front()
    }

    /// Handles a coordinator message; returns the reply, if any.
    pub fn handle(&mut self, msg: ControlMsg) -> Option<ControlMsg> {
        let node = self.node;
        match msg {
            ControlMsg::Prepare {
                epoch,
                activate_at_round,
                policy,
                ..
            } => {
                if epoch <= self.committed_epoch {
                    // Already decided here (a resend): the commit ack will follow the Commit.
                    self.counters.stale_ignored += 1;
                    return None;
                }
                if let Some((e, at, p)) = &mut self.prepared {
                    if *e == epoch {
                        // A resend, or a restarted coordinator that reused the epoch number
                        // with other trees: the newest Prepare of an undecided epoch wins
                        // (the coordinator commits only after acks to what it sent last).
                        if *p != policy || *at != activate_at_round {
                            *p = policy;
                            *at = activate_at_round;
                        }
                        return Some(ControlMsg::PrepareAck { node, epoch });
                    }
                }
                if self.prepared.as_ref().is_some_and(|(e, _, _)| *e > epoch) {
                    self.counters.stale_ignored += 1;
                    return None;
                }
                if let Some(r) = self.current_round.filter(|r| *r >= activate_at_round) {
                    self.counters.nacked += 1;
                    return Some(ControlMsg::PrepareNack {
                        node,
                        epoch,
                        current_round: r,
                    });
                }
                if policy.epoch != epoch {
                    self.counters.stale_ignored += 1;
                    return None;
                }
                self.counters.prepared += 1;
                self.prepared = Some((epoch, activate_at_round, policy));
                Some(ControlMsg::PrepareAck { node, epoch })
            }
            ControlMsg::Commit { epoch, .. } => {
                if epoch <= self.committed_epoch {
                    return Some(ControlMsg::CommitAck { node, epoch });
                }
                match self.prepared.take() {
                    Some((e, at, policy)) if e == epoch => {
                        self.committed_epoch = epoch;
                        self.counters.committed += 1;
                        self.to_install.push_back((policy, at));
                        Some(ControlMsg::CommitAck { node, epoch })
                    }
                    other => {
                        // Never prepared this epoch (restarted, or the Prepare was lost):
                        // no ack, so the coordinator resends Prepare + Commit.
                        self.prepared = other;
                        self.counters.stale_ignored += 1;
                        None
                    }
                }
            }
            ControlMsg::Abort { epoch } => {
                if self.prepared.as_ref().is_some_and(|(e, _, _)| *e == epoch) {
                    self.prepared = None;
                    self.counters.aborted += 1;
                }
                Some(ControlMsg::AbortAck { node, epoch })
            }
            _ => {
                self.counters.stale_ignored += 1;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netstorm_dataplane::policy::PolicyBuilder;

    fn policy(epoch: u32, n: u16) -> Policy {
        let mut b = PolicyBuilder::new();
        let parents: Vec<Option<Vec<NodeId>>> =
            (0..n).map(|v| (v != 0).then(|| vec![v, 0])).collect();
        let bparents: Vec<Option<Vec<NodeId>>> =
            (0..n).map(|v| (v != 0).then(|| vec![0, v])).collect();
        b.tree_with_routes(0, 1.0, &parents, &bparents, Default::default());
        b.build(epoch, n)
    }

    /// Delivers every queued message instantly (optionally dropping some) until quiet.
    fn pump(
        c: &mut Coordinator,
        agents: &mut [NodeAgent],
        now: Nanos,
        drop: &mut impl FnMut(&ControlMsg) -> bool,
    ) {
        while let Some((to, msg)) = c.poll_transmit() {
            if drop(&msg) {
                continue;
            }
            if let Some(reply) = agents[to as usize].handle(msg) {
                if drop(&reply) {
                    continue;
                }
                c.handle(now, to, reply);
            }
        }
    }

    #[test]
    fn commit_reaches_every_node_and_gates_until_decided() {
        let mut c = Coordinator::new(3, 1, CoordinatorConfig::default());
        let mut agents: Vec<NodeAgent> = (0..3).map(|v| NodeAgent::new(v, 1)).collect();
        c.propose(0, policy(2, 3), 5).unwrap();
        // Deliver only the prepares: every node is gated at round 5, not before.
        let mut replies = Vec::new();
        while let Some((to, msg)) = c.poll_transmit() {
            replies.push((to, agents[to as usize].handle(msg).unwrap()));
        }
        for a in &agents {
            assert!(a.may_start(4));
            assert!(!a.may_start(5));
        }
        for (to, r) in replies {
            c.handle(1, to, r);
        }
        assert_eq!(c.committed(), Some((2, 5)));
        pump(&mut c, &mut agents, 2, &mut |_| false);
        for a in &mut agents {
            assert!(a.may_start(5));
            let (p, at) = a.take_install().unwrap();
            assert_eq!((p.epoch, at), (2, 5));
            assert_eq!(a.committed_epoch(), 2);
        }
        assert!(!c.deciding());
        assert_eq!(
            c.poll_timeout(),
            None,
            "all acks in: nothing left to resend"
        );
    }

    #[test]
    fn node_past_activation_round_causes_abort_and_retry_later() {
        let mut c = Coordinator::new(3, 1, CoordinatorConfig::default());
        let mut agents: Vec<NodeAgent> = (0..3).map(|v| NodeAgent::new(v, 1)).collect();
        for a in agents.iter_mut() {
            c.handle(0, a.node(), a.started(3));
        }
        let _ = agents[2].started(6); // node 2 raced ahead (heartbeat lost)
        c.propose(0, policy(2, 3), 5).unwrap();
        pump(&mut c, &mut agents, 1, &mut |_| false);
        assert_eq!(c.counters.aborted, 1);
        assert_eq!(c.counters.retries, 1);
        // The retry activates after node 2's round, under a new epoch, on every node.
        assert_eq!(
            c.committed(),
            Some((3, 6 + CoordinatorConfig::default().lead_rounds))
        );
        for a in &mut agents {
            let (p, at) = a.take_install().unwrap();
            assert_eq!(
                (p.epoch, at),
                (3, 6 + CoordinatorConfig::default().lead_rounds)
            );
            assert!(
                a.take_install().is_none(),
                "the aborted epoch is never installed"
            );
        }
    }

    #[test]
    fn lost_messages_delay_but_never_split() {
        // Drop the first copy of every ack; the retransmit timer recovers.
        let mut c = Coordinator::new(4, 1, CoordinatorConfig::default());
        let mut agents: Vec<NodeAgent> = (0..4).map(|v| NodeAgent::new(v, 1)).collect();
        c.propose(0, policy(2, 4), 10).unwrap();
        let mut seen = std::collections::HashSet::new();
        let mut drop_first = |m: &ControlMsg| {
            matches!(
                m,
                ControlMsg::PrepareAck { .. } | ControlMsg::CommitAck { .. }
            ) && seen.insert(format!("{m:?}"))
        };
        pump(&mut c, &mut agents, 0, &mut drop_first);
        assert_eq!(c.committed(), None, "no ack arrived");
        assert!(
            agents.iter().all(|a| !a.may_start(10)),
            "all wait for the outcome"
        );
        let mut now = 0;
        while let Some(t) = c.poll_timeout() {
            now = t;
            c.handle_timeout(now);
            pump(&mut c, &mut agents, now, &mut drop_first);
        }
        assert!(now < CoordinatorConfig::default().prepare_timeout_ns);
        assert_eq!(c.committed(), Some((2, 10)));
        assert!(agents.iter_mut().all(|a| a.take_install().is_some()));
        assert!(c.poll_timeout().is_none());
    }

    #[test]
    fn silent_node_times_out_then_everyone_is_released() {
        let cfg = CoordinatorConfig::default();
        let mut c = Coordinator::new(3, 1, cfg.clone());
        let mut agents: Vec<NodeAgent> = (0..3).map(|v| NodeAgent::new(v, 1)).collect();
        c.propose(0, policy(2, 3), 4).unwrap();
        // Node 2 hears nothing and says nothing.
        let mut mute = |m: &ControlMsg| {
            matches!(
                m,
                ControlMsg::PrepareAck { node: 2, .. } | ControlMsg::AbortAck { node: 2, .. }
            )
        };
        pump(&mut c, &mut agents, 0, &mut mute);
        // Bounded: the coordinator retries `max_retries` times, then gives up.
        for step in 1..=100u64 {
            let now = step * cfg.retransmit_ns;
            c.handle_timeout(now);
            pump(&mut c, &mut agents, now, &mut mute);
        }
        assert_eq!(c.counters.retries, cfg.max_retries as u64);
        assert_eq!(c.counters.gave_up, 1);
        assert!(!c.deciding());
        assert!(
            agents[0].may_start(1000) && agents[1].may_start(1000),
            "aborts release every gate"
        );
        assert!(agents.iter_mut().all(|a| a.take_install().is_none()));
        assert_eq!(c.committed(), None);
    }

    #[test]
    fn a_timed_out_first_policy_is_retried_from_the_same_round() {
        // The first policy activates at round 0; node 1's acks are late (a stalled process).
        // The retry must still cover round 0, or no node could ever start a round.
        let cfg = CoordinatorConfig::default();
        let mut c = Coordinator::new(2, 1, cfg.clone());
        let mut agents: Vec<NodeAgent> = (0..2).map(|v| NodeAgent::new(v, 1)).collect();
        c.propose(0, policy(2, 2), 0).unwrap();
        let mut late = |m: &ControlMsg| matches!(m, ControlMsg::PrepareAck { node: 1, .. });
        pump(&mut c, &mut agents, 0, &mut late);
        let mut now = 0;
        while c.counters.retries == 0 {
            now += cfg.retransmit_ns;
            c.handle_timeout(now);
            pump(&mut c, &mut agents, now, &mut late);
        }
        // Node 1 is back: everything from now on is delivered.
        for _ in 0..10 {
            now += cfg.retransmit_ns;
            c.handle_timeout(now);
            pump(&mut c, &mut agents, now, &mut |_| false);
        }
        assert_eq!(c.committed(), Some((3, 0)), "the retry keeps round 0");
        for a in &mut agents {
            assert!(a.may_start(0));
            assert_eq!(a.take_install().map(|(p, at)| (p.epoch, at)), Some((3, 0)));
        }
    }

    #[test]
    fn stale_and_foreign_messages_are_ignored() {
        let mut a = NodeAgent::new(1, 5);
        assert_eq!(
            a.handle(ControlMsg::Prepare {
                epoch: 4,
                activate_at_round: 9,
                policy: policy(4, 3),
                joined: Vec::new(),
            }),
            None
        );
        assert!(a.may_start(100));
        assert_eq!(
            a.handle(ControlMsg::Commit {
                epoch: 7,
                activate_at_round: 9
            }),
            None
        );
        assert!(a.take_install().is_none());
        let mut c = Coordinator::new(3, 5, CoordinatorConfig::default());
        assert!(matches!(
            c.propose(0, policy(5, 3), 1),
            Err(ProposeError::StaleEpoch { .. })
        ));
        assert!(matches!(
            c.propose(0, policy(6, 4), 1),
            Err(ProposeError::NodeCount { .. })
        ));
        c.handle(0, 9, ControlMsg::PrepareAck { node: 9, epoch: 6 });
        c.handle(0, 1, ControlMsg::CommitAck { node: 1, epoch: 3 });
        assert_eq!(c.counters.stale_ignored, 2);
    }

    #[test]
    fn control_messages_round_trip_through_json() {
        let m = ControlMsg::Prepare {
            epoch: 3,
            activate_at_round: 7,
            policy: policy(3, 3),
            joined: Vec::new(),
        };
        let s = serde_json::to_string(&m).unwrap();
        assert!(
            !s.contains("joined"),
            "absent when empty (older cps parse it): {s}"
        );
        assert_eq!(serde_json::from_str::<ControlMsg>(&s).unwrap(), m);
        let m = ControlMsg::Prepare {
            epoch: 3,
            activate_at_round: 7,
            policy: policy(3, 3),
            joined: vec![2],
        };
        let s = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<ControlMsg>(&s).unwrap(), m);
    }
}
