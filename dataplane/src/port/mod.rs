//! Ports: the backends that carry datagrams between nodes in real time, behind one batch
//! rx/tx trait (smoltcp's `phy::Device`, s2n-quic's queues), and the real-time loop that
//! runs an [`Engine`](crate::engine::Engine) on a port with a monotonic clock.
//!
//! * [`channel`] — in-process, threads joined by bounded queues (tests, real-time emulation).
//! * [`udp`] — kernel UDP sockets with batched syscalls (`recvmmsg`/`sendmmsg`, GSO/GRO).
//! * `dpdk` — DPDK ethdev (feature `dpdk`).
//!
//! Invariant: a port never blocks in any of its calls; the loop busy-polls.
//!
//! # Receive: burst, clock, hand-over
//!
//! The real-time loop ([`EngineLoop`]) receives with [`Port::recv_each`] in three steps, all
//! inside the one call so that a port which lends its buffers (DPDK's mbufs) never has to
//! keep them across calls:
//!
//! 1. the port takes this call's datagrams off the device (a burst per queue; DPDK keeps the
//!    mbufs, copying ports fill the caller's `scratch`);
//! 2. it calls [`RxSink::received`] once: that is where the loop reads its clock — after the
//!    receive, so a datagram is never stamped with a time before it arrived (and therefore
//!    never before its sender stamped it);
//! 3. it hands each datagram to [`RxSink::datagram`] with its arrival time, in place, and
//!    only then releases the buffers.
//!
//! A datagram's arrival time is the port's own stamp when it has one, converted to the
//! loop's clock and never later than the time `received` returned, otherwise the time
//! `received` returned. The kernel UDP port hands over the kernel's receive stamps
//! (`SO_TIMESTAMPNS`, [`rx_stamp`]); the DPDK port stamps nothing itself: the loop's clock
//! read follows its `rte_eth_rx_burst` at once, so a per-burst cycle stamp would be the
//! same time (per-packet stamps there need NIC timestamping).

pub mod channel;
#[cfg(feature = "dpdk")]
pub mod dpdk;
mod driver;
pub mod rx_stamp;
pub mod udp;

pub use driver::{
    run_engine, run_engines, run_loop, run_loops_in_turn, DriverConfig, DriverReport, EngineLoop,
    FixedRounds, Flow, LoopClock, LoopHook, LoopStats, MonotonicClock, Step, Turn, LOOP_BEHIND_NS,
};

use crate::{Nanos, NodeId};

/// One datagram buffer: `data[..len]` is the datagram, `peer` the neighbour it came from
/// (receive) or goes to (send).
#[derive(Debug, Clone)]
pub struct PacketBuf {
    pub data: Box<[u8]>,
    pub len: usize,
    pub peer: NodeId,
}

impl PacketBuf {
    pub fn new(capacity: usize) -> Self {
        Self {
            data: vec![0; capacity].into_boxed_slice(),
            len: 0,
            peer: 0,
        }
    }

    /// A batch of `n` buffers of `capacity` bytes each (allocate once, reuse forever).
    pub fn batch(n: usize, capacity: usize) -> Vec<PacketBuf> {
        (0..n).map(|_| PacketBuf::new(capacity)).collect()
    }

    pub fn bytes(&self) -> &[u8] {
        &self.data[..self.len]
    }
}

/// Where [`Port::recv_each`] hands the datagrams it received (the real-time loop).
pub trait RxSink {
    /// Called exactly once per successful [`Port::recv_each`], after the port's last device
    /// read of the call and before the first [`RxSink::datagram`] (also when nothing was
    /// received). Returns the receive time of every datagram of the call that carries no
    /// stamp of its own: the loop's one clock read of the iteration.
    fn received(&mut self) -> Nanos;
    /// One datagram from `peer`, in place, received at `arrival` (the port's own stamp, or
    /// the time [`RxSink::received`] returned).
    fn datagram(&mut self, peer: NodeId, datagram: &[u8], arrival: Nanos);
}

/// What [`Port::send_each`] calls to write the next datagram in place: returns its
/// destination and length, or `None` when there is nothing more to send.
pub type TxFill<'a> = dyn FnMut(&mut [u8]) -> Option<(NodeId, usize)> + 'a;

/// Errors of a port.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("port I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("no route to node {0}")]
    UnknownPeer(NodeId),
    #[error("the peer side of the port is gone")]
    Disconnected,
    #[error("{0}")]
    Other(String),
}

/// A backend that moves datagrams between this node and its neighbours.
pub trait Port {
    /// Largest datagram the port carries.
    fn max_datagram_len(&self) -> usize;
    /// Fills `bufs[..k]` (data, len, peer) with waiting datagrams and returns `k`; 0 when
    /// nothing is waiting. Never blocks. Datagrams from unknown senders are dropped and
    /// counted by the port, never returned.
    fn recv_batch(&mut self, bufs: &mut [PacketBuf]) -> Result<usize, PortError>;
    /// Sends `bufs` (each to its `peer`); returns how many were taken. The rest may be
    /// offered again later (back-pressure). Never blocks.
    fn send_batch(&mut self, bufs: &[PacketBuf]) -> Result<usize, PortError>;

    /// Receives up to `scratch.len()` waiting datagrams and hands them to `sink` (see the
    /// module docs: take them off the device, call [`RxSink::received`] once, then
    /// [`RxSink::datagram`] per datagram with its arrival time). Returns how many datagrams
    /// were handed over. Ports that can lend their receive buffers (DPDK's mbufs) override
    /// this to skip the copy into `scratch`; the default goes through [`Port::recv_batch`].
    fn recv_each(
        &mut self,
        scratch: &mut [PacketBuf],
        sink: &mut dyn RxSink,
    ) -> Result<usize, PortError> {
        let k = self.recv_batch(scratch)?;
        let now = sink.received();
        for b in &scratch[..k] {
            sink.datagram(b.peer, b.bytes(), now);
        }
        Ok(k)
    }

    /// Sends up to `scratch.len()` datagrams that `fill(out)` writes in place, each returning
    /// its destination and length (`None`: nothing more to send). `out` is at least
    /// [`Port::max_datagram_len`] bytes. Returns (datagrams written, datagrams the port took);
    /// the difference was refused (back-pressure) and is gone. Ports that can lend their
    /// transmit buffers (DPDK's mbufs) override this to skip the copy out of `scratch`; the
    /// default goes through [`Port::send_batch`].
    fn send_each(
        &mut self,
        scratch: &mut [PacketBuf],
        fill: &mut TxFill<'_>,
    ) -> Result<(usize, usize), PortError> {
        let mut m = 0;
        while m < scratch.len() {
            let Some((peer, len)) = fill(&mut scratch[m].data) else {
                break;
            };
            scratch[m].len = len;
            scratch[m].peer = peer;
            m += 1;
        }
        if m == 0 {
            return Ok((0, 0));
        }
        let sent = self.send_batch(&scratch[..m])?;
        Ok((m, sent))
    }
}
