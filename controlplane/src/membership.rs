//! The replicated coordinator state: a deterministic state machine applied from committed
//! Raft log entries, and the leader's round-resolution rule.
//!
//! Every control plane holds a [`ClusterState`] and applies the same committed [`Entry`]s in
//! the same order (through [`crate::replicated::Replica`]), so every replica holds the same
//! state. What is replicated is what a new leader needs to carry on where a dead one stopped:
//!
//! * the training **members** (the nodes rounds sum over) and a **membership version** that
//!   moves whenever they change (issue 20 derives per-run keys from it);
//! * the **committed policy** (epoch, activation round, the policy itself) and the highest
//!   epoch ever prepared, so no epoch is reused;
//! * the **install in flight**: `Prepare` is logged before any node is sent it, `Commit` is
//!   logged before any node is sent it. A new leader that finds an install with neither a
//!   `Commit` nor an `Abort` logs `Abort` (the old leader cannot have sent `Commit`), which
//!   closes two-phase commit's blocking window;
//! * the **round outcomes** decided after a failure (bounded recent list): an outcome is logged
//!   before it is announced, and the first one logged for a round wins, so a new leader cannot
//!   decide a round differently (one outcome per round).
//!
//! The apply rules are pure: [`ClusterState::apply`] never panics on any entry, and an entry
//! that does not fit the state (a `Commit` of an epoch not prepared, a second outcome for a
//! round) changes nothing and is reported as [`Ignored`].
//!
//! [`resolve_round`] is the leader's rule for a round in flight when a node was declared dead:
//! every survivor has the result (released or completed) → success; otherwise it fails, naming
//! the lost nodes.

use netstorm_dataplane::policy::Policy;
use netstorm_dataplane::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// How many recent round outcomes the state keeps; older rounds count as decided.
pub const ROUND_OUTCOMES_KEPT: usize = 64;

/// One committed change to the cluster state (the data of one Raft log entry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Entry {
    /// A new training run over `members` (a fresh start: no policy, no install, no outcomes).
    NewRun {
        run_id: u64,
        members: BTreeSet<NodeId>,
    },
    /// The leader is about to send `Prepare` for `policy` of `epoch` over `members`.
    Prepare {
        epoch: u32,
        activate_at_round: u32,
        members: BTreeSet<NodeId>,
        policy: Policy,
    },
    /// Every node acknowledged: the leader is about to send `Commit`.
    Commit { epoch: u32 },
    /// The install of `epoch` is abandoned (a Nack, a timeout, or a leader change).
    Abort { epoch: u32 },
    /// Round `round` succeeded on every survivor (decided after a failure).
    RoundSucceeded { round: u32 },
    /// Round `round` failed on every survivor; `lost` are the nodes declared dead.
    RoundFailed { round: u32, lost: BTreeSet<NodeId> },
    /// `node` was declared dead: it leaves the members at once.
    MemberLost { node: NodeId },
    /// `node` asked to rejoin: it becomes a member when a policy including it commits.
    MemberJoined { node: NodeId },
}

/// Why an [`Entry`]'s bytes were refused.
#[derive(Debug, thiserror::Error)]
#[error("malformed replicated entry ({len} bytes): {source}")]
pub struct EntryDecodeError {
    len: usize,
    #[source]
    source: serde_json::Error,
}

impl Entry {
    /// The entry's bytes in the Raft log (JSON: policies are already JSON on the cp wire).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an Entry always serializes (no maps with non-string keys)")
    }

    /// Parses an entry's bytes; malformed bytes are an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Entry, EntryDecodeError> {
        serde_json::from_slice(bytes).map_err(|source| EntryDecodeError {
            len: bytes.len(),
            source,
        })
    }
}

/// A two-phase install logged as prepared, not yet committed or aborted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Install {
    pub epoch: u32,
    pub activate_at_round: u32,
    /// The nodes the policy covers: the members once it commits.
    pub members: BTreeSet<NodeId>,
    pub policy: Policy,
}

/// The committed policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommittedPolicy {
    pub epoch: u32,
    pub activate_at_round: u32,
    pub policy: Policy,
}

/// The decided outcome of a round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RoundOutcome {
    /// Every survivor takes the result (contributors: the round's members).
    Success,
    /// Every survivor abandons the round; `lost` are the nodes declared dead.
    Failed { lost: BTreeSet<NodeId> },
}

/// Why an entry changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ignored {
    #[error("run {run_id} is not newer than the current run {current}")]
    StaleRun { run_id: u64, current: u64 },
    #[error("prepare of epoch {epoch}: epochs up to {newest} were already used")]
    StaleEpoch { epoch: u32, newest: u32 },
    #[error("prepare of epoch {epoch} while epoch {in_flight} is still in flight")]
    InstallInFlight { epoch: u32, in_flight: u32 },
    #[error("prepare of epoch {epoch} with no members")]
    NoMembers { epoch: u32 },
    #[error("prepare of epoch {epoch} covers node {node}, neither a member nor joining")]
    UnknownMember { epoch: u32, node: NodeId },
    #[error("commit of epoch {epoch}, which is not the install in flight ({in_flight:?})")]
    CommitNotPrepared { epoch: u32, in_flight: Option<u32> },
    #[error("abort of epoch {epoch}, which is not the install in flight ({in_flight:?})")]
    AbortNotPrepared { epoch: u32, in_flight: Option<u32> },
    #[error("round {round} was already decided ({outcome:?})")]
    RoundAlreadyDecided {
        round: u32,
        outcome: Option<RoundOutcome>,
    },
    #[error("node {node} is not a member")]
    NotAMember { node: NodeId },
    #[error("node {node} is already a member or joining")]
    AlreadyMember { node: NodeId },
}

/// What applying one entry did.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// The state changed as the entry says.
    Changed,
    /// The state is unchanged, for this reason.
    Ignored(Ignored),
}

/// The replicated coordinator state (identical on every replica that applied the same log).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterState {
    /// The current training run (0: none started).
    pub run_id: u64,
    /// The training members: the nodes rounds sum over.
    pub members: BTreeSet<NodeId>,
    /// Nodes admitted to rejoin, members once a policy including them commits.
    pub joining: BTreeSet<NodeId>,
    /// Moves whenever `members` changes.
    pub membership_version: u64,
    /// The committed policy, if any.
    pub committed: Option<CommittedPolicy>,
    /// The highest epoch ever prepared (never reused).
    pub newest_epoch: u32,
    /// The install logged as prepared and not yet decided.
    pub install_in_flight: Option<Install>,
    /// Recent round outcomes (at most [`ROUND_OUTCOMES_KEPT`]), by round.
    pub round_outcomes: BTreeMap<u32, RoundOutcome>,
    /// Rounds below this were decided and forgotten (or precede the kept window).
    pub outcomes_forgotten_below: u32,
}

impl ClusterState {
    /// The outcome decided for `round`, if it is still kept.
    pub fn round_outcome(&self, round: u32) -> Option<&RoundOutcome> {
        self.round_outcomes.get(&round)
    }

    /// Whether `round` already has an outcome (kept or forgotten).
    pub fn round_decided(&self, round: u32) -> bool {
        round < self.outcomes_forgotten_below || self.round_outcomes.contains_key(&round)
    }

    /// Applies one committed entry. Pure and total: the same entries in the same order give
    /// the same state on every replica; an entry that does not fit changes nothing.
    pub fn apply(&mut self, entry: &Entry) -> Applied {
        match self.try_apply(entry) {
            Ok(()) => Applied::Changed,
            Err(why) => Applied::Ignored(why),
        }
    }

    fn try_apply(&mut self, entry: &Entry) -> Result<(), Ignored> {
        match entry {
            Entry::NewRun { run_id, members } => {
                if *run_id <= self.run_id {
                    return Err(Ignored::StaleRun {
                        run_id: *run_id,
                        current: self.run_id,
                    });
                }
                // Epochs keep growing across runs: nodes drop stale epochs.
                let newest_epoch = self.newest_epoch;
                let membership_version = self.membership_version + 1;
                *self = ClusterState {
                    run_id: *run_id,
                    members: members.clone(),
                    membership_version,
                    newest_epoch,
                    ..ClusterState::default()
                };
            }
            Entry::Prepare {
                epoch,
                activate_at_round,
                members,
                policy,
            } => {
                if let Some(install) = &self.install_in_flight {
                    return Err(Ignored::InstallInFlight {
                        epoch: *epoch,
                        in_flight: install.epoch,
                    });
                }
                if *epoch <= self.newest_epoch {
                    return Err(Ignored::StaleEpoch {
                        epoch: *epoch,
                        newest: self.newest_epoch,
                    });
                }
                if members.is_empty() {
                    return Err(Ignored::NoMembers { epoch: *epoch });
                }
                if let Some(&node) = members
                    .iter()
                    .find(|n| !self.members.contains(n) && !self.joining.contains(n))
                {
                    return Err(Ignored::UnknownMember {
                        epoch: *epoch,
                        node,
                    });
                }
                self.newest_epoch = *epoch;
                self.install_in_flight = Some(Install {
                    epoch: *epoch,
                    activate_at_round: *activate_at_round,
                    members: members.clone(),
                    policy: policy.clone(),
                });
            }
            Entry::Commit { epoch } => {
                let in_flight = self.install_in_flight.as_ref().map(|i| i.epoch);
                if in_flight != Some(*epoch) {
                    return Err(Ignored::CommitNotPrepared {
                        epoch: *epoch,
                        in_flight,
                    });
                }
                let install = self.install_in_flight.take().expect("checked above");
                for node in &install.members {
                    self.joining.remove(node);
                }
                if install.members != self.members {
                    self.members = install.members;
                    self.membership_version += 1;
                }
                self.committed = Some(CommittedPolicy {
                    epoch: install.epoch,
                    activate_at_round: install.activate_at_round,
                    policy: install.policy,
                });
            }
            Entry::Abort { epoch } => {
                let in_flight = self.install_in_flight.as_ref().map(|i| i.epoch);
                if in_flight != Some(*epoch) {
                    return Err(Ignored::AbortNotPrepared {
                        epoch: *epoch,
                        in_flight,
                    });
                }
                self.install_in_flight = None;
            }
            Entry::RoundSucceeded { round } => self.decide(*round, RoundOutcome::Success)?,
            Entry::RoundFailed { round, lost } => {
                self.decide(*round, RoundOutcome::Failed { lost: lost.clone() })?
            }
            Entry::MemberLost { node } => {
                let was_joining = self.joining.remove(node);
                if self.members.remove(node) {
                    self.membership_version += 1;
                } else if !was_joining {
                    return Err(Ignored::NotAMember { node: *node });
                }
            }
            Entry::MemberJoined { node } => {
                if self.members.contains(node) || !self.joining.insert(*node) {
                    return Err(Ignored::AlreadyMember { node: *node });
                }
            }
        }
        Ok(())
    }

    /// Records the first outcome of `round`; a second one is refused.
    fn decide(&mut self, round: u32, outcome: RoundOutcome) -> Result<(), Ignored> {
        if self.round_decided(round) {
            return Err(Ignored::RoundAlreadyDecided {
                round,
                outcome: self.round_outcomes.get(&round).cloned(),
            });
        }
        self.round_outcomes.insert(round, outcome);
        while self.round_outcomes.len() > ROUND_OUTCOMES_KEPT {
            let (oldest, _) = self.round_outcomes.pop_first().expect("non-empty");
            self.outcomes_forgotten_below = oldest + 1;
        }
        Ok(())
    }
}

/// A survivor's answer to a freeze of a round in flight (all its workers together).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SurvivorRoundStatus {
    /// Every worker released the round: the trainer may already hold the result.
    Released,
    /// Every worker has the full result, not yet released.
    Completed,
    /// Some worker lacks part of the result (and, frozen, never completes it).
    Incomplete,
}

/// Why a round could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("no status yet from survivors {waiting_for:?}")]
    MissingStatus { waiting_for: BTreeSet<NodeId> },
    /// A release implies every member completed the round, so no survivor can lack it: the
    /// data plane broke its release rule. Nothing is decided.
    #[error("survivors {released:?} released the round but {incomplete:?} did not complete it")]
    Inconsistent {
        released: BTreeSet<NodeId>,
        incomplete: BTreeSet<NodeId>,
    },
}

/// The leader's rule for a round in flight when `lost` were declared dead: every survivor has
/// the result (released or completed) → [`RoundOutcome::Success`]; otherwise
/// [`RoundOutcome::Failed`] naming `lost`. `statuses` must answer for every survivor; answers
/// from nodes not in `survivors` are not counted.
pub fn resolve_round(
    survivors: &BTreeSet<NodeId>,
    lost: &BTreeSet<NodeId>,
    statuses: &BTreeMap<NodeId, SurvivorRoundStatus>,
) -> Result<RoundOutcome, ResolveError> {
    let waiting_for: BTreeSet<NodeId> = survivors
        .iter()
        .filter(|n| !statuses.contains_key(n))
        .copied()
        .collect();
    if !waiting_for.is_empty() {
        return Err(ResolveError::MissingStatus { waiting_for });
    }
    let with = |wanted: SurvivorRoundStatus| -> BTreeSet<NodeId> {
        survivors
            .iter()
            .filter(|n| statuses[*n] == wanted)
            .copied()
            .collect()
    };
    let released = with(SurvivorRoundStatus::Released);
    let incomplete = with(SurvivorRoundStatus::Incomplete);
    match (released.is_empty(), incomplete.is_empty()) {
        (_, true) => Ok(RoundOutcome::Success),
        (true, false) => Ok(RoundOutcome::Failed { lost: lost.clone() }),
        (false, false) => Err(ResolveError::Inconsistent {
            released,
            incomplete,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(nodes: &[NodeId]) -> BTreeSet<NodeId> {
        nodes.iter().copied().collect()
    }

    fn policy(epoch: u32) -> Policy {
        Policy {
            epoch,
            node_count: 3,
            trees: Vec::new(),
            routes: Vec::new(),
            link_rates: Vec::new(),
            members: None,
        }
    }

    fn prepare(epoch: u32, members: &[NodeId]) -> Entry {
        Entry::Prepare {
            epoch,
            activate_at_round: 10,
            members: set(members),
            policy: policy(epoch),
        }
    }

    fn started(members: &[NodeId]) -> ClusterState {
        let mut s = ClusterState::default();
        assert_eq!(
            s.apply(&Entry::NewRun {
                run_id: 1,
                members: set(members),
            }),
            Applied::Changed
        );
        s
    }

    #[test]
    fn prepare_then_commit_installs_the_policy_and_its_members() {
        let mut s = started(&[0, 1, 2]);
        let v0 = s.membership_version;
        assert_eq!(s.apply(&prepare(5, &[0, 1])), Applied::Changed);
        assert_eq!(s.install_in_flight.as_ref().map(|i| i.epoch), Some(5));
        assert_eq!(s.apply(&Entry::Commit { epoch: 5 }), Applied::Changed);
        assert_eq!(s.install_in_flight, None);
        let committed = s.committed.as_ref().unwrap();
        assert_eq!((committed.epoch, committed.activate_at_round), (5, 10));
        assert_eq!(committed.policy, policy(5));
        assert_eq!(s.members, set(&[0, 1]));
        assert_eq!(s.membership_version, v0 + 1);
    }

    #[test]
    fn commit_or_abort_of_an_epoch_not_prepared_is_ignored_and_reported() {
        let mut s = started(&[0, 1, 2]);
        let before = s.clone();
        assert_eq!(
            s.apply(&Entry::Commit { epoch: 3 }),
            Applied::Ignored(Ignored::CommitNotPrepared {
                epoch: 3,
                in_flight: None
            })
        );
        assert_eq!(s, before);
        s.apply(&prepare(4, &[0, 1, 2]));
        let before = s.clone();
        assert_eq!(
            s.apply(&Entry::Commit { epoch: 3 }),
            Applied::Ignored(Ignored::CommitNotPrepared {
                epoch: 3,
                in_flight: Some(4)
            })
        );
        assert_eq!(
            s.apply(&Entry::Abort { epoch: 3 }),
            Applied::Ignored(Ignored::AbortNotPrepared {
                epoch: 3,
                in_flight: Some(4)
            })
        );
        assert_eq!(s, before);
        // Aborted: a late Commit of that epoch changes nothing.
        assert_eq!(s.apply(&Entry::Abort { epoch: 4 }), Applied::Changed);
        assert_eq!(s.install_in_flight, None);
        assert!(matches!(
            s.apply(&Entry::Commit { epoch: 4 }),
            Applied::Ignored(Ignored::CommitNotPrepared { .. })
        ));
        assert_eq!(s.committed, None);
    }

    #[test]
    fn epochs_are_never_reused_and_one_install_at_a_time() {
        let mut s = started(&[0, 1, 2]);
        s.apply(&prepare(4, &[0, 1, 2]));
        assert_eq!(
            s.apply(&prepare(6, &[0, 1, 2])),
            Applied::Ignored(Ignored::InstallInFlight {
                epoch: 6,
                in_flight: 4
            })
        );
        s.apply(&Entry::Abort { epoch: 4 });
        assert_eq!(
            s.apply(&prepare(4, &[0, 1, 2])),
            Applied::Ignored(Ignored::StaleEpoch {
                epoch: 4,
                newest: 4
            })
        );
        assert_eq!(
            s.apply(&prepare(5, &[])),
            Applied::Ignored(Ignored::NoMembers { epoch: 5 })
        );
        assert_eq!(s.apply(&prepare(5, &[0, 1, 2])), Applied::Changed);
        // A new run keeps the epoch counter.
        s.apply(&Entry::NewRun {
            run_id: 2,
            members: set(&[0, 1]),
        });
        assert_eq!(s.install_in_flight, None);
        assert!(matches!(
            s.apply(&prepare(5, &[0, 1])),
            Applied::Ignored(Ignored::StaleEpoch { .. })
        ));
        assert_eq!(
            s.apply(&Entry::NewRun {
                run_id: 2,
                members: set(&[0]),
            }),
            Applied::Ignored(Ignored::StaleRun {
                run_id: 2,
                current: 2
            })
        );
    }

    #[test]
    fn one_outcome_per_round() {
        let mut s = started(&[0, 1, 2]);
        let failed = Entry::RoundFailed {
            round: 7,
            lost: set(&[2]),
        };
        assert_eq!(s.apply(&failed), Applied::Changed);
        let before = s.clone();
        assert_eq!(
            s.apply(&Entry::RoundSucceeded { round: 7 }),
            Applied::Ignored(Ignored::RoundAlreadyDecided {
                round: 7,
                outcome: Some(RoundOutcome::Failed { lost: set(&[2]) })
            })
        );
        assert!(matches!(
            s.apply(&Entry::RoundFailed {
                round: 7,
                lost: set(&[1]),
            }),
            Applied::Ignored(Ignored::RoundAlreadyDecided { .. })
        ));
        assert_eq!(s, before);
        assert_eq!(
            s.apply(&Entry::RoundSucceeded { round: 8 }),
            Applied::Changed
        );
        assert_eq!(s.round_outcome(8), Some(&RoundOutcome::Success));
    }

    #[test]
    fn round_outcomes_are_bounded_and_forgotten_rounds_stay_decided() {
        let mut s = started(&[0, 1]);
        let total = ROUND_OUTCOMES_KEPT as u32 + 10;
        for round in 0..total {
            assert_eq!(s.apply(&Entry::RoundSucceeded { round }), Applied::Changed);
        }
        assert_eq!(s.round_outcomes.len(), ROUND_OUTCOMES_KEPT);
        assert_eq!(s.outcomes_forgotten_below, 10);
        assert_eq!(s.round_outcome(3), None);
        assert!(s.round_decided(3));
        assert!(matches!(
            s.apply(&Entry::RoundFailed {
                round: 3,
                lost: set(&[1]),
            }),
            Applied::Ignored(Ignored::RoundAlreadyDecided { outcome: None, .. })
        ));
    }

    #[test]
    fn lost_and_rejoining_members() {
        let mut s = started(&[0, 1, 2]);
        let v0 = s.membership_version;
        assert_eq!(s.apply(&Entry::MemberLost { node: 2 }), Applied::Changed);
        assert_eq!(s.members, set(&[0, 1]));
        assert_eq!(s.membership_version, v0 + 1);
        assert_eq!(
            s.apply(&Entry::MemberLost { node: 2 }),
            Applied::Ignored(Ignored::NotAMember { node: 2 })
        );
        // A policy over a lost node cannot be prepared.
        assert_eq!(
            s.apply(&prepare(3, &[0, 1, 2])),
            Applied::Ignored(Ignored::UnknownMember { epoch: 3, node: 2 })
        );
        assert_eq!(s.apply(&Entry::MemberJoined { node: 2 }), Applied::Changed);
        assert_eq!(
            s.apply(&Entry::MemberJoined { node: 2 }),
            Applied::Ignored(Ignored::AlreadyMember { node: 2 })
        );
        assert_eq!(
            s.apply(&Entry::MemberJoined { node: 0 }),
            Applied::Ignored(Ignored::AlreadyMember { node: 0 })
        );
        assert_eq!(s.members, set(&[0, 1]), "joining is not a member yet");
        assert_eq!(s.apply(&prepare(3, &[0, 1, 2])), Applied::Changed);
        assert_eq!(s.apply(&Entry::Commit { epoch: 3 }), Applied::Changed);
        assert_eq!(s.members, set(&[0, 1, 2]));
        assert!(s.joining.is_empty());
        assert_eq!(s.membership_version, v0 + 2);
    }

    #[test]
    fn entries_round_trip_and_garbage_is_an_error() {
        let entries = [
            Entry::NewRun {
                run_id: 9,
                members: set(&[0, 3]),
            },
            prepare(2, &[0, 3]),
            Entry::Commit { epoch: 2 },
            Entry::Abort { epoch: 2 },
            Entry::RoundSucceeded { round: 1 },
            Entry::RoundFailed {
                round: 4,
                lost: set(&[3]),
            },
            Entry::MemberLost { node: 3 },
            Entry::MemberJoined { node: 3 },
        ];
        for entry in &entries {
            assert_eq!(&Entry::decode(&entry.encode()).unwrap(), entry);
        }
        for garbage in [
            &b""[..],
            b"\xff\x00\x13",
            b"{\"Commit\":{\"epoch\":-1}}",
            b"{\"Launch\":{}}",
            &[b'['; 10_000][..],
        ] {
            assert!(Entry::decode(garbage).is_err(), "{garbage:?}");
        }
    }

    fn statuses(pairs: &[(NodeId, SurvivorRoundStatus)]) -> BTreeMap<NodeId, SurvivorRoundStatus> {
        pairs.iter().copied().collect()
    }

    #[test]
    fn a_round_succeeds_only_when_every_survivor_has_the_result() {
        use SurvivorRoundStatus::*;
        let survivors = set(&[0, 1, 2]);
        let lost = set(&[3]);
        let resolve =
            |s: &[(NodeId, SurvivorRoundStatus)]| resolve_round(&survivors, &lost, &statuses(s));
        assert_eq!(
            resolve(&[(0, Released), (1, Completed), (2, Released)]),
            Ok(RoundOutcome::Success)
        );
        assert_eq!(
            resolve(&[(0, Completed), (1, Completed), (2, Completed)]),
            Ok(RoundOutcome::Success)
        );
        assert_eq!(
            resolve(&[(0, Completed), (1, Incomplete), (2, Completed)]),
            Ok(RoundOutcome::Failed { lost: lost.clone() })
        );
        assert_eq!(
            resolve(&[(0, Incomplete), (1, Incomplete), (2, Incomplete)]),
            Ok(RoundOutcome::Failed { lost: lost.clone() })
        );
        assert_eq!(
            resolve(&[(0, Released), (1, Incomplete), (2, Completed)]),
            Err(ResolveError::Inconsistent {
                released: set(&[0]),
                incomplete: set(&[1]),
            })
        );
        assert_eq!(
            resolve(&[(0, Completed), (2, Completed), (3, Incomplete)]),
            Err(ResolveError::MissingStatus {
                waiting_for: set(&[1])
            })
        );
        // The lost node's own (stale) answer does not count.
        assert_eq!(
            resolve(&[
                (0, Completed),
                (1, Completed),
                (2, Completed),
                (3, Incomplete)
            ]),
            Ok(RoundOutcome::Success)
        );
    }
}
