//! Prometheus metrics of one node, served by its `netstorm-cp` at the node's optional
//! `metrics = "IP:PORT"` (`GET /metrics`, OpenMetrics text, which Prometheus scrapes).
//!
//! Nothing here touches the data plane's hot path: a scrape reads the dp's counters file
//! (`<shm_dir>/netstorm-<job>-<node>.dp-stats.json`, rewritten every 500 ms), the
//! coordinator's counters file on the coordinator's node, and a small [`CpMetrics`] state the
//! cp's loop updates (epochs, link estimates from its dp's telemetry, round durations it
//! observes through the node file at its 1 ms poll). Encoding is `prometheus-client`'s; HTTP
//! is `tiny_http`'s (one thread, requests answered in turn; no home-made parser).

use crate::config::ClusterConfig;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

type Labels = Vec<(String, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// What the cp's loop knows that no counters file holds.
#[derive(Debug, Default)]
pub struct CpMetrics {
    pub installed_epoch: u64,
    pub active_epoch: u64,
    pub coordinator_connected: bool,
    pub telemetry_messages: u64,
    /// Latest estimate of each link this node's dp measures (bit/s, and whether it is only a
    /// lower bound: the senders' pace, not the link, set it), by `(from, to)` name.
    pub link_estimate_bps: BTreeMap<(String, String), (f64, bool)>,
}

/// Round durations as a histogram the dp keeps in its counters file (a round's duration:
/// from the first of its workers starting it to the last completing it, engine clock).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RoundDurations {
    /// Upper bounds of the buckets, seconds (the last bucket, `counts[upper_s.len()]`, is
    /// everything above).
    pub upper_s: Vec<f64>,
    /// Rounds per bucket (not cumulative).
    pub counts: Vec<u64>,
    pub sum_s: f64,
    pub count: u64,
}

impl Default for RoundDurations {
    fn default() -> Self {
        // 1 ms .. ~33 s, doubling.
        let upper_s: Vec<f64> = (0..16).map(|i| 0.001 * f64::from(1u32 << i)).collect();
        Self {
            counts: vec![0; upper_s.len() + 1],
            upper_s,
            sum_s: 0.0,
            count: 0,
        }
    }
}

impl RoundDurations {
    pub fn observe(&mut self, secs: f64) {
        let i = self.upper_s.partition_point(|&u| u < secs);
        self.counts[i] += 1;
        self.sum_s += secs;
        self.count += 1;
    }
}

impl EncodeMetric for RoundDurations {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = self
            .upper_s
            .iter()
            .copied()
            .chain([f64::MAX])
            .zip(self.counts.iter().copied())
            .collect();
        encoder.encode_histogram::<()>(self.sum_s, self.count, &buckets, None)
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Shared between the cp loop (writer) and the metrics thread (reader, once per scrape).
pub type SharedCpMetrics = Arc<Mutex<CpMetrics>>;

/// Starts the metrics thread on `addr`. Errors (the address cannot be bound) are returned
/// at once so the cp refuses to start rather than run unobserved.
pub fn serve(
    addr: SocketAddr,
    cfg: ClusterConfig,
    node: String,
    state: SharedCpMetrics,
) -> anyhow::Result<()> {
    let server = tiny_http::Server::http(addr)
        .map_err(|e| anyhow::anyhow!("metrics: binding {addr}: {e}"))?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for req in server.incoming_requests() {
                let response = if req.url() == "/metrics" || req.url().starts_with("/metrics?") {
                    let body = render(&cfg, &node, &state);
                    let header = tiny_http::Header::from_bytes(
                        "Content-Type",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )
                    .expect("static header");
                    tiny_http::Response::from_string(body).with_header(header)
                } else {
                    tiny_http::Response::from_string("see /metrics\n").with_status_code(404)
                };
                let _ = req.respond(response);
            }
        })?;
    Ok(())
}

fn counter(reg: &mut Registry, name: &str, help: &str, v: u64) {
    let c: Counter = Counter::default();
    c.inc_by(v);
    reg.register(name, help, c);
}

fn gauge(reg: &mut Registry, name: &str, help: &str, v: i64) {
    let g: Gauge = Gauge::default();
    g.set(v);
    reg.register(name, help, g);
}

fn read_json(path: PathBuf) -> Option<serde_json::Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// The exposition of one scrape.
pub fn render(cfg: &ClusterConfig, node: &str, state: &SharedCpMetrics) -> String {
    let mut reg = Registry::with_prefix("netstorm");
    let s = state.lock().unwrap_or_else(|e| e.into_inner());
    gauge(
        &mut reg,
        "policy_epoch_installed",
        "Newest policy epoch the dp holds",
        s.installed_epoch as i64,
    );
    gauge(
        &mut reg,
        "policy_epoch_active",
        "Epoch of the round the dp runs",
        s.active_epoch as i64,
    );
    gauge(
        &mut reg,
        "coordinator_connected",
        "1 while this cp holds a connection to the coordinator",
        i64::from(s.coordinator_connected),
    );
    counter(
        &mut reg,
        "telemetry_messages",
        "Telemetry messages sent to the coordinator",
        s.telemetry_messages,
    );
    let estimates = Family::<Labels, FloatGauge>::default();
    for ((from, to), (bps, lower_bound)) in &s.link_estimate_bps {
        let kind = if *lower_bound {
            "lower_bound"
        } else {
            "capacity"
        };
        estimates
            .get_or_create(&vec![
                ("from".into(), from.clone()),
                ("to".into(), to.clone()),
                ("kind".into(), kind.into()),
            ])
            .set(*bps);
    }
    reg.register(
        "link_estimate_bits_per_second",
        "Latest rate estimate of each link this node's dp measures",
        estimates,
    );
    drop(s);
    // Membership: static today (every configured node), and who coordinates.
    gauge(
        &mut reg,
        "members",
        "Nodes in the job's membership",
        cfg.nodes.len() as i64,
    );
    let leader = Family::<Labels, Gauge>::default();
    leader
        .get_or_create(&vec![(
            "node".into(),
            cfg.nodes[cfg.coordinator as usize].name.clone(),
        )])
        .set(1);
    reg.register("leader", "The node whose cp coordinates (value 1)", leader);

    let dp_file = cfg
        .shm_dir
        .join(format!("netstorm-{}-{node}.dp-stats.json", cfg.job));
    match read_json(dp_file) {
        Some(dp) => {
            let u = |k: &str| dp[k].as_u64().unwrap_or(0);
            gauge(
                &mut reg,
                "dp_up",
                "1 when the dp's counters file is readable",
                1,
            );
            if let Ok(h) = serde_json::from_value::<RoundDurations>(dp["round_durations"].clone()) {
                reg.register_with_unit(
                    "round_duration",
                    "Round time at this node's dp: first worker starting it to the last completing it",
                    Unit::Seconds,
                    h,
                );
            }
            for (name, key, help) in DP_COUNTERS {
                counter(&mut reg, name, help, u(key));
            }
        }
        None => gauge(
            &mut reg,
            "dp_up",
            "1 when the dp's counters file is readable",
            0,
        ),
    }
    if cfg.nodes[cfg.coordinator as usize].name == node {
        let file = cfg
            .shm_dir
            .join(format!("netstorm-{}.coordinator.json", cfg.job));
        if let Some(c) = read_json(file) {
            let u = |k: &str| c[k].as_u64().unwrap_or(0);
            for (name, key, help) in COORDINATOR_COUNTERS {
                counter(&mut reg, name, help, u(key));
            }
            gauge(
                &mut reg,
                "coordinator_committed_epoch",
                "Epoch of the committed policy",
                u("committed_epoch") as i64,
            );
            let links = Family::<Labels, FloatGauge>::default();
            for (name, mbps) in c["estimate_mbps"].as_object().into_iter().flatten() {
                if let Some((from, to)) = name.split_once("->") {
                    links
                        .get_or_create(&vec![
                            ("from".into(), from.into()),
                            ("to".into(), to.into()),
                        ])
                        .set(mbps.as_f64().unwrap_or(0.0) * 1e6);
                }
            }
            reg.register(
                "coordinator_link_estimate_bits_per_second",
                "The coordinator's current estimate of each link (what it plans with)",
                links,
            );
        }
    }
    let mut out = String::new();
    encode(&mut out, &reg).expect("writing to a String");
    out
}

/// `(metric name without _total, dp counters-file key, help)`.
const DP_COUNTERS: &[(&str, &str, &str)] = &[
    (
        "rounds_completed",
        "rounds_completed",
        "Rounds completed at every worker",
    ),
    (
        "datagrams_received",
        "rx_datagrams",
        "Datagrams the dp's ports received",
    ),
    (
        "datagrams_sent",
        "tx_datagrams",
        "Datagrams the dp's ports sent",
    ),
    (
        "received_bytes",
        "rx_bytes",
        "Bytes of datagrams the engines accepted",
    ),
    (
        "sent_bytes",
        "tx_bytes",
        "Bytes of datagrams the engines sent",
    ),
    ("retransmits", "tx_retransmits", "Data segments sent again"),
    (
        "losses_detected",
        "loss_detected",
        "Segments declared lost (duplicate acks, tail timer, RTO)",
    ),
    (
        "auth_failures",
        "rx_bad_mac",
        "Datagrams whose packet MAC did not verify (dropped)",
    ),
    (
        "malformed_datagrams",
        "rx_malformed",
        "Datagrams that did not parse (dropped)",
    ),
    (
        "unknown_peer_datagrams",
        "rx_unknown_peer",
        "Datagrams from addresses of no configured node (dropped)",
    ),
    (
        "stale_epoch_datagrams",
        "rx_stale_epoch",
        "Datagrams of an older policy epoch (dropped)",
    ),
    (
        "wrong_payload_datagrams",
        "rx_wrong_payload",
        "Data packets of another payload type than the job's wire (dropped)",
    ),
    (
        "port_dropped_datagrams",
        "rx_port_dropped",
        "Datagrams the port dropped before the engine saw them",
    ),
    (
        "policy_errors",
        "policy_errors",
        "Policy records the dp refused",
    ),
    (
        "saturated_values",
        "saturated",
        "Finite values that saturated when encoded to a 16-bit wire",
    ),
    (
        "nonfinite_inputs",
        "nonfinite_inputs",
        "NaN or infinite values in the trainer's gradients",
    ),
];

const COORDINATOR_COUNTERS: &[(&str, &str, &str)] = &[
    (
        "coordinator_proposals",
        "proposals",
        "Policies the coordinator proposed",
    ),
    ("coordinator_commits", "commits", "Policies committed"),
    ("coordinator_aborts", "aborts", "Proposals aborted"),
    (
        "coordinator_replans_measured",
        "replans_measured",
        "Re-plans triggered by the measured network",
    ),
    (
        "coordinator_replans_rates_file",
        "replans_rates_file",
        "Re-plans triggered by the operator's rates file",
    ),
    (
        "coordinator_telemetry_rejected",
        "telemetry_rejected",
        "Telemetry samples the coordinator rejected",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_durations_bucket_and_encode_as_a_histogram() {
        let mut h = RoundDurations::default();
        for secs in [0.0005, 0.001, 0.0015, 0.010, 100.0] {
            h.observe(secs);
        }
        assert_eq!(&h.counts[..5], &[2, 1, 0, 0, 1]);
        assert_eq!(h.counts[16], 1);
        let mut reg = Registry::default();
        reg.register_with_unit("rd", "", Unit::Seconds, h.clone());
        let mut out = String::new();
        encode(&mut out, &reg).unwrap();
        assert!(out.contains("rd_seconds_count 5"), "{out}");
        assert!(out.contains("rd_seconds_bucket{le=\"0.002\"} 3"), "{out}");
        assert!(out.contains("rd_seconds_bucket{le=\"+Inf\"} 5"), "{out}");
        let back: RoundDurations =
            serde_json::from_str(&serde_json::to_string(&h).unwrap()).unwrap();
        assert_eq!(back, h);
    }
}
