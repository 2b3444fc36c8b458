//! Loss recovery of one path: the in-flight window of packet *descriptors* (no payload
//! copies: payloads are re-read from the gradient buffer, which stays valid until every send
//! of the round is acknowledged), selective acknowledgements, and loss detection by
//! [`LossCause`]: duplicate-ack threshold, tail-loss timer, retransmission timeout.
//!
//! Which packets a cause declares lost is decided here ([`SentWindow::mark_lost`]); the path
//! (`SendPath::declare_lost`) does everything else a loss implies, once for all causes.

use super::send::SendItem;
use crate::wire::AckRepr;
use crate::Nanos;
use std::collections::VecDeque;

/// Packets acknowledged after an unacknowledged one before it is declared lost.
pub(crate) const DUP_THRESHOLD: u64 = 3;

/// Why packets are declared lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LossCause {
    /// [`DUP_THRESHOLD`] later packets were acknowledged, by an acknowledgement that
    /// newly acknowledged `acked` packets (the loss rate weighs losses against those).
    DupAck { acked: u64 },
    /// The tail-loss timer: nothing left to send and no acknowledgement within two RTTs
    /// plus the ack delay. Everything in flight is presumed lost.
    TailTimer,
    /// The retransmission timeout: everything sent at least `timeout` ago is presumed lost.
    Rto { timeout: Nanos },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum EntryState {
    #[default]
    Empty,
    InFlight,
    Lost,
    Acked,
}

#[derive(Debug, Clone, Copy, Default)]
struct InflightEntry {
    item: SendItem,
    state: EntryState,
    sent_ns: Nanos,
}

/// Sequence numbers sent and not yet cumulatively acknowledged, in a ring of descriptors,
/// and the retransmission queue.
#[derive(Debug)]
pub(crate) struct SentWindow {
    ring: Vec<InflightEntry>,
    mask: u64,
    /// Oldest unacknowledged sequence number.
    snd_una: u64,
    /// Next new sequence number.
    snd_nxt: u64,
    /// Highest sequence number acknowledged so far, plus one.
    acked_top: u64,
    /// Sequence numbers below this were already examined for duplicate-ack loss.
    loss_scan: u64,
    /// Sequence numbers declared lost, to resend in this order.
    rtx: VecDeque<u64>,
    /// Newest timestamp echoed by an acknowledgement (replayed acks echo older ones).
    max_echo_ns: Nanos,
}

impl SentWindow {
    /// A window of `cap` packets (a power of two).
    pub fn new(cap: usize) -> Self {
        debug_assert!(cap.is_power_of_two());
        Self {
            ring: vec![InflightEntry::default(); cap],
            mask: cap as u64 - 1,
            snd_una: 0,
            snd_nxt: 0,
            acked_top: 0,
            loss_scan: 0,
            rtx: VecDeque::new(),
            max_echo_ns: 0,
        }
    }

    #[inline]
    fn entry(&self, seq: u64) -> &InflightEntry {
        &self.ring[(seq & self.mask) as usize]
    }

    #[inline]
    fn entry_mut(&mut self, seq: u64) -> &mut InflightEntry {
        &mut self.ring[(seq & self.mask) as usize]
    }

    /// Nothing sent is unacknowledged.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.snd_una == self.snd_nxt
    }

    /// No room for a new sequence number.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.snd_nxt - self.snd_una > self.mask
    }

    #[inline]
    pub fn has_retransmissions(&self) -> bool {
        !self.rtx.is_empty()
    }

    pub fn snd_una(&self) -> u64 {
        self.snd_una
    }

    pub fn snd_nxt(&self) -> u64 {
        self.snd_nxt
    }

    /// Room for `n` queued retransmissions without growing.
    pub fn reserve_retransmissions(&mut self, n: usize) {
        if self.rtx.capacity() < n {
            self.rtx.reserve(n);
        }
    }

    /// When the oldest unacknowledged packet was (last) sent.
    #[inline]
    pub fn oldest_sent_ns(&self) -> Option<Nanos> {
        (!self.is_empty()).then(|| self.entry(self.snd_una).sent_ns)
    }

    /// The next packet to send: a retransmission first (skipping ones acknowledged
    /// meanwhile), else `fresh()`'s item under a new sequence number if the window has room.
    /// Returns its sequence number, the item and whether it is a retransmission.
    #[inline]
    pub fn next_to_send(
        &mut self,
        fresh: impl FnOnce() -> Option<SendItem>,
    ) -> Option<(u64, SendItem, bool)> {
        while let Some(seq) = self.rtx.pop_front() {
            let e = self.entry(seq);
            if seq >= self.snd_una && e.state == EntryState::Lost {
                return Some((seq, e.item, true));
            }
        }
        if self.is_full() {
            return None;
        }
        let item = fresh()?;
        let seq = self.snd_nxt;
        self.snd_nxt += 1;
        Some((seq, item, false))
    }

    /// Records that `seq` (carrying `item`) left at `now`.
    #[inline]
    pub fn on_sent(&mut self, seq: u64, item: SendItem, now: Nanos) {
        *self.entry_mut(seq) = InflightEntry {
            item,
            state: EntryState::InFlight,
            sent_ns: now,
        };
    }

    /// Applies an acknowledgement whose cumulative ack and top were expanded to `cum` and
    /// `top` (both at most `snd_nxt`). Returns how many packets it newly acknowledged, or
    /// `None` if it carries no news and echoes an older timestamp than one already seen
    /// (reordered or replayed: a PAWS-like guard; its echoed timestamp would only feed a
    /// bogus RTT sample). Slides `snd_una` past what is acknowledged.
    #[inline]
    pub fn on_ack(&mut self, cum: u64, top: u64, ack: &AckRepr) -> Option<u64> {
        let mut newly = 0u64;
        let mut mark = |e: &mut InflightEntry| {
            if e.state == EntryState::InFlight || e.state == EntryState::Lost {
                e.state = EntryState::Acked;
                newly += 1;
            }
        };
        for s in self.snd_una..cum.max(self.snd_una) {
            mark(&mut self.ring[(s & self.mask) as usize]);
        }
        for i in 0..64u64 {
            if ack.bits >> i & 1 == 1 && top > i {
                let s = top - 1 - i;
                if s >= self.snd_una && s < self.snd_nxt {
                    mark(&mut self.ring[(s & self.mask) as usize]);
                }
            }
        }
        if newly == 0 && ack.echo_ts_ns < self.max_echo_ns {
            return None;
        }
        self.max_echo_ns = self.max_echo_ns.max(ack.echo_ts_ns);
        if top > 0 && ack.bits & 1 == 1 {
            self.acked_top = self.acked_top.max(top);
        }
        self.acked_top = self.acked_top.max(cum);
        while self.snd_una < self.snd_nxt && self.entry(self.snd_una).state == EntryState::Acked {
            self.entry_mut(self.snd_una).state = EntryState::Empty;
            self.snd_una += 1;
        }
        Some(newly)
    }

    /// Marks what `cause` presumes lost and queues it for retransmission, in sequence order.
    /// Returns how many packets that was.
    #[inline]
    pub fn mark_lost(&mut self, cause: LossCause, now: Nanos) -> u64 {
        let mut lost = 0u64;
        match cause {
            LossCause::DupAck { .. } => {
                self.loss_scan = self.loss_scan.max(self.snd_una);
                let limit = self.acked_top.saturating_sub(DUP_THRESHOLD);
                while self.loss_scan < limit {
                    let s = self.loss_scan;
                    lost += self.mark_one(s, |_| true) as u64;
                    self.loss_scan += 1;
                }
            }
            LossCause::TailTimer => {
                for s in self.snd_una..self.snd_nxt {
                    lost += self.mark_one(s, |_| true) as u64;
                }
            }
            LossCause::Rto { timeout } => {
                for s in self.snd_una..self.snd_nxt {
                    lost += self.mark_one(s, |e| e.sent_ns + timeout <= now) as u64;
                }
            }
        }
        lost
    }

    /// Declares `seq` lost if it is in flight and `due(entry)`.
    #[inline]
    fn mark_one(&mut self, seq: u64, due: impl Fn(&InflightEntry) -> bool) -> bool {
        let e = self.entry_mut(seq);
        if e.state == EntryState::InFlight && due(e) {
            e.state = EntryState::Lost;
            self.rtx.push_back(seq);
            true
        } else {
            false
        }
    }
}

/// Packets a path has declared lost, and its recent loss fraction.
#[derive(Debug, Clone, Default)]
pub(crate) struct LossRecord {
    /// Cumulative packets declared lost since the path was created (telemetry).
    pub lost_pkts: u64,
    /// Recent fraction of packets lost: a per-packet EWMA over about 1024 packets, long
    /// enough to tell 1 % random loss from a congestion burst.
    pub rate: f64,
}

impl LossRecord {
    /// Folds in one loss-detection outcome: `acked` packets acknowledged and `lost`
    /// declared lost, weighted by how many packets they are.
    #[inline]
    pub fn record(&mut self, acked: u64, lost: u64) {
        self.lost_pkts += lost;
        let events = acked + lost;
        if events > 0 {
            let a = (events as f64 / 1024.0).min(1.0);
            self.rate = (1.0 - a) * self.rate + a * (lost as f64 / events as f64);
        }
    }
}

/// When a path's loss timers may fire.
#[derive(Debug, Clone)]
pub(crate) struct LossTimers {
    /// When the retransmission timer last fired; the next firing is at least one RTO later.
    pub rto_fired_ns: Nanos,
    /// When the path last sent a datagram (the tail timer counts from it).
    pub last_sent_ns: Nanos,
    /// Whether the tail-loss timer may fire: once per tail, re-armed by an acknowledgement
    /// that acknowledges something new.
    pub tail_armed: bool,
}

impl Default for LossTimers {
    fn default() -> Self {
        Self {
            rto_fired_ns: 0,
            last_sent_ns: 0,
            tail_armed: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::PacketKind;

    fn item(seg: u32) -> SendItem {
        SendItem::new(PacketKind::ReduceData, 0, seg, 100)
    }

    /// A window with packets `0..n` sent at `seq * 10` ns.
    fn sent(n: u64) -> SentWindow {
        let mut w = SentWindow::new(16);
        let mut seg = 0;
        for _ in 0..n {
            let (seq, it, rtx) = w
                .next_to_send(|| {
                    seg += 1;
                    Some(item(seg - 1))
                })
                .unwrap();
            assert!(!rtx);
            w.on_sent(seq, it, seq * 10);
        }
        w
    }

    /// An ack of everything below `cum` and of the sequence numbers in `sacked`.
    fn ack(w: &mut SentWindow, cum: u64, sacked: &[u64], echo: Nanos) -> Option<u64> {
        let top = sacked.iter().map(|s| s + 1).max().unwrap_or(cum).max(cum);
        let mut bits = 0u64;
        for s in sacked.iter().copied().chain(0..cum) {
            if s < top && top - 1 - s < 64 {
                bits |= 1 << (top - 1 - s);
            }
        }
        let repr = AckRepr {
            cum_ack: cum as u32,
            top: top as u32,
            bits,
            echo_ts_ns: echo,
            owd_ns: 0,
        };
        w.on_ack(cum, top, &repr)
    }

    fn retransmissions(w: &mut SentWindow) -> Vec<u64> {
        std::iter::from_fn(|| w.next_to_send(|| None).map(|(s, _, rtx)| (s, rtx)))
            .map(|(s, rtx)| {
                assert!(rtx);
                s
            })
            .collect()
    }

    #[test]
    fn cumulative_ack_slides_the_window() {
        let mut w = sent(5);
        assert_eq!(ack(&mut w, 3, &[], 1), Some(3));
        assert_eq!(w.snd_una(), 3);
        assert_eq!(w.oldest_sent_ns(), Some(30));
        assert_eq!(ack(&mut w, 5, &[], 2), Some(2));
        assert!(w.is_empty());
        assert_eq!(w.oldest_sent_ns(), None);
    }

    #[test]
    fn dupack_loss_needs_three_later_packets_acknowledged() {
        let mut w = sent(8);
        // 0 is missing; 1 and 2 acknowledged: not yet lost.
        assert_eq!(ack(&mut w, 0, &[1, 2], 1), Some(2));
        assert_eq!(w.mark_lost(LossCause::DupAck { acked: 2 }, 100), 0);
        // 3 acknowledged too: 0 has three later packets acknowledged.
        assert_eq!(ack(&mut w, 0, &[1, 2, 3], 2), Some(1));
        assert_eq!(w.mark_lost(LossCause::DupAck { acked: 1 }, 100), 1);
        assert_eq!(retransmissions(&mut w), [0]);
        // Not declared twice.
        assert_eq!(w.mark_lost(LossCause::DupAck { acked: 0 }, 100), 0);
    }

    #[test]
    fn dupack_loss_declares_every_hole_below_the_threshold_in_order() {
        let mut w = sent(10);
        assert_eq!(ack(&mut w, 0, &[2, 5, 9], 1), Some(3));
        // Top is 10: everything unacknowledged below 7 is lost; 7 and 8 wait.
        assert_eq!(w.mark_lost(LossCause::DupAck { acked: 3 }, 100), 5);
        assert_eq!(retransmissions(&mut w), [0, 1, 3, 4, 6]);
    }

    #[test]
    fn tail_timer_declares_everything_in_flight() {
        let mut w = sent(6);
        ack(&mut w, 2, &[4], 1);
        assert_eq!(w.mark_lost(LossCause::TailTimer, 1_000), 3);
        assert_eq!(retransmissions(&mut w), [2, 3, 5]);
        // Already lost (and not resent): not declared again.
        assert_eq!(w.mark_lost(LossCause::TailTimer, 2_000), 0);
    }

    #[test]
    fn rto_declares_only_what_was_sent_a_timeout_ago() {
        let mut w = sent(6); // sent at 0, 10, .., 50
        assert_eq!(w.mark_lost(LossCause::Rto { timeout: 100 }, 125), 3);
        assert_eq!(retransmissions(&mut w), [0, 1, 2]);
    }

    #[test]
    fn retransmission_reuses_the_descriptor_and_acks_skip_it() {
        let mut w = sent(4);
        w.mark_lost(LossCause::TailTimer, 100);
        // 1 is acknowledged before its retransmission leaves: it is skipped.
        ack(&mut w, 0, &[1], 1);
        let (seq, it, rtx) = w.next_to_send(|| None).unwrap();
        assert_eq!((seq, it, rtx), (0, item(0), true));
        w.on_sent(seq, it, 200);
        let (seq, _, _) = w.next_to_send(|| None).unwrap();
        assert_eq!(seq, 2);
        assert_eq!(w.oldest_sent_ns(), Some(200));
    }

    #[test]
    fn a_full_window_takes_no_new_packet() {
        let mut w = sent(16);
        assert!(w.is_full());
        assert!(w.next_to_send(|| Some(item(99))).is_none());
        ack(&mut w, 1, &[], 1);
        assert!(w.next_to_send(|| Some(item(99))).is_some());
    }

    #[test]
    fn stale_ack_is_rejected() {
        let mut w = sent(4);
        assert_eq!(ack(&mut w, 2, &[], 50), Some(2));
        // Acknowledges nothing new and echoes an older timestamp: replayed.
        assert_eq!(ack(&mut w, 2, &[], 40), None);
        // Nothing new but a fresh echo: fine (a duplicate ack).
        assert_eq!(ack(&mut w, 2, &[], 60), Some(0));
    }

    #[test]
    fn loss_rate_weighs_losses_per_packet() {
        let mut r = LossRecord::default();
        r.record(0, 0);
        assert_eq!(r.rate, 0.0);
        r.record(1023, 1);
        // One event of 1024 packets, 1/1024 of them lost: the EWMA jumps to that fraction.
        assert_eq!(r.rate, 1.0 / 1024.0);
        assert_eq!(r.lost_pkts, 1);
        // A timer loss of 10 packets: weight 10/1024, all lost.
        r.record(0, 10);
        let a = 10.0 / 1024.0;
        assert_eq!(r.rate, (1.0 - a) / 1024.0 + a);
        assert_eq!(r.lost_pkts, 11);
    }
}
