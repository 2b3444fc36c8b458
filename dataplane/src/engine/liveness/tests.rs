//! Last-heard times and heartbeats through the engine's API.

use super::*;
use crate::engine::EngineConfig;
use crate::wire::{emit_packet, HEADER_LEN};

const MS: Nanos = 1_000_000;

fn engine(heartbeat_ns: Option<Nanos>) -> Engine {
    let topo = Topology::full_mesh(3, 1e9, MS);
    let mut cfg = EngineConfig::new(0, 3, 348);
    cfg.heartbeat_ns = heartbeat_ns;
    cfg.probe.interval_ns = 0;
    Engine::new(cfg, &topo).unwrap()
}

fn heartbeat_from(src: NodeId, sealed: bool, e: &Engine) -> Vec<u8> {
    let mut buf = vec![0u8; 128];
    let hdr = HeaderRepr {
        kind: PacketKind::Heartbeat,
        flags: e.config().protection.mode.flags(),
        job: e.config().job,
        src,
        dst: 0,
        ttl: 1,
        ..HeaderRepr::default()
    };
    let len = emit_packet(&hdr, &[], &mut buf).unwrap();
    if sealed {
        let c = e.config();
        let mut sealer = crate::protect::Sealer::new(
            &c.protection,
            c.job,
            c.run_id,
            src,
            crate::protect::new_sender_start(),
        );
        assert_eq!(sealer.seal(&mut buf, HEADER_LEN), len);
    }
    buf.truncate(len);
    buf
}

#[test]
fn only_authentic_datagrams_count_as_heard() {
    let mut e = engine(None);
    assert_eq!(e.peer_last_heard(), &[0, 0, 0]);
    e.handle_packet(5 * MS, &heartbeat_from(2, true, &e));
    assert_eq!(e.peer_last_heard(), &[0, 0, 5 * MS]);
    // A forged one (no valid tag) proves nothing about node 1.
    e.handle_packet(6 * MS, &heartbeat_from(1, false, &e));
    assert_eq!(e.peer_last_heard(), &[0, 0, 5 * MS]);
    assert_eq!(e.counters().rx_bad_mac, 1);
    assert_eq!(e.counters().rx_heartbeats, 1);
    // A node id beyond the job is counted nowhere and panics nothing.
    e.handle_packet(7 * MS, &heartbeat_from(700, true, &e));
    assert_eq!(e.peer_last_heard().len(), 3);
}

#[test]
fn heartbeats_go_to_idle_neighbours_only_when_on() {
    let mut out = vec![0u8; 2048];
    let mut off = engine(None);
    off.handle_timeout(500 * MS);
    assert!(off.poll_transmit(500 * MS, &mut out).is_none());
    assert_eq!(
        off.poll_timeout(),
        None,
        "nothing to do: no deadline at all"
    );

    let mut on = engine(Some(100 * MS));
    on.handle_timeout(500 * MS);
    let mut to = Vec::new();
    while let Some(tx) = on.poll_transmit(500 * MS, &mut out) {
        let p = crate::wire::Packet::new_checked(&out[..tx.len]).unwrap();
        assert_eq!(
            (p.kind(), p.ttl(), p.payload_len()),
            (PacketKind::Heartbeat, 1, 0)
        );
        to.push(tx.next_hop);
    }
    assert_eq!(to, [1, 2]);
    // Just sent: not idle again until the interval passed.
    on.handle_timeout(560 * MS);
    assert!(on.poll_transmit(560 * MS, &mut out).is_none());
    assert!(on.poll_timeout().is_some_and(|t| t <= 610 * MS));
    on.handle_timeout(650 * MS);
    assert!(on.poll_transmit(650 * MS, &mut out).is_some());
}

#[test]
fn a_zero_heartbeat_interval_is_refused() {
    let topo = Topology::full_mesh(3, 1e9, MS);
    let mut cfg = EngineConfig::new(0, 3, 348);
    cfg.heartbeat_ns = Some(0);
    let err = Engine::new(cfg, &topo).unwrap_err().to_string();
    assert!(err.contains("heartbeat_ns"), "{err}");
    let mut cfg = EngineConfig::new(0, 3, 348);
    cfg.release_resend_ns = 0;
    assert!(Engine::new(cfg, &topo)
        .unwrap_err()
        .to_string()
        .contains("release_resend_ns"));
}
