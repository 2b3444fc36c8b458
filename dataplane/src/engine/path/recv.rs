//! Receiver side of one path ending here: which sequence numbers arrived (cumulative point
//! plus a bitmap window), when to acknowledge, and the acknowledgement's contents.

use super::expand_seq;
use crate::wire::AckRepr;
use crate::{Nanos, NodeId};

/// What a data packet's sequence number is to the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// Beyond the window: dropped, not acknowledged.
    OutOfWindow,
    /// Already received: acknowledge again (the earlier ack may have been lost).
    Duplicate,
    /// New: `seq` is the expanded sequence number.
    New(u64),
}

#[derive(Debug)]
pub(crate) struct RecvPath {
    /// Route back to the origin, for acknowledgements.
    pub ack_next_hop: NodeId,
    pub origin: NodeId,
    /// Everything below this was received.
    rcv_nxt: u64,
    /// Highest sequence number received, plus one.
    top: u64,
    /// Received sequence numbers at or above `rcv_nxt`, one bit each, indexed modulo the
    /// window.
    bits: Vec<u64>,
    mask: u64,
    /// Data packets received since the last acknowledgement left.
    unacked: u32,
    /// When a delayed acknowledgement is due.
    pub ack_deadline: Option<Nanos>,
    /// The path is in the engine's ack queue.
    pub ack_queued: bool,
    /// Timestamp of the newest data packet, echoed for the sender's RTT.
    echo_ts: Nanos,
    /// Arrival time minus `echo_ts` (two clocks: only its changes mean anything).
    echo_owd: u64,
}

impl RecvPath {
    pub fn new(origin: NodeId, ack_next_hop: NodeId, cap: usize) -> Self {
        Self {
            ack_next_hop,
            origin,
            rcv_nxt: 0,
            top: 0,
            bits: vec![0; cap.div_ceil(64)],
            mask: cap as u64 - 1,
            unacked: 0,
            ack_deadline: None,
            ack_queued: false,
            echo_ts: 0,
            echo_owd: 0,
        }
    }

    #[inline]
    fn is_set(&self, seq: u64) -> bool {
        let i = (seq & self.mask) as usize;
        self.bits[i / 64] >> (i % 64) & 1 == 1
    }

    #[inline]
    fn set(&mut self, seq: u64, on: bool) {
        let i = (seq & self.mask) as usize;
        if on {
            self.bits[i / 64] |= 1 << (i % 64);
        } else {
            self.bits[i / 64] &= !(1 << (i % 64));
        }
    }

    #[inline]
    fn received(&self, seq: u64) -> bool {
        seq < self.rcv_nxt || (seq < self.top && self.is_set(seq))
    }

    /// Classifies a data packet's 32-bit wire sequence number.
    #[inline]
    pub fn classify(&self, wire_seq: u32) -> Arrival {
        let seq = expand_seq(wire_seq, self.rcv_nxt);
        if seq > self.rcv_nxt + self.mask {
            Arrival::OutOfWindow
        } else if self.received(seq) {
            Arrival::Duplicate
        } else {
            Arrival::New(seq)
        }
    }

    /// Notes the timestamp of the newest data packet (sent at `sent_ns` by the origin's
    /// clock, arrived at `now`), for the next acknowledgement to echo.
    #[inline]
    pub fn echo(&mut self, now: Nanos, sent_ns: Nanos) {
        self.echo_ts = sent_ns;
        self.echo_owd = now.wrapping_sub(sent_ns);
    }

    /// Records that new sequence number `seq` was received and taken. Returns whether it
    /// was the next one in order.
    // Always: part of every data packet's receive path, as when it was written inline there.
    #[inline(always)]
    pub fn record(&mut self, seq: u64) -> bool {
        let in_order = seq == self.rcv_nxt;
        self.set(seq, true);
        self.top = self.top.max(seq + 1);
        while self.rcv_nxt < self.top && self.is_set(self.rcv_nxt) {
            let s = self.rcv_nxt;
            self.set(s, false);
            self.rcv_nxt += 1;
        }
        self.unacked += 1;
        in_order
    }

    /// Data packets received since the last acknowledgement left.
    #[inline]
    pub fn unacked(&self) -> u32 {
        self.unacked
    }

    /// An acknowledgement leaves now: what it says. Resets the ack state.
    pub fn take_ack(&mut self) -> AckRepr {
        self.ack_queued = false;
        self.unacked = 0;
        self.ack_deadline = None;
        self.ack_repr()
    }

    fn ack_repr(&self) -> AckRepr {
        let mut bits = 0u64;
        for i in 0..64u64 {
            if i < self.top && self.received(self.top - 1 - i) {
                bits |= 1 << i;
            }
        }
        AckRepr {
            cum_ack: self.rcv_nxt as u32,
            top: self.top as u32,
            bits,
            echo_ts_ns: self.echo_ts,
            owd_ns: self.echo_owd,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_arrivals_advance_the_cumulative_point() {
        let mut r = RecvPath::new(0, 0, 64);
        for s in 0..3u32 {
            assert_eq!(r.classify(s), Arrival::New(s as u64));
            assert!(r.record(s as u64));
        }
        assert_eq!(r.classify(1), Arrival::Duplicate);
        assert_eq!(r.unacked(), 3);
        let ack = r.take_ack();
        assert_eq!((ack.cum_ack, ack.top, ack.bits), (3, 3, 0b111));
        assert_eq!(r.unacked(), 0);
    }

    #[test]
    fn gaps_are_acknowledged_selectively() {
        let mut r = RecvPath::new(0, 0, 64);
        assert!(r.record(0));
        assert!(!r.record(2), "out of order");
        assert!(!r.record(5));
        r.echo(1_000, 400);
        let ack = r.take_ack();
        assert_eq!(ack.cum_ack, 1);
        assert_eq!(ack.top, 6);
        // Bit i stands for top - 1 - i: 5, 2 and 0 received.
        assert_eq!(ack.bits, 0b10_1001);
        assert_eq!((ack.echo_ts_ns, ack.owd_ns), (400, 600));
        // Filling the gaps moves the cumulative point past everything received.
        for s in [1, 3, 4] {
            r.record(s);
        }
        assert_eq!(r.take_ack().cum_ack, 6);
    }

    #[test]
    fn window_bounds_what_is_taken() {
        let mut r = RecvPath::new(0, 0, 64);
        assert_eq!(r.classify(63), Arrival::New(63));
        assert_eq!(r.classify(64), Arrival::OutOfWindow);
        r.record(0);
        assert_eq!(r.classify(64), Arrival::New(64));
    }

    #[test]
    fn wire_sequence_numbers_wrap() {
        let mut r = RecvPath::new(0, 0, 64);
        r.rcv_nxt = (1 << 32) - 2;
        r.top = r.rcv_nxt;
        assert_eq!(r.classify(u32::MAX - 1), Arrival::New((1 << 32) - 2));
        assert_eq!(r.classify(3), Arrival::New((1 << 32) + 3));
        assert_eq!(r.classify(u32::MAX - 5), Arrival::Duplicate);
    }
}
