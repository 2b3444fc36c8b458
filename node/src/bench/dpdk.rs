//! `bench dataplane --backend dpdk` (feature `dpdk`): every node gets a net_ring ethdev, joined
//! point to point by single-producer/single-consumer rte_rings ([`RingLinks`]: one rx queue per
//! incoming link, one tx queue per outgoing link), in this process's one EAL
//! (`--no-huge --no-pci`). Engine mode runs the real engines on these ports (the aggregator
//! as netstorm-dp's worker); raw mode (`raw.rs`) streams sequence-numbered segments through
//! the port and the aggregation kernel without the engine.

use super::common::{aggregator, node_name, root};
use super::engine_mode::{run_engine_backend, ThreadHooks};
use super::{Backend, BenchError, DataplaneBenchConfig, DataplaneReport, Mode};
use crate::worker::WorkerPort;
use netstorm_dataplane::port::dpdk::{
    eal_init, register_thread, unregister_thread, DpdkPort, DpdkPortConfig, EalConfig, MacAddr,
    NeighbourConfig, RingLinks, MBUF_HEADROOM,
};
use netstorm_dataplane::{wire, NodeId};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};

const UDP_PORT: u16 = 4791;

/// Threads that got an EAL lcore id (so the mbuf pools' per-lcore caches serve them).
static REGISTERED: AtomicU64 = AtomicU64::new(0);

pub(super) fn register() {
    if register_thread().is_ok() {
        REGISTERED.fetch_add(1, Ordering::Relaxed);
    }
}

fn eal_config() -> EalConfig {
    let mut e = EalConfig::virtual_devices(&["net_ring0"]);
    e.memory_mb = 1024;
    e.file_prefix = Some(format!("netstorm-bench-{}", std::process::id()));
    e
}

fn ip(v: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, (v >> 8) as u8, (v & 0xff) as u8 + 1)
}

fn port_cfg(links: &RingLinks, v: usize, mtu: u16, udp_checksum: bool) -> DpdkPortConfig {
    let mut c = DpdkPortConfig::new(&links.devices[v], v as NodeId, ip(v), UDP_PORT);
    c.mac = Some(MacAddr::local(v as u16));
    c.mtu = mtu;
    c.mbuf_data_room = MBUF_HEADROOM + 14 + mtu;
    c.mempool_mbufs = 4095;
    c.rx_desc = 512;
    c.tx_desc = 512;
    c.udp_checksum = udp_checksum;
    let mut peers: Vec<NodeId> = links.tx_to[v].clone();
    peers.extend(links.rx_from[v].iter().copied());
    peers.sort_unstable();
    peers.dedup();
    c.neighbours = peers
        .into_iter()
        .map(|u| NeighbourConfig {
            node: u,
            mac: MacAddr::local(u),
            ip: ip(u as usize),
            udp_port: UDP_PORT,
        })
        .collect();
    c
}

pub(super) fn run(a: &DataplaneBenchConfig) -> Result<DataplaneReport, BenchError> {
    let c = a.children;
    let n = c + 2;
    let eal = eal_config();
    eal_init(&eal).map_err(|e| BenchError::Run(format!("--backend dpdk: {e}")))?;
    let result = run_inner(a, a.mode, &eal, c, n);
    // The EAL's runtime directory (named after our pid) is of no use after this process.
    if let Some(p) = &eal.file_prefix {
        let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{p}"));
    }
    result
}

fn run_inner(
    a: &DataplaneBenchConfig,
    mode: Mode,
    eal: &EalConfig,
    c: usize,
    n: usize,
) -> Result<DataplaneReport, BenchError> {
    let agg = aggregator(c);
    let rt = root(c);
    let mut links = Vec::new();
    for ch in 0..c as NodeId {
        links.push((ch, agg));
        links.push((agg, ch));
    }
    links.push((agg, rt));
    links.push((rt, agg));
    // DPDK keeps a run's rings (and their names) for the life of the process: each run in
    // one process gets its own.
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let prefix = format!("nsbench{}", RUNS.fetch_add(1, Ordering::Relaxed));
    let fabric = RingLinks::new(&prefix, n, &links, a.ring_size)
        .map_err(|e| BenchError::Run(format!("--backend dpdk: {e}")))?;
    let datagram = match mode {
        Mode::Engine => wire::HEADER_LEN + a.segment_bytes + wire::AUTH_TAG_LEN,
        Mode::Raw => super::raw::RAW_HEADER + a.segment_bytes,
    };
    let mtu = (datagram + 28).max(1500);
    if mtu > 9000 {
        return Err(BenchError::Invalid(format!(
            "--segment-bytes {}: a {datagram}-byte datagram needs an IP MTU of {mtu}, above the DPDK port's 9000",
            a.segment_bytes
        )));
    }
    let mut ports = Vec::with_capacity(n);
    for v in 0..n {
        ports.push(
            fabric
                .open_port(eal, &port_cfg(&fabric, v, mtu as u16, a.udp_checksum))
                .map_err(|e| {
                    BenchError::Run(format!("--backend dpdk, {}: {e}", node_name(c, v)))
                })?,
        );
    }
    let info = serde_json::json!({
        "eal_args": eal.args(),
        "devices": "net_ring ethdevs joined point to point: one SP/SC rte_ring per directed link (RingLinks), one rx queue per incoming and one tx queue per outgoing link",
        "ring_size": a.ring_size,
        "mtu": mtu,
        "udp_checksum": a.udp_checksum,
        "ipv4_header_checksum": true,
    });
    let mut report = match mode {
        Mode::Engine => {
            let hooks = ThreadHooks {
                setup: &register,
                teardown: &unregister_thread,
            };
            let ports = ports
                .into_iter()
                .map(|p| WorkerPort::Dpdk(Box::new(p)))
                .collect();
            let (mut r, agg_port) = run_engine_backend(a, Backend::Dpdk, ports, &hooks)?;
            if let WorkerPort::Dpdk(p) = &agg_port {
                r.notes.push(format!("aggregator port: {}", port_drops(p)));
            }
            r
        }
        Mode::Raw => super::raw::run(a, ports, &fabric)?,
    };
    let mut info = info;
    info["threads_registered_with_eal"] = REGISTERED.load(Ordering::Relaxed).into();
    report.dpdk = Some(info);
    Ok(report)
}

pub(super) fn port_drops(p: &DpdkPort) -> serde_json::Value {
    let s = &p.stats;
    serde_json::json!({
        "rx_frames": s.rx_frames,
        "rx_datagrams": s.rx_datagrams,
        "rx_dropped": s.rx_not_udp + s.rx_malformed + s.rx_fragment + s.rx_bad_checksum
            + s.rx_not_for_us + s.rx_unknown_neighbour + s.rx_too_long,
        "tx_frames": s.tx_frames,
        "tx_refused": s.tx_refused,
        "tx_bursts": s.tx_bursts,
        "tx_pool_empty": s.tx_pool_empty,
    })
}
