//! The planner interface and the fluid round-time model shared by every planner.
//!
//! A [`Plan`] is a set of trees over routes (node sequences). [`Plan::modeled_time`] is the
//! pipelined fluid model of DESIGN §5: with segments pipelining, a round takes the time of the
//! most loaded resource (directed link or node NIC cap) plus the latency of the deepest
//! reduce + broadcast path. Store-and-forward trees are modeled per hop instead.

pub mod baselines;
pub mod multipath;
pub mod packing;
pub mod paper;
pub mod prune;

use crate::network::NetworkModel;
use netstorm_dataplane::policy::{
    ForwardMode, Policy, PolicyBuilder, TreeEdge, TreePolicy, WeightedPath,
};
use netstorm_dataplane::NodeId;

/// One tree of a plan. `reduce_route[v]` is the route from `v` to its reduce parent (last
/// hop); `broadcast_route[v]` the route from its broadcast parent (first hop) to `v`;
/// `None` exactly at the root. A direct edge is the two-hop route `[v, parent]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedTree {
    pub root: NodeId,
    pub share: f64,
    pub reduce_route: Vec<Option<Vec<NodeId>>>,
    pub broadcast_route: Vec<Option<Vec<NodeId>>>,
    pub forward: ForwardMode,
    /// Tree edges whose traffic is split over several routes (multipath); the other
    /// edges use their single route above.
    pub multipath: Vec<EdgeMultipath>,
}

/// The routes of one tree edge when it is split: the edge of non-root node `node` in the
/// reduce (`reduce = true`) or broadcast tree, each route with its fraction of the traffic
/// (fractions sum to 1; the first route is the edge's primary route).
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeMultipath {
    pub node: NodeId,
    pub reduce: bool,
    pub routes: Vec<(Vec<NodeId>, f64)>,
}

impl PlannedTree {
    /// A tree over direct links from parent maps.
    pub fn from_parents(
        root: NodeId,
        share: f64,
        reduce_parent: &[Option<NodeId>],
        broadcast_parent: &[Option<NodeId>],
    ) -> Self {
        Self {
            root,
            share,
            reduce_route: reduce_parent
                .iter()
                .enumerate()
                .map(|(v, p)| p.map(|p| vec![v as NodeId, p]))
                .collect(),
            broadcast_route: broadcast_parent
                .iter()
                .enumerate()
                .map(|(v, p)| p.map(|p| vec![p, v as NodeId]))
                .collect(),
            forward: ForwardMode::Pipelined,
            multipath: Vec::new(),
        }
    }

    /// The routes (with traffic fractions) of `node`'s reduce or broadcast edge; empty at
    /// the root.
    pub fn edge_routes(&self, node: NodeId, reduce: bool) -> Vec<(&[NodeId], f64)> {
        if let Some(m) = self
            .multipath
            .iter()
            .find(|m| m.node == node && m.reduce == reduce)
        {
            return m.routes.iter().map(|(r, w)| (r.as_slice(), *w)).collect();
        }
        let routes = if reduce {
            &self.reduce_route
        } else {
            &self.broadcast_route
        };
        routes
            .get(node as usize)
            .and_then(|r| r.as_deref())
            .map(|r| vec![(r, 1.0)])
            .unwrap_or_default()
    }

    /// Reduce parent of every node (`None` at the root).
    pub fn reduce_parent(&self) -> Vec<Option<NodeId>> {
        self.reduce_route
            .iter()
            .map(|r| r.as_ref().and_then(|h| h.last().copied()))
            .collect()
    }

    /// Broadcast parent of every node (`None` at the root).
    pub fn broadcast_parent(&self) -> Vec<Option<NodeId>> {
        self.broadcast_route
            .iter()
            .map(|r| r.as_ref().and_then(|h| h.first().copied()))
            .collect()
    }
}

/// A planner's output.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Name of the planner that made it.
    pub planner: String,
    pub trees: Vec<PlannedTree>,
}

/// Modeled time of one round, seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModeledTime {
    /// Bandwidth term: most loaded resource, load / capacity.
    pub bandwidth_s: f64,
    /// Latency term: deepest reduce path + deepest broadcast path, over trees.
    pub latency_s: f64,
    pub total_s: f64,
}

impl ModeledTime {
    /// `bandwidth_weight × bandwidth + latency`: the cost planners compare plans by when
    /// the bandwidth term is dearer than the fluid model says (1: `total_s`).
    pub fn weighted_s(&self, bandwidth_weight: f64) -> f64 {
        if bandwidth_weight == 1.0 {
            self.total_s
        } else {
            bandwidth_weight * self.bandwidth_s + self.latency_s
        }
    }
}

impl Plan {
    /// The data-plane policy for `epoch`; pacing rates are the model's capacities.
    /// This plan, made over a network restricted to `kept` (renumbered `0..kept.len()`),
    /// in the original ids of a network of `node_count` nodes: the other nodes are in no
    /// tree.
    pub fn lifted(&self, kept: &[NodeId], node_count: usize) -> Plan {
        let id = |v: &NodeId| kept[*v as usize];
        let hops = |r: &Vec<NodeId>| r.iter().map(id).collect::<Vec<_>>();
        let map = |routes: &[Option<Vec<NodeId>>]| {
            let mut out = vec![None; node_count];
            for (v, r) in routes.iter().enumerate() {
                out[kept[v] as usize] = r.as_ref().map(hops);
            }
            out
        };
        Plan {
            planner: self.planner.clone(),
            trees: self
                .trees
                .iter()
                .map(|t| PlannedTree {
                    root: id(&t.root),
                    share: t.share,
                    reduce_route: map(&t.reduce_route),
                    broadcast_route: map(&t.broadcast_route),
                    forward: t.forward,
                    multipath: t
                        .multipath
                        .iter()
                        .map(|m| EdgeMultipath {
                            node: id(&m.node),
                            reduce: m.reduce,
                            routes: m.routes.iter().map(|(r, w)| (hops(r), *w)).collect(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    pub fn to_policy(&self, builder: &mut PolicyBuilder, net: &NetworkModel, epoch: u32) -> Policy {
        for t in &self.trees {
            if t.multipath.is_empty() {
                builder.tree_with_routes(
                    t.root,
                    t.share,
                    &t.reduce_route,
                    &t.broadcast_route,
                    t.forward,
                );
                continue;
            }
            let mut edges = |reduce: bool| -> Vec<Option<TreeEdge>> {
                (0..t.reduce_route.len())
                    .map(|v| {
                        let routes = t.edge_routes(v as NodeId, reduce);
                        let (first, _) = routes.first()?;
                        let parent = if reduce {
                            *first.last()?
                        } else {
                            *first.first()?
                        };
                        Some(TreeEdge {
                            parent,
                            paths: routes
                                .iter()
                                .map(|(r, w)| WeightedPath {
                                    path: builder.route(r),
                                    weight: *w,
                                })
                                .collect(),
                        })
                    })
                    .collect()
            };
            let reduce = edges(true);
            let broadcast = edges(false);
            builder.push_tree(TreePolicy {
                root: t.root,
                share: t.share,
                reduce,
                broadcast,
                forward: t.forward,
            });
        }
        builder.link_rates_from(&net.topology);
        builder.build(epoch, net.node_count() as u16)
    }

    /// Link loads in bits for a model of `model_bits`, indexed like `net.topology.links`.
    pub fn link_loads_bits(&self, net: &NetworkModel, model_bits: f64) -> Vec<f64> {
        let mut load = vec![0.0; net.topology.links.len()];
        for t in &self.trees {
            let bits = t.share * model_bits;
            for v in 0..t.reduce_route.len() as NodeId {
                for reduce in [true, false] {
                    for (route, frac) in t.edge_routes(v, reduce) {
                        for w in route.windows(2) {
                            if let Some(i) = net.link_index(w[0], w[1]) {
                                load[i] += bits * frac;
                            }
                        }
                    }
                }
            }
        }
        load
    }

    /// The pipelined fluid model of one round for a model of `model_bits` bits.
    pub fn modeled_time(&self, net: &NetworkModel, model_bits: f64) -> ModeledTime {
        let loads = self.link_loads_bits(net, model_bits);
        let n = net.node_count();
        let mut bandwidth_s: f64 = 0.0;
        let mut egress = vec![0.0; n];
        let mut ingress = vec![0.0; n];
        for (l, &bits) in net.topology.links.iter().zip(&loads) {
            if bits > 0.0 {
                bandwidth_s = bandwidth_s.max(if l.rate_bps > 0.0 {
                    bits / l.rate_bps
                } else {
                    f64::INFINITY
                });
            }
            egress[l.from as usize] += bits;
            ingress[l.to as usize] += bits;
        }
        for (v, node) in net.topology.nodes.iter().enumerate() {
            if let Some(cap) = node.egress_bps {
                bandwidth_s = bandwidth_s.max(egress[v] / cap);
            }
            if let Some(cap) = node.ingress_bps {
                bandwidth_s = bandwidth_s.max(ingress[v] / cap);
            }
        }
        let route_latency = |r: &[NodeId]| -> f64 {
            r.windows(2)
                .map(|w| net.latency_ns(w[0], w[1]).unwrap_or(0) as f64 * 1e-9)
                .sum()
        };
        let mut latency_s: f64 = 0.0;
        let mut store_forward_s: f64 = 0.0;
        for t in &self.trees {
            let depth = |routes: &[Option<Vec<NodeId>>], up: bool| -> (f64, f64) {
                // Latency and store-and-forward time from every node to/from the root.
                let parent: Vec<Option<NodeId>> = routes
                    .iter()
                    .map(|r| {
                        r.as_ref()
                            .map(|h| if up { *h.last().unwrap() } else { h[0] })
                    })
                    .collect();
                let mut worst_lat: f64 = 0.0;
                let mut worst_sf: f64 = 0.0;
                for v in 0..n {
                    let (mut lat, mut sf, mut cur, mut steps) = (0.0, 0.0, v, 0);
                    while let (Some(p), Some(r)) = (parent[cur], routes[cur].as_ref()) {
                        // A split edge is as slow as its slowest route.
                        lat += t
                            .edge_routes(cur as NodeId, up)
                            .iter()
                            .map(|(r, _)| route_latency(r))
                            .fold(route_latency(r), f64::max);
                        let bottleneck = r
                            .windows(2)
                            .map(|w| net.capacity_bps(w[0], w[1]))
                            .fold(f64::INFINITY, f64::min);
                        sf += t.share * model_bits / bottleneck;
                        cur = p as usize;
                        steps += 1;
                        if steps > n {
                            break;
                        }
                    }
                    worst_lat = worst_lat.max(lat);
                    worst_sf = worst_sf.max(sf);
                }
                (worst_lat, worst_sf)
            };
            let (rl, rsf) = depth(&t.reduce_route, true);
            let (bl, bsf) = depth(&t.broadcast_route, false);
            latency_s = latency_s.max(rl + bl);
            if t.forward == ForwardMode::StoreAndForward {
                store_forward_s = store_forward_s.max(rsf + bsf);
            }
        }
        let bandwidth_s = bandwidth_s.max(store_forward_s);
        ModeledTime {
            bandwidth_s,
            latency_s,
            total_s: bandwidth_s + latency_s,
        }
    }
}

/// Why a plan could not be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error("the network has no nodes")]
    Empty,
    #[error("the network is not connected: {from} cannot reach {to}")]
    Disconnected { from: String, to: String },
    #[error("every link has zero capacity")]
    ZeroCapacity,
    #[error("asked for {asked} roots but the network has {nodes} nodes")]
    TooManyRoots { asked: usize, nodes: usize },
    #[error("unknown planner '{0}' (known: {1})")]
    UnknownPlanner(String, String),
    #[error("{0}")]
    Other(String),
}

/// Every planner: network model + model size in, plan out.
pub trait Planner: std::fmt::Debug + Send + Sync {
    fn name(&self) -> &str;
    fn plan(&self, net: &NetworkModel, model_bits: f64) -> Result<Plan, PlanError>;
}

/// Checks the preconditions every planner shares: nodes exist, some capacity, strongly
/// connected over links of positive rate.
pub fn check_network(net: &NetworkModel) -> Result<(), PlanError> {
    let n = net.node_count();
    if n == 0 {
        return Err(PlanError::Empty);
    }
    if n > 1 && net.topology.links.iter().all(|l| l.rate_bps <= 0.0) {
        return Err(PlanError::ZeroCapacity);
    }
    for v in 1..n as NodeId {
        for (a, b) in [(0, v), (v, 0)] {
            if net.topology.fewest_hop_route(a, b).is_none() {
                return Err(PlanError::Disconnected {
                    from: net.topology.node_name(a).to_string(),
                    to: net.topology.node_name(b).to_string(),
                });
            }
        }
    }
    Ok(())
}

/// Knobs the planners take by name (unused ones are ignored by each planner).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PlannerOptions {
    /// `paper`: keep the top R roots (default: all).
    pub roots: Option<usize>,
    /// `mxnet-ps`: per-tensor element counts, for ps-lite's key sharding.
    pub tensor_sizes: Option<Vec<u64>>,
    /// `tsengine`: probability of exploiting the best known peer.
    pub greed: f64,
    /// Seed for randomized planners.
    pub seed: u64,
    /// Multipath: up to this many auxiliary relay routes per tree edge (0 = single path).
    pub auxiliary_paths: usize,
}

/// Every planner name [`by_name`] knows.
pub const PLANNER_NAMES: &[&str] = &[
    "packing", "paper", "mxnet-ps", "mlnet", "tsengine", "ring", "mesh", "spt",
];

/// The planner called `name`, configured from `opts`.
/// `<name>+mp<K>` (e.g. `paper+mp2`) adds up to K auxiliary relay routes per tree edge, as
/// does `opts.auxiliary_paths`.
pub fn by_name(name: &str, opts: &PlannerOptions) -> Result<Box<dyn Planner>, PlanError> {
    let (base, k) = match name.split_once("+mp") {
        Some((base, k)) => match k.parse::<usize>() {
            Ok(k) if (1..=8).contains(&k) => (base, k),
            _ => {
                return Err(PlanError::Other(format!(
                    "'{name}': the multipath suffix is +mp<K> with K in 1..=8"
                )))
            }
        },
        None => (name, opts.auxiliary_paths),
    };
    let planner = single_path_by_name(base, opts)?;
    Ok(if k > 0 {
        Box::new(multipath::MultipathPlanner::new(planner, k))
    } else {
        planner
    })
}

fn single_path_by_name(name: &str, opts: &PlannerOptions) -> Result<Box<dyn Planner>, PlanError> {
    Ok(match name {
        "packing" => Box::new(packing::PackingPlanner::default()),
        "paper" => Box::new(paper::PaperPlanner::new(opts.roots)),
        "mxnet-ps" => Box::new(match &opts.tensor_sizes {
            Some(sizes) => baselines::MxnetPsPlanner::with_tensor_sizes(sizes.clone()),
            None => baselines::MxnetPsPlanner::new(),
        }),
        "mlnet" => Box::new(baselines::MlnetPlanner::default()),
        "tsengine" => Box::new(baselines::TsEnginePlanner {
            greed: if opts.greed > 0.0 { opts.greed } else { 0.9 },
            seed: opts.seed,
            server: None,
        }),
        "ring" => Box::new(baselines::RingPlanner::default()),
        "mesh" => Box::new(baselines::MeshPlanner),
        "spt" => Box::new(baselines::SptPlanner),
        other => {
            return Err(PlanError::UnknownPlanner(
                other.to_string(),
                PLANNER_NAMES.join(", "),
            ))
        }
    })
}
