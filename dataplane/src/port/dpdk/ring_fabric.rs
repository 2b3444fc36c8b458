//! [`RingFabric`]: a test fabric of ethdevs made of rings, joined by a software Ethernet
//! switch.

use super::ffi::{self, FabricRing, RingMbuf};
use super::{device_error, eal_initialized, DpdkError};
use crate::wire::MacAddr;
use netstorm_dpdk_sys as sys;
use std::ffi::CString;

/// An in-process Ethernet fabric for tests and demos: `n` ethdevs (`net_ring` PMD over
/// rte_rings, created as `<prefix><i>`; their ethdev names are in [`RingFabric::devices`])
/// with `queues` rx/tx queue pairs each, and a learning-free switch that forwards by
/// destination MAC ([`MacAddr::local`]`(i)` is port `i`) from tx queue `q` to rx queue `q`
/// (worker `q` talks to worker `q`), dropping every `drop_every`-th frame if set.
/// Call [`RingFabric::pump`] from one thread (the switch) while the ports run.
#[derive(Debug)]
pub struct RingFabric {
    /// Per port, per queue: (rx ring = the queue's inbox, tx ring = the queue's outbox).
    rings: Vec<Vec<(FabricRing, FabricRing)>>,
    /// Device names, index = port.
    pub devices: Vec<String>,
    /// Frames forwarded, dropped (unknown MAC, full inbox, injected loss).
    pub forwarded: u64,
    pub dropped: u64,
    drop_every: u64,
    seen: u64,
}

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
            let mk = |dir: String| -> Result<FabricRing, DpdkError> {
                let name =
                    CString::new(format!("{prefix}{i}_{dir}")).map_err(|_| DpdkError::Config {
                        key: "prefix".into(),
                        why: "contains NUL".into(),
                    })?;
                FabricRing::create(&name, ring_size).map_err(|errno| {
                    device_error(
                        "rte_ring_create (ring_size must be a power of two)",
                        &format!("{prefix}{i}"),
                        -errno,
                    )
                })
            };
            let mut qs = Vec::with_capacity(queues);
            for q in 0..queues {
                qs.push((mk(format!("i{q}"))?, mk(format!("o{q}"))?));
            }
            let inboxes: Vec<_> = qs.iter().map(|p| p.0).collect();
            let outboxes: Vec<_> = qs.iter().map(|p| p.1).collect();
            let dev = format!("{prefix}{i}");
            let cname = CString::new(dev.as_str()).expect("checked above");
            let port_id = ffi::eth_from_rings(&cname, &inboxes, &outboxes)
                .map_err(|ret| device_error("rte_eth_from_rings", &dev, ret))?;
            let real = ffi::ethdev_name(port_id)
                .map_err(|ret| device_error("rte_eth_dev_get_name_by_port", &dev, ret))?;
            rings.push(qs);
            devices.push(real);
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
        let mut total = 0;
        let queues = self.rings.first().map_or(0, Vec::len);
        let ports = self.rings.len();
        for (src, q) in (0..ports).flat_map(|s| (0..queues).map(move |q| (s, q))) {
            let outbox = self.rings[src][q].1;
            total += outbox.pop_burst(|m: RingMbuf| {
                self.seen += 1;
                let d = m.bytes();
                let dst = if d.len() >= 6 {
                    (d[0..4] == MacAddr::local(0).0[0..4])
                        .then(|| u16::from_be_bytes([d[4], d[5]]) as usize)
                        .filter(|&i| i < ports)
                } else {
                    None
                };
                let injected = self.seen.checked_rem(self.drop_every) == Some(0);
                let delivered = match (dst, injected) {
                    // A full inbox gives the mbuf back: dropped (freed) below.
                    (Some(d), false) => self.rings[d][q].0.push(m).is_ok(),
                    _ => false,
                };
                if delivered {
                    self.forwarded += 1;
                } else {
                    self.dropped += 1;
                }
            });
        }
        total
    }
}
