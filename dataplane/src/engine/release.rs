//! Release gossip and round abandonment: the data plane's half of "one outcome per round".
//!
//! A round *completes* at a node when it holds every final value and every send was
//! acknowledged. With [`EngineConfig::release_gossip`](super::EngineConfig) on, completing
//! is not enough to hand the result over: the node tells every other member
//! (`RoundDone{epoch, round}`, [`PacketKind::RoundDone`]) and *releases* the round
//! ([`EngineEvent::RoundReleased`]) only once it completed it **and** heard RoundDone from
//! every member. So if any node released round r, every member had completed r, and every
//! survivor can release r too: a coordinator that freezes a round after a crash
//! ([`Engine::freeze_round`]) sees either no release anywhere or a full result everywhere it
//! matters, and can decide one outcome for all.
//!
//! Reliability: *resent until seen*, not acknowledged like data. A completed node announces
//! once to everyone, then every `release_resend_ns` re-asks ([`RoundDoneRole::Resend`]) only
//! the members it has not heard from; a member that completed answers a re-ask
//! ([`RoundDoneRole::Answer`]), also for the round it released last. No sequence space,
//! window or per-message state beyond one bit per member: the messages are idempotent, a
//! lost one costs one resend interval, and a lossless round costs exactly one datagram per
//! ordered pair of members.
//!
//! Routing: RoundDone goes to a member directly when a link leads there, otherwise hop by
//! hop along shortest paths over the topology's links (every node computes the same next
//! hops, so forwarding converges; TTL bounds it). Relays forward it like any datagram.
//!
//! [`Engine::abort_round`] abandons the round in flight (or a completed, unreleased one): it
//! frees the round's sends, never completes or releases it afterwards, counts its late
//! packets, and restarts every path's sequence space under the next (newer) epoch, which
//! the next round must run under.

use super::path::Paths;
use super::{Engine, EngineError, EngineEvent, Transmit};
use crate::topology::Topology;
use crate::wire::{self, HeaderRepr, Packet, PacketKind, RoundDoneRepr, RoundDoneRole};
use crate::{Nanos, NodeId};
use std::collections::VecDeque;

/// Where a round stands at this node, for a coordinator deciding its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoundStatus {
    /// Released here: the result was (or may be) handed over.
    Released,
    /// Every final value is here and every send acknowledged, not released (yet).
    Completed,
    /// Running, or abandoned: this node has no full result.
    Incomplete,
}

/// The release gossip's state: about the newest round started here.
#[derive(Debug)]
pub(crate) struct Release {
    enabled: bool,
    resend_ns: Nanos,
    me: NodeId,
    /// Round and epoch the state below is about (the newest started here).
    round: Option<(u32, u32)>,
    completed: bool,
    released: bool,
    /// A coordinator froze the round: it is released only by [`Engine::release_frozen`].
    frozen: bool,
    /// Frozen before it completed here (answered "incomplete"): this node's RoundDone is
    /// withheld from then on, so no member can release the round on its own afterwards
    /// and the coordinator's "failed" stays the only outcome.
    withheld: bool,
    /// Per node: its buffer takes part in the active policy's rounds (issue 19: a policy
    /// over the survivors leaves lost nodes out of the gossip too).
    member: Vec<bool>,
    member_count: usize,
    aborted: bool,
    /// Per node: heard its RoundDone for `round`.
    seen: Vec<bool>,
    seen_count: usize,
    /// The newest round released here (answers re-asks for it after the next one started).
    last_released: Option<(u32, u32)>,
    /// Per node: the RoundDone waiting to leave for it (one at a time: a newer one replaces
    /// it, the re-ask timer recovers anything replaced).
    pending: Vec<Option<(u32, u32, RoundDoneRole)>>,
    pending_count: usize,
    /// When the members not heard from are re-asked (`Nanos::MAX`: not armed).
    resend_at: Nanos,
    /// Per destination: the neighbour a RoundDone leaves through (shortest path over the
    /// topology's links; `NodeId::MAX` when unreachable).
    next_hop: Vec<NodeId>,
    /// Packets (data and acks) of older epochs are dropped: set by an abort, whose next
    /// epoch restarts every sequence space.
    epoch_floor: u32,
    /// Paths are rebuilt at the next activation (after an abort).
    paths_reset: bool,
}

impl Release {
    pub fn new(enabled: bool, resend_ns: Nanos, me: NodeId, topo: &Topology) -> Self {
        let n = topo.node_count();
        Self {
            enabled,
            resend_ns,
            me,
            round: None,
            completed: false,
            released: false,
            frozen: false,
            withheld: false,
            member: vec![true; n],
            member_count: n,
            aborted: false,
            seen: vec![false; n],
            seen_count: 0,
            last_released: None,
            pending: vec![None; n],
            pending_count: 0,
            resend_at: Nanos::MAX,
            next_hop: shortest_next_hops(topo, me),
            epoch_floor: 0,
            paths_reset: false,
        }
    }

    fn members_heard(&self) -> bool {
        self.seen_count + 1 >= self.member_count
    }

    fn queue(&mut self, to: NodeId, msg: (u32, u32, RoundDoneRole)) {
        let slot = &mut self.pending[to as usize];
        if slot.is_none() {
            self.pending_count += 1;
        }
        *slot = Some(msg);
    }

    /// Whether `node` takes part in the active policy's rounds.
    #[inline]
    pub fn is_member(&self, node: NodeId) -> bool {
        self.member.get(node as usize).copied().unwrap_or(false)
    }

    /// Data and acks of epochs below this are left over from an aborted round.
    #[inline]
    pub fn epoch_floor(&self) -> u32 {
        self.epoch_floor
    }

    /// The next deadline of the re-ask timer.
    pub fn deadline(&self) -> Option<Nanos> {
        (self.resend_at != Nanos::MAX).then_some(self.resend_at)
    }

    /// Something waits to be sent.
    #[inline]
    pub fn has_pending(&self) -> bool {
        self.pending_count > 0
    }
}

/// Per destination, the first hop of a shortest path from `me` over `topo`'s links (ties to
/// the lowest node id, so every node picks the same paths); `NodeId::MAX` if unreachable.
fn shortest_next_hops(topo: &Topology, me: NodeId) -> Vec<NodeId> {
    let n = topo.node_count();
    let mut out = vec![NodeId::MAX; n];
    let mut dist = vec![usize::MAX; n];
    let mut queue = VecDeque::new();
    dist[me as usize] = 0;
    out[me as usize] = me;
    queue.push_back(me);
    while let Some(u) = queue.pop_front() {
        let mut next: Vec<NodeId> = topo
            .links
            .iter()
            .filter(|l| l.from == u)
            .map(|l| l.to)
            .collect();
        next.sort_unstable();
        for v in next {
            if dist[v as usize] == usize::MAX {
                dist[v as usize] = dist[u as usize] + 1;
                out[v as usize] = if u == me { v } else { out[u as usize] };
                queue.push_back(v);
            }
        }
    }
    out
}

impl Engine {
    // -- status and decisions (the coordinator's side) ------------------------------------

    /// Where `round` stands here; `None` if it is not the newest round started here (or the
    /// one released before it, which is `Released`).
    pub fn round_status(&self, round: u32) -> Option<RoundStatus> {
        let r = &self.release;
        match r.round {
            Some((cur, _)) if cur == round => Some(if r.aborted {
                RoundStatus::Incomplete
            } else if r.released || (!r.enabled && !self.round.active) {
                RoundStatus::Released
            } else if r.completed {
                RoundStatus::Completed
            } else {
                RoundStatus::Incomplete
            }),
            _ if r.last_released.is_some_and(|(q, _)| q == round) => Some(RoundStatus::Released),
            _ => None,
        }
    }

    /// Whether `node`'s buffer takes part in the rounds of the active policy (every node
    /// before the first activation).
    pub fn is_member(&self, node: NodeId) -> bool {
        self.release.is_member(node)
    }

    /// Stops `round` from being released on its own (a coordinator is deciding its outcome)
    /// and says where it stands. A round already released stays released. `None`: not
    /// started here — the caller must then not start it while the freeze lasts.
    pub fn freeze_round(&mut self, round: u32) -> Option<RoundStatus> {
        let status = self.round_status(round)?;
        if self.release.round.is_some_and(|(cur, _)| cur == round) {
            self.release.frozen = true;
            if status == RoundStatus::Incomplete {
                self.release.withheld = true;
            }
        }
        Some(status)
    }

    /// The coordinator decided that `round` succeeded: releases it if it completed here
    /// (returns whether it is released now).
    pub fn release_frozen(&mut self, now: Nanos, round: u32) -> bool {
        match self.round_status(round) {
            Some(RoundStatus::Released) => true,
            Some(RoundStatus::Completed) => {
                self.release.frozen = false;
                self.mark_released(now);
                true
            }
            _ => false,
        }
    }

    /// Abandons `round` — the newest round started here, unless it was released, or a
    /// round not started here yet (which then never starts): frees its sends and held
    /// packets, never completes or releases it afterwards, drops (and counts) its late
    /// packets, and restarts every path's sequence space at the next policy, which must be
    /// of a newer epoch (every survivor of the round aborts it alike).
    pub fn abort_round(&mut self, round: u32) -> Result<(), EngineError> {
        let refuse = |why: String| Err(EngineError::RoundOrder { round, why });
        let epoch = match self.release.round {
            Some((cur, epoch)) if cur == round => {
                if self.release.aborted {
                    return Ok(());
                }
                if self.round_status(round) == Some(RoundStatus::Released) {
                    return refuse("it was released here and cannot be aborted".into());
                }
                epoch
            }
            _ if self.round.last.is_some_and(|last| round <= last) => {
                return refuse("an older round than the newest started here".into());
            }
            _ if self.round.active => {
                return refuse(format!("round {} is running here", self.round.round));
            }
            // Never started here: it never will be.
            _ => {
                let epoch = self.epoch().unwrap_or(0);
                self.release_on_start(round, epoch);
                self.round.last = Some(round);
                epoch
            }
        };
        self.round.active = false;
        self.early.clear();
        // Every send of the round (queued, in flight, to retransmit) goes: the paths are
        // rebuilt, with fresh sequence spaces, when the next epoch activates.
        self.paths = Paths::default();
        self.release.paths_reset = true;
        self.release.epoch_floor = epoch.saturating_add(1);
        self.release.aborted = true;
        self.release.resend_at = Nanos::MAX;
        for slot in &mut self.release.pending {
            if slot.is_some_and(|(q, _, _)| q == round) {
                *slot = None;
                self.release.pending_count -= 1;
            }
        }
        self.events.retain(|e| match *e {
            EngineEvent::ResultReady { round: q, .. }
            | EngineEvent::RoundComplete { round: q, .. }
            | EngineEvent::RoundReleased { round: q, .. } => q != round,
        });
        self.counters.rounds_aborted += 1;
        Ok(())
    }

    // -- hooks called from `mod.rs` -------------------------------------------------------

    /// Before `round` starts: the previous round must be released or aborted here, and after
    /// an abort the policy it runs under (`epoch`) must be newer than the aborted one.
    pub(super) fn release_check_start(&self, round: u32, epoch: u32) -> Result<(), EngineError> {
        let r = &self.release;
        if r.aborted && epoch < r.epoch_floor {
            return Err(EngineError::AwaitingEpoch {
                round,
                aborted: r.round.map_or(0, |x| x.0),
                epoch: r.epoch_floor - 1,
            });
        }
        if r.enabled && !r.aborted && r.round.is_some() && !r.released {
            return Err(EngineError::RoundOrder {
                round,
                why: format!("round {} is not released yet", r.round.map_or(0, |x| x.0)),
            });
        }
        Ok(())
    }

    /// A policy activates: after an abort, every path starts afresh.
    pub(super) fn release_on_activate(&mut self, policy: &crate::policy::Policy) {
        if std::mem::take(&mut self.release.paths_reset) {
            self.paths = Paths::default();
        }
        let r = &mut self.release;
        for (v, m) in r.member.iter_mut().enumerate() {
            *m = policy.is_member(v as NodeId);
        }
        r.member_count = policy.member_count();
    }

    /// `round` started under `epoch`.
    pub(super) fn release_on_start(&mut self, round: u32, epoch: u32) {
        let r = &mut self.release;
        if r.released {
            r.last_released = r.round;
        }
        r.round = Some((round, epoch));
        r.completed = false;
        r.released = false;
        r.frozen = false;
        r.withheld = false;
        r.aborted = false;
        r.seen.fill(false);
        r.seen_count = 0;
        r.resend_at = Nanos::MAX;
    }

    /// The running round completed here (after `RoundComplete` was queued).
    pub(super) fn release_on_complete(&mut self, now: Nanos) {
        let r = &mut self.release;
        r.completed = true;
        if !r.enabled {
            return;
        }
        let (round, epoch) = r.round.expect("a round ran");
        if r.withheld {
            return;
        }
        for v in 0..r.seen.len() as NodeId {
            if v != r.me && r.member[v as usize] {
                r.queue(v, (round, epoch, RoundDoneRole::Announce));
            }
        }
        r.resend_at = now + r.resend_ns;
        self.try_release(now);
    }

    fn try_release(&mut self, now: Nanos) {
        let r = &self.release;
        if r.completed && !r.released && !r.frozen && !r.aborted && r.members_heard() {
            self.mark_released(now);
        }
    }

    fn mark_released(&mut self, now: Nanos) {
        let r = &mut self.release;
        r.released = true;
        r.resend_at = Nanos::MAX;
        let (round, epoch) = r.round.expect("a round ran");
        self.counters.rounds_released += 1;
        if r.enabled {
            self.events.push_back(EngineEvent::RoundReleased {
                round,
                epoch,
                at: now,
            });
        }
    }

    /// The re-ask timer: members not heard from are asked again.
    pub(super) fn release_on_timeout(&mut self, now: Nanos) {
        let r = &mut self.release;
        if now < r.resend_at {
            return;
        }
        r.resend_at = Nanos::MAX;
        if !r.completed || r.released || r.aborted {
            return;
        }
        let (round, epoch) = r.round.expect("a round ran");
        for v in 0..r.seen.len() {
            if v != r.me as usize && !r.seen[v] && r.member[v] {
                r.queue(v as NodeId, (round, epoch, RoundDoneRole::Resend));
            }
        }
        r.resend_at = now + r.resend_ns;
    }

    /// A RoundDone addressed here (MAC, job and payload type already checked).
    // Never: once per member per round; kept out of `handle_packet`'s hot body.
    #[inline(never)]
    pub(super) fn on_round_done(&mut self, now: Nanos, pkt: &Packet<&[u8]>) {
        let Ok(done) = RoundDoneRepr::parse(pkt.payload()) else {
            self.counters.rx_malformed += 1;
            return;
        };
        let from = pkt.src();
        let r = &mut self.release;
        if !r.enabled || from == r.me || !r.member.get(from as usize).copied().unwrap_or(false) {
            self.counters.rx_invalid += 1;
            return;
        }
        self.counters.rx_round_done += 1;
        let msg = (pkt.round(), pkt.epoch());
        if r.round == Some(msg) {
            if r.aborted {
                self.counters.rx_aborted_round += 1;
                return;
            }
            if !r.seen[from as usize] {
                r.seen[from as usize] = true;
                r.seen_count += 1;
            }
            if done.role == RoundDoneRole::Resend && r.completed && !r.withheld {
                r.queue(from, (msg.0, msg.1, RoundDoneRole::Answer));
            }
            self.try_release(now);
        } else if r.last_released == Some(msg) {
            if done.role == RoundDoneRole::Resend {
                r.queue(from, (msg.0, msg.1, RoundDoneRole::Answer));
            }
        } else if r.round.is_some_and(|(q, _)| q == msg.0) {
            // The round this node runs, under another epoch.
            self.counters.rx_stale_epoch += 1;
        } else if r.round.is_some_and(|(q, _)| msg.0 < q) {
            // An older round (re-asked after it was released or abandoned here).
            self.counters.rx_stale_round += 1;
        } else {
            // A round this node neither runs nor released last: nothing can complete it
            // without this node, so it is forged or very late.
            self.counters.rx_invalid += 1;
        }
    }

    /// A datagram for another node: RoundDone is forwarded along the topology's shortest
    /// paths, heartbeats are for neighbours only, everything else goes to the route relay.
    pub(super) fn relay_datagram(&mut self, pkt: &Packet<&[u8]>, data: &[u8]) {
        let me = self.cfg.node;
        match pkt.kind() {
            PacketKind::RoundDone => {
                let next = self
                    .release
                    .next_hop
                    .get(pkt.dst() as usize)
                    .copied()
                    .unwrap_or(NodeId::MAX);
                if next == NodeId::MAX || next == me {
                    self.counters.rx_invalid += 1;
                    return;
                }
                self.relay.forward(next, pkt, data, &mut self.counters);
            }
            PacketKind::Heartbeat => self.counters.rx_invalid += 1,
            _ => self.relay.accept(me, pkt, data, &mut self.counters),
        }
    }

    /// Writes the next RoundDone waiting for a member whose first link is free.
    // Never: a few datagrams per round.
    #[inline(never)]
    pub(super) fn send_round_done(&mut self, now: Nanos, out: &mut [u8]) -> Option<Transmit> {
        let burst = self.cfg.pacing_burst_ns;
        for to in 0..self.release.pending.len() {
            let Some((round, epoch, role)) = self.release.pending[to] else {
                continue;
            };
            let next = self.release.next_hop[to];
            if next == NodeId::MAX {
                // Unreachable over the topology: nothing to send it through.
                self.release.pending[to] = None;
                self.release.pending_count -= 1;
                self.counters.tx_round_done_unroutable += 1;
                continue;
            }
            if self.links[next as usize].next_ns() > now + burst {
                continue;
            }
            self.release.pending[to] = None;
            self.release.pending_count -= 1;
            let hdr = HeaderRepr {
                kind: PacketKind::RoundDone,
                flags: self.protect.sealer.flags(),
                payload_len: wire::ROUND_DONE_PAYLOAD_LEN as u16,
                job: self.cfg.job,
                epoch,
                round,
                src: self.cfg.node,
                dst: to as NodeId,
                ttl: u8::try_from(self.cfg.node_count).unwrap_or(u8::MAX),
                timestamp_ns: now,
                payload_type: self.cfg.wire,
                ..HeaderRepr::default()
            };
            hdr.emit(out).ok()?;
            RoundDoneRepr { role }
                .emit(&mut out[wire::HEADER_LEN..])
                .ok()?;
            let body_len = wire::HEADER_LEN + wire::ROUND_DONE_PAYLOAD_LEN;
            let len = self.protect.sealer.seal(out, body_len);
            self.pace_link(now, next, len);
            self.counters.tx_round_done += 1;
            self.counters.tx_bytes += len as u64;
            return Some(Transmit {
                next_hop: next,
                len,
            });
        }
        None
    }

    /// Earliest time a waiting RoundDone's first link is free (for `poll_timeout`).
    pub(super) fn round_done_ready_ns(&self) -> Option<Nanos> {
        if !self.release.has_pending() {
            return None;
        }
        let burst = self.cfg.pacing_burst_ns;
        self.release
            .pending
            .iter()
            .enumerate()
            .filter(|(_, p)| p.is_some())
            .filter_map(|(to, _)| {
                let next = self.release.next_hop[to];
                (next != NodeId::MAX)
                    .then(|| self.links[next as usize].next_ns().saturating_sub(burst))
            })
            .min()
            .or(Some(0))
    }
}

#[cfg(test)]
mod tests;
