//! The static description of a network: named nodes, optional NIC caps, directed links.
//!
//! Built from a scenario file ([`crate::scenario`]) and consumed by the emulator, the policy
//! validator and (through `netstorm-controlplane`'s network model) the planners.

use crate::NodeId;
use serde::{Deserialize, Serialize};

/// One data center (or gateway).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    /// Optional cap on everything the node sends, bits per second.
    pub egress_bps: Option<f64>,
    /// Optional cap on everything the node receives, bits per second.
    pub ingress_bps: Option<f64>,
}

impl Node {
    /// `n` uncapped nodes named `n0`, `n1`, … (tests, examples, benchmarks).
    pub fn numbered(n: usize) -> Vec<Node> {
        (0..n)
            .map(|i| Node {
                name: format!("n{i}"),
                egress_bps: None,
                ingress_bps: None,
            })
            .collect()
    }
}

/// One direction of a WAN link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Link {
    pub from: NodeId,
    pub to: NodeId,
    /// Capacity in bits per second; every byte of a frame on the wire counts.
    pub rate_bps: f64,
    /// One-way propagation delay.
    pub latency_ns: u64,
    /// Independent random loss probability per frame, in `[0, 1)`.
    pub loss: f64,
}

/// Nodes plus directed links. At most one link per ordered node pair.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Topology {
    pub nodes: Vec<Node>,
    pub links: Vec<Link>,
}

impl Topology {
    /// `n` nodes `n0..`, every ordered pair joined by a lossless link of `rate_bps` and
    /// `latency_ns` (tests, examples, benchmarks).
    pub fn full_mesh(n: usize, rate_bps: f64, latency_ns: u64) -> Self {
        let nodes = Node::numbered(n);
        let links = (0..n as NodeId)
            .flat_map(|from| (0..n as NodeId).map(move |to| (from, to)))
            .filter(|(from, to)| from != to)
            .map(|(from, to)| Link {
                from,
                to,
                rate_bps,
                latency_ns,
                loss: 0.0,
            })
            .collect();
        Topology { nodes, links }
    }

    /// Two nodes, `n0` and `n1`, joined both ways (the smallest network).
    pub fn pair(rate_bps: f64, latency_ns: u64) -> Self {
        Self::full_mesh(2, rate_bps, latency_ns)
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Index of the node with this name.
    pub fn node_id(&self, name: &str) -> Option<NodeId> {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .map(|i| i as NodeId)
    }

    pub fn node_name(&self, id: NodeId) -> &str {
        &self.nodes[id as usize].name
    }

    /// The directed link `from → to`, if any.
    pub fn link(&self, from: NodeId, to: NodeId) -> Option<&Link> {
        self.links.iter().find(|l| l.from == from && l.to == to)
    }

    /// Index into [`Topology::links`] of `from → to`.
    pub fn link_index(&self, from: NodeId, to: NodeId) -> Option<usize> {
        self.links.iter().position(|l| l.from == from && l.to == to)
    }

    /// Dense `n × n` matrix of link indices (`usize::MAX` where there is no link), for
    /// O(1) lookups on hot paths.
    pub fn link_matrix(&self) -> Vec<usize> {
        let n = self.node_count();
        let mut m = vec![usize::MAX; n * n];
        for (i, l) in self.links.iter().enumerate() {
            m[l.from as usize * n + l.to as usize] = i;
        }
        m
    }

    /// Out-neighbours of `node` with a link of positive rate.
    pub fn out_neighbors(&self, node: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        self.links
            .iter()
            .filter(move |l| l.from == node && l.rate_bps > 0.0)
            .map(|l| l.to)
    }

    /// Fewest-hop route `from → to` over links of positive rate (BFS, ties broken by the
    /// lowest node index, so every caller gets the same route). `None` if unreachable.
    pub fn fewest_hop_route(&self, from: NodeId, to: NodeId) -> Option<Vec<NodeId>> {
        let n = self.node_count();
        let mut prev = vec![u16::MAX; n];
        let mut seen = vec![false; n];
        let mut queue = std::collections::VecDeque::new();
        seen[from as usize] = true;
        queue.push_back(from);
        let mut adj: Vec<Vec<NodeId>> = vec![Vec::new(); n];
        for l in &self.links {
            if l.rate_bps > 0.0 {
                adj[l.from as usize].push(l.to);
            }
        }
        for a in &mut adj {
            a.sort_unstable();
        }
        while let Some(u) = queue.pop_front() {
            if u == to {
                break;
            }
            for &v in &adj[u as usize] {
                if !seen[v as usize] {
                    seen[v as usize] = true;
                    prev[v as usize] = u;
                    queue.push_back(v);
                }
            }
        }
        if !seen[to as usize] {
            return None;
        }
        let mut route = vec![to];
        let mut cur = to;
        while cur != from {
            cur = prev[cur as usize];
            route.push(cur);
        }
        route.reverse();
        Some(route)
    }

    /// True if every node can reach every other node over links of positive rate.
    pub fn is_strongly_connected(&self) -> bool {
        let n = self.node_count() as NodeId;
        (0..n)
            .all(|v| self.fewest_hop_route(0, v).is_some() && self.fewest_hop_route(v, 0).is_some())
    }
}
