//! Test gradients with an exact reference sum, for every process that checks an all-reduce:
//! the emulated experiments and fault suite, `netstorm-trainer` on real hosts and the node
//! tests. Nothing here depends on the emulator.
//!
//! Each value is a small integer, so the f32 sum over any number of nodes is exact in any
//! order: a result is compared bit for bit against [`reference_sum`], whatever tree order
//! the data plane added it in. 16-bit payloads are checked against the documented error
//! bound instead ([`result_ok`]), and across nodes by [`digest`].

use crate::kernel16;
use crate::wire::PayloadType;

/// The contribution of node `node` in round `round` at element `index`.
pub fn test_gradient(node: usize, round: u32, index: usize) -> f32 {
    ((node * 131 + index * 7 + round as usize * 17) & 2047) as f32 - 1024.0
}

/// Fills `buf` with node `node`'s gradient of round `round`.
pub fn fill_test_gradient(buf: &mut [f32], node: usize, round: u32) {
    for (i, x) in buf.iter_mut().enumerate() {
        *x = test_gradient(node, round, i);
    }
}

/// The all-reduce result at element `index` of round `round` over `nodes`.
pub fn reference_sum(nodes: impl IntoIterator<Item = usize>, round: u32, index: usize) -> f32 {
    let mut sum = 0.0f32;
    for v in nodes {
        sum += test_gradient(v, round, index);
    }
    sum
}

/// Writes the all-reduce result of round `round` over `nodes` into every element of `buf`.
pub fn fill_reference_sum(
    buf: &mut [f32],
    nodes: impl IntoIterator<Item = usize> + Clone,
    round: u32,
) {
    for (i, x) in buf.iter_mut().enumerate() {
        *x = reference_sum(nodes.clone(), round, i);
    }
}

/// Whether `got` is an acceptable all-reduce result at element `index` of round `round`
/// over nodes `0..n` for a job whose payload type is `wire`: bit for bit the reference sum
/// for f32; within [`kernel16::reduction_error_bound`] of it for 16-bit payloads, with the
/// deepest tree `n` nodes can form (depth `n - 1`), since a trainer does not see the plan.
pub fn result_ok(wire: PayloadType, n: usize, round: u32, index: usize, got: f32) -> bool {
    within_bound(wire, 0..n, round, index, got)
}

/// [`result_ok`] for a round that summed the contributions of `nodes` only (after a node
/// was lost).
pub fn result_ok_over(
    wire: PayloadType,
    nodes: &[usize],
    round: u32,
    index: usize,
    got: f32,
) -> bool {
    within_bound(wire, nodes.iter().copied(), round, index, got)
}

fn within_bound(
    wire: PayloadType,
    nodes: impl Iterator<Item = usize> + Clone,
    round: u32,
    index: usize,
    got: f32,
) -> bool {
    let want = reference_sum(nodes.clone(), round, index);
    if !wire.is_16bit() {
        return got.to_bits() == want.to_bits();
    }
    let n = nodes.clone().count();
    let abs_sum: f64 = nodes
        .map(|v| f64::from(test_gradient(v, round, index).abs()))
        .sum();
    let bound = kernel16::reduction_error_bound(wire, n.saturating_sub(1), n, abs_sum);
    (f64::from(got) - f64::from(want)).abs() <= bound
}

/// FNV-1a over the bits of `buf`: trainers print it per round so runs on several hosts can
/// be compared for bit-identical results (the check a 16-bit job cannot do against the
/// reference alone).
pub fn digest(buf: &[f32]) -> u64 {
    buf.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
        x.to_bits()
            .to_le_bytes()
            .iter()
            .fold(h, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_small_integers_and_sums_are_order_independent() {
        for v in 0..16 {
            for i in 0..4096 {
                let x = test_gradient(v, 3, i);
                assert_eq!(x, x.trunc());
                assert!((-1024.0..1024.0).contains(&x));
            }
        }
        let forward = reference_sum(0..16, 5, 77);
        let backward = reference_sum((0..16).rev(), 5, 77);
        assert_eq!(forward.to_bits(), backward.to_bits());
        let mut buf = vec![0.0; 100];
        fill_reference_sum(&mut buf, 0..3, 2);
        assert_eq!(
            buf[42],
            (0..3).map(|v| test_gradient(v, 2, 42)).sum::<f32>()
        );
        fill_test_gradient(&mut buf, 1, 2);
        assert_eq!(buf[42], test_gradient(1, 2, 42));
    }

    #[test]
    fn result_ok_is_exact_for_f32_and_bounded_for_16_bit() {
        let want = reference_sum(0..3, 4, 9);
        assert!(result_ok(PayloadType::F32, 3, 4, 9, want));
        let one_ulp_off = f32::from_bits(want.to_bits() + 1);
        assert!(!result_ok(PayloadType::F32, 3, 4, 9, one_ulp_off));
        // bf16 keeps 8 significant bits: an error of 1 % of the inputs is beyond the bound.
        let abs: f32 = (0..3).map(|v| test_gradient(v, 4, 9).abs()).sum();
        assert!(result_ok(PayloadType::Bf16, 3, 4, 9, want + abs * 0.005));
        assert!(!result_ok(PayloadType::Bf16, 3, 4, 9, want + abs * 0.05));
        assert_ne!(digest(&[1.0, 2.0]), digest(&[2.0, 1.0]));
        assert_ne!(digest(&[0.0]), digest(&[-0.0]));
    }
}
