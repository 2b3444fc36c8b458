//! Wire-type kernels: decode a payload of any [`PayloadType`] into f32 (adding or copying),
//! encode f32 into a payload, and the helpers the engine needs around them.
//!
//! Tree nodes always aggregate in f32: a node adds the decoded partial sums of its children
//! to its own f32 value and encodes one partial sum upward; the root encodes its final value
//! once (see [`round_trip_in_place`]) and that value, bit for bit, is what every node ends
//! with. f32 payloads go to the f32 kernels of [`crate::kernel`] unchanged.
//!
//! # Encodings (all little-endian, round-to-nearest-even)
//!
//! * **bf16** — the top half of a binary32. Written here as branch-free integer arithmetic
//!   that LLVM vectorizes (8 lanes with AVX2): rounding adds `0x7FFF + lsb` before the
//!   shift; NaN keeps its sign and top payload bits and is made quiet (never becomes
//!   infinity); a finite value that would round up to infinity (|x| > bf16::MAX) saturates
//!   to ±bf16::MAX and is counted.
//! * **f16** — IEEE binary16, branch-free integer/float arithmetic (F. Giesen's
//!   `half_to_float` / `float_to_half_rtne`) that LLVM vectorizes like the bf16 code; the same
//!   safe code is the portable path on any target. Finite values with |x| ≥ 65520 (those
//!   that would overflow to infinity) saturate to ±65504 and are counted. Infinity and NaN
//!   inputs stay infinity and NaN: non-finite gradients are reported by the engine
//!   ([`count_nonfinite`]), never turned into numbers.
//!
//! Why not F16C's `vcvtph2ps`/`vcvtps2ph`: the intrinsics need `unsafe` (a
//! `#[target_feature]` call), which this crate keeps to FFI, shared-memory and socket
//! modules; and the `half` crate's slice conversions (which use them) measured 0.02-0.03x
//! memcpy here (`netstorm bench kernel --wire f16`), against the figures in the report for
//! this code.
//!
//! Decoding is exact; `decode(encode(x))` re-encodes to the same bytes for every value an
//! encoder produces (encoders never emit a signalling NaN), which is what lets a broadcast
//! be forwarded byte for byte and its MAC hash be reused.
//!
//! # Error bound of a 16-bit reduction (what the experiment checks)
//!
//! With unit roundoff `u` (2^-8 bf16, 2^-11 f16, [`PayloadType::unit_roundoff`]) every
//! encode of a normal value changes it by at most `u|x|`. A node at height `h` (leaves 0)
//! sends `enc(own + Σ dec(children))`, the f32 additions adding at most 2^-24 relative each;
//! by induction the root's encoded result `r` of a tree of depth `D` (edges from the deepest
//! leaf to the root, root included in the encode count: `D + 1` encodes on the longest
//! path) satisfies
//!
//! `|r - Σ xᵢ| ≤ ((1 + u)^(D+1) (1 + 2^-24)^n - 1) · Σ|xᵢ| + (D+1)·n·s`
//!
//! where `n` is the number of contributions and `s` the half subnormal spacing
//! ([`PayloadType::subnormal_half_ulp`]). [`reduction_error_bound`] computes it; the
//! property test in `tests/wire16_bound.rs` checks it over random trees and shows that
//! 16-bit accumulation (rounding after every single addition) breaks it.

use crate::kernel;
use crate::wire::PayloadType;
use zerocopy::byteorder::little_endian::U16;
use zerocopy::FromBytes;

/// Largest finite binary16.
pub const F16_MAX: f32 = 65504.0;

// Every conversion below is a branch-free function of one element (selects, no early
// returns), so the loops over whole payloads vectorize (8 lanes with AVX2). Payload bytes
// are viewed as `[U16]` (little-endian, alignment 1): contiguous loads and stores at any
// packet offset, no per-element byte shuffling on little-endian targets.

/// Views payload bytes as little-endian 16-bit elements.
#[inline(always)]
fn halves(bytes: &[u8]) -> &[U16] {
    <[U16]>::ref_from_bytes(bytes).expect("caller checked an even length")
}

#[inline(always)]
fn halves_mut(bytes: &mut [u8]) -> &mut [U16] {
    <[U16]>::mut_from_bytes(bytes).expect("caller checked an even length")
}

// -- bf16 ----------------------------------------------------------------------------------

#[inline(always)]
fn bf16_decode(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

/// RNE encode of `x` to bf16 bits, saturating; the second value is 1 if it saturated.
#[inline(always)]
fn bf16_encode(x: f32) -> (u16, u32) {
    let b = x.to_bits();
    let abs = b & 0x7FFF_FFFF;
    let rounded = b.wrapping_add(0x7FFF + ((b >> 16) & 1)) >> 16;
    let is_nan = abs > 0x7F80_0000;
    let overflow = abs < 0x7F80_0000 && (rounded & 0x7FFF) == 0x7F80;
    let out = if is_nan {
        (b >> 16) | 0x0040
    } else if overflow {
        (rounded & 0x8000) | 0x7F7F
    } else {
        rounded
    };
    (out as u16, u32::from(overflow))
}

/// Magnitude bits from which [`bf16_round`] is wrong: values that round up to infinity
/// (|x| ≥ bf16::MAX + half an ulp), infinity and NaN.
const BF16_SPECIAL_FROM: u32 = 0x7F7F_8000;

/// [`bf16_encode`] for magnitudes below [`BF16_SPECIAL_FROM`]: just the RNE rounding.
#[inline(always)]
fn bf16_round(b: u32) -> u16 {
    (b.wrapping_add(0x7FFF + ((b >> 16) & 1)) >> 16) as u16
}

// -- f16 -----------------------------------------------------------------------------------

/// Magnitude bits of 65520.0, from which [`f16_round`] is wrong (saturation, infinity, NaN).
const F16_SPECIAL_FROM: u32 = 0x477F_F000;

/// Exact binary16 → binary32 (subnormals renormalized by a float subtraction, NaN payloads
/// kept), after F. Giesen's `half_to_float_fast3`, as selects.
#[inline(always)]
fn f16_decode(h: u16) -> f32 {
    const SHIFTED_EXP: u32 = 0x7C00 << 13;
    let h = u32::from(h);
    let em = (h & 0x7FFF) << 13;
    let exp = em & SHIFTED_EXP;
    let normal = em + ((127 - 15) << 23);
    let special = normal + ((128 - 16) << 23); // inf / NaN: exponent all ones
    let sub = f32::from_bits(normal + (1 << 23)) - f32::from_bits(113 << 23);
    let bits = if exp == SHIFTED_EXP {
        special
    } else if exp == 0 {
        sub.to_bits()
    } else {
        normal
    };
    f32::from_bits(bits | ((h & 0x8000) << 16))
}

/// RNE binary32 → binary16 bits of a value whose magnitude bits are below
/// [`F16_SPECIAL_FROM`] (sign kept).
#[inline(always)]
fn f16_round(b: u32) -> u16 {
    const DENORM_MAGIC: u32 = ((127 - 15) + (23 - 10) + 1) << 23;
    let sign = (b >> 16) & 0x8000;
    let abs = b & 0x7FFF_FFFF;
    // Results below the smallest normal: the float addition rounds (to nearest even) at the
    // subnormal spacing.
    let sub = (f32::from_bits(abs) + f32::from_bits(DENORM_MAGIC))
        .to_bits()
        .wrapping_sub(DENORM_MAGIC);
    let mant_odd = (abs >> 13) & 1;
    let normal =
        abs.wrapping_add((15u32.wrapping_sub(127) << 23).wrapping_add(0xFFF) + mant_odd) >> 13;
    let rounded = if abs < (113 << 23) { sub } else { normal };
    (rounded | sign) as u16
}

/// RNE binary32 → binary16 bits, saturating finite overflow at ±65504 (second value 1 then);
/// infinity stays infinity, NaN stays NaN (quiet, top payload bits kept). After F. Giesen's
/// `float_to_half_fast3_rtne`, as selects.
#[inline(always)]
fn f16_encode(x: f32) -> (u16, u32) {
    const F32_INF: u32 = 0x7F80_0000;
    let b = x.to_bits();
    let sign = (b >> 16) & 0x8000;
    let abs = b & 0x7FFF_FFFF;
    let rounded = u32::from(f16_round(abs));
    let is_nan = abs > F32_INF;
    let is_inf = abs == F32_INF;
    // Finite but at or past 65520 (rounds to infinity); `abs >= 2^16` covers the values for
    // which `normal` is meaningless.
    let overflow = !is_nan && !is_inf && (abs >= (143 << 23) || rounded >= 0x7C00);
    let out = if is_nan {
        0x7E00 | ((abs >> 13) & 0x3FF)
    } else if is_inf {
        0x7C00
    } else if overflow {
        0x7BFF
    } else {
        rounded
    };
    ((out | sign) as u16, u32::from(overflow))
}

// -- the kernels ---------------------------------------------------------------------------

/// `dst[i] += decode(src, i)` for every element of `dst`, in f32.
///
/// # Panics
/// If `src.len() != ty.elem_bytes() * dst.len()` (callers check lengths when parsing).
#[inline]
pub fn add_assign_wire(ty: PayloadType, dst: &mut [f32], src: &[u8]) {
    assert_eq!(
        src.len(),
        dst.len() * ty.elem_bytes(),
        "payload length mismatch"
    );
    match ty {
        PayloadType::F32 => kernel::add_assign_le_bytes(dst, src),
        PayloadType::Bf16 => {
            for (d, s) in dst.iter_mut().zip(halves(src)) {
                *d += bf16_decode(s.get());
            }
        }
        PayloadType::F16 => {
            for (d, s) in dst.iter_mut().zip(halves(src)) {
                *d += f16_decode(s.get());
            }
        }
    }
}

/// `dst[i] = decode(src, i)`: exact.
///
/// # Panics
/// If `src.len() != ty.elem_bytes() * dst.len()`.
#[inline]
pub fn copy_from_wire(ty: PayloadType, dst: &mut [f32], src: &[u8]) {
    assert_eq!(
        src.len(),
        dst.len() * ty.elem_bytes(),
        "payload length mismatch"
    );
    match ty {
        PayloadType::F32 => kernel::copy_from_le_bytes(dst, src),
        PayloadType::Bf16 => {
            for (d, s) in dst.iter_mut().zip(halves(src)) {
                *d = bf16_decode(s.get());
            }
        }
        PayloadType::F16 => {
            for (d, s) in dst.iter_mut().zip(halves(src)) {
                *d = f16_decode(s.get());
            }
        }
    }
}

/// Elements per chunk of the encoders' fast path: two AVX2 vectors of f32.
const CHUNK: usize = 16;

/// `xs[i] = decode(encode(xs[i]))` with the same chunked fast path as [`encode_with`].
#[inline(always)]
fn round_trip_with(
    xs: &mut [f32],
    special_from: u32,
    fast: impl Fn(u32) -> u16,
    precise: impl Fn(f32) -> (u16, u32),
    decode: impl Fn(u16) -> f32,
) -> u32 {
    let precise_all = |xs: &mut [f32]| {
        let mut saturated = 0u32;
        for x in xs.iter_mut() {
            let (bits, over) = precise(*x);
            saturated += over;
            *x = decode(bits);
        }
        saturated
    };
    let mut saturated = 0u32;
    let mut chunks = xs.chunks_exact_mut(CHUNK);
    for chunk in &mut chunks {
        let max_abs = chunk
            .iter()
            .fold(0u32, |m, x| m.max(x.to_bits() & 0x7FFF_FFFF));
        if max_abs >= special_from {
            saturated += precise_all(chunk);
        } else {
            for x in chunk.iter_mut() {
                *x = decode(fast(x.to_bits()));
            }
        }
    }
    saturated + precise_all(chunks.into_remainder())
}

/// Encodes `src` into `dst` with `fast` (the plain rounding, right for every value whose
/// magnitude bits are below `special_from`) and redoes a whole chunk with `precise` (NaN,
/// infinity, saturation) when any of its values is at or above it. Specials are rare in
/// gradients, so the common chunk costs the rounding and one max per element, about half the
/// instructions of the selects for every case (measured ~1.8x the encode speed).
#[inline(always)]
fn encode_with(
    dst: &mut [u8],
    src: &[f32],
    special_from: u32,
    fast: impl Fn(u32) -> u16,
    precise: impl Fn(f32) -> (u16, u32),
) -> u32 {
    let mut saturated = 0u32;
    let mut out_chunks = halves_mut(dst).chunks_exact_mut(CHUNK);
    let mut in_chunks = src.chunks_exact(CHUNK);
    for (out, xs) in (&mut out_chunks).zip(&mut in_chunks) {
        let mut max_abs = 0u32;
        for (d, x) in out.iter_mut().zip(xs) {
            let b = x.to_bits();
            max_abs = max_abs.max(b & 0x7FFF_FFFF);
            *d = U16::new(fast(b));
        }
        if max_abs >= special_from {
            saturated += encode_precise(out, xs, &precise);
        }
    }
    saturated + encode_precise(out_chunks.into_remainder(), in_chunks.remainder(), &precise)
}

#[inline(always)]
fn encode_precise(out: &mut [U16], xs: &[f32], precise: &impl Fn(f32) -> (u16, u32)) -> u32 {
    let mut saturated = 0u32;
    for (d, x) in out.iter_mut().zip(xs) {
        let (bits, over) = precise(*x);
        saturated += over;
        *d = U16::new(bits);
    }
    saturated
}

/// Encodes `src` into `dst` (`dst.len() == ty.elem_bytes() * src.len()`); returns how many
/// finite values saturated (always 0 for f32, which is written bit for bit).
///
/// # Panics
/// If the lengths disagree.
#[inline]
pub fn write_wire(ty: PayloadType, dst: &mut [u8], src: &[f32]) -> u32 {
    assert_eq!(
        dst.len(),
        src.len() * ty.elem_bytes(),
        "payload length mismatch"
    );
    match ty {
        PayloadType::F32 => {
            kernel::write_le_bytes(dst, src);
            0
        }
        PayloadType::Bf16 => encode_with(dst, src, BF16_SPECIAL_FROM, bf16_round, bf16_encode),
        PayloadType::F16 => encode_with(dst, src, F16_SPECIAL_FROM, f16_round, f16_encode),
    }
}

/// `xs[i] = decode(encode(xs[i]))`: the value every node will hold once `xs` is sent. The
/// root applies it to its final sums before broadcasting, so its own copy matches. Returns
/// the saturation count. Identity for f32.
#[inline]
pub fn round_trip_in_place(ty: PayloadType, xs: &mut [f32]) -> u32 {
    match ty {
        PayloadType::F32 => 0,
        PayloadType::Bf16 => {
            round_trip_with(xs, BF16_SPECIAL_FROM, bf16_round, bf16_encode, bf16_decode)
        }
        PayloadType::F16 => {
            round_trip_with(xs, F16_SPECIAL_FROM, f16_round, f16_encode, f16_decode)
        }
    }
}

/// Number of NaN or infinite values in `xs` (a trainer's gradient at round start).
#[inline]
pub fn count_nonfinite(xs: &[f32]) -> u64 {
    xs.iter().map(|x| u64::from(!x.is_finite())).sum()
}

/// The documented worst-case absolute error of a 16-bit reduction (see the module docs):
/// `n` contributions with `Σ|xᵢ| = abs_sum`, reduced over a tree whose longest leaf-to-root
/// path has `depth` edges.
pub fn reduction_error_bound(ty: PayloadType, depth: usize, n: usize, abs_sum: f64) -> f64 {
    if !ty.is_16bit() {
        // f32 sums are checked for exactness against the reference, not against a bound.
        return 0.0;
    }
    let encodes = (depth + 1) as i32;
    let rel = (1.0 + ty.unit_roundoff()).powi(encodes)
        * (1.0 + PayloadType::F32.unit_roundoff()).powi(n as i32)
        - 1.0;
    rel * abs_sum + f64::from(encodes) * n as f64 * ty.subnormal_half_ulp()
}

/// Measures the 16-bit aggregation step of a tree node — decode a child's payload and add it
/// to the f32 partial sum ([`add_assign_wire`]), then encode the sum for the parent
/// ([`write_wire`]) — on `bytes` of `ty` payload against `memcpy` of the same payload bytes.
/// For f32 this is [`kernel::measure_kernel_vs_memcpy`] (add only, as before).
///
/// **Benchmark helper, not for the hot path:** it allocates and reads the wall clock.
/// `bytes` is rounded down to whole elements (at least one); `iters` of 0 counts as 1; the
/// fastest of many short alternating batches per side is reported.
pub fn measure_wire_kernel_vs_memcpy(
    ty: PayloadType,
    bytes: usize,
    iters: usize,
) -> kernel::KernelReport {
    if !ty.is_16bit() {
        return kernel::measure_kernel_vs_memcpy(bytes, iters);
    }
    const CACHE_LINE: usize = 64;
    // Short batches (about 256 KiB of payload each, at least one pass), many of them: on a
    // shared machine a long batch is almost always preempted, so the best of many short
    // ones is the undisturbed speed for both sides alike.
    const BATCH_BYTES: usize = 256 << 10;
    let elems = (bytes / ty.elem_bytes()).max(1);
    let bytes = elems * ty.elem_bytes();
    let iters = iters.max(1);
    let per_batch = (BATCH_BYTES / bytes).clamp(1, iters);
    let batches = iters.div_ceil(per_batch).max(10);
    let aligned = |v: &mut Vec<u8>| v.as_ptr().align_offset(CACHE_LINE).min(CACHE_LINE);

    let values: Vec<f32> = (0..elems).map(|i| (i % 251) as f32 * 0.25).collect();
    let mut src_buf = vec![0u8; bytes + CACHE_LINE];
    let at = aligned(&mut src_buf);
    let src = &mut src_buf[at..at + bytes];
    write_wire(ty, src, &values);
    let src = &*src;
    let mut out_buf = vec![0u8; bytes + CACHE_LINE];
    let at = aligned(&mut out_buf);
    let out = &mut out_buf[at..at + bytes];
    let mut copy_buf = vec![0u8; bytes + CACHE_LINE];
    let at = aligned(&mut copy_buf);
    let copy_dst = &mut copy_buf[at..at + bytes];
    let mut acc_buf = vec![0f32; elems + CACHE_LINE / 4];
    let at = acc_buf
        .as_ptr()
        .align_offset(CACHE_LINE)
        .min(CACHE_LINE / 4);
    let acc = &mut acc_buf[at..at + elems];

    add_assign_wire(ty, acc, src);
    write_wire(ty, out, acc);
    copy_dst.copy_from_slice(src);
    let mut best_kernel = f64::INFINITY;
    let mut best_memcpy = f64::INFINITY;
    for _ in 0..batches {
        acc.fill(0.0);
        let start = std::time::Instant::now();
        for _ in 0..per_batch {
            add_assign_wire(
                ty,
                std::hint::black_box(&mut *acc),
                std::hint::black_box(src),
            );
            write_wire(
                ty,
                std::hint::black_box(&mut *out),
                std::hint::black_box(&*acc),
            );
        }
        best_kernel = best_kernel.min(start.elapsed().as_secs_f64());
        let start = std::time::Instant::now();
        for _ in 0..per_batch {
            std::hint::black_box(&mut *copy_dst).copy_from_slice(std::hint::black_box(src));
        }
        best_memcpy = best_memcpy.min(start.elapsed().as_secs_f64());
    }
    std::hint::black_box(&*out);
    let batch_bytes = (bytes * per_batch) as f64;
    let gbps = |secs: f64| batch_bytes / secs.max(1e-9) / 1e9;
    let (kernel_gbps, memcpy_gbps) = (gbps(best_kernel), gbps(best_memcpy));
    kernel::KernelReport {
        kernel_gbps,
        memcpy_gbps,
        ratio: kernel_gbps / memcpy_gbps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(ty: PayloadType, xs: &[f32]) -> (Vec<u8>, u32) {
        let mut out = vec![0u8; xs.len() * ty.elem_bytes()];
        let sat = write_wire(ty, &mut out, xs);
        (out, sat)
    }

    fn dec(ty: PayloadType, bytes: &[u8]) -> Vec<f32> {
        let mut out = vec![0f32; bytes.len() / ty.elem_bytes()];
        copy_from_wire(ty, &mut out, bytes);
        out
    }

    /// Every bf16 / f16 bit pattern decodes like `half` and re-encodes to itself (quiet NaNs
    /// included; signalling NaNs come back quiet, and no encoder emits one).
    #[test]
    fn every_16bit_pattern_round_trips() {
        let patterns: Vec<u16> = (0..=u16::MAX).collect();
        let bytes: Vec<u8> = patterns.iter().flat_map(|p| p.to_le_bytes()).collect();
        for ty in [PayloadType::Bf16, PayloadType::F16] {
            let vals = dec(ty, &bytes);
            let (back, sat) = enc(ty, &vals);
            assert_eq!(sat, 0, "{ty}");
            for (i, p) in patterns.iter().enumerate() {
                let expect = match ty {
                    PayloadType::Bf16 => half::bf16::from_bits(*p).to_f32(),
                    _ => half::f16::from_bits(*p).to_f32(),
                };
                if expect.is_nan() {
                    assert!(vals[i].is_nan(), "{ty} {p:#06x}");
                    if ty == PayloadType::Bf16 {
                        // bf16 decodes by a shift: even NaN payloads are kept exactly.
                        assert_eq!(vals[i].to_bits(), u32::from(*p) << 16);
                    }
                } else {
                    assert_eq!(vals[i].to_bits(), expect.to_bits(), "{ty} {p:#06x}");
                }
                let got = u16::from_le_bytes([back[2 * i], back[2 * i + 1]]);
                let quiet = match ty {
                    PayloadType::Bf16 => 0x0040,
                    _ => 0x0200,
                };
                if vals[i].is_nan() {
                    assert_eq!(got, p | quiet, "{ty} {p:#06x}: NaN stays NaN, made quiet");
                } else {
                    assert_eq!(got, *p, "{ty} {p:#06x}");
                }
            }
        }
    }

    /// Encoding rounds to nearest even exactly like `half` on many f32 values, except for
    /// the documented saturation.
    #[test]
    fn encode_matches_half_rne_and_saturates() {
        let mut xs: Vec<f32> = (0..200_000u32)
            .map(|i| f32::from_bits(i.wrapping_mul(2_654_435_761)))
            .collect();
        xs.extend([
            65504.0,
            65519.9,
            65520.0,
            -65520.0,
            1e6,
            -1e30,
            f32::MAX,
            f32::MIN,
        ]);
        xs.extend([f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 0.0, -0.0]);
        for ty in [PayloadType::Bf16, PayloadType::F16] {
            let (bytes, sat) = enc(ty, &xs);
            let mut expect_sat = 0;
            for (i, x) in xs.iter().enumerate() {
                let got = u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]]);
                let (want, max_bits) = match ty {
                    PayloadType::Bf16 => (half::bf16::from_f32(*x).to_bits(), 0x7F7F),
                    _ => (half::f16::from_f32(*x).to_bits(), 0x7BFF),
                };
                let inf_bits = if ty == PayloadType::Bf16 {
                    0x7F80
                } else {
                    0x7C00
                };
                if x.is_finite() && want & 0x7FFF == inf_bits {
                    expect_sat += 1;
                    assert_eq!(got, (want & 0x8000) | max_bits, "{ty} {x}");
                } else if x.is_nan() {
                    assert!(dec(ty, &bytes[2 * i..2 * i + 2])[0].is_nan(), "{ty} {x}");
                } else {
                    assert_eq!(got, want, "{ty} {x:e}");
                }
            }
            assert_eq!(sat, expect_sat, "{ty}");
            assert!(sat >= 2, "{ty}: the test values include overflows");
        }
        let (_, sat) = enc(PayloadType::F16, &[65519.0, 65520.0, f32::INFINITY]);
        assert_eq!(
            sat, 1,
            "65519 rounds to 65504, 65520 saturates, inf stays inf"
        );
        let back = dec(PayloadType::F16, &enc(PayloadType::F16, &[f32::INFINITY]).0);
        assert_eq!(back[0], f32::INFINITY);
    }

    #[test]
    fn add_copy_and_round_trip_agree_with_scalar_definitions() {
        for ty in PayloadType::ALL {
            for n in [0usize, 1, 7, 127, 128, 129, 704, 1000] {
                let xs: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 300.0).collect();
                let ys: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos() * 7.0).collect();
                let (bytes, _) = enc(ty, &ys);
                for offset in 0..3 {
                    let mut shifted = vec![0u8; offset];
                    shifted.extend_from_slice(&bytes);
                    let mut acc = xs.clone();
                    add_assign_wire(ty, &mut acc, &shifted[offset..]);
                    let dy = dec(ty, &bytes);
                    for i in 0..n {
                        assert_eq!(acc[i].to_bits(), (xs[i] + dy[i]).to_bits());
                    }
                }
                let mut rt = xs.clone();
                round_trip_in_place(ty, &mut rt);
                assert_eq!(rt, dec(ty, &enc(ty, &xs).0), "{ty} n={n}");
                // Re-encoding a decoded value is a fixed point.
                assert_eq!(enc(ty, &rt).0, enc(ty, &xs).0);
            }
        }
    }

    /// The chunked fast path on gradient-like values (tiny, f16-subnormal, ±0, up to the
    /// saturation edge) matches `half` bit for bit, with and without a special value planted
    /// in a chunk (which sends that chunk down the precise path), for encode and round trip.
    #[test]
    fn fast_path_matches_half_on_gradient_like_values() {
        // Values below both formats' special range, so whole chunks take the fast path...
        let small = |i: u32| {
            let mag = [1e-9f32, 3e-8, 6e-5, 1e-3, 0.5, 700.0, 30000.0][(i % 7) as usize];
            let sign = if i.is_multiple_of(3) { -1.0 } else { 1.0 };
            sign * mag * (1.0 + (i as f32 * 0.618).fract())
        };
        // ...and chunks that each hold one value at an edge of the special range.
        let edges = [
            65519.9f32,
            65520.0,
            -65530.0,
            65535.9,
            3.389_531_4e38,
            3.3961776e38,
            -3.4e38,
        ];
        let mut base: Vec<f32> = Vec::new();
        for (k, e) in edges.iter().enumerate() {
            base.push(*e);
            base.extend((0..15).map(|i| small(i + 16 * k as u32)));
        }
        base.extend((0..4096u32).map(small));
        base.extend([0.0, -0.0]);
        for plant in [None, Some(f32::NAN), Some(1e9), Some(f32::NEG_INFINITY)] {
            let mut xs = base.clone();
            if let Some(v) = plant {
                for i in (5..xs.len()).step_by(97) {
                    xs[i] = v;
                }
            }
            for ty in [PayloadType::Bf16, PayloadType::F16] {
                let (bytes, sat) = enc(ty, &xs);
                let mut want_sat = 0;
                for (i, x) in xs.iter().enumerate() {
                    let got = u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]]);
                    let (want, max_bits) = match ty {
                        PayloadType::Bf16 => (half::bf16::from_f32(*x).to_bits(), 0x7F7F),
                        _ => (half::f16::from_f32(*x).to_bits(), 0x7BFF),
                    };
                    let inf = if ty == PayloadType::Bf16 {
                        0x7F80
                    } else {
                        0x7C00
                    };
                    if x.is_finite() && want & 0x7FFF == inf {
                        want_sat += 1;
                        assert_eq!(got, (want & 0x8000) | max_bits, "{ty} {x}");
                    } else if x.is_nan() {
                        assert!(got & 0x7FFF > inf, "{ty} NaN stays NaN");
                    } else {
                        assert_eq!(got, want, "{ty} {x:e}");
                    }
                }
                assert_eq!(sat, want_sat, "{ty} {plant:?}");
                let mut rt = xs.clone();
                assert_eq!(round_trip_in_place(ty, &mut rt), want_sat);
                let back = dec(ty, &bytes);
                for (a, b) in rt.iter().zip(&back) {
                    assert!(a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()));
                }
            }
        }
    }

    #[test]
    fn nonfinite_counted() {
        assert_eq!(
            count_nonfinite(&[1.0, f32::NAN, f32::INFINITY, -0.0, f32::NEG_INFINITY]),
            3
        );
        assert_eq!(count_nonfinite(&[]), 0);
    }
}
