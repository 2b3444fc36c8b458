//! The DPDK port's configuration: EAL arguments ([`EalConfig`]), the port and its static
//! neighbour table ([`DpdkPortConfig`], [`NeighbourConfig`]), and the two as one TOML file
//! ([`DpdkSetup`]). Validation names the key that is wrong; nothing here needs libdpdk.

use super::{DpdkError, MAX_BURST, MBUF_HEADROOM};
use crate::wire::{MacAddr, ETH_HEADER_LEN, IPV4_HEADER_LEN, UDP_HEADER_LEN};
use crate::NodeId;
use serde::Deserialize;
use std::collections::HashSet;
use std::net::Ipv4Addr;

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
/// ([`DpdkPortConfig`]) — see docs/gateway.md.
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn gateway_guide_example_parses() {
        let guide = include_str!("../../../../docs/gateway.md");
        let start = guide.find("# Running on a gateway").expect("guide title");
        let section = &guide[start..];
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
}
