//! The sans-IO synchronization engine: one per node.
//!
//! The engine is a deterministic state machine (quinn-proto / smoltcp style). It is handed
//! received datagrams ([`Engine::handle_packet`]), the passage of time
//! ([`Engine::handle_timeout`]), policies ([`Engine::install_policy`]) and round starts
//! ([`Engine::start_round`]); it produces datagrams to send ([`Engine::poll_transmit`]),
//! events ([`Engine::poll_event`]) and its next deadline ([`Engine::poll_timeout`]).
//! It never reads a clock, opens a socket or spawns a thread, and it does not allocate per
//! packet: every buffer is sized when a policy is installed.
//!
//! Layers, bottom up:
//! * **Paths** — every route of the policy is a path with its own 64-bit sequence space
//!   (32 bits on the wire). Receivers track gaps and reordering and answer with selective
//!   acknowledgements; senders keep a bounded in-flight window of *descriptors* (no payload
//!   copies: payloads are re-read from the gradient buffer, which stays valid until every
//!   send of the round is acknowledged), detect loss from acknowledgements (three later
//!   packets acknowledged) or a retransmission timeout, and pace at the path's rate.
//!   Relays (inner hops of a route) forward datagrams without looking at the payload.
//! * **Rounds** — the gradient buffer is cut into one contiguous range per tree and each range
//!   into fixed-size segments. Per segment a node adds its children's contributions into its
//!   own buffer (a `u64` mask per segment makes duplicates harmless), forwards the partial sum
//!   as soon as the last child arrived, and the root's value is broadcast down; the root's sum
//!   is the single source of truth, so every node ends bit-identical.
//!
//! A round completes at a node when it holds every final value **and** every packet it sent
//! in the round was acknowledged; only then may the caller overwrite the buffer.

use crate::auth::{self, Auth, PacketMac, PayloadHash};
use crate::kernel;
use crate::policy::{ForwardMode, PathId, Policy, PolicyError};
use crate::probe::{ProbeConfig, ProbeReceiver, ProbeSample, ProbeSender};
use crate::topology::Topology;
use crate::wire::{self, AckRepr, HeaderRepr, Packet, PacketKind, ProbeRepr};
use crate::{Nanos, NodeId, NANOS_PER_SEC};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::ops::Range;

/// Tunables of one engine. Defaults suit a WAN with 1500-byte MTU.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// This node.
    pub node: NodeId,
    pub node_count: u16,
    /// Job id carried in every packet; packets of other jobs are dropped.
    pub job: u32,
    /// Number of f32 elements in the gradient buffer.
    pub buffer_elems: usize,
    /// Elements per segment. Default 352 (1408 bytes: a 1498-byte frame with our header).
    pub segment_elems: usize,
    /// Bytes per frame on the wire besides the datagram (for pacing).
    pub frame_overhead_bytes: usize,
    /// Acknowledge after this many data packets on a path...
    pub ack_every: u32,
    /// ...or after this delay, whichever comes first.
    pub ack_delay_ns: Nanos,
    /// In-flight window per path, packets (rounded up to a power of two).
    pub max_inflight: usize,
    /// Pacing rate for links the policy gives no rate for, bits/s.
    pub default_rate_bps: f64,
    /// How far ahead of its pacing schedule a frame may leave. One poll of a fast link then
    /// moves a batch of frames instead of one (at 100 Gbit/s a 1 KiB frame is 90 ns, far
    /// less than a poll loop); below about 600 Mbit/s the default is less than one frame,
    /// so WAN-rate pacing is unchanged. The long-run rate is unaffected. Default 20 us.
    pub pacing_burst_ns: Nanos,
    /// Retransmission timeout bounds and initial value.
    pub min_rto_ns: Nanos,
    pub max_rto_ns: Nanos,
    pub initial_rto_ns: Nanos,
    /// Packets of the next round that may be held before that round starts.
    pub early_packets: usize,
    /// Datagrams a relay may hold while its outgoing link is busy.
    pub relay_packets: usize,
    /// Loss fraction a path tolerates before it treats losses as congestion (WAN links
    /// drop packets at random; queueing delay stays the main congestion signal). Default
    /// 0.02, BBRv2's loss threshold.
    pub loss_tolerance: f64,
    /// Packet authentication (see [`crate::auth`]). Default [`Auth::JobDerived`]: every
    /// packet tagged and checked; [`Auth::Key`] for a secret key; off only if set to
    /// [`Auth::Disabled`].
    pub auth: Auth,
    /// Active capacity probes on every outgoing link (see [`crate::probe`]).
    pub probe: ProbeConfig,
}

impl EngineConfig {
    pub fn new(node: NodeId, node_count: u16, buffer_elems: usize) -> Self {
        Self {
            node,
            node_count,
            job: 1,
            buffer_elems,
            segment_elems: 352,
            frame_overhead_bytes: wire::FRAME_OVERHEAD_BYTES,
            ack_every: 16,
            ack_delay_ns: 500_000,
            max_inflight: 1 << 16,
            default_rate_bps: 1e9,
            pacing_burst_ns: 20_000,
            min_rto_ns: 5_000_000,
            max_rto_ns: 2 * NANOS_PER_SEC,
            initial_rto_ns: 200_000_000,
            early_packets: 4096,
            relay_packets: 4096,
            auth: Auth::default(),
            probe: ProbeConfig::default(),
            loss_tolerance: 0.02,
        }
    }

    /// Bytes a full data segment occupies on the wire (payload + header + tag + frame overhead).
    pub fn frame_bytes(&self) -> usize {
        self.segment_elems * 4 + wire::HEADER_LEN + self.auth.tag_len() + self.frame_overhead_bytes
    }

    /// Largest datagram this engine emits or accepts for data.
    pub fn max_datagram_len(&self) -> usize {
        wire::HEADER_LEN + self.segment_elems * 4 + wire::AUTH_TAG_LEN
    }

    /// Rejects values that cannot work.
    pub fn validate(&self) -> Result<(), EngineError> {
        let bad = |field: &'static str, why: String| Err(EngineError::Config { field, why });
        if self.node >= self.node_count {
            return bad(
                "node",
                format!("{} is not below node_count {}", self.node, self.node_count),
            );
        }
        if self.segment_elems == 0
            || wire::HEADER_LEN + self.segment_elems * 4
                > wire::MAX_DATAGRAM_LEN - wire::AUTH_TAG_LEN
        {
            return bad(
                "segment_elems",
                format!("{} does not fit one datagram", self.segment_elems),
            );
        }
        if self.ack_every == 0 {
            return bad("ack_every", "must be at least 1".into());
        }
        if self.max_inflight < 16 || self.max_inflight > (1 << 24) {
            return bad(
                "max_inflight",
                format!("{} is outside 16..=16777216", self.max_inflight),
            );
        }
        if !(self.default_rate_bps.is_finite() && self.default_rate_bps > 0.0) {
            return bad(
                "default_rate_bps",
                format!("{} is not a positive rate", self.default_rate_bps),
            );
        }
        if self.pacing_burst_ns > NANOS_PER_SEC / 10 {
            return bad(
                "pacing_burst_ns",
                format!(
                    "{} ns is more than 100 ms: pacing would no longer pace",
                    self.pacing_burst_ns
                ),
            );
        }
        if !(0.0..=1.0).contains(&self.loss_tolerance) {
            return bad(
                "loss_tolerance",
                format!("{} is not a fraction in 0..=1", self.loss_tolerance),
            );
        }
        if let Err(why) = self.probe.validate() {
            return bad("probe", why);
        }
        if self.min_rto_ns == 0 || self.min_rto_ns > self.max_rto_ns {
            return bad(
                "min_rto_ns",
                "must be positive and at most max_rto_ns".into(),
            );
        }
        Ok(())
    }
}

/// Errors of the engine's API (never of packet handling: bad packets are counted and dropped).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    #[error("engine config: {field}: {why}")]
    Config { field: &'static str, why: String },
    #[error("policy rejected: {0}")]
    Policy(#[from] PolicyError),
    #[error("policy epoch {new} is not newer than the installed epoch {current}")]
    StaleEpoch { new: u32, current: u32 },
    #[error("policy is for {policy} nodes, engine for {engine}")]
    NodeCount { policy: usize, engine: usize },
    #[error("no policy installed for round {0}")]
    NoPolicy(u32),
    #[error("round {round} cannot start: {why}")]
    RoundOrder { round: u32, why: String },
    #[error("a new route for path {0} while packets on its old route are unacknowledged")]
    PathBusy(PathId),
}

/// What the engine tells its driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineEvent {
    /// Every final value of `round` is in the buffer (it may be read).
    ResultReady { round: u32, at: Nanos },
    /// The round is over at this node: results ready and every send acknowledged (the buffer
    /// may be overwritten and the next round started).
    RoundComplete { round: u32, epoch: u32, at: Nanos },
}

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

/// What a sender knows about one of its paths (see [`Engine::telemetry`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PathTelemetry {
    pub path: PathId,
    pub hops: Vec<NodeId>,
    /// Cumulative bytes (frames on the wire) acknowledged.
    pub delivered_bytes: u64,
    /// Cumulative packets declared lost (by acknowledgements or timeout).
    pub lost_packets: u64,
    /// RTT from echoed timestamps: no synchronized clocks needed.
    pub srtt_ns: Option<Nanos>,
    pub min_rtt_ns: Option<Nanos>,
    pub rate_sample: Option<RateSample>,
    /// Current pacing rate.
    pub pacing_bps: f64,
}

/// A datagram to send: `len` bytes written at the start of the caller's buffer, for the
/// neighbour `next_hop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    pub next_hop: NodeId,
    pub len: usize,
}

/// Plain counters (cheap on the hot path; read them any time).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub rx_malformed: u64,
    pub rx_wrong_job: u64,
    /// Packets whose authentication tag is missing or wrong (forged, corrupted, other key).
    pub rx_bad_mac: u64,
    pub rx_stale_epoch: u64,
    /// Early packets of a policy epoch not installed here yet (left unacknowledged).
    pub rx_future_epoch: u64,
    /// Valid header but no meaning under the current policy (bad tree, segment, sender, length).
    pub rx_invalid: u64,
    pub rx_duplicate: u64,
    /// Packets of rounds already completed here (acknowledged, ignored).
    pub rx_stale_round: u64,
    /// Acks that acknowledged nothing new and echoed an older timestamp than one already
    /// seen (reordered or replayed): ignored, so they cannot skew RTT or rate estimates.
    pub rx_stale_ack: u64,
    pub rx_early_held: u64,
    pub rx_early_dropped: u64,
    pub rx_out_of_window: u64,
    pub relay_forwarded: u64,
    pub relay_dropped: u64,
    pub tx_data: u64,
    pub tx_retransmits: u64,
    pub tx_acks: u64,
    pub tx_bytes: u64,
    pub loss_detected: u64,
    pub rto_fired: u64,
    /// Tail-loss timer firings: a path with nothing left to send heard no acknowledgement
    /// within 2 RTT + ack delay and resent what was in flight.
    pub tail_timer_fired: u64,
    pub rounds_completed: u64,
    /// Capacity probes: frames and bytes sent, frames received.
    pub tx_probes: u64,
    pub tx_probe_bytes: u64,
    pub rx_probes: u64,
}

// ---------------------------------------------------------------------------------------
// Paths

const ENTRY_EMPTY: u8 = 0;
const ENTRY_INFLIGHT: u8 = 1;
const ENTRY_LOST: u8 = 2;
const ENTRY_ACKED: u8 = 3;
/// Queueing delay above the route's minimum RTT that counts as congestion.
const QUEUEING_THRESHOLD_NS: Nanos = 3_000_000;
/// Packets acknowledged after an unacknowledged one before it is declared lost.
const DUP_THRESHOLD: u64 = 3;

/// A segment waiting to be sent. Ordered by `progress` first: every path serves the item
/// whose tree is least far along (segment index / segment count, 32-bit fixed point), so all
/// trees advance at the same fractional rate, as the fluid model assumes; FIFO order would
/// let one tree monopolize a link while another tree's downstream links sit idle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
struct SendItem {
    progress: u32,
    kind: u8,
    tree: u16,
    seg: u32,
}

impl SendItem {
    fn new(kind: PacketKind, tree: usize, seg: u32, seg_count: u32) -> Self {
        let progress = ((seg as u64) << 32) / (seg_count.max(1) as u64);
        Self {
            progress: progress as u32,
            kind: kind as u8,
            tree: tree as u16,
            seg,
        }
    }
}

/// The per-path queue of [`SendItem`]s, served smallest first. Items mostly arrive in
/// increasing order (segments complete in order), so they go to a FIFO while they do and
/// only out-of-order pushes pay for the heap: a binary heap's O(log n) pop per packet was a
/// third of the engine's time with 1024-segment rounds. Pops return exactly what one binary
/// heap would: the FIFO is sorted, so the minimum is the smaller of its front and the heap's.
#[derive(Debug, Default)]
struct SendQueue {
    fifo: VecDeque<SendItem>,
    heap: BinaryHeap<Reverse<SendItem>>,
}

impl SendQueue {
    fn push(&mut self, item: SendItem) {
        match self.fifo.back() {
            Some(&last) if item < last => self.heap.push(Reverse(item)),
            _ => self.fifo.push_back(item),
        }
    }

    fn pop(&mut self) -> Option<SendItem> {
        match (self.fifo.front(), self.heap.peek()) {
            (Some(&f), Some(&Reverse(h))) if h < f => self.heap.pop().map(|r| r.0),
            (Some(_), _) => self.fifo.pop_front(),
            (None, _) => self.heap.pop().map(|r| r.0),
        }
    }

    fn is_empty(&self) -> bool {
        self.fifo.is_empty() && self.heap.is_empty()
    }

    /// Room for `n` items in either part without growing.
    fn reserve_total(&mut self, n: usize) {
        if self.fifo.capacity() < n {
            self.fifo.reserve(n - self.fifo.len());
        }
        if self.heap.capacity() < n {
            self.heap.reserve(n - self.heap.len());
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct InflightEntry {
    item: SendItem,
    state: u8,
    sent_ns: Nanos,
}

/// Sender side of one path originating here.
#[derive(Debug)]
struct SendPath {
    hops: Vec<NodeId>,
    next_hop: NodeId,
    queue: SendQueue,
    rtx: VecDeque<u64>,
    ring: Vec<InflightEntry>,
    mask: u64,
    snd_una: u64,
    snd_nxt: u64,
    /// Highest sequence number acknowledged so far, plus one.
    acked_top: u64,
    /// Sequence numbers below this were already examined for loss.
    loss_scan: u64,
    srtt_ns: Option<Nanos>,
    /// Smallest RTT seen: the route's propagation + serialization baseline.
    min_rtt_ns: Nanos,
    rttvar_ns: Nanos,
    rto_ns: Nanos,
    rto_backoff: u32,
    /// When the retransmission timer last fired; the next firing is at least one RTO later.
    rto_fired_ns: Nanos,
    /// When this path last sent a datagram, and whether the tail-loss timer may fire (once
    /// per tail: re-armed by an acknowledgement that acknowledges something new).
    last_sent_ns: Nanos,
    tail_timer_armed: bool,
    /// Fair-share rate of the route per the policy (where pacing starts and returns to after
    /// a policy change), the route's bottleneck link rate (how far additive increase may go
    /// when other routes leave capacity unused), and the current pacing rate.
    nominal_bps: f64,
    ceiling_bps: f64,
    rate_bps: f64,
    /// `ns_per_byte(rate_bps)`, kept with it by `set_rate`.
    ns_per_byte: f64,
    next_send_ns: Nanos,
    last_decrease_ns: Nanos,
    /// Recent fraction of packets lost (per-packet EWMA over about 1024 packets: long
    /// enough to tell 1 % random loss from a congestion burst).
    loss_ewma: f64,
    last_increase_ns: Nanos,
    /// Telemetry: packets acknowledged and declared lost since the path was created, and
    /// the current delivery-rate sampling window (BBR-style: bytes acknowledged over at
    /// least one RTT; a window in which the sender ran dry is marked application-limited,
    /// because it says only that the path is at least that fast).
    delivered_pkts: u64,
    lost_pkts: u64,
    window_start_ns: Nanos,
    window_start_pkts: u64,
    window_app_limited: bool,
    window_saturated: bool,
    rate_sample: Option<RateSample>,
    /// Smallest one-way delay echoed by an acknowledgement (in the peer's clock minus ours,
    /// so only differences mean anything): the forward route's empty-queue baseline.
    min_owd_ns: Option<u64>,
    /// Newest timestamp echoed by an acknowledgement (replayed acks echo older ones).
    max_echo_ns: Nanos,
}

impl SendPath {
    fn new(hops: Vec<NodeId>, cap: usize, rate_bps: f64, cfg: &EngineConfig) -> Self {
        Self {
            next_hop: hops[1],
            hops,
            queue: SendQueue::default(),
            rtx: VecDeque::new(),
            ring: vec![InflightEntry::default(); cap],
            mask: cap as u64 - 1,
            snd_una: 0,
            snd_nxt: 0,
            acked_top: 0,
            loss_scan: 0,
            srtt_ns: None,
            min_rtt_ns: Nanos::MAX,
            rttvar_ns: 0,
            rto_ns: cfg.initial_rto_ns,
            rto_backoff: 1,
            rto_fired_ns: 0,
            last_sent_ns: 0,
            tail_timer_armed: true,
            nominal_bps: rate_bps,
            ceiling_bps: rate_bps,
            rate_bps,
            ns_per_byte: ns_per_byte(rate_bps),
            next_send_ns: 0,
            last_decrease_ns: 0,
            loss_ewma: 0.0,
            last_increase_ns: 0,
            delivered_pkts: 0,
            lost_pkts: 0,
            window_start_ns: 0,
            window_start_pkts: 0,
            window_app_limited: false,
            window_saturated: false,
            rate_sample: None,
            min_owd_ns: None,
            max_echo_ns: 0,
        }
    }

    fn set_rate(&mut self, rate_bps: f64) {
        self.rate_bps = rate_bps;
        self.ns_per_byte = ns_per_byte(rate_bps);
    }

    fn idle(&self) -> bool {
        self.queue.is_empty() && self.snd_una == self.snd_nxt
    }

    fn has_work(&self) -> bool {
        !self.rtx.is_empty() || (!self.queue.is_empty() && self.snd_nxt - self.snd_una <= self.mask)
    }

    fn rto_deadline(&self) -> Option<Nanos> {
        (self.snd_una < self.snd_nxt).then(|| {
            let e = &self.ring[(self.snd_una & self.mask) as usize];
            e.sent_ns.max(self.rto_fired_ns) + self.rto_ns.saturating_mul(self.rto_backoff as u64)
        })
    }

    /// The tail-loss timer (RFC 8985's probe timeout, acting like RACK's timer): when the path
    /// has nothing left to send and no acknowledgement came within two smoothed RTTs (or
    /// srtt + 4 rttvar when RTTs vary that much, as under a growing queue) plus the peer's
    /// ack delay of its last datagram, what is still in flight is presumed lost. On a
    /// microsecond link this recovers a lost tail in tens of microseconds instead of one RTO
    /// (srtt + 4 x max(rttvar, 1 ms)); on a WAN the RTO usually comes first.
    fn tail_deadline(&self, ack_delay_ns: Nanos) -> Option<Nanos> {
        let srtt = self.srtt_ns?;
        (self.tail_timer_armed
            && self.snd_una < self.snd_nxt
            && self.queue.is_empty()
            && self.rtx.is_empty())
        .then(|| self.last_sent_ns + (2 * srtt).max(srtt + 4 * self.rttvar_ns) + ack_delay_ns)
    }

    /// The earlier of the retransmission and tail-loss timers.
    fn timer_deadline(&self, ack_delay_ns: Nanos) -> Option<Nanos> {
        match (self.rto_deadline(), self.tail_deadline(ack_delay_ns)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn rtt_sample(&mut self, sample: Nanos, cfg: &EngineConfig) {
        // RFC 6298.
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
        let rto = self.srtt_ns.unwrap_or(sample) + 4 * self.rttvar_ns.max(1_000_000);
        self.rto_ns = rto.clamp(cfg.min_rto_ns, cfg.max_rto_ns);
        self.rto_backoff = 1;
    }

    /// Multiplicative decrease on loss, at most once per round trip.
    fn on_congestion(&mut self, now: Nanos) {
        let rtt = self.srtt_ns.unwrap_or(self.rto_ns);
        if now.saturating_sub(self.last_decrease_ns) >= rtt {
            self.set_rate((self.rate_bps * 0.7).max(self.nominal_bps / 32.0));
            self.last_decrease_ns = now;
            self.last_increase_ns = now;
        }
    }

    /// Additive increase towards the bottleneck rate, once per round trip: one frame per
    /// round trip, as TCP does, but at least 1 % of the nominal rate so long paths recover.
    fn on_progress(&mut self, now: Nanos, frame_bits: f64) {
        if self.rate_bps >= self.ceiling_bps {
            return;
        }
        let rtt = self.srtt_ns.unwrap_or(self.rto_ns).max(1);
        if now.saturating_sub(self.last_increase_ns) >= rtt {
            let step = (frame_bits * 1e9 / rtt as f64).max(self.nominal_bps * 0.01);
            self.set_rate((self.rate_bps + step).min(self.ceiling_bps));
            self.last_increase_ns = now;
        }
    }
}

/// Receiver side of one path ending here.
#[derive(Debug)]
struct RecvPath {
    /// Route back to the origin, for acknowledgements.
    ack_next_hop: NodeId,
    origin: NodeId,
    rcv_nxt: u64,
    top: u64,
    bits: Vec<u64>,
    mask: u64,
    unacked: u32,
    ack_deadline: Option<Nanos>,
    ack_queued: bool,
    echo_ts: Nanos,
    /// Arrival time minus `echo_ts` (two clocks: only its changes mean anything).
    echo_owd: u64,
}

impl RecvPath {
    fn new(origin: NodeId, ack_next_hop: NodeId, cap: usize) -> Self {
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

    fn is_set(&self, seq: u64) -> bool {
        let i = (seq & self.mask) as usize;
        self.bits[i / 64] >> (i % 64) & 1 == 1
    }

    fn set(&mut self, seq: u64, on: bool) {
        let i = (seq & self.mask) as usize;
        if on {
            self.bits[i / 64] |= 1 << (i % 64);
        } else {
            self.bits[i / 64] &= !(1 << (i % 64));
        }
    }

    fn received(&self, seq: u64) -> bool {
        seq < self.rcv_nxt || (seq < self.top && self.is_set(seq))
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

/// Pacing cost of one byte at `rate_bps`, in nanoseconds.
fn ns_per_byte(rate_bps: f64) -> f64 {
    8e9 / rate_bps
}

/// Reconstructs a 64-bit sequence number from its low 32 bits, nearest to `expected`.
fn expand_seq(wire: u32, expected: u64) -> u64 {
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

// ---------------------------------------------------------------------------------------
// Compiled policy

/// The paths of one tree edge; segments are spread over them by the planned weights (each
/// route's share of the edge, in proportion to its estimated rate; re-balanced by re-planning
/// when the estimates change). A backlog-driven pick (fewest queued segments per unit of
/// pacing rate) was tried: +2 % on one scenario, −3 % on another, so the plan decides.
#[derive(Debug, Clone)]
struct EdgeSend {
    paths: Vec<(PathId, f64)>,
    credit: Vec<f64>,
}

impl EdgeSend {
    /// Smooth weighted round-robin by the planned weights.
    fn pick(&mut self) -> PathId {
        if self.paths.len() == 1 {
            return self.paths[0].0;
        }
        let total: f64 = self.paths.iter().map(|p| p.1).sum();
        let mut best = 0;
        for (i, (_, w)) in self.paths.iter().enumerate() {
            self.credit[i] += w;
            if self.credit[i] > self.credit[best] {
                best = i;
            }
        }
        self.credit[best] -= total;
        self.paths[best].0
    }
}

#[derive(Debug, Clone)]
struct TreeAtNode {
    range: Range<usize>,
    /// Offset of this tree's segments in the per-node segment state arrays.
    seg_base: usize,
    seg_count: u32,
    is_root: bool,
    forward: ForwardMode,
    /// `child_slot[v]` = index of `v` among this node's reduce children, or `u8::MAX`.
    child_slot: Vec<u8>,
    full_mask: u64,
    reduce_send: Option<EdgeSend>,
    bcast_parent: Option<NodeId>,
    bcast_send: Vec<EdgeSend>,
}

impl TreeAtNode {
    fn seg_range(&self, seg: u32, seg_elems: usize) -> Range<usize> {
        let start = self.range.start + seg as usize * seg_elems;
        start..(start + seg_elems).min(self.range.end)
    }
}

#[derive(Debug)]
struct Compiled {
    epoch: u32,
    trees: Vec<TreeAtNode>,
    total_segs: usize,
}

const SEG_REDUCED: u8 = 1;
const SEG_FINAL: u8 = 2;
/// `seg_hash` holds the MAC's hash of the segment's final payload (it is broadcast as is).
const SEG_HASHED: u8 = 4;

// ---------------------------------------------------------------------------------------
// Engine

/// One node's synchronization engine. See the module documentation.
#[derive(Debug)]
pub struct Engine {
    cfg: EngineConfig,
    buf: Box<[f32]>,
    /// Node names and links, for validating policies.
    topo: Topology,
    /// Route table of the newest policy (path ids are stable across epochs).
    routes: Vec<Vec<NodeId>>,
    current: Option<Compiled>,
    pending: Option<(Policy, u32)>,
    /// Per neighbour: the link's pacing cost, nanoseconds per byte (8e9 / rate): a multiply
    /// per frame instead of a division.
    link_ns_per_byte: Vec<f64>,
    /// Per-neighbour pacer: earliest time the next frame may leave on `self → v`.
    link_next_ns: Vec<Nanos>,
    send: Vec<Option<SendPath>>,
    /// Ids of the `Some` entries of `send`, ascending: the data round-robin visits only
    /// these (the policy's route table also holds every other node's paths).
    send_ids: Vec<usize>,
    recv: Vec<Option<RecvPath>>,
    ack_queue: VecDeque<PathId>,
    /// Per segment of the current policy: children seen, and REDUCED/FINAL flags.
    seg_mask: Vec<u64>,
    seg_flags: Vec<u8>,
    /// Per segment, with the MAC on: the payload hash of its final value once SEG_HASHED —
    /// from the broadcast's verification when received, else from its first send — so that
    /// each further copy sent (one per broadcast child, retransmissions) hashes only its
    /// header.
    seg_hash: Vec<PayloadHash>,
    tree_reduced: Vec<u32>,
    tree_final: Vec<u32>,
    round: u32,
    round_active: bool,
    /// Highest round ever started (`None` before the first).
    last_round: Option<u32>,
    finals_left: usize,
    result_reported: bool,
    early: Vec<Vec<u8>>,
    early_len: usize,
    relay: VecDeque<(NodeId, usize)>,
    relay_slots: Vec<Vec<u8>>,
    relay_free: Vec<usize>,
    events: VecDeque<EngineEvent>,
    /// Position in `send_ids` where the next data round-robin scan starts.
    rr_cursor: usize,
    /// Lower bounds on the next data send time, retransmission timeout and delayed-ack
    /// deadline over all paths (`Nanos::MAX` = none). Kept incrementally so that the
    /// common call — an ack arrives, nothing can be sent yet — costs O(1), not O(paths);
    /// a stale (too early) bound only causes one rescan.
    next_data_ns: Nanos,
    next_rto_ns: Nanos,
    next_ack_ns: Nanos,
    /// Packet MAC from `cfg.auth` (`None` only when explicitly disabled).
    mac: Option<PacketMac>,
    prober: ProbeSender,
    probe_rx: ProbeReceiver,
    counters: Counters,
}

impl Engine {
    /// A new engine with a zeroed buffer; `topo` tells which links exist (for route checks).
    pub fn new(cfg: EngineConfig, topo: &Topology) -> Result<Self, EngineError> {
        cfg.validate()?;
        if topo.node_count() != cfg.node_count as usize {
            return Err(EngineError::NodeCount {
                policy: topo.node_count(),
                engine: cfg.node_count as usize,
            });
        }
        let n = cfg.node_count as usize;
        let cap = cfg.max_inflight.next_power_of_two();
        let cfg = EngineConfig {
            max_inflight: cap,
            ..cfg
        };
        Ok(Self {
            buf: vec![0.0; cfg.buffer_elems].into_boxed_slice(),
            topo: topo.clone(),
            routes: Vec::new(),
            current: None,
            pending: None,
            link_ns_per_byte: vec![ns_per_byte(cfg.default_rate_bps); n],
            link_next_ns: vec![0; n],
            send: Vec::new(),
            send_ids: Vec::new(),
            recv: Vec::new(),
            ack_queue: VecDeque::new(),
            seg_mask: Vec::new(),
            seg_flags: Vec::new(),
            seg_hash: Vec::new(),
            tree_reduced: Vec::new(),
            tree_final: Vec::new(),
            round: 0,
            round_active: false,
            last_round: None,
            finals_left: 0,
            result_reported: false,
            early: Vec::new(),
            early_len: 0,
            relay: VecDeque::with_capacity(cfg.relay_packets),
            relay_slots: Vec::new(),
            relay_free: Vec::new(),
            events: VecDeque::with_capacity(8),
            rr_cursor: 0,
            next_data_ns: 0,
            next_rto_ns: 0,
            next_ack_ns: 0,
            mac: cfg.auth.key_for(cfg.job).map(PacketMac::new),
            prober: ProbeSender::new(
                cfg.probe,
                // Every configured out-link, cut ones included (`out_neighbors` skips
                // rate 0), so a link that comes back is measured.
                &topo
                    .links
                    .iter()
                    .filter(|l| l.from == cfg.node)
                    .map(|l| l.to)
                    .collect::<Vec<_>>(),
            ),
            probe_rx: ProbeReceiver::new(n),
            counters: Counters::default(),
            cfg,
        })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The gradient buffer: write this node's contribution before [`Engine::start_round`],
    /// read the synchronized result after [`EngineEvent::ResultReady`].
    pub fn buffer(&self) -> &[f32] {
        &self.buf
    }

    /// Mutable access to the buffer; only between rounds.
    pub fn buffer_mut(&mut self) -> &mut [f32] {
        debug_assert!(!self.round_active, "buffer written during a round");
        &mut self.buf
    }

    /// True while a round is running here.
    /// The newest round started here (`None` before the first).
    pub fn last_round(&self) -> Option<u32> {
        self.last_round
    }

    pub fn round_active(&self) -> bool {
        self.round_active
    }

    /// Epoch of the policy the current (or last) round ran under.
    pub fn epoch(&self) -> Option<u32> {
        self.current.as_ref().map(|c| c.epoch)
    }

    /// Smoothed RTT and current pacing rate of the path `path`, if it originates here.
    pub fn path_stats(&self, path: PathId) -> Option<(Option<Nanos>, f64)> {
        self.send
            .get(path as usize)?
            .as_ref()
            .map(|p| (p.srtt_ns, p.rate_bps))
    }

    /// Telemetry of every path that originates here: the raw material of network awareness.
    pub fn telemetry(&self) -> impl Iterator<Item = PathTelemetry> + '_ {
        let frame = self.cfg.frame_bytes() as u64;
        self.send.iter().enumerate().filter_map(move |(id, p)| {
            let p = p.as_ref()?;
            Some(PathTelemetry {
                path: id as PathId,
                hops: p.hops.clone(),
                delivered_bytes: p.delivered_pkts * frame,
                lost_packets: p.lost_pkts,
                srtt_ns: p.srtt_ns,
                min_rtt_ns: (p.min_rtt_ns != Nanos::MAX).then_some(p.min_rtt_ns),
                rate_sample: p.rate_sample,
                pacing_bps: p.rate_bps,
            })
        })
    }

    /// Installs `policy` for rounds `>= activate_round`. Validated against the engine's
    /// topology now; takes effect at the first [`Engine::start_round`] at or after that round.
    pub fn install_policy(
        &mut self,
        policy: Policy,
        activate_round: u32,
    ) -> Result<(), EngineError> {
        if policy.node_count != self.cfg.node_count {
            return Err(EngineError::NodeCount {
                policy: policy.node_count as usize,
                engine: self.cfg.node_count as usize,
            });
        }
        let newest = self
            .pending
            .as_ref()
            .map(|p| p.0.epoch)
            .or(self.current.as_ref().map(|c| c.epoch));
        if let Some(cur) = newest {
            if policy.epoch <= cur {
                return Err(EngineError::StaleEpoch {
                    new: policy.epoch,
                    current: cur,
                });
            }
        }
        policy.validate(&self.topo)?;
        // Path ids are stable within a job, so relays may use the newest table at once.
        if policy.routes.len() >= self.routes.len() {
            self.routes = policy.routes.iter().map(|r| r.hops.clone()).collect();
        }
        self.pending = Some((policy, activate_round));
        Ok(())
    }

    fn activate(&mut self, policy: Policy) -> Result<(), EngineError> {
        let me = self.cfg.node;
        let n = self.cfg.node_count as usize;
        let seg_elems = self.cfg.segment_elems;
        // Paths: (re)create the state of routes that start or end here.
        let cap = self.cfg.max_inflight;
        for lr in &policy.link_rates {
            if lr.from == me {
                self.link_ns_per_byte[lr.to as usize] = ns_per_byte(lr.rate_bps);
            }
        }
        if self.send.len() < policy.routes.len() {
            self.send.resize_with(policy.routes.len(), || None);
            self.recv.resize_with(policy.routes.len(), || None);
        }
        let route_rates = policy.route_rates_bps(self.cfg.default_rate_bps);
        for (id, route) in policy.routes.iter().enumerate() {
            let hops = &route.hops;
            if hops[0] == me {
                let rate = route_rates[id];
                let ceiling = hops
                    .windows(2)
                    .map(|w| {
                        policy
                            .link_rate(w[0], w[1])
                            .unwrap_or(self.cfg.default_rate_bps)
                    })
                    .fold(f64::INFINITY, f64::min);
                let sp = match &mut self.send[id] {
                    Some(p) if p.hops == *hops => p,
                    Some(p) if !p.idle() => return Err(EngineError::PathBusy(id as PathId)),
                    slot => slot.insert(SendPath::new(hops.clone(), cap, rate, &self.cfg)),
                };
                sp.nominal_bps = rate;
                sp.set_rate(rate);
                sp.ceiling_bps = ceiling.max(rate);
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

        let ranges = policy.tree_ranges(self.cfg.buffer_elems);
        let mut trees = Vec::with_capacity(policy.trees.len());
        let mut seg_base = 0usize;
        let edge_send = |e: &crate::policy::TreeEdge| EdgeSend {
            paths: e.paths.iter().map(|p| (p.path, p.weight)).collect(),
            credit: vec![0.0; e.paths.len()],
        };
        let mut queue_need = vec![0usize; policy.routes.len()];
        for (t, tree) in policy.trees.iter().enumerate() {
            let range = ranges[t].clone();
            let seg_count = range.len().div_ceil(seg_elems) as u32;
            let mut child_slot = vec![u8::MAX; n];
            let mut children = 0u32;
            for (v, e) in tree.reduce.iter().enumerate() {
                if e.as_ref().is_some_and(|e| e.parent == me) {
                    child_slot[v] = children as u8;
                    children += 1;
                }
            }
            let full_mask = if children == 64 {
                u64::MAX
            } else {
                (1u64 << children) - 1
            };
            let reduce_send = tree.reduce[me as usize].as_ref().map(edge_send);
            let bcast_send: Vec<EdgeSend> = tree
                .broadcast
                .iter()
                .flatten()
                .filter(|e| e.parent == me)
                .map(edge_send)
                .collect();
            for e in reduce_send.iter().chain(bcast_send.iter()) {
                for (p, _) in &e.paths {
                    queue_need[*p as usize] += seg_count as usize;
                }
            }
            trees.push(TreeAtNode {
                range,
                seg_base,
                seg_count,
                is_root: tree.root == me,
                forward: tree.forward,
                child_slot,
                full_mask,
                reduce_send,
                bcast_parent: tree.broadcast[me as usize].as_ref().map(|e| e.parent),
                bcast_send,
            });
            seg_base += seg_count as usize;
        }
        // Size every queue for the worst case of one round, so nothing grows per packet.
        for (id, need) in queue_need.iter().enumerate() {
            if let Some(p) = &mut self.send[id] {
                p.queue.reserve_total(*need);
                if p.rtx.capacity() < cap.min(*need.max(&1)) {
                    p.rtx.reserve(cap.min(*need.max(&1)));
                }
            }
        }
        if self.ack_queue.capacity() < policy.routes.len() {
            self.ack_queue.reserve(policy.routes.len());
        }
        self.seg_mask = vec![0; seg_base];
        self.seg_flags = vec![0; seg_base];
        self.seg_hash = if self.mac.is_some() {
            vec![PayloadHash::default(); seg_base]
        } else {
            Vec::new()
        };
        self.tree_reduced = vec![0; trees.len()];
        self.tree_final = vec![0; trees.len()];
        self.next_data_ns = 0;
        self.current = Some(Compiled {
            epoch: policy.epoch,
            trees,
            total_segs: seg_base,
        });
        Ok(())
    }

    /// Starts `round` at `now`: the buffer holds this node's contribution. Rounds must
    /// increase; the previous round must have completed here.
    pub fn start_round(&mut self, now: Nanos, round: u32) -> Result<(), EngineError> {
        if self.round_active {
            return Err(EngineError::RoundOrder {
                round,
                why: format!("round {} is still running", self.round),
            });
        }
        if let Some(last) = self.last_round {
            if round <= last {
                return Err(EngineError::RoundOrder {
                    round,
                    why: format!("round {last} already started"),
                });
            }
        }
        if self.pending.as_ref().is_some_and(|(_, at)| *at <= round) {
            let (policy, _) = self.pending.take().expect("checked");
            self.activate(policy)?;
        }
        let Some(compiled) = &self.current else {
            return Err(EngineError::NoPolicy(round));
        };
        self.round = round;
        self.last_round = Some(round);
        self.round_active = true;
        self.result_reported = false;
        self.finals_left = compiled.total_segs;
        self.seg_mask.fill(0);
        self.seg_flags.fill(0);
        self.tree_reduced.fill(0);
        self.tree_final.fill(0);
        // Nodes without reduce children contribute at once.
        let leaves: Vec<(usize, u32)> = compiled
            .trees
            .iter()
            .enumerate()
            .filter(|(_, t)| t.full_mask == 0)
            .map(|(i, t)| (i, t.seg_count))
            .collect();
        for (t, segs) in leaves {
            for seg in 0..segs {
                self.on_reduced(t, seg);
            }
        }
        // Replay what arrived early for this round.
        let held = std::mem::take(&mut self.early);
        let held_len = std::mem::replace(&mut self.early_len, 0);
        for pkt in held.iter().take(held_len) {
            if let Ok(p) = Packet::new_checked(&pkt[..]) {
                self.deliver(now, &p, None);
            }
        }
        self.early = held;
        self.check_complete(now);
        Ok(())
    }

    // -----------------------------------------------------------------------------------
    // Receive

    /// Handles one received datagram. Never panics; anything unusable is counted and dropped.
    pub fn handle_packet(&mut self, now: Nanos, data: &[u8]) {
        self.counters.rx_packets += 1;
        self.counters.rx_bytes += data.len() as u64;
        let pkt = match Packet::new_checked(data) {
            Ok(p) => p,
            Err(_) => {
                self.counters.rx_malformed += 1;
                return;
            }
        };
        if pkt.job() != self.cfg.job {
            self.counters.rx_wrong_job += 1;
            return;
        }
        let mut payload_hash = None;
        if let Some(mac) = &self.mac {
            let Some(hash) = mac.verify_payload(&pkt) else {
                self.counters.rx_bad_mac += 1;
                return;
            };
            payload_hash = Some(hash);
        }
        let me = self.cfg.node;
        let path = pkt.path() as usize;
        if pkt.dst() != me {
            self.relay_packet(&pkt, data);
            return;
        }
        match pkt.kind() {
            PacketKind::Ack => self.on_ack(now, path, &pkt),
            PacketKind::ReduceData | PacketKind::BroadcastData => {
                self.on_data(now, path, &pkt, data, payload_hash)
            }
            PacketKind::Probe => self.on_probe(now, &pkt, data.len()),
            // Control messages travel outside the data plane.
            _ => self.counters.rx_invalid += 1,
        }
    }

    fn relay_packet(&mut self, pkt: &Packet<&[u8]>, data: &[u8]) {
        let me = self.cfg.node;
        let Some(hops) = self.routes.get(pkt.path() as usize) else {
            self.counters.rx_invalid += 1;
            return;
        };
        let Some(pos) = hops.iter().position(|&h| h == me) else {
            self.counters.rx_invalid += 1;
            return;
        };
        // Data travels origin → destination; acknowledgements travel back.
        let next = if pkt.kind() == PacketKind::Ack {
            (pos > 0 && pkt.dst() == hops[0]).then(|| hops[pos - 1])
        } else {
            (pos + 1 < hops.len() && pkt.dst() == hops[hops.len() - 1]).then(|| hops[pos + 1])
        };
        let (Some(next), true) = (next, pkt.ttl() > 0) else {
            self.counters.rx_invalid += 1;
            return;
        };
        if self.relay.len() >= self.cfg.relay_packets {
            self.counters.relay_dropped += 1;
            return;
        }
        let slot = match self.relay_free.pop() {
            Some(s) => s,
            None => {
                self.relay_slots
                    .push(Vec::with_capacity(self.cfg.max_datagram_len()));
                self.relay_slots.len() - 1
            }
        };
        let buf = &mut self.relay_slots[slot];
        buf.clear();
        buf.extend_from_slice(data);
        if let Ok(mut p) = Packet::new_checked(&mut buf[..]) {
            p.set_ttl(pkt.ttl() - 1);
        }
        self.relay.push_back((next, slot));
    }

    fn on_data(
        &mut self,
        now: Nanos,
        path: usize,
        pkt: &Packet<&[u8]>,
        data: &[u8],
        payload_hash: Option<PayloadHash>,
    ) {
        let Some(Some(rp)) = self.recv.get_mut(path) else {
            self.counters.rx_invalid += 1;
            return;
        };
        if rp.origin != pkt.src() {
            self.counters.rx_invalid += 1;
            return;
        }
        let seq = expand_seq(pkt.seq(), rp.rcv_nxt);
        if seq > rp.rcv_nxt + rp.mask {
            self.counters.rx_out_of_window += 1;
            return;
        }
        if rp.received(seq) {
            self.counters.rx_duplicate += 1;
            rp.echo_ts = pkt.timestamp_ns();
            rp.echo_owd = now.wrapping_sub(rp.echo_ts);
            self.queue_ack(path);
            return;
        }
        let accepted = self.accept_data(now, pkt, data, payload_hash);
        let rp = self.recv[path].as_mut().expect("checked above");
        if !accepted {
            return;
        }
        let in_order = seq == rp.rcv_nxt;
        rp.set(seq, true);
        rp.top = rp.top.max(seq + 1);
        while rp.rcv_nxt < rp.top && rp.is_set(rp.rcv_nxt) {
            let s = rp.rcv_nxt;
            rp.set(s, false);
            rp.rcv_nxt += 1;
        }
        rp.echo_ts = pkt.timestamp_ns();
        rp.echo_owd = now.wrapping_sub(rp.echo_ts);
        rp.unacked += 1;
        if !in_order || rp.unacked >= self.cfg.ack_every {
            self.queue_ack(path);
        } else if rp.ack_deadline.is_none() {
            rp.ack_deadline = Some(now + self.cfg.ack_delay_ns);
            self.next_ack_ns = self.next_ack_ns.min(now + self.cfg.ack_delay_ns);
        }
    }

    fn queue_ack(&mut self, path: usize) {
        let rp = self.recv[path].as_mut().expect("caller checked");
        rp.ack_deadline = None;
        if !rp.ack_queued {
            rp.ack_queued = true;
            self.ack_queue.push_back(path as PathId);
        }
    }

    /// Returns whether the packet was taken (delivered, recognised as stale, or held for the
    /// next round), i.e. whether to acknowledge it.
    fn accept_data(
        &mut self,
        now: Nanos,
        pkt: &Packet<&[u8]>,
        data: &[u8],
        payload_hash: Option<PayloadHash>,
    ) -> bool {
        let round = pkt.round();
        let next_round = self.last_round.map_or(round, |r| r.wrapping_add(1));
        if self.round_active && round == self.round {
            return self.deliver(now, pkt, payload_hash);
        }
        if self.last_round.is_some_and(|r| round <= r) {
            // A round that is over here (or ends as soon as our own sends are acknowledged).
            self.counters.rx_stale_round += 1;
            return true;
        }
        if round == next_round || (self.round_active && round == self.round.wrapping_add(1)) {
            // Hold (and acknowledge) only what the policy of that round can use; a packet
            // of an epoch this node does not run yet is left unacknowledged, so its sender
            // resends it once this node has the policy.
            let expected = match &self.pending {
                Some((p, at)) if *at <= round => Some(p.epoch),
                _ => self.current.as_ref().map(|c| c.epoch),
            };
            if expected != Some(pkt.epoch()) {
                if expected.is_some_and(|e| pkt.epoch() < e) {
                    self.counters.rx_stale_epoch += 1;
                } else {
                    self.counters.rx_future_epoch += 1;
                }
                return false;
            }
            if self.early_len >= self.cfg.early_packets {
                self.counters.rx_early_dropped += 1;
                return false;
            }
            if self.early.len() <= self.early_len {
                self.early
                    .push(Vec::with_capacity(self.cfg.max_datagram_len()));
            }
            let slot = &mut self.early[self.early_len];
            slot.clear();
            slot.extend_from_slice(data);
            self.early_len += 1;
            self.counters.rx_early_held += 1;
            return true;
        }
        self.counters.rx_invalid += 1;
        false
    }

    /// Applies a data packet of the running round. Returns false if it was rejected.
    /// `payload_hash`: the MAC's hash of its payload, when it was just verified.
    fn deliver(
        &mut self,
        now: Nanos,
        pkt: &Packet<&[u8]>,
        payload_hash: Option<PayloadHash>,
    ) -> bool {
        let seg_elems = self.cfg.segment_elems;
        let Some(c) = &self.current else { return false };
        if pkt.epoch() != c.epoch {
            self.counters.rx_stale_epoch += 1;
            return false;
        }
        let t = pkt.tree() as usize;
        let Some(tree) = c.trees.get(t) else {
            self.counters.rx_invalid += 1;
            return false;
        };
        let seg = pkt.segment();
        if seg >= tree.seg_count {
            self.counters.rx_invalid += 1;
            return false;
        }
        let range = tree.seg_range(seg, seg_elems);
        if pkt.payload().len() != range.len() * 4 {
            self.counters.rx_invalid += 1;
            return false;
        }
        let idx = tree.seg_base + seg as usize;
        match pkt.kind() {
            PacketKind::ReduceData => {
                let slot = tree.child_slot[pkt.src() as usize];
                if slot == u8::MAX {
                    self.counters.rx_invalid += 1;
                    return false;
                }
                let bit = 1u64 << slot;
                if self.seg_mask[idx] & bit != 0 {
                    self.counters.rx_duplicate += 1;
                    return true;
                }
                let full = tree.full_mask;
                kernel::add_assign_le_bytes(&mut self.buf[range], pkt.payload());
                self.seg_mask[idx] |= bit;
                if self.seg_mask[idx] == full {
                    self.on_reduced(t, seg);
                }
            }
            PacketKind::BroadcastData => {
                if tree.bcast_parent != Some(pkt.src()) {
                    self.counters.rx_invalid += 1;
                    return false;
                }
                if self.seg_flags[idx] & SEG_FINAL != 0 {
                    self.counters.rx_duplicate += 1;
                    return true;
                }
                kernel::copy_from_le_bytes(&mut self.buf[range], pkt.payload());
                // Sent on to the children byte for byte as received (the f32 round trip
                // is bit-exact), so the verified hash is theirs too.
                if let Some(hash) = payload_hash {
                    self.seg_hash[idx] = hash;
                    self.seg_flags[idx] |= SEG_HASHED;
                }
                self.on_final(t, seg);
            }
            _ => return false,
        }
        self.check_complete(now);
        true
    }

    /// Segment `seg` of tree `t` holds this node's complete partial sum.
    fn on_reduced(&mut self, t: usize, seg: u32) {
        let c = self.current.as_mut().expect("round has a policy");
        let tree = &mut c.trees[t];
        self.seg_flags[tree.seg_base + seg as usize] |= SEG_REDUCED;
        if tree.is_root {
            self.on_final(t, seg);
            return;
        }
        let Some(edge) = tree.reduce_send.as_mut() else {
            return;
        };
        let item = SendItem::new(PacketKind::ReduceData, t, seg, tree.seg_count);
        match tree.forward {
            ForwardMode::Pipelined => {
                let p = edge.pick();
                self.send[p as usize]
                    .as_mut()
                    .expect("compiled path")
                    .queue
                    .push(item);
                self.next_data_ns = 0;
            }
            ForwardMode::StoreAndForward => {
                self.tree_reduced[t] += 1;
                if self.tree_reduced[t] == tree.seg_count {
                    for s in 0..tree.seg_count {
                        let p = edge.pick();
                        self.send[p as usize]
                            .as_mut()
                            .expect("compiled path")
                            .queue
                            .push(SendItem::new(PacketKind::ReduceData, t, s, tree.seg_count));
                        self.next_data_ns = 0;
                    }
                }
            }
        }
    }

    /// Segment `seg` of tree `t` holds its final value here.
    fn on_final(&mut self, t: usize, seg: u32) {
        let c = self.current.as_mut().expect("round has a policy");
        let tree = &mut c.trees[t];
        self.seg_flags[tree.seg_base + seg as usize] |= SEG_FINAL;
        self.finals_left -= 1;
        let item = SendItem::new(PacketKind::BroadcastData, t, seg, tree.seg_count);
        let send = &mut self.send;
        let mut pushed = false;
        let mut push = |edge: &mut EdgeSend, item: SendItem| {
            let p = edge.pick();
            send[p as usize]
                .as_mut()
                .expect("compiled path")
                .queue
                .push(item);
            pushed = true;
        };
        match tree.forward {
            ForwardMode::Pipelined => {
                for edge in &mut tree.bcast_send {
                    push(edge, item);
                }
            }
            ForwardMode::StoreAndForward => {
                self.tree_final[t] += 1;
                if self.tree_final[t] == tree.seg_count {
                    for edge in &mut tree.bcast_send {
                        for s in 0..tree.seg_count {
                            push(
                                edge,
                                SendItem::new(PacketKind::BroadcastData, t, s, tree.seg_count),
                            );
                        }
                    }
                }
            }
        }
        if pushed {
            self.next_data_ns = 0;
        }
    }

    fn check_complete(&mut self, now: Nanos) {
        if !self.round_active || self.finals_left > 0 {
            return;
        }
        if !self.result_reported {
            self.result_reported = true;
            self.events.push_back(EngineEvent::ResultReady {
                round: self.round,
                at: now,
            });
        }
        if self.send.iter().flatten().all(|p| p.idle()) {
            self.round_active = false;
            self.counters.rounds_completed += 1;
            let epoch = self.current.as_ref().map_or(0, |c| c.epoch);
            self.events.push_back(EngineEvent::RoundComplete {
                round: self.round,
                epoch,
                at: now,
            });
        }
    }

    fn on_ack(&mut self, now: Nanos, path: usize, pkt: &Packet<&[u8]>) {
        let Ok(ack) = AckRepr::parse(pkt.payload()) else {
            self.counters.rx_malformed += 1;
            return;
        };
        let cfg = &self.cfg;
        let Some(Some(sp)) = self.send.get_mut(path) else {
            self.counters.rx_invalid += 1;
            return;
        };
        if sp.hops.last() != Some(&pkt.src()) {
            self.counters.rx_invalid += 1;
            return;
        }
        let cum = expand_seq(ack.cum_ack, sp.snd_una).min(sp.snd_nxt);
        let top = expand_seq(ack.top, sp.snd_nxt).min(sp.snd_nxt);
        let mut newly = 0u64;
        let mut mark = |sp: &mut SendPath, s: u64| {
            let e = &mut sp.ring[(s & sp.mask) as usize];
            if e.state == ENTRY_INFLIGHT || e.state == ENTRY_LOST {
                e.state = ENTRY_ACKED;
                newly += 1;
            }
        };
        for s in sp.snd_una..cum.max(sp.snd_una) {
            mark(sp, s);
        }
        for i in 0..64u64 {
            if ack.bits >> i & 1 == 1 && top > i {
                let s = top - 1 - i;
                if s >= sp.snd_una && s < sp.snd_nxt {
                    mark(sp, s);
                }
            }
        }
        // PAWS-like guard: such an ack carries no news (any sequence it covers was marked by
        // an earlier ack, which also raised `acked_top`); its echoed timestamp would only
        // feed a bogus RTT sample.
        if newly == 0 && ack.echo_ts_ns < sp.max_echo_ns {
            self.counters.rx_stale_ack += 1;
            return;
        }
        sp.max_echo_ns = sp.max_echo_ns.max(ack.echo_ts_ns);
        if top > 0 && ack.bits & 1 == 1 {
            sp.acked_top = sp.acked_top.max(top);
        }
        sp.acked_top = sp.acked_top.max(cum);
        while sp.snd_una < sp.snd_nxt
            && sp.ring[(sp.snd_una & sp.mask) as usize].state == ENTRY_ACKED
        {
            sp.ring[(sp.snd_una & sp.mask) as usize].state = ENTRY_EMPTY;
            sp.snd_una += 1;
        }
        // Loss: unacknowledged with DUP_THRESHOLD later packets acknowledged.
        sp.loss_scan = sp.loss_scan.max(sp.snd_una);
        let limit = sp.acked_top.saturating_sub(DUP_THRESHOLD);
        let mut lost = false;
        let mut lost_now = 0u64;
        while sp.loss_scan < limit {
            let s = sp.loss_scan;
            let e = &mut sp.ring[(s & sp.mask) as usize];
            if e.state == ENTRY_INFLIGHT {
                e.state = ENTRY_LOST;
                sp.rtx.push_back(s);
                sp.lost_pkts += 1;
                self.counters.loss_detected += 1;
                lost = true;
                lost_now += 1;
            }
            sp.loss_scan += 1;
        }
        let mut queueing = false;
        let mut forward_queue = false;
        if ack.echo_ts_ns > 0 && ack.echo_ts_ns <= now {
            let sample = now - ack.echo_ts_ns;
            sp.rtt_sample(sample, cfg);
            sp.min_rtt_ns = sp.min_rtt_ns.min(sample);
            let threshold = QUEUEING_THRESHOLD_NS.max(sp.min_rtt_ns / 4);
            // Delay signal (Vegas-like): a queue is building somewhere on the round trip.
            // The RTT, not the one-way delay below: backing off only for forward queues was
            // tried and cost fan-in heavy plans up to 4x on the emulated WAN (mesh on
            // paper9 at 500 Mbit/s: 5.5 -> 23 s), whose acks share the crowded links.
            queueing = sample > sp.min_rtt_ns + threshold;
            // A queue on the forward route: the one-way delay, which a queue holding only
            // the acks on the way back does not touch, says the route was saturated.
            let base = *sp.min_owd_ns.get_or_insert(ack.owd_ns);
            let above = ack.owd_ns.wrapping_sub(base) as i64;
            if above < 0 {
                sp.min_owd_ns = Some(ack.owd_ns);
            } else {
                forward_queue = above as u64 > threshold;
            }
        }
        // Delivery-rate sample once the window spans a round trip.
        sp.delivered_pkts += newly;
        if sp.queue.is_empty() && sp.rtx.is_empty() {
            sp.window_app_limited = true;
        }
        sp.window_saturated |= forward_queue;
        let span = now.saturating_sub(sp.window_start_ns);
        if span >= sp.srtt_ns.unwrap_or(sp.rto_ns).max(1_000_000) {
            if sp.window_start_ns > 0 {
                let frame_bits = (cfg.frame_bytes() * 8) as f64;
                let rate = (sp.delivered_pkts - sp.window_start_pkts) as f64 * frame_bits * 1e9
                    / span as f64;
                sp.rate_sample = Some(RateSample {
                    bps: rate,
                    app_limited: sp.window_app_limited,
                    saturated: sp.window_saturated,
                    at: now,
                });
            }
            sp.window_start_ns = now;
            sp.window_start_pkts = sp.delivered_pkts;
            sp.window_app_limited = false;
            sp.window_saturated = false;
        }
        let events = newly + lost_now;
        if events > 0 {
            let a = (events as f64 / 1024.0).min(1.0);
            sp.loss_ewma = (1.0 - a) * sp.loss_ewma + a * (lost_now as f64 / events as f64);
        }
        // Random WAN loss is not congestion: losses back off only once they exceed the
        // tolerance (BBRv2's 2 %); queueing delay stays the main signal.
        if queueing || (lost && sp.loss_ewma > cfg.loss_tolerance) {
            sp.on_congestion(now);
        } else if newly > 0 {
            sp.on_progress(now, (cfg.frame_bytes() * 8) as f64);
        }
        if newly > 0 {
            sp.tail_timer_armed = true;
        }
        // The window may have opened, losses were queued, the RTO may have shrunk.
        if let Some(d) = sp.timer_deadline(cfg.ack_delay_ns) {
            self.next_rto_ns = self.next_rto_ns.min(d);
        }
        self.note_work(path);
        self.check_complete(now);
    }

    /// Path `id` may have become sendable: lower the data deadline bound accordingly.
    fn note_work(&mut self, id: usize) {
        if let Some(Some(sp)) = self.send.get(id) {
            if sp.has_work() {
                let ready = sp.next_send_ns.max(self.link_next_ns[sp.next_hop as usize]);
                let ready = ready.saturating_sub(self.cfg.pacing_burst_ns);
                self.next_data_ns = self.next_data_ns.min(ready);
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // Time

    /// Lets timers fire: delayed acknowledgements and retransmission timeouts.
    pub fn handle_timeout(&mut self, now: Nanos) {
        if now >= self.next_ack_ns {
            let mut next = Nanos::MAX;
            for id in 0..self.recv.len() {
                if let Some(rp) = &self.recv[id] {
                    match rp.ack_deadline {
                        Some(d) if d <= now => self.queue_ack(id),
                        Some(d) => next = next.min(d),
                        None => {}
                    }
                }
            }
            self.next_ack_ns = next;
        }
        if now < self.next_rto_ns {
            return;
        }
        let mut next_rto = Nanos::MAX;
        let ack_delay = self.cfg.ack_delay_ns;
        for sp in self.send.iter_mut().flatten() {
            let rto_due = sp.rto_deadline().is_some_and(|d| d <= now);
            let tail_due = !rto_due && sp.tail_deadline(ack_delay).is_some_and(|d| d <= now);
            if tail_due {
                // The tail went unanswered for 2 RTT + ack delay: everything in flight is
                // presumed lost, without the RTO's backoff (RTT estimates stay trusted).
                self.counters.tail_timer_fired += 1;
                sp.tail_timer_armed = false;
                let mut lost_now = 0u64;
                for s in sp.snd_una..sp.snd_nxt {
                    let e = &mut sp.ring[(s & sp.mask) as usize];
                    if e.state == ENTRY_INFLIGHT {
                        e.state = ENTRY_LOST;
                        sp.rtx.push_back(s);
                        lost_now += 1;
                    }
                }
                sp.lost_pkts += lost_now;
                self.counters.loss_detected += lost_now;
                let a = (lost_now as f64 / 1024.0).min(1.0);
                sp.loss_ewma = (1.0 - a) * sp.loss_ewma + a;
                if sp.loss_ewma > self.cfg.loss_tolerance {
                    sp.on_congestion(now);
                }
            } else if rto_due {
                // Everything sent more than one RTO ago is presumed lost (tail loss).
                self.counters.rto_fired += 1;
                let rto = sp.rto_ns.saturating_mul(sp.rto_backoff as u64);
                for s in sp.snd_una..sp.snd_nxt {
                    let e = &mut sp.ring[(s & sp.mask) as usize];
                    if e.state == ENTRY_INFLIGHT && e.sent_ns + rto <= now {
                        e.state = ENTRY_LOST;
                        sp.rtx.push_back(s);
                        sp.lost_pkts += 1;
                    }
                }
                // Exponential backoff, but the effective timeout stays within max_rto_ns:
                // after an outage the path is retried at least that often (faults suite:
                // link down 10 s).
                if sp.rto_ns.saturating_mul(sp.rto_backoff as u64 * 2) <= self.cfg.max_rto_ns {
                    sp.rto_backoff = (sp.rto_backoff * 2).min(64);
                }
                sp.rto_fired_ns = now;
                sp.on_congestion(now);
            }
            if let Some(d) = sp.timer_deadline(ack_delay) {
                next_rto = next_rto.min(d);
            }
        }
        self.next_rto_ns = next_rto;
        // Retransmissions were queued.
        self.next_data_ns = 0;
    }

    /// The next time [`Engine::handle_timeout`] or [`Engine::poll_transmit`] has work, if any.
    pub fn poll_timeout(&self) -> Option<Nanos> {
        let mut t = self
            .next_ack_ns
            .min(self.next_rto_ns)
            .min(self.next_data_ns);
        let burst = self.cfg.pacing_burst_ns;
        if let Some(&(next, _)) = self.relay.front() {
            t = t.min(self.link_next_ns[next as usize].saturating_sub(burst));
        }
        if let Some(&p) = self.ack_queue.front() {
            if let Some(rp) = &self.recv[p as usize] {
                t = t.min(self.link_next_ns[rp.ack_next_hop as usize].saturating_sub(burst));
            }
        }
        if let Some(p) = self
            .prober
            .deadline(self.probe_other_bytes(), self.probe_frame_bytes())
        {
            t = t.min(p);
        }
        (t != Nanos::MAX).then_some(t)
    }

    // -----------------------------------------------------------------------------------
    // Transmit

    fn frame_ns(&self, len: usize, ns_per_byte: f64) -> Nanos {
        ((len + self.cfg.frame_overhead_bytes) as f64 * ns_per_byte) as Nanos
    }

    /// Charges a frame of `len` bytes to the pacer of the link to `next`.
    fn pace_link(&mut self, now: Nanos, next: NodeId, len: usize) {
        let ns = self.frame_ns(len, self.link_ns_per_byte[next as usize]);
        let slot = &mut self.link_next_ns[next as usize];
        *slot = (*slot).max(now) + ns;
    }

    /// Bytes this node sent besides probes (the probe budget's base).
    fn probe_other_bytes(&self) -> u64 {
        self.counters
            .tx_bytes
            .saturating_sub(self.counters.tx_probe_bytes)
    }

    /// Wire size of one probe frame: as large as a full data frame, so the train's
    /// dispersion is the serialization of data-sized frames.
    fn probe_frame_bytes(&self) -> usize {
        self.probe_datagram_len() + self.cfg.frame_overhead_bytes
    }

    fn probe_datagram_len(&self) -> usize {
        wire::HEADER_LEN + self.cfg.segment_elems * 4 + self.cfg.auth.tag_len()
    }

    fn send_probe(&mut self, now: Nanos, out: &mut [u8]) -> Option<Transmit> {
        let frame = self.probe_frame_bytes();
        let (to, id) = self.prober.next(now, self.probe_other_bytes(), frame)?;
        let tag = self.cfg.auth.tag_len();
        let len = self.probe_datagram_len();
        let body_len = len - tag;
        let hdr = HeaderRepr {
            kind: PacketKind::Probe,
            flags: auth::flags_for(self.mac.as_ref()),
            payload_len: (body_len - wire::HEADER_LEN) as u16,
            job: self.cfg.job,
            epoch: self.current.as_ref().map_or(0, |c| c.epoch),
            round: self.round,
            src: self.cfg.node,
            dst: to,
            ttl: 1,
            timestamp_ns: now,
            ..HeaderRepr::default()
        };
        hdr.emit(out).ok()?;
        out[wire::HEADER_LEN..body_len].fill(0);
        ProbeRepr {
            probe_id: id,
            sent_ns: now,
        }
        .emit(&mut out[wire::HEADER_LEN..body_len])
        .ok()?;
        let len = auth::seal(self.mac.as_ref(), out, body_len);
        // Probes bypass pacing (they must leave back to back) but count against the link.
        self.pace_link(now, to, len);
        self.prober.sent(frame);
        self.counters.tx_probes += 1;
        self.counters.tx_probe_bytes += len as u64;
        self.counters.tx_bytes += len as u64;
        Some(Transmit { next_hop: to, len })
    }

    fn on_probe(&mut self, now: Nanos, pkt: &Packet<&[u8]>, len: usize) {
        let from = pkt.src();
        let is_neighbour = self.topo.link(from, self.cfg.node).is_some();
        match ProbeRepr::parse(pkt.payload()) {
            Ok(p) if is_neighbour => {
                self.counters.rx_probes += 1;
                self.probe_rx
                    .on_probe(now, from, p.probe_id, len + self.cfg.frame_overhead_bytes);
            }
            _ => self.counters.rx_invalid += 1,
        }
    }

    /// The newest capacity measurement of every link into this node (from probe trains).
    pub fn probe_samples(&self) -> impl Iterator<Item = ProbeSample> + '_ {
        self.probe_rx.samples()
    }

    /// Writes the next datagram to send into `out` (at least
    /// [`EngineConfig::max_datagram_len`] bytes) and says where it goes.
    pub fn poll_transmit(&mut self, now: Nanos, out: &mut [u8]) -> Option<Transmit> {
        // 0. Capacity probes: a train leaves back to back, nothing interleaved.
        if self.prober.may_send(now) {
            if let Some(tx) = self.send_probe(now, out) {
                return Some(tx);
            }
        }
        // 1. Relayed datagrams.
        if let Some(&(next, slot)) = self.relay.front() {
            if self.link_next_ns[next as usize] <= now + self.cfg.pacing_burst_ns {
                self.relay.pop_front();
                let len = self.relay_slots[slot].len();
                out[..len].copy_from_slice(&self.relay_slots[slot]);
                self.relay_free.push(slot);
                self.pace_link(now, next, len);
                self.counters.relay_forwarded += 1;
                self.counters.tx_bytes += len as u64;
                return Some(Transmit {
                    next_hop: next,
                    len,
                });
            }
        }
        // 2. Acknowledgements.
        if let Some(&p) = self.ack_queue.front() {
            let rp = self.recv[p as usize].as_ref().expect("queued path exists");
            let next = rp.ack_next_hop;
            if self.link_next_ns[next as usize] <= now + self.cfg.pacing_burst_ns {
                self.ack_queue.pop_front();
                let rp = self.recv[p as usize].as_mut().expect("queued path exists");
                rp.ack_queued = false;
                rp.unacked = 0;
                rp.ack_deadline = None;
                let hdr = HeaderRepr {
                    kind: PacketKind::Ack,
                    flags: auth::flags_for(self.mac.as_ref()),
                    payload_len: wire::ACK_PAYLOAD_LEN as u16,
                    job: self.cfg.job,
                    epoch: self.current.as_ref().map_or(0, |c| c.epoch),
                    round: self.round,
                    path: p,
                    src: self.cfg.node,
                    dst: rp.origin,
                    ttl: 64,
                    timestamp_ns: now,
                    ..HeaderRepr::default()
                };
                let ack = rp.ack_repr();
                hdr.emit(out).ok()?;
                ack.emit(&mut out[wire::HEADER_LEN..]).ok()?;
                let body_len = wire::HEADER_LEN + wire::ACK_PAYLOAD_LEN;
                let len = auth::seal(self.mac.as_ref(), out, body_len);
                self.pace_link(now, next, len);
                self.counters.tx_acks += 1;
                self.counters.tx_bytes += len as u64;
                return Some(Transmit {
                    next_hop: next,
                    len,
                });
            }
        }
        // 3. Data, round-robin over paths (skipped while no path can be ready yet).
        if now < self.next_data_ns {
            return None;
        }
        let paths = self.send_ids.len();
        let mut next_ready = Nanos::MAX;
        let mut k = self.rr_cursor.min(paths);
        for _ in 0..paths {
            if k == paths {
                k = 0;
            }
            let id = self.send_ids[k];
            k += 1;
            let Some(sp) = &self.send[id] else { continue };
            if !sp.has_work() {
                continue;
            }
            let ready = sp.next_send_ns.max(self.link_next_ns[sp.next_hop as usize]);
            let ready = ready.saturating_sub(self.cfg.pacing_burst_ns);
            if ready > now {
                next_ready = next_ready.min(ready);
                continue;
            }
            if let Some(tx) = self.send_on_path(now, id, out) {
                self.rr_cursor = k;
                return Some(tx);
            }
        }
        self.next_data_ns = next_ready;
        None
    }

    fn send_on_path(&mut self, now: Nanos, id: usize, out: &mut [u8]) -> Option<Transmit> {
        let sp = self.send[id].as_mut().expect("caller checked");
        // Retransmissions first; skip ones acknowledged meanwhile.
        let (seq, item, retransmit) = loop {
            if let Some(seq) = sp.rtx.pop_front() {
                let e = &sp.ring[(seq & sp.mask) as usize];
                if seq >= sp.snd_una && e.state == ENTRY_LOST {
                    break (seq, e.item, true);
                }
                continue;
            }
            if sp.snd_nxt - sp.snd_una > sp.mask {
                return None;
            }
            let item = sp.queue.pop()?;
            let seq = sp.snd_nxt;
            sp.snd_nxt += 1;
            break (seq, item, false);
        };
        let entry = &mut sp.ring[(seq & sp.mask) as usize];
        entry.item = item;
        entry.state = ENTRY_INFLIGHT;
        entry.sent_ns = now;
        let c = self.current.as_ref().expect("sending requires a policy");
        let tree = &c.trees[item.tree as usize];
        let range = tree.seg_range(item.seg, self.cfg.segment_elems);
        let payload_len = range.len() * 4;
        let hdr = HeaderRepr {
            kind: if item.kind == PacketKind::ReduceData as u8 {
                PacketKind::ReduceData
            } else {
                PacketKind::BroadcastData
            },
            flags: auth::flags_for(self.mac.as_ref()),
            payload_len: payload_len as u16,
            job: self.cfg.job,
            epoch: c.epoch,
            round: self.round,
            tree: item.tree,
            path: id as PathId,
            src: self.cfg.node,
            dst: *sp.hops.last().expect("route"),
            seq: seq as u32,
            segment: item.seg,
            ttl: (sp.hops.len() - 1) as u8,
            timestamp_ns: now,
        };
        hdr.emit(out).ok()?;
        kernel::write_le_bytes(
            &mut out[wire::HEADER_LEN..wire::HEADER_LEN + payload_len],
            &self.buf[range],
        );
        let body_len = wire::HEADER_LEN + payload_len;
        let len = match &self.mac {
            Some(mac) => {
                let idx = tree.seg_base + item.seg as usize;
                let broadcast = item.kind == PacketKind::BroadcastData as u8;
                let (flags, kept) = (&mut self.seg_flags, &mut self.seg_hash);
                let signed = mac.sign_with(out, body_len, |payload| {
                    if !broadcast {
                        return mac.payload_hash(payload);
                    }
                    if flags[idx] & SEG_HASHED == 0 {
                        kept[idx] = mac.payload_hash(payload);
                        flags[idx] |= SEG_HASHED;
                    }
                    kept[idx]
                });
                if signed {
                    body_len + wire::AUTH_TAG_LEN
                } else {
                    body_len
                }
            }
            None => body_len,
        };
        let next = sp.next_hop;
        let path_ns_per_byte = sp.ns_per_byte;
        let path_ns = self.frame_ns(len, path_ns_per_byte);
        let sp = self.send[id].as_mut().expect("caller checked");
        sp.next_send_ns = sp.next_send_ns.max(now) + path_ns;
        sp.last_sent_ns = now;
        if let Some(d) = sp.timer_deadline(self.cfg.ack_delay_ns) {
            self.next_rto_ns = self.next_rto_ns.min(d);
        }
        self.pace_link(now, next, len);
        if retransmit {
            self.counters.tx_retransmits += 1;
        } else {
            self.counters.tx_data += 1;
        }
        self.counters.tx_bytes += len as u64;
        Some(Transmit {
            next_hop: next,
            len,
        })
    }

    /// Next event for the driver.
    pub fn poll_event(&mut self) -> Option<EngineEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn send_queue_pops_what_a_binary_heap_would() {
        use rand::{Rng, SeedableRng};
        for seed in 0..200u64 {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let (mut q, mut reference) = (SendQueue::default(), BinaryHeap::new());
            // Mostly increasing pushes with some out-of-order ones, interleaved with pops.
            let mut next = 0u32;
            for _ in 0..500 {
                if rng.random_bool(0.6) {
                    let seg = if rng.random_bool(0.8) {
                        next += rng.random_range(0..3);
                        next
                    } else {
                        rng.random_range(0..next.max(1))
                    };
                    let item =
                        SendItem::new(PacketKind::ReduceData, rng.random_range(0..3), seg, 1000);
                    q.push(item);
                    reference.push(Reverse(item));
                } else {
                    assert_eq!(q.pop(), reference.pop().map(|r| r.0), "seed {seed}");
                }
                assert_eq!(q.is_empty(), reference.is_empty());
            }
            while let Some(Reverse(want)) = reference.pop() {
                assert_eq!(q.pop(), Some(want), "seed {seed}");
            }
            assert_eq!(q.pop(), None);
        }
    }

    use super::*;

    #[test]
    fn expand_seq_picks_nearest() {
        assert_eq!(expand_seq(5, 3), 5);
        assert_eq!(expand_seq(u32::MAX, 1 << 32), (1 << 32) - 1);
        assert_eq!(expand_seq(2, (1 << 32) - 3), (1 << 32) + 2);
    }

    #[test]
    fn edge_send_splits_by_weight() {
        let mut e = EdgeSend {
            paths: vec![(0, 3.0), (1, 1.0)],
            credit: vec![0.0; 2],
        };
        let picks: Vec<PathId> = (0..8).map(|_| e.pick()).collect();
        assert_eq!(picks.iter().filter(|&&p| p == 0).count(), 6);
    }
}
