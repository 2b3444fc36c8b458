//! The baselines of DESIGN §6 as topologies: plans run by the same engine and emulator as
//! NetStorm, so every comparison is made in the same run.
//!
//! Every baseline routes a tree edge between non-adjacent nodes over the fewest-hop route
//! ([`Topology::fewest_hop_route`](netstorm_dataplane::topology::Topology::fewest_hop_route)),
//! relayed without aggregation; an edge between adjacent nodes is the two-hop route over the
//! direct link (the fewest-hop route between neighbours).
//!
//! | name       | planner              | forward mode     | where it deviates from the original            |
//! |------------|----------------------|------------------|-------------------------------------------------|
//! | `mxnet-ps` | [`MxnetPsPlanner`]   | store-and-forward| push/pull of a key modeled as one tree per key slice; no per-key server CPU cost |
//! | `mlnet`    | [`MlnetPlanner`]     | pipelined        | aggregation is segment-pipelined (MLNET forwards whole tensors) |
//! | `tsengine` | [`TsEnginePlanner`]  | store-and-forward| online schedule simulated offline on the model's throughputs; children of one node transfer concurrently |
//! | `ring`     | [`RingPlanner`]      | pipelined        | ring chunks are trees of the same engine (segment pipelining instead of NCCL's slicing) |
//! | `mesh`     | [`MeshPlanner`]      | pipelined        | — (hand-rolled reduce-scatter + all-gather)     |
//! | `spt`      | [`SptPlanner`]       | pipelined        | — (single-root shortest-path tree)              |

use super::paper::{shortest_path_tree, LinkCosts, TreeDirection};
use super::{check_network, Plan, PlanError, PlannedTree, Planner};
use crate::network::NetworkModel;
use netstorm_dataplane::policy::ForwardMode;
use netstorm_dataplane::NodeId;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Every baseline with its defaults, in the order of DESIGN §6.
pub fn all_baselines() -> Vec<Box<dyn Planner>> {
    vec![
        Box::new(MxnetPsPlanner::default()),
        Box::new(MlnetPlanner::default()),
        Box::new(TsEnginePlanner::default()),
        Box::new(RingPlanner::default()),
        Box::new(MeshPlanner),
        Box::new(SptPlanner),
    ]
}

// ---------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------

/// Fewest-hop routes between every ordered pair (computed once per plan).
#[derive(Debug)]
struct RouteTable {
    n: usize,
    routes: Vec<Vec<NodeId>>,
}

impl RouteTable {
    fn new(net: &NetworkModel) -> Result<Self, PlanError> {
        let n = net.node_count();
        let mut routes = Vec::with_capacity(n * n);
        for a in 0..n as NodeId {
            for b in 0..n as NodeId {
                if a == b {
                    routes.push(vec![a]);
                    continue;
                }
                let r =
                    net.topology
                        .fewest_hop_route(a, b)
                        .ok_or_else(|| PlanError::Disconnected {
                            from: net.topology.node_name(a).to_string(),
                            to: net.topology.node_name(b).to_string(),
                        })?;
                routes.push(r);
            }
        }
        Ok(Self { n, routes })
    }

    /// The fewest-hop route `from → … → to`.
    fn route(&self, from: NodeId, to: NodeId) -> &[NodeId] {
        &self.routes[from as usize * self.n + to as usize]
    }

    /// Bottleneck capacity of the fewest-hop route `from → to` (bits/s).
    fn throughput(&self, net: &NetworkModel, from: NodeId, to: NodeId) -> f64 {
        self.route(from, to)
            .windows(2)
            .map(|w| net.capacity_bps(w[0], w[1]))
            .fold(f64::INFINITY, f64::min)
    }

    /// A tree whose edges (given as parent maps) run over fewest-hop routes.
    fn tree(
        &self,
        root: NodeId,
        share: f64,
        reduce_parent: &[Option<NodeId>],
        broadcast_parent: &[Option<NodeId>],
        forward: ForwardMode,
    ) -> PlannedTree {
        PlannedTree {
            root,
            share,
            reduce_route: reduce_parent
                .iter()
                .enumerate()
                .map(|(v, p)| p.map(|p| self.route(v as NodeId, p).to_vec()))
                .collect(),
            broadcast_route: broadcast_parent
                .iter()
                .enumerate()
                .map(|(v, p)| p.map(|p| self.route(p, v as NodeId).to_vec()))
                .collect(),
            forward,
            multipath: Vec::new(),
        }
    }

    /// Reduce star into `root` and broadcast star out of it, over fewest-hop routes.
    fn star(&self, root: NodeId, share: f64, forward: ForwardMode) -> PlannedTree {
        let parents: Vec<Option<NodeId>> = (0..self.n)
            .map(|v| (v != root as usize).then_some(root))
            .collect();
        self.tree(root, share, &parents, &parents, forward)
    }
}

fn plan(name: &str, trees: Vec<PlannedTree>) -> Plan {
    Plan {
        planner: name.to_string(),
        trees,
    }
}

fn check_node(net: &NetworkModel, what: &str, node: NodeId) -> Result<(), PlanError> {
    if node as usize >= net.node_count() {
        return Err(PlanError::Other(format!(
            "{what} {node} is not a node of the network ({} nodes)",
            net.node_count()
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// MXNet parameter server (ps-lite)
// ---------------------------------------------------------------------------------------

/// MXNet's `MXNET_KVSTORE_BIGARRAY_BOUND` default: tensors with at least this many elements
/// are split over all servers.
pub const BIGARRAY_BOUND: u64 = 1_000_000;

/// One (key or key slice, server) unit of the MXNet parameter server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PsSlice {
    /// Tensor index (MXNet's integer key).
    pub key: usize,
    pub server: NodeId,
    pub elements: u64,
}

/// MXNet's parameter server with ps-lite (name `"mxnet-ps"`): a server on every DC.
///
/// A tensor (key `k` = tensor index) with fewer than [`BIGARRAY_BOUND`] elements goes whole to
/// server `(k * 9973) % S`; a larger one is split over all `S` servers with MXNet 1.x's
/// `EncodeDefaultKey` formula: part `i` has `round(N/S·(i+1)) − round(N/S·i)` elements (so
/// the parts differ by at most one element; the odd elements land where the rounding puts
/// them, not necessarily on the first servers). Each (key or slice, server) is one tree:
/// reduce = every other node pushes straight to the server over its fewest-hop route,
/// broadcast = the server answers every pull the same way; store-and-forward, because ps-lite
/// pushes and pulls a key as one message and the server replies only after aggregating all
/// pushes. Trees are emitted in tensor order (then server order) so the engine's contiguous
/// ranges follow the tensors; no two trees are merged (every key is its own
/// store-and-forward unit, and one key's slices sit on different servers).
///
/// Without a model profile the model is one big tensor split evenly: `S` trees of share
/// `1/S`. Zero-element tensors are skipped (they send nothing).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MxnetPsPlanner {
    /// Element count per tensor, in key order; `None` = one big tensor.
    pub tensor_sizes: Option<Vec<u64>>,
}

impl MxnetPsPlanner {
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses a model profile: element counts per tensor, key = tensor index.
    pub fn with_tensor_sizes(sizes: Vec<u64>) -> Self {
        Self {
            tensor_sizes: Some(sizes),
        }
    }

    /// The (key, server, elements) units of `sizes` over `servers` servers, in tree order.
    pub fn slices(sizes: &[u64], servers: usize) -> Vec<PsSlice> {
        let s = servers as u128;
        let mut out = Vec::new();
        if servers == 0 {
            return out;
        }
        for (key, &n) in sizes.iter().enumerate() {
            if n == 0 {
                continue;
            }
            if n < BIGARRAY_BOUND {
                let server = ((key as u128 * 9973) % s) as NodeId;
                out.push(PsSlice {
                    key,
                    server,
                    elements: n,
                });
            } else {
                // round(N/S * i) with C's round-half-away-from-zero, in exact integers.
                let cum = |i: u128| (2 * n as u128 * i + s) / (2 * s);
                for i in 0..s {
                    let elements = (cum(i + 1) - cum(i)) as u64;
                    out.push(PsSlice {
                        key,
                        server: i as NodeId,
                        elements,
                    });
                }
            }
        }
        out
    }
}

impl Planner for MxnetPsPlanner {
    fn name(&self) -> &str {
        "mxnet-ps"
    }

    fn plan(&self, net: &NetworkModel, _model_bits: f64) -> Result<Plan, PlanError> {
        check_network(net)?;
        let routes = RouteTable::new(net)?;
        let s = net.node_count();
        let trees = match &self.tensor_sizes {
            None => (0..s as NodeId)
                .map(|server| routes.star(server, 1.0 / s as f64, ForwardMode::StoreAndForward))
                .collect(),
            Some(sizes) => {
                let slices = Self::slices(sizes, s);
                let total: u64 = slices.iter().map(|x| x.elements).sum();
                if total == 0 {
                    return Err(PlanError::Other(
                        "mxnet-ps: the model profile has no elements".to_string(),
                    ));
                }
                slices
                    .iter()
                    .map(|x| {
                        let share = x.elements as f64 / total as f64;
                        routes.star(x.server, share, ForwardMode::StoreAndForward)
                    })
                    .collect()
            }
        };
        Ok(plan(self.name(), trees))
    }
}

// ---------------------------------------------------------------------------------------
// MLNET-like regular tree
// ---------------------------------------------------------------------------------------

/// MLNET-like (name `"mlnet"`): one root and a regular, bandwidth-oblivious aggregation tree
/// in heap layout. The nodes in order are `[root, then every other node by index]`; the node
/// at position `p ≥ 1` has the parent at position `(p − 1) / fanout`. Reduce and broadcast
/// use the same tree, edges over fewest-hop routes, pipelined, share 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MlnetPlanner {
    /// Default node 0.
    pub root: NodeId,
    /// Children per node; default 2.
    pub fanout: usize,
}

impl Default for MlnetPlanner {
    fn default() -> Self {
        Self { root: 0, fanout: 2 }
    }
}

impl MlnetPlanner {
    /// The heap-layout parent map over `n` nodes.
    pub fn parents(&self, n: usize) -> Vec<Option<NodeId>> {
        let order: Vec<NodeId> = std::iter::once(self.root)
            .chain((0..n as NodeId).filter(|&v| v != self.root))
            .collect();
        let mut parents = vec![None; n];
        for (p, &v) in order.iter().enumerate().skip(1) {
            parents[v as usize] = Some(order[(p - 1) / self.fanout.max(1)]);
        }
        parents
    }
}

impl Planner for MlnetPlanner {
    fn name(&self) -> &str {
        "mlnet"
    }

    fn plan(&self, net: &NetworkModel, _model_bits: f64) -> Result<Plan, PlanError> {
        check_network(net)?;
        check_node(net, "mlnet root", self.root)?;
        if self.fanout == 0 {
            return Err(PlanError::Other(
                "mlnet fan-out must be at least 1".to_string(),
            ));
        }
        let routes = RouteTable::new(net)?;
        let parents = self.parents(net.node_count());
        let tree = routes.tree(self.root, 1.0, &parents, &parents, ForwardMode::Pipelined);
        Ok(plan(self.name(), vec![tree]))
    }
}

// ---------------------------------------------------------------------------------------
// TSEngine-like online scheduler, simulated offline
// ---------------------------------------------------------------------------------------

/// TSEngine-like (name `"tsengine"`): one parameter server, transfers scheduled from
/// throughput; whole-model store-and-forward transfers, one tree of share 1.
///
/// TSEngine schedules online from measured throughput; here the schedule is **simulated
/// offline** on the network model (per-pair throughput = bottleneck capacity of the
/// fewest-hop route; concurrent transfers do not slow each other) and frozen into one tree:
///
/// * broadcast: holders start as `{server}`; whenever a holder is idle it is given the
///   unserved node with the best throughput from it (ties: lower index), or with probability
///   `1 − greed` a uniformly random unserved one (TSEngine explores an *unknown* link; offline
///   every link is known, so we pick at random); a transfer takes `model_bits / throughput`;
///   on completion the receiver becomes a holder. The sender is its broadcast parent.
/// * reduce: every node starts ready; ready nodes are merged pairwise, the pair with the best
///   throughput first (ties: lower indices), the faster direction sending (ties: lower index
///   sends); the server never sends and always receives when paired, so it survives; a
///   receiver is ready again once its transfer finished. The receiver is the sender's reduce
///   parent.
///
/// Deviations: offline simulation of the online schedule; in the frozen tree a node's
/// children send concurrently (the engine pipelines per tree), whereas TSEngine merges them
/// one after another.
#[derive(Debug, Clone, PartialEq)]
pub struct TsEnginePlanner {
    /// Probability of exploiting the best known peer; default 0.9.
    pub greed: f64,
    /// Seed of the ChaCha8 RNG used for exploration; default 0.
    pub seed: u64,
    /// The parameter server; `None` (default) = the node with the highest total capacity
    /// (sum of its outgoing and incoming link rates; ties: lower index).
    pub server: Option<NodeId>,
}

impl Default for TsEnginePlanner {
    fn default() -> Self {
        Self {
            greed: 0.9,
            seed: 0,
            server: None,
        }
    }
}

/// The simulated TSEngine schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct TsEngineSchedule {
    pub server: NodeId,
    pub broadcast_parent: Vec<Option<NodeId>>,
    pub reduce_parent: Vec<Option<NodeId>>,
    /// Simulated completion time of the broadcast, seconds.
    pub broadcast_s: f64,
    /// Simulated completion time of the reduce, seconds.
    pub reduce_s: f64,
}

impl TsEnginePlanner {
    /// The server used on `net`.
    pub fn server_for(&self, net: &NetworkModel) -> NodeId {
        if let Some(s) = self.server {
            return s;
        }
        let n = net.node_count();
        let mut total = vec![0.0f64; n];
        for l in &net.topology.links {
            if l.rate_bps > 0.0 && (l.from as usize) < n && (l.to as usize) < n {
                total[l.from as usize] += l.rate_bps;
                total[l.to as usize] += l.rate_bps;
            }
        }
        let mut best = 0;
        for v in 1..n {
            if total[v] > total[best] {
                best = v;
            }
        }
        best as NodeId
    }

    /// Simulates the schedule for a model of `model_bits`.
    pub fn schedule(
        &self,
        net: &NetworkModel,
        model_bits: f64,
    ) -> Result<TsEngineSchedule, PlanError> {
        check_network(net)?;
        let server = self.server_for(net);
        check_node(net, "tsengine server", server)?;
        if !(0.0..=1.0).contains(&self.greed) {
            return Err(PlanError::Other(format!(
                "tsengine greed {} is not in [0, 1]",
                self.greed
            )));
        }
        let routes = RouteTable::new(net)?;
        let n = net.node_count();
        let bits = if model_bits > 0.0 && model_bits.is_finite() {
            model_bits
        } else {
            1.0
        };
        let mut thr = vec![0.0f64; n * n];
        for a in 0..n {
            for b in 0..n {
                if a != b {
                    thr[a * n + b] = routes.throughput(net, a as NodeId, b as NodeId);
                }
            }
        }
        let thr = |a: usize, b: usize| thr[a * n + b];
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);

        // Broadcast.
        let mut broadcast_parent = vec![None; n];
        let mut holder = vec![false; n];
        let mut busy = vec![false; n]; // holder currently sending
        let mut claimed = vec![false; n]; // holder or in flight as receiver
        holder[server as usize] = true;
        claimed[server as usize] = true;
        let mut in_flight: Vec<(f64, usize, usize)> = Vec::new(); // (finish, sender, receiver)
        let mut now = 0.0f64;
        loop {
            for h in 0..n {
                if !holder[h] || busy[h] {
                    continue;
                }
                let unserved: Vec<usize> = (0..n).filter(|&v| !claimed[v]).collect();
                if unserved.is_empty() {
                    break;
                }
                let explore = rng.random::<f64>() >= self.greed;
                let target = if explore {
                    unserved[rng.random_range(0..unserved.len())]
                } else {
                    let mut best = unserved[0];
                    for &v in &unserved[1..] {
                        if thr(h, v) > thr(h, best) {
                            best = v;
                        }
                    }
                    best
                };
                claimed[target] = true;
                busy[h] = true;
                broadcast_parent[target] = Some(h as NodeId);
                in_flight.push((now + bits / thr(h, target), h, target));
            }
            if in_flight.is_empty() {
                break;
            }
            now = in_flight.iter().map(|x| x.0).fold(f64::INFINITY, f64::min);
            in_flight.retain(|&(finish, sender, receiver)| {
                if finish <= now {
                    busy[sender] = false;
                    holder[receiver] = true;
                    false
                } else {
                    true
                }
            });
        }
        let broadcast_s = now;

        // Reduce.
        let mut reduce_parent = vec![None; n];
        let mut alive = vec![true; n];
        let mut busy_until: Vec<Option<f64>> = vec![None; n];
        let mut alive_count = n;
        now = 0.0;
        while alive_count > 1 {
            let mut ready: Vec<usize> = (0..n)
                .filter(|&v| alive[v] && busy_until[v].is_none())
                .collect();
            while ready.len() >= 2 {
                // (throughput, sender, receiver) of the best pair.
                let mut best: Option<(f64, usize, usize)> = None;
                for (i, &a) in ready.iter().enumerate() {
                    for &b in &ready[i + 1..] {
                        // The server only receives; otherwise the faster direction sends
                        // (ties: the lower index sends).
                        let b_sends =
                            a == server as usize || (b != server as usize && thr(b, a) > thr(a, b));
                        let (t, s, r) = if b_sends {
                            (thr(b, a), b, a)
                        } else {
                            (thr(a, b), a, b)
                        };
                        let better = match best {
                            None => true,
                            Some((bt, _, _)) => t > bt,
                        };
                        if better {
                            best = Some((t, s, r));
                        }
                    }
                }
                let (t, s, r) = best.expect("at least two ready nodes");
                reduce_parent[s] = Some(r as NodeId);
                alive[s] = false;
                alive_count -= 1;
                busy_until[r] = Some(now + bits / t);
                ready.retain(|&v| v != s && v != r);
            }
            let next = busy_until
                .iter()
                .flatten()
                .copied()
                .fold(f64::INFINITY, f64::min);
            if !next.is_finite() {
                break;
            }
            now = next;
            for b in busy_until.iter_mut() {
                if b.is_some_and(|t| t <= now) {
                    *b = None;
                }
            }
        }
        Ok(TsEngineSchedule {
            server,
            broadcast_parent,
            reduce_parent,
            broadcast_s,
            reduce_s: now,
        })
    }
}

impl Planner for TsEnginePlanner {
    fn name(&self) -> &str {
        "tsengine"
    }

    fn plan(&self, net: &NetworkModel, model_bits: f64) -> Result<Plan, PlanError> {
        let s = self.schedule(net, model_bits)?;
        let routes = RouteTable::new(net)?;
        let tree = routes.tree(
            s.server,
            1.0,
            &s.reduce_parent,
            &s.broadcast_parent,
            ForwardMode::StoreAndForward,
        );
        Ok(plan(self.name(), vec![tree]))
    }
}

// ---------------------------------------------------------------------------------------
// Ring all-reduce
// ---------------------------------------------------------------------------------------

/// A ring over the nodes: data flows `nodes[j] → nodes[j + 1]` (wrapping around).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingOrder {
    pub nodes: Vec<NodeId>,
    /// True if every ring hop is a direct link (a Hamiltonian cycle was found); false if the
    /// ring is the index order over fewest-hop routes.
    pub over_links: bool,
}

/// Ring all-reduce, Horovod/NCCL style (name `"ring"`), as `n` pipelined trees.
///
/// Ring order: a depth-first search from node 0 for a Hamiltonian cycle over direct links
/// (usable in both directions), trying the highest-capacity next hop first (greedy nearest
/// neighbour with backtracking), within `search_budget` expansions; if none is found the
/// ring is the index order with fewest-hop routes between consecutive nodes.
///
/// Tree `i` is rooted at ring position `i` with share `1/n`: its reduce in-tree is the chain
/// `p(i+1) → p(i+2) → … → p(i+n−1) → p(i)` (reduce-scatter of chunk `i`), its broadcast
/// out-tree the chain `p(i) → p(i+1) → … → p(i+n−1)` (all-gather). Each tree uses every ring
/// hop at most once per phase, and over the `n` trees every hop carries `(n−1)/n` of the
/// model per phase — exactly ring all-reduce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingPlanner {
    /// Maximum DFS expansions when looking for a Hamiltonian cycle; default 100 000.
    pub search_budget: usize,
}

impl Default for RingPlanner {
    fn default() -> Self {
        Self {
            search_budget: 100_000,
        }
    }
}

impl RingPlanner {
    /// The ring order used on `net`.
    pub fn ring_order(&self, net: &NetworkModel) -> RingOrder {
        let n = net.node_count();
        let index_order = RingOrder {
            nodes: (0..n as NodeId).collect(),
            over_links: false,
        };
        if n <= 1 {
            return RingOrder {
                over_links: true,
                ..index_order
            };
        }
        let usable =
            |a: NodeId, b: NodeId| net.capacity_bps(a, b) > 0.0 && net.link(b, a).is_some();
        // Neighbours by decreasing capacity, ties by index.
        let neighbours: Vec<Vec<NodeId>> = (0..n as NodeId)
            .map(|a| {
                let mut v: Vec<NodeId> = (0..n as NodeId)
                    .filter(|&b| b != a && usable(a, b))
                    .collect();
                v.sort_by(|&x, &y| {
                    net.capacity_bps(a, y)
                        .total_cmp(&net.capacity_bps(a, x))
                        .then(x.cmp(&y))
                });
                v
            })
            .collect();
        let mut path = vec![0 as NodeId];
        let mut on_path = vec![false; n];
        on_path[0] = true;
        let mut budget = self.search_budget;
        if hamiltonian(&neighbours, &usable, &mut path, &mut on_path, &mut budget) {
            RingOrder {
                nodes: path,
                over_links: true,
            }
        } else {
            index_order
        }
    }
}

fn hamiltonian(
    neighbours: &[Vec<NodeId>],
    usable: &dyn Fn(NodeId, NodeId) -> bool,
    path: &mut Vec<NodeId>,
    on_path: &mut [bool],
    budget: &mut usize,
) -> bool {
    let n = neighbours.len();
    let last = *path.last().expect("path starts with a node");
    if path.len() == n {
        return usable(last, path[0]);
    }
    for &next in &neighbours[last as usize] {
        if on_path[next as usize] {
            continue;
        }
        if *budget == 0 {
            return false;
        }
        *budget -= 1;
        path.push(next);
        on_path[next as usize] = true;
        if hamiltonian(neighbours, usable, path, on_path, budget) {
            return true;
        }
        path.pop();
        on_path[next as usize] = false;
    }
    false
}

impl Planner for RingPlanner {
    fn name(&self) -> &str {
        "ring"
    }

    fn plan(&self, net: &NetworkModel, _model_bits: f64) -> Result<Plan, PlanError> {
        check_network(net)?;
        let routes = RouteTable::new(net)?;
        let n = net.node_count();
        let ring = self.ring_order(net).nodes;
        let mut trees = Vec::with_capacity(n);
        for i in 0..n {
            let pos = |k: usize| ring[(i + k) % n];
            let mut reduce = vec![None; n];
            let mut bcast = vec![None; n];
            for k in 1..n {
                reduce[pos(k) as usize] = Some(pos(k + 1));
                bcast[pos(k) as usize] = Some(pos(k - 1));
            }
            trees.push(routes.tree(
                pos(0),
                1.0 / n as f64,
                &reduce,
                &bcast,
                ForwardMode::Pipelined,
            ));
        }
        Ok(plan(self.name(), trees))
    }
}

// ---------------------------------------------------------------------------------------
// Direct mesh reduce-scatter + all-gather
// ---------------------------------------------------------------------------------------

/// Direct mesh reduce-scatter + all-gather with bandwidth-proportional shards (name
/// `"mesh"`): one tree per node `r`, reduce = star into `r`, broadcast = star out of `r`,
/// over fewest-hop routes, pipelined.
///
/// `share_r ∝ min(ingress_r, egress_r)` where `ingress_r = Σ rate of links into r` (capped
/// by `r`'s ingress NIC cap if it has one) and `egress_r = Σ rate of links out of r` (capped
/// by its egress NIC cap), normalized to sum to 1: the shard owner receives `n − 1` shards'
/// worth and sends as much, so its smaller side bounds how much it can own.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MeshPlanner;

impl MeshPlanner {
    /// `min(ingress, egress)` capacity of every node, bits/s.
    pub fn node_capacities(net: &NetworkModel) -> Vec<f64> {
        let n = net.node_count();
        let mut ingress = vec![0.0f64; n];
        let mut egress = vec![0.0f64; n];
        for l in &net.topology.links {
            if l.rate_bps > 0.0 && l.from != l.to && (l.from as usize) < n && (l.to as usize) < n {
                egress[l.from as usize] += l.rate_bps;
                ingress[l.to as usize] += l.rate_bps;
            }
        }
        (0..n)
            .map(|v| {
                let node = &net.topology.nodes[v];
                let i = node.ingress_bps.map_or(ingress[v], |c| c.min(ingress[v]));
                let e = node.egress_bps.map_or(egress[v], |c| c.min(egress[v]));
                i.min(e)
            })
            .collect()
    }
}

impl Planner for MeshPlanner {
    fn name(&self) -> &str {
        "mesh"
    }

    fn plan(&self, net: &NetworkModel, _model_bits: f64) -> Result<Plan, PlanError> {
        check_network(net)?;
        let routes = RouteTable::new(net)?;
        let n = net.node_count();
        let caps = Self::node_capacities(net);
        let total: f64 = caps.iter().sum();
        let trees = (0..n)
            .map(|r| {
                let share = if n == 1 || !(total > 0.0 && total.is_finite()) {
                    1.0 / n as f64
                } else {
                    caps[r] / total
                };
                routes.star(r as NodeId, share, ForwardMode::Pipelined)
            })
            .collect();
        Ok(plan(self.name(), trees))
    }
}

// ---------------------------------------------------------------------------------------
// Single-root shortest-path tree
// ---------------------------------------------------------------------------------------

/// Single-root shortest-path tree (name `"spt"`): for every candidate root, the reduce
/// in-tree of min-latency paths to it and the broadcast out-tree of min-latency paths from
/// it (ties on latency broken by `Σ 1/bandwidth`, then by the lowest node index); the root
/// is the candidate whose plan has the smallest [`Plan::modeled_time`] total (ties: lower
/// index). One pipelined tree, share 1, over direct links.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SptPlanner;

impl SptPlanner {
    /// The candidate tree rooted at `root`.
    pub fn candidate(net: &NetworkModel, root: NodeId) -> Result<PlannedTree, PlanError> {
        let n = net.node_count();
        let costs = LinkCosts::latency_then_bandwidth(net);
        let missing = || PlanError::Disconnected {
            from: net.topology.node_name(root).to_string(),
            to: "some node (over links usable in both directions)".to_string(),
        };
        let reduce = shortest_path_tree(n, root, TreeDirection::In, &costs).ok_or_else(missing)?;
        let bcast = shortest_path_tree(n, root, TreeDirection::Out, &costs).ok_or_else(missing)?;
        Ok(PlannedTree::from_parents(root, 1.0, &reduce, &bcast))
    }
}

impl Planner for SptPlanner {
    fn name(&self) -> &str {
        "spt"
    }

    fn plan(&self, net: &NetworkModel, model_bits: f64) -> Result<Plan, PlanError> {
        check_network(net)?;
        let bits = if model_bits > 0.0 && model_bits.is_finite() {
            model_bits
        } else {
            1.0
        };
        let mut best: Option<(f64, Plan)> = None;
        for root in 0..net.node_count() as NodeId {
            let candidate = plan(self.name(), vec![Self::candidate(net, root)?]);
            let t = candidate.modeled_time(net, bits).total_s;
            let better = match &best {
                None => true,
                Some((bt, _)) => t < *bt,
            };
            if better {
                best = Some((t, candidate));
            }
        }
        Ok(best.expect("check_network guarantees a node").1)
    }
}
