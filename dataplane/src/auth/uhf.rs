//! POLYVAL (RFC 8452 §3), the universal hash of AES-GCM-SIV, for [`PacketMac`](super::PacketMac).
//!
//! [`Polyval::resume`]`(`[`Polyval::hash`]`(a), b)` = POLYVAL_H(`a` ‖ zeros to a multiple of
//! 16 bytes ‖ `b` ‖ zeros to a multiple of 16 bytes), i.e. the `polyval` crate's
//! `update_padded(a)`, `update_padded(b)`, `finalize()`; `hash(a)` alone is the state after
//! `a`, so a payload hashed once can be finished with several headers.
//!
//! POLYVAL works in GF(2^128) modulo P = x^128 + x^127 + x^126 + x^121 + 1 with
//! little-endian blocks; `dot(a, b) = a·b·x^-128 mod P` and S_j = dot(S_{j-1} ⊕ X_j, H).
//! Unrolled, a run of n blocks hashes to Σ dot(X_i, H_{n-i+1}) (with the running S folded
//! into X_1), where H_k are the `dot`-powers of H (H_1 = H, H_{k+1} = dot(H_k, H)). The
//! fast path computes the 256-bit carry-less products of a group of blocks with their
//! powers, XORs them and reduces once per group ("aggregated reduction"); the powers are
//! computed once, in [`Polyval::new`].
//!
//! Implementations, chosen at **compile time**:
//! * `clmul`: PCLMULQDQ on 128-bit vectors when the crate is built with
//!   `target_feature = "pclmulqdq"` (`.cargo/config.toml` enables it): eight blocks per
//!   reduction (`GROUP`), Karatsuba products (three 64x64 carry-less multiplies per block). The
//!   multiplier's throughput is the limit (~0.5 ns per PCLMULQDQ on the Zen 4 test machine,
//!   ~150 ns per 1456-byte datagram). The intrinsics come from `safe_arch`, which exposes
//!   `core::arch` as safe functions that exist only under the matching
//!   `cfg(target_feature)`. Calling `core::arch` directly would need `unsafe` even with the
//!   feature enabled crate-wide (rustc counts only `#[target_feature]` attributes, not
//!   `-C target-feature`, when deciding whether such a call is safe), and this project keeps
//!   `unsafe` to FFI, shared-memory and socket modules — which also rules out runtime
//!   feature dispatch.
//! * otherwise the `polyval` crate (RustCrypto, 0.7: runtime-detected CLMUL/PMULL with
//!   4-block aggregation, or portable code; key expanded once, cloned per packet): same
//!   output, slower (~240 ns per datagram for POLYVAL alone on the same machine with
//!   runtime-detected CLMUL; its 0.6 version, one block at a time, ~850 ns).
//!
//! Not here: an AVX-512 VPCLMULQDQ path (four blocks per instruction, 16 per reduction)
//! measured 65 ns per datagram instead of ~150 ns on the same machine, but `safe_arch` has
//! no VPCLMULQDQ, so it would need an `unsafe` call into a `#[target_feature]` function.

/// The POLYVAL hash under one key H, with what the selected implementation precomputes.
#[derive(Clone)]
pub(crate) struct Polyval {
    #[cfg(all(target_arch = "x86_64", target_feature = "pclmulqdq"))]
    clmul: clmul::Powers,
    #[cfg(not(all(target_arch = "x86_64", target_feature = "pclmulqdq")))]
    expanded: polyval::Polyval,
}

impl Polyval {
    /// POLYVAL under `h` (the message-authentication key).
    pub(crate) fn new(h: [u8; 16]) -> Self {
        Self {
            #[cfg(all(target_arch = "x86_64", target_feature = "pclmulqdq"))]
            clmul: clmul::Powers::new(h),
            #[cfg(not(all(target_arch = "x86_64", target_feature = "pclmulqdq")))]
            expanded: polyval::Polyval::new(&h.into()),
        }
    }

    /// POLYVAL_H(`a` zero-padded to 16 bytes): the state [`Polyval::resume`] continues from.
    #[inline]
    pub(crate) fn hash(&self, a: &[u8]) -> [u8; 16] {
        #[cfg(all(target_arch = "x86_64", target_feature = "pclmulqdq"))]
        {
            self.clmul.hash(a)
        }
        #[cfg(not(all(target_arch = "x86_64", target_feature = "pclmulqdq")))]
        {
            use polyval::universal_hash::UniversalHash;
            let mut p = self.expanded.clone();
            p.update_padded(a);
            p.finalize().into()
        }
    }

    /// Continues the hash whose state is `state` (from [`Polyval::hash`]) over `b`
    /// zero-padded to 16 bytes: `resume(hash(a), b)` = POLYVAL_H(`a` padded ‖ `b` padded).
    #[inline]
    pub(crate) fn resume(&self, state: [u8; 16], b: &[u8]) -> [u8; 16] {
        #[cfg(all(target_arch = "x86_64", target_feature = "pclmulqdq"))]
        {
            self.clmul.resume(state, b)
        }
        #[cfg(not(all(target_arch = "x86_64", target_feature = "pclmulqdq")))]
        {
            // S' = dot(S ⊕ X_1, H) ...: hashing from zero with the state XORed into the first
            // block is the same as resuming (the crate has no way to set its state).
            use polyval::universal_hash::UniversalHash;
            if b.is_empty() {
                return state;
            }
            let mut first = [0u8; 16];
            let head = b.len().min(16);
            first[..head].copy_from_slice(&b[..head]);
            for (f, s) in first.iter_mut().zip(state) {
                *f ^= s;
            }
            let mut p = self.expanded.clone();
            p.update_padded(&first);
            p.update_padded(&b[head..]);
            p.finalize().into()
        }
    }
}

/// Blocks per aggregated reduction of the fast path.
#[cfg(all(target_arch = "x86_64", target_feature = "pclmulqdq"))]
pub(crate) const GROUP: usize = 8;

/// 128-bit carry-less multiplication (PCLMULQDQ).
#[cfg(all(target_arch = "x86_64", target_feature = "pclmulqdq"))]
mod clmul {
    use super::GROUP;
    use safe_arch::{
        byte_shl_imm_u128_m128i, byte_shr_imm_u128_m128i, m128i, mul_i64_carryless_m128i,
        shuffle_ai_f32_all_m128i,
    };

    const GROUP_BYTES: usize = 16 * GROUP;

    /// `bytes[at..at + 16]` as a vector (an unaligned load).
    #[inline(always)]
    fn load_at(bytes: &[u8], at: usize) -> m128i {
        let block: [u8; 16] = bytes[at..at + 16].try_into().expect("16 bytes");
        m128i::from(block)
    }

    /// A sum of unreduced 256-bit carry-less products `hi·x^128 ⊕ mid·x^64 ⊕ lo`, in
    /// Karatsuba form: `mid` holds Σ (a.lo ⊕ a.hi)·(b.lo ⊕ b.hi), to which `lo ⊕ hi` is
    /// added once at the end (three 64x64 multiplies per block instead of four).
    #[derive(Clone, Copy)]
    struct Product {
        lo: m128i,
        mid: m128i,
        hi: m128i,
    }

    /// `a.lo ⊕ a.hi` in the low half (Karatsuba's middle operand).
    #[inline(always)]
    fn fold(a: m128i) -> m128i {
        a ^ shuffle_ai_f32_all_m128i::<0x4e>(a)
    }

    impl Product {
        /// `a·b`, with `bk = fold(b)` precomputed.
        #[inline(always)]
        fn of(a: m128i, b: m128i, bk: m128i) -> Self {
            Self {
                lo: mul_i64_carryless_m128i::<0x00>(a, b),
                mid: mul_i64_carryless_m128i::<0x00>(fold(a), bk),
                hi: mul_i64_carryless_m128i::<0x11>(a, b),
            }
        }

        /// `self + a·b`.
        #[inline(always)]
        fn add(self, a: m128i, b: m128i, bk: m128i) -> Self {
            let p = Self::of(a, b, bk);
            Self {
                lo: self.lo ^ p.lo,
                mid: self.mid ^ p.mid,
                hi: self.hi ^ p.hi,
            }
        }

        /// Montgomery reduction: `self · x^-128 mod P`, two folds of 64 bits each by the
        /// constant 0xc200_0000_0000_0000 (x^63 + x^62 + x^57, from P's low terms).
        #[inline(always)]
        fn reduce(self) -> m128i {
            let mid = self.mid ^ self.lo ^ self.hi;
            let lo = self.lo ^ byte_shl_imm_u128_m128i::<8>(mid);
            let hi = self.hi ^ byte_shr_imm_u128_m128i::<8>(mid);
            let poly = m128i::from([1u64, 0xc200_0000_0000_0000]);
            let lo =
                shuffle_ai_f32_all_m128i::<0x4e>(lo) ^ mul_i64_carryless_m128i::<0x10>(lo, poly);
            let lo =
                shuffle_ai_f32_all_m128i::<0x4e>(lo) ^ mul_i64_carryless_m128i::<0x10>(lo, poly);
            hi ^ lo
        }
    }

    /// The `dot`-powers of H: `pow[k]` = H_{k+1}, `kar[k]` = fold(`pow[k]`).
    #[derive(Clone, Copy, Debug)]
    pub(super) struct Powers {
        pow: [m128i; GROUP],
        kar: [m128i; GROUP],
    }

    impl Powers {
        pub(super) fn new(h: [u8; 16]) -> Self {
            let h = m128i::from(h);
            let mut pow = [h; GROUP];
            for k in 1..GROUP {
                pow[k] = Product::of(pow[k - 1], h, fold(h)).reduce();
            }
            Self {
                pow,
                kar: pow.map(fold),
            }
        }

        /// Hashes the `n` blocks of `blocks` (1 ≤ n ≤ GROUP) after `acc`: Σ dot(X_i,
        /// H_{n-i+1}) with `acc` XORed into X_1, one reduction.
        #[inline(always)]
        fn group(&self, acc: m128i, blocks: &[u8], n: usize) -> m128i {
            let k = n - 1;
            let mut p = Product::of(acc ^ load_at(blocks, 0), self.pow[k], self.kar[k]);
            for i in 1..n {
                p = p.add(load_at(blocks, 16 * i), self.pow[k - i], self.kar[k - i]);
            }
            p.reduce()
        }

        /// Continues the hash `acc` over `data` zero-padded to a multiple of 16 bytes.
        #[inline(always)]
        fn update(&self, mut acc: m128i, data: &[u8]) -> m128i {
            let mut groups = data.chunks_exact(GROUP_BYTES);
            for g in &mut groups {
                acc = self.group(acc, g, GROUP);
            }
            let rest = groups.remainder();
            if !rest.is_empty() {
                let mut buf = [0u8; GROUP_BYTES];
                buf[..rest.len()].copy_from_slice(rest);
                acc = self.group(acc, &buf, rest.len().div_ceil(16));
            }
            acc
        }

        /// Continues the hash `state` over `b` padded.
        #[inline]
        pub(super) fn resume(&self, state: [u8; 16], b: &[u8]) -> [u8; 16] {
            self.update(m128i::from(state), b).into()
        }

        /// POLYVAL_H(`a` padded).
        #[inline]
        pub(super) fn hash(&self, a: &[u8]) -> [u8; 16] {
            self.update(m128i::from([0u64; 2]), a).into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Polyval;
    use polyval::universal_hash::UniversalHash;
    use rand::{Rng, RngCore, SeedableRng};

    fn reference(h: [u8; 16], a: &[u8], b: &[u8]) -> [u8; 16] {
        let mut p = polyval::Polyval::new(&h.into());
        p.update_padded(a);
        p.update_padded(b);
        p.finalize().into()
    }

    /// RFC 8452 Appendix A: POLYVAL(H, X_1, X_2).
    #[test]
    fn rfc8452_polyval_example() {
        let hex = |s: &str| -> Vec<u8> {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect()
        };
        let h: [u8; 16] = hex("25629347589242761d31f826ba4b757b").try_into().unwrap();
        let x = hex("4f4f95668c83dfb6401762bb2d01a262d1a24ddd2721d006bbe45f20d3c9f362");
        let want = hex("f7a3b47b846119fae5b7866cf5e5b77e");
        let p = Polyval::new(h);
        assert_eq!(p.hash(&x).to_vec(), want);
        assert_eq!(p.resume(p.hash(&x[..16]), &x[16..]).to_vec(), want);
    }

    /// Every split of 0..40 blocks (and unaligned lengths) between `a` and `b`, random H:
    /// covers every group remainder of both fast paths.
    #[test]
    fn matches_polyval_crate() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x5eed);
        let mut data = vec![0u8; 16 * 40 + 15];
        for round in 0..40 {
            let mut h = [0u8; 16];
            rng.fill_bytes(&mut h);
            if round == 0 {
                h = [0xff; 16];
            }
            rng.fill_bytes(&mut data);
            let p = Polyval::new(h);
            for blocks in 0..=40usize {
                let len = 16 * blocks;
                for a_len in (0..=len)
                    .step_by(16)
                    .chain([len.saturating_sub(5), len / 2 + 3])
                {
                    let a = &data[..a_len.min(len)];
                    let b = &data[a.len()..len];
                    let want = reference(h, a, b);
                    assert_eq!(
                        p.resume(p.hash(a), b),
                        want,
                        "H {h:02x?} a {} b {}",
                        a.len(),
                        b.len()
                    );
                }
            }
            // Resuming from the state after `a` gives the same as hashing both at once.
            for a_len in [0usize, 16, 100, 16 * 9, 16 * 36] {
                let (a, b) = data[..a_len + 48 + 16].split_at(a_len);
                assert_eq!(p.resume(p.hash(a), b), reference(h, a, b), "a {a_len}");
                assert_eq!(p.resume(p.hash(a), &[]), reference(h, a, &[]));
            }
            // Unaligned tails of `b` too.
            let (a_len, b_len) = (rng.random_range(0..300), rng.random_range(0..300));
            let (a, b) = data[..a_len + b_len].split_at(a_len);
            assert_eq!(p.resume(p.hash(a), b), reference(h, a, b));
        }
    }
}
