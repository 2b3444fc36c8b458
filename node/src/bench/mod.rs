//! The harnesses behind `netstorm bench` (the CLI parses arguments, calls these, prints).
//!
//! * [`run_dataplane`] — `bench dataplane`: C child senders stream gradient segments of B
//!   payload bytes to ONE aggregating node, which sums them with the real aggregation kernel
//!   and forwards the sum to a root. Node ids: children `0..C`, aggregator `C`, root `C + 1`.
//!   - `engine` mode (every backend): the real [`Engine`](netstorm_dataplane::engine::Engine)
//!     on every node, one tree child → aggregator → root (and the broadcast back), rounds of
//!     `segments_per_round` segments back to back. On `udp` and `dpdk` **the aggregator is
//!     netstorm-dp's worker** ([`crate::worker::Worker::run`]: the data plane's one real-time
//!     loop with the dp's hook — policy intake, node-file round gate, telemetry sampling,
//!     `recv_each`/`send_each` in place), alone on its core; its rounds are requested through
//!     its node file by a trainer stub. The children and the root take turns on one thread
//!     per remaining core ([`run_loops_in_turn`](netstorm_dataplane::port::run_loops_in_turn)).
//!     On `emu` all engines run in the virtual-time emulator. Latency is per round (start →
//!     result at child 0: reduce up, broadcast down).
//!   - `raw` mode (`dpdk` only): the port and the kernel without the engine's reliability
//!     layer, to show what one core can aggregate (see `raw.rs`).
//!
//!   Measured: child gradient payload into the aggregator (Mpps, Gbit/s), the aggregator
//!   thread's CPU time, its busy time (loop iterations that moved something) and so its
//!   capacity, latency percentiles (hdrhistogram), cores used. Every run verifies the sums it
//!   produced against reference sums (inputs are small integers, exact in f32). Runs are
//!   bounded by `seconds` and by `max_rounds`.
//! * [`udp::run_udp`] — `bench udp`: the batched kernel UDP port vs a plain `UdpSocket` loop.

mod common;
#[cfg(feature = "dpdk")]
mod dpdk;
mod emu;
mod engine_mode;
#[cfg(feature = "dpdk")]
mod raw;
pub mod udp;

use netstorm_dataplane::engine::EngineError;
use netstorm_dataplane::port::udp::UdpError;
use netstorm_dataplane::port::PortError;
use netstorm_dataplane::protect::ProtectionMode;
use netstorm_dataplane::wire;
use serde::Serialize;

/// The defaults of [`DataplaneBenchConfig`] (and of the CLI's flags).
pub mod defaults {
    pub const SEGMENT_BYTES: usize = 1024;
    pub const CHILDREN: usize = 2;
    pub const SECONDS: f64 = 3.0;
    /// 1 MiB rounds at 1 KiB segments: a round's fixed cost (its last acks, the result's way
    /// back) should not be what is measured.
    pub const SEGMENTS_PER_ROUND: usize = 1024;
    pub const MAX_ROUNDS: u64 = 1_000_000;
    pub const LINK_GBPS: f64 = 100.0;
    pub const LINK_LATENCY_US: f64 = 5.0;
    pub const VERIFY_EVERY: u64 = 16;
    pub const RING_SIZE: u32 = 1024;
    pub const PEER_IDLE_SLEEP_US: u64 = 1;
    /// netstorm-dp's own batch (the DPDK port's largest burst).
    pub const BATCH: usize = crate::worker::DEFAULT_BATCH;
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The virtual-time WAN emulator.
    Emu,
    /// Kernel UDP over loopback, one socket per node.
    Udp,
    /// DPDK net_ring ethdevs joined point to point (feature `dpdk`).
    Dpdk,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The real sync engine on every node (reliability, acks, pacing, broadcast).
    Engine,
    /// Port + aggregation kernel only, no engine (dpdk backend only).
    Raw,
}

/// What `bench dataplane` runs (the CLI's flags; see the CLI's help for each).
#[derive(Debug, Clone, PartialEq)]
pub struct DataplaneBenchConfig {
    pub backend: Backend,
    pub mode: Mode,
    /// Gradient payload bytes per segment (a multiple of 4).
    pub segment_bytes: usize,
    /// Child senders feeding the one aggregator.
    pub children: usize,
    /// Wall-clock seconds to measure (the run also stops after `max_rounds`).
    pub seconds: f64,
    /// Segments per child per round.
    pub segments_per_round: usize,
    /// Upper bound on rounds (raw mode: on segments per child / segments_per_round).
    pub max_rounds: u64,
    /// Link rate (emu: emulated links; udp/dpdk: the engine's pacing rate), Gbit/s.
    pub link_gbps: f64,
    /// One-way latency of the emulated links, microseconds (emu only).
    pub link_latency_us: f64,
    /// Verify every N-th round's sums in full (raw mode: every segment is verified).
    pub verify_every: u64,
    /// dpdk: frames per point-to-point link ring (power of two).
    pub ring_size: u32,
    /// dpdk: compute UDP checksums in software on send.
    pub udp_checksum: bool,
    /// Engine mode, nothing pinned: the peers' thread sleeps this long after an idle sweep.
    pub peer_idle_sleep_us: u64,
    /// Engine mode: the packet protection every engine uses (`None`: the engine's default,
    /// `encrypt`, with the public job-derived keys of tests and the emulator).
    pub protection: Option<ProtectionMode>,
    /// Datagrams per rx/tx batch of the poll loops.
    pub batch: usize,
}

impl DataplaneBenchConfig {
    /// The protection mode engine mode runs with (the engine's default unless set).
    pub fn protection_mode(&self) -> ProtectionMode {
        self.protection.unwrap_or_default()
    }

    /// Engine mode on `backend` with every other setting at its default.
    pub fn new(backend: Backend) -> Self {
        Self {
            backend,
            mode: Mode::Engine,
            segment_bytes: defaults::SEGMENT_BYTES,
            children: defaults::CHILDREN,
            seconds: defaults::SECONDS,
            segments_per_round: defaults::SEGMENTS_PER_ROUND,
            max_rounds: defaults::MAX_ROUNDS,
            link_gbps: defaults::LINK_GBPS,
            link_latency_us: defaults::LINK_LATENCY_US,
            verify_every: defaults::VERIFY_EVERY,
            ring_size: defaults::RING_SIZE,
            udp_checksum: false,
            peer_idle_sleep_us: defaults::PEER_IDLE_SLEEP_US,
            protection: None,
            batch: defaults::BATCH,
        }
    }
}

/// Why a bench could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A bad setting; the message names the CLI flag.
    #[error("{0}")]
    Invalid(String),
    #[error("{what}: {source}")]
    Port { what: String, source: PortError },
    #[error("{what}: {source}")]
    Udp { what: String, source: UdpError },
    #[error("{what}: {source}")]
    Engine {
        what: String,
        source: Box<EngineError>,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    /// The run itself failed (a node's loop, a thread, the DPDK setup).
    #[error("{0}")]
    Run(String),
}

impl BenchError {
    fn port(what: impl Into<String>) -> impl FnOnce(PortError) -> Self {
        let what = what.into();
        move |source| Self::Port { what, source }
    }
    fn udp(what: impl Into<String>) -> impl FnOnce(UdpError) -> Self {
        let what = what.into();
        move |source| Self::Udp { what, source }
    }
    fn engine(what: impl Into<String>) -> impl FnOnce(EngineError) -> Self {
        let what = what.into();
        move |source| Self::Engine {
            what,
            source: Box::new(source),
        }
    }
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
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
    /// Engine mode: the packet protection of every engine ("encrypt", "authenticate",
    /// "off"); raw mode: none (no engine).
    pub protection: Option<&'static str>,
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
    /// rest it waited for the senders; engine mode: loop iterations that moved a datagram or
    /// saw an event).
    pub aggregator_busy_fraction: Option<f64>,
    /// Child payload per second of aggregator busy time, Gbit/s — the rate this core sustains
    /// while it has work (what it could take if the senders kept up).
    pub aggregator_capacity_gbps: Option<f64>,
    /// Engine mode: datagrams (received + sent) per busy iteration of the aggregator's loop.
    /// Small batches mean per-iteration costs weigh more than under saturation, so the
    /// capacity above is then a lower bound.
    pub aggregator_batch: Option<f64>,
    pub latency: Latency,
    pub cores: Cores,
    pub verification: Verification,
    pub emu: Option<EmuFigures>,
    /// dpdk: the EAL arguments and device setup.
    pub dpdk: Option<serde_json::Value>,
    pub notes: Vec<String>,
}

const NO_DPDK: &str = "--backend dpdk: this netstorm was built without DPDK support; rebuild with `cargo build --release --features dpdk` (needs libdpdk-dev, see scripts/install-deps.sh)";

/// Checks the settings; the error names the CLI flag.
pub fn validate(a: &DataplaneBenchConfig) -> Result<(), BenchError> {
    let bad = |msg: String| Err(BenchError::Invalid(msg));
    if a.children == 0 || a.children > 62 {
        return bad(format!(
            "--children {} is not in 1..=62 (the aggregator needs at least one child)",
            a.children
        ));
    }
    let max_seg = wire::MAX_DATAGRAM_LEN - wire::HEADER_LEN - wire::AUTH_TAG_LEN;
    if a.segment_bytes == 0 || !a.segment_bytes.is_multiple_of(4) || a.segment_bytes > max_seg {
        return bad(format!(
            "--segment-bytes {} must be a positive multiple of 4 (f32 elements) up to {max_seg}",
            a.segment_bytes
        ));
    }
    if !(a.seconds > 0.0 && a.seconds <= 600.0) {
        return bad(format!("--seconds {} is not in (0, 600]", a.seconds));
    }
    if a.segments_per_round == 0 || a.segments_per_round > 1 << 20 {
        return bad(format!(
            "--segments-per-round {} is not in 1..=1048576",
            a.segments_per_round
        ));
    }
    if a.max_rounds == 0 {
        return bad("--max-rounds must be at least 1".into());
    }
    if !(a.link_gbps.is_finite() && a.link_gbps > 0.0) {
        return bad(format!(
            "--link-gbps {} is not a positive rate",
            a.link_gbps
        ));
    }
    if !(a.link_latency_us.is_finite() && a.link_latency_us >= 0.0) {
        return bad(format!(
            "--link-latency-us {} is not a duration",
            a.link_latency_us
        ));
    }
    if a.verify_every == 0 {
        return bad("--verify-every must be at least 1".into());
    }
    if a.batch == 0 || a.batch > 1024 {
        return bad(format!("--batch {} is not in 1..=1024", a.batch));
    }
    if a.mode == Mode::Raw && a.backend != Backend::Dpdk {
        return bad(format!(
            "--mode raw needs --backend dpdk (lossless rings); {:?} runs the engine mode",
            a.backend
        ));
    }
    if a.protection.is_some() && a.mode == Mode::Raw {
        return bad(
            "--protection and --no-mac apply to the engine mode (raw mode has no engine and no packet protection)".into(),
        );
    }
    if a.backend == Backend::Dpdk && !cfg!(feature = "dpdk") {
        return bad(NO_DPDK.into());
    }
    Ok(())
}

/// Runs `bench dataplane` (see the module docs) and returns its report; a report with
/// `verification.mismatches > 0` is a failed run the caller should say so about.
pub fn run_dataplane(a: &DataplaneBenchConfig) -> Result<DataplaneReport, BenchError> {
    validate(a)?;
    match a.backend {
        Backend::Emu => emu::run(a),
        Backend::Udp => engine_mode::run_udp(a),
        Backend::Dpdk => run_dpdk(a),
    }
}

#[cfg(feature = "dpdk")]
fn run_dpdk(a: &DataplaneBenchConfig) -> Result<DataplaneReport, BenchError> {
    dpdk::run(a)
}

#[cfg(not(feature = "dpdk"))]
fn run_dpdk(_: &DataplaneBenchConfig) -> Result<DataplaneReport, BenchError> {
    Err(BenchError::Invalid(NO_DPDK.into()))
}

#[cfg(test)]
mod tests;
