//! The physical limit of a network: the fluid optimum (bandwidth) and the latency bound.
//!
//! # The fluid optimum (DESIGN §5)
//!
//! Every shard `r` (share `s_r` of a model of `M` bits, `Σ s_r = 1`) is reduced up an
//! in-arborescence to its root `r` and broadcast down an out-arborescence from it. With
//! segments pipelining, a round takes `max over resources (load / capacity)`, where the
//! resources are the directed links and the optional per-node egress / ingress caps. The
//! fluid optimum is the minimum of that over shares *and fractional packings of trees*:
//!
//! ```text
//! minimize T  s.t.  Σ_r s_r = 1,
//!   root r's broadcast can send s_r·M to every node within capacity x_r (a flow of value
//!   s_r·M from r to every v ≤ x_r), every node can send s_r·M to r within y_r (reduce),
//!   Σ_r x_r(e) + y_r(e) ≤ cap(e)·T on every link, and likewise for node caps.
//! ```
//!
//! By Edmonds' arborescence-packing theorem, "a flow of value `s_r` from `r` to every node
//! within `x_r`" is exactly "`x_r` contains a fractional packing of out-arborescences of
//! weight `s_r`", so the LP is the physical limit of tree-based synchronization with
//! in-network aggregation, ignoring latency.
//!
//! [`fluid_optimum_flow_lp`] states that LP literally (one flow per root, sink and
//! direction: `O(n²·m)` variables). It is the reference, but it has ~27,000 flow variables
//! on 11 fully meshed nodes (about 0.35 s) and ~600,000 on 24, so [`fluid_optimum`] solves
//! the *same* LP in its equivalent arborescence form by **column generation** (about
//! 0.03 s on 11 nodes): a master LP over a growing set of explicit trees (`min T` with
//! per-root balance `Σ out-trees = Σ in-trees = s_r`, solved in the sparser throughput
//! form, see `solve_master`), whose capacity duals `π` price new trees exactly with a
//! minimum-cost arborescence ([`crate::arborescence`]) per root and direction. Weak
//! duality gives a certified lower bound at every iteration,
//!
//! ```text
//! T* ≥ min_r (minOutTree_r(π) + minInTree_r(π)) / Σ_k π_k·cap_k,
//! ```
//!
//! and the master value is an upper bound (it is achieved by the trees it holds); the
//! loop stops when they agree to [`FLUID_RELATIVE_GAP`]. The returned time is the lower
//! bound, so it never exceeds what any plan achieves.
//!
//! Beyond `round_bound::LP_MAX_NODES` (32) nodes the master's capacity rows fill in
//! densely in the interior-point factorization (a 64-node sparse WAN took minutes), so
//! the same weak-duality certificate is evaluated on the lengths of a Garg–Könemann
//! packing instead ([`crate::round_bound`]): still a lower bound, within about 1–3 % of
//! the optimum rather than 1e-6.
//!
//! All LPs are normalized: data in units of the model size, capacities in units of the
//! largest link capacity, so every coefficient is `O(1)` whatever the units.
//!
//! # The latency bound
//!
//! Every node's contribution must reach every other node, so a round takes at least the
//! largest, over ordered node pairs, lowest-latency path ([`latency_bound_s`]). Since a
//! plan's modeled time is its bandwidth term plus its latency term and each is bounded
//! separately, `fluid_optimum(..).time_s + latency_bound_s(..)` is a lower bound on
//! [`crate::planner::Plan::modeled_time`]'s total for every plan.

use crate::arborescence::min_arborescence_matrix;
use crate::network::NetworkModel;
use good_lp::{
    clarabel, variable, DualValues, Expression, ProblemVariables, ResolutionError, Solution,
    SolutionWithDual, SolverModel, Variable,
};
use netstorm_dataplane::NodeId;
use std::collections::HashSet;

/// Relative gap between the column-generation upper and lower bounds at which
/// [`fluid_optimum`] stops.
pub const FLUID_RELATIVE_GAP: f64 = 1e-6;

/// Interior-point tolerance (gap and feasibility) of the bound LPs.
pub(crate) const EXACT_TOLERANCE: f64 = 1e-10;

/// Column-generation rounds before [`fluid_optimum`] gives up.
const MAX_COLUMN_GENERATION_ROUNDS: usize = 500;

/// The fluid optimum of one round.
#[derive(Debug, Clone, PartialEq)]
pub struct FluidOptimum {
    /// Bandwidth-limited round time, seconds (a certified lower bound within
    /// [`FLUID_RELATIVE_GAP`] of the LP value).
    pub time_s: f64,
    /// How far above `time_s` the optimum may lie (relative): the solver's certified gap,
    /// 0 where the LP was solved exactly.
    pub gap: f64,
    /// Optimal share of the model owned by every node as a root, indexed by node; sums to 1.
    pub shares: Vec<f64>,
}

/// Why a bound could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BoundError {
    #[error("the network has no nodes")]
    Empty,
    #[error("model size {0} bits is not a finite non-negative number")]
    BadModelSize(f64),
    #[error(
        "the network is not connected: {from} cannot reach {to} over links of positive capacity"
    )]
    Disconnected { from: String, to: String },
    #[error("zero capacity: {0}")]
    ZeroCapacity(String),
    #[error("LP solver failed: {0}")]
    Solver(String),
}

impl From<ResolutionError> for BoundError {
    fn from(e: ResolutionError) -> Self {
        BoundError::Solver(e.to_string())
    }
}

/// The resources of the fluid model — directed links of positive capacity and the node
/// caps that exist — with capacities normalized by the largest link capacity.
#[derive(Debug, Clone)]
pub(crate) struct Resources {
    pub n: usize,
    /// Normalized capacity of every resource.
    pub cap: Vec<f64>,
    /// Largest link capacity, bits per second (the unit of `cap`).
    pub scale_bps: f64,
    /// `n × n`: resource index of link `u → v`, `usize::MAX` where there is none.
    link_res: Vec<usize>,
    egress_res: Vec<Option<usize>>,
    ingress_res: Vec<Option<usize>>,
}

impl Resources {
    /// Checks the network (non-empty, capacities, strongly connected) and indexes it.
    pub fn new(net: &NetworkModel) -> Result<Self, BoundError> {
        let n = net.node_count();
        if n == 0 {
            return Err(BoundError::Empty);
        }
        let topo = &net.topology;
        let mut scale_bps: f64 = 0.0;
        for l in &topo.links {
            if l.rate_bps.is_finite()
                && l.rate_bps > 0.0
                && (l.from as usize) < n
                && (l.to as usize) < n
            {
                scale_bps = scale_bps.max(l.rate_bps);
            }
        }
        if n > 1 && scale_bps <= 0.0 {
            return Err(BoundError::ZeroCapacity(
                "every link has zero capacity".into(),
            ));
        }
        let mut cap = Vec::new();
        let mut link_res = vec![usize::MAX; n * n];
        for l in &topo.links {
            let (u, v) = (l.from as usize, l.to as usize);
            if u < n
                && v < n
                && u != v
                && l.rate_bps.is_finite()
                && l.rate_bps > 0.0
                && link_res[u * n + v] == usize::MAX
            {
                link_res[u * n + v] = cap.len();
                cap.push(l.rate_bps / scale_bps);
            }
        }
        let mut node_cap =
            |c: Option<f64>, what: &str, v: usize| -> Result<Option<usize>, BoundError> {
                match c {
                    Some(c) if c.is_finite() => {
                        if c <= 0.0 && n > 1 {
                            return Err(BoundError::ZeroCapacity(format!(
                                "{what} cap of {} is {c}",
                                topo.nodes[v].name
                            )));
                        }
                        cap.push(c / scale_bps);
                        Ok(Some(cap.len() - 1))
                    }
                    _ => Ok(None),
                }
            };
        let mut egress_res = Vec::with_capacity(n);
        let mut ingress_res = Vec::with_capacity(n);
        for (v, node) in topo.nodes.iter().enumerate() {
            egress_res.push(node_cap(node.egress_bps, "egress", v)?);
            ingress_res.push(node_cap(node.ingress_bps, "ingress", v)?);
        }
        let res = Self {
            n,
            cap,
            scale_bps,
            link_res,
            egress_res,
            ingress_res,
        };
        res.check_connected(net)?;
        Ok(res)
    }

    fn check_connected(&self, net: &NetworkModel) -> Result<(), BoundError> {
        let n = self.n;
        for forward in [true, false] {
            let mut seen = vec![false; n];
            let mut stack = vec![0usize];
            seen[0] = true;
            while let Some(u) = stack.pop() {
                for (v, seen_v) in seen.iter_mut().enumerate() {
                    let edge = if forward {
                        self.has_edge(u, v)
                    } else {
                        self.has_edge(v, u)
                    };
                    if edge && !*seen_v {
                        *seen_v = true;
                        stack.push(v);
                    }
                }
            }
            if let Some(v) = seen.iter().position(|s| !s) {
                let (a, b) = if forward { (0, v) } else { (v, 0) };
                return Err(BoundError::Disconnected {
                    from: net.topology.node_name(a as NodeId).to_string(),
                    to: net.topology.node_name(b as NodeId).to_string(),
                });
            }
        }
        Ok(())
    }

    pub fn count(&self) -> usize {
        self.cap.len()
    }

    /// Resource of link `u → v`, if the link exists with positive capacity.
    pub fn link(&self, u: usize, v: usize) -> Option<usize> {
        let i = self.link_res[u * self.n + v];
        (i != usize::MAX).then_some(i)
    }

    pub fn has_edge(&self, u: usize, v: usize) -> bool {
        u != v && self.link_res[u * self.n + v] != usize::MAX
    }

    /// Every resource one unit of data sent over `u → v` consumes (the link, the sender's
    /// egress cap, the receiver's ingress cap).
    pub fn edge_resources(&self, u: usize, v: usize) -> impl Iterator<Item = usize> + '_ {
        self.link(u, v)
            .into_iter()
            .chain(self.egress_res[u])
            .chain(self.ingress_res[v])
    }

    /// Dense `n × n` edge cost matrix `Σ_{k ∈ edge} price[k]`, infinite where no link.
    pub fn edge_cost_matrix(&self, price: &[f64]) -> Vec<f64> {
        let n = self.n;
        let mut m = vec![f64::INFINITY; n * n];
        for u in 0..n {
            for v in 0..n {
                if self.has_edge(u, v) {
                    m[u * n + v] = self.edge_resources(u, v).map(|k| price[k]).sum();
                }
            }
        }
        m
    }

    /// Usage of every resource by an out-tree (edges `parent[v] → v`) or an in-tree
    /// (edges `v → parent[v]`), as sorted `(resource, count)` pairs.
    pub fn tree_usage(&self, parent: &[Option<usize>], out: bool) -> Vec<(usize, f64)> {
        let mut counts: Vec<(usize, f64)> = Vec::with_capacity(3 * self.n);
        for (v, p) in parent.iter().enumerate() {
            if let Some(p) = *p {
                let (a, b) = if out { (p, v) } else { (v, p) };
                for k in self.edge_resources(a, b) {
                    counts.push((k, 1.0));
                }
            }
        }
        merge_usage(counts)
    }
}

/// Sorts `(resource, count)` pairs and sums duplicates.
pub(crate) fn merge_usage(mut counts: Vec<(usize, f64)>) -> Vec<(usize, f64)> {
    counts.sort_unstable_by_key(|c| c.0);
    let mut out: Vec<(usize, f64)> = Vec::with_capacity(counts.len());
    for (k, c) in counts {
        match out.last_mut() {
            Some(last) if last.0 == k => last.1 += c,
            _ => out.push((k, c)),
        }
    }
    out
}

/// What a master-LP column is: an out-tree or an in-tree of its root (balanced per root).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ColumnKind {
    Out,
    In,
}

/// One column of the master LP.
#[derive(Debug, Clone)]
pub(crate) struct Column {
    pub root: usize,
    pub kind: ColumnKind,
    /// Sorted `(resource, count)`.
    pub usage: Vec<(usize, f64)>,
}

/// Solution of the master LP.
#[derive(Debug, Clone)]
pub(crate) struct MasterSolution {
    /// Normalized round time: seconds × `scale_bps` / model bits.
    pub tau: f64,
    /// Weight of every column (shares of the model).
    pub weights: Vec<f64>,
    /// Non-negative price of every resource (capacity-row duals).
    pub prices: Vec<f64>,
}

/// `min τ` s.t. `Σ_Out w = 1`, per root `Σ_Out w = Σ_In w`, every resource's load
/// `≤ cap·τ`, `w ≥ 0`. The columns must contain, for every root with an `Out` column, an
/// `In` column and vice versa.
///
/// A positive `sparsity_penalty` (relative, e.g. `1e-5`) trades that much throughput
/// for a sparse solution (see the objective below); the bound LPs use 0.
///
/// Solved in the equivalent throughput form `max Σ_Out x` s.t. `load(x) ≤ cap`
/// and the per-root balance (`τ = 1 / max`, `w = x·τ`): it has no dense `τ` column and no
/// dense normalization row, which keeps the interior-point factorizations sparse.
pub(crate) fn solve_master(
    res: &Resources,
    cols: &[Column],
    tolerance: f64,
    sparsity_penalty: f64,
) -> Result<MasterSolution, BoundError> {
    let mut vars = ProblemVariables::new();
    let x: Vec<Variable> = cols.iter().map(|_| vars.add(variable().min(0.0))).collect();
    let mut throughput = Expression::with_capacity(cols.len());
    for (i, (c, &xv)) in cols.iter().zip(&x).enumerate() {
        // Distinct tiny costs make the optimum a unique vertex, which the interior-point
        // method then approaches: few columns with weight instead of the analytic center
        // of the optimal face (golden-ratio sequence: deterministic, well spread).
        let penalty = sparsity_penalty * (1.0 + (i as f64 * 0.618_033_988_749_895).fract());
        let gain = if c.kind == ColumnKind::Out { 1.0 } else { 0.0 };
        throughput.add_mul(gain - penalty, xv);
    }
    let mut model = vars.maximise(throughput).using(clarabel);
    model
        .settings()
        .verbose(false)
        .tol_gap_abs(tolerance)
        .tol_gap_rel(tolerance)
        .tol_feas(tolerance)
        .max_iter(400);
    let mut balance: Vec<Option<Expression>> = vec![None; res.n];
    for (c, &xv) in cols.iter().zip(&x) {
        let sign = match c.kind {
            ColumnKind::Out => 1.0,
            ColumnKind::In => -1.0,
        };
        balance[c.root]
            .get_or_insert_with(Expression::default)
            .add_mul(sign, xv);
    }
    for b in balance.into_iter().flatten() {
        model.add_constraint(b.eq(0.0));
    }
    let mut load: Vec<Option<Expression>> = vec![None; res.count()];
    for (c, &xv) in cols.iter().zip(&x) {
        for &(k, count) in &c.usage {
            load[k]
                .get_or_insert_with(Expression::default)
                .add_mul(count, xv);
        }
    }
    let mut cap_rows = Vec::with_capacity(res.count());
    for (k, l) in load.into_iter().enumerate() {
        if let Some(l) = l {
            cap_rows.push((k, model.add_constraint(l.leq(res.cap[k]))));
        }
    }
    let mut sol = model.solve()?;
    let values: Vec<f64> = x.iter().map(|&v| sol.value(v).max(0.0)).collect();
    let total: f64 = cols
        .iter()
        .zip(&values)
        .filter(|(c, _)| c.kind == ColumnKind::Out)
        .map(|(_, v)| v)
        .sum();
    if !(total > 0.0 && total.is_finite()) {
        return Err(BoundError::Solver(format!(
            "master LP returned throughput {total}"
        )));
    }
    let duals = sol.compute_dual();
    let mut prices = vec![0.0; res.count()];
    for (k, r) in cap_rows {
        prices[k] = duals.dual(r).abs();
    }
    Ok(MasterSolution {
        tau: 1.0 / total,
        weights: values.iter().map(|v| v / total).collect(),
        prices,
    })
}

/// Minimum out-tree (or in-tree) of `root` under the edge cost matrix `cost`.
pub(crate) fn min_tree(
    n: usize,
    root: usize,
    cost: &[f64],
    out: bool,
) -> Option<Vec<Option<usize>>> {
    if out {
        min_arborescence_matrix(n, root, cost)
    } else {
        let mut rev = vec![f64::INFINITY; n * n];
        for u in 0..n {
            for v in 0..n {
                rev[v * n + u] = cost[u * n + v];
            }
        }
        min_arborescence_matrix(n, root, &rev)
    }
}

/// Common argument checks; returns the resources, or the trivial answer for one node.
fn prepare(
    net: &NetworkModel,
    model_bits: f64,
) -> Result<Result<Resources, FluidOptimum>, BoundError> {
    if !(model_bits.is_finite() && model_bits >= 0.0) {
        return Err(BoundError::BadModelSize(model_bits));
    }
    let res = Resources::new(net)?;
    if res.n == 1 {
        return Ok(Err(FluidOptimum {
            time_s: 0.0,
            gap: 0.0,
            shares: vec![1.0],
        }));
    }
    Ok(Ok(res))
}

/// The fluid optimum for a model of `model_bits` bits, by column generation over
/// arborescences (see the module documentation).
pub fn fluid_optimum(net: &NetworkModel, model_bits: f64) -> Result<FluidOptimum, BoundError> {
    let res = match prepare(net, model_bits)? {
        Ok(res) => res,
        Err(trivial) => return Ok(trivial),
    };
    if res.n > crate::round_bound::LP_MAX_NODES {
        // The master LP's capacity rows fill in densely on large networks; multiplicative
        // weights give a certified bound instead.
        let m = crate::round_bound::fluid_by_mwu(net, &res);
        let mut shares = m.root_flow;
        normalize(&mut shares);
        tracing::debug!(
            lower = m.lower,
            upper = m.upper,
            "fluid optimum by multiplicative weights"
        );
        return Ok(FluidOptimum {
            time_s: m.lower * model_bits / res.scale_bps,
            gap: if m.lower > 0.0 {
                (m.upper / m.lower - 1.0).max(0.0)
            } else {
                0.0
            },
            shares,
        });
    }
    let cg = column_generation(&res, Vec::new())?;
    tracing::debug!(
        rounds = cg.rounds,
        trees = cg.trees.len(),
        "fluid optimum by column generation"
    );
    let mut shares = vec![0.0; res.n];
    for (t, w) in cg.trees.iter().zip(&cg.master.weights) {
        if t.out {
            shares[t.root] += w;
        }
    }
    normalize(&mut shares);
    let lower = cg.lower.min(cg.master.tau);
    Ok(FluidOptimum {
        time_s: lower * model_bits / res.scale_bps,
        gap: if lower > 0.0 {
            (cg.master.tau / lower - 1.0).max(0.0)
        } else {
            0.0
        },
        shares,
    })
}

/// [`fluid_optimum`], computed once per distinct network and model size in this process.
pub fn fluid_optimum_cached(
    net: &NetworkModel,
    model_bits: f64,
) -> Result<FluidOptimum, BoundError> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static CACHE: OnceLock<Mutex<HashMap<Vec<u64>, FluidOptimum>>> = OnceLock::new();
    let key = crate::round_bound::network_key(net, model_bits);
    let cache = CACHE.get_or_init(Default::default);
    if let Some(v) = cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
        return Ok(v);
    }
    let v = fluid_optimum(net, model_bits)?;
    if let Ok(mut c) = cache.lock() {
        c.insert(key, v.clone());
    }
    Ok(v)
}

/// A tree of the column-generation master: root, direction, parent map.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct RootedTree {
    pub root: usize,
    /// Out-tree (broadcast, edges `parent[v] → v`) or in-tree (reduce, `v → parent[v]`).
    pub out: bool,
    pub parent: Vec<Option<usize>>,
}

/// Result of [`column_generation`]: the trees, the final master and the certified lower
/// bound (normalized like [`MasterSolution::tau`]).
#[derive(Debug, Clone)]
pub(crate) struct ColumnGeneration {
    pub trees: Vec<RootedTree>,
    pub master: MasterSolution,
    pub lower: f64,
    pub rounds: usize,
}

/// Solves the arborescence form of the fluid LP exactly (to [`FLUID_RELATIVE_GAP`]) by
/// column generation, starting from `initial` trees plus every root's cheapest trees
/// under `1 / capacity`.
pub(crate) fn column_generation(
    res: &Resources,
    initial: Vec<RootedTree>,
) -> Result<ColumnGeneration, BoundError> {
    let n = res.n;
    let mut cols: Vec<Column> = Vec::new();
    let mut trees: Vec<RootedTree> = Vec::new();
    let mut seen: HashSet<RootedTree> = HashSet::new();
    let mut add_tree =
        |cols: &mut Vec<Column>, trees: &mut Vec<RootedTree>, t: RootedTree| -> bool {
            if seen.contains(&t) {
                return false;
            }
            let usage = res.tree_usage(&t.parent, t.out);
            let kind = if t.out {
                ColumnKind::Out
            } else {
                ColumnKind::In
            };
            cols.push(Column {
                root: t.root,
                kind,
                usage,
            });
            seen.insert(t.clone());
            trees.push(t);
            true
        };
    let no_tree = || BoundError::Solver("no spanning arborescence".into());
    let inverse: Vec<f64> = res.cap.iter().map(|c| 1.0 / c).collect();
    let cost = res.edge_cost_matrix(&inverse);
    for root in 0..n {
        for out in [true, false] {
            let parent = min_tree(n, root, &cost, out).ok_or_else(no_tree)?;
            add_tree(&mut cols, &mut trees, RootedTree { root, out, parent });
        }
    }
    for t in initial {
        add_tree(&mut cols, &mut trees, t);
    }
    let mut lower: f64 = 0.0;
    let mut master = solve_master(res, &cols, EXACT_TOLERANCE, 0.0)?;
    let mut rounds = 0;
    while rounds < MAX_COLUMN_GENERATION_ROUNDS {
        rounds += 1;
        let denom: f64 = master.prices.iter().zip(&res.cap).map(|(p, c)| p * c).sum();
        let cost = res.edge_cost_matrix(&master.prices);
        let mut lowest = f64::INFINITY;
        let mut added = 0;
        for root in 0..n {
            let t_out = min_tree(n, root, &cost, true).ok_or_else(no_tree)?;
            let t_in = min_tree(n, root, &cost, false).ok_or_else(no_tree)?;
            lowest =
                lowest.min(tree_cost(&t_out, &cost, n, true) + tree_cost(&t_in, &cost, n, false));
            added += usize::from(add_tree(
                &mut cols,
                &mut trees,
                RootedTree {
                    root,
                    out: true,
                    parent: t_out,
                },
            ));
            added += usize::from(add_tree(
                &mut cols,
                &mut trees,
                RootedTree {
                    root,
                    out: false,
                    parent: t_in,
                },
            ));
        }
        if denom > 0.0 {
            lower = lower.max(lowest / denom);
        }
        tracing::debug!(
            rounds,
            upper = master.tau,
            lower,
            columns = cols.len(),
            "fluid optimum"
        );
        if master.tau <= lower * (1.0 + FLUID_RELATIVE_GAP) || added == 0 {
            break;
        }
        master = solve_master(res, &cols, EXACT_TOLERANCE, 0.0)?;
    }
    let gap = master.tau / lower - 1.0;
    if gap.is_nan() || gap > FLUID_RELATIVE_GAP {
        tracing::warn!(
            upper = master.tau,
            lower,
            "fluid optimum: column generation stopped with a gap"
        );
        if lower.is_nan() || lower <= 0.0 {
            return Err(BoundError::Solver(format!(
                "column generation did not converge (upper bound {}, no lower bound)",
                master.tau
            )));
        }
    }
    trees.truncate(master.weights.len()); // columns priced after the last solve
    Ok(ColumnGeneration {
        trees,
        master,
        lower,
        rounds,
    })
}

fn tree_cost(parent: &[Option<usize>], cost: &[f64], n: usize, out: bool) -> f64 {
    parent
        .iter()
        .enumerate()
        .filter_map(|(v, p)| {
            p.map(|p| {
                if out {
                    cost[p * n + v]
                } else {
                    cost[v * n + p]
                }
            })
        })
        .sum()
}

fn normalize(shares: &mut [f64]) {
    let sum: f64 = shares.iter().sum();
    if sum > 0.0 {
        for s in shares.iter_mut() {
            *s /= sum;
        }
    }
}

/// The fluid optimum by the literal flow LP of the module documentation: per root `r`,
/// capacity allocations `x_r(e)` (broadcast) and `y_r(e)` (reduce), and for every other
/// node `v` a flow of value `s_r` from `r` to `v` within `x_r` and one from `v` to `r`
/// within `y_r`. `O(n²·m)` variables — use it to cross-check [`fluid_optimum`] on small
/// networks (it takes seconds at 11 fully meshed nodes and grows as `n⁴`).
pub fn fluid_optimum_flow_lp(
    net: &NetworkModel,
    model_bits: f64,
) -> Result<FluidOptimum, BoundError> {
    let res = match prepare(net, model_bits)? {
        Ok(res) => res,
        Err(trivial) => return Ok(trivial),
    };
    let n = res.n;
    let edges: Vec<(usize, usize, usize)> = (0..n)
        .flat_map(|u| (0..n).map(move |v| (u, v)))
        .filter_map(|(u, v)| res.link(u, v).map(|k| (u, v, k)))
        .collect();
    let mut vars = ProblemVariables::new();
    let tau = vars.add(variable().min(0.0));
    let s: Vec<Variable> = (0..n).map(|_| vars.add(variable().min(0.0))).collect();
    // alloc[dir][r][edge]
    let alloc: Vec<Vec<Vec<Variable>>> = (0..2)
        .map(|_| {
            (0..n)
                .map(|_| {
                    edges
                        .iter()
                        .map(|_| vars.add(variable().min(0.0)))
                        .collect()
                })
                .collect()
        })
        .collect();
    // One flow per (direction, root, other node); edges into the source and out of the
    // sink are useless and left out.
    struct Flow {
        dir: usize,
        root: usize,
        source: usize,
        sink: usize,
        vars: Vec<(usize, Variable)>, // (edge index, flow variable)
    }
    let mut flows = Vec::new();
    for dir in 0..2 {
        for r in 0..n {
            for v in (0..n).filter(|&v| v != r) {
                let (source, sink) = if dir == 0 { (r, v) } else { (v, r) };
                let fv = edges
                    .iter()
                    .enumerate()
                    .filter(|(_, &(a, b, _))| b != source && a != sink)
                    .map(|(i, _)| (i, vars.add(variable().min(0.0))))
                    .collect();
                flows.push(Flow {
                    dir,
                    root: r,
                    source,
                    sink,
                    vars: fv,
                });
            }
        }
    }
    let mut model = vars.minimise(tau).using(clarabel);
    model
        .settings()
        .verbose(false)
        .tol_gap_abs(1e-10)
        .tol_gap_rel(1e-10)
        .tol_feas(1e-10)
        .max_iter(400);
    let mut total = Expression::default();
    for &sv in &s {
        total.add_mul(1.0, sv);
    }
    model.add_constraint(total.eq(1.0));
    let mut load: Vec<Expression> = vec![Expression::default(); res.count()];
    for (i, &(u, v, _)) in edges.iter().enumerate() {
        for dir_alloc in &alloc {
            for root_alloc in dir_alloc {
                for k in res.edge_resources(u, v) {
                    load[k].add_mul(1.0, root_alloc[i]);
                }
            }
        }
    }
    for (k, mut l) in load.into_iter().enumerate() {
        l.add_mul(-res.cap[k], tau);
        model.add_constraint(l.leq(0.0));
    }
    for f in &flows {
        let mut balance: Vec<Expression> = vec![Expression::default(); n];
        for &(i, fv) in &f.vars {
            let (a, b, _) = edges[i];
            balance[b].add_mul(1.0, fv);
            balance[a].add_mul(-1.0, fv);
            model.add_constraint((Expression::from(fv) - alloc[f.dir][f.root][i]).leq(0.0));
        }
        for (u, mut b) in balance.into_iter().enumerate() {
            if u == f.source {
                continue;
            }
            if u == f.sink {
                b.add_mul(-1.0, s[f.root]);
            }
            model.add_constraint(b.eq(0.0));
        }
    }
    let sol = model.solve()?;
    let mut shares: Vec<f64> = s.iter().map(|&v| sol.value(v).max(0.0)).collect();
    normalize(&mut shares);
    Ok(FluidOptimum {
        time_s: sol.value(tau).max(0.0) * model_bits / res.scale_bps,
        gap: 0.0,
        shares,
    })
}

/// Largest, over ordered node pairs, lowest-latency path (Dijkstra on link latency over
/// links of positive capacity), seconds. `f64::INFINITY` if some node cannot reach another;
/// 0 for fewer than two nodes.
pub fn latency_bound_s(net: &NetworkModel) -> f64 {
    let n = net.node_count();
    let mut adj: Vec<Vec<(usize, f64)>> = vec![Vec::new(); n];
    for l in &net.topology.links {
        let (u, v) = (l.from as usize, l.to as usize);
        if u < n && v < n && u != v && l.rate_bps > 0.0 {
            adj[u].push((v, l.latency_ns as f64 * 1e-9));
        }
    }
    let mut worst: f64 = 0.0;
    for src in 0..n {
        let dist = dijkstra(&adj, src);
        for d in dist {
            worst = worst.max(d);
        }
    }
    worst
}

/// Shortest distances from `src` (dense O(n²) Dijkstra; `n` is small).
fn dijkstra(adj: &[Vec<(usize, f64)>], src: usize) -> Vec<f64> {
    let n = adj.len();
    let mut dist = vec![f64::INFINITY; n];
    let mut done = vec![false; n];
    dist[src] = 0.0;
    for _ in 0..n {
        let Some(u) = (0..n)
            .filter(|&v| !done[v] && dist[v].is_finite())
            .min_by(|&a, &b| dist[a].total_cmp(&dist[b]))
        else {
            break;
        };
        done[u] = true;
        for &(v, w) in &adj[u] {
            if dist[u] + w < dist[v] {
                dist[v] = dist[u] + w;
            }
        }
    }
    dist
}
