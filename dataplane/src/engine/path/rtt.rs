//! Round-trip time of one path (RFC 6298) from echoed timestamps — no synchronized clocks
//! needed — and the retransmission timeout with its exponential back-off.
//!
//! Before the first sample the RTO comes, as in QUIC (RFC 9002 §6.2.2), from an initial RTT
//! estimate when there is one ([`RttEstimator::seed`]: the route's propagation delay from
//! the topology): srtt = seed, rttvar = seed / 2, so RTO = 3 × seed. Without one it is the
//! configured initial RTO. The seed is never a sample: it sets neither the smoothed nor the
//! minimum RTT, and the first real sample replaces it.

use crate::Nanos;

/// The RTO's variance term is at least this (RFC 6298's clock granularity, generously):
/// a path with a steady RTT must not time out at srtt + ε.
const MIN_RTTVAR_TERM_NS: Nanos = 1_000_000;
/// The back-off multiplier never exceeds this.
const MAX_BACKOFF: u32 = 64;

#[derive(Debug, Clone)]
pub(crate) struct RttEstimator {
    srtt_ns: Option<Nanos>,
    /// The initial RTT estimate, used only until the first sample.
    seed_ns: Option<Nanos>,
    rttvar_ns: Nanos,
    /// Smallest RTT seen: the route's propagation + serialization baseline
    /// (`Nanos::MAX` before the first sample).
    min_rtt_ns: Nanos,
    /// The un-backed-off RTO: srtt + 4 max(rttvar, 1 ms), within the bounds.
    rto_ns: Nanos,
    /// Multiplier of `rto_ns` after timeouts; 1 again after the next sample.
    backoff: u32,
    min_rto_ns: Nanos,
    max_rto_ns: Nanos,
}

impl RttEstimator {
    pub fn new(initial_rto_ns: Nanos, min_rto_ns: Nanos, max_rto_ns: Nanos) -> Self {
        Self {
            srtt_ns: None,
            seed_ns: None,
            rttvar_ns: 0,
            min_rtt_ns: Nanos::MAX,
            rto_ns: initial_rto_ns,
            backoff: 1,
            min_rto_ns,
            max_rto_ns,
        }
    }

    /// Seeds the estimator with an initial RTT estimate (RFC 9002 §6.2.2): until the first
    /// sample the RTO is `rtt_ns + 4 max(rtt_ns / 2, 1 ms)` (within the bounds) and
    /// `rtt_ns` is the RTT to reason with. Ignored once a sample was taken.
    pub fn seed(&mut self, rtt_ns: Nanos) {
        if self.srtt_ns.is_some() {
            return;
        }
        self.seed_ns = Some(rtt_ns);
        let rto = rtt_ns + 4 * (rtt_ns / 2).max(MIN_RTTVAR_TERM_NS);
        self.rto_ns = rto.clamp(self.min_rto_ns, self.max_rto_ns);
    }

    /// Folds in one RTT sample (RFC 6298) and ends any back-off.
    #[inline]
    pub fn on_sample(&mut self, sample: Nanos) {
        match self.srtt_ns {
            None => {
                self.srtt_ns = Some(sample);
                self.rttvar_ns = sample / 2;
            }
            Some(srtt) => {
                let err = srtt.abs_diff(sample);
                self.rttvar_ns = (3 * self.rttvar_ns + err) / 4;
                self.srtt_ns = Some((7 * srtt + sample) / 8);
            }
        }
        let rto = self.srtt_ns.unwrap_or(sample) + 4 * self.rttvar_ns.max(MIN_RTTVAR_TERM_NS);
        self.rto_ns = rto.clamp(self.min_rto_ns, self.max_rto_ns);
        self.backoff = 1;
        self.min_rtt_ns = self.min_rtt_ns.min(sample);
    }

    pub fn smoothed(&self) -> Option<Nanos> {
        self.srtt_ns
    }

    /// The RTT to reason with: smoothed; before any sample the seed, else the RTO.
    #[inline]
    pub fn smoothed_or_rto(&self) -> Nanos {
        self.srtt_ns.or(self.seed_ns).unwrap_or(self.rto_ns)
    }

    pub fn min(&self) -> Option<Nanos> {
        (self.min_rtt_ns != Nanos::MAX).then_some(self.min_rtt_ns)
    }

    /// The smallest RTT seen (`Nanos::MAX` before any sample).
    #[inline]
    pub fn min_or_max(&self) -> Nanos {
        self.min_rtt_ns
    }

    /// The retransmission timeout in force: the RTO times the back-off.
    #[inline]
    pub fn rto_timeout(&self) -> Nanos {
        self.rto_ns.saturating_mul(self.backoff as u64)
    }

    /// After a timeout: doubles the back-off, but the effective timeout stays within
    /// `max_rto_ns`, so after an outage the path is retried at least that often (faults
    /// suite: link down 10 s).
    pub fn back_off(&mut self) {
        if self.rto_ns.saturating_mul(self.backoff as u64 * 2) <= self.max_rto_ns {
            self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// How long a tail may go unanswered before it is presumed lost (before the peer's ack
    /// delay): two smoothed RTTs, or srtt + 4 rttvar when RTTs vary that much, as under a
    /// growing queue. `None` before the first sample.
    #[inline]
    pub fn tail_timeout(&self) -> Option<Nanos> {
        let srtt = self.srtt_ns?;
        Some((2 * srtt).max(srtt + 4 * self.rttvar_ns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Nanos = 1_000_000;

    fn estimator() -> RttEstimator {
        RttEstimator::new(200 * MS, 5 * MS, 2_000 * MS)
    }

    #[test]
    fn first_sample_sets_srtt_and_half_variance() {
        let mut r = estimator();
        assert_eq!(r.smoothed(), None);
        assert_eq!(r.rto_timeout(), 200 * MS, "the initial RTO");
        assert_eq!(r.tail_timeout(), None, "no tail timer without an RTT");
        r.on_sample(40 * MS);
        assert_eq!(r.smoothed(), Some(40 * MS));
        assert_eq!(r.min(), Some(40 * MS));
        // srtt + 4 * rttvar = 40 + 4 * 20.
        assert_eq!(r.rto_timeout(), 120 * MS);
        assert_eq!(r.tail_timeout(), Some(120 * MS), "srtt + 4 rttvar > 2 srtt");
    }

    #[test]
    fn samples_smooth_by_rfc_6298() {
        let mut r = estimator();
        r.on_sample(40 * MS);
        r.on_sample(80 * MS);
        // rttvar = (3 * 20 + 40) / 4 = 25; srtt = (7 * 40 + 80) / 8 = 45.
        assert_eq!(r.smoothed(), Some(45 * MS));
        assert_eq!(r.rto_timeout(), 145 * MS);
        assert_eq!(r.min(), Some(40 * MS));
        for _ in 0..200 {
            r.on_sample(40 * MS);
        }
        assert_eq!(r.smoothed(), Some(40 * MS));
        assert_eq!(
            r.tail_timeout(),
            Some(80 * MS),
            "2 srtt once RTTs are steady"
        );
    }

    #[test]
    fn rto_stays_within_its_bounds() {
        let mut r = estimator();
        r.on_sample(10_000); // 10 us: the variance term alone is 4 ms; min_rto is 5 ms.
        assert_eq!(r.rto_timeout(), 5 * MS);
        let mut r = estimator();
        r.on_sample(900 * MS);
        assert_eq!(r.rto_timeout(), 2_000 * MS, "max_rto");
        let mut r = estimator();
        r.on_sample(2 * MS);
        // 2 ms + 4 * max(1 ms, 1 ms) = 6 ms.
        assert_eq!(r.rto_timeout(), 6 * MS);
    }

    #[test]
    fn back_off_doubles_within_max_rto_and_a_sample_ends_it() {
        let mut r = estimator();
        r.on_sample(20 * MS); // RTO 60 ms
        assert_eq!(r.rto_timeout(), 60 * MS);
        let mut seen = vec![r.rto_timeout()];
        for _ in 0..10 {
            r.back_off();
            seen.push(r.rto_timeout());
        }
        // 60, 120, 240, 480, 960, 1920 ms; 3840 would pass max_rto (2 s): it stays.
        assert_eq!(
            seen,
            [60, 120, 240, 480, 960, 1920, 1920, 1920, 1920, 1920, 1920].map(|m| m * MS)
        );
        r.on_sample(20 * MS);
        assert_eq!(r.rto_timeout(), r.rto_ns, "a sample ends the back-off");
        assert!(r.rto_timeout() < 100 * MS);
    }

    #[test]
    fn back_off_multiplier_is_capped_at_64() {
        let mut r = RttEstimator::new(MS, MS, u64::MAX);
        for _ in 0..20 {
            r.back_off();
        }
        assert_eq!(r.rto_timeout(), 64 * MS);
    }

    #[test]
    fn a_seed_sets_the_initial_rto_to_three_rtts_until_the_first_sample() {
        // aws10-latency's longest route: 326 ms round trip. The unseeded 200 ms RTO would
        // fire before the first acknowledgement can arrive.
        let mut r = estimator();
        r.seed(326 * MS);
        assert_eq!(r.rto_timeout(), 978 * MS, "326 + 4 * 163");
        assert_eq!(r.smoothed_or_rto(), 326 * MS);
        assert_eq!(r.smoothed(), None, "a seed is not a sample");
        assert_eq!(r.min(), None, "nor a minimum");
        assert_eq!(r.tail_timeout(), None);
        // The first sample replaces it (RFC 6298's first-sample rule).
        r.on_sample(300 * MS);
        assert_eq!(r.smoothed(), Some(300 * MS));
        assert_eq!(r.rto_timeout(), 900 * MS);
        r.seed(10 * MS);
        assert_eq!(r.rto_timeout(), 900 * MS, "a late seed is ignored");
        // Bounds and the variance floor hold for seeds too.
        let mut r = estimator();
        r.seed(900 * MS);
        assert_eq!(r.rto_timeout(), 2_000 * MS);
        let mut r = estimator();
        r.seed(100_000);
        assert_eq!(r.rto_timeout(), 5 * MS);
    }

    #[test]
    fn without_a_sample_the_rto_is_the_rtt_to_reason_with() {
        let mut r = estimator();
        assert_eq!(r.smoothed_or_rto(), 200 * MS);
        r.on_sample(7 * MS);
        assert_eq!(r.smoothed_or_rto(), 7 * MS);
    }
}
