//! The real-time loop: one [`Engine`] on one [`Port`], one iteration per [`EngineLoop::step`].
//!
//! Everything that runs an engine in real time runs this loop — netstorm-dp's worker
//! (`netstorm_node::worker`), `netstorm bench dataplane` (whose aggregator *is* that worker)
//! and the tests ([`run_engine`], [`run_engines`]) — and adds what it needs through a
//! per-iteration [`LoopHook`]. One iteration:
//!
//! 1. receive ([`Port::recv_each`]): the port takes a burst off the device;
//! 2. the clock is read, once, after the receive (the loop's [`RxSink::received`]): a datagram
//!    is never stamped with a time before it arrived, so never before its sender stamped it —
//!    reading the clock first, a datagram that arrived while the thread was descheduled
//!    between the two would get an arrival before its send, and that too-small one-way delay
//!    or RTT would become the path's baseline, against which every later sample looks like a
//!    queue;
//! 3. [`LoopHook::intake`] at that time (policy intake, round gate), before the engine sees
//!    the datagrams;
//! 4. the datagrams go to the engine in place, each with its arrival time;
//! 5. the engine's timers fire, then its datagrams are written in place ([`Port::send_each`]);
//! 6. engine events go to [`LoopHook::event`], then [`LoopHook::end`] (telemetry, reports,
//!    whether to stop).
//!
//! The loop also tells the engine when it is *behind* ([`Engine::set_loop_behind`]): its
//! clock read came more than [`LOOP_BEHIND_NS`] after the previous one (the thread was
//! descheduled, or an iteration ran long), or the previous receive filled the whole batch
//! (a socket backlog). Samples taken meanwhile measure the CPU, not the network: they may
//! raise estimates, never lower them. Counted in [`LoopStats::behind_iterations`].
//!
//! No clock read and no allocation per packet: buffers are allocated once; the engine stays
//! sans-IO (the loop owns the clock and the port).

use super::{PacketBuf, Port, PortError, RxSink};
use crate::engine::{Engine, EngineEvent};
use crate::{Nanos, NodeId};
use std::cell::RefCell;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

/// A gap between two clock reads of the loop longer than this means the loop fell behind:
/// an iteration is microseconds and an idle back-off tens of them, while a thread that lost
/// its core to another process waits a scheduler slice (milliseconds).
pub const LOOP_BEHIND_NS: Nanos = 1_000_000;

/// How [`run_engine`] and [`run_engines`] poll.
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

/// What a [`run_engine`] run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DriverReport {
    pub rounds_completed: u32,
    pub rx_datagrams: u64,
    pub tx_datagrams: u64,
    /// Datagrams the port refused (back-pressure); the engine's loss recovery resends them.
    pub tx_refused: u64,
    /// From the first round's start to the end of the iteration that completed the last.
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

/// The loop's clock: read once per iteration, after the receive.
pub trait LoopClock {
    /// Nanoseconds since the clock's origin (monotonic, > 0).
    fn now(&mut self) -> Nanos;
}

/// The real clock: the monotonic time since `base`, plus 1 (so no time is 0).
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    base: Instant,
}

impl MonotonicClock {
    /// A clock whose origin is `base` (engines sharing a base have comparable times).
    pub fn new(base: Instant) -> Self {
        Self { base }
    }
}

impl LoopClock for MonotonicClock {
    #[inline]
    fn now(&mut self) -> Nanos {
        self.base.elapsed().as_nanos() as Nanos + 1
    }
}

/// Counters of one loop, updated at every iteration (no clock read of their own).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LoopStats {
    pub iterations: u64,
    /// Datagrams handed to the engine.
    pub rx_datagrams: u64,
    /// Datagrams the port took.
    pub tx_datagrams: u64,
    /// Datagrams the port refused (back-pressure); the engine's loss recovery resends them.
    pub tx_refused: u64,
    /// Time from the clock read of each iteration that moved something (received or sent a
    /// datagram, or saw an engine event) to the next clock read: the work without idle polls.
    pub busy: Duration,
    /// Iterations counted in `busy`.
    pub busy_iterations: u64,
    /// Iterations in which the loop was behind (see the module docs): a gap of more than
    /// [`LOOP_BEHIND_NS`] since the previous clock read, or a receive backlog.
    pub behind_iterations: u64,
}

/// What the hook tells the loop at the end of an iteration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// What one iteration did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Received or sent a datagram.
    Busy,
    /// Moved nothing: the caller may back off.
    Idle,
    /// The hook asked to stop.
    Stop,
}

/// What a user of the loop adds to each iteration (see the module docs for the order).
/// `P` is the port type, for hooks that read the port's counters.
pub trait LoopHook<P: ?Sized> {
    type Error: From<PortError>;

    /// Right after the iteration's clock read, before the received datagrams reach the
    /// engine: install policies, start rounds (at `now`). `stats` are the loop's counters up
    /// to this clock read.
    fn intake(
        &mut self,
        _engine: &mut Engine,
        _now: Nanos,
        _stats: &LoopStats,
    ) -> Result<(), Self::Error> {
        Ok(())
    }

    /// One engine event, after the iteration's sends.
    fn event(
        &mut self,
        _engine: &mut Engine,
        _now: Nanos,
        _event: EngineEvent,
    ) -> Result<(), Self::Error> {
        Ok(())
    }

    /// The end of the iteration: telemetry, reports, and whether to go on.
    fn end(
        &mut self,
        _engine: &Engine,
        _port: &P,
        _now: Nanos,
        _stats: &LoopStats,
    ) -> Result<Flow, Self::Error> {
        Ok(Flow::Continue)
    }
}

/// The poll loop of one engine on one port, one iteration per [`EngineLoop::step`].
#[derive(Debug)]
pub struct EngineLoop<C = MonotonicClock> {
    clock: C,
    rx: Vec<PacketBuf>,
    tx: Vec<PacketBuf>,
    stats: LoopStats,
    /// The previous iteration's clock read: the time from it to this one counts as busy
    /// when that iteration did work, so busy accounting costs no clock read of its own.
    last_tick: Option<Nanos>,
    last_was_busy: bool,
    /// The previous receive filled the whole batch: more was waiting (a backlog).
    backlog: bool,
}

impl<C: LoopClock> EngineLoop<C> {
    /// Checks the port against the engine and allocates the batches (`batch` datagrams each).
    pub fn new<P: Port + ?Sized>(
        engine: &Engine,
        port: &P,
        batch: usize,
        clock: C,
    ) -> Result<Self, PortError> {
        // Datagrams are written in place into buffers of the port's size (send_each).
        let cap = port.max_datagram_len();
        if cap < engine.config().max_datagram_len() {
            return Err(PortError::Other(format!(
                "the port carries datagrams of at most {cap} bytes but the engine sends up to {} (segment_elems too large for the port's MTU)",
                engine.config().max_datagram_len()
            )));
        }
        Ok(Self {
            clock,
            rx: PacketBuf::batch(batch.max(1), cap),
            tx: PacketBuf::batch(batch.max(1), cap),
            stats: LoopStats::default(),
            last_tick: None,
            last_was_busy: false,
            backlog: false,
        })
    }

    /// The loop's counters so far.
    pub fn stats(&self) -> &LoopStats {
        &self.stats
    }

    /// One iteration (see the module docs).
    pub fn step<P, H>(
        &mut self,
        engine: &mut Engine,
        port: &mut P,
        hook: &mut H,
    ) -> Result<Step, H::Error>
    where
        P: Port + ?Sized,
        H: LoopHook<P> + ?Sized,
    {
        let Self {
            clock,
            rx,
            tx,
            stats,
            last_tick,
            last_was_busy,
            backlog,
        } = self;
        stats.iterations += 1;
        let mut receive = Receive {
            clock,
            stats,
            last_tick,
            last_was_busy: *last_was_busy,
            backlog: *backlog,
            engine,
            hook,
            now: None,
            failed: None,
            _port: PhantomData,
        };
        let k = port.recv_each(rx, &mut receive)?;
        // A port that received nothing may not have called `received`: the clock is read
        // here then (still after the receive, still once).
        let now = receive.tick();
        if let Some(e) = receive.failed.take() {
            return Err(e);
        }
        stats.rx_datagrams += k as u64;
        *backlog = k >= rx.len();
        if *backlog {
            // The samples of this batch were read late too (the engine already had them).
            engine.set_loop_behind(true);
        }
        if engine.poll_timeout().is_some_and(|t| t <= now) {
            engine.handle_timeout(now);
        }
        let (m, sent) = port.send_each(tx, &mut |out| {
            engine.poll_transmit(now, out).map(|t| (t.next_hop, t.len))
        })?;
        stats.tx_datagrams += sent as u64;
        stats.tx_refused += (m - sent) as u64;
        let mut events = false;
        while let Some(ev) = engine.poll_event() {
            events = true;
            hook.event(engine, now, ev)?;
        }
        *last_was_busy = k > 0 || m > 0 || events;
        Ok(match hook.end(engine, port, now, stats)? {
            Flow::Stop => Step::Stop,
            Flow::Continue if k == 0 && m == 0 => Step::Idle,
            Flow::Continue => Step::Busy,
        })
    }
}

/// The loop's receive side for one iteration: reads the clock when the port has taken its
/// burst (the one place the loop reads it), runs the hook's intake, then feeds the engine.
struct Receive<'a, C, P: ?Sized, H: LoopHook<P> + ?Sized> {
    clock: &'a mut C,
    stats: &'a mut LoopStats,
    last_tick: &'a mut Option<Nanos>,
    last_was_busy: bool,
    /// The previous receive filled its batch.
    backlog: bool,
    engine: &'a mut Engine,
    hook: &'a mut H,
    now: Option<Nanos>,
    /// The intake failed: the datagrams are dropped and the iteration ends with this error.
    failed: Option<H::Error>,
    _port: PhantomData<fn(&P)>,
}

impl<C: LoopClock, P: ?Sized, H: LoopHook<P> + ?Sized> Receive<'_, C, P, H> {
    /// The iteration's time: the clock is read on the first call (after the receive) and the
    /// hook's intake runs at it.
    fn tick(&mut self) -> Nanos {
        if let Some(now) = self.now {
            return now;
        }
        let now = self.clock.now();
        if self.last_was_busy {
            if let Some(last) = *self.last_tick {
                self.stats.busy += Duration::from_nanos(now.saturating_sub(last));
                self.stats.busy_iterations += 1;
            }
        }
        let gap = self
            .last_tick
            .is_some_and(|last| now.saturating_sub(last) > LOOP_BEHIND_NS);
        let behind = gap || self.backlog;
        self.stats.behind_iterations += u64::from(behind);
        self.engine.set_loop_behind(behind);
        *self.last_tick = Some(now);
        self.now = Some(now);
        if let Err(e) = self.hook.intake(self.engine, now, self.stats) {
            self.failed = Some(e);
        }
        now
    }
}

impl<C: LoopClock, P: ?Sized, H: LoopHook<P> + ?Sized> RxSink for Receive<'_, C, P, H> {
    fn received(&mut self) -> Nanos {
        self.tick()
    }

    #[inline]
    fn datagram(&mut self, _peer: NodeId, datagram: &[u8], arrival: Nanos) {
        if self.failed.is_none() {
            self.engine.handle_packet(arrival, datagram);
        }
    }
}

fn idle(backoff: Option<Duration>) {
    match backoff {
        Some(d) => std::thread::sleep(d),
        None => std::hint::spin_loop(),
    }
}

/// Runs `engine` on `port` with `hook` on the calling thread until the hook stops it;
/// returns the loop's counters. Sleeps `idle_backoff` after an iteration that moved nothing
/// (`None`: busy-poll). The loop of netstorm-dp's worker and of [`run_engine`].
pub fn run_loop<P, H, C>(
    engine: &mut Engine,
    port: &mut P,
    hook: &mut H,
    batch: usize,
    idle_backoff: Option<Duration>,
    clock: C,
) -> Result<LoopStats, H::Error>
where
    P: Port + ?Sized,
    H: LoopHook<P> + ?Sized,
    C: LoopClock,
{
    let mut lp = EngineLoop::new(engine, port, batch, clock)?;
    loop {
        match lp.step(engine, port, hook)? {
            Step::Stop => return Ok(lp.stats),
            Step::Busy => {}
            Step::Idle => idle(idle_backoff),
        }
    }
}

/// One engine of [`run_loops_in_turn`]: its port and hook.
#[derive(Debug)]
pub struct Turn<'a, P: ?Sized, H> {
    pub engine: &'a mut Engine,
    pub port: &'a mut P,
    pub hook: H,
}

/// Runs several engines, each on its own port with its own hook, taking turns on the calling
/// thread: one iteration of each per sweep, then `between_sweeps()`; until every hook has
/// stopped. For load generators that share a core: unlike one thread per engine, nobody waits
/// for the scheduler or sleeps while another engine has work. Sleeps `idle_backoff` after a
/// sweep that moved nothing. Returns each loop's counters, in `turns` order.
pub fn run_loops_in_turn<P, H>(
    turns: &mut [Turn<'_, P, H>],
    batch: usize,
    idle_backoff: Option<Duration>,
    clock_base: Instant,
    mut between_sweeps: impl FnMut(),
) -> Result<Vec<LoopStats>, H::Error>
where
    P: Port + ?Sized,
    H: LoopHook<P>,
{
    let mut loops = Vec::with_capacity(turns.len());
    for t in turns.iter() {
        loops.push(EngineLoop::new(
            t.engine,
            t.port,
            batch,
            MonotonicClock::new(clock_base),
        )?);
    }
    let mut stopped = vec![false; turns.len()];
    let mut running = turns.len();
    while running > 0 {
        let mut busy = false;
        for ((t, lp), stopped) in turns.iter_mut().zip(&mut loops).zip(&mut stopped) {
            if *stopped {
                continue;
            }
            match lp.step(t.engine, t.port, &mut t.hook)? {
                Step::Stop => {
                    *stopped = true;
                    running -= 1;
                }
                Step::Busy => busy = true,
                Step::Idle => {}
            }
        }
        between_sweeps();
        if !busy {
            idle(idle_backoff);
        }
    }
    Ok(loops.into_iter().map(|l| l.stats).collect())
}

/// The hook of [`run_engine`]: runs rounds `first_round .. first_round + rounds` back to back
/// (each started in the iteration that completed the one before), lingers, and reports.
/// Before each round `fill(round, buffer)` writes this node's contribution; after it
/// `done(round, buffer)` may read the result.
#[derive(Debug)]
pub struct FixedRounds<F, D> {
    fill: F,
    done: D,
    first_round: u32,
    rounds: u32,
    linger: Nanos,
    max_duration: Nanos,
    round: u32,
    /// The first iteration's time (the first round starts there).
    started_at: Option<Nanos>,
    round_start: Nanos,
    /// When the last round completed; `elapsed` and busy time are taken at the next clock
    /// read (so they include that iteration's work without a clock read of their own).
    finished_at: Option<Nanos>,
    frozen: bool,
    report: DriverReport,
}

impl<F, D> FixedRounds<F, D>
where
    F: FnMut(u32, &mut [f32]),
    D: FnMut(u32, &[f32]),
{
    pub fn new(first_round: u32, rounds: u32, cfg: &DriverConfig, fill: F, done: D) -> Self {
        Self {
            fill,
            done,
            first_round,
            rounds,
            linger: cfg.linger.as_nanos() as Nanos,
            max_duration: cfg.max_duration.as_nanos() as Nanos,
            round: first_round,
            started_at: None,
            round_start: 0,
            finished_at: None,
            frozen: false,
            report: DriverReport::default(),
        }
    }

    /// The report, with the datagram counts of the whole run from the loop's `stats`.
    pub fn into_report(self, stats: &LoopStats) -> DriverReport {
        DriverReport {
            rx_datagrams: stats.rx_datagrams,
            tx_datagrams: stats.tx_datagrams,
            tx_refused: stats.tx_refused,
            ..self.report
        }
    }
}

impl<P: ?Sized, F, D> LoopHook<P> for FixedRounds<F, D>
where
    F: FnMut(u32, &mut [f32]),
    D: FnMut(u32, &[f32]),
{
    type Error = PortError;

    fn intake(
        &mut self,
        engine: &mut Engine,
        now: Nanos,
        stats: &LoopStats,
    ) -> Result<(), PortError> {
        if self.started_at.is_none() {
            self.started_at = Some(now);
            if self.rounds > 0 {
                self.round_start = now;
                (self.fill)(self.first_round, engine.buffer_mut());
                engine
                    .start_round(now, self.first_round)
                    .map_err(|e| PortError::Other(e.to_string()))?;
            }
        }
        if self.finished_at.is_some() && !self.frozen {
            self.frozen = true;
            let start = self.started_at.unwrap_or(now);
            self.report.elapsed = Duration::from_nanos(now.saturating_sub(start));
            self.report.busy = stats.busy;
            self.report.busy_iterations = stats.busy_iterations;
        }
        Ok(())
    }

    fn event(
        &mut self,
        engine: &mut Engine,
        now: Nanos,
        event: EngineEvent,
    ) -> Result<(), PortError> {
        if self.finished_at.is_some() {
            return Ok(());
        }
        match event {
            EngineEvent::ResultReady { round, at } if round == self.round => {
                self.report
                    .round_result_ns
                    .push(at.saturating_sub(self.round_start));
            }
            // The round is over: at its release with release gossip, else at completion.
            EngineEvent::RoundComplete { round, .. } | EngineEvent::RoundReleased { round, .. }
                if round == self.round
                    && matches!(event, EngineEvent::RoundReleased { .. })
                        == engine.config().release_gossip =>
            {
                (self.done)(round, engine.buffer());
                self.report.rounds_completed += 1;
                if self.report.rounds_completed == self.rounds {
                    self.finished_at = Some(now);
                    return Ok(());
                }
                self.round += 1;
                // The next round starts in this iteration, at its time: no clock read.
                self.round_start = now;
                (self.fill)(self.round, engine.buffer_mut());
                engine
                    .start_round(now, self.round)
                    .map_err(|e| PortError::Other(e.to_string()))?;
            }
            _ => {}
        }
        Ok(())
    }

    fn end(
        &mut self,
        _engine: &Engine,
        _port: &P,
        now: Nanos,
        _stats: &LoopStats,
    ) -> Result<Flow, PortError> {
        if self.rounds == 0 {
            return Ok(Flow::Stop);
        }
        if let Some(finished) = self.finished_at {
            let lingered = now.saturating_sub(finished) >= self.linger;
            return Ok(if self.frozen && lingered {
                Flow::Stop
            } else {
                Flow::Continue
            });
        }
        let start = self.started_at.unwrap_or(now);
        if now.saturating_sub(start) > self.max_duration {
            return Err(PortError::Other(format!(
                "round {} not finished after {:?} (completed {} of {})",
                self.round,
                Duration::from_nanos(self.max_duration),
                self.report.rounds_completed,
                self.rounds
            )));
        }
        Ok(Flow::Continue)
    }
}

/// Runs rounds `first_round .. first_round + rounds` on `engine` over `port` ([`run_loop`]
/// with [`FixedRounds`]). Before each round, `fill(round, buffer)` writes this node's
/// contribution; after each round, `done(round, buffer)` may read the result.
pub fn run_engine<P: Port + ?Sized>(
    engine: &mut Engine,
    port: &mut P,
    cfg: &DriverConfig,
    first_round: u32,
    rounds: u32,
    fill: impl FnMut(u32, &mut [f32]),
    done: impl FnMut(u32, &[f32]),
) -> Result<DriverReport, PortError> {
    let mut hook = FixedRounds::new(first_round, rounds, cfg, fill, done);
    let clock = MonotonicClock::new(Instant::now());
    let stats = run_loop(engine, port, &mut hook, cfg.batch, cfg.idle_backoff, clock)?;
    Ok(hook.into_report(&stats))
}

/// Runs several engines, each on its own port, taking turns on the calling thread
/// ([`run_loops_in_turn`] with [`FixedRounds`]). `fill(i, round, buffer)` and
/// `done(i, round, buffer)` are [`run_engine`]'s, for `nodes[i]`; every engine runs the same
/// rounds; the reports come in `nodes` order. A report's `busy` counts the whole sweeps in
/// which its engine moved something (the other engines' turns included), so it says little
/// here.
pub fn run_engines<P: Port + ?Sized>(
    nodes: &mut [(&mut Engine, &mut P)],
    cfg: &DriverConfig,
    first_round: u32,
    rounds: u32,
    fill: impl FnMut(usize, u32, &mut [f32]),
    done: impl FnMut(usize, u32, &[f32]),
) -> Result<Vec<DriverReport>, PortError> {
    // The engines take turns on this thread, so the callbacks are never re-entered.
    let (fill, done) = (RefCell::new(fill), RefCell::new(done));
    let (fill, done) = (&fill, &done);
    let mut turns: Vec<_> = nodes
        .iter_mut()
        .enumerate()
        .map(|(i, (engine, port))| Turn {
            engine,
            port: &mut **port,
            hook: FixedRounds::new(
                first_round,
                rounds,
                cfg,
                move |r: u32, b: &mut [f32]| (fill.borrow_mut())(i, r, b),
                move |r: u32, b: &[f32]| (done.borrow_mut())(i, r, b),
            ),
        })
        .collect();
    let stats = run_loops_in_turn(
        &mut turns,
        cfg.batch,
        cfg.idle_backoff,
        Instant::now(),
        || {},
    )?;
    Ok(turns
        .into_iter()
        .zip(&stats)
        .map(|(t, s)| t.hook.into_report(s))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineConfig;
    use crate::topology::Topology;
    use std::rc::Rc;

    /// What happened, in order, on a fake time line that advances with every device read
    /// and clock read.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Happened {
        /// The port took datagrams off its device (at this time).
        DeviceRead(Nanos),
        /// The loop read its clock (and got this time).
        ClockRead(Nanos),
    }

    #[derive(Debug, Default)]
    struct Timeline {
        t: Nanos,
        log: Vec<Happened>,
    }

    struct FakeClock(Rc<RefCell<Timeline>>);

    impl LoopClock for FakeClock {
        fn now(&mut self) -> Nanos {
            let mut tl = self.0.borrow_mut();
            tl.t += 1;
            let t = tl.t;
            tl.log.push(Happened::ClockRead(t));
            t
        }
    }

    /// A port whose device read takes time; `lend` says whether it overrides `recv_each`
    /// the way a port lending its buffers does, and `silent` that such a port skips
    /// `received` when its device had nothing.
    struct FakePort {
        timeline: Rc<RefCell<Timeline>>,
        lend: bool,
        silent: bool,
    }

    impl FakePort {
        fn device_read(&self) {
            let mut tl = self.timeline.borrow_mut();
            tl.t += 1_000;
            let t = tl.t;
            tl.log.push(Happened::DeviceRead(t));
        }
    }

    impl Port for FakePort {
        fn max_datagram_len(&self) -> usize {
            1500
        }
        fn recv_batch(&mut self, _bufs: &mut [PacketBuf]) -> Result<usize, PortError> {
            self.device_read();
            Ok(0)
        }
        fn send_batch(&mut self, bufs: &[PacketBuf]) -> Result<usize, PortError> {
            Ok(bufs.len())
        }
        fn recv_each(
            &mut self,
            scratch: &mut [PacketBuf],
            sink: &mut dyn RxSink,
        ) -> Result<usize, PortError> {
            if !self.lend {
                let k = self.recv_batch(scratch)?;
                let now = sink.received();
                for b in &scratch[..k] {
                    sink.datagram(b.peer, b.bytes(), now);
                }
                return Ok(k);
            }
            self.device_read();
            if !self.silent {
                sink.received();
            }
            Ok(0)
        }
    }

    /// Stops after `n` iterations and records the time each intake ran at.
    struct Iterations {
        left: u32,
        intakes: Vec<Nanos>,
    }

    impl<P: ?Sized> LoopHook<P> for Iterations {
        type Error = PortError;
        fn intake(&mut self, _: &mut Engine, now: Nanos, _: &LoopStats) -> Result<(), PortError> {
            self.intakes.push(now);
            Ok(())
        }
        fn end(&mut self, _: &Engine, _: &P, _: Nanos, _: &LoopStats) -> Result<Flow, PortError> {
            self.left -= 1;
            Ok(if self.left == 0 {
                Flow::Stop
            } else {
                Flow::Continue
            })
        }
    }

    fn engine() -> Engine {
        Engine::new(EngineConfig::new(0, 2, 64), &Topology::full_mesh(2, 1e9, 0)).unwrap()
    }

    /// Every iteration reads the clock exactly once, after its device read, and the hook's
    /// intake (and the datagrams) get that time: an arrival is never stamped before its
    /// receive. Reading the clock before receiving (the old driver's order) fails this.
    #[test]
    fn the_clock_is_read_once_per_iteration_after_the_receive() {
        for (lend, silent) in [(false, false), (true, false), (true, true)] {
            let timeline = Rc::new(RefCell::new(Timeline::default()));
            let mut port = FakePort {
                timeline: timeline.clone(),
                lend,
                silent,
            };
            let mut hook = Iterations {
                left: 5,
                intakes: Vec::new(),
            };
            let clock = FakeClock(timeline.clone());
            let stats = run_loop(&mut engine(), &mut port, &mut hook, 8, None, clock).unwrap();
            assert_eq!(stats.iterations, 5);
            let log = timeline.borrow().log.clone();
            assert_eq!(log.len(), 10, "lend {lend}, silent {silent}: {log:?}");
            for (i, pair) in log.chunks(2).enumerate() {
                let (Happened::DeviceRead(rx), Happened::ClockRead(now)) = (pair[0], pair[1])
                else {
                    panic!("iteration {i}: {pair:?} is not receive-then-clock ({log:?})");
                };
                assert!(now > rx);
                assert_eq!(hook.intakes[i], now);
            }
        }
    }

    /// The busy time runs from the clock read of each iteration that moved something to the
    /// next clock read, and only then; it costs no clock read of its own.
    #[test]
    fn busy_time_runs_from_a_busy_iteration_to_the_next_clock_read() {
        /// Delivers one (malformed) datagram on the iterations in `on`.
        struct Sometimes {
            timeline: Rc<RefCell<Timeline>>,
            on: Vec<bool>,
            i: usize,
        }
        impl Port for Sometimes {
            fn max_datagram_len(&self) -> usize {
                1500
            }
            fn recv_batch(&mut self, bufs: &mut [PacketBuf]) -> Result<usize, PortError> {
                let mut tl = self.timeline.borrow_mut();
                tl.t += 1_000;
                let t = tl.t;
                tl.log.push(Happened::DeviceRead(t));
                let deliver = self.on.get(self.i).copied().unwrap_or(false);
                self.i += 1;
                if deliver {
                    bufs[0].len = 10;
                    bufs[0].peer = 1;
                }
                Ok(usize::from(deliver))
            }
            fn send_batch(&mut self, bufs: &[PacketBuf]) -> Result<usize, PortError> {
                Ok(bufs.len())
            }
        }
        /// Keeps the loop's counters at the end of every iteration.
        struct Snapshots(Vec<LoopStats>);
        impl<P: ?Sized> LoopHook<P> for Snapshots {
            type Error = PortError;
            fn end(
                &mut self,
                _: &Engine,
                _: &P,
                _: Nanos,
                s: &LoopStats,
            ) -> Result<Flow, PortError> {
                self.0.push(*s);
                Ok(if self.0.len() == 6 {
                    Flow::Stop
                } else {
                    Flow::Continue
                })
            }
        }
        let timeline = Rc::new(RefCell::new(Timeline::default()));
        let mut port = Sometimes {
            timeline: timeline.clone(),
            on: vec![false, true, true, false, false, false],
            i: 0,
        };
        let mut hook = Snapshots(Vec::new());
        let clock = FakeClock(timeline.clone());
        let stats = run_loop(&mut engine(), &mut port, &mut hook, 8, None, clock).unwrap();
        let clocks: Vec<Nanos> = timeline
            .borrow()
            .log
            .iter()
            .filter_map(|h| match h {
                Happened::ClockRead(t) => Some(*t),
                Happened::DeviceRead(_) => None,
            })
            .collect();
        assert_eq!(clocks.len(), 6);
        // Iteration i moved something if it received or sent a datagram (no rounds run, so
        // no engine events); its span to the next clock read is busy.
        let mut prev = LoopStats::default();
        let (mut busy, mut busy_iterations) = (0, 0);
        for (i, s) in hook.0.iter().enumerate() {
            let moved = s.rx_datagrams > prev.rx_datagrams || s.tx_datagrams > prev.tx_datagrams;
            if moved && i + 1 < clocks.len() {
                busy += clocks[i + 1] - clocks[i];
                busy_iterations += 1;
            }
            prev = *s;
        }
        assert_eq!(stats.rx_datagrams, 2);
        assert!(busy_iterations >= 2);
        assert_eq!(stats.busy, Duration::from_nanos(busy));
        assert_eq!(stats.busy_iterations, busy_iterations);
    }

    /// The loop is behind after a clock gap of more than LOOP_BEHIND_NS and in the
    /// iteration after a receive that filled its batch (a backlog), and only then; the
    /// engine is told (so its samples only bound the paths from below).
    #[test]
    fn a_long_gap_or_a_full_batch_marks_the_loop_behind() {
        /// Per iteration: how far its device read moves the time line and how many
        /// (malformed) datagrams it returns.
        struct Script {
            timeline: Rc<RefCell<Timeline>>,
            steps: Vec<(Nanos, usize)>,
            i: usize,
        }
        impl Port for Script {
            fn max_datagram_len(&self) -> usize {
                1500
            }
            fn recv_batch(&mut self, bufs: &mut [PacketBuf]) -> Result<usize, PortError> {
                let (advance, n) = self.steps[self.i];
                self.i += 1;
                self.timeline.borrow_mut().t += advance;
                for b in &mut bufs[..n] {
                    b.len = 10;
                    b.peer = 1;
                }
                Ok(n)
            }
            fn send_batch(&mut self, bufs: &[PacketBuf]) -> Result<usize, PortError> {
                Ok(bufs.len())
            }
        }
        /// The loop's count and the engine's flag at the end of every iteration.
        struct Behind(Vec<(u64, bool)>, usize);
        impl<P: ?Sized> LoopHook<P> for Behind {
            type Error = PortError;
            fn end(
                &mut self,
                e: &Engine,
                _: &P,
                _: Nanos,
                s: &LoopStats,
            ) -> Result<Flow, PortError> {
                self.0.push((s.behind_iterations, e.loop_behind()));
                Ok(if self.0.len() == self.1 {
                    Flow::Stop
                } else {
                    Flow::Continue
                })
            }
        }
        const US: Nanos = 1_000;
        let steps = vec![
            (US, 0),                  // the first iteration: no gap to measure
            (LOOP_BEHIND_NS + US, 0), // descheduled: behind
            (US, 0),                  // caught up
            (LOOP_BEHIND_NS - 1, 0),  // with the clock read's 1 ns: the limit, not behind
            (US, 8),                  // the batch (8) filled: behind from here...
            (US, 3),                  // ...and in the next iteration (the backlog)
            (US, 0),                  // caught up
        ];
        let timeline = Rc::new(RefCell::new(Timeline::default()));
        let mut port = Script {
            timeline: timeline.clone(),
            i: 0,
            steps,
        };
        let mut hook = Behind(Vec::new(), 7);
        let clock = FakeClock(timeline.clone());
        run_loop(&mut engine(), &mut port, &mut hook, 8, None, clock).unwrap();
        assert_eq!(
            hook.0,
            [
                (0, false),
                (1, true),
                (1, false),
                (1, false),
                (1, true),
                (2, true),
                (2, false)
            ]
        );
    }
}
