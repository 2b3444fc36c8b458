//! IPv4 packets as NetStorm sends them: a 20-byte header (no options), never fragmented.
//!
//! ```text
//!  0        1     2           4       6                   8     9          10         12    16    20
//!  | 0x45   | tos | total_len | ident | flags+frag offset | ttl | protocol | checksum | src | dst | payload |
//! ```
//!
//! [`Ipv4Packet::new_checked`] accepts only IPv4 without options whose total length fits the
//! buffer (bytes after it are link-layer padding); [`Ipv4Repr::parse`] then also verifies the
//! header checksum and refuses fragments.

use super::checksum::sum16;
use super::{read_bytes, write_bytes, WireError};
use std::net::Ipv4Addr;

/// IPv4 header bytes (NetStorm sends no options and accepts none).
pub const IPV4_HEADER_LEN: usize = 20;
/// The IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// The TTL NetStorm's frames leave with.
pub const DEFAULT_TTL: u8 = 64;
/// Flags + fragment offset of a sent packet: only "don't fragment".
const FLAGS_DONT_FRAGMENT: u16 = 0x4000;
/// Flags + fragment offset bits that make a packet a fragment: "more fragments" + the offset.
const FRAGMENT_BITS: u16 = 0x3fff;

/// Byte offsets of the header fields.
mod field {
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const LENGTH: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
}

/// A view over one IPv4 packet (from the start of its header to the end of the received bytes).
///
/// [`Ipv4Packet::new_checked`] runs [`Ipv4Packet::check_header`] then
/// [`Ipv4Packet::check_len`]; after it every accessor is infallible. Accessors never panic
/// even on a `new_unchecked` view (they read zeros past the end, setters write nothing).
#[derive(Debug, Clone)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// A view without any check.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// A view over a packet that passes [`Ipv4Packet::check_header`] and
    /// [`Ipv4Packet::check_len`].
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_header()?;
        packet.check_len()?;
        Ok(packet)
    }

    /// The header is there and is one this code reads: [`WireError::Truncated`] if the buffer
    /// is shorter than [`IPV4_HEADER_LEN`], [`WireError::Ipv4Unsupported`] for another version
    /// or a header with options.
    #[inline]
    pub fn check_header(&self) -> Result<(), WireError> {
        let got = self.buffer.as_ref().len();
        if got < IPV4_HEADER_LEN {
            return Err(WireError::Truncated {
                need: IPV4_HEADER_LEN,
                got,
            });
        }
        if self.version() != 4 || self.header_len() != IPV4_HEADER_LEN {
            return Err(WireError::Ipv4Unsupported {
                version: self.version(),
                header_len: self.header_len(),
            });
        }
        Ok(())
    }

    /// The total length covers the header and fits the received bytes
    /// ([`WireError::Ipv4Length`] otherwise).
    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        let (total_len, available) = (self.total_len(), self.buffer.as_ref().len());
        if total_len < IPV4_HEADER_LEN || total_len > available {
            return Err(WireError::Ipv4Length {
                total_len,
                available,
            });
        }
        Ok(())
    }

    /// Gives the buffer back.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    fn u8_at(&self, at: usize) -> u8 {
        read_bytes::<1>(self.buffer.as_ref(), at)[0]
    }

    #[inline]
    fn u16_at(&self, at: usize) -> u16 {
        u16::from_be_bytes(read_bytes(self.buffer.as_ref(), at))
    }

    /// The version nibble (4).
    #[inline]
    pub fn version(&self) -> u8 {
        self.u8_at(field::VER_IHL) >> 4
    }

    /// Header length in bytes (the IHL nibble × 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.u8_at(field::VER_IHL) & 0x0f) * 4
    }

    /// The total length field: header + payload bytes.
    #[inline]
    pub fn total_len(&self) -> usize {
        usize::from(self.u16_at(field::LENGTH))
    }

    /// The identification field.
    #[inline]
    pub fn ident(&self) -> u16 {
        self.u16_at(field::IDENT)
    }

    /// The "don't fragment" flag.
    #[inline]
    pub fn dont_frag(&self) -> bool {
        self.u16_at(field::FLAGS_FRAG) & 0x4000 != 0
    }

    /// True for a fragment: "more fragments" set or a non-zero fragment offset.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        self.u16_at(field::FLAGS_FRAG) & FRAGMENT_BITS != 0
    }

    /// Time to live.
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.u8_at(field::TTL)
    }

    /// The protocol of the payload ([`IPPROTO_UDP`]).
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.u8_at(field::PROTOCOL)
    }

    /// The header checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        self.u16_at(field::CHECKSUM)
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(read_bytes::<4>(self.buffer.as_ref(), field::SRC))
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(read_bytes::<4>(self.buffer.as_ref(), field::DST))
    }

    /// Whether the header checksum is right.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        self.buffer
            .as_ref()
            .get(..IPV4_HEADER_LEN)
            .is_some_and(|h| sum16(0, h) == 0xffff)
    }

    /// The payload: from the end of the header to the total length (empty if they do not fit).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        self.buffer
            .as_ref()
            .get(IPV4_HEADER_LEN..self.total_len())
            .unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    #[inline]
    fn set_u16(&mut self, at: usize, value: u16) {
        write_bytes(self.buffer.as_mut(), at, value.to_be_bytes());
    }

    /// Sets the total length field.
    #[inline]
    pub fn set_total_len(&mut self, len: u16) {
        self.set_u16(field::LENGTH, len);
    }

    /// Sets the identification field.
    #[inline]
    pub fn set_ident(&mut self, ident: u16) {
        self.set_u16(field::IDENT, ident);
    }

    /// Sets the TTL.
    #[inline]
    pub fn set_ttl(&mut self, ttl: u8) {
        write_bytes(self.buffer.as_mut(), field::TTL, [ttl]);
    }

    /// Sets the source address.
    #[inline]
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        write_bytes(self.buffer.as_mut(), field::SRC, addr.octets());
    }

    /// Sets the destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        write_bytes(self.buffer.as_mut(), field::DST, addr.octets());
    }

    /// Computes the header checksum over the header as it is and stores it.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_u16(field::CHECKSUM, 0);
        let sum = match self.buffer.as_ref().get(..IPV4_HEADER_LEN) {
            Some(h) => sum16(0, h),
            None => return,
        };
        self.set_u16(field::CHECKSUM, !(sum as u16));
    }

    /// The payload, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.total_len();
        self.buffer
            .as_mut()
            .get_mut(IPV4_HEADER_LEN..end)
            .unwrap_or(&mut [])
    }
}

/// The decoded IPv4 header of a packet NetStorm accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Repr {
    pub src_addr: Ipv4Addr,
    pub dst_addr: Ipv4Addr,
    /// The payload's protocol.
    pub protocol: u8,
    /// Payload bytes (total length − header).
    pub payload_len: usize,
    /// The identification field.
    pub ident: u16,
    pub ttl: u8,
}

impl Ipv4Repr {
    /// Decodes a checked packet, verifying the header checksum ([`WireError::BadChecksum`])
    /// and refusing fragments ([`WireError::Fragment`]).
    pub fn parse<T: AsRef<[u8]>>(packet: &Ipv4Packet<T>) -> Result<Self, WireError> {
        packet.check_header()?;
        packet.check_len()?;
        if !packet.verify_checksum() {
            return Err(WireError::BadChecksum("IPv4 header"));
        }
        if packet.is_fragment() {
            return Err(WireError::Fragment);
        }
        Ok(Self {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            protocol: packet.protocol(),
            payload_len: packet.total_len() - IPV4_HEADER_LEN,
            ident: packet.ident(),
            ttl: packet.ttl(),
        })
    }

    /// Packet length: header + payload.
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        IPV4_HEADER_LEN + self.payload_len
    }

    /// Writes the header (version 4, no options, TOS 0, "don't fragment", the checksum) into
    /// `packet`; the payload is left as it is. [`WireError::BufferTooSmall`] (nothing written)
    /// if the header does not fit, [`WireError::Ipv4Length`] if the packet would exceed 65535
    /// bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut Ipv4Packet<T>,
    ) -> Result<(), WireError> {
        let got = packet.buffer.as_ref().len();
        if got < IPV4_HEADER_LEN {
            return Err(WireError::BufferTooSmall {
                need: IPV4_HEADER_LEN,
                got,
            });
        }
        let total_len = u16::try_from(self.buffer_len()).map_err(|_| WireError::Ipv4Length {
            total_len: self.buffer_len(),
            available: usize::from(u16::MAX),
        })?;
        let buf = packet.buffer.as_mut();
        write_bytes(buf, field::VER_IHL, [0x45]);
        write_bytes(buf, field::TOS, [0]);
        write_bytes(buf, field::FLAGS_FRAG, FLAGS_DONT_FRAGMENT.to_be_bytes());
        write_bytes(buf, field::PROTOCOL, [self.protocol]);
        packet.set_total_len(total_len);
        packet.set_ident(self.ident);
        packet.set_ttl(self.ttl);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
        packet.fill_checksum();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repr() -> Ipv4Repr {
        Ipv4Repr {
            src_addr: Ipv4Addr::new(192, 168, 0, 1),
            dst_addr: Ipv4Addr::new(192, 168, 0, 199),
            protocol: IPPROTO_UDP,
            payload_len: 95,
            ident: 0,
            ttl: DEFAULT_TTL,
        }
    }

    fn emitted() -> Vec<u8> {
        let mut buf = vec![0xeeu8; repr().buffer_len()];
        repr()
            .emit(&mut Ipv4Packet::new_unchecked(&mut buf[..]))
            .unwrap();
        buf
    }

    #[test]
    fn emit_matches_a_known_header_and_parses_back() {
        let buf = emitted();
        // Wikipedia's "IPv4 header checksum" example header.
        assert_eq!(
            &buf[..IPV4_HEADER_LEN],
            &[
                0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
                0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7
            ]
        );
        let packet = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert!(packet.verify_checksum() && packet.dont_frag() && !packet.is_fragment());
        assert_eq!(Ipv4Repr::parse(&packet).unwrap(), repr());
        assert_eq!(packet.payload(), &[0xee; 95]);
        // Link-layer padding after the packet is not payload.
        let mut padded = buf.clone();
        padded.extend_from_slice(&[0; 7]);
        let packet = Ipv4Packet::new_checked(&padded[..]).unwrap();
        assert_eq!(packet.payload().len(), 95);
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let buf = emitted();
        assert_eq!(
            Ipv4Packet::new_checked(&buf[..19]).unwrap_err(),
            WireError::Truncated { need: 20, got: 19 }
        );
        let mut v6 = buf.clone();
        v6[0] = 0x65;
        assert_eq!(
            Ipv4Packet::new_checked(&v6[..]).unwrap_err(),
            WireError::Ipv4Unsupported {
                version: 6,
                header_len: 20
            }
        );
        let mut options = buf.clone();
        options[0] = 0x46;
        assert!(matches!(
            Ipv4Packet::new_checked(&options[..]).unwrap_err(),
            WireError::Ipv4Unsupported { header_len: 24, .. }
        ));
        assert_eq!(
            Ipv4Packet::new_checked(&buf[..100]).unwrap_err(),
            WireError::Ipv4Length {
                total_len: 115,
                available: 100
            }
        );
        let mut short_total = buf.clone();
        short_total[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert!(matches!(
            Ipv4Packet::new_checked(&short_total[..]).unwrap_err(),
            WireError::Ipv4Length { total_len: 19, .. }
        ));
        let mut bad_sum = buf.clone();
        bad_sum[11] ^= 1;
        let packet = Ipv4Packet::new_checked(&bad_sum[..]).unwrap();
        assert_eq!(
            Ipv4Repr::parse(&packet).unwrap_err(),
            WireError::BadChecksum("IPv4 header")
        );
        for (flags, what) in [
            (0x20u8, "more fragments"),
            (0x00, "offset"),
            (0x40, "DF+offset"),
        ] {
            let mut frag = buf.clone();
            frag[6] = flags;
            frag[7] = if what == "more fragments" { 0 } else { 1 };
            let mut packet = Ipv4Packet::new_unchecked(&mut frag[..]);
            packet.fill_checksum();
            assert_eq!(
                Ipv4Repr::parse(&packet).unwrap_err(),
                WireError::Fragment,
                "{what}"
            );
        }
        let mut out = [0u8; 19];
        assert_eq!(
            repr()
                .emit(&mut Ipv4Packet::new_unchecked(&mut out[..]))
                .unwrap_err(),
            WireError::BufferTooSmall { need: 20, got: 19 }
        );
        let huge = Ipv4Repr {
            payload_len: 65_516,
            ..repr()
        };
        assert!(matches!(
            huge.emit(&mut Ipv4Packet::new_unchecked(&mut [0u8; 20][..])),
            Err(WireError::Ipv4Length {
                total_len: 65_536,
                ..
            })
        ));
    }

    #[test]
    fn accessors_never_panic_on_short_buffers() {
        for len in 0..IPV4_HEADER_LEN {
            let buf = vec![0x45u8; len];
            let p = Ipv4Packet::new_unchecked(&buf[..]);
            let _ = (
                p.version(),
                p.total_len(),
                p.src_addr(),
                p.dst_addr(),
                p.payload(),
            );
            assert!(!p.verify_checksum());
            assert!(Ipv4Repr::parse(&p).is_err());
        }
    }
}
