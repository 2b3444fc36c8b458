//! Minimum-cost spanning arborescence (Chu–Liu/Edmonds) on small dense directed graphs.
//!
//! An *out-arborescence* rooted at `root` is a set of `n - 1` edges `parent[v] → v`, one
//! into every node except the root, such that following parents from any node reaches the
//! root. [`min_arborescence`] finds one of minimum total cost. For an *in*-arborescence
//! (edges `v → parent[v]`, everything flowing to the root) call it with the reversed cost
//! function `|u, v| cost(v, u)`.
//!
//! The implementation is the classic contraction algorithm on a dense `n × n` matrix:
//! every node picks its cheapest incoming edge; if those edges form no cycle they are the
//! answer, otherwise every cycle is contracted into one node (incoming costs reduced by the
//! cycle edge they would replace), the smaller problem is solved recursively and the
//! cycles are expanded again. Each level costs `O(n²)` and there are at most `n / 2`
//! levels, so the whole is `O(n³)` — a few microseconds for the `n ≤ 64` the planners use.
//! Ties are broken by the lowest node index, so the result is deterministic.

/// Minimum-cost out-arborescence of the complete-or-partial directed graph on `n` nodes
/// rooted at `root`. `cost(u, v)` is the cost of edge `u → v`, `None` if there is no such
/// edge (self-loops are never asked for). Returns the parent of every node (`None` exactly
/// at the root), or `None` if some node cannot be reached from the root or `root >= n`.
///
/// Costs must be finite; they may be negative.
pub fn min_arborescence(
    n: usize,
    root: usize,
    cost: &dyn Fn(usize, usize) -> Option<f64>,
) -> Option<Vec<Option<usize>>> {
    if root >= n {
        return None;
    }
    let mut matrix = vec![f64::INFINITY; n * n];
    for u in 0..n {
        for v in 0..n {
            if u != v {
                if let Some(c) = cost(u, v) {
                    matrix[u * n + v] = c;
                }
            }
        }
    }
    min_arborescence_matrix(n, root, &matrix)
}

/// [`min_arborescence`] on a row-major `n × n` cost matrix: `cost[u * n + v]` is the cost
/// of `u → v`, `f64::INFINITY` where there is no edge (the diagonal is ignored).
///
/// # Panics
/// If `cost.len() != n * n`.
pub fn min_arborescence_matrix(n: usize, root: usize, cost: &[f64]) -> Option<Vec<Option<usize>>> {
    assert_eq!(cost.len(), n * n, "cost matrix must be n × n");
    if root >= n {
        return None;
    }
    let parent = solve(n, root, cost.to_vec())?;
    let mut out: Vec<Option<usize>> = parent.into_iter().map(Some).collect();
    out[root] = None;
    Some(out)
}

/// Total cost of the arborescence `parent` under `cost` (`None` if it uses a missing edge).
pub fn arborescence_cost(
    parent: &[Option<usize>],
    cost: &dyn Fn(usize, usize) -> Option<f64>,
) -> Option<f64> {
    let mut total = 0.0;
    for (v, p) in parent.iter().enumerate() {
        if let Some(p) = *p {
            total += cost(p, v)?;
        }
    }
    Some(total)
}

/// One level of the contraction algorithm. `cost` is row-major `n × n` (infinite = no edge).
/// Returns the parent of every node; the entry for `root` is meaningless.
fn solve(n: usize, root: usize, mut cost: Vec<f64>) -> Option<Vec<usize>> {
    for v in 0..n {
        cost[v * n + v] = f64::INFINITY;
    }
    // 1. Cheapest incoming edge of every non-root node.
    let mut pre = vec![usize::MAX; n];
    for v in 0..n {
        if v == root {
            continue;
        }
        let mut best = f64::INFINITY;
        for u in 0..n {
            let c = cost[u * n + v];
            if c < best {
                best = c;
                pre[v] = u;
            }
        }
        if pre[v] == usize::MAX {
            return None; // nothing enters v: unreachable from the root
        }
    }
    // 2. Cycles among the chosen edges. `comp[v]` is the node of the contracted graph.
    const UNSET: usize = usize::MAX;
    let mut comp = vec![UNSET; n];
    let mut visit = vec![UNSET; n]; // which walk first reached the node
    let mut next_id = 0;
    let mut in_cycle = vec![false; n];
    for start in 0..n {
        let mut v = start;
        while v != root && visit[v] == UNSET && comp[v] == UNSET {
            visit[v] = start;
            v = pre[v];
        }
        if v != root && visit[v] == start && comp[v] == UNSET {
            // The walk closed a new cycle through v.
            let mut w = v;
            loop {
                comp[w] = next_id;
                in_cycle[w] = true;
                w = pre[w];
                if w == v {
                    break;
                }
            }
            next_id += 1;
        }
    }
    if next_id == 0 {
        return Some(pre);
    }
    for c in comp.iter_mut() {
        if *c == UNSET {
            *c = next_id;
            next_id += 1;
        }
    }
    // 3. Contract: the cheapest reduced edge between every pair of new nodes, remembering
    // which original edge it came from.
    let m = next_id;
    let mut reduced = vec![f64::INFINITY; m * m];
    let mut origin = vec![(usize::MAX, usize::MAX); m * m];
    for u in 0..n {
        let a = comp[u];
        for v in 0..n {
            let b = comp[v];
            if a == b {
                continue;
            }
            let c = cost[u * n + v];
            if !c.is_finite() {
                continue;
            }
            let c = if in_cycle[v] {
                c - cost[pre[v] * n + v]
            } else {
                c
            };
            if c < reduced[a * m + b] {
                reduced[a * m + b] = c;
                origin[a * m + b] = (u, v);
            }
        }
    }
    let sub = solve(m, comp[root], reduced)?;
    // 4. Expand: cycle nodes keep their cycle edge except the one the chosen edge enters.
    let mut parent = pre;
    for b in 0..m {
        if b == comp[root] {
            continue;
        }
        let (u, v) = origin[sub[b] * m + b];
        parent[v] = u;
    }
    Some(parent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_cheapest_edges_without_cycle() {
        // 0 → 1 → 2 is cheaper than 0 → 2.
        let cost = |u: usize, v: usize| -> Option<f64> {
            match (u, v) {
                (0, 1) => Some(1.0),
                (1, 2) => Some(1.0),
                (0, 2) => Some(5.0),
                (2, 1) => Some(0.5),
                _ => None,
            }
        };
        let p = min_arborescence(3, 0, &cost).unwrap();
        assert_eq!(p, vec![None, Some(0), Some(1)]);
    }

    #[test]
    fn breaks_a_cycle() {
        // 1 ↔ 2 is a cheap cycle; the root must enter it somewhere.
        let cost = |u: usize, v: usize| -> Option<f64> {
            match (u, v) {
                (1, 2) | (2, 1) => Some(1.0),
                (0, 1) => Some(10.0),
                (0, 2) => Some(7.0),
                _ => None,
            }
        };
        let p = min_arborescence(3, 0, &cost).unwrap();
        assert_eq!(p, vec![None, Some(2), Some(0)]);
        assert_eq!(arborescence_cost(&p, &cost), Some(8.0));
    }

    #[test]
    fn unreachable_node_gives_none() {
        let cost = |u: usize, v: usize| -> Option<f64> { (u == 0 && v == 1).then_some(1.0) };
        assert_eq!(min_arborescence(3, 0, &cost), None);
        assert_eq!(min_arborescence(2, 5, &cost), None);
        assert_eq!(min_arborescence(1, 0, &cost), Some(vec![None]));
    }
}
