//! How a call's buffers map onto rounds: buffers are laid back to back and cut into rounds
//! of the dp's `buffer_elems`, the last round padded. Pure arithmetic, so every node of the
//! cluster cuts the same call the same way (the layout is a function of the lengths only).

use std::ops::Range;

/// A stretch of one buffer that travels in one round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// Index of the buffer in the call.
    pub part: usize,
    /// Elements of that buffer.
    pub elems: Range<usize>,
    /// Where they sit in the round's shared buffer.
    pub at: usize,
}

/// The rounds of a call over buffers of `lens` elements, each a list of pieces in buffer
/// order; one empty round if every buffer is empty (a call always runs a round, so every
/// node runs the same number of rounds even for empty tensors).
pub fn plan_rounds(lens: &[usize], buffer_elems: usize) -> Vec<Vec<Piece>> {
    assert!(buffer_elems > 0);
    let mut rounds = vec![Vec::new()];
    let mut used = 0;
    for (part, &len) in lens.iter().enumerate() {
        let mut done = 0;
        while done < len {
            if used == buffer_elems {
                rounds.push(Vec::new());
                used = 0;
            }
            let take = (len - done).min(buffer_elems - used);
            rounds.last_mut().unwrap().push(Piece {
                part,
                elems: done..done + take,
                at: used,
            });
            used += take;
            done += take;
        }
    }
    rounds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_back_to_back_and_splits_at_round_boundaries() {
        let r = plan_rounds(&[3, 0, 6, 1], 4);
        let p = |part, a, b, at| Piece {
            part,
            elems: a..b,
            at,
        };
        assert_eq!(
            r,
            vec![
                vec![p(0, 0, 3, 0), p(2, 0, 1, 3)],
                vec![p(2, 1, 5, 0)],
                vec![p(2, 5, 6, 0), p(3, 0, 1, 1)],
            ]
        );
        assert_eq!(plan_rounds(&[], 4), vec![vec![]]);
        assert_eq!(plan_rounds(&[0, 0], 4), vec![vec![]]);
        assert_eq!(plan_rounds(&[4], 4), vec![vec![p(0, 0, 4, 0)]]);
    }

    #[test]
    fn every_element_travels_exactly_once() {
        for be in 1..9 {
            let lens = [5, 1, 0, 9, 3];
            let mut seen: Vec<Vec<u32>> = lens.iter().map(|&l| vec![0; l]).collect();
            for round in plan_rounds(&lens, be) {
                let mut slots = vec![false; be];
                for pc in round {
                    for (k, e) in pc.elems.clone().enumerate() {
                        seen[pc.part][e] += 1;
                        assert!(!std::mem::replace(&mut slots[pc.at + k], true));
                    }
                }
            }
            assert!(seen.iter().flatten().all(|&c| c == 1), "buffer_elems {be}");
        }
    }
}
