//! Emulator + engine throughput: synchronized bytes per second of wall time.
//!
//! One round of a 100 MB buffer over the paper's 9-DC WAN (100 Mbit/s links) on a
//! single-root shortest-path policy, in virtual time, on one core.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use netstorm_controlplane::network::NetworkModel;
use netstorm_controlplane::planner::{baselines::SptPlanner, Planner};
use netstorm_dataplane::emu::{EmuConfig, Simulation};
use netstorm_dataplane::engine::{Engine, EngineConfig};
use netstorm_dataplane::policy::PolicyBuilder;
use netstorm_dataplane::protect::{Protection, ProtectionMode};
use netstorm_dataplane::scenario::Scenario;
use std::path::Path;

fn sync_round(c: &mut Criterion) {
    let scenario = Scenario::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/paper9-static100.toml"),
    )
    .unwrap();
    let topo = scenario.topology.clone();
    let net = NetworkModel::from_topology(topo.clone());
    let elems = 25_000_000; // 100 MB of f32
    let plan = SptPlanner.plan(&net, elems as f64 * 32.0).unwrap();
    let policy = plan.to_policy(&mut PolicyBuilder::new(), &net, 1);
    let n = topo.node_count();
    let mut group = c.benchmark_group("emu_engine");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(elems as u64 * 4));
    // Encrypted (the default), authenticated only, and unprotected: the cost end to end.
    for (name, mode) in [
        ("paper9_100MB_spt_round", ProtectionMode::Encrypt),
        (
            "paper9_100MB_spt_round_authenticate",
            ProtectionMode::Authenticate,
        ),
        ("paper9_100MB_spt_round_auth_off", ProtectionMode::Off),
    ] {
        let mut engines: Vec<Engine> = (0..n)
            .map(|v| {
                let cfg = EngineConfig {
                    protection: Protection::insecure(mode),
                    ..EngineConfig::new(v as u16, n as u16, elems)
                };
                let mut e = Engine::new(cfg, &topo).unwrap();
                e.install_policy(policy.clone(), 0).unwrap();
                e
            })
            .collect();
        let mut round = 0u32;
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut sim =
                    Simulation::new(&topo, std::mem::take(&mut engines), EmuConfig::default())
                        .unwrap();
                sim.run_round_all(round, 3_600_000_000_000).unwrap();
                round += 1;
                engines = std::mem::take(sim.engines_mut_vec());
            })
        });
    }
    group.finish();
}

criterion_group!(benches, sync_round);
criterion_main!(benches);
