//! `bench dataplane --backend emu`: every engine in the virtual-time emulator, rounds run
//! back to back on the calling thread; rates are per virtual second, and the wall-clock
//! figures say how fast the simulation ran.

use super::common::{
    aggregator, bench_engines, bench_topology, cpu_delta, expected, input, latency_of,
    new_histogram, root, thread_cpu_ns, CorePlan,
};
use super::{
    Backend, BenchError, Cores, DataplaneBenchConfig, DataplaneReport, EmuFigures, Mode,
    ThreadInfo, Verification,
};
use netstorm_dataplane::emu::{EmuConfig, Simulation};
use netstorm_dataplane::NodeId;
use std::time::{Duration, Instant};

pub(super) fn run(a: &DataplaneBenchConfig) -> Result<DataplaneReport, BenchError> {
    let c = a.children;
    let n = c + 2;
    let topo = bench_topology(
        c,
        a.link_gbps * 1e9,
        (a.link_latency_us * 1e3).round() as u64,
    );
    let (engines, _) = bench_engines(a, &topo, false, |_| true)?;
    let mut sim = Simulation::new(&topo, engines, EmuConfig::default())
        .map_err(|e| BenchError::Run(format!("emulator: {e}")))?;
    let elems = a.segment_bytes / 4 * a.segments_per_round;
    let mut hist = new_histogram();
    let (mut verified, mut mismatches) = (0u64, 0u64);
    let cpu0 = thread_cpu_ns();
    let wall0 = Instant::now();
    let limit = Duration::from_secs_f64(a.seconds);
    let mut rounds = 0u64;
    let (mut virtual_ns, mut events) = (0u64, 0u64);
    while rounds < a.max_rounds && (rounds == 0 || wall0.elapsed() < limit) {
        let r = rounds;
        for v in 0..n {
            let buf = sim.engine_mut(v as NodeId).buffer_mut();
            for (i, x) in buf.iter_mut().enumerate() {
                *x = input(c, v, r, i);
            }
        }
        let ev0 = sim.events_processed();
        let s = sim
            .run_round_all(r as u32, 60_000_000_000)
            .map_err(|e| BenchError::Run(format!("emulator round {r}: {e}")))?;
        events += sim.events_processed() - ev0;
        virtual_ns += s.completed_at - s.started_at;
        hist.record(s.sync_ns().max(1)).ok();
        if r.is_multiple_of(a.verify_every) {
            for v in [0usize, root(c) as usize] {
                let buf = sim.engine(v as NodeId).buffer();
                if buf.len() != elems
                    || buf
                        .iter()
                        .enumerate()
                        .any(|(i, &x)| x.to_bits() != expected(c, r, i).to_bits())
                {
                    mismatches += 1;
                }
            }
            verified += 1;
        }
        rounds += 1;
    }
    let wall = wall0.elapsed().as_secs_f64();
    let segs = rounds * (a.segments_per_round * c) as u64;
    let bits = segs as f64 * a.segment_bytes as f64 * 8.0;
    let vsec = virtual_ns as f64 / 1e9;
    let agg_rx = sim.engine(aggregator(c)).counters().rx_packets;
    let plan = CorePlan::new();
    let core = plan.aggregator_core();
    Ok(DataplaneReport {
        backend: Backend::Emu,
        mode: Mode::Engine,
        protection: Some(a.protection_mode().name()),
        segment_bytes: a.segment_bytes,
        children: c,
        segments_per_round: a.segments_per_round,
        rounds,
        child_segments: segs,
        seconds: vsec,
        child_mpps: segs as f64 / vsec.max(1e-12) / 1e6,
        child_payload_gbps: bits / vsec.max(1e-12) / 1e9,
        aggregator_rx_mpps: agg_rx as f64 / vsec.max(1e-12) / 1e6,
        aggregator_cpu_share: cpu_delta(cpu0).map(|x| x / wall.max(1e-9)),
        aggregator_busy_fraction: None,
        aggregator_capacity_gbps: None,
        aggregator_batch: None,
        latency: latency_of(
            &hist,
            "per round, virtual time: first start to the last node holding the result",
        ),
        cores: Cores {
            available: plan.cores.len(),
            used: 1,
            pinned: false,
            aggregator_thread: "main (all engines in one simulation thread)".into(),
            aggregator_core: core.filter(|_| false),
            threads: vec![ThreadInfo {
                name: "main".into(),
                core: None,
                cpu_seconds: cpu_delta(cpu0),
                wall_seconds: wall,
            }],
        },
        verification: Verification {
            verified_rounds: verified,
            mismatches,
            checked_at: "root and child 0, every element".into(),
        },
        emu: Some(EmuFigures {
            link_gbps: a.link_gbps,
            link_latency_us: a.link_latency_us,
            virtual_seconds: vsec,
            emulated_child_payload_gbps: bits / vsec.max(1e-12) / 1e9,
            emulated_child_mpps: segs as f64 / vsec.max(1e-12) / 1e6,
            wall_seconds: wall,
            wall_child_payload_gbps: bits / wall.max(1e-12) / 1e9,
            virtual_per_wall: vsec / wall.max(1e-12),
            events,
            events_per_wall_second: events as f64 / wall.max(1e-12),
        }),
        dpdk: None,
        notes: {
            let mut n = vec![
                "emu: rates are per virtual second (the emulated links bound them); wall figures are the simulator's speed".into(),
            ];
            n.push(format!(
                "packet protection: {} (engine default: encrypt)",
                a.protection_mode()
            ));
            n
        },
    })
}
