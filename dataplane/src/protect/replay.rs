//! The anti-replay window (WireGuard's, RFC 6479's bitmap): which of the last
//! [`REPLAY_WINDOW_BITS`] packet numbers of one (sender, path) were seen.

/// Packet numbers a window remembers behind the highest one seen.
pub const REPLAY_WINDOW_BITS: u64 = 2048;
const WORDS: usize = (REPLAY_WINDOW_BITS / 64) as usize;

/// A sliding window over packet numbers: accepts each number once, and nothing more than
/// [`REPLAY_WINDOW_BITS`] - 1 behind the highest accepted one.
#[derive(Clone, PartialEq, Eq)]
pub struct ReplayWindow {
    /// Highest packet number accepted + 1 (0: none yet).
    top: u64,
    /// Bit `pn % REPLAY_WINDOW_BITS` set if `pn` (within the window) was accepted.
    bits: [u64; WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self {
            top: 0,
            bits: [0; WORDS],
        }
    }
}

impl core::fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("top", &self.top)
            .finish_non_exhaustive()
    }
}

impl ReplayWindow {
    #[inline]
    fn slot(pn: u64) -> (usize, u64) {
        let bit = pn % REPLAY_WINDOW_BITS;
        ((bit / 64) as usize, 1u64 << (bit % 64))
    }

    /// True if `pn` would be accepted now (not seen, not too old); changes nothing.
    #[inline]
    pub fn would_accept(&self, pn: u64) -> bool {
        if pn >= self.top {
            return true;
        }
        if self.top - pn >= REPLAY_WINDOW_BITS {
            return false;
        }
        let (w, m) = Self::slot(pn);
        self.bits[w] & m == 0
    }

    /// Accepts `pn` (true) if it is new and within the window, recording it; false for a
    /// replay or a number too far behind.
    #[inline]
    pub fn check_and_update(&mut self, pn: u64) -> bool {
        if !self.would_accept(pn) {
            return false;
        }
        if pn >= self.top {
            // Clear the bits of the numbers skipped (they are new to the window).
            let advance = pn + 1 - self.top;
            if advance >= REPLAY_WINDOW_BITS {
                self.bits = [0; WORDS];
            } else {
                for n in self.top..=pn {
                    let (w, m) = Self::slot(n);
                    self.bits[w] &= !m;
                }
            }
            self.top = pn + 1;
        }
        let (w, m) = Self::slot(pn);
        self.bits[w] |= m;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_number_once_reordering_within_the_window() {
        let mut w = ReplayWindow::default();
        assert!(w.check_and_update(5));
        assert!(!w.check_and_update(5));
        assert!(w.check_and_update(3), "reordered, within the window");
        assert!(!w.check_and_update(3));
        assert!(w.check_and_update(0));
        assert!(w.check_and_update(100));
        assert!(w.check_and_update(4));
        assert!(!w.check_and_update(100));
    }

    #[test]
    fn too_old_is_rejected_and_big_jumps_clear_the_bits() {
        let mut w = ReplayWindow::default();
        assert!(w.check_and_update(10));
        assert!(w.check_and_update(10 + REPLAY_WINDOW_BITS));
        assert!(!w.check_and_update(10), "beyond the window");
        assert!(!w.check_and_update(11), "beyond the window");
        assert!(w.check_and_update(11 + 1), "just within");
        // Bits of the old numbers do not leak into their aliases.
        assert!(w.check_and_update(10 + 2 * REPLAY_WINDOW_BITS + 5));
        assert!(w.check_and_update(10 + 2 * REPLAY_WINDOW_BITS));
        assert!(!w.check_and_update(10 + 2 * REPLAY_WINDOW_BITS));
    }

    #[test]
    fn matches_a_set_model() {
        use std::collections::BTreeSet;
        let mut w = ReplayWindow::default();
        let mut seen = BTreeSet::new();
        let mut top = 0u64;
        let mut x = 12345u64;
        for _ in 0..20_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let pn = ((x >> 33) % 6000).saturating_add(top.saturating_sub(3000));
            let model = !seen.contains(&pn) && (pn >= top || top - pn < REPLAY_WINDOW_BITS);
            assert_eq!(w.check_and_update(pn), model, "pn {pn} top {top}");
            if model {
                seen.insert(pn);
                top = top.max(pn + 1);
            }
        }
    }
}
