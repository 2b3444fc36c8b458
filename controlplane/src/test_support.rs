//! What the control plane's unit tests share: the nodes' agents with instant message
//! delivery and rounds that start together, and synthetic link telemetry.

use crate::awareness::LinkSample;
use crate::coordinator::{ControlMsg, NodeAgent};
use netstorm_dataplane::topology::Topology;
use netstorm_dataplane::{Nanos, NodeId};

pub(crate) const SECOND: Nanos = 1_000_000_000;

/// Every node's agent; rounds start on every node together, when every agent allows it.
#[derive(Debug)]
pub(crate) struct Nodes {
    pub(crate) agents: Vec<NodeAgent>,
    /// The next round the nodes start.
    pub(crate) next_round: u32,
    /// Committed policies handed over, per node: `(epoch, activation round)`.
    pub(crate) installed: Vec<Vec<(u32, u32)>>,
}

impl Nodes {
    pub(crate) fn new(n: usize) -> Self {
        Self {
            agents: (0..n as NodeId).map(|v| NodeAgent::new(v, 0)).collect(),
            next_round: 0,
            installed: vec![Vec::new(); n],
        }
    }

    /// Node `to` handles `msg`; returns its reply.
    pub(crate) fn handle(&mut self, to: NodeId, msg: ControlMsg) -> Option<ControlMsg> {
        let agent = &mut self.agents[to as usize];
        let reply = agent.handle(msg);
        while let Some((policy, at)) = agent.take_install() {
            self.installed[to as usize].push((policy.epoch, at));
        }
        reply
    }

    /// Starts the next round everywhere if every node may (and holds a policy for it);
    /// returns the heartbeats.
    pub(crate) fn try_start_round(&mut self) -> Vec<(NodeId, ControlMsg)> {
        let r = self.next_round;
        let covered = self
            .installed
            .iter()
            .all(|i| i.iter().any(|&(_, at)| at <= r));
        if !covered || !self.agents.iter().all(|a| a.may_start(r)) {
            return Vec::new();
        }
        self.next_round += 1;
        self.agents
            .iter_mut()
            .map(|a| (a.node(), a.started(r)))
            .collect()
    }

    /// The epoch round `r` runs under at node `v`.
    pub(crate) fn epoch_of_round(&self, v: usize, r: u32) -> Option<u32> {
        self.installed[v]
            .iter()
            .filter(|&&(_, at)| at <= r)
            .map(|&(e, _)| e)
            .max()
    }
}

/// One capacity sample per link of `topo`, taken at `at`, at the rate `rate_bps(from, to)`.
pub(crate) fn link_samples(
    topo: &Topology,
    at: Nanos,
    rate_bps: impl Fn(NodeId, NodeId) -> f64,
) -> Vec<LinkSample> {
    topo.links
        .iter()
        .map(|l| LinkSample {
            from: l.from,
            to: l.to,
            at,
            rate_bps: Some(rate_bps(l.from, l.to)),
            app_limited: false,
            rtt_ns: Some(40_000_000),
            sent: 100,
            lost: 0,
        })
        .collect()
}

/// A coordinator as the nodes see it: messages in, a tick, messages out.
pub(crate) trait CoordinatorSide {
    fn handle(&mut self, now: Nanos, from: NodeId, msg: ControlMsg);
    fn tick(&mut self, now: Nanos);
    fn poll_transmit(&mut self) -> Option<(NodeId, ControlMsg)>;
}

/// Runs `coord` and `nodes` from `from` to `until` (virtual time) in ticks of 10 ms with
/// instant delivery: a round every 100 ms (when the nodes may start it), and every 250 ms
/// each node's telemetry of its outgoing links at `rate_bps(from, to)`.
pub(crate) fn run(
    coord: &mut impl CoordinatorSide,
    nodes: &mut Nodes,
    topo: &Topology,
    from: Nanos,
    until: Nanos,
    rate_bps: impl Fn(NodeId, NodeId) -> f64,
) {
    const TICK: Nanos = 10_000_000;
    let mut now = from;
    while now < until {
        now += TICK;
        if now.is_multiple_of(10 * TICK) {
            for (v, heartbeat) in nodes.try_start_round() {
                coord.handle(now, v, heartbeat);
            }
        }
        if now.is_multiple_of(25 * TICK) {
            for v in 0..topo.node_count() as NodeId {
                let samples = link_samples(topo, now, &rate_bps)
                    .into_iter()
                    .filter(|s| s.from == v)
                    .collect();
                coord.handle(now, v, ControlMsg::Telemetry { node: v, samples });
            }
        }
        coord.tick(now);
        while let Some((to, msg)) = coord.poll_transmit() {
            if let Some(reply) = nodes.handle(to, msg) {
                coord.handle(now, to, reply);
            }
        }
    }
}
