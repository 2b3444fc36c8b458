//! Bench: one aggregating node with 2 children over kernel UDP on loopback. The aggregator
//! (root of a single reduce + broadcast tree) runs on one pinned core, busy-polling; the two
//! children share the other core. Reports the child payload the aggregator absorbs (Gbit/s)
//! and p50/p99/p999 per-round latency (round start → result ready at the aggregator) from an
//! HDR histogram, and checks every result.
//!
//! ```text
//! cargo run --release -p netstorm-node --example aggregator_bench -- --elems 262144 --rounds 300
//! ```

use clap::Parser;
use hdrhistogram::Histogram;
use netstorm_dataplane::engine::{Engine, EngineConfig};
use netstorm_dataplane::policy::{ForwardMode, PolicyBuilder};
use netstorm_dataplane::port::udp::{UdpConfig, UdpPort};
use netstorm_dataplane::port::{run_engine, DriverConfig};
use netstorm_dataplane::topology::Topology;
use std::time::Duration;

#[derive(Debug, Parser)]
struct Args {
    /// f32 elements per round.
    #[arg(long, default_value_t = 262_144)]
    elems: usize,
    #[arg(long, default_value_t = 300)]
    rounds: u32,
    /// Rounds not counted (warm-up).
    #[arg(long, default_value_t = 20)]
    warmup: u32,
    /// Core of the aggregator; the children go on the next core (mod the core count).
    #[arg(long, default_value_t = 0)]
    core: usize,
}

fn input(v: usize, r: u32, i: usize) -> f32 {
    ((v * 131 + i * 7 + r as usize * 17) & 2047) as f32 - 1024.0
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let n = 3usize;
    // The star 0 <- {1, 2} runs over a full mesh; the policy uses only the star's links.
    let topo = Topology::full_mesh(n, 100e9, 0);
    let mut b = PolicyBuilder::new();
    b.tree(
        0,
        1.0,
        &[None, Some(0), Some(0)],
        &[None, Some(0), Some(0)],
        ForwardMode::Pipelined,
    );
    b.link_rates_from(&topo);
    let policy = b.build(1, n as u16);
    let mut ports: Vec<UdpPort> = (0..n)
        .map(|_| UdpPort::open(&UdpConfig::new("127.0.0.1:0".parse().expect("addr"))))
        .collect::<Result<_, _>>()?;
    let addrs: Vec<_> = ports.iter().map(|p| p.local_addr()).collect();
    for (v, p) in ports.iter_mut().enumerate() {
        let peers: Vec<_> = (0..n)
            .filter(|&u| u != v)
            .map(|u| (u as u16, addrs[u]))
            .collect();
        p.set_peers(&peers)?;
    }
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let total = a.rounds + a.warmup;
    let handles: Vec<_> = ports
        .into_iter()
        .enumerate()
        .map(|(v, mut port)| {
            let topo = topo.clone();
            let policy = policy.clone();
            let core = if cores.is_empty() {
                None
            } else {
                Some(cores[(a.core + usize::from(v > 0)) % cores.len()])
            };
            let elems = a.elems;
            std::thread::spawn(move || -> anyhow::Result<_> {
                if let Some(c) = core {
                    core_affinity::set_for_current(c);
                }
                let mut cfg = EngineConfig::new(v as u16, n as u16, elems);
                cfg.min_rto_ns = 20_000_000;
                let mut e = Engine::new(cfg, &topo)?;
                e.install_policy(policy, 0)?;
                let dcfg = DriverConfig {
                    // The aggregator busy-polls; the children (sharing a core) back off.
                    idle_backoff: (v > 0).then(|| Duration::from_micros(5)),
                    max_duration: Duration::from_secs(300),
                    ..DriverConfig::default()
                };
                let mut bad = 0u64;
                let report = run_engine(
                    &mut e,
                    &mut port,
                    &dcfg,
                    0,
                    total,
                    |r, buf| {
                        buf.iter_mut()
                            .enumerate()
                            .for_each(|(i, x)| *x = input(v, r, i))
                    },
                    |r, buf| {
                        bad += buf
                            .iter()
                            .enumerate()
                            .filter(|&(i, x)| {
                                let want: f32 = (0..3).map(|u| input(u, r, i)).sum();
                                x.to_bits() != want.to_bits()
                            })
                            .count() as u64
                    },
                )?;
                Ok((report, bad, port.counters()))
            })
        })
        .collect();
    let mut results = Vec::new();
    for h in handles {
        results.push(h.join().expect("thread")?);
    }
    let bad: u64 = results.iter().map(|r| r.1).sum();
    anyhow::ensure!(bad == 0, "{bad} elements differ from the reference sum");
    let (root, _, udp) = &results[0];
    let mut hist = Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3)?;
    let lat = &root.round_result_ns[a.warmup as usize..];
    for &ns in lat {
        hist.record(ns.max(1_000))?;
    }
    let measured_ns: u64 = lat.iter().sum();
    let child_bits = 2.0 * a.elems as f64 * 32.0 * lat.len() as f64;
    println!(
        "aggregator_bench: 1 aggregator + 2 children, UDP loopback, {} elements ({:.2} MB) per round, {} rounds (+{} warm-up), aggregator pinned to core {}",
        a.elems,
        a.elems as f64 * 4.0 / 1e6,
        a.rounds,
        a.warmup,
        a.core
    );
    println!(
        "aggregator_bench: child payload into the aggregator: {:.2} Gbit/s (over the sum of per-round times)",
        child_bits / measured_ns as f64
    );
    println!(
        "aggregator_bench: per-round latency (start -> result at the aggregator): p50 {:.3} ms, p99 {:.3} ms, p999 {:.3} ms, max {:.3} ms",
        hist.value_at_quantile(0.5) as f64 / 1e6,
        hist.value_at_quantile(0.99) as f64 / 1e6,
        hist.value_at_quantile(0.999) as f64 / 1e6,
        hist.max() as f64 / 1e6
    );
    println!(
        "aggregator_bench: aggregator udp: rx {} datagrams ({} GRO-coalesced), tx {} ({} GSO messages), tx would-block {}; all results bit-identical",
        udp.rx, udp.rx_gro_coalesced, udp.tx, udp.tx_gso_messages, udp.tx_would_block
    );
    Ok(())
}
