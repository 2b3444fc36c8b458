//! What travels between the processes of a node and the coordinator.
//!
//! * cp ↔ coordinator: [`Wire`] frames over TCP, length-prefixed (u32 big-endian)
//!   `serde_json`. Everything but the connection's [`Wire::Hello`] is a
//!   [`netstorm_controlplane::coordinator::ControlMsg`]: the project's two-phase epoch
//!   protocol (Prepare / PrepareAck / PrepareNack / Commit / CommitAck / Abort / AbortAck),
//!   heartbeats with the newest round started, and link telemetry. The cp runs a
//!   [`netstorm_controlplane::coordinator::NodeAgent`], the coordinator's cp a
//!   [`netstorm_controlplane::coordinator::Coordinator`]; see `bin/netstorm-cp.rs`.
//! * dp → cp: peer silences (how long ago any datagram came from each node) as *peer
//!   records* ([`peer_record`]) every report interval, and link-rate estimates on the
//!   shared-memory telemetry ring, as
//!   [`TelemetryRecord`]s in the node crate's *link record* convention
//!   ([`link_record`] / [`parse_link_record`]).
//!
//! Rate estimates on real hosts come from the data: each worker's engine measures per-path
//! delivery rates over windows of at least one RTT ([`netstorm_dataplane::engine::RateSample`]),
//! and a sample not limited by the application says how fast the path went while it had
//! data queued. A worker polls them every couple of milliseconds while a round runs and sums,
//! per outgoing link, the fresh samples of every path leaving over it: the link's throughput
//! while those paths were backlogged. The best sum of a report interval is the estimate,
//! capped at the rate the policy assumed (senders never pace faster, so a faster link cannot
//! be seen without probes, and a token bucket's burst would overshoot). It is the link's
//! capacity only if a queue stood on the link meanwhile (a direct path's one-way delay rose);
//! otherwise the senders' pace set it (a back-off, a relay fed by a slower link, acks
//! delayed by a queue on the way back) and it is sent as a lower bound, which the
//! coordinator's estimator lets raise an estimate but never lower it.
//! The engine's packet-train probes are not used as a rate source here: over kernel UDP the
//! driver reads the clock once per receive batch, so a train that arrives within one batch
//! has no measurable dispersion, and a tbf/policer's burst lets a whole idle-time train
//! through at line rate (see docs/real-hosts.md).

use netstorm_controlplane::coordinator::ControlMsg;
use netstorm_dataplane::shm_records::TelemetryRecord;
use netstorm_dataplane::NodeId;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};

/// One frame on a cp ↔ coordinator connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Wire {
    /// cp → coordinator, first on every connection: who this is and what its dp holds (a
    /// restarted coordinator starts its epochs past every epoch a node holds or waits for).
    Hello {
        node: NodeId,
        installed_epoch: u32,
        /// Newest round started at the node (`None` before the first).
        started_round: Option<u32>,
        /// Epoch a start barrier of the node waits for, if one is set.
        barrier_epoch: Option<u32>,
    },
    Control(ControlMsg),
}

/// Largest message accepted (a policy of a big cluster is a few hundred KB of JSON).
pub const MAX_MSG_LEN: usize = 16 << 20;

pub fn write_msg(w: &mut impl Write, msg: &Wire) -> std::io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    w.write_all(&frame)
}

pub fn read_msg(r: &mut impl Read) -> std::io::Result<Wire> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_MSG_LEN {
        return Err(std::io::Error::other(format!(
            "control message of {len} bytes exceeds {MAX_MSG_LEN}"
        )));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    serde_json::from_slice(&body).map_err(std::io::Error::other)
}

/// Marks a [`TelemetryRecord`] as a link record: `path = LINK_RECORD | to`.
pub const LINK_RECORD: u16 = 0x8000;

/// A link-rate estimate of `from → to` measured at `from`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkEstimate {
    pub from: NodeId,
    pub to: NodeId,
    /// Estimated link rate, bits per second.
    pub bps: f64,
    /// Smoothed RTT of a direct route over the link (0 = unknown).
    pub rtt_ns: u64,
    /// The dp's clock (shared by its workers).
    pub at: u64,
    /// Epoch and round the estimate was taken under.
    pub epoch: u32,
    pub round: u64,
    /// No queue was seen on the link while it was measured: it is at least this fast
    /// (the senders' pace), not necessarily no faster.
    pub lower_bound: bool,
}

/// In a link record's `losses` field: the estimate is a [`LinkEstimate::lower_bound`].
pub const LINK_LOWER_BOUND: u32 = 1;

/// Encodes a link estimate as a telemetry record: `node = from`, `path = LINK_RECORD | to`,
/// `delivered_bytes` = bytes per second over `interval_ns` = 1 s, `timestamp_ns = at`,
/// `losses` = flags ([`LINK_LOWER_BOUND`]).
pub fn link_record(e: &LinkEstimate) -> TelemetryRecord {
    TelemetryRecord {
        node: e.from,
        path: LINK_RECORD | (e.to & !LINK_RECORD),
        epoch: e.epoch,
        round: e.round,
        delivered_bytes: (e.bps / 8.0).round().max(0.0) as u64,
        interval_ns: 1_000_000_000,
        rtt_ns: e.rtt_ns,
        losses: if e.lower_bound { LINK_LOWER_BOUND } else { 0 },
        timestamp_ns: e.at,
    }
}

/// Decodes a link record; `None` for other records or an impossible interval.
pub fn parse_link_record(r: &TelemetryRecord) -> Option<LinkEstimate> {
    if r.path & LINK_RECORD == 0 || r.interval_ns == 0 {
        return None;
    }
    Some(LinkEstimate {
        from: r.node,
        to: r.path & !LINK_RECORD,
        bps: r.delivered_bytes as f64 * 8.0 * 1e9 / r.interval_ns as f64,
        rtt_ns: r.rtt_ns,
        at: r.timestamp_ns,
        epoch: r.epoch,
        round: r.round,
        lower_bound: r.losses & LINK_LOWER_BOUND != 0,
    })
}

/// Marks a [`TelemetryRecord`] as a peer record: `path = PEER_RECORD | peer` (never with
/// [`LINK_RECORD`], so a link-record reader skips it).
pub const PEER_RECORD: u16 = 0x4000;

/// How long ago the data plane of `node` last heard from `peer` (any datagram of any
/// worker, heartbeats included), as of `at` (the dp's clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerSilence {
    pub node: NodeId,
    pub peer: NodeId,
    /// `None`: never heard.
    pub silence_ns: Option<u64>,
    pub at: u64,
}

/// Encodes a peer's silence: `node`, `path = PEER_RECORD | peer`, `interval_ns` = the
/// silence (`u64::MAX`: never heard), `timestamp_ns = at`; everything else zero.
pub fn peer_record(p: &PeerSilence) -> TelemetryRecord {
    TelemetryRecord {
        node: p.node,
        path: PEER_RECORD | (p.peer & !(PEER_RECORD | LINK_RECORD)),
        interval_ns: p.silence_ns.unwrap_or(u64::MAX),
        timestamp_ns: p.at,
        ..TelemetryRecord::default()
    }
}

/// Decodes a peer record; `None` for other records.
pub fn parse_peer_record(r: &TelemetryRecord) -> Option<PeerSilence> {
    if r.path & LINK_RECORD != 0 || r.path & PEER_RECORD == 0 {
        return None;
    }
    Some(PeerSilence {
        node: r.node,
        peer: r.path & !PEER_RECORD,
        silence_ns: (r.interval_ns != u64::MAX).then_some(r.interval_ns),
        at: r.timestamp_ns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let m = Wire::Control(ControlMsg::Heartbeat { node: 2, round: 9 });
        let mut buf = Vec::new();
        write_msg(&mut buf, &m).unwrap();
        assert_eq!(read_msg(&mut &buf[..]).unwrap(), m);
        let mut bad = 5u32.to_be_bytes().to_vec();
        bad.extend_from_slice(b"{{{{{");
        assert!(read_msg(&mut &bad[..]).is_err());
        let huge = u32::MAX.to_be_bytes();
        assert!(read_msg(&mut &huge[..]).is_err());
    }

    #[test]
    fn link_records_round_trip_and_path_records_are_not_links() {
        let e = LinkEstimate {
            from: 1,
            to: 2,
            bps: 40e6,
            rtt_ns: 1_500_000,
            at: 77,
            epoch: 3,
            round: 12,
            lower_bound: false,
        };
        let r = TelemetryRecord::parse(&link_record(&e).to_bytes()).unwrap();
        assert_eq!(parse_link_record(&r), Some(e));
        let floor = LinkEstimate {
            lower_bound: true,
            ..e
        };
        let r2 = TelemetryRecord::parse(&link_record(&floor).to_bytes()).unwrap();
        assert_eq!(parse_link_record(&r2), Some(floor));
        let path = TelemetryRecord {
            path: 3,
            interval_ns: 5,
            ..r
        };
        assert_eq!(parse_link_record(&path), None);
        assert_eq!(parse_peer_record(&path), None);
        assert_eq!(
            parse_peer_record(&r),
            None,
            "a link record is no peer record"
        );
    }

    #[test]
    fn peer_records_round_trip_and_are_not_links() {
        for silence_ns in [Some(0), Some(150_000_000), None] {
            let p = PeerSilence {
                node: 2,
                peer: 5,
                silence_ns,
                at: 99,
            };
            let r = TelemetryRecord::parse(&peer_record(&p).to_bytes()).unwrap();
            assert_eq!(parse_peer_record(&r), Some(p));
            assert_eq!(parse_link_record(&r), None);
        }
    }
}
