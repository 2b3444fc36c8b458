//! A call's buffers through one or more rounds: each piece is copied straight into the
//! node file and the result straight back (no staging copy), the round's rest is padded.
//!
//! Layout check: when the call's last round has room to spare, its last element carries a
//! small integer `h` derived from the call's buffer sizes, the same on every node that packs
//! the same layout. Every node adds its `h` in, so the slot comes back as
//! `contributors × h` only if every node packed the same sizes (exact: `h < 2^16`, at most
//! 255 contributors, below 2^24). A node that packed something else (another model, other
//! DDP buckets) makes it come back wrong on every node, and the call fails instead of
//! returning a sum of misaligned buffers.

use crate::pack::{plan_rounds, Piece};
use netstorm_node::nodefile::NodeFile;
use netstorm_node::{RoundIo, RoundStats, Session, SessionError};
use std::time::Duration;

/// What this node puts into a call's rounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Contribution {
    /// Its buffers (all-reduce).
    Buffers,
    /// Nothing: `-0.0` everywhere, the additive identity of IEEE 754 (`x + -0.0 == x` bit for
    /// bit, `+0.0` included), so a broadcast's result is the root's buffers exactly.
    Identity,
}

/// What a call did.
#[derive(Debug, Clone, Copy)]
pub struct CallStats {
    pub last: RoundStats,
    pub rounds: usize,
    pub elapsed: Duration,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("round {round}: the nodes packed different buffer layouts into this call (this node: {buffers} buffers of {elems} floats; layout check {found}, expected {expected}): every node must all-reduce the same tensors in the same order (same model; with DDP the same bucket_cap_mb and hooks on every node). The buffers hold garbage now.")]
    Layout {
        round: u64,
        buffers: usize,
        elems: usize,
        found: f32,
        expected: f32,
    },
}

/// The layout check value of a call over buffers of `lens` elements: FNV-1a of the sizes,
/// folded to 1..=65536.
pub fn layout_check(lens: &[usize]) -> f32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &l in std::iter::once(&lens.len()).chain(lens) {
        for b in (l as u64).to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    ((h % 65536) + 1) as f32
}

const PAD_LEN: usize = 1024;
static ZEROS: [f32; PAD_LEN] = [0.0; PAD_LEN];
static NEG_ZEROS: [f32; PAD_LEN] = [-0.0; PAD_LEN];

fn pad(file: &NodeFile, mut at: usize, end: usize, with: &[f32; PAD_LEN]) {
    while at < end {
        let n = (end - at).min(PAD_LEN);
        file.write_buffer(at, &with[..n]);
        at += n;
    }
}

struct OneRound<'a, 'b> {
    pieces: &'a [Piece],
    parts: &'a mut [&'b mut [f32]],
    contribution: Contribution,
    /// Whether the result is read back (a broadcast's root keeps its buffers as they are).
    read_back: bool,
    /// This node's layout check value, in the round's last element (see the module docs).
    check: Option<f32>,
    /// The sum found there.
    check_sum: f32,
}

impl RoundIo for OneRound<'_, '_> {
    fn fill(&mut self, file: &NodeFile) {
        let end = file.buffer_elems();
        match self.contribution {
            Contribution::Identity => pad(file, 0, end, &NEG_ZEROS),
            Contribution::Buffers => {
                let mut at = 0;
                for p in self.pieces {
                    file.write_buffer(p.at, &self.parts[p.part][p.elems.clone()]);
                    at = p.at + p.elems.len();
                }
                pad(file, at, end, &ZEROS);
            }
        }
        if let Some(h) = self.check {
            file.write_buffer(end - 1, &[h]);
        }
    }

    fn take(&mut self, file: &NodeFile) {
        if self.check.is_some() {
            let mut sum = [0.0];
            file.read_buffer(file.buffer_elems() - 1..file.buffer_elems(), &mut sum);
            self.check_sum = sum[0];
        }
        if !self.read_back {
            return;
        }
        for p in self.pieces {
            file.read_buffer(
                p.at..p.at + p.elems.len(),
                &mut self.parts[p.part][p.elems.clone()],
            );
        }
    }
}

/// Runs the rounds of one call over `parts` (laid back to back, see [`plan_rounds`]),
/// checking the layout (module docs) if `contributors` nodes add in and the last round has
/// room for it.
pub fn run_rounds(
    session: &mut Session,
    parts: &mut [&mut [f32]],
    contribution: Contribution,
    read_back: bool,
    contributors: Option<usize>,
) -> Result<CallStats, CallError> {
    let lens: Vec<usize> = parts.iter().map(|p| p.len()).collect();
    let buffer_elems = session.buffer_elems();
    let plan = plan_rounds(&lens, buffer_elems);
    let mut elapsed = Duration::ZERO;
    let mut last = None;
    for (i, pieces) in plan.iter().enumerate() {
        let used = pieces.last().map_or(0, |p| p.at + p.elems.len());
        let check = contributors
            .filter(|&n| i + 1 == plan.len() && used < buffer_elems && (1..256).contains(&n))
            .map(|_| layout_check(&lens));
        let mut io = OneRound {
            pieces,
            parts,
            contribution,
            read_back,
            check,
            check_sum: 0.0,
        };
        let st = session.allreduce_with(&mut io)?;
        if let (Some(h), Some(n)) = (check, contributors) {
            let expected = h * n as f32;
            if io.check_sum.to_bits() != expected.to_bits() {
                return Err(CallError::Layout {
                    round: st.round,
                    buffers: lens.len(),
                    elems: lens.iter().sum(),
                    found: io.check_sum,
                    expected,
                });
            }
        }
        elapsed += st.elapsed;
        last = Some(st);
    }
    Ok(CallStats {
        last: last.expect("a call runs at least one round"),
        rounds: plan.len(),
        elapsed,
    })
}

/// `x / n` for every element (IEEE division, as numpy's float32 `x / n`).
pub fn divide(parts: &mut [&mut [f32]], n: usize) {
    let n = n as f32;
    for p in parts.iter_mut() {
        for x in p.iter_mut() {
            *x /= n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_check_is_a_small_integer_that_tells_layouts_apart() {
        let a = layout_check(&[100, 20]);
        assert_eq!(a, layout_check(&[100, 20]));
        assert_ne!(a, layout_check(&[20, 100]));
        assert_ne!(a, layout_check(&[120]));
        for l in [&[][..], &[1], &[7, 7, 7], &[25_600_000]] {
            let h = layout_check(l);
            assert!((1.0..=65536.0).contains(&h) && h.fract() == 0.0);
            // Exact for every count of contributors the check is used with.
            assert_eq!((h * 255.0) as u64, h as u64 * 255);
        }
    }
}
