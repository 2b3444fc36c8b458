//! Relays: on the inner hops of a route a node forwards datagrams unchanged but for the TTL,
//! without looking at the payload — data towards the route's destination, acknowledgements
//! back towards its origin. Datagrams wait in a bounded pool of slots while their outgoing
//! link is busy; slots are allocated once and recycled.

use super::Counters;
use crate::wire::{Packet, PacketKind};
use crate::NodeId;
use std::collections::VecDeque;

#[derive(Debug)]
pub(crate) struct Relay {
    /// Route table of the newest policy (path ids are stable across epochs, so relays may
    /// use the newest table at once).
    routes: Vec<Vec<NodeId>>,
    /// Datagrams waiting: next hop and slot.
    queue: VecDeque<(NodeId, usize)>,
    slots: Vec<Vec<u8>>,
    free: Vec<usize>,
    /// Most datagrams held at once.
    capacity: usize,
    /// Capacity of a new slot: the largest datagram.
    slot_len: usize,
}

impl Relay {
    pub fn new(capacity: usize, slot_len: usize) -> Self {
        Self {
            routes: Vec::new(),
            queue: VecDeque::with_capacity(capacity),
            slots: Vec::new(),
            free: Vec::new(),
            capacity,
            slot_len,
        }
    }

    /// Takes a policy's route table if it knows at least as many paths as the current one.
    pub fn update_routes<'a>(&mut self, count: usize, routes: impl Iterator<Item = &'a [NodeId]>) {
        if count >= self.routes.len() {
            self.routes = routes.map(|r| r.to_vec()).collect();
        }
    }

    /// Holds `data` (a datagram for another node that reached `me`) for its next hop on its
    /// route, TTL decremented. Counts what cannot be relayed.
    // Never: only inner hops relay; kept out of `Engine::handle_packet`'s hot body.
    #[inline(never)]
    pub fn accept(&mut self, me: NodeId, pkt: &Packet<&[u8]>, data: &[u8], c: &mut Counters) {
        let Some(hops) = self.routes.get(pkt.path() as usize) else {
            c.rx_invalid += 1;
            return;
        };
        let Some(pos) = hops.iter().position(|&h| h == me) else {
            c.rx_invalid += 1;
            return;
        };
        // Data travels origin → destination; acknowledgements travel back.
        let next = if pkt.kind() == PacketKind::Ack {
            (pos > 0 && pkt.dst() == hops[0]).then(|| hops[pos - 1])
        } else {
            (pos + 1 < hops.len() && pkt.dst() == hops[hops.len() - 1]).then(|| hops[pos + 1])
        };
        let Some(next) = next else {
            c.rx_invalid += 1;
            return;
        };
        self.forward(next, pkt, data, c);
    }

    /// Holds `data` for the neighbour `next`, TTL decremented (a datagram whose TTL ran out
    /// is counted invalid, one that finds the pool full is counted dropped).
    #[inline]
    pub fn forward(&mut self, next: NodeId, pkt: &Packet<&[u8]>, data: &[u8], c: &mut Counters) {
        if pkt.ttl() == 0 {
            c.rx_invalid += 1;
            return;
        }
        if self.queue.len() >= self.capacity {
            c.relay_dropped += 1;
            return;
        }
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(Vec::with_capacity(self.slot_len));
                self.slots.len() - 1
            }
        };
        let buf = &mut self.slots[slot];
        buf.clear();
        buf.extend_from_slice(data);
        if let Ok(mut p) = Packet::new_checked(&mut buf[..]) {
            p.set_ttl(pkt.ttl() - 1);
        }
        self.queue.push_back((next, slot));
    }

    /// Next hop of the oldest datagram waiting.
    #[inline]
    pub fn front(&self) -> Option<NodeId> {
        self.queue.front().map(|&(next, _)| next)
    }

    /// Copies the oldest datagram waiting into `out` and frees its slot. Returns its next
    /// hop and length.
    #[inline]
    pub fn pop_into(&mut self, out: &mut [u8]) -> Option<(NodeId, usize)> {
        let (next, slot) = self.queue.pop_front()?;
        let len = self.slots[slot].len();
        out[..len].copy_from_slice(&self.slots[slot]);
        self.free.push(slot);
        Some((next, len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{HeaderRepr, ACK_PAYLOAD_LEN, HEADER_LEN};

    /// A datagram of `kind` on path 0 from `src` to `dst` with `ttl`.
    fn datagram(kind: PacketKind, src: NodeId, dst: NodeId, ttl: u8) -> Vec<u8> {
        let payload_len = if kind == PacketKind::Ack {
            ACK_PAYLOAD_LEN
        } else {
            8
        };
        let mut buf = vec![0u8; HEADER_LEN + payload_len];
        HeaderRepr {
            kind,
            payload_len: payload_len as u16,
            job: 1,
            src,
            dst,
            ttl,
            ..HeaderRepr::default()
        }
        .emit(&mut buf)
        .unwrap();
        buf
    }

    /// A relay at node 1 of route 0 → 1 → 2 → 3.
    fn relay(capacity: usize) -> Relay {
        let mut r = Relay::new(capacity, 2048);
        let route: &[NodeId] = &[0, 1, 2, 3];
        r.update_routes(1, std::iter::once(route));
        r
    }

    fn offer(r: &mut Relay, data: &[u8], c: &mut Counters) {
        let pkt = Packet::new_checked(data).unwrap();
        r.accept(1, &pkt, data, c);
    }

    #[test]
    fn data_goes_forward_acks_go_back_ttl_decremented() {
        let mut r = relay(8);
        let mut c = Counters::default();
        offer(&mut r, &datagram(PacketKind::ReduceData, 0, 3, 3), &mut c);
        offer(&mut r, &datagram(PacketKind::Ack, 3, 0, 3), &mut c);
        let mut out = [0u8; 2048];
        let (next, len) = r.pop_into(&mut out).unwrap();
        assert_eq!((next, len), (2, HEADER_LEN + 8));
        let p = Packet::new_checked(&out[..len]).unwrap();
        assert_eq!((p.ttl(), p.dst()), (2, 3));
        assert_eq!(r.front(), Some(0));
        let (next, _) = r.pop_into(&mut out).unwrap();
        assert_eq!(next, 0);
        assert_eq!(r.pop_into(&mut out), None);
        assert_eq!(c, Counters::default(), "nothing dropped");
    }

    #[test]
    fn misrouted_or_expired_datagrams_are_invalid() {
        let mut r = relay(8);
        let mut c = Counters::default();
        // Data to a node that is not the route's destination.
        offer(&mut r, &datagram(PacketKind::ReduceData, 0, 2, 3), &mut c);
        // An ack to a node that is not the route's origin.
        offer(&mut r, &datagram(PacketKind::Ack, 3, 2, 3), &mut c);
        // TTL exhausted.
        offer(&mut r, &datagram(PacketKind::ReduceData, 0, 3, 0), &mut c);
        assert_eq!(c.rx_invalid, 3);
        assert_eq!(r.front(), None);
    }

    #[test]
    fn a_full_pool_drops_and_slots_are_recycled() {
        let mut r = relay(2);
        let mut c = Counters::default();
        let d = datagram(PacketKind::ReduceData, 0, 3, 3);
        for _ in 0..3 {
            offer(&mut r, &d, &mut c);
        }
        assert_eq!(c.relay_dropped, 1);
        let mut out = [0u8; 2048];
        for _ in 0..10 {
            r.pop_into(&mut out).unwrap();
            offer(&mut r, &d, &mut c);
        }
        assert_eq!(r.slots.len(), 2, "no slot allocated after warm-up");
    }

    #[test]
    fn an_older_shorter_route_table_is_ignored() {
        let mut r = relay(2);
        r.update_routes(0, std::iter::empty());
        assert_eq!(r.routes.len(), 1);
    }
}
