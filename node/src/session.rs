//! The trainer API: hand a buffer to the local `netstorm-dp` and wait for the all-reduce.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use netstorm_node::{ClusterConfig, Session};
//! let cfg = ClusterConfig::load("cluster.toml".as_ref())?;
//! let mut session = Session::connect(&cfg, "a")?;
//! let mut grads = vec![0.0f32; cfg.buffer_elems];
//! let stats = session.allreduce(&mut grads)?; // grads now holds the sum over all nodes
//! println!("round {} took {:?}", stats.round, stats.elapsed);
//! # Ok(()) }
//! ```
//!
//! The buffer travels through the node file ([`crate::nodefile`]): one copy in before the
//! round and one copy out after it, no copy per segment.
//!
//! A round the cluster decided failed (a node was lost mid-round) returns
//! [`SessionError::PeerLost`] naming the round and the lost nodes, with the caller's buffer
//! unchanged; the next call runs the next round.
//!
//! Rejoins (issue 19): when lost nodes rejoin, every member's call for the first round that
//! includes them returns [`SessionError::MembersJoined`] (buffer unchanged, nothing
//! requested; on the rejoined node too, whose session then stands at that round). Every
//! member then calls [`Session::sync_state`] with the same root, which makes every member's
//! state bytes equal to the root's, exactly, for every byte pattern; then training goes on.
//!
//! State bytes travel through ordinary rounds (no new data-plane operation): 3 bytes per
//! element as an integer below 2^24 (1 byte with a 16-bit `wire`), so it is exact as f32
//! (resp. bf16/f16), and every non-root adds `-0.0`, the exact identity of IEEE addition
//! (`x + -0.0 == x` bit for bit for every non-NaN `x`, and the integers carried are never
//! NaN), in any order. A sum of raw f32 bit patterns would not be exact: signalling NaNs are
//! quietened and `-0.0 + 0.0` is `+0.0`. The first round also carries the root's length.

use crate::config::ClusterConfig;
use crate::nodefile::{NodeFile, NodeFileError, NodeSet};
use netstorm_dataplane::NodeId;
use std::time::{Duration, Instant};

/// What one [`Session::allreduce`] did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoundStats {
    /// The cluster-wide round number.
    pub round: u64,
    /// From handing the buffer over to having the result back.
    pub elapsed: Duration,
    /// Policy epoch the data plane ran the round under (0 if unknown).
    pub epoch: u64,
    /// The nodes whose contributions the result sums (divide by `contributors.len()` for a
    /// mean); empty when the data plane does not say (an older netstorm-dp).
    pub contributors: NodeSet,
}

/// Why a session call failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    NodeFile(#[from] NodeFileError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("buffer has {got} elements, the cluster config says buffer_elems = {want}")]
    Length { got: usize, want: usize },
    #[error("round {round}: netstorm-dp (pid {dp_pid}) did not finish within {waited:?} ({done_workers} of {workers} workers done; start barrier {barrier})")]
    Timeout {
        round: u64,
        waited: Duration,
        dp_pid: u32,
        done_workers: usize,
        workers: usize,
        /// The cp's start barrier (`u64::MAX` = none).
        barrier: u64,
    },
    /// The cluster decided that `round` failed because `lost` left mid-round: no node took
    /// its result; the caller's buffer is unchanged and the next call runs the next round.
    #[error("round {round} failed: lost node(s) {lost:?}; the buffer is unchanged")]
    PeerLost { round: u64, lost: Vec<NodeId> },
    /// Every other node was lost: nothing to synchronize with (the buffer is unchanged).
    #[error("this node is the only member left (every other node was lost): nothing to synchronize with")]
    Alone,
    /// Nodes `joined` (this one, if it just rejoined) take part from `round` on: nothing was
    /// requested and the buffer is unchanged. Call [`Session::sync_state`] (every member,
    /// same root) before contributing again.
    /// `members`: every member from `round` on (pick the sync's root among those not
    /// joined, e.g. the lowest).
    #[error("round {round}: node(s) {joined:?} rejoin from this round on (members {members:?}): call sync_state before contributing (the buffer is unchanged)")]
    MembersJoined {
        round: u64,
        joined: Vec<NodeId>,
        members: Vec<NodeId>,
    },
    /// The root's state has `root` bytes, this node's `ours`: nothing was copied (every
    /// round of the sync ran, so the members stay in step).
    #[error("state sync: the root's state is {root} bytes, this node's {ours}: nothing copied")]
    SyncLength { root: u64, ours: u64 },
    /// [`Session::sync_state`] needs to know which node this session is (use
    /// [`Session::connect`] or [`Session::set_identity`]).
    #[error(
        "state sync: this session does not know its node id (use Session::connect or set_identity)"
    )]
    NoIdentity,
}

/// What [`Session::allreduce_with`] moves into and out of the shared buffer.
pub trait RoundIo {
    /// Writes the round's input: all [`NodeFile::buffer_elems`] elements
    /// ([`NodeFile::write_buffer`]); called before the round is requested.
    fn fill(&mut self, file: &NodeFile);
    /// Reads the result ([`NodeFile::read_buffer`]); called once the round is done here.
    fn take(&mut self, file: &NodeFile);
}

/// A buffer of exactly `buffer_elems` elements, reduced in place.
struct WholeBuffer<'a>(&'a mut [f32]);

impl RoundIo for WholeBuffer<'_> {
    fn fill(&mut self, file: &NodeFile) {
        file.write_buffer(0, self.0);
    }
    fn take(&mut self, file: &NodeFile) {
        file.read_buffer(0..self.0.len(), self.0);
    }
}

/// A trainer's connection to its node's data plane.
#[derive(Debug)]
pub struct Session {
    file: NodeFile,
    timeout: Duration,
    /// Round + 1 of the next round to request.
    next: u64,
    /// This session's node (for [`Session::sync_state`]'s root), if known.
    node: Option<NodeId>,
    /// State bytes one element carries exactly on the job's wire (3 for f32, 1 for 16-bit).
    sync_bytes_per_elem: usize,
}

impl Session {
    /// Opens the node file of `node` (created by its running `netstorm-dp`).
    pub fn connect(config: &ClusterConfig, node: &str) -> Result<Self, SessionError> {
        let id = config.node(node)?.id;
        let file = NodeFile::open(&config.node_file_path(node), config.buffer_elems, None)?;
        let mut s = Self::from_node_file(file, Duration::from_secs_f64(config.trainer_timeout_s))?;
        s.set_identity(id, config.wire.is_16bit());
        Ok(s)
    }

    /// Says which node this session is and whether the job's wire is 16-bit (how many state
    /// bytes an element carries exactly); [`Session::connect`] does it.
    pub fn set_identity(&mut self, node: NodeId, wire_16bit: bool) {
        self.node = Some(node);
        self.sync_bytes_per_elem = if wire_16bit { 1 } else { 3 };
    }

    /// A session over an already mapped node file.
    pub fn from_node_file(file: NodeFile, timeout: Duration) -> Result<Self, SessionError> {
        // Resume after whatever was requested before (a restarted trainer).
        let next = file.request() + 1;
        Ok(Self {
            file,
            timeout,
            next,
            node: None,
            sync_bytes_per_elem: 3,
        })
    }

    /// Sets how long [`Session::allreduce`] waits for the data plane.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The round the next [`Session::allreduce`] runs.
    pub fn next_round(&self) -> u64 {
        self.next - 1
    }

    /// Waits until round `target - 1` is over at every worker (done, or abandoned after a
    /// failure decision).
    fn wait_done(&self, target: u64, round: u64, start: Instant) -> Result<(), SessionError> {
        self.wait_over(target, round, start, false)
    }

    /// [`Session::wait_done`]; with `requested`, also gives the request for round
    /// `target - 1` back (and says so) if a join blocks it.
    fn wait_over(
        &self,
        target: u64,
        round: u64,
        start: Instant,
        requested: bool,
    ) -> Result<(), SessionError> {
        let mut spins = 0u32;
        while self.file.over_all() < target {
            if requested {
                if let Some(e) = self.join_blocks(round) {
                    // No worker starts a round the join blocks (nodefile): safe to take back.
                    self.file.set_request(target - 1);
                    return Err(e);
                }
            }
            let waited = start.elapsed();
            if waited > self.timeout {
                return Err(SessionError::Timeout {
                    round,
                    waited,
                    dp_pid: self.file.dp_pid(),
                    done_workers: (0..self.file.workers())
                        .filter(|&w| self.file.done(w).max(self.file.aborted(w)) >= target)
                        .count(),
                    workers: self.file.workers(),
                    barrier: self.file.barrier(),
                });
            }
            spins += 1;
            if spins < 1000 {
                std::hint::spin_loop();
            } else {
                std::thread::sleep(Duration::from_micros(20));
            }
        }
        Ok(())
    }

    /// All-reduces `buf` (sum over every node of the cluster) in place; returns when the
    /// round is done here, or an error after the timeout.
    pub fn allreduce(&mut self, buf: &mut [f32]) -> Result<RoundStats, SessionError> {
        let want = self.file.buffer_elems();
        if buf.len() != want {
            return Err(SessionError::Length {
                got: buf.len(),
                want,
            });
        }
        self.allreduce_with(&mut WholeBuffer(buf))
    }

    /// Elements every round all-reduces (the dp's node file).
    pub fn buffer_elems(&self) -> usize {
        self.file.buffer_elems()
    }

    /// Pid of the `netstorm-dp` that created the node file.
    pub fn dp_pid(&self) -> u32 {
        self.file.dp_pid()
    }

    /// One round on the shared buffer itself, for callers that pack several buffers into a
    /// round or fill it with something else (bindings, broadcast): `io` writes the round's
    /// input straight into the node file and reads the result straight out of it.
    pub fn allreduce_with(&mut self, io: &mut impl RoundIo) -> Result<RoundStats, SessionError> {
        let start = Instant::now();
        let target = self.next;
        let round = target - 1;
        // A round requested by an earlier session may still be running: let it finish (a
        // rejoined node's session skipped rounds it never requested: nothing to wait for).
        let earlier = self.file.request().min(target - 1);
        self.wait_done(earlier, round.saturating_sub(1), start)?;
        if self.file.alone() {
            return Err(SessionError::Alone);
        }
        if let Some(e) = self.join_blocks(round) {
            return Err(self.skip_to_first_round(e));
        }
        io.fill(&self.file);
        self.file.set_request(target);
        if let Err(e) = self.wait_over(target, round, start, true) {
            return Err(self.skip_to_first_round(e));
        }
        self.next += 1;
        if (0..self.file.workers()).any(|w| self.file.aborted(w) == target) {
            // Failed: the dp abandoned the round; nothing is taken from the node file.
            let lost = match self.file.decision() {
                Some(d) if d.round == round => d.failed.unwrap_or_default(),
                _ => NodeSet::default(),
            };
            return Err(SessionError::PeerLost {
                round,
                lost: lost.iter().collect(),
            });
        }
        io.take(&self.file);
        Ok(RoundStats {
            round,
            elapsed: start.elapsed(),
            epoch: self.file.active_epoch(),
            contributors: self.file.members(),
        })
    }

    /// A rejoined node's session moves to its first round (earlier rounds ran without it).
    fn skip_to_first_round(&mut self, e: SessionError) -> SessionError {
        if let SessionError::MembersJoined { round, .. } = e {
            self.next = self.next.max(round + 1);
        }
        e
    }

    /// Why `round` may not run now because of a rejoin: it precedes this (rejoined) node's
    /// first round, or it is at or past a join the trainer has not acknowledged.
    fn join_blocks(&self, round: u64) -> Option<SessionError> {
        let f = &self.file;
        let joined = |round| SessionError::MembersJoined {
            round,
            joined: f
                .join()
                .map(|(_, j)| j.iter().collect())
                .unwrap_or_default(),
            members: f.join_members().iter().collect(),
        };
        if let Some(first) = f.first_round().filter(|&first| round < first) {
            return Some(joined(first));
        }
        let (join, _) = f.join()?;
        (round >= join && !f.join_allows(round)).then(|| joined(round))
    }

    /// Makes `state` equal, byte for byte, to the root's `state` on every member: every
    /// member calls it with the same `root` and a buffer of the same length (the root's
    /// length comes with the first round; a member whose length differs gets
    /// [`SessionError::SyncLength`] and keeps its bytes). Acknowledges a pending join
    /// first, so it is the call to make after [`SessionError::MembersJoined`]. Runs
    /// `ceil((len + 8) / (buffer_elems * 3))` rounds (1 byte per element with a 16-bit
    /// wire). On another error (a member lost mid-sync) a non-root's bytes may be partly
    /// copied: call it again.
    pub fn sync_state(&mut self, state: &mut [u8], root: NodeId) -> Result<(), SessionError> {
        let me = self.node.ok_or(SessionError::NoIdentity)?;
        if let Some((join, _)) = self.file.join() {
            if let Some(first) = self.file.first_round() {
                self.next = self.next.max(first + 1);
            }
            self.file.set_sync_ack(join + 1);
        }
        let mut io = SyncIo {
            state,
            is_root: me == root,
            per_elem: self.sync_bytes_per_elem,
            offset: 0,
            header: [0; SYNC_HEADER_BYTES],
            root_len: None,
        };
        while !io.finished() {
            self.allreduce_with(&mut io)?;
        }
        let (root_len, ours) = (io.root_len.unwrap_or(0), io.state.len() as u64);
        if root_len != ours {
            return Err(SessionError::SyncLength {
                root: root_len,
                ours,
            });
        }
        Ok(())
    }
}

/// Bytes of the root's length in front of its state in the synced byte stream.
const SYNC_HEADER_BYTES: usize = 8;

/// One round of [`Session::sync_state`]: the stream (the root's length, 8 bytes LE, then
/// its state) moves `buffer_elems * per_elem` bytes per round; the root packs them, the
/// others add `-0.0` and unpack the result.
struct SyncIo<'a> {
    state: &'a mut [u8],
    is_root: bool,
    per_elem: usize,
    /// Stream bytes moved so far.
    offset: usize,
    header: [u8; SYNC_HEADER_BYTES],
    /// The root's length, once the stream brought it.
    root_len: Option<u64>,
}

impl SyncIo<'_> {
    /// Whether the whole stream has moved.
    fn finished(&self) -> bool {
        self.root_len
            .is_some_and(|len| self.offset as u64 >= SYNC_HEADER_BYTES as u64 + len)
    }
}

/// Packs `bytes` (at most 3) into an integer-valued f32 below 2^24 (exact in f32, and in
/// bf16/f16 for a single byte).
fn pack_elem(bytes: impl Iterator<Item = u8>) -> f32 {
    bytes
        .enumerate()
        .fold(0u32, |v, (i, b)| v | u32::from(b) << (8 * i)) as f32
}

impl RoundIo for SyncIo<'_> {
    fn fill(&mut self, file: &NodeFile) {
        let n = file.buffer_elems();
        let mut buf = vec![-0.0f32; n];
        if self.is_root {
            let header = (self.state.len() as u64).to_le_bytes();
            let total = SYNC_HEADER_BYTES + self.state.len();
            let byte = |p: usize| {
                if p < SYNC_HEADER_BYTES {
                    header[p]
                } else {
                    self.state[p - SYNC_HEADER_BYTES]
                }
            };
            for (i, x) in buf.iter_mut().enumerate() {
                let from = self.offset + i * self.per_elem;
                let to = (from + self.per_elem).min(total);
                if from >= to {
                    break;
                }
                *x = pack_elem((from..to).map(byte));
            }
        }
        file.write_buffer(0, &buf);
    }

    fn take(&mut self, file: &NodeFile) {
        let n = file.buffer_elems();
        let mut buf = vec![0.0f32; n];
        file.read_buffer(0..n, &mut buf);
        let ours = self.state.len() as u64;
        for x in buf {
            let v = x as u32;
            for k in 0..self.per_elem {
                let p = self.offset;
                if self.finished() {
                    return;
                }
                let b = (v >> (8 * k)) as u8;
                if p < SYNC_HEADER_BYTES {
                    self.header[p] = b;
                    if p + 1 == SYNC_HEADER_BYTES {
                        self.root_len = Some(u64::from_le_bytes(self.header));
                    }
                } else if !self.is_root && self.root_len == Some(ours) {
                    self.state[p - SYNC_HEADER_BYTES] = b;
                }
                self.offset += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nodefile::RoundDecision;

    #[test]
    fn times_out_when_no_dp_answers() {
        let dir = std::env::temp_dir().join(format!("nssess-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.node");
        let _dp = NodeFile::create(&path, 1, 8).unwrap();
        let mut s =
            Session::from_node_file(NodeFile::open(&path, 8, None).unwrap(), Duration::ZERO)
                .unwrap();
        let e = s.allreduce(&mut [0.0; 8]).unwrap_err();
        assert!(matches!(e, SessionError::Timeout { round: 0, .. }), "{e}");
        let e = s.allreduce(&mut [0.0; 7]).unwrap_err();
        assert!(matches!(e, SessionError::Length { got: 7, want: 8 }), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn returns_the_dp_result() {
        let dir = std::env::temp_dir().join(format!("nssess2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.node");
        let dp = NodeFile::create(&path, 2, 8).unwrap();
        let fake_dp = std::thread::spawn(move || {
            for r in 1..=2u64 {
                while dp.request() < r {
                    std::thread::yield_now();
                }
                let mut b = [0.0f32; 8];
                dp.read_buffer(0..8, &mut b);
                for x in &mut b {
                    *x *= 3.0;
                }
                dp.write_buffer(0, &b);
                dp.set_done(0, r);
                dp.set_done(1, r);
            }
        });
        let mut s = Session::from_node_file(
            NodeFile::open(&path, 8, None).unwrap(),
            Duration::from_secs(60),
        )
        .unwrap();
        for r in 0..2u64 {
            let mut b = [2.0f32; 8];
            assert_eq!(s.allreduce(&mut b).unwrap().round, r);
            assert_eq!(b, [6.0; 8]);
        }
        fake_dp.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A fake dp and cp: round 0 succeeds, round 1 is decided failed (node 2 lost) and
    /// abandoned by worker 1 after worker 0 completed it, round 2 succeeds over the
    /// survivors. The failed call leaves the caller's buffer as it was.
    #[test]
    fn a_failed_round_returns_peer_lost_with_the_buffer_unchanged() {
        let dir = std::env::temp_dir().join(format!("nssess3-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.node");
        let dp = NodeFile::create(&path, 2, 8).unwrap();
        dp.set_members(NodeSet::first(3));
        let fake_dp = std::thread::spawn(move || {
            for r in 1..=3u64 {
                while dp.request() < r {
                    std::thread::yield_now();
                }
                let mut b = [0.0f32; 8];
                dp.read_buffer(0..8, &mut b);
                for x in &mut b {
                    *x *= 3.0;
                }
                dp.write_buffer(0, &b);
                if r == 2 {
                    // Worker 0 completed (its half holds a result), worker 1 is cut off;
                    // the cp publishes the decision, worker 1 abandons the round.
                    dp.set_done(0, r);
                    dp.set_decision(RoundDecision {
                        round: r - 1,
                        failed: Some([2u16].into_iter().collect()),
                    });
                    dp.set_aborted(1, r);
                    dp.set_members([0u16, 1].into_iter().collect());
                } else {
                    dp.set_done(0, r);
                    dp.set_done(1, r);
                }
            }
        });
        let mut s = Session::from_node_file(
            NodeFile::open(&path, 8, None).unwrap(),
            Duration::from_secs(60),
        )
        .unwrap();
        let mut b = [2.0f32; 8];
        let stats = s.allreduce(&mut b).unwrap();
        assert_eq!((stats.round, stats.contributors.len()), (0, 3));
        assert_eq!(b, [6.0; 8]);
        let mut b = [5.0f32; 8];
        match s.allreduce(&mut b) {
            Err(SessionError::PeerLost { round: 1, lost }) => assert_eq!(lost, [2]),
            other => panic!("expected PeerLost, got {other:?}"),
        }
        assert_eq!(b, [5.0; 8], "the caller's buffer is unchanged");
        let mut b = [1.0f32; 8];
        let stats = s.allreduce(&mut b).unwrap();
        assert_eq!(stats.round, 2);
        assert_eq!(stats.contributors.iter().collect::<Vec<_>>(), [0, 1]);
        assert_eq!(b, [3.0; 8]);
        fake_dp.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Once the cp says every other node was lost, a call returns `Alone` at once (no
    /// request, the buffer unchanged) instead of waiting for a policy that never comes.
    #[test]
    fn a_node_left_alone_is_told_so_without_a_request() {
        let dir = std::env::temp_dir().join(format!("nssess4-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.node");
        let dp = NodeFile::create(&path, 1, 4).unwrap();
        dp.set_alone(true);
        let mut s = Session::from_node_file(
            NodeFile::open(&path, 4, None).unwrap(),
            Duration::from_secs(60),
        )
        .unwrap();
        let mut b = [7.0f32; 4];
        assert!(matches!(s.allreduce(&mut b), Err(SessionError::Alone)));
        assert_eq!(b, [7.0; 4]);
        assert_eq!(dp.request(), 0, "nothing was asked of the dp");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A fake dp for two node files: runs every round both trainers requested (asserting
    /// the join gate) by summing the two buffers, a's + b's, into both.
    fn fake_pair_dp(
        a: NodeFile,
        b: NodeFile,
        from_round: u64,
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> std::thread::JoinHandle<u64> {
        std::thread::spawn(move || {
            let n = a.buffer_elems();
            let mut r = from_round;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if a.request() <= r || b.request() <= r {
                    std::thread::yield_now();
                    continue;
                }
                assert!(
                    a.join_allows(r) && b.join_allows(r),
                    "round {r} ran past a join"
                );
                let (mut x, mut y) = (vec![0.0f32; n], vec![0.0f32; n]);
                a.read_buffer(0..n, &mut x);
                b.read_buffer(0..n, &mut y);
                for (x, y) in x.iter_mut().zip(&y) {
                    *x += *y;
                }
                a.write_buffer(0, &x);
                b.write_buffer(0, &x);
                a.set_done(0, r + 1);
                b.set_done(0, r + 1);
                r += 1;
            }
            r
        })
    }

    /// Node 1 rejoins at round 3: both sessions say so (nothing requested, buffers
    /// unchanged; the rejoiner's moves to round 3), then `sync_state` from node 0 makes
    /// node 1's bytes equal to node 0's for every byte value and for NaN / -0.0 bit
    /// patterns, over several rounds, and training goes on over both.
    #[test]
    fn a_join_is_reported_then_state_sync_copies_every_byte_pattern() {
        let dir = std::env::temp_dir().join(format!("nssess5-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (pa, pb) = (dir.join("a.node"), dir.join("b.node"));
        let (dpa, dpb) = (
            NodeFile::create(&pa, 1, 8).unwrap(),
            NodeFile::create(&pb, 1, 8).unwrap(),
        );
        // Node 0 ran rounds 0..3 already.
        dpa.set_request(3);
        dpa.set_done(0, 3);
        let mut sa = Session::from_node_file(
            NodeFile::open(&pa, 8, None).unwrap(),
            Duration::from_secs(60),
        )
        .unwrap();
        let mut sb = Session::from_node_file(
            NodeFile::open(&pb, 8, None).unwrap(),
            Duration::from_secs(60),
        )
        .unwrap();
        sa.set_identity(0, false);
        sb.set_identity(1, false);
        assert_eq!((sa.next_round(), sb.next_round()), (3, 0));
        // The cps publish the join while node 0's trainer waits for round 3.
        let cp = {
            let (ca, cb) = (
                NodeFile::open(&pa, 8, None).unwrap(),
                NodeFile::open(&pb, 8, None).unwrap(),
            );
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                let joined: NodeSet = [1u16].into_iter().collect();
                cb.set_first_round(3);
                cb.set_join(3, joined, NodeSet::first(2));
                ca.set_join(3, joined, NodeSet::first(2));
            })
        };
        let mut b = [5.0f32; 8];
        match sa.allreduce(&mut b) {
            Err(SessionError::MembersJoined {
                round: 3,
                joined,
                members,
            }) => assert_eq!((joined, members), (vec![1], vec![0, 1])),
            other => panic!("expected MembersJoined, got {other:?}"),
        }
        cp.join().unwrap();
        assert_eq!(b, [5.0; 8], "the buffer is unchanged");
        assert_eq!(
            (dpa.request(), sa.next_round()),
            (3, 3),
            "the request was taken back"
        );
        match sb.allreduce(&mut b) {
            Err(SessionError::MembersJoined {
                round: 3, joined, ..
            }) => assert_eq!(joined, [1]),
            other => panic!("expected MembersJoined, got {other:?}"),
        }
        assert_eq!((dpb.request(), sb.next_round()), (0, 3));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let dp = fake_pair_dp(dpa, dpb, 3, stop.clone());
        // Every byte value, then a signalling NaN, a quiet NaN, -0.0 and +inf (LE f32).
        let mut root: Vec<u8> = (0..=255u8).cycle().take(700).collect();
        for f in [0x7f80_0001u32, 0x7fc0_0000, 0x8000_0000, 0x7f80_0000] {
            root.extend(f.to_le_bytes());
        }
        let mut copy = vec![0u8; root.len()];
        let rejoiner = std::thread::spawn(move || {
            sb.sync_state(&mut copy, 0).unwrap();
            let mut g = [1.0f32; 8];
            let st = sb.allreduce(&mut g).unwrap();
            (copy, st.round, g)
        });
        let kept = root.clone();
        sa.sync_state(&mut root, 0).unwrap();
        assert_eq!(root, kept, "the root's bytes are its own");
        let mut g = [2.0f32; 8];
        let st = sa.allreduce(&mut g).unwrap();
        let (copy, round_b, gb) = rejoiner.join().unwrap();
        assert_eq!(copy, kept, "bit-identical");
        // 716 + 8 bytes at 24 per round: 31 rounds (3..=33), then round 34 over both.
        assert_eq!((st.round, round_b), (34, 34));
        assert_eq!((g, gb), ([3.0; 8], [3.0; 8]));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(dp.join().unwrap(), 35);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_state_of_another_length_is_refused_after_the_rounds() {
        let dir = std::env::temp_dir().join(format!("nssess6-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (pa, pb) = (dir.join("a.node"), dir.join("b.node"));
        let (dpa, dpb) = (
            NodeFile::create(&pa, 1, 4).unwrap(),
            NodeFile::create(&pb, 1, 4).unwrap(),
        );
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut sa = Session::from_node_file(
            NodeFile::open(&pa, 4, None).unwrap(),
            Duration::from_secs(60),
        )
        .unwrap();
        let mut sb = Session::from_node_file(
            NodeFile::open(&pb, 4, None).unwrap(),
            Duration::from_secs(60),
        )
        .unwrap();
        sa.set_identity(0, false);
        sb.set_identity(1, true); // 16-bit wire: 1 byte per element
        sa.sync_bytes_per_elem = 1;
        let dp = fake_pair_dp(dpa, dpb, 0, stop.clone());
        let other = std::thread::spawn(move || {
            let mut mine = vec![9u8; 5];
            let e = sb.sync_state(&mut mine, 0).unwrap_err();
            (e, mine)
        });
        let mut root = vec![7u8; 6];
        sa.sync_state(&mut root, 0).unwrap();
        let (e, mine) = other.join().unwrap();
        assert!(
            matches!(e, SessionError::SyncLength { root: 6, ours: 5 }),
            "{e}"
        );
        assert_eq!(mine, [9; 5], "nothing copied");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // 8 + 6 bytes at 4 per round.
        assert_eq!(dp.join().unwrap(), 4);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
