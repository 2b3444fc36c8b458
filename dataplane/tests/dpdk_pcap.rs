//! Writes a pcap of NetStorm frames (Ethernet/IPv4/UDP built by the DPDK port's framing around
//! real wire-format datagrams) and, when `tcpdump` is installed, has it decode and verify them
//! (IPv4 header and UDP checksums). Feature `dpdk`; needs no DPDK runtime.
//! `NETSTORM_PCAP_OUT=<path>` keeps the file (scripts/dpdk-testpmd-interop.sh uses it).
#![cfg(feature = "dpdk")]

use netstorm_dataplane::port::dpdk::{emit_frame, FrameAddrs, MacAddr, FRAME_HEADER_LEN};
use netstorm_dataplane::wire::{emit_packet, HeaderRepr, PacketKind};
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::Command;

/// Classic libpcap file: global header, then (ts, caplen, len, bytes) per frame.
fn write_pcap(path: &std::path::Path, frames: &[Vec<u8>]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    let mut h = Vec::new();
    h.extend_from_slice(&0xa1b2c3d4u32.to_le_bytes()); // magic (microseconds)
    h.extend_from_slice(&2u16.to_le_bytes());
    h.extend_from_slice(&4u16.to_le_bytes());
    h.extend_from_slice(&0i32.to_le_bytes()); // thiszone
    h.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
    h.extend_from_slice(&65535u32.to_le_bytes()); // snaplen
    h.extend_from_slice(&1u32.to_le_bytes()); // LINKTYPE_ETHERNET
    for (i, fr) in frames.iter().enumerate() {
        h.extend_from_slice(&1_700_000_000u32.to_le_bytes());
        h.extend_from_slice(&(i as u32 * 10).to_le_bytes());
        h.extend_from_slice(&(fr.len() as u32).to_le_bytes());
        h.extend_from_slice(&(fr.len() as u32).to_le_bytes());
        h.extend_from_slice(fr);
    }
    f.write_all(&h)
}

#[test]
fn pcap_of_netstorm_frames_decodes_as_valid_udp() {
    let mut frames = Vec::new();
    for (i, elems) in [0usize, 1, 7, 100, 352].into_iter().enumerate() {
        for csum in [true, false] {
            let payload: Vec<u8> = (0..elems).flat_map(|e| (e as f32).to_le_bytes()).collect();
            let repr = HeaderRepr {
                kind: if elems == 0 {
                    PacketKind::Control
                } else {
                    PacketKind::ReduceData
                },
                ttl: 8,
                job: 1,
                round: i as u32,
                src: 0,
                dst: 1,
                seq: i as u32,
                segment: i as u32,
                ..HeaderRepr::default()
            };
            let mut dgram = vec![0u8; 2048];
            let n = emit_packet(&repr, &payload, &mut dgram).expect("datagram");
            let mut frame = vec![0u8; FRAME_HEADER_LEN + n];
            frame[FRAME_HEADER_LEN..].copy_from_slice(&dgram[..n]);
            let addrs = FrameAddrs {
                src_mac: MacAddr::local(0),
                dst_mac: MacAddr::local(1),
                src_ip: Ipv4Addr::new(10, 0, 0, 1),
                dst_ip: Ipv4Addr::new(10, 0, 0, 2),
                src_port: 4791,
                dst_port: 4792,
            };
            emit_frame(&addrs, i as u16, n, csum, &mut frame);
            frames.push(frame);
        }
    }
    let path = match std::env::var_os("NETSTORM_PCAP_OUT") {
        Some(p) => std::path::PathBuf::from(p),
        None => std::env::temp_dir().join(format!("netstorm-frames-{}.pcap", std::process::id())),
    };
    write_pcap(&path, &frames).expect("write pcap");
    let out = match Command::new("tcpdump")
        .args(["-nn", "-vv", "-r"])
        .arg(&path)
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            eprintln!(
                "skipping the tcpdump check: cannot run tcpdump ({e}); pcap at {}",
                path.display()
            );
            return;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tcpdump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    let udp = text.matches("10.0.0.1.4791 > 10.0.0.2.4792: [").count();
    assert_eq!(
        udp,
        frames.len(),
        "every frame decodes as UDP 10.0.0.1:4791 > 10.0.0.2:4792"
    );
    assert_eq!(
        text.matches("udp sum ok").count(),
        frames.len() / 2,
        "UDP checksums verified"
    );
    assert_eq!(
        text.matches("no cksum").count(),
        frames.len() / 2,
        "checksum-less frames"
    );
    assert!(
        !text.contains("bad"),
        "tcpdump found a bad checksum or length:\n{text}"
    );
    assert!(!text.contains("truncated"), "{text}");
    if std::env::var_os("NETSTORM_PCAP_OUT").is_none() {
        let _ = std::fs::remove_file(&path);
    }
}
