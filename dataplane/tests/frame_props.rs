//! Property tests for the Ethernet/IPv4/UDP framing the DPDK port uses
//! (`netstorm_dataplane::wire::{ethernet, ipv4, udp, frame}`), without libdpdk: no input makes
//! a parser panic, what is emitted parses back to what was emitted, the send fast path
//! (`HeaderTemplate`) writes what `emit_frame` writes, and the checksums catch a flipped bit.
//! The fuzz target `udp_frame` and its corpus replay (`tests/fuzz_corpus.rs`) cover the same
//! parsers from the other side.

use netstorm_dataplane::wire::frame::{
    emit_frame, parse_frame, FrameAddrs, FrameDrop, HeaderTemplate, FRAME_HEADER_LEN,
};
use netstorm_dataplane::wire::{
    udp_checksum, EthernetFrame, EthernetRepr, Ipv4Packet, Ipv4Repr, MacAddr, UdpPacket, UdpRepr,
    ETHERTYPE_IPV4, ETH_HEADER_LEN, IPPROTO_UDP, IPV4_HEADER_LEN, MAX_DATAGRAM_LEN, UDP_HEADER_LEN,
};
use proptest::prelude::*;
use std::net::Ipv4Addr;

fn arb_addrs() -> impl Strategy<Value = FrameAddrs> {
    (
        any::<[u8; 6]>(),
        any::<[u8; 6]>(),
        any::<[u8; 4]>(),
        any::<[u8; 4]>(),
        any::<u16>(),
        any::<u16>(),
    )
        .prop_map(|(sm, dm, si, di, sp, dp)| FrameAddrs {
            src_mac: MacAddr(sm),
            dst_mac: MacAddr(dm),
            src_ip: Ipv4Addr::from(si),
            dst_ip: Ipv4Addr::from(di),
            src_port: sp,
            dst_port: dp,
        })
}

/// A frame as `emit_frame` writes it.
fn framed(a: &FrameAddrs, ident: u16, payload: &[u8], udp_csum: bool) -> Vec<u8> {
    let mut f = vec![0u8; FRAME_HEADER_LEN + payload.len()];
    f[FRAME_HEADER_LEN..].copy_from_slice(payload);
    let n = emit_frame(a, ident, payload.len(), udp_csum, &mut f);
    assert_eq!(n, f.len());
    f
}

/// Every parser and accessor over `bytes`: nothing may panic.
fn touch_everything(bytes: &[u8]) {
    let _ = parse_frame(bytes);
    for view in [bytes, bytes.get(ETH_HEADER_LEN..).unwrap_or(&[])] {
        let eth = EthernetFrame::new_unchecked(view);
        let _ = (
            eth.dst_addr(),
            eth.src_addr(),
            eth.ethertype(),
            eth.payload(),
        );
        let _ = EthernetRepr::parse(&eth);
        let ip = Ipv4Packet::new_unchecked(view);
        let _ = (ip.version(), ip.header_len(), ip.total_len(), ip.ident());
        let _ = (ip.is_fragment(), ip.ttl(), ip.protocol(), ip.checksum());
        let _ = (
            ip.src_addr(),
            ip.dst_addr(),
            ip.verify_checksum(),
            ip.payload(),
        );
        let _ = (Ipv4Packet::new_checked(view), Ipv4Repr::parse(&ip));
        let udp = UdpPacket::new_unchecked(view);
        let (s, d) = (ip.src_addr(), ip.dst_addr());
        let _ = (udp.src_port(), udp.dst_port(), udp.len(), udp.payload());
        let _ = (udp.verify_checksum(s, d), UdpPacket::new_checked(view));
        let _ = UdpRepr::parse(&udp, s, d);
    }
}

/// A valid frame with a few bytes overwritten, truncated or extended: reaches the checks a
/// uniformly random input never gets past.
fn arb_damaged_frame() -> impl Strategy<Value = Vec<u8>> {
    (
        arb_addrs(),
        prop::collection::vec(any::<u8>(), 0..64),
        any::<bool>(),
        prop::collection::vec((0usize..200, any::<u8>()), 0..4),
        prop::option::of(0usize..200),
        0usize..24,
    )
        .prop_map(|(a, payload, csum, edits, cut, pad)| {
            let mut f = framed(&a, 1, &payload, csum);
            f.extend(std::iter::repeat_n(0, pad));
            for (at, byte) in edits {
                let at = at % f.len();
                f[at] = byte;
            }
            if let Some(cut) = cut {
                f.truncate(cut.min(f.len()));
            }
            f
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn parsing_never_panics_on_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..160)) {
        touch_everything(&bytes);
    }

    #[test]
    fn parsing_never_panics_on_damaged_frames(bytes in arb_damaged_frame()) {
        touch_everything(&bytes);
        // Whatever is accepted holds its datagram inside the frame.
        if let Ok(p) = parse_frame(&bytes) {
            prop_assert!(p.payload_offset + p.payload_len <= bytes.len());
        }
    }

    #[test]
    fn emit_then_parse_round_trips(
        a in arb_addrs(),
        ident in any::<u16>(),
        payload in prop::collection::vec(any::<u8>(), 0..1500),
        udp_csum in any::<bool>(),
        padding in 0usize..46,
    ) {
        let mut f = framed(&a, ident, &payload, udp_csum);
        f.extend(std::iter::repeat_n(0xa5, padding)); // Ethernet padding is not payload
        let p = parse_frame(&f).unwrap();
        prop_assert_eq!(p.addrs, a);
        prop_assert_eq!(&f[p.payload_offset..p.payload_offset + p.payload_len], &payload[..]);
        // Layer by layer, the same.
        let eth = EthernetFrame::new_checked(&f[..]).unwrap();
        prop_assert_eq!(
            EthernetRepr::parse(&eth).unwrap(),
            EthernetRepr { src_addr: a.src_mac, dst_addr: a.dst_mac, ethertype: ETHERTYPE_IPV4 }
        );
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        let ip_repr = Ipv4Repr::parse(&ip).unwrap();
        prop_assert_eq!(
            (ip_repr.src_addr, ip_repr.dst_addr, ip_repr.protocol, ip_repr.ident),
            (a.src_ip, a.dst_ip, IPPROTO_UDP, ident)
        );
        prop_assert_eq!(ip_repr.payload_len, UDP_HEADER_LEN + payload.len());
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        prop_assert_eq!(udp.checksum() != 0, udp_csum);
        let udp_repr = UdpRepr::parse(&udp, a.src_ip, a.dst_ip).unwrap();
        prop_assert_eq!(
            udp_repr,
            UdpRepr { src_port: a.src_port, dst_port: a.dst_port, payload_len: payload.len() }
        );
        prop_assert_eq!(udp.payload(), &payload[..]);
        prop_assert_eq!(
            eth_len() + ip_repr.buffer_len(),
            FRAME_HEADER_LEN + payload.len()
        );
    }

    #[test]
    fn reprs_emit_what_they_parse(
        a in arb_addrs(),
        ident in any::<u16>(),
        ttl in any::<u8>(),
        payload in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        // IPv4 alone, with a TTL of our choosing.
        let ip_repr = Ipv4Repr {
            src_addr: a.src_ip,
            dst_addr: a.dst_ip,
            protocol: IPPROTO_UDP,
            payload_len: payload.len(),
            ident,
            ttl,
        };
        let mut buf = vec![0u8; ip_repr.buffer_len()];
        buf[IPV4_HEADER_LEN..].copy_from_slice(&payload);
        ip_repr.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..])).unwrap();
        let ip = Ipv4Packet::new_checked(&buf[..]).unwrap();
        prop_assert_eq!(Ipv4Repr::parse(&ip).unwrap(), ip_repr);
        prop_assert_eq!(ip.payload(), &payload[..]);
        // UDP alone: the checksum emit writes is the one udp_checksum computes.
        let udp_repr = UdpRepr { src_port: a.src_port, dst_port: a.dst_port, payload_len: payload.len() };
        let mut buf = vec![0u8; udp_repr.buffer_len()];
        buf[UDP_HEADER_LEN..].copy_from_slice(&payload);
        udp_repr.emit(&mut UdpPacket::new_unchecked(&mut buf[..]), a.src_ip, a.dst_ip, true).unwrap();
        let udp = UdpPacket::new_checked(&buf[..]).unwrap();
        let mut zeroed = buf.clone();
        zeroed[6..8].fill(0);
        prop_assert_eq!(udp.checksum(), udp_checksum(a.src_ip, a.dst_ip, &zeroed));
        prop_assert_eq!(UdpRepr::parse(&udp, a.src_ip, a.dst_ip).unwrap(), udp_repr);
    }

    #[test]
    fn header_template_writes_what_emit_frame_writes(
        a in arb_addrs(),
        ident in any::<u16>(),
        len in prop_oneof![0usize..1500, Just(MAX_DATAGRAM_LEN)],
    ) {
        let mut want = vec![0u8; FRAME_HEADER_LEN + len];
        emit_frame(&a, ident, len, false, &mut want);
        let mut got = vec![0x5au8; FRAME_HEADER_LEN];
        HeaderTemplate::new(&a).write(ident, len, &mut got);
        prop_assert_eq!(&got[..], &want[..FRAME_HEADER_LEN]);
    }

    #[test]
    fn checksums_catch_any_flipped_bit(
        a in arb_addrs(),
        payload in prop::collection::vec(any::<u8>(), 1..256),
        bit in any::<usize>(),
        in_udp in any::<bool>(),
    ) {
        let f = framed(&a, 9, &payload, true);
        let (start, end) = if in_udp {
            (ETH_HEADER_LEN + IPV4_HEADER_LEN, f.len())
        } else {
            (ETH_HEADER_LEN, ETH_HEADER_LEN + IPV4_HEADER_LEN)
        };
        let bit = bit % ((end - start) * 8);
        let mut g = f.clone();
        g[start + bit / 8] ^= 1 << (bit % 8);
        let udp_checksum_field = ETH_HEADER_LEN + IPV4_HEADER_LEN + 6;
        if g[udp_checksum_field..udp_checksum_field + 2] == [0, 0] {
            // The flip turned the UDP checksum into 0, "none": legal, not checked.
            prop_assert!(parse_frame(&g).is_ok());
        } else {
            let r = parse_frame(&g);
            prop_assert!(r.is_err(), "bit {} of {}..{} flipped: {:?}", bit, start, end, r);
        }
        // A bad header checksum alone is reported as such.
        let mut h = f.clone();
        h[ETH_HEADER_LEN + 11] ^= 1 << (bit % 8);
        prop_assert_eq!(parse_frame(&h), Err(FrameDrop::BadChecksum));
    }
}

fn eth_len() -> usize {
    EthernetRepr {
        src_addr: MacAddr::default(),
        dst_addr: MacAddr::default(),
        ethertype: ETHERTYPE_IPV4,
    }
    .buffer_len()
}
