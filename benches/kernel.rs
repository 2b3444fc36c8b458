//! Aggregation kernel throughput against memcpy of the same byte count.
//!
//! For each size (bytes of f32 payload) it times:
//! * `add_assign_le_bytes`           — `dst += decode(wire bytes)`, the per-packet hot path;
//! * `add_assign_le_bytes_unaligned` — the same with the payload 2 bytes off a cache line
//!   (as it is behind packet headers);
//! * `add_assign`                    — `dst += src` on f32 slices;
//! * `memcpy`                        — `<[u8]>::copy_from_slice` of the same number of bytes.
//!
//! Throughput is reported in payload bytes (decimal units), so criterion prints GB/s and the
//! kernel/memcpy ratio can be read straight off the output (target: >= 0.7). Buffers start
//! on cache lines (except where noted) so results do not depend on the allocator.
//!
//! Run: `cargo bench --bench kernel` (about 40 s; measurement times are short). The kernels
//! are vectorized for the compile target: on x86-64 compare with
//! `RUSTFLAGS="-C target-cpu=x86-64-v3" cargo bench --bench kernel`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use netstorm_dataplane::kernel::{add_assign, add_assign_le_bytes};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
const CACHE_LINE: usize = 64;

/// Payload sizes in bytes: about one segment (L1-resident), a shard slice (L2), and a
/// model-sized buffer that streams from DRAM.
const SIZES: [(usize, &str); 3] = [(4 * KIB, "4KiB"), (64 * KIB, "64KiB"), (64 * MIB, "64MiB")];

/// Misalignment of the payload in the `_unaligned` case, in bytes from a cache line.
const UNALIGNED_BY: usize = 2;

/// A `len`-element slice starting `skew` bytes after a cache-line boundary.
#[derive(Debug)]
struct Placed<T> {
    buf: Vec<T>,
    at: usize,
    len: usize,
}

impl<T: Copy + Default> Placed<T> {
    /// `skew` must be a multiple of `size_of::<T>()`.
    fn new(len: usize, skew: usize) -> Self {
        let size = std::mem::size_of::<T>();
        let pad = (CACHE_LINE + skew) / size;
        let buf = vec![T::default(); len + pad];
        let at = buf.as_ptr().align_offset(CACHE_LINE).min(CACHE_LINE / size) + skew / size;
        Self { buf, at, len }
    }

    fn get(&self) -> &[T] {
        &self.buf[self.at..self.at + self.len]
    }

    fn get_mut(&mut self) -> &mut [T] {
        &mut self.buf[self.at..self.at + self.len]
    }
}

/// Small exactly-representable values, so repeated accumulation stays in the normal range.
fn value(i: usize) -> f32 {
    (i % 251) as f32 * 0.25
}

fn wire_payload(bytes: usize, skew: usize) -> Placed<u8> {
    let mut p = Placed::new(bytes, skew);
    for (i, chunk) in p.get_mut().chunks_exact_mut(4).enumerate() {
        chunk.copy_from_slice(&value(i).to_le_bytes());
    }
    p
}

fn bench_kernels(c: &mut Criterion) {
    for (bytes, label) in SIZES {
        let elements = bytes / 4;
        let src_bytes = wire_payload(bytes, 0);
        let src_bytes_unaligned = wire_payload(bytes, UNALIGNED_BY);
        let mut src_f32 = Placed::<f32>::new(elements, 0);
        for (i, x) in src_f32.get_mut().iter_mut().enumerate() {
            *x = value(i);
        }
        let mut acc = Placed::<f32>::new(elements, 0);
        let mut copy_dst = Placed::<u8>::new(bytes, 0);

        let mut group = c.benchmark_group(format!("kernel/{label}"));
        group.throughput(Throughput::BytesDecimal(bytes as u64));
        if bytes >= MIB {
            // Each iteration is milliseconds: fewer samples keep the run short.
            group.sample_size(10);
            group.warm_up_time(Duration::from_millis(500));
            group.measurement_time(Duration::from_secs(2));
        }

        group.bench_function(BenchmarkId::new("add_assign_le_bytes", label), |b| {
            b.iter(|| add_assign_le_bytes(black_box(acc.get_mut()), black_box(src_bytes.get())))
        });
        group.bench_function(
            BenchmarkId::new("add_assign_le_bytes_unaligned", label),
            |b| {
                b.iter(|| {
                    add_assign_le_bytes(
                        black_box(acc.get_mut()),
                        black_box(src_bytes_unaligned.get()),
                    )
                })
            },
        );
        group.bench_function(BenchmarkId::new("add_assign", label), |b| {
            b.iter(|| add_assign(black_box(acc.get_mut()), black_box(src_f32.get())))
        });
        group.bench_function(BenchmarkId::new("memcpy", label), |b| {
            b.iter(|| black_box(copy_dst.get_mut()).copy_from_slice(black_box(src_bytes.get())))
        });
        group.finish();
        black_box(acc.get());
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(30)
        .without_plots()
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_kernels
}
criterion_main!(benches);
