//! Replayed packets: a captured stream of valid, authentic packets (data and acks of earlier
//! rounds) injected again later — during later rounds, across a policy epoch change and
//! between rounds — changes no result and is counted (duplicate sequence, stale round, stale
//! epoch or stale ack), never accepted. With packet protection on (the default) the
//! receivers' anti-replay windows drop every replayed datagram before the engine sees it
//! (`rx_replayed`); with it off the protocol's own checks still reject every one.

use netstorm_dataplane::emu::{EmuConfig, Simulation};
use netstorm_dataplane::engine::{Counters, Engine, EngineConfig};
use netstorm_dataplane::policy::{ForwardMode, Policy, PolicyBuilder};
use netstorm_dataplane::protect::Protection;
use netstorm_dataplane::topology::{Link, Node, Topology};
use netstorm_dataplane::NodeId;

const N: usize = 4;
const ELEMS: usize = 30_000;

fn mesh() -> Topology {
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
            if a != b {
                links.push(Link {
                    from: a as NodeId,
                    to: b as NodeId,
                    rate_bps: 2e8,
                    latency_ns: 4_000_000 + 1_000_000 * (a + b) as u64,
                    loss: 0.0,
                });
            }
        }
    }
    Topology { nodes, links }
}

/// Two trees: a star rooted at 0 and a chain 3 -> 2 -> 1 (relayed nowhere, all direct).
fn policy(topo: &Topology, epoch: u32) -> Policy {
    let mut b = PolicyBuilder::new();
    let star = [None, Some(0), Some(0), Some(0)];
    b.tree(0, 0.5, &star, &star, ForwardMode::Pipelined);
    let chain = [Some(1), None, Some(1), Some(2)];
    b.tree(1, 0.5, &chain, &chain, ForwardMode::Pipelined);
    b.link_rates_from(topo);
    b.build(epoch, N as u16)
}

fn contribution(v: NodeId, round: u32, i: usize) -> f32 {
    ((i + 3 * v as usize + 7 * round as usize) % 50) as f32
}

fn new_sim(protection: &Protection) -> Simulation {
    let topo = mesh();
    let p = policy(&topo, 7);
    let engines = (0..N as NodeId)
        .map(|v| {
            let cfg = EngineConfig {
                protection: protection.clone(),
                ..EngineConfig::new(v, N as u16, ELEMS)
            };
            let mut e = Engine::new(cfg, &topo).unwrap();
            e.install_policy(p.clone(), 0).unwrap();
            e
        })
        .collect();
    let mut sim = Simulation::new(&topo, engines, EmuConfig::default()).unwrap();
    sim.set_start_hook(Box::new(|v, round, buf| {
        for (i, x) in buf.iter_mut().enumerate() {
            *x = contribution(v, round, i);
        }
    }));
    sim
}

fn check_round(sim: &Simulation, round: u32) {
    for v in 0..N as NodeId {
        for (i, &x) in sim.engine(v).buffer().iter().enumerate() {
            let want: f32 = (0..N as NodeId).map(|u| contribution(u, round, i)).sum();
            assert_eq!(x, want, "round {round}, node {v}, element {i}");
        }
    }
}

/// Everything counted as a rejected (replayed, duplicate or stale) packet.
fn rejected(c: &Counters) -> u64 {
    c.rx_duplicate + c.rx_stale_round + c.rx_stale_epoch + c.rx_stale_ack + c.rx_invalid
}

fn total(sim: &Simulation, f: fn(&Counters) -> u64) -> u64 {
    (0..N as NodeId).map(|v| f(sim.engine(v).counters())).sum()
}

/// Runs rounds 0..4 (epoch 8 from round 3 on). With `replay`, the packets delivered in
/// rounds 0 and 1 are captured and injected again, at the node that received them, during
/// rounds 2 and 3 and between rounds 3 and 4. Returns the simulation and the number of
/// packets replayed.
fn run(replay: bool, protection: &Protection) -> (Simulation, u64) {
    let mut sim = new_sim(protection);
    let limit = 120_000_000_000;
    if replay {
        sim.set_capture(1_000_000);
    }
    for r in 0..2 {
        sim.run_round_all(r, limit).unwrap();
        check_round(&sim, r);
    }
    let captured = sim.take_capture();
    if replay {
        assert!(captured.len() > 1_000, "captured {}", captured.len());
        assert!(
            captured.iter().any(|(_, p)| p[3] == 3),
            "acks were captured too"
        );
    }
    let topo = mesh();
    for v in 0..N as NodeId {
        sim.engine_mut(v)
            .install_policy(policy(&topo, 8), 3)
            .unwrap();
    }
    let mut replayed = 0u64;
    let mut next = 0usize;
    for r in 2..5 {
        if replay && r == 4 {
            // Between rounds: every node idle, the whole capture again.
            for (node, pkt) in &captured {
                let now = sim.now();
                sim.engine_mut(*node).handle_packet(now, pkt);
                replayed += 1;
            }
        }
        for v in 0..N as NodeId {
            sim.schedule_start(v, r, sim.now());
        }
        while sim.summary(r).is_none() {
            sim.step().unwrap();
            if replay && r < 4 {
                // Interleaved with the live round: 3 replayed packets per event.
                for _ in 0..3 {
                    let (node, pkt) = &captured[next % captured.len()];
                    next += 1;
                    let now = sim.now();
                    sim.engine_mut(*node).handle_packet(now, pkt);
                    replayed += 1;
                }
            }
            assert!(sim.now() < 600_000_000_000, "round {r} hangs");
        }
        check_round(&sim, r);
        assert_eq!(
            sim.summary(r).unwrap().epoch,
            Some(if r < 3 { 7 } else { 8 })
        );
    }
    (sim, replayed)
}

#[test]
fn replayed_packet_stream_changes_nothing_and_is_counted() {
    // Protection off: the protocol's checks alone.
    let off = Protection::off();
    let (base, zero) = run(false, &off);
    assert_eq!(zero, 0);
    let (sim, replayed) = run(true, &off);
    assert!(replayed > 5_000, "replayed only {replayed}");
    // Results: bit-identical to the run without replay (and to the reference, checked per
    // round inside `run`).
    for v in 0..N as NodeId {
        assert_eq!(sim.engine(v).buffer(), base.engine(v).buffer(), "node {v}");
    }
    assert_eq!(total(&sim, |c| c.rounds_completed), N as u64 * 5);
    assert_eq!(total(&sim, |c| c.rx_bad_mac), 0);
    let extra = total(&sim, rejected) - total(&base, rejected);
    assert!(
        extra >= replayed,
        "{replayed} replayed packets but only {extra} more rejections"
    );
    // Each defence did its part: old sequence numbers, stale acks.
    assert!(total(&sim, |c| c.rx_duplicate) > total(&base, |c| c.rx_duplicate));
    assert!(total(&sim, |c| c.rx_stale_ack) > total(&base, |c| c.rx_stale_ack));
    eprintln!(
        "off: replayed {replayed}: duplicate {}, stale round {}, stale epoch {}, stale ack {}, invalid {}",
        total(&sim, |c| c.rx_duplicate),
        total(&sim, |c| c.rx_stale_round),
        total(&sim, |c| c.rx_stale_epoch),
        total(&sim, |c| c.rx_stale_ack),
        total(&sim, |c| c.rx_invalid)
    );
}

#[test]
fn replayed_datagrams_are_dropped_by_the_replay_windows() {
    let on = Protection::default();
    let (base, _) = run(false, &on);
    let (sim, replayed) = run(true, &on);
    assert!(replayed > 5_000, "replayed only {replayed}");
    for v in 0..N as NodeId {
        assert_eq!(sim.engine(v).buffer(), base.engine(v).buffer(), "node {v}");
    }
    assert_eq!(total(&sim, |c| c.rounds_completed), N as u64 * 5);
    // Authentic packets: the tag passes them; the window rejects every one, and nothing
    // replayed reaches the engine's own checks.
    assert_eq!(total(&sim, |c| c.rx_bad_mac), 0);
    assert_eq!(total(&base, |c| c.rx_replayed), 0);
    assert_eq!(total(&sim, |c| c.rx_replayed), replayed);
    assert_eq!(total(&sim, rejected), total(&base, rejected));
}
