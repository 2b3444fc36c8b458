//! Few trees: prune a plan to a small number of trees and re-solve the shares.
//!
//! Every tree costs per-tree state, pacing and acknowledgements in the data plane, and a
//! deep tree sets the plan's latency term, while shares as small as 0.0002 carry almost
//! nothing. [`prune`] removes trees one at a time, each time the one whose removal (with
//! the shares of the rest re-solved by a small LP: `min max load / capacity`, `Σ s = 1`)
//! leaves the lowest [`Plan::modeled_time`] — among the few smallest shares and the trees
//! that set the latency term — until the plan has at most `max_trees` trees. It never
//! accepts a plan whose cost exceeds the unpruned one's by more than `tolerance`
//! (relative): then it keeps the trees it has. The cost is
//! [`super::ModeledTime::weighted_s`] (the planner's: bandwidth weighted, plus latency).
//! The work is bounded (share LPs × links): on large networks with hundreds of trees it
//! stops early rather than take seconds.

use super::{Plan, PlannedTree};
use crate::network::NetworkModel;
use good_lp::{clarabel, variable, Expression, ProblemVariables, Solution, SolverModel, Variable};

/// Removal candidates tried per step among the smallest shares.
const SMALLEST_CANDIDATES: usize = 3;

/// Work budget of one pruning, in share-LP solves × links: every LP has a row per link
/// in use, so on large networks pruning stops earlier (about 220 LPs on a 10-site mesh,
/// 20 on a 64-site sparse WAN) and leaves the plan with more trees rather than taking
/// seconds.
const LP_WORK_BUDGET: usize = 20_000;

/// Interior-point tolerance of the share LPs.
const LP_TOLERANCE: f64 = 1e-8;

/// `plan` with at most `max_trees` trees (see the module documentation), or with fewer
/// removals where more would raise the modeled time by more than `tolerance`.
pub fn prune(
    plan: &Plan,
    net: &NetworkModel,
    model_bits: f64,
    max_trees: usize,
    tolerance: f64,
    bandwidth_weight: f64,
) -> Plan {
    let max_trees = max_trees.max(1);
    // Identical trees (same root and routes) are one tree with the summed share: the same
    // loads and latency, so merging them is free.
    let merged = merge_identical(plan);
    let plan = &merged;
    let base = plan
        .modeled_time(net, model_bits)
        .weighted_s(bandwidth_weight);
    let limit = base * (1.0 + tolerance);
    // Loads of every tree with the whole model on it, computed once.
    let unit: Vec<Vec<f64>> = plan
        .trees
        .iter()
        .map(|t| {
            let one = Plan {
                planner: plan.planner.clone(),
                trees: vec![PlannedTree {
                    share: 1.0,
                    ..t.clone()
                }],
            };
            one.link_loads_bits(net, model_bits)
        })
        .collect();
    let solves_left =
        std::cell::Cell::new((LP_WORK_BUDGET / net.topology.links.len().max(1)).max(4));
    let resolve = |keep: &[usize]| -> Option<(Plan, f64)> {
        if solves_left.get() == 0 {
            return None;
        }
        solves_left.set(solves_left.get() - 1);
        resolve(plan, net, model_bits, bandwidth_weight, &unit, keep)
    };
    // `current[j]` is the index in `plan.trees` of `best_plan.trees[j]`.
    let mut current: Vec<usize> = (0..plan.trees.len()).collect();
    let mut best_plan = plan.clone();
    // Re-solving the shares alone may already help (and drops unused trees).
    if let Some((p, t)) = resolve(&current) {
        if t <= base {
            current = p
                .trees
                .iter()
                .filter_map(|pt| plan.trees.iter().position(|x| same_tree(x, pt)))
                .collect();
            best_plan = p;
        }
    }
    // Bulk first: the heaviest `m` trees for growing `m`, then one at a time.
    let mut by_weight: Vec<usize> = (0..best_plan.trees.len()).collect();
    by_weight.sort_by(|&a, &b| {
        best_plan.trees[b]
            .share
            .total_cmp(&best_plan.trees[a].share)
    });
    let mut m = max_trees;
    while m < best_plan.trees.len() {
        let keep: Vec<usize> = by_weight.iter().take(m).map(|&j| current[j]).collect();
        if let Some((p, t)) = resolve(&keep) {
            if t <= limit {
                current = p
                    .trees
                    .iter()
                    .filter_map(|pt| plan.trees.iter().position(|x| same_tree(x, pt)))
                    .collect();
                best_plan = p;
                break;
            }
        }
        m *= 2;
    }
    // One at a time while the budget lasts, from a few dozen trees or where the budget can
    // still reach `max_trees` (from hundreds of trees on a 64-site WAN it cannot: then
    // stop at once instead of spending it).
    while best_plan.trees.len() > max_trees
        && solves_left.get() > SMALLEST_CANDIDATES
        && (best_plan.trees.len() <= 8 * max_trees
            || solves_left.get() >= (best_plan.trees.len() - max_trees) * (SMALLEST_CANDIDATES + 1))
    {
        let mut candidates: Vec<usize> = Vec::new();
        let mut by_share: Vec<usize> = (0..best_plan.trees.len()).collect();
        by_share.sort_by(|&a, &b| {
            best_plan.trees[a]
                .share
                .total_cmp(&best_plan.trees[b].share)
        });
        candidates.extend(by_share.iter().take(SMALLEST_CANDIDATES));
        let depths: Vec<f64> = best_plan
            .trees
            .iter()
            .map(|t| tree_latency(t, net))
            .collect();
        let deepest = depths.iter().cloned().fold(0.0, f64::max);
        if deepest > 0.0 {
            for (i, &d) in depths.iter().enumerate() {
                if d >= deepest * (1.0 - 1e-9) && !candidates.contains(&i) {
                    candidates.push(i);
                }
            }
        }
        let mut step: Option<(f64, Plan, Vec<usize>)> = None;
        for c in candidates {
            let keep: Vec<usize> = current
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != c)
                .map(|(_, &i)| i)
                .collect();
            if keep.is_empty() {
                continue;
            }
            if let Some((p, t)) = resolve(&keep) {
                if step.as_ref().is_none_or(|s| t < s.0) {
                    let kept = p
                        .trees
                        .iter()
                        .filter_map(|pt| plan.trees.iter().position(|x| same_tree(x, pt)))
                        .collect();
                    step = Some((t, p, kept));
                }
            }
        }
        match step {
            Some((t, p, kept)) if t <= limit && p.trees.len() < best_plan.trees.len() => {
                best_plan = p;
                current = kept;
            }
            _ => break,
        }
    }
    best_plan
}

/// `plan` with every group of identical trees (apart from the share) merged into the first.
fn merge_identical(plan: &Plan) -> Plan {
    let mut trees: Vec<PlannedTree> = Vec::with_capacity(plan.trees.len());
    for t in &plan.trees {
        match trees.iter_mut().find(|x| same_tree(x, t)) {
            Some(x) => x.share += t.share,
            None => trees.push(t.clone()),
        }
    }
    Plan {
        planner: plan.planner.clone(),
        trees,
    }
}

/// Same tree apart from its share.
fn same_tree(a: &PlannedTree, b: &PlannedTree) -> bool {
    a.root == b.root
        && a.reduce_route == b.reduce_route
        && a.broadcast_route == b.broadcast_route
        && a.forward == b.forward
        && a.multipath == b.multipath
}

/// Deepest reduce + broadcast latency of one tree, seconds.
fn tree_latency(t: &PlannedTree, net: &NetworkModel) -> f64 {
    let one = Plan {
        planner: String::new(),
        trees: vec![PlannedTree {
            share: 1.0,
            ..t.clone()
        }],
    };
    one.modeled_time(net, 0.0).latency_s
}

/// The plan of trees `keep` (indices into `plan.trees`) with the shares minimizing the most
/// loaded resource; trees left without share are dropped. Returns it with its modeled
/// time, `None` if the LP fails.
fn resolve(
    plan: &Plan,
    net: &NetworkModel,
    model_bits: f64,
    bandwidth_weight: f64,
    unit: &[Vec<f64>],
    keep: &[usize],
) -> Option<(Plan, f64)> {
    let topo = &net.topology;
    let mut vars = ProblemVariables::new();
    let tau = vars.add(variable().min(0.0));
    let s: Vec<Variable> = keep.iter().map(|_| vars.add(variable().min(0.0))).collect();
    let mut model = vars.minimise(tau).using(clarabel);
    model
        .settings()
        .verbose(false)
        .tol_gap_abs(LP_TOLERANCE)
        .tol_gap_rel(LP_TOLERANCE)
        .tol_feas(LP_TOLERANCE)
        .max_iter(200);
    let mut total = Expression::default();
    for &v in &s {
        total.add_mul(1.0, v);
    }
    model.add_constraint(total.eq(1.0));
    // Loads in units of the model over capacities in units of the fastest link, so the
    // coefficients are O(1).
    let scale = topo
        .links
        .iter()
        .map(|l| l.rate_bps)
        .fold(0.0, f64::max)
        .max(1.0);
    let mut egress = vec![Expression::default(); topo.nodes.len()];
    let mut ingress = vec![Expression::default(); topo.nodes.len()];
    for (k, l) in topo.links.iter().enumerate() {
        let mut e = Expression::default();
        let mut any = false;
        for (j, &i) in keep.iter().enumerate() {
            let bits = unit[i][k];
            if bits > 0.0 {
                e.add_mul(bits / model_bits, s[j]);
                egress[l.from as usize].add_mul(bits / model_bits, s[j]);
                ingress[l.to as usize].add_mul(bits / model_bits, s[j]);
                any = true;
            }
        }
        if any {
            if l.rate_bps <= 0.0 {
                return None;
            }
            e.add_mul(-l.rate_bps / scale, tau);
            model.add_constraint(e.leq(0.0));
        }
    }
    for (v, node) in topo.nodes.iter().enumerate() {
        for (cap, e) in [
            (node.egress_bps, &egress[v]),
            (node.ingress_bps, &ingress[v]),
        ] {
            if let Some(cap) = cap {
                let mut e = e.clone();
                e.add_mul(-cap / scale, tau);
                model.add_constraint(e.leq(0.0));
            }
        }
    }
    let sol = model.solve().ok()?;
    let mut trees: Vec<PlannedTree> = Vec::new();
    for (j, &i) in keep.iter().enumerate() {
        let share = sol.value(s[j]);
        if share > 1e-9 {
            trees.push(PlannedTree {
                share,
                ..plan.trees[i].clone()
            });
        }
    }
    let sum: f64 = trees.iter().map(|t| t.share).sum();
    if trees.is_empty() || sum.is_nan() || sum <= 0.0 {
        return None;
    }
    for t in trees.iter_mut() {
        t.share /= sum;
    }
    if let Some((last, rest)) = trees.split_last_mut() {
        let rest: f64 = rest.iter().map(|t| t.share).sum();
        last.share = (1.0 - rest).max(0.0);
    }
    let pruned = Plan {
        planner: plan.planner.clone(),
        trees,
    };
    let t = pruned
        .modeled_time(net, model_bits)
        .weighted_s(bandwidth_weight);
    Some((pruned, t))
}
