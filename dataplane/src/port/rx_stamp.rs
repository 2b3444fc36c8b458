//! Kernel receive timestamps in the real-time loop's clock.
//!
//! The kernel stamps a datagram (`SO_TIMESTAMPNS`) when it enters the network stack, in
//! `CLOCK_REALTIME`; the loop's clock ([`super::MonotonicClock`]) is `CLOCK_MONOTONIC` since
//! an origin. The two differ by an offset that changes whenever the real-time clock is set
//! or slewed, so no fixed offset is kept. Instead the port reads `CLOCK_REALTIME` once per
//! receive call, right after `recvmmsg` and right before the loop's own clock read, and
//! each datagram's arrival is the loop's time minus its *age* (real-time now − stamp):
//!
//! * one extra clock read per receive call, none per datagram;
//! * the error is the few nanoseconds between the two clock reads plus the rate difference
//!   of the clocks over the age (NTP slews at most 500 ppm: under 1 µs for a 1 ms age), and
//!   it only ever makes an arrival later, never earlier than the datagram arrived — so never
//!   before its sender stamped it (see [`super::RxSink::received`]);
//! * a stamp that is missing, in the future (the real-time clock was set back) or older than
//!   [`MAX_STAMP_AGE_NS`] (set forward, or a stall no estimate should trust) is not used:
//!   the datagram gets the loop's time, as every datagram did before, and is counted.

use crate::Nanos;
use std::time::{SystemTime, UNIX_EPOCH};

/// Oldest kernel stamp converted; older ones are treated as missing.
pub const MAX_STAMP_AGE_NS: Nanos = 1_000_000_000;

/// `CLOCK_REALTIME` in nanoseconds since the epoch (the kernel stamps' clock), 0 if before it.
#[inline]
pub fn realtime_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The arrival, in the loop's clock, of a datagram the kernel stamped at `stamp_ns`
/// (`CLOCK_REALTIME`, 0 = no stamp), given the real-time clock read `realtime_now_ns` just
/// before the loop's clock read `loop_now`. `None`: no usable stamp (see the module docs).
#[inline]
pub fn to_loop_time(stamp_ns: u64, realtime_now_ns: u64, loop_now: Nanos) -> Option<Nanos> {
    if stamp_ns == 0 || stamp_ns > realtime_now_ns {
        return None;
    }
    let age = realtime_now_ns - stamp_ns;
    (age <= MAX_STAMP_AGE_NS).then(|| loop_now.saturating_sub(age).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Nanos = 1_000_000;

    #[test]
    fn an_arrival_is_the_loop_time_minus_the_stamp_s_age() {
        // Real time is ~1.7e18 ns, the loop's clock counts from its start: only ages move.
        let rt = 1_700_000_000 * 1_000_000_000u64;
        let loop_now = 5_000 * MS;
        assert_eq!(to_loop_time(rt - 3 * MS, rt, loop_now), Some(4_997 * MS));
        assert_eq!(to_loop_time(rt, rt, loop_now), Some(loop_now));
        // Two datagrams of one batch keep their spacing.
        let a = to_loop_time(rt - 2 * MS, rt, loop_now).unwrap();
        let b = to_loop_time(rt - MS / 2, rt, loop_now).unwrap();
        assert_eq!(b - a, 3 * MS / 2);
    }

    #[test]
    fn unusable_stamps_are_refused() {
        let rt = 1_700_000_000 * 1_000_000_000u64;
        assert_eq!(to_loop_time(0, rt, 10 * MS), None, "no stamp");
        assert_eq!(to_loop_time(rt + 1, rt, 10 * MS), None, "clock set back");
        assert_eq!(
            to_loop_time(rt - MAX_STAMP_AGE_NS - 1, rt, 10 * MS),
            None,
            "clock set forward, or too old to trust"
        );
        // An age beyond the loop's own age cannot reach time 0 (no time is 0).
        assert_eq!(to_loop_time(rt - 20 * MS, rt, 10 * MS), Some(1));
    }

    #[test]
    fn the_real_time_clock_reads_in_nanoseconds_since_the_epoch() {
        let t = realtime_ns();
        assert!(t > 1_600_000_000 * 1_000_000_000, "{t}");
    }
}
