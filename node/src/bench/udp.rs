//! `netstorm bench udp`: the batched kernel UDP port (`recvmmsg`/`sendmmsg`, GSO/GRO) vs a
//! plain one-datagram-per-syscall `std::net::UdpSocket` loop, sender and receiver threads on
//! loopback, pinned to two cores when there are two (`scripts/bench-udp.sh` adds iperf3 as a
//! second reference).

use super::BenchError;
use netstorm_dataplane::port::udp::{UdpConfig, UdpPort, MAX_UDP_PAYLOAD};
use netstorm_dataplane::port::{PacketBuf, Port, PortError};
use serde::Serialize;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

/// What `bench udp` runs (the CLI's flags).
#[derive(Debug, Clone, PartialEq)]
pub struct UdpBenchConfig {
    /// UDP payload bytes per datagram.
    pub segment_bytes: usize,
    /// Seconds each side sends.
    pub seconds: f64,
    /// Do not use UDP GSO/GRO in the port (batched syscalls only).
    pub no_offload: bool,
    /// Datagrams offered per `send_batch` / accepted per `recv_batch`.
    pub batch: usize,
    /// The port receiver sleeps this long after an empty poll (0 = pure busy-poll).
    pub idle_sleep_us: u64,
}

/// Runs the port, then the plain socket loop, and compares them.
pub fn run_udp(a: &UdpBenchConfig) -> Result<UdpReport, BenchError> {
    if a.segment_bytes == 0 || a.segment_bytes > MAX_UDP_PAYLOAD {
        return Err(BenchError::Invalid(format!(
            "--segment-bytes {} is not in 1..={MAX_UDP_PAYLOAD}",
            a.segment_bytes
        )));
    }
    if !(a.seconds > 0.0 && a.seconds <= 600.0) {
        return Err(BenchError::Invalid(format!(
            "--seconds {} is not in (0, 600]",
            a.seconds
        )));
    }
    if a.batch == 0 || a.batch > 1 << 16 {
        return Err(BenchError::Invalid(format!(
            "--batch {} is not in 1..=65536",
            a.batch
        )));
    }
    let port = bench_port(a)?;
    let plain = bench_plain(a)?;
    let ratio_port_vs_plain = port.payload_gbps / plain.payload_gbps.max(1e-12);
    Ok(UdpReport {
        port,
        plain,
        ratio_port_vs_plain,
    })
}

/// One side-by-side measurement of a UDP sender/receiver pair.
#[derive(Debug, Clone, Serialize)]
pub struct UdpRun {
    pub backend: String,
    pub segment_bytes: usize,
    pub seconds: f64,
    pub sent_datagrams: u64,
    pub received_datagrams: u64,
    /// Received datagrams per second.
    pub datagrams_per_sec: f64,
    /// Received UDP payload, Gbit/s (1e9 bit/s).
    pub payload_gbps: f64,
    /// Sent-but-not-received fraction (receive-buffer overflow on loopback).
    pub loss: f64,
    pub pinned: bool,
    pub gso: bool,
    pub gro: bool,
    pub send_syscalls: u64,
    pub recv_syscalls: u64,
}

/// The result of `bench udp` (the JSON written by `--json`).
#[derive(Debug, Clone, Serialize)]
pub struct UdpReport {
    pub port: UdpRun,
    pub plain: UdpRun,
    /// `port.payload_gbps / plain.payload_gbps`.
    pub ratio_port_vs_plain: f64,
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

fn bench_port(a: &UdpBenchConfig) -> Result<UdpRun, BenchError> {
    let lo: SocketAddr = "127.0.0.1:0".parse().expect("an address");
    let mut cfg = UdpConfig::new(lo);
    cfg.max_datagram_len = a.segment_bytes;
    cfg.gso = !a.no_offload;
    cfg.gro = !a.no_offload;
    cfg.socket_buffer_bytes = Some(16 << 20);
    let mut tx = UdpPort::open(&cfg).map_err(BenchError::udp("opening the sending UDP port"))?;
    let mut rx = UdpPort::open(&cfg).map_err(BenchError::udp("opening the receiving UDP port"))?;
    tx.set_peers(&[(1, rx.local_addr())])
        .map_err(BenchError::udp("the sending port's peer"))?;
    rx.set_peers(&[(0, tx.local_addr())])
        .map_err(BenchError::udp("the receiving port's peer"))?;
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
        Ok::<_, PortError>((received, rx.counters(), pinned))
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
        let n = tx.send_batch(&bufs).map_err(BenchError::port("sending"))?;
        sent += n as u64;
        if n == 0 {
            std::hint::spin_loop();
        }
    }
    let elapsed = t0.elapsed();
    stop.store(true, Ordering::Release);
    let (received, rc, rx_pinned) = receiver
        .join()
        .map_err(|_| BenchError::Run("receiver thread panicked".into()))?
        .map_err(BenchError::port("receiving"))?;
    let tc = tx.counters();
    let mut r = finish("udp-port", seg, elapsed, sent, received);
    r.pinned = pinned && rx_pinned;
    r.gso = gso;
    r.gro = gro;
    r.send_syscalls = tc.tx_syscalls;
    r.recv_syscalls = rc.rx_syscalls;
    Ok(r)
}

fn bench_plain(a: &UdpBenchConfig) -> Result<UdpRun, BenchError> {
    let rx =
        UdpSocket::bind("127.0.0.1:0").map_err(BenchError::io("binding the receiving socket"))?;
    let tx =
        UdpSocket::bind("127.0.0.1:0").map_err(BenchError::io("binding the sending socket"))?;
    let to = rx
        .local_addr()
        .map_err(BenchError::io("the receiving socket"))?;
    rx.set_read_timeout(Some(Duration::from_millis(10)))
        .map_err(BenchError::io("the receiving socket"))?;
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
        .map_err(|_| BenchError::Run("receiver thread panicked".into()))?;
    let mut r = finish("std-udpsocket", seg, elapsed, sent, received);
    r.pinned = pinned && rx_pinned;
    r.send_syscalls = calls;
    r.recv_syscalls = rx_calls;
    Ok(r)
}
