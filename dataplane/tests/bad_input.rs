//! Bad input is counted and dropped, never panics, and never changes a synchronized result;
//! impossible policies and configs are rejected with the reason.

use netstorm_dataplane::emu::{EmuConfig, Simulation};
use netstorm_dataplane::engine::{Engine, EngineConfig, EngineError};
use netstorm_dataplane::policy::{ForwardMode, PolicyBuilder, PolicyError, TreeEdge, WeightedPath};
use netstorm_dataplane::topology::{Link, Node, Topology};
use netstorm_dataplane::wire::{HeaderRepr, PacketKind, HEADER_LEN};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn triangle() -> Topology {
    let nodes = ["a", "b", "c"]
        .iter()
        .map(|n| Node {
            name: n.to_string(),
            egress_bps: None,
            ingress_bps: None,
        })
        .collect();
    let mut links = Vec::new();
    for (x, y) in [(0, 1), (1, 2), (0, 2)] {
        for (f, t) in [(x, y), (y, x)] {
            links.push(Link {
                from: f,
                to: t,
                rate_bps: 1e8,
                latency_ns: 5_000_000,
                loss: 0.0,
            });
        }
    }
    Topology { nodes, links }
}

fn star_policy(topo: &Topology, epoch: u32) -> netstorm_dataplane::policy::Policy {
    let mut b = PolicyBuilder::new();
    let p = [None, Some(0), Some(0)];
    b.tree(0, 0.5, &p, &p, ForwardMode::Pipelined);
    let q = [Some(1), None, Some(1)];
    b.tree(1, 0.5, &q, &q, ForwardMode::Pipelined);
    b.link_rates_from(topo);
    b.build(epoch, 3)
}

/// A reduce-data packet from node 1 to node 0, round 0, one full segment of poison values.
fn data_packet(job: u32, epoch: u32, tree: u16, segment: u32) -> Vec<u8> {
    let hdr = HeaderRepr {
        kind: PacketKind::ReduceData,
        payload_len: 352 * 4,
        job,
        epoch,
        round: 0,
        tree,
        path: 0,
        src: 1,
        dst: 0,
        seq: 0,
        segment,
        ttl: 1,
        timestamp_ns: 1,
        ..HeaderRepr::default()
    };
    let elems = 352;
    let mut buf = vec![0u8; HEADER_LEN + elems * 4];
    hdr.emit(&mut buf).unwrap();
    // Poison values: if any of these were ever added, the result check below would fail.
    for c in buf[HEADER_LEN..].chunks_exact_mut(4) {
        c.copy_from_slice(&1.0e9f32.to_le_bytes());
    }
    buf
}

#[test]
fn hostile_packets_are_counted_dropped_and_change_nothing() {
    let topo = triangle();
    let elems = 20_000;
    let policy = star_policy(&topo, 7);
    let engines = (0..3)
        .map(|v| {
            let mut e = Engine::new(EngineConfig::new(v, 3, elems), &topo).unwrap();
            e.install_policy(policy.clone(), 0).unwrap();
            e.buffer_mut()
                .iter_mut()
                .enumerate()
                .for_each(|(i, x)| *x = (i % 100) as f32 + v as f32);
            e
        })
        .collect();
    let mut sim = Simulation::new(&topo, engines, EmuConfig::default()).unwrap();
    for v in 0..3 {
        sim.schedule_start(v, 0, 0);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    // Mutations start from another job's packet: a forged packet valid in every field
    // (job, epoch, path, sequence) needs authentication to be told apart — that is the MAC's
    // job, not parsing's.
    let foreign = data_packet(99, 7, 0, 0);
    let mut injected = 0u64;
    // Interleave 10,000 random and mutated packets with the real traffic.
    while sim.summary(0).is_none() {
        sim.step().unwrap();
        for _ in 0..20 {
            if injected >= 10_000 {
                break;
            }
            let pkt = match injected % 5 {
                0 => (0..rng.random_range(0..200))
                    .map(|_| rng.random())
                    .collect::<Vec<u8>>(),
                1 => {
                    let mut p = foreign.clone();
                    for _ in 0..rng.random_range(1..4) {
                        let i = rng.random_range(0..p.len());
                        p[i] = rng.random();
                    }
                    p
                }
                2 => data_packet(99, 7, 0, 0),     // another job
                3 => data_packet(1, 3, 0, 0),      // stale epoch
                _ => data_packet(1, 7, 9, 99_999), // no such tree/segment
            };
            let target = rng.random_range(0..3u16);
            let now = sim.now();
            sim.engine_mut(target).handle_packet(now, &pkt);
            injected += 1;
        }
    }
    assert_eq!(
        injected, 10_000,
        "the round ended before all packets were injected"
    );
    for v in 0..3u16 {
        let buf = sim.engine(v).buffer();
        for (i, &x) in buf.iter().enumerate() {
            assert_eq!(x, 3.0 * (i % 100) as f32 + 3.0, "node {v} element {i}");
        }
    }
    let total = |f: fn(&netstorm_dataplane::engine::Counters) -> u64| -> u64 {
        (0..3).map(|v| f(sim.engine(v).counters())).sum()
    };
    assert!(
        total(|c| c.rx_malformed) >= 2_000,
        "random packets must count as malformed"
    );
    assert!(total(|c| c.rx_wrong_job) >= 2_000);
    let dropped = total(|c| c.rx_stale_epoch + c.rx_invalid + c.rx_duplicate + c.rx_out_of_window);
    assert!(
        dropped >= 4_000,
        "stale-epoch and out-of-range packets must be dropped ({dropped})"
    );
}

#[test]
fn impossible_policies_are_rejected_with_the_reason() {
    let topo = triangle();
    let mut e = Engine::new(EngineConfig::new(0, 3, 100), &topo).unwrap();
    // Shares not summing to 1.
    let mut b = PolicyBuilder::new();
    let p = [None, Some(0), Some(0)];
    b.tree(0, 0.7, &p, &p, ForwardMode::Pipelined);
    let err = e.install_policy(b.build(1, 3), 0).unwrap_err();
    assert!(
        matches!(err, EngineError::Policy(PolicyError::SharesSum(_))),
        "{err}"
    );
    // A node missing from a tree.
    let mut b = PolicyBuilder::new();
    b.tree(0, 1.0, &[None, Some(0), None], &p, ForwardMode::Pipelined);
    let err = e.install_policy(b.build(2, 3), 0).unwrap_err();
    assert!(
        err.to_string()
            .contains("node c is missing from the reduce tree"),
        "{err}"
    );
    // A tree edge with no link: a line topology has no a–c link.
    let mut line = triangle();
    line.links
        .retain(|l| !((l.from == 0 && l.to == 2) || (l.from == 2 && l.to == 0)));
    let mut e2 = Engine::new(EngineConfig::new(0, 3, 100), &line).unwrap();
    let mut b = PolicyBuilder::new();
    b.tree(0, 1.0, &p, &p, ForwardMode::Pipelined);
    let err = e2.install_policy(b.build(1, 3), 0).unwrap_err();
    assert!(
        err.to_string().contains("c -> a, which is not a link"),
        "{err}"
    );
    // A cycle.
    let mut b = PolicyBuilder::new();
    b.tree(
        0,
        1.0,
        &[None, Some(2), Some(1)],
        &p,
        ForwardMode::Pipelined,
    );
    let err = e.install_policy(b.build(3, 3), 0).unwrap_err();
    assert!(err.to_string().contains("cycle"), "{err}");
    // A route that does not end at the parent.
    let mut pol = star_policy(&topo, 4);
    pol.trees[0].reduce[1] = Some(TreeEdge {
        parent: 0,
        paths: vec![WeightedPath {
            path: 0,
            weight: 1.0,
        }],
    });
    pol.routes[0].hops = vec![1, 2];
    let err = e.install_policy(pol, 0).unwrap_err();
    assert!(err.to_string().contains("instead"), "{err}");
    // An epoch older than the installed one is ignored with an error.
    e.install_policy(star_policy(&topo, 10), 0).unwrap();
    let err = e.install_policy(star_policy(&topo, 9), 0).unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::StaleEpoch {
                new: 9,
                current: 10
            }
        ),
        "{err}"
    );
}

#[test]
fn bad_engine_config_is_rejected_naming_the_field() {
    let topo = triangle();
    let mut cfg = EngineConfig::new(5, 3, 100);
    assert!(Engine::new(cfg.clone(), &topo)
        .unwrap_err()
        .to_string()
        .contains("node"));
    cfg.node = 0;
    cfg.segment_elems = 0;
    assert!(Engine::new(cfg.clone(), &topo)
        .unwrap_err()
        .to_string()
        .contains("segment_elems"));
    cfg.segment_elems = 352;
    cfg.ack_every = 0;
    assert!(Engine::new(cfg, &topo)
        .unwrap_err()
        .to_string()
        .contains("ack_every"));
}
