//! Pacing: a [`Pacer`] spaces frames at a rate. Every path has one (at its congestion
//! controller's rate) and every outgoing link has one (at the policy's link rate); a data
//! frame leaves when both allow it, acknowledgements, relayed datagrams and probes when the
//! link's does.

use crate::Nanos;

/// When the next frame may leave at a rate: each frame pushes the schedule by its wire time.
#[derive(Debug, Clone)]
pub(crate) struct Pacer {
    rate_bps: f64,
    /// `8e9 / rate_bps`, kept with it: a multiply per frame instead of a division.
    ns_per_byte: f64,
    /// Earliest time the next frame may leave (before any burst allowance).
    next_ns: Nanos,
}

impl Pacer {
    pub fn new(rate_bps: f64) -> Self {
        Self {
            rate_bps,
            ns_per_byte: ns_per_byte(rate_bps),
            next_ns: 0,
        }
    }

    #[cfg(test)]
    pub fn rate_bps(&self) -> f64 {
        self.rate_bps
    }

    /// Paces at `rate_bps` from now on (the schedule already charged stays).
    #[inline]
    pub fn set_rate(&mut self, rate_bps: f64) {
        if rate_bps != self.rate_bps {
            self.rate_bps = rate_bps;
            self.ns_per_byte = ns_per_byte(rate_bps);
        }
    }

    /// Earliest time the next frame may leave.
    #[inline]
    pub fn next_ns(&self) -> Nanos {
        self.next_ns
    }

    /// Wire time of a frame of `frame_bytes` at this pacer's rate.
    #[inline]
    pub fn frame_ns(&self, frame_bytes: usize) -> Nanos {
        (frame_bytes as f64 * self.ns_per_byte) as Nanos
    }

    /// Charges a frame of `frame_bytes` leaving at `now`: the schedule restarts from `now`
    /// if it fell behind (an idle pacer saves no credit).
    #[inline]
    pub fn charge(&mut self, now: Nanos, frame_bytes: usize) {
        self.next_ns = self.next_ns.max(now) + self.frame_ns(frame_bytes);
    }
}

/// Pacing cost of one byte at `rate_bps`, in nanoseconds.
fn ns_per_byte(rate_bps: f64) -> f64 {
    8e9 / rate_bps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_spaced_by_their_wire_time() {
        let mut p = Pacer::new(1e9); // 8 ns per byte
        assert_eq!(p.next_ns(), 0);
        p.charge(1_000, 1_500);
        assert_eq!(p.next_ns(), 13_000);
        // A frame sent early (within a burst allowance) extends the schedule, not `now`.
        p.charge(12_000, 1_500);
        assert_eq!(p.next_ns(), 25_000);
        // After a pause the schedule restarts at `now`: no saved-up credit.
        p.charge(100_000, 100);
        assert_eq!(p.next_ns(), 100_800);
    }

    #[test]
    fn rate_changes_apply_to_later_frames() {
        let mut p = Pacer::new(1e9);
        p.charge(0, 1_000);
        assert_eq!(p.next_ns(), 8_000);
        p.set_rate(4e9);
        assert_eq!(p.rate_bps(), 4e9);
        assert_eq!(p.next_ns(), 8_000, "what was charged stays");
        p.charge(0, 1_000);
        assert_eq!(p.next_ns(), 10_000);
        assert_eq!(p.frame_ns(1_000), 2_000);
    }

    #[test]
    fn long_run_rate_is_the_pacing_rate() {
        let mut p = Pacer::new(100e6);
        let mut now = 0;
        let frames = 10_000u64;
        for _ in 0..frames {
            now = now.max(p.next_ns());
            p.charge(now, 1_250);
        }
        // 10 000 frames of 10 000 bits at 100 Mbit/s: 1 s.
        assert_eq!(p.next_ns(), 1_000_000_000);
    }
}
