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
//! Layers, bottom up, one type (and module) each:
//! * **Paths** (`path`) — every route of the policy is a path with its own 64-bit
//!   sequence space (32 bits on the wire). Receivers track gaps and reordering and answer
//!   with selective acknowledgements; senders keep a bounded in-flight window of
//!   *descriptors* (no payload copies: payloads are re-read from the gradient buffer, which
//!   stays valid until every send of the round is acknowledged), detect loss
//!   (`path::recovery`: three later packets acknowledged, the tail-loss timer or the
//!   retransmission timeout — one `declare_lost` for all three), estimate the RTT
//!   (`path::rtt`), sample the delivery rate (`path::rate_sample`), and pace
//!   (`pacing`) at their congestion controller's rate (`congestion`).
//! * **Relays** (`relay`) — inner hops of a route forward datagrams without looking at
//!   the payload.
//! * **Rounds** (`round`) — the gradient buffer is cut into one contiguous range per tree
//!   and each range into fixed-size segments. Per segment a node adds its children's
//!   contributions into its own buffer (a `u64` mask per segment makes duplicates harmless),
//!   forwards the partial sum as soon as the last child arrived, and the root's value is
//!   broadcast down; the root's sum is the single source of truth, so every node ends
//!   bit-identical.
//!
//! Around them: `timers` (the one timer table behind [`Engine::poll_timeout`]),
//! `transmit` (the datagram writers behind [`Engine::poll_transmit`]), and for failure
//! handling `release` (release gossip: [`EngineEvent::RoundReleased`] once every member
//! completed the round; [`Engine::abort_round`], [`Engine::round_status`]) and `liveness`
//! ([`Engine::peer_last_heard`], idle heartbeats).
//!
//! A round completes at a node when it holds every final value **and** every packet it sent
//! in the round was acknowledged; only then may the caller overwrite the buffer.

mod config;
mod congestion;
mod early;
mod liveness;
mod pacing;
mod path;
mod relay;
mod release;
mod round;
mod timers;
mod transmit;

pub use config::{EngineConfig, EngineError, AUTO_EARLY_PACKETS_FLOOR};
pub use path::rate_sample::RateSample;
pub use release::RoundStatus;

use crate::kernel16;
use crate::policy::{PathId, Policy};
use crate::probe::{ProbeReceiver, ProbeSample, ProbeSender};
use crate::protect::{OpenError, PacketProtection};
use crate::topology::Topology;
use crate::wire::{self, AckRepr, Packet, PacketKind, ProbeRepr};
use crate::{Nanos, NodeId};
use early::EarlyHold;
use pacing::Pacer;
use path::recv::Arrival;
use path::Paths;
use relay::Relay;
pub use round::RoundStats;
use round::{CompiledPolicy, Delivery, RoundState};
use std::collections::VecDeque;
use timers::{Timer, TimerTable};

/// What the engine tells its driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineEvent {
    /// Every final value of `round` is in the buffer (it may be read).
    ResultReady { round: u32, at: Nanos },
    /// The round is over at this node: results ready and every send acknowledged (the buffer
    /// may be overwritten and the next round started).
    RoundComplete { round: u32, epoch: u32, at: Nanos },
    /// With [`EngineConfig::release_gossip`]: `round` completed here and every member said
    /// it completed it too; only now may the result be handed over.
    RoundReleased { round: u32, epoch: u32, at: Nanos },
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
    /// Packets whose authentication tag is missing or wrong (forged, corrupted, other key,
    /// other run, or flags not matching the protection mode).
    pub rx_bad_mac: u64,
    /// Authenticated packets seen before on their (sender, path), too far behind its replay
    /// window, or of a sender start older than the newest (see [`crate::protect`]).
    pub rx_replayed: u64,
    /// Packets dropped unopened because a new key was needed but the sender's key
    /// derivation budget was spent (a flood of forged sender starts); also counted in
    /// `rx_bad_mac`.
    pub rx_key_limited: u64,
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
    /// Packets whose payload type is not the job's (dropped).
    pub rx_wrong_payload: u64,
    /// Over all rounds: NaN/infinite contribution values and saturated encodes (see
    /// [`RoundStats`]).
    pub nonfinite_inputs: u64,
    pub saturated: u64,
    /// Release gossip: RoundDone datagrams sent and taken; ones without a route.
    pub tx_round_done: u64,
    pub rx_round_done: u64,
    pub tx_round_done_unroutable: u64,
    pub rounds_released: u64,
    /// Rounds abandoned ([`Engine::abort_round`]) and their late packets dropped.
    pub rounds_aborted: u64,
    pub rx_aborted_round: u64,
    /// Idle heartbeats sent and received.
    pub tx_heartbeats: u64,
    pub rx_heartbeats: u64,
    /// Acks taken while this node's loop was behind: their rate and delay samples only bound
    /// the path from below (see [`Engine::set_loop_behind`]).
    pub cpu_limited_acks: u64,
}

/// One node's synchronization engine. See the module documentation.
#[derive(Debug)]
pub struct Engine {
    cfg: EngineConfig,
    buf: Box<[f32]>,
    /// Node names and links, for validating policies.
    topo: Topology,
    /// The policy the current (or last) round ran under, compiled for this node.
    current: Option<CompiledPolicy>,
    /// The newest installed policy not active yet, and the round it activates at.
    pending: Option<(Policy, u32)>,
    round: RoundState,
    early: EarlyHold,
    paths: Paths,
    /// Per neighbour: the pacer of the link `self → v`.
    links: Vec<Pacer>,
    relay: Relay,
    timers: TimerTable,
    /// Sealing and opening of every datagram (`cfg.protection`, see [`crate::protect`]).
    protect: PacketProtection,
    /// A received datagram is copied here and opened (decrypted) in place: the caller's
    /// buffer stays as received, for relaying.
    rx_scratch: Box<[u8]>,
    prober: ProbeSender,
    probe_rx: ProbeReceiver,
    events: VecDeque<EngineEvent>,
    counters: Counters,
    /// Release gossip and round abandonment (`release`).
    release: release::Release,
    /// Per-peer last-heard times and idle heartbeats (`liveness`).
    liveness: liveness::Liveness,
    /// Release gossip or heartbeats are on: only then do `poll_*` and `handle_timeout`
    /// look at them (off, they cost one branch).
    control_on: bool,
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
            current: None,
            pending: None,
            round: RoundState::default(),
            early: EarlyHold::new(cfg.early_packets, cfg.max_datagram_len()),
            paths: Paths::default(),
            links: vec![Pacer::new(cfg.default_rate_bps); n],
            relay: Relay::new(cfg.relay_packets, cfg.max_datagram_len()),
            timers: TimerTable::default(),
            events: VecDeque::with_capacity(8),
            protect: PacketProtection::new(
                &cfg.protection,
                cfg.job,
                cfg.run_id,
                cfg.node,
                cfg.node_count,
                cfg.sender_start
                    .unwrap_or_else(crate::protect::new_sender_start),
            ),
            rx_scratch: vec![0u8; wire::MAX_DATAGRAM_LEN].into_boxed_slice(),
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
            release: release::Release::new(
                cfg.release_gossip,
                cfg.release_resend_ns,
                cfg.node,
                topo,
            ),
            liveness: liveness::Liveness::new(cfg.heartbeat_ns, cfg.node, topo),
            control_on: cfg.release_gossip || cfg.heartbeat_ns.is_some(),
            cfg,
        })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// This engine's `sender_start` (in every datagram it sends; see [`crate::protect`]).
    pub fn sender_start(&self) -> u64 {
        self.protect.sealer.sender_start()
    }

    /// Numbers and seals a datagram written by someone else as this node would (next packet
    /// number, its keys): for tests and tools that inject crafted packets as an insider.
    /// `out[..body_len]` is the header + payload; returns the datagram length.
    pub fn seal_as_self(&mut self, out: &mut [u8], body_len: usize) -> usize {
        self.protect.sealer.seal(out, body_len)
    }

    /// The real-time loop tells the engine it fell behind (a long gap between iterations, or
    /// a receive batch that filled up: a socket backlog) or caught up. While behind, rate
    /// and RTT samples measure the CPU, not the network: they may raise estimates, never
    /// lower them (see `SendPath::set_loop_behind`). Cheap when nothing changes.
    pub fn set_loop_behind(&mut self, behind: bool) {
        self.paths.set_loop_behind(behind);
    }

    /// Whether the loop said it is behind (see [`Engine::set_loop_behind`]).
    pub fn loop_behind(&self) -> bool {
        self.paths.loop_behind()
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// What the running (or last) round saw of its values at this node: NaN/infinite
    /// inputs (reported, never replaced) and 16-bit saturations.
    pub fn round_stats(&self) -> RoundStats {
        self.round.stats
    }

    /// The gradient buffer: write this node's contribution before [`Engine::start_round`],
    /// read the synchronized result after [`EngineEvent::ResultReady`].
    pub fn buffer(&self) -> &[f32] {
        &self.buf
    }

    /// Mutable access to the buffer; only between rounds.
    pub fn buffer_mut(&mut self) -> &mut [f32] {
        debug_assert!(!self.round.active, "buffer written during a round");
        &mut self.buf
    }

    /// The newest round started here (`None` before the first).
    pub fn last_round(&self) -> Option<u32> {
        self.round.last
    }

    /// True while a round is running here.
    pub fn round_active(&self) -> bool {
        self.round.active
    }

    /// Epoch of the policy the current (or last) round ran under.
    pub fn epoch(&self) -> Option<u32> {
        self.current.as_ref().map(|c| c.epoch)
    }

    /// Smoothed RTT and current pacing rate of the path `path`, if it originates here.
    pub fn path_stats(&self, path: PathId) -> Option<(Option<Nanos>, f64)> {
        self.paths
            .send
            .get(path as usize)?
            .as_ref()
            .map(|p| (p.srtt_ns(), p.rate_bps()))
    }

    /// Telemetry of every path that originates here: the raw material of network awareness.
    pub fn telemetry(&self) -> impl Iterator<Item = PathTelemetry> + '_ {
        let frame = self.cfg.frame_bytes() as u64;
        self.paths
            .send
            .iter()
            .enumerate()
            .filter_map(move |(id, p)| Some(p.as_ref()?.telemetry(id as PathId, frame)))
    }

    /// The newest capacity measurement of every link into this node (from probe trains).
    pub fn probe_samples(&self) -> impl Iterator<Item = ProbeSample> + '_ {
        self.probe_rx.samples()
    }

    /// Next event for the driver.
    pub fn poll_event(&mut self) -> Option<EngineEvent> {
        self.events.pop_front()
    }

    // -- policies and rounds -------------------------------------------------------------

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
        self.relay.update_routes(
            policy.routes.len(),
            policy.routes.iter().map(|r| &r.hops[..]),
        );
        let (me, elems, seg) = (self.cfg.node, self.cfg.buffer_elems, self.cfg.segment_elems);
        self.early.size_for(&policy, me, elems, seg);
        self.pending = Some((policy, activate_round));
        Ok(())
    }

    fn activate(&mut self, policy: Policy) -> Result<(), EngineError> {
        let me = self.cfg.node;
        for lr in &policy.link_rates {
            if lr.from == me {
                self.links[lr.to as usize].set_rate(lr.rate_bps);
            }
        }
        // Paths: (re)create the state of routes that start or end here.
        self.release_on_activate(&policy);
        self.paths.install(&policy, me, &self.cfg, &self.topo)?;
        let (compiled, queue_need) = CompiledPolicy::compile(
            &policy,
            me,
            self.cfg.node_count as usize,
            self.cfg.buffer_elems,
            self.cfg.segment_elems,
        );
        self.paths.reserve(&queue_need, self.cfg.max_inflight);
        self.round.resize(&compiled);
        self.timers.set(Timer::Data, 0);
        self.current = Some(compiled);
        Ok(())
    }

    /// Starts `round` at `now`: the buffer holds this node's contribution. Rounds must
    /// increase; the previous round must have completed here.
    pub fn start_round(&mut self, now: Nanos, round: u32) -> Result<(), EngineError> {
        if self.round.active {
            return Err(EngineError::RoundOrder {
                round,
                why: format!("round {} is still running", self.round.round),
            });
        }
        if let Some(last) = self.round.last {
            if round <= last {
                return Err(EngineError::RoundOrder {
                    round,
                    why: format!("round {last} already started"),
                });
            }
        }
        let activates = self.pending.as_ref().is_some_and(|(_, at)| *at <= round);
        let epoch = match &self.pending {
            Some((p, _)) if activates => Some(p.epoch),
            _ => self.current.as_ref().map(|c| c.epoch),
        };
        if let Some(epoch) = epoch {
            self.release_check_start(round, epoch)?;
        }
        if activates {
            let (policy, _) = self.pending.take().expect("checked");
            self.activate(policy)?;
        }
        let Some(policy) = self.current.as_mut() else {
            return Err(EngineError::NoPolicy(round));
        };
        if !self.release.is_member(self.cfg.node) {
            return Err(EngineError::NotAMember {
                round,
                epoch: policy.epoch,
            });
        }
        let epoch = policy.epoch;
        let (paths, timers) = (&mut self.paths, &mut self.timers);
        self.round.start(round, policy, &mut |path, item| {
            paths.enqueue(path, item);
            timers.set(Timer::Data, 0);
        });
        self.release_on_start(round, epoch);
        let policy = self.current.as_ref().expect("checked");
        let nonfinite = kernel16::count_nonfinite(&self.buf);
        self.round.stats.nonfinite_inputs = nonfinite;
        self.counters.nonfinite_inputs += nonfinite;
        if self.cfg.wire.is_16bit() {
            // A tree in which this node is the root and has no children: its contribution is
            // already final (no packet will complete it), so it is rounded here.
            for tree in policy
                .trees
                .iter()
                .filter(|t| t.is_root && t.full_mask == 0)
            {
                let range = tree.range.clone();
                let saturated = self.round.round_final(self.cfg.wire, &mut self.buf[range]);
                self.counters.saturated += saturated;
            }
        }
        // Replay what arrived early for this round.
        let mut held = std::mem::take(&mut self.early);
        for pkt in held.packets() {
            if let Ok(p) = Packet::new_checked(pkt) {
                self.deliver(now, &p);
            }
        }
        held.clear();
        self.early = held;
        self.check_complete(now);
        Ok(())
    }

    /// Applies a data packet of the running round. Returns false if it was rejected.
    fn deliver(&mut self, now: Nanos, pkt: &Packet<&[u8]>) -> bool {
        let Some(policy) = self.current.as_mut() else {
            return false;
        };
        let (paths, timers) = (&mut self.paths, &mut self.timers);
        let delivery = self.round.apply(
            policy,
            self.cfg.segment_elems,
            self.cfg.wire,
            &mut self.buf,
            pkt,
            &mut self.counters,
            &mut |path, item| {
                paths.enqueue(path, item);
                timers.set(Timer::Data, 0);
            },
        );
        match delivery {
            Delivery::Applied => {
                self.check_complete(now);
                true
            }
            Delivery::Duplicate => true,
            Delivery::Rejected => false,
        }
    }

    fn check_complete(&mut self, now: Nanos) {
        if !self.round.active || !self.round.all_final() {
            return;
        }
        if !self.round.result_reported {
            self.round.result_reported = true;
            self.events.push_back(EngineEvent::ResultReady {
                round: self.round.round,
                at: now,
            });
        }
        if self.paths.all_idle() {
            self.round.active = false;
            self.counters.rounds_completed += 1;
            let epoch = self.current.as_ref().map_or(0, |c| c.epoch);
            self.events.push_back(EngineEvent::RoundComplete {
                round: self.round.round,
                epoch,
                at: now,
            });
            self.release_on_complete(now);
        }
    }

    // -- receive -------------------------------------------------------------------------

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
        if !self.protect.enabled() {
            if pkt.flags() & wire::flags::ENCRYPTED != 0 {
                // Off here, encrypted there: never read ciphertext as gradients.
                self.counters.rx_bad_mac += 1;
                return;
            }
            self.dispatch(now, &pkt, data);
            return;
        }
        let mut scratch = std::mem::take(&mut self.rx_scratch);
        if let Some(plain) = scratch.get_mut(..data.len()) {
            plain.copy_from_slice(data);
            match self.protect.opener.open(now, plain) {
                Ok(()) => match Packet::new_checked(&*plain) {
                    Ok(opened) => self.dispatch(now, &opened, data),
                    Err(_) => self.counters.rx_malformed += 1,
                },
                Err(OpenError::BadTag) => self.counters.rx_bad_mac += 1,
                Err(OpenError::Replayed) => self.counters.rx_replayed += 1,
                Err(OpenError::KeyLimited) => {
                    // Unverifiable is unauthenticated: counted with the bad tags too.
                    self.counters.rx_bad_mac += 1;
                    self.counters.rx_key_limited += 1;
                }
                Err(OpenError::UnknownSender) => self.counters.rx_invalid += 1,
            }
        } else {
            self.counters.rx_malformed += 1;
        }
        self.rx_scratch = scratch;
    }

    /// Handles a datagram that opened: `pkt` is its plaintext, `received` the bytes as they
    /// arrived (what a relay forwards).
    fn dispatch(&mut self, now: Nanos, pkt: &Packet<&[u8]>, received: &[u8]) {
        if pkt.payload_type() != self.cfg.wire {
            // A peer configured for another payload type: never misread its payloads.
            self.counters.rx_wrong_payload += 1;
            return;
        }
        self.liveness.heard(pkt.src(), now);
        let me = self.cfg.node;
        let path = pkt.path() as usize;
        if pkt.dst() != me {
            self.relay_datagram(pkt, received);
            return;
        }
        match pkt.kind() {
            // Left over from before an abort (older sequence spaces): never applied.
            PacketKind::Ack | PacketKind::ReduceData | PacketKind::BroadcastData
                if pkt.epoch() < self.release.epoch_floor() =>
            {
                self.counters.rx_aborted_round += 1
            }
            PacketKind::Ack => self.on_ack(now, path, pkt),
            PacketKind::ReduceData | PacketKind::BroadcastData => self.on_data(now, path, pkt),
            PacketKind::Probe => self.on_probe(now, pkt, received.len()),
            PacketKind::RoundDone => self.on_round_done(now, pkt),
            PacketKind::Heartbeat => self.counters.rx_heartbeats += 1,
            // Control messages travel outside the data plane.
            _ => self.counters.rx_invalid += 1,
        }
    }

    fn on_data(&mut self, now: Nanos, path: usize, pkt: &Packet<&[u8]>) {
        let Some(Some(rp)) = self.paths.recv.get_mut(path) else {
            self.counters.rx_invalid += 1;
            return;
        };
        if rp.origin != pkt.src() {
            self.counters.rx_invalid += 1;
            return;
        }
        let seq = match rp.classify(pkt.seq()) {
            Arrival::OutOfWindow => {
                self.counters.rx_out_of_window += 1;
                return;
            }
            Arrival::Duplicate => {
                self.counters.rx_duplicate += 1;
                rp.echo(now, pkt.timestamp_ns());
                self.paths.queue_ack(path);
                return;
            }
            Arrival::New(seq) => seq,
        };
        if !self.accept_data(now, pkt) {
            return;
        }
        let rp = self.paths.recv[path].as_mut().expect("checked above");
        let in_order = rp.record(seq);
        rp.echo(now, pkt.timestamp_ns());
        if !in_order || rp.unacked() >= self.cfg.ack_every {
            self.paths.queue_ack(path);
        } else if rp.ack_deadline.is_none() {
            rp.ack_deadline = Some(now + self.cfg.ack_delay_ns);
            self.timers.lower(Timer::Ack, now + self.cfg.ack_delay_ns);
        }
    }

    /// Returns whether the packet was taken (delivered, recognised as stale, or held for the
    /// next round), i.e. whether to acknowledge it.
    fn accept_data(&mut self, now: Nanos, pkt: &Packet<&[u8]>) -> bool {
        let round = pkt.round();
        let next_round = self.round.last.map_or(round, |r| r.wrapping_add(1));
        if self.round.active && round == self.round.round {
            return self.deliver(now, pkt);
        }
        if self.round.last.is_some_and(|r| round <= r) {
            // A round that is over here (or ends as soon as our own sends are acknowledged).
            self.counters.rx_stale_round += 1;
            return true;
        }
        if round == next_round || (self.round.active && round == self.round.round.wrapping_add(1)) {
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
            // Held opened (decrypted): replayed later without opening again.
            if !self.early.hold(pkt.as_bytes()) {
                self.counters.rx_early_dropped += 1;
                return false;
            }
            self.counters.rx_early_held += 1;
            return true;
        }
        self.counters.rx_invalid += 1;
        false
    }

    fn on_ack(&mut self, now: Nanos, path: usize, pkt: &Packet<&[u8]>) {
        let Ok(ack) = AckRepr::parse(pkt.payload()) else {
            self.counters.rx_malformed += 1;
            return;
        };
        let Some(Some(sp)) = self.paths.send.get_mut(path) else {
            self.counters.rx_invalid += 1;
            return;
        };
        if sp.hops.last() != Some(&pkt.src()) {
            self.counters.rx_invalid += 1;
            return;
        }
        if !sp.on_ack(now, &ack, &mut self.counters) {
            return;
        }
        // The window may have opened, losses were queued, the RTO may have shrunk.
        if let Some(d) = sp.timer_deadline(self.cfg.ack_delay_ns) {
            self.timers.lower(Timer::Loss, d);
        }
        self.note_work(path);
        self.check_complete(now);
    }

    /// Path `id` may have become sendable: lower the data deadline bound accordingly.
    fn note_work(&mut self, id: usize) {
        if let Some(Some(sp)) = self.paths.send.get(id) {
            if sp.has_work() {
                let ready = self.data_ready_ns(sp);
                self.timers.lower(Timer::Data, ready);
            }
        }
    }

    /// Earliest time path `sp` may send data: both its pacer and its link's allow it,
    /// up to the burst allowance early.
    #[inline]
    fn data_ready_ns(&self, sp: &path::SendPath) -> Nanos {
        let link = &self.links[sp.next_hop as usize];
        sp.pacer
            .next_ns()
            .max(link.next_ns())
            .saturating_sub(self.cfg.pacing_burst_ns)
    }

    // Never: a few probes per second; kept out of `handle_packet`'s hot body.
    #[inline(never)]
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

    // -- transmit (the datagram writers are in `transmit`) ---------------------------------

    /// Writes the next datagram to send into `out` (at least
    /// [`EngineConfig::max_datagram_len`] bytes) and says where it goes.
    pub fn poll_transmit(&mut self, now: Nanos, out: &mut [u8]) -> Option<Transmit> {
        // 0. Capacity probes: a train leaves back to back, nothing interleaved.
        if self.prober.may_send(now) {
            if let Some(tx) = self.send_probe(now, out) {
                return Some(tx);
            }
        }
        let burst = self.cfg.pacing_burst_ns;
        // 1. Relayed datagrams.
        if let Some(next) = self.relay.front() {
            if self.links[next as usize].next_ns() <= now + burst {
                let (next, len) = self.relay.pop_into(out).expect("a datagram waits");
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
        if let Some(&p) = self.paths.ack_queue.front() {
            let rp = self.paths.recv[p as usize]
                .as_ref()
                .expect("queued path exists");
            let next = rp.ack_next_hop;
            if self.links[next as usize].next_ns() <= now + burst {
                self.paths.ack_queue.pop_front();
                let len = self.write_ack(now, p, out)?;
                self.pace_link(now, next, len);
                self.counters.tx_acks += 1;
                self.counters.tx_bytes += len as u64;
                return Some(Transmit {
                    next_hop: next,
                    len,
                });
            }
        }
        // 3. Release gossip and heartbeats (a few small datagrams per round, if on).
        if let Some(tx) = self.poll_control(now, out) {
            return Some(tx);
        }
        // 4. Data, round-robin over paths (skipped while no path can be ready yet).
        if !self.timers.expired(Timer::Data, now) {
            return None;
        }
        let paths = self.paths.send_ids.len();
        let mut next_ready = Nanos::MAX;
        let mut k = self.paths.rr_cursor.min(paths);
        for _ in 0..paths {
            if k == paths {
                k = 0;
            }
            let id = self.paths.send_ids[k];
            k += 1;
            let Some(sp) = &self.paths.send[id] else {
                continue;
            };
            if !sp.has_work() {
                continue;
            }
            let ready = self.data_ready_ns(sp);
            if ready > now {
                next_ready = next_ready.min(ready);
                continue;
            }
            if let Some(tx) = self.send_on_path(now, id, out) {
                self.paths.rr_cursor = k;
                return Some(tx);
            }
        }
        self.timers.set(Timer::Data, next_ready);
        None
    }

    // -- time ----------------------------------------------------------------------------

    /// Lets timers fire: delayed acknowledgements, tail-loss timers and retransmission
    /// timeouts.
    pub fn handle_timeout(&mut self, now: Nanos) {
        self.control_on_timeout(now);
        if self.timers.expired(Timer::Ack, now) {
            let mut next = Nanos::MAX;
            for id in 0..self.paths.recv.len() {
                if let Some(rp) = &self.paths.recv[id] {
                    match rp.ack_deadline {
                        Some(d) if d <= now => self.paths.queue_ack(id),
                        Some(d) => next = next.min(d),
                        None => {}
                    }
                }
            }
            self.timers.set(Timer::Ack, next);
        }
        if !self.timers.expired(Timer::Loss, now) {
            return;
        }
        let mut next = Nanos::MAX;
        let ack_delay = self.cfg.ack_delay_ns;
        for sp in self.paths.send.iter_mut().flatten() {
            sp.on_timers(now, ack_delay, &mut self.counters);
            if let Some(d) = sp.timer_deadline(ack_delay) {
                next = next.min(d);
            }
        }
        self.timers.set(Timer::Loss, next);
        // Retransmissions were queued.
        self.timers.set(Timer::Data, 0);
    }

    /// The next time [`Engine::handle_timeout`] or [`Engine::poll_transmit`] has work, if any.
    pub fn poll_timeout(&self) -> Option<Nanos> {
        let burst = self.cfg.pacing_burst_ns;
        let link_ready = |next: NodeId| self.links[next as usize].next_ns().saturating_sub(burst);
        let relay = self.relay.front().map(link_ready);
        let ack = self
            .paths
            .ack_queue
            .front()
            .and_then(|&p| self.paths.recv[p as usize].as_ref())
            .map(|rp| link_ready(rp.ack_next_hop));
        let probe = self
            .prober
            .deadline(self.probe_other_bytes(), self.probe_frame_bytes());
        self.timers
            .next([relay, ack, probe, self.control_deadline()])
    }
}

#[cfg(test)]
mod tests;
