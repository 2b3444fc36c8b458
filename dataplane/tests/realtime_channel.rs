//! The poll-mode driver runs engines in real time on threads over the in-process port:
//! several rounds, every node bit-identical and equal to the reference sum.

use netstorm_dataplane::engine::{Engine, EngineConfig};
use netstorm_dataplane::policy::{ForwardMode, PolicyBuilder};
use netstorm_dataplane::port::{channel, run_engine, DriverConfig};
use netstorm_dataplane::topology::Topology;
use std::time::Duration;

fn input(v: usize, r: u32, i: usize) -> f32 {
    ((v * 31 + i * 3 + r as usize * 7) % 1000) as f32
}

#[test]
fn three_nodes_over_threads_several_rounds_exact() {
    let n = 3usize;
    let elems = 200_000;
    let topo = Topology::full_mesh(n, 20e9, 0);
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
    b.link_rates_from(&topo);
    let policy = b.build(1, n as u16);
    let ports = channel::mesh(n, 4096, 2048);
    let rounds = 3;
    let handles: Vec<_> = ports
        .into_iter()
        .enumerate()
        .map(|(v, mut port)| {
            let topo = topo.clone();
            let policy = policy.clone();
            std::thread::spawn(move || {
                let mut cfg = EngineConfig::new(v as u16, n as u16, elems);
                cfg.min_rto_ns = 20_000_000;
                let mut e = Engine::new(cfg, &topo).unwrap();
                e.install_policy(policy, 0).unwrap();
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
        for (r, buf) in results {
            for (i, &x) in buf.iter().enumerate() {
                let want: f32 = (0..n).map(|u| input(u, r, i)).sum();
                assert_eq!(x, want, "node {v} round {r} element {i}");
            }
        }
    }
}
