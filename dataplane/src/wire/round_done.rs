//! The payload of a [`PacketKind::RoundDone`](super::PacketKind::RoundDone) datagram: the
//! release gossip's one message. The round and epoch it speaks of are the header's own
//! `round` and `epoch` fields (covered by the packet MAC like everything else); the payload
//! only says what the message asks of its receiver.
//!
//! ```text
//!  0      1                 8
//!  | role | reserved = 0 (7) |
//! ```

use super::WireError;

/// Length of a RoundDone payload in bytes.
pub const ROUND_DONE_PAYLOAD_LEN: usize = 8;

/// What a RoundDone message is, for its receiver. Every role means "the sender completed
/// the header's round"; they differ in whether an answer is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum RoundDoneRole {
    /// The first announcement, sent to every member on completion: no answer wanted (the
    /// receiver announces its own completion when it gets there).
    #[default]
    Announce = 0,
    /// A repeated announcement: the sender has not heard the receiver's RoundDone yet, so
    /// the receiver answers if it completed the round (its own announcement may be lost).
    Resend = 1,
    /// The answer to a [`RoundDoneRole::Resend`]; never answered.
    Answer = 2,
}

impl RoundDoneRole {
    /// Decodes a role byte; `None` for values this version does not know.
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            0 => Some(RoundDoneRole::Announce),
            1 => Some(RoundDoneRole::Resend),
            2 => Some(RoundDoneRole::Answer),
            _ => None,
        }
    }
}

/// A RoundDone payload ([`ROUND_DONE_PAYLOAD_LEN`] bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RoundDoneRepr {
    pub role: RoundDoneRole,
}

impl RoundDoneRepr {
    /// Parses a whole payload: exactly [`ROUND_DONE_PAYLOAD_LEN`] bytes
    /// ([`WireError::Truncated`] / [`WireError::LengthMismatch`] otherwise), a known role and
    /// zero reserved bytes ([`WireError::BadRoundDone`] otherwise).
    pub fn parse(payload: &[u8]) -> Result<Self, WireError> {
        let got = payload.len();
        if got < ROUND_DONE_PAYLOAD_LEN {
            return Err(WireError::Truncated {
                need: ROUND_DONE_PAYLOAD_LEN,
                got,
            });
        }
        if got != ROUND_DONE_PAYLOAD_LEN {
            return Err(WireError::LengthMismatch {
                expected: ROUND_DONE_PAYLOAD_LEN,
                got,
            });
        }
        let role = RoundDoneRole::from_u8(payload[0]).ok_or(WireError::BadRoundDone(payload[0]))?;
        if payload[1..].iter().any(|&b| b != 0) {
            return Err(WireError::BadRoundDone(payload[0]));
        }
        Ok(RoundDoneRepr { role })
    }

    /// Writes the payload into `buf[..ROUND_DONE_PAYLOAD_LEN]`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let got = buf.len();
        let Some(out) = buf.get_mut(..ROUND_DONE_PAYLOAD_LEN) else {
            return Err(WireError::BufferTooSmall {
                need: ROUND_DONE_PAYLOAD_LEN,
                got,
            });
        };
        out.fill(0);
        out[0] = self.role as u8;
        Ok(())
    }

    /// Payload length: [`ROUND_DONE_PAYLOAD_LEN`].
    pub const fn buffer_len(&self) -> usize {
        ROUND_DONE_PAYLOAD_LEN
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{emit_packet, HeaderRepr, Packet, PacketKind, HEADER_LEN};

    #[test]
    fn round_trip_every_role() {
        for role in [
            RoundDoneRole::Announce,
            RoundDoneRole::Resend,
            RoundDoneRole::Answer,
        ] {
            let mut buf = [0xAAu8; ROUND_DONE_PAYLOAD_LEN];
            RoundDoneRepr { role }.emit(&mut buf).unwrap();
            assert_eq!(buf[0], role as u8);
            assert_eq!(&buf[1..], &[0; 7]);
            assert_eq!(RoundDoneRepr::parse(&buf), Ok(RoundDoneRepr { role }));
        }
    }

    #[test]
    fn malformed_payloads_are_errors() {
        let mut ok = [0u8; ROUND_DONE_PAYLOAD_LEN];
        ok[0] = 3;
        assert_eq!(RoundDoneRepr::parse(&ok), Err(WireError::BadRoundDone(3)));
        let mut reserved = [0u8; ROUND_DONE_PAYLOAD_LEN];
        reserved[7] = 1;
        assert_eq!(
            RoundDoneRepr::parse(&reserved),
            Err(WireError::BadRoundDone(0))
        );
        assert!(matches!(
            RoundDoneRepr::parse(&[0; 7]),
            Err(WireError::Truncated { need: 8, got: 7 })
        ));
        assert!(matches!(
            RoundDoneRepr::parse(&[0; 9]),
            Err(WireError::LengthMismatch { .. })
        ));
        assert!(RoundDoneRepr::default().emit(&mut [0; 7]).is_err());
    }

    #[test]
    fn packet_length_rules_for_the_new_kinds() {
        let repr = HeaderRepr {
            kind: PacketKind::RoundDone,
            round: 7,
            epoch: 3,
            ..HeaderRepr::default()
        };
        let mut buf = [0u8; 128];
        let len = emit_packet(&repr, &[1, 0, 0, 0, 0, 0, 0, 0], &mut buf).unwrap();
        let p = Packet::new_checked(&buf[..len]).unwrap();
        assert_eq!(
            (p.kind(), p.round(), p.epoch()),
            (PacketKind::RoundDone, 7, 3)
        );
        assert_eq!(
            RoundDoneRepr::parse(p.payload()).unwrap().role,
            RoundDoneRole::Resend
        );
        // A RoundDone of any other payload length, or a Heartbeat with a payload, is refused.
        assert!(emit_packet(&repr, &[0; 4], &mut buf).is_err());
        let hb = HeaderRepr {
            kind: PacketKind::Heartbeat,
            ..HeaderRepr::default()
        };
        assert_eq!(emit_packet(&hb, &[], &mut buf), Ok(HEADER_LEN));
        assert!(Packet::new_checked(&buf[..HEADER_LEN]).is_ok());
        assert!(emit_packet(&hb, &[0; 4], &mut buf).is_err());
        // A forged length in the header of a RoundDone is refused by new_checked.
        let len = emit_packet(&repr, &[0; 8], &mut buf).unwrap();
        buf[7] = 12; // payload_len low byte
        assert!(Packet::new_checked(&buf[..len + 4]).is_err());
    }
}
