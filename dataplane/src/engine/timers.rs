//! The engine's one timer table (quinn-proto's `TimerTable`): per kind of work, a lower
//! bound on when it is next due, over all paths. Kept incrementally so that the common call
//! — an ack arrives, nothing can be sent yet — costs O(1), not O(paths); a stale (too
//! early) bound only causes one rescan. [`TimerTable::next`] is where the engine's next
//! deadline ([`super::Engine::poll_timeout`]) is computed.

use crate::Nanos;

/// A kind of deadline the engine keeps a bound for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timer {
    /// Some path may be allowed to send data (0: rescan at once).
    Data,
    /// Some path's retransmission or tail-loss timer.
    Loss,
    /// Some receive path's delayed acknowledgement.
    Ack,
}

const TIMER_COUNT: usize = 3;

#[derive(Debug, Clone)]
pub(crate) struct TimerTable {
    /// `Nanos::MAX` = not set.
    due: [Nanos; TIMER_COUNT],
}

impl Default for TimerTable {
    /// Every timer due at once: the first poll scans everything.
    fn default() -> Self {
        Self {
            due: [0; TIMER_COUNT],
        }
    }
}

impl TimerTable {
    /// Replaces the bound (after a scan found the next deadline; `Nanos::MAX` for none).
    #[inline]
    pub fn set(&mut self, timer: Timer, at: Nanos) {
        self.due[timer as usize] = at;
    }

    /// Lowers the bound to `at` if it is earlier.
    #[inline]
    pub fn lower(&mut self, timer: Timer, at: Nanos) {
        let due = &mut self.due[timer as usize];
        *due = (*due).min(at);
    }

    /// The bound is reached at `now`.
    #[inline]
    pub fn expired(&self, timer: Timer, now: Nanos) -> bool {
        now >= self.due[timer as usize]
    }

    /// The engine's next deadline: the earliest bound and `others` (deadlines outside the
    /// table: frames waiting on a link's pacer, the next probe train).
    #[inline]
    pub fn next(&self, others: impl IntoIterator<Item = Option<Nanos>>) -> Option<Nanos> {
        let table = self.due.iter().copied().min().unwrap_or(Nanos::MAX);
        let t = others.into_iter().flatten().fold(table, Nanos::min);
        (t != Nanos::MAX).then_some(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_due_and_lowers_only() {
        let mut t = TimerTable::default();
        assert!(t.expired(Timer::Data, 0));
        assert_eq!(t.next([]), Some(0));
        for timer in [Timer::Data, Timer::Loss, Timer::Ack] {
            t.set(timer, Nanos::MAX);
        }
        assert_eq!(t.next([None]), None, "nothing to do");
        t.lower(Timer::Loss, 500);
        t.lower(Timer::Loss, 900);
        assert!(!t.expired(Timer::Loss, 499));
        assert!(t.expired(Timer::Loss, 500));
        t.lower(Timer::Ack, 700);
        assert_eq!(t.next([None]), Some(500));
        assert_eq!(t.next([Some(300), None]), Some(300));
        t.set(Timer::Loss, Nanos::MAX);
        assert_eq!(t.next([]), Some(700));
    }
}
