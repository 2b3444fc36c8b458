//! The poll-mode driver: runs one [`Engine`] on one [`Port`] in real time.
//!
//! One clock read per loop iteration (a batch of datagrams), none per packet; buffers are
//! allocated once. The engine stays sans-IO: the driver owns the clock and the port.

use super::{PacketBuf, Port, PortError};
use crate::engine::{Engine, EngineEvent};
use crate::Nanos;
use std::time::{Duration, Instant};

/// How the driver polls.
#[derive(Debug, Clone, PartialEq)]
pub struct DriverConfig {
    /// Datagrams per rx/tx batch.
    pub batch: usize,
    /// Sleep this long after an iteration that moved nothing (`None` = pure busy-poll).
    pub idle_backoff: Option<Duration>,
    /// Give up (with an error) after this long.
    pub max_duration: Duration,
    /// After the last round, keep answering (acknowledgements, retransmissions) this long so
    /// peers still finishing are not left without acks.
    pub linger: Duration,
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self {
            batch: 32,
            idle_backoff: None,
            max_duration: Duration::from_secs(600),
            linger: Duration::from_millis(200),
        }
    }
}

/// What a driver run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DriverReport {
    pub rounds_completed: u32,
    pub rx_datagrams: u64,
    pub tx_datagrams: u64,
    /// Datagrams the port refused (back-pressure); the engine's loss recovery resends them.
    pub tx_refused: u64,
    pub elapsed: Duration,
    /// Time spent in loop iterations that moved something (received or sent a datagram, or
    /// saw an engine event), up to the last round: the loop's work without its idle polls.
    /// `elapsed / busy` is how much faster this node could go if it were never starved.
    pub busy: Duration,
    /// Iterations counted in `busy`: `(rx + tx) / busy_iterations` is the mean batch, which
    /// says how far per-iteration costs were amortized.
    pub busy_iterations: u64,
    /// Per completed round: time from its start to the result being ready here.
    pub round_result_ns: Vec<Nanos>,
}

/// Runs rounds `first_round .. first_round + rounds` on `engine` over `port`. Before each
/// round, `fill(round, buffer)` writes this node's contribution; after each round,
/// `done(round, buffer)` may read the result.
pub fn run_engine<P: Port + ?Sized>(
    engine: &mut Engine,
    port: &mut P,
    cfg: &DriverConfig,
    first_round: u32,
    rounds: u32,
    mut fill: impl FnMut(u32, &mut [f32]),
    mut done: impl FnMut(u32, &[f32]),
) -> Result<DriverReport, PortError> {
    let mut lp = EngineLoop::start(engine, port, cfg, first_round, rounds, &mut fill)?;
    loop {
        // The one clock read of the iteration.
        let tick = Instant::now();
        match lp.step(engine, port, cfg, tick, &mut fill, &mut done)? {
            Step::Finished => return Ok(lp.report),
            Step::Busy => {}
            Step::Idle => idle(cfg),
        }
    }
}

/// Runs several engines, each on its own port, taking turns on the calling thread: one
/// iteration of each per sweep, one clock read per iteration. For load generators that
/// share a core: unlike one thread per engine, nobody waits for the scheduler or sleeps
/// while another engine has work. `fill(i, round, buffer)` and `done(i, round, buffer)` are
/// [`run_engine`]'s, for `nodes[i]`; every engine runs the same rounds; the reports come in
/// `nodes` order. A report's `busy` counts the whole sweeps in which its engine moved
/// something (the other engines' turns included), so it says little here.
pub fn run_engines<P: Port + ?Sized>(
    nodes: &mut [(&mut Engine, &mut P)],
    cfg: &DriverConfig,
    first_round: u32,
    rounds: u32,
    mut fill: impl FnMut(usize, u32, &mut [f32]),
    mut done: impl FnMut(usize, u32, &[f32]),
) -> Result<Vec<DriverReport>, PortError> {
    let mut loops = Vec::with_capacity(nodes.len());
    for (i, (engine, port)) in nodes.iter_mut().enumerate() {
        let mut fill_i = |r: u32, b: &mut [f32]| fill(i, r, b);
        loops.push(Some(EngineLoop::start(
            engine,
            *port,
            cfg,
            first_round,
            rounds,
            &mut fill_i,
        )?));
    }
    let mut reports = vec![DriverReport::default(); nodes.len()];
    let mut running = nodes.len();
    while running > 0 {
        let mut busy = false;
        for (i, ((engine, port), slot)) in nodes.iter_mut().zip(loops.iter_mut()).enumerate() {
            let Some(lp) = slot else { continue };
            let tick = Instant::now();
            let mut fill_i = |r: u32, b: &mut [f32]| fill(i, r, b);
            let mut done_i = |r: u32, b: &[f32]| done(i, r, b);
            match lp.step(engine, *port, cfg, tick, &mut fill_i, &mut done_i)? {
                Step::Finished => {
                    reports[i] = std::mem::take(&mut lp.report);
                    *slot = None;
                    running -= 1;
                }
                Step::Busy => busy = true,
                Step::Idle => {}
            }
        }
        if !busy {
            idle(cfg);
        }
    }
    Ok(reports)
}

fn idle(cfg: &DriverConfig) {
    match cfg.idle_backoff {
        Some(d) => std::thread::sleep(d),
        None => std::hint::spin_loop(),
    }
}

/// What one iteration of an [`EngineLoop`] did.
enum Step {
    /// Received or sent a datagram, or saw an engine event.
    Busy,
    Idle,
    /// The last round completed and the linger time is over.
    Finished,
}

/// The poll loop of one engine on one port, one iteration per [`EngineLoop::step`].
struct EngineLoop {
    start: Instant,
    rx: Vec<PacketBuf>,
    tx: Vec<PacketBuf>,
    report: DriverReport,
    round: u32,
    rounds: u32,
    finished_at: Option<Instant>,
    round_start: Nanos,
    /// Busy accounting: the time from one iteration's clock read to the next counts as busy
    /// when that iteration did work, so it costs no extra clock read.
    last_tick: Instant,
    last_was_busy: bool,
}

impl EngineLoop {
    /// Checks the port against the engine and starts the first round (none if `rounds` = 0).
    fn start<P: Port + ?Sized>(
        engine: &mut Engine,
        port: &mut P,
        cfg: &DriverConfig,
        first_round: u32,
        rounds: u32,
        fill: &mut dyn FnMut(u32, &mut [f32]),
    ) -> Result<Self, PortError> {
        let start = Instant::now();
        // Datagrams are written in place into buffers of the port's size (send_each).
        let cap = port.max_datagram_len();
        if cap < engine.config().max_datagram_len() {
            return Err(PortError::Other(format!(
                "the port carries datagrams of at most {cap} bytes but the engine sends up to {} (segment_elems too large for the port's MTU)",
                engine.config().max_datagram_len()
            )));
        }
        let mut lp = Self {
            start,
            rx: PacketBuf::batch(cfg.batch, cap),
            tx: PacketBuf::batch(cfg.batch, cap),
            report: DriverReport::default(),
            round: first_round,
            rounds,
            finished_at: None,
            round_start: 0,
            last_tick: start,
            last_was_busy: false,
        };
        if rounds == 0 {
            // Nothing to run: the first step reports it finished, without lingering.
            return Ok(lp);
        }
        lp.round_start = lp.nanos(Instant::now());
        fill(first_round, engine.buffer_mut());
        engine
            .start_round(lp.round_start, first_round)
            .map_err(|e| PortError::Other(e.to_string()))?;
        Ok(lp)
    }

    fn nanos(&self, t: Instant) -> Nanos {
        t.duration_since(self.start).as_nanos() as Nanos + 1
    }

    /// One iteration at `tick` (the clock read just before): receive, timers, send, events.
    fn step<P: Port + ?Sized>(
        &mut self,
        engine: &mut Engine,
        port: &mut P,
        cfg: &DriverConfig,
        tick: Instant,
        fill: &mut dyn FnMut(u32, &mut [f32]),
        done: &mut dyn FnMut(u32, &[f32]),
    ) -> Result<Step, PortError> {
        if self.rounds == 0 {
            return Ok(Step::Finished);
        }
        let now = self.nanos(tick);
        let report = &mut self.report;
        if self.last_was_busy && self.finished_at.is_none() {
            report.busy += tick.duration_since(self.last_tick);
            report.busy_iterations += 1;
        }
        self.last_tick = tick;
        let k = port.recv_each(&mut self.rx, &mut |_, datagram| {
            engine.handle_packet(now, datagram)
        })?;
        report.rx_datagrams += k as u64;
        if engine.poll_timeout().is_some_and(|t| t <= now) {
            engine.handle_timeout(now);
        }
        let (m, sent) = port.send_each(&mut self.tx, &mut |out| {
            engine.poll_transmit(now, out).map(|t| (t.next_hop, t.len))
        })?;
        report.tx_datagrams += sent as u64;
        report.tx_refused += (m - sent) as u64;
        let mut events = false;
        while let Some(ev) = engine.poll_event() {
            events = true;
            match ev {
                EngineEvent::ResultReady { round: r, at } if r == self.round => {
                    report
                        .round_result_ns
                        .push(at.saturating_sub(self.round_start));
                }
                EngineEvent::RoundComplete { round: r, .. } if r == self.round => {
                    done(self.round, engine.buffer());
                    report.rounds_completed += 1;
                    if report.rounds_completed == self.rounds {
                        // Counted up to the end of this iteration's work.
                        let end = Instant::now();
                        report.elapsed = end.duration_since(self.start);
                        report.busy += end.duration_since(self.last_tick);
                        report.busy_iterations += 1;
                        self.finished_at = Some(end);
                        continue;
                    }
                    self.round += 1;
                    // The new round starts at this iteration's tick: no extra clock read.
                    self.round_start = now;
                    fill(self.round, engine.buffer_mut());
                    engine
                        .start_round(self.round_start, self.round)
                        .map_err(|e| PortError::Other(e.to_string()))?;
                }
                _ => {}
            }
        }
        if self
            .finished_at
            .is_some_and(|f| tick.saturating_duration_since(f) >= cfg.linger)
        {
            return Ok(Step::Finished);
        }
        if self.finished_at.is_none() && tick.duration_since(self.start) > cfg.max_duration {
            return Err(PortError::Other(format!(
                "round {} not finished after {:?} (completed {} of {})",
                self.round, cfg.max_duration, report.rounds_completed, self.rounds
            )));
        }
        self.last_was_busy = k > 0 || m > 0 || events;
        Ok(if k == 0 && m == 0 {
            Step::Idle
        } else {
            Step::Busy
        })
    }
}
