//! The datagrams [`Engine::poll_transmit`] sends (it picks, in priority order, a capacity
//! probe train — back to back, nothing interleaved — relayed datagrams, acknowledgements,
//! then data round-robin over the paths). Each is written straight into the caller's buffer
//! (data payloads from the gradient buffer), sealed (`crate::protect`), and charged to its
//! link's pacer (data also to its path's).
//!
//! The writers are `#[inline]`: they are compiled into `poll_transmit` (in `mod.rs`), as
//! they were when the engine was one file.

use super::timers::Timer;
use super::{Engine, Transmit};
use crate::kernel16;
use crate::policy::PathId;
use crate::wire::{self, HeaderRepr, PacketKind, ProbeRepr};
use crate::{Nanos, NodeId};

impl Engine {
    /// Charges a datagram of `len` bytes to the pacer of the link to `next`.
    #[inline]
    pub(super) fn pace_link(&mut self, now: Nanos, next: NodeId, len: usize) {
        self.links[next as usize].charge(now, len + self.cfg.frame_overhead_bytes);
    }

    /// Writes the acknowledgement of receive path `p`; returns its length.
    #[inline]
    pub(super) fn write_ack(&mut self, now: Nanos, p: PathId, out: &mut [u8]) -> Option<usize> {
        let rp = self.paths.recv[p as usize]
            .as_mut()
            .expect("queued path exists");
        let ack = rp.take_ack();
        let hdr = HeaderRepr {
            kind: PacketKind::Ack,
            flags: self.protect.sealer.flags(),
            payload_len: wire::ACK_PAYLOAD_LEN as u16,
            job: self.cfg.job,
            epoch: self.current.as_ref().map_or(0, |c| c.epoch),
            round: self.round.round,
            path: p,
            src: self.cfg.node,
            dst: rp.origin,
            ttl: 64,
            timestamp_ns: now,
            payload_type: self.cfg.wire,
            ..HeaderRepr::default()
        };
        hdr.emit(out).ok()?;
        ack.emit(&mut out[wire::HEADER_LEN..]).ok()?;
        let body_len = wire::HEADER_LEN + wire::ACK_PAYLOAD_LEN;
        Some(self.protect.sealer.seal(out, body_len))
    }

    /// Sends the next data datagram of path `id` (a retransmission first), if it has one.
    #[inline]
    pub(super) fn send_on_path(
        &mut self,
        now: Nanos,
        id: usize,
        out: &mut [u8],
    ) -> Option<Transmit> {
        let sp = self.paths.send[id].as_mut().expect("caller checked");
        let (seq, item, retransmit) = sp.next_to_send()?;
        sp.on_sent(seq, item, now);
        let c = self.current.as_ref().expect("sending requires a policy");
        let tree = &c.trees[item.tree as usize];
        let range = tree.seg_range(item.seg, self.cfg.segment_elems);
        let wire_type = self.cfg.wire;
        let payload_len = range.len() * wire_type.elem_bytes();
        let hdr = HeaderRepr {
            kind: item.packet_kind(),
            flags: self.protect.sealer.flags(),
            payload_len: payload_len as u16,
            job: self.cfg.job,
            epoch: c.epoch,
            round: self.round.round,
            tree: item.tree,
            path: id as PathId,
            src: self.cfg.node,
            dst: *sp.hops.last().expect("route"),
            seq: seq as u32,
            segment: item.seg,
            ttl: (sp.hops.len() - 1) as u8,
            timestamp_ns: now,
            payload_type: wire_type,
            ..HeaderRepr::default()
        };
        hdr.emit(out).ok()?;
        let saturated = kernel16::write_wire(
            wire_type,
            &mut out[wire::HEADER_LEN..wire::HEADER_LEN + payload_len],
            &self.buf[range],
        );
        if saturated != 0 && !retransmit {
            // Only partial sums can saturate (final values were rounded already); a
            // retransmission re-encodes the same values and is not counted again.
            self.round.stats.saturated += u64::from(saturated);
            self.counters.saturated += u64::from(saturated);
        }
        let body_len = wire::HEADER_LEN + payload_len;
        // Sealed afresh with a new packet number, retransmissions too (never re-sent
        // ciphertext: a nonce is used once).
        let len = self.protect.sealer.seal(out, body_len);
        let next = sp.next_hop;
        let frame_bytes = len + self.cfg.frame_overhead_bytes;
        sp.on_frame_left(now, frame_bytes);
        if let Some(d) = sp.timer_deadline(self.cfg.ack_delay_ns) {
            self.timers.lower(Timer::Loss, d);
        }
        self.links[next as usize].charge(now, frame_bytes);
        if retransmit {
            self.counters.tx_retransmits += 1;
        } else {
            self.counters.tx_data += 1;
        }
        self.counters.tx_bytes += len as u64;
        Some(Transmit {
            next_hop: next,
            len,
        })
    }

    // -- capacity probes -----------------------------------------------------------------

    /// Bytes this node sent besides probes (the probe budget's base).
    pub(super) fn probe_other_bytes(&self) -> u64 {
        self.counters
            .tx_bytes
            .saturating_sub(self.counters.tx_probe_bytes)
    }

    /// Wire size of one probe frame: as large as a full data frame, so the train's
    /// dispersion is the serialization of data-sized frames.
    pub(super) fn probe_frame_bytes(&self) -> usize {
        self.probe_datagram_len() + self.cfg.frame_overhead_bytes
    }

    fn probe_datagram_len(&self) -> usize {
        wire::HEADER_LEN + self.cfg.segment_bytes() + self.cfg.protection.tag_len()
    }

    #[inline]
    pub(super) fn send_probe(&mut self, now: Nanos, out: &mut [u8]) -> Option<Transmit> {
        let frame = self.probe_frame_bytes();
        let (to, id) = self.prober.next(now, self.probe_other_bytes(), frame)?;
        let tag = self.cfg.protection.tag_len();
        let len = self.probe_datagram_len();
        let body_len = len - tag;
        let hdr = HeaderRepr {
            kind: PacketKind::Probe,
            flags: self.protect.sealer.flags(),
            payload_len: (body_len - wire::HEADER_LEN) as u16,
            job: self.cfg.job,
            epoch: self.current.as_ref().map_or(0, |c| c.epoch),
            round: self.round.round,
            src: self.cfg.node,
            dst: to,
            ttl: 1,
            timestamp_ns: now,
            payload_type: self.cfg.wire,
            ..HeaderRepr::default()
        };
        hdr.emit(out).ok()?;
        out[wire::HEADER_LEN..body_len].fill(0);
        ProbeRepr {
            probe_id: id,
            sent_ns: now,
        }
        .emit(&mut out[wire::HEADER_LEN..body_len])
        .ok()?;
        let len = self.protect.sealer.seal(out, body_len);
        // Probes bypass pacing (they must leave back to back) but count against the link.
        self.pace_link(now, to, len);
        self.prober.sent(frame);
        self.counters.tx_probes += 1;
        self.counters.tx_probe_bytes += len as u64;
        self.counters.tx_bytes += len as u64;
        Some(Transmit { next_hop: to, len })
    }
}
