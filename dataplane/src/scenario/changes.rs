//! A scenario over time: [`ChangeStream`] (explicit events merged with the dynamics redraws,
//! in time order) and [`LiveTopology`] (a topology with changes applied, down nodes masked).

use super::{Change, Dynamics, TimedChange};
use crate::topology::Topology;
use crate::NodeId;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

/// The time-ordered changes of a scenario; see [`Scenario::changes`].
#[derive(Debug, Clone)]
pub struct ChangeStream {
    events: Arc<[TimedChange]>,
    next_event: usize,
    redraw: Option<RedrawState>,
}

impl ChangeStream {
    /// The explicit `events` (sorted by time) merged with the redraws of `dynamics` over
    /// `link_count` links.
    pub(super) fn new(
        events: Arc<[TimedChange]>,
        dynamics: Option<Dynamics>,
        link_count: usize,
    ) -> ChangeStream {
        ChangeStream {
            events,
            next_event: 0,
            redraw: dynamics
                .filter(|d| d.every_ns > 0 && link_count > 0)
                .map(|dynamics| RedrawState {
                    rng: ChaCha8Rng::seed_from_u64(dynamics.seed),
                    dynamics,
                    link_count,
                    round: 0,
                    next_link: 0,
                }),
        }
    }
}

#[derive(Debug, Clone)]
struct RedrawState {
    dynamics: Dynamics,
    link_count: usize,
    round: u64,
    next_link: usize,
    rng: ChaCha8Rng,
}

impl Iterator for ChangeStream {
    type Item = TimedChange;

    fn next(&mut self) -> Option<TimedChange> {
        let redraw_ns = self
            .redraw
            .as_ref()
            .and_then(|r| r.dynamics.redraw_time_ns(r.round));
        if redraw_ns.is_none() {
            self.redraw = None;
        }
        let event_ns = self.events.get(self.next_event).map(|tc| tc.at_ns);
        match (redraw_ns, event_ns) {
            (Some(redraw), event) if !matches!(event, Some(e) if e < redraw) => {
                let r = self.redraw.as_mut()?;
                let link = r.next_link;
                let rate_bps = r.dynamics.draw(&mut r.rng);
                r.next_link += 1;
                if r.next_link == r.link_count {
                    r.next_link = 0;
                    match r.round.checked_add(1) {
                        Some(round) => r.round = round,
                        None => self.redraw = None,
                    }
                }
                Some(TimedChange {
                    at_ns: redraw,
                    change: Change::LinkRate { link, rate_bps },
                })
            }
            (_, Some(_)) => {
                let tc = self.events[self.next_event];
                self.next_event += 1;
                Some(tc)
            }
            (_, None) => None,
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.events.len() - self.next_event;
        match self.redraw {
            Some(_) => (usize::MAX, None),
            None => (left, Some(left)),
        }
    }
}

/// A topology being changed over time: applies [`Change`]s, remembers which nodes are down.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveTopology {
    configured: Topology,
    down: Vec<bool>,
}

impl LiveTopology {
    pub fn new(topology: Topology) -> LiveTopology {
        let down = vec![false; topology.nodes.len()];
        LiveTopology {
            configured: topology,
            down,
        }
    }

    /// Applies one change. Changes naming a link or node that does not exist are ignored.
    pub fn apply(&mut self, change: &Change) {
        match *change {
            Change::LinkRate { link, rate_bps } => {
                if let Some(l) = self.configured.links.get_mut(link) {
                    l.rate_bps = rate_bps;
                }
            }
            Change::LinkLatency { link, latency_ns } => {
                if let Some(l) = self.configured.links.get_mut(link) {
                    l.latency_ns = latency_ns;
                }
            }
            Change::LinkLoss { link, loss } => {
                if let Some(l) = self.configured.links.get_mut(link) {
                    l.loss = loss;
                }
            }
            Change::NodeDown(node) | Change::NodeUp(node) => {
                if let Some(d) = self.down.get_mut(node as usize) {
                    *d = matches!(change, Change::NodeDown(_));
                }
            }
        }
    }

    pub fn is_up(&self, node: NodeId) -> bool {
        !self.down.get(node as usize).copied().unwrap_or(false)
    }

    /// The links' configured values, ignoring which nodes are down.
    pub fn configured(&self) -> &Topology {
        &self.configured
    }

    /// The network now: configured values, links touching a down node at rate 0.
    pub fn current(&self) -> Topology {
        let mut topo = self.configured.clone();
        for l in &mut topo.links {
            if !self.is_up(l.from) || !self.is_up(l.to) {
                l.rate_bps = 0.0;
            }
        }
        topo
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::tests::{dynamic, TWO_NODES};
    use crate::scenario::Scenario;
    use crate::NANOS_PER_SEC;

    #[test]
    fn stream_orders_and_repeats() {
        let s = dynamic(1);
        let a: Vec<_> = s.changes().take(10).collect();
        assert_eq!(a, dynamic(1).changes().take(10).collect::<Vec<_>>());
        assert_ne!(a, dynamic(2).changes().take(10).collect::<Vec<_>>());
        let times: Vec<_> = a.iter().map(|c| c.at_ns).collect();
        let half = NANOS_PER_SEC / 2;
        assert_eq!(
            times,
            [
                0,
                0,
                half,
                half,
                2 * half,
                2 * half,
                3 * half,
                3 * half,
                4 * half,
                4 * half
            ]
        );
        assert_eq!(s.changes().size_hint(), (usize::MAX, None));
        let fixed = Scenario::parse_str(TWO_NODES, "t.toml").unwrap();
        assert_eq!(fixed.changes().size_hint(), (0, Some(0)));
    }

    #[test]
    fn stream_ends_at_the_end_of_time() {
        let mut s = dynamic(1);
        s.dynamics.as_mut().unwrap().every_ns = u64::MAX / 2 + 1;
        // Rounds at 0 and 2^63; 2^64 does not exist.
        assert_eq!(s.changes().count(), 4);
        s.dynamics.as_mut().unwrap().every_ns = 1;
        assert_eq!(s.topology_at(u64::MAX).links.len(), 2);
    }

    #[test]
    fn live_topology_masks_down_nodes() {
        let s = Scenario::parse_str(TWO_NODES, "t.toml").unwrap();
        let mut live = LiveTopology::new(s.topology.clone());
        live.apply(&Change::NodeDown(1));
        assert!(!live.is_up(1) && live.is_up(0));
        assert!(live.current().links.iter().all(|l| l.rate_bps == 0.0));
        live.apply(&Change::LinkRate {
            link: 0,
            rate_bps: 5.0,
        });
        live.apply(&Change::LinkRate {
            link: 99,
            rate_bps: 5.0,
        }); // ignored
        live.apply(&Change::NodeDown(99)); // ignored
        assert_eq!(live.configured().links[0].rate_bps, 5.0);
        live.apply(&Change::NodeUp(1));
        assert_eq!(live.current().links[0].rate_bps, 5.0);
        assert_eq!(live.current().links[1].rate_bps, 10e6);
    }
}
