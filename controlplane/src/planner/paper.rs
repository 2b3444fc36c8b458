//! The `paper` planner: NetStorm's multi-root FAPT exactly as the authors built it.
//!
//! The authors' implementation (an MXNet/ps-lite fork) is hard-wired to 9 DCs and enumerates
//! every simple path; we compute the same min-cost paths with Dijkstra. The algorithm:
//!
//! 1. **Edge cost** = `1 / bandwidth` of the directed link (bandwidth only: no latency, no
//!    loss, no fan-in contention — exactly the paper's model). A link is usable when its rate
//!    is positive and the reverse link exists (the data plane acknowledges along the reversed
//!    route).
//! 2. **Min-cost paths.** For every ordered pair the path minimizing `Σ 1/bandwidth`. Ties
//!    between equal-cost paths are broken deterministically by the lowest node index: walking
//!    back from the destination, the predecessor of `v` is the *lowest-index* node `u` with
//!    `dist(u) + cost(u → v) = dist(v)`. Because the choice depends only on `v` and the
//!    source, the union of the paths from one source is a tree.
//! 3. **Trees per candidate root `r`.** The *broadcast out-tree* is the union of the min-cost
//!    paths `r → v` (a shortest-path out-tree); the *reduce in-tree* is the union of the
//!    min-cost paths `v → r` (a shortest-path in-tree, Dijkstra over reversed links with the
//!    cost of the forward direction `v → … → r`). On symmetric networks the two are mirror
//!    images.
//! 4. **Root score** (the paper's tree metric). Let level `d ≥ 1` of the *broadcast* tree be
//!    the set of tree edges whose child sits at hop depth `d` below `r`, and `b_d` the slowest
//!    bandwidth among them. The time to push one bit store-and-forward level by level is
//!    `Σ_d 1 / b_d`, and the score is its inverse: `score(r) = 1 / Σ_d (1 / b_d)` (bits/s).
//!    **Only the broadcast tree is scored**: the paper (and its code) builds one undirected
//!    tree per root on symmetric bandwidth estimates, so reduce and broadcast coincide there
//!    and no separate reduce score exists; we follow that and do not score the reduce
//!    in-tree. On asymmetric networks this is a (documented) simplification.
//! 5. **Roots and shares.** Keep the top `R` roots by score (ties: lower node index first);
//!    tree `i`'s share is `score_i / Σ score`. Every tree is [`ForwardMode::Pipelined`].
//! 6. **Multipath** ([`PaperPlanner::auxiliary_routes`]): for a tree edge `a → b`, up to `K`
//!    next-cheapest relay paths (by `Σ 1/bandwidth`) that are node-disjoint from each other
//!    and from the edge itself, found greedily (cheapest first, removing its relays). The
//!    [`Plan`] has no multipath field yet, so they are exposed through these functions.

use super::{check_network, Plan, PlanError, PlannedTree, Planner};
use crate::network::NetworkModel;
use netstorm_dataplane::NodeId;

/// NetStorm's faithful multi-root FAPT planner (name `"paper"`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PaperPlanner {
    /// Number of roots `R`; `None` (the default) means every node is a root.
    pub roots: Option<usize>,
    /// Auxiliary relay paths `K` per tree edge for multipath (default 0: none).
    pub auxiliary_paths: usize,
}

/// The auxiliary relay routes of one tree edge (data flows `from → to`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeAuxiliaryRoutes {
    pub from: NodeId,
    pub to: NodeId,
    /// Node-disjoint relay routes `from → … → to`, cheapest first, each with ≥ 1 relay.
    pub routes: Vec<Vec<NodeId>>,
}

impl PaperPlanner {
    /// `R` roots (`None` = all nodes), no auxiliary paths.
    pub fn new(roots: Option<usize>) -> Self {
        Self {
            roots,
            auxiliary_paths: 0,
        }
    }

    /// Sets the number of auxiliary paths per tree edge.
    pub fn with_auxiliary_paths(mut self, k: usize) -> Self {
        self.auxiliary_paths = k;
        self
    }

    /// Score of every node as a root, sorted best first (ties: lower node index first).
    /// A single-node network scores its only node `f64::INFINITY`.
    pub fn root_scores(&self, net: &NetworkModel) -> Vec<(NodeId, f64)> {
        let n = net.node_count();
        let costs = LinkCosts::bandwidth(net);
        let mut scores: Vec<(NodeId, f64)> = (0..n as NodeId)
            .filter_map(|r| {
                let parents = shortest_path_tree(n, r, TreeDirection::Out, &costs)?;
                Some((r, level_score(net, r, &parents)))
            })
            .collect();
        scores.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        scores
    }

    /// The broadcast out-tree (parents) of root `r`: union of the min-cost paths `r → v`.
    pub fn broadcast_parents(
        &self,
        net: &NetworkModel,
        root: NodeId,
    ) -> Option<Vec<Option<NodeId>>> {
        shortest_path_tree(
            net.node_count(),
            root,
            TreeDirection::Out,
            &LinkCosts::bandwidth(net),
        )
    }

    /// The reduce in-tree (parents) of root `r`: union of the min-cost paths `v → r`.
    pub fn reduce_parents(&self, net: &NetworkModel, root: NodeId) -> Option<Vec<Option<NodeId>>> {
        shortest_path_tree(
            net.node_count(),
            root,
            TreeDirection::In,
            &LinkCosts::bandwidth(net),
        )
    }

    /// Up to `k` relay routes `from → … → to` for the tree edge `from → to`, cheapest first by
    /// `Σ 1/bandwidth`, node-disjoint from each other and from the edge's primary path (the
    /// direct link if there is one, else the min-cost path), never the direct link itself.
    /// Greedy: each route is the cheapest one avoiding the relays already taken.
    pub fn auxiliary_routes(
        &self,
        net: &NetworkModel,
        from: NodeId,
        to: NodeId,
        k: usize,
    ) -> Vec<Vec<NodeId>> {
        let n = net.node_count();
        if k == 0 || from == to || from as usize >= n || to as usize >= n {
            return Vec::new();
        }
        let costs = LinkCosts::bandwidth(net);
        let mut banned = vec![false; n];
        if costs.cost(from, to).is_none() {
            // No direct link: the primary path is the min-cost route; avoid its relays.
            match min_cost_route(n, from, to, &costs, &banned, true) {
                Some(primary) => {
                    for &h in &primary[1..primary.len() - 1] {
                        banned[h as usize] = true;
                    }
                }
                None => return Vec::new(),
            }
        }
        let mut out = Vec::new();
        while out.len() < k {
            let Some(route) = min_cost_route(n, from, to, &costs, &banned, false) else {
                break;
            };
            for &h in &route[1..route.len() - 1] {
                banned[h as usize] = true;
            }
            out.push(route);
        }
        out
    }

    /// Auxiliary routes (`K = self.auxiliary_paths`) of every reduce and broadcast edge of
    /// `tree`, reduce edges first, each in node order. Empty when `K = 0`.
    pub fn tree_auxiliary_routes(
        &self,
        net: &NetworkModel,
        tree: &PlannedTree,
    ) -> Vec<EdgeAuxiliaryRoutes> {
        if self.auxiliary_paths == 0 {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (v, p) in tree.reduce_parent().into_iter().enumerate() {
            if let Some(p) = p {
                let routes = self.auxiliary_routes(net, v as NodeId, p, self.auxiliary_paths);
                out.push(EdgeAuxiliaryRoutes {
                    from: v as NodeId,
                    to: p,
                    routes,
                });
            }
        }
        for (v, p) in tree.broadcast_parent().into_iter().enumerate() {
            if let Some(p) = p {
                let routes = self.auxiliary_routes(net, p, v as NodeId, self.auxiliary_paths);
                out.push(EdgeAuxiliaryRoutes {
                    from: p,
                    to: v as NodeId,
                    routes,
                });
            }
        }
        out
    }
}

impl Planner for PaperPlanner {
    fn name(&self) -> &str {
        "paper"
    }

    fn plan(&self, net: &NetworkModel, _model_bits: f64) -> Result<Plan, PlanError> {
        check_network(net)?;
        let n = net.node_count();
        let r = self.roots.unwrap_or(n);
        if r == 0 || r > n {
            return Err(PlanError::TooManyRoots { asked: r, nodes: n });
        }
        if n == 1 {
            return Ok(Plan {
                planner: self.name().to_string(),
                trees: vec![PlannedTree::from_parents(0, 1.0, &[None], &[None])],
            });
        }
        let costs = LinkCosts::bandwidth(net);
        // Every node must reach and be reached over usable (bidirectional) links.
        for root in 0..n as NodeId {
            for dir in [TreeDirection::Out, TreeDirection::In] {
                if shortest_path_tree(n, root, dir, &costs).is_none() {
                    return Err(disconnected(net, root, dir, &costs));
                }
            }
        }
        let scores = self.root_scores(net);
        let chosen = &scores[..r];
        let total: f64 = chosen.iter().map(|&(_, s)| s).sum();
        let mut trees = Vec::with_capacity(r);
        for &(root, score) in chosen {
            let bcast = shortest_path_tree(n, root, TreeDirection::Out, &costs)
                .expect("checked connectivity above");
            let reduce = shortest_path_tree(n, root, TreeDirection::In, &costs)
                .expect("checked connectivity above");
            let share = if total > 0.0 && total.is_finite() {
                score / total
            } else {
                1.0 / r as f64
            };
            trees.push(PlannedTree::from_parents(root, share, &reduce, &bcast));
        }
        tracing::debug!(roots = ?chosen, "paper planner chose roots");
        Ok(Plan {
            planner: self.name().to_string(),
            trees,
        })
    }
}

/// The paper's level metric of a broadcast out-tree rooted at `root`:
/// `1 / Σ_d (1 / slowest bandwidth among the edges entering depth d)`.
pub fn level_score(net: &NetworkModel, root: NodeId, parents: &[Option<NodeId>]) -> f64 {
    let n = parents.len();
    let mut slowest: Vec<f64> = Vec::new(); // index d - 1
    for v in 0..n {
        if v == root as usize {
            continue;
        }
        let Some(p) = parents[v] else { continue };
        // Depth of v: hops to the root.
        let mut depth = 1usize;
        let mut cur = p;
        while cur != root {
            match parents[cur as usize] {
                Some(q) => cur = q,
                None => break,
            }
            depth += 1;
            if depth > n {
                break;
            }
        }
        if slowest.len() < depth {
            slowest.resize(depth, f64::INFINITY);
        }
        let bw = net.capacity_bps(p, v as NodeId);
        slowest[depth - 1] = slowest[depth - 1].min(bw);
    }
    let per_bit: f64 = slowest.iter().map(|&b| 1.0 / b).sum();
    if per_bit > 0.0 {
        1.0 / per_bit
    } else {
        f64::INFINITY
    }
}

fn disconnected(
    net: &NetworkModel,
    root: NodeId,
    dir: TreeDirection,
    costs: &LinkCosts,
) -> PlanError {
    let n = net.node_count();
    let reach = reachable(n, root, dir, costs);
    let v = reach.iter().position(|&r| !r).unwrap_or(0) as NodeId;
    let (from, to) = match dir {
        TreeDirection::Out => (root, v),
        TreeDirection::In => (v, root),
    };
    PlanError::Disconnected {
        from: net.topology.node_name(from).to_string(),
        to: format!(
            "{} (over links usable in both directions)",
            net.topology.node_name(to)
        ),
    }
}

fn reachable(n: usize, root: NodeId, dir: TreeDirection, costs: &LinkCosts) -> Vec<bool> {
    let mut seen = vec![false; n];
    seen[root as usize] = true;
    let mut stack = vec![root];
    while let Some(u) = stack.pop() {
        for v in 0..n as NodeId {
            let edge = match dir {
                TreeDirection::Out => costs.cost(u, v),
                TreeDirection::In => costs.cost(v, u),
            };
            if edge.is_some() && !seen[v as usize] {
                seen[v as usize] = true;
                stack.push(v);
            }
        }
    }
    seen
}

// ---------------------------------------------------------------------------------------
// Shortest paths shared with the baselines.
// ---------------------------------------------------------------------------------------

/// Which way a shortest-path tree points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TreeDirection {
    /// Paths root → v (broadcast out-tree; parent = predecessor on the path).
    Out,
    /// Paths v → root (reduce in-tree; parent = next hop towards the root).
    In,
}

/// A lexicographic path cost: (latency in ns, exact) then a float secondary cost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Cost {
    pub latency_ns: u64,
    pub weight: f64,
}

impl Cost {
    const ZERO: Cost = Cost {
        latency_ns: 0,
        weight: 0.0,
    };

    fn add(self, other: Cost) -> Cost {
        Cost {
            latency_ns: self.latency_ns + other.latency_ns,
            weight: self.weight + other.weight,
        }
    }

    /// Equal within floating-point tolerance on the secondary cost.
    fn approx_eq(self, other: Cost) -> bool {
        self.latency_ns == other.latency_ns
            && (self.weight - other.weight).abs()
                <= 1e-9 * (1.0 + self.weight.abs().max(other.weight.abs()))
    }

    fn less(self, other: Cost) -> bool {
        !self.approx_eq(other)
            && (self.latency_ns < other.latency_ns
                || (self.latency_ns == other.latency_ns && self.weight < other.weight))
    }
}

/// Dense per-link costs over usable links (positive rate, reverse link present).
#[derive(Debug, Clone)]
pub(crate) struct LinkCosts {
    n: usize,
    cost: Vec<Option<Cost>>,
}

impl LinkCosts {
    /// The paper's cost: `1 / bandwidth`, scaled by the fastest link's rate so every link
    /// costs ≥ 1 (same order, better-conditioned tie detection).
    pub fn bandwidth(net: &NetworkModel) -> Self {
        Self::build(net, false)
    }

    /// Latency first, then `1 / bandwidth` (the `spt` baseline).
    pub fn latency_then_bandwidth(net: &NetworkModel) -> Self {
        Self::build(net, true)
    }

    fn build(net: &NetworkModel, with_latency: bool) -> Self {
        let n = net.node_count();
        let max_rate = net
            .topology
            .links
            .iter()
            .map(|l| l.rate_bps)
            .filter(|r| r.is_finite())
            .fold(0.0f64, f64::max);
        let mut cost = vec![None; n * n];
        for l in &net.topology.links {
            let usable = l.rate_bps > 0.0
                && l.from != l.to
                && (l.from as usize) < n
                && (l.to as usize) < n
                && net.link(l.to, l.from).is_some();
            if usable {
                let weight = if l.rate_bps.is_finite() {
                    max_rate / l.rate_bps
                } else {
                    0.0
                };
                cost[l.from as usize * n + l.to as usize] = Some(Cost {
                    latency_ns: if with_latency { l.latency_ns } else { 0 },
                    weight,
                });
            }
        }
        Self { n, cost }
    }

    pub fn cost(&self, from: NodeId, to: NodeId) -> Option<Cost> {
        self.cost
            .get(from as usize * self.n + to as usize)
            .copied()
            .flatten()
    }
}

/// Min-cost distances from (Out) or to (In) `root`, skipping banned nodes; `None` = unreachable.
fn distances(
    n: usize,
    root: NodeId,
    dir: TreeDirection,
    costs: &LinkCosts,
    banned: &[bool],
    skip_direct: Option<(NodeId, NodeId)>,
) -> Vec<Option<Cost>> {
    let edge = |u: NodeId, v: NodeId| -> Option<Cost> {
        // Cost of extending a path known at `u` to `v`.
        let (a, b) = match dir {
            TreeDirection::Out => (u, v),
            TreeDirection::In => (v, u),
        };
        if skip_direct == Some((a, b)) {
            return None;
        }
        costs.cost(a, b)
    };
    let mut dist: Vec<Option<Cost>> = vec![None; n];
    let mut done = vec![false; n];
    dist[root as usize] = Some(Cost::ZERO);
    loop {
        let mut best: Option<usize> = None;
        for v in 0..n {
            if done[v] {
                continue;
            }
            if let Some(d) = dist[v] {
                let better = match best {
                    None => true,
                    Some(b) => d.less(dist[b].unwrap()),
                };
                if better {
                    best = Some(v);
                }
            }
        }
        let Some(u) = best else { break };
        done[u] = true;
        if banned[u] && u != root as usize {
            continue; // reachable but may not relay
        }
        let du = dist[u].unwrap();
        for v in 0..n {
            if done[v] {
                continue;
            }
            if let Some(c) = edge(u as NodeId, v as NodeId) {
                let nd = du.add(c);
                let better = match dist[v] {
                    None => true,
                    Some(old) => nd.less(old),
                };
                if better {
                    dist[v] = Some(nd);
                }
            }
        }
    }
    dist
}

/// Parent of `v` in the shortest-path tree: the lowest-index neighbour on a min-cost path.
fn tree_parent(
    v: usize,
    dir: TreeDirection,
    dist: &[Option<Cost>],
    costs: &LinkCosts,
    banned: &[bool],
    root: NodeId,
    skip_direct: Option<(NodeId, NodeId)>,
) -> Option<NodeId> {
    let dv = dist[v]?;
    (0..dist.len()).find_map(|u| {
        if u == v || (banned[u] && u != root as usize) {
            return None;
        }
        let du = dist[u]?;
        let (a, b) = match dir {
            TreeDirection::Out => (u as NodeId, v as NodeId),
            TreeDirection::In => (v as NodeId, u as NodeId),
        };
        if skip_direct == Some((a, b)) {
            return None;
        }
        let c = costs.cost(a, b)?;
        (du.add(c).approx_eq(dv) && du.less(dv)).then_some(u as NodeId)
    })
}

/// Shortest-path out-tree (`Out`: union of min-cost paths root → v) or in-tree (`In`: union
/// of min-cost paths v → root) as a parent map; `None` if some node is unreachable.
pub(crate) fn shortest_path_tree(
    n: usize,
    root: NodeId,
    dir: TreeDirection,
    costs: &LinkCosts,
) -> Option<Vec<Option<NodeId>>> {
    let banned = vec![false; n];
    let dist = distances(n, root, dir, costs, &banned, None);
    (0..n)
        .map(|v| {
            if v == root as usize {
                Some(None)
            } else {
                tree_parent(v, dir, &dist, costs, &banned, root, None).map(Some)
            }
        })
        .collect()
}

/// The min-cost route `from → … → to` avoiding banned relays; with `allow_direct = false`
/// the direct link `from → to` is excluded (so the route has at least one relay).
fn min_cost_route(
    n: usize,
    from: NodeId,
    to: NodeId,
    costs: &LinkCosts,
    banned: &[bool],
    allow_direct: bool,
) -> Option<Vec<NodeId>> {
    let skip = (!allow_direct).then_some((from, to));
    let dist = distances(n, from, TreeDirection::Out, costs, banned, skip);
    let mut route = vec![to];
    let mut cur = to;
    while cur != from {
        cur = tree_parent(
            cur as usize,
            TreeDirection::Out,
            &dist,
            costs,
            banned,
            from,
            skip,
        )?;
        route.push(cur);
        if route.len() > n {
            return None;
        }
    }
    route.reverse();
    Some(route)
}

#[cfg(test)]
mod tests {
    use super::*;
    use netstorm_dataplane::topology::{Link, Node, Topology};

    fn line(rates: &[f64]) -> NetworkModel {
        let n = rates.len() + 1;
        let nodes = Node::numbered(n);
        let mut links = Vec::new();
        for (i, &r) in rates.iter().enumerate() {
            for (a, b) in [(i, i + 1), (i + 1, i)] {
                links.push(Link {
                    from: a as NodeId,
                    to: b as NodeId,
                    rate_bps: r,
                    latency_ns: 0,
                    loss: 0.0,
                });
            }
        }
        NetworkModel::from_topology(Topology { nodes, links })
    }

    #[test]
    fn level_score_of_a_line() {
        // 0 -10- 1 -20- 2: from root 0, levels have 10 and 20 → 1/(1/10 + 1/20) = 20/3.
        let net = line(&[10.0, 20.0]);
        let p = PaperPlanner::default().broadcast_parents(&net, 0).unwrap();
        assert_eq!(p, vec![None, Some(0), Some(1)]);
        assert!((level_score(&net, 0, &p) - 20.0 / 3.0).abs() < 1e-12);
    }
}
