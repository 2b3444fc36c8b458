//! Aggregation kernels: the per-packet arithmetic of in-network partial aggregation.
//!
//! Payloads on the wire are little-endian f32. These kernels read them straight from the
//! packet bytes (no intermediate copy) and are written so the compiler vectorizes them.

/// `dst[i] += f32::from_le_bytes(src[4i..4i+4])` for every element of `dst`.
///
/// # Panics
/// If `src.len() != 4 * dst.len()` (callers check lengths once, when parsing).
#[inline]
pub fn add_assign_le_bytes(dst: &mut [f32], src: &[u8]) {
    assert_eq!(src.len(), dst.len() * 4, "payload length mismatch");
    for (d, s) in dst.iter_mut().zip(src.chunks_exact(4)) {
        *d += f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
    }
}

/// `dst[i] = f32::from_le_bytes(src[4i..4i+4])`.
#[inline]
pub fn copy_from_le_bytes(dst: &mut [f32], src: &[u8]) {
    assert_eq!(src.len(), dst.len() * 4, "payload length mismatch");
    for (d, s) in dst.iter_mut().zip(src.chunks_exact(4)) {
        *d = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
    }
}

/// Writes `src` as little-endian f32 bytes into `dst` (`dst.len() == 4 * src.len()`).
#[inline]
pub fn write_le_bytes(dst: &mut [u8], src: &[f32]) {
    assert_eq!(dst.len(), src.len() * 4, "payload length mismatch");
    for (d, s) in dst.chunks_exact_mut(4).zip(src) {
        d.copy_from_slice(&s.to_le_bytes());
    }
}

/// `dst[i] += src[i]`.
#[inline]
pub fn add_assign(dst: &mut [f32], src: &[f32]) {
    assert_eq!(src.len(), dst.len(), "length mismatch");
    for (d, s) in dst.iter_mut().zip(src) {
        *d += *s;
    }
}
