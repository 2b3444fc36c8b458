//! Network awareness: a network model learned from the data plane's telemetry.
//!
//! Each directed link keeps the delivery-rate samples of the last `window_ns` (BBR's
//! windowed max: a path's delivery rate never exceeds its bottleneck, and the max over a
//! window filters out samples depressed by queueing or by a sender with little to send),
//! an EWMA of RTT and of the loss fraction, the time of its last sample and a confidence
//! in `[0, 1]` that grows with samples and decays with age. Application-limited samples
//! only ever raise an estimate (the link is at least that fast), and a lower estimate needs
//! `min_samples_to_lower` capacity samples in the window, so one outlier (a receiver
//! descheduled for a few milliseconds on a shared core looks like a queue) cannot set it.
//!
//! Change detection with hysteresis: [`NetworkEstimator::should_replan`] fires when some
//! confident link estimate differs from the rate the current plan assumed by more than
//! `change_threshold` (relative), and no sooner than `min_replan_interval_ns` after the last
//! plan, so a static network stops producing new policies and a noisy one does not flap.
//!
//! Telemetry with impossible values (NaN, negative or infinite rates, timestamps from the
//! future, routes that are not links) is rejected and counted, never folded in.

use crate::network::NetworkModel;
use netstorm_dataplane::topology::Topology;
use netstorm_dataplane::{Nanos, NodeId};
use std::collections::VecDeque;

/// Tunables, with the defaults used by the control plane.
#[derive(Debug, Clone, PartialEq)]
pub struct AwarenessConfig {
    /// Window of the rate max-filter. Default 2 s.
    pub window_ns: Nanos,
    /// Weight of a new RTT / loss sample in the EWMAs. Default 0.2.
    pub ewma_alpha: f64,
    /// Relative change of a link's rate estimate that triggers a re-plan. Default 0.2.
    pub change_threshold: f64,
    /// Minimum time between two plans. Default 5 s.
    pub min_replan_interval_ns: Nanos,
    /// Age at which a link's confidence has decayed to half. Default 30 s.
    pub half_life_ns: Nanos,
    /// Samples in the window for full confidence. Default 3.
    pub samples_for_confidence: usize,
    /// Confidence a link needs before its estimate may trigger a re-plan. Default 0.5.
    pub min_confidence: f64,
    /// Samples that are not application-limited a window needs before its max may lower
    /// the estimate. Default 1 (the emulator's probe trains are exact).
    pub min_samples_to_lower: usize,
}

impl Default for AwarenessConfig {
    fn default() -> Self {
        Self {
            window_ns: 2_000_000_000,
            ewma_alpha: 0.2,
            change_threshold: 0.2,
            min_replan_interval_ns: 5_000_000_000,
            half_life_ns: 30_000_000_000,
            samples_for_confidence: 3,
            min_confidence: 0.5,
            min_samples_to_lower: 1,
        }
    }
}

/// One telemetry observation of a directed link (from a direct path's sender).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LinkSample {
    pub from: NodeId,
    pub to: NodeId,
    /// When the sample was taken (the data plane's clock, same epoch as `now`).
    pub at: Nanos,
    /// Delivery rate in bits per second, if the sender measured one.
    pub rate_bps: Option<f64>,
    /// The sender ran dry during the sample: the link is at least this fast.
    pub app_limited: bool,
    pub rtt_ns: Option<Nanos>,
    /// Packets sent and lost during the sample, for the loss EWMA.
    pub sent: u64,
    pub lost: u64,
}

/// Why a sample was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TelemetryError {
    #[error("no link {from} -> {to} in the network")]
    UnknownLink { from: NodeId, to: NodeId },
    #[error("rate {0} bit/s is not a finite non-negative number")]
    BadRate(f64),
    #[error("sample from the future: taken at {at} ns, now is {now} ns")]
    FromTheFuture { at: Nanos, now: Nanos },
    #[error("{lost} packets lost out of {sent} sent")]
    BadLoss { sent: u64, lost: u64 },
}

/// What the estimator believes about one directed link.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkEstimate {
    pub rate_bps: f64,
    pub rtt_ns: Option<f64>,
    pub loss: f64,
    pub updated_at: Option<Nanos>,
    /// `(at, bps, application-limited)` of the samples inside the window, oldest first.
    window: VecDeque<(Nanos, f64, bool)>,
}

/// A link whose estimate moved past the change threshold since the last plan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkChange {
    pub from: NodeId,
    pub to: NodeId,
    /// The rate the last plan assumed.
    pub planned_bps: f64,
    pub estimated_bps: f64,
}

/// Counters of what the estimator did with telemetry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AwarenessCounters {
    pub accepted: u64,
    pub rejected: u64,
    pub replans: u64,
}

/// The learned network model.
#[derive(Debug, Clone)]
pub struct NetworkEstimator {
    cfg: AwarenessConfig,
    base: Topology,
    links: Vec<LinkEstimate>,
    /// Rates the current plan was made with.
    planned_bps: Vec<f64>,
    last_plan_at: Option<Nanos>,
    pub counters: AwarenessCounters,
}

impl NetworkEstimator {
    /// Starts from `prior` (e.g. the configured or last known rates) with zero confidence.
    pub fn new(prior: Topology, cfg: AwarenessConfig) -> Self {
        let links = prior
            .links
            .iter()
            .map(|l| LinkEstimate {
                rate_bps: l.rate_bps,
                rtt_ns: None,
                loss: 0.0,
                updated_at: None,
                window: VecDeque::new(),
            })
            .collect();
        let planned_bps = prior.links.iter().map(|l| l.rate_bps).collect();
        Self {
            cfg,
            base: prior,
            links,
            planned_bps,
            last_plan_at: None,
            counters: AwarenessCounters::default(),
        }
    }

    pub fn estimate(&self, from: NodeId, to: NodeId) -> Option<&LinkEstimate> {
        self.base.link_index(from, to).map(|i| &self.links[i])
    }

    /// Folds one sample in, or rejects it (counted) with the reason.
    pub fn ingest(&mut self, now: Nanos, s: &LinkSample) -> Result<(), TelemetryError> {
        let r = self.check(now, s);
        match r {
            Ok(i) => {
                self.counters.accepted += 1;
                self.apply(i, s);
                Ok(())
            }
            Err(e) => {
                self.counters.rejected += 1;
                Err(e)
            }
        }
    }

    fn check(&self, now: Nanos, s: &LinkSample) -> Result<usize, TelemetryError> {
        let i = self
            .base
            .link_index(s.from, s.to)
            .ok_or(TelemetryError::UnknownLink {
                from: s.from,
                to: s.to,
            })?;
        if let Some(r) = s.rate_bps {
            if !(r.is_finite() && r >= 0.0) {
                return Err(TelemetryError::BadRate(r));
            }
        }
        if s.at > now {
            return Err(TelemetryError::FromTheFuture { at: s.at, now });
        }
        if s.lost > s.sent {
            return Err(TelemetryError::BadLoss {
                sent: s.sent,
                lost: s.lost,
            });
        }
        Ok(i)
    }

    fn apply(&mut self, i: usize, s: &LinkSample) {
        let a = self.cfg.ewma_alpha;
        let window_ns = self.cfg.window_ns;
        let l = &mut self.links[i];
        if let Some(rtt) = s.rtt_ns {
            l.rtt_ns = Some(
                l.rtt_ns
                    .map_or(rtt as f64, |e| (1.0 - a) * e + a * rtt as f64),
            );
        }
        if s.sent > 0 {
            l.loss = (1.0 - a) * l.loss + a * (s.lost as f64 / s.sent as f64);
        }
        if let Some(bps) = s.rate_bps {
            // An application-limited sample only says "at least this fast".
            if !s.app_limited || bps > l.rate_bps {
                l.window.push_back((s.at, bps, s.app_limited));
            }
            while l
                .window
                .front()
                .is_some_and(|&(t, _, _)| t + window_ns < s.at)
            {
                l.window.pop_front();
            }
            let capacity_samples = l.window.iter().filter(|w| !w.2).count();
            if let Some(max) = l.window.iter().map(|w| w.1).reduce(f64::max) {
                if max > l.rate_bps || capacity_samples >= self.cfg.min_samples_to_lower {
                    l.rate_bps = max;
                }
            }
        }
        l.updated_at = Some(l.updated_at.map_or(s.at, |u| u.max(s.at)));
    }

    /// Confidence in the estimate of link `i` at `now`: samples in the window, halved every
    /// `half_life_ns` of age.
    pub fn confidence(&self, from: NodeId, to: NodeId, now: Nanos) -> f64 {
        let Some(i) = self.base.link_index(from, to) else {
            return 0.0;
        };
        self.link_confidence(i, now)
    }

    fn link_confidence(&self, i: usize, now: Nanos) -> f64 {
        let l = &self.links[i];
        let Some(at) = l.updated_at else { return 0.0 };
        let count =
            (l.window.len() as f64 / self.cfg.samples_for_confidence.max(1) as f64).min(1.0);
        let age = now.saturating_sub(at) as f64 / self.cfg.half_life_ns.max(1) as f64;
        count * 0.5f64.powf(age)
    }

    /// The current model: the base topology with the estimated rates and loss fractions
    /// (latencies stay as configured: a smoothed RTT also holds queueing and ack delay).
    pub fn model(&self) -> NetworkModel {
        let mut topo = self.base.clone();
        for (link, est) in topo.links.iter_mut().zip(&self.links) {
            link.rate_bps = est.rate_bps;
            link.loss = est.loss;
        }
        NetworkModel::from_topology(topo)
    }

    /// True when a re-plan is due (see the module documentation).
    pub fn should_replan(&self, now: Nanos) -> bool {
        if self
            .last_plan_at
            .is_some_and(|t| now < t + self.cfg.min_replan_interval_ns)
        {
            return false;
        }
        self.links.iter().enumerate().any(|(i, l)| {
            let planned = self.planned_bps[i];
            let changed = if planned > 0.0 {
                (l.rate_bps - planned).abs() / planned > self.cfg.change_threshold
            } else {
                l.rate_bps > 0.0
            };
            changed && self.link_confidence(i, now) >= self.cfg.min_confidence
        })
    }

    /// Links whose estimate differs from the rate the last plan assumed by more than the
    /// change threshold, confident or not (what a re-plan saw, for the operator).
    pub fn changed_links(&self) -> Vec<LinkChange> {
        self.base
            .links
            .iter()
            .zip(&self.links)
            .zip(&self.planned_bps)
            .filter(|((_, est), &planned)| {
                planned > 0.0
                    && (est.rate_bps - planned).abs() / planned > self.cfg.change_threshold
            })
            .map(|((link, est), &planned)| LinkChange {
                from: link.from,
                to: link.to,
                planned_bps: planned,
                estimated_bps: est.rate_bps,
            })
            .collect()
    }

    /// Records that a plan was made from the current estimates at `now`.
    pub fn mark_planned(&mut self, now: Nanos) {
        self.planned_bps = self.links.iter().map(|l| l.rate_bps).collect();
        self.last_plan_at = Some(now);
        self.counters.replans += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netstorm_dataplane::topology::{Link, Node};

    const S: Nanos = 1_000_000_000;

    fn pair(mbps: f64) -> Topology {
        Topology {
            nodes: Node::numbered(2),
            links: vec![
                Link {
                    from: 0,
                    to: 1,
                    rate_bps: mbps * 1e6,
                    latency_ns: 0,
                    loss: 0.0,
                },
                Link {
                    from: 1,
                    to: 0,
                    rate_bps: mbps * 1e6,
                    latency_ns: 0,
                    loss: 0.0,
                },
            ],
        }
    }

    fn sample(at: Nanos, mbps: f64) -> LinkSample {
        LinkSample {
            from: 0,
            to: 1,
            at,
            rate_bps: Some(mbps * 1e6),
            app_limited: false,
            rtt_ns: Some(40_000_000),
            sent: 100,
            lost: 0,
        }
    }

    #[test]
    fn a_5x_drop_is_learned_once_old_samples_leave_the_window_then_triggers_one_replan() {
        let mut e = NetworkEstimator::new(pair(100.0), AwarenessConfig::default());
        e.mark_planned(0);
        for k in 1..=10 {
            e.ingest(k * S / 2, &sample(k * S / 2, 100.0)).unwrap();
        }
        assert!(!e.should_replan(6 * S), "a static network must not re-plan");
        // The link drops to 20 Mbit/s at t = 6 s; samples every 0.5 s.
        let mut learned_at = None;
        for k in 12..=30 {
            let t = k * S / 2;
            e.ingest(t, &sample(t, 20.0)).unwrap();
            if learned_at.is_none() && (e.estimate(0, 1).unwrap().rate_bps - 20e6).abs() < 1e3 {
                learned_at = Some(t);
            }
        }
        let learned_at = learned_at.expect("estimate converged");
        assert!(
            learned_at <= 6 * S + AwarenessConfig::default().window_ns + S,
            "converged at {learned_at}"
        );
        assert!(e.should_replan(15 * S));
        e.mark_planned(15 * S);
        assert!(
            !e.should_replan(15 * S + 1),
            "no flapping right after a plan"
        );
        for k in 31..=60 {
            e.ingest(
                k * S / 2,
                &sample(k * S / 2, 20.0 * (1.0 + 0.05 * ((k % 3) as f64 - 1.0))),
            )
            .unwrap();
        }
        assert!(
            !e.should_replan(30 * S),
            "±5 % noise stays under the 20 % threshold"
        );
        assert_eq!(
            e.model().capacity_bps(0, 1),
            e.estimate(0, 1).unwrap().rate_bps
        );
    }

    #[test]
    fn app_limited_samples_only_raise_the_estimate() {
        let mut e = NetworkEstimator::new(pair(100.0), AwarenessConfig::default());
        let mut s = sample(S, 10.0);
        s.app_limited = true;
        e.ingest(S, &s).unwrap();
        assert_eq!(e.estimate(0, 1).unwrap().rate_bps, 100e6);
        s.rate_bps = Some(150e6);
        e.ingest(S, &s).unwrap();
        assert_eq!(e.estimate(0, 1).unwrap().rate_bps, 150e6);
    }

    #[test]
    fn a_lower_estimate_waits_for_enough_capacity_samples() {
        let cfg = AwarenessConfig {
            min_samples_to_lower: 3,
            ..AwarenessConfig::default()
        };
        let mut e = NetworkEstimator::new(pair(100.0), cfg);
        // One or two low outliers do not lower it; the third sample in the window does.
        e.ingest(S, &sample(S, 2.0)).unwrap();
        e.ingest(S + 1, &sample(S + 1, 30.0)).unwrap();
        assert_eq!(e.estimate(0, 1).unwrap().rate_bps, 100e6);
        e.ingest(S + 2, &sample(S + 2, 20.0)).unwrap();
        assert_eq!(e.estimate(0, 1).unwrap().rate_bps, 30e6);
        // A higher one raises it at once.
        e.ingest(S + 3, &sample(S + 3, 60.0)).unwrap();
        assert_eq!(e.estimate(0, 1).unwrap().rate_bps, 60e6);
    }

    #[test]
    fn impossible_telemetry_is_rejected_and_counted() {
        let mut e = NetworkEstimator::new(pair(100.0), AwarenessConfig::default());
        let mut bad = sample(S, 10.0);
        bad.rate_bps = Some(f64::NAN);
        assert!(matches!(
            e.ingest(2 * S, &bad),
            Err(TelemetryError::BadRate(_))
        ));
        bad.rate_bps = Some(-5.0);
        assert!(matches!(
            e.ingest(2 * S, &bad),
            Err(TelemetryError::BadRate(_))
        ));
        assert!(matches!(
            e.ingest(S / 2, &sample(S, 10.0)),
            Err(TelemetryError::FromTheFuture { .. })
        ));
        let mut l = sample(S, 10.0);
        l.lost = 200;
        assert!(matches!(
            e.ingest(2 * S, &l),
            Err(TelemetryError::BadLoss { .. })
        ));
        l = sample(S, 10.0);
        l.to = 0;
        assert!(matches!(
            e.ingest(2 * S, &l),
            Err(TelemetryError::UnknownLink { .. })
        ));
        assert_eq!(e.counters.rejected, 5);
        assert_eq!(e.counters.accepted, 0);
        assert_eq!(
            e.estimate(0, 1).unwrap().rate_bps,
            100e6,
            "nothing folded in"
        );
    }

    #[test]
    fn confidence_grows_with_samples_and_decays_with_age() {
        let mut e = NetworkEstimator::new(pair(100.0), AwarenessConfig::default());
        assert_eq!(e.confidence(0, 1, 0), 0.0);
        e.ingest(S, &sample(S, 90.0)).unwrap();
        let one = e.confidence(0, 1, S);
        e.ingest(S, &sample(S, 90.0)).unwrap();
        e.ingest(S, &sample(S, 90.0)).unwrap();
        assert!(e.confidence(0, 1, S) > one);
        assert!((e.confidence(0, 1, S) - 1.0).abs() < 1e-9);
        assert!((e.confidence(0, 1, 31 * S) - 0.5).abs() < 1e-9);
        // An unconfident change does not trigger a re-plan.
        let mut f = NetworkEstimator::new(pair(100.0), AwarenessConfig::default());
        f.ingest(S, &sample(S, 10.0)).unwrap();
        assert!(!f.should_replan(S), "one sample is not enough confidence");
    }
}
