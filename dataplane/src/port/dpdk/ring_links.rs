//! [`RingLinks`]: in-process point-to-point links between ethdevs, one ring per directed link,
//! no switch thread (`netstorm bench dataplane --backend dpdk`).

use super::ffi::{self, LinkRing};
use super::port::NO_QUEUE;
use super::{device_error, eal_initialized, DpdkError, DpdkPort, DpdkPortConfig, EalConfig};
use crate::NodeId;
use netstorm_dpdk_sys as sys;
use std::ffi::CString;

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
        let mut rx_rings: Vec<Vec<LinkRing>> = vec![Vec::new(); n];
        let mut tx_rings: Vec<Vec<LinkRing>> = vec![Vec::new(); n];
        for &(a, b) in links {
            if a as usize >= n || b as usize >= n || a == b || tx_to[a as usize].contains(&b) {
                return Err(bad(
                    "links",
                    format!("link {a} -> {b} is not between two distinct nodes below {n}, or is listed twice"),
                ));
            }
            let name = CString::new(format!("{prefix}l{a}_{b}"))
                .map_err(|_| bad("prefix", "contains NUL".into()))?;
            // Single producer / single consumer: one sender thread (node a's port) and one
            // receiver thread (node b's port) per link.
            let r = LinkRing::create(&name, ring_size).map_err(|errno| {
                device_error(
                    "rte_ring_create (link ring)",
                    &format!("{prefix}l{a}_{b}"),
                    -errno,
                )
            })?;
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
            let port_id = ffi::eth_from_rings(&cname, &rx_rings[i], &tx_rings[i])
                .map_err(|ret| device_error("rte_eth_from_rings", &dev, ret))?;
            let real = ffi::ethdev_name(port_id)
                .map_err(|ret| device_error("rte_eth_dev_get_name_by_port", &dev, ret))?;
            devices.push(real);
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
        let max = self.tx_to[node].iter().copied().max().unwrap_or(0) as usize;
        let mut tx_of = vec![NO_QUEUE; max + 1];
        for (q, &to) in self.tx_to[node].iter().enumerate() {
            tx_of[to as usize] = q as u16;
        }
        port.set_tx_queues(tx_of.into_boxed_slice());
        Ok(port)
    }
}
