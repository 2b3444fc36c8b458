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
}

impl Session {
    /// Opens the node file of `node` (created by its running `netstorm-dp`).
    pub fn connect(config: &ClusterConfig, node: &str) -> Result<Self, SessionError> {
        config.node(node)?;
        let file = NodeFile::open(&config.node_file_path(node), config.buffer_elems, None)?;
        Self::from_node_file(file, Duration::from_secs_f64(config.trainer_timeout_s))
    }

    /// A session over an already mapped node file.
    pub fn from_node_file(file: NodeFile, timeout: Duration) -> Result<Self, SessionError> {
        // Resume after whatever was requested before (a restarted trainer).
        let next = file.request() + 1;
        Ok(Self {
            file,
            timeout,
            next,
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
        let mut spins = 0u32;
        while self.file.over_all() < target {
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
        // A round requested by an earlier session may still be running: let it finish.
        self.wait_done(target - 1, round.saturating_sub(1), start)?;
        if self.file.alone() {
            return Err(SessionError::Alone);
        }
        io.fill(&self.file);
        self.file.set_request(target);
        self.wait_done(target, round, start)?;
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
}
