//! The poll-mode driver runs engines in real time on threads over the in-process port
//! (one engine per thread, or several taking turns on one thread): several rounds, every
//! node bit-identical and equal to the reference sum.

use netstorm_dataplane::engine::{Engine, EngineConfig};
use netstorm_dataplane::policy::{ForwardMode, Policy, PolicyBuilder};
use netstorm_dataplane::port::{channel, run_engine, run_engines, DriverConfig};
use netstorm_dataplane::topology::Topology;
use std::time::Duration;

fn input(v: usize, r: u32, i: usize) -> f32 {
    ((v * 31 + i * 3 + r as usize * 7) % 1000) as f32
}

/// Two trees over three nodes, rooted at 0 and 2.
fn two_tree_policy(topo: &Topology) -> Policy {
    let mut b = PolicyBuilder::new();
    b.tree(
        0,
        0.5,
        &[None, Some(0), Some(1)],
        &[None, Some(0), Some(0)],
        ForwardMode::Pipelined,
    );
    b.tree(
        2,
        0.5,
        &[Some(2), Some(2), None],
        &[Some(1), Some(2), None],
        ForwardMode::Pipelined,
    );
    b.link_rates_from(topo);
    b.build(1, topo.node_count() as u16)
}

fn engine(v: usize, n: usize, elems: usize, topo: &Topology, policy: &Policy) -> Engine {
    let mut cfg = EngineConfig::new(v as u16, n as u16, elems);
    cfg.min_rto_ns = 20_000_000;
    let mut e = Engine::new(cfg, topo).unwrap();
    e.install_policy(policy.clone(), 0).unwrap();
    e
}

fn check(v: usize, n: usize, results: &[(u32, Vec<f32>)]) {
    for (r, buf) in results {
        for (i, &x) in buf.iter().enumerate() {
            let want: f32 = (0..n).map(|u| input(u, *r, i)).sum();
            assert_eq!(x, want, "node {v} round {r} element {i}");
        }
    }
}

/// Node 0 runs alone on its thread; nodes 1 and 2 take turns on another (`run_engines`), as
/// `netstorm bench dataplane` runs its load generator on a shared core.
#[test]
fn two_engines_taking_turns_on_one_thread_exact() {
    let n = 3usize;
    let elems = 100_000;
    let rounds = 3;
    let topo = Topology::full_mesh(n, 20e9, 0);
    let policy = two_tree_policy(&topo);
    let mut ports = channel::mesh(n, 4096, 2048).into_iter();
    let dcfg = DriverConfig {
        idle_backoff: Some(Duration::from_micros(20)),
        max_duration: Duration::from_secs(120),
        ..DriverConfig::default()
    };
    let (mut port0, mut port1, mut port2) = (
        ports.next().unwrap(),
        ports.next().unwrap(),
        ports.next().unwrap(),
    );
    let mut e0 = engine(0, n, elems, &topo, &policy);
    let mut e1 = engine(1, n, elems, &topo, &policy);
    let mut e2 = engine(2, n, elems, &topo, &policy);
    let (r0, shared) = std::thread::scope(|s| {
        let alone = s.spawn(|| {
            let mut results = Vec::new();
            let report = run_engine(
                &mut e0,
                &mut port0,
                &dcfg,
                0,
                rounds,
                |r, buf| {
                    buf.iter_mut()
                        .enumerate()
                        .for_each(|(i, x)| *x = input(0, r, i))
                },
                |r, buf| results.push((r, buf.to_vec())),
            )
            .unwrap();
            (report, results)
        });
        let shared = s.spawn(|| {
            let mut results: [Vec<(u32, Vec<f32>)>; 2] = Default::default();
            let mut nodes = [(&mut e1, &mut port1), (&mut e2, &mut port2)];
            let reports = run_engines(
                &mut nodes,
                &dcfg,
                0,
                rounds,
                |k, r, buf| {
                    buf.iter_mut()
                        .enumerate()
                        .for_each(|(i, x)| *x = input(k + 1, r, i))
                },
                |k, r, buf| results[k].push((r, buf.to_vec())),
            )
            .unwrap();
            (reports, results)
        });
        (alone.join().unwrap(), shared.join().unwrap())
    });
    assert_eq!(r0.0.rounds_completed, rounds, "node 0");
    check(0, n, &r0.1);
    let (reports, results) = shared;
    assert_eq!(reports.len(), 2);
    for k in 0..2 {
        assert_eq!(reports[k].rounds_completed, rounds, "node {}", k + 1);
        assert_eq!(results[k].len(), rounds as usize, "node {}", k + 1);
        check(k + 1, n, &results[k]);
    }
}

#[test]
fn three_nodes_over_threads_several_rounds_exact() {
    let n = 3usize;
    let elems = 200_000;
    let topo = Topology::full_mesh(n, 20e9, 0);
    let policy = two_tree_policy(&topo);
    let ports = channel::mesh(n, 4096, 2048);
    let rounds = 3;
    let handles: Vec<_> = ports
        .into_iter()
        .enumerate()
        .map(|(v, mut port)| {
            let mut e = engine(v, n, elems, &topo, &policy);
            std::thread::spawn(move || {
                let dcfg = DriverConfig {
                    idle_backoff: Some(Duration::from_micros(20)),
                    max_duration: Duration::from_secs(120),
                    ..DriverConfig::default()
                };
                let mut results = Vec::new();
                let report = run_engine(
                    &mut e,
                    &mut port,
                    &dcfg,
                    0,
                    rounds,
                    |r, buf| {
                        buf.iter_mut()
                            .enumerate()
                            .for_each(|(i, x)| *x = input(v, r, i))
                    },
                    |r, buf| results.push((r, buf.to_vec())),
                )
                .unwrap();
                (report, results)
            })
        })
        .collect();
    for (v, h) in handles.into_iter().enumerate() {
        let (report, results) = h.join().unwrap();
        assert_eq!(report.rounds_completed, rounds, "node {v}");
        assert_eq!(results.len(), rounds as usize, "node {v}");
        check(v, n, &results);
    }
}
