//! DPDK port (feature `dpdk`): datagrams over a DPDK ethdev, framed by us as
//! Ethernet II / IPv4 / UDP.
//!
//! * **EAL** — initialized once per process by [`eal_init`] from an [`EalConfig`] (a
//!   `OnceLock`): a second call with the same arguments is a no-op, with different arguments an
//!   error ([`DpdkError::EalAlreadyInitialized`]); a failed init is remembered (DPDK cannot
//!   retry). Several ports in one process therefore share one EAL with several `--vdev`s.
//!   `rte_eal_init` runs on a short-lived helper thread so the caller's CPU affinity is not
//!   pinned to the main lcore.
//! * **Device** — [`DpdkPort::open_workers`] configures the ethdev named in
//!   [`DpdkPortConfig::device`] with one rx and one tx queue per worker, one mbuf pool sized
//!   from the config (`mempool_mbufs`, `mempool_cache`, `mbuf_data_room`), no offloads and
//!   no RSS (with more than one worker the NIC/fabric decides which queue a frame lands on).
//!   Each returned [`DpdkPort`] owns one queue pair and is moved to its worker thread.
//! * **Framing** — [`emit_frame`] / [`parse_frame`]: Ethernet II (no VLAN), IPv4 without
//!   options (DF set, TTL 64, header checksum computed), UDP. The UDP checksum is computed in
//!   software when `udp_checksum = true` (the default) and sent as 0 ("no checksum", legal
//!   for UDP over IPv4) otherwise; on receive a non-zero UDP checksum is always verified.
//!   Neighbours come from a static table NodeId → (MAC, IPv4, UDP port) — no ARP.
//! * **Receive** — frames that are not IPv4/UDP to our address and port, fragments, bad
//!   checksums, truncated or oversized frames, and frames from addresses not in the neighbour
//!   table are dropped and counted in [`DpdkPortStats`], never returned.
//! * **Send** — allocate a bulk of mbufs, write frames in place, `tx_burst`, free the unsent
//!   (back-pressure: the caller offers them again). No allocation, no lock on the hot path.
//!
//! Errors name the EAL argument or config key that was wrong; nothing here panics or blocks
//! on bad input. Built without libdpdk (see `netstorm-dpdk-sys`), every constructor returns
//! [`DpdkError::NotLinked`].
#![allow(unsafe_code)]

use super::{PacketBuf, Port, PortError, RxSink, TxFill};
use crate::NodeId;
use netstorm_dpdk_sys as sys;
use serde::Deserialize;
use std::collections::HashSet;
use std::ffi::{c_char, c_int, c_void, CString};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};

/// Ethernet II header bytes.
pub const ETH_HEADER_LEN: usize = 14;
/// IPv4 header bytes (we send no options).
pub const IPV4_HEADER_LEN: usize = 20;
/// UDP header bytes.
pub const UDP_HEADER_LEN: usize = 8;
/// Bytes before the datagram: Ethernet + IPv4 + UDP (= `wire::FRAME_OVERHEAD_BYTES`).
pub const FRAME_HEADER_LEN: usize = ETH_HEADER_LEN + IPV4_HEADER_LEN + UDP_HEADER_LEN;
const _: () = assert!(FRAME_HEADER_LEN == crate::wire::FRAME_OVERHEAD_BYTES);
/// Largest rx/tx burst handed to the driver at once.
pub const MAX_BURST: usize = 64;
/// DPDK's default mbuf headroom (`RTE_PKTMBUF_HEADROOM`).
pub const MBUF_HEADROOM: u16 = 128;
const ETHERTYPE_IPV4: u16 = 0x0800;
const IPPROTO_UDP: u8 = 17;

// ---------------------------------------------------------------------------------------
// Addresses and configuration
// ---------------------------------------------------------------------------------------

/// An Ethernet MAC address, written `02:00:00:00:00:01` in config files.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(try_from = "String")]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// A locally administered unicast address `02:4e:53:00:hi:lo` for node `n` (tests, demos).
    pub const fn local(n: u16) -> Self {
        MacAddr([0x02, 0x4e, 0x53, 0x00, (n >> 8) as u8, n as u8])
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = [0u8; 6];
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(format!(
                "{s:?} is not a MAC address (want 6 hex bytes like 02:00:00:00:00:01)"
            ));
        }
        for (o, p) in out.iter_mut().zip(&parts) {
            if p.len() != 2 {
                return Err(format!("{s:?} is not a MAC address (byte {p:?})"));
            }
            *o = u8::from_str_radix(p, 16)
                .map_err(|_| format!("{s:?} is not a MAC address (byte {p:?} is not hex)"))?;
        }
        Ok(MacAddr(out))
    }
}

impl TryFrom<String> for MacAddr {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// EAL arguments. Defaults: `lcores = "0"`, `memory_mb = 1024`, no vdevs,
/// `file_prefix = "netstorm-<pid>"`, hugepages and PCI enabled, `log_level = "error"`,
/// telemetry off.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EalConfig {
    /// `-l`: the lcore list. The EAL pins the thread calling `rte_eal_init` (a helper thread
    /// here) to the first; NetStorm's workers are ordinary (non-EAL) threads.
    pub lcores: String,
    /// `-m`: megabytes of memory to preallocate (with `no_huge`, plain anonymous memory).
    pub memory_mb: u32,
    /// `--vdev` (repeatable): virtual devices, e.g. `net_ring0`, `net_memif0,role=client,...`.
    pub vdevs: Vec<String>,
    /// `--file-prefix`: runtime directory name; must differ between concurrent DPDK processes.
    /// `None` = `netstorm-<pid>`.
    pub file_prefix: Option<String>,
    /// `--no-huge`: use anonymous memory instead of hugepages (CI, containers).
    pub no_huge: bool,
    /// `--no-pci`: do not scan the PCI bus (no physical NICs).
    pub no_pci: bool,
    /// `-a` (repeatable): PCI devices to use, e.g. `0000:3b:00.0` (empty = all bound ones).
    pub allow: Vec<String>,
    /// `--log-level`, e.g. `error`, `notice`, `lib.eal:debug`.
    pub log_level: Option<String>,
    /// `--no-telemetry`.
    pub no_telemetry: bool,
    /// Anything else, passed verbatim after the arguments above.
    pub extra_args: Vec<String>,
}

impl Default for EalConfig {
    fn default() -> Self {
        Self {
            lcores: "0".into(),
            memory_mb: 1024,
            vdevs: Vec::new(),
            file_prefix: None,
            no_huge: false,
            no_pci: false,
            allow: Vec::new(),
            log_level: Some("error".into()),
            no_telemetry: true,
            extra_args: Vec::new(),
        }
    }
}

impl EalConfig {
    /// The settings CI uses: no hugepages, no PCI, the given vdevs.
    pub fn virtual_devices(vdevs: &[&str]) -> Self {
        Self {
            vdevs: vdevs.iter().map(|s| s.to_string()).collect(),
            no_huge: true,
            no_pci: true,
            ..Self::default()
        }
    }

    /// Rejects values the EAL would choke on, naming the key.
    pub fn validate(&self) -> Result<(), DpdkError> {
        let bad = |key: &'static str, why: String| Err(DpdkError::EalArgs { key, why });
        let no_ws = |s: &str| !s.is_empty() && !s.chars().any(char::is_whitespace);
        if !no_ws(&self.lcores) {
            return bad(
                "lcores (-l)",
                format!(
                    "{:?} must be a non-empty lcore list like \"0\" or \"0-3\"",
                    self.lcores
                ),
            );
        }
        if self.memory_mb == 0 {
            return bad("memory_mb (-m)", "must be at least 1".into());
        }
        for v in &self.vdevs {
            if !no_ws(v) {
                return bad("vdevs (--vdev)", format!("{v:?} must be a non-empty device string without spaces, e.g. \"net_ring0\""));
            }
        }
        if let Some(p) = &self.file_prefix {
            if !no_ws(p) || p.contains('/') {
                return bad(
                    "file_prefix (--file-prefix)",
                    format!("{p:?} must be a non-empty name without '/' or spaces"),
                );
            }
        }
        for a in &self.allow {
            if !no_ws(a) {
                return bad(
                    "allow (-a)",
                    format!("{a:?} must be a PCI address like 0000:3b:00.0"),
                );
            }
        }
        Ok(())
    }

    /// The argument vector handed to `rte_eal_init` (program name first).
    pub fn args(&self) -> Vec<String> {
        let mut a = vec!["netstorm".to_string(), "-l".into(), self.lcores.clone()];
        a.push("-m".into());
        a.push(self.memory_mb.to_string());
        if self.no_huge {
            a.push("--no-huge".into());
        }
        if self.no_pci {
            a.push("--no-pci".into());
        }
        for d in &self.allow {
            a.push("-a".into());
            a.push(d.clone());
        }
        a.push(format!(
            "--file-prefix={}",
            self.file_prefix
                .clone()
                .unwrap_or_else(|| format!("netstorm-{}", std::process::id()))
        ));
        for v in &self.vdevs {
            a.push(format!("--vdev={v}"));
        }
        if let Some(l) = &self.log_level {
            a.push(format!("--log-level={l}"));
        }
        if self.no_telemetry {
            a.push("--no-telemetry".into());
        }
        a.extend(self.extra_args.iter().cloned());
        a
    }
}

/// One entry of the static neighbour table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NeighbourConfig {
    pub node: NodeId,
    /// Next-hop MAC (the neighbour itself on a LAN, the gateway router otherwise).
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    pub udp_port: u16,
}

/// A DPDK port. Defaults: `workers = 1`, `mempool_mbufs = 8191`, `mempool_cache = 256`,
/// `mbuf_data_room = 2176` (2048 + headroom), `rx_desc = tx_desc = 1024`, `mtu = 1500`,
/// `udp_checksum = true`, `promiscuous = false`, `mac = None` (the device's own).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpdkPortConfig {
    /// The ethdev's name: a vdev (`net_ring0`, `net_memif0`) or a PCI address (`0000:3b:00.0`).
    pub device: String,
    /// This node.
    pub node: NodeId,
    /// Source MAC; `None` = the device's address.
    #[serde(default)]
    pub mac: Option<MacAddr>,
    /// Our IPv4 address (source of sent frames; received frames must be addressed to it).
    pub ip: Ipv4Addr,
    /// Our UDP port: worker `w` (queue pair `w`) uses `udp_port + w`, as the UDP backend does.
    pub udp_port: u16,
    /// The static neighbour table (no ARP).
    pub neighbours: Vec<NeighbourConfig>,
    /// rx/tx queue pairs, one per worker thread. Worker `w` sends from `udp_port + w` to a
    /// neighbour's `udp_port + w` and takes only frames for `udp_port + w` from queue `w`: the
    /// device must deliver them there (paired queues as in `net_memif` and the ring fabrics,
    /// or flow rules by UDP port on a NIC, which this port does not set up).
    #[serde(default = "defaults::workers")]
    pub workers: u16,
    /// mbufs in the pool (a power of two minus one is most memory-efficient).
    #[serde(default = "defaults::mempool_mbufs")]
    pub mempool_mbufs: u32,
    /// Per-lcore mbuf cache (only EAL threads use it).
    #[serde(default = "defaults::mempool_cache")]
    pub mempool_cache: u32,
    /// Bytes per mbuf, headroom included.
    #[serde(default = "defaults::mbuf_data_room")]
    pub mbuf_data_room: u16,
    /// Descriptors per rx queue.
    #[serde(default = "defaults::desc")]
    pub rx_desc: u16,
    /// Descriptors per tx queue.
    #[serde(default = "defaults::desc")]
    pub tx_desc: u16,
    /// IP MTU: largest IPv4 packet; datagrams up to `mtu - 28` bytes.
    #[serde(default = "defaults::mtu")]
    pub mtu: u16,
    /// Compute UDP checksums on send (otherwise send 0 = none).
    #[serde(default = "defaults::yes")]
    pub udp_checksum: bool,
    /// Put the device in promiscuous mode (needed when `mac` differs from the device's).
    #[serde(default)]
    pub promiscuous: bool,
    /// A `net_memif` client's device fails to start while its server is not listening: keep
    /// retrying the start this long (milliseconds; 0 = fail at once).
    #[serde(default = "defaults::memif_connect_wait_ms")]
    pub memif_connect_wait_ms: u32,
}

mod defaults {
    pub fn workers() -> u16 {
        1
    }
    pub fn mempool_mbufs() -> u32 {
        8191
    }
    pub fn mempool_cache() -> u32 {
        256
    }
    pub fn mbuf_data_room() -> u16 {
        2048 + super::MBUF_HEADROOM
    }
    pub fn desc() -> u16 {
        1024
    }
    pub fn mtu() -> u16 {
        1500
    }
    pub fn yes() -> bool {
        true
    }
    pub fn memif_connect_wait_ms() -> u32 {
        10_000
    }
}

impl DpdkPortConfig {
    /// A config with the documented defaults.
    pub fn new(device: &str, node: NodeId, ip: Ipv4Addr, udp_port: u16) -> Self {
        Self {
            device: device.into(),
            node,
            mac: None,
            ip,
            udp_port,
            neighbours: Vec::new(),
            workers: defaults::workers(),
            mempool_mbufs: defaults::mempool_mbufs(),
            mempool_cache: defaults::mempool_cache(),
            mbuf_data_room: defaults::mbuf_data_room(),
            rx_desc: defaults::desc(),
            tx_desc: defaults::desc(),
            mtu: defaults::mtu(),
            udp_checksum: true,
            promiscuous: false,
            memif_connect_wait_ms: defaults::memif_connect_wait_ms(),
        }
    }

    /// Largest datagram (UDP payload) this config carries.
    pub fn max_datagram_len(&self) -> usize {
        (self.mtu as usize).saturating_sub(IPV4_HEADER_LEN + UDP_HEADER_LEN)
    }

    /// Rejects values that cannot work, naming the key.
    pub fn validate(&self) -> Result<(), DpdkError> {
        let bad = |key: String, why: String| Err(DpdkError::Config { key, why });
        if self.device.is_empty() || self.device.contains('\0') {
            return bad(
                "device".into(),
                format!("{:?} is not a device name", self.device),
            );
        }
        if self.workers == 0 || self.workers > 64 {
            return bad(
                "workers".into(),
                format!("{} must be in 1..=64", self.workers),
            );
        }
        let last = u32::from(self.workers) - 1;
        if let Some(p) = std::iter::once(self.udp_port)
            .chain(self.neighbours.iter().map(|n| n.udp_port))
            .find(|&p| p == 0 || u32::from(p) + last > 65535)
        {
            return bad(
                "udp_port".into(),
                format!("{p}: workers use ports udp_port .. udp_port + {last}, which must lie in 1..=65535 (ours and every neighbour's)"),
            );
        }
        if self.mtu < 576 || self.mtu > 9000 {
            return bad("mtu".into(), format!("{} must be in 576..=9000", self.mtu));
        }
        let need_room = MBUF_HEADROOM as usize + ETH_HEADER_LEN + self.mtu as usize;
        if (self.mbuf_data_room as usize) < need_room {
            return bad(
                "mbuf_data_room".into(),
                format!("{} is too small for mtu {} (need at least {need_room}: headroom {MBUF_HEADROOM} + Ethernet 14 + mtu)", self.mbuf_data_room, self.mtu),
            );
        }
        for (key, d) in [("rx_desc", self.rx_desc), ("tx_desc", self.tx_desc)] {
            if d < 32 || !d.is_power_of_two() {
                return bad(key.into(), format!("{d} must be a power of two >= 32"));
            }
        }
        let need = self.workers as u64
            * (self.rx_desc as u64 + self.tx_desc as u64 + 2 * MAX_BURST as u64)
            + self.mempool_cache as u64;
        if (self.mempool_mbufs as u64) < need {
            return bad(
                "mempool_mbufs".into(),
                format!("{} cannot fill the queues: need at least {need} (workers x (rx_desc + tx_desc + 2 x {MAX_BURST}) + mempool_cache)", self.mempool_mbufs),
            );
        }
        if self.mempool_cache > 512 || self.mempool_cache as u64 * 3 / 2 > self.mempool_mbufs as u64
        {
            return bad(
                "mempool_cache".into(),
                format!(
                    "{} must be <= 512 and <= mempool_mbufs / 1.5",
                    self.mempool_cache
                ),
            );
        }
        let mut seen = HashSet::new();
        for (i, n) in self.neighbours.iter().enumerate() {
            if n.node == self.node {
                return bad(
                    format!("neighbours[{i}].node"),
                    format!("{} is this node", n.node),
                );
            }
            if !seen.insert(n.node) {
                return bad(
                    format!("neighbours[{i}].node"),
                    format!("node {} listed twice", n.node),
                );
            }
            if n.udp_port == 0 {
                return bad(format!("neighbours[{i}].udp_port"), "must not be 0".into());
            }
            if n.mac.0[0] & 1 == 1 {
                return bad(
                    format!("neighbours[{i}].mac"),
                    format!("{} is a multicast address", n.mac),
                );
            }
        }
        if self.udp_port == 0 {
            return bad("udp_port".into(), "must not be 0".into());
        }
        Ok(())
    }
}

/// The value of `key=value` in a `--vdev` string (the last one if repeated).
fn vdev_arg<'a>(vdev: &'a str, key: &str) -> Option<&'a str> {
    vdev.split(',')
        .skip(1)
        .filter_map(|kv| kv.trim().strip_prefix(key)?.strip_prefix('='))
        .last()
}

/// A whole DPDK setup as one TOML file: `[eal]` ([`EalConfig`]) and `[port]`
/// ([`DpdkPortConfig`]) — see README.md, "Running on a gateway".
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpdkSetup {
    #[serde(default)]
    pub eal: EalConfig,
    pub port: DpdkPortConfig,
}

impl DpdkSetup {
    /// Parses and validates; errors name the key (and line, for syntax errors).
    pub fn from_toml_str(text: &str) -> Result<Self, DpdkError> {
        let s: DpdkSetup = toml::from_str(text).map_err(|e| DpdkError::Config {
            key: "(file)".into(),
            why: e.to_string(),
        })?;
        s.eal.validate()?;
        s.port.validate()?;
        s.check_memif_buffers()?;
        Ok(s)
    }

    /// A `net_memif` port's frames must fit one memif buffer (`bsize`, default 2048): DPDK
    /// 22.11's memif chains larger frames over several buffers, and such a link was seen to
    /// deliver frames many times over (2-node syncs with 4 and 8 KB frames crawled, each side
    /// counting 17x to 2000x as many frames received as the other had sent).
    fn check_memif_buffers(&self) -> Result<(), DpdkError> {
        let Some(vdev) = self.memif_vdev() else {
            return Ok(());
        };
        let bsize = vdev_arg(vdev, "bsize")
            .map_or(Ok(2048), |b| b.parse::<u32>())
            .map_err(|e| DpdkError::Config {
                key: "vdevs".into(),
                why: format!("{vdev:?}: bsize is not a number ({e})"),
            })?;
        let frame = ETH_HEADER_LEN as u32 + u32::from(self.port.mtu);
        if frame > bsize {
            return Err(DpdkError::Config {
                key: "port.mtu".into(),
                why: format!(
                    "{}: frames of up to {frame} bytes do not fit the memif buffers of {vdev:?} ({bsize} bytes; 2048 unless bsize= says otherwise): add bsize={} to the vdev or lower mtu",
                    self.port.mtu,
                    frame.next_power_of_two()
                ),
            });
        }
        Ok(())
    }

    /// The `--vdev` string of the port's device when it is a `net_memif`.
    fn memif_vdev(&self) -> Option<&str> {
        let device = self.port.device.as_str();
        if !device.starts_with("net_memif") {
            return None;
        }
        self.eal
            .vdevs
            .iter()
            .map(String::as_str)
            .find(|v| v.split(',').next() == Some(device))
    }

    /// Whether the port is a `net_memif` client (the role memif takes unless told
    /// `role=server`): it connects to its server only when its device starts.
    pub fn is_memif_client(&self) -> bool {
        self.memif_vdev()
            .is_some_and(|v| vdev_arg(v, "role") != Some("server"))
    }
}

// ---------------------------------------------------------------------------------------
// Errors and counters
// ---------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------
// Framing (pure, tested without DPDK)
// ---------------------------------------------------------------------------------------

/// The addresses of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameAddrs {
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
}

/// Why [`parse_frame`] rejected a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameDrop {
    NotUdp,
    Malformed,
    Fragment,
    BadChecksum,
}

/// A parsed frame: addresses and where the datagram is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedFrame {
    pub addrs: FrameAddrs,
    /// `frame[payload_offset..payload_offset + payload_len]` is the datagram.
    pub payload_offset: usize,
    pub payload_len: usize,
}

/// The Internet checksum (RFC 1071) folded from `init`, not yet complemented.
fn sum16(init: u32, data: &[u8]) -> u32 {
    let mut s = init as u64;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        s += u16::from_be_bytes([c[0], c[1]]) as u64;
    }
    if let [last] = chunks.remainder() {
        s += (*last as u64) << 8;
    }
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u32
}

/// IPv4 header checksum of `hdr` (with its checksum field as it is; 0 when computing).
pub fn ipv4_checksum(hdr: &[u8]) -> u16 {
    !(sum16(0, hdr) as u16)
}

/// UDP checksum over the pseudo-header and `udp` (header with checksum field 0, + payload);
/// 0 is sent as 0xffff (RFC 768).
pub fn udp_checksum(src: Ipv4Addr, dst: Ipv4Addr, udp: &[u8]) -> u16 {
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&src.octets());
    pseudo[4..8].copy_from_slice(&dst.octets());
    pseudo[9] = IPPROTO_UDP;
    pseudo[10..12].copy_from_slice(&(udp.len() as u16).to_be_bytes());
    let c = !(sum16(sum16(0, &pseudo), udp) as u16);
    if c == 0 {
        0xffff
    } else {
        c
    }
}

/// Writes the Ethernet/IPv4/UDP headers for a `payload_len`-byte datagram into
/// `frame[..FRAME_HEADER_LEN]`; the datagram must already be at
/// `frame[FRAME_HEADER_LEN..FRAME_HEADER_LEN + payload_len]` when `udp_csum` is set.
/// Returns the frame length. `frame` must hold `FRAME_HEADER_LEN + payload_len` bytes and
/// `payload_len <= 65507`.
pub fn emit_frame(
    a: &FrameAddrs,
    ip_id: u16,
    payload_len: usize,
    udp_csum: bool,
    frame: &mut [u8],
) -> usize {
    let total = FRAME_HEADER_LEN + payload_len;
    let f = &mut frame[..total];
    f[0..6].copy_from_slice(&a.dst_mac.0);
    f[6..12].copy_from_slice(&a.src_mac.0);
    f[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    let ip_len = (IPV4_HEADER_LEN + UDP_HEADER_LEN + payload_len) as u16;
    {
        let ip = &mut f[ETH_HEADER_LEN..ETH_HEADER_LEN + IPV4_HEADER_LEN];
        ip[0] = 0x45;
        ip[1] = 0;
        ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
        ip[4..6].copy_from_slice(&ip_id.to_be_bytes());
        ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // DF
        ip[8] = 64;
        ip[9] = IPPROTO_UDP;
        ip[10..12].copy_from_slice(&[0, 0]);
        ip[12..16].copy_from_slice(&a.src_ip.octets());
        ip[16..20].copy_from_slice(&a.dst_ip.octets());
        let c = ipv4_checksum(ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
    }
    let udp = &mut f[ETH_HEADER_LEN + IPV4_HEADER_LEN..];
    udp[0..2].copy_from_slice(&a.src_port.to_be_bytes());
    udp[2..4].copy_from_slice(&a.dst_port.to_be_bytes());
    udp[4..6].copy_from_slice(&((UDP_HEADER_LEN + payload_len) as u16).to_be_bytes());
    udp[6..8].copy_from_slice(&[0, 0]);
    if udp_csum {
        let c = udp_checksum(a.src_ip, a.dst_ip, udp);
        udp[6..8].copy_from_slice(&c.to_be_bytes());
    }
    total
}

/// Frame headers to one destination with IP id, lengths and checksums zero, and the
/// ones'-complement sum of that IPv4 header: [`HeaderTemplate::write`] stamps a frame with
/// its lengths, an IP id and the matching header checksum (adding the changed 16-bit fields
/// to the stored sum, RFC 1624) without rebuilding or re-summing the header — the send fast
/// path when UDP checksums are off. Built once per neighbour; nothing allocates.
#[derive(Debug, Clone, Copy)]
pub struct HeaderTemplate {
    bytes: [u8; FRAME_HEADER_LEN],
    ip_sum: u32,
}

impl HeaderTemplate {
    /// Headers for datagrams to `a`.
    pub fn new(a: &FrameAddrs) -> Self {
        let mut b = [0u8; FRAME_HEADER_LEN];
        b[0..6].copy_from_slice(&a.dst_mac.0);
        b[6..12].copy_from_slice(&a.src_mac.0);
        b[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        let ip = &mut b[ETH_HEADER_LEN..ETH_HEADER_LEN + IPV4_HEADER_LEN];
        ip[0] = 0x45;
        ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // DF
        ip[8] = 64;
        ip[9] = IPPROTO_UDP;
        ip[12..16].copy_from_slice(&a.src_ip.octets());
        ip[16..20].copy_from_slice(&a.dst_ip.octets());
        let ip_sum = sum16(0, ip);
        let udp = &mut b[ETH_HEADER_LEN + IPV4_HEADER_LEN..];
        udp[0..2].copy_from_slice(&a.src_port.to_be_bytes());
        udp[2..4].copy_from_slice(&a.dst_port.to_be_bytes());
        Self { bytes: b, ip_sum }
    }

    /// The destination IPv4 address.
    pub fn dst_ip(&self) -> Ipv4Addr {
        let ip = &self.bytes[ETH_HEADER_LEN + 16..ETH_HEADER_LEN + 20];
        Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3])
    }

    /// Writes the headers of a `payload_len`-byte datagram into `frame[..FRAME_HEADER_LEN]`
    /// with IP id `ip_id` and UDP checksum 0 (equal to what [`emit_frame`] writes without UDP
    /// checksum). `payload_len <= 65507`.
    #[inline]
    pub fn write(&self, ip_id: u16, payload_len: usize, frame: &mut [u8]) {
        let h = &mut frame[..FRAME_HEADER_LEN];
        h.copy_from_slice(&self.bytes);
        let ip_len = (IPV4_HEADER_LEN + UDP_HEADER_LEN + payload_len) as u16;
        let mut sum = self.ip_sum + ip_id as u32 + ip_len as u32;
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        let ip = ETH_HEADER_LEN;
        h[ip + 2..ip + 4].copy_from_slice(&ip_len.to_be_bytes());
        h[ip + 4..ip + 6].copy_from_slice(&ip_id.to_be_bytes());
        h[ip + 10..ip + 12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        let udp_len = (UDP_HEADER_LEN + payload_len) as u16;
        h[ip + IPV4_HEADER_LEN + 4..ip + IPV4_HEADER_LEN + 6]
            .copy_from_slice(&udp_len.to_be_bytes());
    }
}

/// Parses an Ethernet II / IPv4 / UDP frame (Ethernet padding allowed), verifying the IPv4
/// header checksum and, when non-zero, the UDP checksum. Never panics.
pub fn parse_frame(frame: &[u8]) -> Result<ParsedFrame, FrameDrop> {
    if frame.len() < ETH_HEADER_LEN {
        return Err(FrameDrop::Malformed);
    }
    if u16::from_be_bytes([frame[12], frame[13]]) != ETHERTYPE_IPV4 {
        return Err(FrameDrop::NotUdp);
    }
    let ip = &frame[ETH_HEADER_LEN..];
    if ip.len() < IPV4_HEADER_LEN {
        return Err(FrameDrop::Malformed);
    }
    if ip[0] >> 4 != 4 || ip[0] & 0x0f != 5 {
        // Not IPv4, or IPv4 with options (which we never send).
        return Err(FrameDrop::NotUdp);
    }
    if ip[9] != IPPROTO_UDP {
        return Err(FrameDrop::NotUdp);
    }
    let ip_len = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    if ip_len < IPV4_HEADER_LEN + UDP_HEADER_LEN || ip_len > ip.len() {
        return Err(FrameDrop::Malformed);
    }
    if sum16(0, &ip[..IPV4_HEADER_LEN]) != 0xffff {
        return Err(FrameDrop::BadChecksum);
    }
    let frag = u16::from_be_bytes([ip[6], ip[7]]);
    if frag & 0x3fff != 0 {
        return Err(FrameDrop::Fragment);
    }
    let src_ip = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst_ip = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let udp = &ip[IPV4_HEADER_LEN..ip_len];
    let udp_len = u16::from_be_bytes([udp[4], udp[5]]) as usize;
    if udp_len != udp.len() {
        return Err(FrameDrop::Malformed);
    }
    let csum = u16::from_be_bytes([udp[6], udp[7]]);
    if csum != 0 {
        let mut pseudo = [0u8; 12];
        pseudo[0..4].copy_from_slice(&src_ip.octets());
        pseudo[4..8].copy_from_slice(&dst_ip.octets());
        pseudo[9] = IPPROTO_UDP;
        pseudo[10..12].copy_from_slice(&(udp_len as u16).to_be_bytes());
        if sum16(sum16(0, &pseudo), udp) != 0xffff {
            return Err(FrameDrop::BadChecksum);
        }
    }
    let mut src_mac = [0u8; 6];
    let mut dst_mac = [0u8; 6];
    dst_mac.copy_from_slice(&frame[0..6]);
    src_mac.copy_from_slice(&frame[6..12]);
    Ok(ParsedFrame {
        addrs: FrameAddrs {
            src_mac: MacAddr(src_mac),
            dst_mac: MacAddr(dst_mac),
            src_ip,
            dst_ip,
            src_port: u16::from_be_bytes([udp[0], udp[1]]),
            dst_port: u16::from_be_bytes([udp[2], udp[3]]),
        },
        payload_offset: FRAME_HEADER_LEN,
        payload_len: udp_len - UDP_HEADER_LEN,
    })
}

// ---------------------------------------------------------------------------------------
// EAL
// ---------------------------------------------------------------------------------------

/// The process's EAL: the arguments it was initialized with, and how that went.
static EAL: OnceLock<(Vec<String>, Result<(), String>)> = OnceLock::new();

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

/// Initializes the EAL (once per process). Calling again with the same config is a no-op;
/// with a different config it is an error, as is every call after a failed init.
pub fn eal_init(cfg: &EalConfig) -> Result<(), DpdkError> {
    if !sys::LINKED {
        return Err(DpdkError::NotLinked);
    }
    cfg.validate()?;
    let requested = cfg.args();
    let (first, outcome) = EAL.get_or_init(|| {
        let args = requested.clone();
        // rte_eal_init pins the calling thread to the main lcore: run it on a helper thread
        // so the caller's (and its future children's) affinity is left alone.
        let res = std::thread::Builder::new()
            .name("netstorm-eal-init".into())
            .spawn(move || run_eal_init(&args))
            .map_err(|e| format!("cannot spawn the EAL init thread: {e}"))
            .and_then(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("the EAL init thread panicked".into()))
            });
        (requested.clone(), res)
    });
    if first != &requested {
        // Only the default (pid-derived) file prefix may differ textually between two equal
        // configs in one process — it cannot — so any difference is a real conflict.
        return Err(DpdkError::EalAlreadyInitialized {
            first: first.clone(),
            requested,
        });
    }
    outcome.clone().map_err(|e| {
        let (errno, msg) = e.split_once('\u{1}').map_or((0, e.clone()), |(n, m)| {
            (n.parse().unwrap_or(0), m.to_string())
        });
        DpdkError::EalInit {
            errno,
            msg,
            hint: errno_hint(errno).to_string(),
            args: first.clone(),
        }
    })
}

/// `Err("errno\u{1}message")` on failure.
fn run_eal_init(args: &[String]) -> Result<(), String> {
    let mut ptrs: Vec<*mut c_char> = Vec::with_capacity(args.len() + 1);
    for a in args {
        let c =
            CString::new(a.as_str()).map_err(|_| format!("22\u{1}argument {a:?} contains NUL"))?;
        // DPDK may keep pointers into argv for the life of the process: leak them.
        ptrs.push(c.into_raw());
    }
    ptrs.push(std::ptr::null_mut());
    let argv = Box::leak(ptrs.into_boxed_slice());
    // SAFETY: argv holds args.len() valid NUL-terminated strings (leaked, so they live for the
    // process) followed by NULL; this runs once per process (guarded by the EAL OnceLock).
    let ret = unsafe { sys::ns_eal_init(args.len() as c_int, argv.as_mut_ptr()) };
    if ret < 0 {
        // SAFETY: reads the calling thread's rte_errno, always valid.
        let errno = unsafe { sys::ns_errno() };
        return Err(format!("{errno}\u{1}{}", sys::strerror(errno)));
    }
    Ok(())
}

/// Whether the EAL was initialized successfully in this process.
pub fn eal_initialized() -> bool {
    matches!(EAL.get(), Some((_, Ok(()))))
}

/// Registers the calling (non-EAL) thread with the EAL so it gets an lcore id, which makes
/// the mbuf pools' per-lcore caches work for it (without one, every mbuf alloc/free goes to
/// the pool's shared ring). Optional; call once per worker thread after [`eal_init`].
pub fn register_thread() -> Result<(), DpdkError> {
    if !sys::LINKED {
        return Err(DpdkError::NotLinked);
    }
    if !eal_initialized() {
        return Err(DpdkError::EalNotInitialized);
    }
    // SAFETY: the EAL is initialized; registers only the calling thread.
    let ret = unsafe { sys::ns_thread_register() };
    if ret < 0 {
        return Err(device_error(
            "rte_thread_register (no free lcore id: lower the EAL lcores or threads)",
            "(thread)",
            ret,
        ));
    }
    Ok(())
}

/// Releases the lcore id [`register_thread`] gave the calling thread (call before the thread
/// ends; ids are a small, finite set).
pub fn unregister_thread() {
    if sys::LINKED && eal_initialized() {
        // SAFETY: the EAL is initialized; rte_thread_unregister is a no-op for threads that
        // did not register.
        unsafe { sys::ns_thread_unregister() };
    }
}

// ---------------------------------------------------------------------------------------
// Device and port
// ---------------------------------------------------------------------------------------

/// Devices opened by a live `DpdkPort` in this process.
static OPEN_DEVICES: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// A configured, started ethdev and its mbuf pool; stopped when the last [`DpdkPort`] on it
/// is dropped.
#[derive(Debug)]
struct Device {
    name: String,
    port_id: u16,
    pool: *mut sys::RteMempool,
}

// SAFETY: the mempool is thread-safe (ring_mp_mc ops); the port id is a plain integer and the
// ethdev's control functions are only called from Device::drop, which runs once, and from
// DpdkPort::restart_device, given every port of the device mutably.
unsafe impl Send for Device {}
// SAFETY: as above; shared references only read `pool` (thread-safe mempool) and `port_id`.
unsafe impl Sync for Device {}

impl Drop for Device {
    fn drop(&mut self) {
        // The device is stopped, not closed: closing releases vdevs (net_ring) for good, and a
        // stopped device can be configured and started again by a later `DpdkPort::open`.
        // SAFETY: every DpdkPort (so every rx/tx user) of this device is gone — Device is
        // dropped with the last Arc — so no thread is inside rx/tx burst on it.
        unsafe {
            sys::ns_eth_dev_stop(self.port_id);
        }
        // The pool is deliberately not freed: the stopped device (and, for net_ring, rings
        // that outlive it) may still hold its mbufs. A bounded leak per `open`.
        let _ = self.pool;
        if let Ok(mut open) = OPEN_DEVICES.lock() {
            open.retain(|&p| p != self.port_id);
        }
    }
}

/// One worker's queue pair on a DPDK ethdev. See the module docs.
#[derive(Debug)]
pub struct DpdkPort {
    dev: Arc<Device>,
    queue: u16,
    me: FrameAddrsTemplate,
    /// Neighbour table indexed by NodeId: (mac, ip, port).
    by_node: Vec<Option<(MacAddr, Ipv4Addr, u16)>>,
    /// (ip, port) → node, for receive (linear scan: tables are small).
    by_addr: Vec<(Ipv4Addr, u16, NodeId)>,
    max_datagram: usize,
    udp_checksum: bool,
    ip_id: u16,
    /// Rx queues this port polls (round robin, one burst each per call): `[queue]` for a
    /// worker's queue pair, one per incoming link for [`RingLinks`] ports.
    rx_queues: Box<[u16]>,
    /// Next rx queue (index into `rx_queues`) to poll first.
    rx_next: usize,
    /// Tx queue per destination node (`NO_QUEUE` = none); empty = always `queue`.
    tx_queue_of: Box<[u16]>,
    /// Frame headers per neighbour (indexed by node, built at open).
    tx_templates: Box<[Option<HeaderTemplate>]>,
    /// mbufs allocated ahead for in-place sends ([`Port::send_each`]), each with a full-size
    /// frame appended: a LIFO of `tx_stash_n` (mbuf, data) pairs, freed on drop.
    tx_stash: [*mut sys::RteMbuf; MAX_BURST],
    tx_stash_data: [*mut u8; MAX_BURST],
    tx_stash_n: usize,
    /// Per tx queue, the datagrams [`Port::send_each`] framed and not yet handed over: a
    /// call leaves with one burst per queue, however the engine interleaves destinations.
    tx_pending: Box<[TxPending]>,
    /// One rx burst's mbufs, data pointers and lengths: kept here so a burst does not zero
    /// fresh arrays on the stack (those stores queue behind the tx frames' still-pending
    /// stores to lines other cores hold: `perf` put a third of the receive there).
    rx_burst: RxBurst,
    pub stats: DpdkPortStats,
}

#[derive(Debug)]
struct RxBurst {
    mbufs: [*mut sys::RteMbuf; MAX_BURST],
    data: [*mut u8; MAX_BURST],
    lens: [u16; MAX_BURST],
}

/// How many frames ahead [`Port::send_each`] asks for the stash's cache lines: one frame of
/// engine work (~35 ns) hides little of a cross-core ownership transfer; on the 2-core VM,
/// `bench dataplane --mode engine --no-mac --batch 64` gave 38.8-39.1 Gbit/s of capacity one
/// frame ahead, 40.3-41.3 four ahead (plus the first four at the start of a call), 40.6-41.2
/// eight ahead.
const TX_PREFETCH_FRAMES: usize = 4;

/// Framed mbufs waiting for one tx queue's burst.
#[derive(Debug)]
struct TxPending {
    mbufs: [*mut sys::RteMbuf; MAX_BURST],
    n: usize,
}

impl TxPending {
    fn new() -> Self {
        Self {
            mbufs: [std::ptr::null_mut(); MAX_BURST],
            n: 0,
        }
    }
}

/// Hints the CPU to fetch the `len` bytes at `p` into its cache, for writing or for reading
/// (no effect on other targets).
#[inline(always)]
fn prefetch_lines(p: *const u8, len: usize, for_write: bool) {
    #[cfg(target_arch = "x86_64")]
    for off in (0..len).step_by(64) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_ET0, _MM_HINT_T0};
        let line = p.wrapping_add(off) as *const i8;
        // SAFETY: a prefetch is a hint: it never faults and changes no state visible to the
        // program, whatever the address; `wrapping_add` keeps the pointer arithmetic defined.
        unsafe {
            if for_write {
                _mm_prefetch::<_MM_HINT_ET0>(line)
            } else {
                _mm_prefetch::<_MM_HINT_T0>(line)
            }
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, len, for_write);
}

/// Hands `mbufs` (filled, framed, owned; at most [`MAX_BURST`]) to tx queue `queue` of a
/// started device in one burst; frees and counts what it refuses. Returns how many it took.
fn tx_burst_or_free(
    port_id: u16,
    queue: u16,
    mbufs: &mut [*mut sys::RteMbuf],
    stats: &mut DpdkPortStats,
) -> usize {
    let n = mbufs.len();
    if n == 0 {
        return 0;
    }
    // SAFETY: the caller's port owns `queue` of the started device `port_id`; mbufs[..n] are
    // valid, owned, filled mbufs; the first `sent` now belong to the driver.
    let sent =
        unsafe { sys::ns_eth_tx_burst(port_id, queue, mbufs.as_mut_ptr(), n as u16) } as usize;
    if sent < n {
        // SAFETY: mbufs[sent..n] were not taken by the driver and are still ours.
        unsafe { sys::ns_pktmbuf_free_bulk(mbufs[sent..].as_mut_ptr(), (n - sent) as u32) };
        stats.tx_refused += (n - sent) as u64;
    }
    if sent > 0 {
        stats.tx_bursts += 1;
    }
    stats.tx_frames += sent as u64;
    sent
}

impl Drop for DpdkPort {
    fn drop(&mut self) {
        if self.tx_stash_n > 0 {
            // SAFETY: the stash's mbufs are ours and unused; the pool is alive (`dev` is
            // dropped after this).
            unsafe {
                sys::ns_pktmbuf_free_bulk(self.tx_stash.as_mut_ptr(), self.tx_stash_n as u32)
            };
            self.tx_stash_n = 0;
        }
    }
}

/// "No tx queue leads to this node" in [`DpdkPort::tx_queue_of`].
const NO_QUEUE: u16 = u16::MAX;

#[derive(Debug, Clone, Copy)]
struct FrameAddrsTemplate {
    mac: MacAddr,
    ip: Ipv4Addr,
    udp_port: u16,
}

// SAFETY: a DpdkPort exclusively owns its rx/tx queue pair (one thread per queue is DPDK's
// rule); the shared Device is Send + Sync. Moving the port to another thread is fine, sharing
// it is not (it is not Sync).
unsafe impl Send for DpdkPort {}

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

impl DpdkPort {
    /// Initializes the EAL (see [`eal_init`]) and opens `cfg.device` with `cfg.workers == 1`.
    pub fn open(eal: &EalConfig, cfg: &DpdkPortConfig) -> Result<DpdkPort, DpdkError> {
        if cfg.workers != 1 {
            return Err(DpdkError::Config {
                key: "workers".into(),
                why: format!(
                    "{}: DpdkPort::open opens one queue pair; use open_workers",
                    cfg.workers
                ),
            });
        }
        let mut v = Self::open_workers(eal, cfg)?;
        Ok(v.remove(0))
    }

    /// Initializes the EAL (see [`eal_init`]), configures and starts `cfg.device` with
    /// `cfg.workers` queue pairs, and returns one port per queue pair.
    pub fn open_workers(eal: &EalConfig, cfg: &DpdkPortConfig) -> Result<Vec<DpdkPort>, DpdkError> {
        Self::open_inner(eal, cfg, cfg.workers, cfg.workers)
    }

    /// As [`DpdkPort::open`] with `nb_rx` rx and `nb_tx` tx queues on the device (the port
    /// polls queue 0 until its owner says otherwise; see [`RingLinks::open_port`]).
    fn open_queues(
        eal: &EalConfig,
        cfg: &DpdkPortConfig,
        nb_rx: u16,
        nb_tx: u16,
    ) -> Result<DpdkPort, DpdkError> {
        let mut v = Self::open_inner(eal, cfg, nb_rx, nb_tx)?;
        Ok(v.remove(0))
    }

    fn open_inner(
        eal: &EalConfig,
        cfg: &DpdkPortConfig,
        nb_rx: u16,
        nb_tx: u16,
    ) -> Result<Vec<DpdkPort>, DpdkError> {
        if !sys::LINKED {
            return Err(DpdkError::NotLinked);
        }
        cfg.validate()?;
        eal_init(eal)?;
        let name = CString::new(cfg.device.as_str()).map_err(|_| DpdkError::Config {
            key: "device".into(),
            why: "contains NUL".into(),
        })?;
        let mut port_id = 0u16;
        // SAFETY: name is NUL-terminated, port_id writable; the EAL is initialized.
        let ret = unsafe { sys::ns_eth_dev_get_port_by_name(name.as_ptr(), &mut port_id) };
        if ret != 0 {
            // SAFETY: EAL initialized.
            let available = unsafe { sys::ns_eth_dev_count_avail() };
            return Err(DpdkError::NoSuchDevice {
                device: cfg.device.clone(),
                available,
            });
        }
        {
            let mut open = OPEN_DEVICES.lock().unwrap_or_else(|e| e.into_inner());
            if open.contains(&port_id) {
                return Err(DpdkError::DeviceBusy {
                    device: cfg.device.clone(),
                });
            }
            open.push(port_id);
        }
        match Self::setup(cfg, port_id, nb_rx, nb_tx) {
            Ok(ports) => Ok(ports),
            Err(e) => {
                OPEN_DEVICES
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .retain(|&p| p != port_id);
                Err(e)
            }
        }
    }

    fn setup(
        cfg: &DpdkPortConfig,
        port_id: u16,
        nb_rx: u16,
        nb_tx: u16,
    ) -> Result<Vec<DpdkPort>, DpdkError> {
        static POOL_SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dev_name = cfg.device.as_str();
        // SAFETY: valid port id (looked up by name).
        let socket = unsafe { sys::ns_eth_dev_socket_id(port_id) };
        let pool_name = CString::new(format!(
            "ns_pool_{port_id}_{}",
            POOL_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ))
        .expect("no NUL in a formatted name");
        // SAFETY: EAL initialized; pool_name NUL-terminated (DPDK copies it).
        let pool = unsafe {
            sys::ns_pktmbuf_pool_create(
                pool_name.as_ptr(),
                cfg.mempool_mbufs,
                cfg.mempool_cache,
                cfg.mbuf_data_room,
                socket.max(sys::SOCKET_ID_ANY),
            )
        };
        if pool.is_null() {
            // SAFETY: reads this thread's rte_errno.
            let errno = unsafe { sys::ns_errno() };
            return Err(DpdkError::Mempool {
                mbufs: cfg.mempool_mbufs,
                data_room: cfg.mbuf_data_room,
                errno,
                msg: sys::strerror(errno),
            });
        }
        let free_pool = |e: DpdkError| {
            // SAFETY: the pool was created above and no queue that could hold its mbufs was
            // started (setup failed before dev_start succeeded).
            unsafe { sys::ns_mempool_free(pool) };
            e
        };
        let check = |op: &'static str, ret: c_int| {
            if ret < 0 {
                Err(device_error(op, dev_name, ret))
            } else {
                Ok(())
            }
        };
        // SAFETY: valid port id; the device is not started (it is ours: OPEN_DEVICES).
        let ret = unsafe { sys::ns_eth_dev_configure(port_id, nb_rx, nb_tx) };
        check("rte_eth_dev_configure (workers = rx/tx queues)", ret).map_err(free_pool)?;
        // Best effort: virtual devices often do not implement MTU changes.
        // SAFETY: valid, configured port.
        let _ = unsafe { sys::ns_eth_dev_set_mtu(port_id, cfg.mtu) };
        for q in 0..nb_rx {
            // SAFETY: configured, stopped port; q < configured queue count; the pool outlives
            // the device (it is never freed once the device started).
            let ret = unsafe { sys::ns_eth_rx_queue_setup(port_id, q, cfg.rx_desc, socket, pool) };
            check("rte_eth_rx_queue_setup (rx_desc)", ret).map_err(free_pool)?;
        }
        for q in 0..nb_tx {
            // SAFETY: as above.
            let ret = unsafe { sys::ns_eth_tx_queue_setup(port_id, q, cfg.tx_desc, socket) };
            check("rte_eth_tx_queue_setup (tx_desc)", ret).map_err(free_pool)?;
        }
        if cfg.promiscuous {
            // SAFETY: valid port.
            let ret = unsafe { sys::ns_eth_promiscuous_enable(port_id) };
            check("rte_eth_promiscuous_enable (promiscuous)", ret).map_err(free_pool)?;
        }
        // SAFETY: queues set up; a failed start leaves the port configured and stopped.
        let start = || unsafe { sys::ns_eth_dev_start(port_id) };
        let mut ret = start();
        let mut op = "rte_eth_dev_start";
        if cfg.device.starts_with("net_memif") {
            op = "rte_eth_dev_start (a net_memif client starts only once its server listens; waited memif_connect_wait_ms)";
            let wait = std::time::Duration::from_millis(cfg.memif_connect_wait_ms.into());
            let deadline = std::time::Instant::now() + wait;
            while ret < 0 && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(50));
                ret = start();
            }
        }
        check(op, ret).map_err(free_pool)?;
        let dev = Arc::new(Device {
            name: cfg.device.clone(),
            port_id,
            pool,
        });
        let mac = match cfg.mac {
            Some(m) => m,
            None => {
                let mut m = [0u8; 6];
                // SAFETY: m has 6 bytes.
                let ret = unsafe { sys::ns_eth_macaddr_get(port_id, m.as_mut_ptr()) };
                check("rte_eth_macaddr_get (set `mac` explicitly)", ret)?;
                MacAddr(m)
            }
        };
        let max_node = cfg
            .neighbours
            .iter()
            .map(|n| n.node as usize)
            .max()
            .unwrap_or(0);
        let mut by_node = vec![None; max_node + 1];
        for n in &cfg.neighbours {
            by_node[n.node as usize] = Some((n.mac, n.ip, n.udp_port));
        }
        tracing::debug!(device = %cfg.device, port_id, workers = cfg.workers, %mac, "DPDK port started");
        // Worker q: our udp_port + q, each neighbour's udp_port + q (validated to fit).
        Ok((0..cfg.workers)
            .map(|q| {
                let by_node: Vec<_> = by_node
                    .iter()
                    .map(|n| n.map(|(dmac, dip, dport)| (dmac, dip, dport + q)))
                    .collect();
                let by_addr = cfg
                    .neighbours
                    .iter()
                    .map(|n| (n.ip, n.udp_port + q, n.node))
                    .collect();
                let tx_templates = by_node
                    .iter()
                    .map(|n| {
                        n.map(|(dmac, dip, dport)| {
                            HeaderTemplate::new(&FrameAddrs {
                                src_mac: mac,
                                dst_mac: dmac,
                                src_ip: cfg.ip,
                                dst_ip: dip,
                                src_port: cfg.udp_port + q,
                                dst_port: dport,
                            })
                        })
                    })
                    .collect();
                DpdkPort {
                    dev: dev.clone(),
                    queue: q,
                    me: FrameAddrsTemplate {
                        mac,
                        ip: cfg.ip,
                        udp_port: cfg.udp_port + q,
                    },
                    by_addr,
                    tx_templates,
                    by_node,
                    max_datagram: cfg.max_datagram_len(),
                    udp_checksum: cfg.udp_checksum,
                    ip_id: q.wrapping_mul(0x1000),
                    rx_queues: vec![q].into_boxed_slice(),
                    rx_next: 0,
                    tx_stash: [std::ptr::null_mut(); MAX_BURST],
                    tx_stash_data: [std::ptr::null_mut(); MAX_BURST],
                    tx_stash_n: 0,
                    rx_burst: RxBurst {
                        mbufs: [std::ptr::null_mut(); MAX_BURST],
                        data: [std::ptr::null_mut(); MAX_BURST],
                        lens: [0; MAX_BURST],
                    },
                    tx_pending: (0..cfg.workers).map(|_| TxPending::new()).collect(),
                    tx_queue_of: Box::default(),
                    stats: DpdkPortStats::default(),
                }
            })
            .collect())
    }

    /// The ethdev port id.
    pub fn port_id(&self) -> u16 {
        self.dev.port_id
    }

    /// The device name from the config.
    pub fn device(&self) -> &str {
        &self.dev.name
    }

    /// This port's queue pair.
    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// Our source MAC.
    pub fn mac(&self) -> MacAddr {
        self.me.mac
    }

    /// Free mbufs in the device's pool (leak checks in tests).
    pub fn pool_available(&self) -> u32 {
        // SAFETY: the pool lives as long as the device.
        unsafe { sys::ns_mempool_avail_count(self.dev.pool) }
    }

    /// Whether the device reports its link up; `None` when it cannot say.
    pub fn link_up(&self) -> Option<bool> {
        // SAFETY: valid, started port; rte_eth_link_get_nowait only reads its state.
        let ret = unsafe { sys::ns_eth_link_up(self.dev.port_id) };
        (ret >= 0).then_some(ret == 1)
    }

    /// Stops and starts the device again, keeping its queues and pool. A `net_memif` client
    /// connects only when its device starts, and gives up if the handshake fails (its server
    /// listens before its own device has started): restarting it tries again. Refused while
    /// other ports of the device exist (other workers could be inside rx/tx burst).
    pub fn restart_device(ports: &mut [DpdkPort]) -> Result<(), DpdkError> {
        let Some(first) = ports.first() else {
            return Ok(());
        };
        let dev = first.dev.clone();
        // Ours (`dev`) plus one per port given: nobody else holds the device.
        if Arc::strong_count(&dev) != ports.len() + 1
            || ports.iter().any(|p| !Arc::ptr_eq(&p.dev, &dev))
        {
            return Err(DpdkError::Config {
                key: "workers".into(),
                why: format!("{}: restarting the device needs all of its ports", dev.name),
            });
        }
        // SAFETY: `ports` (borrowed mutably) are all the device's ports, so no thread is in
        // rx/tx burst on it; a stopped, configured port may be started again.
        let ret = unsafe { sys::ns_eth_dev_stop(dev.port_id) };
        if ret < 0 {
            return Err(device_error("rte_eth_dev_stop", &dev.name, ret));
        }
        // SAFETY: as above; the queues set up at open are kept across stop/start.
        let ret = unsafe { sys::ns_eth_dev_start(dev.port_id) };
        if ret < 0 {
            return Err(device_error("rte_eth_dev_start", &dev.name, ret));
        }
        Ok(())
    }

    /// The ethdev's own counters: [ipackets, opackets, ibytes, obytes, imissed, oerrors].
    pub fn device_stats(&self) -> Option<[u64; 6]> {
        let mut out = [0u64; 6];
        // SAFETY: out has room for 6 u64; valid port.
        let ret = unsafe { sys::ns_eth_stats_get(self.dev.port_id, out.as_mut_ptr()) };
        (ret == 0).then_some(out)
    }

    fn lookup_sender(&self, ip: Ipv4Addr, port: u16) -> Option<NodeId> {
        self.by_addr
            .iter()
            .find(|&&(i, p, _)| i == ip && p == port)
            .map(|&(_, _, n)| n)
    }

    /// Classifies one received frame: `Some((sender, payload offset, payload length))` when it
    /// is a datagram for us from a known neighbour, otherwise counted and `None`.
    #[inline]
    fn classify(&mut self, frame: &[u8]) -> Option<(NodeId, usize, usize)> {
        let parsed = match parse_frame(frame) {
            Ok(p) => p,
            Err(d) => {
                let c = match d {
                    FrameDrop::NotUdp => &mut self.stats.rx_not_udp,
                    FrameDrop::Malformed => &mut self.stats.rx_malformed,
                    FrameDrop::Fragment => &mut self.stats.rx_fragment,
                    FrameDrop::BadChecksum => &mut self.stats.rx_bad_checksum,
                };
                *c += 1;
                return None;
            }
        };
        let a = parsed.addrs;
        if a.dst_ip != self.me.ip || a.dst_port != self.me.udp_port {
            self.stats.rx_not_for_us += 1;
            return None;
        }
        let Some(from) = self.lookup_sender(a.src_ip, a.src_port) else {
            self.stats.rx_unknown_neighbour += 1;
            return None;
        };
        Some((from, parsed.payload_offset, parsed.payload_len))
    }

    /// Number of rx queues this port polls (1, or one per incoming link of a [`RingLinks`]
    /// port).
    pub fn rx_queue_count(&self) -> usize {
        self.rx_queues.len()
    }

    /// Receives one burst of at most `max` (≤ [`MAX_BURST`]) frames from rx queue
    /// `self.rx_queues[index]` and hands each datagram for us to `f(sender, datagram)` in
    /// place, without copying; frames that are not are counted and dropped. Returns the number
    /// of frames taken from the queue (0 = the queue is empty). Mbufs are freed in bulk after
    /// the burst.
    pub fn recv_queue_with(
        &mut self,
        index: usize,
        max: usize,
        f: impl FnMut(NodeId, &[u8]),
    ) -> usize {
        let n = self.rx_take(index, 0, max);
        if n > 0 {
            self.rx_hand_over(n, f);
        }
        n
    }

    /// Takes one burst of at most `max` frames from rx queue `self.rx_queues[index]` into
    /// `rx_burst[at..]` (mbufs kept, nothing copied or parsed); returns how many. The caller
    /// hands them over with [`DpdkPort::rx_hand_over`].
    fn rx_take(&mut self, index: usize, at: usize, max: usize) -> usize {
        let Some(&queue) = self.rx_queues.get(index) else {
            return 0;
        };
        let want = max.min(MAX_BURST.saturating_sub(at)) as u16;
        if want == 0 {
            return 0;
        }
        let burst = &mut self.rx_burst;
        // SAFETY: the device is started; this port owns `queue` (one thread: DpdkPort is Send
        // but not Sync); the three arrays have room for `want` <= MAX_BURST - at entries
        // from `at` on.
        let n = unsafe {
            sys::ns_eth_rx_burst_views(
                self.dev.port_id,
                queue,
                burst.mbufs[at..].as_mut_ptr(),
                want,
                burst.data[at..].as_mut_ptr(),
                burst.lens[at..].as_mut_ptr(),
            )
        } as usize;
        self.stats.rx_frames += n as u64;
        n
    }

    /// Hands the datagrams for us among the `n` frames in `rx_burst` to `f(sender, datagram)`
    /// in place (the others are counted and dropped), then frees the `n` mbufs in bulk.
    fn rx_hand_over(&mut self, n: usize, mut f: impl FnMut(NodeId, &[u8])) {
        let first = (self.rx_burst.data[0], self.rx_burst.lens[0]);
        if !first.0.is_null() {
            prefetch_lines(first.0, first.1 as usize, false);
        }
        for i in 0..n {
            let (data, len) = (self.rx_burst.data[i], self.rx_burst.lens[i] as usize);
            if i + 1 < n {
                let (next, next_len) = (self.rx_burst.data[i + 1], self.rx_burst.lens[i + 1]);
                if !next.is_null() {
                    // The next frame was written by another core: start pulling it in while
                    // this one is processed.
                    prefetch_lines(next, next_len as usize, false);
                }
            }
            if data.is_null() {
                self.stats.rx_malformed += 1;
                continue;
            }
            // SAFETY: the mbuf's only segment holds `len` initialized bytes at `data`, valid
            // until the bulk free below; nothing else aliases it.
            let frame = unsafe { std::slice::from_raw_parts(data, len) };
            if let Some((from, off, len)) = self.classify(frame) {
                self.stats.rx_datagrams += 1;
                f(from, &frame[off..off + len]);
            }
        }
        // SAFETY: we own the burst's mbufs[..n] and use neither them nor `frame` slices
        // afterwards.
        unsafe { sys::ns_pktmbuf_free_bulk(self.rx_burst.mbufs.as_mut_ptr(), n as u32) };
    }

    /// Receives up to `max` frames, one burst per rx queue in turn (round robin over calls),
    /// handing each datagram to `f(sender, datagram)` in place. Returns the number of frames
    /// taken from the queues.
    pub fn recv_with(&mut self, max: usize, mut f: impl FnMut(NodeId, &[u8])) -> usize {
        let queues = self.rx_queues.len();
        let mut taken = 0;
        for i in 0..queues {
            if taken >= max {
                break;
            }
            let index = (self.rx_next + i) % queues;
            taken += self.recv_queue_with(index, max - taken, &mut f);
        }
        self.rx_next = (self.rx_next + 1) % queues.max(1);
        taken
    }

    /// The tx queue leading to `peer`, if the neighbour table knows it.
    #[inline]
    fn tx_queue(&self, peer: NodeId) -> Option<u16> {
        self.by_node.get(peer as usize).copied().flatten()?;
        if self.tx_queue_of.is_empty() {
            return Some(self.queue);
        }
        match self.tx_queue_of.get(peer as usize) {
            Some(&q) if q != NO_QUEUE => Some(q),
            _ => None,
        }
    }

    /// Sends `n` (≤ [`MAX_BURST`]) datagrams of `len` bytes each to `peer`, writing each one
    /// in place (no intermediate copy) with `fill(i, datagram)`. Returns how many the device
    /// took (the first ones); the rest were freed and may be offered again. 0 when the mbuf
    /// pool is empty (counted in `tx_pool_empty`).
    pub fn send_with(
        &mut self,
        peer: NodeId,
        n: usize,
        len: usize,
        mut fill: impl FnMut(usize, &mut [u8]),
    ) -> Result<usize, PortError> {
        let n = n.min(MAX_BURST);
        if n == 0 {
            return Ok(0);
        }
        if len > self.max_datagram {
            return Err(self.too_long(len));
        }
        let queue = self.tx_queue(peer).ok_or(PortError::UnknownPeer(peer))?;
        let lens = [(FRAME_HEADER_LEN + len) as u16; MAX_BURST];
        self.send_run(queue, n, &lens, |i, f| {
            fill(i, f);
            peer
        })
    }

    /// Tops the tx stash up to [`MAX_BURST`] mbufs; false if it stays empty (pool empty).
    fn refill_tx_stash(&mut self) -> Result<bool, PortError> {
        let n = self.tx_stash_n;
        let want = MAX_BURST - n;
        if want > 0 {
            let lens = [(FRAME_HEADER_LEN + self.max_datagram) as u16; MAX_BURST];
            // SAFETY: valid pool; stash[n..] and stash_data[n..] have room for `want` entries.
            let ret = unsafe {
                sys::ns_pktmbuf_alloc_bulk_append(
                    self.dev.pool,
                    self.tx_stash[n..].as_mut_ptr(),
                    want as u32,
                    lens.as_ptr(),
                    self.tx_stash_data[n..].as_mut_ptr(),
                )
            };
            if ret == -(libc::ENOSPC) {
                return Err(PortError::Other(format!(
                    "mbuf too small for a {}-byte frame (config key mbuf_data_room)",
                    lens[0]
                )));
            }
            if ret == 0 {
                self.tx_stash_n = MAX_BURST;
            } else {
                self.stats.tx_pool_empty += 1;
            }
        }
        Ok(self.tx_stash_n > 0)
    }

    /// Hands every queue's pending frames to the device, one burst per queue; frees and
    /// counts what the device refuses. Returns how many it took.
    fn flush_tx_pending(&mut self) -> usize {
        let port_id = self.dev.port_id;
        let mut sent_total = 0;
        for (queue, p) in self.tx_pending.iter_mut().enumerate() {
            if p.n == 0 {
                continue;
            }
            sent_total +=
                tx_burst_or_free(port_id, queue as u16, &mut p.mbufs[..p.n], &mut self.stats);
            p.n = 0;
        }
        sent_total
    }

    fn too_long(&self, len: usize) -> PortError {
        PortError::Other(format!(
            "datagram of {len} bytes exceeds the DPDK port's {} (mtu - 28)",
            self.max_datagram
        ))
    }

    /// Allocates `n` mbufs of `frame_len[i]` bytes, lets `fill(i, datagram)` write each datagram
    /// (returning its destination), frames them and sends them on tx queue `queue`.
    #[inline]
    fn send_run(
        &mut self,
        queue: u16,
        n: usize,
        frame_len: &[u16; MAX_BURST],
        mut fill: impl FnMut(usize, &mut [u8]) -> NodeId,
    ) -> Result<usize, PortError> {
        let mut mbufs = [std::ptr::null_mut::<sys::RteMbuf>(); MAX_BURST];
        let mut data = [std::ptr::null_mut::<u8>(); MAX_BURST];
        // SAFETY: the pool is valid; mbufs/data have room for n <= MAX_BURST entries and
        // frame_len holds MAX_BURST lengths.
        let ret = unsafe {
            sys::ns_pktmbuf_alloc_bulk_append(
                self.dev.pool,
                mbufs.as_mut_ptr(),
                n as u32,
                frame_len.as_ptr(),
                data.as_mut_ptr(),
            )
        };
        if ret == -(libc::ENOSPC) {
            return Err(PortError::Other(format!(
                "mbuf too small for a {}-byte frame (config key mbuf_data_room)",
                frame_len[..n].iter().max().copied().unwrap_or(0)
            )));
        }
        if ret != 0 {
            self.stats.tx_pool_empty += 1;
            return Ok(0);
        }
        for i in 0..n {
            let total = frame_len[i] as usize;
            // SAFETY: data[i] points to `total` freshly appended bytes inside mbufs[i]'s
            // buffer, exclusively ours until tx_burst/free below.
            let frame = unsafe { std::slice::from_raw_parts_mut(data[i], total) };
            let peer = fill(i, &mut frame[FRAME_HEADER_LEN..]);
            let Some(t) = self.tx_templates.get(peer as usize).copied().flatten() else {
                // SAFETY: we own all n mbufs; none was handed to the driver yet.
                unsafe { sys::ns_pktmbuf_free_bulk(mbufs.as_mut_ptr(), n as u32) };
                return Err(PortError::UnknownPeer(peer));
            };
            self.ip_id = self.ip_id.wrapping_add(1);
            t.write(self.ip_id, total - FRAME_HEADER_LEN, frame);
            if self.udp_checksum {
                let udp = &mut frame[ETH_HEADER_LEN + IPV4_HEADER_LEN..];
                let c = udp_checksum(self.me.ip, t.dst_ip(), udp);
                udp[6..8].copy_from_slice(&c.to_be_bytes());
            }
        }
        let sent = tx_burst_or_free(self.dev.port_id, queue, &mut mbufs[..n], &mut self.stats);
        Ok(sent)
    }
}

impl Port for DpdkPort {
    fn max_datagram_len(&self) -> usize {
        self.max_datagram
    }

    fn recv_batch(&mut self, bufs: &mut [PacketBuf]) -> Result<usize, PortError> {
        let mut k = 0;
        let mut too_long = 0u64;
        let queues = self.rx_queues.len();
        for i in 0..queues {
            let index = (self.rx_next + i) % queues;
            // Drain this queue (burst by burst) while there is room.
            while k < bufs.len() {
                let want = (bufs.len() - k).min(MAX_BURST);
                let taken = self.recv_queue_with(index, want, |from, d| {
                    let b = &mut bufs[k];
                    if d.len() > b.data.len() {
                        too_long += 1;
                        return;
                    }
                    b.data[..d.len()].copy_from_slice(d);
                    b.len = d.len();
                    b.peer = from;
                    k += 1;
                });
                if taken < want {
                    break;
                }
            }
        }
        self.rx_next = (self.rx_next + 1) % queues.max(1);
        self.stats.rx_too_long += too_long;
        self.stats.rx_datagrams -= too_long;
        Ok(k)
    }

    fn recv_each(
        &mut self,
        scratch: &mut [PacketBuf],
        sink: &mut dyn RxSink,
    ) -> Result<usize, PortError> {
        // Straight from the mbufs: no copy into `scratch`, whose length only bounds the batch
        // (at most one burst array, MAX_BURST frames). First every queue's frames are taken
        // (round robin), then the loop reads its clock, then they are handed over.
        let max = scratch.len().min(MAX_BURST);
        let queues = self.rx_queues.len();
        let mut n = 0;
        for i in 0..queues {
            let index = (self.rx_next + i) % queues;
            while n < max {
                let want = max - n;
                let taken = self.rx_take(index, n, want);
                n += taken;
                if taken < want {
                    break;
                }
            }
        }
        self.rx_next = (self.rx_next + 1) % queues.max(1);
        let now = sink.received();
        let mut k = 0;
        if n > 0 {
            self.rx_hand_over(n, |from, d| {
                k += 1;
                sink.datagram(from, d, now);
            });
        }
        Ok(k)
    }

    fn send_each(
        &mut self,
        scratch: &mut [PacketBuf],
        fill: &mut TxFill<'_>,
    ) -> Result<(usize, usize), PortError> {
        // Written straight into mbufs from the stash: no copy through `scratch`, whose length
        // only bounds the batch. Frames wait per tx queue and leave in one burst per queue:
        // the engine interleaves destinations, and a burst per switch would touch a queue's
        // shared ring indices once per datagram.
        let want = scratch.len().min(MAX_BURST);
        if want == 0 || (self.tx_stash_n < want && !self.refill_tx_stash()?) {
            return Ok((0, 0));
        }
        let mut written = 0usize;
        let mut failed = None;
        let frame_cap = FRAME_HEADER_LEN + self.max_datagram;
        // The stash's frames are likely in another core's cache (each mbuf came back through
        // the pool from its receiver): ask for ownership of their lines a few frames ahead of
        // writing them, so the transfers overlap the engine's work on the frames before.
        for k in 1..=TX_PREFETCH_FRAMES.min(self.tx_stash_n) {
            prefetch_lines(self.tx_stash_data[self.tx_stash_n - k], frame_cap, true);
        }
        while written < want && self.tx_stash_n > 0 {
            let top = self.tx_stash_n - 1;
            let (m, data) = (self.tx_stash[top], self.tx_stash_data[top]);
            if top >= TX_PREFETCH_FRAMES {
                prefetch_lines(
                    self.tx_stash_data[top - TX_PREFETCH_FRAMES],
                    frame_cap,
                    true,
                );
            }
            // SAFETY: a stash mbuf has `frame_cap` appended bytes at `data`, exclusively ours
            // until it is sent or freed.
            let frame = unsafe { std::slice::from_raw_parts_mut(data, frame_cap) };
            let Some((peer, len)) = fill(&mut frame[FRAME_HEADER_LEN..]) else {
                break;
            };
            let template = self.tx_templates.get(peer as usize).copied().flatten();
            let queue = self
                .tx_queue(peer)
                .filter(|&q| (q as usize) < self.tx_pending.len());
            let (Some(queue), Some(t), true) = (queue, template, len <= self.max_datagram) else {
                // The mbuf stays in the stash; what was written so far still leaves.
                failed = Some(if len > self.max_datagram {
                    self.too_long(len)
                } else {
                    PortError::UnknownPeer(peer)
                });
                break;
            };
            self.tx_stash_n = top;
            self.ip_id = self.ip_id.wrapping_add(1);
            t.write(self.ip_id, len, frame);
            if self.udp_checksum {
                let udp = &mut frame[ETH_HEADER_LEN + IPV4_HEADER_LEN..FRAME_HEADER_LEN + len];
                let c = udp_checksum(self.me.ip, t.dst_ip(), udp);
                udp[6..8].copy_from_slice(&c.to_be_bytes());
            }
            // SAFETY: `m` is ours, one segment, and FRAME_HEADER_LEN + len <= frame_cap bytes
            // were appended to it.
            unsafe { sys::ns_pktmbuf_set_len(m, (FRAME_HEADER_LEN + len) as u16) };
            // At most `want` <= MAX_BURST frames per call, so a queue's batch never overflows.
            let p = &mut self.tx_pending[queue as usize];
            p.mbufs[p.n] = m;
            p.n += 1;
            written += 1;
        }
        let sent = self.flush_tx_pending();
        match failed {
            Some(e) => Err(e),
            None => Ok((written, sent)),
        }
    }

    fn send_batch(&mut self, bufs: &[PacketBuf]) -> Result<usize, PortError> {
        let mut done = 0;
        while done < bufs.len() {
            // The longest run of datagrams (≤ MAX_BURST) leaving on one tx queue.
            let first = &bufs[done];
            let queue = self
                .tx_queue(first.peer)
                .ok_or(PortError::UnknownPeer(first.peer))?;
            let mut lens = [0u16; MAX_BURST];
            let mut n = 0;
            while done + n < bufs.len() && n < MAX_BURST {
                let b = &bufs[done + n];
                if b.len > self.max_datagram {
                    return Err(self.too_long(b.len));
                }
                if n > 0 && self.tx_queue(b.peer) != Some(queue) {
                    if self.tx_queue(b.peer).is_none() {
                        return Err(PortError::UnknownPeer(b.peer));
                    }
                    break;
                }
                lens[n] = (FRAME_HEADER_LEN + b.len) as u16;
                n += 1;
            }
            let run = &bufs[done..done + n];
            let sent = self.send_run(queue, n, &lens, |i, d| {
                d.copy_from_slice(run[i].bytes());
                run[i].peer
            })?;
            done += sent;
            if sent < n {
                break;
            }
        }
        Ok(done)
    }
}

// ---------------------------------------------------------------------------------------
// Test fabric: ethdevs made of rings, joined by a software Ethernet switch
// ---------------------------------------------------------------------------------------

/// An in-process Ethernet fabric for tests and demos: `n` ethdevs (`net_ring` PMD over
/// rte_rings, created as `<prefix><i>`; their ethdev names are in [`RingFabric::devices`])
/// with `queues` rx/tx queue pairs each, and a learning-free switch that forwards by
/// destination MAC ([`MacAddr::local`]`(i)` is port `i`) from tx queue `q` to rx queue `q`
/// (worker `q` talks to worker `q`), dropping every `drop_every`-th frame if set.
/// Call [`RingFabric::pump`] from one thread (the switch) while the ports run.
#[derive(Debug)]
pub struct RingFabric {
    /// Per port, per queue: (rx ring = the queue's inbox, tx ring = the queue's outbox).
    rings: Vec<Vec<(*mut sys::RteRing, *mut sys::RteRing)>>,
    /// Device names, index = port.
    pub devices: Vec<String>,
    /// Frames forwarded, dropped (unknown MAC, full inbox, injected loss).
    pub forwarded: u64,
    pub dropped: u64,
    drop_every: u64,
    seen: u64,
}

// SAFETY: rte_rings are multi-producer/multi-consumer safe; the fabric is moved to the one
// switch thread that pumps it.
unsafe impl Send for RingFabric {}

impl RingFabric {
    /// Creates `n` ring-backed ethdevs `<prefix>0..<prefix>{n-1}` with one queue pair each
    /// (the EAL must be up).
    pub fn new(
        prefix: &str,
        n: usize,
        ring_size: u32,
        drop_every: Option<u64>,
    ) -> Result<Self, DpdkError> {
        Self::with_queues(prefix, n, 1, ring_size, drop_every)
    }

    /// As [`RingFabric::new`] with `queues` rx/tx queue pairs per ethdev.
    pub fn with_queues(
        prefix: &str,
        n: usize,
        queues: usize,
        ring_size: u32,
        drop_every: Option<u64>,
    ) -> Result<Self, DpdkError> {
        if queues == 0 || queues > 16 {
            return Err(DpdkError::Config {
                key: "queues".into(),
                why: format!("{queues} must be in 1..=16"),
            });
        }
        if !sys::LINKED {
            return Err(DpdkError::NotLinked);
        }
        if !eal_initialized() {
            return Err(DpdkError::EalNotInitialized);
        }
        let mut rings = Vec::with_capacity(n);
        let mut devices = Vec::with_capacity(n);
        for i in 0..n {
            let mk = |dir: String| -> Result<*mut sys::RteRing, DpdkError> {
                let name =
                    CString::new(format!("{prefix}{i}_{dir}")).map_err(|_| DpdkError::Config {
                        key: "prefix".into(),
                        why: "contains NUL".into(),
                    })?;
                // SAFETY: EAL up; name NUL-terminated (copied by DPDK); flags 0 = MP/MC.
                let r =
                    unsafe { sys::ns_ring_create(name.as_ptr(), ring_size, sys::SOCKET_ID_ANY, 0) };
                if r.is_null() {
                    // SAFETY: reads rte_errno.
                    let errno = unsafe { sys::ns_errno() };
                    return Err(device_error(
                        "rte_ring_create (ring_size must be a power of two)",
                        &format!("{prefix}{i}"),
                        -errno,
                    ));
                }
                Ok(r)
            };
            let mut qs = Vec::with_capacity(queues);
            for q in 0..queues {
                qs.push((mk(format!("i{q}"))?, mk(format!("o{q}"))?));
            }
            let inboxes: Vec<_> = qs.iter().map(|p| p.0).collect();
            let outboxes: Vec<_> = qs.iter().map(|p| p.1).collect();
            let dev = format!("{prefix}{i}");
            let cname = CString::new(dev.as_str()).expect("checked above");
            // SAFETY: EAL up; `queues` rx and tx rings, valid for the process (never freed).
            let ret = unsafe {
                sys::ns_eth_from_rings(
                    cname.as_ptr(),
                    inboxes.as_ptr(),
                    queues as u32,
                    outboxes.as_ptr(),
                    queues as u32,
                    0,
                )
            };
            if ret < 0 {
                return Err(device_error("rte_eth_from_rings", &dev, ret));
            }
            let port_id = ret as u16;
            let mut buf = [0 as c_char; 64];
            // SAFETY: buf has 64 bytes; port_id was just created.
            let ret = unsafe { sys::ns_eth_dev_get_name_by_port(port_id, buf.as_mut_ptr(), 64) };
            if ret < 0 {
                return Err(device_error("rte_eth_dev_get_name_by_port", &dev, ret));
            }
            // SAFETY: the shim NUL-terminates within buf.
            let real = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
            rings.push(qs);
            devices.push(real.to_string_lossy().into_owned());
        }
        Ok(Self {
            rings,
            devices,
            forwarded: 0,
            dropped: 0,
            drop_every: drop_every.unwrap_or(0),
            seen: 0,
        })
    }

    /// Moves waiting frames from every outbox to the inbox of the port owning the destination
    /// MAC. Returns how many frames it moved or dropped.
    pub fn pump(&mut self) -> usize {
        let mut objs = [std::ptr::null_mut::<c_void>(); MAX_BURST];
        let mut total = 0;
        let queues = self.rings.first().map_or(0, Vec::len);
        for (src, q) in (0..self.rings.len()).flat_map(|s| (0..queues).map(move |q| (s, q))) {
            let outbox = self.rings[src][q].1;
            // SAFETY: valid ring; objs has room for MAX_BURST pointers.
            let n =
                unsafe { sys::ns_ring_dequeue_burst(outbox, objs.as_mut_ptr(), MAX_BURST as u32) }
                    as usize;
            total += n;
            for &o in &objs[..n] {
                let m = o.cast::<sys::RteMbuf>();
                self.seen += 1;
                // SAFETY: the ring holds mbufs the sender's driver enqueued; we own m now.
                let (data, len) = unsafe { (sys::ns_pktmbuf_mtod(m), sys::ns_pktmbuf_data_len(m)) };
                let dst = if len >= 6 && !data.is_null() {
                    // SAFETY: the first segment holds at least 6 bytes at data.
                    let d = unsafe { std::slice::from_raw_parts(data, 6) };
                    (d[0..4] == MacAddr::local(0).0[0..4])
                        .then(|| u16::from_be_bytes([d[4], d[5]]) as usize)
                        .filter(|&i| i < self.rings.len())
                } else {
                    None
                };
                let injected = self.seen.checked_rem(self.drop_every) == Some(0);
                let mut delivered = false;
                if let (Some(d), false) = (dst, injected) {
                    let mut one = [o];
                    // SAFETY: valid ring; one holds one owned mbuf, handed over on success.
                    delivered = unsafe {
                        sys::ns_ring_enqueue_burst(self.rings[d][q].0, one.as_mut_ptr(), 1)
                    } == 1;
                }
                if delivered {
                    self.forwarded += 1;
                } else {
                    self.dropped += 1;
                    // SAFETY: still ours (not enqueued).
                    unsafe { sys::ns_pktmbuf_free(m) };
                }
            }
        }
        total
    }
}

/// Point-to-point links between in-process ethdevs (net_ring PMD), no switch thread: each
/// directed link `a → b` is one single-producer/single-consumer rte_ring that is a tx queue
/// of node `a`'s ethdev and an rx queue of node `b`'s. A node's ethdev (`<prefix><i>`, real
/// name in [`RingLinks::devices`]) thus has one rx queue per incoming link and one tx queue
/// per outgoing link, and its [`DpdkPort`] (from [`RingLinks::open_port`]) polls every rx
/// queue and sends each datagram on the queue leading to its destination — like a gateway
/// with one NIC queue pair per neighbour. Used by `netstorm bench dataplane --backend dpdk`.
#[derive(Debug)]
pub struct RingLinks {
    /// Ethdev name per node.
    pub devices: Vec<String>,
    /// Per node: the senders of its rx queues, in queue order.
    pub rx_from: Vec<Vec<NodeId>>,
    /// Per node: the destinations of its tx queues, in queue order.
    pub tx_to: Vec<Vec<NodeId>>,
}

impl RingLinks {
    /// Creates the ethdevs of `n` nodes joined by the directed `links` (each `(from, to)`),
    /// every link a ring of `ring_size` (a power of two) frames. The EAL must be up; every
    /// node needs at least one incoming and one outgoing link.
    pub fn new(
        prefix: &str,
        n: usize,
        links: &[(NodeId, NodeId)],
        ring_size: u32,
    ) -> Result<Self, DpdkError> {
        if !sys::LINKED {
            return Err(DpdkError::NotLinked);
        }
        if !eal_initialized() {
            return Err(DpdkError::EalNotInitialized);
        }
        let bad = |key: &str, why: String| DpdkError::Config {
            key: key.into(),
            why,
        };
        if !ring_size.is_power_of_two() || ring_size < 32 {
            return Err(bad(
                "ring_size",
                format!("{ring_size} must be a power of two >= 32"),
            ));
        }
        let mut rx_from = vec![Vec::new(); n];
        let mut tx_to = vec![Vec::new(); n];
        let mut rx_rings: Vec<Vec<*mut sys::RteRing>> = vec![Vec::new(); n];
        let mut tx_rings: Vec<Vec<*mut sys::RteRing>> = vec![Vec::new(); n];
        // SAFETY: returns constant flags.
        let flags = unsafe { sys::ns_ring_flag_sp_enq() | sys::ns_ring_flag_sc_deq() };
        for &(a, b) in links {
            if a as usize >= n || b as usize >= n || a == b || tx_to[a as usize].contains(&b) {
                return Err(bad(
                    "links",
                    format!("link {a} -> {b} is not between two distinct nodes below {n}, or is listed twice"),
                ));
            }
            let name = CString::new(format!("{prefix}l{a}_{b}"))
                .map_err(|_| bad("prefix", "contains NUL".into()))?;
            // SAFETY: EAL up; name NUL-terminated (copied by DPDK); SP/SC flags: one sender
            // thread (node a's port) and one receiver thread (node b's port) per link.
            let r =
                unsafe { sys::ns_ring_create(name.as_ptr(), ring_size, sys::SOCKET_ID_ANY, flags) };
            if r.is_null() {
                // SAFETY: reads rte_errno.
                let errno = unsafe { sys::ns_errno() };
                return Err(device_error(
                    "rte_ring_create (link ring)",
                    &format!("{prefix}l{a}_{b}"),
                    -errno,
                ));
            }
            tx_to[a as usize].push(b);
            tx_rings[a as usize].push(r);
            rx_from[b as usize].push(a);
            rx_rings[b as usize].push(r);
        }
        let mut devices = Vec::with_capacity(n);
        for i in 0..n {
            let dev = format!("{prefix}{i}");
            if rx_rings[i].is_empty() || tx_rings[i].is_empty() {
                return Err(bad(
                    "links",
                    format!("node {i} needs at least one incoming and one outgoing link"),
                ));
            }
            let cname =
                CString::new(dev.as_str()).map_err(|_| bad("prefix", "contains NUL".into()))?;
            // SAFETY: EAL up; the rings are valid for the process (never freed).
            let ret = unsafe {
                sys::ns_eth_from_rings(
                    cname.as_ptr(),
                    rx_rings[i].as_ptr(),
                    rx_rings[i].len() as u32,
                    tx_rings[i].as_ptr(),
                    tx_rings[i].len() as u32,
                    0,
                )
            };
            if ret < 0 {
                return Err(device_error("rte_eth_from_rings", &dev, ret));
            }
            let mut buf = [0 as c_char; 64];
            // SAFETY: buf has 64 bytes; the port was just created.
            let ret = unsafe { sys::ns_eth_dev_get_name_by_port(ret as u16, buf.as_mut_ptr(), 64) };
            if ret < 0 {
                return Err(device_error("rte_eth_dev_get_name_by_port", &dev, ret));
            }
            // SAFETY: the shim NUL-terminates within buf.
            let real = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
            devices.push(real.to_string_lossy().into_owned());
        }
        Ok(Self {
            devices,
            rx_from,
            tx_to,
        })
    }

    /// Opens node `cfg.node`'s ethdev (`cfg.device` must be `devices[cfg.node]`) with one rx
    /// queue per incoming and one tx queue per outgoing link; `cfg.workers` must be 1.
    pub fn open_port(&self, eal: &EalConfig, cfg: &DpdkPortConfig) -> Result<DpdkPort, DpdkError> {
        let node = cfg.node as usize;
        if self.devices.get(node) != Some(&cfg.device) {
            return Err(DpdkError::Config {
                key: "device".into(),
                why: format!(
                    "{:?} is not node {node}'s link device ({:?})",
                    cfg.device,
                    self.devices.get(node)
                ),
            });
        }
        if cfg.workers != 1 {
            return Err(DpdkError::Config {
                key: "workers".into(),
                why: format!(
                    "{}: a RingLinks port has one rx queue per link",
                    cfg.workers
                ),
            });
        }
        let nb_rx = self.rx_from[node].len() as u16;
        let nb_tx = self.tx_to[node].len() as u16;
        let mut port = DpdkPort::open_queues(eal, cfg, nb_rx, nb_tx)?;
        port.rx_queues = (0..nb_rx).collect();
        let max = self.tx_to[node].iter().copied().max().unwrap_or(0) as usize;
        let mut tx_of = vec![NO_QUEUE; max + 1];
        for (q, &to) in self.tx_to[node].iter().enumerate() {
            tx_of[to as usize] = q as u16;
        }
        port.tx_queue_of = tx_of.into_boxed_slice();
        port.tx_pending = (0..nb_tx).map(|_| TxPending::new()).collect();
        Ok(port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs() -> FrameAddrs {
        FrameAddrs {
            src_mac: MacAddr::local(1),
            dst_mac: MacAddr::local(2),
            src_ip: Ipv4Addr::new(10, 0, 0, 1),
            dst_ip: Ipv4Addr::new(10, 0, 0, 2),
            src_port: 4791,
            dst_port: 4792,
        }
    }

    #[test]
    fn frame_round_trips_with_and_without_udp_checksum() {
        for csum in [true, false] {
            let payload: Vec<u8> = (0..333u32).map(|i| (i * 7) as u8).collect();
            let mut f = vec![0u8; FRAME_HEADER_LEN + payload.len()];
            f[FRAME_HEADER_LEN..].copy_from_slice(&payload);
            let n = emit_frame(&addrs(), 7, payload.len(), csum, &mut f);
            assert_eq!(n, f.len());
            let p = parse_frame(&f).unwrap();
            assert_eq!(p.addrs, addrs());
            assert_eq!(
                &f[p.payload_offset..p.payload_offset + p.payload_len],
                &payload[..]
            );
            assert_eq!(u16::from_be_bytes([f[40], f[41]]) != 0, csum);
            // Ethernet padding after the IP packet is ignored.
            let mut padded = f.clone();
            padded.extend_from_slice(&[0; 20]);
            assert_eq!(parse_frame(&padded).unwrap().payload_len, payload.len());
        }
    }

    #[test]
    fn header_template_matches_emit_frame() {
        let t = HeaderTemplate::new(&addrs());
        assert_eq!(t.dst_ip(), addrs().dst_ip);
        for len in [0usize, 1, 1040, 1472, 8972, 65507] {
            for id in [0u16, 1, 0x00ff, 0x1234, 0xfffe, 0xffff] {
                let mut want = vec![0u8; FRAME_HEADER_LEN + len];
                emit_frame(&addrs(), id, len, false, &mut want);
                let mut got = vec![0xaau8; FRAME_HEADER_LEN + len];
                t.write(id, len, &mut got);
                assert_eq!(
                    got[..FRAME_HEADER_LEN],
                    want[..FRAME_HEADER_LEN],
                    "len {len} id {id:#x}"
                );
                got[FRAME_HEADER_LEN..].copy_from_slice(&want[FRAME_HEADER_LEN..]);
                assert!(parse_frame(&got).is_ok(), "len {len} id {id:#x}");
                // With UDP checksums: the template's headers, then the checksum over them.
                emit_frame(&addrs(), id, len, true, &mut want);
                let udp = &mut got[ETH_HEADER_LEN + IPV4_HEADER_LEN..];
                let c = udp_checksum(addrs().src_ip, t.dst_ip(), udp);
                udp[6..8].copy_from_slice(&c.to_be_bytes());
                assert_eq!(got, want, "len {len} id {id:#x} with UDP checksum");
            }
        }
    }

    #[test]
    fn ipv4_checksum_matches_a_known_header() {
        // RFC 1071-style example from Wikipedia's "IPv4 header checksum" article.
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ipv4_checksum(&h), 0xb861);
    }

    #[test]
    fn corrupted_frames_are_rejected_not_panicking() {
        let payload = [1u8; 64];
        let mut f = vec![0u8; FRAME_HEADER_LEN + payload.len()];
        f[FRAME_HEADER_LEN..].copy_from_slice(&payload);
        emit_frame(&addrs(), 1, payload.len(), true, &mut f);
        for i in 0..f.len() {
            let mut g = f.clone();
            g[i] ^= 0x10;
            let r = parse_frame(&g);
            if i < 12 {
                assert!(r.is_ok(), "MAC byte {i}");
            } else {
                assert!(r.is_err(), "byte {i}: {r:?}");
            }
        }
        for len in 0..f.len() {
            assert!(parse_frame(&f[..len]).is_err(), "truncated to {len}");
        }
        let mut frag = f.clone();
        frag[ETH_HEADER_LEN + 6] = 0x20; // MF
        let c = ipv4_checksum(&{
            let mut h = [0u8; 20];
            h.copy_from_slice(&frag[14..34]);
            h[10] = 0;
            h[11] = 0;
            h
        });
        frag[24..26].copy_from_slice(&c.to_be_bytes());
        assert_eq!(parse_frame(&frag), Err(FrameDrop::Fragment));
    }

    #[test]
    fn mac_parse_and_config_validation_name_the_key() {
        assert_eq!(
            "02:4e:53:00:00:07".parse::<MacAddr>().unwrap(),
            MacAddr::local(7)
        );
        assert!("02:4e:53:00:00".parse::<MacAddr>().is_err());
        assert!("zz:4e:53:00:00:00".parse::<MacAddr>().is_err());
        let mut c = DpdkPortConfig::new("net_ring0", 0, Ipv4Addr::new(10, 0, 0, 1), 4791);
        c.validate().unwrap();
        c.mempool_mbufs = 100;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("mempool_mbufs"));
        c.mempool_mbufs = 8191;
        c.mbuf_data_room = 1000;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("mbuf_data_room"));
        c.mbuf_data_room = 2176;
        c.neighbours.push(NeighbourConfig {
            node: 0,
            mac: MacAddr::local(0),
            ip: Ipv4Addr::new(10, 0, 0, 1),
            udp_port: 1,
        });
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("neighbours[0].node"));
        let mut e = EalConfig::virtual_devices(&["net_ring0"]);
        e.validate().unwrap();
        e.vdevs.push("bad vdev".into());
        assert!(e.validate().unwrap_err().to_string().contains("--vdev"));
        let args = EalConfig::virtual_devices(&["net_ring0"]).args();
        assert!(
            args.contains(&"--no-huge".to_string())
                && args.contains(&"--vdev=net_ring0".to_string())
        );
    }

    #[test]
    fn config_file_rejects_unknown_keys() {
        let ok: DpdkPortConfig = toml::from_str(
            r#"device = "net_ring0"
node = 1
ip = "10.0.0.2"
udp_port = 4791
[[neighbours]]
node = 0
mac = "02:4e:53:00:00:00"
ip = "10.0.0.1"
udp_port = 4791
"#,
        )
        .unwrap();
        ok.validate().unwrap();
        let err = toml::from_str::<DpdkPortConfig>("device = \"x\"\nnode = 1\nip = \"10.0.0.2\"\nudp_port = 1\nneighbours = []\nmtuu = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("mtuu"), "{err}");
    }

    #[test]
    fn every_worker_port_must_exist() {
        let mut c = DpdkPortConfig::new("net_ring0", 0, Ipv4Addr::new(10, 0, 0, 1), 65534);
        c.neighbours = vec![NeighbourConfig {
            node: 1,
            mac: MacAddr::local(1),
            ip: Ipv4Addr::new(10, 0, 0, 2),
            udp_port: 9000,
        }];
        c.workers = 2;
        c.validate().unwrap();
        c.workers = 3;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("udp_port") && e.contains("65534"), "{e}");
        c.udp_port = 9000;
        c.neighbours[0].udp_port = 65535;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("udp_port") && e.contains("65535"), "{e}");
    }

    #[test]
    fn memif_frames_must_fit_one_memif_buffer() {
        let setup = |vdev: &str, mtu: u16| {
            DpdkSetup::from_toml_str(&format!(
                "[eal]\nvdevs = [\"{vdev}\"]\n[port]\ndevice = \"net_memif0\"\nnode = 0\nip = \"10.0.0.1\"\nudp_port = 1\nmtu = {mtu}\nmbuf_data_room = 9344\nneighbours = []\n"
            ))
        };
        assert!(!setup("net_memif0,role=server", 1500)
            .unwrap()
            .is_memif_client());
        // memif's role defaults to client.
        assert!(setup("net_memif0,id=0", 1500).unwrap().is_memif_client());
        let e = setup("net_memif0,role=server", 9000)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("port.mtu") && e.contains("add bsize=16384"),
            "{e}"
        );
        setup("net_memif0,role=server,bsize=9216", 9000).unwrap();
        let e = setup("net_memif0,bsize=big", 1500).unwrap_err().to_string();
        assert!(
            e.contains("vdevs") && e.contains("bsize is not a number"),
            "{e}"
        );
        // Other devices are not memif.
        DpdkSetup::from_toml_str("[eal]\nvdevs = [\"net_ring0\"]\n[port]\ndevice = \"net_ring0\"\nnode = 0\nip = \"10.0.0.1\"\nudp_port = 1\nmtu = 9000\nmbuf_data_room = 9344\nneighbours = []\n").unwrap();
    }

    #[test]
    fn readme_gateway_example_parses() {
        let readme = include_str!("../../../README.md");
        let start = readme
            .find("## Running on a gateway")
            .expect("README section");
        let section = &readme[start..];
        // The section's [eal] + [port] block (another one shows the cluster config's node).
        let toml_start = section.find("```toml\n[eal]").expect("[eal] toml block") + 8;
        let toml_len = section[toml_start..].find("```").expect("end of block");
        let setup = DpdkSetup::from_toml_str(&section[toml_start..toml_start + toml_len]).unwrap();
        assert_eq!(setup.eal.allow, vec!["0000:3b:00.0".to_string()]);
        assert_eq!(setup.port.neighbours.len(), 1);
        let args = setup.eal.args();
        assert!(
            args.contains(&"-a".to_string())
                && args.contains(&"--file-prefix=netstorm".to_string())
        );
        let e = DpdkSetup::from_toml_str("[port]\ndevice = \"x\"\n").unwrap_err();
        assert!(
            e.to_string().contains("node") || e.to_string().contains("missing"),
            "{e}"
        );
    }

    #[test]
    fn without_libdpdk_constructors_say_so() {
        if sys::LINKED {
            return;
        }
        let e = eal_init(&EalConfig::default()).unwrap_err();
        assert!(e.to_string().contains("libdpdk"), "{e}");
    }
}
