//! One `netstorm-dp` poll-mode worker: an [`Engine`] for one contiguous element range of the
//! node's buffer, its own port — a UDP socket (port + worker index) or, for backend "dpdk",
//! its queue pair of the node's DPDK port ([`WorkerPort`]) — busy-polling on a pinned core.
//!
//! The worker runs the data plane's one real-time loop ([`run_loop`]: receive, one clock
//! read after the receive, engine, in-place send with `recv_each`/`send_each`, zero-copy on
//! DPDK) with its own hook (`WorkerHook`) for what a dp adds per iteration: policy intake,
//! the round gate, telemetry sampling, counters. `netstorm bench dataplane` runs this same
//! worker as its aggregator, so the loop it measures is the one netstorm-dp ships.
//!
//! Workers share no mutable state: each owns its engine, port and buffer; the dp's main
//! thread hands them policies over a channel (checked once per loop iteration, a couple of
//! atomic loads when empty) and they report installs, telemetry and counters back over
//! another. The node file ([`crate::nodefile`]) is read with one atomic load per iteration
//! while idle. One clock read per iteration, none per packet; buffers are allocated once.
//!
//! A round starts only when the trainer asked for it **and** it lies below the cp's start
//! barrier (the node agent's undecided activation round, or a committed one whose policy is
//! not installed yet), checked with the store-then-recheck handshake of [`crate::nodefile`],
//! **and**, at or past a rejoin's first round, once the trainer acknowledged the join
//! (`NodeFile::join_allows`, read after the barrier). A fresh dp learns its first round from
//! its trainer's request alone: a rejoined node's session requests the join round first
//! (`first_round`), the one its only policy activates at.
//! No cp, no barrier: a dp whose cp is gone keeps running its committed policy.
//!
//! Failed rounds (issue 19): with release gossip on (real hosts), a round is handed to the
//! trainer at its release, not at its completion. While a round is in flight here the worker
//! also reads the node file's `freeze` and `decided` words (one atomic load each per
//! iteration; idle, only `freeze`, for a round decided failed before it started here): it
//! answers a freeze with the round's status, releases a frozen round the
//! coordinator decided succeeded, and abandons (`Engine::abort_round`) one it decided failed,
//! storing `aborted[w]` only after the engine let go of the buffer. Each report also tells
//! the main thread how long ago every peer was last heard (`WorkerEvent::Peers`).
//!
//! Telemetry: every worker samples its engine's path telemetry every
//! [`Worker::sample_every`] while a round runs (not per packet) and reports, per outgoing link,
//! the largest link-rate estimate of the interval (see [`crate::proto`] for the estimate).

use crate::nodefile::{FrozenStatus, NodeFile};
use crate::proto::LinkEstimate;
use netstorm_dataplane::engine::{Counters, Engine, EngineError, EngineEvent, RoundStatus};
use netstorm_dataplane::policy::Policy;
#[cfg(feature = "dpdk")]
use netstorm_dataplane::port::dpdk::DpdkPort;
use netstorm_dataplane::port::udp::UdpPort;
use netstorm_dataplane::port::{
    run_loop, Flow, LoopHook, LoopStats, MonotonicClock, PacketBuf, Port, PortError, RxSink, TxFill,
};
use netstorm_dataplane::{Nanos, NodeId};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Datagrams per rx/tx batch of netstorm-dp's workers (the DPDK port's largest burst; on
/// the 2-core VM `bench dataplane` measured ~10 % more aggregator capacity than with 32).
pub const DEFAULT_BATCH: usize = 64;
/// How often netstorm-dp's workers report counters and link estimates.
pub const REPORT_EVERY: Duration = Duration::from_millis(100);
/// How often netstorm-dp's workers sample path telemetry while a round runs.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(2);

/// A path's rate sample counts as "backlogged now" for this long after it was taken.
const FRESH_NS: Nanos = 10_000_000;
/// A link estimate covers at least this long a stretch in which the link was backlogged
/// (longer than one RTT so a token bucket's burst does not dominate it).
const SPAN_NS: Nanos = 20_000_000;

/// What a worker tells the dp's main thread.
#[derive(Debug)]
pub enum WorkerEvent {
    Installed {
        worker: usize,
        epoch: u32,
    },
    InstallFailed {
        worker: usize,
        epoch: u32,
        error: String,
    },
    Started {
        worker: usize,
        round: u32,
        epoch: u32,
    },
    /// Link-rate estimates of this worker's outgoing links over the last interval.
    Links {
        worker: usize,
        links: Vec<LinkEstimate>,
    },
    Counters {
        worker: usize,
        engine: Box<Counters>,
        port: Box<PortCounters>,
    },
    /// The worker completed `round`, `duration_ns` after it started it (engine clock).
    Completed {
        worker: usize,
        round: u32,
        duration_ns: u64,
    },
    /// Per node id: how long before `at` (the dp's clock) this worker last heard from it
    /// (`None`: never; this node's own entry is `None`).
    Peers {
        worker: usize,
        at: Nanos,
        silence_ns: Vec<Option<Nanos>>,
    },
    Fatal {
        worker: usize,
        error: String,
    },
}

/// A worker's network port.
#[derive(Debug)]
pub enum WorkerPort {
    /// Kernel UDP: the worker's own socket.
    Udp(Box<UdpPort>),
    /// Queue pair w of the node's DPDK ethdev (backend "dpdk"), on UDP port + w.
    #[cfg(feature = "dpdk")]
    Dpdk(Box<DpdkPort>),
}

/// The port counters a dp reports, whatever the backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortCounters {
    /// Datagrams handed to the engine.
    pub rx: u64,
    /// Datagrams the network took.
    pub tx: u64,
    /// Datagrams dropped because their source is not a configured peer.
    pub rx_unknown_peer: u64,
    /// DPDK: frames dropped before reaching the engine (not IPv4/UDP, malformed, fragments,
    /// bad checksums, not addressed to this node, too long). UDP: truncated datagrams.
    pub rx_dropped: u64,
    /// Offers the network refused for now (full socket buffer or tx queue, empty mbuf pool);
    /// the engine's loss recovery sends them again.
    pub tx_would_block: u64,
    /// UDP: datagrams handed over without a kernel receive stamp (their batch's clock read
    /// instead): non-zero means delay and rate estimates are degraded. DPDK: 0 (the loop's
    /// clock read follows the rx burst at once).
    pub rx_unstamped: u64,
}

/// The backend's own calls: its `recv_each`/`send_each` (in place from and into mbufs on
/// DPDK), not the trait's copying defaults.
impl Port for WorkerPort {
    fn max_datagram_len(&self) -> usize {
        match self {
            WorkerPort::Udp(p) => p.max_datagram_len(),
            #[cfg(feature = "dpdk")]
            WorkerPort::Dpdk(p) => p.max_datagram_len(),
        }
    }

    fn recv_batch(&mut self, bufs: &mut [PacketBuf]) -> Result<usize, PortError> {
        match self {
            WorkerPort::Udp(p) => p.recv_batch(bufs),
            #[cfg(feature = "dpdk")]
            WorkerPort::Dpdk(p) => p.recv_batch(bufs),
        }
    }

    fn send_batch(&mut self, bufs: &[PacketBuf]) -> Result<usize, PortError> {
        match self {
            WorkerPort::Udp(p) => p.send_batch(bufs),
            #[cfg(feature = "dpdk")]
            WorkerPort::Dpdk(p) => p.send_batch(bufs),
        }
    }

    #[inline]
    fn recv_each(
        &mut self,
        scratch: &mut [PacketBuf],
        sink: &mut dyn RxSink,
    ) -> Result<usize, PortError> {
        match self {
            WorkerPort::Udp(p) => p.recv_each(scratch, sink),
            #[cfg(feature = "dpdk")]
            WorkerPort::Dpdk(p) => p.recv_each(scratch, sink),
        }
    }

    #[inline]
    fn send_each(
        &mut self,
        scratch: &mut [PacketBuf],
        fill: &mut TxFill<'_>,
    ) -> Result<(usize, usize), PortError> {
        match self {
            WorkerPort::Udp(p) => p.send_each(scratch, fill),
            #[cfg(feature = "dpdk")]
            WorkerPort::Dpdk(p) => p.send_each(scratch, fill),
        }
    }
}

impl WorkerPort {
    /// The port's counters so far.
    pub fn counters(&self) -> PortCounters {
        match self {
            WorkerPort::Udp(p) => {
                let c = p.counters();
                PortCounters {
                    rx: c.rx,
                    tx: c.tx,
                    rx_unknown_peer: c.rx_unknown_peer,
                    rx_dropped: c.rx_truncated,
                    tx_would_block: c.tx_would_block,
                    rx_unstamped: c.rx_unstamped,
                }
            }
            #[cfg(feature = "dpdk")]
            WorkerPort::Dpdk(p) => {
                let s = &p.stats;
                PortCounters {
                    rx: s.rx_datagrams,
                    tx: s.tx_frames,
                    rx_unknown_peer: s.rx_unknown_neighbour,
                    rx_dropped: s.rx_not_udp
                        + s.rx_malformed
                        + s.rx_fragment
                        + s.rx_bad_checksum
                        + s.rx_not_for_us
                        + s.rx_too_long,
                    tx_would_block: s.tx_refused + s.tx_pool_empty,
                    rx_unstamped: 0,
                }
            }
        }
    }
}

/// Everything one worker needs.
#[derive(Debug)]
pub struct Worker {
    pub index: usize,
    pub range: Range<usize>,
    pub engine: Engine,
    pub port: WorkerPort,
    pub node_file: Arc<NodeFile>,
    pub policies: Receiver<(Arc<Policy>, u32)>,
    pub events: Sender<WorkerEvent>,
    pub stop: Arc<AtomicBool>,
    pub idle_backoff: Option<Duration>,
    /// The dp's clock origin, shared by its workers (telemetry timestamps are comparable).
    pub clock_base: Instant,
    /// Telemetry and counters are reported this often.
    pub report_every: Duration,
    /// Path telemetry is sampled this often while a round runs.
    pub sample_every: Duration,
    pub batch: usize,
    /// What the worker keeps from one [`Worker::run`] to the next (`WorkerState::default()`
    /// for a new worker).
    pub state: WorkerState,
}

/// What a worker keeps across runs: the policies it installed.
#[derive(Debug, Default)]
pub struct WorkerState {
    /// Policies handed to the engine (the sampler needs the active one's routes).
    known: Vec<Arc<Policy>>,
    /// First round any installed policy covers (no start is announced before it).
    first_covered: Option<u32>,
}

/// Why a worker stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("{0}")]
    Port(#[from] PortError),
    #[error("worker {worker}: round {round}: {source}")]
    Round {
        worker: usize,
        round: u32,
        source: EngineError,
    },
}

/// A round's moment in a [`Worker::run`]: the loop's time and counters then.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoundMark {
    pub round: u32,
    /// Loop time (ns since [`Worker::clock_base`]).
    pub at: Nanos,
    pub stats: LoopStats,
}

/// What one [`Worker::run`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerRun {
    /// The loop's counters over the whole run.
    pub stats: LoopStats,
    /// The first round started in this run: its start (the iteration's clock read).
    pub first_start: Option<RoundMark>,
    /// The newest round completed in this run, taken at the next iteration's clock read (so
    /// the completing iteration's work is in it), or at the last one's if the run stopped in
    /// the completing iteration.
    pub last_done: Option<RoundMark>,
}

/// Per outgoing link: the best rates since the last report (of stretches in which a queue
/// stood on the link, and of the others: lower bounds), and the backlogged stretch being
/// measured.
#[derive(Debug, Clone, Copy, Default)]
struct LinkAcc {
    bps: f64,
    floor_bps: f64,
    rtt_ns: u64,
    /// The current backlogged stretch.
    since: Option<Stretch>,
}

#[derive(Debug, Clone, Copy)]
struct Stretch {
    start: Nanos,
    bytes_at_start: u64,
    /// Some poll saw a queue on the link.
    saturated: bool,
}

impl Stretch {
    fn new(now: Nanos, bytes: u64) -> Self {
        Self {
            start: now,
            bytes_at_start: bytes,
            saturated: false,
        }
    }
}

/// One poll of a link: delivered bytes so far over every path leaving over it, whether some
/// path is backlogged, whether a direct path saw a queue on it, a direct path's RTT.
#[derive(Debug, Clone, Copy, Default)]
struct LinkPoll {
    bytes: u64,
    backlogged: bool,
    saturated: bool,
    rtt_ns: u64,
}

/// The worker's view of its links.
#[derive(Debug, Default)]
struct LinkSampler {
    epoch: Option<u32>,
    /// Per neighbour: the policy's rate of the link to it (infinity when it names none).
    link_bps: Vec<f64>,
    poll: Vec<LinkPoll>,
    acc: Vec<LinkAcc>,
    /// The loop's `behind_iterations` at the last poll.
    behind_seen: u64,
}

impl LinkSampler {
    /// One poll. A link is backlogged while some path leaving over it has a fresh rate
    /// sample that is not application-limited; over every stretch of at least `SPAN_NS` in
    /// which it stays backlogged, the bytes delivered by all paths leaving over it give the
    /// link's rate (capped at the policy's rate: senders never pace faster). That rate is
    /// the link's capacity only if a queue stood on the link meanwhile (a direct path's
    /// sample was `saturated`: its one-way delay rose); otherwise it measured the senders'
    /// pace and is only a lower bound. The best of each kind in a report interval is kept.
    /// A stretch in which the loop fell behind (`behind_iterations`, the loop's count, moved
    /// since the last poll) measured the CPU, not the link: it is dropped, never reported,
    /// so a busy core can never lower an estimate.
    fn sample(
        &mut self,
        engine: &Engine,
        policies: &[Arc<Policy>],
        me: NodeId,
        now: Nanos,
        behind_iterations: u64,
    ) {
        let Some(epoch) = engine.epoch() else { return };
        if self.epoch != Some(epoch) {
            let Some(p) = policies.iter().find(|p| p.epoch == epoch) else {
                return;
            };
            self.epoch = Some(epoch);
            let n = p.node_count as usize;
            self.link_bps = (0..n)
                .map(|to| p.link_rate(me, to as NodeId).unwrap_or(f64::INFINITY))
                .collect();
            self.poll = vec![LinkPoll::default(); n];
            self.acc = vec![LinkAcc::default(); n];
        }
        if behind_iterations != self.behind_seen {
            self.behind_seen = behind_iterations;
            for a in &mut self.acc {
                a.since = None;
            }
            return;
        }
        self.poll.fill(LinkPoll::default());
        for t in engine.telemetry() {
            let Some(&to) = t.hops.get(1) else { continue };
            let Some(p) = self.poll.get_mut(to as usize) else {
                continue;
            };
            let direct = t.hops.len() == 2;
            p.bytes += t.delivered_bytes;
            if let Some(rs) = t.rate_sample {
                if !rs.app_limited && rs.at + FRESH_NS >= now {
                    p.backlogged = true;
                    // A relayed path's queue may stand on a later hop.
                    p.saturated |= direct && rs.saturated;
                }
            }
            if direct {
                p.rtt_ns = t.srtt_ns.unwrap_or(0);
            }
        }
        for (to, (p, a)) in self.poll.iter().zip(&mut self.acc).enumerate() {
            if !p.backlogged {
                a.since = None;
                continue;
            }
            let s = a.since.get_or_insert(Stretch::new(now, p.bytes));
            s.saturated |= p.saturated;
            if now >= s.start + SPAN_NS && p.bytes >= s.bytes_at_start {
                let bps = (p.bytes - s.bytes_at_start) as f64 * 8e9 / (now - s.start) as f64;
                let est = bps.min(self.link_bps[to]);
                a.rtt_ns = p.rtt_ns;
                if s.saturated {
                    a.bps = a.bps.max(est);
                } else {
                    a.floor_bps = a.floor_bps.max(est);
                }
                *s = Stretch::new(now, p.bytes);
            }
        }
    }

    fn take(&mut self, me: NodeId, at: Nanos, round: u64) -> Vec<LinkEstimate> {
        let epoch = self.epoch.unwrap_or(0);
        self.acc
            .iter_mut()
            .enumerate()
            .filter(|(_, a)| a.bps > 0.0 || a.floor_bps > 0.0)
            .map(|(to, a)| {
                let e = LinkEstimate {
                    from: me,
                    to: to as NodeId,
                    bps: if a.bps > 0.0 { a.bps } else { a.floor_bps },
                    rtt_ns: a.rtt_ns,
                    at,
                    epoch,
                    round,
                    lower_bound: a.bps == 0.0,
                };
                a.bps = 0.0;
                a.floor_bps = 0.0;
                e
            })
            .collect()
    }
}

impl Worker {
    /// Runs the worker's loop until `stop` is set. An error is also reported as
    /// [`WorkerEvent::Fatal`]. A worker may run again after a stop (the bench runs its
    /// phases so); rounds and policies carry over.
    pub fn run(&mut self) -> Result<WorkerRun, WorkerError> {
        let result = self.run_loop();
        if let Err(error) = &result {
            let _ = self.events.send(WorkerEvent::Fatal {
                worker: self.index,
                error: error.to_string(),
            });
        }
        result
    }

    fn run_loop(&mut self) -> Result<WorkerRun, WorkerError> {
        let node = self.engine.config().node;
        let mut hook = WorkerHook {
            w: self.index,
            node,
            range: self.range.clone(),
            node_file: &self.node_file,
            policies: &self.policies,
            events: &self.events,
            stop: &self.stop,
            report_every: self.report_every.as_nanos() as Nanos,
            sample_every: self.sample_every.as_nanos() as Nanos,
            state: &mut self.state,
            running: 0,
            running_since: 0,
            done: self.node_file.done(self.index),
            aborted: self.node_file.aborted(self.index),
            answered: None,
            next_report: None,
            next_sample: 0,
            sampler: LinkSampler::default(),
            behind_iterations: 0,
            told_uncovered: 0,
            members_epoch: None,
            run: WorkerRun::default(),
            completed: None,
        };
        let stats = run_loop(
            &mut self.engine,
            &mut self.port,
            &mut hook,
            self.batch,
            self.idle_backoff,
            MonotonicClock::new(self.clock_base),
        )?;
        hook.run.stats = stats;
        Ok(hook.run)
    }
}

/// What netstorm-dp's worker adds to each iteration of the loop: policy intake and the
/// round gate (before the engine sees the iteration's datagrams), round completion into the
/// node file, telemetry sampling and reports.
#[derive(Debug)]
struct WorkerHook<'a> {
    w: usize,
    node: NodeId,
    range: Range<usize>,
    node_file: &'a NodeFile,
    policies: &'a Receiver<(Arc<Policy>, u32)>,
    events: &'a Sender<WorkerEvent>,
    stop: &'a AtomicBool,
    report_every: Nanos,
    sample_every: Nanos,
    state: &'a mut WorkerState,
    /// Round + 1 of the round running here (0 = none).
    running: u64,
    /// When the running round started (engine clock), for its duration.
    running_since: Nanos,
    /// Round + 1 of the newest round completed here.
    done: u64,
    /// Round + 1 of the newest round abandoned here (a coordinator decided it failed).
    aborted: u64,
    /// The last answer to a freeze stored in the node file.
    answered: Option<(u64, FrozenStatus)>,
    next_report: Option<Nanos>,
    next_sample: Nanos,
    sampler: LinkSampler,
    /// The loop's `behind_iterations` as of this iteration's intake.
    behind_iterations: u64,
    /// The request last reported as covered by no policy (said once, not per poll).
    told_uncovered: u64,
    /// The epoch whose members the node file's `members` word holds (set by this worker).
    members_epoch: Option<u32>,
    run: WorkerRun,
    /// A round completed in this iteration (its mark is taken at the next clock read).
    completed: Option<u32>,
}

impl WorkerHook<'_> {
    /// Policies from the main thread.
    fn take_policies(&mut self, engine: &mut Engine) {
        let w = self.w;
        while let Ok((policy, at)) = self.policies.try_recv() {
            let epoch = policy.epoch;
            let ev = match engine.install_policy((*policy).clone(), at) {
                Ok(()) => {
                    let state = &mut *self.state;
                    state.known.retain(|p| p.epoch + 4 > epoch);
                    state.known.push(policy);
                    state.first_covered = Some(state.first_covered.map_or(at, |f| f.min(at)));
                    WorkerEvent::Installed { worker: w, epoch }
                }
                Err(e) => WorkerEvent::InstallFailed {
                    worker: w,
                    epoch,
                    error: e.to_string(),
                },
            };
            let _ = self.events.send(ev);
        }
    }

    /// A new round asked for by the trainer and below the cp's start barrier.
    fn gate_round(
        &mut self,
        engine: &mut Engine,
        now: Nanos,
        stats: &LoopStats,
    ) -> Result<(), WorkerError> {
        let w = self.w;
        let nf = self.node_file;
        let req = nf.request();
        let first_covered = self.state.first_covered;
        let covered = first_covered.is_some_and(|f| u64::from(f) < req);
        if let Some(f) = first_covered.filter(|_| req > self.done && !covered) {
            if self.told_uncovered != req {
                // Waits for a policy that covers it; said so that a hang is explained.
                self.told_uncovered = req;
                eprintln!("netstorm-dp: worker {w}: round {} requested, but the earliest installed policy activates at round {f}; waiting for one that covers it", req - 1);
            }
        }
        let over = self.done.max(self.aborted);
        if !(req > over && covered && req - 1 < nf.barrier()) {
            return Ok(());
        }
        if !nf.join_allows(req - 1) {
            // Nodes rejoin at or before this round and the trainer has not acknowledged it
            // (read after the barrier: the cp stores the join before lifting it). Its buffer
            // holds a contribution made without knowing; the trainer takes the request back.
            return Ok(());
        }
        let round = (req - 1) as u32;
        if nf.freeze() == Some(req - 1) {
            // Frozen before it started here (answered "incomplete"): it must not start and
            // release on its own; the coordinator's decision abandons or releases it.
            return Ok(());
        }
        // The start gate: announce, then re-check the barrier (see nodefile).
        let before = nf.started(w);
        nf.set_started(w, req);
        if req > nf.barrier() {
            nf.set_started(w, before);
            return Ok(());
        }
        nf.read_buffer(self.range.clone(), engine.buffer_mut());
        match engine.start_round(now, round) {
            Ok(()) => {
                self.running = req;
                self.running_since = now;
                self.run.first_start.get_or_insert(RoundMark {
                    round,
                    at: now,
                    stats: *stats,
                });
                let epoch = engine.epoch().unwrap_or(0);
                if self.members_epoch != Some(epoch) {
                    // Before the round can complete, so a trainer reading who contributed
                    // after it sees this round's members (every worker stores the same).
                    self.members_epoch = Some(epoch);
                    let n = engine.config().node_count;
                    nf.set_members((0..n).filter(|&v| engine.is_member(v)).collect());
                }
                let _ = self.events.send(WorkerEvent::Started {
                    worker: w,
                    round,
                    epoch,
                });
                Ok(())
            }
            // No policy for this round after all, or none newer than a failed round's: try
            // again next iteration.
            Err(
                EngineError::NoPolicy(_)
                | EngineError::AwaitingEpoch { .. }
                | EngineError::NotAMember { .. },
            ) => {
                nf.set_started(w, before);
                Ok(())
            }
            Err(source) => Err(WorkerError::Round {
                worker: w,
                round,
                source,
            }),
        }
    }

    /// A coordinator's freeze and decision about the round requested here (issue 19).
    fn resolve(&mut self, engine: &mut Engine, now: Nanos) -> Result<(), WorkerError> {
        let nf = self.node_file;
        let w = self.w;
        // The round requested and not over here: in flight, or not started yet.
        let req = if self.running != 0 {
            self.running
        } else {
            let req = nf.request();
            if req <= self.done.max(self.aborted) {
                return Ok(());
            }
            req
        };
        let round = req - 1;
        if nf.freeze() == Some(round) {
            let status = match engine.freeze_round(round as u32) {
                Some(RoundStatus::Released) => FrozenStatus::Released,
                Some(RoundStatus::Completed) => FrozenStatus::Completed,
                // Running, abandoned, or not started here (`None`).
                _ => FrozenStatus::Incomplete,
            };
            if self.answered != Some((round, status)) {
                self.answered = Some((round, status));
                nf.set_frozen_status(w, round, status);
            }
        }
        let Some(decision) = nf.decision().filter(|d| d.round == round) else {
            return Ok(());
        };
        if decision.failed.is_none() {
            // Succeeded: a completed round is released (handed over in `event`).
            engine.release_frozen(now, round as u32);
            return Ok(());
        }
        if engine.round_status(round as u32) == Some(RoundStatus::Released) {
            // Handed over already (the rule never decides so; the trainer has it).
            return Ok(());
        }
        engine
            .abort_round(round as u32)
            .map_err(|source| WorkerError::Round {
                worker: w,
                round: round as u32,
                source,
            })?;
        // The engine no longer touches the buffer: the trainer may have it back.
        self.running = 0;
        self.aborted = req;
        nf.set_aborted(w, req);
        Ok(())
    }

    /// Sends counters and the link estimates of the interval.
    fn report(&mut self, engine: &Engine, port: &WorkerPort, now: Nanos) {
        let _ = self.events.send(WorkerEvent::Counters {
            worker: self.w,
            engine: Box::new(*engine.counters()),
            port: Box::new(port.counters()),
        });
        let silence_ns = engine
            .peer_last_heard()
            .iter()
            .map(|&t| (t != 0).then(|| now.saturating_sub(t)))
            .collect();
        let _ = self.events.send(WorkerEvent::Peers {
            worker: self.w,
            at: now,
            silence_ns,
        });
        let round_plus_one = self.running.max(self.done);
        let links = self
            .sampler
            .take(self.node, now, round_plus_one.saturating_sub(1));
        if !links.is_empty() {
            let _ = self.events.send(WorkerEvent::Links {
                worker: self.w,
                links,
            });
        }
    }
}

impl LoopHook<WorkerPort> for WorkerHook<'_> {
    type Error = WorkerError;

    fn intake(
        &mut self,
        engine: &mut Engine,
        now: Nanos,
        stats: &LoopStats,
    ) -> Result<(), WorkerError> {
        self.behind_iterations = stats.behind_iterations;
        if self.next_report.is_none() {
            self.next_report = Some(now + self.report_every);
            self.next_sample = now;
        }
        if let Some(round) = self.completed.take() {
            self.run.last_done = Some(RoundMark {
                round,
                at: now,
                stats: *stats,
            });
        }
        self.take_policies(engine);
        if self.running != 0 || self.node_file.freeze().is_some() {
            self.resolve(engine, now)?;
        }
        if self.running == 0 {
            self.gate_round(engine, now, stats)?;
        }
        Ok(())
    }

    fn event(
        &mut self,
        engine: &mut Engine,
        now: Nanos,
        event: EngineEvent,
    ) -> Result<(), WorkerError> {
        // The round is handed over at its release with release gossip, else at completion.
        let handed_over = match event {
            EngineEvent::RoundComplete { round, .. } if !engine.config().release_gossip => {
                Some(round)
            }
            EngineEvent::RoundReleased { round, .. } => Some(round),
            _ => None,
        };
        if let Some(round) = handed_over {
            if self.running == u64::from(round) + 1 {
                let known = &self.state.known;
                self.sampler
                    .sample(engine, known, self.node, now, self.behind_iterations);
                self.node_file
                    .write_buffer(self.range.start, engine.buffer());
                self.done = self.running;
                self.running = 0;
                self.node_file.set_done(self.w, self.done);
                self.completed = Some(round);
                let _ = self.events.send(WorkerEvent::Completed {
                    worker: self.w,
                    round,
                    duration_ns: now.saturating_sub(self.running_since),
                });
            }
        }
        Ok(())
    }

    fn end(
        &mut self,
        engine: &Engine,
        port: &WorkerPort,
        now: Nanos,
        stats: &LoopStats,
    ) -> Result<Flow, WorkerError> {
        // Samples and reports at the iteration's time: no clock read of their own.
        if self.running != 0 && now >= self.next_sample {
            self.next_sample = now + self.sample_every;
            self.behind_iterations = stats.behind_iterations;
            self.sampler.sample(
                engine,
                &self.state.known,
                self.node,
                now,
                self.behind_iterations,
            );
        }
        if self.next_report.is_some_and(|t| now >= t) {
            self.next_report = Some(now + self.report_every);
            self.report(engine, port, now);
        }
        if !self.stop.load(Ordering::Relaxed) {
            return Ok(Flow::Continue);
        }
        // No next clock read: a round completed in this iteration is marked now.
        if let Some(round) = self.completed.take() {
            self.run.last_done = Some(RoundMark {
                round,
                at: now,
                stats: *stats,
            });
        }
        Ok(Flow::Stop)
    }
}
