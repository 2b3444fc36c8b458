//! Wire format cost per packet.
//!
//! * `wire/parse_header`  — `Packet::new_checked` + `header()` of a 1456-byte ReduceData
//!   datagram (64-byte header + 1392-byte payload = 348 f32, the engine's default segment);
//! * `wire/parse_ack`     — `new_checked` + `AckRepr::parse` of an Ack datagram;
//! * `wire/emit_header`   — `HeaderRepr::emit` of the 64 header bytes;
//! * `wire/emit_packet`   — `emit_packet`: header + 1392-byte payload copy.
//!
//! Throughput is reported in elements = packets, so criterion prints packets/s directly.
//!
//! Run: `cargo bench --bench wire` (a few seconds per benchmark).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use netstorm_dataplane::wire::{
    emit_packet, AckRepr, HeaderRepr, Packet, PacketKind, ACK_PAYLOAD_LEN, HEADER_LEN,
};

/// The engine's default data datagram without its tag: 64-byte header + 348 f32.
const DATAGRAM_LEN: usize = 1456;
const PAYLOAD_LEN: usize = DATAGRAM_LEN - HEADER_LEN;

fn data_repr() -> HeaderRepr {
    HeaderRepr {
        kind: PacketKind::ReduceData,
        flags: 0,
        ttl: 8,
        payload_len: PAYLOAD_LEN as u16,
        job: 1,
        epoch: 3,
        round: 1_000,
        tree: 2,
        path: 1,
        src: 4,
        dst: 7,
        seq: 123_456,
        segment: 789,
        timestamp_ns: 1_700_000_000_000_000_000,
        payload_type: netstorm_dataplane::wire::PayloadType::F32,
        packet_number: 1 << 40,
        sender_start: 1_700_000_000_000_000_000,
    }
}

fn bench_wire(c: &mut Criterion) {
    let repr = data_repr();
    let payload: Vec<u8> = (0..PAYLOAD_LEN / 4)
        .flat_map(|i| (i as f32 * 0.5).to_le_bytes())
        .collect();
    let mut datagram = vec![0u8; DATAGRAM_LEN];
    let n = emit_packet(&repr, &payload, &mut datagram).expect("emit");
    assert_eq!(n, DATAGRAM_LEN);

    let ack_repr = HeaderRepr {
        kind: PacketKind::Ack,
        payload_len: ACK_PAYLOAD_LEN as u16,
        ..repr
    };
    let mut ack_payload = [0u8; ACK_PAYLOAD_LEN];
    AckRepr {
        cum_ack: 123_000,
        top: 123_457,
        bits: 0xFFFF_FFFF_FFFF_FFF7,
        echo_ts_ns: repr.timestamp_ns,
        owd_ns: 40_000,
    }
    .emit(&mut ack_payload)
    .expect("emit ack");
    let mut ack_datagram = vec![0u8; HEADER_LEN + ACK_PAYLOAD_LEN];
    emit_packet(&ack_repr, &ack_payload, &mut ack_datagram).expect("emit ack packet");

    let mut group = c.benchmark_group("wire");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));

    group.bench_function("parse_header", |b| {
        b.iter(|| {
            let packet = Packet::new_checked(black_box(&datagram[..])).expect("valid");
            black_box(packet.header())
        })
    });

    group.bench_function("parse_ack", |b| {
        b.iter(|| {
            let packet = Packet::new_checked(black_box(&ack_datagram[..])).expect("valid");
            black_box(AckRepr::parse(packet.payload()).expect("valid ack"))
        })
    });

    let mut header_out = [0u8; HEADER_LEN];
    group.bench_function("emit_header", |b| {
        b.iter(|| {
            black_box(&repr).emit(&mut header_out).expect("fits");
            black_box(&header_out);
        })
    });

    let mut out = vec![0u8; DATAGRAM_LEN];
    group.bench_function("emit_packet", |b| {
        b.iter(|| {
            let n = emit_packet(black_box(&repr), black_box(&payload), &mut out).expect("fits");
            black_box(&out);
            n
        })
    });

    group.finish();
}

criterion_group!(benches, bench_wire);
criterion_main!(benches);
