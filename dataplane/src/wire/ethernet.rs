//! Ethernet II frames (no VLAN tag): destination MAC, source MAC, EtherType, payload.
//!
//! ```text
//!  0         6         12          14
//!  | dst MAC | src MAC | ethertype | payload (an IPv4 packet, perhaps followed by padding) |
//! ```

use super::{read_bytes, write_bytes, WireError};
use serde::Deserialize;
use std::fmt;
use std::str::FromStr;

/// Ethernet II header bytes.
pub const ETH_HEADER_LEN: usize = 14;
/// The EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;

/// Byte offsets of the header fields.
mod field {
    pub const DST: usize = 0;
    pub const SRC: usize = 6;
    pub const ETHERTYPE: usize = 12;
}

/// An Ethernet MAC address, written `02:00:00:00:00:01` in config files.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(try_from = "String")]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// A locally administered unicast address `02:4e:53:00:hi:lo` for node `n` (tests, demos).
    pub const fn local(n: u16) -> Self {
        MacAddr([0x02, 0x4e, 0x53, 0x00, (n >> 8) as u8, n as u8])
    }

    /// Whether this is a group (multicast or broadcast) address: the low bit of the first byte.
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = [0u8; 6];
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(format!(
                "{s:?} is not a MAC address (want 6 hex bytes like 02:00:00:00:00:01)"
            ));
        }
        for (o, p) in out.iter_mut().zip(&parts) {
            if p.len() != 2 {
                return Err(format!("{s:?} is not a MAC address (byte {p:?})"));
            }
            *o = u8::from_str_radix(p, 16)
                .map_err(|_| format!("{s:?} is not a MAC address (byte {p:?} is not hex)"))?;
        }
        Ok(MacAddr(out))
    }
}

impl TryFrom<String> for MacAddr {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// A view over one Ethernet II frame. [`EthernetFrame::new_checked`] makes sure the header is
/// there; accessors never panic, whatever the buffer (on a `new_unchecked` view of a short
/// buffer they read zeros and their setters write nothing).
#[derive(Debug, Clone)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// A view without any check (for building a frame in a buffer known to be large enough).
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// A view over a frame of at least [`ETH_HEADER_LEN`] bytes ([`WireError::Truncated`]
    /// otherwise).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// [`WireError::Truncated`] if the buffer cannot hold the header.
    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        let got = self.buffer.as_ref().len();
        if got < ETH_HEADER_LEN {
            return Err(WireError::Truncated {
                need: ETH_HEADER_LEN,
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

    /// Destination MAC.
    #[inline]
    pub fn dst_addr(&self) -> MacAddr {
        MacAddr(read_bytes(self.buffer.as_ref(), field::DST))
    }

    /// Source MAC.
    #[inline]
    pub fn src_addr(&self) -> MacAddr {
        MacAddr(read_bytes(self.buffer.as_ref(), field::SRC))
    }

    /// The EtherType ([`ETHERTYPE_IPV4`] for the frames NetStorm sends).
    #[inline]
    pub fn ethertype(&self) -> u16 {
        u16::from_be_bytes(read_bytes(self.buffer.as_ref(), field::ETHERTYPE))
    }

    /// Everything after the header (Ethernet padding included: the IPv4 total length says
    /// where the packet ends).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        self.buffer.as_ref().get(ETH_HEADER_LEN..).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Sets the destination MAC.
    #[inline]
    pub fn set_dst_addr(&mut self, addr: MacAddr) {
        write_bytes(self.buffer.as_mut(), field::DST, addr.0);
    }

    /// Sets the source MAC.
    #[inline]
    pub fn set_src_addr(&mut self, addr: MacAddr) {
        write_bytes(self.buffer.as_mut(), field::SRC, addr.0);
    }

    /// Sets the EtherType.
    #[inline]
    pub fn set_ethertype(&mut self, ethertype: u16) {
        write_bytes(
            self.buffer.as_mut(),
            field::ETHERTYPE,
            ethertype.to_be_bytes(),
        );
    }

    /// Everything after the header, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        self.buffer
            .as_mut()
            .get_mut(ETH_HEADER_LEN..)
            .unwrap_or(&mut [])
    }
}

/// The decoded Ethernet II header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EthernetRepr {
    pub src_addr: MacAddr,
    pub dst_addr: MacAddr,
    pub ethertype: u16,
}

impl EthernetRepr {
    /// Decodes the header of a checked frame (every header is valid Ethernet II).
    pub fn parse<T: AsRef<[u8]>>(frame: &EthernetFrame<T>) -> Result<Self, WireError> {
        frame.check_len()?;
        Ok(Self {
            src_addr: frame.src_addr(),
            dst_addr: frame.dst_addr(),
            ethertype: frame.ethertype(),
        })
    }

    /// Header length: [`ETH_HEADER_LEN`].
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        ETH_HEADER_LEN
    }

    /// Writes the header into `frame`; [`WireError::BufferTooSmall`] (and nothing written) if
    /// the buffer cannot hold it.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        frame: &mut EthernetFrame<T>,
    ) -> Result<(), WireError> {
        let got = frame.buffer.as_ref().len();
        if got < ETH_HEADER_LEN {
            return Err(WireError::BufferTooSmall {
                need: ETH_HEADER_LEN,
                got,
            });
        }
        frame.set_dst_addr(self.dst_addr);
        frame.set_src_addr(self.src_addr);
        frame.set_ethertype(self.ethertype);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repr() -> EthernetRepr {
        EthernetRepr {
            src_addr: MacAddr::local(1),
            dst_addr: MacAddr([0xff; 6]),
            ethertype: ETHERTYPE_IPV4,
        }
    }

    #[test]
    fn emit_parse_round_trip_at_documented_offsets() {
        let mut buf = [0xaau8; 20];
        let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
        repr().emit(&mut frame).unwrap();
        frame.payload_mut().fill(7);
        assert_eq!(&buf[0..6], &[0xff; 6]);
        assert_eq!(&buf[6..12], &MacAddr::local(1).0);
        assert_eq!(&buf[12..14], &[0x08, 0x00]);
        let frame = EthernetFrame::new_checked(&buf[..]).unwrap();
        assert_eq!(EthernetRepr::parse(&frame).unwrap(), repr());
        assert_eq!(frame.payload(), &[7; 6]);
        assert!(frame.dst_addr().is_multicast() && !frame.src_addr().is_multicast());
        assert_eq!(repr().buffer_len(), ETH_HEADER_LEN);
    }

    #[test]
    fn short_buffers_are_errors_never_panics() {
        for len in 0..ETH_HEADER_LEN {
            let buf = vec![0x11u8; len];
            assert_eq!(
                EthernetFrame::new_checked(&buf[..]).unwrap_err(),
                WireError::Truncated {
                    need: ETH_HEADER_LEN,
                    got: len
                }
            );
            let unchecked = EthernetFrame::new_unchecked(&buf[..]);
            let _ = (
                unchecked.dst_addr(),
                unchecked.ethertype(),
                unchecked.payload(),
            );
            let mut out = vec![0u8; len];
            let mut frame = EthernetFrame::new_unchecked(&mut out[..]);
            assert_eq!(
                repr().emit(&mut frame).unwrap_err(),
                WireError::BufferTooSmall {
                    need: ETH_HEADER_LEN,
                    got: len
                }
            );
            assert!(out.iter().all(|&b| b == 0), "nothing written");
        }
    }

    #[test]
    fn mac_addresses_parse_and_print() {
        assert_eq!(
            "02:4e:53:00:00:07".parse::<MacAddr>().unwrap(),
            MacAddr::local(7)
        );
        assert_eq!(
            "02-4E-53-00-01-02".parse::<MacAddr>().unwrap(),
            MacAddr::local(0x0102)
        );
        assert_eq!(MacAddr::local(0x0102).to_string(), "02:4e:53:00:01:02");
        assert_eq!(format!("{:?}", MacAddr::local(1)), "02:4e:53:00:00:01");
        for bad in [
            "02:4e:53:00:00",
            "zz:4e:53:00:00:00",
            "2:4e:53:00:00:00:00",
            "",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }
}
