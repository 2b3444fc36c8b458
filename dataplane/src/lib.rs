//! NetStorm data plane.
//!
//! * [`wire`] — the versioned packet format and the Ethernet/IPv4/UDP framing under it (checked
//!   parse/emit, no libdpdk needed).
//! * [`protect`] — packet protection: AES-128-GCM (ring) on every datagram, keys, replay windows.
//! * [`policy`] — what the control plane installs: trees, shares, routes, pacing rates.
//! * [`engine`] — the sans-IO synchronization engine (one per node).
//! * [`kernel`] — the f32 aggregation kernels used on the hot path.
//! * [`topology`] / [`scenario`] — the network description and its TOML file format.
//! * [`toml_error`] — TOML errors naming file, line and key (scenario files here, cluster
//!   configs in `netstorm-node`).
//! * [`emu`] — the emulated WAN and the virtual-time driver that runs N engines.
//! * [`port`] — real-time backends behind one batch rx/tx trait, and the poll-mode driver.
//! * [`shm`] / [`shm_records`] — the shared-memory policy and telemetry rings between
//!   `netstorm-cp` and `netstorm-dp` on one host, and the records they carry.
#![deny(unsafe_code)]

pub mod emu;
pub mod engine;
pub mod kernel;
pub mod kernel16;
pub mod policy;
pub mod port;
pub mod probe;
pub mod protect;
pub mod reference;
pub mod scenario;
pub mod shm;
pub mod shm_records;
pub mod toml_error;
pub mod topology;
pub mod wire;

/// Index of a node (data center) in a job, `0..node_count`.
pub type NodeId = u16;

/// A point in time or a duration, in nanoseconds. The engine never reads a clock: every
/// `now` it sees is handed in by the caller (virtual time in the emulator, a monotonic
/// clock in the real backends).
pub type Nanos = u64;

/// Nanoseconds per second, for unit conversions.
pub const NANOS_PER_SEC: u64 = 1_000_000_000;
