//! One NetStorm datagram as the DPDK port puts it on the wire: Ethernet II / IPv4 (no options,
//! DF set, TTL 64, header checksum always) / UDP (checksum optional: 0 = none, legal over
//! IPv4), built by [`emit_frame`] or, on the send fast path, [`HeaderTemplate::write`], and
//! taken apart by [`parse_frame`], which says why it drops a frame ([`FrameDrop`]) so the port
//! can count it. Pure code: nothing here needs libdpdk, allocates or panics on any input.

use super::checksum::sum16;
use super::ethernet::{EthernetFrame, EthernetRepr, MacAddr, ETHERTYPE_IPV4, ETH_HEADER_LEN};
use super::ipv4::{Ipv4Packet, Ipv4Repr, DEFAULT_TTL, IPPROTO_UDP, IPV4_HEADER_LEN};
use super::udp::{UdpPacket, UdpRepr, UDP_HEADER_LEN};
use super::WireError;
use std::net::Ipv4Addr;

/// Bytes before the datagram: Ethernet + IPv4 + UDP (= `wire::FRAME_OVERHEAD_BYTES`).
pub const FRAME_HEADER_LEN: usize = ETH_HEADER_LEN + IPV4_HEADER_LEN + UDP_HEADER_LEN;
const _: () = assert!(FRAME_HEADER_LEN == super::FRAME_OVERHEAD_BYTES);

/// The addresses of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameAddrs {
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
}

/// Why [`parse_frame`] rejected a frame (one counter each in the DPDK port's statistics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameDrop {
    /// Not Ethernet II / IPv4 / UDP: another EtherType or IP version, IPv4 options, another
    /// protocol.
    NotUdp,
    /// Truncated, or lengths that disagree.
    Malformed,
    /// An IPv4 fragment.
    Fragment,
    /// A wrong IPv4 header or (non-zero) UDP checksum.
    BadChecksum,
}

impl FrameDrop {
    /// The drop reason for a layer's parse error.
    fn of(e: WireError) -> FrameDrop {
        match e {
            WireError::Ipv4Unsupported { .. } => FrameDrop::NotUdp,
            WireError::Fragment => FrameDrop::Fragment,
            WireError::BadChecksum(_) => FrameDrop::BadChecksum,
            _ => FrameDrop::Malformed,
        }
    }
}

/// A parsed frame: addresses and where the datagram is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedFrame {
    pub addrs: FrameAddrs,
    /// `frame[payload_offset..payload_offset + payload_len]` is the datagram.
    pub payload_offset: usize,
    pub payload_len: usize,
}

/// Writes the Ethernet/IPv4/UDP headers for a `payload_len`-byte datagram into
/// `frame[..FRAME_HEADER_LEN]`; the datagram must already be at
/// `frame[FRAME_HEADER_LEN..FRAME_HEADER_LEN + payload_len]` when `udp_csum` is set.
/// Returns the frame length. `frame` must hold `FRAME_HEADER_LEN + payload_len` bytes (it
/// panics otherwise) and `payload_len <= 65507` (`wire::MAX_DATAGRAM_LEN`).
pub fn emit_frame(
    a: &FrameAddrs,
    ip_id: u16,
    payload_len: usize,
    udp_csum: bool,
    frame: &mut [u8],
) -> usize {
    debug_assert!(payload_len <= super::MAX_DATAGRAM_LEN, "{payload_len}");
    let total = FRAME_HEADER_LEN + payload_len;
    let mut eth = EthernetFrame::new_unchecked(&mut frame[..total]);
    let eth_repr = EthernetRepr {
        src_addr: a.src_mac,
        dst_addr: a.dst_mac,
        ethertype: ETHERTYPE_IPV4,
    };
    let ip_repr = Ipv4Repr {
        src_addr: a.src_ip,
        dst_addr: a.dst_ip,
        protocol: IPPROTO_UDP,
        payload_len: UDP_HEADER_LEN + payload_len,
        ident: ip_id,
        ttl: DEFAULT_TTL,
    };
    let udp_repr = UdpRepr {
        src_port: a.src_port,
        dst_port: a.dst_port,
        payload_len,
    };
    // Cannot fail: the frame holds all three headers and the lengths fit 16 bits.
    let _ = eth_repr.emit(&mut eth);
    let mut ip = Ipv4Packet::new_unchecked(eth.payload_mut());
    let _ = ip_repr.emit(&mut ip);
    let mut udp = UdpPacket::new_unchecked(ip.payload_mut());
    let _ = udp_repr.emit(&mut udp, a.src_ip, a.dst_ip, udp_csum);
    total
}

/// Frame headers to one destination with IP id, lengths and checksums zero, and the
/// ones'-complement sum of that IPv4 header: [`HeaderTemplate::write`] stamps a frame with
/// its lengths, an IP id and the matching header checksum (adding the changed 16-bit fields
/// to the stored sum, RFC 1624) without rebuilding or re-summing the header — the send fast
/// path when UDP checksums are off. Built once per neighbour; nothing allocates.
#[derive(Debug, Clone, Copy)]
pub struct HeaderTemplate {
    bytes: [u8; FRAME_HEADER_LEN],
    ip_sum: u32,
}

impl HeaderTemplate {
    /// Headers for datagrams to `a`.
    pub fn new(a: &FrameAddrs) -> Self {
        let mut b = [0u8; FRAME_HEADER_LEN];
        emit_frame(a, 0, 0, false, &mut b);
        let ip = &mut b[ETH_HEADER_LEN..ETH_HEADER_LEN + IPV4_HEADER_LEN];
        // Lengths and checksum are stamped per frame by `write`: zero here, out of the sum.
        ip[2..4].fill(0);
        ip[10..12].fill(0);
        let ip_sum = sum16(0, ip);
        b[ETH_HEADER_LEN + IPV4_HEADER_LEN + 4..].fill(0);
        Self { bytes: b, ip_sum }
    }

    /// The destination IPv4 address.
    pub fn dst_ip(&self) -> Ipv4Addr {
        let ip = &self.bytes[ETH_HEADER_LEN + 16..ETH_HEADER_LEN + 20];
        Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3])
    }

    /// Writes the headers of a `payload_len`-byte datagram into `frame[..FRAME_HEADER_LEN]`
    /// with IP id `ip_id` and UDP checksum 0 (equal to what [`emit_frame`] writes without UDP
    /// checksum). `payload_len <= 65507`; panics if `frame` is shorter than the headers.
    #[inline]
    pub fn write(&self, ip_id: u16, payload_len: usize, frame: &mut [u8]) {
        let h = &mut frame[..FRAME_HEADER_LEN];
        h.copy_from_slice(&self.bytes);
        let ip_len = (IPV4_HEADER_LEN + UDP_HEADER_LEN + payload_len) as u16;
        let mut sum = self.ip_sum + ip_id as u32 + ip_len as u32;
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        let ip = ETH_HEADER_LEN;
        h[ip + 2..ip + 4].copy_from_slice(&ip_len.to_be_bytes());
        h[ip + 4..ip + 6].copy_from_slice(&ip_id.to_be_bytes());
        h[ip + 10..ip + 12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        let udp_len = (UDP_HEADER_LEN + payload_len) as u16;
        h[ip + IPV4_HEADER_LEN + 4..ip + IPV4_HEADER_LEN + 6]
            .copy_from_slice(&udp_len.to_be_bytes());
    }
}

/// Parses an Ethernet II / IPv4 / UDP frame (Ethernet padding allowed), verifying the IPv4
/// header checksum and, when non-zero, the UDP checksum. Never panics.
///
/// The checks run in a fixed order, which decides the reason of a frame with several faults:
/// Ethernet header ([`FrameDrop::Malformed`]), EtherType, IP version and options, protocol
/// ([`FrameDrop::NotUdp`]), IPv4 and UDP lengths (`Malformed`), header checksum
/// ([`FrameDrop::BadChecksum`]), fragment ([`FrameDrop::Fragment`]), UDP length (`Malformed`),
/// UDP checksum (`BadChecksum`).
#[inline]
pub fn parse_frame(frame: &[u8]) -> Result<ParsedFrame, FrameDrop> {
    let eth = EthernetFrame::new_checked(frame).map_err(FrameDrop::of)?;
    if eth.ethertype() != ETHERTYPE_IPV4 {
        return Err(FrameDrop::NotUdp);
    }
    let ip = Ipv4Packet::new_unchecked(eth.payload());
    ip.check_header().map_err(FrameDrop::of)?;
    if ip.protocol() != IPPROTO_UDP {
        return Err(FrameDrop::NotUdp);
    }
    ip.check_len().map_err(FrameDrop::of)?;
    if ip.total_len() < IPV4_HEADER_LEN + UDP_HEADER_LEN {
        return Err(FrameDrop::Malformed);
    }
    // What `Ipv4Repr::parse` and `UdpRepr::parse` check, without repeating the length checks
    // above: this runs for every received frame.
    if !ip.verify_checksum() {
        return Err(FrameDrop::BadChecksum);
    }
    if ip.is_fragment() {
        return Err(FrameDrop::Fragment);
    }
    let (src_ip, dst_ip) = (ip.src_addr(), ip.dst_addr());
    let udp = UdpPacket::new_checked(ip.payload()).map_err(FrameDrop::of)?;
    if !udp.verify_checksum(src_ip, dst_ip) {
        return Err(FrameDrop::BadChecksum);
    }
    Ok(ParsedFrame {
        addrs: FrameAddrs {
            src_mac: eth.src_addr(),
            dst_mac: eth.dst_addr(),
            src_ip,
            dst_ip,
            src_port: udp.src_port(),
            dst_port: udp.dst_port(),
        },
        payload_offset: FRAME_HEADER_LEN,
        payload_len: udp.len() - UDP_HEADER_LEN,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum::udp_checksum;
    use crate::wire::ipv4_checksum;

    fn addrs() -> FrameAddrs {
        FrameAddrs {
            src_mac: MacAddr::local(1),
            dst_mac: MacAddr::local(2),
            src_ip: Ipv4Addr::new(10, 0, 0, 1),
            dst_ip: Ipv4Addr::new(10, 0, 0, 2),
            src_port: 4791,
            dst_port: 4792,
        }
    }

    #[test]
    fn frame_round_trips_with_and_without_udp_checksum() {
        for csum in [true, false] {
            let payload: Vec<u8> = (0..333u32).map(|i| (i * 7) as u8).collect();
            let mut f = vec![0u8; FRAME_HEADER_LEN + payload.len()];
            f[FRAME_HEADER_LEN..].copy_from_slice(&payload);
            let n = emit_frame(&addrs(), 7, payload.len(), csum, &mut f);
            assert_eq!(n, f.len());
            let p = parse_frame(&f).unwrap();
            assert_eq!(p.addrs, addrs());
            assert_eq!(
                &f[p.payload_offset..p.payload_offset + p.payload_len],
                &payload[..]
            );
            assert_eq!(u16::from_be_bytes([f[40], f[41]]) != 0, csum);
            // Ethernet padding after the IP packet is ignored.
            let mut padded = f.clone();
            padded.extend_from_slice(&[0; 20]);
            assert_eq!(parse_frame(&padded).unwrap().payload_len, payload.len());
        }
    }

    #[test]
    fn each_layer_parses_an_emitted_frame() {
        let mut f = vec![0u8; FRAME_HEADER_LEN + 10];
        f[FRAME_HEADER_LEN..].copy_from_slice(b"0123456789");
        emit_frame(&addrs(), 0xbeef, 10, true, &mut f);
        let eth = EthernetFrame::new_checked(&f[..]).unwrap();
        let eth_repr = EthernetRepr::parse(&eth).unwrap();
        assert_eq!(
            (eth_repr.src_addr, eth_repr.dst_addr, eth_repr.ethertype),
            (addrs().src_mac, addrs().dst_mac, ETHERTYPE_IPV4)
        );
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        let ip_repr = Ipv4Repr::parse(&ip).unwrap();
        assert_eq!(
            ip_repr,
            Ipv4Repr {
                src_addr: addrs().src_ip,
                dst_addr: addrs().dst_ip,
                protocol: IPPROTO_UDP,
                payload_len: UDP_HEADER_LEN + 10,
                ident: 0xbeef,
                ttl: DEFAULT_TTL,
            }
        );
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        let udp_repr = UdpRepr::parse(&udp, ip_repr.src_addr, ip_repr.dst_addr).unwrap();
        assert_eq!((udp_repr.src_port, udp_repr.dst_port), (4791, 4792));
        assert_eq!(udp.payload(), b"0123456789");
        assert_eq!(
            eth_repr.buffer_len() + ip_repr.buffer_len(),
            FRAME_HEADER_LEN + 10
        );
    }

    #[test]
    fn emit_frame_writes_the_documented_header_bytes() {
        let mut f = vec![0xeeu8; FRAME_HEADER_LEN + 4];
        emit_frame(&addrs(), 0x1234, 4, false, &mut f);
        let ip = &f[ETH_HEADER_LEN..ETH_HEADER_LEN + IPV4_HEADER_LEN];
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        assert_eq!(&ip[..10], &[0x45, 0, 0, 32, 0x12, 0x34, 0x40, 0, 64, 17]);
        assert_eq!(ipv4_checksum(ip), 0, "header checksum filled");
        assert_eq!(&f[34..42], &[0x12, 0xb7, 0x12, 0xb8, 0, 12, 0, 0]);
        assert_eq!(&f[42..], &[0xee; 4], "payload untouched");
    }

    #[test]
    fn header_template_matches_emit_frame() {
        let t = HeaderTemplate::new(&addrs());
        assert_eq!(t.dst_ip(), addrs().dst_ip);
        for len in [0usize, 1, 1040, 1472, 8972, 65507] {
            for id in [0u16, 1, 0x00ff, 0x1234, 0xfffe, 0xffff] {
                let mut want = vec![0u8; FRAME_HEADER_LEN + len];
                emit_frame(&addrs(), id, len, false, &mut want);
                let mut got = vec![0xaau8; FRAME_HEADER_LEN + len];
                t.write(id, len, &mut got);
                assert_eq!(
                    got[..FRAME_HEADER_LEN],
                    want[..FRAME_HEADER_LEN],
                    "len {len} id {id:#x}"
                );
                got[FRAME_HEADER_LEN..].copy_from_slice(&want[FRAME_HEADER_LEN..]);
                assert!(parse_frame(&got).is_ok(), "len {len} id {id:#x}");
                // With UDP checksums: the template's headers, then the checksum over them.
                emit_frame(&addrs(), id, len, true, &mut want);
                let udp = &mut got[ETH_HEADER_LEN + IPV4_HEADER_LEN..];
                let c = udp_checksum(addrs().src_ip, t.dst_ip(), udp);
                udp[6..8].copy_from_slice(&c.to_be_bytes());
                assert_eq!(got, want, "len {len} id {id:#x} with UDP checksum");
            }
        }
    }

    #[test]
    fn corrupted_frames_are_rejected_not_panicking() {
        let payload = [1u8; 64];
        let mut f = vec![0u8; FRAME_HEADER_LEN + payload.len()];
        f[FRAME_HEADER_LEN..].copy_from_slice(&payload);
        emit_frame(&addrs(), 1, payload.len(), true, &mut f);
        for i in 0..f.len() {
            let mut g = f.clone();
            g[i] ^= 0x10;
            let r = parse_frame(&g);
            if i < 12 {
                assert!(r.is_ok(), "MAC byte {i}");
            } else {
                assert!(r.is_err(), "byte {i}: {r:?}");
            }
        }
        for len in 0..f.len() {
            assert!(parse_frame(&f[..len]).is_err(), "truncated to {len}");
        }
        let mut frag = f.clone();
        frag[ETH_HEADER_LEN + 6] = 0x20; // MF
        let c = ipv4_checksum(&{
            let mut h = [0u8; 20];
            h.copy_from_slice(&frag[14..34]);
            h[10] = 0;
            h[11] = 0;
            h
        });
        frag[24..26].copy_from_slice(&c.to_be_bytes());
        assert_eq!(parse_frame(&frag), Err(FrameDrop::Fragment));
    }

    /// Each drop reason, from a frame with exactly that fault; with several faults the first
    /// check in the documented order decides.
    #[test]
    fn drop_reasons_follow_the_documented_order() {
        let mut f = vec![0u8; FRAME_HEADER_LEN + 8];
        emit_frame(&addrs(), 1, 8, true, &mut f);
        let ip = ETH_HEADER_LEN;
        let refill = |g: &mut Vec<u8>| {
            g[ip + 10..ip + 12].fill(0);
            let c = ipv4_checksum(&g[ip..ip + 20]);
            g[ip + 10..ip + 12].copy_from_slice(&c.to_be_bytes());
        };
        let case = |edit: &dyn Fn(&mut Vec<u8>)| {
            let mut g = f.clone();
            edit(&mut g);
            parse_frame(&g).unwrap_err()
        };
        assert_eq!(case(&|g| g.truncate(13)), FrameDrop::Malformed);
        assert_eq!(case(&|g| g[12] = 0x86), FrameDrop::NotUdp); // IPv6 EtherType
        assert_eq!(case(&|g| g.truncate(ip + 19)), FrameDrop::Malformed);
        assert_eq!(case(&|g| g[ip] = 0x46), FrameDrop::NotUdp); // options
        assert_eq!(case(&|g| g[ip] = 0x65), FrameDrop::NotUdp); // version 6
                                                                // A non-UDP packet is NotUdp even when its lengths are wrong too.
        assert_eq!(
            case(&|g| {
                g[ip + 9] = 6;
                g[ip + 2..ip + 4].copy_from_slice(&9999u16.to_be_bytes());
            }),
            FrameDrop::NotUdp
        );
        assert_eq!(
            case(&|g| {
                g[ip + 2..ip + 4].copy_from_slice(&27u16.to_be_bytes());
                refill(g);
            }),
            FrameDrop::Malformed
        );
        assert_eq!(case(&|g| g[ip + 11] ^= 1), FrameDrop::BadChecksum);
        // A fragment with a bad checksum is a bad checksum.
        assert_eq!(case(&|g| g[ip + 6] |= 0x20), FrameDrop::BadChecksum);
        assert_eq!(
            case(&|g| {
                g[ip + 7] = 8;
                refill(g);
            }),
            FrameDrop::Fragment
        );
        assert_eq!(case(&|g| g[ip + 25] = 9), FrameDrop::Malformed); // UDP length
        assert_eq!(case(&|g| g[FRAME_HEADER_LEN] ^= 1), FrameDrop::BadChecksum);
        // Without a UDP checksum the payload is not checked.
        let mut g = f.clone();
        g[40..42].fill(0);
        g[FRAME_HEADER_LEN] ^= 1;
        assert!(parse_frame(&g).is_ok());
    }
}
