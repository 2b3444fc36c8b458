//! Cost of packet protection per datagram (`crate::protect`), beside a memcpy of the same
//! bytes. One 1472-byte ReduceData datagram (64-byte header + 1392-byte payload = 348 f32,
//! the engine's default segment, + 16-byte tag), per mode:
//! * `protect/seal/<mode>` — `Sealer::seal`: number, encrypt/authenticate, tag;
//! * `protect/open/<mode>` — copy into a scratch buffer + `Opener::open` (what
//!   `Engine::handle_packet` does), a fresh packet number each time so the replay window
//!   accepts it (the seal is not timed: sealed datagrams are prepared in batches);
//! * `protect/memcpy` — copying the datagram, for scale.
//!
//! Run: `cargo bench --bench protect`.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use netstorm_dataplane::protect::{PacketProtection, Protection, ProtectionMode};
use netstorm_dataplane::wire::{HeaderRepr, PacketKind, AUTH_TAG_LEN, HEADER_LEN};

const PAYLOAD_LEN: usize = 1392;
const BODY_LEN: usize = HEADER_LEN + PAYLOAD_LEN;

fn header(mode: ProtectionMode) -> HeaderRepr {
    HeaderRepr {
        kind: PacketKind::ReduceData,
        flags: mode.flags(),
        ttl: 1,
        payload_len: PAYLOAD_LEN as u16,
        job: 1,
        src: 0,
        dst: 1,
        ..HeaderRepr::default()
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("protect");
    group.throughput(Throughput::Bytes((BODY_LEN + AUTH_TAG_LEN) as u64));
    let mut datagram = vec![0u8; BODY_LEN + AUTH_TAG_LEN];
    for (i, b) in datagram[HEADER_LEN..BODY_LEN].iter_mut().enumerate() {
        *b = i as u8;
    }
    let copy_src = datagram.clone();
    let mut copy_dst = vec![0u8; datagram.len()];
    group.bench_function("memcpy", |b| {
        b.iter(|| copy_dst.copy_from_slice(black_box(&copy_src)))
    });
    for mode in [
        ProtectionMode::Encrypt,
        ProtectionMode::Authenticate,
        ProtectionMode::Off,
    ] {
        let p = Protection::insecure(mode);
        let mut tx = PacketProtection::new(&p, 1, 0, 0, 2, 7);
        let mut rx = PacketProtection::new(&p, 1, 0, 1, 2, 9);
        header(mode).emit(&mut datagram).unwrap();
        group.bench_function(format!("seal/{mode}"), |b| {
            b.iter(|| black_box(tx.sealer.seal(&mut datagram, BODY_LEN)))
        });
        let mut scratch = vec![0u8; datagram.len()];
        group.bench_function(format!("open/{mode}"), |b| {
            b.iter_batched_ref(
                || {
                    let mut d = copy_src.clone();
                    header(mode).emit(&mut d).unwrap();
                    let len = tx.sealer.seal(&mut d, BODY_LEN);
                    d.truncate(len);
                    d
                },
                |d| {
                    let s = &mut scratch[..d.len()];
                    s.copy_from_slice(d);
                    assert!(rx.opener.open(0, s).is_ok());
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
