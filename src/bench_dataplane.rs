//! `netstorm bench dataplane`: one aggregating node under load, on a chosen backend.
//!
//! C child senders stream gradient segments of B payload bytes to ONE aggregating node, which
//! sums the C children's segments with the real aggregation kernel (`kernel.rs`) and forwards
//! the sum to a root (the receiver). Node ids: children `0..C`, aggregator `C`, root `C + 1`.
//!
//! Two modes:
//! * `engine` (default, every backend) — the real [`Engine`] on every node, with a policy of
//!   one tree whose reduce edges are child → aggregator → root (and broadcast the reverse):
//!   the full synchronization protocol (sequence numbers, acknowledgements, pacing, loss
//!   recovery, the root's result broadcast back down). Rounds of `--segments-per-round`
//!   segments run back to back; each node runs the poll-mode driver on its own port (`udp`,
//!   `dpdk`): the aggregator alone on its thread and core ([`run_engine`]), the children and
//!   the root spread over one thread per remaining core, the engines of a thread taking
//!   turns ([`run_engines`]); or all engines run in the virtual-time emulator (`emu`).
//!   Latency is per round (start → result at child 0: reduce up, broadcast down).
//! * `raw` (`dpdk` only) — the port and the kernel without the engine's reliability layer,
//!   to show what one core can aggregate: children stream sequence-numbered segments over
//!   lossless point-to-point rings (back-pressure instead of loss recovery), the aggregator
//!   sums them in place from the mbufs and forwards each sum once all C children delivered
//!   it. Children and root are driven by one load-generator thread; latency is per segment
//!   (first child's send → sum at the root, stamped once per burst).
//!
//! Measured: child gradient payload INTO the aggregator (Mpps, Gbit/s), the aggregator
//! thread's CPU time (from /proc/thread-self/schedstat), latency percentiles (hdrhistogram),
//! cores used and which thread is the aggregator (pinned alone on the first core when there
//! are two or more cores). Every run verifies the sums it produced against reference sums
//! (inputs are small integers, exact in f32) and reports how many rounds/segments it checked.
//! Runs are bounded by `--seconds` and by `--max-rounds`.

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use netstorm_dataplane::emu::{EmuConfig, Simulation};
use netstorm_dataplane::engine::{Engine, EngineConfig};
use netstorm_dataplane::policy::{ForwardMode, Policy, PolicyBuilder};
use netstorm_dataplane::port::udp::{UdpConfig, UdpPort};
use netstorm_dataplane::port::{run_engine, run_engines, DriverConfig, DriverReport, Port};
use netstorm_dataplane::topology::{Link, Node, Topology};
use netstorm_dataplane::{wire, NodeId};
use serde::Serialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The virtual-time WAN emulator (dataplane/src/emu.rs).
    Emu,
    /// Kernel UDP over loopback, one socket per node (dataplane/src/port/udp.rs).
    Udp,
    /// DPDK net_ring ethdevs joined point to point (dataplane/src/port/dpdk.rs; feature `dpdk`).
    Dpdk,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The real sync engine on every node (reliability, acks, pacing, broadcast).
    Engine,
    /// Port + aggregation kernel only, no engine (dpdk backend only).
    Raw,
}

#[derive(Args, Debug, Clone)]
pub struct DataplaneBenchArgs {
    /// Backend the nodes talk over.
    #[arg(long, value_enum)]
    pub backend: Backend,
    /// Gradient payload bytes per segment (a multiple of 4).
    #[arg(long, default_value_t = 1024)]
    pub segment_bytes: usize,
    /// Child senders feeding the one aggregator.
    #[arg(long, default_value_t = 2)]
    pub children: usize,
    /// Wall-clock seconds to measure (the run also stops after --max-rounds).
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// `engine` (the real engine) or `raw` (port + kernel, no reliability layer; dpdk only).
    #[arg(long, value_enum, default_value_t = Mode::Engine)]
    pub mode: Mode,
    /// Segments per child per round (default 1024: 1 MiB rounds at 1 KiB segments; real
    /// gradient rounds are larger still, and a round's fixed cost — its last acks and the
    /// result's way back — should not be what is measured).
    #[arg(long, default_value_t = 1024)]
    pub segments_per_round: usize,
    /// Upper bound on rounds (raw mode: on segments per child / segments-per-round).
    #[arg(long, default_value_t = 1_000_000)]
    pub max_rounds: u64,
    /// Link rate (emu: emulated links; udp/dpdk: the engine's pacing rate), Gbit/s.
    #[arg(long, default_value_t = 100.0)]
    pub link_gbps: f64,
    /// One-way latency of the emulated links, microseconds (emu only).
    #[arg(long, default_value_t = 5.0)]
    pub link_latency_us: f64,
    /// Verify every N-th round's sums in full at the root and child 0 (raw mode: every
    /// segment is verified).
    #[arg(long, default_value_t = 16)]
    pub verify_every: u64,
    /// dpdk: frames per point-to-point link ring (power of two).
    #[arg(long, default_value_t = 1024)]
    pub ring_size: u32,
    /// dpdk: compute UDP checksums in software on send (IPv4 header checksums always are).
    #[arg(long)]
    pub udp_checksum: bool,
    /// Engine mode, when nothing is pinned (one core): the thread running the children and
    /// the root sleeps this long after a sweep that moved nothing, to leave the core to the
    /// aggregator (0 = always busy-poll). Pinned, every thread has its own core and busy-polls.
    #[arg(long, default_value_t = 1)]
    pub peer_idle_sleep_us: u64,
    /// Engine mode: send packets without the packet MAC (`Auth::Disabled`), to see the
    /// engine's cost without authentication. Default: the engine's default (MAC on).
    #[arg(long)]
    pub no_mac: bool,
    /// Datagrams per rx/tx batch of the poll loops (64 = the DPDK port's largest burst; on
    /// the 2-core VM it gave the engine's aggregator ~10 % more capacity than 32).
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Also write the results as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Latency percentiles, microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// What one sample is.
    pub what: String,
    pub samples: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

/// One thread of the run and where it ran.
#[derive(Debug, Clone, Serialize)]
pub struct ThreadInfo {
    pub name: String,
    /// Core it was pinned to (`None` = not pinned).
    pub core: Option<usize>,
    /// CPU time it consumed / wall time it ran (from /proc/thread-self/schedstat).
    pub cpu_seconds: Option<f64>,
    pub wall_seconds: f64,
}

/// Cores and threads.
#[derive(Debug, Clone, Serialize)]
pub struct Cores {
    pub available: usize,
    /// Distinct cores the threads were pinned to (all available ones when not pinned).
    pub used: usize,
    pub pinned: bool,
    /// Name of the aggregator thread (in `threads`).
    pub aggregator_thread: String,
    pub aggregator_core: Option<usize>,
    pub threads: Vec<ThreadInfo>,
}

/// Virtual-time figures of the emulator backend.
#[derive(Debug, Clone, Serialize)]
pub struct EmuFigures {
    pub link_gbps: f64,
    pub link_latency_us: f64,
    /// Virtual time the measured rounds took.
    pub virtual_seconds: f64,
    /// Child payload into the aggregator per virtual second.
    pub emulated_child_payload_gbps: f64,
    pub emulated_child_mpps: f64,
    /// Wall-clock seconds the simulation took.
    pub wall_seconds: f64,
    /// Child payload simulated per wall-clock second (simulation speed).
    pub wall_child_payload_gbps: f64,
    /// Virtual seconds per wall second.
    pub virtual_per_wall: f64,
    pub events: u64,
    pub events_per_wall_second: f64,
}

/// What was checked.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// Rounds (raw mode: segments) whose sums were compared in full against the reference.
    pub verified_rounds: u64,
    pub mismatches: u64,
    pub checked_at: String,
}

/// The result of one `bench dataplane` run (the JSON written by `--json`).
#[derive(Debug, Clone, Serialize)]
pub struct DataplaneReport {
    pub backend: Backend,
    pub mode: Mode,
    pub segment_bytes: usize,
    pub children: usize,
    pub segments_per_round: usize,
    /// Rounds measured (raw mode: segments forwarded per child / segments_per_round).
    pub rounds: u64,
    /// Child segments that entered the aggregator in the measured interval.
    pub child_segments: u64,
    /// Seconds of the measured interval (virtual seconds for emu).
    pub seconds: f64,
    /// Child gradient segments into the aggregating core, millions per second.
    pub child_mpps: f64,
    /// Child gradient payload into the aggregating core, Gbit/s (1e9 bit/s).
    pub child_payload_gbps: f64,
    /// Every datagram the aggregator received (data, acks, broadcast), millions per second.
    pub aggregator_rx_mpps: f64,
    /// Aggregator CPU time / wall time (1.0 = it had a core to itself the whole time).
    pub aggregator_cpu_share: Option<f64>,
    /// Fraction of the measured interval the aggregator spent in polls that found work (the
    /// rest it waited for the senders; engine mode: driver iterations that moved a datagram or
    /// saw an event).
    pub aggregator_busy_fraction: Option<f64>,
    /// Child payload per second of aggregator busy time, Gbit/s — the rate this core sustains
    /// while it has work (what it could take if the senders kept up).
    pub aggregator_capacity_gbps: Option<f64>,
    /// Engine mode: datagrams (received + sent) per busy iteration of the aggregator's
    /// driver. Small batches mean per-iteration costs weigh more than under saturation, so
    /// the capacity above is then a lower bound.
    pub aggregator_batch: Option<f64>,
    pub latency: Latency,
    pub cores: Cores,
    pub verification: Verification,
    pub emu: Option<EmuFigures>,
    /// dpdk: the EAL arguments and device setup.
    pub dpdk: Option<serde_json::Value>,
    pub notes: Vec<String>,
}

/// Node roles.
fn aggregator(children: usize) -> NodeId {
    children as NodeId
}
fn root(children: usize) -> NodeId {
    children as NodeId + 1
}

/// Child `v`'s input for element `i` of round `r` (small integers: sums are exact in f32);
/// the aggregator and the root contribute zeros, so every result is the children's sum.
fn input(children: usize, v: usize, r: u64, i: usize) -> f32 {
    if v >= children {
        0.0
    } else {
        ((v as u64 * 31 + i as u64 * 3 + r * 7) & 1023) as f32
    }
}

fn expected(children: usize, r: u64, i: usize) -> f32 {
    (0..children).map(|v| input(children, v, r, i)).sum()
}

pub fn validate(a: &DataplaneBenchArgs) -> Result<()> {
    if a.children == 0 || a.children > 62 {
        bail!(
            "--children {} is not in 1..=62 (the aggregator needs at least one child)",
            a.children
        );
    }
    let max_seg = wire::MAX_DATAGRAM_LEN - wire::HEADER_LEN - wire::AUTH_TAG_LEN;
    if a.segment_bytes == 0 || !a.segment_bytes.is_multiple_of(4) || a.segment_bytes > max_seg {
        bail!(
            "--segment-bytes {} must be a positive multiple of 4 (f32 elements) up to {max_seg}",
            a.segment_bytes
        );
    }
    if !(a.seconds > 0.0 && a.seconds <= 600.0) {
        bail!("--seconds {} is not in (0, 600]", a.seconds);
    }
    if a.segments_per_round == 0 || a.segments_per_round > 1 << 20 {
        bail!(
            "--segments-per-round {} is not in 1..=1048576",
            a.segments_per_round
        );
    }
    if a.max_rounds == 0 {
        bail!("--max-rounds must be at least 1");
    }
    if !(a.link_gbps.is_finite() && a.link_gbps > 0.0) {
        bail!("--link-gbps {} is not a positive rate", a.link_gbps);
    }
    if !(a.link_latency_us.is_finite() && a.link_latency_us >= 0.0) {
        bail!("--link-latency-us {} is not a duration", a.link_latency_us);
    }
    if a.verify_every == 0 {
        bail!("--verify-every must be at least 1");
    }
    if a.batch == 0 || a.batch > 1024 {
        bail!("--batch {} is not in 1..=1024", a.batch);
    }
    if a.mode == Mode::Raw && a.backend != Backend::Dpdk {
        bail!(
            "--mode raw needs --backend dpdk (lossless rings); {:?} runs the engine mode",
            a.backend
        );
    }
    if a.no_mac && a.mode == Mode::Raw {
        bail!("--no-mac applies to the engine mode (raw mode has no engine and no MAC)");
    }
    if a.backend == Backend::Dpdk && !cfg!(feature = "dpdk") {
        bail!("--backend dpdk: this netstorm was built without DPDK support; rebuild with `cargo build --release --features dpdk` (needs libdpdk-dev, see scripts/install-deps.sh)");
    }
    Ok(())
}

pub fn run(a: &DataplaneBenchArgs) -> Result<()> {
    validate(a)?;
    let report = match (a.backend, a.mode) {
        (Backend::Emu, _) => run_emu(a)?,
        (Backend::Udp, _) => run_udp(a)?,
        (Backend::Dpdk, mode) => dpdk_backend::run(a, mode)?,
    };
    print_report(&report);
    if report.verification.mismatches > 0 {
        bail!(
            "{} of the verified sums were wrong",
            report.verification.mismatches
        );
    }
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn print_report(r: &DataplaneReport) {
    println!(
        "bench dataplane: backend {:?}, mode {:?}, {} children -> 1 aggregator -> root, {} B segments, {} segments/round",
        r.backend, r.mode, r.children, r.segment_bytes, r.segments_per_round
    );
    let unit = if r.backend == Backend::Emu {
        "virtual s"
    } else {
        "s"
    };
    println!(
        "  into the aggregator: {:.3} Mpps, {:.2} Gbit/s of child payload ({} segments in {:.3} {unit}, {} rounds)",
        r.child_mpps, r.child_payload_gbps, r.child_segments, r.seconds, r.rounds
    );
    println!(
        "  aggregator rx (all datagrams): {:.3} Mpps; aggregator CPU share {}; busy fraction {}",
        r.aggregator_rx_mpps,
        r.aggregator_cpu_share
            .map_or("n/a".into(), |x| format!("{x:.2}")),
        r.aggregator_busy_fraction
            .map_or("n/a".into(), |x| format!("{x:.2}"))
    );
    if let Some(cap) = r.aggregator_capacity_gbps {
        println!("  aggregator capacity (child payload per busy second): {cap:.2} Gbit/s");
    }
    if let Some(b) = r.aggregator_batch {
        println!(
            "  aggregator batch: {b:.1} datagrams in + out per busy iteration (small batches: the capacity is a lower bound)"
        );
    }
    println!(
        "  latency ({}): p50 {:.1} us, p99 {:.1} us, p999 {:.1} us, max {:.1} us ({} samples)",
        r.latency.what,
        r.latency.p50_us,
        r.latency.p99_us,
        r.latency.p999_us,
        r.latency.max_us,
        r.latency.samples
    );
    let threads: Vec<String> = r
        .cores
        .threads
        .iter()
        .map(|t| {
            format!(
                "{}@{}",
                t.name,
                t.core.map_or("any".into(), |c| c.to_string())
            )
        })
        .collect();
    println!(
        "  cores: {} used of {} (pinned: {}); aggregator = thread {} on core {}; threads: {}",
        r.cores.used,
        r.cores.available,
        r.cores.pinned,
        r.cores.aggregator_thread,
        r.cores
            .aggregator_core
            .map_or("any".into(), |c| c.to_string()),
        threads.join(" ")
    );
    if let Some(e) = &r.emu {
        println!(
            "  emulated: {:.2} Gbit/s, {:.3} Mpps over {:.6} virtual s; simulation speed {:.3} Gbit/s of child payload per wall second ({:.4} virtual s per wall s, {:.2} M events/s)",
            e.emulated_child_payload_gbps,
            e.emulated_child_mpps,
            e.virtual_seconds,
            e.wall_child_payload_gbps,
            e.virtual_per_wall,
            e.events_per_wall_second / 1e6
        );
    }
    println!(
        "  verified: {} rounds/segments against reference sums at {}, {} mismatches",
        r.verification.verified_rounds, r.verification.checked_at, r.verification.mismatches
    );
    for n in &r.notes {
        println!("  note: {n}");
    }
}

// ---------------------------------------------------------------------------------------
// Shared pieces: topology, policy, engines, histograms, pinning, CPU time
// ---------------------------------------------------------------------------------------

fn bench_topology(children: usize, rate_bps: f64, latency_ns: u64) -> Topology {
    let n = children + 2;
    let nodes = (0..n)
        .map(|i| Node {
            name: if i < children {
                format!("child{i}")
            } else if i == children {
                "aggregator".into()
            } else {
                "root".into()
            },
            egress_bps: None,
            ingress_bps: None,
        })
        .collect();
    let agg = aggregator(children);
    let mut links = Vec::new();
    let mut link = |from: NodeId, to: NodeId| {
        links.push(Link {
            from,
            to,
            rate_bps,
            latency_ns,
            loss: 0.0,
        })
    };
    for c in 0..children as NodeId {
        link(c, agg);
        link(agg, c);
    }
    link(agg, root(children));
    link(root(children), agg);
    Topology { nodes, links }
}

/// One tree: children → aggregator → root (reduce) and back (broadcast).
fn bench_policy(children: usize, topo: &Topology) -> Policy {
    let n = children + 2;
    let agg = aggregator(children);
    let mut reduce = vec![Some(agg); n];
    reduce[agg as usize] = Some(root(children));
    reduce[root(children) as usize] = None;
    let mut bcast = reduce.clone();
    bcast[agg as usize] = Some(root(children));
    let mut b = PolicyBuilder::new();
    b.tree(root(children), 1.0, &reduce, &bcast, ForwardMode::Pipelined);
    b.link_rates_from(topo);
    b.build(1, n as u16)
}

fn bench_engines(a: &DataplaneBenchArgs, topo: &Topology, real_time: bool) -> Result<Vec<Engine>> {
    let n = a.children + 2;
    let policy = bench_policy(a.children, topo);
    policy
        .validate(topo)
        .map_err(|e| anyhow!("bench policy: {e}"))?;
    (0..n)
        .map(|v| {
            let elems = a.segment_bytes / 4;
            let mut cfg = EngineConfig::new(v as NodeId, n as u16, elems * a.segments_per_round);
            cfg.segment_elems = elems;
            if a.no_mac {
                cfg.auth = netstorm_dataplane::auth::Auth::Disabled;
            }
            if real_time {
                // Loopback/ring RTTs are microseconds: do not wait 200 ms for a first RTO.
                cfg.initial_rto_ns = 20_000_000;
                cfg.min_rto_ns = 2_000_000;
                // A round ends only when every send is acknowledged: with the WAN default
                // (500 us) the last acks of every round would wait that long.
                cfg.ack_delay_ns = 20_000;
            }
            let mut e = Engine::new(cfg, topo).map_err(|e| anyhow!("engine {v}: {e}"))?;
            e.install_policy(policy.clone(), 0)
                .map_err(|e| anyhow!("engine {v}: {e}"))?;
            Ok(e)
        })
        .collect()
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid histogram bounds")
}

fn latency_of(h: &Histogram<u64>, what: &str) -> Latency {
    let us = |ns: u64| ns as f64 / 1e3;
    Latency {
        what: what.into(),
        samples: h.len(),
        p50_us: us(h.value_at_quantile(0.5)),
        p99_us: us(h.value_at_quantile(0.99)),
        p999_us: us(h.value_at_quantile(0.999)),
        max_us: us(h.max()),
    }
}

fn core_ids() -> &'static [core_affinity::CoreId] {
    static CORES: OnceLock<Vec<core_affinity::CoreId>> = OnceLock::new();
    CORES.get_or_init(|| core_affinity::get_core_ids().unwrap_or_default())
}

/// Core plan: with two or more cores the aggregator gets the first one alone and every other
/// thread shares the rest (round robin); with one core nothing is pinned.
#[derive(Debug, Clone)]
struct CorePlan {
    cores: Vec<usize>,
}

impl CorePlan {
    fn new() -> Self {
        Self {
            cores: core_ids().iter().map(|c| c.id).collect(),
        }
    }
    fn pinned(&self) -> bool {
        self.cores.len() >= 2
    }
    fn aggregator_core(&self) -> Option<usize> {
        self.pinned().then(|| self.cores[0])
    }
    /// Core of the `k`-th non-aggregator thread.
    fn other_core(&self, k: usize) -> Option<usize> {
        self.pinned()
            .then(|| self.cores[1 + k % (self.cores.len() - 1)])
    }
    /// Distinct cores used by the aggregator plus `others` threads.
    fn used(&self, others: usize) -> usize {
        if self.pinned() {
            1 + others.min(self.cores.len() - 1)
        } else {
            self.cores.len().max(1)
        }
    }
    /// Whether `others` non-aggregator nodes would have to share cores.
    fn others_share(&self, others: usize) -> bool {
        !self.pinned() || others > self.cores.len() - 1
    }
}

fn pin_to(core: Option<usize>) -> bool {
    match core {
        Some(id) => core_affinity::set_for_current(core_affinity::CoreId { id }),
        None => false,
    }
}

/// CPU time the calling thread has consumed, from /proc/thread-self/schedstat (ns).
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

fn cpu_delta(start: Option<u64>) -> Option<f64> {
    Some(thread_cpu_ns()?.checked_sub(start?)? as f64 / 1e9)
}

fn node_name(children: usize, v: usize) -> String {
    if v < children {
        format!("child{v}")
    } else if v == children {
        "aggregator".into()
    } else {
        "root".into()
    }
}

// ---------------------------------------------------------------------------------------
// emu: the engines in the virtual-time emulator
// ---------------------------------------------------------------------------------------

fn run_emu(a: &DataplaneBenchArgs) -> Result<DataplaneReport> {
    let c = a.children;
    let n = c + 2;
    let topo = bench_topology(
        c,
        a.link_gbps * 1e9,
        (a.link_latency_us * 1e3).round() as u64,
    );
    let engines = bench_engines(a, &topo, false)?;
    let mut sim = Simulation::new(&topo, engines, EmuConfig::default())
        .map_err(|e| anyhow!("emulator: {e}"))?;
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
            .map_err(|e| anyhow!("emulator round {r}: {e}"))?;
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
            if a.no_mac {
                n.push("--no-mac: packets carry no MAC (engine default: MAC on)".into());
            }
            n
        },
    })
}

// ---------------------------------------------------------------------------------------
// Real-time engine mode: the poll-mode driver per node on its port, the aggregator alone
// ---------------------------------------------------------------------------------------

/// What one node produced in one phase.
struct NodeOutcome {
    report: DriverReport,
    verified: u64,
    mismatches: u64,
}

/// One phase: every node's outcome (in node order) and every thread's CPU use (the
/// aggregator's thread first).
struct PhaseOutcome {
    nodes: Vec<NodeOutcome>,
    threads: Vec<ThreadInfo>,
}

/// Threads of the real-time engine mode: the aggregator runs alone on its core; the other
/// nodes (children and root) are spread over the remaining cores, one thread per core, and
/// the engines of one thread take turns (`run_engines`) instead of time-sharing the core
/// through the scheduler.
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

/// Runs `rounds` rounds from `first_round`: the aggregator on its own thread, the other
/// nodes in [`peer_groups`].
#[allow(clippy::too_many_arguments)]
fn engine_phase<P: Port + Send>(
    a: &DataplaneBenchArgs,
    engines: &mut [Engine],
    ports: &mut [P],
    first_round: u32,
    rounds: u32,
    linger: Duration,
    thread_setup: &(dyn Fn() + Sync),
    thread_teardown: &(dyn Fn() + Sync),
) -> Result<PhaseOutcome> {
    let c = a.children;
    let plan = CorePlan::new();
    let groups = peer_groups(c, &plan);
    let agg = aggregator(c) as usize;
    let dcfg = |idle: Option<Duration>| DriverConfig {
        batch: a.batch,
        idle_backoff: idle,
        max_duration: Duration::from_secs_f64(a.seconds * 4.0 + 60.0),
        linger,
    };
    // A peer thread shares its core with another busy thread only when nothing is pinned.
    let peer_idle = (!plan.pinned() && a.peer_idle_sleep_us > 0)
        .then(|| Duration::from_micros(a.peer_idle_sleep_us));
    let (agg_cfg, peer_cfg) = (dcfg(None), dcfg(peer_idle));
    let verify_every = a.verify_every;
    let last = first_round as u64 + rounds as u64 - 1;
    // Child 0 and the root check the sums of every `verify_every`-th round and the last.
    let check = move |v: usize, r: u32, buf: &[f32], verified: &mut u64, mismatches: &mut u64| {
        let r = r as u64;
        if (v == 0 || v == root(c) as usize) && (r.is_multiple_of(verify_every) || r == last) {
            *verified += 1;
            if buf
                .iter()
                .enumerate()
                .any(|(i, &x)| x.to_bits() != expected(c, r, i).to_bits())
            {
                *mismatches += 1;
            }
        }
    };
    let fill = move |v: usize, r: u32, buf: &mut [f32]| {
        for (i, x) in buf.iter_mut().enumerate() {
            *x = input(c, v, r as u64, i);
        }
    };
    // Split the engines and ports into the aggregator's and each group's.
    let mut slots: Vec<Option<(&mut Engine, &mut P)>> =
        engines.iter_mut().zip(ports.iter_mut()).map(Some).collect();
    let (agg_engine, agg_port) = slots[agg].take().expect("aggregator");
    let mut group_nodes: Vec<Vec<(usize, &mut Engine, &mut P)>> = groups
        .iter()
        .map(|g| {
            g.iter()
                .map(|&v| {
                    let (e, p) = slots[v].take().expect("each node in one group");
                    (v, e, p)
                })
                .collect()
        })
        .collect();
    type ThreadResult = Result<(Vec<(usize, NodeOutcome)>, ThreadInfo)>;
    std::thread::scope(|s| {
        let mut handles = Vec::new();
        let core = plan.aggregator_core();
        let (agg_cfg, fill, check) = (&agg_cfg, &fill, &check);
        handles.push(
            std::thread::Builder::new()
                .name("aggregator".into())
                .spawn_scoped(s, move || -> ThreadResult {
                    let pinned = pin_to(core);
                    thread_setup();
                    let cpu0 = thread_cpu_ns();
                    let t0 = Instant::now();
                    let (mut verified, mut mismatches) = (0u64, 0u64);
                    let report = run_engine(
                        agg_engine,
                        agg_port,
                        agg_cfg,
                        first_round,
                        rounds,
                        |r, buf| fill(agg, r, buf),
                        |r, buf| check(agg, r, buf, &mut verified, &mut mismatches),
                    );
                    let info = ThreadInfo {
                        name: node_name(c, agg),
                        core: core.filter(|_| pinned),
                        cpu_seconds: cpu_delta(cpu0),
                        wall_seconds: t0.elapsed().as_secs_f64(),
                    };
                    thread_teardown();
                    let report = report.map_err(|e| anyhow!("{}: {e}", node_name(c, agg)))?;
                    let out = NodeOutcome {
                        report,
                        verified,
                        mismatches,
                    };
                    Ok((vec![(agg, out)], info))
                })
                .map_err(|e| anyhow!("spawning the aggregator thread: {e}"))?,
        );
        for (g, members) in group_nodes.iter_mut().enumerate() {
            let core = plan.other_core(g);
            let name = members
                .iter()
                .map(|(v, _, _)| node_name(c, *v))
                .collect::<Vec<_>>()
                .join("+");
            let peer_cfg = &peer_cfg;
            handles.push(
                std::thread::Builder::new()
                    .name(format!("peers{g}"))
                    .spawn_scoped(s, move || -> ThreadResult {
                        let pinned = pin_to(core);
                        thread_setup();
                        let cpu0 = thread_cpu_ns();
                        let t0 = Instant::now();
                        let ids: Vec<usize> = members.iter().map(|(v, _, _)| *v).collect();
                        let mut nodes: Vec<(&mut Engine, &mut P)> = members
                            .iter_mut()
                            .map(|(_, e, p)| (&mut **e, &mut **p))
                            .collect();
                        let mut counts = vec![(0u64, 0u64); ids.len()];
                        let reports = run_engines(
                            &mut nodes,
                            peer_cfg,
                            first_round,
                            rounds,
                            |k, r, buf| fill(ids[k], r, buf),
                            |k, r, buf| {
                                let (verified, mismatches) = &mut counts[k];
                                check(ids[k], r, buf, verified, mismatches)
                            },
                        );
                        let info = ThreadInfo {
                            name: name.clone(),
                            core: core.filter(|_| pinned),
                            cpu_seconds: cpu_delta(cpu0),
                            wall_seconds: t0.elapsed().as_secs_f64(),
                        };
                        thread_teardown();
                        let reports = reports.map_err(|e| anyhow!("{name}: {e}"))?;
                        let outs = reports
                            .into_iter()
                            .zip(counts)
                            .zip(&ids)
                            .map(|((report, (verified, mismatches)), &v)| {
                                (
                                    v,
                                    NodeOutcome {
                                        report,
                                        verified,
                                        mismatches,
                                    },
                                )
                            })
                            .collect();
                        Ok((outs, info))
                    })
                    .map_err(|e| anyhow!("spawning a peer thread: {e}"))?,
            );
        }
        let mut nodes: Vec<Option<NodeOutcome>> = (0..c + 2).map(|_| None).collect();
        let mut threads = Vec::new();
        for h in handles {
            let (outs, info) = h.join().map_err(|_| anyhow!("a bench thread panicked"))??;
            for (v, o) in outs {
                nodes[v] = Some(o);
            }
            threads.push(info);
        }
        Ok(PhaseOutcome {
            nodes: nodes
                .into_iter()
                .map(|o| o.expect("every node ran"))
                .collect(),
            threads,
        })
    })
}

/// Calibrates with a few rounds, then runs as many as fit in `--seconds` (at most
/// `--max-rounds`) and builds the report.
fn run_engine_backend<P: Port + Send>(
    a: &DataplaneBenchArgs,
    backend: Backend,
    ports: &mut [P],
    thread_setup: &(dyn Fn() + Sync),
    thread_teardown: &(dyn Fn() + Sync),
) -> Result<DataplaneReport> {
    let c = a.children;
    let topo = bench_topology(c, a.link_gbps * 1e9, 0);
    let mut engines = bench_engines(a, &topo, true)?;
    let warm = a.max_rounds.min(8) as u32;
    let cal = engine_phase(
        a,
        &mut engines,
        ports,
        0,
        warm,
        Duration::from_millis(20),
        thread_setup,
        thread_teardown,
    )?;
    let per_round = cal.nodes[aggregator(c) as usize]
        .report
        .elapsed
        .max(Duration::from_micros(1))
        .as_secs_f64()
        / warm as f64;
    let left = a.max_rounds.saturating_sub(warm as u64);
    let mut notes = Vec::new();
    if a.no_mac {
        notes.push("--no-mac: packets carry no MAC (engine default: MAC on)".into());
    }
    let phase = if left == 0 {
        notes.push("--max-rounds reached during calibration: figures are from those rounds".into());
        cal
    } else {
        let rounds = ((a.seconds / per_round) as u64).clamp(1, left.min(u32::MAX as u64 / 2));
        engine_phase(
            a,
            &mut engines,
            ports,
            warm,
            rounds as u32,
            Duration::from_millis(50),
            thread_setup,
            thread_teardown,
        )?
    };
    let outcomes = &phase.nodes;
    let agg = &outcomes[aggregator(c) as usize];
    let agg_thread = &phase.threads[0];
    let rounds = agg.report.rounds_completed as u64;
    let secs = agg.report.elapsed.as_secs_f64().max(1e-9);
    let segs = rounds * (a.segments_per_round * c) as u64;
    let mut hist = new_histogram();
    for &ns in &outcomes[0].report.round_result_ns {
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
    Ok(DataplaneReport {
        backend,
        mode: Mode::Engine,
        segment_bytes: a.segment_bytes,
        children: c,
        segments_per_round: a.segments_per_round,
        rounds,
        child_segments: segs,
        seconds: secs,
        child_mpps: segs as f64 / secs / 1e6,
        child_payload_gbps: segs as f64 * a.segment_bytes as f64 * 8.0 / secs / 1e9,
        aggregator_rx_mpps: agg.report.rx_datagrams as f64 / secs / 1e6,
        aggregator_cpu_share: agg_thread
            .cpu_seconds
            .map(|x| x / agg_thread.wall_seconds.max(1e-9)),
        aggregator_busy_fraction: Some(agg.report.busy.as_secs_f64() / secs),
        aggregator_batch: (agg.report.busy_iterations > 0).then(|| {
            (agg.report.rx_datagrams + agg.report.tx_datagrams) as f64
                / agg.report.busy_iterations as f64
        }),
        aggregator_capacity_gbps: (!agg.report.busy.is_zero()).then(|| {
            segs as f64 * a.segment_bytes as f64 * 8.0 / agg.report.busy.as_secs_f64() / 1e9
        }),
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
            verified_rounds: outcomes.iter().map(|o| o.verified).sum(),
            mismatches: outcomes.iter().map(|o| o.mismatches).sum(),
            checked_at: "root and child 0, every element of every sampled round".into(),
        },
        emu: None,
        dpdk: None,
        notes,
    })
}

fn run_udp(a: &DataplaneBenchArgs) -> Result<DataplaneReport> {
    let c = a.children;
    let n = c + 2;
    let elems = a.segment_bytes / 4;
    let max_len = wire::HEADER_LEN + elems * 4 + wire::AUTH_TAG_LEN;
    let lo: SocketAddr = "127.0.0.1:0".parse()?;
    let mut ports = Vec::with_capacity(n);
    for v in 0..n {
        let mut cfg = UdpConfig::new(lo);
        cfg.max_datagram_len = max_len.max(1500);
        cfg.socket_buffer_bytes = Some(8 << 20);
        ports.push(
            UdpPort::open(&cfg)
                .with_context(|| format!("opening {}'s UDP port", node_name(c, v)))?,
        );
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
        p.set_peers(&peers)?;
    }
    let mut r = run_engine_backend(a, Backend::Udp, &mut ports, &|| {}, &|| {})?;
    r.notes
        .push("udp: one socket per node on 127.0.0.1 (recvmmsg/sendmmsg, GSO/GRO when the kernel has them)".into());
    Ok(r)
}

// ---------------------------------------------------------------------------------------
// dpdk backend (feature `dpdk`)
// ---------------------------------------------------------------------------------------

#[cfg(not(feature = "dpdk"))]
mod dpdk_backend {
    use super::{DataplaneBenchArgs, DataplaneReport, Mode};
    use anyhow::{bail, Result};

    pub fn run(_a: &DataplaneBenchArgs, _mode: Mode) -> Result<DataplaneReport> {
        bail!("--backend dpdk: this netstorm was built without DPDK support; rebuild with `cargo build --release --features dpdk` (needs libdpdk-dev, see scripts/install-deps.sh)")
    }
}

#[cfg(feature = "dpdk")]
#[path = "bench_dataplane/dpdk.rs"]
mod dpdk_backend;
