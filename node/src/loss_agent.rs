//! The node's side of losing a peer (issue 19), run by `netstorm-cp`: forwards its data
//! plane's per-peer silences to the leader, and carries out the leader's freeze and
//! decision through the node file ([`crate::nodefile`]).
//!
//! `Freeze{r}` → the `freeze` word (the workers stop releasing r on their own and each
//! answers where r stands); once every worker answered, or is already past r, the node's
//! status goes back as `FrozenStatus` (released only if every worker released r, completed
//! if every worker holds the full result, else incomplete). `Decide{r, lost}` → the
//! decision words (lost first, then `decided`); the freeze is lifted once r is over at every
//! worker (released or abandoned), so the next round runs free again.

use crate::nodefile::{FrozenStatus, NodeFile, NodeSet, RoundDecision};
use crate::proto::PeerSilence;
use netstorm_controlplane::coordinator::{ControlMsg, NodeRoundStatus};
use netstorm_dataplane::NodeId;
use std::collections::BTreeMap;

/// See the module documentation.
#[derive(Debug)]
pub struct LossAgent {
    node: NodeId,
    frozen: Option<u32>,
    /// The status sent for the frozen round (sent again when the leader asks again).
    answered: Option<(u32, NodeRoundStatus)>,
    decided: Option<u32>,
    /// Newest silence per peer, nanoseconds (`None`: never heard).
    silences: BTreeMap<NodeId, Option<u64>>,
}

impl LossAgent {
    pub fn new(node: NodeId) -> Self {
        Self {
            node,
            frozen: None,
            answered: None,
            decided: None,
            silences: BTreeMap::new(),
        }
    }

    /// A peer record from the dp's telemetry ring.
    pub fn peer_record(&mut self, p: &PeerSilence) {
        if p.peer != self.node {
            self.silences.insert(p.peer, p.silence_ns);
        }
    }

    /// The silences gathered since the last call, for the leader.
    pub fn take_silences(&mut self) -> Option<ControlMsg> {
        if self.silences.is_empty() {
            return None;
        }
        Some(ControlMsg::PeerSilence {
            node: self.node,
            peers: std::mem::take(&mut self.silences).into_iter().collect(),
        })
    }

    /// Handles the leader's `Freeze` and `Decide`; returns false for other messages.
    pub fn handle(&mut self, nf: &NodeFile, msg: &ControlMsg) -> bool {
        match *msg {
            ControlMsg::Freeze { round } => {
                if self.decided.is_some_and(|d| d >= round) {
                    // A resent freeze of a round decided already: the answer still counts.
                    self.answered = None;
                    return true;
                }
                nf.set_freeze(Some(u64::from(round)));
                self.frozen = Some(round);
                self.answered = None;
                true
            }
            ControlMsg::Decide { round, ref lost } => {
                let failed = (!lost.is_empty()).then(|| lost.iter().copied().collect::<NodeSet>());
                nf.set_decision(RoundDecision {
                    round: u64::from(round),
                    failed,
                });
                self.decided = Some(round);
                true
            }
            ControlMsg::Alone => {
                nf.set_alone(true);
                true
            }
            _ => false,
        }
    }

    /// The status to send for the frozen round once every worker answered, and lifting the
    /// freeze once the decided round is over everywhere here.
    pub fn poll(&mut self, nf: &NodeFile) -> Option<ControlMsg> {
        let round = self.frozen?;
        if self.decided == Some(round) {
            let over = (0..nf.workers()).all(|w| nf.done(w).max(nf.aborted(w)) > u64::from(round));
            if over {
                nf.set_freeze(None);
                self.frozen = None;
            }
        }
        let status = node_status(nf, round)?;
        if self.answered == Some((round, status)) {
            return None;
        }
        self.answered = Some((round, status));
        Some(ControlMsg::FrozenStatus {
            node: self.node,
            round,
            status,
        })
    }
}

/// Where `round` stands over all the node's workers; `None` while some worker has not
/// answered (its trainer has not asked for the round yet).
pub fn node_status(nf: &NodeFile, round: u32) -> Option<NodeRoundStatus> {
    let r = u64::from(round);
    let mut all_released = true;
    let mut all_full = true;
    for w in 0..nf.workers() {
        let s = if nf.done(w) > r {
            FrozenStatus::Released
        } else if nf.aborted(w) > r {
            FrozenStatus::Incomplete
        } else {
            match nf.frozen_status(w) {
                Some((q, s)) if q == r => s,
                _ => return None,
            }
        };
        all_released &= s == FrozenStatus::Released;
        all_full &= s != FrozenStatus::Incomplete;
    }
    Some(if all_released {
        NodeRoundStatus::Released
    } else if all_full {
        NodeRoundStatus::Completed
    } else {
        NodeRoundStatus::Incomplete
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh node file of `workers` workers, named after the test.
    fn file(workers: usize, name: &str) -> NodeFile {
        let dir = std::env::temp_dir().join(format!("nsloss-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.node"));
        let _ = std::fs::remove_file(&path);
        NodeFile::create(&path, workers, 64).unwrap()
    }

    #[test]
    fn answers_once_every_worker_did_and_lifts_the_freeze_when_the_round_is_over() {
        let nf = file(2, "answers");
        let mut a = LossAgent::new(1);
        assert!(a.handle(&nf, &ControlMsg::Freeze { round: 4 }));
        assert_eq!(nf.freeze(), Some(4));
        // Worker 0 released round 4 already; worker 1 has not answered.
        nf.set_done(0, 5);
        assert_eq!(a.poll(&nf), None);
        nf.set_frozen_status(1, 4, FrozenStatus::Incomplete);
        assert_eq!(
            a.poll(&nf),
            Some(ControlMsg::FrozenStatus {
                node: 1,
                round: 4,
                status: NodeRoundStatus::Incomplete
            })
        );
        assert_eq!(a.poll(&nf), None, "answered once");
        a.handle(
            &nf,
            &ControlMsg::Decide {
                round: 4,
                lost: vec![3],
            },
        );
        let d = nf.decision().unwrap();
        assert_eq!(d.round, 4);
        assert_eq!(d.failed.unwrap().iter().collect::<Vec<_>>(), [3]);
        a.poll(&nf);
        assert_eq!(nf.freeze(), Some(4), "worker 1 still holds the round");
        nf.set_aborted(1, 5);
        a.poll(&nf);
        assert_eq!(nf.freeze(), None);
    }

    #[test]
    fn status_is_completed_only_when_every_worker_holds_the_result() {
        let nf = file(2, "status");
        nf.set_frozen_status(0, 2, FrozenStatus::Completed);
        nf.set_done(1, 3);
        assert_eq!(node_status(&nf, 2), Some(NodeRoundStatus::Completed));
        nf.set_done(0, 3);
        assert_eq!(node_status(&nf, 2), Some(NodeRoundStatus::Released));
        // An answer about another round does not count.
        assert_eq!(node_status(&nf, 3), None);
    }

    #[test]
    fn silences_are_batched_per_peer() {
        let mut a = LossAgent::new(0);
        for (peer, s) in [(1, Some(5)), (2, None), (1, Some(7)), (0, Some(1))] {
            a.peer_record(&PeerSilence {
                node: 0,
                peer,
                silence_ns: s,
                at: 1,
            });
        }
        assert_eq!(
            a.take_silences(),
            Some(ControlMsg::PeerSilence {
                node: 0,
                peers: vec![(1, Some(7)), (2, None)]
            })
        );
        assert_eq!(a.take_silences(), None);
    }
}
