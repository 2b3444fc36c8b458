//! `netstorm status`: what a running cluster is doing, from every node's metrics endpoint
//! (the nodes' `metrics` addresses; see [`crate::metrics`]).
//!
//! Each endpoint is fetched with `ureq` and parsed with `prometheus-parse`; a node without a
//! `metrics` address, or one that does not answer within the timeout, is reported as such
//! (an alert), never waited on. The endpoints are plain HTTP today: serve them on a
//! management network or loopback until the control channel is authenticated.

use crate::config::ClusterConfig;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// One node as its metrics endpoint reports it.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct NodeStatus {
    pub name: String,
    /// `None` when the node was read; else why not.
    pub unreachable: Option<String>,
    pub dp_up: bool,
    pub coordinator_connected: bool,
    pub installed_epoch: u64,
    pub active_epoch: u64,
    pub rounds_completed: u64,
    /// Mean round duration at the dp so far, seconds (`None` before the first round).
    pub round_mean_s: Option<f64>,
    pub sent_bytes: u64,
    pub received_bytes: u64,
    pub retransmits: u64,
    pub auth_failures: u64,
    /// Datagrams dropped as malformed, from unknown peers, of a stale epoch or payload type.
    pub dropped_datagrams: u64,
}

/// The cluster as its nodes report it.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ClusterStatus {
    pub members: Vec<String>,
    pub leader: String,
    pub committed_epoch: Option<u64>,
    pub nodes: Vec<NodeStatus>,
    /// The coordinator's link estimates, `"a->b"` → Mbit/s (empty when its node is not read).
    pub link_estimates_mbps: BTreeMap<String, f64>,
    pub alerts: Vec<String>,
}

/// Reads every node's metrics endpoint (each within `timeout`).
pub fn query(cfg: &ClusterConfig, timeout: Duration) -> ClusterStatus {
    let agent = ureq::AgentBuilder::new().timeout(timeout).build();
    let leader = cfg.nodes[cfg.coordinator as usize].name.clone();
    let mut st = ClusterStatus {
        members: cfg.nodes.iter().map(|n| n.name.clone()).collect(),
        leader: leader.clone(),
        ..Default::default()
    };
    for node in &cfg.nodes {
        let mut ns = NodeStatus {
            name: node.name.clone(),
            ..Default::default()
        };
        let scraped = match node.metrics {
            None => Err("no `metrics` address in the config".to_string()),
            Some(addr) => fetch(&agent, &format!("http://{addr}/metrics")),
        };
        match scraped {
            Err(e) => {
                st.alerts.push(format!("{}: not read: {e}", node.name));
                ns.unreachable = Some(e);
            }
            Ok(scrape) => {
                let v = |name: &str| value(&scrape, name).unwrap_or(0.0);
                let n = |name: &str| v(name) as u64;
                ns.dp_up = v("netstorm_dp_up") == 1.0;
                ns.coordinator_connected = v("netstorm_coordinator_connected") == 1.0;
                ns.installed_epoch = n("netstorm_policy_epoch_installed");
                ns.active_epoch = n("netstorm_policy_epoch_active");
                ns.rounds_completed = n("netstorm_rounds_completed_total");
                let (sum, count) = (
                    v("netstorm_round_duration_seconds_sum"),
                    v("netstorm_round_duration_seconds_count"),
                );
                ns.round_mean_s = (count > 0.0).then(|| sum / count);
                ns.sent_bytes = n("netstorm_sent_bytes_total");
                ns.received_bytes = n("netstorm_received_bytes_total");
                ns.retransmits = n("netstorm_retransmits_total");
                ns.auth_failures = n("netstorm_auth_failures_total");
                ns.dropped_datagrams = [
                    "netstorm_malformed_datagrams_total",
                    "netstorm_unknown_peer_datagrams_total",
                    "netstorm_stale_epoch_datagrams_total",
                    "netstorm_wrong_payload_datagrams_total",
                ]
                .iter()
                .map(|m| n(m))
                .sum();
                if !ns.dp_up {
                    st.alerts.push(format!(
                        "{}: the dp's counters file is not readable (dp down?)",
                        node.name
                    ));
                }
                if !ns.coordinator_connected {
                    st.alerts.push(format!(
                        "{}: its cp is not connected to the coordinator",
                        node.name
                    ));
                }
                if ns.auth_failures > 0 {
                    st.alerts.push(format!(
                        "{}: {} datagrams failed authentication (forged, or a peer with another key)",
                        node.name, ns.auth_failures
                    ));
                }
                if node.name == leader {
                    st.committed_epoch =
                        value(&scrape, "netstorm_coordinator_committed_epoch").map(|e| e as u64);
                    for s in scrape.samples.iter().filter(|s| {
                        s.metric == "netstorm_coordinator_link_estimate_bits_per_second"
                    }) {
                        if let (Some(from), Some(to), Some(bps)) =
                            (s.labels.get("from"), s.labels.get("to"), plain(&s.value))
                        {
                            st.link_estimates_mbps
                                .insert(format!("{from}->{to}"), bps / 1e6);
                        }
                    }
                }
            }
        }
        st.nodes.push(ns);
    }
    let epochs: Vec<u64> = st
        .nodes
        .iter()
        .filter(|n| n.unreachable.is_none() && n.dp_up)
        .map(|n| n.installed_epoch)
        .collect();
    if epochs.windows(2).any(|w| w[0] != w[1]) {
        st.alerts.push(format!("nodes hold different policy epochs: {epochs:?} (an install in flight, or a node left behind)"));
    }
    st
}

fn fetch(agent: &ureq::Agent, url: &str) -> Result<prometheus_parse::Scrape, String> {
    let body = agent
        .get(url)
        .call()
        .map_err(|e| format!("{url}: {e}"))?
        .into_string()
        .map_err(|e| format!("{url}: {e}"))?;
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .map_err(|e| format!("{url}: not Prometheus text: {e}"))
}

fn plain(v: &prometheus_parse::Value) -> Option<f64> {
    match v {
        prometheus_parse::Value::Counter(x)
        | prometheus_parse::Value::Gauge(x)
        | prometheus_parse::Value::Untyped(x) => Some(*x),
        _ => None,
    }
}

/// The first sample named `name` without labels beyond what the metric always has.
fn value(s: &prometheus_parse::Scrape, name: &str) -> Option<f64> {
    if let Some(x) = s
        .samples
        .iter()
        .find(|x| x.metric == name)
        .and_then(|x| plain(&x.value))
    {
        return Some(x);
    }
    // Histogram sum/count are folded into the histogram sample by the parser.
    let (base, part) = name.rsplit_once('_')?;
    let h = s.samples.iter().find(|x| x.metric == base)?;
    match (&h.value, part) {
        (prometheus_parse::Value::Histogram(b), "count") => b.last().map(|b| b.count),
        _ => None,
    }
}

/// The status as the terminal shows it.
pub fn render_text(st: &ClusterStatus) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "members: {} (leader {}); committed epoch {}",
        st.members.join(", "),
        st.leader,
        st.committed_epoch.map_or("?".into(), |e| e.to_string())
    );
    let _ = writeln!(
        o,
        "{:<12} {:>6} {:>6} {:>8} {:>10} {:>10} {:>10} {:>8} {:>6} {:>8}",
        "node",
        "dp",
        "epoch",
        "rounds",
        "round ms",
        "sent MB",
        "recv MB",
        "retx",
        "auth!",
        "dropped"
    );
    for n in &st.nodes {
        if n.unreachable.is_some() {
            let _ = writeln!(o, "{:<12} {:>6}", n.name, "?");
            continue;
        }
        let _ = writeln!(
            o,
            "{:<12} {:>6} {:>6} {:>8} {:>10} {:>10.1} {:>10.1} {:>8} {:>6} {:>8}",
            n.name,
            if n.dp_up { "up" } else { "down" },
            n.installed_epoch,
            n.rounds_completed,
            n.round_mean_s
                .map_or("-".into(), |s| format!("{:.2}", s * 1e3)),
            n.sent_bytes as f64 / 1e6,
            n.received_bytes as f64 / 1e6,
            n.retransmits,
            n.auth_failures,
            n.dropped_datagrams
        );
    }
    if !st.link_estimates_mbps.is_empty() {
        let _ = writeln!(o, "link estimates (coordinator), Mbit/s:");
        for (l, m) in &st.link_estimates_mbps {
            let _ = writeln!(o, "  {l:<24} {m:>10.2}");
        }
    }
    if st.alerts.is_empty() {
        let _ = writeln!(o, "no alerts");
    } else {
        let _ = writeln!(o, "alerts:");
        for a in &st.alerts {
            let _ = writeln!(o, "  {a}");
        }
    }
    o
}
