//! The emulated WAN and the discrete-event driver that runs N engines in virtual time.
//!
//! Each directed link serializes frames at its rate (a FIFO that is busy until the last
//! frame's last bit left), adds its one-way delay, and drops frames at random with its loss
//! probability (after they used the link, as loss on the wire does). A drop-tail limit on
//! queueing delay models the router buffer. Optional per-node egress/ingress caps serialize
//! frames at the NIC. Impairments for tests (reordering, duplication, corruption) are per
//! network. Fault injection (`EmuConfig`): Gilbert–Elliott burst loss, link outages for an
//! interval, and heartbeats with a liveness detector ([`Simulation::run_round_watching`]).
//! Everything is driven by one seeded RNG and one event heap ordered by
//! (time, insertion number), so the same seed gives the same event trace.
//!
//! Approximations, on purpose: a rate change applies to frames queued after it (frames
//! already queued keep their computed times), and the ingress cap serializes frames in the
//! order they were sent rather than the order they arrive.

use crate::engine::{Engine, EngineEvent};
use crate::scenario::{Change, TimedChange};
use crate::topology::Topology;
use crate::{Nanos, NodeId, NANOS_PER_SEC};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Network-wide emulator settings.
#[derive(Debug, Clone, PartialEq)]
pub struct EmuConfig {
    pub seed: u64,
    /// Bytes per frame besides the datagram (Ethernet + IPv4 + UDP).
    pub frame_overhead_bytes: usize,
    /// Drop-tail: a frame that would wait longer than this in a link queue is dropped.
    pub queue_limit_ns: Nanos,
    /// Extra random loss on every link, on top of each link's own.
    pub extra_loss: f64,
    /// Probability that a frame is delayed by up to `reorder_delay_ns` extra (reordering).
    pub reorder_prob: f64,
    pub reorder_delay_ns: Nanos,
    /// Probability that a frame is delivered twice.
    pub duplicate_prob: f64,
    /// Probability that one random byte of a frame is flipped.
    pub corrupt_prob: f64,
    /// Gilbert–Elliott burst loss, on top of the rest (`None` = off).
    pub burst_loss: Option<GilbertElliott>,
    /// Links that drop every frame sent during a virtual-time interval.
    pub outages: Vec<LinkOutage>,
    /// Heartbeats for liveness detection ([`Simulation::run_round_watching`]); `None` = off.
    pub heartbeat: Option<Heartbeat>,
}

/// Two-state Markov (Gilbert–Elliott) loss: each frame on an affected link first moves the
/// link's state (Good → Bad with `p_good_to_bad`, Bad → Good with `p_bad_to_good`), then is
/// lost with the state's loss probability. Mean burst length is `1 / p_bad_to_good` frames.
#[derive(Debug, Clone, PartialEq)]
pub struct GilbertElliott {
    pub p_good_to_bad: f64,
    pub p_bad_to_good: f64,
    pub loss_good: f64,
    pub loss_bad: f64,
    /// Indices into `Topology::links` affected; empty = every link.
    pub links: Vec<usize>,
}

impl GilbertElliott {
    /// Long-run loss rate: π_bad · loss_bad + π_good · loss_good.
    pub fn mean_loss(&self) -> f64 {
        let sum = self.p_good_to_bad + self.p_bad_to_good;
        let bad = if sum > 0.0 {
            self.p_good_to_bad / sum
        } else {
            0.0
        };
        bad * self.loss_bad + (1.0 - bad) * self.loss_good
    }

    fn applies_to(&self, link: usize) -> bool {
        self.links.is_empty() || self.links.contains(&link)
    }
}

/// Link `link` (index into `Topology::links`) drops every frame handed to it in
/// `[from_ns, until_ns)`. Frames already on the wire when it goes down still arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkOutage {
    pub link: usize,
    pub from_ns: Nanos,
    pub until_ns: Nanos,
}

/// Every node sends a heartbeat to each neighbour every `interval_ns` (over the link: lost
/// when the link is down, in an outage or by the link's random loss; heartbeats use no link
/// capacity). A node none of whose heartbeats reached any neighbour for `timeout_ns` is
/// declared dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    pub interval_ns: Nanos,
    pub timeout_ns: Nanos,
}

impl Default for EmuConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            frame_overhead_bytes: crate::wire::FRAME_OVERHEAD_BYTES,
            queue_limit_ns: 100_000_000,
            extra_loss: 0.0,
            reorder_prob: 0.0,
            reorder_delay_ns: 0,
            duplicate_prob: 0.0,
            corrupt_prob: 0.0,
            burst_loss: None,
            outages: Vec::new(),
            heartbeat: None,
        }
    }
}

/// Counters of one directed link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub frames: u64,
    /// Bytes on the wire, frame overhead included.
    pub wire_bytes: u64,
    pub lost: u64,
    pub queue_drops: u64,
    /// Frames dropped because the link was in a [`LinkOutage`].
    pub outage_drops: u64,
}

#[derive(Debug, Clone)]
struct EmuLink {
    rate_bps: f64,
    latency_ns: Nanos,
    loss: f64,
    busy_until: Nanos,
    up: bool,
    /// Gilbert–Elliott state: in the Bad (bursty) state.
    ge_bad: bool,
    stats: LinkStats,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum EventKind {
    Deliver { node: NodeId, slot: u32, len: u32 },
    Wake { node: NodeId },
    Start { node: NodeId, round: u32 },
    Heartbeat { node: NodeId },
}

/// What happened to one node in one round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeRound {
    pub started_at: Nanos,
    pub result_at: Nanos,
    pub completed_at: Nanos,
    /// When the round was released here (release gossip on; 0: not released).
    pub released_at: Nanos,
    pub epoch: u32,
}

impl NodeRound {
    /// The round is over at this node: completed, and released if `engine` gossips.
    fn over(&self, engine: &Engine) -> bool {
        self.completed_at > 0 && (!engine.config().release_gossip || self.released_at > 0)
    }
}

/// One round across all nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundSummary {
    pub round: u32,
    /// First node's start.
    pub started_at: Nanos,
    /// When the last node held the result.
    pub result_at: Nanos,
    /// When the last node completed (all its sends acknowledged).
    pub completed_at: Nanos,
    /// With release gossip: when the last node released the round (0 without).
    pub released_at: Nanos,
    /// Epoch every node ran the round under (`None` if nodes disagreed — a bug).
    pub epoch: Option<u32>,
}

impl RoundSummary {
    /// Synchronization time of the round: first start to the last node holding the result
    /// it may hand over (its release, with release gossip).
    pub fn sync_ns(&self) -> Nanos {
        self.result_at.max(self.released_at) - self.started_at
    }
}

/// Errors of a simulation run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EmuError {
    #[error("topology has {topo} nodes but {engines} engines were given")]
    EngineCount { topo: usize, engines: usize },
    #[error(
        "round {round} did not finish by virtual time {at_s:.3} s ({pending} nodes pending): {why}"
    )]
    Stuck {
        round: u32,
        at_s: f64,
        pending: usize,
        why: String,
    },
    #[error(
        "round {round} failed: node {node} is dead (no heartbeat reached any neighbour since \
         {last_heard_s:.3} s; timeout {timeout_s:.3} s; detected at {at_s:.3} s)"
    )]
    NodeDead {
        round: u32,
        node: NodeId,
        last_heard_s: f64,
        timeout_s: f64,
        at_s: f64,
    },
    #[error("engine {node}: {err}")]
    Engine {
        node: NodeId,
        err: crate::engine::EngineError,
    },
}

/// N engines on an emulated WAN, in virtual time.
pub struct Simulation {
    cfg: EmuConfig,
    engines: Vec<Engine>,
    links: Vec<EmuLink>,
    link_of: Vec<u32>,
    n: usize,
    egress_cap: Vec<Option<f64>>,
    ingress_cap: Vec<Option<f64>>,
    egress_busy: Vec<Nanos>,
    ingress_busy: Vec<Nanos>,
    heap: BinaryHeap<Reverse<(Nanos, u64, EventKind)>>,
    seq: u64,
    now: Nanos,
    wake_at: Vec<Option<Nanos>>,
    pool: Vec<Vec<u8>>,
    free: Vec<u32>,
    /// Size of every packet slot: the largest datagram any engine emits.
    max_len: usize,
    rng: ChaCha8Rng,
    changes: Box<dyn Iterator<Item = TimedChange> + Send>,
    next_change: Option<TimedChange>,
    start_hook: Option<StartHook>,
    rounds: Vec<Vec<NodeRound>>,
    trace: TraceHash,
    events_processed: u64,
    /// `(last_round, compute_ns)`: when a node completes round r < last_round it starts
    /// r + 1 after `compute_ns` (counted from when it held the result), like a trainer.
    auto_advance: Option<(u32, Nanos)>,
    /// Per node: rounds at or after this may not start yet (a control plane waiting for a
    /// policy decision); a start that hits the barrier is parked until it moves.
    start_barrier: Vec<Option<u32>>,
    parked: Vec<Option<u32>>,
    /// Frames sent to a neighbour without a link (a routing bug; counted, never delivered).
    pub no_link_drops: u64,
    /// Per node: when its latest heartbeat reached a neighbour (see [`Heartbeat`]).
    heard_ns: Vec<Nanos>,
    /// Delivered datagrams recorded for tests (`(receiving node, bytes)`), up to a limit.
    capture: Option<(usize, Vec<Captured>)>,
}

const NO_LINK: u32 = u32::MAX;

/// A delivered datagram recorded by [`Simulation::set_capture`]: `(receiving node, bytes)`.
pub type Captured = (NodeId, Vec<u8>);

/// Order-sensitive digest of the event trace (one multiply per word).
#[derive(Debug, Clone, Copy)]
struct TraceHash(u64);

impl TraceHash {
    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0 ^ x).wrapping_mul(0x0100_0000_01b3).rotate_left(29);
    }
    fn write_u32(&mut self, x: u32) {
        self.write_u64(x as u64);
    }
    fn write_u16(&mut self, x: u16) {
        self.write_u64(x as u64);
    }
}

/// Called as `hook(node, round, buffer)` right before `node` starts `round`: the buffer still
/// holds the previous round's result; the hook may check it and must write the contribution.
pub type StartHook = Box<dyn FnMut(NodeId, u32, &mut [f32]) + Send>;

impl std::fmt::Debug for Simulation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulation")
            .field("now", &self.now)
            .field("nodes", &self.n)
            .field("events_processed", &self.events_processed)
            .field("pending_events", &self.heap.len())
            .finish_non_exhaustive()
    }
}

impl Simulation {
    /// Emulates `topo` with one engine per node (engine `i` is node `i`).
    pub fn new(topo: &Topology, engines: Vec<Engine>, cfg: EmuConfig) -> Result<Self, EmuError> {
        let n = topo.node_count();
        if engines.len() != n {
            return Err(EmuError::EngineCount {
                topo: n,
                engines: engines.len(),
            });
        }
        let mut link_of = vec![NO_LINK; n * n];
        let links = topo
            .links
            .iter()
            .enumerate()
            .map(|(i, l)| {
                link_of[l.from as usize * n + l.to as usize] = i as u32;
                EmuLink {
                    rate_bps: l.rate_bps,
                    latency_ns: l.latency_ns,
                    loss: l.loss,
                    busy_until: 0,
                    up: true,
                    ge_bad: false,
                    stats: LinkStats::default(),
                }
            })
            .collect();
        let max_len = engines
            .iter()
            .map(|e| e.config().max_datagram_len())
            .max()
            .unwrap_or(2048);
        let mut sim = Self {
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            cfg,
            engines,
            links,
            link_of,
            n,
            egress_cap: topo.nodes.iter().map(|x| x.egress_bps).collect(),
            ingress_cap: topo.nodes.iter().map(|x| x.ingress_bps).collect(),
            egress_busy: vec![0; n],
            ingress_busy: vec![0; n],
            heap: BinaryHeap::new(),
            seq: 0,
            now: 0,
            wake_at: vec![None; n],
            pool: Vec::new(),
            free: Vec::new(),
            max_len,
            changes: Box::new(std::iter::empty()),
            next_change: None,
            start_hook: None,
            rounds: Vec::new(),
            trace: TraceHash(0x9e37_79b9_7f4a_7c15),
            events_processed: 0,
            auto_advance: None,
            start_barrier: vec![None; n],
            parked: vec![None; n],
            no_link_drops: 0,
            heard_ns: vec![0; n],
            capture: None,
        };
        if sim.cfg.heartbeat.is_some() {
            for node in 0..n {
                sim.push(
                    0,
                    EventKind::Heartbeat {
                        node: node as NodeId,
                    },
                );
            }
        }
        Ok(sim)
    }

    /// Applies a stream of timed network changes (e.g. `Scenario::changes()`), in order.
    pub fn set_changes(&mut self, changes: impl Iterator<Item = TimedChange> + Send + 'static) {
        self.changes = Box::new(changes);
        self.next_change = self.changes.next();
    }

    /// Applies every network change due at or before `t` (they are applied lazily, before
    /// the first event at or after their time).
    pub fn apply_changes_until(&mut self, t: Nanos) {
        while let Some(c) = self.next_change.take() {
            if c.at_ns > t {
                self.next_change = Some(c);
                break;
            }
            self.apply(c.change);
            self.next_change = self.changes.next();
        }
    }

    /// Installs the hook run before every round start (see [`StartHook`]).
    pub fn set_start_hook(&mut self, hook: StartHook) {
        self.start_hook = Some(hook);
    }

    pub fn now(&self) -> Nanos {
        self.now
    }
    pub fn engine(&self, node: NodeId) -> &Engine {
        &self.engines[node as usize]
    }
    pub fn engine_mut(&mut self, node: NodeId) -> &mut Engine {
        &mut self.engines[node as usize]
    }
    pub fn engines(&self) -> &[Engine] {
        &self.engines
    }
    pub fn engines_mut(&mut self) -> &mut [Engine] {
        &mut self.engines
    }
    /// The engines themselves, e.g. to move them into a new simulation.
    pub fn engines_mut_vec(&mut self) -> &mut Vec<Engine> {
        &mut self.engines
    }

    /// Current rate of every link, in topology order (what an oracle planner would see).
    pub fn link_rates_bps(&self) -> Vec<f64> {
        self.links
            .iter()
            .map(|l| if l.up { l.rate_bps } else { 0.0 })
            .collect()
    }

    pub fn link_stats(&self) -> Vec<LinkStats> {
        self.links.iter().map(|l| l.stats).collect()
    }

    /// Total bytes that crossed any link (frame overhead included).
    pub fn wan_bytes(&self) -> u64 {
        self.links.iter().map(|l| l.stats.wire_bytes).sum()
    }

    /// Data retransmissions over all engines so far.
    pub fn retransmits(&self) -> u64 {
        self.engines()
            .iter()
            .map(|e| e.counters().tx_retransmits)
            .sum()
    }

    /// Next-round packets dropped because the early pool was full, over every engine.
    pub fn early_dropped(&self) -> u64 {
        self.engines()
            .iter()
            .map(|e| e.counters().rx_early_dropped)
            .sum()
    }

    /// Acks taken as CPU-limited, over every engine: 0 in virtual time (no loop to fall
    /// behind), a check that nothing else marks them.
    pub fn cpu_limited_acks(&self) -> u64 {
        self.engines()
            .iter()
            .map(|e| e.counters().cpu_limited_acks)
            .sum()
    }

    /// A hash of every event processed so far (time, kind, node): equal traces, equal hashes.
    pub fn trace_hash(&self) -> u64 {
        self.trace.0
    }

    pub fn events_processed(&self) -> u64 {
        self.events_processed
    }

    /// Per round (index = round number), what each node saw.
    pub fn rounds(&self) -> &[Vec<NodeRound>] {
        &self.rounds
    }

    /// Makes every node start round r + 1 by itself once it completed round r (for
    /// r < `last_round`), `compute_ns` after it held round r's result.
    pub fn set_auto_advance(&mut self, last_round: u32, compute_ns: Nanos) {
        self.auto_advance = Some((last_round, compute_ns));
    }

    /// Runs until some node completed `round` (or every node did). Lets a control plane
    /// act between a round's first completion and the next round's first start.
    pub fn run_until_first_complete(
        &mut self,
        round: u32,
        max_virtual_ns: Nanos,
    ) -> Result<(), EmuError> {
        self.run_until(round, max_virtual_ns, |nodes| {
            nodes.iter().any(|x| x.completed_at > 0)
        })
    }

    /// Processes every event up to virtual time `t`, then moves the clock to `t` (e.g. to
    /// model computation between rounds).
    pub fn advance_to(&mut self, t: Nanos) -> Result<(), EmuError> {
        while self.heap.peek().is_some_and(|Reverse((at, _, _))| *at <= t) {
            self.step()?;
        }
        self.apply_changes_until(t);
        self.now = self.now.max(t);
        Ok(())
    }

    /// Summary of `round` once every node completed it.
    pub fn summary(&self, round: u32) -> Option<RoundSummary> {
        let r = self.rounds.get(round as usize)?;
        if r.is_empty() || !r.iter().zip(&self.engines).all(|(x, e)| x.over(e)) {
            return None;
        }
        let epoch = r[0].epoch;
        Some(RoundSummary {
            round,
            started_at: r.iter().map(|x| x.started_at).min()?,
            result_at: r.iter().map(|x| x.result_at).max()?,
            completed_at: r.iter().map(|x| x.completed_at).max()?,
            released_at: r.iter().map(|x| x.released_at).max()?,
            epoch: r.iter().all(|x| x.epoch == epoch).then_some(epoch),
        })
    }

    /// Starts `round` on every node now and runs it to completion.
    pub fn run_round_all(
        &mut self,
        round: u32,
        max_virtual_ns: Nanos,
    ) -> Result<RoundSummary, EmuError> {
        for v in 0..self.n {
            self.schedule_start(v as NodeId, round, self.now);
        }
        self.run_round(round, max_virtual_ns)?;
        Ok(self.summary(round).expect("run_round returned Ok"))
    }

    fn push(&mut self, at: Nanos, kind: EventKind) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, kind)));
    }

    /// Holds `node` before rounds `>= barrier` (`None` lifts it). A start parked by an
    /// earlier barrier that is now allowed happens at once.
    pub fn set_start_barrier(&mut self, node: NodeId, barrier: Option<u32>) {
        let v = node as usize;
        self.start_barrier[v] = barrier;
        if let Some(round) = self.parked[v] {
            if barrier.is_none_or(|b| round < b) {
                self.parked[v] = None;
                self.push(self.now, EventKind::Start { node, round });
            }
        }
    }

    /// Lets `node`'s engine act now (e.g. send start-up probes before any round).
    pub fn wake(&mut self, node: NodeId) {
        self.service(node);
    }

    /// The round `node` is waiting to start because of its barrier, if any.
    pub fn parked_start(&self, node: NodeId) -> Option<u32> {
        self.parked[node as usize]
    }

    /// Time of the next pending event, if any.
    pub fn next_event_at(&self) -> Option<Nanos> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Starts `round` on `node` at virtual time `at` (≥ now).
    pub fn schedule_start(&mut self, node: NodeId, round: u32, at: Nanos) {
        self.push(at.max(self.now), EventKind::Start { node, round });
    }

    fn round_slot(&mut self, round: u32) -> &mut Vec<NodeRound> {
        let r = round as usize;
        if self.rounds.len() <= r {
            self.rounds.resize(r + 1, Vec::new());
        }
        if self.rounds[r].is_empty() {
            self.rounds[r] = vec![NodeRound::default(); self.n];
        }
        &mut self.rounds[r]
    }

    /// Runs until every node completed `round` (and released it, where release gossip is
    /// on), or fails after `max_virtual_ns` of virtual time beyond now (never hangs).
    pub fn run_round(&mut self, round: u32, max_virtual_ns: Nanos) -> Result<(), EmuError> {
        let gossip: Vec<bool> = self
            .engines
            .iter()
            .map(|e| e.config().release_gossip)
            .collect();
        self.run_until(round, max_virtual_ns, |nodes| {
            nodes
                .iter()
                .zip(&gossip)
                .all(|(x, &g)| x.completed_at > 0 && (!g || x.released_at > 0))
        })
    }

    /// Like [`Simulation::run_round`], but until every node *released* `round` (engines
    /// with release gossip on).
    pub fn run_round_released(
        &mut self,
        round: u32,
        max_virtual_ns: Nanos,
    ) -> Result<(), EmuError> {
        self.run_until(round, max_virtual_ns, |nodes| {
            nodes.iter().all(|x| x.released_at > 0)
        })
    }

    /// Steps until `done(per-node state of round)` holds, failing after `max_virtual_ns` of
    /// virtual time or when no events are left (a deadlock), so a run never hangs.
    fn run_until(
        &mut self,
        round: u32,
        max_virtual_ns: Nanos,
        done: impl Fn(&[NodeRound]) -> bool,
    ) -> Result<(), EmuError> {
        let deadline = self.now.saturating_add(max_virtual_ns);
        loop {
            if self
                .rounds
                .get(round as usize)
                .is_some_and(|r| !r.is_empty() && done(r))
            {
                return Ok(());
            }
            let Some(Reverse((at, _, _))) = self.heap.peek() else {
                return Err(self.stuck(round, "no events left (deadlock)"));
            };
            if *at > deadline {
                return Err(self.stuck(round, "virtual-time limit reached"));
            }
            self.step()?;
        }
    }

    fn stuck(&self, round: u32, why: &str) -> EmuError {
        let pending = self.rounds.get(round as usize).map_or(self.n, |r| {
            r.iter()
                .zip(&self.engines)
                .filter(|(x, e)| !x.over(e))
                .count()
        });
        // Name the nodes the round waits for, and whether they ever started it (a trainer
        // that never hands in its gradient shows up as "not started").
        let waiting: Vec<String> = (0..self.n)
            .filter(|&v| {
                self.rounds
                    .get(round as usize)
                    .and_then(|r| r.get(v))
                    .is_none_or(|x| !x.over(&self.engines[v]))
            })
            .map(|v| {
                let e = &self.engines[v];
                let state = if e.round_active() {
                    "running"
                } else if e.last_round().is_some_and(|r| r >= round) {
                    "completed, not released"
                } else {
                    "not started"
                };
                format!("node {v} ({state})")
            })
            .collect();
        EmuError::Stuck {
            round,
            at_s: self.now as f64 / NANOS_PER_SEC as f64,
            pending,
            why: format!("{why}; waiting for {}", waiting.join(", ")),
        }
    }

    /// Processes one event.
    pub fn step(&mut self) -> Result<(), EmuError> {
        let Some(&Reverse((next_at, _, _))) = self.heap.peek() else {
            return Ok(());
        };
        self.apply_changes_until(next_at);
        let Some(Reverse((at, _, kind))) = self.heap.pop() else {
            return Ok(());
        };
        self.now = at;
        self.events_processed += 1;
        self.trace.write_u64(at);
        match kind {
            EventKind::Deliver { node, slot, len } => {
                self.trace.write_u16(node);
                let buf = std::mem::take(&mut self.pool[slot as usize]);
                if let Some((max, cap)) = &mut self.capture {
                    if cap.len() < *max {
                        cap.push((node, buf[..len as usize].to_vec()));
                    }
                }
                self.engines[node as usize].handle_packet(at, &buf[..len as usize]);
                self.pool[slot as usize] = buf;
                self.free.push(slot);
                self.service(node);
            }
            EventKind::Wake { node } => {
                if self.wake_at[node as usize] != Some(at) {
                    return Ok(()); // superseded
                }
                self.wake_at[node as usize] = None;
                self.trace.write_u16(node | 0x8000);
                self.engines[node as usize].handle_timeout(at);
                self.service(node);
            }
            EventKind::Start { node, round } => {
                if self.start_barrier[node as usize].is_some_and(|b| round >= b) {
                    self.parked[node as usize] = Some(round);
                    return Ok(());
                }
                self.trace.write_u32(round);
                self.round_slot(round)[node as usize].started_at = at;
                if let Some(hook) = &mut self.start_hook {
                    hook(node, round, self.engines[node as usize].buffer_mut());
                }
                self.engines[node as usize]
                    .start_round(at, round)
                    .map_err(|err| EmuError::Engine { node, err })?;
                self.service(node);
            }
            EventKind::Heartbeat { node } => self.heartbeat(node),
        }
        Ok(())
    }

    fn apply(&mut self, change: Change) {
        match change {
            Change::LinkRate { link, rate_bps } => {
                if let Some(l) = self.links.get_mut(link) {
                    l.rate_bps = rate_bps;
                }
            }
            Change::LinkLatency { link, latency_ns } => {
                if let Some(l) = self.links.get_mut(link) {
                    l.latency_ns = latency_ns;
                }
            }
            Change::LinkLoss { link, loss } => {
                if let Some(l) = self.links.get_mut(link) {
                    l.loss = loss;
                }
            }
            Change::NodeDown(v) | Change::NodeUp(v) => {
                let up = matches!(change, Change::NodeUp(_));
                let n = self.n;
                for u in 0..n {
                    for (a, b) in [(u, v as usize), (v as usize, u)] {
                        let i = self.link_of[a * n + b];
                        if i != NO_LINK {
                            self.links[i as usize].up = up;
                        }
                    }
                }
            }
        }
    }

    /// Drains an engine's output after it handled something.
    fn service(&mut self, node: NodeId) {
        // Datagrams are written straight into a packet slot, which then travels through the
        // event heap: no copy between the engine and the wire.
        loop {
            let slot = self.alloc_slot();
            let mut buf = std::mem::take(&mut self.pool[slot as usize]);
            let tx = self.engines[node as usize].poll_transmit(self.now, &mut buf);
            self.pool[slot as usize] = buf;
            let Some(tx) = tx else {
                self.free.push(slot);
                break;
            };
            self.transmit(node, tx.next_hop, slot, tx.len);
        }
        while let Some(ev) = self.engines[node as usize].poll_event() {
            match ev {
                EngineEvent::ResultReady { round, at } => {
                    self.round_slot(round)[node as usize].result_at = at;
                }
                EngineEvent::RoundComplete { round, epoch, at }
                | EngineEvent::RoundReleased { round, epoch, at } => {
                    let released = matches!(ev, EngineEvent::RoundReleased { .. });
                    let r = &mut self.round_slot(round)[node as usize];
                    if released {
                        r.released_at = at.max(1);
                    } else {
                        r.completed_at = at.max(1);
                    }
                    r.epoch = epoch;
                    let result_at = r.result_at;
                    // A trainer takes the result at its release with release gossip, else
                    // at completion.
                    let gossip = self.engines[node as usize].config().release_gossip;
                    if released != gossip {
                        continue;
                    }
                    if let Some((last, compute)) = self.auto_advance {
                        if round < last {
                            let start = at.max(result_at + compute);
                            self.push(
                                start,
                                EventKind::Start {
                                    node,
                                    round: round + 1,
                                },
                            );
                        }
                    }
                }
            }
        }
        if let Some(t) = self.engines[node as usize].poll_timeout() {
            // The engine only reports deadlines it cannot act on yet; clamp defensively so a
            // wrong deadline can never stall virtual time.
            let t = t.max(self.now + 1);
            // A pending earlier wake-up re-evaluates the deadline anyway; only an earlier
            // deadline needs a new heap entry (the later one then goes stale).
            if self.wake_at[node as usize].is_none_or(|w| t < w) {
                self.wake_at[node as usize] = Some(t);
                self.push(t, EventKind::Wake { node });
            }
        }
    }

    /// A free packet slot of `max_len` bytes (the pool grows until it covers the packets in
    /// flight, then stays put).
    fn alloc_slot(&mut self) -> u32 {
        match self.free.pop() {
            Some(s) => s,
            None => {
                self.pool.push(vec![0; self.max_len]);
                (self.pool.len() - 1) as u32
            }
        }
    }

    /// Sends the `len`-byte datagram in `slot` from `from` to its neighbour `to`; the slot
    /// belongs to the event heap from here on (or is freed when the frame is dropped).
    fn transmit(&mut self, from: NodeId, to: NodeId, slot: u32, len: usize) {
        let n = self.n;
        let li = self
            .link_of
            .get(from as usize * n + to as usize)
            .copied()
            .unwrap_or(NO_LINK);
        if li == NO_LINK {
            self.no_link_drops += 1;
            self.free.push(slot);
            return;
        }
        let bits = ((len + self.cfg.frame_overhead_bytes) * 8) as f64;
        let now = self.now;
        let mut t = now;
        if let Some(cap) = self.egress_cap[from as usize] {
            t = t.max(self.egress_busy[from as usize]) + (bits * 1e9 / cap) as Nanos;
            self.egress_busy[from as usize] = t;
        }
        if self.in_outage(li as usize, now) {
            self.links[li as usize].stats.outage_drops += 1;
            self.free.push(slot);
            return;
        }
        let link = &mut self.links[li as usize];
        if !link.up || link.rate_bps <= 0.0 {
            link.stats.lost += 1;
            self.free.push(slot);
            return;
        }
        let start = t.max(link.busy_until);
        if start - now > self.cfg.queue_limit_ns {
            link.stats.queue_drops += 1;
            self.free.push(slot);
            return;
        }
        let done = start + (bits * 1e9 / link.rate_bps) as Nanos;
        link.busy_until = done;
        link.stats.frames += 1;
        link.stats.wire_bytes += (len + self.cfg.frame_overhead_bytes) as u64;
        let loss = link.loss + self.cfg.extra_loss;
        let latency = link.latency_ns;
        if loss > 0.0 && self.rng.random::<f64>() < loss {
            self.links[li as usize].stats.lost += 1;
            self.free.push(slot);
            return;
        }
        if self.burst_lost(li as usize) {
            self.links[li as usize].stats.lost += 1;
            self.free.push(slot);
            return;
        }
        let mut arrive = done + latency;
        if self.cfg.reorder_prob > 0.0 && self.rng.random::<f64>() < self.cfg.reorder_prob {
            arrive += self.rng.random_range(0..=self.cfg.reorder_delay_ns);
        }
        if let Some(cap) = self.ingress_cap[to as usize] {
            arrive = arrive.max(self.ingress_busy[to as usize]) + (bits * 1e9 / cap) as Nanos;
            self.ingress_busy[to as usize] = arrive;
        }
        if self.cfg.duplicate_prob > 0.0 && self.rng.random::<f64>() < self.cfg.duplicate_prob {
            let copy = self.alloc_slot();
            let (src, dst) = (slot as usize, copy as usize);
            let (lo, hi) = self.pool.split_at_mut(src.max(dst));
            if src < dst {
                hi[0][..len].copy_from_slice(&lo[src][..len]);
            } else {
                lo[dst][..len].copy_from_slice(&hi[0][..len]);
            }
            self.deliver_later(arrive + 1, to, copy, len);
        }
        self.deliver_later(arrive, to, slot, len);
    }

    fn in_outage(&self, link: usize, now: Nanos) -> bool {
        self.cfg
            .outages
            .iter()
            .any(|o| o.link == link && o.from_ns <= now && now < o.until_ns)
    }

    /// Steps link `li`'s Gilbert–Elliott state for one frame and says whether it is lost.
    fn burst_lost(&mut self, li: usize) -> bool {
        let Some(ge) = &self.cfg.burst_loss else {
            return false;
        };
        if !ge.applies_to(li) {
            return false;
        }
        let bad = self.links[li].ge_bad;
        let flip = if bad {
            ge.p_bad_to_good
        } else {
            ge.p_good_to_bad
        };
        let bad = bad ^ (self.rng.random::<f64>() < flip);
        let p = if bad { ge.loss_bad } else { ge.loss_good };
        self.links[li].ge_bad = bad;
        self.rng.random::<f64>() < p
    }

    /// One heartbeat of `node` to each neighbour; schedules the next one.
    fn heartbeat(&mut self, node: NodeId) {
        let Some(hb) = self.cfg.heartbeat else { return };
        let (n, now) = (self.n, self.now);
        for to in 0..n {
            let li = self.link_of[node as usize * n + to];
            if li == NO_LINK || self.in_outage(li as usize, now) {
                continue;
            }
            let l = &self.links[li as usize];
            if !l.up || l.rate_bps <= 0.0 {
                continue;
            }
            let (loss, arrive) = (l.loss + self.cfg.extra_loss, now + l.latency_ns);
            if loss > 0.0 && self.rng.random::<f64>() < loss {
                continue;
            }
            let h = &mut self.heard_ns[node as usize];
            *h = (*h).max(arrive);
        }
        self.push(now + hb.interval_ns.max(1), EventKind::Heartbeat { node });
    }

    /// When `node`'s latest heartbeat reached a neighbour (0 = never; heartbeats off).
    pub fn last_heard(&self, node: NodeId) -> Nanos {
        self.heard_ns[node as usize]
    }

    /// Like [`Simulation::run_round`], but with [`EmuConfig::heartbeat`] set also fails —
    /// with [`EmuError::NodeDead`] naming the node — as soon as some node has not been heard
    /// from for the heartbeat timeout, so survivors never wait for a crashed peer.
    pub fn run_round_watching(
        &mut self,
        round: u32,
        max_virtual_ns: Nanos,
    ) -> Result<(), EmuError> {
        let Some(hb) = self.cfg.heartbeat else {
            return self.run_round(round, max_virtual_ns);
        };
        let deadline = self.now.saturating_add(max_virtual_ns);
        loop {
            if self
                .rounds
                .get(round as usize)
                .is_some_and(|r| !r.is_empty() && r.iter().all(|x| x.completed_at > 0))
            {
                return Ok(());
            }
            let now = self.now;
            if let Some(v) = (0..self.n).find(|&v| now > self.heard_ns[v] + hb.timeout_ns) {
                let s = |t: Nanos| t as f64 / NANOS_PER_SEC as f64;
                return Err(EmuError::NodeDead {
                    round,
                    node: v as NodeId,
                    last_heard_s: s(self.heard_ns[v]),
                    timeout_s: s(hb.timeout_ns),
                    at_s: s(now),
                });
            }
            let Some(Reverse((at, _, _))) = self.heap.peek() else {
                return Err(self.stuck(round, "no events left (deadlock)"));
            };
            if *at > deadline {
                return Err(self.stuck(round, "virtual-time limit reached"));
            }
            self.step()?;
        }
    }

    /// Adds a link outage (e.g. relative to the current time, between rounds).
    pub fn add_outage(&mut self, outage: LinkOutage) {
        self.cfg.outages.push(outage);
    }

    /// Records up to `max_packets` delivered datagrams from now on (for replay tests).
    pub fn set_capture(&mut self, max_packets: usize) {
        self.capture = Some((max_packets, Vec::new()));
    }

    /// The datagrams recorded since [`Simulation::set_capture`] (`(receiving node, bytes)`),
    /// stopping the capture.
    pub fn take_capture(&mut self) -> Vec<Captured> {
        self.capture.take().map(|(_, c)| c).unwrap_or_default()
    }

    fn deliver_later(&mut self, at: Nanos, to: NodeId, slot: u32, len: usize) {
        if self.cfg.corrupt_prob > 0.0 && self.rng.random::<f64>() < self.cfg.corrupt_prob {
            let i = self.rng.random_range(0..len);
            self.pool[slot as usize][i] ^= 1 << self.rng.random_range(0..8);
        }
        self.push(
            at,
            EventKind::Deliver {
                node: to,
                slot,
                len: len as u32,
            },
        );
    }
}
