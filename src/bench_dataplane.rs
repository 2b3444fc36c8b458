//! `netstorm bench dataplane`: the arguments, the call into `netstorm_node::bench` (the
//! harness: C children → one aggregating core → root on the emu, udp or dpdk backend; engine
//! mode's aggregator is netstorm-dp's own worker loop) and the printed report.

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use netstorm_dataplane::protect::ProtectionMode;
use netstorm_node::bench::{
    defaults, run_dataplane, Backend, DataplaneBenchConfig, DataplaneReport, Mode,
};
use std::path::PathBuf;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// The virtual-time WAN emulator (dataplane/src/emu.rs).
    Emu,
    /// Kernel UDP over loopback, one socket per node (dataplane/src/port/udp.rs).
    Udp,
    /// DPDK net_ring ethdevs joined point to point (dataplane/src/port/dpdk.rs; feature `dpdk`).
    Dpdk,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// The real sync engine on every node (reliability, acks, pacing, broadcast); the
    /// aggregator runs netstorm-dp's worker loop (udp, dpdk).
    Engine,
    /// Port + aggregation kernel only, no engine (dpdk backend only).
    Raw,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProtectionArg {
    /// Payload encrypted, header authenticated (the engine's default).
    Encrypt,
    /// Payload in clear, header and payload authenticated.
    Authenticate,
    /// No tag.
    Off,
}

#[derive(Args, Debug, Clone)]
pub struct DataplaneBenchArgs {
    /// Backend the nodes talk over.
    #[arg(long, value_enum)]
    pub backend: BackendArg,
    /// Gradient payload bytes per segment (a multiple of 4).
    #[arg(long, default_value_t = defaults::SEGMENT_BYTES)]
    pub segment_bytes: usize,
    /// Child senders feeding the one aggregator.
    #[arg(long, default_value_t = defaults::CHILDREN)]
    pub children: usize,
    /// Wall-clock seconds to measure (the run also stops after --max-rounds).
    #[arg(long, default_value_t = defaults::SECONDS)]
    pub seconds: f64,
    /// `engine` (the real engine; on udp and dpdk the aggregator runs netstorm-dp's worker
    /// loop, the one it ships) or `raw` (port + kernel, no reliability layer; dpdk only).
    #[arg(long, value_enum, default_value_t = ModeArg::Engine)]
    pub mode: ModeArg,
    /// Segments per child per round (default 1024: 1 MiB rounds at 1 KiB segments; real
    /// gradient rounds are larger still, and a round's fixed cost — its last acks and the
    /// result's way back — should not be what is measured).
    #[arg(long, default_value_t = defaults::SEGMENTS_PER_ROUND)]
    pub segments_per_round: usize,
    /// Upper bound on rounds (raw mode: on segments per child / segments-per-round).
    #[arg(long, default_value_t = defaults::MAX_ROUNDS)]
    pub max_rounds: u64,
    /// Link rate (emu: emulated links; udp/dpdk: the engine's pacing rate), Gbit/s.
    #[arg(long, default_value_t = defaults::LINK_GBPS)]
    pub link_gbps: f64,
    /// One-way latency of the emulated links, microseconds (emu only).
    #[arg(long, default_value_t = defaults::LINK_LATENCY_US)]
    pub link_latency_us: f64,
    /// Verify every N-th round's sums in full at the root and child 0 (raw mode: every
    /// segment is verified).
    #[arg(long, default_value_t = defaults::VERIFY_EVERY)]
    pub verify_every: u64,
    /// dpdk: frames per point-to-point link ring (power of two).
    #[arg(long, default_value_t = defaults::RING_SIZE)]
    pub ring_size: u32,
    /// dpdk: compute UDP checksums in software on send (IPv4 header checksums always are).
    #[arg(long)]
    pub udp_checksum: bool,
    /// Engine mode, when nothing is pinned (one core): the thread running the children and
    /// the root sleeps this long after a sweep that moved nothing, to leave the core to the
    /// aggregator (0 = always busy-poll). Pinned, every thread has its own core and busy-polls.
    #[arg(long, default_value_t = defaults::PEER_IDLE_SLEEP_US)]
    pub peer_idle_sleep_us: u64,
    /// Engine mode: how every datagram is protected (AES-128-GCM, keys derived from the job
    /// id: the emulator's and tests' setting). Default: the engine's default, encrypt.
    #[arg(long, value_enum)]
    pub protection: Option<ProtectionArg>,
    /// Engine mode: no packet protection, an alias of `--protection off`.
    #[arg(long, conflicts_with = "protection")]
    pub no_mac: bool,
    /// Datagrams per rx/tx batch of the poll loops (default: netstorm-dp's, 64 = the DPDK
    /// port's largest burst; on the 2-core VM it gave the aggregator ~10 % more capacity
    /// than 32).
    #[arg(long, default_value_t = defaults::BATCH)]
    pub batch: usize,
    /// Also write the results as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

impl DataplaneBenchArgs {
    fn config(&self) -> DataplaneBenchConfig {
        DataplaneBenchConfig {
            backend: match self.backend {
                BackendArg::Emu => Backend::Emu,
                BackendArg::Udp => Backend::Udp,
                BackendArg::Dpdk => Backend::Dpdk,
            },
            mode: match self.mode {
                ModeArg::Engine => Mode::Engine,
                ModeArg::Raw => Mode::Raw,
            },
            segment_bytes: self.segment_bytes,
            children: self.children,
            seconds: self.seconds,
            segments_per_round: self.segments_per_round,
            max_rounds: self.max_rounds,
            link_gbps: self.link_gbps,
            link_latency_us: self.link_latency_us,
            verify_every: self.verify_every,
            ring_size: self.ring_size,
            udp_checksum: self.udp_checksum,
            peer_idle_sleep_us: self.peer_idle_sleep_us,
            protection: match (self.no_mac, self.protection) {
                (true, _) => Some(ProtectionMode::Off),
                (false, arg) => arg.map(|p| match p {
                    ProtectionArg::Encrypt => ProtectionMode::Encrypt,
                    ProtectionArg::Authenticate => ProtectionMode::Authenticate,
                    ProtectionArg::Off => ProtectionMode::Off,
                }),
            },
            batch: self.batch,
        }
    }
}

pub fn run(a: &DataplaneBenchArgs) -> Result<()> {
    let report = run_dataplane(&a.config())?;
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
        "bench dataplane: backend {:?}, mode {:?}{}, {} children -> 1 aggregator -> root, {} B segments, {} segments/round",
        r.backend,
        r.mode,
        r.protection
            .map_or(String::new(), |p| format!(" (protection {p})")),
        r.children,
        r.segment_bytes,
        r.segments_per_round
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
