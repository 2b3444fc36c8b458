//! The engine's tunables ([`EngineConfig`]) and the errors of its API ([`EngineError`]).

use crate::policy::{PathId, PolicyError};
use crate::probe::ProbeConfig;
use crate::protect::Protection;
use crate::wire::{self, PayloadType};
use crate::{Nanos, NodeId, NANOS_PER_SEC};

/// The early pool's bound before a policy sizes it, and its floor, with `early_packets = 0`.
pub const AUTO_EARLY_PACKETS_FLOOR: usize = 4096;

/// Tunables of one engine. Defaults suit a WAN with 1500-byte MTU.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// This node.
    pub node: NodeId,
    pub node_count: u16,
    /// Job id carried in every packet; packets of other jobs are dropped.
    pub job: u32,
    /// Number of f32 elements in the gradient buffer.
    pub buffer_elems: usize,
    /// Elements per segment. Default 348 (1392 bytes: with our 64-byte header and the 16-byte
    /// tag a 1472-byte datagram, a 1500-byte IP MTU); 696 for the 16-bit payload types (see [`EngineConfig::set_wire`]).
    pub segment_elems: usize,
    /// Payload type of data packets (default f32). Nodes aggregate in f32 whatever it is;
    /// packets of another type are dropped and counted (`Counters::rx_wrong_payload`).
    pub wire: PayloadType,
    /// Bytes per frame on the wire besides the datagram (for pacing).
    pub frame_overhead_bytes: usize,
    /// Acknowledge after this many data packets on a path...
    pub ack_every: u32,
    /// ...or after this delay, whichever comes first.
    pub ack_delay_ns: Nanos,
    /// In-flight window per path, packets (rounded up to a power of two).
    pub max_inflight: usize,
    /// Pacing rate for links the policy gives no rate for, bits/s.
    pub default_rate_bps: f64,
    /// How far ahead of its pacing schedule a frame may leave. One poll of a fast link then
    /// moves a batch of frames instead of one (at 100 Gbit/s a 1 KiB frame is 90 ns, far
    /// less than a poll loop); below about 600 Mbit/s the default is less than one frame,
    /// so WAN-rate pacing is unchanged. The long-run rate is unaffected. Default 20 us.
    pub pacing_burst_ns: Nanos,
    /// Retransmission timeout bounds.
    pub min_rto_ns: Nanos,
    pub max_rto_ns: Nanos,
    /// The RTO before a path's first RTT sample when the topology does not know the route's
    /// latency (a link with latency 0, as in a node file without `latency_ms`); otherwise the
    /// RTT estimator is seeded from the latencies: 3x the propagation RTT (RFC 9002).
    /// Default 200 ms. RFC 6298's 1 s was tried: on paper9-static100 (latencies 0) it made
    /// the fan-in baselines' first rounds wait on it (mxnet-ps 36.2 -> 40.1 s with another
    /// change); set it higher where unknown routes may be long.
    pub initial_rto_ns: Nanos,
    /// Packets of the next round that may be held before that round starts. 0 (the
    /// default): sized per policy from the packets addressed to this node in one round, at
    /// least [`AUTO_EARLY_PACKETS_FLOOR`] (see `engine::early`); any other value is the
    /// exact bound.
    pub early_packets: usize,
    /// Datagrams a relay may hold while its outgoing link is busy.
    pub relay_packets: usize,
    /// Loss fraction a path tolerates before it treats losses as congestion (WAN links
    /// drop packets at random; queueing delay stays the main congestion signal). Default
    /// 0.02, BBRv2's loss threshold.
    pub loss_tolerance: f64,
    /// Packet protection (see [`crate::protect`]). Default: `encrypt` with the public
    /// job-derived keys (emulator, tests); real hosts set a secret; off only if set so.
    pub protection: Protection,
    /// Run identifier mixed into the traffic keys: packets of another run do not open.
    /// Default 0 (set from the node config's `run_id`, when the control plane hands one).
    pub run_id: u64,
    /// This engine's `sender_start` (selects its traffic keys; must grow across restarts of
    /// one node in a run). `None` (default): [`crate::protect::new_sender_start`] at
    /// construction; emulated runs may fix it for byte-identical traces.
    pub sender_start: Option<u64>,
    /// Active capacity probes on every outgoing link (see [`crate::probe`]).
    pub probe: ProbeConfig,
    /// Release gossip (see the engine's `release` module): a completed round is released
    /// ([`super::EngineEvent::RoundReleased`]) only once every member said it completed it
    /// too. Off by default (the emulated comparisons hand results over at completion); real
    /// hosts and the fault suite turn it on.
    pub release_gossip: bool,
    /// How often a completed, unreleased round re-asks the members it has not heard from.
    /// Default 20 ms.
    pub release_resend_ns: Nanos,
    /// Idle heartbeats: a neighbour the link to which carried nothing for this long gets an
    /// empty Heartbeat datagram. `None` (default): none.
    pub heartbeat_ns: Option<Nanos>,
}

impl EngineConfig {
    pub fn new(node: NodeId, node_count: u16, buffer_elems: usize) -> Self {
        Self {
            node,
            node_count,
            job: 1,
            buffer_elems,
            segment_elems: 348,
            wire: PayloadType::F32,
            frame_overhead_bytes: wire::FRAME_OVERHEAD_BYTES,
            ack_every: 16,
            ack_delay_ns: 500_000,
            max_inflight: 1 << 16,
            default_rate_bps: 1e9,
            pacing_burst_ns: 20_000,
            min_rto_ns: 5_000_000,
            max_rto_ns: 2 * NANOS_PER_SEC,
            initial_rto_ns: 200_000_000,
            early_packets: 0,
            relay_packets: 4096,
            protection: Protection::default(),
            run_id: 0,
            sender_start: None,
            probe: ProbeConfig::default(),
            loss_tolerance: 0.02,
            release_gossip: false,
            release_resend_ns: 20_000_000,
            heartbeat_ns: None,
        }
    }

    /// Payload bytes of a full data segment.
    pub fn segment_bytes(&self) -> usize {
        self.segment_elems * self.wire.elem_bytes()
    }

    /// Sets the payload type, keeping the segment's payload bytes (352 f32 elements become
    /// 704 bf16 ones: the same datagram carries twice the elements).
    pub fn set_wire(&mut self, wire: PayloadType) {
        let bytes = self.segment_bytes();
        self.wire = wire;
        self.segment_elems = wire.elems_per_segment(bytes);
    }

    /// Bytes a full data segment occupies on the wire (payload + header + tag + frame overhead).
    pub fn frame_bytes(&self) -> usize {
        self.segment_bytes()
            + wire::HEADER_LEN
            + self.protection.tag_len()
            + self.frame_overhead_bytes
    }

    /// Largest datagram this engine emits or accepts for data.
    pub fn max_datagram_len(&self) -> usize {
        wire::HEADER_LEN + self.segment_bytes() + wire::AUTH_TAG_LEN
    }

    /// Rejects values that cannot work.
    pub fn validate(&self) -> Result<(), EngineError> {
        let bad = |field: &'static str, why: String| Err(EngineError::Config { field, why });
        if self.node >= self.node_count {
            return bad(
                "node",
                format!("{} is not below node_count {}", self.node, self.node_count),
            );
        }
        if self.segment_elems == 0
            || wire::HEADER_LEN + self.segment_bytes() > wire::MAX_DATAGRAM_LEN - wire::AUTH_TAG_LEN
        {
            return bad(
                "segment_elems",
                format!("{} does not fit one datagram", self.segment_elems),
            );
        }
        if self.ack_every == 0 {
            return bad("ack_every", "must be at least 1".into());
        }
        if self.max_inflight < 16 || self.max_inflight > (1 << 24) {
            return bad(
                "max_inflight",
                format!("{} is outside 16..=16777216", self.max_inflight),
            );
        }
        if !(self.default_rate_bps.is_finite() && self.default_rate_bps > 0.0) {
            return bad(
                "default_rate_bps",
                format!("{} is not a positive rate", self.default_rate_bps),
            );
        }
        if self.pacing_burst_ns > NANOS_PER_SEC / 10 {
            return bad(
                "pacing_burst_ns",
                format!(
                    "{} ns is more than 100 ms: pacing would no longer pace",
                    self.pacing_burst_ns
                ),
            );
        }
        if !(0.0..=1.0).contains(&self.loss_tolerance) {
            return bad(
                "loss_tolerance",
                format!("{} is not a fraction in 0..=1", self.loss_tolerance),
            );
        }
        if let Err(why) = self.probe.validate() {
            return bad("probe", why);
        }
        if self.release_resend_ns == 0 {
            return bad("release_resend_ns", "must be positive".into());
        }
        if self.heartbeat_ns == Some(0) {
            return bad("heartbeat_ns", "must be positive (or None: off)".into());
        }
        if self.min_rto_ns == 0 || self.min_rto_ns > self.max_rto_ns {
            return bad(
                "min_rto_ns",
                "must be positive and at most max_rto_ns".into(),
            );
        }
        Ok(())
    }
}

/// Errors of the engine's API (never of packet handling: bad packets are counted and dropped).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    #[error("engine config: {field}: {why}")]
    Config { field: &'static str, why: String },
    #[error("policy rejected: {0}")]
    Policy(#[from] PolicyError),
    #[error("policy epoch {new} is not newer than the installed epoch {current}")]
    StaleEpoch { new: u32, current: u32 },
    #[error("policy is for {policy} nodes, engine for {engine}")]
    NodeCount { policy: usize, engine: usize },
    #[error("no policy installed for round {0}")]
    NoPolicy(u32),
    #[error("round {round} cannot start: this node is not a member of epoch {epoch} (lost, not rejoined)")]
    NotAMember { round: u32, epoch: u32 },
    #[error("round {round} cannot start: {why}")]
    RoundOrder { round: u32, why: String },
    #[error("a new route for path {0} while packets on its old route are unacknowledged")]
    PathBusy(PathId),
    #[error("round {round} cannot start: round {aborted} was aborted under epoch {epoch}; it waits for a newer epoch")]
    AwaitingEpoch {
        round: u32,
        aborted: u32,
        epoch: u32,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(cfg: &EngineConfig) -> Option<&'static str> {
        match cfg.validate() {
            Ok(()) => None,
            Err(EngineError::Config { field, .. }) => Some(field),
            Err(e) => panic!("unexpected {e}"),
        }
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(field_of(&EngineConfig::new(0, 2, 1000)), None);
    }

    #[test]
    fn bad_values_name_their_field() {
        let base = EngineConfig::new(0, 2, 1000);
        let cases: [(&str, EngineConfig); 8] = [
            (
                "node",
                EngineConfig {
                    node: 2,
                    ..base.clone()
                },
            ),
            (
                "segment_elems",
                EngineConfig {
                    segment_elems: 0,
                    ..base.clone()
                },
            ),
            (
                "ack_every",
                EngineConfig {
                    ack_every: 0,
                    ..base.clone()
                },
            ),
            (
                "max_inflight",
                EngineConfig {
                    max_inflight: 8,
                    ..base.clone()
                },
            ),
            (
                "default_rate_bps",
                EngineConfig {
                    default_rate_bps: f64::NAN,
                    ..base.clone()
                },
            ),
            (
                "pacing_burst_ns",
                EngineConfig {
                    pacing_burst_ns: NANOS_PER_SEC,
                    ..base.clone()
                },
            ),
            (
                "loss_tolerance",
                EngineConfig {
                    loss_tolerance: 1.5,
                    ..base.clone()
                },
            ),
            (
                "min_rto_ns",
                EngineConfig {
                    min_rto_ns: 3 * NANOS_PER_SEC,
                    ..base.clone()
                },
            ),
        ];
        for (field, cfg) in cases {
            assert_eq!(field_of(&cfg), Some(field));
        }
    }

    #[test]
    fn frame_sizes_follow_segment_and_auth() {
        let mut cfg = EngineConfig::new(0, 2, 1000);
        cfg.segment_elems = 256;
        assert_eq!(
            cfg.max_datagram_len(),
            wire::HEADER_LEN + 1024 + wire::AUTH_TAG_LEN
        );
        let tagged = cfg.frame_bytes();
        cfg.protection = Protection::off();
        assert_eq!(tagged - cfg.frame_bytes(), wire::AUTH_TAG_LEN);
        assert_eq!(
            cfg.max_datagram_len(),
            wire::HEADER_LEN + 1024 + wire::AUTH_TAG_LEN
        );
    }
}
