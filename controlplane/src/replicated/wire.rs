//! The bytes of one Raft message between control planes, in our own checked format.
//!
//! raft-rs's messages are protobuf types, and the protobuf 2 parser it ships has a published
//! advisory (unbounded recursion on nested groups: a crafted message overflows the stack).
//! So peer bytes never reach that parser: [`encode`] writes every field of a
//! [`Message`](raft::eraftpb::Message) in a flat little-endian layout, and [`decode`] reads it
//! back with every length checked against what is left (no recursion, no allocation beyond the
//! input's size, trailing bytes refused). Malformed input is a [`WireError`], never a panic.
//!
//! Layout (version 1): `version u8, msg_type u8, to, from, term, log_term, index, commit,
//! commit_term, request_snapshot, reject_hint, deprecated_priority: u64, priority: i64,
//! reject: u8, context: bytes, entries: u32 count × (entry_type u8, term u64, index u64,
//! data bytes, context bytes, sync_log u8), snapshot: u8 present [data bytes, index u64,
//! term u64, conf_state: 4 × (u32 count × u64), auto_leave u8]`, where `bytes` is a u32
//! length then the bytes.

use raft::eraftpb::{Entry, EntryType, Message, MessageType, Snapshot};

/// The format version written first.
pub const WIRE_VERSION: u8 = 1;

/// Why a message's bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error(
        "raft message truncated: {field} needs {needed} bytes at offset {offset}, {left} left"
    )]
    Truncated {
        field: &'static str,
        offset: usize,
        needed: usize,
        left: usize,
    },
    #[error("raft message of wire version {0}, expected {WIRE_VERSION}")]
    Version(u8),
    #[error("raft message with unknown {field} value {value}")]
    BadValue { field: &'static str, value: u64 },
    #[error("raft message with {0} trailing bytes")]
    Trailing(usize),
}

const MESSAGE_TYPES: [MessageType; 19] = [
    MessageType::MsgHup,
    MessageType::MsgBeat,
    MessageType::MsgPropose,
    MessageType::MsgAppend,
    MessageType::MsgAppendResponse,
    MessageType::MsgRequestVote,
    MessageType::MsgRequestVoteResponse,
    MessageType::MsgSnapshot,
    MessageType::MsgHeartbeat,
    MessageType::MsgHeartbeatResponse,
    MessageType::MsgUnreachable,
    MessageType::MsgSnapStatus,
    MessageType::MsgCheckQuorum,
    MessageType::MsgTransferLeader,
    MessageType::MsgTimeoutNow,
    MessageType::MsgReadIndex,
    MessageType::MsgReadIndexResp,
    MessageType::MsgRequestPreVote,
    MessageType::MsgRequestPreVoteResponse,
];

const ENTRY_TYPES: [EntryType; 3] = [
    EntryType::EntryNormal,
    EntryType::EntryConfChange,
    EntryType::EntryConfChangeV2,
];

/// The message's bytes.
pub fn encode(m: &Message) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(96 + m.entries.iter().map(|e| 32 + e.data.len()).sum::<usize>());
    out.push(WIRE_VERSION);
    out.push(m.msg_type as u8);
    for v in [
        m.to,
        m.from,
        m.term,
        m.log_term,
        m.index,
        m.commit,
        m.commit_term,
        m.request_snapshot,
        m.reject_hint,
        m.deprecated_priority,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&m.priority.to_le_bytes());
    out.push(m.reject as u8);
    put_bytes(&mut out, &m.context);
    put_len(&mut out, m.entries.len());
    for e in m.entries.iter() {
        out.push(e.entry_type as u8);
        out.extend_from_slice(&e.term.to_le_bytes());
        out.extend_from_slice(&e.index.to_le_bytes());
        put_bytes(&mut out, &e.data);
        put_bytes(&mut out, &e.context);
        out.push(e.sync_log as u8);
    }
    match m.snapshot.as_ref() {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_bytes(&mut out, &s.data);
            let meta = s.get_metadata();
            out.extend_from_slice(&meta.index.to_le_bytes());
            out.extend_from_slice(&meta.term.to_le_bytes());
            let cs = meta.get_conf_state();
            for ids in [
                &cs.voters,
                &cs.learners,
                &cs.voters_outgoing,
                &cs.learners_next,
            ] {
                put_len(&mut out, ids.len());
                for id in ids {
                    out.extend_from_slice(&id.to_le_bytes());
                }
            }
            out.push(cs.auto_leave as u8);
        }
    }
    out
}

/// Parses a message's bytes (every length checked; trailing bytes refused).
pub fn decode(bytes: &[u8]) -> Result<Message, WireError> {
    let mut r = Reader { bytes, offset: 0 };
    let version = r.u8("version")?;
    if version != WIRE_VERSION {
        return Err(WireError::Version(version));
    }
    let msg_type = r.u8("msg_type")?;
    let mut m = Message {
        msg_type: *MESSAGE_TYPES
            .get(usize::from(msg_type))
            .ok_or(WireError::BadValue {
                field: "msg_type",
                value: msg_type.into(),
            })?,
        to: r.u64("to")?,
        from: r.u64("from")?,
        term: r.u64("term")?,
        log_term: r.u64("log_term")?,
        index: r.u64("index")?,
        commit: r.u64("commit")?,
        commit_term: r.u64("commit_term")?,
        request_snapshot: r.u64("request_snapshot")?,
        reject_hint: r.u64("reject_hint")?,
        deprecated_priority: r.u64("deprecated_priority")?,
        priority: r.u64("priority")? as i64,
        reject: r.bool("reject")?,
        context: r.bytes("context")?.to_vec().into(),
        ..Message::default()
    };
    let count = r.count("entries", 8 + 8 + 4 + 4 + 2)?;
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let entry_type = r.u8("entry_type")?;
        entries.push(Entry {
            entry_type: *ENTRY_TYPES
                .get(usize::from(entry_type))
                .ok_or(WireError::BadValue {
                    field: "entry_type",
                    value: entry_type.into(),
                })?,
            term: r.u64("entry term")?,
            index: r.u64("entry index")?,
            data: r.bytes("entry data")?.to_vec().into(),
            context: r.bytes("entry context")?.to_vec().into(),
            sync_log: r.bool("sync_log")?,
            ..Entry::default()
        });
    }
    m.set_entries(entries.into());
    if r.bool("snapshot present")? {
        let mut s = Snapshot {
            data: r.bytes("snapshot data")?.to_vec().into(),
            ..Snapshot::default()
        };
        let meta = s.mut_metadata();
        meta.index = r.u64("snapshot index")?;
        meta.term = r.u64("snapshot term")?;
        let cs = meta.mut_conf_state();
        for (field, ids) in [
            ("voters", &mut cs.voters),
            ("learners", &mut cs.learners),
            ("voters_outgoing", &mut cs.voters_outgoing),
            ("learners_next", &mut cs.learners_next),
        ] {
            let n = r.count(field, 8)?;
            ids.reserve_exact(n);
            for _ in 0..n {
                ids.push(r.u64(field)?);
            }
        }
        cs.auto_leave = r.bool("auto_leave")?;
        m.set_snapshot(s);
    }
    match r.bytes.len() - r.offset {
        0 => Ok(m),
        left => Err(WireError::Trailing(left)),
    }
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    let len = u32::try_from(len).expect("a raft message part over 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_len(out, bytes.len());
    out.extend_from_slice(bytes);
}

struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, field: &'static str, needed: usize) -> Result<&'a [u8], WireError> {
        let left = self.bytes.len() - self.offset;
        if needed > left {
            return Err(WireError::Truncated {
                field,
                offset: self.offset,
                needed,
                left,
            });
        }
        let taken = &self.bytes[self.offset..self.offset + needed];
        self.offset += needed;
        Ok(taken)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, WireError> {
        Ok(self.take(field, 1)?[0])
    }

    fn bool(&mut self, field: &'static str) -> Result<bool, WireError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(WireError::BadValue {
                field,
                value: other.into(),
            }),
        }
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, WireError> {
        let b = self.take(field, 4)?;
        Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, WireError> {
        let b = self.take(field, 8)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], WireError> {
        let len = self.u32(field)? as usize;
        self.take(field, len)
    }

    /// A count of items of at least `min_item_len` bytes each: refused when the rest of the
    /// input cannot hold that many, so a forged count never reserves memory.
    fn count(&mut self, field: &'static str, min_item_len: usize) -> Result<usize, WireError> {
        let count = self.u32(field)? as usize;
        let left = self.bytes.len() - self.offset;
        if count.saturating_mul(min_item_len) > left {
            return Err(WireError::Truncated {
                field,
                offset: self.offset,
                needed: count.saturating_mul(min_item_len),
                left,
            });
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_messages() -> Vec<Message> {
        let mut append = Message {
            msg_type: MessageType::MsgAppend,
            to: 2,
            from: 1,
            term: 7,
            log_term: 6,
            index: 41,
            commit: 40,
            commit_term: 6,
            reject_hint: 3,
            priority: -5,
            reject: true,
            context: b"ctx".to_vec().into(),
            ..Message::default()
        };
        append.set_entries(
            vec![
                Entry {
                    entry_type: EntryType::EntryNormal,
                    term: 7,
                    index: 42,
                    data: b"{\"Commit\":{\"epoch\":3}}".to_vec().into(),
                    ..Entry::default()
                },
                Entry {
                    entry_type: EntryType::EntryConfChangeV2,
                    term: 7,
                    index: 43,
                    context: vec![0xff; 300].into(),
                    sync_log: true,
                    ..Entry::default()
                },
            ]
            .into(),
        );
        let mut snap = Message {
            msg_type: MessageType::MsgSnapshot,
            to: 3,
            from: 1,
            term: 9,
            ..Message::default()
        };
        let mut s = Snapshot {
            data: vec![1, 2, 3].into(),
            ..Snapshot::default()
        };
        s.mut_metadata().index = 100;
        s.mut_metadata().term = 8;
        s.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
        s.mut_metadata().mut_conf_state().learners_next = vec![4];
        s.mut_metadata().mut_conf_state().auto_leave = true;
        snap.set_snapshot(s);
        let vote = Message {
            msg_type: MessageType::MsgRequestPreVoteResponse,
            to: 1,
            from: 5,
            term: u64::MAX,
            request_snapshot: 12,
            deprecated_priority: 4,
            ..Message::default()
        };
        vec![append, snap, vote, Message::default()]
    }

    #[test]
    fn every_field_round_trips() {
        for m in sample_messages() {
            let bytes = encode(&m);
            assert_eq!(decode(&bytes).unwrap(), m);
        }
    }

    #[test]
    fn malformed_bytes_are_errors_never_panics() {
        assert!(matches!(decode(&[]), Err(WireError::Truncated { .. })));
        assert_eq!(decode(&[2]), Err(WireError::Version(2)));
        for m in sample_messages() {
            let bytes = encode(&m);
            // Every truncation is refused.
            for len in 0..bytes.len() {
                assert!(decode(&bytes[..len]).is_err(), "truncated to {len}");
            }
            let mut trailing = bytes.clone();
            trailing.push(0);
            assert_eq!(decode(&trailing), Err(WireError::Trailing(1)));
            // Every single-byte corruption parses to an error or to some message: no panic.
            for i in 0..bytes.len() {
                for flip in [0x01, 0x80, 0xff] {
                    let mut corrupt = bytes.clone();
                    corrupt[i] ^= flip;
                    let _ = decode(&corrupt);
                }
            }
        }
        let mut bad_type = encode(&Message::default());
        bad_type[1] = 19;
        assert_eq!(
            decode(&bad_type),
            Err(WireError::BadValue {
                field: "msg_type",
                value: 19
            })
        );
        // A forged entry count reserves nothing and is refused.
        let mut forged = encode(&Message::default());
        let count_at = forged.len() - 5;
        forged[count_at..count_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode(&forged),
            Err(WireError::Truncated {
                field: "entries",
                ..
            })
        ));
        // Nested protobuf groups (the advisory's crash) are just bytes to us.
        let mut groups = vec![WIRE_VERSION];
        groups.extend(std::iter::repeat_n(0x0b, 100_000));
        assert!(decode(&groups).is_err());
    }
}
