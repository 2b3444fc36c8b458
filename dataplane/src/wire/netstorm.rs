//! The NetStorm packet format: a fixed 64-byte header in network byte order, a payload and an
//! optional authentication tag, carried in one UDP datagram.
//!
//! ```text
//!  0      2   3    4     5    6            8      12      16      20    22    24   26   28    32        36         40            48              56             64
//!  | magic | ver | kind | flags | ttl | payload_len | job | epoch | round | tree | path | src | dst | seq | segment | payload_type | reserved=0 | timestamp_ns | packet_number | sender_start |
//!  | payload (payload_len bytes; encrypted if flags & ENCRYPTED) | AEAD tag (AUTH_TAG_LEN bytes, only if flags & AUTH) |
//! ```
//!
//! Version 2 added `packet_number` (the sender's AEAD nonce, unique per sender and start) and
//! `sender_start` (selects the sender's traffic keys; see [`crate::protect`]) and the
//! [`flags::ENCRYPTED`] bit; version-1 datagrams are rejected as [`WireError::BadVersion`].
//!
//! `payload_type` (byte 36, [`PayloadType`]) was the first byte of the reserved word; its
//! f32 code is 0, so f32 datagrams are unchanged and version 1 stays the version: a reader
//! from before the field rejects a 16-bit datagram (non-zero reserved) instead of misreading
//! it. Bytes 37..40 stay reserved and must be zero.
//!
//! Parsing follows smoltcp's `wire` habit: [`Packet::new_checked`] validates a datagram once
//! (lengths, magic, version, kind, flags, reserved bits, per-kind payload rules) and after that
//! every accessor is infallible and cannot panic. [`HeaderRepr`], [`AckRepr`] and
//! [`ProbeRepr`] are the owned, high-level forms with `parse` / `emit` / `buffer_len`.
//!
//! Nothing here allocates: the engine parses every received packet on its hot path.

use super::round_done::ROUND_DONE_PAYLOAD_LEN;
use super::{PayloadType, WireError};
use zerocopy::byteorder::network_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// First two bytes of every NetStorm datagram: ASCII "NS".
pub const MAGIC: u16 = 0x4E53;
/// The wire format version this code reads and writes.
pub const VERSION: u8 = 2;
/// Length of the fixed header in bytes.
pub const HEADER_LEN: usize = 64;
/// Offset of the flags byte in the header.
pub const FLAGS_OFFSET: usize = 4;
/// Offset of the TTL byte in the header (relays rewrite it: it is not authenticated).
pub const TTL_OFFSET: usize = 5;
/// Offset of the 64-bit packet number in the header.
pub const PACKET_NUMBER_OFFSET: usize = 48;
/// Offset of the 64-bit sender start value in the header.
pub const SENDER_START_OFFSET: usize = 56;
/// Length of the authentication tag that follows the payload when [`flags::AUTH`] is set.
pub const AUTH_TAG_LEN: usize = 16;
/// Ethernet 14 + IPv4 20 + UDP 8: bytes a frame carries on the wire besides our datagram.
pub const FRAME_OVERHEAD_BYTES: usize = 42;
/// Length of an [`AckRepr`] payload in bytes.
pub const ACK_PAYLOAD_LEN: usize = 32;
/// Minimum length of a Probe / ProbeReply payload ([`ProbeRepr`] plus any padding).
pub const PROBE_MIN_LEN: usize = 12;
/// Largest UDP payload over IPv4 (65535 - 20 - 8).
pub const MAX_DATAGRAM_LEN: usize = 65507;

/// Header flag bits.
pub mod flags {
    /// An [`AUTH_TAG_LEN`](super::AUTH_TAG_LEN)-byte authentication tag follows the payload.
    pub const AUTH: u8 = 0x01;
    /// The payload is encrypted (only together with [`AUTH`]).
    pub const ENCRYPTED: u8 = 0x02;
    /// Every flag bit this version understands; any other bit set makes a packet invalid.
    pub const KNOWN: u8 = AUTH | ENCRYPTED;
}

/// What a packet carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum PacketKind {
    /// A (partial) sum travelling up a reduce tree; payload is little-endian f32.
    #[default]
    ReduceData = 1,
    /// A final value travelling down a broadcast tree; payload is little-endian f32.
    BroadcastData = 2,
    /// Selective acknowledgement for one (neighbour, path) sequence space; payload is [`AckRepr`].
    Ack = 3,
    /// Path probe; payload starts with a [`ProbeRepr`].
    Probe = 4,
    /// Answer to a [`PacketKind::Probe`]; payload starts with a [`ProbeRepr`].
    ProbeReply = 5,
    /// Control-plane message (policy epochs, ...); payload is opaque here.
    Control = 6,
    /// "I completed round `round` under epoch `epoch`" (release gossip, see
    /// `engine::release`); payload is a [`RoundDoneRepr`].
    RoundDone = 7,
    /// "I am alive": sent to a neighbour the link to which has been idle for a while, so
    /// silence means death (see `engine::liveness`); no payload.
    Heartbeat = 8,
}

impl PacketKind {
    /// Decodes a kind byte; `None` for values this version does not know.
    #[inline]
    pub const fn from_u8(value: u8) -> Option<PacketKind> {
        match value {
            1 => Some(PacketKind::ReduceData),
            2 => Some(PacketKind::BroadcastData),
            3 => Some(PacketKind::Ack),
            4 => Some(PacketKind::Probe),
            5 => Some(PacketKind::ProbeReply),
            6 => Some(PacketKind::Control),
            7 => Some(PacketKind::RoundDone),
            8 => Some(PacketKind::Heartbeat),
            _ => None,
        }
    }

    /// The kind byte on the wire.
    #[inline]
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// True for [`PacketKind::ReduceData`] and [`PacketKind::BroadcastData`] (f32 payloads).
    #[inline]
    pub const fn is_data(self) -> bool {
        matches!(self, PacketKind::ReduceData | PacketKind::BroadcastData)
    }

    /// Checks the per-kind payload length rule for f32 payloads (see
    /// [`PacketKind::payload_len_ok_for`]).
    #[inline]
    pub const fn payload_len_ok(self, len: usize) -> bool {
        self.payload_len_ok_for(PayloadType::F32, len)
    }

    /// Checks the per-kind payload length rule enforced by [`Packet::new_checked`]:
    /// data kinds need whole elements of `payload_type` (a multiple of 4 bytes for f32, of 2
    /// for the 16-bit types), `Ack` exactly [`ACK_PAYLOAD_LEN`], `Probe`/`ProbeReply` at
    /// least [`PROBE_MIN_LEN`], `RoundDone` exactly [`ROUND_DONE_PAYLOAD_LEN`], `Heartbeat`
    /// none; `Control` any.
    #[inline]
    pub const fn payload_len_ok_for(self, payload_type: PayloadType, len: usize) -> bool {
        match self {
            PacketKind::ReduceData | PacketKind::BroadcastData => {
                len.is_multiple_of(payload_type.elem_bytes())
            }
            PacketKind::Ack => len == ACK_PAYLOAD_LEN,
            PacketKind::Probe | PacketKind::ProbeReply => len >= PROBE_MIN_LEN,
            PacketKind::RoundDone => len == ROUND_DONE_PAYLOAD_LEN,
            PacketKind::Heartbeat => len == 0,
            PacketKind::Control => true,
        }
    }
}

impl TryFrom<u8> for PacketKind {
    type Error = WireError;

    fn try_from(value: u8) -> Result<Self, WireError> {
        PacketKind::from_u8(value).ok_or(WireError::UnknownKind(value))
    }
}

/// The on-wire header layout. All multi-byte fields are big-endian; alignment 1, so it can be
/// viewed in place at any offset of a received buffer.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct RawHeader {
    magic: U16,
    version: u8,
    kind: u8,
    flags: u8,
    ttl: u8,
    payload_len: U16,
    job: U32,
    epoch: U32,
    round: U32,
    tree: U16,
    path: U16,
    src: U16,
    dst: U16,
    seq: U32,
    segment: U32,
    payload_type: u8,
    reserved: [u8; 3],
    timestamp_ns: U64,
    packet_number: U64,
    sender_start: U64,
}

const _: () = assert!(core::mem::size_of::<RawHeader>() == HEADER_LEN);

/// Fallback returned by [`Packet::raw`] if a (pathological) `AsRef` impl hands back a shorter
/// slice than the one that was checked; keeps accessors panic-free without `unwrap`.
static ZERO_HEADER: RawHeader = RawHeader {
    magic: U16::ZERO,
    version: 0,
    kind: 0,
    flags: 0,
    ttl: 0,
    payload_len: U16::ZERO,
    job: U32::ZERO,
    epoch: U32::ZERO,
    round: U32::ZERO,
    tree: U16::ZERO,
    path: U16::ZERO,
    src: U16::ZERO,
    dst: U16::ZERO,
    seq: U32::ZERO,
    segment: U32::ZERO,
    payload_type: 0,
    reserved: [0; 3],
    timestamp_ns: U64::ZERO,
    packet_number: U64::ZERO,
    sender_start: U64::ZERO,
};

/// The decoded header: every field of the 64-byte header except the constant ones
/// (magic, version, reserved).
///
/// `payload_type` applies to every kind: an engine stamps its job's type on everything it
/// sends and drops (and counts) packets of another type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct HeaderRepr {
    /// What the packet carries.
    pub kind: PacketKind,
    /// Flag bits ([`flags`]).
    pub flags: u8,
    /// Hops left; relays decrement it and drop the packet at zero.
    pub ttl: u8,
    /// Payload length in bytes (not counting header or tag).
    pub payload_len: u16,
    /// Training job id.
    pub job: u32,
    /// Policy epoch the sender was running.
    pub epoch: u32,
    /// Synchronization round.
    pub round: u32,
    /// Tree (shard / root) id.
    pub tree: u16,
    /// Path id between `src` and `dst`.
    pub path: u16,
    /// Sending node.
    pub src: u16,
    /// Receiving node.
    pub dst: u16,
    /// Per-(neighbour, path) sequence number.
    pub seq: u32,
    /// Segment index within the tree's shard.
    pub segment: u32,
    /// Sender timestamp (ns, sender's clock), echoed back in acks for RTT samples.
    pub timestamp_ns: u64,
    /// Encoding of data payload elements (the job's type).
    pub payload_type: PayloadType,
    /// The sender's packet number (AEAD nonce); written by the sealer (`crate::protect`).
    pub packet_number: u64,
    /// The sender's start value (selects its traffic keys); written by the sealer.
    pub sender_start: u64,
}

impl HeaderRepr {
    /// Parses and validates a whole datagram and returns its header
    /// (shorthand for `Packet::new_checked(buffer)?.header()`).
    pub fn parse(buffer: &[u8]) -> Result<HeaderRepr, WireError> {
        Packet::new_checked(buffer).map(|p| p.header())
    }

    /// True if [`flags::AUTH`] is set (a tag follows the payload).
    #[inline]
    pub const fn has_auth_tag(&self) -> bool {
        self.flags & flags::AUTH != 0
    }

    /// Total datagram length: `HEADER_LEN + payload_len` (+ `AUTH_TAG_LEN` if flags & AUTH).
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len as usize + if self.has_auth_tag() { AUTH_TAG_LEN } else { 0 }
    }

    /// Bytes this packet occupies on an Ethernet link (datagram + [`FRAME_OVERHEAD_BYTES`]).
    #[inline]
    pub const fn frame_len(&self) -> usize {
        self.buffer_len() + FRAME_OVERHEAD_BYTES
    }

    fn to_raw(self) -> RawHeader {
        RawHeader {
            magic: U16::new(MAGIC),
            version: VERSION,
            kind: self.kind.as_u8(),
            flags: self.flags,
            ttl: self.ttl,
            payload_len: U16::new(self.payload_len),
            job: U32::new(self.job),
            epoch: U32::new(self.epoch),
            round: U32::new(self.round),
            tree: U16::new(self.tree),
            path: U16::new(self.path),
            src: U16::new(self.src),
            dst: U16::new(self.dst),
            seq: U32::new(self.seq),
            segment: U32::new(self.segment),
            payload_type: self.payload_type.as_u8(),
            reserved: [0; 3],
            timestamp_ns: U64::new(self.timestamp_ns),
            packet_number: U64::new(self.packet_number),
            sender_start: U64::new(self.sender_start),
        }
    }

    /// Writes the header (only the HEADER_LEN header bytes) into `buf[..HEADER_LEN]`.
    ///
    /// Writes the fields as given, without checking the per-kind payload rules (use
    /// [`emit_packet`] / [`prepare_packet`] for a packet that is guaranteed to parse).
    /// Errors with [`WireError::BufferTooSmall`] if `buf` is shorter than [`HEADER_LEN`].
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let got = buf.len();
        self.to_raw()
            .write_to_prefix(buf)
            .map_err(|_| WireError::BufferTooSmall {
                need: HEADER_LEN,
                got,
            })
    }
}

/// A checked view over one datagram.
///
/// [`Packet::new_checked`] validates once: `len >= HEADER_LEN`, magic, version, known kind,
/// no unknown flag bits, reserved field zero, the per-kind payload rule
/// ([`PacketKind::payload_len_ok`]) and `len == HEADER_LEN + payload_len (+ AUTH_TAG_LEN)`.
/// After that accessors cannot fail or panic.
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
    kind: PacketKind,
    payload_type: PayloadType,
    payload_len: usize,
    has_tag: bool,
}

impl<T: AsRef<[u8]>> core::fmt::Debug for Packet<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Packet")
            .field("header", &self.header())
            .field("len", &self.buffer.as_ref().len())
            .finish()
    }
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Validates `buffer` as one whole datagram (see the type docs for the rules).
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let bytes = buffer.as_ref();
        let got = bytes.len();
        let (raw, _) = RawHeader::ref_from_prefix(bytes).map_err(|_| WireError::Truncated {
            need: HEADER_LEN,
            got,
        })?;
        let magic = raw.magic.get();
        if magic != MAGIC {
            return Err(WireError::BadMagic(magic));
        }
        if raw.version != VERSION {
            return Err(WireError::BadVersion(raw.version));
        }
        let kind = PacketKind::from_u8(raw.kind).ok_or(WireError::UnknownKind(raw.kind))?;
        let unknown = raw.flags & !flags::KNOWN;
        if unknown != 0 {
            return Err(WireError::UnknownFlags(unknown));
        }
        if raw.flags & (flags::AUTH | flags::ENCRYPTED) == flags::ENCRYPTED {
            // Encryption always comes with its tag.
            return Err(WireError::UnknownFlags(flags::ENCRYPTED));
        }
        if raw.reserved != [0; 3] {
            return Err(WireError::Reserved);
        }
        let payload_type = PayloadType::from_u8(raw.payload_type)
            .ok_or(WireError::UnknownPayloadType(raw.payload_type))?;
        let payload_len = usize::from(raw.payload_len.get());
        if !kind.payload_len_ok_for(payload_type, payload_len) {
            return Err(WireError::BadPayloadLen {
                kind,
                len: payload_len,
            });
        }
        let has_tag = raw.flags & flags::AUTH != 0;
        let expected = HEADER_LEN + payload_len + if has_tag { AUTH_TAG_LEN } else { 0 };
        if got != expected {
            return Err(WireError::LengthMismatch { expected, got });
        }
        Ok(Packet {
            buffer,
            kind,
            payload_type,
            payload_len,
            has_tag,
        })
    }

    #[inline]
    fn raw(&self) -> &RawHeader {
        match RawHeader::ref_from_prefix(self.buffer.as_ref()) {
            Ok((raw, _)) => raw,
            Err(_) => &ZERO_HEADER,
        }
    }

    /// Decodes all header fields.
    pub fn header(&self) -> HeaderRepr {
        let raw = self.raw();
        HeaderRepr {
            kind: self.kind,
            flags: raw.flags,
            ttl: raw.ttl,
            payload_len: raw.payload_len.get(),
            job: raw.job.get(),
            epoch: raw.epoch.get(),
            round: raw.round.get(),
            tree: raw.tree.get(),
            path: raw.path.get(),
            src: raw.src.get(),
            dst: raw.dst.get(),
            seq: raw.seq.get(),
            segment: raw.segment.get(),
            timestamp_ns: raw.timestamp_ns.get(),
            payload_type: self.payload_type,
            packet_number: raw.packet_number.get(),
            sender_start: raw.sender_start.get(),
        }
    }

    /// Packet kind.
    #[inline]
    pub fn kind(&self) -> PacketKind {
        self.kind
    }
    /// Encoding of the payload's elements (meaningful for data kinds).
    #[inline]
    pub fn payload_type(&self) -> PayloadType {
        self.payload_type
    }
    /// Flag bits (only known bits can be set).
    #[inline]
    pub fn flags(&self) -> u8 {
        self.raw().flags
    }
    /// Hops left.
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.raw().ttl
    }
    /// Training job id.
    #[inline]
    pub fn job(&self) -> u32 {
        self.raw().job.get()
    }
    /// Policy epoch.
    #[inline]
    pub fn epoch(&self) -> u32 {
        self.raw().epoch.get()
    }
    /// Synchronization round.
    #[inline]
    pub fn round(&self) -> u32 {
        self.raw().round.get()
    }
    /// Tree (shard / root) id.
    #[inline]
    pub fn tree(&self) -> u16 {
        self.raw().tree.get()
    }
    /// Path id.
    #[inline]
    pub fn path(&self) -> u16 {
        self.raw().path.get()
    }
    /// Sending node.
    #[inline]
    pub fn src(&self) -> u16 {
        self.raw().src.get()
    }
    /// Receiving node.
    #[inline]
    pub fn dst(&self) -> u16 {
        self.raw().dst.get()
    }
    /// Per-path sequence number.
    #[inline]
    pub fn seq(&self) -> u32 {
        self.raw().seq.get()
    }
    /// Segment index.
    #[inline]
    pub fn segment(&self) -> u32 {
        self.raw().segment.get()
    }
    /// Sender timestamp in ns.
    #[inline]
    pub fn timestamp_ns(&self) -> u64 {
        self.raw().timestamp_ns.get()
    }
    /// The sender's packet number.
    #[inline]
    pub fn packet_number(&self) -> u64 {
        self.raw().packet_number.get()
    }
    /// The sender's start value.
    #[inline]
    pub fn sender_start(&self) -> u64 {
        self.raw().sender_start.get()
    }
    /// Payload length in bytes.
    #[inline]
    pub fn payload_len(&self) -> usize {
        self.payload_len
    }
    /// Whole datagram length in bytes.
    #[inline]
    pub fn total_len(&self) -> usize {
        HEADER_LEN + self.payload_len + if self.has_tag { AUTH_TAG_LEN } else { 0 }
    }

    /// The `payload_len` bytes after the header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        self.buffer
            .as_ref()
            .get(HEADER_LEN..HEADER_LEN + self.payload_len)
            .unwrap_or(&[])
    }

    /// The [`AUTH_TAG_LEN`] bytes after the payload when [`flags::AUTH`] is set.
    #[inline]
    pub fn auth_tag(&self) -> Option<&[u8]> {
        if !self.has_tag {
            return None;
        }
        let start = HEADER_LEN + self.payload_len;
        self.buffer.as_ref().get(start..start + AUTH_TAG_LEN)
    }

    /// Bytes covered by an authentication tag: header + payload.
    #[inline]
    pub fn authenticated_bytes(&self) -> &[u8] {
        let bytes = self.buffer.as_ref();
        bytes.get(..HEADER_LEN + self.payload_len).unwrap_or(bytes)
    }

    /// Borrows the underlying buffer.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Gives the buffer back.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// The payload, writable (e.g. to fill a packet made by [`prepare_packet`]).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = HEADER_LEN + self.payload_len;
        self.buffer
            .as_mut()
            .get_mut(HEADER_LEN..end)
            .unwrap_or(&mut [])
    }

    /// Rewrites the TTL byte in place.
    #[inline]
    pub fn set_ttl(&mut self, ttl: u8) {
        if let Ok((raw, _)) = RawHeader::mut_from_prefix(self.buffer.as_mut()) {
            raw.ttl = ttl;
        }
    }

    /// The authentication tag, writable, when [`flags::AUTH`] is set.
    #[inline]
    pub fn auth_tag_mut(&mut self) -> Option<&mut [u8]> {
        if !self.has_tag {
            return None;
        }
        let start = HEADER_LEN + self.payload_len;
        self.buffer.as_mut().get_mut(start..start + AUTH_TAG_LEN)
    }
}

/// Checks what the sender side must guarantee so the receiver's `new_checked` accepts.
fn check_emittable(repr: &HeaderRepr, buf_len: usize) -> Result<usize, WireError> {
    let unknown = repr.flags & !flags::KNOWN;
    if unknown != 0 {
        return Err(WireError::UnknownFlags(unknown));
    }
    let len = usize::from(repr.payload_len);
    if !repr.kind.payload_len_ok_for(repr.payload_type, len) {
        return Err(WireError::BadPayloadLen {
            kind: repr.kind,
            len,
        });
    }
    let need = repr.buffer_len();
    if buf_len < need {
        return Err(WireError::BufferTooSmall { need, got: buf_len });
    }
    Ok(need)
}

/// Convenience for senders: writes a whole datagram into `buf` — the header from `repr` with
/// `payload_len` set to `payload.len()` (the `repr.payload_len` field is ignored), then the
/// payload, then a zeroed tag if `repr.flags & AUTH` (fill it with
/// [`Packet::auth_tag_mut`]). Returns the total length; `&buf[..len]` passes
/// [`Packet::new_checked`].
///
/// Errors: [`WireError::BadPayloadLen`] if the payload breaks its kind's rule or exceeds
/// `u16::MAX`, [`WireError::UnknownFlags`] for unknown flag bits,
/// [`WireError::BufferTooSmall`] if `buf` cannot hold the datagram. Nothing is written on error.
pub fn emit_packet(repr: &HeaderRepr, payload: &[u8], buf: &mut [u8]) -> Result<usize, WireError> {
    let payload_len = u16::try_from(payload.len()).map_err(|_| WireError::BadPayloadLen {
        kind: repr.kind,
        len: payload.len(),
    })?;
    let repr = HeaderRepr {
        payload_len,
        ..*repr
    };
    let total = check_emittable(&repr, buf.len())?;
    repr.emit(buf)?;
    let (body, tag) = buf[HEADER_LEN..total].split_at_mut(payload.len());
    body.copy_from_slice(payload);
    tag.fill(0);
    Ok(total)
}

/// Convenience for senders that build the payload in place: writes the header from `repr`
/// (with `repr.payload_len`), zeroes payload and tag, and returns a checked view over
/// `buf[..repr.buffer_len()]` whose [`Packet::payload_mut`] / [`Packet::auth_tag_mut`] the
/// caller then fills. The datagram length is `packet.total_len()`.
///
/// Errors as [`emit_packet`].
pub fn prepare_packet<'a>(
    repr: &HeaderRepr,
    buf: &'a mut [u8],
) -> Result<Packet<&'a mut [u8]>, WireError> {
    let total = check_emittable(repr, buf.len())?;
    let buf = &mut buf[..total];
    repr.emit(buf)?;
    buf[HEADER_LEN..].fill(0);
    Packet::new_checked(buf)
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct RawAck {
    cum_ack: U32,
    top: U32,
    bits: U64,
    echo_ts_ns: U64,
    owd_ns: U64,
}

const _: () = assert!(core::mem::size_of::<RawAck>() == ACK_PAYLOAD_LEN);

/// Ack payload ([`ACK_PAYLOAD_LEN`] bytes, big-endian):
/// `cum_ack u32 | top u32 | bits u64 | echo_ts_ns u64 | owd_ns u64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AckRepr {
    /// Every seq `< cum_ack` has been received.
    pub cum_ack: u32,
    /// Highest seq received + 1 (0 if nothing was received).
    pub top: u32,
    /// Bit `i` set = seq `top - 1 - i` received, for `i in 0..64`.
    pub bits: u64,
    /// `timestamp_ns` of the data packet that triggered this ack.
    pub echo_ts_ns: u64,
    /// The receiver's clock when that data packet arrived minus its `timestamp_ns`
    /// (wrapping): the forward one-way delay plus the constant offset between the two
    /// clocks. Its growth over the path's minimum is queueing on the forward route only; a
    /// queue delaying the acks on the way back does not touch it.
    pub owd_ns: u64,
}

impl AckRepr {
    /// Parses the first [`ACK_PAYLOAD_LEN`] bytes of `payload` (trailing bytes are ignored;
    /// a checked Ack packet has exactly this length). [`WireError::Truncated`] if shorter.
    pub fn parse(payload: &[u8]) -> Result<Self, WireError> {
        let (raw, _) = RawAck::ref_from_prefix(payload).map_err(|_| WireError::Truncated {
            need: ACK_PAYLOAD_LEN,
            got: payload.len(),
        })?;
        Ok(AckRepr {
            cum_ack: raw.cum_ack.get(),
            top: raw.top.get(),
            bits: raw.bits.get(),
            echo_ts_ns: raw.echo_ts_ns.get(),
            owd_ns: raw.owd_ns.get(),
        })
    }

    /// Writes the ack into `buf[..ACK_PAYLOAD_LEN]`; [`WireError::BufferTooSmall`] if shorter.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let got = buf.len();
        RawAck {
            cum_ack: U32::new(self.cum_ack),
            top: U32::new(self.top),
            bits: U64::new(self.bits),
            echo_ts_ns: U64::new(self.echo_ts_ns),
            owd_ns: U64::new(self.owd_ns),
        }
        .write_to_prefix(buf)
        .map_err(|_| WireError::BufferTooSmall {
            need: ACK_PAYLOAD_LEN,
            got,
        })
    }

    /// Payload length of an ack: [`ACK_PAYLOAD_LEN`].
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        ACK_PAYLOAD_LEN
    }

    /// What this ack says about `seq`: `Some(true)` received, `Some(false)` not received
    /// (a gap below the highest received seq, or at/after `top`), `None` if it is older than
    /// the 64-entry bitmap window and not covered by `cum_ack`.
    pub fn is_received(&self, seq: u32) -> Option<bool> {
        if seq < self.cum_ack {
            return Some(true);
        }
        if seq >= self.top {
            return Some(false);
        }
        let i = self.top - 1 - seq;
        if i < 64 {
            Some(self.bits >> i & 1 == 1)
        } else {
            None
        }
    }
}

#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct RawProbe {
    probe_id: U32,
    sent_ns: U64,
}

const _: () = assert!(core::mem::size_of::<RawProbe>() == PROBE_MIN_LEN);

/// Probe / ProbeReply payload: `probe_id u32 | sent_ns u64 | padding` (any total length
/// `>= PROBE_MIN_LEN`; padding lets a probe measure a path at a chosen packet size).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ProbeRepr {
    /// Prober-chosen id, echoed by the reply.
    pub probe_id: u32,
    /// Prober's send time in ns, echoed by the reply.
    pub sent_ns: u64,
}

impl ProbeRepr {
    /// Parses the first [`PROBE_MIN_LEN`] bytes of `payload`; the rest is padding.
    /// [`WireError::Truncated`] if shorter.
    pub fn parse(payload: &[u8]) -> Result<Self, WireError> {
        let (raw, _) = RawProbe::ref_from_prefix(payload).map_err(|_| WireError::Truncated {
            need: PROBE_MIN_LEN,
            got: payload.len(),
        })?;
        Ok(ProbeRepr {
            probe_id: raw.probe_id.get(),
            sent_ns: raw.sent_ns.get(),
        })
    }

    /// Writes the probe fields into `buf[..PROBE_MIN_LEN]` (padding after that is left
    /// untouched); [`WireError::BufferTooSmall`] if shorter.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let got = buf.len();
        RawProbe {
            probe_id: U32::new(self.probe_id),
            sent_ns: U64::new(self.sent_ns),
        }
        .write_to_prefix(buf)
        .map_err(|_| WireError::BufferTooSmall {
            need: PROBE_MIN_LEN,
            got,
        })
    }

    /// Minimum payload length of a probe: [`PROBE_MIN_LEN`].
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        PROBE_MIN_LEN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_repr() -> HeaderRepr {
        HeaderRepr {
            kind: PacketKind::ReduceData,
            flags: 0,
            ttl: 8,
            payload_len: 16,
            job: 0x0102_0304,
            epoch: 7,
            round: 42,
            tree: 3,
            path: 1,
            src: 5,
            dst: 9,
            seq: 1000,
            segment: 77,
            timestamp_ns: 0x1122_3344_5566_7788,
            payload_type: PayloadType::F32,
            packet_number: 0x0A0B_0C0D_0E0F_1011,
            sender_start: 0x2122_2324_2526_2728,
        }
    }

    #[test]
    fn payload_type_byte_length_rule_and_unknown_codes() {
        // f32 is code 0: the f32 header is the version-1 header with a zero reserved word.
        let f32_buf = valid_packet(&sample_repr());
        assert_eq!(&f32_buf[36..40], &[0, 0, 0, 0]);
        for ty in [PayloadType::Bf16, PayloadType::F16] {
            let repr = HeaderRepr {
                payload_type: ty,
                payload_len: 6, // three 16-bit elements: not whole f32s
                ..sample_repr()
            };
            let buf = valid_packet(&repr);
            assert_eq!(buf[36], ty.as_u8());
            let pkt = Packet::new_checked(&buf[..]).unwrap();
            assert_eq!(pkt.payload_type(), ty);
            assert_eq!(pkt.header(), repr);
            let mut odd = vec![0u8; HEADER_LEN + 5];
            HeaderRepr {
                payload_len: 5,
                ..repr
            }
            .emit(&mut odd)
            .unwrap();
            assert_eq!(
                Packet::new_checked(&odd[..]).unwrap_err(),
                WireError::BadPayloadLen {
                    kind: PacketKind::ReduceData,
                    len: 5
                }
            );
        }
        // Six bytes are not whole f32s.
        let mut buf = valid_packet(&HeaderRepr {
            payload_type: PayloadType::Bf16,
            payload_len: 6,
            ..sample_repr()
        });
        buf[36] = 0;
        assert!(matches!(
            Packet::new_checked(&buf[..]),
            Err(WireError::BadPayloadLen { .. })
        ));
        buf[36] = 3;
        assert_eq!(
            Packet::new_checked(&buf[..]).unwrap_err(),
            WireError::UnknownPayloadType(3)
        );
        buf[36] = 1;
        buf[37] = 1;
        assert_eq!(
            Packet::new_checked(&buf[..]).unwrap_err(),
            WireError::Reserved
        );
    }

    fn valid_packet(repr: &HeaderRepr) -> Vec<u8> {
        let mut buf = vec![0u8; repr.buffer_len()];
        repr.emit(&mut buf).unwrap();
        buf
    }

    #[test]
    fn header_layout_is_big_endian_at_documented_offsets() {
        let repr = sample_repr();
        let buf = valid_packet(&repr);
        assert_eq!(&buf[0..2], &[0x4E, 0x53]);
        assert_eq!(buf[2], VERSION);
        assert_eq!(buf[3], 1);
        assert_eq!(buf[4], 0);
        assert_eq!(buf[5], 8);
        assert_eq!(&buf[6..8], &16u16.to_be_bytes());
        assert_eq!(&buf[8..12], &0x0102_0304u32.to_be_bytes());
        assert_eq!(&buf[12..16], &7u32.to_be_bytes());
        assert_eq!(&buf[16..20], &42u32.to_be_bytes());
        assert_eq!(&buf[20..22], &3u16.to_be_bytes());
        assert_eq!(&buf[22..24], &1u16.to_be_bytes());
        assert_eq!(&buf[24..26], &5u16.to_be_bytes());
        assert_eq!(&buf[26..28], &9u16.to_be_bytes());
        assert_eq!(&buf[28..32], &1000u32.to_be_bytes());
        assert_eq!(&buf[32..36], &77u32.to_be_bytes());
        assert_eq!(&buf[36..40], &[0, 0, 0, 0]);
        assert_eq!(&buf[40..48], &0x1122_3344_5566_7788u64.to_be_bytes());
    }

    #[test]
    fn round_trip_and_accessors() {
        let repr = sample_repr();
        let mut buf = valid_packet(&repr);
        buf[HEADER_LEN..].copy_from_slice(&[0xAB; 16]);
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.header(), repr);
        assert_eq!(p.kind(), PacketKind::ReduceData);
        assert_eq!(p.job(), repr.job);
        assert_eq!(p.epoch(), repr.epoch);
        assert_eq!(p.round(), repr.round);
        assert_eq!(p.tree(), repr.tree);
        assert_eq!(p.path(), repr.path);
        assert_eq!(p.src(), repr.src);
        assert_eq!(p.dst(), repr.dst);
        assert_eq!(p.seq(), repr.seq);
        assert_eq!(p.segment(), repr.segment);
        assert_eq!(p.timestamp_ns(), repr.timestamp_ns);
        assert_eq!(p.ttl(), repr.ttl);
        assert_eq!(p.payload(), &[0xAB; 16]);
        assert_eq!(p.auth_tag(), None);
        assert_eq!(p.authenticated_bytes(), &buf[..]);
        assert_eq!(p.total_len(), buf.len());
        assert_eq!(HeaderRepr::parse(&buf).unwrap(), repr);
        assert_eq!(p.into_inner().len(), HEADER_LEN + 16);
    }

    #[test]
    fn auth_tag_and_mutators() {
        let repr = HeaderRepr {
            flags: flags::AUTH,
            ..sample_repr()
        };
        assert_eq!(repr.buffer_len(), HEADER_LEN + 16 + AUTH_TAG_LEN);
        assert_eq!(repr.frame_len(), repr.buffer_len() + FRAME_OVERHEAD_BYTES);
        let mut buf = valid_packet(&repr);
        let mut p = Packet::new_checked(&mut buf[..]).unwrap();
        p.payload_mut().fill(0x11);
        p.auth_tag_mut().unwrap().fill(0x22);
        p.set_ttl(3);
        assert_eq!(p.ttl(), 3);
        assert_eq!(p.payload(), &[0x11; 16]);
        assert_eq!(p.auth_tag(), Some(&[0x22; AUTH_TAG_LEN][..]));
        assert_eq!(p.authenticated_bytes().len(), HEADER_LEN + 16);
        assert_eq!(buf[5], 3);
        assert_eq!(&buf[HEADER_LEN + 16..], &[0x22; AUTH_TAG_LEN]);
        // No tag flag: no tag view.
        let mut plain = valid_packet(&sample_repr());
        let mut p = Packet::new_checked(&mut plain[..]).unwrap();
        assert!(p.auth_tag_mut().is_none());
    }

    #[test]
    fn error_truncated() {
        let buf = valid_packet(&sample_repr());
        assert_eq!(
            Packet::new_checked(&buf[..HEADER_LEN - 1]).unwrap_err(),
            WireError::Truncated {
                need: HEADER_LEN,
                got: HEADER_LEN - 1
            }
        );
        assert_eq!(
            Packet::new_checked(&[][..]).unwrap_err(),
            WireError::Truncated {
                need: HEADER_LEN,
                got: 0
            }
        );
    }

    #[test]
    fn error_bad_magic() {
        let mut buf = valid_packet(&sample_repr());
        buf[0] = 0x12;
        buf[1] = 0x34;
        assert_eq!(
            Packet::new_checked(&buf[..]).unwrap_err(),
            WireError::BadMagic(0x1234)
        );
    }

    #[test]
    fn error_bad_version() {
        let mut buf = valid_packet(&sample_repr());
        // Version 1 (the 48-byte header before packet numbers) is refused.
        buf[2] = 1;
        assert_eq!(
            Packet::new_checked(&buf[..]).unwrap_err(),
            WireError::BadVersion(1)
        );
    }

    #[test]
    fn error_unknown_kind() {
        for bad in [0u8, 9, 0xFF] {
            let mut buf = valid_packet(&sample_repr());
            buf[3] = bad;
            assert_eq!(
                Packet::new_checked(&buf[..]).unwrap_err(),
                WireError::UnknownKind(bad)
            );
            assert_eq!(PacketKind::try_from(bad), Err(WireError::UnknownKind(bad)));
        }
    }

    #[test]
    fn error_unknown_flags() {
        let mut buf = valid_packet(&sample_repr());
        buf[4] = 0x81;
        assert_eq!(
            Packet::new_checked(&buf[..]).unwrap_err(),
            WireError::UnknownFlags(0x80)
        );
    }

    #[test]
    fn error_reserved() {
        let mut buf = valid_packet(&sample_repr());
        buf[39] = 1;
        assert_eq!(
            Packet::new_checked(&buf[..]).unwrap_err(),
            WireError::Reserved
        );
    }

    #[test]
    fn error_length_mismatch() {
        let repr = sample_repr();
        let mut buf = valid_packet(&repr);
        buf.extend_from_slice(&[0; 4]);
        assert_eq!(
            Packet::new_checked(&buf[..]).unwrap_err(),
            WireError::LengthMismatch {
                expected: HEADER_LEN + 16,
                got: HEADER_LEN + 20
            }
        );
        assert_eq!(
            Packet::new_checked(&buf[..HEADER_LEN + 12]).unwrap_err(),
            WireError::LengthMismatch {
                expected: HEADER_LEN + 16,
                got: HEADER_LEN + 12
            }
        );
        // AUTH flag set but the tag is missing.
        let mut buf = valid_packet(&repr);
        buf[4] = flags::AUTH;
        assert_eq!(
            Packet::new_checked(&buf[..]).unwrap_err(),
            WireError::LengthMismatch {
                expected: HEADER_LEN + 16 + AUTH_TAG_LEN,
                got: HEADER_LEN + 16
            }
        );
    }

    #[test]
    fn error_bad_payload_len_per_kind() {
        let cases = [
            (PacketKind::ReduceData, 6u16),
            (PacketKind::BroadcastData, 1),
            (PacketKind::Ack, 23),
            (PacketKind::Ack, 28),
            (PacketKind::Probe, 11),
            (PacketKind::ProbeReply, 0),
        ];
        for (kind, len) in cases {
            let repr = HeaderRepr {
                kind,
                payload_len: len,
                ..sample_repr()
            };
            let buf = valid_packet(&repr);
            assert_eq!(
                Packet::new_checked(&buf[..]).unwrap_err(),
                WireError::BadPayloadLen {
                    kind,
                    len: usize::from(len)
                },
                "{kind:?} {len}"
            );
        }
        // And the lengths that are fine.
        for (kind, len) in [
            (PacketKind::ReduceData, 0u16),
            (PacketKind::BroadcastData, 1456),
            (PacketKind::Ack, 32),
            (PacketKind::Probe, 12),
            (PacketKind::ProbeReply, 1000),
            (PacketKind::Control, 3),
        ] {
            let repr = HeaderRepr {
                kind,
                payload_len: len,
                ..sample_repr()
            };
            let buf = valid_packet(&repr);
            assert_eq!(Packet::new_checked(&buf[..]).unwrap().header(), repr);
        }
    }

    #[test]
    fn error_buffer_too_small() {
        let mut small = [0u8; HEADER_LEN - 1];
        assert_eq!(
            sample_repr().emit(&mut small).unwrap_err(),
            WireError::BufferTooSmall {
                need: HEADER_LEN,
                got: HEADER_LEN - 1
            }
        );
        let mut buf = [0u8; HEADER_LEN + 15];
        assert_eq!(
            emit_packet(&sample_repr(), &[0; 16], &mut buf).unwrap_err(),
            WireError::BufferTooSmall {
                need: HEADER_LEN + 16,
                got: HEADER_LEN + 15
            }
        );
        assert_eq!(
            AckRepr::default().emit(&mut [0u8; 31]).unwrap_err(),
            WireError::BufferTooSmall { need: 32, got: 31 }
        );
        assert_eq!(
            ProbeRepr::default().emit(&mut [0u8; 11]).unwrap_err(),
            WireError::BufferTooSmall { need: 12, got: 11 }
        );
    }

    #[test]
    fn error_messages_name_the_numbers() {
        let msg = WireError::LengthMismatch {
            expected: 64,
            got: 60,
        }
        .to_string();
        assert!(msg.contains("64") && msg.contains("60"), "{msg}");
        let msg = WireError::BadPayloadLen {
            kind: PacketKind::Ack,
            len: 23,
        }
        .to_string();
        assert!(msg.contains("Ack") && msg.contains("23"), "{msg}");
        assert!(WireError::BadMagic(0xBEEF).to_string().contains("0xbeef"));
    }

    #[test]
    fn emit_packet_writes_a_parseable_datagram() {
        let repr = HeaderRepr {
            flags: flags::AUTH,
            payload_len: 9999, // ignored: taken from the payload
            ..sample_repr()
        };
        let payload: Vec<u8> = (0..32u8).collect();
        let mut buf = [0xEEu8; 256];
        let n = emit_packet(&repr, &payload, &mut buf).unwrap();
        assert_eq!(n, HEADER_LEN + 32 + AUTH_TAG_LEN);
        let p = Packet::new_checked(&buf[..n]).unwrap();
        assert_eq!(p.payload(), &payload[..]);
        assert_eq!(p.auth_tag(), Some(&[0u8; AUTH_TAG_LEN][..]));
        assert_eq!(
            p.header(),
            HeaderRepr {
                payload_len: 32,
                ..repr
            }
        );
        // Payload that breaks the kind's rule is refused, and nothing is written.
        let mut buf = [0xEEu8; 256];
        assert_eq!(
            emit_packet(&repr, &[0; 5], &mut buf).unwrap_err(),
            WireError::BadPayloadLen {
                kind: PacketKind::ReduceData,
                len: 5
            }
        );
        assert!(buf.iter().all(|&b| b == 0xEE));
        let bad_flags = HeaderRepr {
            flags: 0x40,
            ..sample_repr()
        };
        assert_eq!(
            emit_packet(&bad_flags, &[0; 4], &mut buf).unwrap_err(),
            WireError::UnknownFlags(0x40)
        );
        let huge = vec![0u8; 70_000];
        assert_eq!(
            emit_packet(&sample_repr(), &huge, &mut buf).unwrap_err(),
            WireError::BadPayloadLen {
                kind: PacketKind::ReduceData,
                len: 70_000
            }
        );
    }

    #[test]
    fn prepare_packet_gives_a_fillable_view() {
        let repr = HeaderRepr {
            kind: PacketKind::Ack,
            payload_len: ACK_PAYLOAD_LEN as u16,
            ..sample_repr()
        };
        let mut buf = [0xEEu8; 128];
        let ack = AckRepr {
            cum_ack: 5,
            top: 9,
            bits: 0b1011,
            echo_ts_ns: 123,
            owd_ns: 456,
        };
        let len = {
            let mut p = prepare_packet(&repr, &mut buf).unwrap();
            ack.emit(p.payload_mut()).unwrap();
            p.total_len()
        };
        assert_eq!(len, HEADER_LEN + ACK_PAYLOAD_LEN);
        let p = Packet::new_checked(&buf[..len]).unwrap();
        assert_eq!(p.header(), repr);
        assert_eq!(AckRepr::parse(p.payload()).unwrap(), ack);
    }

    #[test]
    fn ack_round_trip_layout_and_truncation() {
        let ack = AckRepr {
            cum_ack: 0x0A0B_0C0D,
            top: 0x1000_0001,
            bits: 0x8000_0000_0000_0001,
            echo_ts_ns: u64::MAX - 1,
            owd_ns: 0x0102_0304_0506_0708,
        };
        let mut buf = [0u8; ACK_PAYLOAD_LEN];
        ack.emit(&mut buf).unwrap();
        assert_eq!(&buf[0..4], &0x0A0B_0C0Du32.to_be_bytes());
        assert_eq!(&buf[4..8], &0x1000_0001u32.to_be_bytes());
        assert_eq!(&buf[8..16], &0x8000_0000_0000_0001u64.to_be_bytes());
        assert_eq!(&buf[16..24], &(u64::MAX - 1).to_be_bytes());
        assert_eq!(&buf[24..32], &0x0102_0304_0506_0708u64.to_be_bytes());
        assert_eq!(AckRepr::parse(&buf).unwrap(), ack);
        assert_eq!(
            AckRepr::parse(&buf[..31]).unwrap_err(),
            WireError::Truncated { need: 32, got: 31 }
        );
    }

    #[test]
    fn ack_is_received() {
        // cum_ack 10; received 10? no; 11 yes; top 13 => received 12.
        let ack = AckRepr {
            cum_ack: 10,
            top: 13,
            bits: 0b011, // bit0 = seq 12, bit1 = seq 11, bit2 = seq 10
            echo_ts_ns: 0,
            owd_ns: 0,
        };
        assert_eq!(ack.is_received(9), Some(true));
        assert_eq!(ack.is_received(10), Some(false));
        assert_eq!(ack.is_received(11), Some(true));
        assert_eq!(ack.is_received(12), Some(true));
        assert_eq!(ack.is_received(13), Some(false));
        let far = AckRepr {
            cum_ack: 0,
            top: 100,
            bits: u64::MAX,
            echo_ts_ns: 0,
            owd_ns: 0,
        };
        assert_eq!(far.is_received(36), Some(true));
        assert_eq!(far.is_received(35), None);
    }

    #[test]
    fn probe_round_trip_padding_and_truncation() {
        let probe = ProbeRepr {
            probe_id: 77,
            sent_ns: 1_000_000_007,
        };
        let mut buf = [0x5Au8; 40];
        probe.emit(&mut buf).unwrap();
        assert_eq!(&buf[0..4], &77u32.to_be_bytes());
        assert_eq!(&buf[4..12], &1_000_000_007u64.to_be_bytes());
        assert!(buf[12..].iter().all(|&b| b == 0x5A), "padding untouched");
        assert_eq!(ProbeRepr::parse(&buf).unwrap(), probe);
        assert_eq!(ProbeRepr::parse(&buf[..12]).unwrap(), probe);
        assert_eq!(
            ProbeRepr::parse(&buf[..11]).unwrap_err(),
            WireError::Truncated { need: 12, got: 11 }
        );
    }

    #[test]
    fn kind_codes() {
        for code in 0..=255u8 {
            match PacketKind::from_u8(code) {
                Some(k) => assert_eq!(k.as_u8(), code),
                None => assert!(code == 0 || code > 8),
            }
        }
        assert!(PacketKind::ReduceData.is_data() && PacketKind::BroadcastData.is_data());
        assert!(!PacketKind::Ack.is_data());
        assert_eq!(PacketKind::default(), PacketKind::ReduceData);
    }

    #[test]
    fn debug_shows_header() {
        let buf = valid_packet(&sample_repr());
        let p = Packet::new_checked(&buf[..]).unwrap();
        let s = format!("{p:?}");
        assert!(s.contains("seq: 1000"), "{s}");
    }
}
