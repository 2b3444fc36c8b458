//! Everything NetStorm puts on the wire, parsed and built without allocating, in the style of
//! smoltcp's `wire` module: a `Packet`-like view validates a buffer once with `new_checked`,
//! after which every accessor is infallible and cannot panic on any input; a `*Repr` is the
//! owned, high-level form with `parse` / `emit` / `buffer_len`.
//!
//! * the NetStorm datagram ([`Packet`], [`HeaderRepr`], [`AckRepr`], [`ProbeRepr`]): a
//!   64-byte big-endian header, an f32 payload and an optional authentication tag, carried in
//!   one UDP datagram by every backend;
//! * the layers below it that the DPDK port builds and parses itself — [`ethernet`] (Ethernet
//!   II, no VLAN), [`ipv4`] (no options, never fragmented), [`udp`] — and [`frame`], the three
//!   as one frame on the port's hot path (`emit_frame`, `parse_frame`, `HeaderTemplate`).
//!
//! None of it needs libdpdk: the framing is compiled and tested on every build.

mod checksum;
pub mod ethernet;
pub mod frame;
pub mod ipv4;
mod netstorm;
mod payload;
mod round_done;
pub mod udp;

pub use checksum::{ipv4_checksum, udp_checksum};
pub use ethernet::{EthernetFrame, EthernetRepr, MacAddr, ETHERTYPE_IPV4, ETH_HEADER_LEN};
pub use frame::{
    emit_frame, parse_frame, FrameAddrs, FrameDrop, HeaderTemplate, ParsedFrame, FRAME_HEADER_LEN,
};
pub use ipv4::{Ipv4Packet, Ipv4Repr, IPPROTO_UDP, IPV4_HEADER_LEN};
pub use netstorm::*;
pub use payload::{PayloadType, UnknownPayloadType};
pub use round_done::{RoundDoneRepr, RoundDoneRole, ROUND_DONE_PAYLOAD_LEN};
pub use udp::{UdpPacket, UdpRepr, UDP_HEADER_LEN};

/// Why a datagram could not be parsed or a structure could not be emitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The input is shorter than the structure being parsed.
    #[error("truncated: need at least {need} bytes, got {got}")]
    Truncated {
        /// Bytes required.
        need: usize,
        /// Bytes available.
        got: usize,
    },
    /// The first two bytes are not [`MAGIC`].
    #[error("bad magic 0x{0:04x} (expected 0x4e53 \"NS\")")]
    BadMagic(u16),
    /// The version byte is not [`VERSION`].
    #[error("unsupported wire version {0} (expected 1)")]
    BadVersion(u8),
    /// The kind byte is not a [`PacketKind`].
    #[error("unknown packet kind {0}")]
    UnknownKind(u8),
    /// Flag bits outside [`flags::KNOWN`] are set; carries those unknown bits.
    #[error("unknown flag bits 0x{0:02x}")]
    UnknownFlags(u8),
    /// The reserved header field is not zero.
    #[error("reserved header field is not zero")]
    Reserved,
    /// A RoundDone payload with an unknown role byte or non-zero reserved bytes.
    #[error("malformed RoundDone payload (role byte {0}, reserved bytes must be zero)")]
    BadRoundDone(u8),
    /// The header names a payload type this version does not know.
    #[error("unknown payload type {0}")]
    UnknownPayloadType(u8),
    /// The datagram length disagrees with the header (`HEADER_LEN + payload_len` + tag).
    #[error("length mismatch: header says {expected} bytes, datagram has {got}")]
    LengthMismatch {
        /// Length implied by the header.
        expected: usize,
        /// Actual length.
        got: usize,
    },
    /// The payload length breaks the rule for its kind (see [`PacketKind::payload_len_ok`]).
    #[error("bad payload length {len} for {kind:?} packet")]
    BadPayloadLen {
        /// The packet kind.
        kind: PacketKind,
        /// The offending payload length.
        len: usize,
    },
    /// Not an IPv4 header this code reads: another IP version, or IPv4 with options (whose
    /// header is longer than [`IPV4_HEADER_LEN`]; NetStorm never sends them).
    #[error("not IPv4 without options: version {version}, header {header_len} bytes")]
    Ipv4Unsupported {
        /// The version nibble.
        version: u8,
        /// The header length the IHL nibble gives, in bytes.
        header_len: usize,
    },
    /// The IPv4 total length is shorter than the header or longer than the bytes received.
    #[error(
        "IPv4 total length {total_len} is outside {IPV4_HEADER_LEN}..={available} (bytes received)"
    )]
    Ipv4Length {
        /// The header's total length field.
        total_len: usize,
        /// Bytes available from the start of the IPv4 header.
        available: usize,
    },
    /// An IPv4 fragment (more-fragments flag or a fragment offset): NetStorm never fragments.
    #[error("IPv4 fragment (more-fragments flag or non-zero fragment offset)")]
    Fragment,
    /// A checksum does not match the bytes it covers; carries the layer ("IPv4 header", "UDP").
    #[error("bad {0} checksum")]
    BadChecksum(&'static str),
    /// The output buffer is too small for what is being emitted.
    #[error("buffer too small: need {need} bytes, got {got}")]
    BufferTooSmall {
        /// Bytes required.
        need: usize,
        /// Bytes available.
        got: usize,
    },
}

/// Reads `N` bytes at `at`, or zeros where `buf` ends first: the frame views' accessors use it
/// so that no input, however short, makes one panic (their `new_checked` guarantees the bytes
/// are there; the compiler folds this check into that one).
#[inline(always)]
fn read_bytes<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(bytes) = buf.get(at..at + N) {
        out.copy_from_slice(bytes);
    }
    out
}

/// Writes `bytes` at `at`; does nothing where `buf` is too short (a view built with
/// `new_unchecked` over a short buffer: its `Repr::emit` reports that before writing).
#[inline(always)]
fn write_bytes<const N: usize>(buf: &mut [u8], at: usize, bytes: [u8; N]) {
    if let Some(dst) = buf.get_mut(at..at + N) {
        dst.copy_from_slice(&bytes);
    }
}
