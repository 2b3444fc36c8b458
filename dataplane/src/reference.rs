//! Test gradients with an exact reference sum, for every process that checks an all-reduce:
//! the emulated experiments and fault suite, `netstorm-trainer` on real hosts and the node
//! tests. Nothing here depends on the emulator.
//!
//! Each value is a small integer, so the f32 sum over any number of nodes is exact in any
//! order: a result is compared bit for bit against [`reference_sum`], whatever tree order
//! the data plane added it in.

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
}
