//! `netstorm-dp`: the data plane of one node.
//!
//! Loads the cluster config, refuses to start if another live dp serves the node (lock file),
//! creates the shared-memory rings and the node file, opens one UDP socket per worker (or, for
//! backend "dpdk", initializes the EAL and opens the node's DPDK port from its `dpdk` file —
//! one queue pair per worker) and runs one pinned poll-mode worker per configured core (each
//! owns an engine for its element range). The main thread moves policies from the policy ring
//! to the workers, link-rate estimates from the workers to the telemetry ring (summed over the
//! workers: each worker's engine paces its own share of the node's traffic over the same
//! links), and writes counters (JSON) to `<shm_dir>/netstorm-<job>-<node>.dp-stats.json` (and
//! to stderr with `--stats`).

use anyhow::{bail, Context};
use clap::Parser;
use netstorm_dataplane::engine::{Counters, Engine, EngineConfig};
use netstorm_dataplane::policy::Policy;
use netstorm_dataplane::port::udp::{UdpConfig, UdpPort};
use netstorm_dataplane::shm::{RingConfig, ShmRegion};
use netstorm_dataplane::shm_records::{PolicyAssembler, TelemetryRecord};
use netstorm_node::config::{Backend, ClusterConfig, NodeConfig};
use netstorm_node::metrics::RoundDurations;
use netstorm_node::nodefile::{NodeFile, NodeSet};
use netstorm_node::proto::{link_record, peer_record, LinkEstimate, PeerSilence};
use netstorm_node::sys::{self, PidLock};
use netstorm_node::worker::{
    PortCounters, Worker, WorkerEvent, WorkerPort, WorkerState, DEFAULT_BATCH, REPORT_EVERY,
    SAMPLE_EVERY,
};
use serde::Serialize;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
#[command(name = "netstorm-dp", about = "NetStorm data plane for one node")]
struct Args {
    /// Cluster config (TOML).
    #[arg(long)]
    config: PathBuf,
    /// This node's name in the config.
    #[arg(long)]
    node: String,
    /// Also print the counters line on stderr every interval.
    #[arg(long)]
    stats: bool,
    /// Counters interval in milliseconds.
    #[arg(long, default_value_t = 500)]
    stats_interval_ms: u64,
}

/// The counters file (one JSON object, rewritten every interval).
#[derive(Debug, Default, Serialize)]
struct DpStats {
    node: String,
    pid: u32,
    workers: usize,
    /// Policy epochs installed from the policy ring (in every worker), in order.
    installed_epochs: Vec<u32>,
    /// Epoch the newest round started under.
    active_epoch: u32,
    /// Rounds completed at every worker.
    rounds_completed: u64,
    policy_records: u64,
    policy_errors: u64,
    telemetry_records: u64,
    telemetry_dropped: u64,
    rx_datagrams: u64,
    tx_datagrams: u64,
    rx_unknown_peer: u64,
    /// Frames or datagrams the port dropped before the engine saw them.
    rx_port_dropped: u64,
    rx_malformed: u64,
    rx_stale_epoch: u64,
    /// Bytes of datagrams the engines accepted / sent.
    rx_bytes: u64,
    tx_bytes: u64,
    /// Datagrams whose packet MAC did not verify (dropped).
    rx_bad_mac: u64,
    /// Data packets whose payload type is not the job's `wire` (dropped).
    rx_wrong_payload: u64,
    /// Finite values that saturated when encoded to a 16-bit `wire`.
    saturated: u64,
    /// NaN or infinite values in the trainer's gradients (reported, never altered).
    nonfinite_inputs: u64,
    tx_retransmits: u64,
    loss_detected: u64,
    tx_would_block: u64,
    /// Round durations (first worker starting to last completing), a histogram.
    round_durations: RoundDurations,
    /// Datagrams received without a kernel receive stamp (the kernel refused
    /// `SO_TIMESTAMPNS`, or stamps were missing): see `estimates_degraded`.
    rx_unstamped: u64,
    /// Arrival times fell back to one clock read per receive batch: delay and rate estimates
    /// (and the link estimates sent to the cp) are coarser than the kernel's stamps allow.
    estimates_degraded: bool,
    uptime_s: f64,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("netstorm-dp: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let cfg = ClusterConfig::load(&args.config)?;
    // Real hosts never run on keys derived from the public job id (issue 20).
    cfg.require_secret()?;
    let me = cfg.node(&args.node)?.clone();
    // Bad DPDK setup is refused before anything starts.
    let dpdk = dpdk_setup(&cfg, &me)?;
    std::fs::create_dir_all(&cfg.shm_dir)
        .with_context(|| format!("creating shm_dir {}", cfg.shm_dir.display()))?;
    let lock_path = cfg.dp_lock_path(&me.name);
    let _lock = match PidLock::acquire(&lock_path)
        .with_context(|| format!("lock file {}", lock_path.display()))?
    {
        Ok(l) => l,
        Err(pid) => bail!(
            "node '{}' of job {} is already served by a live netstorm-dp (pid {}, lock file {}); refusing to start a second one",
            me.name,
            cfg.job,
            pid.map_or("unknown".to_string(), |p| p.to_string()),
            lock_path.display()
        ),
    };
    // The DPDK port (one queue pair per worker) opens before any file is made: an EAL or
    // device failure leaves nothing.
    let mut dpdk_ports = match &dpdk {
        Some(setup) => {
            let max_datagram = engine_config(&cfg, &me, 0).max_datagram_len();
            let file = me.dpdk.as_deref().unwrap_or(Path::new("?")).display();
            open_dpdk(setup, max_datagram)
                .with_context(|| format!("node '{}', DPDK setup {file}", me.name))?
        }
        None => Vec::new(),
    }
    .into_iter();
    let region = ShmRegion::create(cfg.ring_path(&me.name), RingConfig::default())?;
    let mut policy_rx = region.policy_consumer()?;
    let mut telemetry_tx = region.telemetry_producer()?;
    let workers = me.cores.len();
    let node_file = Arc::new(NodeFile::create(
        &cfg.node_file_path(&me.name),
        workers,
        cfg.buffer_elems,
    )?);
    // Every configured node takes part until a coordinator says otherwise (issue 19).
    node_file.set_members(NodeSet::first(cfg.nodes.len()));
    let stop = Arc::new(AtomicBool::new(false));
    sys::catch_termination_signals();
    let n = cfg.nodes.len();
    let (ev_tx, ev_rx) = mpsc::channel();
    let clock_base = Instant::now();
    let mut policy_txs = Vec::new();
    let mut handles = Vec::new();
    for (w, &core) in me.cores.iter().enumerate() {
        let range = cfg.worker_range(w, workers);
        let engine = Engine::new(engine_config(&cfg, &me, w), &cfg.topology)
            .with_context(|| format!("worker {w}: engine for {} elements", range.len()))?;
        let port = match dpdk_ports.next() {
            Some(p) => p,
            None => {
                let mut uc = UdpConfig::new(me.worker_bind_addr(w));
                uc.max_datagram_len = uc.max_datagram_len.max(engine.config().max_datagram_len());
                uc.peers = cfg
                    .nodes
                    .iter()
                    .filter(|o| o.id != me.id)
                    .map(|o| (o.id, o.worker_addr(w)))
                    .collect();
                WorkerPort::Udp(Box::new(
                    UdpPort::open(&uc).with_context(|| format!("worker {w}"))?,
                ))
            }
        };
        let dpdk_thread = !matches!(port, WorkerPort::Udp(_));
        let (ptx, prx) = mpsc::channel::<(Arc<Policy>, u32)>();
        policy_txs.push(ptx);
        let mut worker = Worker {
            index: w,
            range,
            engine,
            port,
            node_file: node_file.clone(),
            policies: prx,
            events: ev_tx.clone(),
            stop: stop.clone(),
            idle_backoff: cfg.idle_backoff_us.map(Duration::from_micros),
            clock_base,
            report_every: REPORT_EVERY,
            sample_every: SAMPLE_EVERY,
            batch: DEFAULT_BATCH,
            state: WorkerState::default(),
        };
        handles.push(
            std::thread::Builder::new()
                .name(format!("dp-worker-{w}"))
                .spawn(move || {
                    if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                        eprintln!("netstorm-dp: worker {w}: could not pin to core {core}; running unpinned");
                    }
                    if dpdk_thread {
                        register_dpdk_thread(w);
                    }
                    // A fatal error reaches the main thread as WorkerEvent::Fatal.
                    let _ = worker.run();
                    if dpdk_thread {
                        unregister_dpdk_thread();
                    }
                })?,
        );
    }
    drop(ev_tx);
    let net = match &me.dpdk {
        Some(file) => format!("dpdk {} ({})", me.address, file.display()),
        None => match me.bind {
            Some(b) => format!("udp {b}..+{workers} (peers reach it at {})", me.address),
            None => format!("udp {}..+{}", me.address, workers),
        },
    };
    eprintln!(
        "netstorm-dp: node '{}' (id {}) job {}: {} worker(s) on cores {:?}, {net}, rings {}, node file {}",
        me.name,
        me.id,
        cfg.job,
        workers,
        me.cores,
        region.path().display(),
        node_file.path().display()
    );

    let stats_path = cfg
        .shm_dir
        .join(format!("netstorm-{}-{}.dp-stats.json", cfg.job, me.name));
    let mut stats = DpStats {
        node: me.name.clone(),
        pid: std::process::id(),
        workers,
        ..Default::default()
    };
    let start = Instant::now();
    let mut assembler = PolicyAssembler::new(8 << 20);
    let mut newest_epoch: Option<u32> = None;
    // epoch -> workers that installed it
    let mut installs: Vec<(u32, usize)> = Vec::new();
    // Per round in flight: (slowest worker duration so far, workers completed).
    let mut completing: std::collections::BTreeMap<u32, (u64, usize)> = Default::default();
    let mut counters: Vec<(Counters, PortCounters)> = vec![Default::default(); workers];
    let mut next_stats = Instant::now();
    let interval = Duration::from_millis(args.stats_interval_ms.max(10));
    let mut tbuf = [0u8; TelemetryRecord::LEN];
    // Per (neighbour, worker): the worker's newest estimate of the link to it.
    let mut link_latest: Vec<Vec<Option<LinkEstimate>>> = vec![vec![None; workers]; n];
    // Per node: the newest time (dp clock) any worker heard from it (0 = never).
    let mut peer_heard: Vec<u64> = vec![0; n];
    let result = loop {
        if let Some(sig) = sys::take_signal() {
            eprintln!("netstorm-dp: signal {sig}, stopping");
            break Ok(());
        }
        // Policy ring → workers.
        loop {
            match policy_rx.pop_with(|chunk| assembler.push_chunk(chunk)) {
                Ok(None) => break,
                Ok(Some(Ok(None))) => {}
                Ok(Some(Ok(Some(rec)))) => {
                    stats.policy_records += 1;
                    match serde_json::from_slice::<Policy>(&rec.policy) {
                        Ok(p) if p.epoch != rec.epoch => {
                            stats.policy_errors += 1;
                            eprintln!("netstorm-dp: policy record epoch {} carries a policy of epoch {}; ignored", rec.epoch, p.epoch);
                        }
                        Ok(_) if newest_epoch.is_some_and(|e| rec.epoch <= e) => {
                            // A re-sent policy (cp restart): already installed.
                        }
                        Ok(p) => {
                            newest_epoch = Some(rec.epoch);
                            let p = Arc::new(p);
                            let at = rec.activate_round.min(u32::MAX as u64) as u32;
                            for t in &policy_txs {
                                let _ = t.send((p.clone(), at));
                            }
                            installs.push((rec.epoch, 0));
                        }
                        Err(e) => {
                            stats.policy_errors += 1;
                            eprintln!(
                                "netstorm-dp: policy of epoch {} is not valid JSON: {e}",
                                rec.epoch
                            );
                        }
                    }
                }
                Ok(Some(Err(e))) => {
                    stats.policy_errors += 1;
                    eprintln!("netstorm-dp: policy ring: {e}");
                }
                Err(e) => {
                    stats.policy_errors += 1;
                    eprintln!("netstorm-dp: policy ring: {e}");
                    break;
                }
            }
        }
        // Worker events.
        let mut fatal = None;
        while let Ok(ev) = ev_rx.try_recv() {
            match ev {
                WorkerEvent::Installed { epoch, .. } => {
                    if let Some(e) = installs.iter_mut().find(|(e, _)| *e == epoch) {
                        e.1 += 1;
                        if e.1 == workers {
                            node_file.set_installed_epoch(epoch as u64);
                            stats.installed_epochs.push(epoch);
                            eprintln!("netstorm-dp: installed policy epoch {epoch}");
                        }
                    }
                }
                WorkerEvent::InstallFailed {
                    worker,
                    epoch,
                    error,
                } => {
                    stats.policy_errors += 1;
                    eprintln!(
                        "netstorm-dp: worker {worker}: policy epoch {epoch} rejected: {error}"
                    );
                }
                WorkerEvent::Completed {
                    round, duration_ns, ..
                } => {
                    // A round's duration at this node: its slowest worker's.
                    let e = completing.entry(round).or_insert((0u64, 0usize));
                    e.0 = e.0.max(duration_ns);
                    e.1 += 1;
                    if e.1 == workers {
                        stats.round_durations.observe(e.0 as f64 / 1e9);
                        completing.remove(&round);
                    }
                    // Rounds some worker never completes (a restart) are not kept forever.
                    while completing.len() > 64 {
                        completing.pop_first();
                    }
                }
                WorkerEvent::Started { epoch, .. } => {
                    stats.active_epoch = epoch;
                    node_file.set_active_epoch(epoch as u64);
                }
                WorkerEvent::Links { worker, links } => {
                    for e in links {
                        let Some(per_worker) = link_latest.get_mut(e.to as usize) else {
                            continue;
                        };
                        per_worker[worker] = Some(e);
                        // The link's estimate: the sum of every worker's recent estimate
                        // (workers of one node run the same rounds at the same time).
                        let fresh = 2 * REPORT_EVERY.as_nanos() as u64;
                        let recent =
                            || per_worker.iter().flatten().filter(|o| o.at + fresh >= e.at);
                        let bps = recent().map(|o| o.bps).sum();
                        // One worker that saw the link's queue saw it full.
                        let lower_bound = recent().all(|o| o.lower_bound);
                        let rec = link_record(&LinkEstimate {
                            bps,
                            lower_bound,
                            ..e
                        });
                        let len = rec.emit(&mut tbuf).unwrap_or(0);
                        match telemetry_tx.try_push(&tbuf[..len]) {
                            Ok(()) => stats.telemetry_records += 1,
                            Err(_) => stats.telemetry_dropped += 1,
                        }
                    }
                }
                WorkerEvent::Counters {
                    worker,
                    engine,
                    port,
                } => counters[worker] = (*engine, *port),
                WorkerEvent::Peers {
                    worker,
                    at,
                    silence_ns,
                } => {
                    for (v, s) in silence_ns.iter().enumerate() {
                        if let (Some(s), Some(h)) = (s, peer_heard.get_mut(v)) {
                            *h = (*h).max(at.saturating_sub(*s).max(1));
                        }
                    }
                    // Once per report interval (worker 0's report), the node's view: a peer
                    // any worker heard is alive.
                    if worker == 0 {
                        for (peer, &h) in peer_heard.iter().enumerate() {
                            if peer == me.id as usize {
                                continue;
                            }
                            let rec = peer_record(&PeerSilence {
                                node: me.id,
                                peer: peer as u16,
                                // Never heard: silent since this dp started (its clock's
                                // origin), not "silent forever" — a peer whose dp starts a
                                // moment later is not lost (was: None, counted as silent at
                                // once by the coordinator).
                                silence_ns: Some(at.saturating_sub(h)),
                                at,
                            });
                            let len = rec.emit(&mut tbuf).unwrap_or(0);
                            match telemetry_tx.try_push(&tbuf[..len]) {
                                Ok(()) => stats.telemetry_records += 1,
                                Err(_) => stats.telemetry_dropped += 1,
                            }
                        }
                    }
                }
                WorkerEvent::Fatal { worker, error } => {
                    fatal = Some(anyhow::anyhow!("worker {worker}: {error}"))
                }
            }
        }
        if let Some(e) = fatal {
            break Err(e);
        }
        if handles.iter().any(|h| h.is_finished()) {
            break Err(anyhow::anyhow!("a worker thread ended unexpectedly"));
        }
        if Instant::now() >= next_stats {
            next_stats = Instant::now() + interval;
            stats.rounds_completed = node_file.done_all();
            let sum = |f: &dyn Fn(&(Counters, PortCounters)) -> u64| counters.iter().map(f).sum();
            stats.rx_datagrams = sum(&|c| c.1.rx);
            stats.tx_datagrams = sum(&|c| c.1.tx);
            stats.rx_unknown_peer = sum(&|c| c.1.rx_unknown_peer);
            stats.rx_port_dropped = sum(&|c| c.1.rx_dropped);
            stats.tx_would_block = sum(&|c| c.1.tx_would_block);
            stats.rx_unstamped = sum(&|c| c.1.rx_unstamped);
            stats.estimates_degraded = stats.rx_unstamped > 0;
            stats.rx_malformed = sum(&|c| c.0.rx_malformed);
            stats.rx_stale_epoch = sum(&|c| c.0.rx_stale_epoch);
            stats.rx_wrong_payload = sum(&|c| c.0.rx_wrong_payload);
            stats.rx_bytes = sum(&|c| c.0.rx_bytes);
            stats.tx_bytes = sum(&|c| c.0.tx_bytes);
            stats.rx_bad_mac = sum(&|c| c.0.rx_bad_mac);
            stats.saturated = sum(&|c| c.0.saturated);
            stats.nonfinite_inputs = sum(&|c| c.0.nonfinite_inputs);
            stats.tx_retransmits = sum(&|c| c.0.tx_retransmits);
            stats.loss_detected = sum(&|c| c.0.loss_detected);
            stats.uptime_s = start.elapsed().as_secs_f64();
            let json = serde_json::to_string(&stats)?;
            let tmp = stats_path.with_extension("json.tmp");
            // Owner-only, like the rings and node files beside it.
            let written = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .and_then(|mut f| std::io::Write::write_all(&mut f, json.as_bytes()));
            if written.is_ok() {
                let _ = std::fs::rename(&tmp, &stats_path);
            }
            if args.stats {
                eprintln!("netstorm-dp stats: {json}");
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    result
}

/// Idle links carry a heartbeat this often (see `EngineConfig::heartbeat_ns`).
const PEER_HEARTBEAT: Duration = Duration::from_millis(100);

/// Worker `w`'s engine settings.
fn engine_config(cfg: &ClusterConfig, me: &NodeConfig, w: usize) -> EngineConfig {
    let range = cfg.worker_range(w, me.cores.len());
    let mut ec = EngineConfig::new(me.id, cfg.nodes.len() as u16, range.len());
    ec.job = cfg.job;
    ec.segment_elems = cfg.segment_elems;
    ec.wire = cfg.wire;
    ec.protection = cfg.protection.clone();
    // Issue 19: a round is handed to the trainer only once every member completed it (so a
    // node lost mid-round never leaves two outcomes), and idle links carry a heartbeat so
    // a quiet peer is told from a dead one.
    ec.release_gossip = true;
    ec.heartbeat_ns = Some(PEER_HEARTBEAT.as_nanos() as u64);
    ec
}

#[cfg(feature = "dpdk")]
type DpdkSetup = netstorm_dataplane::port::dpdk::DpdkSetup;
#[cfg(not(feature = "dpdk"))]
type DpdkSetup = std::convert::Infallible;

/// The node's checked DPDK setup (backend "dpdk"), or `None` for UDP.
fn dpdk_setup(cfg: &ClusterConfig, me: &NodeConfig) -> anyhow::Result<Option<DpdkSetup>> {
    if me.backend != Backend::Dpdk {
        return Ok(None);
    }
    #[cfg(feature = "dpdk")]
    return Ok(Some(cfg.dpdk_setup(me)?));
    #[cfg(not(feature = "dpdk"))]
    bail!(
        "{}: node '{}' has backend \"dpdk\", but this netstorm-dp was built without DPDK support; rebuild with `cargo build --release --features dpdk` (needs libdpdk-dev, see scripts/install-deps.sh)",
        cfg.origin,
        me.name
    )
}

/// Initializes the EAL and opens the node's DPDK port: one queue pair per worker.
#[cfg(feature = "dpdk")]
fn open_dpdk(setup: &DpdkSetup, max_datagram: usize) -> anyhow::Result<Vec<WorkerPort>> {
    use netstorm_dataplane::port::dpdk::{eal_init, DpdkPort};
    if max_datagram > setup.port.max_datagram_len() {
        bail!(
            "port.mtu {}: carries datagrams up to {} bytes, but the engine sends {max_datagram} (segment_elems x element bytes + header + tag); raise port.mtu to at least {} or lower segment_elems",
            setup.port.mtu,
            setup.port.max_datagram_len(),
            max_datagram + 28
        );
    }
    eal_init(&setup.eal).context("DPDK EAL")?;
    let mut ports = DpdkPort::open_workers(&setup.eal, &setup.port)
        .with_context(|| format!("DPDK port.device {:?}", setup.port.device))?;
    wait_for_link(&mut ports, setup);
    Ok(ports
        .into_iter()
        .map(|p| WorkerPort::Dpdk(Box::new(p)))
        .collect())
}

/// How long a starting dp waits for its DPDK port's link before going on without it.
#[cfg(feature = "dpdk")]
const LINK_WAIT: Duration = Duration::from_secs(10);

/// Waits up to [`LINK_WAIT`] for the port's link (a physical NIC negotiating, a `net_memif`
/// server waiting for its client) before the dp announces itself, restarting a `net_memif`
/// client's device every half second meanwhile: it connects only when it starts and gives up
/// on a failed handshake (a server that listens before its device has started refuses it).
/// Goes on with a warning if the link stays down: what is sent meanwhile is lost and resent by
/// the engine once it comes up.
#[cfg(feature = "dpdk")]
fn wait_for_link(ports: &mut [netstorm_dataplane::port::dpdk::DpdkPort], setup: &DpdkSetup) {
    use netstorm_dataplane::port::dpdk::DpdkPort;
    let device = setup.port.device.as_str();
    let memif_client = setup.is_memif_client();
    let start = Instant::now();
    let mut restarted = start;
    let mut said = false;
    while ports.first().and_then(DpdkPort::link_up) == Some(false) {
        let waited = start.elapsed();
        if waited >= LINK_WAIT {
            eprintln!("netstorm-dp: warning: the link of {device} is still down after {waited:.0?}; going on (frames sent before it comes up are lost and resent)");
            return;
        }
        if !said && waited >= Duration::from_secs(1) {
            said = true;
            eprintln!("netstorm-dp: waiting for the link of {device} (up to {LINK_WAIT:?})");
        }
        if memif_client && restarted.elapsed() >= Duration::from_millis(500) {
            restarted = Instant::now();
            if let Err(e) = DpdkPort::restart_device(ports) {
                eprintln!("netstorm-dp: warning: restarting {device}: {e}");
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(not(feature = "dpdk"))]
fn open_dpdk(setup: &DpdkSetup, _: usize) -> anyhow::Result<Vec<WorkerPort>> {
    match *setup {}
}

/// Gives a worker thread an EAL lcore id, so the mbuf pool's per-lcore cache serves it.
fn register_dpdk_thread(w: usize) {
    #[cfg(feature = "dpdk")]
    if let Err(e) = netstorm_dataplane::port::dpdk::register_thread() {
        eprintln!("netstorm-dp: worker {w}: {e}; mbufs go through the pool's shared ring");
    }
    #[cfg(not(feature = "dpdk"))]
    let _ = w;
}

fn unregister_dpdk_thread() {
    #[cfg(feature = "dpdk")]
    netstorm_dataplane::port::dpdk::unregister_thread();
}
