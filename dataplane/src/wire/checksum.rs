//! The Internet checksum (RFC 1071) of IPv4 headers and UDP datagrams.

use super::ipv4::IPPROTO_UDP;
use std::net::Ipv4Addr;

/// The ones'-complement sum of `data` (16-bit big-endian words, an odd last byte padded with
/// zero) folded from `init` to 16 bits, not yet complemented. A header whose checksum field is
/// right sums to `0xffff`.
#[inline]
pub(crate) fn sum16(init: u32, data: &[u8]) -> u32 {
    let mut s = init as u64;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        s += u16::from_be_bytes([c[0], c[1]]) as u64;
    }
    if let [last] = chunks.remainder() {
        s += (*last as u64) << 8;
    }
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u32
}

/// The UDP pseudo-header (source, destination, zero, protocol, UDP length) the UDP checksum
/// covers besides the datagram.
#[inline]
pub(crate) fn udp_pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, udp_len: usize) -> [u8; 12] {
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&src.octets());
    pseudo[4..8].copy_from_slice(&dst.octets());
    pseudo[9] = IPPROTO_UDP;
    pseudo[10..12].copy_from_slice(&(udp_len as u16).to_be_bytes());
    pseudo
}

/// IPv4 header checksum of `hdr` (with its checksum field as it is; 0 when computing).
pub fn ipv4_checksum(hdr: &[u8]) -> u16 {
    !(sum16(0, hdr) as u16)
}

/// UDP checksum over the pseudo-header and `udp` (header with checksum field 0, + payload);
/// 0 is sent as 0xffff (RFC 768).
pub fn udp_checksum(src: Ipv4Addr, dst: Ipv4Addr, udp: &[u8]) -> u16 {
    let pseudo = udp_pseudo_header(src, dst, udp.len());
    let c = !(sum16(sum16(0, &pseudo), udp) as u16);
    if c == 0 {
        0xffff
    } else {
        c
    }
}

/// Whether a received UDP datagram's checksum is right: 0 means the sender computed none
/// (legal over IPv4), anything else must make the sum over pseudo-header + datagram `0xffff`.
#[inline]
pub(crate) fn udp_checksum_ok(src: Ipv4Addr, dst: Ipv4Addr, udp: &[u8], checksum: u16) -> bool {
    checksum == 0 || sum16(sum16(0, &udp_pseudo_header(src, dst, udp.len())), udp) == 0xffff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_checksum_matches_a_known_header() {
        // RFC 1071-style example from Wikipedia's "IPv4 header checksum" article.
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ipv4_checksum(&h), 0xb861);
        let mut filled = h;
        filled[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert_eq!(sum16(0, &filled), 0xffff, "a right header sums to 0xffff");
    }

    #[test]
    fn udp_checksum_never_sends_zero_and_verifies() {
        let (src, dst) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        // Odd length: the last byte is padded with zero.
        let mut udp = [0x12, 0x34, 0x56, 0x78, 0x00, 0x0b, 0, 0, 0xab, 0xcd, 0xef];
        let c = udp_checksum(src, dst, &udp);
        assert_ne!(c, 0);
        udp[6..8].copy_from_slice(&c.to_be_bytes());
        assert!(udp_checksum_ok(src, dst, &udp, c));
        assert!(!udp_checksum_ok(dst, Ipv4Addr::new(10, 0, 0, 3), &udp, c));
        assert!(udp_checksum_ok(src, dst, &udp, 0), "0 = no checksum");
        // A datagram whose sum is 0xffff with checksum 0 is sent as 0xffff (RFC 768).
        let pseudo = udp_pseudo_header(src, dst, 8);
        let partial = sum16(sum16(0, &pseudo), &[0, 0, 0, 0, 0, 8, 0, 0]);
        let fix = (0xffff - partial) as u16;
        let zero_sum = [0, 0, (fix >> 8) as u8, fix as u8, 0, 8, 0, 0];
        assert_eq!(udp_checksum(src, dst, &zero_sum), 0xffff);
    }
}
