//! Interop with an independent implementation: `dpdk-testpmd` in `5tswap` mode (swaps MACs,
//! IPv4 addresses and UDP ports after parsing the headers itself) at the server end of a
//! `net_memif` pair; NetStorm's `DpdkPort` at the client end sends datagrams to "node 1"
//! (10.0.0.2:4792) and must get every one back as a valid frame *from* node 1, byte for byte.
//!
//! Run by scripts/dpdk-testpmd-interop.sh, which starts testpmd and sets
//! `NETSTORM_TESTPMD_MEMIF_SOCKET`; without that variable (or without DPDK) the test skips.
#![cfg(feature = "dpdk")]

use netstorm_dataplane::port::dpdk::{
    DpdkError, DpdkPort, DpdkPortConfig, EalConfig, MacAddr, NeighbourConfig,
};
use netstorm_dataplane::port::{PacketBuf, Port};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

#[test]
fn testpmd_5tswap_reflects_netstorm_frames() {
    let Some(sock) = std::env::var_os("NETSTORM_TESTPMD_MEMIF_SOCKET") else {
        eprintln!(
            "skipping: NETSTORM_TESTPMD_MEMIF_SOCKET not set (run scripts/dpdk-testpmd-interop.sh)"
        );
        return;
    };
    let sock = sock.to_string_lossy().into_owned();
    let mut eal =
        EalConfig::virtual_devices(&[&format!("net_memif0,role=client,id=0,socket={sock}")]);
    eal.memory_mb = 512;
    eal.file_prefix = Some(format!("netstorm-interop-{}", std::process::id()));
    let mut cfg = DpdkPortConfig::new("net_memif0", 0, Ipv4Addr::new(10, 0, 0, 1), 4791);
    cfg.mac = Some(MacAddr::local(0));
    cfg.mempool_mbufs = 4095;
    cfg.rx_desc = 512;
    cfg.tx_desc = 512;
    cfg.neighbours = vec![NeighbourConfig {
        node: 1,
        mac: MacAddr::local(1),
        ip: Ipv4Addr::new(10, 0, 0, 2),
        udp_port: 4792,
    }];
    let mut port = match DpdkPort::open(&eal, &cfg) {
        Err(DpdkError::NotLinked) => {
            eprintln!("skipping: built without libdpdk");
            return;
        }
        r => r.expect("open the memif client port"),
    };
    let max = port.max_datagram_len();
    let mut tx = PacketBuf::batch(32, max);
    let mut rx = PacketBuf::batch(64, 2048);
    let total = 512usize;
    let payload = |k: usize, b: &mut PacketBuf| {
        b.len = 1 + (k * 131) % max;
        if k % 64 == 63 {
            b.len = max;
        }
        b.peer = 1;
        for (j, x) in b.data[..b.len].iter_mut().enumerate() {
            *x = (k * 13 + j * 7) as u8;
        }
    };
    // The memif link comes up asynchronously: probe until the first reflection arrives.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(
            Instant::now() < deadline,
            "no frame came back from testpmd within 10 s: {:?}",
            port.stats
        );
        payload(0, &mut tx[0]);
        port.send_batch(&tx[..1]).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        if port.recv_batch(&mut rx).unwrap() > 0 {
            break;
        }
    }
    // Drain stragglers of the probing phase.
    std::thread::sleep(Duration::from_millis(100));
    while port.recv_batch(&mut rx).unwrap() > 0 {}
    let before = port.stats.clone();
    let t = Instant::now();
    let (mut sent, mut got) = (0usize, 0usize);
    let deadline = Instant::now() + Duration::from_secs(10);
    while got < total && Instant::now() < deadline {
        if sent < total {
            let k = (total - sent).min(tx.len());
            for (i, b) in tx[..k].iter_mut().enumerate() {
                payload(sent + i, b);
            }
            let s = port.send_batch(&tx[..k]).unwrap();
            sent += s;
        }
        let n = port.recv_batch(&mut rx).unwrap();
        for b in &rx[..n] {
            let mut want = PacketBuf::new(max);
            payload(got, &mut want);
            assert_eq!(b.peer, 1, "reflected frame {got} attributed to node 1");
            assert_eq!(
                b.bytes(),
                want.bytes(),
                "frame {got} came back intact and in order"
            );
            got += 1;
        }
    }
    let s = &port.stats;
    eprintln!(
        "testpmd 5tswap interop: {got}/{total} datagrams reflected in {:?}; stats {s:?}",
        t.elapsed()
    );
    assert_eq!(got, total, "stats {s:?}");
    assert_eq!(
        s.rx_bad_checksum + s.rx_not_for_us + s.rx_unknown_neighbour + s.rx_malformed,
        0,
        "{s:?}"
    );
    assert_eq!(s.rx_datagrams - before.rx_datagrams, total as u64);
}
