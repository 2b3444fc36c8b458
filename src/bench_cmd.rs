//! `netstorm bench`: data-plane backends and kernels measured on this machine, each reported
//! next to a reference as a ratio.
//!
//! * `bench udp` — the batched kernel UDP port (`recvmmsg`/`sendmmsg`, GSO/GRO) vs a plain
//!   one-datagram-per-syscall `std::net::UdpSocket` loop, sender and receiver threads on
//!   loopback (`scripts/bench-udp.sh` adds iperf3 as a second reference).
//! * `bench kernel` — the f32 aggregation kernel vs memcpy.
//! * `bench dataplane` — C children → one aggregating core → root on the emu, udp or dpdk
//!   backend (see `bench_dataplane.rs`).

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use netstorm_dataplane::port::udp::{UdpConfig, UdpPort};
use netstorm_dataplane::port::{PacketBuf, Port};
use serde::Serialize;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

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
    /// C child senders -> ONE aggregating core -> root, on the emu, udp or dpdk backend.
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

/// One side-by-side measurement of a UDP sender/receiver pair.
#[derive(Debug, Clone, Serialize)]
struct UdpRun {
    backend: String,
    segment_bytes: usize,
    seconds: f64,
    sent_datagrams: u64,
    received_datagrams: u64,
    /// Received datagrams per second.
    datagrams_per_sec: f64,
    /// Received UDP payload, Gbit/s (1e9 bit/s).
    payload_gbps: f64,
    /// Sent-but-not-received fraction (receive-buffer overflow on loopback).
    loss: f64,
    pinned: bool,
    gso: bool,
    gro: bool,
    send_syscalls: u64,
    recv_syscalls: u64,
}

#[derive(Debug, Serialize)]
struct UdpReport {
    port: UdpRun,
    plain: UdpRun,
    /// `port.payload_gbps / plain.payload_gbps`.
    ratio_port_vs_plain: f64,
}

/// Pins the calling thread to the `i`-th core of those this process may use at its first
/// call, when there are at least two (the list is taken once: after a thread is pinned, it
/// would only see its own core).
fn pin(i: usize) -> bool {
    static CORES: OnceLock<Vec<core_affinity::CoreId>> = OnceLock::new();
    let cores = CORES.get_or_init(|| core_affinity::get_core_ids().unwrap_or_default());
    cores.len() >= 2 && core_affinity::set_for_current(cores[i % cores.len()])
}

fn finish(
    backend: &str,
    segment_bytes: usize,
    elapsed: Duration,
    sent: u64,
    received: u64,
) -> UdpRun {
    let secs = elapsed.as_secs_f64().max(1e-9);
    UdpRun {
        backend: backend.into(),
        segment_bytes,
        seconds: secs,
        sent_datagrams: sent,
        received_datagrams: received,
        datagrams_per_sec: received as f64 / secs,
        payload_gbps: (received * segment_bytes as u64) as f64 * 8.0 / secs / 1e9,
        loss: if sent == 0 {
            0.0
        } else {
            1.0 - received as f64 / sent as f64
        },
        pinned: false,
        gso: false,
        gro: false,
        send_syscalls: 0,
        recv_syscalls: 0,
    }
}

/// How long the receiver keeps draining after the sender stopped.
const DRAIN: Duration = Duration::from_millis(100);

fn bench_port(a: &UdpBenchArgs) -> Result<UdpRun> {
    let lo: SocketAddr = "127.0.0.1:0".parse()?;
    let mut cfg = UdpConfig::new(lo);
    cfg.max_datagram_len = a.segment_bytes;
    cfg.gso = !a.no_offload;
    cfg.gro = !a.no_offload;
    cfg.socket_buffer_bytes = Some(16 << 20);
    let mut tx = UdpPort::open(&cfg).context("opening the sending UDP port")?;
    let mut rx = UdpPort::open(&cfg).context("opening the receiving UDP port")?;
    tx.set_peers(&[(1, rx.local_addr())])?;
    rx.set_peers(&[(0, tx.local_addr())])?;
    let (gso, gro) = (tx.gso_enabled(), rx.gro_enabled());
    let run_for = Duration::from_secs_f64(a.seconds);
    let batch = a.batch;
    let seg = a.segment_bytes;
    let idle = (a.idle_sleep_us > 0).then(|| Duration::from_micros(a.idle_sleep_us));
    let start = Arc::new(Barrier::new(2));
    let stop = Arc::new(AtomicBool::new(false));
    let (start2, stop2) = (start.clone(), stop.clone());
    let receiver = std::thread::spawn(move || {
        let pinned = pin(1);
        let mut bufs = PacketBuf::batch(batch, seg);
        let mut received = 0u64;
        start2.wait();
        let mut quiet_since: Option<Instant> = None;
        loop {
            let k = rx.recv_batch(&mut bufs)?;
            received += bufs[..k].iter().filter(|b| b.len == seg).count() as u64;
            if k > 0 {
                quiet_since = None;
            } else if stop2.load(Ordering::Acquire) {
                let q = *quiet_since.get_or_insert_with(Instant::now);
                if q.elapsed() >= DRAIN {
                    break;
                }
            } else if let Some(d) = idle {
                std::thread::sleep(d);
            }
        }
        anyhow::Ok((received, rx.counters(), pinned))
    });
    let pinned = pin(0);
    let mut bufs = PacketBuf::batch(batch, seg);
    for b in &mut bufs {
        b.len = seg;
        b.peer = 1;
    }
    start.wait();
    let t0 = Instant::now();
    let mut sent = 0u64;
    while t0.elapsed() < run_for {
        let n = tx.send_batch(&bufs)?;
        sent += n as u64;
        if n == 0 {
            std::hint::spin_loop();
        }
    }
    let elapsed = t0.elapsed();
    stop.store(true, Ordering::Release);
    let (received, rc, rx_pinned) = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("receiver thread panicked"))??;
    let tc = tx.counters();
    let mut r = finish("udp-port", seg, elapsed, sent, received);
    r.pinned = pinned && rx_pinned;
    r.gso = gso;
    r.gro = gro;
    r.send_syscalls = tc.tx_syscalls;
    r.recv_syscalls = rc.rx_syscalls;
    Ok(r)
}

fn bench_plain(a: &UdpBenchArgs) -> Result<UdpRun> {
    let rx = UdpSocket::bind("127.0.0.1:0").context("binding the receiving socket")?;
    let tx = UdpSocket::bind("127.0.0.1:0").context("binding the sending socket")?;
    let to = rx.local_addr()?;
    rx.set_read_timeout(Some(Duration::from_millis(10)))?;
    let run_for = Duration::from_secs_f64(a.seconds);
    let seg = a.segment_bytes;
    let start = Arc::new(Barrier::new(2));
    let stop = Arc::new(AtomicBool::new(false));
    let (start2, stop2) = (start.clone(), stop.clone());
    let receiver = std::thread::spawn(move || {
        let pinned = pin(1);
        let mut buf = vec![0u8; seg.max(1) + 1];
        let (mut received, mut calls) = (0u64, 0u64);
        start2.wait();
        let mut quiet_since: Option<Instant> = None;
        loop {
            calls += 1;
            match rx.recv_from(&mut buf) {
                Ok((n, _)) => {
                    received += u64::from(n == seg);
                    quiet_since = None;
                }
                Err(_) if stop2.load(Ordering::Acquire) => {
                    let q = *quiet_since.get_or_insert_with(Instant::now);
                    if q.elapsed() >= DRAIN {
                        break;
                    }
                }
                Err(_) => {}
            }
        }
        (received, calls, pinned)
    });
    let pinned = pin(0);
    let payload = vec![0u8; seg];
    start.wait();
    let t0 = Instant::now();
    let (mut sent, mut calls) = (0u64, 0u64);
    while t0.elapsed() < run_for {
        calls += 1;
        if tx.send_to(&payload, to).is_ok() {
            sent += 1;
        }
    }
    let elapsed = t0.elapsed();
    stop.store(true, Ordering::Release);
    let (received, rx_calls, rx_pinned) = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("receiver thread panicked"))?;
    let mut r = finish("std-udpsocket", seg, elapsed, sent, received);
    r.pinned = pinned && rx_pinned;
    r.send_syscalls = calls;
    r.recv_syscalls = rx_calls;
    Ok(r)
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
    if a.segment_bytes == 0 || a.segment_bytes > netstorm_dataplane::port::udp::MAX_UDP_PAYLOAD {
        bail!(
            "--segment-bytes {} is not in 1..={}",
            a.segment_bytes,
            netstorm_dataplane::port::udp::MAX_UDP_PAYLOAD
        );
    }
    if !(a.seconds > 0.0 && a.seconds <= 600.0) {
        bail!("--seconds {} is not in (0, 600]", a.seconds);
    }
    if a.batch == 0 || a.batch > 1 << 16 {
        bail!("--batch {} is not in 1..=65536", a.batch);
    }
    let port = bench_port(a)?;
    let plain = bench_plain(a)?;
    let ratio = port.payload_gbps / plain.payload_gbps.max(1e-12);
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
    print_run(&port);
    print_run(&plain);
    println!("ratio udp-port / std-udpsocket: {ratio:.2}x");
    if let Some(path) = &a.json {
        let report = UdpReport {
            port,
            plain,
            ratio_port_vs_plain: ratio,
        };
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
