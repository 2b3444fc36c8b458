//! The poll-mode driver runs engines in real time on threads over kernel UDP sockets on
//! loopback (127.0.0.1 / ::1 only, bounded traffic): several rounds, every node bit-identical
//! and equal to the reference sum; strangers and garbage are dropped and counted.

use netstorm_dataplane::engine::{Counters, Engine, EngineConfig};
use netstorm_dataplane::policy::{ForwardMode, Policy, PolicyBuilder};
use netstorm_dataplane::port::udp::{UdpConfig, UdpCounters, UdpPort};
use netstorm_dataplane::port::{run_engine, DriverConfig, DriverReport, PacketBuf, Port};
use netstorm_dataplane::topology::Topology;
use netstorm_dataplane::NodeId;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

const N: usize = 3;
const ELEMS: usize = 100_000;
const ROUNDS: u32 = 3;

fn input(v: usize, r: u32, i: usize) -> f32 {
    ((v * 31 + i * 3 + r as usize * 7) % 1000) as f32
}

fn topology_and_policy() -> (Topology, Policy) {
    let topo = Topology::full_mesh(N, 5e9, 0);
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
    let policy = b.build(1, N as u16);
    (topo, policy)
}

fn loopback_config(gso_gro: bool) -> UdpConfig {
    let mut c = UdpConfig::new("127.0.0.1:0".parse().unwrap());
    c.gso = gso_gro;
    c.gro = gso_gro;
    c
}

/// `N` ports on loopback, each with the others (and `extra`) as peers.
fn open_mesh(gso_gro: bool, extra: &[(NodeId, SocketAddr)]) -> Vec<UdpPort> {
    let mut ports: Vec<UdpPort> = (0..N)
        .map(|_| UdpPort::open(&loopback_config(gso_gro)).unwrap())
        .collect();
    let addrs: Vec<SocketAddr> = ports.iter().map(|p| p.local_addr()).collect();
    for (v, p) in ports.iter_mut().enumerate() {
        let mut peers: Vec<(NodeId, SocketAddr)> = addrs
            .iter()
            .enumerate()
            .filter(|&(u, _)| u != v)
            .map(|(u, &a)| (u as NodeId, a))
            .collect();
        peers.extend_from_slice(extra);
        p.set_peers(&peers).unwrap();
    }
    ports
}

struct NodeRun {
    report: DriverReport,
    engine: Counters,
    udp: UdpCounters,
    results: Vec<(u32, Vec<f32>)>,
}

/// Runs `ROUNDS` rounds on `N` engines over `ports`, one thread each.
fn run_mesh(ports: Vec<UdpPort>) -> Vec<NodeRun> {
    let (topo, policy) = topology_and_policy();
    let handles: Vec<_> = ports
        .into_iter()
        .enumerate()
        .map(|(v, mut port)| {
            let topo = topo.clone();
            let policy = policy.clone();
            std::thread::spawn(move || {
                let mut cfg = EngineConfig::new(v as u16, N as u16, ELEMS);
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
                    ROUNDS,
                    |r, buf| {
                        buf.iter_mut()
                            .enumerate()
                            .for_each(|(i, x)| *x = input(v, r, i))
                    },
                    |r, buf| results.push((r, buf.to_vec())),
                )
                .unwrap();
                NodeRun {
                    report,
                    engine: *e.counters(),
                    udp: port.counters(),
                    results,
                }
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

/// Every node completed every round with the exact reference sum, bit-identical everywhere.
fn check_exact(runs: &[NodeRun]) {
    for (v, run) in runs.iter().enumerate() {
        assert_eq!(run.report.rounds_completed, ROUNDS, "node {v}");
        assert_eq!(run.results.len(), ROUNDS as usize, "node {v}");
        assert_eq!(run.udp.rx_unknown_peer, 0, "node {v}: {:?}", run.udp);
        assert_eq!(run.udp.rx_truncated, 0, "node {v}: {:?}", run.udp);
        for (r, buf) in &run.results {
            assert_eq!(buf.len(), ELEMS);
            for (i, &x) in buf.iter().enumerate() {
                let want: f32 = (0..N).map(|u| input(u, *r, i)).sum();
                assert_eq!(x, want, "node {v} round {r} element {i}");
            }
        }
    }
    for (v, run) in runs.iter().enumerate().skip(1) {
        for ((r, a), (_, b)) in run.results.iter().zip(&runs[0].results) {
            assert!(
                a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
                "node {v} round {r} differs from node 0 in some bit"
            );
        }
    }
}

#[test]
fn three_engines_over_udp_loopback_exact_with_gso_gro() {
    let runs = run_mesh(open_mesh(true, &[]));
    check_exact(&runs);
    for (v, run) in runs.iter().enumerate() {
        // Every datagram the driver saw came through the UDP port and vice versa.
        assert_eq!(run.report.rx_datagrams, run.udp.rx, "node {v}");
        assert_eq!(run.report.tx_datagrams, run.udp.tx, "node {v}");
        assert!(run.udp.tx > 0 && run.udp.rx_syscalls > 0 && run.udp.tx_syscalls > 0);
        assert_eq!(run.engine.rx_malformed, 0, "node {v}");
    }
}

#[test]
fn three_engines_over_udp_loopback_exact_without_gso_gro() {
    let ports = open_mesh(false, &[]);
    assert!(ports.iter().all(|p| !p.gso_enabled() && !p.gro_enabled()));
    let runs = run_mesh(ports);
    check_exact(&runs);
    for run in &runs {
        assert_eq!(run.udp.tx_gso_messages, 0);
        assert_eq!(run.udp.rx_gro_coalesced, 0);
        // Batching works: fewer send syscalls than datagrams.
        assert!(run.udp.tx_syscalls < run.udp.tx, "{:?}", run.udp);
    }
}

/// Receives on `port` until `want` datagrams came back or 5 s passed.
fn recv_until(port: &mut UdpPort, want: usize) -> Vec<(NodeId, Vec<u8>)> {
    let mut bufs = PacketBuf::batch(8, 2048);
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < want && Instant::now() < deadline {
        let k = port.recv_batch(&mut bufs).unwrap();
        got.extend(bufs[..k].iter().map(|b| (b.peer, b.bytes().to_vec())));
        if k == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    got
}

fn unknown_peer_dropped_and_counted(gso_gro: bool) {
    let mut a = UdpPort::open(&loopback_config(gso_gro)).unwrap();
    let mut b = UdpPort::open(&loopback_config(gso_gro)).unwrap();
    a.set_peers(&[(1, b.local_addr())]).unwrap();
    b.set_peers(&[(0, a.local_addr())]).unwrap();
    // Same host, another port: not in the table.
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..3u8 {
        stranger.send_to(&[0xEE, i], a.local_addr()).unwrap();
    }
    let mut msg = PacketBuf::new(64);
    msg.data[..5].copy_from_slice(b"hello");
    msg.len = 5;
    msg.peer = 0;
    assert_eq!(b.send_batch(std::slice::from_ref(&msg)).unwrap(), 1);
    let got = recv_until(&mut a, 1);
    assert_eq!(got, vec![(1, b"hello".to_vec())]);
    // Loopback delivery to one socket is in order: the strangers' datagrams came first.
    let c = a.counters();
    assert_eq!(c.rx_unknown_peer, 3, "{c:?}");
    assert_eq!((c.rx, c.rx_bytes), (1, 5), "{c:?}");
    // Nothing else is waiting.
    assert!(recv_until_quiet(&mut a).is_empty());
    assert_eq!(b.counters().tx, 1);
}

fn recv_until_quiet(port: &mut UdpPort) -> Vec<(NodeId, Vec<u8>)> {
    let mut bufs = PacketBuf::batch(8, 2048);
    let mut got = Vec::new();
    for _ in 0..20 {
        let k = port.recv_batch(&mut bufs).unwrap();
        got.extend(bufs[..k].iter().map(|b| (b.peer, b.bytes().to_vec())));
        std::thread::sleep(Duration::from_millis(1));
    }
    got
}

#[test]
fn datagram_from_outside_the_peer_table_is_dropped_and_counted() {
    unknown_peer_dropped_and_counted(true);
    unknown_peer_dropped_and_counted(false);
}

#[test]
fn oversized_datagram_from_a_peer_is_dropped_and_counted_as_truncated() {
    for gso_gro in [true, false] {
        let mut a = UdpPort::open(&loopback_config(gso_gro)).unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        a.set_peers(&[(4, peer.local_addr().unwrap())]).unwrap();
        peer.send_to(&[7u8; 3000], a.local_addr()).unwrap();
        peer.send_to(b"fits", a.local_addr()).unwrap();
        // Buffers of 2048 bytes: the 3000-byte datagram cannot be returned whole.
        assert_eq!(recv_until(&mut a, 1), vec![(4, b"fits".to_vec())]);
        let c = a.counters();
        assert_eq!(
            (c.rx_truncated, c.rx, c.rx_unknown_peer),
            (1, 1, 0),
            "{c:?}"
        );
    }
}

#[test]
fn gso_batch_arrives_as_separate_datagrams_in_order() {
    for gso_gro in [true, false] {
        let mut a = UdpPort::open(&loopback_config(gso_gro)).unwrap();
        let mut b = UdpPort::open(&loopback_config(gso_gro)).unwrap();
        a.set_peers(&[(1, b.local_addr())]).unwrap();
        b.set_peers(&[(0, a.local_addr())]).unwrap();
        // 40 datagrams of 1000 bytes and a short tail of 7: one GSO message when supported.
        let mut bufs = PacketBuf::batch(41, 1472);
        for (i, buf) in bufs.iter_mut().enumerate() {
            buf.len = if i == 40 { 7 } else { 1000 };
            buf.data[..buf.len].fill(i as u8);
            buf.peer = 0;
        }
        assert_eq!(b.send_batch(&bufs).unwrap(), 41);
        let got = recv_until(&mut a, 41);
        assert_eq!(got.len(), 41, "gso_gro={gso_gro}: {:?}", a.counters());
        for (i, (peer, data)) in got.iter().enumerate() {
            assert_eq!(*peer, 1);
            assert_eq!(data.len(), if i == 40 { 7 } else { 1000 });
            assert!(data.iter().all(|&x| x == i as u8), "datagram {i}");
        }
        let (ca, cb) = (a.counters(), b.counters());
        assert_eq!((cb.tx, ca.rx), (41, 41));
        if b.gso_enabled() {
            assert!(cb.tx_gso_messages >= 1 && cb.tx_syscalls == 1, "{cb:?}");
            if a.gro_enabled() {
                // The kernel kept the GSO message whole up to the GRO socket, which split it.
                assert!(ca.rx_gro_coalesced > 1, "{ca:?}");
            }
        } else {
            assert_eq!(cb.tx_gso_messages, 0);
        }
    }
}

#[test]
fn mixed_batch_to_two_peers_arrives_whole_and_in_order_per_peer() {
    for gso_gro in [true, false] {
        let mut tx = UdpPort::open(&loopback_config(gso_gro)).unwrap();
        let mut r1 = UdpPort::open(&loopback_config(gso_gro)).unwrap();
        let mut r2 = UdpPort::open(&loopback_config(!gso_gro)).unwrap();
        tx.set_peers(&[(1, r1.local_addr()), (2, r2.local_addr())])
            .unwrap();
        r1.set_peers(&[(0, tx.local_addr())]).unwrap();
        r2.set_peers(&[(0, tx.local_addr())]).unwrap();
        // Runs of equal lengths, a longer datagram after a shorter one, an empty datagram and
        // peer changes: every GSO grouping boundary.
        let plan: Vec<(NodeId, usize)> = (0..200)
            .map(|i: usize| {
                let peer = if (i / 7) % 3 == 2 { 2 } else { 1 };
                let len = match i % 11 {
                    10 => 0,
                    9 => 1472,
                    8 => 13,
                    _ => 900,
                };
                (peer, len)
            })
            .collect();
        let mut bufs = PacketBuf::batch(plan.len(), 1472);
        for (i, (b, &(peer, len))) in bufs.iter_mut().zip(&plan).enumerate() {
            b.peer = peer;
            b.len = len;
            b.data[..len].fill(i as u8);
        }
        let mut sent = 0;
        let deadline = Instant::now() + Duration::from_secs(5);
        while sent < bufs.len() && Instant::now() < deadline {
            sent += tx.send_batch(&bufs[sent..]).unwrap();
        }
        assert_eq!(sent, bufs.len());
        for (port, node) in [(&mut r1, 1), (&mut r2, 2)] {
            let want: Vec<(NodeId, Vec<u8>)> = plan
                .iter()
                .enumerate()
                .filter(|(_, &(p, _))| p == node)
                .map(|(i, &(_, len))| (0, vec![i as u8; len]))
                .collect();
            let got = recv_until(port, want.len());
            assert_eq!(got.len(), want.len(), "gso_gro={gso_gro} node {node}");
            assert!(
                got == want,
                "gso_gro={gso_gro} node {node}: content differs"
            );
        }
        if tx.gso_enabled() {
            assert!(tx.counters().tx_gso_messages > 0);
        }
    }
}

#[test]
fn ipv6_loopback_and_v4_peer_on_v6_socket() {
    let v6 = |gso_gro| {
        let mut c = UdpConfig::new("[::1]:0".parse().unwrap());
        c.gso = gso_gro;
        c.gro = gso_gro;
        UdpPort::open(&c)
    };
    let (Ok(mut a), Ok(mut b)) = (v6(true), v6(false)) else {
        eprintln!("skipping: no IPv6 loopback on this machine");
        return;
    };
    a.set_peers(&[(1, b.local_addr())]).unwrap();
    b.set_peers(&[(0, a.local_addr())]).unwrap();
    let mut msg = PacketBuf::new(64);
    msg.data[..3].copy_from_slice(b"six");
    msg.len = 3;
    msg.peer = 1;
    assert_eq!(a.send_batch(std::slice::from_ref(&msg)).unwrap(), 1);
    assert_eq!(recv_until(&mut b, 1), vec![(0, b"six".to_vec())]);
    // A dual-stack IPv6 socket reaches an IPv4 peer through a v4-mapped address, and the
    // reply from that peer is matched back to it.
    let mut c = UdpConfig::new("[::]:0".parse().unwrap());
    c.gso = false;
    let Ok(mut dual) = UdpPort::open(&c) else {
        eprintln!("skipping dual-stack part: cannot bind [::]");
        return;
    };
    let mut v4 = UdpPort::open(&loopback_config(true)).unwrap();
    let dual_at: SocketAddr = format!("127.0.0.1:{}", dual.local_addr().port())
        .parse()
        .unwrap();
    dual.set_peers(&[(7, v4.local_addr())]).unwrap();
    v4.set_peers(&[(8, dual_at)]).unwrap();
    msg.peer = 7;
    assert_eq!(dual.send_batch(std::slice::from_ref(&msg)).unwrap(), 1);
    assert_eq!(recv_until(&mut v4, 1), vec![(8, b"six".to_vec())]);
    msg.peer = 8;
    assert_eq!(v4.send_batch(std::slice::from_ref(&msg)).unwrap(), 1);
    assert_eq!(recv_until(&mut dual, 1), vec![(7, b"six".to_vec())]);
}

#[test]
fn garbage_datagrams_are_malformed_for_the_engine_and_change_nothing() {
    // A fourth socket in every node's peer table (as node 3, which the engines do not know)
    // sends garbage before and while the engines run: the port hands it up, the engine counts
    // it as malformed, and the results are still exact.
    let mut garbage = UdpPort::open(&loopback_config(true)).unwrap();
    let ports = open_mesh(true, &[(3, garbage.local_addr())]);
    let targets: Vec<(NodeId, SocketAddr)> = ports
        .iter()
        .enumerate()
        .map(|(v, p)| (v as NodeId, p.local_addr()))
        .collect();
    garbage.set_peers(&targets).unwrap();
    let payloads: [&[u8]; 5] = [
        &[],
        &[0x4E],
        &[0x4E, 0x53, 1, 0, 0, 0],
        &[0xFF; 48],
        &[0x4E, 0x53, 9, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    ];
    let mut bufs = PacketBuf::batch(payloads.len() * N, 64);
    for (k, buf) in bufs.iter_mut().enumerate() {
        let p = payloads[k % payloads.len()];
        buf.data[..p.len()].copy_from_slice(p);
        buf.len = p.len();
        buf.peer = (k / payloads.len()) as NodeId;
    }
    // Half before the engines start, half while they run.
    assert_eq!(garbage.send_batch(&bufs).unwrap(), bufs.len());
    let sender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(garbage.send_batch(&bufs).unwrap(), bufs.len());
        garbage.counters()
    });
    let runs = run_mesh(ports);
    let sent = sender.join().unwrap();
    assert_eq!(sent.tx, 2 * (payloads.len() * N) as u64);
    check_exact(&runs);
    for (v, run) in runs.iter().enumerate() {
        assert_eq!(
            run.engine.rx_malformed,
            2 * payloads.len() as u64,
            "node {v}: {:?}",
            run.engine
        );
    }
}
