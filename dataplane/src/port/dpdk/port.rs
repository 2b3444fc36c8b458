//! [`DpdkPort`]: one worker's queues on a DPDK ethdev — opening the device, the receive path
//! (bursts parsed in place, unwanted frames counted and dropped) and the send path (frames
//! written straight into mbufs, one tx burst per queue per call), and its [`Port`] impl.
//! Safe code: the mbufs and queues it uses are `ffi`'s types.

use super::ffi::{AllocError, Device, DeviceSpec, OpenError, QueueSplit, Queues, RxBurst, Step};
use super::ffi::{TxBulk, TxPending, TxStash};
use super::MAX_BURST;
use super::{device_error, eal_init, DpdkError, DpdkPortConfig, DpdkPortStats, EalConfig};
use crate::port::{PacketBuf, Port, PortError, RxSink, TxFill};
use crate::wire::frame::{parse_frame, FrameAddrs, FrameDrop, HeaderTemplate, FRAME_HEADER_LEN};
use crate::wire::{udp_checksum, MacAddr, ETH_HEADER_LEN, IPV4_HEADER_LEN};
use crate::NodeId;
use netstorm_dpdk_sys as sys;
use std::net::Ipv4Addr;
use std::time::Duration;

/// One worker's queue pair on a DPDK ethdev. See the module docs.
#[derive(Debug)]
pub struct DpdkPort {
    queue: u16,
    me: FrameAddrsTemplate,
    /// Neighbour table indexed by NodeId: (mac, ip, port).
    by_node: Vec<Option<(MacAddr, Ipv4Addr, u16)>>,
    /// (ip, port) → node, for receive (linear scan: tables are small).
    by_addr: Vec<(Ipv4Addr, u16, NodeId)>,
    max_datagram: usize,
    udp_checksum: bool,
    ip_id: u16,
    /// Next rx queue (index into the port's rx queues) to poll first. The port polls its rx
    /// queues round robin, one burst each per call: one for a worker's queue pair, one per
    /// incoming link for [`RingLinks`](super::RingLinks) ports.
    rx_next: usize,
    /// Tx queue (index into `tx_pending`) per destination node (`NO_QUEUE` = none); empty =
    /// always the port's one tx queue (index 0).
    tx_queue_of: Box<[u16]>,
    /// Frame headers per neighbour (indexed by node, built at open).
    tx_templates: Box<[Option<HeaderTemplate>]>,
    /// mbufs allocated ahead for in-place sends ([`Port::send_each`]), each with a full-size
    /// frame appended: a LIFO, freed on drop.
    tx_stash: TxStash,
    /// Per tx queue, the datagrams [`Port::send_each`] framed and not yet handed over: a
    /// call leaves with one burst per queue, however the engine interleaves destinations.
    tx_pending: Box<[TxPending]>,
    /// One rx burst's mbufs, data pointers and lengths, kept here so a burst does not zero
    /// fresh arrays on the stack.
    rx_burst: RxBurst,
    pub stats: DpdkPortStats,
    /// The port's queues (declared last: dropped after the mbufs above, then the device is
    /// stopped if this was its last set).
    queues: Queues,
}

/// How many frames ahead [`Port::send_each`] asks for the stash's cache lines: one frame of
/// engine work (~35 ns) hides little of a cross-core ownership transfer; on the 2-core VM,
/// `bench dataplane --mode engine --no-mac --batch 64` gave 38.8-39.1 Gbit/s of capacity one
/// frame ahead, 40.3-41.3 four ahead (plus the first four at the start of a call), 40.6-41.2
/// eight ahead.
const TX_PREFETCH_FRAMES: usize = 4;

/// "No tx queue leads to this node" in [`DpdkPort::tx_queue_of`].
pub(super) const NO_QUEUE: u16 = u16::MAX;

#[derive(Debug, Clone, Copy)]
struct FrameAddrsTemplate {
    mac: MacAddr,
    ip: Ipv4Addr,
    udp_port: u16,
}

/// Counts one tx burst: `sent` frames taken, `refused` freed.
#[inline]
fn count_burst(stats: &mut DpdkPortStats, sent: usize, refused: usize) {
    stats.tx_refused += refused as u64;
    if sent > 0 {
        stats.tx_bursts += 1;
    }
    stats.tx_frames += sent as u64;
}

/// The node at (ip, port) in the receive table.
#[inline]
fn lookup_sender(by_addr: &[(Ipv4Addr, u16, NodeId)], ip: Ipv4Addr, port: u16) -> Option<NodeId> {
    by_addr
        .iter()
        .find(|&&(i, p, _)| i == ip && p == port)
        .map(|&(_, _, n)| n)
}

/// Classifies one received frame: `Some((sender, payload offset, payload length))` when it is
/// a datagram for `me` from a known neighbour, otherwise counted in `stats` and `None`.
#[inline]
fn classify(
    me: &FrameAddrsTemplate,
    by_addr: &[(Ipv4Addr, u16, NodeId)],
    stats: &mut DpdkPortStats,
    frame: &[u8],
) -> Option<(NodeId, usize, usize)> {
    let parsed = match parse_frame(frame) {
        Ok(p) => p,
        Err(d) => {
            let c = match d {
                FrameDrop::NotUdp => &mut stats.rx_not_udp,
                FrameDrop::Malformed => &mut stats.rx_malformed,
                FrameDrop::Fragment => &mut stats.rx_fragment,
                FrameDrop::BadChecksum => &mut stats.rx_bad_checksum,
            };
            *c += 1;
            return None;
        }
    };
    let a = parsed.addrs;
    if a.dst_ip != me.ip || a.dst_port != me.udp_port {
        stats.rx_not_for_us += 1;
        return None;
    }
    let Some(from) = lookup_sender(by_addr, a.src_ip, a.src_port) else {
        stats.rx_unknown_neighbour += 1;
        return None;
    };
    Some((from, parsed.payload_offset, parsed.payload_len))
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
        Self::open_inner(eal, cfg, cfg.workers, cfg.workers, QueueSplit::PerPair)
    }

    /// As [`DpdkPort::open`] with `nb_rx` rx and `nb_tx` tx queues on the device, all of them
    /// the port's (it polls every rx queue; its owner says which tx queue leads where, see
    /// [`RingLinks::open_port`](super::RingLinks::open_port)).
    pub(super) fn open_queues(
        eal: &EalConfig,
        cfg: &DpdkPortConfig,
        nb_rx: u16,
        nb_tx: u16,
    ) -> Result<DpdkPort, DpdkError> {
        let mut v = Self::open_inner(eal, cfg, nb_rx, nb_tx, QueueSplit::All)?;
        Ok(v.remove(0))
    }

    fn open_inner(
        eal: &EalConfig,
        cfg: &DpdkPortConfig,
        nb_rx: u16,
        nb_tx: u16,
        split: QueueSplit,
    ) -> Result<Vec<DpdkPort>, DpdkError> {
        if !sys::LINKED {
            return Err(DpdkError::NotLinked);
        }
        cfg.validate()?;
        eal_init(eal)?;
        if cfg.device.contains('\0') {
            return Err(DpdkError::Config {
                key: "device".into(),
                why: "contains NUL".into(),
            });
        }
        let memif = cfg.device.starts_with("net_memif");
        let spec = DeviceSpec {
            name: &cfg.device,
            rx_queues: nb_rx,
            tx_queues: nb_tx,
            rx_desc: cfg.rx_desc,
            tx_desc: cfg.tx_desc,
            mtu: cfg.mtu,
            promiscuous: cfg.promiscuous,
            mempool_mbufs: cfg.mempool_mbufs,
            mempool_cache: cfg.mempool_cache,
            mbuf_data_room: cfg.mbuf_data_room,
            start_retry: if memif {
                Duration::from_millis(cfg.memif_connect_wait_ms.into())
            } else {
                Duration::ZERO
            },
        };
        let sets = Device::open(&spec, split).map_err(|e| match e {
            OpenError::NoSuchDevice { available } => DpdkError::NoSuchDevice {
                device: cfg.device.clone(),
                available,
            },
            OpenError::Busy => DpdkError::DeviceBusy {
                device: cfg.device.clone(),
            },
            OpenError::Mempool { errno } => DpdkError::Mempool {
                mbufs: cfg.mempool_mbufs,
                data_room: cfg.mbuf_data_room,
                errno,
                msg: sys::strerror(errno),
            },
            OpenError::Step { step, ret } => {
                let op = match step {
                    Step::Configure => "rte_eth_dev_configure (workers = rx/tx queues)",
                    Step::RxQueueSetup => "rte_eth_rx_queue_setup (rx_desc)",
                    Step::TxQueueSetup => "rte_eth_tx_queue_setup (tx_desc)",
                    Step::Promiscuous => "rte_eth_promiscuous_enable (promiscuous)",
                    Step::Start if memif => "rte_eth_dev_start (a net_memif client starts only once its server listens; waited memif_connect_wait_ms)",
                    Step::Start => "rte_eth_dev_start",
                };
                device_error(op, &cfg.device, ret)
            }
        })?;
        Self::ports(cfg, sets)
    }

    /// One port per queue set of the just-started device.
    fn ports(cfg: &DpdkPortConfig, sets: Vec<Queues>) -> Result<Vec<DpdkPort>, DpdkError> {
        let Some(device) = sets.first().map(Queues::device) else {
            return Ok(Vec::new());
        };
        let mac = match cfg.mac {
            Some(m) => m,
            None => MacAddr(device.mac_addr().map_err(|ret| {
                device_error(
                    "rte_eth_macaddr_get (set `mac` explicitly)",
                    &cfg.device,
                    ret,
                )
            })?),
        };
        let port_id = device.port_id();
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
        let frame_cap = (FRAME_HEADER_LEN + cfg.max_datagram_len()) as u16;
        // Worker q: our udp_port + q, each neighbour's udp_port + q (validated to fit).
        Ok(sets
            .into_iter()
            .zip(0u16..)
            .map(|(queues, q)| {
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
                    rx_next: 0,
                    tx_stash: TxStash::new(frame_cap),
                    rx_burst: RxBurst::new(),
                    tx_pending: (0..queues.tx_count()).map(|_| TxPending::new()).collect(),
                    tx_queue_of: Box::default(),
                    stats: DpdkPortStats::default(),
                    queues,
                }
            })
            .collect())
    }

    /// Routes datagrams to node `to` over the port's tx queue `tx_of[to]` (`NO_QUEUE`: no
    /// route); see [`RingLinks::open_port`](super::RingLinks::open_port).
    pub(super) fn set_tx_queues(&mut self, tx_of: Box<[u16]>) {
        self.tx_queue_of = tx_of;
    }

    /// The ethdev port id.
    pub fn port_id(&self) -> u16 {
        self.queues.device().port_id()
    }

    /// The device name from the config.
    pub fn device(&self) -> &str {
        self.queues.device().name()
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
        self.queues.device().pool().available()
    }

    /// Whether the device reports its link up; `None` when it cannot say.
    pub fn link_up(&self) -> Option<bool> {
        let ret = self.queues.device().link_status();
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
        let name = first.device().to_string();
        let mut sets: Vec<&mut Queues> = ports.iter_mut().map(|p| &mut p.queues).collect();
        match Device::restart(&mut sets) {
            Ok(true) => Ok(()),
            Ok(false) => Err(DpdkError::Config {
                key: "workers".into(),
                why: format!("{name}: restarting the device needs all of its ports"),
            }),
            Err((op, ret)) => Err(device_error(op, &name, ret)),
        }
    }

    /// The ethdev's own counters: [ipackets, opackets, ibytes, obytes, imissed, oerrors].
    pub fn device_stats(&self) -> Option<[u64; 6]> {
        self.queues.device().stats()
    }

    /// Number of rx queues this port polls (1, or one per incoming link of a
    /// [`RingLinks`](super::RingLinks) port).
    pub fn rx_queue_count(&self) -> usize {
        self.queues.rx_count()
    }

    /// Receives one burst of at most `max` (≤ [`MAX_BURST`]) frames from the port's rx queue
    /// `index` and hands each datagram for us to `f(sender, datagram)` in place, without
    /// copying; frames that are not are counted and dropped. Returns the number of frames
    /// taken from the queue (0 = the queue is empty). Mbufs are freed in bulk after the burst.
    pub fn recv_queue_with(
        &mut self,
        index: usize,
        max: usize,
        f: impl FnMut(NodeId, &[u8]),
    ) -> usize {
        if index >= self.queues.rx_count() {
            return 0;
        }
        let want = max.min(MAX_BURST);
        if want == 0 {
            return 0;
        }
        let n = self.rx_burst.receive(&mut self.queues, index, want);
        if n == 0 {
            return 0;
        }
        self.stats.rx_frames += n as u64;
        self.hand_over_burst(f);
        n
    }

    /// Hands each datagram for us among the burst's frames to `f(sender, datagram)` in place
    /// (the others are counted and dropped), then frees the burst's mbufs.
    fn hand_over_burst(&mut self, mut f: impl FnMut(NodeId, &[u8])) {
        let n = self.rx_burst.len();
        self.rx_burst.prefetch(0);
        for i in 0..n {
            if i + 1 < n {
                // The next frame was written by another core: start pulling it in while this
                // one is processed.
                self.rx_burst.prefetch(i + 1);
            }
            let Some(frame) = self.rx_burst.frame(i) else {
                // A chained (multi-segment) mbuf.
                self.stats.rx_malformed += 1;
                continue;
            };
            if let Some((from, off, len)) =
                classify(&self.me, &self.by_addr, &mut self.stats, frame)
            {
                self.stats.rx_datagrams += 1;
                f(from, &frame[off..off + len]);
            }
        }
        self.rx_burst.free();
    }

    /// Receives up to `max` frames, one burst per rx queue in turn (round robin over calls),
    /// handing each datagram to `f(sender, datagram)` in place. Returns the number of frames
    /// taken from the queues.
    pub fn recv_with(&mut self, max: usize, mut f: impl FnMut(NodeId, &[u8])) -> usize {
        let queues = self.rx_queue_count();
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

    /// The tx queue (index into `tx_pending`) leading to `peer`, if the neighbour table knows
    /// it.
    #[inline]
    fn tx_queue(&self, peer: NodeId) -> Option<u16> {
        self.by_node.get(peer as usize).copied().flatten()?;
        if self.tx_queue_of.is_empty() {
            return Some(0);
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
        if self.tx_stash.len() < MAX_BURST {
            match self.tx_stash.refill(self.queues.device().pool()) {
                Ok(()) => {}
                Err(AllocError::TooSmall) => {
                    return Err(PortError::Other(format!(
                        "mbuf too small for a {}-byte frame (config key mbuf_data_room)",
                        self.tx_stash.frame_len()
                    )))
                }
                Err(AllocError::PoolEmpty) => self.stats.tx_pool_empty += 1,
            }
        }
        Ok(self.tx_stash.len() > 0)
    }

    /// Hands every queue's pending frames to the device, one burst per queue; frees and
    /// counts what the device refuses. Returns how many it took.
    fn flush_tx_pending(&mut self) -> usize {
        let mut sent_total = 0;
        for (queue, p) in self.tx_pending.iter_mut().enumerate() {
            if p.is_empty() {
                continue;
            }
            let (sent, refused) = p.flush(&mut self.queues, queue);
            count_burst(&mut self.stats, sent, refused);
            sent_total += sent;
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
        let mut bulk = match TxBulk::alloc(self.queues.device().pool(), n, frame_len) {
            Ok(bulk) => bulk,
            Err(AllocError::TooSmall) => {
                return Err(PortError::Other(format!(
                    "mbuf too small for a {}-byte frame (config key mbuf_data_room)",
                    frame_len[..n].iter().max().copied().unwrap_or(0)
                )))
            }
            Err(AllocError::PoolEmpty) => {
                self.stats.tx_pool_empty += 1;
                return Ok(0);
            }
        };
        for (i, &total) in frame_len.iter().enumerate().take(n) {
            let total = total as usize;
            let frame = bulk.frame_mut(i);
            let peer = fill(i, &mut frame[FRAME_HEADER_LEN..]);
            let Some(t) = self.tx_templates.get(peer as usize).copied().flatten() else {
                // Dropping `bulk` frees all n mbufs: none was handed to the driver yet.
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
        let (sent, refused) = bulk.send(&mut self.queues, queue as usize);
        count_burst(&mut self.stats, sent, refused);
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
        let queues = self.rx_queue_count();
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
        let queues = self.rx_queue_count();
        self.rx_burst.free();
        for i in 0..queues {
            let index = (self.rx_next + i) % queues;
            while self.rx_burst.len() < max {
                let want = max - self.rx_burst.len();
                if self.rx_burst.append(&mut self.queues, index, want) < want {
                    break;
                }
            }
        }
        self.rx_next = (self.rx_next + 1) % queues.max(1);
        self.stats.rx_frames += self.rx_burst.len() as u64;
        let now = sink.received();
        let mut k = 0;
        self.hand_over_burst(|from, d| {
            k += 1;
            sink.datagram(from, d, now);
        });
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
        if want == 0 || (self.tx_stash.len() < want && !self.refill_tx_stash()?) {
            return Ok((0, 0));
        }
        let mut written = 0usize;
        let mut failed = None;
        // The stash's frames are likely in another core's cache (each mbuf came back through
        // the pool from its receiver): ask for ownership of their lines a few frames ahead of
        // writing them, so the transfers overlap the engine's work on the frames before.
        for k in 1..=TX_PREFETCH_FRAMES.min(self.tx_stash.len()) {
            self.tx_stash.prefetch_for_write(self.tx_stash.len() - k);
        }
        while written < want && self.tx_stash.len() > 0 {
            let top = self.tx_stash.len() - 1;
            if top >= TX_PREFETCH_FRAMES {
                self.tx_stash.prefetch_for_write(top - TX_PREFETCH_FRAMES);
            }
            // The top mbuf's frame, still in the stash until it is known to leave.
            let Some(frame) = self.tx_stash.top_frame() else {
                break;
            };
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
            let Some(mut m) = self.tx_stash.pop() else {
                break;
            };
            self.ip_id = self.ip_id.wrapping_add(1);
            let frame = m.frame_mut();
            t.write(self.ip_id, len, frame);
            if self.udp_checksum {
                let udp = &mut frame[ETH_HEADER_LEN + IPV4_HEADER_LEN..FRAME_HEADER_LEN + len];
                let c = udp_checksum(self.me.ip, t.dst_ip(), udp);
                udp[6..8].copy_from_slice(&c.to_be_bytes());
            }
            m.set_len(FRAME_HEADER_LEN + len);
            // At most `want` <= MAX_BURST frames per call, so a queue's batch never overflows.
            self.tx_pending[queue as usize].push(m);
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
