//! Property tests for the wire format (`netstorm_dataplane::wire`), plus a replay of the fuzz
//! seed corpus (`fuzz/corpus/wire_header/`) so CI exercises it without a nightly toolchain.

use std::path::PathBuf;

use netstorm_dataplane::wire::{
    emit_packet, flags, AckRepr, HeaderRepr, Packet, PacketKind, PayloadType, ProbeRepr,
    RoundDoneRepr, WireError, ACK_PAYLOAD_LEN, AUTH_TAG_LEN, HEADER_LEN, MAGIC, PROBE_MIN_LEN,
    ROUND_DONE_PAYLOAD_LEN, VERSION,
};
use proptest::prelude::*;

const ALL_KINDS: [PacketKind; 8] = [
    PacketKind::ReduceData,
    PacketKind::BroadcastData,
    PacketKind::Ack,
    PacketKind::Probe,
    PacketKind::ProbeReply,
    PacketKind::Control,
    PacketKind::RoundDone,
    PacketKind::Heartbeat,
];

/// The invariant every accepted datagram must satisfy: accessors agree with the bytes, and
/// re-emitting the parsed header reproduces the 48 header bytes exactly.
fn check_accepted(bytes: &[u8]) -> Result<(), TestCaseError> {
    let Ok(packet) = Packet::new_checked(bytes) else {
        return Ok(());
    };
    let header = packet.header();
    let mut out = [0u8; HEADER_LEN];
    header.emit(&mut out).expect("48-byte buffer");
    prop_assert_eq!(&out[..], &bytes[..HEADER_LEN]);
    prop_assert_eq!(header.buffer_len(), bytes.len());
    prop_assert_eq!(packet.total_len(), bytes.len());
    let payload_end = HEADER_LEN + usize::from(header.payload_len);
    prop_assert_eq!(packet.payload(), &bytes[HEADER_LEN..payload_end]);
    prop_assert_eq!(packet.authenticated_bytes(), &bytes[..payload_end]);
    prop_assert_eq!(packet.auth_tag().is_some(), header.flags & flags::AUTH != 0);
    if let Some(tag) = packet.auth_tag() {
        prop_assert_eq!(tag, &bytes[payload_end..]);
    }
    prop_assert!(header.kind.payload_len_ok(packet.payload().len()));
    prop_assert_eq!(
        header.flags & !flags::KNOWN,
        0,
        "accepted unknown flag bits"
    );
    prop_assert_eq!(packet.flags(), header.flags);
    prop_assert_eq!(packet.kind(), header.kind);
    prop_assert_eq!(packet.seq(), header.seq);
    prop_assert_eq!(packet.timestamp_ns(), header.timestamp_ns);
    if header.kind == PacketKind::Ack {
        let ack = AckRepr::parse(packet.payload());
        prop_assert!(ack.is_ok(), "a checked Ack must carry a parseable AckRepr");
    }
    if matches!(header.kind, PacketKind::Probe | PacketKind::ProbeReply) {
        let probe = ProbeRepr::parse(packet.payload());
        prop_assert!(
            probe.is_ok(),
            "a checked Probe must carry a parseable ProbeRepr"
        );
    }
    Ok(())
}

/// Everything the fuzz target does with one input, as a test: must not panic, and accepted
/// inputs must satisfy [`check_accepted`].
fn check_any_input(bytes: &[u8]) -> Result<(), TestCaseError> {
    check_accepted(bytes)?;
    // The payload parsers must not panic either, and must round-trip what they read.
    if let Ok(ack) = AckRepr::parse(bytes) {
        let mut out = [0u8; ACK_PAYLOAD_LEN];
        ack.emit(&mut out).expect("24-byte buffer");
        prop_assert_eq!(&out[..], &bytes[..ACK_PAYLOAD_LEN]);
    } else {
        prop_assert!(bytes.len() < ACK_PAYLOAD_LEN);
    }
    if let Ok(probe) = ProbeRepr::parse(bytes) {
        let mut out = [0u8; PROBE_MIN_LEN];
        probe.emit(&mut out).expect("12-byte buffer");
        prop_assert_eq!(&out[..], &bytes[..PROBE_MIN_LEN]);
    } else {
        prop_assert!(bytes.len() < PROBE_MIN_LEN);
    }
    // A RoundDone payload is accepted only whole, with a known role and zero reserved bytes
    // (a forged or corrupted one is counted and dropped by the engine).
    match RoundDoneRepr::parse(bytes) {
        Ok(done) => {
            let mut out = [0u8; ROUND_DONE_PAYLOAD_LEN];
            done.emit(&mut out).expect("8-byte buffer");
            prop_assert_eq!(&out[..], bytes);
        }
        Err(_) => prop_assert!(
            bytes.len() != ROUND_DONE_PAYLOAD_LEN
                || bytes[0] > 2
                || bytes[1..].iter().any(|&b| b != 0)
        ),
    }
    Ok(())
}

fn arb_kind() -> impl Strategy<Value = PacketKind> {
    prop::sample::select(&ALL_KINDS[..])
}

/// A payload length (kept small) that satisfies `kind`'s rule.
fn arb_payload_len(kind: PacketKind) -> BoxedStrategy<u16> {
    match kind {
        PacketKind::ReduceData | PacketKind::BroadcastData => {
            (0u16..=64).prop_map(|n| n * 4).boxed()
        }
        PacketKind::Ack => Just(ACK_PAYLOAD_LEN as u16).boxed(),
        PacketKind::Probe | PacketKind::ProbeReply => (PROBE_MIN_LEN as u16..=80).boxed(),
        PacketKind::Control => (0u16..=100).boxed(),
        PacketKind::RoundDone => Just(ROUND_DONE_PAYLOAD_LEN as u16).boxed(),
        PacketKind::Heartbeat => Just(0).boxed(),
    }
}

/// A header that [`Packet::new_checked`] must accept once a buffer of the right size is built.
fn arb_valid_repr() -> impl Strategy<Value = HeaderRepr> {
    arb_kind()
        .prop_flat_map(|kind| (Just(kind), arb_payload_len(kind)))
        .prop_flat_map(|(kind, payload_len)| {
            (
                (any::<bool>(), any::<u8>(), any::<u32>(), any::<u32>()),
                (any::<u32>(), any::<u16>(), any::<u16>(), any::<u16>()),
                (any::<u16>(), any::<u32>(), any::<u32>(), any::<u64>()),
                (any::<bool>(), any::<u64>(), any::<u64>()),
            )
                .prop_map(
                    move |(
                        (auth, ttl, job, epoch),
                        (round, tree, path, src),
                        (dst, seq, segment, timestamp_ns),
                        (encrypted, packet_number, sender_start),
                    )| HeaderRepr {
                        kind,
                        flags: match (auth, encrypted) {
                            (false, _) => 0,
                            (true, false) => flags::AUTH,
                            (true, true) => flags::AUTH | flags::ENCRYPTED,
                        },
                        ttl,
                        payload_len,
                        job,
                        epoch,
                        round,
                        tree,
                        path,
                        src,
                        dst,
                        seq,
                        segment,
                        timestamp_ns,
                        payload_type: PayloadType::F32,
                        packet_number,
                        sender_start,
                    },
                )
        })
}

/// A valid header plus payload/tag bytes: a whole well-formed datagram.
fn arb_valid_datagram() -> impl Strategy<Value = (HeaderRepr, Vec<u8>)> {
    arb_valid_repr().prop_flat_map(|repr| {
        let body_len = repr.buffer_len() - HEADER_LEN;
        prop::collection::vec(any::<u8>(), body_len).prop_map(move |body| {
            let mut buf = vec![0u8; HEADER_LEN];
            repr.emit(&mut buf).expect("header fits");
            buf.extend_from_slice(&body);
            (repr, buf)
        })
    })
}

#[derive(Debug, Clone)]
enum Mutation {
    /// XOR the byte at `index % len` with `mask` (mask != 0).
    Flip { index: usize, mask: u8 },
    /// Set the byte at `index % len`.
    Set { index: usize, value: u8 },
    /// Keep only the first `len % (len + 1)` bytes.
    Truncate { len: usize },
    /// Append bytes.
    Extend { bytes: Vec<u8> },
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), 1u8..=255).prop_map(|(index, mask)| Mutation::Flip { index, mask }),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(index, value)| Mutation::Set { index, value }),
        1 => any::<usize>().prop_map(|len| Mutation::Truncate { len }),
        1 => prop::collection::vec(any::<u8>(), 1..32).prop_map(|bytes| Mutation::Extend { bytes }),
    ]
}

fn apply(buf: &mut Vec<u8>, mutation: &Mutation) {
    match mutation {
        Mutation::Flip { index, mask } if !buf.is_empty() => {
            let i = index % buf.len();
            buf[i] ^= mask;
        }
        Mutation::Set { index, value } if !buf.is_empty() => {
            let i = index % buf.len();
            buf[i] = *value;
        }
        Mutation::Truncate { len } => {
            let keep = len % (buf.len() + 1);
            buf.truncate(keep);
        }
        Mutation::Extend { bytes } => buf.extend_from_slice(bytes),
        _ => {}
    }
}

/// Random bytes that start with a valid magic + version, so the parser's later checks get
/// exercised (uniform random bytes almost always stop at the magic).
fn arb_plausible_bytes() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(&[1u8, 2, 3, 4, 5, 6, 0, 7][..]),
        prop::sample::select(&[0u8, flags::AUTH, 0x02, 0x80][..]),
        prop::collection::vec(any::<u8>(), 0..200),
        any::<bool>(),
    )
        .prop_map(|(kind, flag_bits, rest, zero_reserved)| {
            let mut buf = Vec::with_capacity(4 + rest.len());
            buf.extend_from_slice(&MAGIC.to_be_bytes());
            buf.push(VERSION);
            buf.push(kind);
            buf.push(flag_bits);
            buf.extend_from_slice(&rest);
            if zero_reserved && buf.len() >= 40 {
                buf[36..40].fill(0);
            }
            // Sometimes make payload_len agree with the length so the packet can be accepted.
            if buf.len() >= HEADER_LEN && rest.first().is_some_and(|b| b & 1 == 1) {
                let tag = if flag_bits == flags::AUTH {
                    AUTH_TAG_LEN
                } else {
                    0
                };
                let payload_len = buf.len().saturating_sub(HEADER_LEN + tag) as u16;
                buf[6..8].copy_from_slice(&payload_len.to_be_bytes());
            }
            buf
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn header_round_trips_through_emit_and_new_checked((repr, buf) in arb_valid_datagram()) {
        let packet = Packet::new_checked(&buf[..]);
        prop_assert!(packet.is_ok(), "valid datagram rejected: {:?}", packet.err());
        let packet = packet.unwrap();
        prop_assert_eq!(packet.header(), repr);
        prop_assert_eq!(packet.payload().len(), usize::from(repr.payload_len));
        prop_assert_eq!(
            packet.auth_tag().map(<[u8]>::len),
            (repr.flags & flags::AUTH != 0).then_some(AUTH_TAG_LEN)
        );
        check_accepted(&buf)?;
    }

    #[test]
    fn emit_packet_output_parses_back(
        repr in arb_valid_repr(),
        fill in any::<u8>(),
        tag in prop::array::uniform16(any::<u8>()),
    ) {
        let payload = vec![fill; usize::from(repr.payload_len)];
        let mut buf = vec![0u8; repr.buffer_len() + 7];
        let n = emit_packet(&repr, &payload, &mut buf).unwrap();
        prop_assert_eq!(n, repr.buffer_len());
        {
            let mut packet = Packet::new_checked(&mut buf[..n]).unwrap();
            if let Some(slot) = packet.auth_tag_mut() {
                slot.copy_from_slice(&tag);
            }
        }
        let packet = Packet::new_checked(&buf[..n]).unwrap();
        prop_assert_eq!(packet.header(), repr);
        prop_assert_eq!(packet.payload(), &payload[..]);
        if repr.flags & flags::AUTH != 0 {
            prop_assert_eq!(packet.auth_tag(), Some(&tag[..]));
        }
    }

    #[test]
    fn new_checked_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        check_any_input(&bytes)?;
    }

    #[test]
    fn new_checked_never_panics_on_plausible_bytes(bytes in arb_plausible_bytes()) {
        check_any_input(&bytes)?;
    }

    #[test]
    fn new_checked_never_panics_on_mutated_packets(
        (_repr, buf) in arb_valid_datagram(),
        mutations in prop::collection::vec(arb_mutation(), 1..4),
    ) {
        let mut buf = buf;
        for m in &mutations {
            apply(&mut buf, m);
        }
        check_any_input(&buf)?;
    }

    #[test]
    fn single_byte_header_corruption_is_caught_or_round_trips(
        (_repr, buf) in arb_valid_datagram(),
        index in 0..HEADER_LEN,
        mask in 1u8..=255,
    ) {
        let mut buf = buf;
        buf[index] ^= mask;
        let result = Packet::new_checked(&buf[..]);
        // Bytes 0..5 (magic, version, kind, flags), 6..8 (payload_len), 36 (payload type)
        // and 37..40 (reserved) are validated: corrupting magic/version/reserved must always
        // be rejected; the payload type byte (0 = f32 in these datagrams) is rejected unless
        // it became another known type, and then the datagram parses as that type.
        if index < 3 || (37..40).contains(&index) {
            prop_assert!(result.is_err());
        }
        if index == 36 {
            match PayloadType::from_u8(mask) {
                None => prop_assert_eq!(result.unwrap_err(), WireError::UnknownPayloadType(mask)),
                Some(ty) => {
                    let kind = _repr.kind;
                    let len = usize::from(_repr.payload_len);
                    if kind.payload_len_ok_for(ty, len) {
                        prop_assert_eq!(result.unwrap().payload_type(), ty);
                    } else {
                        prop_assert!(result.is_err());
                    }
                }
            }
        }
        check_accepted(&buf)?;
    }

    #[test]
    fn ack_round_trips(cum_ack in any::<u32>(), top in any::<u32>(), bits in any::<u64>(), echo_ts_ns in any::<u64>(), owd_ns in any::<u64>()) {
        let ack = AckRepr { cum_ack, top, bits, echo_ts_ns, owd_ns };
        let mut buf = [0u8; ACK_PAYLOAD_LEN];
        ack.emit(&mut buf).unwrap();
        prop_assert_eq!(AckRepr::parse(&buf).unwrap(), ack);
        for short in 0..ACK_PAYLOAD_LEN {
            prop_assert_eq!(
                AckRepr::parse(&buf[..short]),
                Err(WireError::Truncated { need: ACK_PAYLOAD_LEN, got: short })
            );
        }
    }

    #[test]
    fn probe_round_trips(probe_id in any::<u32>(), sent_ns in any::<u64>(), padding in 0usize..64) {
        let probe = ProbeRepr { probe_id, sent_ns };
        let mut buf = vec![0xA5u8; PROBE_MIN_LEN + padding];
        probe.emit(&mut buf).unwrap();
        prop_assert_eq!(ProbeRepr::parse(&buf).unwrap(), probe);
        prop_assert!(buf[PROBE_MIN_LEN..].iter().all(|&b| b == 0xA5));
        for short in 0..PROBE_MIN_LEN {
            prop_assert_eq!(
                ProbeRepr::parse(&buf[..short]),
                Err(WireError::Truncated { need: PROBE_MIN_LEN, got: short })
            );
        }
    }
}

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/wire_header")
}

/// The seed inputs checked into `fuzz/corpus/wire_header/` (regenerate with
/// `cargo test -p netstorm-dataplane --test wire_props -- --ignored write_fuzz_seed_corpus`).
fn seed_inputs() -> Vec<(&'static str, Vec<u8>)> {
    let base = HeaderRepr {
        kind: PacketKind::ReduceData,
        flags: 0,
        ttl: 4,
        payload_len: 0,
        job: 1,
        epoch: 2,
        round: 3,
        tree: 0,
        path: 1,
        src: 0,
        dst: 1,
        seq: 17,
        segment: 5,
        timestamp_ns: 1_000_000,
        payload_type: PayloadType::F32,
        packet_number: 9,
        sender_start: 1 << 50,
    };
    let mut seeds = Vec::new();

    let floats: Vec<u8> = [1.0f32, -2.5, 0.125, 3.0e-3]
        .iter()
        .flat_map(|f| f.to_le_bytes())
        .collect();
    let mut buf = vec![0u8; 256];
    let n = emit_packet(&base, &floats, &mut buf).unwrap();
    seeds.push(("reduce_data", buf[..n].to_vec()));

    let broadcast = HeaderRepr {
        kind: PacketKind::BroadcastData,
        flags: flags::AUTH,
        ..base
    };
    let n = emit_packet(&broadcast, &floats, &mut buf).unwrap();
    buf[n - AUTH_TAG_LEN..n].copy_from_slice(&[0x5A; AUTH_TAG_LEN]);
    seeds.push(("broadcast_data_auth", buf[..n].to_vec()));

    let mut ack_payload = [0u8; ACK_PAYLOAD_LEN];
    AckRepr {
        cum_ack: 10,
        top: 17,
        bits: 0b101_1011,
        echo_ts_ns: 1_000_000,
        owd_ns: 40_000,
    }
    .emit(&mut ack_payload)
    .unwrap();
    let ack = HeaderRepr {
        kind: PacketKind::Ack,
        src: 1,
        dst: 0,
        ..base
    };
    let n = emit_packet(&ack, &ack_payload, &mut buf).unwrap();
    seeds.push(("ack", buf[..n].to_vec()));

    let mut probe_payload = [0u8; 32];
    ProbeRepr {
        probe_id: 99,
        sent_ns: 123_456_789,
    }
    .emit(&mut probe_payload)
    .unwrap();
    let probe = HeaderRepr {
        kind: PacketKind::Probe,
        ..base
    };
    let n = emit_packet(&probe, &probe_payload, &mut buf).unwrap();
    seeds.push(("probe", buf[..n].to_vec()));
    seeds
}

/// Writes the seed corpus. Ignored by default: it modifies the source tree.
#[test]
#[ignore = "writes fuzz/corpus/wire_header; run explicitly to regenerate the seeds"]
fn write_fuzz_seed_corpus() {
    let dir = corpus_dir();
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in seed_inputs() {
        std::fs::write(dir.join(format!("seed_{name}")), bytes).unwrap();
    }
}

#[test]
fn seed_inputs_are_valid_packets() {
    for (name, bytes) in seed_inputs() {
        assert!(
            Packet::new_checked(&bytes[..]).is_ok(),
            "seed {name} does not parse"
        );
    }
}

/// CI's stand-in for the fuzzer: every file in the fuzz corpus is replayed through the same
/// checks the fuzz target makes.
#[test]
fn fuzz_corpus_replays_without_panics() {
    let dir = corpus_dir();
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read fuzz corpus {}: {e}", dir.display()));
    let mut files = 0;
    let mut accepted = 0;
    for entry in entries {
        let path = entry.unwrap().path();
        if !path.is_file() {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        if let Err(e) = check_any_input(&bytes) {
            panic!("corpus file {}: {e}", path.display());
        }
        files += 1;
        accepted += usize::from(Packet::new_checked(&bytes[..]).is_ok());
    }
    assert!(files >= 4, "expected the seed files in {}", dir.display());
    assert!(accepted >= 4, "the seed packets should parse");
}
