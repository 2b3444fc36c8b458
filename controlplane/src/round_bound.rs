//! A proven lower bound on a round's time that accounts for bandwidth **and** latency.
//!
//! [`crate::bounds`] gives two separate limits: the fluid optimum `F` (bandwidth only) and
//! the largest pairwise latency. Neither alone says how fast a round can be on a
//! latency-heavy WAN, and "fluid optimum + tree depth" is **not** a lower bound: with
//! several roots, one root's reduce traffic uses a link while another root's broadcast
//! still waits for its reduce. Two nodes, one-way latency `λ ≥ M/2c` on both directions,
//! a shard per node: every link carries `M` bits in all (`F = M/c`), every tree is `2λ`
//! deep, yet the emulated round takes `2λ + M/2c < F + 2λ` (each link sends its reduce
//! half at once and its broadcast half `λ` later). This module computes a bound that
//! holds for every strategy of the tree model, checked against the emulator and against
//! every plan's modeled time (`controlplane/tests/round_bound.rs`).
//!
//! # The model
//!
//! A round synchronizes a model of `M` bits. Every element has one **root** where its sum
//! is formed: the root receives partial sums containing every node's contribution
//! (reduce), then the final value travels from the root to every node (broadcast). Every
//! strategy NetStorm runs — trees, rings as chains, meshes, parameter servers — is of that
//! form. A directed link `k = (u → w)` has capacity `c_k` and one-way latency `l_k`; a bit
//! put on it at time `τ` is available at `w` no earlier than `τ + l_k`, and the link sends
//! at most `c_k · Δ` bits in any interval of length `Δ`. Node caps bound the bits a node
//! sends or receives likewise. The round starts at 0 with every gradient in place and ends
//! at `T`, when every node holds every final value.
//!
//! Let `d(x, y)` be the lowest path latency from `x` to `y`, `ecc_in(r) = max_v d(v, r)`
//! and `ecc_out(r) = max_v d(r, v)`.
//!
//! # The theorem
//!
//! For root `r` and link `k = (u → w)` define the *reduce head-room*
//! `a↑(k, r) = l_k + d(w, r) + ecc_out(r)` and the *broadcast head-room*
//! `a↓(k, r) = ecc_in(r) + d(r, u) + l_k`. Then in every execution, for every root `r`:
//!
//! 1. the bits of `r`'s elements that link `k` carries *towards* `r` (partial sums, needed
//!    for the root's sum) are all sent within `[0, T − a↑(k, r)]`;
//! 2. the bits of `r`'s final values that link `k` carries are sent within
//!    `[a↓(k, r) − l_k, T − l_k]`, an interval of length `T − a↓(k, r)`;
//! 3. everything link `k` carries is sent within `[0, T − l_k]`.
//!
//! *Proof.* (1) A partial sum sent on `k` at `τ` reaches `w` at `≥ τ + l_k`, the root at
//! `≥ τ + l_k + d(w, r)`; the root's sum of that element exists no earlier, and its final
//! value reaches the farthest node no earlier than `ecc_out(r)` later, which is `≤ T`.
//! (2) The root forms an element's sum only after the contribution of the farthest node
//! arrived, at `≥ ecc_in(r)`; the final value reaches `u` at `≥ ecc_in(r) + d(r, u)`, and a
//! bit sent at `τ` is needed by `w` by `T`, so `τ + l_k ≤ T`. (3) Likewise. Only
//! transmissions on which some final value causally depends are counted; others
//! (duplicates, retransmissions, headers, acknowledgements) only add load. ∎
//!
//! Consequently, writing `x↑(k, r)` and `x↓(k, r)` for those bit counts (in models):
//! `x↑(k, r) ≤ c_k (T − a↑(k, r))⁺`, `x↓(k, r) ≤ c_k (T − a↓(k, r))⁺` and
//! `Σ_r x↑(k, r) + x↓(k, r) ≤ c_k (T − l_k)`. As in the fluid optimum (Edmonds'
//! arborescence-packing theorem), the bits of root `r` support a fractional packing of
//! in-arborescences and out-arborescences of weight `s_r` each, `Σ_r s_r = 1`: every cut
//! separating a node from the root must be crossed by a partial sum holding its
//! contribution, and every cut separating the root from a node by the final value. So
//! `T* = min { T : some shares and tree packings meet all three windows }` is a lower
//! bound on every strategy's round time. It is also at most every plan's modeled time
//! [`crate::planner::Plan::modeled_time`] `= B + L`: a tree of root `r` that uses `k`
//! upwards has reduce depth `≥ l_k + d(w, r)` and broadcast depth `≥ ecc_out(r)`, so
//! `a↑(k, r) ≤ L`, hence `T − a↑ ≥ B ≥` the load of `k` over its capacity (likewise for
//! broadcast), and `T − l_k ≥ B`. With no latency `T*` is exactly the fluid optimum; a
//! used root `r` always forces `T* ≥ ecc_in(r) + ecc_out(r)` (the farthest node's first
//! edge has `a↑ ≥ e(r)`).
//!
//! # Computing it
//!
//! `(T − a)⁺` is not concave, so `T*` is not an LP. We bound it from below by its convex
//! relaxation on `[T_lo, T_hi] ∋ T*`: the chord of `(T − a)⁺` between the ends,
//! `x ≤ c · (T − a)` where `a ≤ T_lo`, `x ≤ c · (T_hi − a)(T − T_lo)/(T_hi − T_lo)` where
//! `T_lo < a < T_hi`, and edges with `a ≥ T_hi` unusable. `T_lo` starts at
//! `min_r ecc_in(r) + ecc_out(r)`; `T_hi` is the modeled time of the best single-root
//! shortest-path plan (an upper bound on `T*`, shown above). The relaxation is solved by
//! column generation over arborescences, as the fluid optimum ([`crate::bounds`]): a
//! master LP over the trees found so far (`min T`, window rows added lazily for the
//! links a root's trees use), priced per root and direction by a minimum arborescence
//! under the master's duals. Every pricing round yields a **certified** Lagrangian lower
//! bound — for any duals `y ≥ 0` (link rows), `z ≥ 0` (window rows), scaled so that
//! `Σ y_k c_k + Σ z c β = 1`,
//!
//! ```text
//! T* ≥ T_lo + min_r (minOutTree_r + minInTree_r) − Σ_k y_k c_k (T_lo − l_k) − Σ z c γ
//! ```
//!
//! (`β`, `γ` the window's slope and offset), so stopping early never overstates the bound;
//! [`RoundBound::gap`] reports how far the master's value was. `T_lo` is then raised to
//! the bound found and the relaxation re-solved with the same columns (tighter chords).
//! Results are cached per network and model size ([`round_lower_bound_cached`]).

use crate::arborescence::min_arborescence_matrix;
use crate::bounds::{merge_usage, BoundError, Resources};
use crate::network::NetworkModel;
use good_lp::{
    clarabel, variable, DualValues, Expression, ProblemVariables, Solution, SolutionWithDual,
    SolverModel, Variable,
};
use netstorm_dataplane::NodeId;
use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, OnceLock};

/// Column-generation rounds per relaxation (the bound is certified whenever it stops).
const MAX_ROUNDS: usize = 40;

/// Largest network whose relaxation is solved by the column-generation LP; larger ones
/// by multiplicative weights ([`Relaxation::solve_mwu`]), certified the same way.
pub(crate) const LP_MAX_NODES: usize = 32;

/// Relaxations solved, each with a higher `T_lo`.
const MAX_OUTER: usize = 3;

/// Relative gap between the master's value and the certified bound at which a relaxation
/// stops.
const RELATIVE_GAP: f64 = 2e-3;

/// Interior-point tolerance of the master LPs.
const TOLERANCE: f64 = 1e-8;

/// The proven lower bound on one round.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundBound {
    /// Certified lower bound on the round time, seconds.
    pub time_s: f64,
    /// The last relaxation's master value, seconds (an upper bound on that relaxation,
    /// not a round time anyone achieves): `time_s` is within `gap` of it.
    pub relaxation_s: f64,
    /// `relaxation_s / time_s − 1`.
    pub gap: f64,
    /// `min_r ecc_in(r) + ecc_out(r)`, seconds: the latency part alone.
    pub min_depth_s: f64,
}

/// The proven lower bound on a round's time for `net` and a model of `model_bits` bits
/// (see the module documentation).
pub fn round_lower_bound(net: &NetworkModel, model_bits: f64) -> Result<RoundBound, BoundError> {
    if !(model_bits.is_finite() && model_bits >= 0.0) {
        return Err(BoundError::BadModelSize(model_bits));
    }
    let res = Resources::new(net)?;
    let n = res.n;
    if n == 1 {
        return Ok(RoundBound {
            time_s: 0.0,
            relaxation_s: 0.0,
            gap: 0.0,
            min_depth_s: 0.0,
        });
    }
    let lat = Latencies::new(net, &res);
    let min_depth_s = (0..n).map(|r| lat.depth(r)).fold(f64::INFINITY, f64::min);
    if model_bits == 0.0 {
        return Ok(RoundBound {
            time_s: min_depth_s,
            relaxation_s: min_depth_s,
            gap: 0.0,
            min_depth_s,
        });
    }
    let fluid = crate::bounds::fluid_optimum_cached(net, model_bits)?;
    let windows = lat.link_s.iter().any(|&l| l > 0.0 && l.is_finite());
    if !windows {
        // No latency: the windows are `[0, T]` for every link and root, so `T*` is the
        // fluid optimum itself (module documentation), already certified.
        return Ok(RoundBound {
            time_s: fluid.time_s,
            relaxation_s: fluid.time_s * (1.0 + fluid.gap),
            gap: fluid.gap,
            min_depth_s,
        });
    }
    // Normalized time: one unit moves one model over the fastest link.
    let unit_s = model_bits / res.scale_bps;
    let mut solver = Relaxation::new(&res, &lat, unit_s);
    let t_hi = solver.single_root_upper();
    // T* ≥ the fluid optimum (certified) and ≥ the shallowest root's depth.
    let mut t_lo = (min_depth_s / unit_s).max(fluid.time_s / unit_s);
    let mut relaxation = t_hi;
    for outer in 0..MAX_OUTER {
        let (lower, master) = if n <= LP_MAX_NODES {
            solver.solve(t_lo, t_hi)?
        } else {
            // Test where the previous relaxation was feasible, else just above the bound.
            let t_test = if t_lo > 0.0 {
                relaxation.min(t_lo * 1.25).max(t_lo * 1.02)
            } else {
                relaxation
            };
            let m = solver.solve_mwu(t_lo, t_hi, t_test, windows);
            (m.lower, m.upper)
        };
        tracing::debug!(outer, t_lo, lower, master, t_hi, "round bound relaxation");
        relaxation = relaxation.min(master);
        let improved = lower > t_lo * (1.0 + 1e-3);
        t_lo = t_lo.max(lower);
        if !improved || relaxation <= t_lo * (1.0 + RELATIVE_GAP) {
            break;
        }
    }
    let time_s = t_lo * unit_s;
    let relaxation_s = relaxation.max(t_lo) * unit_s;
    Ok(RoundBound {
        time_s,
        relaxation_s,
        gap: if time_s > 0.0 {
            relaxation_s / time_s - 1.0
        } else {
            0.0
        },
        min_depth_s,
    })
}

/// [`round_lower_bound`], computed once per distinct network (nodes, caps, links with
/// rates and latencies) and model size in this process.
pub fn round_lower_bound_cached(
    net: &NetworkModel,
    model_bits: f64,
) -> Result<RoundBound, BoundError> {
    static CACHE: OnceLock<Mutex<HashMap<Vec<u64>, RoundBound>>> = OnceLock::new();
    let key = network_key(net, model_bits);
    let cache = CACHE.get_or_init(Default::default);
    if let Some(b) = cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
        return Ok(b);
    }
    let b = round_lower_bound(net, model_bits)?;
    if let Ok(mut c) = cache.lock() {
        c.insert(key, b.clone());
    }
    Ok(b)
}

/// Everything a bound depends on, as bits: model size, node caps, links.
pub(crate) fn network_key(net: &NetworkModel, model_bits: f64) -> Vec<u64> {
    let topo = &net.topology;
    let mut key = vec![model_bits.to_bits(), topo.nodes.len() as u64];
    for node in &topo.nodes {
        key.push(node.egress_bps.map_or(u64::MAX, f64::to_bits));
        key.push(node.ingress_bps.map_or(u64::MAX, f64::to_bits));
    }
    for l in &topo.links {
        key.extend([
            (l.from as u64) << 16 | l.to as u64,
            l.rate_bps.to_bits(),
            l.latency_ns,
        ]);
    }
    key
}

/// All-pairs lowest latencies (seconds) over links of positive capacity.
#[derive(Debug, Clone)]
pub(crate) struct Latencies {
    pub n: usize,
    /// `n × n` link latency, seconds (infinite where there is no usable link).
    pub link_s: Vec<f64>,
    /// `n × n` lowest path latency `d(x, y)`, seconds.
    pub dist_s: Vec<f64>,
    pub ecc_in: Vec<f64>,
    pub ecc_out: Vec<f64>,
}

impl Latencies {
    pub fn new(net: &NetworkModel, res: &Resources) -> Self {
        let n = res.n;
        let mut link_s = vec![f64::INFINITY; n * n];
        for u in 0..n {
            for v in 0..n {
                if res.has_edge(u, v) {
                    link_s[u * n + v] =
                        net.latency_ns(u as NodeId, v as NodeId).unwrap_or(0) as f64 * 1e-9;
                }
            }
        }
        let mut dist_s = link_s.clone();
        for v in 0..n {
            dist_s[v * n + v] = 0.0;
        }
        for m in 0..n {
            for u in 0..n {
                let um = dist_s[u * n + m];
                if !um.is_finite() {
                    continue;
                }
                for v in 0..n {
                    let c = um + dist_s[m * n + v];
                    if c < dist_s[u * n + v] {
                        dist_s[u * n + v] = c;
                    }
                }
            }
        }
        let ecc_in = (0..n)
            .map(|r| (0..n).map(|v| dist_s[v * n + r]).fold(0.0, f64::max))
            .collect();
        let ecc_out = (0..n)
            .map(|r| (0..n).map(|v| dist_s[r * n + v]).fold(0.0, f64::max))
            .collect();
        Self {
            n,
            link_s,
            dist_s,
            ecc_in,
            ecc_out,
        }
    }

    /// `ecc_in(r) + ecc_out(r)`: no tree of root `r` is shallower.
    pub fn depth(&self, r: usize) -> f64 {
        self.ecc_in[r] + self.ecc_out[r]
    }

    /// Head-room of link `u → w` for root `r`: reduce (`up`) or broadcast.
    fn head_room(&self, u: usize, w: usize, r: usize, up: bool) -> f64 {
        let n = self.n;
        let l = self.link_s[u * n + w];
        if up {
            l + self.dist_s[w * n + r] + self.ecc_out[r]
        } else {
            self.ecc_in[r] + self.dist_s[r * n + u] + l
        }
    }
}

/// A tree column of the master: root, direction and resource usage.
#[derive(Debug, Clone)]
struct TreeColumn {
    root: usize,
    out: bool,
    usage: Vec<(usize, f64)>,
}

/// The convex relaxation of `T*` on `[T_lo, T_hi]`, solved by column generation. Times are
/// normalized (`unit_s` seconds per unit).
struct Relaxation<'a> {
    res: &'a Resources,
    lat: &'a Latencies,
    unit_s: f64,
    /// Normalized latency of every resource (0 for node caps).
    res_latency: Vec<f64>,
    /// Link resource → (u, w).
    res_edge: HashMap<usize, (usize, usize)>,
    columns: Vec<TreeColumn>,
    /// Whether latency windows restrict the edges (off for the plain fluid optimum).
    use_latency: bool,
    seen: HashSet<(usize, bool, Vec<Option<usize>>)>,
}

impl<'a> Relaxation<'a> {
    fn new(res: &'a Resources, lat: &'a Latencies, unit_s: f64) -> Self {
        let n = res.n;
        let mut res_latency = vec![0.0; res.count()];
        let mut res_edge = HashMap::new();
        for u in 0..n {
            for w in 0..n {
                if let Some(k) = res.link(u, w) {
                    res_latency[k] = lat.link_s[u * n + w] / unit_s;
                    res_edge.insert(k, (u, w));
                }
            }
        }
        Self {
            res,
            lat,
            unit_s,
            res_latency,
            res_edge,
            columns: Vec::new(),
            use_latency: true,
            seen: HashSet::new(),
        }
    }

    /// Normalized head-room of link resource `k` for root `r`.
    fn head_room(&self, k: usize, r: usize, up: bool) -> f64 {
        let (u, w) = self.res_edge[&k];
        self.lat.head_room(u, w, r, up) / self.unit_s
    }

    /// Edge `u → w` may carry root `r`'s traffic in direction `out` when `T ≤ t_hi`.
    fn allowed(&self, u: usize, w: usize, r: usize, out: bool, t_hi: f64) -> bool {
        if out && w == r || !out && u == r {
            return false;
        }
        if !self.use_latency {
            return true;
        }
        self.lat.head_room(u, w, r, !out) / self.unit_s < t_hi
    }

    /// Modeled time (normalized) of the best single root with latency-shortest-path trees:
    /// an upper bound on `T*`.
    fn single_root_upper(&self) -> f64 {
        let n = self.res.n;
        let mut best = f64::INFINITY;
        for r in 0..n {
            let (Some(t_out), Some(t_in)) =
                (self.shortest_tree(r, true), self.shortest_tree(r, false))
            else {
                continue;
            };
            let mut usage = self.res.tree_usage(&t_out, true);
            usage.extend(self.res.tree_usage(&t_in, false));
            let usage = merge_usage(usage);
            let bandwidth = usage
                .iter()
                .map(|&(k, c)| c / self.res.cap[k])
                .fold(0.0, f64::max);
            best = best.min(bandwidth + self.lat.depth(r) / self.unit_s);
        }
        best
    }

    /// Bandwidth time (normalized) of the best single root's shortest-path trees.
    fn single_root_bandwidth(&self) -> f64 {
        let mut best = f64::INFINITY;
        for r in 0..self.res.n {
            let (Some(t_out), Some(t_in)) =
                (self.shortest_tree(r, true), self.shortest_tree(r, false))
            else {
                continue;
            };
            let mut usage = self.res.tree_usage(&t_out, true);
            usage.extend(self.res.tree_usage(&t_in, false));
            best = best.min(
                merge_usage(usage)
                    .iter()
                    .map(|&(k, c)| c / self.res.cap[k])
                    .fold(0.0, f64::max),
            );
        }
        best
    }

    /// Latency-shortest-path out-tree (or in-tree) of `r` (Dijkstra, ties by hop count,
    /// then by node index).
    fn shortest_tree(&self, r: usize, out: bool) -> Option<Vec<Option<usize>>> {
        let n = self.res.n;
        let mut dist = vec![(f64::INFINITY, usize::MAX); n];
        let mut done = vec![false; n];
        let mut parent = vec![None; n];
        dist[r] = (0.0, 0);
        let less = |a: (f64, usize), b: (f64, usize)| a.0 < b.0 || (a.0 == b.0 && a.1 < b.1);
        for _ in 0..n {
            let mut next: Option<usize> = None;
            for v in 0..n {
                if !done[v] && dist[v].0.is_finite() && next.is_none_or(|b| less(dist[v], dist[b]))
                {
                    next = Some(v);
                }
            }
            let u = next?;
            done[u] = true;
            for v in 0..n {
                let (a, b) = if out { (u, v) } else { (v, u) };
                if done[v] || !self.res.has_edge(a, b) {
                    continue;
                }
                let d = (dist[u].0 + self.lat.link_s[a * n + b], dist[u].1 + 1);
                if less(d, dist[v]) {
                    dist[v] = d;
                    parent[v] = Some(u);
                }
            }
        }
        is_arborescence(&parent, r).then_some(parent)
    }

    /// Solves the relaxation on `[t_lo, t_hi]`; returns (certified lower bound on `T*`,
    /// the master's value), normalized.
    fn solve(&mut self, t_lo: f64, t_hi: f64) -> Result<(f64, f64), BoundError> {
        let n = self.res.n;
        // Seed: every root's cheapest trees under 1/capacity over the allowed edges, and
        // its shortest-path trees (shallowest).
        if self.columns.is_empty() {
            let price: Vec<f64> = self.res.cap.iter().map(|c| 1.0 / c).collect();
            for r in 0..n {
                for out in [true, false] {
                    if let Some(t) = self.shortest_tree(r, out) {
                        if self.tree_allowed(&t, r, out, t_hi) {
                            self.add(r, out, t);
                        }
                    }
                    if let Some(t) = self.price_tree(r, out, &price, &HashMap::new(), t_hi) {
                        self.add(r, out, t.0);
                    }
                }
            }
        }
        let mut lower = t_lo;
        let mut master = f64::INFINITY;
        for _ in 0..MAX_ROUNDS {
            let sol = self.master(t_lo, t_hi)?;
            master = sol.value;
            // Certified bound from these duals.
            let mut best_pair = f64::INFINITY;
            let mut new_trees = Vec::new();
            for r in 0..n {
                let (Some((t_out, c_out)), Some((t_in, c_in))) = (
                    self.price_tree(r, true, &sol.y, &sol.z, t_hi),
                    self.price_tree(r, false, &sol.y, &sol.z, t_hi),
                ) else {
                    continue;
                };
                best_pair = best_pair.min(c_out + c_in);
                new_trees.push((r, true, t_out));
                new_trees.push((r, false, t_in));
            }
            if sol.slope > 0.0 && best_pair.is_finite() {
                let bound = t_lo + (best_pair - sol.offset) / sol.slope;
                lower = lower.max(bound);
            }
            if master <= lower * (1.0 + RELATIVE_GAP) {
                break;
            }
            let mut added = 0;
            for (r, out, t) in new_trees {
                added += usize::from(self.add(r, out, t));
            }
            if added == 0 {
                break;
            }
        }
        Ok((lower, master.max(lower)))
    }

    fn tree_allowed(&self, parent: &[Option<usize>], r: usize, out: bool, t_hi: f64) -> bool {
        parent.iter().enumerate().all(|(v, p)| match *p {
            None => true,
            Some(p) => {
                let (u, w) = if out { (p, v) } else { (v, p) };
                self.allowed(u, w, r, out, t_hi)
            }
        })
    }

    fn add(&mut self, root: usize, out: bool, parent: Vec<Option<usize>>) -> bool {
        if !self.seen.insert((root, out, parent.clone())) {
            return false;
        }
        let usage = self.res.tree_usage(&parent, out);
        self.columns.push(TreeColumn { root, out, usage });
        true
    }

    /// Minimum tree of `r` in direction `out` under resource prices `y` plus window prices
    /// `z[(link resource, root, out)]`, over the edges allowed below `t_hi`; with its cost.
    fn price_tree(
        &self,
        r: usize,
        out: bool,
        y: &[f64],
        z: &HashMap<(usize, usize, bool), f64>,
        t_hi: f64,
    ) -> Option<(Vec<Option<usize>>, f64)> {
        let n = self.res.n;
        // Arborescence orientation: out-trees as is, in-trees reversed.
        let mut cost = vec![f64::INFINITY; n * n];
        for u in 0..n {
            for w in 0..n {
                if !self.res.has_edge(u, w) || !self.allowed(u, w, r, out, t_hi) {
                    continue;
                }
                let mut c: f64 = self.res.edge_resources(u, w).map(|k| y[k]).sum();
                if let Some(k) = self.res.link(u, w) {
                    c += z.get(&(k, r, out)).copied().unwrap_or(0.0);
                }
                if out {
                    cost[u * n + w] = c;
                } else {
                    cost[w * n + u] = c;
                }
            }
        }
        let parent = min_arborescence_matrix(n, r, &cost)?;
        let total: f64 = parent
            .iter()
            .enumerate()
            .filter_map(|(v, p)| p.map(|p| cost[p * n + v]))
            .sum();
        total.is_finite().then_some((parent, total))
    }

    /// The master LP over the current columns.
    fn master(&self, t_lo: f64, t_hi: f64) -> Result<MasterDuals, BoundError> {
        let mut vars = ProblemVariables::new();
        let u_var = vars.add(variable().min(0.0));
        let x: Vec<Variable> = self
            .columns
            .iter()
            .map(|_| vars.add(variable().min(0.0)))
            .collect();
        let mut model = vars.minimise(u_var).using(clarabel);
        model
            .settings()
            .verbose(false)
            .tol_gap_abs(TOLERANCE)
            .tol_gap_rel(TOLERANCE)
            .tol_feas(TOLERANCE)
            .max_iter(400);
        let mut total = Expression::default();
        let mut balance: Vec<Option<Expression>> = vec![None; self.res.n];
        let mut load: Vec<Option<Expression>> = vec![None; self.res.count()];
        let mut window: HashMap<(usize, usize, bool), Expression> = HashMap::new();
        for (c, &xv) in self.columns.iter().zip(&x) {
            if c.out {
                total.add_mul(1.0, xv);
            }
            balance[c.root]
                .get_or_insert_with(Expression::default)
                .add_mul(if c.out { 1.0 } else { -1.0 }, xv);
            for &(k, count) in &c.usage {
                load[k]
                    .get_or_insert_with(Expression::default)
                    .add_mul(count, xv);
                if self.res_edge.contains_key(&k) {
                    window
                        .entry((k, c.root, c.out))
                        .or_default()
                        .add_mul(count, xv);
                }
            }
        }
        model.add_constraint(total.eq(1.0));
        for b in balance.into_iter().flatten() {
            model.add_constraint(b.eq(0.0));
        }
        // Σ load ≤ cap (T − l) with T = t_lo + U.
        let mut load_rows = Vec::new();
        for (k, l) in load.into_iter().enumerate() {
            if let Some(mut l) = l {
                let cap = self.res.cap[k];
                l.add_mul(-cap, u_var);
                let rhs = cap * (t_lo - self.res_latency[k]);
                load_rows.push((k, rhs, model.add_constraint(l.leq(rhs))));
            }
        }
        // Window rows: load of (k, r, dir) ≤ cap (β U + γ).
        let mut keys: Vec<(usize, usize, bool)> = window.keys().copied().collect();
        keys.sort_unstable();
        let mut window_rows = Vec::new();
        for key in keys {
            let (k, r, out) = key;
            let a = self.head_room(k, r, !out);
            let cap = self.res.cap[k];
            let (beta, gamma) = if a <= t_lo {
                (1.0, t_lo - a)
            } else {
                ((t_hi - a) / (t_hi - t_lo), 0.0)
            };
            let mut e = window.remove(&key).expect("key from the map");
            e.add_mul(-cap * beta, u_var);
            let rhs = cap * gamma;
            window_rows.push((key, cap * beta, rhs, model.add_constraint(e.leq(rhs))));
        }
        let mut sol = model.solve()?;
        let value = t_lo + sol.value(u_var).max(0.0);
        let duals = sol.compute_dual();
        let mut y = vec![0.0; self.res.count()];
        let mut slope = 0.0;
        let mut offset = 0.0;
        for (k, rhs, row) in load_rows {
            let d = duals.dual(row).abs();
            y[k] = d;
            slope += d * self.res.cap[k];
            offset += d * rhs;
        }
        let mut z = HashMap::new();
        for (key, cap_beta, rhs, row) in window_rows {
            let d = duals.dual(row).abs();
            if d > 0.0 {
                z.insert(key, d);
                slope += d * cap_beta;
                offset += d * rhs;
            }
        }
        Ok(MasterDuals {
            value,
            y,
            z,
            slope,
            offset,
        })
    }
}

/// The master's value and duals: `slope = Σ y c + Σ z c β`, `offset = Σ y c (T_lo − l) +
/// Σ z c γ` (the Lagrangian's terms, see the module documentation).
struct MasterDuals {
    value: f64,
    y: Vec<f64>,
    z: HashMap<(usize, usize, bool), f64>,
    slope: f64,
    offset: f64,
}

/// Every node reaches `root` by following `parent`.
fn is_arborescence(parent: &[Option<usize>], root: usize) -> bool {
    let n = parent.len();
    parent[root].is_none()
        && (0..n).all(|v| {
            let (mut cur, mut steps) = (v, 0);
            while cur != root {
                match parent[cur] {
                    Some(p) if steps <= n => {
                        cur = p;
                        steps += 1;
                    }
                    _ => return false,
                }
            }
            true
        })
}

/// Garg–Könemann iterations per node of [`Relaxation::solve_mwu`] (one routed tree pair
/// each).
const MWU_ITERATIONS_PER_NODE: usize = 12;

/// Multiplicative-weights step of [`Relaxation::solve_mwu`].
const MWU_EPSILON: f64 = 0.05;

impl Relaxation<'_> {
    /// The relaxation on `[t_lo, t_hi]` without an LP, for networks too large for the
    /// interior-point master (its capacity rows fill in densely): a Garg–Könemann packing
    /// of tree pairs into the capacities the relaxation gives at `t_test` yields lengths,
    /// which are duals for the certified Lagrangian bound of the module documentation;
    /// the packing itself shows the relaxation feasible at `t_test / θ` (θ its throughput,
    /// capacities grow at least in proportion with `T`). Returns (certified lower bound,
    /// that upper bound of the relaxation), normalized.
    pub(crate) fn solve_mwu(&self, t_lo: f64, t_hi: f64, t_test: f64, windows: bool) -> MwuResult {
        let n = self.res.n;
        let rc = self.res.count();
        // Rows: resources, then windows (r, out, link resource) densely.
        let win = |r: usize, out: bool, k: usize| rc + (r * 2 + usize::from(out)) * rc + k;
        let rows = if windows { rc + 2 * n * rc } else { rc };
        let mut capacity = vec![0.0; rows];
        let mut slope_coef = vec![0.0; rows];
        let mut offset_coef = vec![0.0; rows];
        for k in 0..rc {
            let cap = self.res.cap[k];
            capacity[k] = cap * (t_test - self.res_latency[k]);
            slope_coef[k] = cap;
            offset_coef[k] = cap * (t_lo - self.res_latency[k]);
        }
        if windows {
            for (&k, _) in self.res_edge.iter() {
                let cap = self.res.cap[k];
                for r in 0..n {
                    for out in [true, false] {
                        let a = self.head_room(k, r, !out);
                        let (beta, gamma) = if a <= t_lo {
                            (1.0, t_lo - a)
                        } else {
                            ((t_hi - a).max(0.0) / (t_hi - t_lo), 0.0)
                        };
                        let i = win(r, out, k);
                        capacity[i] = cap * (beta * (t_test - t_lo) + gamma);
                        slope_coef[i] = cap * beta;
                        offset_coef[i] = cap * gamma;
                    }
                }
            }
        }
        let mut length: Vec<f64> = capacity
            .iter()
            .map(|&c| if c > 0.0 { 1.0 / c } else { f64::INFINITY })
            .collect();
        let initial = length.clone();
        // Edges each root may use per direction (below t_hi), computed once.
        let allowed: Vec<Vec<bool>> = (0..2 * n)
            .map(|i| {
                let (r, out) = (i / 2, i % 2 == 1);
                (0..n * n)
                    .map(|e| {
                        self.res.has_edge(e / n, e % n) && self.allowed(e / n, e % n, r, out, t_hi)
                    })
                    .collect()
            })
            .collect();
        let mut load = vec![0.0; rows];
        let mut flow = 0.0;
        let edges: Vec<(usize, usize, Vec<usize>)> = (0..n)
            .flat_map(|u| (0..n).map(move |w| (u, w)))
            .filter(|&(u, w)| self.res.has_edge(u, w))
            .map(|(u, w)| (u, w, self.res.edge_resources(u, w).collect()))
            .collect();
        // Min tree of r under the current lengths (edges allowed below t_hi and with room
        // at t_test), its cost and its rows.
        let price = |length: &[f64], r: usize, out: bool, certify: bool| {
            let mut cost = vec![f64::INFINITY; n * n];
            let ok = &allowed[2 * r + usize::from(out)];
            for (u, w, ks) in &edges {
                let (u, w) = (*u, *w);
                if !ok[u * n + w] {
                    continue;
                }
                let mut c: f64 = ks.iter().map(|&k| length[k]).sum();
                if windows {
                    if let Some(k) = self.res.link(u, w) {
                        c += length[win(r, out, k)];
                    }
                }
                if !c.is_finite() {
                    if certify {
                        continue; // unusable at t_test, but the bound must allow it
                    }
                    continue;
                }
                if out {
                    cost[u * n + w] = c;
                } else {
                    cost[w * n + u] = c;
                }
            }
            let parent = min_arborescence_matrix(n, r, &cost)?;
            let total: f64 = parent
                .iter()
                .enumerate()
                .filter_map(|(v, p)| p.map(|p| cost[p * n + v]))
                .sum();
            Some((parent, total))
        };
        // Lengths as certificate duals: infinite lengths (rows without room) count as 0,
        // and a window row only with what its length grew (most windows are never used,
        // and any non-negative dual is valid).
        let certify = |length: &[f64]| -> f64 {
            let dual: Vec<f64> = length
                .iter()
                .zip(&initial)
                .enumerate()
                .map(|(i, (&l, &l0))| match (l.is_finite(), i < rc) {
                    (false, _) => 0.0,
                    (true, true) => l,
                    (true, false) => l - l0,
                })
                .collect();
            let mut best = f64::INFINITY;
            for r in 0..n {
                match (price(&dual, r, true, true), price(&dual, r, false, true)) {
                    (Some((_, a)), Some((_, b))) => best = best.min(a + b),
                    _ => continue,
                }
            }
            let slope: f64 = dual.iter().zip(&slope_coef).map(|(d, c)| d * c).sum();
            let offset: f64 = dual.iter().zip(&offset_coef).map(|(d, c)| d * c).sum();
            if slope > 0.0 && best.is_finite() {
                t_lo + (best - offset) / slope
            } else {
                t_lo
            }
        };
        let iterations = MWU_ITERATIONS_PER_NODE * n;
        let mut key = vec![f64::NEG_INFINITY; n];
        let mut root_flow = vec![0.0; n];
        let mut lower = t_lo;
        for it in 0..iterations {
            let chosen = loop {
                let r = (0..n)
                    .min_by(|&a, &b| key[a].total_cmp(&key[b]))
                    .expect("n > 1");
                if key[r] == f64::INFINITY {
                    break None;
                }
                let (Some((t_out, c_out)), Some((t_in, c_in))) = (
                    price(&length, r, true, false),
                    price(&length, r, false, false),
                ) else {
                    key[r] = f64::INFINITY;
                    continue;
                };
                key[r] = c_out + c_in;
                let second = (0..n)
                    .filter(|&i| i != r)
                    .map(|i| key[i])
                    .fold(f64::INFINITY, f64::min);
                if key[r] <= second * (1.0 + MWU_EPSILON / 2.0) {
                    break Some((r, t_out, t_in));
                }
            };
            let Some((r, t_out, t_in)) = chosen else {
                break;
            };
            let mut used: Vec<(usize, f64)> = Vec::with_capacity(4 * n);
            for (out, t) in [(true, &t_out), (false, &t_in)] {
                for (v, p) in t.iter().enumerate() {
                    if let Some(p) = *p {
                        let (a, b) = if out { (p, v) } else { (v, p) };
                        for k in self.res.edge_resources(a, b) {
                            used.push((k, 1.0));
                        }
                        if windows {
                            if let Some(k) = self.res.link(a, b) {
                                used.push((win(r, out, k), 1.0));
                            }
                        }
                    }
                }
            }
            let used = merge_usage(used);
            let amount = used
                .iter()
                .map(|&(i, c)| capacity[i] / c)
                .fold(f64::INFINITY, f64::min);
            if !(amount > 0.0 && amount.is_finite()) {
                key[r] = f64::INFINITY;
                continue;
            }
            for &(i, c) in &used {
                length[i] *= 1.0 + MWU_EPSILON * c * amount / capacity[i];
                load[i] += c * amount;
            }
            flow += amount;
            root_flow[r] += amount;
            if (it + 1) % (4 * n) == 0 {
                lower = lower.max(certify(&length));
            }
        }
        lower = lower.max(certify(&length));
        let congestion = load
            .iter()
            .zip(&capacity)
            .filter(|(l, _)| **l > 0.0)
            .map(|(l, c)| l / c)
            .fold(0.0, f64::max);
        let theta = if congestion > 0.0 {
            flow / congestion
        } else {
            0.0
        };
        let upper = if theta >= 1.0 {
            t_test
        } else if theta > 0.0 {
            t_test / theta
        } else {
            t_hi
        };
        MwuResult {
            lower,
            upper: upper.min(t_hi).max(lower),
            theta,
            root_flow,
        }
    }
}

/// What [`Relaxation::solve_mwu`] found (normalized times).
pub(crate) struct MwuResult {
    /// Certified lower bound on the relaxation (and on `T*`).
    pub lower: f64,
    /// Upper bound on the relaxation.
    pub upper: f64,
    /// The packing's throughput at `t_test`: it fits the capacities of `t_test / theta`
    /// where those grow in proportion with `T` (no latency).
    pub theta: f64,
    /// Flow the packing routed through every root (its share, unnormalized).
    pub root_flow: Vec<f64>,
}

/// The fluid optimum of a large network by multiplicative weights: a certified lower
/// bound (normalized like the master LP's `τ`), the relaxation's upper bound and the
/// packing's shares. Used by [`crate::bounds::fluid_optimum`] beyond [`LP_MAX_NODES`].
pub(crate) fn fluid_by_mwu(net: &NetworkModel, res: &Resources) -> MwuResult {
    let lat = Latencies::new(net, res);
    let solver = Relaxation::new(res, &lat, 1.0);
    // No windows and no latency: T_lo = 0 and the packing runs at the single-root
    // plan's time.
    let mut zero = solver;
    zero.use_latency = false;
    for l in zero.res_latency.iter_mut() {
        *l = 0.0;
    }
    let t_hi = zero.single_root_bandwidth();
    let mut m = zero.solve_mwu(0.0, t_hi, t_hi, false);
    // Without latency the capacities are `c · T`: the packing fits at `t_hi / θ` even
    // for `θ > 1`, a much tighter upper bound than `t_hi`.
    if m.theta > 0.0 {
        m.upper = (t_hi / m.theta).max(m.lower);
    }
    m
}
