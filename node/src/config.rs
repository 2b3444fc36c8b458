//! The cluster configuration: one TOML file shared by every host of a job.
//!
//! ```toml
//! job = 7                        # job id carried in every packet, > 0
//! buffer_elems = 262144          # f32 elements per all-reduce (the trainer's buffer length)
//! segment_elems = 348            # elements per datagram, default 348 (1392 B payload); 696 with a 16-bit wire
//! wire = "f32"                   # payload type on the wire: "f32" (default), "bf16" or "f16"; nodes
//!                                # aggregate in f32 either way. Every node must agree: packets of
//!                                # another type are dropped and counted (rx_wrong_payload)
//! shm_dir = "/dev/shm"           # ring, node and lock files, default /dev/shm
//! planner = "packing"            # any netstorm_controlplane::planner::PLANNER_NAMES, default packing
//! replan_threshold = 0.3         # relative change of a measured link rate that re-plans, default 0.3
//! replan_interval_ms = 5000      # at least this long between two plans, default 5000
//! replan_settle_ms = 1000        # wait this long after the first sign of change, default 1000
//! telemetry_window_ms = 2000     # window of the per-link rate max-filter, default 2000
//! idle_backoff_us = 50           # sleep after an idle poll; absent = pure busy-poll
//! trainer_timeout_s = 30         # Session::allreduce gives up after this, default 30
//! peer_timeout_ms = 5000         # a node whose data plane every other node has not heard for
//!                                # this long is lost: its round fails, the rest re-plan (at least
//!                                # 300 = three idle heartbeats, below the trainer timeout). Default:
//!                                # 5000, or half the trainer timeout if that is less; 0 = off
//! rates_file = "rates.toml"      # optional: operator link-rate overrides the coordinator watches
//! secret_file = "job.key"        # the job secret (netstorm keygen --out job.key), relative to
//!                                # this file; mode 0600, >= 32 bytes. Real hosts (netstorm-dp,
//!                                # -cp, -trainer) refuse to start without one unless protection
//!                                # is "off" or insecure_job_derived_keys = true (tests, CI only:
//!                                # the keys then follow from the public job id)
//! protection = "encrypt"         # data-plane packets: "encrypt" (default), "authenticate"
//!                                # (payload in clear, tagged) or "off" (`mac = false` is an alias)
//! mac_key = "00112233445566778899aabbccddeeff"  # older form of the secret (32 hex digits,
//!                                # a 128-bit secret); use secret_file instead
//! mtu = 1500                     # IP MTU of the paths between nodes (576..=9000), default 1500:
//!                                # segment_elems defaults to what fits; when `mtu` is set,
//!                                # a larger segment_elems is refused
//!
//! [coordinator]
//! node = "a"                     # the node whose netstorm-cp coordinates
//! port = 7700                    # TCP port on that node's address
//!
//! [[node]]                       # node ids are assigned in file order
//! name = "a"
//! address = "10.0.0.1:9000"      # UDP ip:port of worker 0 as peers reach it; worker w uses port + w
//! bind = "192.168.1.5:9000"      # optional: the local ip:port to listen on when it differs from
//!                                # `address` (NAT, several interfaces); also the coordinator's
//!                                # listener ip. Default: `address`
//! mtu = 1400                     # optional: this node's path MTU; the job uses the smallest
//! metrics = "127.0.0.1:9100"     # optional: the node's cp serves Prometheus metrics at /metrics
//! cores = [0]                    # one poll-mode worker per core, pinned; default [0]
//! backend = "udp"                # "udp" (default) or "dpdk" (netstorm-dp built with feature `dpdk`)
//! dpdk = "dpdk-a.toml"           # backend "dpdk" only: the node's [eal] + [port] file
//!                                # (docs/gateway.md); relative to this file
//!
//! [[link]]                       # the network the planner starts from (scenario format)
//! from = "a"
//! to = "b"
//! mbps = 100
//! latency_ms = 10                # default 0
//! bidirectional = true           # default false
//! ```
//!
//! Errors name the file, the line and the key: `cluster.toml:12:1: unknown key 'adress' ...`,
//! `cluster.toml:9: invalid 'address': ...`.

use netstorm_dataplane::protect::{JobSecret, KeySource, Protection, ProtectionMode};
use netstorm_dataplane::scenario::BPS_PER_MBPS;
use netstorm_dataplane::toml_error::{text_position, KeyContext, Located, TomlSource};
use netstorm_dataplane::topology::{Link, Node, Topology};
use netstorm_dataplane::wire::{self, PayloadType};
use netstorm_dataplane::NodeId;
use serde::Deserialize;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// MTU assumed when no `mtu` key says otherwise (Ethernet).
pub const DEFAULT_MTU: usize = 1500;
/// IPv4 + UDP headers in front of every datagram.
const IP_UDP_OVERHEAD: usize = 28;

/// Why a cluster config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read cluster config: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not TOML, an unknown or missing key, a wrong type.
    #[error("{file}:{line}:{column}: {message}")]
    Parse {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// Well-formed but wrong.
    #[error("{file}{}: invalid '{key}': {message}", .line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid {
        file: String,
        line: Option<usize>,
        key: String,
        message: String,
    },
}

/// The data-plane backend of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Udp,
    /// A DPDK ethdev (one queue pair per worker), set up by the node's `dpdk` file.
    Dpdk,
}

/// One host of the cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeConfig {
    pub name: String,
    pub id: NodeId,
    /// UDP address of worker 0 as peers reach it; worker `w` uses `port + w`.
    pub address: SocketAddr,
    /// Local address to listen on when it differs from `address` (behind NAT, several
    /// interfaces); worker `w` binds `port + w`. `None`: bind `address`.
    pub bind: Option<SocketAddr>,
    /// Where the node's cp serves Prometheus metrics (`GET /metrics`), if anywhere.
    pub metrics: Option<SocketAddr>,
    /// One pinned poll-mode worker per core.
    pub cores: Vec<usize>,
    pub backend: Backend,
    /// Backend "dpdk": the node's DPDK setup file (`[eal]` + `[port]`), relative paths
    /// resolved against the cluster config's directory by [`ClusterConfig::load`].
    pub dpdk: Option<PathBuf>,
}

impl NodeConfig {
    /// UDP address of worker `w`.
    pub fn worker_addr(&self, w: usize) -> SocketAddr {
        let mut a = self.address;
        a.set_port(self.address.port() + w as u16);
        a
    }

    /// Local address worker `w` binds: `bind` (or `address`) with port + w.
    pub fn worker_bind_addr(&self, w: usize) -> SocketAddr {
        let mut a = self.bind.unwrap_or(self.address);
        a.set_port(a.port() + w as u16);
        a
    }
}

/// The coordinator's learning tunables (see `netstorm_controlplane::awareness`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplanConfig {
    /// Relative change of a confident link estimate that triggers a re-plan.
    pub threshold: f64,
    /// Minimum time between two plans.
    pub min_interval_ms: u64,
    /// Time between the first sign of a change and planning for it.
    pub settle_ms: u64,
    /// Window of the per-link windowed-max rate filter.
    pub window_ms: u64,
}

impl Default for ReplanConfig {
    fn default() -> Self {
        Self {
            threshold: 0.3,
            min_interval_ms: 5000,
            settle_ms: 1000,
            window_ms: 2000,
        }
    }
}

/// Smallest `peer_timeout_ms`: three of netstorm-dp's idle heartbeats (100 ms).
pub const MIN_PEER_TIMEOUT_MS: u64 = 300;
/// `peer_timeout_ms` when absent (capped at half the trainer timeout): long enough that a
/// gateway busy with other work never looks dead (a dp descheduled for a second is still
/// heard), short against the trainer timeout a stalled round would otherwise cost.
pub const DEFAULT_PEER_TIMEOUT_MS: u64 = 5000;

/// A loaded, validated cluster config.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// The file it came from (for messages).
    pub origin: String,
    pub job: u32,
    pub buffer_elems: usize,
    pub segment_elems: usize,
    /// IP MTU every datagram fits in (the smallest of the cluster's and the nodes' `mtu`,
    /// default 1500).
    pub mtu: usize,
    /// Payload type of data packets (`wire = "f32" | "bf16" | "f16"`, default f32).
    pub wire: PayloadType,
    pub shm_dir: PathBuf,
    pub planner: String,
    /// How the coordinator learns and re-plans from measured telemetry.
    pub replan: ReplanConfig,
    pub idle_backoff_us: Option<u64>,
    pub trainer_timeout_s: f64,
    /// A node silent this long at every other node's data plane is lost (issue 19); `None`:
    /// no loss detection (`peer_timeout_ms = 0`, or a trainer timeout too short for any).
    pub peer_timeout_ms: Option<u64>,
    pub rates_file: Option<PathBuf>,
    /// Data-plane packet protection: `protection` (mode, default encrypt) and the keys from
    /// `secret_file` (or the older `mac_key`); without either the insecure job-derived keys,
    /// which real hosts accept only with `insecure_job_derived_keys = true` (see
    /// [`ClusterConfig::require_secret`]). `mac = false` = `protection = "off"`.
    pub protection: Protection,
    /// `secret_file` as written (resolved against the config's directory when loaded).
    pub secret_file: Option<PathBuf>,
    /// `insecure_job_derived_keys = true`: tests and CI may run real-host binaries without a
    /// secret.
    pub insecure_job_derived_keys: bool,
    pub coordinator: NodeId,
    pub coordinator_port: u16,
    pub nodes: Vec<NodeConfig>,
    /// Nodes and links as configured (the planner's starting point).
    pub topology: Topology,
}

impl ClusterConfig {
    /// Reads and validates a cluster config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut cfg = Self::parse_text(&text, &path.display().to_string())?;
        // Relative rates, DPDK and secret files are relative to the config file.
        let dir = path.parent().unwrap_or(Path::new(""));
        cfg.load_secret(dir)?;
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        };
        cfg.rates_file.as_mut().map(resolve);
        for n in &mut cfg.nodes {
            n.dpdk.as_mut().map(resolve);
        }
        Ok(cfg)
    }

    /// Parses and validates config text; `origin` names the file in errors (a relative
    /// `secret_file` is read relative to the working directory).
    pub fn parse_str(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let mut cfg = Self::parse_text(text, origin)?;
        cfg.load_secret(Path::new(""))?;
        Ok(cfg)
    }

    fn parse_text(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let src = Source { text, origin };
        let raw: RawCluster = toml::from_str(text).map_err(|e| src.toml_error(&e))?;
        src.build(raw)
    }

    /// Reads `secret_file` (relative to `dir`) into [`ClusterConfig::protection`].
    fn load_secret(&mut self, dir: &Path) -> Result<(), ConfigError> {
        if let Some(p) = self.secret_file.as_mut() {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
            let secret = crate::secret::read_secret_file(p).map_err(|e| ConfigError::Invalid {
                file: self.origin.clone(),
                line: None,
                key: "secret_file".into(),
                message: e.to_string(),
            })?;
            self.protection.keys = KeySource::Secret(secret);
        }
        Ok(())
    }

    /// For real hosts: refuses to run on the public job-derived keys unless protection is
    /// off or `insecure_job_derived_keys = true` says this is a test.
    pub fn require_secret(&self) -> Result<(), ConfigError> {
        if !self.protection.enabled()
            || self.insecure_job_derived_keys
            || matches!(self.protection.keys, KeySource::Secret(_))
        {
            return Ok(());
        }
        Err(ConfigError::Invalid {
            file: self.origin.clone(),
            line: None,
            key: "secret_file".into(),
            message: format!(
                "missing: real hosts need the job secret (netstorm keygen --out job.key, then secret_file = \"job.key\"); protection = \"{}\" without one would use keys anyone can derive from the job id (insecure_job_derived_keys = true allows that for tests; protection = \"off\" sends no tags)",
                self.protection.mode
            ),
        })
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Result<&NodeConfig, ConfigError> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| ConfigError::Invalid {
                file: self.origin.clone(),
                line: None,
                key: "node".into(),
                message: format!(
                    "no node named '{name}' (nodes: {})",
                    self.nodes
                        .iter()
                        .map(|n| n.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
    }

    /// Address of the coordinator's TCP listener, as the other control planes reach it.
    pub fn coordinator_addr(&self) -> SocketAddr {
        let mut a = self.nodes[self.coordinator as usize].address;
        a.set_port(self.coordinator_port);
        a
    }

    /// Local address the coordinator's listener binds: its node's `bind` ip (or `address`)
    /// at the coordinator port.
    pub fn coordinator_bind_addr(&self) -> SocketAddr {
        let node = &self.nodes[self.coordinator as usize];
        let mut a = node.bind.unwrap_or(node.address);
        a.set_port(self.coordinator_port);
        a
    }

    /// The ring file (policy + telemetry rings) of a node.
    pub fn ring_path(&self, node: &str) -> PathBuf {
        self.shm_dir
            .join(format!("netstorm-{}-{node}.rings", self.job))
    }

    /// The node file (gradient buffer, doorbell, grant, dp status) of a node.
    pub fn node_file_path(&self, node: &str) -> PathBuf {
        self.shm_dir
            .join(format!("netstorm-{}-{node}.node", self.job))
    }

    /// The lock file a live netstorm-dp holds for a node.
    pub fn dp_lock_path(&self, node: &str) -> PathBuf {
        self.shm_dir
            .join(format!("netstorm-{}-{node}.dp.lock", self.job))
    }

    /// The element range worker `w` of `workers` owns (contiguous, sizes differ by ≤ 1).
    pub fn worker_range(&self, w: usize, workers: usize) -> Range<usize> {
        let b = self.buffer_elems;
        (w * b / workers)..((w + 1) * b / workers)
    }
}

/// Operator link-rate overrides (`rates_file`): `[[link]] from, to, mbps`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RatesFile {
    #[serde(default)]
    pub link: Vec<RateOverride>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateOverride {
    pub from: String,
    pub to: String,
    pub mbps: f64,
}

impl RatesFile {
    /// Reads a rates file; errors name the file and line.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let origin = path.display().to_string();
        let src = Source {
            text: &text,
            origin: &origin,
        };
        toml::from_str(&text).map_err(|e| src.toml_error(&e))
    }

    /// `topo` with the overridden rates applied; unknown nodes or links are errors.
    pub fn apply(&self, topo: &Topology) -> Result<Topology, String> {
        let mut t = topo.clone();
        for o in &self.link {
            let (Some(a), Some(b)) = (t.node_id(&o.from), t.node_id(&o.to)) else {
                return Err(format!("unknown node in link {} -> {}", o.from, o.to));
            };
            let Some(i) = t.link_index(a, b) else {
                return Err(format!("no link {} -> {} in the cluster", o.from, o.to));
            };
            if !(o.mbps.is_finite() && o.mbps > 0.0) {
                return Err(format!(
                    "mbps {} of {} -> {} is not positive",
                    o.mbps, o.from, o.to
                ));
            }
            t.links[i].rate_bps = o.mbps * BPS_PER_MBPS;
        }
        Ok(t)
    }
}

// ---------------------------------------------------------------------------------------
// The file format as serde sees it.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    job: Spanned<u32>,
    buffer_elems: Spanned<u64>,
    segment_elems: Option<Spanned<u64>>,
    wire: Option<Spanned<String>>,
    shm_dir: Option<String>,
    planner: Option<Spanned<String>>,
    replan_threshold: Option<Spanned<f64>>,
    replan_interval_ms: Option<u64>,
    replan_settle_ms: Option<u64>,
    telemetry_window_ms: Option<Spanned<u64>>,
    idle_backoff_us: Option<u64>,
    trainer_timeout_s: Option<Spanned<f64>>,
    peer_timeout_ms: Option<Spanned<u64>>,
    rates_file: Option<String>,
    mac_key: Option<Spanned<String>>,
    mac: Option<Spanned<bool>>,
    secret_file: Option<Spanned<String>>,
    protection: Option<Spanned<String>>,
    insecure_job_derived_keys: Option<Spanned<bool>>,
    mtu: Option<Spanned<u64>>,
    coordinator: Spanned<RawCoordinator>,
    #[serde(default)]
    node: Vec<Spanned<RawNode>>,
    #[serde(default)]
    link: Vec<Spanned<RawLink>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCoordinator {
    node: Spanned<String>,
    port: Spanned<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: Spanned<String>,
    address: Spanned<String>,
    bind: Option<Spanned<String>>,
    mtu: Option<Spanned<u64>>,
    metrics: Option<Spanned<String>>,
    cores: Option<Spanned<Vec<usize>>>,
    backend: Option<Spanned<String>>,
    dpdk: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLink {
    from: Spanned<String>,
    to: Spanned<String>,
    mbps: Spanned<f64>,
    latency_ms: Option<Spanned<f64>>,
    #[serde(default)]
    bidirectional: bool,
}

/// The text being parsed and its name, for turning byte spans into messages.
struct Source<'a> {
    text: &'a str,
    origin: &'a str,
}

impl Source<'_> {
    /// 1-based (line, column) of a byte offset.
    fn position(&self, offset: usize) -> (usize, usize) {
        text_position(self.text, offset)
    }

    /// A TOML or serde error, reworded to name the key.
    fn toml_error(&self, err: &toml::de::Error) -> ConfigError {
        let Located {
            line,
            column,
            message,
        } = TomlSource::new(self.text, self.origin).locate(err, KeyContext::Key);
        ConfigError::Parse {
            file: self.origin.to_string(),
            line,
            column,
            message,
        }
    }

    fn invalid(&self, span: Range<usize>, key: &str, message: String) -> ConfigError {
        ConfigError::Invalid {
            file: self.origin.to_string(),
            line: Some(self.position(span.start).0),
            key: key.to_string(),
            message,
        }
    }

    /// `protection`, `mac`, `mac_key`, `secret_file`, `insecure_job_derived_keys` (the
    /// secret file itself is read by `load_secret`).
    fn protection(&self, raw: &RawCluster) -> Result<Protection, ConfigError> {
        let mut mode = match &raw.protection {
            Some(p) => ProtectionMode::parse(p.get_ref()).ok_or_else(|| {
                self.invalid(
                    p.span(),
                    "protection",
                    format!(
                        "{:?} is not one of \"encrypt\", \"authenticate\", \"off\"",
                        p.get_ref()
                    ),
                )
            })?,
            None => ProtectionMode::Encrypt,
        };
        if let Some(m) = raw.mac.as_ref().filter(|m| !*m.get_ref()) {
            if raw.mac_key.is_some() || raw.secret_file.is_some() {
                return Err(self.invalid(
                    m.span(),
                    "mac",
                    "mac = false turns protection off; remove mac_key / secret_file or the mac line"
                        .into(),
                ));
            }
            if raw.protection.is_some() && mode != ProtectionMode::Off {
                return Err(self.invalid(
                    m.span(),
                    "mac",
                    format!("mac = false contradicts protection = \"{mode}\""),
                ));
            }
            mode = ProtectionMode::Off;
        }
        if let (Some(k), Some(_)) = (&raw.mac_key, &raw.secret_file) {
            return Err(self.invalid(
                k.span(),
                "mac_key",
                "give the secret once: secret_file (preferred) or mac_key".into(),
            ));
        }
        if let Some(i) = raw
            .insecure_job_derived_keys
            .as_ref()
            .filter(|i| *i.get_ref())
        {
            if raw.mac_key.is_some() || raw.secret_file.is_some() {
                return Err(self.invalid(
                    i.span(),
                    "insecure_job_derived_keys",
                    "a secret is configured: remove this line".into(),
                ));
            }
        }
        let keys = match &raw.mac_key {
            Some(k) => {
                let bad = || {
                    self.invalid(
                        k.span(),
                        "mac_key",
                        format!(
                            "expected 32 hex digits, got {} characters (starting {:?}…)",
                            k.get_ref().len(),
                            k.get_ref().chars().take(4).collect::<String>()
                        ),
                    )
                };
                let bytes =
                    crate::secret::decode_hex(k.get_ref().trim().as_bytes()).ok_or_else(bad)?;
                let key: [u8; 16] = bytes.try_into().map_err(|_| bad())?;
                KeySource::Secret(JobSecret::from_mac_key(key))
            }
            None => KeySource::InsecureJobDerived,
        };
        Ok(Protection { mode, keys })
    }

    fn build(&self, raw: RawCluster) -> Result<ClusterConfig, ConfigError> {
        if *raw.job.get_ref() == 0 {
            return Err(self.invalid(raw.job.span(), "job", "must be > 0".into()));
        }
        let buffer_elems = *raw.buffer_elems.get_ref();
        if buffer_elems == 0 || buffer_elems > (1 << 31) {
            return Err(self.invalid(
                raw.buffer_elems.span(),
                "buffer_elems",
                format!("{buffer_elems} is outside 1..=2147483648"),
            ));
        }
        let wire = match &raw.wire {
            Some(w) => w
                .get_ref()
                .parse::<PayloadType>()
                .map_err(|e| self.invalid(w.span(), "wire", e.to_string()))?,
            None => PayloadType::F32,
        };
        // The job's MTU: the smallest of the cluster's and every node's.
        let mut mtu: Option<(usize, std::ops::Range<usize>)> = None;
        for m in raw
            .mtu
            .iter()
            .chain(raw.node.iter().filter_map(|n| n.get_ref().mtu.as_ref()))
        {
            let v = *m.get_ref();
            if !(576..=9000).contains(&v) {
                return Err(self.invalid(m.span(), "mtu", format!("{v} is outside 576..=9000")));
            }
            if mtu.as_ref().is_none_or(|(cur, _)| v as usize <= *cur) {
                mtu = Some((v as usize, m.span()));
            }
        }
        let (mtu, mtu_span) = mtu.map_or((DEFAULT_MTU, None), |(v, span)| (v, Some(span)));
        // Payload bytes a datagram may carry within the MTU (IPv4 + UDP headers, ours, tag).
        let room = mtu - IP_UDP_OVERHEAD - wire::HEADER_LEN - wire::AUTH_TAG_LEN;
        let segment_elems = match &raw.segment_elems {
            Some(s) => {
                let v = *s.get_ref();
                // Without an `mtu` key an explicit size is the operator's (the datagram may
                // be fragmented; configs from before the key stay valid); with one, it must fit.
                let max = if mtu_span.is_some() {
                    room / wire.elem_bytes()
                } else {
                    (wire::MAX_DATAGRAM_LEN - wire::HEADER_LEN - wire::AUTH_TAG_LEN)
                        / wire.elem_bytes()
                };
                if v == 0 || v as usize > max {
                    return Err(self.invalid(
                        s.span(),
                        "segment_elems",
                        if mtu_span.is_some() {
                            format!(
                                "{v} is outside 1..={max}: datagrams must fit the MTU of {mtu} bytes set by 'mtu' ({} B of {wire} payload)",
                                max * wire.elem_bytes()
                            )
                        } else {
                            format!("{v} is outside 1..={max}")
                        },
                    ));
                }
                v as usize
            }
            // 1392 payload bytes (348 f32 or 696 16-bit elements: a 1472-byte datagram with
            // the 64-byte header and the tag), or what fits a smaller MTU.
            None => wire.elems_per_segment(room.min(1392)),
        };
        let planner = match &raw.planner {
            Some(p) => {
                let name = p.get_ref();
                if !netstorm_controlplane::planner::PLANNER_NAMES.contains(&name.as_str()) {
                    return Err(self.invalid(
                        p.span(),
                        "planner",
                        format!(
                            "unknown planner '{name}' (known: {})",
                            netstorm_controlplane::planner::PLANNER_NAMES.join(", ")
                        ),
                    ));
                }
                name.clone()
            }
            None => "packing".into(),
        };
        let mut replan = ReplanConfig::default();
        if let Some(t) = &raw.replan_threshold {
            if !(t.get_ref().is_finite() && *t.get_ref() > 0.0) {
                return Err(self.invalid(
                    t.span(),
                    "replan_threshold",
                    format!("{} is not a positive fraction", t.get_ref()),
                ));
            }
            replan.threshold = *t.get_ref();
        }
        if let Some(w) = &raw.telemetry_window_ms {
            if *w.get_ref() == 0 {
                return Err(self.invalid(
                    w.span(),
                    "telemetry_window_ms",
                    "must be at least 1".into(),
                ));
            }
            replan.window_ms = *w.get_ref();
        }
        replan.min_interval_ms = raw.replan_interval_ms.unwrap_or(replan.min_interval_ms);
        replan.settle_ms = raw.replan_settle_ms.unwrap_or(replan.settle_ms);
        let trainer_timeout_s = match &raw.trainer_timeout_s {
            Some(t) if !(t.get_ref().is_finite() && *t.get_ref() > 0.0) => {
                return Err(self.invalid(
                    t.span(),
                    "trainer_timeout_s",
                    format!("{} is not a positive number of seconds", t.get_ref()),
                ))
            }
            Some(t) => *t.get_ref(),
            None => 30.0,
        };
        let peer_timeout_ms = match &raw.peer_timeout_ms {
            Some(t) if *t.get_ref() == 0 => None,
            Some(t) if *t.get_ref() < MIN_PEER_TIMEOUT_MS => {
                return Err(self.invalid(
                    t.span(),
                    "peer_timeout_ms",
                    format!(
                        "{} ms is below {MIN_PEER_TIMEOUT_MS} ms (three idle heartbeats of 100 ms): every pause would lose a node",
                        t.get_ref()
                    ),
                ))
            }
            Some(t) if *t.get_ref() as f64 >= trainer_timeout_s * 1e3 => {
                return Err(self.invalid(
                    t.span(),
                    "peer_timeout_ms",
                    format!(
                        "{} ms is not below trainer_timeout_s ({trainer_timeout_s} s): trainers would give up before a lost node is declared",
                        t.get_ref()
                    ),
                ))
            }
            Some(t) => Some(*t.get_ref()),
            None => Some(DEFAULT_PEER_TIMEOUT_MS.min((trainer_timeout_s * 500.0) as u64))
                .filter(|&ms| ms >= MIN_PEER_TIMEOUT_MS),
        };
        if raw.node.is_empty() {
            return Err(ConfigError::Invalid {
                file: self.origin.to_string(),
                line: None,
                key: "node".into(),
                message: "at least one [[node]] is required".into(),
            });
        }
        if raw.node.len() > 64 {
            return Err(self.invalid(
                raw.node[64].span(),
                "node",
                "at most 64 nodes (a reduce tree tracks children in a 64-bit mask)".into(),
            ));
        }
        let mut nodes: Vec<NodeConfig> = Vec::new();
        for (i, sn) in raw.node.iter().enumerate() {
            let n = sn.get_ref();
            let name = n.name.get_ref().trim();
            if name.is_empty() {
                return Err(self.invalid(n.name.span(), "name", "must not be empty".into()));
            }
            if nodes.iter().any(|m| m.name == name) {
                return Err(self.invalid(
                    n.name.span(),
                    "name",
                    format!("duplicate node name '{name}'"),
                ));
            }
            let address: SocketAddr = n.address.get_ref().parse().map_err(|e| {
                self.invalid(
                    n.address.span(),
                    "address",
                    format!(
                        "'{}' is not an ip:port socket address ({e}) in [[node]] '{name}'",
                        n.address.get_ref()
                    ),
                )
            })?;
            let bind = match &n.bind {
                Some(b) => Some(b.get_ref().parse::<SocketAddr>().map_err(|e| {
                    self.invalid(
                        b.span(),
                        "bind",
                        format!(
                            "'{}' is not an ip:port socket address ({e}) in [[node]] '{name}'",
                            b.get_ref()
                        ),
                    )
                })?),
                None => None,
            };
            let metrics = match &n.metrics {
                Some(m) => Some(m.get_ref().parse::<SocketAddr>().map_err(|e| {
                    self.invalid(
                        m.span(),
                        "metrics",
                        format!(
                            "'{}' is not an ip:port socket address ({e}) in [[node]] '{name}'",
                            m.get_ref()
                        ),
                    )
                })?),
                None => None,
            };
            let cores = match &n.cores {
                Some(c) if c.get_ref().is_empty() => {
                    return Err(self.invalid(
                        c.span(),
                        "cores",
                        format!("at least one core is required in [[node]] '{name}'"),
                    ))
                }
                Some(c) => c.get_ref().clone(),
                None => vec![0],
            };
            if address.port() == 0 || address.port() as usize + cores.len() > 65536 {
                return Err(self.invalid(
                    n.address.span(),
                    "address",
                    format!(
                        "port {} cannot serve {} workers (ports port..port+workers)",
                        address.port(),
                        cores.len()
                    ),
                ));
            }
            let backend = match n.backend.as_ref().map(|b| b.get_ref().as_str()) {
                None | Some("udp") => Backend::Udp,
                Some("dpdk") => Backend::Dpdk,
                Some(other) => {
                    return Err(self.invalid(
                        n.backend.as_ref().expect("some").span(),
                        "backend",
                        format!("unknown backend '{other}' (known: udp, dpdk)"),
                    ))
                }
            };
            let dpdk = match (backend, &n.dpdk) {
                (Backend::Dpdk, None) => {
                    return Err(self.invalid(
                        n.backend.as_ref().expect("some").span(),
                        "dpdk",
                        format!("[[node]] '{name}' has backend \"dpdk\" but no `dpdk = \"<file>\"` naming its [eal] + [port] setup"),
                    ))
                }
                (Backend::Udp, Some(d)) => {
                    return Err(self.invalid(
                        d.span(),
                        "dpdk",
                        format!("[[node]] '{name}' names a DPDK file but its backend is \"udp\" (add backend = \"dpdk\" or drop the key)"),
                    ))
                }
                (Backend::Dpdk, Some(d)) => {
                    if !address.is_ipv4() || bind.is_some_and(|b| !b.is_ipv4()) {
                        return Err(self.invalid(
                            n.address.span(),
                            "address",
                            format!("[[node]] '{name}': backend \"dpdk\" speaks IPv4 only"),
                        ));
                    }
                    Some(PathBuf::from(d.get_ref()))
                }
                (Backend::Udp, None) => None,
            };
            nodes.push(NodeConfig {
                name: name.to_string(),
                id: i as NodeId,
                address,
                bind,
                metrics,
                cores,
                backend,
                dpdk,
            });
            if let Some((b, span)) = bind.zip(n.bind.as_ref().map(|b| b.span())) {
                if b.port() == 0 || b.port() as usize + nodes[i].cores.len() > 65536 {
                    return Err(self.invalid(
                        span,
                        "bind",
                        format!(
                            "port {} cannot serve {} workers",
                            b.port(),
                            nodes[i].cores.len()
                        ),
                    ));
                }
            }
        }
        // Worker w of every node synchronizes the same element range with worker w of the
        // others, so every node runs the same number of workers.
        if let Some(b) = nodes.iter().find(|b| b.cores.len() != nodes[0].cores.len()) {
            let span = raw.node[b.id as usize]
                .get_ref()
                .cores
                .as_ref()
                .map_or(raw.node[b.id as usize].span(), |c| c.span());
            return Err(self.invalid(
                span,
                "cores",
                format!(
                    "node '{}' has {} cores but '{}' has {}: every node runs one worker per core and worker w of each node owns the same element range, so every node needs the same number of cores",
                    b.name,
                    b.cores.len(),
                    nodes[0].name,
                    nodes[0].cores.len()
                ),
            ));
        }
        // Every node's workers must be reachable on distinct sockets.
        for a in &nodes {
            for b in &nodes {
                if a.id < b.id
                    && a.address.ip() == b.address.ip()
                    && a.worker_ports().start < b.worker_ports().end
                    && b.worker_ports().start < a.worker_ports().end
                {
                    return Err(self.invalid(
                        raw.node[b.id as usize].get_ref().address.span(),
                        "address",
                        format!(
                            "worker ports of '{}' overlap those of '{}' on {}",
                            b.name,
                            a.name,
                            a.address.ip()
                        ),
                    ));
                }
            }
        }
        let co = raw.coordinator.get_ref();
        let coordinator = nodes
            .iter()
            .find(|n| n.name == *co.node.get_ref())
            .map(|n| n.id)
            .ok_or_else(|| {
                self.invalid(
                    co.node.span(),
                    "node",
                    format!("coordinator node '{}' is not a [[node]]", co.node.get_ref()),
                )
            })?;
        let coordinator_port = *co.port.get_ref();
        if coordinator_port == 0 {
            return Err(self.invalid(co.port.span(), "port", "must be > 0".into()));
        }
        let mut topology = Topology {
            nodes: nodes
                .iter()
                .map(|n| Node {
                    name: n.name.clone(),
                    egress_bps: None,
                    ingress_bps: None,
                })
                .collect(),
            links: Vec::new(),
        };
        for sl in &raw.link {
            let l = sl.get_ref();
            let id = |s: &Spanned<String>, key: &str| {
                topology.node_id(s.get_ref()).ok_or_else(|| {
                    self.invalid(
                        s.span(),
                        key,
                        format!("unknown node '{}' in [[link]]", s.get_ref()),
                    )
                })
            };
            let from = id(&l.from, "from")?;
            let to = id(&l.to, "to")?;
            if from == to {
                return Err(self.invalid(l.to.span(), "to", "a link joins two nodes".into()));
            }
            let mbps = *l.mbps.get_ref();
            if !(mbps.is_finite() && mbps > 0.0) {
                return Err(self.invalid(l.mbps.span(), "mbps", format!("{mbps} is not > 0")));
            }
            let latency_ns = match &l.latency_ms {
                Some(x) if !(x.get_ref().is_finite() && *x.get_ref() >= 0.0) => {
                    return Err(self.invalid(
                        x.span(),
                        "latency_ms",
                        format!("{} is not >= 0", x.get_ref()),
                    ))
                }
                Some(x) => (*x.get_ref() * 1e6) as u64,
                None => 0,
            };
            let mut dirs = vec![(from, to)];
            if l.bidirectional {
                dirs.push((to, from));
            }
            for (a, b) in dirs {
                if topology.link(a, b).is_some() {
                    return Err(self.invalid(
                        sl.span(),
                        "link",
                        format!(
                            "duplicate link {} -> {}",
                            topology.node_name(a),
                            topology.node_name(b)
                        ),
                    ));
                }
                topology.links.push(Link {
                    from: a,
                    to: b,
                    rate_bps: mbps * BPS_PER_MBPS,
                    latency_ns,
                    loss: 0.0,
                });
            }
        }
        if nodes.len() > 1 && !topology.is_strongly_connected() {
            return Err(ConfigError::Invalid {
                file: self.origin.to_string(),
                line: None,
                key: "link".into(),
                message: "the links do not connect every node to every other".into(),
            });
        }
        let protection = self.protection(&raw)?;
        Ok(ClusterConfig {
            origin: self.origin.to_string(),
            job: *raw.job.get_ref(),
            buffer_elems: buffer_elems as usize,
            segment_elems,
            mtu,
            wire,
            shm_dir: PathBuf::from(raw.shm_dir.unwrap_or_else(|| "/dev/shm".into())),
            planner,
            replan,
            idle_backoff_us: raw.idle_backoff_us,
            trainer_timeout_s,
            peer_timeout_ms,
            rates_file: raw.rates_file.map(PathBuf::from),
            protection,
            secret_file: raw.secret_file.map(|f| PathBuf::from(f.into_inner())),
            insecure_job_derived_keys: raw.insecure_job_derived_keys.is_some_and(|b| *b.get_ref()),
            coordinator,
            coordinator_port,
            nodes,
            topology,
        })
    }
}

impl NodeConfig {
    fn worker_ports(&self) -> Range<u32> {
        let p = self.address.port() as u32;
        p..p + self.cores.len() as u32
    }
}

#[cfg(feature = "dpdk")]
impl ClusterConfig {
    /// Reads `node`'s DPDK file (`[eal]` + `[port]`, see `DpdkSetup`) and checks it against
    /// this cluster: the port is this node (id, IPv4 address, UDP port) with one queue pair,
    /// and every other node has a neighbour entry carrying the address this file gives it.
    /// Errors name the DPDK file and the key.
    pub fn dpdk_setup(
        &self,
        node: &NodeConfig,
    ) -> Result<netstorm_dataplane::port::dpdk::DpdkSetup, ConfigError> {
        use netstorm_dataplane::port::dpdk::{DpdkError, DpdkSetup};
        let Some(path) = &node.dpdk else {
            return Err(ConfigError::Invalid {
                file: self.origin.clone(),
                line: None,
                key: "dpdk".into(),
                message: format!("node '{}' names no DPDK file", node.name),
            });
        };
        let file = path.display().to_string();
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            file: file.clone(),
            line: None,
            key: key.to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Invalid {
            file: self.origin.clone(),
            line: None,
            key: "dpdk".into(),
            message: format!("node '{}': cannot read {file}: {e}", node.name),
        })?;
        let setup = DpdkSetup::from_toml_str(&text).map_err(|e| match e {
            DpdkError::Config { key, why } => invalid(&key, why),
            other => invalid("(file)", other.to_string()),
        })?;
        let port = &setup.port;
        let cluster = &self.origin;
        if port.node != node.id {
            return Err(invalid(
                "port.node",
                format!(
                    "{} but node '{}' is id {} in {cluster} (ids follow the [[node]] order)",
                    port.node, node.name, node.id
                ),
            ));
        }
        let local = node.bind.unwrap_or(node.address);
        if std::net::IpAddr::V4(port.ip) != local.ip() || port.udp_port != local.port() {
            return Err(invalid(
                "port.ip",
                format!(
                    "{}:{} but node '{}' has {} {local} in {cluster}",
                    port.ip,
                    port.udp_port,
                    node.name,
                    if node.bind.is_some() {
                        "bind"
                    } else {
                        "address"
                    }
                ),
            ));
        }
        if usize::from(port.mtu) < self.mtu {
            return Err(invalid(
                "port.mtu",
                format!(
                    "{} is smaller than the job's mtu {} in {cluster}: datagrams sized for {} bytes would not fit; lower mtu in {cluster} or raise port.mtu",
                    port.mtu, self.mtu, self.mtu
                ),
            ));
        }
        if usize::from(port.workers) != node.cores.len() {
            return Err(invalid(
                "port.workers",
                format!(
                    "{} but node '{}' lists {} core(s) in {cluster}: one queue pair per worker",
                    port.workers,
                    node.name,
                    node.cores.len()
                ),
            ));
        }
        // Worker w of every node talks to worker w of the others on port + w; the device must
        // deliver those frames to queue w. net_memif's queue w reaches the peer's queue w; a NIC
        // would need flow rules by UDP port, which the port does not set up.
        if port.workers > 1 && !port.device.starts_with("net_memif") {
            return Err(invalid(
                "port.workers",
                format!(
                    "{}: several workers on {:?} would need flow rules steering UDP port + w to queue w, which netstorm does not set up; queue-paired devices (net_memif) take several, others one (cores = [one core])",
                    port.workers, port.device
                ),
            ));
        }
        for o in self.nodes.iter().filter(|o| o.id != node.id) {
            let Some(nb) = port.neighbours.iter().find(|nb| nb.node == o.id) else {
                return Err(invalid(
                    "port.neighbours",
                    format!(
                        "no entry for node '{}' (id {}): add [[port.neighbours]] with node = {}, the next hop's mac, ip and udp_port of {}",
                        o.name, o.id, o.id, o.address
                    ),
                ));
            };
            if std::net::IpAddr::V4(nb.ip) != o.address.ip() || nb.udp_port != o.address.port() {
                return Err(invalid(
                    "port.neighbours",
                    format!(
                        "node {} ('{}') at {}:{}, but {cluster} gives it address {}",
                        o.id, o.name, nb.ip, nb.udp_port, o.address
                    ),
                ));
            }
        }
        if let Some(nb) = port
            .neighbours
            .iter()
            .find(|nb| nb.node == node.id || nb.node as usize >= self.nodes.len())
        {
            return Err(invalid(
                "port.neighbours",
                format!(
                    "node {} is not another node of {cluster} (ids 0..{}, this node is {})",
                    nb.node,
                    self.nodes.len(),
                    node.id
                ),
            ));
        }
        Ok(setup)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
job = 7
buffer_elems = 1000
shm_dir = "/tmp"

[coordinator]
node = "a"
port = 7700

[[node]]
name = "a"
address = "127.0.0.1:9000"
cores = [0, 1]

[[node]]
name = "b"
address = "127.0.0.1:9010"
cores = [1, 0]

[[link]]
from = "a"
to = "b"
mbps = 100
bidirectional = true
"#;

    #[test]
    fn parses_a_good_config() {
        let c = ClusterConfig::parse_str(GOOD, "c.toml").unwrap();
        assert_eq!(c.nodes.len(), 2);
        assert_eq!(c.nodes[0].cores, vec![0, 1]);
        assert_eq!(c.nodes[1].id, 1);
        assert_eq!(c.topology.links.len(), 2);
        assert_eq!(c.coordinator_addr().port(), 7700);
        assert_eq!(c.worker_range(1, 2), 500..1000);
        assert_eq!(c.nodes[0].worker_addr(1).port(), 9001);
        assert_eq!(c.planner, "packing");
    }

    #[test]
    fn wire_payload_type() {
        let c = ClusterConfig::parse_str(GOOD, "c.toml").unwrap();
        assert_eq!((c.wire, c.segment_elems), (PayloadType::F32, 348));
        for (name, ty) in [("bf16", PayloadType::Bf16), ("f16", PayloadType::F16)] {
            let t = GOOD.replace(
                "shm_dir = \"/tmp\"",
                &format!("shm_dir = \"/tmp\"\nwire = \"{name}\""),
            );
            let c = ClusterConfig::parse_str(&t, "c.toml").unwrap();
            // The same 1392-byte segment carries twice the elements.
            assert_eq!((c.wire, c.segment_elems), (ty, 696));
        }
        let e = err(&GOOD.replace("shm_dir = \"/tmp\"", "shm_dir = \"/tmp\"\nwire = \"f64\""));
        assert!(e.starts_with("c.toml:5: invalid 'wire'"), "{e}");
        assert!(e.contains("\"f64\""), "{e}");
    }

    #[test]
    fn mac_key_settings() {
        let c = ClusterConfig::parse_str(GOOD, "c.toml").unwrap();
        assert_eq!(c.protection, Protection::default());
        assert!(c.require_secret().is_err(), "real hosts need a secret");
        let keyed = GOOD.replace(
            "shm_dir = \"/tmp\"",
            "shm_dir = \"/tmp\"\nmac_key = \"00112233445566778899aabbccddeeff\"",
        );
        let c = ClusterConfig::parse_str(&keyed, "c.toml").unwrap();
        let key = *b"\x00\x11\x22\x33\x44\x55\x66\x77\x88\x99\xaa\xbb\xcc\xdd\xee\xff";
        assert_eq!(
            c.protection,
            Protection::with_secret(ProtectionMode::Encrypt, JobSecret::from_mac_key(key))
        );
        assert!(c.require_secret().is_ok());
        let off = GOOD.replace("shm_dir = \"/tmp\"", "shm_dir = \"/tmp\"\nmac = false");
        let c = ClusterConfig::parse_str(&off, "c.toml").unwrap();
        assert_eq!(c.protection, Protection::off());
        assert!(c.require_secret().is_ok(), "off is explicit");
        let e = err(&GOOD.replace(
            "shm_dir = \"/tmp\"",
            "shm_dir = \"/tmp\"\nmac_key = \"0011zz\"",
        ));
        assert!(e.starts_with("c.toml:5: invalid 'mac_key'"), "{e}");
        assert!(!e.contains("0011zz"), "the key is not echoed whole: {e}");
    }

    #[test]
    fn protection_modes_and_secret_files() {
        let with = |extra: &str| {
            GOOD.replace(
                "shm_dir = \"/tmp\"",
                &format!("shm_dir = \"/tmp\"\n{extra}"),
            )
        };
        let c = ClusterConfig::parse_str(&with("protection = \"authenticate\""), "c.toml").unwrap();
        assert_eq!(c.protection.mode, ProtectionMode::Authenticate);
        let c =
            ClusterConfig::parse_str(&with("insecure_job_derived_keys = true"), "c.toml").unwrap();
        assert!(c.require_secret().is_ok());
        assert_eq!(c.protection.keys, KeySource::InsecureJobDerived);
        let e = err(&with("protection = \"secret\""));
        assert!(e.starts_with("c.toml:5: invalid 'protection'"), "{e}");
        let e = err(&with("protection = \"encrypt\"\nmac = false"));
        assert!(e.contains("invalid 'mac'"), "{e}");
        // A secret file next to the config, relative to it.
        let dir = std::env::temp_dir().join(format!("netstorm-cfg-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("job.key");
        let _ = std::fs::remove_file(&key);
        crate::secret::write_secret_file(&key, &[9; 32], false).unwrap();
        let cfg = dir.join("cluster.toml");
        std::fs::write(&cfg, with("secret_file = \"job.key\"")).unwrap();
        let c = ClusterConfig::load(&cfg).unwrap();
        assert_eq!(
            c.protection.keys,
            KeySource::Secret(JobSecret::new(&[9; 32]).unwrap())
        );
        assert!(c.require_secret().is_ok());
        assert!(
            !format!("{c:?}").contains("0909"),
            "Debug redacts the secret"
        );
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = ClusterConfig::load(&cfg).unwrap_err().to_string();
        assert!(
            e.contains("invalid 'secret_file'") && e.contains("job.key"),
            "{e}"
        );
        std::fs::remove_file(&key).unwrap();
        let e = ClusterConfig::load(&cfg).unwrap_err().to_string();
        assert!(e.contains("secret_file") && e.contains("job.key"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dpdk_nodes_name_their_setup_file() {
        let one_core = GOOD
            .replace("cores = [0, 1]", "cores = [0]")
            .replace("cores = [1, 0]", "cores = [1]");
        let dpdk_a = one_core.replace(
            "name = \"a\"\n",
            "name = \"a\"\nbackend = \"dpdk\"\ndpdk = \"dpdk-a.toml\"\n",
        );
        let c = ClusterConfig::parse_str(&dpdk_a, "c.toml").unwrap();
        assert_eq!(c.nodes[0].backend, Backend::Dpdk);
        assert_eq!(c.nodes[0].dpdk.as_deref(), Some(Path::new("dpdk-a.toml")));
        assert_eq!(c.nodes[1].dpdk, None);
        // Loaded from a file, the DPDK file is found beside it.
        let dir = std::env::temp_dir().join(format!("nscfg-dpdk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("c.toml"), &dpdk_a).unwrap();
        let loaded = ClusterConfig::load(&dir.join("c.toml")).unwrap();
        assert_eq!(loaded.nodes[0].dpdk, Some(dir.join("dpdk-a.toml")));
        std::fs::remove_dir_all(&dir).unwrap();

        let e = err(&one_core.replace("name = \"a\"\n", "name = \"a\"\nbackend = \"dpdk\"\n"));
        assert!(
            e.starts_with("c.toml:12: invalid 'dpdk'") && e.contains("no `dpdk ="),
            "{e}"
        );
        let e = err(&one_core.replace("name = \"a\"\n", "name = \"a\"\ndpdk = \"x.toml\"\n"));
        assert!(
            e.starts_with("c.toml:12: invalid 'dpdk'") && e.contains("its backend is \"udp\""),
            "{e}"
        );
        // Several workers: the DPDK file decides (port.workers, a queue-paired device).
        let two = ClusterConfig::parse_str(
            &dpdk_a
                .replace("cores = [0]", "cores = [0, 1]")
                .replace("cores = [1]", "cores = [1, 0]"),
            "c.toml",
        )
        .unwrap();
        assert_eq!(two.nodes[0].cores.len(), 2);
        let e = err(&dpdk_a.replace("127.0.0.1:9000", "[::1]:9000"));
        assert!(
            e.contains("invalid 'address'") && e.contains("IPv4 only"),
            "{e}"
        );
    }

    #[test]
    fn bind_is_where_a_node_listens_address_where_peers_reach_it() {
        let c = ClusterConfig::parse_str(GOOD, "c.toml").unwrap();
        assert_eq!(c.nodes[0].bind, None);
        assert_eq!(c.nodes[0].worker_bind_addr(1), c.nodes[0].worker_addr(1));
        let t = GOOD.replace(
            "address = \"127.0.0.1:9000\"",
            "address = \"203.0.113.7:9000\"\nbind = \"0.0.0.0:7000\"",
        );
        let c = ClusterConfig::parse_str(&t, "c.toml").unwrap();
        let a = &c.nodes[0];
        assert_eq!(a.worker_addr(1).to_string(), "203.0.113.7:9001");
        assert_eq!(a.worker_bind_addr(1).to_string(), "0.0.0.0:7001");
        assert_eq!(c.coordinator_addr().to_string(), "203.0.113.7:7700");
        assert_eq!(c.coordinator_bind_addr().to_string(), "0.0.0.0:7700");
        let t = GOOD.replace(
            "address = \"127.0.0.1:9010\"",
            "address = \"127.0.0.1:9010\"\nmetrics = \"127.0.0.1:9100\"",
        );
        let c = ClusterConfig::parse_str(&t, "c.toml").unwrap();
        assert_eq!(
            (c.nodes[0].metrics, c.nodes[1].metrics.map(|m| m.port())),
            (None, Some(9100))
        );
        let e = err(&t.replace("127.0.0.1:9100", "9100"));
        assert!(e.starts_with("c.toml:18: invalid 'metrics'"), "{e}");
        let e = err(&GOOD.replace(
            "address = \"127.0.0.1:9010\"",
            "address = \"127.0.0.1:9010\"\nbind = \"eth0:9010\"",
        ));
        assert!(e.starts_with("c.toml:18: invalid 'bind'"), "{e}");
        assert!(e.contains("'b'"), "{e}");
    }

    #[test]
    fn mtu_sizes_segments_and_refuses_what_does_not_fit() {
        // The default MTU carries the default 1392-byte segments exactly (1472-byte datagrams).
        let c = ClusterConfig::parse_str(GOOD, "c.toml").unwrap();
        assert_eq!((c.mtu, c.segment_elems), (1500, 348));
        assert_eq!(28 + wire::HEADER_LEN + 348 * 4 + wire::AUTH_TAG_LEN, 1500);
        // A smaller MTU on one node (a VPN path) shrinks every node's segments to fit it.
        let t = GOOD.replace("cores = [1, 0]", "cores = [1, 0]\nmtu = 1400");
        let c = ClusterConfig::parse_str(&t, "c.toml").unwrap();
        assert_eq!((c.mtu, c.segment_elems), (1400, (1400 - 28 - 64 - 16) / 4));
        let b16 = t.replace("shm_dir = \"/tmp\"", "shm_dir = \"/tmp\"\nwire = \"bf16\"");
        let c = ClusterConfig::parse_str(&b16, "c.toml").unwrap();
        assert_eq!(c.segment_elems, (1400 - 28 - 64 - 16) / 2);
        // A larger MTU does not change the default, but allows larger segments.
        let jumbo = GOOD.replace("shm_dir = \"/tmp\"", "shm_dir = \"/tmp\"\nmtu = 9000");
        let c = ClusterConfig::parse_str(&jumbo, "c.toml").unwrap();
        assert_eq!((c.mtu, c.segment_elems), (9000, 348));
        let big = jumbo.replace("mtu = 9000", "mtu = 9000\nsegment_elems = 2200");
        assert_eq!(
            ClusterConfig::parse_str(&big, "c.toml")
                .unwrap()
                .segment_elems,
            2200
        );
        // Without an `mtu` key an explicit segment size is kept as before the key existed.
        let old = GOOD.replace(
            "shm_dir = \"/tmp\"",
            "shm_dir = \"/tmp\"\nsegment_elems = 1000",
        );
        assert_eq!(
            ClusterConfig::parse_str(&old, "c.toml")
                .unwrap()
                .segment_elems,
            1000
        );
        // Segments that would not fit are refused, naming the key and the MTU.
        let e = err(&t.replace(
            "shm_dir = \"/tmp\"",
            "shm_dir = \"/tmp\"\nsegment_elems = 352",
        ));
        assert!(e.starts_with("c.toml:5: invalid 'segment_elems'"), "{e}");
        assert!(e.contains("1..=323") && e.contains("MTU of 1400"), "{e}");
        let e = err(&GOOD.replace("shm_dir = \"/tmp\"", "shm_dir = \"/tmp\"\nmtu = 100"));
        assert!(e.starts_with("c.toml:5: invalid 'mtu'"), "{e}");
    }

    #[test]
    fn peer_timeouts_that_cannot_work_are_refused_naming_the_key() {
        let with = |ms: &str| {
            GOOD.replace(
                "shm_dir = \"/tmp\"",
                &format!("shm_dir = \"/tmp\"\npeer_timeout_ms = {ms}"),
            )
        };
        let ok = ClusterConfig::parse_str(&with("1500"), "c.toml").unwrap();
        assert_eq!(ok.peer_timeout_ms, Some(1500));
        let timeout_of = |text: &str| {
            ClusterConfig::parse_str(text, "c.toml")
                .unwrap()
                .peer_timeout_ms
        };
        // Absent: 5 s, or half a short trainer timeout, or off when even that is too short.
        assert_eq!(timeout_of(GOOD), Some(DEFAULT_PEER_TIMEOUT_MS));
        let trainer = |s: &str| {
            GOOD.replace(
                "shm_dir = \"/tmp\"",
                &format!("shm_dir = \"/tmp\"\ntrainer_timeout_s = {s}"),
            )
        };
        assert_eq!(timeout_of(&trainer("4")), Some(2000));
        assert_eq!(timeout_of(&trainer("0.5")), None);
        assert_eq!(timeout_of(&with("0")), None, "0 turns detection off");
        let e = err(&with("200"));
        assert!(e.starts_with("c.toml:5: invalid 'peer_timeout_ms'"), "{e}");
        assert!(e.contains("heartbeats"), "{e}");
        let e = err(&with("30000"));
        assert!(e.contains("trainer_timeout_s"), "{e}");
    }

    fn err(text: &str) -> String {
        ClusterConfig::parse_str(text, "c.toml")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let e = err(&GOOD.replace("address = \"127.0.0.1:9010\"", "adress = \"x\""));
        assert!(e.starts_with("c.toml:17:1: unknown key"), "{e}");
        assert!(e.contains("'adress'"), "{e}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = err(&GOOD.replace("127.0.0.1:9010", "nowhere"));
        assert!(e.starts_with("c.toml:17: invalid 'address'"), "{e}");
        let e = err(&GOOD.replace("node = \"a\"", "node = \"zz\""));
        assert!(e.contains("invalid 'node'") && e.contains("zz"), "{e}");
        let e = err(&GOOD.replace("mbps = 100", "mbps = -1"));
        assert!(e.starts_with("c.toml:23: invalid 'mbps'"), "{e}");
        let e = err(&GOOD.replace("cores = [1, 0]", "cores = [1, 0]\nbackend = \"rdma\""));
        assert!(e.contains("invalid 'backend'") && e.contains("rdma"), "{e}");
        let e = err(&GOOD.replace("buffer_elems = 1000", "buffer_elems = \"big\""));
        assert!(e.contains("'buffer_elems'"), "{e}");
        let e = err(&GOOD.replace("cores = [1, 0]", "cores = [1]"));
        assert!(
            e.contains("invalid 'cores'") && e.contains("same number"),
            "{e}"
        );
        let e = err(&GOOD.replace("9010", "9001"));
        assert!(
            e.contains("invalid 'address'") && e.contains("overlap"),
            "{e}"
        );
        let e = err(&GOOD.replace("job = 7\n", ""));
        assert!(e.contains("missing required key 'job'"), "{e}");
    }
}
