//! `bench dataplane --backend dpdk --mode raw`: the port and the aggregation kernel without
//! the engine's reliability layer, to show what one core can aggregate. Children stream
//! sequence-numbered segments over lossless point-to-point rings (back-pressure instead of
//! loss recovery); the aggregator sums them in place from the mbufs and forwards each sum once
//! all C children delivered it. Children and root are driven by one load-generator thread;
//! latency is per segment (first child's send → sum at the root, stamped once per burst).

use super::common::{
    aggregator, cpu_delta, expected, input, latency_of, new_histogram, pin_to, root, thread_cpu_ns,
    CorePlan,
};
use super::dpdk::{port_drops, register};
use super::{
    Backend, BenchError, Cores, DataplaneBenchConfig, DataplaneReport, Latency, Mode, ThreadInfo,
    Verification,
};
use netstorm_dataplane::kernel;
use netstorm_dataplane::port::dpdk::{unregister_thread, DpdkPort, RingLinks};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Raw-mode datagram header: sequence number (u64 LE) and the child's send time (u64 LE ns).
pub(super) const RAW_HEADER: usize = 16;
/// Distinct payload rows per child (segment `s` carries row `s % ROWS`).
const ROWS: usize = 64;
/// Aggregation slots (segments a child may run ahead of the last forwarded sum).
const WINDOW: u64 = 256;

/// Counters the raw-mode threads publish (relaxed stores once per poll, never per packet).
#[derive(Default)]
struct Shared {
    /// The main thread asks the senders to stop.
    stop: AtomicBool,
    /// The senders stopped; `sent_min` is the smallest per-child segment count.
    senders_done: AtomicBool,
    sent_min: AtomicU64,
    /// Aggregator: child segments taken in, sums forwarded, polls and polls that found work.
    agg_in: AtomicU64,
    agg_forwarded: AtomicU64,
    agg_polls: AtomicU64,
    /// Nanoseconds the aggregator spent in polls that found work (one clock read per poll).
    agg_busy_ns: AtomicU64,
    agg_done: AtomicBool,
}

fn le_row(values: impl Iterator<Item = f32>) -> Vec<u8> {
    values.flat_map(f32::to_le_bytes).collect()
}

struct AggOutcome {
    bad: u64,
    cpu_seconds: Option<f64>,
    wall_seconds: f64,
    core: Option<usize>,
    drops: serde_json::Value,
}

struct GenOutcome {
    hist: hdrhistogram::Histogram<u64>,
    verified: u64,
    mismatches: u64,
    out_of_order: u64,
    cpu_seconds: Option<f64>,
    wall_seconds: f64,
    core: Option<usize>,
    timed_out: bool,
}

/// The aggregating core: pulls each child's segments from that child's rx queue (FIFO, so in
/// sequence order), sums them in place from the mbufs into a window of slots, and forwards
/// every slot all children completed, in order, to the root. A child's queue is read only
/// while its next segment has a free slot (flow control by ring back-pressure).
fn aggregate(
    a: &DataplaneBenchConfig,
    mut port: DpdkPort,
    child_queues: &[(usize, usize)],
    shared: &Shared,
    core: Option<usize>,
) -> Result<AggOutcome, BenchError> {
    let pinned = pin_to(core);
    register();
    let cpu0 = thread_cpu_ns();
    let t0 = Instant::now();
    let c = a.children;
    let e = a.segment_bytes / 4;
    let len = RAW_HEADER + a.segment_bytes;
    let w = WINDOW as usize;
    let mut acc = vec![0f32; w * e];
    let mut slot_seq = vec![u64::MAX; w];
    let mut slot_stamp = vec![0u64; w];
    let mut next = vec![0u64; c];
    let mut fwd = 0u64;
    let (mut bad, mut polls, mut busy_ns) = (0u64, 0u64, 0u64);
    let rt = root(c);
    let mut last = Instant::now();
    let mut was_busy = false;
    let mut tx_burst = 32usize;
    loop {
        // One clock read per poll: the time since the last one counts as busy if that poll
        // found work.
        let now = Instant::now();
        if was_busy {
            busy_ns += (now - last).as_nanos() as u64;
        }
        last = now;
        let mut got = 0;
        for &(q, ch) in child_queues {
            let budget = (fwd + WINDOW - next[ch]).min(64) as usize;
            if budget == 0 {
                continue;
            }
            got += port.recv_queue_with(q, budget, |from, d| {
                if from as usize != ch || d.len() != len {
                    bad += 1;
                    return;
                }
                let seq = u64::from_le_bytes(d[0..8].try_into().expect("8 bytes"));
                let stamp = u64::from_le_bytes(d[8..16].try_into().expect("8 bytes"));
                if seq != next[ch] {
                    bad += 1;
                    return;
                }
                next[ch] += 1;
                let slot = (seq % WINDOW) as usize;
                let dst = &mut acc[slot * e..(slot + 1) * e];
                if slot_seq[slot] != seq {
                    slot_seq[slot] = seq;
                    slot_stamp[slot] = stamp;
                    kernel::copy_from_le_bytes(dst, &d[RAW_HEADER..]);
                } else {
                    slot_stamp[slot] = slot_stamp[slot].min(stamp);
                    kernel::add_assign_le_bytes(dst, &d[RAW_HEADER..]);
                }
            });
        }
        let ready = next.iter().copied().min().unwrap_or(0);
        while fwd < ready {
            let k = (ready - fwd).min(tx_burst as u64) as usize;
            let base = fwd;
            let sent = port
                .send_with(rt, k, len, |i, d| {
                    let s = base + i as u64;
                    let slot = (s % WINDOW) as usize;
                    d[0..8].copy_from_slice(&s.to_le_bytes());
                    d[8..16].copy_from_slice(&slot_stamp[slot].to_le_bytes());
                    kernel::write_le_bytes(&mut d[RAW_HEADER..], &acc[slot * e..(slot + 1) * e]);
                })
                .map_err(BenchError::port("aggregator -> root"))?;
            fwd += sent as u64;
            // A full ring refuses frames that were already built: after a refusal offer one
            // frame at a time until the ring takes whole bursts again.
            tx_burst = if sent < k {
                sent.max(1)
            } else {
                (tx_burst * 2).min(32)
            };
            if sent < k {
                break;
            }
        }
        polls += 1;
        was_busy = got > 0;
        shared
            .agg_in
            .store(next.iter().sum::<u64>(), Ordering::Relaxed);
        shared.agg_forwarded.store(fwd, Ordering::Relaxed);
        shared.agg_polls.store(polls, Ordering::Relaxed);
        shared.agg_busy_ns.store(busy_ns, Ordering::Relaxed);
        if got == 0 && shared.senders_done.load(Ordering::Acquire) {
            let min = shared.sent_min.load(Ordering::Relaxed);
            if fwd >= min {
                break;
            }
        }
        if shared.agg_done.load(Ordering::Relaxed) {
            // The generator gave up waiting (see its deadline).
            break;
        }
    }
    shared.agg_done.store(true, Ordering::Release);
    let out = AggOutcome {
        bad,
        cpu_seconds: cpu_delta(cpu0),
        wall_seconds: t0.elapsed().as_secs_f64(),
        core: core.filter(|_| pinned),
        drops: port_drops(&port),
    };
    unregister_thread();
    Ok(out)
}

/// The load generator: drives every child's port (streaming segments to the aggregator) and
/// the root's port (receiving, timing and verifying every sum), on one thread.
#[allow(clippy::too_many_arguments)]
fn generate(
    a: &DataplaneBenchConfig,
    mut children: Vec<DpdkPort>,
    mut root_port: DpdkPort,
    rows: &[Vec<Vec<u8>>],
    expected: &[Vec<u8>],
    shared: &Shared,
    core: Option<usize>,
    base: Instant,
) -> Result<GenOutcome, BenchError> {
    let pinned = pin_to(core);
    register();
    let cpu0 = thread_cpu_ns();
    let t0 = Instant::now();
    let c = a.children;
    let agg = aggregator(c);
    let len = RAW_HEADER + a.segment_bytes;
    let limit = a.max_rounds.saturating_mul(a.segments_per_round as u64);
    let burst = a.batch.min(64);
    let mut seq = vec![0u64; c];
    let mut hist = new_histogram();
    let (mut verified, mut mismatches, mut out_of_order) = (0u64, 0u64, 0u64);
    let mut root_next = 0u64;
    let mut announced = false;
    let mut stopped_at: Option<Instant> = None;
    let mut timed_out = false;
    let mut stamps = [0u64; 64];
    // Per child: frames offered per send (halved to 1 after a refusal, see the aggregator).
    let mut tx_burst = vec![burst; c];
    loop {
        let now = base.elapsed().as_nanos() as u64;
        let all_sent = seq.iter().all(|&s| s >= limit);
        if !announced && (shared.stop.load(Ordering::Relaxed) || all_sent) {
            shared
                .sent_min
                .store(seq.iter().copied().min().unwrap_or(0), Ordering::Relaxed);
            shared.senders_done.store(true, Ordering::Release);
            announced = true;
            stopped_at = Some(Instant::now());
        }
        if !announced {
            for (ch, port) in children.iter_mut().enumerate() {
                let k = (limit - seq[ch]).min(tx_burst[ch] as u64) as usize;
                if k == 0 {
                    continue;
                }
                let s0 = seq[ch];
                let my_rows = &rows[ch];
                let sent = port
                    .send_with(agg, k, len, |i, d| {
                        let s = s0 + i as u64;
                        d[0..8].copy_from_slice(&s.to_le_bytes());
                        d[8..16].copy_from_slice(&now.to_le_bytes());
                        d[RAW_HEADER..].copy_from_slice(&my_rows[(s % ROWS as u64) as usize]);
                    })
                    .map_err(BenchError::port(format!("child {ch} -> aggregator")))?;
                seq[ch] += sent as u64;
                tx_burst[ch] = if sent < k {
                    sent.max(1)
                } else {
                    (tx_burst[ch] * 2).min(burst)
                };
            }
        }
        // Read before polling: once the aggregator is done, an empty poll means every sum
        // it forwarded has arrived.
        let agg_finished = shared.agg_done.load(Ordering::Acquire);
        let mut k = 0;
        root_port.recv_with(64, |from, d| {
            if from != agg || d.len() != len {
                mismatches += 1;
                return;
            }
            let s = u64::from_le_bytes(d[0..8].try_into().expect("8 bytes"));
            if s != root_next {
                out_of_order += 1;
            }
            root_next = s + 1;
            stamps[k] = u64::from_le_bytes(d[8..16].try_into().expect("8 bytes"));
            k += 1;
            if d[RAW_HEADER..] == expected[(s % ROWS as u64) as usize][..] {
                verified += 1;
            } else {
                mismatches += 1;
            }
        });
        if k > 0 {
            let now = base.elapsed().as_nanos() as u64;
            for &st in &stamps[..k] {
                hist.record(now.saturating_sub(st).max(1)).ok();
            }
        }
        if announced && agg_finished && k == 0 {
            break;
        }
        if stopped_at.is_some_and(|t| t.elapsed() > Duration::from_secs(5)) {
            timed_out = true;
            shared.agg_done.store(true, Ordering::Release);
            break;
        }
    }
    let out = GenOutcome {
        hist,
        verified,
        mismatches,
        out_of_order,
        cpu_seconds: cpu_delta(cpu0),
        wall_seconds: t0.elapsed().as_secs_f64(),
        core: core.filter(|_| pinned),
        timed_out,
    };
    unregister_thread();
    Ok(out)
}

pub(super) fn run(
    a: &DataplaneBenchConfig,
    mut ports: Vec<DpdkPort>,
    fabric: &RingLinks,
) -> Result<DataplaneReport, BenchError> {
    let c = a.children;
    let agg = aggregator(c) as usize;
    let e = a.segment_bytes / 4;
    let rows: Vec<Vec<Vec<u8>>> = (0..c)
        .map(|ch| {
            (0..ROWS)
                .map(|r| le_row((0..e).map(|i| input(c, ch, r as u64, i))))
                .collect()
        })
        .collect();
    let expected: Vec<Vec<u8>> = (0..ROWS)
        .map(|r| le_row((0..e).map(|i| expected(c, r as u64, i))))
        .collect();
    let child_queues: Vec<(usize, usize)> = fabric.rx_from[agg]
        .iter()
        .enumerate()
        .filter(|&(_, &from)| (from as usize) < c)
        .map(|(q, &from)| (q, from as usize))
        .collect();
    let root_port = ports.pop().expect("root port");
    let agg_port = ports.pop().expect("aggregator port");
    let children = ports;
    let plan = CorePlan::new();
    let shared = Shared::default();
    let base = Instant::now();
    let warmup = Duration::from_secs_f64((a.seconds / 4.0).min(0.25));
    let measure = Duration::from_secs_f64(a.seconds);
    let (agg_out, gen_out, window) = std::thread::scope(|s| -> Result<_, BenchError> {
        let agg_h = std::thread::Builder::new()
            .name("aggregator".into())
            .spawn_scoped(s, || {
                let r = aggregate(a, agg_port, &child_queues, &shared, plan.aggregator_core());
                shared.agg_done.store(true, Ordering::Release);
                r
            })
            .map_err(BenchError::io("spawning the aggregator thread"))?;
        let gen_h = std::thread::Builder::new()
            .name("generator".into())
            .spawn_scoped(s, || {
                let r = generate(
                    a,
                    children,
                    root_port,
                    &rows,
                    &expected,
                    &shared,
                    plan.other_core(0),
                    base,
                );
                // However it ended, the aggregator must not wait for it any longer.
                shared.senders_done.store(true, Ordering::Release);
                shared.agg_done.store(true, Ordering::Release);
                r
            })
            .map_err(BenchError::io("spawning the generator thread"))?;
        // Measurement window: [warm-up end, warm-up end + --seconds], or up to the moment the
        // senders stopped (--max-rounds) if that comes first.
        let snap = |t: Instant| {
            (
                t,
                shared.agg_in.load(Ordering::Relaxed),
                shared.agg_polls.load(Ordering::Relaxed),
                shared.agg_busy_ns.load(Ordering::Relaxed),
            )
        };
        let mut first = None;
        let last;
        loop {
            std::thread::sleep(Duration::from_millis(5));
            let now = Instant::now();
            let done = shared.senders_done.load(Ordering::Acquire)
                || shared.agg_done.load(Ordering::Acquire);
            if done
                && shared.senders_done.load(Ordering::Acquire)
                && !shared.stop.load(Ordering::Relaxed)
            {
                // The senders reached --max-rounds by themselves: measure the whole run.
                first = Some((base, 0, 0, 0));
            } else if first.is_none() && (now - base >= warmup || done) {
                first = Some(if done { (base, 0, 0, 0) } else { snap(now) });
            }
            if done || first.is_some_and(|f: (Instant, u64, u64, u64)| now - f.0 >= measure) {
                // When the senders stopped by themselves, wait for the aggregator to drain.
                while done && !shared.agg_done.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                last = snap(Instant::now());
                break;
            }
        }
        shared.stop.store(true, Ordering::Relaxed);
        let agg_out = agg_h
            .join()
            .map_err(|_| BenchError::Run("aggregator thread panicked".into()))??;
        let gen_out = gen_h
            .join()
            .map_err(|_| BenchError::Run("generator thread panicked".into()))??;
        Ok((agg_out, gen_out, (first.expect("set before last"), last)))
    })?;
    let ((t1, in1, _polls1, busy1), (t2, in2, _polls2, busy2)) = window;
    let secs = (t2 - t1).as_secs_f64().max(1e-9);
    let segs = in2 - in1;
    let mut notes = vec![
        "raw mode: port + aggregation kernel WITHOUT the engine's reliability layer (no acks, no retransmission, no pacing, no broadcast); lossless rings give back-pressure instead".into(),
        "children and root are driven by one load-generator thread; the aggregator thread is alone on its core".into(),
    ];
    if gen_out.timed_out {
        notes.push("the generator stopped waiting for the aggregator after 5 s".into());
    }
    if agg_out.bad > 0 || gen_out.out_of_order > 0 {
        notes.push(format!(
            "{} unexpected datagrams at the aggregator, {} sums out of order at the root",
            agg_out.bad, gen_out.out_of_order
        ));
    }
    notes.push(format!("aggregator port: {}", agg_out.drops));
    let threads = vec![
        ThreadInfo {
            name: "aggregator".into(),
            core: agg_out.core,
            cpu_seconds: agg_out.cpu_seconds,
            wall_seconds: agg_out.wall_seconds,
        },
        ThreadInfo {
            name: format!("generator ({} children + root)", c),
            core: gen_out.core,
            cpu_seconds: gen_out.cpu_seconds,
            wall_seconds: gen_out.wall_seconds,
        },
    ];
    let pinned = agg_out.core.is_some();
    let latency: Latency = latency_of(
        &gen_out.hist,
        "per segment: first child's send to the sum at the root (clock read once per burst)",
    );
    Ok(DataplaneReport {
        backend: Backend::Dpdk,
        mode: Mode::Raw,
        protection: None,
        segment_bytes: a.segment_bytes,
        children: c,
        segments_per_round: a.segments_per_round,
        rounds: segs / c as u64 / a.segments_per_round as u64,
        child_segments: segs,
        seconds: secs,
        child_mpps: segs as f64 / secs / 1e6,
        child_payload_gbps: segs as f64 * a.segment_bytes as f64 * 8.0 / secs / 1e9,
        aggregator_rx_mpps: segs as f64 / secs / 1e6,
        aggregator_cpu_share: agg_out
            .cpu_seconds
            .map(|x| x / agg_out.wall_seconds.max(1e-9)),
        aggregator_busy_fraction: Some((busy2 - busy1) as f64 / 1e9 / secs),
        aggregator_batch: None,
        aggregator_capacity_gbps: (busy2 > busy1).then(|| {
            segs as f64 * a.segment_bytes as f64 * 8.0 / ((busy2 - busy1) as f64 / 1e9) / 1e9
        }),
        latency,
        cores: Cores {
            available: plan.cores.len(),
            used: if pinned {
                plan.used(1)
            } else {
                plan.cores.len().max(1)
            },
            pinned,
            aggregator_thread: "aggregator".into(),
            aggregator_core: agg_out.core,
            threads,
        },
        verification: Verification {
            verified_rounds: gen_out.verified,
            mismatches: gen_out.mismatches + agg_out.bad + gen_out.out_of_order,
            checked_at:
                "root: every forwarded sum (segment), every byte, against the reference sum".into(),
        },
        emu: None,
        dpdk: None,
        notes,
    })
}
