//! `netstorm bench`: data-plane backends and kernels measured on this machine, each reported
//! next to a reference as a ratio. Arguments and printing; the harnesses are in
//! `netstorm_node::bench`.
//!
//! * `bench udp` — the batched kernel UDP port (`recvmmsg`/`sendmmsg`, GSO/GRO) vs a plain
//!   one-datagram-per-syscall `std::net::UdpSocket` loop, sender and receiver threads on
//!   loopback (`scripts/bench-udp.sh` adds iperf3 as a second reference).
//! * `bench kernel` — the f32 aggregation kernel vs memcpy.
//! * `bench dataplane` — C children → one aggregating core → root on the emu, udp or dpdk
//!   backend (see `bench_dataplane.rs`).

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use netstorm_node::bench::udp::{UdpBenchConfig, UdpRun};
use serde::Serialize;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchCommand,
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Kernel UDP port (batched syscalls, GSO/GRO) vs a plain UdpSocket loop on loopback.
    Udp(UdpBenchArgs),
    /// Aggregation kernel vs memcpy at 4 KiB, 64 KiB and 64 MiB.
    Kernel(KernelBenchArgs),
    /// C child senders -> ONE aggregating core -> root, on the emu, udp or dpdk backend; the
    /// aggregator runs netstorm-dp's worker loop (the path netstorm-dp ships).
    Dataplane(crate::bench_dataplane::DataplaneBenchArgs),
}

#[derive(Args, Debug)]
pub struct UdpBenchArgs {
    /// UDP payload bytes per datagram.
    #[arg(long, default_value_t = 1408)]
    pub segment_bytes: usize,
    /// Seconds each side sends.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Also write the results as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Do not use UDP GSO/GRO in the port (batched syscalls only).
    #[arg(long)]
    pub no_offload: bool,
    /// Datagrams offered per `send_batch` / accepted per `recv_batch`.
    #[arg(long, default_value_t = 1024)]
    pub batch: usize,
    /// The port receiver sleeps this long after an empty poll (0 = pure busy-poll).
    #[arg(long, default_value_t = 0)]
    pub idle_sleep_us: u64,
}

#[derive(Args, Debug)]
pub struct KernelBenchArgs {
    /// Also write the results as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    match &args.what {
        BenchCommand::Udp(a) => run_udp(a),
        BenchCommand::Kernel(a) => run_kernel(a),
        BenchCommand::Dataplane(a) => crate::bench_dataplane::run(a),
    }
}

fn print_run(r: &UdpRun) {
    println!(
        "{:<14} {:>12.0} {:>10.2} {:>9.2} {:>7.1}% {:>9} {:>5} {:>5} {:>12} {:>12}",
        r.backend,
        r.datagrams_per_sec,
        r.payload_gbps,
        r.seconds,
        r.loss * 100.0,
        r.pinned,
        r.gso,
        r.gro,
        r.send_syscalls,
        r.recv_syscalls
    );
}

fn run_udp(a: &UdpBenchArgs) -> Result<()> {
    let report = netstorm_node::bench::udp::run_udp(&UdpBenchConfig {
        segment_bytes: a.segment_bytes,
        seconds: a.seconds,
        no_offload: a.no_offload,
        batch: a.batch,
        idle_sleep_us: a.idle_sleep_us,
    })?;
    println!(
        "UDP on loopback, {} B datagrams, {} s each (goodput = payload received):",
        a.segment_bytes, a.seconds
    );
    println!(
        "{:<14} {:>12} {:>10} {:>9} {:>8} {:>9} {:>5} {:>5} {:>12} {:>12}",
        "backend",
        "datagrams/s",
        "Gbit/s",
        "seconds",
        "loss",
        "pinned",
        "gso",
        "gro",
        "send calls",
        "recv calls"
    );
    print_run(&report.port);
    print_run(&report.plain);
    println!(
        "ratio udp-port / std-udpsocket: {:.2}x",
        report.ratio_port_vs_plain
    );
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct KernelRow {
    bytes: usize,
    iters: usize,
    kernel_gbps: f64,
    memcpy_gbps: f64,
    ratio: f64,
}

fn run_kernel(a: &KernelBenchArgs) -> Result<()> {
    println!("aggregation kernel vs memcpy (GB/s = 1e9 bytes/s; ratio 1.0 = memcpy speed):");
    println!(
        "{:>10} {:>8} {:>12} {:>12} {:>7}",
        "bytes", "iters", "kernel GB/s", "memcpy GB/s", "ratio"
    );
    let mut rows = Vec::new();
    for bytes in [4usize << 10, 64 << 10, 64 << 20] {
        // About 1 GiB through each side, at least 10 passes.
        let iters = ((1usize << 30) / bytes).max(10);
        let r = netstorm_dataplane::kernel::measure_kernel_vs_memcpy(bytes, iters);
        println!(
            "{:>10} {:>8} {:>12.2} {:>12.2} {:>6.2}x",
            bytes, iters, r.kernel_gbps, r.memcpy_gbps, r.ratio
        );
        rows.push(KernelRow {
            bytes,
            iters,
            kernel_gbps: r.kernel_gbps,
            memcpy_gbps: r.memcpy_gbps,
            ratio: r.ratio,
        });
    }
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&rows)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
