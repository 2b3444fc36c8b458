//! One `netstorm-dp` poll-mode worker: an [`Engine`] for one contiguous element range of the
//! node's buffer, its own port — a UDP socket (port + worker index) or, for backend "dpdk",
//! its queue pair of the node's DPDK port ([`WorkerPort`]) — busy-polling on a pinned core.
//!
//! Workers share no mutable state: each owns its engine, port and buffer; the dp's main
//! thread hands them policies over a channel (checked once per loop iteration, a couple of
//! atomic loads when empty) and they report installs, telemetry and counters back over
//! another. The node file ([`crate::nodefile`]) is read with one atomic load per iteration
//! while idle. One clock read per iteration, none per packet; buffers are allocated once.
//!
//! A round starts only when the trainer asked for it **and** it lies below the cp's start
//! barrier (the node agent's undecided activation round, or a committed one whose policy is
//! not installed yet), checked with the store-then-recheck handshake of [`crate::nodefile`].
//! No cp, no barrier: a dp whose cp is gone keeps running its committed policy.
//!
//! Telemetry: every worker samples its engine's path telemetry every
//! [`Worker::sample_every`] while a round runs (not per packet) and reports, per outgoing link,
//! the largest link-rate estimate of the interval (see [`crate::proto`] for the estimate).

use crate::nodefile::NodeFile;
use crate::proto::LinkEstimate;
use netstorm_dataplane::engine::{Counters, Engine, EngineEvent};
use netstorm_dataplane::policy::Policy;
#[cfg(feature = "dpdk")]
use netstorm_dataplane::port::dpdk::DpdkPort;
use netstorm_dataplane::port::udp::UdpPort;
use netstorm_dataplane::port::{PacketBuf, Port};
use netstorm_dataplane::{Nanos, NodeId};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
}

impl WorkerPort {
    fn port(&mut self) -> &mut dyn Port {
        match self {
            WorkerPort::Udp(p) => p.as_mut(),
            #[cfg(feature = "dpdk")]
            WorkerPort::Dpdk(p) => p.as_mut(),
        }
    }

    fn max_datagram_len(&self) -> usize {
        match self {
            WorkerPort::Udp(p) => p.max_datagram_len(),
            #[cfg(feature = "dpdk")]
            WorkerPort::Dpdk(p) => p.max_datagram_len(),
        }
    }

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
}

impl LinkSampler {
    /// One poll. A link is backlogged while some path leaving over it has a fresh rate
    /// sample that is not application-limited; over every stretch of at least `SPAN_NS` in
    /// which it stays backlogged, the bytes delivered by all paths leaving over it give the
    /// link's rate (capped at the policy's rate: senders never pace faster). That rate is
    /// the link's capacity only if a queue stood on the link meanwhile (a direct path's
    /// sample was `saturated`: its one-way delay rose); otherwise it measured the senders'
    /// pace and is only a lower bound. The best of each kind in a report interval is kept.
    fn sample(&mut self, engine: &Engine, policies: &[Arc<Policy>], me: NodeId, now: Nanos) {
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
    /// Runs until `stop` is set. Errors are reported as [`WorkerEvent::Fatal`].
    pub fn run(mut self) {
        if let Err(error) = self.run_inner() {
            let _ = self.events.send(WorkerEvent::Fatal {
                worker: self.index,
                error,
            });
        }
    }

    fn run_inner(&mut self) -> Result<(), String> {
        let start = self.clock_base;
        let clock = || start.elapsed().as_nanos() as Nanos + 1;
        let cap = self
            .port
            .max_datagram_len()
            .max(self.engine.config().max_datagram_len());
        let mut rx = PacketBuf::batch(self.batch, cap);
        let mut tx = PacketBuf::batch(self.batch, cap);
        let node = self.engine.config().node;
        let w = self.index;
        // Round + 1 of the round running here (0 = none).
        let mut running: u64 = 0;
        let mut done = self.node_file.done(w);
        let mut next_report = Instant::now() + self.report_every;
        let mut next_sample = Instant::now();
        let mut sampler = LinkSampler::default();
        // Policies handed to the engine (the sampler needs the active one's routes).
        let mut known: Vec<Arc<Policy>> = Vec::new();
        // First round any installed policy covers (no start is announced before it).
        let mut first_covered: Option<u32> = None;
        // The request last reported as covered by no policy (said once, not per poll).
        let mut told_uncovered: u64 = 0;
        let mut iterations: u64 = 0;
        while !self.stop.load(Ordering::Relaxed) {
            iterations += 1;
            // The clock is read after the receive: a datagram that arrived while this thread
            // was descheduled between the two would otherwise get an arrival time before it
            // was sent, and a too-small one-way delay or RTT sample becomes the path's
            // baseline, against which every later sample looks like a queue.
            let k = self
                .port
                .port()
                .recv_batch(&mut rx)
                .map_err(|e| e.to_string())?;
            let now = clock();
            // Policies from the main thread.
            while let Ok((policy, at)) = self.policies.try_recv() {
                let epoch = policy.epoch;
                let ev = match self.engine.install_policy((*policy).clone(), at) {
                    Ok(()) => {
                        known.retain(|p| p.epoch + 4 > epoch);
                        known.push(policy);
                        first_covered = Some(first_covered.map_or(at, |f| f.min(at)));
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
            // A new round asked for by the trainer and below the cp's start barrier.
            if running == 0 {
                let req = self.node_file.request();
                let covered = first_covered.is_some_and(|f| u64::from(f) < req);
                if let Some(f) = first_covered.filter(|_| req > done && !covered) {
                    if told_uncovered != req {
                        // Waits for a policy that covers it; said so that a hang is explained.
                        told_uncovered = req;
                        eprintln!("netstorm-dp: worker {w}: round {} requested, but the earliest installed policy activates at round {f}; waiting for one that covers it", req - 1);
                    }
                }
                if req > done && covered && req - 1 < self.node_file.barrier() {
                    let round = (req - 1) as u32;
                    // The start gate: announce, then re-check the barrier (see nodefile).
                    let before = self.node_file.started(w);
                    self.node_file.set_started(w, req);
                    if req > self.node_file.barrier() {
                        self.node_file.set_started(w, before);
                    } else {
                        let buf = self.engine.buffer_mut();
                        self.node_file.read_buffer(self.range.clone(), buf);
                        match self.engine.start_round(now, round) {
                            Ok(()) => {
                                running = req;
                                let epoch = self.engine.epoch().unwrap_or(0);
                                let _ = self.events.send(WorkerEvent::Started {
                                    worker: w,
                                    round,
                                    epoch,
                                });
                            }
                            // No policy for this round after all: try again next iteration.
                            Err(netstorm_dataplane::engine::EngineError::NoPolicy(_)) => {
                                self.node_file.set_started(w, before);
                            }
                            Err(e) => return Err(format!("worker {w}: round {round}: {e}")),
                        }
                    }
                }
            }
            for b in &rx[..k] {
                self.engine.handle_packet(now, b.bytes());
            }
            if self.engine.poll_timeout().is_some_and(|t| t <= now) {
                self.engine.handle_timeout(now);
            }
            let mut m = 0;
            while m < tx.len() {
                let Some(t) = self.engine.poll_transmit(now, &mut tx[m].data) else {
                    break;
                };
                tx[m].len = t.len;
                tx[m].peer = t.next_hop;
                m += 1;
            }
            if m > 0 {
                // Refused datagrams are recovered by the engine's loss recovery.
                self.port
                    .port()
                    .send_batch(&tx[..m])
                    .map_err(|e| e.to_string())?;
            }
            while let Some(ev) = self.engine.poll_event() {
                if let EngineEvent::RoundComplete { round, .. } = ev {
                    if running == u64::from(round) + 1 {
                        sampler.sample(&self.engine, &known, node, now);
                        self.node_file
                            .write_buffer(self.range.start, self.engine.buffer());
                        done = running;
                        running = 0;
                        self.node_file.set_done(w, done);
                    }
                }
            }
            // Samples and reports: one clock comparison every 64 iterations or when idle.
            if iterations & 63 == 0 || (k == 0 && m == 0) {
                let inst = Instant::now();
                if running != 0 && inst >= next_sample {
                    next_sample = inst + self.sample_every;
                    sampler.sample(&self.engine, &known, node, clock());
                }
                if inst >= next_report {
                    next_report = inst + self.report_every;
                    self.report(&mut sampler, node, now, running.max(done));
                }
            }
            if k == 0 && m == 0 {
                match self.idle_backoff {
                    Some(d) => std::thread::sleep(d),
                    None => std::hint::spin_loop(),
                }
            }
        }
        Ok(())
    }

    /// Sends counters and the link estimates of the interval.
    fn report(&self, sampler: &mut LinkSampler, node: NodeId, now: Nanos, round_plus_one: u64) {
        let _ = self.events.send(WorkerEvent::Counters {
            worker: self.index,
            engine: Box::new(*self.engine.counters()),
            port: Box::new(self.port.counters()),
        });
        let links = sampler.take(node, now, round_plus_one.saturating_sub(1));
        if !links.is_empty() {
            let _ = self.events.send(WorkerEvent::Links {
                worker: self.index,
                links,
            });
        }
    }
}
