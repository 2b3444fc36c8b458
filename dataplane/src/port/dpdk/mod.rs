//! DPDK port (feature `dpdk`): datagrams over a DPDK ethdev, framed by us as
//! Ethernet II / IPv4 / UDP.
//!
//! * **EAL** (`eal.rs`) — initialized once per process by [`eal_init`] from an [`EalConfig`]:
//!   a second call with the same arguments is a no-op, with different arguments an error
//!   ([`DpdkError::EalAlreadyInitialized`]); a failed init is remembered (DPDK cannot
//!   retry). Several ports in one process therefore share one EAL with several `--vdev`s.
//!   `rte_eal_init` runs on a short-lived helper thread so the caller's CPU affinity is not
//!   pinned to the main lcore.
//! * **Configuration** (`config.rs`) — [`EalConfig`], [`DpdkPortConfig`] with its static
//!   neighbour table NodeId → (MAC, IPv4, UDP port) (no ARP), [`DpdkSetup`] (the TOML file).
//! * **Device** ([`DpdkPort`], in `port.rs`) — [`DpdkPort::open_workers`] configures the
//!   ethdev named in [`DpdkPortConfig::device`] with one rx and one tx queue per worker, one
//!   mbuf pool sized from the config (`mempool_mbufs`, `mempool_cache`, `mbuf_data_room`), no
//!   offloads and no RSS (with more than one worker the NIC/fabric decides which queue a frame
//!   lands on). Each returned [`DpdkPort`] owns one queue pair and is moved to its worker
//!   thread.
//! * **Framing** — [`crate::wire::frame`] ([`emit_frame`] / [`parse_frame`] /
//!   [`HeaderTemplate`], re-exported here): Ethernet II (no VLAN), IPv4 without options (DF
//!   set, TTL 64, header checksum computed), UDP. The UDP checksum is computed in software
//!   when `udp_checksum = true` (the default) and sent as 0 ("no checksum", legal for UDP over
//!   IPv4) otherwise; on receive a non-zero UDP checksum is always verified.
//! * **Receive** — frames that are not IPv4/UDP to our address and port, fragments, bad
//!   checksums, truncated or oversized frames, and frames from addresses not in the neighbour
//!   table are dropped and counted in [`DpdkPortStats`], never returned.
//! * **Send** — allocate a bulk of mbufs, write frames in place, `tx_burst`, free the unsent
//!   (back-pressure: the caller offers them again). No allocation, no lock on the hot path.
//! * **Test fabrics** — [`RingFabric`] (ethdevs made of rings joined by a software switch) and
//!   [`RingLinks`] (point-to-point rings, no switch thread) for tests and `bench dataplane`.
//!
//! `unsafe` lives only in the private `ffi` module, a thin layer of safe types over
//! `netstorm-dpdk-sys` (EAL, device, queues, mbufs, rings); everything else here is safe code.
//! Errors name the EAL argument or config key that was wrong; nothing here panics or blocks
//! on bad input. Built without libdpdk (see `netstorm-dpdk-sys`), every constructor returns
//! [`DpdkError::NotLinked`].

mod config;
mod eal;
#[allow(unsafe_code)]
mod ffi;
mod port;
mod ring_fabric;
mod ring_links;

pub use crate::wire::frame::{
    emit_frame, parse_frame, FrameAddrs, FrameDrop, HeaderTemplate, ParsedFrame, FRAME_HEADER_LEN,
};
pub use crate::wire::{
    ipv4_checksum, udp_checksum, MacAddr, ETH_HEADER_LEN, IPV4_HEADER_LEN, UDP_HEADER_LEN,
};
pub use config::{DpdkPortConfig, DpdkSetup, EalConfig, NeighbourConfig};
pub use eal::{eal_init, eal_initialized, register_thread, unregister_thread};
pub use port::DpdkPort;
pub use ring_fabric::RingFabric;
pub use ring_links::RingLinks;

use super::PortError;
use netstorm_dpdk_sys as sys;
use std::ffi::c_int;

/// Largest rx/tx burst handed to the driver at once.
pub const MAX_BURST: usize = 64;
/// DPDK's default mbuf headroom (`RTE_PKTMBUF_HEADROOM`).
pub const MBUF_HEADROOM: u16 = 128;

/// What went wrong setting up DPDK.
#[derive(Debug, thiserror::Error)]
pub enum DpdkError {
    #[error("DPDK is not available: netstorm-dpdk-sys was built without libdpdk (pkg-config could not find `libdpdk`); install libdpdk-dev and dpdk (scripts/install-deps.sh) and rebuild")]
    NotLinked,
    #[error("bad EAL argument {key}: {why}")]
    EalArgs { key: &'static str, why: String },
    #[error("rte_eal_init failed: {msg} (rte_errno {errno}){hint}; EAL arguments: {args:?}")]
    EalInit {
        errno: i32,
        msg: String,
        hint: String,
        args: Vec<String>,
    },
    #[error("the EAL is initialized once per process and already was, with {first:?}; now asked for {requested:?} (put every --vdev into one EalConfig)")]
    EalAlreadyInitialized {
        first: Vec<String>,
        requested: Vec<String>,
    },
    #[error("the EAL is not initialized: call eal_init first")]
    EalNotInitialized,
    #[error("bad DPDK port config key {key}: {why}")]
    Config { key: String, why: String },
    #[error("DPDK device {device:?} (config key `device`) does not exist; {available} ethdev(s) available — check the --vdev / -a EAL arguments")]
    NoSuchDevice { device: String, available: u16 },
    #[error("DPDK device {device:?} is already opened by another DpdkPort in this process")]
    DeviceBusy { device: String },
    #[error("cannot create mbuf pool of {mbufs} mbufs x {data_room} bytes (config keys `mempool_mbufs`, `mbuf_data_room`): {msg} (rte_errno {errno}); raise the EAL memory (`-m` / memory_mb) or shrink the pool")]
    Mempool {
        mbufs: u32,
        data_room: u16,
        errno: i32,
        msg: String,
    },
    #[error("{op} on DPDK device {device:?} failed: {msg} (errno {errno}){hint}")]
    Device {
        op: &'static str,
        device: String,
        errno: i32,
        msg: String,
        hint: String,
    },
}

impl From<DpdkError> for PortError {
    fn from(e: DpdkError) -> Self {
        PortError::Other(e.to_string())
    }
}

/// Per-port counters (plain fields, updated on the hot path without atomics).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DpdkPortStats {
    /// Frames taken from the rx queue.
    pub rx_frames: u64,
    /// Datagrams handed to the caller.
    pub rx_datagrams: u64,
    /// Dropped: not Ethernet II / IPv4 / UDP (ARP, IPv6, VLAN, other protocols, IP options).
    pub rx_not_udp: u64,
    /// Dropped: truncated or inconsistent lengths, or more than one segment.
    pub rx_malformed: u64,
    /// Dropped: IPv4 fragments.
    pub rx_fragment: u64,
    /// Dropped: wrong IPv4 header or UDP checksum.
    pub rx_bad_checksum: u64,
    /// Dropped: not addressed to our IPv4 address and UDP port.
    pub rx_not_for_us: u64,
    /// Dropped: source (IPv4, UDP port) not in the neighbour table.
    pub rx_unknown_neighbour: u64,
    /// Dropped: datagram larger than the caller's buffer.
    pub rx_too_long: u64,
    /// Frames accepted by `tx_burst`.
    pub tx_frames: u64,
    /// Frames the tx queue refused (back-pressure; offered again by the caller).
    pub tx_refused: u64,
    /// `tx_burst` calls that handed over at least one frame (`tx_frames / tx_bursts` is the
    /// mean burst: each burst touches the queue's shared ring indices once).
    pub tx_bursts: u64,
    /// Batches refused because the mbuf pool was empty.
    pub tx_pool_empty: u64,
}

/// What an errno most likely means here, as a hint appended to error messages.
fn errno_hint(errno: i32) -> &'static str {
    match errno {
        12 => "; out of memory: raise `-m` (memory_mb) or, without hugepages, use --no-huge",
        13 | 1 => "; permission denied: run as root, or use --no-huge and --no-pci",
        19 => "; a device failed to probe: check the --vdev / -a arguments (vdevs, allow)",
        22 => "; invalid argument: check lcores (-l), vdevs (--vdev), extra_args",
        114 => "; the EAL was already initialized in this process by someone else",
        95 => "; not supported by this DPDK build (is the PMD installed? e.g. package dpdk)",
        _ => "",
    }
}

/// The error of a DPDK call `op` on `device` that returned `ret` (a negative errno).
fn device_error(op: &'static str, device: &str, ret: c_int) -> DpdkError {
    let errno = ret.abs();
    DpdkError::Device {
        op,
        device: device.into(),
        errno,
        msg: sys::strerror(errno),
        hint: errno_hint(errno).to_string(),
    }
}
