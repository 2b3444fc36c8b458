//! The coordinator state replicated among the control planes with Raft (TiKV's raft-rs).
//!
//! One coordinator process was a single point of failure: if it died between Prepare and
//! Commit the cluster blocked for good. Now every control plane runs a [`Replica`]; the Raft
//! leader is the coordinator, and what it must not forget — the members, the committed epoch
//! and policy, the install in flight, round outcomes ([`ClusterState`]) — is a Raft log entry
//! ([`Entry`]) committed by a majority *before* the leader acts on it. Losing the leader elects
//! another, which resolves the install it finds in flight; a minority commits nothing, so it
//! never installs a policy.
//!
//! Sans-IO like the engine: the caller feeds [`Replica::tick`] (one tick per
//! [`ReplicaConfig`] tick interval of its clock), peers' bytes ([`Replica::step`]) and proposals
//! ([`Replica::propose`]), and drains [`Replica::poll`]: bytes to send per peer, entries
//! applied to the [`ClusterState`], and [`ReplicaEvent`]s (leader changes, "leader ready").
//! Nothing here reads a clock, a socket or a random number: every replica's election timeout is
//! fixed, so the same inputs give the same run (the in-process tests rely on it).
//!
//! * **Ids**: node ids start at 0; a Raft id is node id + 1 (raft-rs reserves 0).
//! * **Voters**: every configured node, static (no Raft membership changes: a dead node stays a
//!   voter, so a majority of the *configured* nodes is needed; with 2 nodes, losing one leaves
//!   no leader and [`Replica::has_quorum`] says so — the node tells its trainer it is alone).
//! * **Preferred leader** (`[coordinator] node`): it has the shortest election timeout, so it
//!   campaigns first at start and wins when it is up; the others' timeouts are staggered by
//!   [`ReplicaConfig::election_stagger_ticks`] in id order after it, so no two campaign at once
//!   (no split votes, hence no randomness needed). A leader that is not the preferred one hands
//!   leadership back (Raft leader transfer) once the preferred replica's log has caught up and
//!   no install is in flight ([`ReplicaConfig::return_leadership`]).
//! * **Resolve on election**: a new leader first commits an entry of its own term (Raft's
//!   no-op), so by the time it has applied that entry its state holds everything any earlier
//!   leader committed. Then, if an install is still in flight (prepared, neither committed nor
//!   aborted), the old leader never sent Commit (Commit is logged first), so the new leader
//!   proposes `Abort` for it and reports [`ReplicaEvent::LeaderReady`] with the install; the
//!   caller sends Abort to the nodes once that entry applies.
//! * **Stale leaders**: Raft ignores messages of older terms (a deposed leader's appends and
//!   heartbeats change nothing), `check_quorum` makes a leader cut off from a majority step
//!   down, and pre-vote keeps a partitioned node from disrupting the majority when it returns.
//! * **Wire**: [`wire`] encodes messages in our own checked format; peer bytes never reach
//!   protobuf's parser. [`Replica::step`] also refuses a message whose sender is not the peer
//!   the caller received it from. Raft trusts its peers (crash faults, not lies): only
//!   authenticated peers' bytes may be stepped (issue 20 authenticates the cp mesh).
//! * **Storage**: in memory (`MemStorage`); the log is never compacted (entries are a few per
//!   install or failure). A restarted control plane starts with an empty log and no vote: that
//!   is safe while at most one replica restarts between two commits it acknowledged (a
//!   majority that forgot an entry could elect a leader without it); durable storage of the
//!   hard state and log is the follow-up that removes the caveat.

//!
//! Driving it from a cp loop: every tick interval (e.g. 100 ms: a dead preferred leader is
//! replaced after 10 + 4 = 14 ticks, 1.4 s) call `tick`; for each frame from peer `p` call
//! `step(p, bytes)`; after either, `poll()` and send each `(to, bytes)` as one frame (drop it if
//! `to` is unreachable, and say so with `report_unreachable`). The coordinator role belongs to
//! the replica that reported `LeaderReady` for its current term (`is_ready_leader`); it logs
//! before it acts: propose `Prepare`, send Prepare to the nodes once that entry shows up in
//! `Output::applied`; every ack → propose `Commit`, send Commit once applied; likewise
//! `RoundFailed`/`RoundSucceeded` before announcing an outcome.

pub mod wire;

use crate::membership::{Applied, ClusterState, Entry, Install};
use netstorm_dataplane::NodeId;
use raft::eraftpb::{ConfState, EntryType, Message};
use raft::storage::MemStorage;
use raft::{RawNode, StateRole};
use std::collections::BTreeSet;

/// Replica timing, in ticks of the caller's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// The preferred leader's election timeout (a follower that heard no leader for this many
    /// ticks campaigns). Default 10.
    pub election_ticks: usize,
    /// Extra election timeout per place after the preferred leader. Default 4.
    pub election_stagger_ticks: usize,
    /// The leader's heartbeat interval. Default 2.
    pub heartbeat_ticks: usize,
    /// Hand leadership back to the preferred leader once it has caught up. Default true.
    pub return_leadership: bool,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        ReplicaConfig {
            election_ticks: 10,
            election_stagger_ticks: 4,
            heartbeat_ticks: 2,
            return_leadership: true,
        }
    }
}

/// A replica's role in Raft.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Follower,
    /// Asking for (pre-)votes: no leader known.
    Candidate,
    Leader,
}

/// What a replica knows of the cluster's leadership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaStatus {
    pub role: Role,
    pub term: u64,
    /// The leader of `term`, if known.
    pub leader: Option<NodeId>,
}

/// Something that happened to the replica since the last [`Replica::poll`].
#[derive(Debug, Clone, PartialEq)]
pub enum ReplicaEvent {
    /// The role, term or known leader changed.
    LeadershipChanged(ReplicaStatus),
    /// This replica leads `term` and has applied every entry of earlier leaders: it may act
    /// as the coordinator now. `aborted_install`: the install it found in flight, for which it
    /// proposed `Abort` (the caller sends Abort to the nodes once that entry applies).
    LeaderReady {
        term: u64,
        aborted_install: Option<Install>,
    },
}

/// One committed entry, applied to the state.
#[derive(Debug, Clone, PartialEq)]
pub struct AppliedEntry {
    /// Its Raft log index.
    pub index: u64,
    pub entry: Entry,
    pub applied: Applied,
}

/// What [`Replica::poll`] hands out.
#[derive(Debug, Default)]
pub struct Output {
    /// Bytes for peers (node id, message), in order.
    pub messages: Vec<(NodeId, Vec<u8>)>,
    /// Entries committed and applied since the last poll, in log order.
    pub applied: Vec<AppliedEntry>,
    pub events: Vec<ReplicaEvent>,
}

/// Errors building a replica.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("node {node} is not among the voters {voters:?}")]
    NotAVoter { node: NodeId, voters: Vec<NodeId> },
    #[error("preferred leader {node} is not among the voters {voters:?}")]
    PreferredNotAVoter { node: NodeId, voters: Vec<NodeId> },
    #[error("replica config: {0}")]
    Config(String),
}

/// Why a peer's bytes were not stepped.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Wire(#[from] wire::WireError),
    #[error("raft message from raft id {claimed} received from node {peer}")]
    WrongSender { peer: NodeId, claimed: u64 },
    #[error("raft message for raft id {to}, this is node {node}")]
    WrongRecipient { node: NodeId, to: u64 },
    #[error("raft refused the message: {0}")]
    Raft(#[from] raft::Error),
}

/// Why a proposal was not appended.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    #[error("not the leader (leader: {leader_hint:?})")]
    NotLeader { leader_hint: Option<NodeId> },
    #[error("raft dropped the proposal: {0}")]
    Raft(#[from] raft::Error),
}

/// One control plane's replica of the coordinator state.
pub struct Replica {
    node: NodeId,
    raw: RawNode<MemStorage>,
    preferred_leader: Option<NodeId>,
    config: ReplicaConfig,
    state: ClusterState,
    last_status: Option<ReplicaStatus>,
    /// The term in which `LeaderReady` was last reported.
    ready_term: u64,
    /// `LeaderReady` is due once the current ready is advanced.
    leader_ready_pending: bool,
    output: Output,
    /// Committed entries whose bytes did not parse (a bug or a version mismatch): skipped on
    /// every replica alike, counted.
    undecodable_entries: u64,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("node", &self.node)
            .field("status", &self.status())
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

fn raft_id(node: NodeId) -> u64 {
    u64::from(node) + 1
}

fn node_of(raft_id: u64) -> Option<NodeId> {
    raft_id
        .checked_sub(1)
        .and_then(|n| NodeId::try_from(n).ok())
}

impl Replica {
    /// A replica of `node` among `voters` (every configured node).
    pub fn new(
        node: NodeId,
        voters: &[NodeId],
        preferred_leader: Option<NodeId>,
        config: ReplicaConfig,
    ) -> Result<Replica, ReplicaError> {
        let voters: Vec<NodeId> = voters
            .iter()
            .copied()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if !voters.contains(&node) {
            return Err(ReplicaError::NotAVoter { node, voters });
        }
        if let Some(p) = preferred_leader.filter(|p| !voters.contains(p)) {
            return Err(ReplicaError::PreferredNotAVoter { node: p, voters });
        }
        // Place 0 is the preferred leader (or the lowest id), then the others in id order
        // after it, wrapping around.
        let first = preferred_leader.unwrap_or(voters[0]);
        let first_at = voters.iter().position(|&v| v == first).expect("a voter");
        let my_at = voters.iter().position(|&v| v == node).expect("a voter");
        let place = (my_at + voters.len() - first_at) % voters.len();
        let election_timeout = config.election_ticks + place * config.election_stagger_ticks;
        let raft_config = raft::Config {
            id: raft_id(node),
            // Also the leader lease (a follower that heard the leader this recently refuses
            // votes) and the leader's quorum check: the same on every replica, so every lease
            // has expired when the next in line campaigns.
            election_tick: config.election_ticks,
            // A range of one value: raft-rs would otherwise draw the timeout at random.
            min_election_tick: election_timeout,
            max_election_tick: election_timeout + 1,
            heartbeat_tick: config.heartbeat_ticks,
            check_quorum: true,
            pre_vote: true,
            ..raft::Config::default()
        };
        raft_config
            .validate()
            .map_err(|e| ReplicaError::Config(e.to_string()))?;
        let conf_state = ConfState::from((
            voters.iter().map(|&v| raft_id(v)).collect::<Vec<_>>(),
            Vec::new(),
        ));
        let storage = MemStorage::new_with_conf_state(conf_state);
        let logger = slog::Logger::root(TracingDrain, slog::o!("raft_id" => raft_id(node)));
        let raw = RawNode::new(&raft_config, storage, &logger)
            .map_err(|e| ReplicaError::Config(e.to_string()))?;
        Ok(Replica {
            node,
            raw,
            preferred_leader,
            config,
            state: ClusterState::default(),
            last_status: None,
            ready_term: 0,
            leader_ready_pending: false,
            output: Output::default(),
            undecodable_entries: 0,
        })
    }

    /// This replica's node.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// The state as of the last applied entry.
    pub fn state(&self) -> &ClusterState {
        &self.state
    }

    /// Committed entries that did not parse (skipped).
    pub fn undecodable_entries(&self) -> u64 {
        self.undecodable_entries
    }

    /// Role, term and known leader.
    pub fn status(&self) -> ReplicaStatus {
        let raft = &self.raw.raft;
        ReplicaStatus {
            role: match raft.state {
                StateRole::Leader => Role::Leader,
                StateRole::Follower => Role::Follower,
                StateRole::Candidate | StateRole::PreCandidate => Role::Candidate,
            },
            term: raft.term,
            leader: node_of(raft.leader_id),
        }
    }

    /// Whether this replica leads and may act as the coordinator (it has applied every entry
    /// of earlier leaders: [`ReplicaEvent::LeaderReady`] was reported for this term).
    pub fn is_ready_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader && self.ready_term == self.raw.raft.term
    }

    /// Whether a leader is known: false means this replica is cut off from a majority (or an
    /// election is under way); a node alone (2 sites, one lost) stays so until the peer
    /// returns.
    pub fn has_quorum(&self) -> bool {
        self.raw.raft.leader_id != raft::INVALID_ID
    }

    /// Advances the replica's clock by one tick.
    pub fn tick(&mut self) {
        self.raw.tick();
        self.maybe_return_leadership();
    }

    /// Steps a message received from `peer` (its bytes as [`Replica::poll`] produced them).
    /// Malformed bytes, a sender other than `peer`, or a message for another node are errors
    /// and change nothing.
    pub fn step(&mut self, peer: NodeId, bytes: &[u8]) -> Result<(), StepError> {
        let m = wire::decode(bytes)?;
        if m.from != raft_id(peer) {
            return Err(StepError::WrongSender {
                peer,
                claimed: m.from,
            });
        }
        if m.to != raft_id(self.node) {
            return Err(StepError::WrongRecipient {
                node: self.node,
                to: m.to,
            });
        }
        self.step_message(m)
    }

    /// Steps a decoded message (for in-process drivers that skip the bytes).
    pub fn step_message(&mut self, m: Message) -> Result<(), StepError> {
        self.raw.step(m)?;
        Ok(())
    }

    /// The transport could not reach `peer` (connection refused or dropped): the leader stops
    /// pipelining appends to it until it answers again.
    pub fn report_unreachable(&mut self, peer: NodeId) {
        self.raw.report_unreachable(raft_id(peer));
    }

    /// Appends `entry` to the log; it is applied (on every replica) once a majority has it —
    /// see [`Output::applied`]. Only the leader proposes; a proposal may still be lost if the
    /// leader loses its term before the entry commits, so callers act on applied entries only.
    pub fn propose(&mut self, entry: &Entry) -> Result<(), ProposeError> {
        if self.raw.raft.state != StateRole::Leader {
            return Err(ProposeError::NotLeader {
                leader_hint: node_of(self.raw.raft.leader_id),
            });
        }
        self.raw.propose(Vec::new(), entry.encode())?;
        Ok(())
    }

    /// Runs Raft's ready loop: persists (in memory), applies committed entries, and hands out
    /// messages, applied entries and events since the last poll. Call it after every tick,
    /// step or proposal.
    pub fn poll(&mut self) -> Output {
        while self.raw.has_ready() {
            let mut ready = self.raw.ready();
            self.queue_messages(ready.take_messages());
            if !ready.snapshot().is_empty() {
                // Never produced: logs are not compacted, so no leader sends a snapshot.
                let snapshot = ready.snapshot().clone();
                if let Err(e) = self.raw.store().wl().apply_snapshot(snapshot) {
                    tracing::warn!(node = self.node, "raft snapshot not applied: {e}");
                }
            }
            let committed = ready.take_committed_entries();
            self.apply_entries(committed);
            if !ready.entries().is_empty() {
                self.raw
                    .store()
                    .wl()
                    .append(ready.entries())
                    .expect("appending raft's own unstable entries to memory");
            }
            if let Some(hs) = ready.hs() {
                self.raw.store().wl().set_hardstate(hs.clone());
            }
            self.queue_messages(ready.take_persisted_messages());
            let mut light = self.raw.advance(ready);
            if let Some(commit) = light.commit_index() {
                self.raw.store().wl().mut_hard_state().commit = commit;
            }
            self.queue_messages(light.take_messages());
            let committed = light.take_committed_entries();
            self.apply_entries(committed);
            self.raw.advance_apply();
            if std::mem::take(&mut self.leader_ready_pending) {
                self.note_status();
                self.on_leader_ready();
            }
        }
        self.note_status();
        std::mem::take(&mut self.output)
    }

    fn queue_messages(&mut self, messages: Vec<Message>) {
        for m in messages {
            if let Some(to) = node_of(m.to) {
                self.output.messages.push((to, wire::encode(&m)));
            }
        }
    }

    fn apply_entries(&mut self, entries: Vec<raft::eraftpb::Entry>) {
        for e in entries {
            // Raft's own entries: a new leader's empty entry; no configuration changes are
            // ever proposed.
            if e.entry_type == EntryType::EntryNormal && !e.data.is_empty() {
                match Entry::decode(&e.data) {
                    Ok(entry) => {
                        let applied = self.state.apply(&entry);
                        if let Applied::Ignored(why) = &applied {
                            tracing::debug!(
                                node = self.node,
                                index = e.index,
                                "entry ignored: {why}"
                            );
                        }
                        self.output.applied.push(AppliedEntry {
                            index: e.index,
                            entry,
                            applied,
                        });
                    }
                    Err(err) => {
                        tracing::warn!(node = self.node, index = e.index, "entry skipped: {err}");
                        self.undecodable_entries += 1;
                    }
                }
            }
            // The first entry of the leader's own term is applied: its state is complete.
            let raft = &self.raw.raft;
            if raft.state == StateRole::Leader
                && e.term == raft.term
                && self.ready_term != raft.term
            {
                self.ready_term = raft.term;
                // Proposed after this ready is advanced (raft's ready/advance pairing).
                self.leader_ready_pending = true;
            }
        }
    }

    fn on_leader_ready(&mut self) {
        let aborted_install = self.state.install_in_flight.clone();
        if let Some(install) = &aborted_install {
            if let Err(e) = self.propose(&Entry::Abort {
                epoch: install.epoch,
            }) {
                tracing::warn!(node = self.node, "abort of epoch {}: {e}", install.epoch);
            }
        }
        self.output.events.push(ReplicaEvent::LeaderReady {
            term: self.raw.raft.term,
            aborted_install,
        });
    }

    fn note_status(&mut self) {
        let status = self.status();
        if self.last_status != Some(status) {
            self.last_status = Some(status);
            self.output
                .events
                .push(ReplicaEvent::LeadershipChanged(status));
        }
    }

    /// A leader other than the preferred one transfers leadership to it once its log matches
    /// and no install is in flight (a transfer mid-install would abort the install).
    fn maybe_return_leadership(&mut self) {
        let Some(preferred) = self.preferred_leader else {
            return;
        };
        let raft = &self.raw.raft;
        if !self.config.return_leadership
            || preferred == self.node
            || raft.state != StateRole::Leader
            || raft.lead_transferee.is_some()
            || self.ready_term != raft.term
            || self.state.install_in_flight.is_some()
        {
            return;
        }
        let caught_up = raft
            .prs()
            .get(raft_id(preferred))
            .is_some_and(|p| p.matched == raft.raft_log.last_index() && p.recent_active);
        if caught_up {
            self.raw.transfer_leader(raft_id(preferred));
        }
    }
}

/// raft-rs logs through slog; its records go to `tracing` (debug, warnings and errors kept).
struct TracingDrain;

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record, _: &slog::OwnedKVList) -> Result<(), slog::Never> {
        match record.level() {
            slog::Level::Critical | slog::Level::Error => {
                tracing::error!(target: "raft", "{}", record.msg())
            }
            slog::Level::Warning => tracing::warn!(target: "raft", "{}", record.msg()),
            _ => tracing::debug!(target: "raft", "{}", record.msg()),
        }
        Ok(())
    }
}
