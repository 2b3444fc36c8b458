//! Paths: every route of the policy that starts or ends here. A route has its own 64-bit
//! sequence space (32 bits on the wire); its receiver ([`RecvPath`]) tracks gaps and
//! answers with selective acknowledgements, its sender ([`SendPath`]) keeps a bounded
//! in-flight window of descriptors, detects loss, estimates the RTT, samples the delivery
//! rate and paces at its congestion controller's rate.
//!
//! A [`SendPath`] composes one part per concern: [`send`] (the queue), [`recovery`] (the
//! in-flight window, loss detection, loss timers), [`rtt`], [`rate_sample`], the
//! congestion controller and its pacer.

pub(crate) mod rate_sample;
pub(crate) mod recovery;
pub(crate) mod recv;
pub(crate) mod rtt;
pub(crate) mod send;

use super::congestion::{AckSignal, Aimd, Controller};
use super::pacing::Pacer;
use super::{Counters, EngineConfig, EngineError, PathTelemetry};
use crate::policy::{PathId, Policy};
use crate::topology::Topology;
use crate::wire::AckRepr;
use crate::{Nanos, NodeId};
use rate_sample::RateSampler;
use recovery::{LossCause, LossRecord, LossTimers, SentWindow};
use recv::RecvPath;
use rtt::RttEstimator;
use send::{SendItem, SendQueue};
use std::collections::VecDeque;

/// Queueing delay above the route's minimum RTT that counts as congestion (or a quarter of
/// that minimum, if more).
const QUEUEING_THRESHOLD_NS: Nanos = 3_000_000;

/// The congestion controller every path runs.
pub(crate) type PathController = Aimd;

/// Sender side of one path originating here.
#[derive(Debug)]
pub(crate) struct SendPath {
    pub hops: Vec<NodeId>,
    pub next_hop: NodeId,
    pub queue: SendQueue,
    sent: SentWindow,
    loss: LossRecord,
    timers: LossTimers,
    rtt: RttEstimator,
    cc: PathController,
    /// Paces at `cc`'s rate (set after every controller call).
    pub pacer: Pacer,
    delivery: RateSampler,
    /// This node's real-time loop is behind (see [`SendPath::set_loop_behind`]).
    loop_behind: bool,
}

impl SendPath {
    pub fn new(hops: Vec<NodeId>, cap: usize, rate_bps: f64, cfg: &EngineConfig) -> Self {
        let frame_bits = (cfg.frame_bytes() * 8) as f64;
        Self {
            next_hop: hops[1],
            hops,
            queue: SendQueue::default(),
            sent: SentWindow::new(cap),
            loss: LossRecord::default(),
            timers: LossTimers::default(),
            rtt: RttEstimator::new(cfg.initial_rto_ns, cfg.min_rto_ns, cfg.max_rto_ns),
            cc: PathController::new(rate_bps, cfg.loss_tolerance, frame_bits),
            pacer: Pacer::new(rate_bps),
            delivery: RateSampler::new(frame_bits),
            loop_behind: false,
        }
    }

    /// This node's loop fell behind (`true`: a long gap between iterations or a receive
    /// backlog) or caught up. While behind, samples are CPU-limited and treated like
    /// application-limited ones: the open rate window is marked so, and RTT growth is no
    /// congestion signal — the acks were read late, the route did not slow down.
    pub fn set_loop_behind(&mut self, behind: bool) {
        self.loop_behind = behind;
        if behind {
            self.delivery.mark_app_limited();
        }
    }

    /// A policy starts the path at `nominal_bps` and lets it grow up to `ceiling_bps`.
    pub fn reset_rates(&mut self, nominal_bps: f64, ceiling_bps: f64) {
        self.cc.reset(nominal_bps, ceiling_bps);
        self.pacer.set_rate(self.cc.rate_bps());
    }

    /// Nothing queued, nothing unacknowledged.
    #[inline]
    pub fn idle(&self) -> bool {
        self.queue.is_empty() && self.sent.is_empty()
    }

    /// Something may be sent once pacing allows.
    #[inline]
    pub fn has_work(&self) -> bool {
        self.sent.has_retransmissions() || (!self.queue.is_empty() && !self.sent.is_full())
    }

    /// Seeds the RTT estimator with `rtt_ns` (see [`RttEstimator::seed`]).
    pub fn seed_rtt(&mut self, rtt_ns: Nanos) {
        self.rtt.seed(rtt_ns);
    }

    /// The retransmission timeout in force.
    #[cfg(test)]
    pub fn rto_ns(&self) -> Nanos {
        self.rtt.rto_timeout()
    }

    /// Room for a round's worst case: `need` queued segments (and as many retransmissions,
    /// up to the window).
    pub fn reserve(&mut self, need: usize, window: usize) {
        self.queue.reserve_total(need);
        self.sent.reserve_retransmissions(window.min(need.max(1)));
    }

    pub fn srtt_ns(&self) -> Option<Nanos> {
        self.rtt.smoothed()
    }

    pub fn rate_bps(&self) -> f64 {
        self.cc.rate_bps()
    }

    pub fn telemetry(&self, id: PathId, frame_bytes: u64) -> PathTelemetry {
        PathTelemetry {
            path: id,
            hops: self.hops.clone(),
            delivered_bytes: self.delivery.delivered_pkts() * frame_bytes,
            lost_packets: self.loss.lost_pkts,
            srtt_ns: self.rtt.smoothed(),
            min_rtt_ns: self.rtt.min(),
            rate_sample: self.delivery.sample(),
            pacing_bps: self.cc.rate_bps(),
        }
    }

    // -- loss timers ---------------------------------------------------------------------

    /// The retransmission timer: one (backed-off) RTO after the oldest unacknowledged
    /// packet left, and at least that long after the timer last fired.
    #[inline]
    fn rto_deadline(&self) -> Option<Nanos> {
        let oldest = self.sent.oldest_sent_ns()?;
        Some(oldest.max(self.timers.rto_fired_ns) + self.rtt.rto_timeout())
    }

    /// The tail-loss timer (RFC 8985's probe timeout, acting like RACK's timer): when the
    /// path has nothing left to send and no acknowledgement came within the RTT's tail
    /// timeout (see [`RttEstimator::tail_timeout`]) plus the peer's ack delay of its last
    /// datagram, what is still in flight is presumed lost. On a microsecond link this
    /// recovers a lost tail in tens of microseconds instead of one RTO (srtt + 4 x
    /// max(rttvar, 1 ms)); on a WAN the RTO usually comes first.
    #[inline]
    fn tail_deadline(&self, ack_delay_ns: Nanos) -> Option<Nanos> {
        let timeout = self.rtt.tail_timeout()?;
        (self.timers.tail_armed
            && !self.sent.is_empty()
            && self.queue.is_empty()
            && !self.sent.has_retransmissions())
        .then(|| self.timers.last_sent_ns + timeout + ack_delay_ns)
    }

    /// The earlier of the retransmission and tail-loss timers.
    #[inline]
    pub fn timer_deadline(&self, ack_delay_ns: Nanos) -> Option<Nanos> {
        match (self.rto_deadline(), self.tail_deadline(ack_delay_ns)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Fires the loss timers due at `now`: the RTO before the tail timer.
    pub fn on_timers(&mut self, now: Nanos, ack_delay_ns: Nanos, counters: &mut Counters) {
        let rto_due = self.rto_deadline().is_some_and(|d| d <= now);
        let tail_due = !rto_due && self.tail_deadline(ack_delay_ns).is_some_and(|d| d <= now);
        if tail_due {
            // The tail went unanswered: everything in flight is presumed lost, without the
            // RTO's back-off (RTT estimates stay trusted).
            counters.tail_timer_fired += 1;
            self.timers.tail_armed = false;
            self.declare_lost(LossCause::TailTimer, now, counters);
            self.cc
                .on_timer_loss(now, &self.rtt, LossCause::TailTimer, self.loss.rate);
        } else if rto_due {
            counters.rto_fired += 1;
            let cause = LossCause::Rto {
                timeout: self.rtt.rto_timeout(),
            };
            self.declare_lost(cause, now, counters);
            self.rtt.back_off();
            self.timers.rto_fired_ns = now;
            self.cc.on_timer_loss(now, &self.rtt, cause, self.loss.rate);
        }
        self.pacer.set_rate(self.cc.rate_bps());
    }

    // -- loss ----------------------------------------------------------------------------

    /// Declares what `cause` presumes lost: marks it for retransmission and accounts for
    /// it — the path's loss count and rate, the engine's `loss_detected` — the same way for
    /// every cause. Returns how many packets were declared lost.
    pub fn declare_lost(&mut self, cause: LossCause, now: Nanos, counters: &mut Counters) -> u64 {
        let lost = self.sent.mark_lost(cause, now);
        let acked = match cause {
            LossCause::DupAck { acked } => acked,
            LossCause::TailTimer | LossCause::Rto { .. } => 0,
        };
        self.loss.record(acked, lost);
        counters.loss_detected += lost;
        lost
    }

    // -- acknowledgements ----------------------------------------------------------------

    /// Applies an acknowledgement received at `now`. Returns false if it was stale
    /// (counted in `rx_stale_ack`).
    #[inline]
    pub fn on_ack(&mut self, now: Nanos, ack: &AckRepr, counters: &mut Counters) -> bool {
        let (una, nxt) = (self.sent.snd_una(), self.sent.snd_nxt());
        let cum = expand_seq(ack.cum_ack, una).min(nxt);
        let top = expand_seq(ack.top, nxt).min(nxt);
        let Some(acked) = self.sent.on_ack(cum, top, ack) else {
            counters.rx_stale_ack += 1;
            return false;
        };
        let lost = self.declare_lost(LossCause::DupAck { acked }, now, counters);
        let mut queueing = false;
        let mut forward_queue = false;
        if ack.echo_ts_ns > 0 && ack.echo_ts_ns <= now {
            let sample = now - ack.echo_ts_ns;
            self.rtt.on_sample(sample);
            let min_rtt = self.rtt.min_or_max();
            let threshold = QUEUEING_THRESHOLD_NS.max(min_rtt / 4);
            // Delay signal (Vegas-like): a queue is building somewhere on the round trip.
            // The RTT, not the one-way delay below: backing off only for forward queues was
            // tried and cost fan-in heavy plans up to 4x on the emulated WAN (mesh on
            // paper9 at 500 Mbit/s: 5.5 -> 23 s), whose acks share the crowded links.
            queueing = sample > min_rtt + threshold;
            forward_queue = self.delivery.forward_queue(ack.owd_ns, threshold);
        }
        // A loop that fell behind makes samples CPU-limited: they may raise an estimate,
        // never lower it — no decrease on RTT growth, no saturation claim, the rate window
        // application-limited.
        let behind = self.loop_behind;
        if behind {
            counters.cpu_limited_acks += 1;
            queueing = false;
            forward_queue = false;
        }
        let sender_dry = self.queue.is_empty() && !self.sent.has_retransmissions();
        self.delivery.on_ack(
            now,
            acked,
            sender_dry || behind,
            forward_queue,
            self.rtt.smoothed_or_rto(),
        );
        let signal = AckSignal {
            acked,
            lost,
            queueing,
            loss_rate: self.loss.rate,
        };
        self.cc.on_ack(now, &self.rtt, &signal);
        self.pacer.set_rate(self.cc.rate_bps());
        if acked > 0 {
            self.timers.tail_armed = true;
        }
        true
    }

    // -- sending -------------------------------------------------------------------------

    /// The next datagram's sequence number and segment, and whether it is a retransmission.
    #[inline]
    pub fn next_to_send(&mut self) -> Option<(u64, SendItem, bool)> {
        let queue = &mut self.queue;
        self.sent.next_to_send(|| queue.pop())
    }

    /// Records that `seq` left at `now` (before the datagram is written).
    #[inline]
    pub fn on_sent(&mut self, seq: u64, item: SendItem, now: Nanos) {
        self.sent.on_sent(seq, item, now);
    }

    /// Charges a frame of `frame_bytes` that left at `now` to the path's pacer.
    #[inline]
    pub fn on_frame_left(&mut self, now: Nanos, frame_bytes: usize) {
        self.pacer.charge(now, frame_bytes);
        self.timers.last_sent_ns = now;
    }
}

/// Every path that starts or ends here, by path id.
#[derive(Debug, Default)]
pub(crate) struct Paths {
    pub send: Vec<Option<SendPath>>,
    /// Ids of the `Some` entries of `send`, ascending: the data round-robin visits only
    /// these (the policy's route table also holds every other node's paths).
    pub send_ids: Vec<usize>,
    /// Position in `send_ids` where the next data round-robin scan starts.
    pub rr_cursor: usize,
    pub recv: Vec<Option<RecvPath>>,
    /// Receive paths with an acknowledgement to send, in order.
    pub ack_queue: VecDeque<PathId>,
    /// This node's loop is behind (every send path knows it too).
    loop_behind: bool,
}

impl Paths {
    /// (Re)creates the state of `policy`'s routes that start or end at `me`: a path whose
    /// route is unchanged keeps its state (and restarts at the new rates); one whose route
    /// changed while packets on the old one are unacknowledged is an error. A new path's
    /// RTT estimator is seeded from `topo`'s latencies when they are known
    /// ([`initial_rtt_ns`]).
    pub fn install(
        &mut self,
        policy: &Policy,
        me: NodeId,
        cfg: &EngineConfig,
        topo: &Topology,
    ) -> Result<(), EngineError> {
        let cap = cfg.max_inflight;
        if self.send.len() < policy.routes.len() {
            self.send.resize_with(policy.routes.len(), || None);
            self.recv.resize_with(policy.routes.len(), || None);
        }
        let route_rates = policy.route_rates_bps(cfg.default_rate_bps);
        for (id, route) in policy.routes.iter().enumerate() {
            let hops = &route.hops;
            if hops[0] == me {
                let rate = route_rates[id];
                let ceiling = hops
                    .windows(2)
                    .map(|w| policy.link_rate(w[0], w[1]).unwrap_or(cfg.default_rate_bps))
                    .fold(f64::INFINITY, f64::min);
                let sp = match &mut self.send[id] {
                    Some(p) if p.hops == *hops => p,
                    Some(p) if !p.idle() => return Err(EngineError::PathBusy(id as PathId)),
                    slot => {
                        let sp = slot.insert(SendPath::new(hops.clone(), cap, rate, cfg));
                        sp.set_loop_behind(self.loop_behind);
                        if let Some(rtt) = initial_rtt_ns(topo, hops, cfg.ack_delay_ns) {
                            sp.seed_rtt(rtt);
                        }
                        sp
                    }
                };
                sp.reset_rates(rate, ceiling);
            }
            let ack_hop = hops[hops.len() - 2];
            let same = |r: &RecvPath| r.origin == hops[0] && r.ack_next_hop == ack_hop;
            if *hops.last().expect("validated") == me && !self.recv[id].as_ref().is_some_and(same) {
                self.recv[id] = Some(RecvPath::new(hops[0], ack_hop, cap));
            }
        }
        self.send_ids.clear();
        self.send_ids
            .extend((0..self.send.len()).filter(|&id| self.send[id].is_some()));
        self.rr_cursor = 0;
        Ok(())
    }

    /// Sizes every queue for the worst case of one round (`queue_need[path]` segments), so
    /// nothing grows per packet.
    pub fn reserve(&mut self, queue_need: &[usize], window: usize) {
        for (id, need) in queue_need.iter().enumerate() {
            if let Some(p) = &mut self.send[id] {
                p.reserve(*need, window);
            }
        }
        if self.ack_queue.capacity() < queue_need.len() {
            self.ack_queue.reserve(queue_need.len());
        }
    }

    /// Queues an acknowledgement on receive path `path` (at most once).
    #[inline]
    pub fn queue_ack(&mut self, path: usize) {
        let rp = self.recv[path].as_mut().expect("caller checked");
        rp.ack_deadline = None;
        if !rp.ack_queued {
            rp.ack_queued = true;
            self.ack_queue.push_back(path as PathId);
        }
    }

    /// This node's loop fell behind or caught up (see [`SendPath::set_loop_behind`]);
    /// touches the paths only when the state changes.
    pub fn set_loop_behind(&mut self, behind: bool) {
        if behind == self.loop_behind {
            return;
        }
        self.loop_behind = behind;
        for sp in self.send.iter_mut().flatten() {
            sp.set_loop_behind(behind);
        }
    }

    pub fn loop_behind(&self) -> bool {
        self.loop_behind
    }

    /// Every send path is idle.
    pub fn all_idle(&self) -> bool {
        self.send.iter().flatten().all(|p| p.idle())
    }

    /// Queues `item` on send path `path`.
    // Always: once per segment forwarded; the call cost more than the push.
    #[inline(always)]
    pub fn enqueue(&mut self, path: PathId, item: SendItem) {
        self.send[path as usize]
            .as_mut()
            .expect("compiled path")
            .queue
            .push(item);
    }
}

/// The initial RTT estimate of a route (RFC 9002's initial RTT, from what the topology
/// knows): its links' one-way latencies out, the reverse links' back (acknowledgements
/// retrace the route), plus the receiver's acknowledgement delay. `None` when some link's
/// latency is unknown (0, as in a node file without `latency_ms`): the caller falls back to
/// the configured initial RTO.
pub(crate) fn initial_rtt_ns(
    topo: &Topology,
    hops: &[NodeId],
    ack_delay_ns: Nanos,
) -> Option<Nanos> {
    let mut rtt = ack_delay_ns;
    for w in hops.windows(2) {
        let out = topo.link(w[0], w[1])?.latency_ns;
        let back = topo.link(w[1], w[0]).map_or(out, |l| l.latency_ns);
        if out == 0 || back == 0 {
            return None;
        }
        rtt += out + back;
    }
    (hops.len() >= 2).then_some(rtt)
}

/// Reconstructs a 64-bit sequence number from its low 32 bits, nearest to `expected`.
#[inline]
pub(crate) fn expand_seq(wire: u32, expected: u64) -> u64 {
    let base = expected & !0xFFFF_FFFF;
    let candidates = [base.wrapping_sub(1 << 32), base, base + (1 << 32)];
    let mut best = base | wire as u64;
    let mut best_d = u64::MAX;
    for c in candidates {
        let s = c | wire as u64;
        let d = s.abs_diff(expected);
        if d < best_d {
            best = s;
            best_d = d;
        }
    }
    best
}

#[cfg(test)]
mod tests;
