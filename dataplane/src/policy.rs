//! Policies: what the control plane installs into the data plane.
//!
//! A [`Policy`] is a set of trees. Tree `t` owns a contiguous share of the gradient buffer;
//! that share is reduced up the tree's *reduce in-tree* to its root and broadcast down its
//! *broadcast out-tree*. Several trees may share a root. Every tree edge names one or more
//! routes from the path table ([`Policy::routes`]); a route with more than two hops is
//! relayed packet by packet by the intermediate nodes, which never aggregate.
//!
//! Invariants checked by [`Policy::validate`]: shares are finite, non-negative and sum to 1;
//! every non-root node has exactly one reduce parent and one broadcast parent and following
//! parents reaches the root; every route runs over links of the topology in both directions
//! (acknowledgements travel back along the reversed route); no tree node has more than
//! [`MAX_CHILDREN`] children.

use crate::topology::Topology;
use crate::NodeId;
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// Index into [`Policy::routes`]. Invariant: within one job a path id always names the same
/// route, across epochs, so per-path sequence state can outlive a policy change.
pub type PathId = u16;

/// Most children one node may have in one tree (contribution tracking uses a `u64` mask).
pub const MAX_CHILDREN: usize = 64;

/// How an inner node forwards a tree's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForwardMode {
    /// Forward each segment as soon as it is complete (NetStorm, ring, mesh).
    #[default]
    Pipelined,
    /// Forward only once the node holds every segment of the tree's share (whole-message
    /// systems: MXNet PS keys, TSEngine whole-model transfers).
    StoreAndForward,
}

/// One route used by a tree edge, with the fraction of the edge's traffic it carries.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WeightedPath {
    pub path: PathId,
    pub weight: f64,
}

/// A tree edge as seen from the non-root endpoint `v`: its parent and the routes used.
/// Reduce edges carry data `v → parent`; broadcast edges carry data `parent → v`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TreeEdge {
    pub parent: NodeId,
    pub paths: Vec<WeightedPath>,
}

/// One aggregation tree: a root, a share of the buffer, a reduce in-tree and a broadcast
/// out-tree, both indexed by node (`None` at the root).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TreePolicy {
    pub root: NodeId,
    pub share: f64,
    pub reduce: Vec<Option<TreeEdge>>,
    pub broadcast: Vec<Option<TreeEdge>>,
    #[serde(default)]
    pub forward: ForwardMode,
}

/// A node sequence `hops[0] → hops[1] → … → hops[last]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Route {
    pub hops: Vec<NodeId>,
}

impl Route {
    pub fn origin(&self) -> NodeId {
        self.hops[0]
    }
    pub fn destination(&self) -> NodeId {
        *self.hops.last().expect("validated route is non-empty")
    }
}

/// Pacing rate for one directed link, in bits per second of frames on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LinkRate {
    pub from: NodeId,
    pub to: NodeId,
    pub rate_bps: f64,
}

/// A complete synchronization policy for one epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// Monotonically increasing; carried in every data packet.
    pub epoch: u32,
    pub node_count: u16,
    pub trees: Vec<TreePolicy>,
    /// The path table; [`PathId`] indexes it.
    pub routes: Vec<Route>,
    /// Pacing rates the senders use per link (estimates or the scenario's truth).
    pub link_rates: Vec<LinkRate>,
    /// The nodes whose buffers a round sums, ascending; `None`: every node. A node left out
    /// (lost, issue 19) is in no tree: no root, parent or hop of a tree edge's route, and no
    /// entry in the trees' maps. Node ids keep their meaning, so a policy over the survivors
    /// shares the job's path table and sequence spaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<NodeId>>,
}

/// Why a policy was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyError {
    #[error("policy is for {policy} nodes but the network has {network}")]
    NodeCount { policy: usize, network: usize },
    #[error("policy has no trees")]
    NoTrees,
    #[error("policy has {0} trees; at most 65535 are supported")]
    TooManyTrees(usize),
    #[error("tree {tree}: share {share} is not a finite non-negative number")]
    BadShare { tree: usize, share: f64 },
    #[error("shares sum to {0}, not 1")]
    SharesSum(f64),
    #[error("tree {tree}: root {root} is not a node of the network")]
    BadRoot { tree: usize, root: NodeId },
    #[error("tree {tree}: {which} map has {len} entries, expected one per node ({nodes})")]
    MapLength {
        tree: usize,
        which: &'static str,
        len: usize,
        nodes: usize,
    },
    #[error("tree {tree}: the root {node} has a {which} parent")]
    RootHasParent {
        tree: usize,
        which: &'static str,
        node: String,
    },
    #[error("tree {tree}: node {node} is missing from the {which} tree (no parent)")]
    MissingNode {
        tree: usize,
        which: &'static str,
        node: String,
    },
    #[error("tree {tree}: the {which} tree has a cycle through node {node}")]
    Cycle {
        tree: usize,
        which: &'static str,
        node: String,
    },
    #[error("tree {tree}: node {node} has {count} {which} children; at most {MAX_CHILDREN}")]
    TooManyChildren {
        tree: usize,
        which: &'static str,
        node: String,
        count: usize,
    },
    #[error("tree {tree}: {which} edge {from} -> {to} has no route")]
    NoRoute {
        tree: usize,
        which: &'static str,
        from: String,
        to: String,
    },
    #[error("tree {tree}: {which} edge {from} -> {to} uses path {path}, which {problem}")]
    BadEdgePath {
        tree: usize,
        which: &'static str,
        from: String,
        to: String,
        path: usize,
        problem: String,
    },
    #[error("route {path} ({hops}) {problem}")]
    BadRoute {
        path: usize,
        hops: String,
        problem: String,
    },
    #[error("link rate {from} -> {to} = {rate} is not a positive finite number")]
    BadLinkRate { from: String, to: String, rate: f64 },
    #[error("members {0:?} are not distinct node ids of the network in ascending order")]
    BadMembers(Vec<NodeId>),
    #[error("tree {tree}: node {node}, not a member, is in the {which} tree")]
    NonMemberInTree {
        tree: usize,
        which: &'static str,
        node: String,
    },
}

impl Policy {
    /// Whether `node`'s buffer takes part in this policy's rounds.
    pub fn is_member(&self, node: NodeId) -> bool {
        self.members
            .as_ref()
            .is_none_or(|m| m.binary_search(&node).is_ok())
    }

    /// How many nodes take part.
    pub fn member_count(&self) -> usize {
        self.members
            .as_ref()
            .map_or(self.node_count as usize, Vec::len)
    }

    /// Epoch `epoch` of the two-node job on `topo` (e.g. [`Topology::pair`]): node 0 reduces
    /// into root 1 and gets the result back over the direct links, paced at `topo`'s rates.
    pub fn pair(topo: &Topology, epoch: u32) -> Policy {
        let mut b = PolicyBuilder::new();
        b.tree(
            1,
            1.0,
            &[Some(1), None],
            &[Some(1), None],
            ForwardMode::Pipelined,
        )
        .link_rates_from(topo);
        b.build(epoch, 2)
    }

    /// Checks every invariant listed in the module documentation against `topo`.
    pub fn validate(&self, topo: &Topology) -> Result<(), PolicyError> {
        let n = topo.node_count();
        if self.node_count as usize != n {
            return Err(PolicyError::NodeCount {
                policy: self.node_count as usize,
                network: n,
            });
        }
        if self.trees.is_empty() {
            return Err(PolicyError::NoTrees);
        }
        if let Some(m) = &self.members {
            if m.is_empty()
                || m.windows(2).any(|w| w[0] >= w[1])
                || m.iter().any(|&v| v as usize >= n)
            {
                return Err(PolicyError::BadMembers(m.clone()));
            }
        }
        if self.trees.len() > u16::MAX as usize {
            return Err(PolicyError::TooManyTrees(self.trees.len()));
        }
        let name = |v: NodeId| -> String {
            topo.nodes
                .get(v as usize)
                .map(|x| x.name.clone())
                .unwrap_or_else(|| format!("#{v}"))
        };
        let hops_str = |r: &Route| {
            r.hops
                .iter()
                .map(|&h| name(h))
                .collect::<Vec<_>>()
                .join("->")
        };
        for (p, r) in self.routes.iter().enumerate() {
            let bad = |problem: &str| PolicyError::BadRoute {
                path: p,
                hops: hops_str(r),
                problem: problem.to_string(),
            };
            if r.hops.len() < 2 {
                return Err(bad("has fewer than two hops"));
            }
            if r.hops.iter().any(|&h| h as usize >= n) {
                return Err(bad("names a node outside the network"));
            }
            let mut seen = vec![false; n];
            for &h in &r.hops {
                if std::mem::replace(&mut seen[h as usize], true) {
                    return Err(bad("visits a node twice"));
                }
            }
            for w in r.hops.windows(2) {
                if topo.link(w[0], w[1]).is_none() {
                    return Err(bad(&format!(
                        "uses {} -> {}, which is not a link",
                        name(w[0]),
                        name(w[1])
                    )));
                }
                if topo.link(w[1], w[0]).is_none() {
                    return Err(bad(&format!(
                        "needs the reverse link {} -> {} for acknowledgements, which does not exist",
                        name(w[1]),
                        name(w[0])
                    )));
                }
            }
        }
        for lr in &self.link_rates {
            if !(lr.rate_bps.is_finite() && lr.rate_bps > 0.0) {
                return Err(PolicyError::BadLinkRate {
                    from: name(lr.from),
                    to: name(lr.to),
                    rate: lr.rate_bps,
                });
            }
        }
        let mut sum = 0.0;
        for (t, tree) in self.trees.iter().enumerate() {
            if !(tree.share.is_finite() && tree.share >= 0.0) {
                return Err(PolicyError::BadShare {
                    tree: t,
                    share: tree.share,
                });
            }
            sum += tree.share;
            if tree.root as usize >= n || !self.is_member(tree.root) {
                return Err(PolicyError::BadRoot {
                    tree: t,
                    root: tree.root,
                });
            }
            for (which, map, reduce) in [
                ("reduce", &tree.reduce, true),
                ("broadcast", &tree.broadcast, false),
            ] {
                self.validate_tree_map(topo, t, tree.root, which, map, reduce, &name)?;
            }
        }
        if (sum - 1.0).abs() > 1e-6 {
            return Err(PolicyError::SharesSum(sum));
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn validate_tree_map(
        &self,
        topo: &Topology,
        t: usize,
        root: NodeId,
        which: &'static str,
        map: &[Option<TreeEdge>],
        reduce: bool,
        name: &dyn Fn(NodeId) -> String,
    ) -> Result<(), PolicyError> {
        let n = topo.node_count();
        if map.len() != n {
            return Err(PolicyError::MapLength {
                tree: t,
                which,
                len: map.len(),
                nodes: n,
            });
        }
        if map[root as usize].is_some() {
            return Err(PolicyError::RootHasParent {
                tree: t,
                which,
                node: name(root),
            });
        }
        let mut children = vec![0usize; n];
        for (v, slot) in map.iter().enumerate() {
            if v == root as usize {
                continue;
            }
            if !self.is_member(v as NodeId) {
                if slot.is_some() {
                    return Err(PolicyError::NonMemberInTree {
                        tree: t,
                        which,
                        node: name(v as NodeId),
                    });
                }
                continue;
            }
            let Some(edge) = slot else {
                return Err(PolicyError::MissingNode {
                    tree: t,
                    which,
                    node: name(v as NodeId),
                });
            };
            if edge.parent as usize >= n || edge.parent as usize == v {
                return Err(PolicyError::Cycle {
                    tree: t,
                    which,
                    node: name(v as NodeId),
                });
            }
            children[edge.parent as usize] += 1;
            // Data flows child → parent when reducing, parent → child when broadcasting.
            let (from, to) = if reduce {
                (v as NodeId, edge.parent)
            } else {
                (edge.parent, v as NodeId)
            };
            if edge.paths.is_empty() {
                return Err(PolicyError::NoRoute {
                    tree: t,
                    which,
                    from: name(from),
                    to: name(to),
                });
            }
            for wp in &edge.paths {
                let bad = |problem: String| PolicyError::BadEdgePath {
                    tree: t,
                    which,
                    from: name(from),
                    to: name(to),
                    path: wp.path as usize,
                    problem,
                };
                let Some(route) = self.routes.get(wp.path as usize) else {
                    return Err(bad("is not in the path table".into()));
                };
                if let Some(&h) = route.hops.iter().find(|&&h| !self.is_member(h)) {
                    return Err(bad(format!("relays through {}, not a member", name(h))));
                }
                if route.origin() != from || route.destination() != to {
                    return Err(bad(format!(
                        "runs {} -> {} instead",
                        name(route.origin()),
                        name(route.destination())
                    )));
                }
                if !(wp.weight.is_finite() && wp.weight > 0.0) {
                    return Err(bad(format!(
                        "has weight {}, not a positive number",
                        wp.weight
                    )));
                }
            }
        }
        for (v, &c) in children.iter().enumerate() {
            if c > MAX_CHILDREN {
                return Err(PolicyError::TooManyChildren {
                    tree: t,
                    which,
                    node: name(v as NodeId),
                    count: c,
                });
            }
        }
        // Every node must reach the root by following parents within n steps.
        for v in 0..n {
            let mut cur = v;
            let mut steps = 0;
            while cur != root as usize {
                cur = map[cur]
                    .as_ref()
                    .map(|e| e.parent as usize)
                    .unwrap_or(root as usize);
                steps += 1;
                if steps > n {
                    return Err(PolicyError::Cycle {
                        tree: t,
                        which,
                        node: name(v as NodeId),
                    });
                }
            }
        }
        Ok(())
    }

    /// Element range of each tree in a buffer of `total` elements. Ranges are contiguous,
    /// in tree order, cover the buffer exactly, and are computed identically on every node
    /// (cumulative shares rounded to the nearest element).
    pub fn tree_ranges(&self, total: usize) -> Vec<Range<usize>> {
        let mut out = Vec::with_capacity(self.trees.len());
        let mut cum = 0.0f64;
        let mut start = 0usize;
        let last = self.trees.len().saturating_sub(1);
        for (t, tree) in self.trees.iter().enumerate() {
            cum += tree.share;
            let end = if t == last {
                total
            } else {
                ((total as f64) * cum)
                    .round()
                    .clamp(start as f64, total as f64) as usize
            };
            out.push(start..end);
            start = end;
        }
        out
    }

    /// Pacing rate of every route, bits/s: each link's rate (or `default_rate_bps`) is split
    /// among the routes that cross it in proportion to the data they carry per round (Σ over
    /// tree edges of share × path weight), and a route gets the smallest of its splits. A route
    /// alone on its links gets the full bottleneck rate; relayed routes that share a link with
    /// others get their fair part instead of overloading it.
    pub fn route_rates_bps(&self, default_rate_bps: f64) -> Vec<f64> {
        let n = self.node_count as usize;
        let mut load = vec![0.0f64; self.routes.len()];
        for tree in &self.trees {
            for edge in tree.reduce.iter().chain(tree.broadcast.iter()).flatten() {
                let total: f64 = edge.paths.iter().map(|p| p.weight).sum();
                for p in &edge.paths {
                    if let Some(l) = load.get_mut(p.path as usize) {
                        *l += tree.share * p.weight / total.max(f64::MIN_POSITIVE);
                    }
                }
            }
        }
        // Routes nobody uses this epoch still get a (tiny) load so they can send.
        let floor = load.iter().cloned().fold(0.0, f64::max).max(1.0) * 1e-6;
        load.iter_mut().for_each(|l| *l = l.max(floor));
        let mut link_load = vec![0.0f64; n * n];
        for (r, route) in self.routes.iter().enumerate() {
            for w in route.hops.windows(2) {
                link_load[w[0] as usize * n + w[1] as usize] += load[r];
            }
        }
        self.routes
            .iter()
            .enumerate()
            .map(|(r, route)| {
                route
                    .hops
                    .windows(2)
                    .map(|w| {
                        let rate = self.link_rate(w[0], w[1]).unwrap_or(default_rate_bps);
                        rate * load[r] / link_load[w[0] as usize * n + w[1] as usize]
                    })
                    .fold(f64::INFINITY, f64::min)
            })
            .collect()
    }

    /// The pacing rate for `from → to`, if the policy gives one.
    pub fn link_rate(&self, from: NodeId, to: NodeId) -> Option<f64> {
        self.link_rates
            .iter()
            .find(|l| l.from == from && l.to == to)
            .map(|l| l.rate_bps)
    }
}

/// Builds policies from parent maps, registering routes once each.
///
/// Planners describe trees as parent maps plus (optionally) routes; the builder assigns path
/// ids. Keep one builder per job across epochs so a route keeps its id.
#[derive(Debug, Default, Clone)]
pub struct PolicyBuilder {
    routes: Vec<Route>,
    trees: Vec<TreePolicy>,
    link_rates: Vec<LinkRate>,
}

impl PolicyBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// The id of `hops` in the path table, adding it if new.
    pub fn route(&mut self, hops: &[NodeId]) -> PathId {
        if let Some(i) = self.routes.iter().position(|r| r.hops == hops) {
            return i as PathId;
        }
        self.routes.push(Route {
            hops: hops.to_vec(),
        });
        (self.routes.len() - 1) as PathId
    }

    /// Adds a tree whose edges are direct links (route `[child, parent]` / `[parent, child]`).
    pub fn tree(
        &mut self,
        root: NodeId,
        share: f64,
        reduce_parent: &[Option<NodeId>],
        broadcast_parent: &[Option<NodeId>],
        forward: ForwardMode,
    ) -> &mut Self {
        let direct = |p: NodeId, v: NodeId| vec![p, v];
        let reduce_routes: Vec<Option<Vec<NodeId>>> = reduce_parent
            .iter()
            .enumerate()
            .map(|(v, p)| p.map(|p| direct(v as NodeId, p)))
            .collect();
        let bcast_routes: Vec<Option<Vec<NodeId>>> = broadcast_parent
            .iter()
            .enumerate()
            .map(|(v, p)| p.map(|p| direct(p, v as NodeId)))
            .collect();
        self.tree_with_routes(root, share, &reduce_routes, &bcast_routes, forward)
    }

    /// Adds a tree whose edges use explicit routes: `reduce_route[v]` runs from `v` to its
    /// reduce parent (the route's last hop), `broadcast_route[v]` from its broadcast parent
    /// (the route's first hop) to `v`.
    pub fn tree_with_routes(
        &mut self,
        root: NodeId,
        share: f64,
        reduce_route: &[Option<Vec<NodeId>>],
        broadcast_route: &[Option<Vec<NodeId>>],
        forward: ForwardMode,
    ) -> &mut Self {
        let mut reduce = Vec::with_capacity(reduce_route.len());
        for r in reduce_route {
            reduce.push(r.as_ref().map(|hops| TreeEdge {
                parent: *hops.last().unwrap_or(&root),
                paths: vec![WeightedPath {
                    path: self.route(hops),
                    weight: 1.0,
                }],
            }));
        }
        let mut broadcast = Vec::with_capacity(broadcast_route.len());
        for r in broadcast_route {
            broadcast.push(r.as_ref().map(|hops| TreeEdge {
                parent: *hops.first().unwrap_or(&root),
                paths: vec![WeightedPath {
                    path: self.route(hops),
                    weight: 1.0,
                }],
            }));
        }
        self.trees.push(TreePolicy {
            root,
            share,
            reduce,
            broadcast,
            forward,
        });
        self
    }

    /// Adds an already-built tree (e.g. with multipath edges whose ids came from [`Self::route`]).
    pub fn push_tree(&mut self, tree: TreePolicy) -> &mut Self {
        self.trees.push(tree);
        self
    }

    /// Sets the pacing rate of every link of `topo` to its capacity (the oracle choice).
    pub fn link_rates_from(&mut self, topo: &Topology) -> &mut Self {
        self.link_rates = topo
            .links
            .iter()
            .filter(|l| l.rate_bps > 0.0)
            .map(|l| LinkRate {
                from: l.from,
                to: l.to,
                rate_bps: l.rate_bps,
            })
            .collect();
        self
    }

    pub fn set_link_rates(&mut self, rates: Vec<LinkRate>) -> &mut Self {
        self.link_rates = rates;
        self
    }

    /// Finishes the policy for `epoch`, taking the trees (routes stay registered).
    pub fn build(&mut self, epoch: u32, node_count: u16) -> Policy {
        Policy {
            epoch,
            node_count,
            trees: std::mem::take(&mut self.trees),
            routes: self.routes.clone(),
            link_rates: self.link_rates.clone(),
            members: None,
        }
    }
}
