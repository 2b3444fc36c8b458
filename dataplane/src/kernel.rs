//! Aggregation kernels: the per-packet arithmetic of in-network partial aggregation.
//!
//! Payloads on the wire are little-endian f32. These kernels read them straight from the
//! packet bytes (no intermediate copy) and are written so the compiler vectorizes them.
//!
//! # How they are made fast without `unsafe`
//!
//! Each kernel is one flat loop over `zip(dst, src.chunks_exact(4))` with the lengths
//! asserted equal up front, so the loop has no bounds checks and `&mut`/`&` tell LLVM the
//! slices do not overlap. That is exactly the shape LLVM's loop vectorizer handles best: it
//! emits packed unaligned loads, `addps` and stores at the widest vector width the target
//! allows (2 x 128-bit per iteration on baseline x86-64, 4 x 256-bit with
//! `-C target-cpu=x86-64-v3`, 4 x 512-bit with AVX-512), plus a short remainder loop.
//! `f32::from_le_bytes` is the identity on little-endian targets, so decoding straight from
//! packet bytes costs nothing; on big-endian targets it becomes a byte shuffle inside the
//! same loop and results stay identical.
//!
//! The kernels that write f32 first peel off the few elements (at most 15) before `dst`
//! reaches a 64-byte boundary, so the vector loop's stores never straddle cache lines
//! (with 256/512-bit vectors a misaligned destination otherwise costs 20-40%). The source
//! stays at whatever alignment the packet gives it; misaligned loads are cheap.
//!
//! Deliberately *not* done: hand-unrolled fixed-size blocks (`&mut [f32; 16]` per
//! iteration). They can be slightly faster on baseline SSE2, but LLVM then sees sixteen
//! stride-16 accesses in the outer loop, and with AVX-512 enabled (e.g.
//! `-C target-cpu=native` on Zen 4/5) it "vectorizes" them with gathers/scatters, making
//! the kernel ~10x slower than the flat loop. The flat loop is fast for every target.
//!
//! Arithmetic is exactly IEEE-754 `+` per element (no reassociation, no fused operations),
//! so results are bit-identical to the naive scalar loop, including NaN/inf propagation and
//! signed zeros.
//!
//! # Throughput (see `benches/kernel.rs`)
//!
//! `add_assign_le_bytes` vs `memcpy` of the same bytes, measured on an AMD EPYC (Zen 5)
//! VM against glibc's vectorized `memcpy`, cache-line-aligned buffers:
//!
//! | build                        | 4 KiB (L1) | 64 KiB (L2) | 64 MiB (DRAM) |
//! |------------------------------|-----------:|------------:|--------------:|
//! | baseline x86-64 (SSE2)       | ~0.37x     | ~0.40x      | ~0.85-1.0x    |
//! | `-C target-cpu=x86-64-v3`    | ~0.72-0.79x| ~0.80-0.86x | ~1.0x         |
//! | `-C target-cpu=native` (512) | ~1.5x      | ~0.77x      | ~0.85-1.0x    |
//!
//! In cache, the SSE2 build is bound by one 16-byte store per four elements, against
//! `memcpy`'s 32/64-byte stores; only wider vectors (a build flag, not code) close that gap.
//! Out of cache both are memory-bound.

use std::time::Instant;

/// Bytes per f32 on the wire.
const F32_BYTES: usize = 4;

/// Cache-line size the destination is aligned to before the vector loop starts.
const CACHE_LINE: usize = 64;

/// Decodes one wire element (a 4-byte chunk from `chunks_exact(4)`).
#[inline(always)]
fn le_f32(s: &[u8]) -> f32 {
    f32::from_le_bytes([s[0], s[1], s[2], s[3]])
}

/// Number of leading elements of `dst` before its first 64-byte boundary (at most
/// `dst.len()`). Only a performance hint: any value gives correct results.
#[inline(always)]
fn head_len(dst: &[f32]) -> usize {
    // `align_offset` counts elements; it may return `usize::MAX` when it cannot tell,
    // which the `min` turns into "everything in the head loop" — still correct.
    dst.as_ptr().align_offset(CACHE_LINE).min(dst.len())
}

#[inline(always)]
fn add_le_flat(dst: &mut [f32], src: &[u8]) {
    for (d, s) in dst.iter_mut().zip(src.chunks_exact(F32_BYTES)) {
        *d += le_f32(s);
    }
}

#[inline(always)]
fn copy_le_flat(dst: &mut [f32], src: &[u8]) {
    for (d, s) in dst.iter_mut().zip(src.chunks_exact(F32_BYTES)) {
        *d = le_f32(s);
    }
}

#[inline(always)]
fn add_flat(dst: &mut [f32], src: &[f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d += *s;
    }
}

/// `dst[i] += f32::from_le_bytes(src[4i..4i+4])` for every element of `dst`.
///
/// `src` may start at any byte offset (no alignment requirement).
///
/// # Panics
/// If `src.len() != 4 * dst.len()` (callers check lengths once, when parsing).
#[inline]
pub fn add_assign_le_bytes(dst: &mut [f32], src: &[u8]) {
    assert_eq!(src.len(), dst.len() * F32_BYTES, "payload length mismatch");
    let head = head_len(dst);
    let (dst_head, dst_body) = dst.split_at_mut(head);
    let (src_head, src_body) = src.split_at(head * F32_BYTES);
    add_le_flat(dst_head, src_head);
    add_le_flat(dst_body, src_body);
}

/// `dst[i] = f32::from_le_bytes(src[4i..4i+4])`.
///
/// Bit-exact: NaN payloads and signed zeros are preserved. `src` may be unaligned.
///
/// # Panics
/// If `src.len() != 4 * dst.len()`.
#[inline]
pub fn copy_from_le_bytes(dst: &mut [f32], src: &[u8]) {
    assert_eq!(src.len(), dst.len() * F32_BYTES, "payload length mismatch");
    let head = head_len(dst);
    let (dst_head, dst_body) = dst.split_at_mut(head);
    let (src_head, src_body) = src.split_at(head * F32_BYTES);
    copy_le_flat(dst_head, src_head);
    copy_le_flat(dst_body, src_body);
}

/// Writes `src` as little-endian f32 bytes into `dst` (`dst.len() == 4 * src.len()`).
///
/// Bit-exact: NaN payloads and signed zeros are preserved. `dst` may be unaligned.
///
/// # Panics
/// If `dst.len() != 4 * src.len()`.
#[inline]
pub fn write_le_bytes(dst: &mut [u8], src: &[f32]) {
    assert_eq!(dst.len(), src.len() * F32_BYTES, "payload length mismatch");
    for (d, s) in dst.chunks_exact_mut(F32_BYTES).zip(src) {
        d.copy_from_slice(&s.to_le_bytes());
    }
}

/// `dst[i] += src[i]`.
///
/// # Panics
/// If `src.len() != dst.len()`.
#[inline]
pub fn add_assign(dst: &mut [f32], src: &[f32]) {
    assert_eq!(src.len(), dst.len(), "length mismatch");
    let head = head_len(dst);
    let (dst_head, dst_body) = dst.split_at_mut(head);
    let (src_head, src_body) = src.split_at(head);
    add_flat(dst_head, src_head);
    add_flat(dst_body, src_body);
}

/// Throughput of [`add_assign_le_bytes`] against `memcpy` of the same number of bytes, as
/// measured by [`measure_kernel_vs_memcpy`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KernelReport {
    /// Payload bytes aggregated per second by [`add_assign_le_bytes`], in GB/s (1e9 B/s).
    pub kernel_gbps: f64,
    /// Bytes copied per second by `<[u8]>::copy_from_slice` (memcpy), in GB/s (1e9 B/s).
    pub memcpy_gbps: f64,
    /// `kernel_gbps / memcpy_gbps`; 1.0 means aggregation runs at memory-copy speed.
    pub ratio: f64,
}

/// Number of timed batches per side; the fastest batch is reported (least disturbed by
/// scheduling noise).
const MEASURE_BATCHES: usize = 10;

/// Measures [`add_assign_le_bytes`] on a `bytes`-long payload against `copy_from_slice`
/// (memcpy) of the same byte count, `iters` times each, and reports both throughputs.
///
/// **Benchmark helper, not for the hot path:** it allocates its buffers and reads the
/// wall clock (`std::time::Instant`), which the sans-IO engine never does. It exists so
/// that a CLI command can print the headline ratio without criterion; use
/// `cargo bench --bench kernel` for careful numbers.
///
/// `bytes` is rounded down to a whole number of f32 (at least one); `iters` of 0 counts
/// as 1. The iterations are split into a few batches alternating kernel and memcpy, and
/// the fastest batch of each side is used.
pub fn measure_kernel_vs_memcpy(bytes: usize, iters: usize) -> KernelReport {
    let elements = (bytes / F32_BYTES).max(1);
    let bytes = elements * F32_BYTES;
    let iters = iters.max(1);
    let batches = MEASURE_BATCHES.min(iters);
    let per_batch = iters.div_ceil(batches);

    // All three buffers start on a cache line, so the comparison does not depend on where
    // the allocator happened to put them.
    let mut src_buf = vec![0u8; bytes + CACHE_LINE];
    let src_at = src_buf.as_ptr().align_offset(CACHE_LINE).min(CACHE_LINE);
    let src = &mut src_buf[src_at..src_at + bytes];
    // Small, exactly representable values: repeated accumulation never overflows or
    // produces subnormals, so timing does not depend on the iteration count.
    for (i, chunk) in src.chunks_exact_mut(F32_BYTES).enumerate() {
        chunk.copy_from_slice(&((i % 251) as f32 * 0.25).to_le_bytes());
    }
    let src = &*src;
    let mut acc_buf = vec![0.0f32; elements + CACHE_LINE / F32_BYTES];
    let acc_at = head_len(&acc_buf).min(CACHE_LINE / F32_BYTES);
    let acc = &mut acc_buf[acc_at..acc_at + elements];
    let mut copy_buf = vec![0u8; bytes + CACHE_LINE];
    let copy_at = copy_buf.as_ptr().align_offset(CACHE_LINE).min(CACHE_LINE);
    let copy_dst = &mut copy_buf[copy_at..copy_at + bytes];

    // Warm-up: fault pages in, fill caches and branch predictors.
    add_assign_le_bytes(acc, src);
    copy_dst.copy_from_slice(src);

    let mut best_kernel = f64::INFINITY;
    let mut best_memcpy = f64::INFINITY;
    for _ in 0..batches {
        let start = Instant::now();
        for _ in 0..per_batch {
            add_assign_le_bytes(std::hint::black_box(&mut *acc), std::hint::black_box(src));
        }
        best_kernel = best_kernel.min(start.elapsed().as_secs_f64());

        let start = Instant::now();
        for _ in 0..per_batch {
            std::hint::black_box(&mut *copy_dst).copy_from_slice(std::hint::black_box(src));
        }
        best_memcpy = best_memcpy.min(start.elapsed().as_secs_f64());
    }
    std::hint::black_box(&*acc);

    let batch_bytes = (bytes * per_batch) as f64;
    // Guard against a zero-duration batch on a coarse clock.
    let gbps = |secs: f64| batch_bytes / secs.max(1e-9) / 1e9;
    let kernel_gbps = gbps(best_kernel);
    let memcpy_gbps = gbps(best_memcpy);
    KernelReport {
        kernel_gbps,
        memcpy_gbps,
        ratio: kernel_gbps / memcpy_gbps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Straightforward per-element references the fast kernels must match bit for bit.
    fn ref_add_assign_le_bytes(dst: &mut [f32], src: &[u8]) {
        for (i, d) in dst.iter_mut().enumerate() {
            let b = &src[4 * i..4 * i + 4];
            *d += f32::from_bits(
                u32::from(b[0])
                    | (u32::from(b[1]) << 8)
                    | (u32::from(b[2]) << 16)
                    | (u32::from(b[3]) << 24),
            );
        }
    }

    fn ref_to_le(x: f32) -> [u8; 4] {
        let b = x.to_bits();
        [b as u8, (b >> 8) as u8, (b >> 16) as u8, (b >> 24) as u8]
    }

    /// Deterministic, varied values (different signs and magnitudes) without an RNG.
    fn value(i: usize, salt: u32) -> f32 {
        let h = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(salt) ^ salt.rotate_left(7);
        let mantissa = (h % 10_000) as f32 / 97.0;
        let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
        sign * mantissa * 10f32.powi((h >> 20) as i32 % 7 - 3)
    }

    fn values(n: usize, salt: u32) -> Vec<f32> {
        (0..n).map(|i| value(i, salt)).collect()
    }

    fn encode(xs: &[f32]) -> Vec<u8> {
        xs.iter().flat_map(|x| ref_to_le(*x)).collect()
    }

    fn bits(xs: &[f32]) -> Vec<u32> {
        xs.iter().map(|x| x.to_bits()).collect()
    }

    /// Places `payload` at byte `offset` of a fresh buffer and returns the buffer, so
    /// `&buf[offset..]` is a deliberately misaligned view.
    fn at_offset(payload: &[u8], offset: usize) -> Vec<u8> {
        let mut buf = vec![0xAB; offset];
        buf.extend_from_slice(payload);
        buf
    }

    #[test]
    fn add_assign_le_bytes_matches_reference_on_all_small_lengths_and_offsets() {
        // Every length below 100 (vector loop + every remainder length for any vector
        // width), plus a few long ones, at all four byte offsets of the payload.
        for n in (0..100).chain([127, 128, 129, 1031, 4099]) {
            let base = values(n, 1);
            let payload = encode(&values(n, 2));
            for offset in 0..4 {
                let buf = at_offset(&payload, offset);
                let src = &buf[offset..];
                let mut fast = base.clone();
                let mut slow = base.clone();
                add_assign_le_bytes(&mut fast, src);
                ref_add_assign_le_bytes(&mut slow, src);
                assert_eq!(bits(&fast), bits(&slow), "n={n} offset={offset}");
            }
        }
    }

    #[test]
    fn le_bytes_kernels_on_every_dst_alignment() {
        // `dst` starting at each of the 16 f32 positions within a cache line gives every
        // length of the alignment head loop (0..=15), combined with misaligned payloads.
        let base = values(1100, 8);
        let payload = encode(&values(1100, 9));
        for start in 0..16 {
            for len in [0, 1, 5, 15, 16, 17, 31, 33, 100, 1031] {
                for offset in [0, 1, 3] {
                    let buf = at_offset(&payload[..4 * len], offset);
                    let src = &buf[offset..];

                    let mut fast = base.clone();
                    add_assign_le_bytes(&mut fast[start..start + len], src);
                    let mut slow = base.clone();
                    ref_add_assign_le_bytes(&mut slow[start..start + len], src);
                    assert_eq!(bits(&fast), bits(&slow), "add start={start} len={len}");

                    let mut copied = base.clone();
                    copy_from_le_bytes(&mut copied[start..start + len], src);
                    let mut expected = base.clone();
                    for (i, x) in expected[start..start + len].iter_mut().enumerate() {
                        *x = f32::from_le_bytes([
                            src[4 * i],
                            src[4 * i + 1],
                            src[4 * i + 2],
                            src[4 * i + 3],
                        ]);
                    }
                    assert_eq!(
                        bits(&copied),
                        bits(&expected),
                        "copy start={start} len={len}"
                    );
                }
            }
        }
    }

    #[test]
    fn add_assign_matches_reference_on_all_small_lengths() {
        for n in 0..100 {
            let a = values(n, 3);
            let b = values(n, 4);
            let mut fast = a.clone();
            add_assign(&mut fast, &b);
            let slow: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
            assert_eq!(bits(&fast), bits(&slow), "n={n}");
        }
    }

    #[test]
    fn add_assign_on_unaligned_subslices() {
        // Sub-slices starting at every element offset up to 16 exercise every alignment of
        // the f32 slices relative to any vector width (up to 512-bit), and lengths cover
        // the vector loop, its remainder, and both together.
        let a = values(1100, 5);
        let b = values(1100, 6);
        for start in 0..17 {
            for len in [0, 1, 15, 16, 17, 63, 64, 65, 250, 1031] {
                let mut fast = a[start..start + len].to_vec();
                add_assign(&mut fast, &b[start + 7..start + 7 + len]);
                let slow: Vec<f32> = a[start..start + len]
                    .iter()
                    .zip(&b[start + 7..start + 7 + len])
                    .map(|(x, y)| x + y)
                    .collect();
                assert_eq!(bits(&fast), bits(&slow), "start={start} len={len}");
            }
        }
    }

    #[test]
    fn copy_and_write_round_trip_bit_exactly_on_all_small_lengths_and_offsets() {
        let specials = [
            f32::NAN,
            -f32::NAN,
            f32::from_bits(0x7fc0_1234), // quiet NaN with payload
            f32::from_bits(0x7f80_0001), // signalling NaN pattern
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            f32::MIN_POSITIVE,
            f32::from_bits(1), // smallest subnormal
            -f32::from_bits(0x007f_ffff),
            f32::MAX,
            f32::MIN,
        ];
        for n in 0..100 {
            let mut xs = values(n, 7);
            for (x, s) in xs.iter_mut().zip(specials.iter().cycle()).step_by(3) {
                *x = *s;
            }
            let expected = encode(&xs);
            for offset in 0..4 {
                let mut buf = vec![0u8; offset + 4 * n];
                write_le_bytes(&mut buf[offset..], &xs);
                assert_eq!(&buf[offset..], &expected[..], "write n={n} offset={offset}");
                assert!(buf[..offset].iter().all(|b| *b == 0), "wrote outside dst");

                let mut back = vec![1.0f32; n];
                copy_from_le_bytes(&mut back, &buf[offset..]);
                assert_eq!(bits(&back), bits(&xs), "copy n={n} offset={offset}");
            }
        }
    }

    #[test]
    fn wire_encoding_is_little_endian_on_every_target() {
        let mut buf = [0u8; 8];
        write_le_bytes(&mut buf, &[1.0, -2.5]);
        assert_eq!(buf, [0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x20, 0xc0]);
        let mut back = [0.0f32; 2];
        copy_from_le_bytes(&mut back, &buf);
        assert_eq!(back, [1.0, -2.5]);
        let mut acc = [0.5f32, 0.5];
        add_assign_le_bytes(&mut acc, &buf);
        assert_eq!(acc, [1.5, -2.0]);
    }

    #[test]
    fn nan_and_infinity_propagate() {
        // Long enough that specials land in the vector blocks and in the scalar tail.
        let n = 53;
        for pos in [0, 5, 16, 35, n - 1] {
            for (special, other, check) in [
                (f32::NAN, 1.0f32, f32::is_nan as fn(f32) -> bool),
                (f32::INFINITY, 1.0, |x: f32| x == f32::INFINITY),
                (f32::NEG_INFINITY, -3.0, |x: f32| x == f32::NEG_INFINITY),
                // inf + (-inf) is NaN.
                (f32::INFINITY, f32::NEG_INFINITY, f32::is_nan),
            ] {
                let mut dst_vals = vec![2.0f32; n];
                dst_vals[pos] = other;
                let mut src_vals = vec![1.0f32; n];
                src_vals[pos] = special;
                let src = encode(&src_vals);

                let mut acc = dst_vals.clone();
                add_assign_le_bytes(&mut acc, &src);
                assert!(check(acc[pos]), "le_bytes pos={pos}: {}", acc[pos]);

                let mut acc2 = dst_vals.clone();
                add_assign(&mut acc2, &src_vals);
                assert!(check(acc2[pos]), "f32 pos={pos}: {}", acc2[pos]);

                for (i, (a, b)) in acc.iter().zip(&acc2).enumerate() {
                    if i != pos {
                        assert_eq!(*a, 3.0, "neighbour {i} disturbed");
                        assert_eq!(*b, 3.0, "neighbour {i} disturbed");
                    }
                }
            }
        }
        // NaN in the accumulator also stays NaN.
        let mut acc = vec![f32::NAN; 40];
        add_assign_le_bytes(&mut acc, &encode(&[1.0; 40]));
        assert!(acc.iter().all(|x| x.is_nan()));
    }

    #[test]
    fn signed_zero_follows_ieee_addition() {
        // IEEE-754 round-to-nearest: (-0) + (-0) = -0; (-0) + (+0) = +0; x + (-x) = +0.
        let n = 35;
        let cases = [
            (-0.0f32, -0.0f32, 0x8000_0000u32),
            (-0.0, 0.0, 0),
            (0.0, -0.0, 0),
            (0.0, 0.0, 0),
            (1.5, -1.5, 0),
            (-1.5, 1.5, 0),
        ];
        for (a, b, expected_bits) in cases {
            let dst_vals = vec![a; n];
            let src_vals = vec![b; n];
            let mut acc = dst_vals.clone();
            add_assign_le_bytes(&mut acc, &encode(&src_vals));
            assert!(
                acc.iter().all(|x| x.to_bits() == expected_bits),
                "{a:?} + {b:?} via le_bytes"
            );
            let mut acc2 = dst_vals;
            add_assign(&mut acc2, &src_vals);
            assert!(
                acc2.iter().all(|x| x.to_bits() == expected_bits),
                "{a:?} + {b:?} via f32"
            );
        }
    }

    #[test]
    #[should_panic(expected = "payload length mismatch")]
    fn add_assign_le_bytes_rejects_wrong_length() {
        let mut dst = [0.0f32; 4];
        add_assign_le_bytes(&mut dst, &[0u8; 15]);
    }

    #[test]
    #[should_panic(expected = "length mismatch")]
    fn add_assign_rejects_wrong_length() {
        let mut dst = [0.0f32; 4];
        add_assign(&mut dst, &[0.0; 5]);
    }

    #[test]
    fn measure_reports_consistent_numbers() {
        let r = measure_kernel_vs_memcpy(4096, 20);
        assert!(r.kernel_gbps > 0.0 && r.kernel_gbps.is_finite());
        assert!(r.memcpy_gbps > 0.0 && r.memcpy_gbps.is_finite());
        assert!((r.ratio - r.kernel_gbps / r.memcpy_gbps).abs() < 1e-12);
        // Degenerate inputs are clamped, not panics.
        let r = measure_kernel_vs_memcpy(0, 0);
        assert!(r.ratio.is_finite());
    }
}
