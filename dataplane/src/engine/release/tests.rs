//! The release gossip's packet handling and decisions, driven through the engine's API on a
//! two-node emulated pair (whole-round behaviour is in `tests/release_gossip.rs`).

use super::*;
use crate::emu::{EmuConfig, Simulation};
use crate::engine::EngineConfig;
use crate::policy::Policy;
use crate::protect::Sealer;
use crate::topology::{Link, Topology};
use crate::wire::{emit_packet, RoundDoneRepr, ROUND_DONE_PAYLOAD_LEN};

const MS: Nanos = 1_000_000;

/// The tests read the RoundDone payloads the engines send: authenticated, in clear.
fn protection() -> crate::protect::Protection {
    crate::protect::Protection::insecure(crate::protect::ProtectionMode::Authenticate)
}

/// A pair of engines (gossip as given) that ran and released (or completed) round 0.
fn pair_after_round(gossip: bool) -> Simulation {
    let topo = Topology::pair(1e9, MS);
    let engines = (0..2)
        .map(|v| {
            let mut cfg = EngineConfig::new(v, 2, 4 * 348);
            cfg.release_gossip = gossip;
            cfg.protection = protection();
            let mut e = Engine::new(cfg, &topo).unwrap();
            e.install_policy(Policy::pair(&topo, 1), 0).unwrap();
            e
        })
        .collect();
    let mut sim = Simulation::new(&topo, engines, EmuConfig::default()).unwrap();
    for v in 0..2 {
        sim.schedule_start(v, 0, 0);
    }
    if gossip {
        sim.run_round_released(0, 1_000 * MS).unwrap();
    } else {
        sim.run_round(0, 1_000 * MS).unwrap();
    }
    sim
}

/// A RoundDone datagram `src → dst` for `round`/`epoch`, payload as given, sealed with the
/// job's key unless `forge`.
fn round_done(
    src: NodeId,
    dst: NodeId,
    round: u32,
    epoch: u32,
    payload: &[u8],
    forge: bool,
) -> Vec<u8> {
    let mut cfg = EngineConfig::new(0, 2, 1);
    cfg.protection = protection();
    let mut buf = vec![0u8; 256];
    let hdr = HeaderRepr {
        kind: PacketKind::RoundDone,
        flags: cfg.protection.mode.flags(),
        job: cfg.job,
        epoch,
        round,
        src,
        dst,
        ttl: 2,
        ..HeaderRepr::default()
    };
    let len = emit_packet(&hdr, payload, &mut buf).unwrap();
    let body = len - wire::AUTH_TAG_LEN;
    if forge {
        // A forgery with a fresh-looking sender start: it must fail at the tag.
        let start = crate::protect::new_sender_start().to_be_bytes();
        buf[wire::SENDER_START_OFFSET..wire::SENDER_START_OFFSET + 8].copy_from_slice(&start);
    } else {
        let mut sealer = Sealer::new(
            &cfg.protection,
            cfg.job,
            cfg.run_id,
            src,
            crate::protect::new_sender_start(),
        );
        assert_eq!(sealer.seal(&mut buf, body), len);
    }
    buf.truncate(len);
    buf
}

fn role(r: RoundDoneRole) -> [u8; ROUND_DONE_PAYLOAD_LEN] {
    let mut p = [0u8; ROUND_DONE_PAYLOAD_LEN];
    RoundDoneRepr { role: r }.emit(&mut p).unwrap();
    p
}

#[test]
fn forged_malformed_and_misaddressed_round_done_are_counted_and_dropped() {
    let mut sim = pair_after_round(true);
    let e = sim.engine_mut(0);
    let before = *e.counters();
    let now = 10 * MS;
    let resend = role(RoundDoneRole::Resend);
    // Forged (no valid tag): dropped before anything else.
    e.handle_packet(now, &round_done(1, 0, 0, 1, &resend, true));
    // Authentic but an unknown role byte / non-zero reserved byte.
    e.handle_packet(
        now,
        &round_done(1, 0, 0, 1, &[3, 0, 0, 0, 0, 0, 0, 0], false),
    );
    e.handle_packet(
        now,
        &round_done(1, 0, 0, 1, &[1, 0, 0, 0, 0, 0, 0, 9], false),
    );
    // From itself, from a node that does not exist, for a round nobody ran.
    e.handle_packet(now, &round_done(0, 0, 0, 1, &resend, false));
    e.handle_packet(now, &round_done(9, 0, 0, 1, &resend, false));
    e.handle_packet(now, &round_done(1, 0, 40, 1, &resend, false));
    // The right round under another epoch.
    e.handle_packet(now, &round_done(1, 0, 0, 5, &resend, false));
    let c = e.counters();
    assert_eq!(c.rx_bad_mac - before.rx_bad_mac, 1);
    assert_eq!(c.rx_malformed - before.rx_malformed, 2);
    assert_eq!(c.rx_invalid - before.rx_invalid, 3);
    assert_eq!(c.rx_stale_epoch - before.rx_stale_epoch, 1);
    assert_eq!(
        c.rx_round_done - before.rx_round_done,
        2,
        "only the last two were taken"
    );
    // None of them made the engine answer.
    let mut out = vec![0u8; 2048];
    assert!(e.poll_transmit(now, &mut out).is_none());
    assert_eq!(e.round_status(0), Some(RoundStatus::Released));
}

#[test]
fn a_resend_is_answered_an_announcement_is_not() {
    let mut sim = pair_after_round(true);
    let e = sim.engine_mut(0);
    let now = 10 * MS;
    let mut out = vec![0u8; 2048];
    e.handle_packet(
        now,
        &round_done(1, 0, 0, 1, &role(RoundDoneRole::Announce), false),
    );
    assert!(e.poll_transmit(now, &mut out).is_none());
    e.handle_packet(
        now,
        &round_done(1, 0, 0, 1, &role(RoundDoneRole::Resend), false),
    );
    let tx = e.poll_transmit(now, &mut out).expect("an answer");
    assert_eq!(tx.next_hop, 1);
    let p = Packet::new_checked(&out[..tx.len]).unwrap();
    assert_eq!(
        (p.kind(), p.round(), p.epoch(), p.src(), p.dst()),
        (PacketKind::RoundDone, 0, 1, 0, 1)
    );
    assert_eq!(
        RoundDoneRepr::parse(p.payload()).unwrap().role,
        RoundDoneRole::Answer
    );
    assert!(
        e.poll_transmit(now, &mut out).is_none(),
        "one answer per resend"
    );
}

#[test]
fn gossip_off_takes_no_round_done_and_completion_is_release() {
    let mut sim = pair_after_round(false);
    let e = sim.engine_mut(0);
    let before = e.counters().rx_invalid;
    e.handle_packet(
        10 * MS,
        &round_done(1, 0, 0, 1, &role(RoundDoneRole::Resend), false),
    );
    assert_eq!(e.counters().rx_invalid, before + 1);
    assert_eq!(e.counters().tx_round_done, 0);
    assert_eq!(e.round_status(0), Some(RoundStatus::Released));
    assert_eq!(e.round_status(1), None);
}

#[test]
fn freeze_holds_a_completed_round_until_the_decision() {
    let topo = Topology::pair(1e9, MS);
    let engines = (0..2)
        .map(|v| {
            let mut cfg = EngineConfig::new(v, 2, 4 * 348);
            cfg.release_gossip = true;
            let mut e = Engine::new(cfg, &topo).unwrap();
            e.install_policy(Policy::pair(&topo, 1), 0).unwrap();
            e
        })
        .collect();
    let mut sim = Simulation::new(&topo, engines, EmuConfig::default()).unwrap();
    for v in 0..2 {
        sim.schedule_start(v, 0, 0);
    }
    // Node 1 (the root) hears nothing from 0 once it started: freeze it before completion.
    sim.step().unwrap();
    sim.step().unwrap();
    assert_eq!(
        sim.engine_mut(1).freeze_round(0),
        Some(RoundStatus::Incomplete)
    );
    // Node 1's round completes but never releases: run on in virtual time.
    sim.advance_to(sim.now() + 500 * MS).unwrap();
    assert!(sim.rounds()[0].iter().all(|x| x.completed_at > 0));
    // Frozen "incomplete", node 1 withholds its RoundDone even after completing, so node 0
    // cannot release the round either: the coordinator's "failed" (node 1 answered
    // incomplete) stays the only outcome. (It used to announce, and node 0 released.)
    assert_eq!(sim.engine(0).round_status(0), Some(RoundStatus::Completed));
    assert_eq!(sim.engine(1).round_status(0), Some(RoundStatus::Completed));
    assert_eq!(sim.engine(1).counters().tx_round_done, 0);
    for v in [1, 0] {
        assert_eq!(sim.engine_mut(v).abort_round(0), Ok(()));
        let now = sim.now();
        assert!(
            !sim.engine_mut(v).release_frozen(now, 0),
            "an aborted round never releases"
        );
    }
}

#[test]
fn release_frozen_releases_a_completed_round() {
    let mut sim = pair_after_round(true);
    // Round 1, frozen on both before it starts to complete.
    for v in 0..2 {
        sim.schedule_start(v, 1, sim.now() + MS);
    }
    sim.step().unwrap();
    sim.step().unwrap();
    for v in 0..2 {
        sim.engine_mut(v).freeze_round(1);
    }
    sim.advance_to(sim.now() + 500 * MS).unwrap();
    assert!(sim.rounds()[1].iter().all(|x| x.completed_at > 0));
    for v in 0..2 {
        assert_eq!(sim.engine(v).round_status(1), Some(RoundStatus::Completed));
        assert_eq!(sim.rounds()[1][v as usize].released_at, 0);
        let now = sim.now();
        assert!(sim.engine_mut(v).release_frozen(now, 1));
        assert_eq!(sim.engine(v).round_status(1), Some(RoundStatus::Released));
        assert!(matches!(
            sim.engine_mut(v).poll_event(),
            Some(EngineEvent::RoundReleased { round: 1, .. })
        ));
    }
}

#[test]
fn next_hops_follow_shortest_paths_over_the_links() {
    // A line 0 - 1 - 2 - 3 (both directions).
    let mut topo = Topology::full_mesh(4, 1e9, MS);
    topo.links.retain(|l: &Link| l.from.abs_diff(l.to) == 1);
    assert_eq!(shortest_next_hops(&topo, 0), vec![0, 1, 1, 1]);
    assert_eq!(shortest_next_hops(&topo, 2), vec![1, 1, 2, 3]);
    topo.links.retain(|l| !(l.from == 1 && l.to == 2));
    assert_eq!(
        shortest_next_hops(&topo, 0),
        vec![0, 1, NodeId::MAX, NodeId::MAX]
    );
}

#[test]
fn a_round_not_started_here_can_be_abandoned_and_never_starts() {
    let mut sim = pair_after_round(true);
    let now = sim.now();
    let e = sim.engine_mut(0);
    assert!(e.abort_round(0).is_err(), "released");
    assert_eq!(e.abort_round(1), Ok(()));
    assert_eq!(e.round_status(1), Some(RoundStatus::Incomplete));
    assert!(matches!(
        e.start_round(now, 1),
        Err(EngineError::RoundOrder { .. })
    ));
    assert_eq!(
        e.start_round(now, 2),
        Err(EngineError::AwaitingEpoch {
            round: 2,
            aborted: 1,
            epoch: 1
        })
    );
    assert!(e.abort_round(0).is_err(), "older than the newest");
    let topo = Topology::pair(1e9, MS);
    e.install_policy(Policy::pair(&topo, 2), 2).unwrap();
    e.start_round(now, 2).unwrap();
    assert_eq!(e.epoch(), Some(2));
    assert_eq!(e.counters().rounds_aborted, 1);
}
