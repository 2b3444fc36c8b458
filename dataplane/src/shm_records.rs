//! Records carried by the shared-memory rings ([`crate::shm`]).
//!
//! Both are little-endian byte formats with checked parse and emit: parsing any byte string
//! returns a value or an error, never panics; emitting into a short buffer is an error.
//!
//! * [`TelemetryRecord`] (data plane → control plane): a fixed [`TelemetryRecord::LEN`]-byte
//!   struct, one per telemetry slot.
//! * [`PolicyRecord`] (control plane → data plane): `epoch`, `activate_round` and the
//!   serialized policy (by convention `serde_json` of [`crate::policy::Policy`], produced and
//!   parsed by the binaries, which have `serde_json`; this crate treats it as opaque bytes).
//!   A policy rarely fits one slot, so it travels as **chunks**: each chunk is one ring
//!   message with a [`POLICY_CHUNK_HEADER_LEN`]-byte header (epoch, activate round, chunk
//!   index and count, total length, FNV-1a checksum of the whole policy) followed by up to
//!   `max_payload - POLICY_CHUNK_HEADER_LEN` policy bytes. The consumer reassembles with a
//!   [`PolicyAssembler`]: chunk 0 starts a policy (dropping any partial one), chunks must then
//!   arrive in order with the same header, and the last one is checked against the total
//!   length and checksum. A data plane that restarts mid-policy loses the partial policy;
//!   the control plane re-sends any policy that was not acknowledged (epoch protocol,
//!   DESIGN §4), starting again at chunk 0.

use crate::policy::PathId;
use crate::NodeId;

/// First byte of a [`TelemetryRecord`].
pub const KIND_TELEMETRY: u8 = 1;
/// First byte of a policy chunk.
pub const KIND_POLICY_CHUNK: u8 = 2;
/// Second byte of every record: its format version.
pub const RECORD_VERSION: u8 = 1;
/// Bytes of a policy chunk header.
pub const POLICY_CHUNK_HEADER_LEN: usize = 32;

/// Why a record could not be parsed, emitted or reassembled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("{what}: {len} bytes, need {needed}")]
    Truncated {
        what: &'static str,
        len: usize,
        needed: usize,
    },
    #[error("{what}: record kind {found}, expected {expected}")]
    WrongKind {
        what: &'static str,
        found: u8,
        expected: u8,
    },
    #[error("{what}: record version {found}, expected {expected}")]
    WrongVersion {
        what: &'static str,
        found: u8,
        expected: u8,
    },
    #[error("{what}: {len} bytes, exactly {expected} expected")]
    WrongLength {
        what: &'static str,
        len: usize,
        expected: usize,
    },
    #[error("policy chunk: index {index} not below count {count}")]
    BadChunkIndex { index: u16, count: u16 },
    #[error("policy chunk {index}/{count}: {len} bytes of policy, inconsistent with total length {total_len}")]
    BadChunkLength {
        index: u16,
        count: u16,
        len: u32,
        total_len: u32,
    },
    #[error("policy of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("slot payload of {max_payload} bytes leaves no room after the {POLICY_CHUNK_HEADER_LEN}-byte chunk header")]
    SlotTooSmall { max_payload: usize },
    #[error("policy chunk {index} of epoch {epoch} out of sequence (expected chunk {expected}); partial policy dropped")]
    OutOfSequence {
        epoch: u32,
        index: u16,
        expected: u16,
    },
    #[error("policy of epoch {epoch}: checksum {found:#010x}, expected {expected:#010x}")]
    Checksum {
        epoch: u32,
        found: u32,
        expected: u32,
    },
    #[error("output buffer of {got} bytes, need {needed}")]
    BufferTooSmall { needed: usize, got: usize },
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

fn check_kind(what: &'static str, b: &[u8], kind: u8, min_len: usize) -> Result<(), RecordError> {
    if b.len() < min_len {
        return Err(RecordError::Truncated {
            what,
            len: b.len(),
            needed: min_len,
        });
    }
    if b[0] != kind {
        return Err(RecordError::WrongKind {
            what,
            found: b[0],
            expected: kind,
        });
    }
    if b[1] != RECORD_VERSION {
        return Err(RecordError::WrongVersion {
            what,
            found: b[1],
            expected: RECORD_VERSION,
        });
    }
    Ok(())
}

/// One delivery-rate sample of one path, data plane → control plane.
///
/// Layout (little-endian, [`TelemetryRecord::LEN`] bytes): `0 kind u8 = 1, 1 version u8 = 1,
/// 2 node u16, 4 path u16, 6 reserved u16 = 0, 8 epoch u32, 12 losses u32, 16 round u64,
/// 24 delivered_bytes u64, 32 interval_ns u64, 40 rtt_ns u64, 48 timestamp_ns u64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TelemetryRecord {
    /// The reporting node.
    pub node: NodeId,
    pub path: PathId,
    /// Policy epoch the sample was taken under.
    pub epoch: u32,
    pub round: u64,
    /// Payload bytes acknowledged on the path during the interval.
    pub delivered_bytes: u64,
    pub interval_ns: u64,
    /// Smoothed round-trip time of the path.
    pub rtt_ns: u64,
    /// Packets declared lost during the interval.
    pub losses: u32,
    /// End of the interval (the data plane's monotonic clock).
    pub timestamp_ns: u64,
}

impl TelemetryRecord {
    pub const LEN: usize = 56;

    /// Parses exactly [`TelemetryRecord::LEN`] bytes.
    pub fn parse(b: &[u8]) -> Result<Self, RecordError> {
        const WHAT: &str = "telemetry record";
        check_kind(WHAT, b, KIND_TELEMETRY, Self::LEN)?;
        if b.len() != Self::LEN {
            return Err(RecordError::WrongLength {
                what: WHAT,
                len: b.len(),
                expected: Self::LEN,
            });
        }
        Ok(Self {
            node: u16_at(b, 2),
            path: u16_at(b, 4),
            epoch: u32_at(b, 8),
            losses: u32_at(b, 12),
            round: u64_at(b, 16),
            delivered_bytes: u64_at(b, 24),
            interval_ns: u64_at(b, 32),
            rtt_ns: u64_at(b, 40),
            timestamp_ns: u64_at(b, 48),
        })
    }

    /// Writes the record into the start of `out`; returns [`TelemetryRecord::LEN`].
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, RecordError> {
        if out.len() < Self::LEN {
            return Err(RecordError::BufferTooSmall {
                needed: Self::LEN,
                got: out.len(),
            });
        }
        out[..Self::LEN].copy_from_slice(&self.to_bytes());
        Ok(Self::LEN)
    }

    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0] = KIND_TELEMETRY;
        b[1] = RECORD_VERSION;
        b[2..4].copy_from_slice(&self.node.to_le_bytes());
        b[4..6].copy_from_slice(&self.path.to_le_bytes());
        b[8..12].copy_from_slice(&self.epoch.to_le_bytes());
        b[12..16].copy_from_slice(&self.losses.to_le_bytes());
        b[16..24].copy_from_slice(&self.round.to_le_bytes());
        b[24..32].copy_from_slice(&self.delivered_bytes.to_le_bytes());
        b[32..40].copy_from_slice(&self.interval_ns.to_le_bytes());
        b[40..48].copy_from_slice(&self.rtt_ns.to_le_bytes());
        b[48..56].copy_from_slice(&self.timestamp_ns.to_le_bytes());
        b
    }
}

/// FNV-1a, 32 bits: cheap detection of chunks of two different policies being mixed.
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// A policy for the data plane, control plane → data plane (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRecord {
    pub epoch: u32,
    /// First round run under this policy.
    pub activate_round: u64,
    /// The serialized policy (`serde_json` of [`crate::policy::Policy`] by convention).
    pub policy: Vec<u8>,
}

/// The header of one policy chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyChunkHeader {
    pub epoch: u32,
    pub activate_round: u64,
    pub index: u16,
    pub count: u16,
    /// Policy bytes in this chunk.
    pub chunk_len: u32,
    /// Policy bytes in all chunks.
    pub total_len: u32,
    /// [`fnv1a32`] of the whole policy.
    pub checksum: u32,
}

impl PolicyChunkHeader {
    /// Parses a chunk (layout: `0 kind u8 = 2, 1 version u8 = 1, 2 index u16, 4 count u16,
    /// 6 reserved u16, 8 epoch u32, 12 chunk_len u32, 16 activate_round u64, 24 total_len u32,
    /// 28 checksum u32`, then `chunk_len` policy bytes) into its header and its policy bytes.
    pub fn parse(b: &[u8]) -> Result<(Self, &[u8]), RecordError> {
        const WHAT: &str = "policy chunk";
        check_kind(WHAT, b, KIND_POLICY_CHUNK, POLICY_CHUNK_HEADER_LEN)?;
        let header = Self {
            index: u16_at(b, 2),
            count: u16_at(b, 4),
            epoch: u32_at(b, 8),
            chunk_len: u32_at(b, 12),
            activate_round: u64_at(b, 16),
            total_len: u32_at(b, 24),
            checksum: u32_at(b, 28),
        };
        if header.index >= header.count {
            return Err(RecordError::BadChunkIndex {
                index: header.index,
                count: header.count,
            });
        }
        if header.chunk_len > header.total_len {
            return Err(RecordError::BadChunkLength {
                index: header.index,
                count: header.count,
                len: header.chunk_len,
                total_len: header.total_len,
            });
        }
        let expected = POLICY_CHUNK_HEADER_LEN + header.chunk_len as usize;
        if b.len() != expected {
            return Err(RecordError::WrongLength {
                what: WHAT,
                len: b.len(),
                expected,
            });
        }
        Ok((header, &b[POLICY_CHUNK_HEADER_LEN..]))
    }

    fn emit(&self, out: &mut [u8]) {
        out[0] = KIND_POLICY_CHUNK;
        out[1] = RECORD_VERSION;
        out[2..4].copy_from_slice(&self.index.to_le_bytes());
        out[4..6].copy_from_slice(&self.count.to_le_bytes());
        out[6..8].fill(0);
        out[8..12].copy_from_slice(&self.epoch.to_le_bytes());
        out[12..16].copy_from_slice(&self.chunk_len.to_le_bytes());
        out[16..24].copy_from_slice(&self.activate_round.to_le_bytes());
        out[24..28].copy_from_slice(&self.total_len.to_le_bytes());
        out[28..32].copy_from_slice(&self.checksum.to_le_bytes());
    }
}

impl PolicyRecord {
    /// Policy bytes per chunk for a ring whose slots carry `max_payload` bytes.
    fn chunk_capacity(max_payload: usize) -> Result<usize, RecordError> {
        match max_payload.checked_sub(POLICY_CHUNK_HEADER_LEN) {
            Some(c) if c > 0 => Ok(c),
            _ => Err(RecordError::SlotTooSmall { max_payload }),
        }
    }

    /// Number of chunks this policy needs (at least 1, also for an empty policy).
    pub fn chunk_count(&self, max_payload: usize) -> Result<u16, RecordError> {
        let capacity = Self::chunk_capacity(max_payload)?;
        let max = (u16::MAX as usize)
            .saturating_mul(capacity)
            .min(u32::MAX as usize);
        if self.policy.len() > max {
            return Err(RecordError::TooLarge {
                len: self.policy.len(),
                max,
            });
        }
        Ok(self.policy.len().div_ceil(capacity).max(1) as u16)
    }

    /// Writes chunk `index` into `out` (at most `max_payload` bytes); returns its length.
    pub fn emit_chunk(
        &self,
        index: u16,
        max_payload: usize,
        out: &mut [u8],
    ) -> Result<usize, RecordError> {
        let count = self.chunk_count(max_payload)?;
        if index >= count {
            return Err(RecordError::BadChunkIndex { index, count });
        }
        let capacity = Self::chunk_capacity(max_payload)?;
        let start = index as usize * capacity;
        let end = (start + capacity).min(self.policy.len());
        let bytes = &self.policy[start.min(end)..end];
        let len = POLICY_CHUNK_HEADER_LEN + bytes.len();
        if out.len() < len {
            return Err(RecordError::BufferTooSmall {
                needed: len,
                got: out.len(),
            });
        }
        let header = PolicyChunkHeader {
            epoch: self.epoch,
            activate_round: self.activate_round,
            index,
            count,
            chunk_len: bytes.len() as u32,
            total_len: self.policy.len() as u32, // <= u32::MAX, checked by chunk_count
            checksum: fnv1a32(&self.policy),
        };
        header.emit(&mut out[..POLICY_CHUNK_HEADER_LEN]);
        out[POLICY_CHUNK_HEADER_LEN..len].copy_from_slice(bytes);
        Ok(len)
    }

    /// All chunks, each at most `max_payload` bytes, to push in order (allocates; policies
    /// are rare and off the hot path).
    pub fn chunks(&self, max_payload: usize) -> Result<Vec<Vec<u8>>, RecordError> {
        let count = self.chunk_count(max_payload)?;
        let mut buf = vec![0u8; max_payload];
        (0..count)
            .map(|i| {
                self.emit_chunk(i, max_payload, &mut buf)
                    .map(|n| buf[..n].to_vec())
            })
            .collect()
    }
}

/// Reassembles [`PolicyRecord`]s from chunks popped off the policy ring.
#[derive(Debug)]
pub struct PolicyAssembler {
    max_policy_len: usize,
    partial: Option<(PolicyChunkHeader, Vec<u8>)>,
}

impl PolicyAssembler {
    /// Accepts policies of at most `max_policy_len` bytes.
    pub fn new(max_policy_len: usize) -> Self {
        Self {
            max_policy_len,
            partial: None,
        }
    }

    /// Whether a policy is partially assembled.
    pub fn in_progress(&self) -> bool {
        self.partial.is_some()
    }

    /// Feeds one chunk; returns the policy when its last chunk arrived. Errors drop the
    /// partial policy (the caller logs them and keeps feeding; the next chunk 0 starts over).
    pub fn push_chunk(&mut self, chunk: &[u8]) -> Result<Option<PolicyRecord>, RecordError> {
        let (h, bytes) = PolicyChunkHeader::parse(chunk)?;
        if h.index == 0 {
            if h.total_len as usize > self.max_policy_len {
                self.partial = None;
                return Err(RecordError::TooLarge {
                    len: h.total_len as usize,
                    max: self.max_policy_len,
                });
            }
            self.partial = Some((h, Vec::with_capacity(h.total_len as usize)));
        } else {
            let expected = match &self.partial {
                Some((first, _)) => first.index + 1,
                None => 0,
            };
            let same_policy = matches!(&self.partial, Some((first, _))
                if (first.epoch, first.activate_round, first.count, first.total_len, first.checksum)
                    == (h.epoch, h.activate_round, h.count, h.total_len, h.checksum));
            if !same_policy || h.index != expected {
                self.partial = None;
                return Err(RecordError::OutOfSequence {
                    epoch: h.epoch,
                    index: h.index,
                    expected,
                });
            }
        }
        let Some((last, policy)) = self.partial.as_mut() else {
            return Ok(None); // unreachable: set or returned above
        };
        last.index = h.index;
        if policy.len() + bytes.len() > h.total_len as usize {
            let len = (policy.len() + bytes.len()) as u32;
            self.partial = None;
            return Err(RecordError::BadChunkLength {
                index: h.index,
                count: h.count,
                len,
                total_len: h.total_len,
            });
        }
        policy.extend_from_slice(bytes);
        if h.index + 1 < h.count {
            return Ok(None);
        }
        let Some((_, policy)) = self.partial.take() else {
            return Ok(None);
        };
        if policy.len() != h.total_len as usize {
            return Err(RecordError::BadChunkLength {
                index: h.index,
                count: h.count,
                len: policy.len() as u32,
                total_len: h.total_len,
            });
        }
        let found = fnv1a32(&policy);
        if found != h.checksum {
            return Err(RecordError::Checksum {
                epoch: h.epoch,
                found,
                expected: h.checksum,
            });
        }
        Ok(Some(PolicyRecord {
            epoch: h.epoch,
            activate_round: h.activate_round,
            policy,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shm_records_telemetry_roundtrip_and_errors() {
        let r = TelemetryRecord {
            node: 3,
            path: 17,
            epoch: 9,
            round: 1 << 40,
            delivered_bytes: 123_456_789,
            interval_ns: 10_000_000,
            rtt_ns: 80_000_000,
            losses: 2,
            timestamp_ns: u64::MAX,
        };
        let b = r.to_bytes();
        assert_eq!(TelemetryRecord::parse(&b), Ok(r));
        assert_eq!(&b[..6], &[1, 1, 3, 0, 17, 0]);
        let mut short = [0u8; 55];
        assert!(r.emit(&mut short).is_err());
        assert!(matches!(
            TelemetryRecord::parse(&b[..55]),
            Err(RecordError::Truncated { .. })
        ));
        let mut longer = b.to_vec();
        longer.push(0);
        assert!(matches!(
            TelemetryRecord::parse(&longer),
            Err(RecordError::WrongLength { .. })
        ));
        let mut v2 = b;
        v2[1] = 2;
        assert!(matches!(
            TelemetryRecord::parse(&v2),
            Err(RecordError::WrongVersion { found: 2, .. })
        ));
    }

    #[test]
    fn shm_records_policy_chunks_reassemble() {
        let policy: Vec<u8> = (0..200u32).map(|i| (i * 7) as u8).collect();
        let rec = PolicyRecord {
            epoch: 4,
            activate_round: 12,
            policy,
        };
        let chunks = rec.chunks(64).unwrap();
        assert_eq!(chunks.len(), 200usize.div_ceil(32));
        assert!(chunks.iter().all(|c| c.len() <= 64));
        let mut asm = PolicyAssembler::new(1 << 20);
        for c in &chunks[..chunks.len() - 1] {
            assert_eq!(asm.push_chunk(c), Ok(None));
        }
        assert_eq!(
            asm.push_chunk(chunks.last().unwrap()),
            Ok(Some(rec.clone()))
        );
        // Empty policy: one chunk.
        let empty = PolicyRecord {
            epoch: 1,
            activate_round: 0,
            policy: vec![],
        };
        let c = empty.chunks(64).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(asm.push_chunk(&c[0]), Ok(Some(empty)));
        // Out of order / restarted assembler: dropped until the next chunk 0.
        let mut fresh = PolicyAssembler::new(1 << 20);
        assert!(matches!(
            fresh.push_chunk(&chunks[1]),
            Err(RecordError::OutOfSequence { .. })
        ));
        assert_eq!(fresh.push_chunk(&chunks[0]), Ok(None));
        assert!(matches!(
            fresh.push_chunk(&chunks[2]),
            Err(RecordError::OutOfSequence { .. })
        ));
        assert!(!fresh.in_progress());
        // Chunks of another policy with the same epoch are not mixed in.
        let other = PolicyRecord {
            policy: vec![1; 200],
            ..rec.clone()
        };
        let other_chunks = other.chunks(64).unwrap();
        assert_eq!(fresh.push_chunk(&chunks[0]), Ok(None));
        assert!(matches!(
            fresh.push_chunk(&other_chunks[1]),
            Err(RecordError::OutOfSequence { .. })
        ));
        // Limits.
        assert!(matches!(
            rec.chunks(32),
            Err(RecordError::SlotTooSmall { .. })
        ));
        let mut small = PolicyAssembler::new(100);
        assert!(matches!(
            small.push_chunk(&chunks[0]),
            Err(RecordError::TooLarge { len: 200, .. })
        ));
    }
}
