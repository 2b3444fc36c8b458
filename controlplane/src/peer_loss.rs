//! Losing a node on real hosts (issue 19), sans-IO: detection and one outcome per round.
//!
//! **Detection.** Every node's data plane reports, per peer, how long ago it last heard
//! from it (data, acks, RoundDone or idle heartbeats); the node's cp forwards that as
//! [`ControlMsg::PeerSilence`]. A member is declared lost when every other member that
//! reported recently says it has been silent for `peer_timeout_ns` (never heard counts as
//! silent). Data-plane silence, not the cp connection, decides: a node whose cp alone died
//! keeps training (its dp keeps talking), and one whose dp died is lost even while its cp
//! still answers.
//!
//! **One outcome per round.** The survivors may stand at different rounds: release gossip
//! (`dataplane::engine::release`) guarantees that if any node released round r, every member
//! had completed r. The leader resolves the lowest round a survivor may still be in, then
//! the next: it sends `Freeze{r}` to every survivor, whose cp stops its workers from
//! releasing r on their own and answers `FrozenStatus` (released / completed / incomplete,
//! over all its workers; a node frozen "incomplete" withholds its RoundDone from then on).
//! The rule ([`decide`]): every survivor released or completed → r succeeded (the frozen
//! ones release it), else r failed, losing the lost nodes (the survivors abandon it and
//! their trainers get a typed error, buffers unchanged). Once a round failed, nobody can
//! start the next round under the old epoch (an engine waits for a newer one after an
//! abort): the caller re-plans over the survivors from the next round. A round that
//! succeeded is followed by resolving the next one, which cannot succeed without the lost
//! node (unless every survivor released it before the loss was seen).
//!
//! **Rejoining.** [`PeerLoss::readmit`] makes a lost node a member again (the caller does
//! so at a round boundary, once its data plane restarted): the silences reported about it
//! before are forgotten, so it is watched afresh from the survivors' next reports.
//!
//! Not here yet: a replicated leader (this state lives in the configured coordinator).

use crate::coordinator::{ControlMsg, NodeRoundStatus};
use netstorm_dataplane::{Nanos, NodeId};
use std::collections::BTreeSet;

/// The leader's verdict about one round after a loss.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed { lost: Vec<NodeId> },
}

/// The rule: a round succeeds only if every survivor has its full result.
pub fn decide(statuses: &[NodeRoundStatus], lost: &BTreeSet<NodeId>) -> Outcome {
    if statuses
        .iter()
        .all(|s| matches!(s, NodeRoundStatus::Released | NodeRoundStatus::Completed))
    {
        Outcome::Succeeded
    } else {
        Outcome::Failed {
            lost: lost.iter().copied().collect(),
        }
    }
}

/// What the caller should do after [`PeerLoss::handle_timeout`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LossEvent {
    /// `node` was declared lost (its data plane silent everywhere for the timeout).
    Lost { node: NodeId },
    /// `round` was decided; on failure the caller re-plans over the survivors from
    /// `round + 1`.
    Decided { round: u32, outcome: Outcome },
}

/// When a report arrived, and the silence it reported (`None`: never heard).
type SilenceReport = (Nanos, Option<Nanos>);

#[derive(Debug, Clone)]
struct Resolving {
    round: u32,
    statuses: Vec<Option<NodeRoundStatus>>,
    sent_at: Nanos,
}

/// Detection and resolution state of the leader.
#[derive(Debug)]
pub struct PeerLoss {
    peer_timeout_ns: Nanos,
    resend_ns: Nanos,
    /// `reports[reporter][peer]`.
    reports: Vec<Vec<Option<SilenceReport>>>,
    member: Vec<bool>,
    lost: BTreeSet<NodeId>,
    resolving: Option<Resolving>,
    /// The newest round decided, and how.
    last_decided: Option<(u32, Outcome)>,
    /// A loss has not been followed by a failed round yet (so no policy without the lost
    /// node was asked for): the next round a survivor starts must be resolved.
    unsettled: bool,
    /// Members that restarted: declared lost at the next timeout.
    restarted: BTreeSet<NodeId>,
    out: Vec<(NodeId, ControlMsg)>,
}

impl PeerLoss {
    pub fn new(node_count: usize, peer_timeout_ns: Nanos) -> Self {
        Self {
            peer_timeout_ns,
            resend_ns: (peer_timeout_ns / 4).max(50_000_000),
            reports: vec![vec![None; node_count]; node_count],
            member: vec![true; node_count],
            lost: BTreeSet::new(),
            resolving: None,
            last_decided: None,
            unsettled: false,
            restarted: BTreeSet::new(),
            out: Vec::new(),
        }
    }

    /// Nodes declared lost.
    pub fn lost(&self) -> &BTreeSet<NodeId> {
        &self.lost
    }

    /// Members (not lost), ascending.
    pub fn members(&self) -> Vec<NodeId> {
        (0..self.member.len() as NodeId)
            .filter(|&v| self.member[v as usize])
            .collect()
    }

    /// The round being resolved, if any.
    pub fn resolving(&self) -> Option<u32> {
        self.resolving.as_ref().map(|r| r.round)
    }

    /// The newest decision.
    pub fn last_decided(&self) -> Option<&(u32, Outcome)> {
        self.last_decided.as_ref()
    }

    /// Whether every loss so far was followed by its decided rounds (nothing frozen, no
    /// round still to resolve): a membership change may be planned now.
    pub fn settled(&self) -> bool {
        self.resolving.is_none() && !self.unsettled
    }

    /// Declares member `node` lost at the next [`PeerLoss::handle_timeout`] whatever the
    /// silences say: it restarted (its fresh data plane can take no part in the rounds in
    /// flight, yet it is heard, so silence would never declare it).
    pub fn declare_lost(&mut self, node: NodeId) {
        if self.member.get(node as usize).copied().unwrap_or(false) {
            self.restarted.insert(node);
        }
    }

    /// Makes lost node `node` a member again (it rejoins with a fresh data plane). Every
    /// silence report about it, and every report it made before, is forgotten: it is
    /// declared lost again only on reports made after this call. Returns false (nothing
    /// changed) if `node` is not lost.
    pub fn readmit(&mut self, node: NodeId) -> bool {
        let x = node as usize;
        if !self.lost.remove(&node) {
            return false;
        }
        self.member[x] = true;
        for row in &mut self.reports {
            row[x] = None;
        }
        self.reports[x].fill(None);
        true
    }

    /// A node's data-plane silences per peer (`None`: never heard).
    pub fn handle_silence(&mut self, now: Nanos, from: NodeId, peers: &[(NodeId, Option<Nanos>)]) {
        let Some(row) = self.reports.get_mut(from as usize) else {
            return;
        };
        for &(peer, silence) in peers {
            if let Some(slot) = row.get_mut(peer as usize) {
                *slot = Some((now, silence));
            }
        }
    }

    /// A survivor's answer to a freeze.
    pub fn handle_status(&mut self, from: NodeId, round: u32, status: NodeRoundStatus) {
        if let Some(r) = self.resolving.as_mut().filter(|r| r.round == round) {
            if self.member.get(from as usize).copied().unwrap_or(false) {
                r.statuses[from as usize] = Some(status);
            }
        }
    }

    /// What to resend to a node that (re)connected: the freeze in progress and the newest
    /// decision.
    pub fn on_hello(&mut self, node: NodeId) {
        if !self.member.get(node as usize).copied().unwrap_or(false) {
            return;
        }
        if let Some((round, outcome)) = &self.last_decided {
            self.out.push((node, decide_msg(*round, outcome)));
        }
        if let Some(r) = &self.resolving {
            self.out.push((node, ControlMsg::Freeze { round: r.round }));
        }
    }

    /// Detection, then the resolution protocol. `started[v]`: the newest round node `v`
    /// reported starting. Returns what happened.
    pub fn handle_timeout(&mut self, now: Nanos, started: &[Option<u32>]) -> Vec<LossEvent> {
        let mut events = Vec::new();
        let n = self.member.len();
        for x in 0..n {
            let restarted = self.restarted.remove(&(x as NodeId));
            if !self.member[x] || !(restarted || self.silent_everywhere(now, x)) {
                continue;
            }
            self.member[x] = false;
            self.lost.insert(x as NodeId);
            events.push(LossEvent::Lost { node: x as NodeId });
            self.unsettled = true;
        }
        // Rounds a survivor may still be in: from the lowest started one (a node that
        // released it answers "released"). If none started a round yet, the first one that
        // does (under the old epoch, so it cannot complete) is resolved then.
        if self.resolving.is_none() && self.unsettled {
            let lowest = (0..n)
                .filter(|&v| self.member[v])
                .filter_map(|v| started[v])
                .min();
            let after_last = self.last_decided.as_ref().map(|(r, _)| r + 1);
            if let Some(r) = lowest.map(|l| after_last.map_or(l, |a| l.max(a))) {
                self.start(now, r);
            }
        }
        if let Some(r) = self.resolving.as_mut() {
            for (v, s) in r.statuses.iter_mut().enumerate() {
                if !self.member[v] {
                    *s = None;
                }
            }
            let members: Vec<usize> = (0..n).filter(|&v| self.member[v]).collect();
            if members.iter().all(|&v| r.statuses[v].is_some()) {
                let statuses: Vec<NodeRoundStatus> =
                    members.iter().filter_map(|&v| r.statuses[v]).collect();
                let round = r.round;
                let outcome = decide(&statuses, &self.lost);
                self.resolving = None;
                for &v in &members {
                    self.out.push((v as NodeId, decide_msg(round, &outcome)));
                }
                self.last_decided = Some((round, outcome.clone()));
                if outcome == Outcome::Succeeded {
                    // The next round runs under the old epoch and needs the lost node.
                    self.start(now, round + 1);
                } else {
                    // The survivors wait for a policy without the lost nodes (the caller
                    // re-plans): nothing more to resolve until the next loss.
                    self.unsettled = false;
                }
                events.push(LossEvent::Decided { round, outcome });
            } else if now >= r.sent_at + self.resend_ns {
                r.sent_at = now;
                for &v in &members {
                    if r.statuses[v].is_none() {
                        self.out
                            .push((v as NodeId, ControlMsg::Freeze { round: r.round }));
                    }
                }
            }
        }
        events
    }

    fn start(&mut self, now: Nanos, round: u32) {
        let n = self.member.len();
        self.resolving = Some(Resolving {
            round,
            statuses: vec![None; n],
            sent_at: now,
        });
        for v in (0..n).filter(|&v| self.member[v]) {
            self.out.push((v as NodeId, ControlMsg::Freeze { round }));
        }
    }

    /// Whether every member other than `x` that reported within two timeouts says `x` has
    /// been silent for the timeout (at least one such report).
    fn silent_everywhere(&self, now: Nanos, x: usize) -> bool {
        let fresh = 2 * self.peer_timeout_ns;
        let mut reporters = 0;
        for (v, row) in self.reports.iter().enumerate() {
            if v == x || !self.member[v] {
                continue;
            }
            let Some((at, silence)) = row[x] else {
                continue;
            };
            if now.saturating_sub(at) > fresh {
                continue;
            }
            // No figure (an older dp's "never heard"): no vote either way. Counting it as
            // silent declared a node lost the moment the coordinator started, before the
            // reporter's dp had heard anyone (a CI run under load).
            let Some(silence) = silence else {
                continue;
            };
            reporters += 1;
            if silence < self.peer_timeout_ns {
                return false;
            }
        }
        reporters > 0
    }

    /// Messages to send, in order.
    pub fn drain_transmit(&mut self) -> Vec<(NodeId, ControlMsg)> {
        std::mem::take(&mut self.out)
    }
}

fn decide_msg(round: u32, outcome: &Outcome) -> ControlMsg {
    ControlMsg::Decide {
        round,
        lost: match outcome {
            Outcome::Succeeded => Vec::new(),
            Outcome::Failed { lost } => lost.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const MS: Nanos = 1_000_000;

    fn statuses(out: &[(NodeId, ControlMsg)]) -> Vec<(NodeId, ControlMsg)> {
        out.to_vec()
    }

    /// Four nodes; node 3's dp goes silent at t = 1 s.
    fn silence_of_3(p: &mut PeerLoss, now: Nanos) {
        for v in 0..3 {
            let peers: Vec<(NodeId, Option<Nanos>)> = (0..4)
                .filter(|&u| u != v)
                .map(|u| (u, Some(if u == 3 { now - 1_000 * MS } else { 50 * MS })))
                .collect();
            p.handle_silence(now, v, &peers);
        }
    }

    /// The CI failure: the coordinator started while the reporters' dps had not heard node 1
    /// yet; their "never heard" must not declare it lost at once. A figure counts only once
    /// it reaches the timeout (the dp reports "silent since I started").
    #[test]
    fn never_heard_is_no_vote_and_a_dp_that_just_started_condemns_nobody() {
        let mut p = PeerLoss::new(3, 2_000 * MS);
        let started = [Some(0), Some(0), None];
        p.handle_silence(100 * MS, 0, &[(1, None), (2, None)]);
        p.handle_silence(100 * MS, 2, &[(0, None), (1, None)]);
        assert!(p.handle_timeout(100 * MS, &started).is_empty());
        // A dp up for 300 ms that has not heard node 1: silent 300 ms, below the timeout.
        p.handle_silence(300 * MS, 0, &[(1, Some(300 * MS)), (2, Some(5 * MS))]);
        p.handle_silence(300 * MS, 2, &[(0, Some(5 * MS)), (1, Some(300 * MS))]);
        assert!(p.handle_timeout(300 * MS, &started).is_empty());
        assert!(p.lost().is_empty());
        // Still nothing from node 1 after the timeout: now it is lost.
        p.handle_silence(2_400 * MS, 0, &[(1, Some(2_400 * MS)), (2, Some(5 * MS))]);
        p.handle_silence(2_400 * MS, 2, &[(0, Some(5 * MS)), (1, Some(2_400 * MS))]);
        assert_eq!(
            p.handle_timeout(2_400 * MS, &started),
            [LossEvent::Lost { node: 1 }]
        );
    }

    #[test]
    fn a_node_silent_everywhere_is_lost_and_its_round_fails_once() {
        let mut p = PeerLoss::new(4, 1_500 * MS);
        let started = [Some(7), Some(7), Some(6), Some(7)];
        // 2.0 s: silent for 1.0 s < timeout; 2.6 s: 1.6 s.
        silence_of_3(&mut p, 2_000 * MS);
        assert!(p.handle_timeout(2_000 * MS, &started).is_empty());
        silence_of_3(&mut p, 2_600 * MS);
        let ev = p.handle_timeout(2_600 * MS, &started);
        assert_eq!(ev, [LossEvent::Lost { node: 3 }]);
        // Round 6 first (node 2 may still be in it), frozen at the survivors only.
        assert_eq!(p.resolving(), Some(6));
        let sent = statuses(&p.drain_transmit());
        assert_eq!(
            sent,
            (0..3)
                .map(|v| (v, ControlMsg::Freeze { round: 6 }))
                .collect::<Vec<_>>()
        );
        p.handle_status(0, 6, NodeRoundStatus::Released);
        p.handle_status(1, 6, NodeRoundStatus::Released);
        assert!(p.handle_timeout(2_610 * MS, &started).is_empty());
        p.handle_status(2, 6, NodeRoundStatus::Completed);
        // Everyone holds round 6: it succeeded; round 7 is frozen next and fails.
        let ev = p.handle_timeout(2_620 * MS, &started);
        assert_eq!(
            ev,
            [LossEvent::Decided {
                round: 6,
                outcome: Outcome::Succeeded
            }]
        );
        assert_eq!(p.resolving(), Some(7));
        for v in 0..3 {
            p.handle_status(v, 7, NodeRoundStatus::Incomplete);
        }
        let ev = p.handle_timeout(2_630 * MS, &started);
        assert_eq!(
            ev,
            [LossEvent::Decided {
                round: 7,
                outcome: Outcome::Failed { lost: vec![3] }
            }]
        );
        assert_eq!(p.resolving(), None);
        assert_eq!(p.members(), [0, 1, 2]);
        // Nothing more without a new loss.
        assert!(p.handle_timeout(9_000 * MS, &started).is_empty());
    }

    #[test]
    fn one_member_still_hearing_the_node_keeps_it() {
        let mut p = PeerLoss::new(4, 1_500 * MS);
        silence_of_3(&mut p, 3_000 * MS);
        // Node 1 heard 3 recently (e.g. only the 0-3 and 2-3 links failed).
        p.handle_silence(3_000 * MS, 1, &[(3, Some(20 * MS))]);
        assert!(p.handle_timeout(3_000 * MS, &[Some(1); 4]).is_empty());
        assert!(p.lost().is_empty());
    }

    #[test]
    fn stale_reports_do_not_declare_anyone_lost() {
        let mut p = PeerLoss::new(4, 1_500 * MS);
        silence_of_3(&mut p, 2_600 * MS);
        // The reports are older than two timeouts when looked at.
        assert!(p.handle_timeout(6_000 * MS, &[Some(1); 4]).is_empty());
    }

    #[test]
    fn the_rule_fails_a_round_any_survivor_lacks() {
        let lost: BTreeSet<NodeId> = [4].into();
        use NodeRoundStatus::*;
        assert_eq!(decide(&[Released, Completed], &lost), Outcome::Succeeded);
        assert_eq!(
            decide(&[Released, Incomplete], &lost),
            Outcome::Failed { lost: vec![4] }
        );
    }

    #[test]
    fn a_loss_between_rounds_resolves_the_first_round_a_survivor_starts() {
        let mut p = PeerLoss::new(4, 1_500 * MS);
        silence_of_3(&mut p, 2_600 * MS);
        // Lost before any survivor started a round: nothing to freeze yet.
        assert_eq!(
            p.handle_timeout(2_600 * MS, &[None; 4]),
            [LossEvent::Lost { node: 3 }]
        );
        assert_eq!(p.resolving(), None);
        // Node 1 starts round 0 (under the epoch with node 3 in it): resolved.
        p.handle_timeout(2_700 * MS, &[None, Some(0), None, None]);
        assert_eq!(p.resolving(), Some(0));
    }

    #[test]
    fn a_readmitted_node_is_watched_afresh() {
        let mut p = PeerLoss::new(4, 1_500 * MS);
        silence_of_3(&mut p, 2_600 * MS);
        p.handle_timeout(2_600 * MS, &[Some(2); 4]);
        for v in 0..3 {
            p.handle_status(v, 2, NodeRoundStatus::Incomplete);
        }
        p.handle_timeout(2_610 * MS, &[Some(2); 4]);
        assert!(p.settled());
        assert!(!p.readmit(1), "not lost");
        assert!(p.readmit(3));
        assert_eq!(p.members(), [0, 1, 2, 3]);
        assert!(p.lost().is_empty());
        // The old reports (3 silent for 1.6 s, made 0.1 s ago) no longer count...
        assert!(p.handle_timeout(2_700 * MS, &[Some(2); 4]).is_empty());
        // ...new ones do: silent again for the timeout, lost again.
        silence_of_3(&mut p, 4_200 * MS);
        assert_eq!(
            p.handle_timeout(4_200 * MS, &[Some(9); 4]),
            [LossEvent::Lost { node: 3 }]
        );
    }

    #[test]
    fn unanswered_freezes_are_resent_to_the_silent_survivors_only() {
        let mut p = PeerLoss::new(4, 1_500 * MS);
        silence_of_3(&mut p, 2_600 * MS);
        p.handle_timeout(2_600 * MS, &[Some(2); 4]);
        p.drain_transmit();
        p.handle_status(0, 2, NodeRoundStatus::Incomplete);
        p.handle_timeout(3_100 * MS, &[Some(2); 4]);
        assert_eq!(
            p.drain_transmit(),
            [
                (1, ControlMsg::Freeze { round: 2 }),
                (2, ControlMsg::Freeze { round: 2 })
            ]
        );
    }
}
