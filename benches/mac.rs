//! Cost of packet authentication on the hot path, next to the work it sits beside.
//!
//! All on one 1456-byte ReduceData datagram (48-byte header + 352 f32, the engine's default
//! segment) plus its 16-byte tag:
//! * `mac/tag`            — `PacketMac::tag` (the AES-128-GCM-SIV tag of payload ‖ header,
//!   see `dataplane/src/auth.rs`): the sender's cost per packet;
//! * `mac/verify`         — `Packet::new_checked` + `PacketMac::verify`: the receiver's cost;
//! * `mac/tag_with_kept_payload_hash` — `PacketMac::tag_with` given the payload's hash: the
//!   cost of each further copy of a broadcast segment (per child, retransmissions), whose
//!   payload hash the engine keeps;
//! * `mac/siphash24_128_reference` — for the record, the previous MAC: SipHash-2-4-128
//!   (crate `siphasher`) over header (TTL zeroed) + payload;
//! * `mac/kernel_add`     — `kernel::add_assign_le_bytes` of the 1408-byte payload (the
//!   aggregation every receiving inner node does anyway);
//! * `mac/memcpy`         — copying the datagram (the floor of any per-packet work).
//!
//! Throughput is in bytes, so criterion prints GB/s (GiB/s) directly.
//!
//! Run: `cargo bench --bench mac`. The MAC's fast path needs PCLMULQDQ at compile time
//! (`.cargo/config.toml`); `RUSTFLAGS="-C target-cpu=native"` replaces those flags.

use std::hash::Hasher as _;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use netstorm_dataplane::auth::{MacKey, PacketMac};
use netstorm_dataplane::kernel;
use netstorm_dataplane::wire::{
    emit_packet, flags, HeaderRepr, Packet, PacketKind, AUTH_TAG_LEN, HEADER_LEN,
};
use siphasher::sip128::{Hasher128 as _, SipHasher24};

const PAYLOAD_LEN: usize = 1408;
const BODY_LEN: usize = HEADER_LEN + PAYLOAD_LEN;

fn bench_mac(c: &mut Criterion) {
    let mac = PacketMac::new(MacKey::from_bytes(*b"0123456789abcdef"));
    let repr = HeaderRepr {
        kind: PacketKind::ReduceData,
        flags: flags::AUTH,
        ttl: 8,
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
        ..HeaderRepr::default()
    };
    let payload: Vec<u8> = (0..PAYLOAD_LEN / 4)
        .flat_map(|i| (i as f32 * 0.5).to_le_bytes())
        .collect();
    let mut datagram = vec![0u8; BODY_LEN + AUTH_TAG_LEN];
    let n = emit_packet(&repr, &payload, &mut datagram).expect("emit");
    assert_eq!(n, BODY_LEN + AUTH_TAG_LEN);
    assert!(mac.sign(&mut datagram, BODY_LEN));
    assert!(mac.verify(&Packet::new_checked(&datagram[..]).expect("valid")));

    let mut group = c.benchmark_group("mac");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_millis(500));
    group.throughput(Throughput::Bytes(BODY_LEN as u64));
    group.bench_function("tag", |b| {
        b.iter(|| mac.tag(black_box(&datagram[..BODY_LEN])))
    });
    let kept = mac.payload_hash(&datagram[HEADER_LEN..BODY_LEN]);
    let header: [u8; HEADER_LEN] = datagram[..HEADER_LEN].try_into().expect("header");
    assert_eq!(
        mac.tag_with(&header, PAYLOAD_LEN, &kept),
        mac.tag(&datagram[..BODY_LEN])
    );
    group.bench_function("tag_with_kept_payload_hash", |b| {
        b.iter(|| mac.tag_with(black_box(&header), PAYLOAD_LEN, black_box(&kept)))
    });
    group.bench_function("verify", |b| {
        b.iter(|| {
            let p = Packet::new_checked(black_box(&datagram[..])).expect("valid");
            mac.verify(&p)
        })
    });
    let sip_key = *b"0123456789abcdef";
    group.bench_function("siphash24_128_reference", |b| {
        b.iter(|| {
            let body = black_box(&datagram[..BODY_LEN]);
            let mut header: [u8; HEADER_LEN] = body[..HEADER_LEN].try_into().expect("header");
            header[5] = 0;
            let mut h = SipHasher24::new_with_key(&sip_key);
            h.write(&header);
            h.write(&body[HEADER_LEN..]);
            h.finish128().as_bytes()
        })
    });
    let mut acc = vec![0f32; PAYLOAD_LEN / 4];
    group.throughput(Throughput::Bytes(PAYLOAD_LEN as u64));
    group.bench_function("kernel_add", |b| {
        b.iter(|| kernel::add_assign_le_bytes(black_box(&mut acc), black_box(&payload)))
    });
    let mut out = vec![0u8; datagram.len()];
    group.throughput(Throughput::Bytes(datagram.len() as u64));
    group.bench_function("memcpy", |b| {
        b.iter(|| {
            out.copy_from_slice(black_box(&datagram));
            black_box(&out);
        })
    });
    group.finish();
}

criterion_group!(benches, bench_mac);
criterion_main!(benches);
