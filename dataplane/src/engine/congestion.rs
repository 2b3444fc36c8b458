//! Congestion control of one path: the [`Controller`] trait and today's controller,
//! [`Aimd`] (rate-based additive increase, multiplicative decrease).
//!
//! A controller only decides the path's pacing rate; what counts as lost (and the loss rate
//! it is told) is the recovery's business (`path::recovery`), the RTT the estimator's
//! (`path::rtt`). Like quinn-proto's `congestion::Controller`, it is told of
//! acknowledgements and of losses declared by timers, and is asked for its rate.

use super::path::recovery::LossCause;
use super::path::rtt::RttEstimator;
use crate::Nanos;

/// What one acknowledgement told its path (only acknowledgements that bring news reach
/// the controller: replayed ones are dropped before).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct AckSignal {
    /// Packets this acknowledgement acknowledged for the first time.
    pub acked: u64,
    /// Packets it revealed as lost (later packets acknowledged).
    pub lost: u64,
    /// Its RTT sample says a queue is building on the round trip.
    pub queueing: bool,
    /// The path's recent loss fraction, this acknowledgement's outcome included.
    pub loss_rate: f64,
}

/// A path's congestion controller: decides its pacing rate.
pub(crate) trait Controller {
    /// A policy (re)starts the path at `nominal_bps`, its fair share, and lets it grow up
    /// to `ceiling_bps`, its bottleneck link's rate.
    fn reset(&mut self, nominal_bps: f64, ceiling_bps: f64);
    /// An acknowledgement that brought news.
    fn on_ack(&mut self, now: Nanos, rtt: &RttEstimator, ack: &AckSignal);
    /// A timer (`cause` is [`LossCause::TailTimer`] or [`LossCause::Rto`]) declared packets
    /// lost; `loss_rate` includes them.
    fn on_timer_loss(&mut self, now: Nanos, rtt: &RttEstimator, cause: LossCause, loss_rate: f64);
    /// The rate the path paces at, bits/s.
    fn rate_bps(&self) -> f64;
}

/// Rate-based AIMD: ×0.7 on congestion at most once per round trip, down to 1/32 of the
/// nominal rate; +1 frame per round trip (at least 1 % of the nominal rate) up to the
/// ceiling. Congestion is queueing delay, losses above `loss_tolerance` (random WAN loss is
/// not congestion: BBRv2's 2 %), or a retransmission timeout.
#[derive(Debug, Clone)]
pub(crate) struct Aimd {
    /// Fair-share rate of the route per the policy (where pacing starts and returns to
    /// after a policy change).
    nominal_bps: f64,
    /// The route's bottleneck link rate: how far additive increase may go when other
    /// routes leave capacity unused.
    ceiling_bps: f64,
    rate_bps: f64,
    last_decrease_ns: Nanos,
    last_increase_ns: Nanos,
    loss_tolerance: f64,
    /// Bits of one full data frame on the wire: the additive step per round trip.
    frame_bits: f64,
}

/// The multiplicative decrease factor.
const DECREASE: f64 = 0.7;

impl Aimd {
    pub fn new(rate_bps: f64, loss_tolerance: f64, frame_bits: f64) -> Self {
        Self {
            nominal_bps: rate_bps,
            ceiling_bps: rate_bps,
            rate_bps,
            last_decrease_ns: 0,
            last_increase_ns: 0,
            loss_tolerance,
            frame_bits,
        }
    }

    /// Multiplicative decrease, at most once per round trip.
    #[inline]
    fn decrease(&mut self, now: Nanos, rtt: &RttEstimator) {
        let rtt = rtt.smoothed_or_rto();
        if now.saturating_sub(self.last_decrease_ns) >= rtt {
            self.rate_bps = (self.rate_bps * DECREASE).max(self.nominal_bps / 32.0);
            self.last_decrease_ns = now;
            self.last_increase_ns = now;
        }
    }

    /// Additive increase towards the ceiling, once per round trip: one frame per round
    /// trip, as TCP does, but at least 1 % of the nominal rate so long paths recover.
    #[inline]
    fn increase(&mut self, now: Nanos, rtt: &RttEstimator) {
        if self.rate_bps >= self.ceiling_bps {
            return;
        }
        let rtt = rtt.smoothed_or_rto().max(1);
        if now.saturating_sub(self.last_increase_ns) >= rtt {
            let step = (self.frame_bits * 1e9 / rtt as f64).max(self.nominal_bps * 0.01);
            self.rate_bps = (self.rate_bps + step).min(self.ceiling_bps);
            self.last_increase_ns = now;
        }
    }
}

impl Controller for Aimd {
    fn reset(&mut self, nominal_bps: f64, ceiling_bps: f64) {
        self.nominal_bps = nominal_bps;
        self.rate_bps = nominal_bps;
        self.ceiling_bps = ceiling_bps.max(nominal_bps);
    }

    #[inline]
    fn on_ack(&mut self, now: Nanos, rtt: &RttEstimator, ack: &AckSignal) {
        if ack.queueing || (ack.lost > 0 && ack.loss_rate > self.loss_tolerance) {
            self.decrease(now, rtt);
        } else if ack.acked > 0 {
            self.increase(now, rtt);
        }
    }

    fn on_timer_loss(&mut self, now: Nanos, rtt: &RttEstimator, cause: LossCause, loss_rate: f64) {
        match cause {
            // A timeout is congestion whatever the loss rate.
            LossCause::Rto { .. } => self.decrease(now, rtt),
            LossCause::TailTimer | LossCause::DupAck { .. } => {
                if loss_rate > self.loss_tolerance {
                    self.decrease(now, rtt);
                }
            }
        }
    }

    #[inline]
    fn rate_bps(&self) -> f64 {
        self.rate_bps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Nanos = 1_000_000;
    const FRAME_BITS: f64 = 1500.0 * 8.0;

    /// An estimator whose smoothed RTT is `rtt` (one sample).
    fn rtt(rtt: Nanos) -> RttEstimator {
        let mut r = RttEstimator::new(200 * MS, 5 * MS, 2_000 * MS);
        r.on_sample(rtt);
        r
    }

    fn ack(acked: u64, lost: u64, queueing: bool, loss_rate: f64) -> AckSignal {
        AckSignal {
            acked,
            lost,
            queueing,
            loss_rate,
        }
    }

    #[test]
    fn queueing_decreases_by_0_7_once_per_rtt() {
        let mut cc = Aimd::new(1e9, 0.02, FRAME_BITS);
        let r = rtt(10 * MS);
        cc.on_ack(100 * MS, &r, &ack(1, 0, true, 0.0));
        assert_eq!(cc.rate_bps(), 1e9 * DECREASE);
        // Within the same round trip: no second decrease.
        cc.on_ack(109 * MS, &r, &ack(1, 0, true, 0.0));
        assert_eq!(cc.rate_bps(), 1e9 * DECREASE);
        cc.on_ack(110 * MS, &r, &ack(1, 0, true, 0.0));
        assert_eq!(cc.rate_bps(), 1e9 * DECREASE * DECREASE);
    }

    #[test]
    fn decrease_stops_at_a_32nd_of_nominal() {
        let mut cc = Aimd::new(32e6, 0.02, FRAME_BITS);
        let r = rtt(MS);
        for i in 1..100 {
            cc.on_ack(i * MS, &r, &ack(0, 0, true, 0.0));
        }
        assert_eq!(cc.rate_bps(), 1e6);
    }

    #[test]
    fn losses_below_the_tolerance_are_not_congestion() {
        let mut cc = Aimd::new(1e9, 0.02, FRAME_BITS);
        cc.reset(0.5e9, 1e9);
        let r = rtt(10 * MS);
        // Random loss at 1 %: the ack still counts as progress.
        cc.on_ack(100 * MS, &r, &ack(8, 1, false, 0.01));
        assert!(cc.rate_bps() > 0.5e9);
        let before = cc.rate_bps();
        // Above the tolerance: a decrease.
        cc.on_ack(200 * MS, &r, &ack(8, 1, false, 0.03));
        assert_eq!(cc.rate_bps(), before * DECREASE);
        // A high loss rate without new losses on this ack: progress again.
        cc.on_ack(300 * MS, &r, &ack(8, 0, false, 0.03));
        assert!(cc.rate_bps() > before * DECREASE);
    }

    #[test]
    fn growth_is_one_frame_per_rtt_up_to_the_ceiling() {
        let mut cc = Aimd::new(100e6, 0.02, FRAME_BITS);
        cc.reset(100e6, 200e6);
        let r = rtt(MS);
        // One frame per millisecond is 12 Mbit/s, above 1 % of nominal (1 Mbit/s).
        cc.on_ack(10 * MS, &r, &ack(1, 0, false, 0.0));
        assert_eq!(cc.rate_bps(), 100e6 + 12e6);
        // Not again within the round trip.
        cc.on_ack(10 * MS + MS / 2, &r, &ack(1, 0, false, 0.0));
        assert_eq!(cc.rate_bps(), 112e6);
        // An ack acknowledging nothing new is no progress.
        cc.on_ack(20 * MS, &r, &ack(0, 0, false, 0.0));
        assert_eq!(cc.rate_bps(), 112e6);
        for i in 3..100 {
            cc.on_ack(i * 10 * MS, &r, &ack(1, 0, false, 0.0));
        }
        assert_eq!(cc.rate_bps(), 200e6, "capped at the ceiling");
    }

    #[test]
    fn long_paths_grow_by_at_least_1_percent_of_nominal() {
        let mut cc = Aimd::new(10e9, 0.02, FRAME_BITS);
        cc.reset(10e9, 20e9);
        let r = rtt(100 * MS);
        cc.on_ack(1_000 * MS, &r, &ack(1, 0, false, 0.0));
        // One frame per 100 ms is 120 kbit/s; 1 % of 10 Gbit/s is 100 Mbit/s.
        assert_eq!(cc.rate_bps(), 10.1e9);
    }

    #[test]
    fn a_decrease_delays_the_next_increase_by_one_rtt() {
        let mut cc = Aimd::new(100e6, 0.02, FRAME_BITS);
        cc.reset(100e6, 200e6);
        let r = rtt(10 * MS);
        cc.on_ack(100 * MS, &r, &ack(0, 0, true, 0.0));
        assert_eq!(cc.rate_bps(), 100e6 * DECREASE);
        cc.on_ack(105 * MS, &r, &ack(1, 0, false, 0.0));
        assert_eq!(cc.rate_bps(), 100e6 * DECREASE);
        cc.on_ack(110 * MS, &r, &ack(1, 0, false, 0.0));
        assert!(cc.rate_bps() > 100e6 * DECREASE);
    }

    #[test]
    fn rto_always_decreases_tail_loss_only_above_tolerance() {
        let r = rtt(10 * MS);
        let mut cc = Aimd::new(1e9, 0.02, FRAME_BITS);
        cc.on_timer_loss(100 * MS, &r, LossCause::Rto { timeout: 50 * MS }, 0.0);
        assert_eq!(cc.rate_bps(), 1e9 * DECREASE);
        let mut cc = Aimd::new(1e9, 0.02, FRAME_BITS);
        cc.on_timer_loss(100 * MS, &r, LossCause::TailTimer, 0.01);
        assert_eq!(cc.rate_bps(), 1e9);
        cc.on_timer_loss(100 * MS, &r, LossCause::TailTimer, 0.05);
        assert_eq!(cc.rate_bps(), 1e9 * DECREASE);
    }

    #[test]
    fn without_an_rtt_sample_the_rto_paces_decreases() {
        let r = RttEstimator::new(200 * MS, 5 * MS, 2_000 * MS);
        let mut cc = Aimd::new(1e9, 0.02, FRAME_BITS);
        cc.on_ack(200 * MS, &r, &ack(0, 0, true, 0.0));
        cc.on_ack(399 * MS, &r, &ack(0, 0, true, 0.0));
        assert_eq!(cc.rate_bps(), 1e9 * DECREASE);
        cc.on_ack(400 * MS, &r, &ack(0, 0, true, 0.0));
        assert_eq!(cc.rate_bps(), 1e9 * DECREASE * DECREASE);
    }

    #[test]
    fn reset_keeps_the_ceiling_at_least_nominal() {
        let mut cc = Aimd::new(1e9, 0.02, FRAME_BITS);
        cc.reset(300e6, 100e6);
        assert_eq!(cc.rate_bps(), 300e6);
        let r = rtt(MS);
        cc.on_ack(10 * MS, &r, &ack(1, 0, false, 0.0));
        assert_eq!(cc.rate_bps(), 300e6, "already at the ceiling");
    }
}
