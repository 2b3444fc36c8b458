//! The payload type of data packets: how gradient elements are encoded on the wire.
//!
//! A job picks one type for all its data packets; the header's `payload_type` byte (byte 36,
//! formerly the first reserved byte) names it, so a packet of another type is recognised and
//! dropped instead of being misread. `F32` is code 0, so every f32 datagram is byte for byte
//! what version 1 always sent, and a receiver from before this field (which requires the
//! byte to be zero) rejects 16-bit datagrams rather than misreading them.
//!
//! Tree nodes always aggregate in f32 (see [`crate::kernel16`]); 16-bit types only shrink
//! what crosses the links: a 1408-byte segment carries 704 elements instead of 352.

use core::fmt;
use core::str::FromStr;

/// Encoding of the elements of a data packet's payload (all little-endian).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum PayloadType {
    /// IEEE-754 binary32: exact, 4 bytes per element.
    #[default]
    F32 = 0,
    /// bfloat16 (the top half of a binary32), round-to-nearest-even: 8 significand bits,
    /// f32's range, 2 bytes per element.
    Bf16 = 1,
    /// IEEE-754 binary16, round-to-nearest-even, saturating at ±65504: 11 significand bits,
    /// 2 bytes per element.
    F16 = 2,
}

impl PayloadType {
    /// Every type, in code order.
    pub const ALL: [PayloadType; 3] = [PayloadType::F32, PayloadType::Bf16, PayloadType::F16];

    /// Decodes the header byte; `None` for codes this version does not know.
    #[inline]
    pub const fn from_u8(code: u8) -> Option<PayloadType> {
        match code {
            0 => Some(PayloadType::F32),
            1 => Some(PayloadType::Bf16),
            2 => Some(PayloadType::F16),
            _ => None,
        }
    }

    /// The header byte.
    #[inline]
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// Bytes per element on the wire.
    #[inline]
    pub const fn elem_bytes(self) -> usize {
        match self {
            PayloadType::F32 => 4,
            PayloadType::Bf16 | PayloadType::F16 => 2,
        }
    }

    /// Elements that fit `segment_bytes` payload bytes (at least one).
    #[inline]
    pub const fn elems_per_segment(self, segment_bytes: usize) -> usize {
        let n = segment_bytes / self.elem_bytes();
        if n == 0 {
            1
        } else {
            n
        }
    }

    /// The unit roundoff `u` of one round-to-nearest-even encode: `|enc(x) - x| <= u |x|`
    /// for every `x` in the normal range (2^-24 for f32, which is never re-encoded, 2^-8 for
    /// bf16, 2^-11 for f16).
    #[inline]
    pub const fn unit_roundoff(self) -> f64 {
        match self {
            PayloadType::F32 => 1.0 / (1u64 << 24) as f64,
            PayloadType::Bf16 => 1.0 / 256.0,
            PayloadType::F16 => 1.0 / 2048.0,
        }
    }

    /// Smallest positive normal magnitude of the type (below it the encode error is absolute,
    /// at most half the subnormal spacing).
    #[inline]
    pub const fn min_normal(self) -> f64 {
        match self {
            PayloadType::F32 | PayloadType::Bf16 => f32::MIN_POSITIVE as f64,
            PayloadType::F16 => 1.0 / 16384.0, // 2^-14
        }
    }

    /// Half the spacing of the type's subnormals: the largest absolute error of one encode of
    /// a value below [`PayloadType::min_normal`].
    #[inline]
    pub const fn subnormal_half_ulp(self) -> f64 {
        match self {
            PayloadType::F32 => 0.0,
            PayloadType::Bf16 => 4.591774807899561e-41, // 2^-134
            PayloadType::F16 => 2.9802322387695312e-8,  // 2^-25
        }
    }

    /// True for the 16-bit types (encoded at every tree level, so results carry a bound
    /// rather than being exact).
    #[inline]
    pub const fn is_16bit(self) -> bool {
        !matches!(self, PayloadType::F32)
    }

    /// The name used in config files and on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            PayloadType::F32 => "f32",
            PayloadType::Bf16 => "bf16",
            PayloadType::F16 => "f16",
        }
    }
}

impl fmt::Display for PayloadType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A payload type name that is not `f32`, `bf16` or `f16`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown payload type {0:?} (expected \"f32\", \"bf16\" or \"f16\")")]
pub struct UnknownPayloadType(pub String);

impl FromStr for PayloadType {
    type Err = UnknownPayloadType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "f32" => Ok(PayloadType::F32),
            "bf16" => Ok(PayloadType::Bf16),
            "f16" | "fp16" => Ok(PayloadType::F16),
            _ => Err(UnknownPayloadType(s.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_names_and_sizes() {
        for t in PayloadType::ALL {
            assert_eq!(PayloadType::from_u8(t.as_u8()), Some(t));
            assert_eq!(t.name().parse::<PayloadType>(), Ok(t));
            assert_eq!(t.to_string(), t.name());
        }
        assert_eq!(PayloadType::from_u8(3), None);
        assert!("f64".parse::<PayloadType>().is_err());
        assert_eq!(PayloadType::F32.elems_per_segment(1408), 352);
        assert_eq!(PayloadType::Bf16.elems_per_segment(1408), 704);
        assert_eq!(PayloadType::F16.elems_per_segment(1408), 704);
        assert_eq!(PayloadType::default(), PayloadType::F32);
        assert_eq!(PayloadType::Bf16.subnormal_half_ulp(), 2f64.powi(-134));
        assert_eq!(PayloadType::F16.subnormal_half_ulp(), 2f64.powi(-25));
    }
}
