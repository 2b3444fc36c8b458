//! Property tests for the shared-memory ring records (`netstorm_dataplane::shm_records`):
//! parsing arbitrary bytes never panics, emit/parse round-trip, and chunked policies
//! reassemble exactly for any policy size and slot size.

use netstorm_dataplane::shm_records::{
    PolicyAssembler, PolicyChunkHeader, PolicyRecord, RecordError, TelemetryRecord,
    POLICY_CHUNK_HEADER_LEN,
};
use proptest::prelude::*;

fn telemetry() -> impl Strategy<Value = TelemetryRecord> {
    (
        any::<(u16, u16, u32, u64, u64)>(),
        any::<(u64, u64, u32, u64)>(),
    )
        .prop_map(
            |(
                (node, path, epoch, round, delivered_bytes),
                (interval_ns, rtt_ns, losses, timestamp_ns),
            )| TelemetryRecord {
                node,
                path,
                epoch,
                round,
                delivered_bytes,
                interval_ns,
                rtt_ns,
                losses,
                timestamp_ns,
            },
        )
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = TelemetryRecord::parse(&bytes);
        let _ = PolicyChunkHeader::parse(&bytes);
        let mut asm = PolicyAssembler::new(1 << 16);
        let _ = asm.push_chunk(&bytes);
    }

    #[test]
    fn arbitrary_bytes_with_valid_kind_never_panic(
        kind in 1u8..=2,
        mut bytes in proptest::collection::vec(any::<u8>(), 2..200),
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 0..8),
    ) {
        bytes[0] = kind;
        bytes[1] = 1;
        let _ = TelemetryRecord::parse(&bytes);
        let mut asm = PolicyAssembler::new(300);
        let _ = asm.push_chunk(&bytes);
        for mut c in chunks {
            if c.len() >= 2 {
                c[0] = 2;
                c[1] = 1;
            }
            let _ = asm.push_chunk(&c);
        }
    }

    #[test]
    fn telemetry_roundtrip(r in telemetry()) {
        let bytes = r.to_bytes();
        prop_assert_eq!(TelemetryRecord::parse(&bytes), Ok(r));
        let mut buf = [0u8; 80];
        prop_assert_eq!(r.emit(&mut buf), Ok(TelemetryRecord::LEN));
        prop_assert_eq!(&buf[..TelemetryRecord::LEN], &bytes[..]);
    }

    #[test]
    fn policy_chunks_reassemble(
        policy in proptest::collection::vec(any::<u8>(), 0..2000),
        max_payload in (POLICY_CHUNK_HEADER_LEN + 1)..600,
        epoch in any::<u32>(),
        activate_round in any::<u64>(),
    ) {
        let rec = PolicyRecord { epoch, activate_round, policy };
        let chunks = rec.chunks(max_payload).unwrap();
        prop_assert_eq!(chunks.len(), rec.chunk_count(max_payload).unwrap() as usize);
        let mut asm = PolicyAssembler::new(2000);
        let (last, init) = chunks.split_last().unwrap();
        for c in init {
            prop_assert!(c.len() <= max_payload);
            prop_assert_eq!(asm.push_chunk(c), Ok(None));
        }
        prop_assert_eq!(asm.push_chunk(last), Ok(Some(rec)));
    }

    #[test]
    fn flipped_policy_byte_is_detected(
        policy in proptest::collection::vec(any::<u8>(), 1..500),
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let rec = PolicyRecord { epoch: 1, activate_round: 2, policy };
        let mut chunks = rec.chunks(100).unwrap();
        // Corrupt one policy byte (not a header byte) somewhere in the chunk stream.
        let positions: Vec<(usize, usize)> = chunks
            .iter()
            .enumerate()
            .flat_map(|(i, c)| (POLICY_CHUNK_HEADER_LEN..c.len()).map(move |j| (i, j)))
            .collect();
        let (i, j) = positions[at.index(positions.len())];
        chunks[i][j] ^= flip;
        let mut asm = PolicyAssembler::new(1000);
        let mut result = Ok(None);
        for c in &chunks {
            result = asm.push_chunk(c);
        }
        prop_assert!(matches!(result, Err(RecordError::Checksum { .. })), "{:?}", result);
    }
}
