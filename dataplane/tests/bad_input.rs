//! Bad input is counted and dropped, never panics, and never changes a synchronized result;
//! impossible policies and configs are rejected with the reason; forged packets (valid in
//! every field but without the job's key) are rejected by the AEAD tag.

use netstorm_dataplane::emu::{EmuConfig, Simulation};
use netstorm_dataplane::engine::{Engine, EngineConfig, EngineError};
use netstorm_dataplane::policy::{ForwardMode, PolicyBuilder, PolicyError, TreeEdge, WeightedPath};
use netstorm_dataplane::protect::{
    new_sender_start, JobSecret, Protection, ProtectionMode, Sealer,
};
use netstorm_dataplane::topology::{Link, Node, Topology};
use netstorm_dataplane::wire::{emit_packet, HeaderRepr, PacketKind, AUTH_TAG_LEN, HEADER_LEN};
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

/// The job's secret in these tests (what a deployment puts in its secret file).
fn secret() -> JobSecret {
    JobSecret::new(b"job-secret-key!!job-secret-key!!").unwrap()
}

/// Encrypted with [`secret`]: the deployment setting.
fn secret_protection() -> Protection {
    Protection::with_secret(ProtectionMode::Encrypt, secret())
}

/// How a test packet is tagged.
enum Tag<'a> {
    /// No tag (flags 0), as an attacker who ignores authentication would send.
    None,
    /// Sealed by this sealer: another key for a forger.
    With(&'a mut Sealer),
    /// Sealed by node 1's engine itself (an insider, or a replay of its packets).
    Insider(&'a mut Simulation),
}

/// A forger's sealer for node 1: `protection`'s keys, a start of its own.
fn forger(protection: &Protection) -> Sealer {
    Sealer::new(protection, 1, 0, 1, new_sender_start())
}

/// A reduce-data packet from node 1 to node 0 on `path`, round 0, one full segment of poison
/// values, tagged as `tag` says.
fn data_packet(job: u32, epoch: u32, path: u16, tree: u16, segment: u32, tag: Tag) -> Vec<u8> {
    let flags = match &tag {
        Tag::None => 0,
        Tag::With(s) => s.flags(),
        Tag::Insider(sim) => sim.engine(1).config().protection.mode.flags(),
    };
    let hdr = HeaderRepr {
        kind: PacketKind::ReduceData,
        flags,
        payload_len: 348 * 4,
        job,
        epoch,
        round: 0,
        tree,
        path,
        src: 1,
        dst: 0,
        seq: 0,
        segment,
        ttl: 1,
        timestamp_ns: 1,
        payload_type: netstorm_dataplane::wire::PayloadType::F32,
        ..HeaderRepr::default()
    };
    // Poison values: if any of these were ever added, the result checks would fail.
    let payload: Vec<u8> = (0..348).flat_map(|_| 1.0e9f32.to_le_bytes()).collect();
    let mut buf = vec![0u8; HEADER_LEN + payload.len() + AUTH_TAG_LEN];
    let n = emit_packet(&hdr, &payload, &mut buf).unwrap();
    let body = HEADER_LEN + payload.len();
    match tag {
        Tag::None => {}
        Tag::With(s) => assert_eq!(s.seal(&mut buf, body), n),
        Tag::Insider(sim) => assert_eq!(sim.engine_mut(1).seal_as_self(&mut buf, body), n),
    }
    buf.truncate(n);
    buf
}

/// The path id of the route `from -> to` in `policy`.
fn path_of(policy: &netstorm_dataplane::policy::Policy, from: u16, to: u16) -> u16 {
    policy
        .routes
        .iter()
        .position(|r| r.hops == [from, to])
        .expect("route exists") as u16
}

fn engines(
    topo: &Topology,
    policy: &netstorm_dataplane::policy::Policy,
    protection: Protection,
    elems: usize,
) -> Vec<Engine> {
    (0..3)
        .map(|v| {
            let cfg = EngineConfig {
                protection: protection.clone(),
                ..EngineConfig::new(v, 3, elems)
            };
            let mut e = Engine::new(cfg, topo).unwrap();
            e.install_policy(policy.clone(), 0).unwrap();
            e.buffer_mut()
                .iter_mut()
                .enumerate()
                .for_each(|(i, x)| *x = (i % 100) as f32 + v as f32);
            e
        })
        .collect()
}

fn result_is_exact(sim: &Simulation) -> bool {
    (0..3u16).all(|v| {
        sim.engine(v)
            .buffer()
            .iter()
            .enumerate()
            .all(|(i, &x)| x == 3.0 * (i % 100) as f32 + 3.0)
    })
}

#[test]
fn hostile_packets_are_counted_dropped_and_change_nothing() {
    let topo = triangle();
    let elems = 20_000;
    let policy = star_policy(&topo, 7);
    let path = path_of(&policy, 1, 0);
    let engines = engines(&topo, &policy, secret_protection(), elems);
    let mut sim = Simulation::new(&topo, engines, EmuConfig::default()).unwrap();
    for v in 0..3 {
        sim.schedule_start(v, 0, 0);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    // A forger knows every header field (job, epoch, path, sequence) but not the key.
    let mut forger = forger(&Protection::with_secret(
        ProtectionMode::Encrypt,
        JobSecret::new(&[0x5a; 32]).unwrap(),
    ));
    let forged = data_packet(1, 7, path, 0, 0, Tag::With(&mut forger));
    let mut injected = 0u64;
    // Interleave 10,000 random, mutated and forged packets with the real traffic.
    while sim.summary(0).is_none() {
        sim.step().unwrap();
        for _ in 0..20 {
            if injected >= 10_000 {
                break;
            }
            let pkt = match injected % 7 {
                0 => (0..rng.random_range(0..200))
                    .map(|_| rng.random())
                    .collect::<Vec<u8>>(),
                1 => {
                    let mut p = forged.clone();
                    for _ in 0..rng.random_range(1..4) {
                        let i = rng.random_range(0..p.len());
                        p[i] = rng.random();
                    }
                    p
                }
                2 => forged.clone(), // valid in every field, wrong key
                3 => data_packet(1, 7, path, 0, 0, Tag::None), // valid in every field, no tag
                4 => data_packet(99, 7, path, 0, 0, Tag::Insider(&mut sim)), // another job
                // Authentic but unusable (an insider's packet): the checks behind the tag
                // still hold.
                5 => data_packet(1, 3, path, 0, 0, Tag::Insider(&mut sim)), // stale epoch
                _ => data_packet(1, 7, path, 9, 99_999, Tag::Insider(&mut sim)), // no such tree
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
    assert!(result_is_exact(&sim), "a hostile packet changed the result");
    let total = |f: fn(&netstorm_dataplane::engine::Counters) -> u64| -> u64 {
        (0..3).map(|v| f(sim.engine(v).counters())).sum()
    };
    assert!(
        total(|c| c.rx_malformed) >= 1_000,
        "random packets must count as malformed"
    );
    assert!(total(|c| c.rx_wrong_job) >= 1_400);
    let bad_mac = total(|c| c.rx_bad_mac);
    assert!(
        bad_mac >= 2 * 1_428,
        "forged and untagged packets must fail the MAC ({bad_mac})"
    );
    // The insider's packets share node 1's packet numbers: those relayed through node 1
    // arrive behind the ones injected at node 0 directly, some beyond the replay window.
    let dropped = total(|c| {
        c.rx_stale_epoch + c.rx_invalid + c.rx_duplicate + c.rx_out_of_window + c.rx_replayed
    });
    assert!(
        dropped >= 2 * 1_428,
        "authentic stale-epoch and out-of-range packets must be dropped ({dropped})"
    );
}

/// Runs one round on the triangle with `protection`, injecting at node 0, as soon as it
/// started, a poison packet valid in every field (the next sequence number of the path
/// 1 -> 0) sealed by `sealer` (`None`: untagged). `sealer` gets node 1's sender start, as
/// an attacker reads it from node 1's packets. Returns the simulation after the round.
fn round_with_forgery(
    protection: Protection,
    sealer: Option<&dyn Fn(u64) -> Sealer>,
) -> Simulation {
    let topo = triangle();
    let policy = star_policy(&topo, 7);
    let path = path_of(&policy, 1, 0);
    let engines = engines(&topo, &policy, protection, 2_000);
    let mut sim = Simulation::new(&topo, engines, EmuConfig::default()).unwrap();
    for v in 0..3 {
        sim.schedule_start(v, 0, 0);
    }
    while !sim.engine(0).round_active() {
        sim.step().unwrap();
    }
    let now = sim.now();
    let mut sealer = sealer.map(|f| f(sim.engine(1).sender_start()));
    let tag = match sealer.as_mut() {
        Some(s) => Tag::With(s),
        None => Tag::None,
    };
    let pkt = data_packet(1, 7, path, 0, 0, tag);
    sim.engine_mut(0).handle_packet(now, &pkt);
    sim.run_round(0, 60_000_000_000).unwrap();
    sim
}

#[test]
fn a_forged_packet_valid_in_every_field_is_rejected_only_thanks_to_the_mac() {
    // Without authentication the forgery is indistinguishable and poisons the sum — this is
    // what the MAC is for (and shows the check below can fail).
    let sim = round_with_forgery(Protection::off(), None);
    assert!(!result_is_exact(&sim), "the forgery was expected to land");
    // With the job's secret, forged (another secret, even with node 1's start) and
    // untagged packets are dropped.
    let other = Protection::with_secret(
        ProtectionMode::Encrypt,
        JobSecret::new(&[0x5a; 32]).unwrap(),
    );
    let other_key = |start| Sealer::new(&other, 1, 0, 1, start);
    for sealer in [None, Some(&other_key as &dyn Fn(u64) -> Sealer)] {
        let sim = round_with_forgery(secret_protection(), sealer);
        assert!(result_is_exact(&sim), "a forged packet changed the result");
        assert_eq!(sim.engine(0).counters().rx_bad_mac, 1);
    }
    // The default (keys derived from the job id) also rejects a packet sealed with the
    // secret's keys.
    let with_secret = |start| Sealer::new(&secret_protection(), 1, 0, 1, start);
    let sim = round_with_forgery(Protection::default(), Some(&with_secret));
    assert!(result_is_exact(&sim));
    assert_eq!(sim.engine(0).counters().rx_bad_mac, 1);
    // ...but not one sealed with the public job-derived keys: that setting is integrity, not
    // secrecy (deployments configure a secret file). The forger numbers its packet ahead of
    // node 1's, within the replay window.
    let public =
        |start| Sealer::new(&Protection::default(), 1, 0, 1, start).with_first_packet_number(1500);
    let sim = round_with_forgery(Protection::default(), Some(&public));
    assert!(!result_is_exact(&sim));
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
