//! Pieces every `bench dataplane` backend shares: node roles and inputs, the topology and
//! policy, the engines, histograms, the core plan, pinning and per-thread CPU time.

use super::{BenchError, DataplaneBenchConfig, Latency};
use hdrhistogram::Histogram;
use netstorm_dataplane::engine::{Engine, EngineConfig};
use netstorm_dataplane::policy::{ForwardMode, Policy, PolicyBuilder};
use netstorm_dataplane::topology::{Link, Node, Topology};
use netstorm_dataplane::NodeId;
use std::sync::OnceLock;

pub(super) fn aggregator(children: usize) -> NodeId {
    children as NodeId
}

pub(super) fn root(children: usize) -> NodeId {
    children as NodeId + 1
}

pub(super) fn node_name(children: usize, v: usize) -> String {
    if v < children {
        format!("child{v}")
    } else if v == children {
        "aggregator".into()
    } else {
        "root".into()
    }
}

/// Child `v`'s input for element `i` of round `r` (small integers: sums are exact in f32);
/// the aggregator and the root contribute zeros, so every result is the children's sum.
pub(super) fn input(children: usize, v: usize, r: u64, i: usize) -> f32 {
    if v >= children {
        0.0
    } else {
        ((v as u64 * 31 + i as u64 * 3 + r * 7) & 1023) as f32
    }
}

pub(super) fn expected(children: usize, r: u64, i: usize) -> f32 {
    (0..children).map(|v| input(children, v, r, i)).sum()
}

/// Whether `buf` holds round `r`'s reference sums, bit for bit.
pub(super) fn sums_match(children: usize, r: u64, buf: &[f32]) -> bool {
    buf.iter()
        .enumerate()
        .all(|(i, &x)| x.to_bits() == expected(children, r, i).to_bits())
}

pub(super) fn bench_topology(children: usize, rate_bps: f64, latency_ns: u64) -> Topology {
    let n = children + 2;
    let nodes = (0..n)
        .map(|i| Node {
            name: node_name(children, i),
            egress_bps: None,
            ingress_bps: None,
        })
        .collect();
    let agg = aggregator(children);
    let mut links = Vec::new();
    let mut link = |from: NodeId, to: NodeId| {
        links.push(Link {
            from,
            to,
            rate_bps,
            latency_ns,
            loss: 0.0,
        })
    };
    for c in 0..children as NodeId {
        link(c, agg);
        link(agg, c);
    }
    link(agg, root(children));
    link(root(children), agg);
    Topology { nodes, links }
}

/// One tree: children → aggregator → root (reduce) and back (broadcast).
pub(super) fn bench_policy(children: usize, topo: &Topology) -> Policy {
    let n = children + 2;
    let agg = aggregator(children);
    let mut reduce = vec![Some(agg); n];
    reduce[agg as usize] = Some(root(children));
    reduce[root(children) as usize] = None;
    let mut bcast = reduce.clone();
    bcast[agg as usize] = Some(root(children));
    let mut b = PolicyBuilder::new();
    b.tree(root(children), 1.0, &reduce, &bcast, ForwardMode::Pipelined);
    b.link_rates_from(topo);
    b.build(1, n as u16)
}

/// Every node's engine, and the policy. Each engine in `install` has the policy installed
/// (activating at round 0); the others get it elsewhere (netstorm-dp's worker takes it from
/// its policy channel).
pub(super) fn bench_engines(
    a: &DataplaneBenchConfig,
    topo: &Topology,
    real_time: bool,
    install: impl Fn(usize) -> bool,
) -> Result<(Vec<Engine>, Policy), BenchError> {
    let n = a.children + 2;
    let policy = bench_policy(a.children, topo);
    policy
        .validate(topo)
        .map_err(|e| BenchError::Run(format!("bench policy: {e}")))?;
    let engines = (0..n)
        .map(|v| {
            let elems = a.segment_bytes / 4;
            let mut cfg = EngineConfig::new(v as NodeId, n as u16, elems * a.segments_per_round);
            cfg.segment_elems = elems;
            cfg.protection = netstorm_dataplane::protect::Protection::insecure(a.protection_mode());
            if real_time {
                // Loopback/ring RTTs are microseconds: do not wait 200 ms for a first RTO.
                cfg.initial_rto_ns = 20_000_000;
                cfg.min_rto_ns = 2_000_000;
                // A round ends only when every send is acknowledged: with the WAN default
                // (500 us) the last acks of every round would wait that long.
                cfg.ack_delay_ns = 20_000;
            }
            let mut e =
                Engine::new(cfg, topo).map_err(BenchError::engine(format!("engine {v}")))?;
            if install(v) {
                e.install_policy(policy.clone(), 0)
                    .map_err(BenchError::engine(format!("engine {v}")))?;
            }
            Ok(e)
        })
        .collect::<Result<_, BenchError>>()?;
    Ok((engines, policy))
}

pub(super) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid histogram bounds")
}

pub(super) fn latency_of(h: &Histogram<u64>, what: &str) -> Latency {
    let us = |ns: u64| ns as f64 / 1e3;
    Latency {
        what: what.into(),
        samples: h.len(),
        p50_us: us(h.value_at_quantile(0.5)),
        p99_us: us(h.value_at_quantile(0.99)),
        p999_us: us(h.value_at_quantile(0.999)),
        max_us: us(h.max()),
    }
}

fn core_ids() -> &'static [core_affinity::CoreId] {
    static CORES: OnceLock<Vec<core_affinity::CoreId>> = OnceLock::new();
    CORES.get_or_init(|| core_affinity::get_core_ids().unwrap_or_default())
}

/// Core plan: with two or more cores the aggregator gets the first one alone and every other
/// thread shares the rest (round robin); with one core nothing is pinned.
#[derive(Debug, Clone)]
pub(super) struct CorePlan {
    pub cores: Vec<usize>,
}

impl CorePlan {
    pub fn new() -> Self {
        Self {
            cores: core_ids().iter().map(|c| c.id).collect(),
        }
    }
    pub fn pinned(&self) -> bool {
        self.cores.len() >= 2
    }
    pub fn aggregator_core(&self) -> Option<usize> {
        self.pinned().then(|| self.cores[0])
    }
    /// Core of the `k`-th non-aggregator thread.
    pub fn other_core(&self, k: usize) -> Option<usize> {
        self.pinned()
            .then(|| self.cores[1 + k % (self.cores.len() - 1)])
    }
    /// Distinct cores used by the aggregator plus `others` threads.
    pub fn used(&self, others: usize) -> usize {
        if self.pinned() {
            1 + others.min(self.cores.len() - 1)
        } else {
            self.cores.len().max(1)
        }
    }
    /// Whether `others` non-aggregator nodes would have to share cores.
    pub fn others_share(&self, others: usize) -> bool {
        !self.pinned() || others > self.cores.len() - 1
    }
}

pub(super) fn pin_to(core: Option<usize>) -> bool {
    match core {
        Some(id) => core_affinity::set_for_current(core_affinity::CoreId { id }),
        None => false,
    }
}

/// CPU time the calling thread has consumed, from /proc/thread-self/schedstat (ns).
pub(super) fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

pub(super) fn cpu_delta(start: Option<u64>) -> Option<f64> {
    Some(thread_cpu_ns()?.checked_sub(start?)? as f64 / 1e9)
}
