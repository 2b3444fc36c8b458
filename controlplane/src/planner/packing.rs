//! `packing`: our planner — multiplicative-weights arborescence packing, a sparse tree
//! selection, and an exact re-optimization of the shares (DESIGN §5).
//!
//! The target is [`Plan::modeled_time`]: the most loaded resource (directed link or node
//! cap) plus the latency of the deepest reduce + broadcast path. The bandwidth part is a
//! fractional packing of in-trees and out-trees, balanced per root, whose optimum is
//! [`crate::bounds::fluid_optimum`]. We approximate it in four steps:
//!
//! 1. **Garg–Könemann packing** (as in Blink and ForestColl). Every resource has a length,
//!    initially `1 / capacity`. Repeatedly, over all roots, take the pair of a minimum-cost
//!    in-arborescence and out-arborescence of the same root under the current lengths
//!    (Chu–Liu/Edmonds, [`crate::arborescence`]) plus a latency penalty weighted by
//!    [`PackingPlanner::latency_weight`]; route the pair's bottleneck amount on it and
//!    multiply the length of every resource it uses by `1 + ε · use / capacity`. Lengths
//!    only grow, so a root's last cost is a lower bound of its current one and only the
//!    cheapest-looking root is re-priced (Fleischer's lazy variant): about one pair of
//!    arborescences per routing instead of one per root.
//! 2. **Prune**: per root keep the [`PackingPlanner::max_trees_per_root`] in-trees and
//!    out-trees that carried the most flow.
//! 3. **Re-optimize and refine.** A small LP (good_lp + Clarabel) gives the kept trees the
//!    shares that minimize `max load / capacity`. Its capacity duals price a new in-tree
//!    and out-tree per root (minimum arborescences again, as in the column generation of
//!    [`crate::bounds`]; only trees with a negative reduced cost are added); the LP is
//!    re-solved with them and every root is pruned back to its `k` heaviest trees. The
//!    LPs carry a tiny, distinct cost per tree (1e-5 relative) so that the interior-point
//!    solution is (close to) a vertex — few trees with weight — instead of the analytic
//!    center of the optimal face, which spreads weight over every equivalent tree and
//!    makes "keep the heaviest" arbitrary. Rounds stop when the bandwidth term gains less
//!    than 0.1% twice in a row, or after [`PackingPlanner::MAX_REFINE_ROUNDS`] (fewer on
//!    large networks). Pruning the packing's heaviest trees alone leaves 20–50% on a
//!    heterogeneous full mesh; refinement brings it to a few percent.
//! 4. **Latency.** Latency is a max over the trees used, so when links have latency the
//!    refinement is re-run under two families of limits: one depth cap for every tree
//!    (the sweep this planner always had), and budgets `λ` on a tree's reduce + broadcast
//!    depth, where only roots with `ecc_in(r) + ecc_out(r) ≤ λ` take part, each splitting
//!    its slack evenly between in-tree and out-tree depth caps. Pricing then builds
//!    depth-bounded Prim–Dijkstra trees, seeded with the packed and the shortest-path
//!    trees that fit. An optional [`PackingPlanner::latency_budget_s`] keeps only plans
//!    within it (falling back, with a warning, when none is).
//! 5. **Few trees.** The chosen plan is pruned to [`PackingPlanner::max_trees`] by
//!    marginal modeled gain, its shares re-solved ([`super::prune`]), within
//!    [`PackingPlanner::PRUNE_TOLERANCE`] of its cost.
//!
//! **Choosing a plan.** Candidates are compared (and pruned) by
//! `w × bandwidth + latency` with `w =` [`PackingPlanner::EMULATED_BANDWIDTH_WEIGHT`],
//! not by [`Plan::modeled_time`] (`w = 1`). In the emulator, with rounds back to back,
//! a plan's bandwidth term costs about twice what the fluid model says, its latency
//! term about what it says: a single round matches the model within a few percent, but
//! the second round starts while the slowest nodes still finish the first, their early
//! packets beyond the engine's hold buffer are dropped and the senders' pacing falls, and
//! paths whose round trip exceeds the initial retransmission timeout (200 ms) fire it
//! once and pace at 70 % for the rest of the run. Plans that load links more suffer more.
//! Fitted on the aws10-latency and azure14-latency candidate plans (emulated mean of two
//! rounds): `w = 1` picks deep-budget plans that model 10 % faster and run 15–30 %
//! slower; `w = 2.5` ranks the candidates as the emulator does. Without latency every
//! `w` ranks plans alike.
//!
//! The share LP also runs on every root's latency-shortest-path trees (on a full mesh
//! without latency these are the direct stars: a bandwidth-proportional mesh), and the
//! single best root's shortest-path trees are tried alone; the plan with the lowest
//! modeled total wins. Trees use direct links only — a tree edge over a link already
//! relays with aggregation. Per root, the in-tree and out-tree weights are coupled into
//! at most `2k - 1` plan trees. The planner is deterministic: fixed iteration order, ties
//! to the lowest index, no clock, no randomness.
//!
//! **Why three trees per root by default.** A plan with `k` in-trees and `k` out-trees
//! per root has about `2kn` weights, but on a full mesh the fluid optimum loads
//! essentially all `n(n-1)` links to capacity; with `k = 2` there are too few degrees of
//! freedom to do so. On the 11-region AWS matrix the best `k = 2` plan we find is 6%
//! above the optimum, at `k = 3` 1%; on random 16-node full meshes with 20–155 Mbit/s
//! links, 10–12% against 2–3%.

use super::{check_network, Plan, PlanError, PlannedTree, Planner};
use crate::arborescence::min_arborescence_matrix;
use crate::bounds::{
    merge_usage, solve_master, BoundError, Column, ColumnKind, MasterSolution, Resources,
};
use crate::network::NetworkModel;
use netstorm_dataplane::policy::MAX_CHILDREN;
use netstorm_dataplane::NodeId;

/// Latency caps tried by the share LP when trees differ in latency.
const LATENCY_SWEEP_STEPS: usize = 8;

/// Shares below this fraction of the model are dropped from a plan.
const MIN_SHARE: f64 = 1e-6;

/// Interior-point tolerance of the share LPs (a plan needs far less than a bound).
const LP_TOLERANCE: f64 = 1e-7;

/// Relative throughput the share LPs give up for sparse solutions (so pruning to the
/// heaviest trees keeps what the LP actually uses).
const SPARSITY_PENALTY: f64 = 1e-5;

/// Refinement rounds per latency cap.
const LATENCY_REFINE_ROUNDS: usize = 4;

/// Refinement rounds stop after this many rounds without a 0.1% improvement.
const REFINE_PATIENCE: usize = 2;

/// The `packing` planner. See the module documentation.
#[derive(Debug, Clone, PartialEq)]
pub struct PackingPlanner {
    /// In-trees and out-trees kept per root (default 3; see the module documentation).
    /// A root's shard is split into at most `2k - 1` trees of the plan.
    pub max_trees_per_root: usize,
    /// Multiplicative-weights step `ε` (default 0.1): smaller packs more finely but needs
    /// more iterations.
    pub epsilon: f64,
    /// Weight of the latency penalty in the tree costs, relative to bandwidth time
    /// (default 1.0; 0 ignores latency while packing — the share LP still accounts for it).
    pub latency_weight: f64,
    /// Upper bound on packing iterations (one routed tree pair each); the planner runs
    /// [`PackingPlanner::ITERATIONS_PER_NODE`] × nodes when that is fewer (default 4096).
    pub max_iterations: usize,
    /// Trees a plan keeps (default 8): every candidate plan is pruned to at most this many
    /// by marginal modeled gain, its shares re-solved ([`super::prune`]), unless that
    /// would raise its modeled time by more than [`PackingPlanner::PRUNE_TOLERANCE`].
    pub max_trees: usize,
    /// Most latency (reduce + broadcast depth, seconds) a plan may have (default none).
    /// If no plan found meets it — it is below the shallowest root's `ecc_in + ecc_out`,
    /// say — the planner says so in a warning and plans without it: never an empty plan.
    pub latency_budget_s: Option<f64>,
    /// Weight of the bandwidth term when candidate plans are compared and pruned
    /// (`weight × bandwidth + latency`; default [`PackingPlanner::EMULATED_BANDWIDTH_WEIGHT`]).
    /// 1 compares by [`Plan::modeled_time`] itself.
    pub bandwidth_weight: f64,
}

impl Default for PackingPlanner {
    fn default() -> Self {
        Self {
            max_trees_per_root: 3,
            epsilon: 0.1,
            latency_weight: 1.0,
            max_iterations: 4096,
            max_trees: 8,
            latency_budget_s: None,
            bandwidth_weight: Self::EMULATED_BANDWIDTH_WEIGHT,
        }
    }
}

impl PackingPlanner {
    /// Packing iterations per node the planner runs (at most `max_iterations`).
    pub const ITERATIONS_PER_NODE: usize = 12;

    /// Most refinement rounds (one share LP each); they also stop after two rounds
    /// without a 0.1% gain. Fewer run on large networks, where one LP costs more:
    /// `⌈MAX_REFINE_ROUNDS × (24 / n)²⌉`, at least 2 (5 at 64 nodes).
    pub const MAX_REFINE_ROUNDS: usize = 30;

    /// How much more a plan's bandwidth term costs than its latency term in the emulator,
    /// where rounds run back to back (see the module documentation, "Choosing a plan").
    pub const EMULATED_BANDWIDTH_WEIGHT: f64 = 2.5;

    /// Most a plan's modeled time may grow by pruning it to [`PackingPlanner::max_trees`].
    pub const PRUNE_TOLERANCE: f64 = 0.01;

    pub fn new() -> Self {
        Self::default()
    }
}

/// A spanning tree as a parent map, `None` at the root. Out-trees carry data
/// `parent[v] → v`, in-trees `v → parent[v]`.
type Parents = Vec<Option<usize>>;

/// A tree found by the packing, with the flow it carried.
#[derive(Debug, Clone)]
struct WeightedTree {
    parent: Parents,
    weight: f64,
}

/// The trees of one root.
#[derive(Debug, Clone, Default, PartialEq)]
struct RootTrees {
    in_trees: Vec<Parents>,
    out_trees: Vec<Parents>,
}

/// One column of a balanced share LP: tree `index` of `root`, in or out.
#[derive(Debug, Clone, Copy)]
struct TreeRef {
    root: usize,
    out: bool,
    index: usize,
}

/// The shares of a tree set: the LP solution and which tree every column is.
#[derive(Debug, Clone)]
struct Shares {
    refs: Vec<TreeRef>,
    sol: MasterSolution,
}

/// Per root, the deepest in-tree and out-tree (seconds of latency) a share LP may use;
/// negative: the root takes no share.
#[derive(Debug, Clone, PartialEq)]
struct DepthCaps(Vec<(f64, f64)>);

impl DepthCaps {
    fn unlimited(n: usize) -> Self {
        Self(vec![(f64::INFINITY, f64::INFINITY); n])
    }

    fn cap(&self, root: usize, out: bool) -> f64 {
        let (i, o) = self.0[root];
        if out {
            o
        } else {
            i
        }
    }
}

/// Everything the planner precomputes about the network.
struct Context<'a> {
    net: &'a NetworkModel,
    res: Resources,
    n: usize,
    /// `n × n` link latency in seconds (infinite where there is no link).
    latency_s: Vec<f64>,
    has_latency: bool,
}

impl Context<'_> {
    /// Deepest latency from any node to the root along an in-tree, or from the root to any
    /// node along an out-tree.
    fn depth_s(&self, parent: &Parents, out: bool) -> f64 {
        if !self.has_latency {
            return 0.0;
        }
        let n = self.n;
        let mut depth = vec![f64::NAN; n];
        let mut worst: f64 = 0.0;
        for start in 0..n {
            // Walk up to a node of known depth, then unwind.
            let mut path = Vec::new();
            let mut v = start;
            while depth[v].is_nan() {
                match parent[v] {
                    None => depth[v] = 0.0,
                    Some(p) => {
                        path.push(v);
                        v = p;
                        if path.len() > n {
                            return f64::INFINITY; // not a tree
                        }
                    }
                }
            }
            while let Some(u) = path.pop() {
                let p = parent[u].unwrap_or(u);
                let edge = if out {
                    self.latency_s[p * n + u]
                } else {
                    self.latency_s[u * n + p]
                };
                depth[u] = depth[p] + edge;
            }
            worst = worst.max(depth[start]);
        }
        worst
    }
}

impl Planner for PackingPlanner {
    fn name(&self) -> &str {
        "packing"
    }

    fn plan(&self, net: &NetworkModel, model_bits: f64) -> Result<Plan, PlanError> {
        let candidates = self.candidates(net, model_bits)?;
        let mut best: Option<(f64, Plan)> = None;
        for (label, plan) in candidates {
            let m = plan.modeled_time(net, model_bits);
            let t = m.weighted_s(self.bandwidth_weight);
            tracing::debug!(
                label,
                total_s = m.total_s,
                weighted_s = t,
                trees = plan.trees.len(),
                "packing candidate"
            );
            if best.as_ref().is_none_or(|(b, _)| t < *b) {
                best = Some((t, plan));
            }
        }
        let (_, plan) = best.ok_or_else(|| PlanError::Other("packing produced no plan".into()))?;
        // Step 5: few trees.
        Ok(if plan.trees.len() > self.max_trees {
            super::prune::prune(
                &plan,
                net,
                model_bits,
                self.max_trees,
                Self::PRUNE_TOLERANCE,
                self.bandwidth_weight,
            )
        } else {
            plan
        })
    }
}

impl PackingPlanner {
    /// Every candidate plan the planner weighs, labelled by how it was made.
    #[doc(hidden)]
    pub fn candidates(
        &self,
        net: &NetworkModel,
        model_bits: f64,
    ) -> Result<Vec<(String, Plan)>, PlanError> {
        check_network(net)?;
        let n = net.node_count();
        if n == 1 {
            return Ok(vec![(
                "single".into(),
                Plan {
                    planner: self.name().to_string(),
                    trees: vec![PlannedTree::from_parents(0, 1.0, &[None], &[None])],
                },
            )]);
        }
        if n > MAX_CHILDREN + 1 {
            return Err(PlanError::Other(format!(
                "packing supports at most {} nodes (a tree node may have at most {MAX_CHILDREN} children)",
                MAX_CHILDREN + 1
            )));
        }
        if !(model_bits.is_finite() && model_bits > 0.0) {
            return Err(PlanError::Other(format!(
                "model size {model_bits} bits is not a positive number"
            )));
        }
        let epsilon_ok = self.epsilon.is_finite() && self.epsilon > 0.0;
        let latency_weight_ok = self.latency_weight.is_finite() && self.latency_weight >= 0.0;
        if !epsilon_ok || !latency_weight_ok {
            return Err(PlanError::Other(format!(
                "packing: epsilon must be positive and latency_weight non-negative (got {}, {})",
                self.epsilon, self.latency_weight
            )));
        }
        let res = Resources::new(net).map_err(bound_error)?;
        let mut latency_s = vec![f64::INFINITY; n * n];
        let mut has_latency = false;
        for u in 0..n {
            for v in 0..n {
                if res.has_edge(u, v) {
                    let l = net.latency_ns(u as NodeId, v as NodeId).unwrap_or(0) as f64 * 1e-9;
                    has_latency |= l > 0.0;
                    latency_s[u * n + v] = l;
                }
            }
        }
        let ctx = Context {
            net,
            res,
            n,
            latency_s,
            has_latency,
        };

        let mut candidates: Vec<(String, Plan)> = Vec::new();
        // Steps 1–3: packed, pruned, refined trees.
        let found = self.garg_konemann(&ctx, model_bits);
        let k = self.max_trees_per_root.max(1);
        let kept: Vec<RootTrees> = found
            .into_iter()
            .map(|(ins, outs)| RootTrees {
                in_trees: heaviest(ins, k),
                out_trees: heaviest(outs, k),
            })
            .collect();
        let rounds = {
            let scaled = (Self::MAX_REFINE_ROUNDS * 24 * 24).div_ceil(n * n);
            scaled.clamp(2, Self::MAX_REFINE_ROUNDS)
        };
        let (kept, shares) = self
            .refine(&ctx, kept, k, &DepthCaps::unlimited(n), rounds)?
            .ok_or_else(|| PlanError::Other("packing found no tree pair".into()))?;
        candidates.push(("refined".into(), self.build_plan(&ctx, &kept, &shares)));
        // Every root's shortest-path trees: the low-latency end.
        let spt: Vec<RootTrees> = (0..n)
            .map(|r| RootTrees {
                in_trees: vec![shortest_path_tree(&ctx, r, false)],
                out_trees: vec![shortest_path_tree(&ctx, r, true)],
            })
            .collect();
        if let Some(shares) = solve_shares(&ctx, &spt, &DepthCaps::unlimited(n))? {
            candidates.push(("spt-shares".into(), self.build_plan(&ctx, &spt, &shares)));
        }
        candidates.push((
            "single-root".into(),
            self.best_single_root(&ctx, &spt, model_bits),
        ));
        // Step 4: the trade-off in between.
        if ctx.has_latency {
            let w = self.bandwidth_weight;
            let best_so_far = candidates
                .iter()
                .map(|p| p.1.modeled_time(net, model_bits))
                .min_by(|a, b| a.weighted_s(w).total_cmp(&b.weighted_s(w)))
                .map_or((f64::INFINITY, f64::INFINITY), |m| {
                    (m.weighted_s(w), m.latency_s)
                });
            let caps = self.depth_cap_sweep(&ctx, &kept, &spt, k, model_bits, best_so_far.0)?;
            let best_so_far = caps
                .iter()
                .map(|p| p.1.modeled_time(net, model_bits).weighted_s(w))
                .fold(best_so_far.0, f64::min);
            candidates.extend(caps);
            candidates.extend(self.latency_sweep(
                &ctx,
                &kept,
                &spt,
                k,
                model_bits,
                (best_so_far, best_latency(&candidates, net, model_bits, w)),
            )?);
        }

        if let Some(budget) = self.latency_budget_s {
            let within: Vec<(String, Plan)> = candidates
                .iter()
                .filter(|p| p.1.modeled_time(net, model_bits).latency_s <= budget)
                .cloned()
                .collect();
            if within.is_empty() {
                tracing::warn!(
                    budget_s = budget,
                    "packing: no plan meets the latency budget; planning without it"
                );
            } else {
                candidates = within;
            }
        }
        Ok(candidates)
    }
}

/// The latency term of the candidate with the lowest weighted modeled time.
fn best_latency(candidates: &[(String, Plan)], net: &NetworkModel, model_bits: f64, w: f64) -> f64 {
    candidates
        .iter()
        .map(|p| p.1.modeled_time(net, model_bits))
        .min_by(|a, b| a.weighted_s(w).total_cmp(&b.weighted_s(w)))
        .map_or(f64::INFINITY, |m| m.latency_s)
}

fn bound_error(e: BoundError) -> PlanError {
    match e {
        BoundError::Empty => PlanError::Empty,
        BoundError::Disconnected { from, to } => PlanError::Disconnected { from, to },
        BoundError::ZeroCapacity(_) => PlanError::ZeroCapacity,
        other => PlanError::Other(other.to_string()),
    }
}

impl PackingPlanner {
    /// Step 1: Garg–Könemann packing of (in-tree, out-tree) pairs. Returns, per root, every
    /// in-tree and out-tree found with the flow it carried.
    #[allow(clippy::type_complexity)]
    fn garg_konemann(
        &self,
        ctx: &Context<'_>,
        model_bits: f64,
    ) -> Vec<(Vec<WeightedTree>, Vec<WeightedTree>)> {
        let n = ctx.n;
        let res = &ctx.res;
        let eps = self.epsilon;
        let iterations = self
            .max_iterations
            .min(Self::ITERATIONS_PER_NODE * n)
            .max(1);
        let mut length: Vec<f64> = res.cap.iter().map(|c| 1.0 / c).collect();
        // Latency penalty. With D = Σ length × capacity, a tree pair's bandwidth price in
        // seconds is about (its length / D) × model_bits / scale; a tree's latency is
        // estimated by its mean edge latency. Both are put on the length scale.
        let penalty_per_s = if ctx.has_latency {
            self.latency_weight * res.scale_bps / model_bits / (n - 1) as f64
        } else {
            0.0
        };
        let mut found: Vec<(Vec<WeightedTree>, Vec<WeightedTree>)> =
            vec![(Vec::new(), Vec::new()); n];
        let mut cost = vec![0.0; n * n];
        let mut cost_rev = vec![0.0; n * n];
        let mut key = vec![f64::NEG_INFINITY; n]; // lower bounds of every root's pair cost
        for _ in 0..iterations {
            let d: f64 = length.iter().zip(&res.cap).map(|(l, c)| l * c).sum();
            let pen = penalty_per_s * d;
            for u in 0..n {
                for v in 0..n {
                    let c = if res.has_edge(u, v) {
                        res.edge_resources(u, v).map(|k| length[k]).sum::<f64>()
                            + pen * ctx.latency_s[u * n + v]
                    } else {
                        f64::INFINITY
                    };
                    cost[u * n + v] = c;
                    cost_rev[v * n + u] = c;
                }
            }
            // Lazy selection: re-price the root with the lowest bound until it stays
            // within (1 + ε/2) of every other root's bound.
            let (root, t_in, t_out) = loop {
                let r = argmin(&key);
                let (Some(t_out), Some(t_in)) = (
                    min_arborescence_matrix(n, r, &cost),
                    min_arborescence_matrix(n, r, &cost_rev),
                ) else {
                    return found; // cannot happen on a strongly connected network
                };
                let c = tree_cost(&t_out, &cost, n) + tree_cost(&t_in, &cost_rev, n);
                key[r] = c;
                let second = key
                    .iter()
                    .enumerate()
                    .filter(|&(i, _)| i != r)
                    .map(|(_, &k)| k)
                    .fold(f64::INFINITY, f64::min);
                if c <= second * (1.0 + eps / 2.0) {
                    break (r, t_in, t_out);
                }
            };
            let mut usage = res.tree_usage(&t_out, true);
            usage.extend(res.tree_usage(&t_in, false));
            let usage = merge_usage(usage);
            let amount = usage
                .iter()
                .map(|&(k, c)| res.cap[k] / c)
                .fold(f64::INFINITY, f64::min);
            for &(k, c) in &usage {
                length[k] *= 1.0 + eps * c * amount / res.cap[k];
            }
            add_weight(&mut found[root].0, t_in, amount);
            add_weight(&mut found[root].1, t_out, amount);
        }
        found
    }

    /// Steps 2–3: share LP on the kept trees, then up to `rounds` rounds of pricing new
    /// in-trees and out-trees per root from the LP's capacity duals, re-solving, and
    /// pruning every root back to its `k` heaviest trees. Only trees at most
    /// `max_depth_s` deep are used (pricing then also builds depth-bounded trees).
    /// Returns the best tree set seen and its shares, `None` if no root has trees.
    fn refine(
        &self,
        ctx: &Context<'_>,
        mut kept: Vec<RootTrees>,
        k: usize,
        caps: &DepthCaps,
        rounds: usize,
    ) -> Result<Option<(Vec<RootTrees>, Shares)>, PlanError> {
        // One LP per round: the enlarged set's LP prices the next trees and, restricted
        // to the trees kept, is a feasible solution for them (an upper bound on their
        // optimum), which is what the rounds compare. The best set is solved exactly once
        // at the end.
        let Some(shares) = solve_shares(ctx, &kept, caps)? else {
            return Ok(None);
        };
        let (pruned, mut tau) = prune_by_weight(&kept, &shares, k);
        kept = pruned;
        let mut prices = shares.sol.prices;
        let mut best = (kept.clone(), tau);
        let mut stall = 0;
        for _ in 0..rounds {
            let mut grown = kept.clone();
            if !add_improving_trees(ctx, &mut grown, &prices, caps) {
                break;
            }
            let Some(grown_shares) = solve_shares(ctx, &grown, caps)? else {
                break;
            };
            (kept, tau) = prune_by_weight(&grown, &grown_shares, k);
            prices = grown_shares.sol.prices;
            if tau < best.1 * (1.0 - 1e-3) {
                stall = 0;
            } else {
                stall += 1;
            }
            if tau < best.1 {
                best = (kept.clone(), tau);
            }
            if stall >= REFINE_PATIENCE {
                break;
            }
        }
        let Some(shares) = solve_shares(ctx, &best.0, caps)? else {
            return Ok(None);
        };
        Ok(Some((best.0, shares)))
    }

    /// Step 4: the packing re-run under a few budgets `λ` on the plan's latency (the
    /// reduce plus broadcast depth of every tree). Only roots with `e(r) = ecc_in(r) +
    /// ecc_out(r) ≤ λ` take part, and each splits its slack evenly: in-trees at most
    /// `ecc_in(r) + (λ − e(r))/2` deep, out-trees at most `ecc_out(r) + (λ − e(r))/2`
    /// (pricing then builds depth-bounded trees), seeded with the packed and the
    /// shortest-path trees that fit. Budgets run from the best plan's latency down to the
    /// shallowest root's `e(r)`. Returns one plan per budget tried.
    fn latency_sweep(
        &self,
        ctx: &Context<'_>,
        kept: &[RootTrees],
        spt: &[RootTrees],
        k: usize,
        model_bits: f64,
        best: (f64, f64),
    ) -> Result<Vec<(String, Plan)>, PlanError> {
        let (mut best_total, best_latency) = best;
        let n = ctx.n;
        let ecc: Vec<(f64, f64)> = spt
            .iter()
            .map(|rt| {
                (
                    ctx.depth_s(&rt.in_trees[0], false),
                    ctx.depth_s(&rt.out_trees[0], true),
                )
            })
            .collect();
        let lowest = ecc.iter().map(|e| e.0 + e.1).fold(f64::INFINITY, f64::min);
        let highest = best_latency;
        if highest.is_nan() || highest <= lowest {
            return Ok(Vec::new());
        }
        let mut plans = Vec::new();
        // From the loosest budget down: the bandwidth term only grows as it tightens, so
        // stop once the bandwidth alone exceeds the best total found.
        for step in (0..LATENCY_SWEEP_STEPS).rev() {
            let budget = lowest + (highest - lowest) * step as f64 / LATENCY_SWEEP_STEPS as f64;
            let caps = DepthCaps(
                (0..n)
                    .map(|r| {
                        let slack = budget - ecc[r].0 - ecc[r].1;
                        if slack < -1e-12 {
                            (-1.0, -1.0)
                        } else {
                            let half = slack.max(0.0) / 2.0;
                            (ecc[r].0 + half + 1e-12, ecc[r].1 + half + 1e-12)
                        }
                    })
                    .collect(),
            );
            let seed = seeds_within(ctx, kept, spt, &caps);
            match self.candidate(ctx, seed, k, &caps, model_bits, &mut best_total)? {
                Candidate::Plan(plan) => plans.push((format!("budget{step}"), plan)),
                Candidate::Infeasible => continue,
                Candidate::Hopeless => break,
            }
        }
        Ok(plans)
    }

    /// Refines `seed` under `caps` into one candidate plan. A sweep tightens its caps step
    /// by step, so the bandwidth term only grows: once it alone reaches `best_total` the
    /// sweep can stop (`Hopeless`). `best_total` takes the new plan's weighted time.
    fn candidate(
        &self,
        ctx: &Context<'_>,
        seed: Vec<RootTrees>,
        k: usize,
        caps: &DepthCaps,
        model_bits: f64,
        best_total: &mut f64,
    ) -> Result<Candidate, PlanError> {
        let Some((trees, shares)) = self.refine(ctx, seed, k, caps, LATENCY_REFINE_ROUNDS)? else {
            return Ok(Candidate::Infeasible);
        };
        let bandwidth_s = shares.sol.tau * model_bits / ctx.res.scale_bps;
        if self.bandwidth_weight * bandwidth_s >= *best_total {
            return Ok(Candidate::Hopeless);
        }
        let plan = self.build_plan(ctx, &trees, &shares);
        *best_total = best_total.min(
            plan.modeled_time(ctx.net, model_bits)
                .weighted_s(self.bandwidth_weight),
        );
        Ok(Candidate::Plan(plan))
    }

    /// The pre-budget sweep: one depth cap for every tree.
    fn depth_cap_sweep(
        &self,
        ctx: &Context<'_>,
        kept: &[RootTrees],
        spt: &[RootTrees],
        k: usize,
        model_bits: f64,
        mut best_total: f64,
    ) -> Result<Vec<(String, Plan)>, PlanError> {
        let n = ctx.n;
        let depths = |sets: &[RootTrees]| -> Vec<f64> {
            sets.iter()
                .flat_map(|rt| {
                    rt.in_trees
                        .iter()
                        .map(|t| ctx.depth_s(t, false))
                        .chain(rt.out_trees.iter().map(|t| ctx.depth_s(t, true)))
                })
                .collect()
        };
        let lowest = spt
            .iter()
            .map(|rt| {
                ctx.depth_s(&rt.in_trees[0], false)
                    .max(ctx.depth_s(&rt.out_trees[0], true))
            })
            .fold(f64::INFINITY, f64::min);
        let highest = depths(kept)
            .into_iter()
            .chain(depths(spt))
            .fold(0.0, f64::max);
        if highest.is_nan() || highest <= lowest {
            return Ok(Vec::new());
        }
        let mut plans = Vec::new();
        const STEPS: usize = 5;
        for step in (0..STEPS).rev() {
            let cap = lowest + (highest - lowest) * step as f64 / STEPS as f64;
            let caps = DepthCaps(vec![(cap, cap); n]);
            let seed = seeds_within(ctx, kept, spt, &caps);
            match self.candidate(ctx, seed, k, &caps, model_bits, &mut best_total)? {
                Candidate::Plan(plan) => plans.push((format!("cap{step}"), plan)),
                Candidate::Infeasible => continue,
                Candidate::Hopeless => break,
            }
        }
        Ok(plans)
    }

    /// A plan from balanced per-tree shares: per root, the in-tree and out-tree weights
    /// are coupled by the north-west-corner rule (which keeps every load), in-trees from
    /// the shallowest and out-trees from the deepest so deep reduce paths meet shallow
    /// broadcast ones; a root gets at most `ins + outs - 1` trees.
    fn build_plan(&self, ctx: &Context<'_>, trees: &[RootTrees], shares: &Shares) -> Plan {
        let n = ctx.n;
        let mut in_w: Vec<Vec<f64>> = trees
            .iter()
            .map(|rt| vec![0.0; rt.in_trees.len()])
            .collect();
        let mut out_w: Vec<Vec<f64>> = trees
            .iter()
            .map(|rt| vec![0.0; rt.out_trees.len()])
            .collect();
        for (r, &w) in shares.refs.iter().zip(&shares.sol.weights) {
            if w > MIN_SHARE {
                if r.out {
                    out_w[r.root][r.index] += w;
                } else {
                    in_w[r.root][r.index] += w;
                }
            }
        }
        let mut planned = Vec::new();
        for (root, rt) in trees.iter().enumerate() {
            let (si, so): (f64, f64) = (in_w[root].iter().sum(), out_w[root].iter().sum());
            if si <= 0.0 || so <= 0.0 {
                continue;
            }
            // Dropping tiny shares may unbalance a root slightly: meet in the middle.
            let mid = (si + so) / 2.0;
            let mut ins: Vec<(usize, f64)> = in_w[root]
                .iter()
                .map(|w| w * mid / si)
                .enumerate()
                .filter(|e| e.1 > 0.0)
                .collect();
            let mut outs: Vec<(usize, f64)> = out_w[root]
                .iter()
                .map(|w| w * mid / so)
                .enumerate()
                .filter(|e| e.1 > 0.0)
                .collect();
            if ctx.has_latency {
                ins.sort_by(|a, b| {
                    ctx.depth_s(&rt.in_trees[a.0], false)
                        .total_cmp(&ctx.depth_s(&rt.in_trees[b.0], false))
                });
                outs.sort_by(|a, b| {
                    ctx.depth_s(&rt.out_trees[b.0], true)
                        .total_cmp(&ctx.depth_s(&rt.out_trees[a.0], true))
                });
            }
            let a: Vec<f64> = ins.iter().map(|e| e.1).collect();
            let b: Vec<f64> = outs.iter().map(|e| e.1).collect();
            for (i, o, w) in north_west_corner(&a, &b) {
                let reduce: Vec<Option<NodeId>> = rt.in_trees[ins[i].0]
                    .iter()
                    .map(|p| p.map(|p| p as NodeId))
                    .collect();
                let bcast: Vec<Option<NodeId>> = rt.out_trees[outs[o].0]
                    .iter()
                    .map(|p| p.map(|p| p as NodeId))
                    .collect();
                debug_assert_eq!(reduce.len(), n);
                planned.push(PlannedTree::from_parents(
                    root as NodeId,
                    w,
                    &reduce,
                    &bcast,
                ));
            }
        }
        normalize_shares(&mut planned);
        Plan {
            planner: self.name().to_string(),
            trees: planned,
        }
    }

    /// The root whose shortest-path trees alone give the lowest modeled total.
    fn best_single_root(&self, ctx: &Context<'_>, spt: &[RootTrees], model_bits: f64) -> Plan {
        let mut best: Option<(f64, Plan)> = None;
        for (root, rt) in spt.iter().enumerate() {
            let reduce: Vec<Option<NodeId>> = rt.in_trees[0]
                .iter()
                .map(|p| p.map(|p| p as NodeId))
                .collect();
            let bcast: Vec<Option<NodeId>> = rt.out_trees[0]
                .iter()
                .map(|p| p.map(|p| p as NodeId))
                .collect();
            let plan = Plan {
                planner: self.name().to_string(),
                trees: vec![PlannedTree::from_parents(
                    root as NodeId,
                    1.0,
                    &reduce,
                    &bcast,
                )],
            };
            let t = plan.modeled_time(ctx.net, model_bits).total_s;
            if best.as_ref().is_none_or(|(b, _)| t < *b) {
                best = Some((t, plan));
            }
        }
        best.expect("the network has nodes").1
    }
}

/// The balanced share LP over `trees`, using only trees at most `max_depth_s` deep (roots
/// left without an in-tree or an out-tree take no share). `None` if no root qualifies.
fn solve_shares(
    ctx: &Context<'_>,
    trees: &[RootTrees],
    caps: &DepthCaps,
) -> Result<Option<Shares>, PlanError> {
    let mut refs = Vec::new();
    let mut cols = Vec::new();
    for (root, rt) in trees.iter().enumerate() {
        let ok_in: Vec<usize> = (0..rt.in_trees.len())
            .filter(|&i| ctx.depth_s(&rt.in_trees[i], false) <= caps.cap(root, false))
            .collect();
        let ok_out: Vec<usize> = (0..rt.out_trees.len())
            .filter(|&i| ctx.depth_s(&rt.out_trees[i], true) <= caps.cap(root, true))
            .collect();
        if ok_in.is_empty() || ok_out.is_empty() {
            continue;
        }
        for (out, list, ok) in [
            (false, &rt.in_trees, &ok_in),
            (true, &rt.out_trees, &ok_out),
        ] {
            for &index in ok {
                refs.push(TreeRef { root, out, index });
                let kind = if out { ColumnKind::Out } else { ColumnKind::In };
                cols.push(Column {
                    root,
                    kind,
                    usage: ctx.res.tree_usage(&list[index], out),
                });
            }
        }
    }
    if cols.is_empty() {
        return Ok(None);
    }
    let sol = solve_master(&ctx.res, &cols, LP_TOLERANCE, SPARSITY_PENALTY).map_err(bound_error)?;
    Ok(Some(Shares { refs, sol }))
}

/// Adds to `trees` every root's minimum in-tree and out-tree under the resource `prices`
/// when it is cheaper than the root's cheapest tree of that direction (a negative reduced
/// cost in the share LP); for a root without trees, when its pair is cheaper than the
/// cheapest pair of any root that has trees. With a finite `max_depth_s`, a minimum tree
/// deeper than that is replaced by the cheapest Prim–Dijkstra tree that fits
/// ([`depth_bounded_tree`]). Returns whether anything was added.
fn add_improving_trees(
    ctx: &Context<'_>,
    trees: &mut [RootTrees],
    prices: &[f64],
    caps: &DepthCaps,
) -> bool {
    let n = ctx.n;
    let cost = ctx.res.edge_cost_matrix(prices);
    let mut cost_rev = vec![f64::INFINITY; n * n];
    for u in 0..n {
        for v in 0..n {
            cost_rev[v * n + u] = cost[u * n + v];
        }
    }
    let price_of = |t: &Parents, out: bool| {
        if out {
            tree_cost(t, &cost, n)
        } else {
            tree_cost(t, &cost_rev, n)
        }
    };
    let cheapest = |list: &[Parents], out: bool| {
        list.iter()
            .map(|t| price_of(t, out))
            .fold(f64::INFINITY, f64::min)
    };
    let mut best_pair = f64::INFINITY;
    for rt in trees.iter() {
        best_pair = best_pair.min(cheapest(&rt.in_trees, false) + cheapest(&rt.out_trees, true));
    }
    let new_tree = |root: usize, out: bool| -> Option<Parents> {
        let max_depth_s = caps.cap(root, out);
        if max_depth_s < 0.0 {
            return None;
        }
        let t = min_arborescence_matrix(n, root, if out { &cost } else { &cost_rev })?;
        if ctx.depth_s(&t, out) <= max_depth_s {
            Some(t)
        } else {
            depth_bounded_tree(ctx, &cost, root, out, max_depth_s)
        }
    };
    let mut added = false;
    for (root, rt) in trees.iter_mut().enumerate() {
        let (Some(t_in), Some(t_out)) = (new_tree(root, false), new_tree(root, true)) else {
            continue;
        };
        let (c_in, c_out) = (price_of(&t_in, false), price_of(&t_out, true));
        let improves = |c: f64, current: f64| c < current * (1.0 - 1e-9);
        if rt.in_trees.is_empty() || rt.out_trees.is_empty() {
            if improves(c_in + c_out, best_pair) {
                *rt = RootTrees {
                    in_trees: vec![t_in],
                    out_trees: vec![t_out],
                };
                added = true;
            }
            continue;
        }
        if improves(c_in, cheapest(&rt.in_trees, false)) && !rt.in_trees.contains(&t_in) {
            rt.in_trees.push(t_in);
            added = true;
        }
        if improves(c_out, cheapest(&rt.out_trees, true)) && !rt.out_trees.contains(&t_out) {
            rt.out_trees.push(t_out);
            added = true;
        }
    }
    added
}

/// A tree of `root` at most `max_depth_s` deep and cheap under `cost` (`n × n`, edge
/// `u → v`): the Prim–Dijkstra trade-off (Alpert et al.), growing the tree from the root
/// by the attachment minimizing `price + λ · (depth of the attachment point + latency)`,
/// with the smallest `λ` of a doubling search that meets the depth cap (`λ = 0` is Prim,
/// large `λ` the latency-shortest-path tree). `None` if even that is too deep.
fn depth_bounded_tree(
    ctx: &Context<'_>,
    cost: &[f64],
    root: usize,
    out: bool,
    max_depth_s: f64,
) -> Option<Parents> {
    let n = ctx.n;
    // Scale: typical price per second of latency.
    let (mut price_sum, mut lat_sum) = (0.0, 0.0);
    for u in 0..n {
        for v in 0..n {
            if ctx.res.has_edge(u, v) {
                price_sum += cost[u * n + v];
                lat_sum += ctx.latency_s[u * n + v];
            }
        }
    }
    if lat_sum.is_nan() || lat_sum <= 0.0 {
        return None;
    }
    let unit = price_sum / lat_sum;
    let mut lambda = 0.0;
    for step in 0..24 {
        let t = prim_dijkstra(ctx, cost, root, out, lambda);
        if let Some(t) = t {
            if ctx.depth_s(&t, out) <= max_depth_s * (1.0 + 1e-9) {
                return Some(t);
            }
        }
        lambda = unit / 64.0 * f64::powi(2.0, step);
    }
    None
}

/// One Prim–Dijkstra tree (see [`depth_bounded_tree`]). Out-trees grow along `u → v`,
/// in-trees along `v → u` (data flowing towards the root).
fn prim_dijkstra(
    ctx: &Context<'_>,
    cost: &[f64],
    root: usize,
    out: bool,
    lambda: f64,
) -> Option<Parents> {
    let n = ctx.n;
    let edge = |tree_node: usize, v: usize| -> f64 {
        if out {
            cost[tree_node * n + v] + lambda * ctx.latency_s[tree_node * n + v]
        } else {
            cost[v * n + tree_node] + lambda * ctx.latency_s[v * n + tree_node]
        }
    };
    let lat = |tree_node: usize, v: usize| -> f64 {
        if out {
            ctx.latency_s[tree_node * n + v]
        } else {
            ctx.latency_s[v * n + tree_node]
        }
    };
    let mut parent: Parents = vec![None; n];
    let mut in_tree = vec![false; n];
    let mut depth = vec![0.0; n];
    let mut attach = vec![(f64::INFINITY, usize::MAX); n];
    in_tree[root] = true;
    for (v, a) in attach.iter_mut().enumerate() {
        if v != root {
            *a = (edge(root, v), root);
        }
    }
    for _ in 1..n {
        let mut next = usize::MAX;
        for v in 0..n {
            if !in_tree[v]
                && attach[v].0.is_finite()
                && (next == usize::MAX || attach[v].0 < attach[next].0)
            {
                next = v;
            }
        }
        if next == usize::MAX {
            return None;
        }
        let (_, p) = attach[next];
        in_tree[next] = true;
        parent[next] = Some(p);
        depth[next] = depth[p] + lat(p, next);
        for w in 0..n {
            if !in_tree[w] {
                let c = edge(next, w) + lambda * depth[next];
                if c < attach[w].0 {
                    attach[w] = (c, next);
                }
            }
        }
    }
    Some(parent)
}

/// Every root's `k` heaviest in-trees and out-trees under `shares` (trees without weight
/// are dropped; ties keep the earlier tree), and the normalized round time `τ` of the
/// LP solution restricted to them (per root, the smaller of its kept in- and out-weight).
fn prune_by_weight(trees: &[RootTrees], shares: &Shares, k: usize) -> (Vec<RootTrees>, f64) {
    let mut weights: Vec<(Vec<f64>, Vec<f64>)> = trees
        .iter()
        .map(|rt| (vec![0.0; rt.in_trees.len()], vec![0.0; rt.out_trees.len()]))
        .collect();
    for (r, &w) in shares.refs.iter().zip(&shares.sol.weights) {
        let slot = if r.out {
            &mut weights[r.root].1
        } else {
            &mut weights[r.root].0
        };
        slot[r.index] += w;
    }
    let top = |w: &[f64]| -> Vec<usize> {
        let mut idx: Vec<usize> = (0..w.len()).filter(|&i| w[i] > MIN_SHARE).collect();
        idx.sort_by(|&a, &b| w[b].total_cmp(&w[a]).then(a.cmp(&b)));
        idx.truncate(k);
        idx.sort_unstable();
        idx
    };
    let mut carried = 0.0;
    let kept = trees
        .iter()
        .zip(&weights)
        .map(|(rt, (wi, wo))| {
            let (ins, outs) = (top(wi), top(wo));
            if ins.is_empty() || outs.is_empty() {
                return RootTrees::default();
            }
            let kept_in: f64 = ins.iter().map(|&i| wi[i]).sum();
            let kept_out: f64 = outs.iter().map(|&i| wo[i]).sum();
            carried += kept_in.min(kept_out);
            RootTrees {
                in_trees: ins.into_iter().map(|i| rt.in_trees[i].clone()).collect(),
                out_trees: outs.into_iter().map(|i| rt.out_trees[i].clone()).collect(),
            }
        })
        .collect();
    let tau = if carried > 0.0 {
        shares.sol.tau / carried
    } else {
        f64::INFINITY
    };
    (kept, tau)
}

/// Scales shares to sum to exactly 1 (the last tree absorbs the rounding).
fn normalize_shares(planned: &mut [PlannedTree]) {
    let sum: f64 = planned.iter().map(|t| t.share).sum();
    if sum <= 0.0 {
        return;
    }
    for t in planned.iter_mut() {
        t.share /= sum;
    }
    if let Some((last, rest)) = planned.split_last_mut() {
        let rest: f64 = rest.iter().map(|t| t.share).sum();
        last.share = (1.0 - rest).max(0.0);
    }
}

/// Couples two weight vectors with the same sum into `(i, o, w)` triples (north-west
/// corner rule); at most `a.len() + b.len() - 1` triples.
fn north_west_corner(a: &[f64], b: &[f64]) -> Vec<(usize, usize, f64)> {
    let mut out = Vec::new();
    if a.is_empty() || b.is_empty() {
        return out;
    }
    let (mut i, mut o) = (0, 0);
    let (mut ra, mut rb) = (a[0], b[0]);
    loop {
        let last_i = i + 1 == a.len();
        let last_o = o + 1 == b.len();
        // The last row / column takes whatever is left, so rounding never loses weight.
        let w = if last_i && last_o {
            ra.max(rb)
        } else if last_i {
            rb
        } else if last_o {
            ra
        } else {
            ra.min(rb)
        };
        if w > 0.0 {
            out.push((i, o, w));
        }
        ra -= w;
        rb -= w;
        if last_i && last_o {
            break;
        }
        if !last_i && (last_o || ra <= rb) {
            i += 1;
            ra = a[i];
        } else {
            o += 1;
            rb = b[o];
        }
    }
    out
}

fn argmin(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x < v[best] {
            best = i;
        }
    }
    best
}

/// Cost of an arborescence whose edges are `parent[v] → v` in `cost`'s orientation.
fn tree_cost(parent: &Parents, cost: &[f64], n: usize) -> f64 {
    parent
        .iter()
        .enumerate()
        .filter_map(|(v, p)| p.map(|p| cost[p * n + v]))
        .sum()
}

fn add_weight(found: &mut Vec<WeightedTree>, parent: Parents, amount: f64) {
    match found.iter_mut().find(|t| t.parent == parent) {
        Some(t) => t.weight += amount,
        None => found.push(WeightedTree {
            parent,
            weight: amount,
        }),
    }
}

/// The `k` trees with the most weight (ties: first found).
fn heaviest(mut found: Vec<WeightedTree>, k: usize) -> Vec<Parents> {
    found.sort_by(|a, b| b.weight.total_cmp(&a.weight));
    found.into_iter().take(k).map(|t| t.parent).collect()
}

/// Shortest-path tree of `root` on latency, ties broken by `Σ 1 / capacity` (so with no
/// latency it is the widest-first star on a full mesh). Out-tree (from the root) or
/// in-tree (to the root).
fn shortest_path_tree(ctx: &Context<'_>, root: usize, out: bool) -> Parents {
    let n = ctx.n;
    // Edge weight (latency, 1/capacity), compared lexicographically.
    let weight = |u: usize, v: usize| -> Option<(f64, f64)> {
        let (a, b) = if out { (u, v) } else { (v, u) };
        let k = ctx.res.link(a, b)?;
        Some((ctx.latency_s[a * n + b], 1.0 / ctx.res.cap[k]))
    };
    let less = |x: (f64, f64), y: (f64, f64)| x.0 < y.0 || (x.0 == y.0 && x.1 < y.1);
    let mut dist = vec![(f64::INFINITY, f64::INFINITY); n];
    let mut done = vec![false; n];
    let mut parent: Parents = vec![None; n];
    dist[root] = (0.0, 0.0);
    for _ in 0..n {
        let mut next: Option<usize> = None;
        for v in 0..n {
            if !done[v] && dist[v].0.is_finite() && next.is_none_or(|b| less(dist[v], dist[b])) {
                next = Some(v);
            }
        }
        let Some(u) = next else { break };
        done[u] = true;
        for v in 0..n {
            if done[v] || v == u {
                continue;
            }
            if let Some(w) = weight(u, v) {
                let d = (dist[u].0 + w.0, dist[u].1 + w.1);
                if less(d, dist[v]) {
                    dist[v] = d;
                    parent[v] = Some(u);
                }
            }
        }
    }
    parent
}

/// What one step of a depth sweep gave.
enum Candidate {
    Plan(Plan),
    /// No trees fit the caps.
    Infeasible,
    /// The bandwidth term alone is no better than the best plan: tighter caps cannot help.
    Hopeless,
}

/// Per root, the packed and shortest-path trees that fit `caps` (each tree once): the seed
/// a depth-limited refinement starts from.
fn seeds_within(
    ctx: &Context<'_>,
    kept: &[RootTrees],
    spt: &[RootTrees],
    caps: &DepthCaps,
) -> Vec<RootTrees> {
    kept.iter()
        .zip(spt)
        .enumerate()
        .map(|(r, (a, b))| {
            let pick = |x: &[Parents], y: &[Parents], out: bool| -> Vec<Parents> {
                let mut v: Vec<Parents> = Vec::new();
                for t in x.iter().chain(y) {
                    if ctx.depth_s(t, out) <= caps.cap(r, out) && !v.contains(t) {
                        v.push(t.clone());
                    }
                }
                v
            };
            RootTrees {
                in_trees: pick(&a.in_trees, &b.in_trees, false),
                out_trees: pick(&a.out_trees, &b.out_trees, true),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn north_west_corner_keeps_marginals() {
        let a = [0.5, 0.25, 0.25];
        let b = [0.1, 0.9];
        let t = north_west_corner(&a, &b);
        assert!(t.len() < a.len() + b.len());
        for (i, &want) in a.iter().enumerate() {
            let got: f64 = t.iter().filter(|x| x.0 == i).map(|x| x.2).sum();
            assert!((got - want).abs() < 1e-12);
        }
        for (o, &want) in b.iter().enumerate() {
            let got: f64 = t.iter().filter(|x| x.1 == o).map(|x| x.2).sum();
            assert!((got - want).abs() < 1e-12);
        }
    }
}
