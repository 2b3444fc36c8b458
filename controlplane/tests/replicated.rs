//! The replicated coordinator state on an in-process network of replicas, in ticks (no clock):
//! elections, commits, leader loss mid-install, partitions, a 2-replica cluster, stale leaders.

use netstorm_controlplane::membership::{Applied, ClusterState, Entry, Install};
use netstorm_controlplane::replicated::{
    AppliedEntry, ProposeError, Replica, ReplicaConfig, ReplicaEvent, Role, StepError,
};
use netstorm_dataplane::policy::Policy;
use netstorm_dataplane::NodeId;
use std::collections::BTreeSet;

/// Replicas wired by a lossless network that delivers every message within the tick it was
/// sent, unless the link is cut or the receiver is down.
struct Net {
    n: usize,
    replicas: Vec<Option<Replica>>,
    preferred: Option<NodeId>,
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Per node, every entry applied since it (re)started.
    applied: Vec<Vec<AppliedEntry>>,
    events: Vec<Vec<ReplicaEvent>>,
    /// Messages a cut link swallowed (from, to, bytes), for replaying stale ones.
    swallowed: Vec<(NodeId, NodeId, Vec<u8>)>,
    step_errors: usize,
}

impl Net {
    fn new(n: usize, preferred: Option<NodeId>) -> Net {
        let mut net = Net {
            n,
            replicas: Vec::new(),
            preferred,
            cut: BTreeSet::new(),
            applied: vec![Vec::new(); n],
            events: vec![Vec::new(); n],
            swallowed: Vec::new(),
            step_errors: 0,
        };
        for node in 0..n as NodeId {
            net.replicas.push(Some(net.fresh(node)));
        }
        net
    }

    fn voters(&self) -> Vec<NodeId> {
        (0..self.n as NodeId).collect()
    }

    fn fresh(&self, node: NodeId) -> Replica {
        Replica::new(
            node,
            &self.voters(),
            self.preferred,
            ReplicaConfig::default(),
        )
        .unwrap()
    }

    fn replica(&self, node: NodeId) -> &Replica {
        self.replicas[usize::from(node)].as_ref().expect("alive")
    }

    fn alive(&self) -> Vec<NodeId> {
        self.voters()
            .into_iter()
            .filter(|&n| self.replicas[usize::from(n)].is_some())
            .collect()
    }

    fn kill(&mut self, node: NodeId) {
        self.replicas[usize::from(node)] = None;
    }

    /// A restarted control plane: a replica with an empty log.
    fn restart(&mut self, node: NodeId) {
        self.replicas[usize::from(node)] = Some(self.fresh(node));
        self.applied[usize::from(node)].clear();
        self.events[usize::from(node)].clear();
    }

    /// Cuts every link between `group` and the other nodes.
    fn isolate(&mut self, group: &[NodeId]) {
        for a in self.voters() {
            for &b in group {
                if !group.contains(&a) {
                    self.cut.insert((a, b));
                    self.cut.insert((b, a));
                }
            }
        }
    }

    fn heal(&mut self) {
        self.cut.clear();
    }

    fn tick(&mut self) {
        for r in self.replicas.iter_mut().flatten() {
            r.tick();
        }
        self.settle();
    }

    fn ticks(&mut self, n: usize) {
        for _ in 0..n {
            self.tick();
        }
    }

    /// Polls and delivers until no replica has anything to send.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            let mut in_flight = Vec::new();
            for node in self.alive() {
                let out = self.replicas[usize::from(node)].as_mut().unwrap().poll();
                self.applied[usize::from(node)].extend(out.applied);
                self.events[usize::from(node)].extend(out.events);
                in_flight.extend(out.messages.into_iter().map(|(to, m)| (node, to, m)));
            }
            if in_flight.is_empty() {
                return;
            }
            for (from, to, bytes) in in_flight {
                if self.cut.contains(&(from, to)) {
                    self.swallowed.push((from, to, bytes));
                } else if let Some(r) = self.replicas[usize::from(to)].as_mut() {
                    if r.step(from, &bytes).is_err() {
                        self.step_errors += 1;
                    }
                }
            }
        }
        panic!("the network never went quiet");
    }

    /// Ticks until `done` holds; the ticks it took, or None after `limit`.
    fn ticks_until(&mut self, limit: usize, done: impl Fn(&Net) -> bool) -> Option<usize> {
        for t in 0..=limit {
            if done(self) {
                return Some(t);
            }
            self.tick();
        }
        None
    }

    /// The ready leader as every alive replica in `group` sees it.
    fn agreed_leader(&self, group: &[NodeId]) -> Option<NodeId> {
        let leader = self.replica(group[0]).status().leader?;
        let agreed = group
            .iter()
            .all(|&n| self.replica(n).status().leader == Some(leader));
        (agreed && group.contains(&leader) && self.replica(leader).is_ready_leader())
            .then_some(leader)
    }

    fn propose(&mut self, node: NodeId, entry: Entry) -> Result<(), ProposeError> {
        let r = self.replicas[usize::from(node)]
            .as_mut()
            .unwrap()
            .propose(&entry);
        self.settle();
        r
    }

    fn state(&self, node: NodeId) -> &ClusterState {
        self.replica(node).state()
    }

    fn applied_entries(&self, node: NodeId) -> Vec<Entry> {
        self.applied[usize::from(node)]
            .iter()
            .map(|a| a.entry.clone())
            .collect()
    }

    /// Every alive replica in `group` holds the same state and applied the same entries.
    fn assert_identical(&self, group: &[NodeId]) {
        for &n in &group[1..] {
            assert_eq!(self.state(n), self.state(group[0]), "state of {n}");
            assert_eq!(
                self.applied_entries(n),
                self.applied_entries(group[0]),
                "entries applied by {n}"
            );
        }
    }
}

/// Ticks within which a leader must be ready: the longest staggered election timeout of 5
/// replicas plus a few rounds of messages.
const ELECTION_LIMIT: usize = 10 + 4 * 4 + 10;

fn set(nodes: &[NodeId]) -> BTreeSet<NodeId> {
    nodes.iter().copied().collect()
}

fn policy(epoch: u32, node_count: u16) -> Policy {
    Policy {
        epoch,
        node_count,
        trees: Vec::new(),
        routes: Vec::new(),
        link_rates: Vec::new(),
        members: None,
    }
}

fn prepare(epoch: u32, members: &[NodeId]) -> Entry {
    Entry::Prepare {
        epoch,
        activate_at_round: 20,
        members: set(members),
        policy: policy(epoch, members.len() as u16),
    }
}

/// A cluster of `n` with `preferred` elected and a run started over every node.
fn started(n: usize, preferred: NodeId) -> Net {
    let mut net = Net::new(n, Some(preferred));
    let all = net.voters();
    let took = net.ticks_until(ELECTION_LIMIT, |net| net.agreed_leader(&all).is_some());
    assert!(took.is_some(), "no leader within {ELECTION_LIMIT} ticks");
    assert_eq!(net.agreed_leader(&all), Some(preferred));
    net.propose(
        preferred,
        Entry::NewRun {
            run_id: 1,
            members: set(&all),
        },
    )
    .unwrap();
    assert_eq!(net.state(preferred).run_id, 1);
    net
}

#[test]
fn the_preferred_replica_is_elected_when_all_are_up() {
    for (n, preferred) in [(3, 1), (5, 3), (5, 0)] {
        let mut net = Net::new(n, Some(preferred));
        let all = net.voters();
        let took = net.ticks_until(ELECTION_LIMIT, |net| net.agreed_leader(&all).is_some());
        assert!(took.is_some(), "{n} replicas: no leader");
        assert_eq!(net.agreed_leader(&all), Some(preferred), "{n} replicas");
        assert!(
            net.events[usize::from(preferred)].contains(&ReplicaEvent::LeaderReady {
                term: net.replica(preferred).status().term,
                aborted_install: None,
            })
        );
        for &n in &all {
            assert!(net.replica(n).has_quorum());
        }
        // Leadership is stable: no further elections while everyone is up.
        let term = net.replica(preferred).status().term;
        net.ticks(100);
        assert_eq!(net.agreed_leader(&all), Some(preferred));
        assert_eq!(net.replica(preferred).status().term, term);
        assert_eq!(net.step_errors, 0);
    }
}

#[test]
fn proposals_commit_and_apply_identically_on_every_replica() {
    for n in [3, 5] {
        let mut net = started(n, 0);
        let all = net.voters();
        // Only the leader proposes; a follower names it.
        match net.propose(1, Entry::Commit { epoch: 1 }) {
            Err(ProposeError::NotLeader { leader_hint }) => assert_eq!(leader_hint, Some(0)),
            other => panic!("a follower's proposal: {other:?}"),
        }
        let entries = [
            prepare(1, &all),
            Entry::Commit { epoch: 1 },
            Entry::RoundFailed {
                round: 3,
                lost: set(&[2]),
            },
            Entry::RoundSucceeded { round: 3 },
            Entry::MemberLost { node: 2 },
        ];
        for e in entries.clone() {
            net.propose(0, e).unwrap();
        }
        net.ticks(3);
        net.assert_identical(&all);
        let s = net.state(0);
        assert_eq!(s.committed.as_ref().map(|c| c.epoch), Some(1));
        assert_eq!(s.members.len(), n - 1);
        let applied = &net.applied[0];
        assert_eq!(applied.len(), entries.len() + 1, "NewRun + the entries");
        assert_eq!(
            applied[1..]
                .iter()
                .map(|a| a.entry.clone())
                .collect::<Vec<_>>(),
            entries
        );
        // The second outcome of round 3 was applied as ignored, alike everywhere.
        assert!(matches!(applied[4].applied, Applied::Ignored(_)));
        assert_eq!(net.step_errors, 0);
    }
}

#[test]
fn losing_the_leader_mid_install_elects_another_that_aborts_the_install() {
    for n in [3, 5] {
        let mut net = started(n, 0);
        let all = net.voters();
        net.propose(0, prepare(4, &all)).unwrap();
        let install = net.state(1).install_in_flight.clone().expect("prepared");
        net.kill(0);
        let survivors: Vec<NodeId> = all[1..].to_vec();
        let took = net.ticks_until(ELECTION_LIMIT, |net| {
            net.agreed_leader(&survivors).is_some()
        });
        assert!(took.is_some(), "{n} replicas: no new leader");
        eprintln!("{n} replicas: leader killed → new leader ready in {took:?} ticks");
        let leader = net.agreed_leader(&survivors).unwrap();
        assert_eq!(leader, 1, "the next in line after the preferred one");
        assert!(
            net.events[usize::from(leader)].contains(&ReplicaEvent::LeaderReady {
                term: net.replica(leader).status().term,
                aborted_install: Some(install.clone()),
            }),
            "{:?}",
            net.events[usize::from(leader)]
        );
        net.ticks(2);
        for &s in &survivors {
            let state = net.state(s);
            assert_eq!(state.install_in_flight, None, "replica {s}");
            assert_eq!(state.committed, None, "replica {s}");
            assert_eq!(state.newest_epoch, 4, "replica {s}");
        }
        net.assert_identical(&survivors);
        // The new leader coordinates: a new install commits without the dead node.
        net.propose(leader, prepare(5, &survivors)).unwrap();
        net.propose(leader, Entry::Commit { epoch: 5 }).unwrap();
        assert_eq!(net.state(2).committed.as_ref().map(|c| c.epoch), Some(5));
        net.assert_identical(&survivors);
    }
}

#[test]
fn an_install_committed_before_the_leader_died_stays_committed() {
    let mut net = started(3, 0);
    let all = net.voters();
    net.propose(0, prepare(4, &all)).unwrap();
    net.propose(0, Entry::Commit { epoch: 4 }).unwrap();
    net.kill(0);
    let survivors = [1, 2];
    net.ticks_until(ELECTION_LIMIT, |net| {
        net.agreed_leader(&survivors).is_some()
    })
    .expect("a new leader");
    let leader = net.agreed_leader(&survivors).unwrap();
    assert!(net.events[usize::from(leader)].iter().any(|e| matches!(
        e,
        ReplicaEvent::LeaderReady {
            aborted_install: None,
            ..
        }
    )));
    for s in survivors {
        assert_eq!(net.state(s).committed.as_ref().map(|c| c.epoch), Some(4));
        assert_eq!(net.state(s).install_in_flight, None);
    }
}

#[test]
fn a_commit_the_old_leader_logged_alone_is_lost_and_the_install_aborted() {
    let mut net = started(3, 0);
    let all = net.voters();
    net.propose(0, prepare(4, &all)).unwrap();
    // The leader logs Commit but no follower gets it: never committed, so never sent.
    net.isolate(&[0]);
    net.propose(0, Entry::Commit { epoch: 4 }).unwrap();
    assert!(
        net.state(0).install_in_flight.is_some(),
        "not applied alone"
    );
    net.kill(0);
    net.heal();
    let survivors = [1, 2];
    net.ticks_until(ELECTION_LIMIT, |net| {
        net.agreed_leader(&survivors).is_some()
    })
    .expect("a new leader");
    net.ticks(2);
    for s in survivors {
        assert_eq!(net.state(s).committed, None);
        assert_eq!(net.state(s).install_in_flight, None);
        assert_eq!(
            net.applied_entries(s).last(),
            Some(&Entry::Abort { epoch: 4 })
        );
    }
}

#[test]
fn a_minority_commits_nothing_and_catches_up_after_healing() {
    let mut net = started(5, 0);
    let minority = [0, 1];
    let majority = [2, 3, 4];
    net.isolate(&minority);
    // The old leader still takes a proposal, but it never commits.
    net.propose(0, prepare(7, &[0, 1])).unwrap();
    let took = net.ticks_until(ELECTION_LIMIT, |net| {
        net.agreed_leader(&majority).is_some()
            && minority.iter().all(|&n| !net.replica(n).has_quorum())
    });
    assert!(
        took.is_some(),
        "no majority leader, or the minority kept one"
    );
    let leader = net.agreed_leader(&majority).unwrap();
    for n in minority {
        assert!(!net.replica(n).has_quorum(), "minority replica {n}");
        assert_ne!(net.replica(n).status().role, Role::Leader);
        assert!(matches!(
            net.propose(n, prepare(8, &[0, 1])),
            Err(ProposeError::NotLeader { leader_hint: None })
        ));
    }
    net.propose(leader, prepare(9, &majority)).unwrap();
    net.propose(leader, Entry::Commit { epoch: 9 }).unwrap();
    // Long after, the minority has still applied nothing new: no install there.
    net.ticks(200);
    for n in minority {
        assert_eq!(net.state(n).install_in_flight, None, "minority replica {n}");
        assert_eq!(net.state(n).committed, None, "minority replica {n}");
        assert_eq!(net.applied[usize::from(n)].len(), 1, "only NewRun");
    }
    net.heal();
    let all = net.voters();
    net.ticks_until(ELECTION_LIMIT * 2, |net| net.agreed_leader(&all) == Some(0))
        .expect("the preferred replica leads again once caught up");
    net.assert_identical(&all);
    let s = net.state(0);
    assert_eq!(s.committed.as_ref().map(|c| c.epoch), Some(9));
    assert_eq!(s.members, set(&majority));
    assert!(
        !net.applied_entries(0).contains(&prepare(7, &[0, 1])),
        "the minority's proposal was never committed"
    );
}

#[test]
fn two_replicas_that_lose_one_have_no_quorum() {
    // The follower dies: the leader steps down (check quorum).
    let mut net = started(2, 0);
    net.kill(1);
    net.ticks_until(ELECTION_LIMIT, |net| !net.replica(0).has_quorum())
        .expect("the lone leader stepped down");
    net.ticks(200);
    assert!(!net.replica(0).has_quorum());
    assert!(matches!(
        net.propose(0, Entry::MemberLost { node: 1 }),
        Err(ProposeError::NotLeader { leader_hint: None })
    ));
    // The leader dies: the follower never becomes one.
    let mut net = started(2, 0);
    net.kill(0);
    net.ticks(200);
    assert!(!net.replica(1).has_quorum());
    assert_ne!(net.replica(1).status().role, Role::Leader);
    // The peer returns: a leader again, and the survivor's state was kept.
    net.restart(0);
    net.ticks_until(ELECTION_LIMIT * 2, |net| {
        net.agreed_leader(&[0, 1]).is_some()
    })
    .expect("a leader once both are up");
    assert_eq!(net.state(1).run_id, 1);
    net.ticks(10);
    assert_eq!(net.state(0), net.state(1));
}

#[test]
fn a_deposed_leaders_messages_are_ignored() {
    let mut net = started(3, 0);
    let old_term = net.replica(0).status().term;
    net.isolate(&[0]);
    // The old leader appends an entry; its messages are swallowed by the cut (kept to replay).
    net.propose(0, prepare(3, &[0])).unwrap();
    net.ticks(3);
    let stale: Vec<_> = net
        .swallowed
        .iter()
        .filter(|(from, _, _)| *from == 0)
        .cloned()
        .collect();
    assert!(!stale.is_empty());
    let survivors = [1, 2];
    net.ticks_until(ELECTION_LIMIT, |net| {
        net.agreed_leader(&survivors).is_some()
    })
    .expect("a new leader");
    let leader = net.agreed_leader(&survivors).unwrap();
    let new_term = net.replica(leader).status().term;
    assert!(new_term > old_term);
    net.propose(leader, Entry::MemberLost { node: 0 }).unwrap();
    let before: Vec<ClusterState> = survivors.iter().map(|&n| net.state(n).clone()).collect();
    // Replay the deposed leader's appends and heartbeats of the old term.
    for (from, to, bytes) in &stale {
        if let Some(r) = net.replicas[usize::from(*to)].as_mut() {
            let _ = r.step(*from, bytes);
        }
    }
    net.settle();
    let after: Vec<ClusterState> = survivors.iter().map(|&n| net.state(n).clone()).collect();
    assert_eq!(after, before);
    for n in survivors {
        assert_eq!(net.replica(n).status().leader, Some(leader));
        assert_eq!(net.replica(n).status().term, new_term);
    }
    // Healed, the old leader follows and its entry is gone everywhere.
    net.heal();
    net.ticks(ELECTION_LIMIT);
    for n in net.voters() {
        assert!(!net.applied_entries(n).contains(&prepare(3, &[0])));
        assert_eq!(net.state(n).install_in_flight, None);
    }
    net.assert_identical(&[0, 1, 2]);
}

#[test]
fn a_restarted_replica_catches_up_and_the_preferred_one_leads_again() {
    let mut net = started(3, 0);
    net.kill(0);
    net.ticks_until(ELECTION_LIMIT, |net| net.agreed_leader(&[1, 2]).is_some())
        .expect("a new leader");
    let leader = net.agreed_leader(&[1, 2]).unwrap();
    net.propose(leader, prepare(2, &[1, 2])).unwrap();
    net.propose(leader, Entry::Commit { epoch: 2 }).unwrap();
    net.restart(0);
    let all = net.voters();
    net.ticks_until(ELECTION_LIMIT * 2, |net| net.agreed_leader(&all) == Some(0))
        .expect("leadership back on the preferred replica");
    net.assert_identical(&all);
    assert_eq!(net.state(0).committed.as_ref().map(|c| c.epoch), Some(2));
}

#[test]
fn leadership_is_not_handed_back_while_an_install_is_in_flight() {
    let mut net = started(3, 0);
    net.kill(0);
    net.ticks_until(ELECTION_LIMIT, |net| net.agreed_leader(&[1, 2]).is_some())
        .expect("a new leader");
    net.propose(1, prepare(2, &[1, 2])).unwrap();
    net.restart(0);
    net.ticks(ELECTION_LIMIT * 2);
    assert_eq!(net.agreed_leader(&[0, 1, 2]), Some(1));
    net.propose(1, Entry::Commit { epoch: 2 }).unwrap();
    net.ticks_until(ELECTION_LIMIT * 2, |net| {
        net.agreed_leader(&[0, 1, 2]) == Some(0)
    })
    .expect("handed back after the commit");
    let i: Option<&Install> = net.state(0).install_in_flight.as_ref();
    assert_eq!(i, None);
}

#[test]
fn bad_peer_bytes_are_refused_and_change_nothing() {
    let mut net = started(3, 0);
    let before = net.state(1).clone();
    let status = net.replica(1).status();
    // A real message from 0 to 1, to forge from.
    net.propose(0, Entry::RoundSucceeded { round: 1 }).unwrap();
    let r = net.replicas[1].as_mut().unwrap();
    assert!(matches!(r.step(0, b""), Err(StepError::Wire(_))));
    assert!(matches!(r.step(0, &[1; 300]), Err(StepError::Wire(_))));
    net.isolate(&[0]);
    net.propose(0, Entry::RoundSucceeded { round: 2 }).unwrap();
    let (_, _, to_1) = net
        .swallowed
        .iter()
        .find(|(f, t, _)| (*f, *t) == (0, 1))
        .cloned()
        .expect("an append to 1");
    let to_2 = net
        .swallowed
        .iter()
        .find(|(f, t, _)| (*f, *t) == (0, 2))
        .map(|s| s.2.clone())
        .expect("an append to 2");
    let r = net.replicas[1].as_mut().unwrap();
    assert!(matches!(
        r.step(2, &to_1),
        Err(StepError::WrongSender {
            peer: 2,
            claimed: 1
        })
    ));
    assert!(matches!(
        r.step(0, &to_2),
        Err(StepError::WrongRecipient { node: 1, to: 3 })
    ));
    net.settle();
    assert_eq!(net.replica(1).status(), status);
    let mut expected = before;
    expected.apply(&Entry::RoundSucceeded { round: 1 });
    assert_eq!(net.state(1), &expected, "only the genuine, committed entry");
}
