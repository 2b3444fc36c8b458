//! UDP datagrams over IPv4.
//!
//! ```text
//!  0          2          4        6          8
//!  | src port | dst port | length | checksum | payload (a NetStorm datagram) |
//! ```
//!
//! The checksum covers a pseudo-header of the IPv4 addresses too, so parsing and emitting take
//! them. A checksum of 0 means "none" (legal over IPv4); a non-zero one is always verified.

use super::checksum::{udp_checksum, udp_checksum_ok};
use super::{read_bytes, write_bytes, WireError};
use std::net::Ipv4Addr;

/// UDP header bytes.
pub const UDP_HEADER_LEN: usize = 8;

/// Byte offsets of the header fields.
mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LENGTH: usize = 4;
    pub const CHECKSUM: usize = 6;
}

/// A view over one UDP datagram: exactly the IPv4 payload, header included.
///
/// [`UdpPacket::new_checked`] requires the header and a length field equal to the buffer's
/// length; after it every accessor is infallible. Accessors never panic even on a
/// `new_unchecked` view.
#[derive(Debug, Clone)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// A view without any check.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// A view over a datagram that passes [`UdpPacket::check_len`].
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// [`WireError::Truncated`] without a whole header, [`WireError::LengthMismatch`] when
    /// the length field is not the buffer's length.
    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        let got = self.buffer.as_ref().len();
        if got < UDP_HEADER_LEN {
            return Err(WireError::Truncated {
                need: UDP_HEADER_LEN,
                got,
            });
        }
        if self.len() != got {
            return Err(WireError::LengthMismatch {
                expected: self.len(),
                got,
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
    fn u16_at(&self, at: usize) -> u16 {
        u16::from_be_bytes(read_bytes(self.buffer.as_ref(), at))
    }

    /// Source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        self.u16_at(field::SRC_PORT)
    }

    /// Destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        self.u16_at(field::DST_PORT)
    }

    /// The length field: header + payload bytes.
    #[inline]
    #[allow(clippy::len_without_is_empty)] // a header field, not a container's size
    pub fn len(&self) -> usize {
        usize::from(self.u16_at(field::LENGTH))
    }

    /// The checksum field (0 = none).
    #[inline]
    pub fn checksum(&self) -> u16 {
        self.u16_at(field::CHECKSUM)
    }

    /// Whether the checksum is right for a datagram from `src` to `dst` (always, if it is 0).
    #[inline]
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        udp_checksum_ok(src, dst, self.buffer.as_ref(), self.checksum())
    }

    /// The payload: after the header, up to the length field (empty if it does not fit).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        self.buffer
            .as_ref()
            .get(UDP_HEADER_LEN..self.len())
            .unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    #[inline]
    fn set_u16(&mut self, at: usize, value: u16) {
        write_bytes(self.buffer.as_mut(), at, value.to_be_bytes());
    }

    /// Sets the source port.
    #[inline]
    pub fn set_src_port(&mut self, port: u16) {
        self.set_u16(field::SRC_PORT, port);
    }

    /// Sets the destination port.
    #[inline]
    pub fn set_dst_port(&mut self, port: u16) {
        self.set_u16(field::DST_PORT, port);
    }

    /// Sets the length field.
    #[inline]
    pub fn set_len(&mut self, len: u16) {
        self.set_u16(field::LENGTH, len);
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, checksum: u16) {
        self.set_u16(field::CHECKSUM, checksum);
    }

    /// Computes the checksum over the pseudo-header, the header and the payload as they are,
    /// and stores it.
    #[inline]
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let c = udp_checksum(src, dst, self.buffer.as_ref());
        self.set_checksum(c);
    }

    /// The payload, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.len();
        self.buffer
            .as_mut()
            .get_mut(UDP_HEADER_LEN..end)
            .unwrap_or(&mut [])
    }
}

/// The decoded UDP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UdpRepr {
    pub src_port: u16,
    pub dst_port: u16,
    /// Payload bytes.
    pub payload_len: usize,
}

impl UdpRepr {
    /// Decodes a checked datagram from `src` to `dst`, verifying a non-zero checksum
    /// ([`WireError::BadChecksum`]).
    pub fn parse<T: AsRef<[u8]>>(
        packet: &UdpPacket<T>,
        src: Ipv4Addr,
        dst: Ipv4Addr,
    ) -> Result<Self, WireError> {
        packet.check_len()?;
        if !packet.verify_checksum(src, dst) {
            return Err(WireError::BadChecksum("UDP"));
        }
        Ok(Self {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            payload_len: packet.len() - UDP_HEADER_LEN,
        })
    }

    /// Datagram length: header + payload.
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        UDP_HEADER_LEN + self.payload_len
    }

    /// Writes the header into `packet`, whose payload must already be in place when
    /// `with_checksum` (computed over it; otherwise the checksum is 0, "none").
    /// [`WireError::BufferTooSmall`] (nothing written) unless the buffer holds
    /// [`UdpRepr::buffer_len`] bytes, [`WireError::LengthMismatch`] beyond 65535 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut UdpPacket<T>,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        with_checksum: bool,
    ) -> Result<(), WireError> {
        let (need, got) = (self.buffer_len(), packet.buffer.as_ref().len());
        if got < need {
            return Err(WireError::BufferTooSmall { need, got });
        }
        let len = u16::try_from(need).map_err(|_| WireError::LengthMismatch {
            expected: usize::from(u16::MAX),
            got: need,
        })?;
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_len(len);
        packet.set_checksum(0);
        if with_checksum {
            let c = match packet.buffer.as_ref().get(..need) {
                Some(datagram) => udp_checksum(src, dst, datagram),
                None => 0,
            };
            packet.set_checksum(c);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    fn repr() -> UdpRepr {
        UdpRepr {
            src_port: 4791,
            dst_port: 4792,
            payload_len: 5,
        }
    }

    #[test]
    fn emit_parse_round_trip_with_and_without_checksum() {
        for with_checksum in [true, false] {
            let mut buf = [0u8; 13];
            buf[UDP_HEADER_LEN..].copy_from_slice(b"hello");
            let mut packet = UdpPacket::new_unchecked(&mut buf[..]);
            repr().emit(&mut packet, SRC, DST, with_checksum).unwrap();
            assert_eq!(&buf[0..6], &[0x12, 0xb7, 0x12, 0xb8, 0, 13]);
            let packet = UdpPacket::new_checked(&buf[..]).unwrap();
            assert_eq!(packet.checksum() != 0, with_checksum);
            assert_eq!(UdpRepr::parse(&packet, SRC, DST).unwrap(), repr());
            assert_eq!(packet.payload(), b"hello");
            // The pseudo-header is covered: other addresses fail a real checksum.
            let elsewhere = Ipv4Addr::new(10, 0, 0, 3);
            assert_eq!(
                UdpRepr::parse(&packet, SRC, elsewhere).is_ok(),
                !with_checksum
            );
        }
    }

    #[test]
    fn fill_checksum_matches_emit_and_flipped_bits_fail() {
        let mut buf = [0u8; 13];
        buf[UDP_HEADER_LEN..].copy_from_slice(b"hello");
        repr()
            .emit(&mut UdpPacket::new_unchecked(&mut buf[..]), SRC, DST, true)
            .unwrap();
        let mut again = buf;
        UdpPacket::new_unchecked(&mut again[..]).fill_checksum(SRC, DST);
        assert_eq!(again, buf);
        for i in 0..buf.len() {
            let mut bad = buf;
            bad[i] ^= 0x04;
            let Ok(packet) = UdpPacket::new_checked(&bad[..]) else {
                assert!(
                    (4..6).contains(&i),
                    "only the length byte breaks the view ({i})"
                );
                continue;
            };
            if packet.checksum() != 0 {
                assert_eq!(
                    UdpRepr::parse(&packet, SRC, DST).unwrap_err(),
                    WireError::BadChecksum("UDP"),
                    "byte {i}"
                );
            }
        }
    }

    #[test]
    fn length_errors() {
        let mut buf = [0u8; 13];
        repr()
            .emit(&mut UdpPacket::new_unchecked(&mut buf[..]), SRC, DST, false)
            .unwrap();
        assert_eq!(
            UdpPacket::new_checked(&buf[..7]).unwrap_err(),
            WireError::Truncated { need: 8, got: 7 }
        );
        assert_eq!(
            UdpPacket::new_checked(&buf[..12]).unwrap_err(),
            WireError::LengthMismatch {
                expected: 13,
                got: 12
            }
        );
        let mut small = [0u8; 12];
        assert_eq!(
            repr()
                .emit(
                    &mut UdpPacket::new_unchecked(&mut small[..]),
                    SRC,
                    DST,
                    true
                )
                .unwrap_err(),
            WireError::BufferTooSmall { need: 13, got: 12 }
        );
        assert_eq!(small, [0; 12], "nothing written");
        for len in 0..UDP_HEADER_LEN {
            let p = UdpPacket::new_unchecked(&buf[..len]);
            let _ = (
                p.src_port(),
                p.len(),
                p.payload(),
                p.verify_checksum(SRC, DST),
            );
        }
    }
}
