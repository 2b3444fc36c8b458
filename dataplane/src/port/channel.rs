//! In-process port: every node is a thread, links are lock-free bounded queues.
//! Used to test the real-time driver and as the real-time flavour of emulation.

use super::{PacketBuf, Port, PortError};
use crate::NodeId;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};

/// A datagram in flight: sender and bytes.
type Datagram = (NodeId, Vec<u8>);

/// One node's end of a full mesh of in-process links.
#[derive(Debug)]
pub struct ChannelPort {
    rx: Receiver<Datagram>,
    tx: Vec<Option<SyncSender<Datagram>>>,
    me: NodeId,
    max_len: usize,
    /// Datagrams refused because a neighbour's queue was full.
    pub send_full: u64,
    /// Datagrams dropped because the neighbour is gone (as UDP would).
    pub send_gone: u64,
}

/// Ports for `n` nodes, each queue holding up to `depth` datagrams.
pub fn mesh(n: usize, depth: usize, max_len: usize) -> Vec<ChannelPort> {
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..n).map(|_| sync_channel(depth)).unzip();
    rxs.into_iter()
        .enumerate()
        .map(|(me, rx)| ChannelPort {
            rx,
            tx: txs
                .iter()
                .enumerate()
                .map(|(v, t)| (v != me).then(|| t.clone()))
                .collect(),
            me: me as NodeId,
            max_len,
            send_full: 0,
            send_gone: 0,
        })
        .collect()
}

impl Port for ChannelPort {
    fn max_datagram_len(&self) -> usize {
        self.max_len
    }

    fn recv_batch(&mut self, bufs: &mut [PacketBuf]) -> Result<usize, PortError> {
        let mut k = 0;
        while k < bufs.len() {
            match self.rx.try_recv() {
                Ok((from, data)) => {
                    let b = &mut bufs[k];
                    let len = data.len().min(b.data.len());
                    b.data[..len].copy_from_slice(&data[..len]);
                    b.len = len;
                    b.peer = from;
                    k += 1;
                }
                Err(_) => break,
            }
        }
        Ok(k)
    }

    fn send_batch(&mut self, bufs: &[PacketBuf]) -> Result<usize, PortError> {
        for (i, b) in bufs.iter().enumerate() {
            let Some(Some(tx)) = self.tx.get(b.peer as usize) else {
                return Err(PortError::UnknownPeer(b.peer));
            };
            // The channel port allocates per datagram: it is a test and emulation backend,
            // not a hot path (udp and dpdk ports reuse their buffers).
            match tx.try_send((self.me, b.bytes().to_vec())) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    self.send_full += 1;
                    return Ok(i);
                }
                Err(TrySendError::Disconnected(_)) => self.send_gone += 1,
            }
        }
        Ok(bufs.len())
    }
}
