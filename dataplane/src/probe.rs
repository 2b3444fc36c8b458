//! Light active probing: packet trains that measure each outgoing link's capacity.
//!
//! Senders pace at most at the rate the current policy assumes, so a link that got faster
//! is never seen faster in delivery-rate samples alone. Every `interval_ns` each outgoing
//! link gets a train of `train_len` full-size probe frames sent back to back; the receiver
//! measures their dispersion (time between the first and the last arrival), which is the
//! serialization time of the bottleneck between the two nodes: `capacity = bits between
//! first and last / dispersion` (the packet-train method of pathrate / BBR's probing idea,
//! without disturbing the data).
//!
//! Budget: probe bytes never exceed one start-up train per link plus `budget` × the other
//! bytes this node has sent, so probes stay a fixed small fraction of the traffic (1 % by
//! default) however many links there are; trains simply wait for credit. The start-up
//! trains let a control plane measure the network before the first round.
//!
//! Probe id layout: `train (16 bits) | train_len (8) | index (8)`.

use crate::{Nanos, NodeId};

/// Probing tunables (part of the engine config).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeConfig {
    /// Time between two trains on the same link; 0 turns probing off.
    pub interval_ns: Nanos,
    /// Frames per train (2..=255).
    pub train_len: u8,
    /// Probe bytes allowed per byte of other traffic sent.
    pub budget: f64,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            interval_ns: 1_000_000_000,
            train_len: 8,
            budget: 0.01,
        }
    }
}

impl ProbeConfig {
    pub fn enabled(&self) -> bool {
        self.interval_ns > 0 && self.budget > 0.0
    }

    /// Checks the values; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.train_len < 2 {
            return Err(format!("probe.train_len = {} (needs ≥ 2)", self.train_len));
        }
        if !(0.0..=1.0).contains(&self.budget) {
            return Err(format!("probe.budget = {} (needs 0..=1)", self.budget));
        }
        Ok(())
    }
}

/// Packs a probe id.
pub fn probe_id(train: u16, train_len: u8, index: u8) -> u32 {
    (train as u32) << 16 | (train_len as u32) << 8 | index as u32
}

/// Unpacks a probe id: `(train, train_len, index)`.
pub fn split_probe_id(id: u32) -> (u16, u8, u8) {
    ((id >> 16) as u16, (id >> 8) as u8, id as u8)
}

/// Sender side: which link is due, the byte budget, the train being sent.
#[derive(Debug, Clone)]
pub struct ProbeSender {
    cfg: ProbeConfig,
    /// `(neighbour, next train due at)` for every outgoing link.
    links: Vec<(NodeId, Nanos)>,
    /// The earliest of those (kept so the per-packet check is one comparison).
    next_due: Nanos,
    train_seq: u16,
    /// Train in progress: (neighbour, next index).
    active: Option<(NodeId, u8)>,
    pub sent_bytes: u64,
    pub sent_packets: u64,
    pub trains: u64,
}

impl ProbeSender {
    /// Probes the links to `neighbours`; the first trains are staggered over one interval.
    pub fn new(cfg: ProbeConfig, neighbours: &[NodeId]) -> Self {
        let k = neighbours.len().max(1) as u64;
        let links: Vec<(NodeId, Nanos)> = neighbours
            .iter()
            .enumerate()
            .map(|(i, &v)| (v, cfg.interval_ns * i as u64 / k))
            .collect();
        let next_due = links.iter().map(|l| l.1).min().unwrap_or(Nanos::MAX);
        Self {
            cfg,
            links,
            next_due,
            train_seq: 0,
            active: None,
            sent_bytes: 0,
            sent_packets: 0,
            trains: 0,
        }
    }

    fn credit_ok(&self, other_bytes: u64, frame_bytes: usize) -> bool {
        let train = frame_bytes as f64 * self.cfg.train_len as f64;
        // One train per link is allowed before any data (the start-up measurement).
        let allowance = train * self.links.len() as f64;
        (self.sent_bytes as f64 + train) <= self.cfg.budget * other_bytes as f64 + allowance
    }

    /// Whether [`ProbeSender::next`] may have a probe at `now` (a train is running or one
    /// is due): one comparison, for the per-packet path.
    #[inline]
    pub fn may_send(&self, now: Nanos) -> bool {
        self.active.is_some() || now >= self.next_due
    }

    /// The next probe to send now, if any: `(neighbour, probe id)`. `other_bytes` is what
    /// this node sent besides probes; `frame_bytes` the size a probe will occupy.
    pub fn next(
        &mut self,
        now: Nanos,
        other_bytes: u64,
        frame_bytes: usize,
    ) -> Option<(NodeId, u32)> {
        if !self.cfg.enabled() {
            return None;
        }
        if self.active.is_none() {
            if now < self.next_due || !self.credit_ok(other_bytes, frame_bytes) {
                return None;
            }
            let (i, _) = self
                .links
                .iter()
                .enumerate()
                .filter(|(_, (_, due))| *due <= now)
                .min_by_key(|(_, (_, due))| *due)?;
            self.links[i].1 = now + self.cfg.interval_ns;
            self.next_due = self.links.iter().map(|l| l.1).min().unwrap_or(Nanos::MAX);
            self.train_seq = self.train_seq.wrapping_add(1);
            self.trains += 1;
            self.active = Some((self.links[i].0, 0));
        }
        let (to, idx) = self.active.expect("set above");
        let id = probe_id(self.train_seq, self.cfg.train_len, idx);
        self.active = (idx + 1 < self.cfg.train_len).then_some((to, idx + 1));
        Some((to, id))
    }

    /// Records a probe frame of `frame_bytes` as sent.
    pub fn sent(&mut self, frame_bytes: usize) {
        self.sent_bytes += frame_bytes as u64;
        self.sent_packets += 1;
    }

    /// When [`ProbeSender::next`] may have something (only while the budget allows a train).
    pub fn deadline(&self, other_bytes: u64, frame_bytes: usize) -> Option<Nanos> {
        if !self.cfg.enabled() {
            return None;
        }
        if self.active.is_some() {
            return Some(0);
        }
        if self.next_due == Nanos::MAX || !self.credit_ok(other_bytes, frame_bytes) {
            return None;
        }
        Some(self.next_due)
    }
}

/// A capacity measurement of the link `from → this node`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeSample {
    pub from: NodeId,
    /// Bottleneck rate from the train's dispersion, bits per second (frame bytes).
    pub bps: f64,
    /// Arrival of the train's last frame.
    pub at: Nanos,
}

#[derive(Debug, Clone, Copy, Default)]
struct TrainRx {
    train: u16,
    first: Option<(u8, Nanos)>,
    last: (u8, Nanos),
    frame_bytes: usize,
    done: bool,
}

/// Receiver side: per in-neighbour train state and the newest sample.
#[derive(Debug, Clone)]
pub struct ProbeReceiver {
    trains: Vec<TrainRx>,
    samples: Vec<Option<ProbeSample>>,
    /// Trains that could not be measured (one frame only, or no measurable dispersion).
    pub unmeasurable: u64,
}

impl ProbeReceiver {
    pub fn new(node_count: usize) -> Self {
        Self {
            trains: vec![TrainRx::default(); node_count],
            samples: vec![None; node_count],
            unmeasurable: 0,
        }
    }

    /// A probe frame from `from` (checked to be a neighbour by the caller) arrived at `now`.
    pub fn on_probe(&mut self, now: Nanos, from: NodeId, id: u32, frame_bytes: usize) {
        let Some(t) = self.trains.get_mut(from as usize) else {
            return;
        };
        let (train, len, idx) = split_probe_id(id);
        if t.first.is_none() || t.train != train {
            if t.first.is_some() && !t.done {
                Self::finish(t, from, &mut self.samples, &mut self.unmeasurable);
            }
            *t = TrainRx {
                train,
                first: Some((idx, now)),
                last: (idx, now),
                frame_bytes,
                done: false,
            };
        } else if idx > t.last.0 && !t.done {
            t.last = (idx, now);
        }
        if idx + 1 >= len && !t.done {
            Self::finish(t, from, &mut self.samples, &mut self.unmeasurable);
        }
    }

    fn finish(
        t: &mut TrainRx,
        from: NodeId,
        samples: &mut [Option<ProbeSample>],
        unmeasurable: &mut u64,
    ) {
        t.done = true;
        let Some((i0, t0)) = t.first else { return };
        let (i1, t1) = t.last;
        if i1 <= i0 || t1 <= t0 {
            *unmeasurable += 1;
            return;
        }
        let bits = (i1 - i0) as f64 * t.frame_bytes as f64 * 8.0;
        samples[from as usize] = Some(ProbeSample {
            from,
            bps: bits * 1e9 / (t1 - t0) as f64,
            at: t1,
        });
    }

    /// The newest sample of every in-neighbour that has one.
    pub fn samples(&self) -> impl Iterator<Item = ProbeSample> + '_ {
        self.samples.iter().flatten().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        for (t, l, i) in [(0, 2, 0), (65535, 255, 254), (7, 8, 7)] {
            assert_eq!(split_probe_id(probe_id(t, l, i)), (t, l, i));
        }
    }

    #[test]
    fn sender_respects_budget_and_interval() {
        let cfg = ProbeConfig::default();
        let mut s = ProbeSender::new(cfg, &[1, 2]);
        // No traffic yet: the start-up allowance, one train per link (link 1 due first).
        assert_eq!(s.deadline(0, 1500), Some(0));
        let mut startup = 0;
        while s.next(0, 0, 1500).is_some() {
            s.sent(1500);
            startup += 1;
        }
        assert_eq!(startup, 8);
        assert_eq!(s.next(600_000_000, 0, 1500).map(|x| x.0), Some(2));
        while s.next(600_000_000, 0, 1500).is_some() {
            s.sent(1500);
        }
        assert_eq!(s.deadline(0, 1500), None, "allowance spent");
        assert_eq!(s.next(2_000_000_000, 0, 1500), None);
        let mut s = ProbeSender::new(cfg, &[1, 2]);
        s.sent_bytes = 2 * 8 * 1500; // allowance spent
                                     // Credit for exactly one more train: 8 × 1500 / 0.01.
        let other = 1_200_000;
        let mut sent = Vec::new();
        while let Some((to, id)) = s.next(0, other, 1500) {
            s.sent(1500);
            sent.push((to, split_probe_id(id).2));
        }
        assert_eq!(sent, (0..8).map(|i| (1, i)).collect::<Vec<_>>());
        assert!(s.sent_bytes as f64 <= 0.01 * other as f64 + 2.0 * 8.0 * 1500.0);
        // Link 2 is due at 0.5 s but there is no credit left.
        assert_eq!(s.next(600_000_000, other, 1500), None);
        // More traffic: link 2 next, link 1 not before 1 s.
        assert_eq!(s.next(600_000_000, 10 * other, 1500).map(|x| x.0), Some(2));
        while s.next(600_000_000, 10 * other, 1500).is_some() {}
        assert_eq!(s.deadline(10 * other, 1500), Some(1_000_000_000));
    }

    #[test]
    fn receiver_measures_dispersion_and_survives_loss() {
        let mut r = ProbeReceiver::new(3);
        // 1500-byte frames at 100 Mbit/s: 120 µs apart; frame 3 lost.
        for i in [0u8, 1, 2, 4, 5, 6, 7] {
            r.on_probe(1_000 + i as u64 * 120_000, 2, probe_id(1, 8, i), 1500);
        }
        let s: Vec<_> = r.samples().collect();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].from, 2);
        assert!((s[0].bps - 100e6).abs() < 1.0, "{}", s[0].bps);
        // A train whose last frame is lost is finished by the next train.
        for i in 0..7u8 {
            r.on_probe(
                10_000_000 + i as u64 * 1_200_000,
                2,
                probe_id(2, 8, i),
                1500,
            );
        }
        r.on_probe(20_000_000, 2, probe_id(3, 8, 0), 1500);
        let s: Vec<_> = r.samples().collect();
        assert!((s[0].bps - 10e6).abs() < 1.0, "{}", s[0].bps);
        // One frame, or all in the same instant: counted, no sample change.
        r.on_probe(30_000_000, 1, probe_id(9, 8, 7), 1500);
        assert_eq!(r.unmeasurable, 1);
        assert_eq!(r.samples().count(), 1);
    }
}
