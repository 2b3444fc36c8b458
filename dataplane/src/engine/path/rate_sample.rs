//! Delivery-rate samples of one path (BBR-style): bytes acknowledged over a window of at
//! least one RTT. A window in which the sender ran dry is marked application-limited (the
//! path is at least that fast); one in which the forward one-way delay rose is marked
//! saturated (its rate is the route's bottleneck, not only the sender's pace).
//!
//! A window in which this node's loop fell behind (see [`super::SendPath::set_loop_behind`])
//! is marked application-limited too: a CPU that was busy elsewhere paced late and read the
//! acks late, so the window measured the CPU, not the path. Such a sample may raise an
//! estimate, never lower it.

use crate::Nanos;

/// Shortest sampling window, whatever the RTT.
const MIN_WINDOW_NS: Nanos = 1_000_000;

/// One delivery-rate sample of a path.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateSample {
    /// Bytes on the wire acknowledged per second over the last window (≥ one RTT).
    pub bps: f64,
    /// The sender ran out of data during the window: the path is at least this fast.
    pub app_limited: bool,
    /// A queue stood on the forward route during the window (one-way delay above the
    /// path's minimum): the route was saturated, so `bps` is its bottleneck rate rather than
    /// only the sender's pace.
    pub saturated: bool,
    /// When the window closed.
    pub at: Nanos,
}

#[derive(Debug, Clone)]
pub(crate) struct RateSampler {
    /// Packets acknowledged since the path was created.
    delivered_pkts: u64,
    window_start_ns: Nanos,
    window_start_pkts: u64,
    window_app_limited: bool,
    window_saturated: bool,
    sample: Option<RateSample>,
    /// Smallest one-way delay echoed by an acknowledgement (in the peer's clock minus ours,
    /// so only differences mean anything): the forward route's empty-queue baseline.
    min_owd_ns: Option<u64>,
    /// Bits of one data frame on the wire (every acknowledged packet counts as one).
    frame_bits: f64,
}

impl RateSampler {
    pub fn new(frame_bits: f64) -> Self {
        Self {
            delivered_pkts: 0,
            window_start_ns: 0,
            window_start_pkts: 0,
            window_app_limited: false,
            window_saturated: false,
            sample: None,
            min_owd_ns: None,
            frame_bits,
        }
    }

    pub fn delivered_pkts(&self) -> u64 {
        self.delivered_pkts
    }

    pub fn sample(&self) -> Option<RateSample> {
        self.sample
    }

    /// Whether an acknowledgement's one-way delay `owd_ns` (arrival at the peer minus the
    /// data's timestamp) lies more than `threshold_ns` above the smallest seen: a queue on
    /// the forward route, which a queue holding only the acks on the way back does not
    /// touch. A smaller delay becomes the new baseline.
    #[inline]
    pub fn forward_queue(&mut self, owd_ns: u64, threshold_ns: Nanos) -> bool {
        let base = *self.min_owd_ns.get_or_insert(owd_ns);
        let above = owd_ns.wrapping_sub(base) as i64;
        if above < 0 {
            self.min_owd_ns = Some(owd_ns);
            false
        } else {
            above as u64 > threshold_ns
        }
    }

    /// Marks the open window application-limited (a worker fell behind during it).
    #[inline]
    pub fn mark_app_limited(&mut self) {
        self.window_app_limited = true;
    }

    /// An acknowledgement at `now` newly acknowledged `acked` packets; `sender_dry` if the
    /// path had nothing left to send, `forward_queue` if it showed a forward queue. Closes
    /// the window into a sample once it spans `rtt_ns` (at least 1 ms).
    #[inline]
    pub fn on_ack(
        &mut self,
        now: Nanos,
        acked: u64,
        sender_dry: bool,
        forward_queue: bool,
        rtt_ns: Nanos,
    ) {
        self.delivered_pkts += acked;
        if sender_dry {
            self.window_app_limited = true;
        }
        self.window_saturated |= forward_queue;
        let span = now.saturating_sub(self.window_start_ns);
        if span >= rtt_ns.max(MIN_WINDOW_NS) {
            if self.window_start_ns > 0 {
                let rate =
                    (self.delivered_pkts - self.window_start_pkts) as f64 * self.frame_bits * 1e9
                        / span as f64;
                self.sample = Some(RateSample {
                    bps: rate,
                    app_limited: self.window_app_limited,
                    saturated: self.window_saturated,
                    at: now,
                });
            }
            self.window_start_ns = now;
            self.window_start_pkts = self.delivered_pkts;
            self.window_app_limited = false;
            self.window_saturated = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Nanos = 1_000_000;

    #[test]
    fn a_window_of_one_rtt_gives_a_sample() {
        let mut r = RateSampler::new(10_000.0);
        // The first ack opens the first window.
        r.on_ack(20 * MS, 1, false, false, 10 * MS);
        assert_eq!(r.sample(), None);
        for i in 1..=10 {
            r.on_ack(20 * MS + i * MS, 10, false, false, 10 * MS);
            assert_eq!(r.sample().is_some(), i == 10, "closes after one RTT");
        }
        // 100 packets of 10 kbit over 10 ms: 100 Mbit/s.
        let s = r.sample().unwrap();
        assert_eq!(s.bps, 100e6);
        assert!(!s.app_limited && !s.saturated);
        assert_eq!(s.at, 30 * MS);
        assert_eq!(r.delivered_pkts(), 101);
    }

    #[test]
    fn windows_span_at_least_a_millisecond() {
        let mut r = RateSampler::new(8.0);
        r.on_ack(MS, 1, false, false, 10_000);
        r.on_ack(MS + 500_000, 1, false, false, 10_000);
        assert_eq!(r.sample(), None, "half a millisecond is too short");
        r.on_ack(2 * MS, 1, false, false, 10_000);
        assert!(r.sample().is_some());
    }

    #[test]
    fn dry_sender_and_forward_queue_mark_the_window() {
        let mut r = RateSampler::new(8.0);
        r.on_ack(MS, 1, false, false, MS);
        r.on_ack(MS + 1, 1, true, false, MS);
        r.on_ack(2 * MS, 1, false, true, MS);
        let s = r.sample().unwrap();
        assert!(s.app_limited && s.saturated);
        // The next window starts clean.
        r.on_ack(3 * MS, 1, false, false, MS);
        let s = r.sample().unwrap();
        assert!(!s.app_limited && !s.saturated);
    }

    #[test]
    fn a_window_marked_while_behind_is_application_limited() {
        let mut r = RateSampler::new(8.0);
        r.on_ack(MS, 1, false, false, MS);
        r.mark_app_limited();
        r.on_ack(2 * MS, 1, false, true, MS);
        let s = r.sample().unwrap();
        assert!(
            s.app_limited,
            "a stalled window only bounds the rate from below"
        );
        r.on_ack(3 * MS, 1, false, false, MS);
        assert!(
            !r.sample().unwrap().app_limited,
            "the next window starts clean"
        );
    }

    #[test]
    fn forward_queue_is_owd_above_its_minimum() {
        let mut r = RateSampler::new(8.0);
        // Clocks differ: only differences count (a large offset, even wrapping, is fine).
        let offset = u64::MAX - 5 * MS;
        assert!(!r.forward_queue(offset.wrapping_add(10 * MS), 3 * MS));
        assert!(!r.forward_queue(offset.wrapping_add(12 * MS), 3 * MS));
        assert!(r.forward_queue(offset.wrapping_add(14 * MS), 3 * MS));
        // A smaller delay lowers the baseline.
        assert!(!r.forward_queue(offset.wrapping_add(8 * MS), 3 * MS));
        assert!(r.forward_queue(offset.wrapping_add(12 * MS), 3 * MS));
    }
}
