//! Peer liveness as the data plane sees it: per node, when a datagram from it (any kind,
//! relayed ones by their origin, after the MAC check) last arrived, stamped with the arrival
//! time the driver passes to [`Engine::handle_packet`] (one store per datagram, no clock
//! read); and, when [`EngineConfig::heartbeat_ns`](super::EngineConfig) is set, an empty
//! [`PacketKind::Heartbeat`] to every neighbour whose link carried nothing for that long,
//! so that an idle but live node is never silent. A control plane reads
//! [`Engine::peer_last_heard`] to tell a dead node from a quiet one.

use super::{Engine, Transmit};
use crate::topology::Topology;
use crate::wire::{self, HeaderRepr, PacketKind};
use crate::{Nanos, NodeId};

#[derive(Debug)]
pub(crate) struct Liveness {
    /// Per node: arrival time of its newest datagram (0: never heard).
    last_heard: Vec<Nanos>,
    /// Heartbeat interval (`None`: no heartbeats).
    interval_ns: Option<Nanos>,
    /// The configured out-links' far ends.
    neighbours: Vec<NodeId>,
    /// When the links are next checked for idleness.
    next_check: Nanos,
    /// Per neighbour (index into `neighbours`): a heartbeat waits to leave.
    pending: Vec<bool>,
    pending_count: usize,
}

impl Liveness {
    pub fn new(interval_ns: Option<Nanos>, me: NodeId, topo: &Topology) -> Self {
        let mut neighbours: Vec<NodeId> = topo
            .links
            .iter()
            .filter(|l| l.from == me)
            .map(|l| l.to)
            .collect();
        neighbours.sort_unstable();
        neighbours.dedup();
        Self {
            last_heard: vec![0; topo.node_count()],
            interval_ns,
            pending: vec![false; neighbours.len()],
            neighbours,
            next_check: if interval_ns.is_some() { 0 } else { Nanos::MAX },
            pending_count: 0,
        }
    }

    /// A datagram from `src` arrived at `now`.
    #[inline(always)]
    pub fn heard(&mut self, src: NodeId, now: Nanos) {
        if let Some(t) = self.last_heard.get_mut(src as usize) {
            *t = now.max(1);
        }
    }

    pub fn deadline(&self) -> Option<Nanos> {
        (self.next_check != Nanos::MAX).then_some(self.next_check)
    }

    #[inline]
    pub fn has_pending(&self) -> bool {
        self.pending_count > 0
    }
}

impl Engine {
    /// Per node id: when a datagram from that node last arrived here (the driver's clock, as
    /// passed to [`Engine::handle_packet`]); 0 = never.
    pub fn peer_last_heard(&self) -> &[Nanos] {
        &self.liveness.last_heard
    }

    /// Heartbeat check: every neighbour whose link has been idle for the interval gets one.
    pub(super) fn liveness_on_timeout(&mut self, now: Nanos) {
        let Some(interval) = self.liveness.interval_ns else {
            return;
        };
        if now < self.liveness.next_check {
            return;
        }
        let lv = &mut self.liveness;
        for (i, &v) in lv.neighbours.iter().enumerate() {
            // The link's pacer schedule restarts at the last frame after a pause, so an old
            // schedule means nothing left on this link for the interval.
            if self.links[v as usize].next_ns().saturating_add(interval) <= now && !lv.pending[i] {
                lv.pending[i] = true;
                lv.pending_count += 1;
            }
        }
        // Checking twice per interval keeps a quiet link's gap below 1.5 intervals.
        lv.next_check = now + (interval / 2).max(1);
    }

    /// Writes the next waiting heartbeat.
    // Never: a few datagrams per second.
    #[inline(never)]
    pub(super) fn send_heartbeat(&mut self, now: Nanos, out: &mut [u8]) -> Option<Transmit> {
        let i = self.liveness.pending.iter().position(|&p| p)?;
        self.liveness.pending[i] = false;
        self.liveness.pending_count -= 1;
        let to = self.liveness.neighbours[i];
        let hdr = HeaderRepr {
            kind: PacketKind::Heartbeat,
            flags: self.protect.sealer.flags(),
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
        let len = self.protect.sealer.seal(out, wire::HEADER_LEN);
        self.pace_link(now, to, len);
        self.counters.tx_heartbeats += 1;
        self.counters.tx_bytes += len as u64;
        Some(Transmit { next_hop: to, len })
    }

    /// Sends what the failure-handling parts have waiting: RoundDone, then heartbeats.
    #[inline]
    pub(super) fn poll_control(&mut self, now: Nanos, out: &mut [u8]) -> Option<Transmit> {
        if !self.control_on {
            return None;
        }
        if self.release.has_pending() {
            if let Some(tx) = self.send_round_done(now, out) {
                return Some(tx);
            }
        }
        if self.liveness.has_pending() {
            return self.send_heartbeat(now, out);
        }
        None
    }

    /// Timers of the failure-handling parts.
    #[inline]
    pub(super) fn control_on_timeout(&mut self, now: Nanos) {
        if !self.control_on {
            return;
        }
        self.release_on_timeout(now);
        self.liveness_on_timeout(now);
    }

    /// Next deadline of the failure-handling parts (`None` when both are off and idle).
    #[inline]
    pub(super) fn control_deadline(&self) -> Option<Nanos> {
        if !self.control_on {
            return None;
        }
        let hb = self.liveness.has_pending().then_some(0);
        [
            self.release.deadline(),
            self.round_done_ready_ns(),
            self.liveness.deadline(),
            hb,
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

#[cfg(test)]
mod tests;
