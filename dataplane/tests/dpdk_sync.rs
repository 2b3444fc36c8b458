//! DPDK port tests (feature `dpdk`; skipped when the crate was built without libdpdk).
//!
//! One process, one EAL (`--no-huge --no-pci`, a `net_ring0` vdev): engines on threads, each
//! with its own `DpdkPort` on a ring-backed ethdev, joined by an in-process Ethernet switch
//! ([`RingFabric`]); results must be bit-identical and equal to the reference sum.
#![cfg(feature = "dpdk")]

use netstorm_dataplane::engine::{Engine, EngineConfig};
use netstorm_dataplane::policy::{ForwardMode, PolicyBuilder};
use netstorm_dataplane::port::dpdk::{
    eal_init, DpdkError, DpdkPort, DpdkPortConfig, EalConfig, MacAddr, NeighbourConfig, RingFabric,
    RingLinks,
};
use netstorm_dataplane::port::{run_engine, DriverConfig, PacketBuf, Port, PortError};
use netstorm_dataplane::topology::Topology;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

const UDP_PORT: u16 = 4791;

/// The one EAL config of this test process (EAL initializes once per process).
fn eal() -> EalConfig {
    let mut e = EalConfig::virtual_devices(&["net_ring0"]);
    e.memory_mb = 1024;
    e.file_prefix = Some(format!("netstorm-test-{}", std::process::id()));
    e
}

/// Tests share one EAL memory budget (`-m`); one of them deliberately exhausts it, so they
/// run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// `None` (and a message) when DPDK is not linked into this build; otherwise the EAL is up
/// and the returned guard serializes the tests.
fn dpdk_or_skip(test: &str) -> Option<MutexGuard<'static, ()>> {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !netstorm_dpdk_available() {
        eprintln!("skipping {test}: netstorm-dpdk-sys was built without libdpdk");
        return None;
    }
    eal_init(&eal()).expect("EAL init");
    Some(guard)
}

fn netstorm_dpdk_available() -> bool {
    !matches!(eal_init(&eal()), Err(DpdkError::NotLinked))
}

fn ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, i as u8 + 1)
}

/// Port config for node `me` of `n` on fabric device `dev` (full neighbour table).
fn port_cfg(dev: &str, me: usize, n: usize) -> DpdkPortConfig {
    let mut c = DpdkPortConfig::new(dev, me as u16, ip(me), UDP_PORT);
    c.mac = Some(MacAddr::local(me as u16));
    c.mempool_mbufs = 4095;
    c.rx_desc = 512;
    c.tx_desc = 512;
    c.neighbours = (0..n)
        .filter(|&v| v != me)
        .map(|v| NeighbourConfig {
            node: v as u16,
            mac: MacAddr::local(v as u16),
            ip: ip(v),
            udp_port: UDP_PORT,
        })
        .collect();
    c
}

/// Runs the switch on its own thread until the returned flag is set; joins to the fabric.
fn spawn_switch(mut fabric: RingFabric) -> (Arc<AtomicBool>, std::thread::JoinHandle<RingFabric>) {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let h = std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            if fabric.pump() == 0 {
                std::thread::sleep(Duration::from_micros(10));
            }
        }
        fabric
    });
    (stop, h)
}

/// Receives `want` datagrams from `port` (polling for at most 5 s) into a batch of `room`
/// buffers; fails if fewer arrive.
fn recv_datagrams(port: &mut DpdkPort, want: usize, room: usize) -> Vec<PacketBuf> {
    let mut rx = PacketBuf::batch(room, 2048);
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while got < want && Instant::now() < deadline {
        got += port.recv_batch(&mut rx[got..]).unwrap();
    }
    assert_eq!(got, want, "datagrams received");
    rx
}

fn input(v: usize, r: u32, i: usize) -> f32 {
    ((v * 31 + i * 3 + r as usize * 7) % 1000) as f32
}

/// Three engines over DPDK ports; every node's result is checked element by element.
fn three_node_sync(prefix: &str, drop_every: Option<u64>, elems: usize, rounds: u32) -> RingFabric {
    let n = 3usize;
    let fabric = RingFabric::new(prefix, n, 4096, drop_every).expect("ring fabric");
    let devices = fabric.devices.clone();
    let topo = Topology::full_mesh(n, 5e9, 0);
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
    let (stop, switch) = spawn_switch(fabric);
    let handles: Vec<_> = (0..n)
        .map(|v| {
            let mut port =
                DpdkPort::open(&eal(), &port_cfg(&devices[v], v, n)).expect("open DPDK port");
            let topo = topo.clone();
            let policy = policy.clone();
            std::thread::spawn(move || {
                let mut cfg = EngineConfig::new(v as u16, n as u16, elems);
                cfg.min_rto_ns = 20_000_000;
                let mut e = Engine::new(cfg, &topo).unwrap();
                e.install_policy(policy, 0).unwrap();
                let dcfg = DriverConfig {
                    idle_backoff: Some(Duration::from_micros(20)),
                    max_duration: Duration::from_secs(60),
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
                );
                (report, results, port.stats.clone())
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for h in handles {
        outcomes.push(h.join().expect("engine thread"));
    }
    stop.store(true, Ordering::Relaxed);
    let fabric = switch.join().expect("switch thread");
    for (v, (report, results, stats)) in outcomes.into_iter().enumerate() {
        let report = report.unwrap_or_else(|e| panic!("node {v}: {e}"));
        assert_eq!(report.rounds_completed, rounds, "node {v}");
        assert_eq!(results.len(), rounds as usize, "node {v}");
        assert!(
            stats.rx_datagrams > 0 && stats.tx_frames > 0,
            "node {v}: {stats:?}"
        );
        assert_eq!(
            stats.rx_bad_checksum + stats.rx_unknown_neighbour + stats.rx_not_for_us,
            0,
            "node {v}: {stats:?}"
        );
        for (r, buf) in results {
            for (i, &x) in buf.iter().enumerate() {
                let want: f32 = (0..n).map(|u| input(u, r, i)).sum();
                assert_eq!(
                    x.to_bits(),
                    want.to_bits(),
                    "node {v} round {r} element {i}"
                );
            }
        }
    }
    fabric
}

#[test]
fn three_nodes_sync_over_dpdk_ports_bit_identical() {
    let Some(_serial) = dpdk_or_skip("three_nodes_sync_over_dpdk_ports_bit_identical") else {
        return;
    };
    let t = Instant::now();
    let fabric = three_node_sync("nsa", None, 200_000, 3);
    eprintln!(
        "3 nodes x 3 rounds x 200000 f32 over DPDK: {:?}, {} frames switched, {} dropped",
        t.elapsed(),
        fabric.forwarded,
        fabric.dropped
    );
    // Per round and segment: two reduce hops and two broadcast hops, whichever tree.
    let data_frames = 3 * 4 * (200_000 / 352);
    assert!(
        fabric.forwarded >= data_frames,
        "{} < {data_frames}",
        fabric.forwarded
    );
    assert_eq!(fabric.dropped, 0);
}

#[test]
fn lossy_fabric_still_exact_over_dpdk_ports() {
    let Some(_serial) = dpdk_or_skip("lossy_fabric_still_exact_over_dpdk_ports") else {
        return;
    };
    let fabric = three_node_sync("nsb", Some(53), 60_000, 2);
    assert!(fabric.dropped > 0, "loss was injected");
}

#[test]
fn vdev_loopback_round_trips_datagrams() {
    let Some(_serial) = dpdk_or_skip("vdev_loopback_round_trips_datagrams") else {
        return;
    };
    // net_ring0 (from --vdev) loops tx back to rx: "node 1" is our own address.
    let mut c = DpdkPortConfig::new("net_ring0", 0, ip(0), UDP_PORT);
    c.mempool_mbufs = 2047;
    c.rx_desc = 256;
    c.tx_desc = 256;
    c.neighbours = vec![NeighbourConfig {
        node: 1,
        mac: MacAddr::local(0),
        ip: ip(0),
        udp_port: UDP_PORT,
    }];
    let mut port = DpdkPort::open(&eal(), &c).expect("open net_ring0");
    let avail_before = port.pool_available();
    let mut tx = PacketBuf::batch(40, port.max_datagram_len());
    for (k, b) in tx.iter_mut().enumerate() {
        b.len = 1 + k * 36;
        b.peer = 1;
        for (j, x) in b.data[..b.len].iter_mut().enumerate() {
            *x = (k * 7 + j) as u8;
        }
    }
    tx[39].len = port.max_datagram_len();
    assert_eq!(port.send_batch(&tx).unwrap(), 40);
    let rx = recv_datagrams(&mut port, 40, 64);
    for (a, b) in tx.iter().zip(&rx) {
        assert_eq!(b.peer, 1);
        assert_eq!(a.bytes(), b.bytes());
    }
    assert_eq!(
        port.pool_available(),
        avail_before,
        "every mbuf returned to the pool"
    );
    // Too long, unknown peer: errors, nothing sent.
    tx[0].len = port.max_datagram_len() + 1;
    assert!(matches!(port.send_batch(&tx[..1]), Err(PortError::Other(m)) if m.contains("exceeds")));
    tx[0].len = 10;
    tx[0].peer = 9;
    assert!(matches!(
        port.send_batch(&tx[..1]),
        Err(PortError::UnknownPeer(9))
    ));
    // The same device cannot be opened twice.
    let e = DpdkPort::open(&eal(), &c).unwrap_err();
    assert!(matches!(e, DpdkError::DeviceBusy { .. }), "{e}");
}

#[test]
fn foreign_and_unknown_frames_are_dropped_and_counted() {
    let Some(_serial) = dpdk_or_skip("foreign_and_unknown_frames_are_dropped_and_counted") else {
        return;
    };
    let fabric = RingFabric::new("nsc", 2, 1024, None).unwrap();
    let devs = fabric.devices.clone();
    let (stop, switch) = spawn_switch(fabric);
    // Node 0 believes node 1 listens on another UDP port; node 1 does not know node 0.
    let mut c0 = port_cfg(&devs[0], 0, 2);
    c0.neighbours[0].udp_port = UDP_PORT + 1;
    c0.mempool_mbufs = 2047;
    let mut c1 = port_cfg(&devs[1], 1, 2);
    c1.mempool_mbufs = 2047;
    let mut p0 = DpdkPort::open(&eal(), &c0).unwrap();
    let p1 = DpdkPort::open(&eal(), &c1).unwrap();
    let mut tx = PacketBuf::batch(5, 256);
    tx.iter_mut().for_each(|b| {
        b.len = 100;
        b.peer = 1;
    });
    assert_eq!(p0.send_batch(&tx).unwrap(), 5);
    c1.neighbours.clear();
    drop(p1);
    // Reopen node 1 without node 0 in its table, on its correct port: unknown neighbour.
    c0.neighbours[0].udp_port = UDP_PORT;
    let mut p1b = DpdkPort::open(&eal(), &c1).unwrap();
    let mut rx = PacketBuf::batch(8, 2048);
    let deadline = Instant::now() + Duration::from_secs(5);
    while p1b.stats.rx_frames < 5 && Instant::now() < deadline {
        assert_eq!(p1b.recv_batch(&mut rx).unwrap(), 0);
    }
    assert_eq!(p1b.stats.rx_not_for_us, 5, "{:?}", p1b.stats);
    drop(p0);
    let mut p0b = DpdkPort::open(&eal(), &c0).unwrap();
    assert_eq!(p0b.send_batch(&tx).unwrap(), 5);
    let deadline = Instant::now() + Duration::from_secs(5);
    while p1b.stats.rx_frames < 10 && Instant::now() < deadline {
        assert_eq!(p1b.recv_batch(&mut rx).unwrap(), 0);
    }
    assert_eq!(p1b.stats.rx_unknown_neighbour, 5, "{:?}", p1b.stats);
    assert_eq!(p1b.stats.rx_datagrams, 0);
    let _ = p0b.recv_batch(&mut rx);
    stop.store(true, Ordering::Relaxed);
    switch.join().unwrap();
}

#[test]
fn bad_setup_gives_errors_naming_the_key() {
    let Some(_serial) = dpdk_or_skip("bad_setup_gives_errors_naming_the_key") else {
        return;
    };
    // A second EAL init with other arguments.
    let mut other = eal();
    other.vdevs.push("net_ring1".into());
    let e = eal_init(&other).unwrap_err();
    assert!(matches!(e, DpdkError::EalAlreadyInitialized { .. }), "{e}");
    assert!(e.to_string().contains("--vdev=net_ring1"), "{e}");
    // A device that does not exist.
    let c = DpdkPortConfig::new("net_nosuch7", 0, ip(0), UDP_PORT);
    let e = DpdkPort::open(&eal(), &c).unwrap_err();
    assert!(matches!(e, DpdkError::NoSuchDevice { .. }), "{e}");
    assert!(
        e.to_string().contains("net_nosuch7") && e.to_string().contains("device"),
        "{e}"
    );
    // A mempool that cannot be allocated within -m 1024.
    let fabric = RingFabric::new("nsd", 1, 256, None).unwrap();
    let mut c = port_cfg(&fabric.devices[0], 0, 1);
    c.mempool_mbufs = 2_000_000;
    let e = DpdkPort::open(&eal(), &c).unwrap_err();
    assert!(matches!(e, DpdkError::Mempool { .. }), "{e}");
    assert!(e.to_string().contains("mempool_mbufs"), "{e}");
    // ...and the device is usable afterwards with a sane pool.
    c.mempool_mbufs = 2047;
    DpdkPort::open(&eal(), &c).expect("reopen after a failed pool");
    // Invalid config is rejected before touching DPDK.
    c.rx_desc = 100;
    let e = DpdkPort::open(&eal(), &c).unwrap_err();
    assert!(e.to_string().contains("rx_desc"), "{e}");
}

#[test]
fn one_queue_pair_per_worker() {
    let Some(_serial) = dpdk_or_skip("one_queue_pair_per_worker") else {
        return;
    };
    let workers = 3;
    let fabric = RingFabric::with_queues("nse", 2, workers, 1024, None).unwrap();
    let devs = fabric.devices.clone();
    let (stop, switch) = spawn_switch(fabric);
    let mut c0 = port_cfg(&devs[0], 0, 2);
    let mut c1 = port_cfg(&devs[1], 1, 2);
    for c in [&mut c0, &mut c1] {
        c.workers = workers as u16;
        c.rx_desc = 256;
        c.tx_desc = 256;
        c.mempool_mbufs = 4095;
    }
    let e = DpdkPort::open(&eal(), &c0).unwrap_err();
    assert!(e.to_string().contains("workers"), "{e}");
    let mut w0 = DpdkPort::open_workers(&eal(), &c0).unwrap();
    let mut w1 = DpdkPort::open_workers(&eal(), &c1).unwrap();
    assert_eq!((w0.len(), w1.len()), (workers, workers));
    // Each worker of node 0 sends on its own queue; worker q of node 1 receives them on queue q.
    let handles: Vec<_> = w0
        .drain(..)
        .zip(w1.drain(..))
        .enumerate()
        .map(|(q, (mut a, mut b))| {
            std::thread::spawn(move || {
                assert_eq!((a.queue(), b.queue()), (q as u16, q as u16));
                let mut tx = PacketBuf::batch(16, 512);
                for (k, t) in tx.iter_mut().enumerate() {
                    t.len = 10 + k;
                    t.peer = 1;
                    t.data[..t.len].fill(q as u8);
                }
                let mut sent = 0;
                let mut rx = PacketBuf::batch(32, 2048);
                let mut got = 0;
                let deadline = Instant::now() + Duration::from_secs(5);
                while got < 160 && Instant::now() < deadline {
                    if sent < 160 {
                        sent += a.send_batch(&tx).unwrap();
                    }
                    let n = b.recv_batch(&mut rx).unwrap();
                    for r in &rx[..n] {
                        assert_eq!(r.peer, 0);
                        assert!(
                            r.bytes().iter().all(|&x| x == q as u8),
                            "queue {q} got another worker's frame"
                        );
                    }
                    got += n;
                }
                assert_eq!(got, sent, "worker {q}");
                got
            })
        })
        .collect();
    for h in handles {
        assert!(h.join().unwrap() >= 160);
    }
    stop.store(true, Ordering::Relaxed);
    switch.join().unwrap();
}

#[test]
fn vdev_loopback_throughput() {
    let Some(_serial) = dpdk_or_skip("vdev_loopback_throughput") else {
        return;
    };
    let fabric = RingFabric::new("nsf", 1, 4096, None).unwrap();
    let mut c = port_cfg(&fabric.devices[0], 0, 1);
    // Node 1 is our own address through the ring (tx ring = where the switch would read).
    c.neighbours = vec![NeighbourConfig {
        node: 1,
        mac: MacAddr::local(0),
        ip: ip(0),
        udp_port: UDP_PORT,
    }];
    let mut port = DpdkPort::open(&eal(), &c).unwrap();
    let (stop, switch) = spawn_switch(fabric);
    let max = port.max_datagram_len();
    let mut tx = PacketBuf::batch(32, max);
    tx.iter_mut().for_each(|b| {
        b.len = max;
        b.peer = 1;
    });
    let mut rx = PacketBuf::batch(64, 2048);
    let total = 200_000u64;
    let (mut sent, mut got) = (0u64, 0u64);
    let t = Instant::now();
    while got < total && t.elapsed() < Duration::from_secs(20) {
        if sent < total {
            sent += port.send_batch(&tx).unwrap() as u64;
        }
        got += port.recv_batch(&mut rx).unwrap() as u64;
    }
    let secs = t.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let fabric = switch.join().unwrap();
    eprintln!(
        "DPDK port via ring fabric (tx -> switch thread -> rx, one core each): {got} x {max} B in {secs:.3} s = {:.2} Mpps, {:.2} Gbit/s of datagrams; {:?}",
        got as f64 / secs / 1e6,
        got as f64 * max as f64 * 8.0 / secs / 1e9,
        port.stats
    );
    assert!(
        got >= total - fabric.dropped,
        "got {got}, dropped {}",
        fabric.dropped
    );
    assert_eq!(port.stats.rx_datagrams, got);
}

#[test]
fn interleaved_destinations_leave_in_one_burst_per_link() {
    let Some(_serial) = dpdk_or_skip("interleaved_destinations_leave_in_one_burst_per_link") else {
        return;
    };
    // Node 0 with a link to and from each of nodes 1 and 2: one tx queue per destination.
    let links =
        RingLinks::new("burst", 3, &[(0, 1), (0, 2), (1, 0), (2, 0)], 256).expect("ring links");
    let open = |v: usize| {
        let mut c = port_cfg(&links.devices[v], v, 3);
        c.mempool_mbufs = 1023;
        c.rx_desc = 256;
        c.tx_desc = 256;
        links.open_port(&eal(), &c).expect("open ring-links port")
    };
    let (mut p0, mut p1, mut p2) = (open(0), open(1), open(2));
    // The engine interleaves destinations (1, 2, 1, 2, ...): 20 datagrams, 10 per link.
    let mut scratch = PacketBuf::batch(32, p0.max_datagram_len());
    let mut k = 0u8;
    let (written, sent) = p0
        .send_each(&mut scratch, &mut |out| {
            if k == 20 {
                return None;
            }
            let to = 1 + (k % 2) as u16;
            out[..3].copy_from_slice(&[k, k ^ 0x5a, 7]);
            k += 1;
            Some((to, 3))
        })
        .expect("send_each");
    assert_eq!((written, sent), (20, 20));
    assert_eq!(p0.stats.tx_frames, 20);
    assert_eq!(
        p0.stats.tx_bursts, 2,
        "one burst per tx queue, not one per switch"
    );
    // Each destination gets its ten, in the order they were written.
    for (port, first) in [(&mut p1, 0u8), (&mut p2, 1u8)] {
        let rx = recv_datagrams(port, 10, 32);
        for (i, b) in rx[..10].iter().enumerate() {
            let k = first + 2 * i as u8;
            assert_eq!(b.peer, 0);
            assert_eq!(b.bytes(), &[k, k ^ 0x5a, 7]);
        }
    }
}
