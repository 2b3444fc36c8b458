//! The network model the planners read.
//!
//! Today it is built from a scenario's topology (the "oracle" view); network awareness
//! will build it from telemetry. Capacities are bits per second, latencies nanoseconds.

use netstorm_dataplane::topology::Topology;
use netstorm_dataplane::NodeId;

/// What the control plane believes about the network.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkModel {
    /// Nodes, NIC caps and directed links with their estimated rate, latency and loss.
    pub topology: Topology,
    /// Dense `n × n` link index matrix (`usize::MAX` = no link), from `topology`.
    link_index: Vec<usize>,
}

/// `topo` over the nodes `kept` only (ascending original ids), renumbered `0..kept.len()`
/// in that order; links to or from other nodes are dropped.
pub fn restricted(topo: &Topology, kept: &[NodeId]) -> Topology {
    let new_id = |v: NodeId| kept.iter().position(|&k| k == v).map(|i| i as NodeId);
    let links = topo
        .links
        .iter()
        .filter_map(|l| {
            let (from, to) = (new_id(l.from)?, new_id(l.to)?);
            Some(netstorm_dataplane::topology::Link {
                from,
                to,
                ..l.clone()
            })
        })
        .collect();
    let nodes = kept
        .iter()
        .map(|&v| topo.nodes[v as usize].clone())
        .collect();
    Topology { nodes, links }
}

impl NetworkModel {
    pub fn from_topology(topology: Topology) -> Self {
        let link_index = topology.link_matrix();
        Self {
            topology,
            link_index,
        }
    }

    pub fn node_count(&self) -> usize {
        self.topology.node_count()
    }

    /// Capacity of `from → to` in bits per second (0 if there is no link).
    pub fn capacity_bps(&self, from: NodeId, to: NodeId) -> f64 {
        self.link(from, to).map(|l| l.rate_bps).unwrap_or(0.0)
    }

    /// One-way latency of `from → to` in nanoseconds, if the link exists.
    pub fn latency_ns(&self, from: NodeId, to: NodeId) -> Option<u64> {
        self.link(from, to).map(|l| l.latency_ns)
    }

    pub fn link(&self, from: NodeId, to: NodeId) -> Option<&netstorm_dataplane::topology::Link> {
        let n = self.node_count();
        let i = *self.link_index.get(from as usize * n + to as usize)?;
        self.topology.links.get(i)
    }

    /// Index into `topology.links` of `from → to`.
    pub fn link_index(&self, from: NodeId, to: NodeId) -> Option<usize> {
        let n = self.node_count();
        let i = *self.link_index.get(from as usize * n + to as usize)?;
        (i != usize::MAX).then_some(i)
    }
}
