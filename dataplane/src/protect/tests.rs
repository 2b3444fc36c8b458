use super::*;
use crate::wire::{emit_packet, flags, HeaderRepr, Packet, PacketKind};

const JOB: u32 = 1;
const BODY: usize = HEADER_LEN + 64;

fn secret(b: u8) -> JobSecret {
    JobSecret::new(&[b; 32]).unwrap()
}

fn pp(mode: ProtectionMode, me: NodeId, start: u64) -> PacketProtection {
    PacketProtection::new(
        &Protection::with_secret(mode, secret(7)),
        JOB,
        0,
        me,
        3,
        start,
    )
}

/// A data datagram from node 0 on `path`, payload bytes 100.., sealed by `tx`.
fn sealed(tx: &mut PacketProtection, path: u16) -> Vec<u8> {
    let repr = HeaderRepr {
        kind: PacketKind::ReduceData,
        flags: tx.sealer.flags(),
        ttl: 3,
        payload_len: 64,
        job: JOB,
        path,
        src: tx.sealer.sender,
        dst: 1,
        ..HeaderRepr::default()
    };
    let mut buf = vec![0u8; BODY + AUTH_TAG_LEN];
    let payload: Vec<u8> = (100..164).collect();
    let n = emit_packet(&repr, &payload, &mut buf).unwrap();
    let len = tx.sealer.seal(&mut buf, HEADER_LEN + 64);
    assert_eq!(len, n);
    buf.truncate(len);
    assert!(Packet::new_checked(&buf[..]).is_ok());
    buf
}

fn open(rx: &mut PacketProtection, d: &[u8]) -> Result<Vec<u8>, OpenError> {
    let mut c = d.to_vec();
    rx.opener.open(0, &mut c).map(|()| c)
}

#[test]
fn round_trip_per_mode_and_plaintext_hidden_only_when_encrypting() {
    let payload: Vec<u8> = (100..164).collect();
    for mode in [
        ProtectionMode::Encrypt,
        ProtectionMode::Authenticate,
        ProtectionMode::Off,
    ] {
        let mut tx = pp(mode, 0, 1);
        let mut rx = pp(mode, 1, 1);
        let d = sealed(&mut tx, 0);
        assert_eq!(
            d.len(),
            BODY + if mode == ProtectionMode::Off { 0 } else { 16 }
        );
        let contains = d.windows(payload.len()).any(|w| w == &payload[..]);
        let encrypted_bytes = d[HEADER_LEN..BODY]
            .iter()
            .zip(&payload)
            .filter(|(a, b)| a == b);
        assert_eq!(contains, mode != ProtectionMode::Encrypt, "{mode}");
        if mode == ProtectionMode::Encrypt {
            assert!(
                encrypted_bytes.count() < 8,
                "ciphertext looks like the payload"
            );
        }
        let opened = open(&mut rx, &d).unwrap();
        assert_eq!(&opened[HEADER_LEN..BODY], &payload[..], "{mode}");
        assert_eq!(Packet::new_checked(&d[..]).unwrap().flags(), mode.flags());
    }
}

#[test]
fn every_bit_flip_fails_but_ttl_changes_pass() {
    for mode in [ProtectionMode::Encrypt, ProtectionMode::Authenticate] {
        let mut tx = pp(mode, 0, 1);
        let d = sealed(&mut tx, 0);
        for byte in 0..d.len() {
            let mut rx = pp(mode, 1, 1);
            let mut t = d.clone();
            t[byte] ^= 0x10;
            let r = open(&mut rx, &t);
            if byte == TTL_OFFSET {
                assert!(r.is_ok(), "{mode}: TTL is not authenticated");
            } else {
                assert!(r.is_err(), "{mode}: flip of byte {byte} accepted");
            }
        }
    }
}

#[test]
fn replays_are_rejected_reordering_within_the_window_accepted() {
    let mut tx = pp(ProtectionMode::Encrypt, 0, 1);
    let mut rx = pp(ProtectionMode::Encrypt, 1, 1);
    let pkts: Vec<_> = (0..3000).map(|_| sealed(&mut tx, 5)).collect();
    assert!(open(&mut rx, &pkts[10]).is_ok());
    assert_eq!(open(&mut rx, &pkts[10]), Err(OpenError::Replayed));
    assert!(
        open(&mut rx, &pkts[3]).is_ok(),
        "reordered within the window"
    );
    assert!(open(&mut rx, &pkts[2999]).is_ok());
    assert_eq!(
        open(&mut rx, &pkts[500]),
        Err(OpenError::Replayed),
        "beyond the window"
    );
    assert!(
        open(&mut rx, &pkts[2999 - 100]).is_ok(),
        "within the window"
    );
    // Another path has its own window.
    let other = sealed(&mut tx, 6);
    assert!(open(&mut rx, &other).is_ok());
    assert_eq!(open(&mut rx, &other), Err(OpenError::Replayed));
}

#[test]
fn other_secret_run_job_or_forged_start_is_rejected() {
    let mode = ProtectionMode::Encrypt;
    let mut tx = pp(mode, 0, 1);
    let d = sealed(&mut tx, 0);
    let mut other_secret =
        PacketProtection::new(&Protection::with_secret(mode, secret(8)), JOB, 0, 1, 3, 1);
    assert_eq!(open(&mut other_secret, &d), Err(OpenError::BadTag));
    let mut other_run =
        PacketProtection::new(&Protection::with_secret(mode, secret(7)), JOB, 99, 1, 3, 1);
    assert_eq!(open(&mut other_run, &d), Err(OpenError::BadTag));
    let mut insecure = PacketProtection::new(&Protection::insecure(mode), JOB, 0, 1, 3, 1);
    assert_eq!(open(&mut insecure, &d), Err(OpenError::BadTag));
    let mut rx = pp(mode, 1, 1);
    let mut forged = d.clone();
    forged[SENDER_START_OFFSET + 7] ^= 1;
    assert_eq!(open(&mut rx, &forged), Err(OpenError::BadTag));
    assert!(
        open(&mut rx, &d).is_ok(),
        "a failed forgery leaves no state behind"
    );
}

#[test]
fn mode_mismatch_is_rejected() {
    let mut enc = pp(ProtectionMode::Encrypt, 0, 1);
    let mut auth = pp(ProtectionMode::Authenticate, 0, 1);
    let (de, da) = (sealed(&mut enc, 0), sealed(&mut auth, 0));
    assert_eq!(
        open(&mut pp(ProtectionMode::Authenticate, 1, 1), &de),
        Err(OpenError::BadTag)
    );
    assert_eq!(
        open(&mut pp(ProtectionMode::Encrypt, 1, 1), &da),
        Err(OpenError::BadTag)
    );
    assert_eq!(
        open(&mut pp(ProtectionMode::Off, 1, 1), &de),
        Err(OpenError::BadTag)
    );
    assert!(open(&mut pp(ProtectionMode::Off, 1, 1), &da).is_ok());
    let mut stripped = da.clone();
    stripped[FLAGS_OFFSET] &= !flags::AUTH;
    assert!(open(&mut pp(ProtectionMode::Authenticate, 1, 1), &stripped).is_err());
}

#[test]
fn restarted_sender_is_accepted_and_its_old_packets_are_not() {
    let mode = ProtectionMode::Authenticate;
    let mut rx = pp(mode, 1, 1);
    let mut first = pp(mode, 0, 100);
    let old: Vec<_> = (0..3).map(|_| sealed(&mut first, 0)).collect();
    assert!(open(&mut rx, &old[0]).is_ok());
    let mut restarted = pp(mode, 0, 200);
    let new = sealed(&mut restarted, 0);
    assert_eq!(Packet::new_checked(&new[..]).unwrap().packet_number(), 0);
    assert!(
        open(&mut rx, &new).is_ok(),
        "new start, packet number 0 again"
    );
    assert_eq!(open(&mut rx, &old[1]), Err(OpenError::Replayed));
}

#[test]
fn key_phases_roll_over() {
    let p = Protection::with_secret(ProtectionMode::Encrypt, secret(7));
    let mut tx = PacketProtection::with_phase_shift(&p, JOB, 0, 0, 3, 1, 2);
    let mut rx = PacketProtection::with_phase_shift(&p, JOB, 0, 1, 3, 1, 2);
    let pkts: Vec<_> = (0..40).map(|_| sealed(&mut tx, 0)).collect();
    // Phase 0 and phase 1 keys differ: packet 4 does not open under phase 0's key.
    let mut moved = pkts[4].clone();
    moved[PACKET_NUMBER_OFFSET..PACKET_NUMBER_OFFSET + 8].copy_from_slice(&0u64.to_be_bytes());
    assert!(open(&mut rx, &moved).is_err());
    // Slightly reordered across boundaries: all open, each once.
    let mut order: Vec<usize> = (0..40).collect();
    for c in order.chunks_mut(3) {
        c.reverse();
    }
    let mut rx = PacketProtection::with_phase_shift(&p, JOB, 0, 1, 3, 1, 2);
    for i in order {
        assert!(open(&mut rx, &pkts[i]).is_ok(), "packet {i}");
    }
    let mut fresh = PacketProtection::with_phase_shift(&p, JOB, 0, 1, 3, 1, 3);
    assert!(
        open(&mut fresh, &pkts[30]).is_err(),
        "another phase length, other keys"
    );
}

#[test]
fn forged_starts_are_rate_limited() {
    let mode = ProtectionMode::Encrypt;
    let mut tx = pp(mode, 0, 1);
    let d = sealed(&mut tx, 0);
    let mut rx = pp(mode, 1, 1);
    let mut results = Vec::new();
    for i in 0..20u64 {
        let mut f = d.clone();
        f[SENDER_START_OFFSET..SENDER_START_OFFSET + 8].copy_from_slice(&(1000 + i).to_be_bytes());
        results.push(rx.opener.open(0, &mut f));
    }
    let bad = results
        .iter()
        .filter(|r| **r == Err(OpenError::BadTag))
        .count();
    let limited = results
        .iter()
        .filter(|r| **r == Err(OpenError::KeyLimited))
        .count();
    assert_eq!(
        (bad, limited),
        (DERIVE_BURST as usize, 20 - DERIVE_BURST as usize)
    );
    // A second later the budget is back.
    let mut c = d.clone();
    assert!(rx.opener.open(crate::NANOS_PER_SEC, &mut c).is_ok());
}

#[test]
fn secrets_are_never_printed_and_short_ones_refused() {
    let s = secret(0x41);
    assert!(!format!("{s:?}").contains("41"));
    assert!(!format!("{:?}", Protection::with_secret(ProtectionMode::Encrypt, s)).contains("AAAA"));
    assert_eq!(JobSecret::new(&[1; 31]), Err(ShortSecret(31)));
}
