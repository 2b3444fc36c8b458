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
    let start = Instant::now();
    let nanos_since_start = |t: Instant| t.duration_since(start).as_nanos() as Nanos + 1;
    // Datagrams are written in place into buffers of the port's size (send_each).
    let cap = port.max_datagram_len();
    if cap < engine.config().max_datagram_len() {
        return Err(PortError::Other(format!(
            "the port carries datagrams of at most {cap} bytes but the engine sends up to {} (segment_elems too large for the port's MTU)",
            engine.config().max_datagram_len()
        )));
    }
    let mut rx = PacketBuf::batch(cfg.batch, cap);
    let mut tx = PacketBuf::batch(cfg.batch, cap);
    let mut report = DriverReport::default();
    if rounds == 0 {
        return Ok(report);
    }
    let mut round = first_round;
    let mut finished_at: Option<Instant> = None;
    let mut round_start = nanos_since_start(Instant::now());
    // Busy accounting: the time from one iteration's clock read to the next counts as busy
    // when that iteration did work, so it costs no extra clock read.
    let (mut last_tick, mut last_was_busy) = (start, false);
    fill(round, engine.buffer_mut());
    engine
        .start_round(round_start, round)
        .map_err(|e| PortError::Other(e.to_string()))?;
    loop {
        // The one clock read of the iteration.
        let tick = Instant::now();
        if last_was_busy && finished_at.is_none() {
            report.busy += tick.duration_since(last_tick);
            report.busy_iterations += 1;
        }
        last_tick = tick;
        let now = nanos_since_start(tick);
        let k = port.recv_each(&mut rx, &mut |_, datagram| {
            engine.handle_packet(now, datagram)
        })?;
        report.rx_datagrams += k as u64;
        if engine.poll_timeout().is_some_and(|t| t <= now) {
            engine.handle_timeout(now);
        }
        let (m, sent) = port.send_each(&mut tx, &mut |out| {
            engine.poll_transmit(now, out).map(|t| (t.next_hop, t.len))
        })?;
        report.tx_datagrams += sent as u64;
        report.tx_refused += (m - sent) as u64;
        let mut events = false;
        while let Some(ev) = engine.poll_event() {
            events = true;
            match ev {
                EngineEvent::ResultReady { round: r, at } if r == round => {
                    report.round_result_ns.push(at.saturating_sub(round_start));
                }
                EngineEvent::RoundComplete { round: r, .. } if r == round => {
                    done(round, engine.buffer());
                    report.rounds_completed += 1;
                    if report.rounds_completed == rounds {
                        // Counted up to the end of this iteration's work.
                        let end = Instant::now();
                        report.elapsed = end.duration_since(start);
                        report.busy += end.duration_since(last_tick);
                        report.busy_iterations += 1;
                        finished_at = Some(end);
                        continue;
                    }
                    round += 1;
                    // The new round starts at this iteration's tick: no extra clock read.
                    round_start = now;
                    fill(round, engine.buffer_mut());
                    engine
                        .start_round(round_start, round)
                        .map_err(|e| PortError::Other(e.to_string()))?;
                }
                _ => {}
            }
        }
        if finished_at.is_some_and(|f| tick.saturating_duration_since(f) >= cfg.linger) {
            return Ok(report);
        }
        if finished_at.is_none() && tick.duration_since(start) > cfg.max_duration {
            return Err(PortError::Other(format!(
                "round {round} not finished after {:?} (completed {} of {rounds})",
                cfg.max_duration, report.rounds_completed
            )));
        }
        last_was_busy = k > 0 || m > 0 || events;
        if k == 0 && m == 0 {
            match cfg.idle_backoff {
                Some(d) => std::thread::sleep(d),
                None => std::hint::spin_loop(),
            }
        }
    }
}
