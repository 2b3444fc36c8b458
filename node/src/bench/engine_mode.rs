//! `bench dataplane`, engine mode in real time (`udp`, `dpdk`): the aggregator is
//! netstorm-dp's worker ([`Worker::run`]) — the data plane's one loop with the dp's hook —
//! alone on its core, its rounds requested through its node file by a [`Trainer`] stub; the
//! children and the root run the same loop with [`FixedRounds`], taking turns on one thread
//! per remaining core.
//!
//! A run is two phases: a few calibration rounds, then as many as fit in `seconds` (at most
//! `max_rounds`). Engine time runs on one clock base across both.

use super::common::{
    aggregator, bench_engines, bench_topology, cpu_delta, input, latency_of, new_histogram,
    node_name, pin_to, root, sums_match, thread_cpu_ns, CorePlan,
};
use super::{
    Backend, BenchError, Cores, DataplaneBenchConfig, DataplaneReport, Mode, ThreadInfo,
    Verification,
};
use crate::nodefile::NodeFile;
use crate::worker::{RoundMark, Worker, WorkerEvent, WorkerPort, WorkerState, DEFAULT_BATCH};
use netstorm_dataplane::engine::Engine;
use netstorm_dataplane::port::udp::{UdpConfig, UdpPort};
use netstorm_dataplane::port::{run_loops_in_turn, DriverConfig, DriverReport, FixedRounds, Turn};
use netstorm_dataplane::{wire, NodeId};
use std::cell::Cell;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What each thread of a phase runs before and after its loop (DPDK: EAL lcore ids).
pub(super) struct ThreadHooks<'a> {
    pub setup: &'a (dyn Fn() + Sync),
    pub teardown: &'a (dyn Fn() + Sync),
}

/// The aggregator's node file, removed when the run ends.
struct NodeFileOnDisk {
    file: Arc<NodeFile>,
    path: PathBuf,
}

impl NodeFileOnDisk {
    fn create(elems: usize) -> Result<Self, BenchError> {
        // Shared memory where there is some, as netstorm-dp's shm_dir.
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let path = dir.join(format!("netstorm-bench-{}.node", std::process::id()));
        let file = NodeFile::create(&path, 1, elems)
            .map_err(|e| BenchError::Run(format!("the aggregator's node file: {e}")))?;
        Ok(Self {
            file: Arc::new(file),
            path,
        })
    }
}

impl Drop for NodeFileOnDisk {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A trainer for the aggregator's worker, polled by the first peer thread between sweeps:
/// once the worker completed the requested round it checks the result (every
/// `verify_every`-th round and the phase's last, as a trainer reads it from the node file),
/// copies in the aggregator's contribution (zeros) and requests the next round.
struct Trainer<'a> {
    node_file: &'a NodeFile,
    children: usize,
    verify_every: u64,
    /// Rounds of the phase: request none at or past `end` (round + 1); check `last`.
    end: u64,
    last: u64,
    /// Round + 1 of the newest completed round looked at.
    looked_at: u64,
    zeros: Vec<f32>,
    result: Vec<f32>,
    verified: u64,
    mismatches: u64,
}

impl<'a> Trainer<'a> {
    fn new(node_file: &'a NodeFile, children: usize, verify_every: u64) -> Self {
        let elems = node_file.buffer_elems();
        Self {
            node_file,
            children,
            verify_every,
            end: 0,
            last: 0,
            looked_at: 0,
            zeros: vec![0.0; elems],
            result: vec![0.0; elems],
            verified: 0,
            mismatches: 0,
        }
    }

    /// Requests the phase's first round (and counts checks from zero).
    fn begin(&mut self, first_round: u32, rounds: u32) {
        self.verified = 0;
        self.mismatches = 0;
        self.end = u64::from(first_round) + u64::from(rounds);
        self.last = self.end - 1;
        self.request(u64::from(first_round) + 1);
    }

    fn request(&mut self, round_plus_one: u64) {
        // Only the trainer touches the buffer between a completion and the next request.
        self.node_file.write_buffer(0, &self.zeros);
        self.node_file.set_request(round_plus_one);
    }

    fn poll(&mut self) {
        let nf = self.node_file;
        let req = nf.request();
        if self.looked_at == req || nf.done(0) != req {
            return;
        }
        self.looked_at = req;
        let r = req - 1;
        if r.is_multiple_of(self.verify_every) || r == self.last {
            nf.read_buffer(0..self.result.len(), &mut self.result);
            self.verified += 1;
            if !sums_match(self.children, r, &self.result) {
                self.mismatches += 1;
            }
        }
        if req < self.end {
            self.request(req + 1);
        }
    }
}

/// A child or the root: its engine and port.
struct Peer {
    node: usize,
    engine: Engine,
    port: WorkerPort,
}

/// What one peer produced in one phase.
struct PeerOutcome {
    node: usize,
    report: DriverReport,
    verified: u64,
    mismatches: u64,
}

/// The aggregator's figures over one phase: from its first round's start to the end of the
/// iteration that completed its last.
struct AggregatorFigures {
    rounds: u64,
    elapsed: Duration,
    busy: Duration,
    busy_iterations: u64,
    rx_datagrams: u64,
    tx_datagrams: u64,
}

impl AggregatorFigures {
    fn between(first: &RoundMark, last: &RoundMark) -> Self {
        let (a, b) = (&first.stats, &last.stats);
        Self {
            rounds: u64::from(last.round - first.round) + 1,
            elapsed: Duration::from_nanos(last.at.saturating_sub(first.at)),
            busy: b.busy.saturating_sub(a.busy),
            busy_iterations: b.busy_iterations - a.busy_iterations,
            rx_datagrams: b.rx_datagrams - a.rx_datagrams,
            tx_datagrams: b.tx_datagrams - a.tx_datagrams,
        }
    }
}

/// One phase: the aggregator's figures, every peer's outcome, every thread (the
/// aggregator's first).
struct PhaseOutcome {
    aggregator: AggregatorFigures,
    peers: Vec<PeerOutcome>,
    threads: Vec<ThreadInfo>,
}

/// The peers (children and root) spread over the remaining cores, one thread per core; the
/// engines of one thread take turns instead of time-sharing the core through the scheduler.
fn peer_groups(children: usize, plan: &CorePlan) -> Vec<Vec<usize>> {
    let peers: Vec<usize> = (0..children + 2)
        .filter(|&v| v != aggregator(children) as usize)
        .collect();
    let groups = if plan.pinned() {
        (plan.cores.len() - 1).min(peers.len()).max(1)
    } else {
        1
    };
    (0..groups)
        .map(|g| peers.iter().copied().skip(g).step_by(groups).collect())
        .collect()
}

/// Everything a phase runs on.
struct Bench<'a> {
    a: &'a DataplaneBenchConfig,
    worker: Worker,
    peers: Vec<Peer>,
    clock_base: Instant,
    hooks: &'a ThreadHooks<'a>,
}

impl Bench<'_> {
    /// Runs rounds `first_round .. first_round + rounds` on every node.
    fn phase(
        &mut self,
        trainer: &mut Trainer<'_>,
        first_round: u32,
        rounds: u32,
        linger: Duration,
    ) -> Result<PhaseOutcome, BenchError> {
        let a = self.a;
        let c = a.children;
        let plan = CorePlan::new();
        let groups = peer_groups(c, &plan);
        let peer_cfg = DriverConfig {
            batch: a.batch,
            // A peer thread shares its core with another busy thread only when nothing is
            // pinned.
            idle_backoff: (!plan.pinned() && a.peer_idle_sleep_us > 0)
                .then(|| Duration::from_micros(a.peer_idle_sleep_us)),
            max_duration: Duration::from_secs_f64(a.seconds * 4.0 + 60.0),
            linger,
        };
        let last = u64::from(first_round) + u64::from(rounds) - 1;
        let verify_every = a.verify_every;
        // Child 0 and the root check the sums of every `verify_every`-th round and the last.
        let check = move |v: usize, r: u32, buf: &[f32], counts: &(Cell<u64>, Cell<u64>)| {
            let r = u64::from(r);
            if (v == 0 || v == root(c) as usize) && (r.is_multiple_of(verify_every) || r == last) {
                counts.0.set(counts.0.get() + 1);
                if !sums_match(c, r, buf) {
                    counts.1.set(counts.1.get() + 1);
                }
            }
        };
        let fill = move |v: usize, r: u32, buf: &mut [f32]| {
            for (i, x) in buf.iter_mut().enumerate() {
                *x = input(c, v, u64::from(r), i);
            }
        };
        let mut members: Vec<Vec<&mut Peer>> = groups.iter().map(|_| Vec::new()).collect();
        for p in self.peers.iter_mut() {
            let g = groups.iter().position(|g| g.contains(&p.node));
            members[g.expect("every peer in a group")].push(p);
        }
        trainer.begin(first_round, rounds);
        let worker = &mut self.worker;
        worker.stop.store(false, Ordering::Relaxed);
        let stop = worker.stop.clone();
        let node_file = worker.node_file.clone();
        let (clock_base, hooks) = (self.clock_base, self.hooks);
        type PeersResult = Result<(Vec<PeerOutcome>, ThreadInfo), BenchError>;
        let (aggregator, peers, threads) = std::thread::scope(|s| {
            let core = plan.aggregator_core();
            let agg = std::thread::Builder::new()
                .name("aggregator".into())
                .spawn_scoped(s, move || {
                    let pinned = pin_to(core);
                    (hooks.setup)();
                    let cpu0 = thread_cpu_ns();
                    let t0 = Instant::now();
                    let run = worker.run();
                    let info = ThreadInfo {
                        name: "aggregator".into(),
                        core: core.filter(|_| pinned),
                        cpu_seconds: cpu_delta(cpu0),
                        wall_seconds: t0.elapsed().as_secs_f64(),
                    };
                    (hooks.teardown)();
                    (run, info)
                })
                .map_err(BenchError::io("spawning the aggregator thread"))?;
            let mut trainer_slot = Some(&mut *trainer);
            let mut handles = Vec::new();
            for (g, group) in members.into_iter().enumerate() {
                let core = plan.other_core(g);
                // The first peer thread is also the aggregator's trainer.
                let mut trainer = trainer_slot.take();
                let (fill, check, peer_cfg) = (&fill, &check, &peer_cfg);
                let spawned = std::thread::Builder::new()
                    .name(format!("peers{g}"))
                    .spawn_scoped(s, move || -> PeersResult {
                        let pinned = pin_to(core);
                        (hooks.setup)();
                        let cpu0 = thread_cpu_ns();
                        let t0 = Instant::now();
                        let name = group
                            .iter()
                            .map(|p| node_name(c, p.node))
                            .collect::<Vec<_>>()
                            .join("+");
                        let counts: Vec<(Cell<u64>, Cell<u64>)> =
                            group.iter().map(|_| Default::default()).collect();
                        let ids: Vec<usize> = group.iter().map(|p| p.node).collect();
                        let mut turns: Vec<_> = group
                            .into_iter()
                            .zip(&counts)
                            .map(|(p, counts)| {
                                let Peer { node, engine, port } = p;
                                let v = *node;
                                Turn {
                                    engine,
                                    port,
                                    hook: FixedRounds::new(
                                        first_round,
                                        rounds,
                                        peer_cfg,
                                        move |r: u32, b: &mut [f32]| fill(v, r, b),
                                        move |r: u32, b: &[f32]| check(v, r, b, counts),
                                    ),
                                }
                            })
                            .collect();
                        let stats = run_loops_in_turn(
                            &mut turns,
                            peer_cfg.batch,
                            peer_cfg.idle_backoff,
                            clock_base,
                            || {
                                if let Some(t) = trainer.as_mut() {
                                    t.poll();
                                }
                            },
                        );
                        let info = ThreadInfo {
                            name: name.clone(),
                            core: core.filter(|_| pinned),
                            cpu_seconds: cpu_delta(cpu0),
                            wall_seconds: t0.elapsed().as_secs_f64(),
                        };
                        (hooks.teardown)();
                        let stats = stats.map_err(BenchError::port(name))?;
                        let outs = turns
                            .into_iter()
                            .zip(&stats)
                            .zip(ids.iter().zip(&counts))
                            .map(|((t, st), (&node, counts))| PeerOutcome {
                                node,
                                report: t.hook.into_report(st),
                                verified: counts.0.get(),
                                mismatches: counts.1.get(),
                            })
                            .collect();
                        Ok((outs, info))
                    });
                match spawned {
                    Ok(h) => handles.push(h),
                    Err(e) => {
                        stop.store(true, Ordering::Relaxed);
                        return Err(BenchError::Io {
                            what: "spawning a peer thread".into(),
                            source: e,
                        });
                    }
                }
            }
            // The peers linger after their last round, so the aggregator's completion falls
            // within their lifetime; then it may stop.
            let peer_results: Vec<PeersResult> = handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(BenchError::Run("a peer thread panicked".into())))
                })
                .collect();
            let deadline = Instant::now() + Duration::from_secs(5);
            while node_file.done(0) <= last && !agg.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            stop.store(true, Ordering::Relaxed);
            let (run, agg_info) = agg
                .join()
                .map_err(|_| BenchError::Run("the aggregator thread panicked".into()))?;
            let run = run
                .map_err(|e| BenchError::Run(format!("aggregator (netstorm-dp's worker): {e}")))?;
            let mut peers = Vec::new();
            let mut threads = vec![agg_info];
            for r in peer_results {
                let (outs, info) = r?;
                peers.extend(outs);
                threads.push(info);
            }
            Ok::<_, BenchError>((run, peers, threads))
        })?;
        let (Some(first), Some(done)) = (&aggregator.first_start, &aggregator.last_done) else {
            return Err(BenchError::Run(format!(
                "the aggregator (netstorm-dp's worker) completed no round of {first_round}..={last}"
            )));
        };
        if first.round != first_round || u64::from(done.round) != last {
            return Err(BenchError::Run(format!(
                "the aggregator (netstorm-dp's worker) ran rounds {}..={} of {first_round}..={last}",
                first.round, done.round
            )));
        }
        // The last round's result, as its trainer would read it.
        trainer.poll();
        Ok(PhaseOutcome {
            aggregator: AggregatorFigures::between(first, done),
            peers,
            threads,
        })
    }
}

/// Calibrates with a few rounds, then runs as many as fit in `seconds` (at most
/// `max_rounds`) and builds the report. `ports` are every node's, in node order; the
/// aggregator's is handed back (its counters go into the caller's notes).
pub(super) fn run_engine_backend(
    a: &DataplaneBenchConfig,
    backend: Backend,
    mut ports: Vec<WorkerPort>,
    hooks: &ThreadHooks<'_>,
) -> Result<(DataplaneReport, WorkerPort), BenchError> {
    let c = a.children;
    let agg = aggregator(c) as usize;
    let topo = bench_topology(c, a.link_gbps * 1e9, 0);
    // The aggregator's worker takes the policy from its channel, as in netstorm-dp.
    let (mut engines, policy) = bench_engines(a, &topo, true, |v| v != agg)?;
    let agg_engine = engines.remove(agg);
    let agg_port = ports.remove(agg);
    let peers = engines
        .into_iter()
        .zip(ports)
        .zip((0..c + 2).filter(|&v| v != agg))
        .map(|((engine, port), node)| Peer { node, engine, port })
        .collect();
    let elems = agg_engine.buffer().len();
    let node_file = NodeFileOnDisk::create(elems)?;
    let (policy_tx, policy_rx) = mpsc::channel();
    let (event_tx, event_rx) = mpsc::channel();
    policy_tx
        .send((Arc::new(policy), 0))
        .expect("the worker's receiver is alive");
    let worker = Worker {
        index: 0,
        range: 0..elems,
        engine: agg_engine,
        port: agg_port,
        node_file: node_file.file.clone(),
        policies: policy_rx,
        events: event_tx,
        stop: Arc::new(AtomicBool::new(false)),
        idle_backoff: None,
        clock_base: Instant::now(),
        report_every: crate::worker::REPORT_EVERY,
        sample_every: crate::worker::SAMPLE_EVERY,
        batch: a.batch,
        state: WorkerState::default(),
    };
    let mut bench = Bench {
        a,
        clock_base: worker.clock_base,
        worker,
        peers,
        hooks,
    };
    let mut trainer = Trainer::new(&node_file.file, c, a.verify_every);
    let warm = a.max_rounds.min(8) as u32;
    let cal = bench.phase(&mut trainer, 0, warm, Duration::from_millis(20))?;
    refused_policy(&event_rx)?;
    let per_round = cal
        .aggregator
        .elapsed
        .max(Duration::from_micros(1))
        .as_secs_f64()
        / f64::from(warm);
    let left = a.max_rounds.saturating_sub(u64::from(warm));
    let mut notes = vec![format!(
        "aggregator: netstorm-dp's worker loop (netstorm_node::worker::Worker::run: the data plane's one real-time loop, recv_each/send_each{}, with the dp's hook: policy intake, node-file round gate, telemetry sampling, counters), batch {} (netstorm-dp: {DEFAULT_BATCH}); its rounds are requested through its node file by the first peer thread, which copies zeros in and checks the result like a trainer",
        if backend == Backend::Dpdk { " in place from and into mbufs" } else { "" },
        a.batch
    )];
    notes.push(format!(
        "packet protection: {} (engine default: encrypt)",
        a.protection_mode()
    ));
    let phase = if left == 0 {
        notes.push("--max-rounds reached during calibration: figures are from those rounds".into());
        cal
    } else {
        let rounds = ((a.seconds / per_round) as u64).clamp(1, left.min(u64::from(u32::MAX) / 2));
        bench.phase(&mut trainer, warm, rounds as u32, Duration::from_millis(50))?
    };
    refused_policy(&event_rx)?;
    let agg_figures = &phase.aggregator;
    let agg_thread = &phase.threads[0];
    let rounds = agg_figures.rounds;
    let secs = agg_figures.elapsed.as_secs_f64().max(1e-9);
    let segs = rounds * (a.segments_per_round * c) as u64;
    let mut hist = new_histogram();
    let child0 = phase.peers.iter().find(|p| p.node == 0).expect("child 0");
    for &ns in &child0.report.round_result_ns {
        hist.record(ns.max(1)).ok();
    }
    let plan = CorePlan::new();
    let threads = phase.threads.clone();
    let mut used: Vec<usize> = threads.iter().filter_map(|t| t.core).collect();
    used.sort_unstable();
    used.dedup();
    if plan.others_share(c + 1) {
        notes.push(format!(
            "{} non-aggregator engines on {} thread(s): the engines of one thread take turns (one poll each per sweep){}",
            c + 1,
            phase.threads.len() - 1,
            if plan.pinned() {
                ", busy-polling".to_string()
            } else {
                format!(
                    "; nothing is pinned, so they sleep {} us (--peer-idle-sleep-us) after an idle sweep",
                    a.peer_idle_sleep_us
                )
            }
        ));
    }
    let busy = agg_figures.busy.as_secs_f64();
    let bits = segs as f64 * a.segment_bytes as f64 * 8.0;
    let report = DataplaneReport {
        backend,
        mode: Mode::Engine,
        protection: Some(a.protection_mode().name()),
        segment_bytes: a.segment_bytes,
        children: c,
        segments_per_round: a.segments_per_round,
        rounds,
        child_segments: segs,
        seconds: secs,
        child_mpps: segs as f64 / secs / 1e6,
        child_payload_gbps: bits / secs / 1e9,
        aggregator_rx_mpps: agg_figures.rx_datagrams as f64 / secs / 1e6,
        aggregator_cpu_share: agg_thread
            .cpu_seconds
            .map(|x| x / agg_thread.wall_seconds.max(1e-9)),
        aggregator_busy_fraction: Some(busy / secs),
        aggregator_batch: (agg_figures.busy_iterations > 0).then(|| {
            (agg_figures.rx_datagrams + agg_figures.tx_datagrams) as f64
                / agg_figures.busy_iterations as f64
        }),
        aggregator_capacity_gbps: (busy > 0.0).then(|| bits / busy / 1e9),
        latency: latency_of(
            &hist,
            "per round at child 0: round start to result ready (reduce up, broadcast down)",
        ),
        cores: Cores {
            available: plan.cores.len(),
            used: if used.is_empty() {
                plan.used(c + 1)
            } else {
                used.len()
            },
            pinned: !used.is_empty(),
            aggregator_thread: "aggregator".into(),
            aggregator_core: agg_thread.core,
            threads,
        },
        verification: Verification {
            verified_rounds: phase.peers.iter().map(|o| o.verified).sum::<u64>()
                + trainer.verified,
            mismatches: phase.peers.iter().map(|o| o.mismatches).sum::<u64>()
                + trainer.mismatches,
            checked_at: "root, child 0 and the aggregator's node file (as a trainer reads it), every element of every sampled round".into(),
        },
        emu: None,
        dpdk: None,
        notes,
    };
    Ok((report, bench.worker.port))
}

/// A policy the aggregator's worker refused is a setup error, not something to wait out.
fn refused_policy(events: &mpsc::Receiver<WorkerEvent>) -> Result<(), BenchError> {
    for ev in events.try_iter() {
        if let WorkerEvent::InstallFailed { epoch, error, .. } = ev {
            return Err(BenchError::Run(format!(
                "the aggregator's worker refused policy epoch {epoch}: {error}"
            )));
        }
    }
    Ok(())
}

/// `bench dataplane --backend udp`: one socket per node on loopback.
pub(super) fn run_udp(a: &DataplaneBenchConfig) -> Result<DataplaneReport, BenchError> {
    let c = a.children;
    let n = c + 2;
    let elems = a.segment_bytes / 4;
    let max_len = wire::HEADER_LEN + elems * 4 + wire::AUTH_TAG_LEN;
    let lo: SocketAddr = "127.0.0.1:0".parse().expect("an address");
    let mut ports = Vec::with_capacity(n);
    for v in 0..n {
        let mut cfg = UdpConfig::new(lo);
        cfg.max_datagram_len = max_len.max(1500);
        cfg.socket_buffer_bytes = Some(8 << 20);
        ports.push(UdpPort::open(&cfg).map_err(BenchError::udp(format!(
            "opening {}'s UDP port",
            node_name(c, v)
        )))?);
    }
    let addrs: Vec<SocketAddr> = ports.iter().map(|p| p.local_addr()).collect();
    let agg = aggregator(c);
    for (v, p) in ports.iter_mut().enumerate() {
        let peers: Vec<(NodeId, SocketAddr)> = if v == agg as usize {
            (0..n)
                .filter(|&u| u != v)
                .map(|u| (u as NodeId, addrs[u]))
                .collect()
        } else {
            vec![(agg, addrs[agg as usize])]
        };
        p.set_peers(&peers)
            .map_err(BenchError::udp(format!("{}'s peers", node_name(c, v))))?;
    }
    let ports = ports
        .into_iter()
        .map(|p| WorkerPort::Udp(Box::new(p)))
        .collect();
    let hooks = ThreadHooks {
        setup: &|| {},
        teardown: &|| {},
    };
    let (mut r, _) = run_engine_backend(a, Backend::Udp, ports, &hooks)?;
    r.notes
        .push("udp: one socket per node on 127.0.0.1 (recvmmsg/sendmmsg, GSO/GRO when the kernel has them)".into());
    Ok(r)
}
