//! Release gossip, round abandonment and data-plane liveness, end to end on the emulator
//! (virtual time, deterministic):
//! * with release gossip on, every node releases every round, never before the last member
//!   completed it, over a full mesh and over a ring (RoundDone forwarded by relays), with
//!   lossy links (re-asks and answers), results exact;
//! * a node dies after some members completed round r: with gossip on no survivor releases
//!   r (so a coordinator can decide one outcome); with gossip off some survivors hand r over
//!   and others never can — the split the gossip exists to prevent;
//! * a round cut off by an outage is aborted everywhere and the next round runs exactly
//!   under a newer epoch, late packets of the aborted round counted;
//! * idle heartbeats keep every neighbour's last-heard time fresh between rounds.

use netstorm_dataplane::emu::{EmuConfig, LinkOutage, Simulation};
use netstorm_dataplane::engine::{Engine, EngineConfig, EngineError, RoundStatus};
use netstorm_dataplane::policy::{ForwardMode, Policy, PolicyBuilder};
use netstorm_dataplane::topology::{Link, Node, Topology};
use netstorm_dataplane::{Nanos, NodeId};

const N: usize = 4;
const ELEMS: usize = 20_000;
const MS: Nanos = 1_000_000;

fn topology(ring: bool) -> Topology {
    let nodes = (0..N)
        .map(|i| Node {
            name: format!("dc{i}"),
            egress_bps: None,
            ingress_bps: None,
        })
        .collect();
    let mut links = Vec::new();
    for a in 0..N {
        for b in 0..N {
            let adjacent = (a + 1) % N == b || (b + 1) % N == a;
            if a != b && (!ring || adjacent) {
                links.push(Link {
                    from: a as NodeId,
                    to: b as NodeId,
                    rate_bps: 2e8,
                    latency_ns: 4 * MS + MS * (a + b) as u64,
                    loss: 0.0,
                });
            }
        }
    }
    Topology { nodes, links }
}

/// Mesh: a star at 0 and a chain 3 → 2 → 1. Ring: a chain 0 → 1 → 2 → 3 over ring links.
fn policy(topo: &Topology, ring: bool, epoch: u32) -> Policy {
    let mut b = PolicyBuilder::new();
    if ring {
        let chain = [Some(1), Some(2), Some(3), None];
        b.tree(3, 1.0, &chain, &chain, ForwardMode::Pipelined);
    } else {
        let star = [None, Some(0), Some(0), Some(0)];
        b.tree(0, 0.5, &star, &star, ForwardMode::Pipelined);
        let chain = [Some(1), None, Some(1), Some(2)];
        b.tree(1, 0.5, &chain, &chain, ForwardMode::Pipelined);
    }
    b.link_rates_from(topo);
    b.build(epoch, N as u16)
}

fn contribution(v: NodeId, round: u32, i: usize) -> f32 {
    ((i + 3 * v as usize + 7 * round as usize) % 50) as f32
}

fn sim(ring: bool, gossip: bool, emu: EmuConfig) -> Simulation {
    sim_of(ring, gossip, emu, ELEMS)
}

fn sim_of(ring: bool, gossip: bool, emu: EmuConfig, elems: usize) -> Simulation {
    let topo = topology(ring);
    let p = policy(&topo, ring, 7);
    let engines = (0..N as NodeId)
        .map(|v| {
            let mut cfg = EngineConfig::new(v, N as u16, elems);
            cfg.release_gossip = gossip;
            let mut e = Engine::new(cfg, &topo).unwrap();
            e.install_policy(p.clone(), 0).unwrap();
            e
        })
        .collect();
    let mut sim = Simulation::new(&topo, engines, emu).unwrap();
    sim.set_start_hook(Box::new(|v, round, buf| {
        for (i, x) in buf.iter_mut().enumerate() {
            *x = contribution(v, round, i);
        }
    }));
    sim
}

fn check_exact(sim: &Simulation, round: u32) {
    for v in 0..N as NodeId {
        for (i, &x) in sim.engine(v).buffer().iter().enumerate() {
            let want: f32 = (0..N as NodeId).map(|u| contribution(u, round, i)).sum();
            assert_eq!(x, want, "round {round}, node {v}, element {i}");
        }
    }
}

/// Runs `rounds` rounds back to back (each node starts the next at its release) and checks
/// that every release came after the last member's completion.
fn run_released(sim: &mut Simulation, rounds: u32) {
    sim.set_auto_advance(rounds - 1, MS);
    for v in 0..N as NodeId {
        sim.schedule_start(v, 0, 0);
    }
    for r in 0..rounds {
        sim.run_round_released(r, 60_000 * MS).unwrap();
        let nodes = &sim.rounds()[r as usize];
        let last_completion = nodes.iter().map(|x| x.completed_at).max().unwrap();
        let last_release = nodes.iter().map(|x| x.released_at).max().unwrap();
        eprintln!(
            "round {r}: last release {:.3} ms after the last completion",
            (last_release - last_completion) as f64 / 1e6
        );
        for (v, x) in nodes.iter().enumerate() {
            assert!(
                x.completed_at > 0,
                "round {r}: node {v} released without completing"
            );
            assert!(
                x.released_at >= last_completion,
                "round {r}: node {v} released at {} before the last completion at {last_completion}",
                x.released_at
            );
        }
    }
    // The last round's result is still in every buffer.
    check_exact(sim, rounds - 1);
}

#[test]
fn every_round_is_released_everywhere_after_the_last_completion() {
    let mut s = sim(false, true, EmuConfig::default());
    run_released(&mut s, 3);
    for v in 0..N as NodeId {
        let c = s.engine(v).counters();
        assert_eq!(c.rounds_released, 3, "node {v}");
        // Lossless: at least one announcement per member per round (more when a member
        // completes over a re-ask interval later).
        assert!(c.tx_round_done >= 3 * (N as u64 - 1), "node {v}: {c:?}");
        assert_eq!((c.rx_malformed, c.rx_invalid, c.rx_bad_mac), (0, 0, 0));
        assert_eq!(s.engine(v).round_status(2), Some(RoundStatus::Released));
    }
}

#[test]
fn round_done_is_forwarded_between_nodes_without_a_link() {
    let mut s = sim(true, true, EmuConfig::default());
    run_released(&mut s, 2);
    assert_eq!(s.no_link_drops, 0);
    // 0 and 2 (and 1 and 3) have no link: their RoundDone crossed a relay.
    let forwarded: u64 = (0..N as NodeId)
        .map(|v| s.engine(v).counters().relay_forwarded)
        .sum();
    assert!(forwarded >= 2 * 4, "forwarded {forwarded}");
}

#[test]
fn lossy_links_still_release_every_round_exactly() {
    let emu = EmuConfig {
        extra_loss: 0.05,
        seed: 11,
        ..EmuConfig::default()
    };
    let mut s = sim(false, true, emu);
    run_released(&mut s, 3);
    let sent: u64 = (0..N as NodeId)
        .map(|v| s.engine(v).counters().tx_round_done)
        .sum();
    // Some RoundDone was lost and re-asked for (the lossless count is 3 * 4 * 3 = 36).
    assert!(sent > 36, "sent {sent}");
}

/// Node `dead` is cut off from everyone (fail-stop, as far as the others can tell) right
/// after the first node completed round 1. Returns, per survivor, (completed round 1, released/handed it over).
fn crash_after_first_completion(gossip: bool, dead: NodeId) -> Vec<(bool, bool)> {
    let mut s = sim(false, gossip, EmuConfig::default());
    s.set_auto_advance(1, MS);
    for v in 0..N as NodeId {
        s.schedule_start(v, 0, 0);
    }
    if gossip {
        s.run_round_released(0, 60_000 * MS).unwrap();
    } else {
        s.run_round(0, 60_000 * MS).unwrap();
    }
    s.run_until_first_complete(1, 60_000 * MS).unwrap();
    assert_eq!(
        s.rounds()[1][dead as usize].completed_at,
        0,
        "{dead} completed"
    );
    let now = s.now();
    let topo = topology(false);
    for (i, l) in topo.links.iter().enumerate() {
        if l.from == dead || l.to == dead {
            s.add_outage(LinkOutage {
                link: i,
                from_ns: now,
                until_ns: Nanos::MAX,
            });
        }
    }
    // Long enough for every retransmission and re-ask to give up nothing new.
    let until = now + 3_000 * MS;
    while s.next_event_at().is_some_and(|t| t < until) {
        s.step().unwrap();
    }
    (0..N as NodeId)
        .filter(|&v| v != dead)
        .map(|v| {
            let x = s.rounds()[1][v as usize];
            let handed_over = if gossip {
                x.released_at > 0
            } else {
                x.completed_at > 0
            };
            (x.completed_at > 0, handed_over)
        })
        .collect()
}

#[test]
fn with_gossip_no_survivor_releases_a_round_a_dead_node_never_completed() {
    // Node 0 completes round 1 first; any other node may die then.
    for dead in 1..N as NodeId {
        let survivors = crash_after_first_completion(true, dead);
        assert!(
            survivors.iter().any(|&(completed, _)| completed),
            "dead {dead}: the scenario needs a survivor holding the full result: {survivors:?}"
        );
        assert!(
            survivors.iter().all(|&(_, released)| !released),
            "dead {dead}: a survivor released the round: {survivors:?}"
        );
    }
}

/// The same crash without gossip (node 3 dies): survivors 0 and 1 hand the round over at
/// completion while 2 never can — two outcomes for one round. This is why the test above
/// needs gossip: its assertion fails on this outcome.
#[test]
fn without_gossip_the_same_crash_splits_the_survivors() {
    let survivors = crash_after_first_completion(false, 3);
    assert_eq!(survivors, [(true, true), (true, true), (false, false)]);
}

/// Gossiping mesh with 1.6 MB rounds (tens of milliseconds of data in flight on every
/// link): round 0 released everywhere, round 1 started at `t0` (returned), and node 3's
/// links down from `t0 + 20 ms` until `t0 + cut_for` (`Nanos::MAX`: for good).
fn node_3_cut_off_in_round_1(cut_for: Nanos) -> (Simulation, Nanos) {
    let mut s = sim_of(false, true, EmuConfig::default(), 400_000);
    for v in 0..N as NodeId {
        s.schedule_start(v, 0, 0);
    }
    s.run_round_released(0, 60_000 * MS).unwrap();
    let t0 = s.now() + MS;
    for v in 0..N as NodeId {
        s.schedule_start(v, 1, t0);
    }
    for (i, l) in topology(false).links.iter().enumerate() {
        if l.from == 3 || l.to == 3 {
            s.add_outage(LinkOutage {
                link: i,
                from_ns: t0 + 20 * MS,
                until_ns: t0.saturating_add(cut_for),
            });
        }
    }
    (s, t0)
}

#[test]
fn an_aborted_round_is_never_completed_and_the_next_epoch_runs_exactly() {
    // Round 1 starts; node 3 is cut off for 500 ms from 20 ms in; the coordinator acts at
    // 40 ms, with the other nodes' data still in flight.
    let (mut s, t0) = node_3_cut_off_in_round_1(520 * MS);
    let topo = topology(false);
    let t_abort = t0 + 40 * MS;
    s.advance_to(t_abort).unwrap();
    // A coordinator freezes round 1: nobody released it, someone has no full result.
    let statuses: Vec<RoundStatus> = (0..N as NodeId)
        .map(|v| s.engine_mut(v).freeze_round(1).unwrap())
        .collect();
    assert!(!statuses.contains(&RoundStatus::Released), "{statuses:?}");
    assert!(statuses.contains(&RoundStatus::Incomplete), "{statuses:?}");
    // Failed: every node abandons round 1; a newer epoch runs round 2.
    let next = policy(&topo, false, 8);
    for v in 0..N as NodeId {
        let e = s.engine_mut(v);
        assert_eq!(e.abort_round(1), Ok(()));
        assert_eq!(e.round_status(1), Some(RoundStatus::Incomplete));
        // Round 2 may not run under the aborted epoch.
        assert!(matches!(
            e.start_round(t_abort, 2),
            Err(EngineError::AwaitingEpoch {
                round: 2,
                aborted: 1,
                epoch: 7
            })
        ));
        e.install_policy(next.clone(), 2).unwrap();
    }
    let t2 = t0 + 600 * MS;
    for v in 0..N as NodeId {
        s.schedule_start(v, 2, t2);
    }
    s.run_round_released(2, 60_000 * MS).unwrap();
    check_exact(&s, 2);
    let late: u64 = (0..N as NodeId)
        .map(|v| s.engine(v).counters().rx_aborted_round)
        .sum();
    assert!(
        late > 0,
        "packets of the aborted round in flight were counted"
    );
    for v in 0..N as NodeId {
        let x = s.rounds()[1][v as usize];
        let c = s.engine(v).counters();
        assert_eq!(c.rounds_aborted, 1);
        // Never completed or released afterwards (a node that completed before the abort
        // keeps its completion time, but none released).
        assert_eq!(x.released_at, 0, "node {v}");
        assert_eq!(s.rounds()[2][v as usize].epoch, 8);
    }
}

#[test]
fn heartbeats_keep_idle_neighbours_heard() {
    let topo = topology(false);
    let engines = (0..N as NodeId)
        .map(|v| {
            let mut cfg = EngineConfig::new(v, N as u16, ELEMS);
            cfg.heartbeat_ns = Some(100 * MS);
            cfg.probe.interval_ns = 0;
            Engine::new(cfg, &topo).unwrap()
        })
        .collect();
    let mut s = Simulation::new(&topo, engines, EmuConfig::default()).unwrap();
    // No policy, no round: only heartbeats travel (started by a first poll).
    for v in 0..N as NodeId {
        s.wake(v);
    }
    s.advance_to(2_000 * MS).unwrap();
    for v in 0..N as NodeId {
        let heard = s.engine(v).peer_last_heard();
        for u in (0..N as NodeId).filter(|&u| u != v) {
            let t = heard[u as usize];
            assert!(
                t > 2_000 * MS - 160 * MS,
                "node {v} last heard {u} at {t} ns"
            );
        }
        assert_eq!(heard[v as usize], 0, "a node never hears itself");
        let c = s.engine(v).counters();
        // One per neighbour every 100 to 150 ms (the link's idleness is checked twice per
        // interval): 2 s makes 13 to 20 per neighbour.
        assert!(
            c.tx_heartbeats >= 3 * 13 && c.tx_heartbeats <= 3 * 20,
            "{c:?}"
        );
        assert_eq!(c.rx_heartbeats, c.tx_heartbeats);
    }
}

#[test]
fn without_heartbeats_an_idle_node_is_never_heard() {
    let topo = topology(false);
    let engines = (0..N as NodeId)
        .map(|v| {
            let mut cfg = EngineConfig::new(v, N as u16, ELEMS);
            cfg.probe.interval_ns = 0;
            Engine::new(cfg, &topo).unwrap()
        })
        .collect();
    let mut s = Simulation::new(&topo, engines, EmuConfig::default()).unwrap();
    for v in 0..N as NodeId {
        s.wake(v);
    }
    s.advance_to(2_000 * MS).unwrap();
    assert!((0..N as NodeId).all(|v| s.engine(v).peer_last_heard().iter().all(|&t| t == 0)));
}

/// Epoch `epoch` over members 0, 1, 2 (node 3 lost): a star at 0 and a chain 2 → 1.
fn survivors_policy(topo: &Topology, epoch: u32) -> Policy {
    let mut b = PolicyBuilder::new();
    b.tree(
        0,
        0.5,
        &[None, Some(0), Some(0), None],
        &[None, Some(0), Some(0), None],
        ForwardMode::Pipelined,
    );
    b.tree(
        1,
        0.5,
        &[Some(1), None, Some(1), None],
        &[Some(1), None, Some(1), None],
        ForwardMode::Pipelined,
    );
    b.link_rates_from(topo);
    let mut p = b.build(epoch, N as u16);
    p.members = Some(vec![0, 1, 2]);
    p
}

#[test]
fn after_a_loss_the_survivors_run_exact_rounds_over_a_policy_of_members() {
    let (mut s, t0) = node_3_cut_off_in_round_1(Nanos::MAX);
    let topo = topology(false);
    let t_abort = t0 + 40 * MS;
    s.advance_to(t_abort).unwrap();
    let next = survivors_policy(&topo, 8);
    for v in 0..3 {
        let e = s.engine_mut(v);
        assert_ne!(e.freeze_round(1), Some(RoundStatus::Released));
        e.abort_round(1).unwrap();
        e.install_policy(next.clone(), 2).unwrap();
    }
    let t2 = t0 + 100 * MS;
    for v in 0..3 {
        s.schedule_start(v, 2, t2);
    }
    // Node 3 never starts round 2; the members release it (they wait for 3's RoundDone if
    // the gossip counted every node, and this loop runs out).
    let until = t2 + 10_000 * MS;
    while s
        .rounds()
        .get(2)
        .is_none_or(|r| (0..3).any(|v| r[v].released_at == 0))
    {
        assert!(
            s.next_event_at().is_some_and(|t| t < until),
            "round 2 was not released by every member"
        );
        s.step().unwrap();
    }
    for v in 0..3 as NodeId {
        for (i, &x) in s.engine(v).buffer().iter().enumerate() {
            let want: f32 = (0..3).map(|u| contribution(u, 2, i)).sum();
            assert_eq!(x, want, "node {v}, element {i}");
        }
        assert_eq!(s.rounds()[2][v as usize].epoch, 8);
    }
    // The lost node, were it to come back with the policy, is refused: not a member.
    let mut lone = Engine::new(EngineConfig::new(3, N as u16, 1_000), &topo).unwrap();
    lone.install_policy(next, 0).unwrap();
    assert_eq!(
        lone.start_round(0, 0),
        Err(EngineError::NotAMember { round: 0, epoch: 8 })
    );
}

#[test]
fn a_node_frozen_before_completing_withholds_its_round_done() {
    // Node 2 is frozen right after round 0 starts (it answers "incomplete"); it completes
    // later, but nobody may release the round on its own: the coordinator will decide it
    // failed. (Announcing at completion would let 0, 1 and 3 release it.)
    let mut s = sim(false, true, EmuConfig::default());
    for v in 0..N as NodeId {
        s.schedule_start(v, 0, 0);
    }
    s.advance_to(MS / 2).unwrap();
    assert_eq!(
        s.engine_mut(2).freeze_round(0),
        Some(RoundStatus::Incomplete)
    );
    let until = 3_000 * MS;
    while s.next_event_at().is_some_and(|t| t < until) {
        s.step().unwrap();
    }
    for v in 0..N as NodeId {
        assert_eq!(
            s.engine(v).round_status(0),
            Some(RoundStatus::Completed),
            "node {v}"
        );
        assert_eq!(s.rounds()[0][v as usize].released_at, 0, "node {v}");
    }
}

#[test]
fn policies_keep_non_members_out_of_every_tree() {
    let topo = topology(false);
    let good = survivors_policy(&topo, 8);
    good.validate(&topo).unwrap();
    assert!(good.is_member(2) && !good.is_member(3));
    assert_eq!(good.member_count(), 3);
    // Node 3 listed in a tree but not a member.
    let mut with_3 = policy(&topo, false, 8);
    with_3.members = Some(vec![0, 1, 2]);
    assert!(matches!(
        with_3.validate(&topo),
        Err(netstorm_dataplane::policy::PolicyError::NonMemberInTree { .. })
    ));
    // A route relaying through the lost node.
    let mut b = PolicyBuilder::new();
    let star = [None, Some(vec![1, 3, 0]), Some(vec![2, 0]), None];
    let bcast = [None, Some(vec![0, 1]), Some(vec![0, 2]), None];
    b.tree_with_routes(0, 1.0, &star, &bcast, ForwardMode::Pipelined)
        .link_rates_from(&topo);
    let mut relayed = b.build(8, N as u16);
    relayed.members = Some(vec![0, 1, 2]);
    let err = relayed.validate(&topo).unwrap_err().to_string();
    assert!(err.contains("not a member"), "{err}");
    // Members out of order.
    let mut bad = survivors_policy(&topo, 8);
    bad.members = Some(vec![2, 0, 1]);
    assert!(bad.validate(&topo).is_err());
}
