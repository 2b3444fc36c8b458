//! The node file: the gradient buffer a trainer shares with its local `netstorm-dp`, plus the
//! small words the three processes of a host signal each other with.
//!
//! One file per node (`<shm_dir>/netstorm-<job>-<node>.node`), created by `netstorm-dp`,
//! mapped by the trainer ([`crate::Session`]) and by `netstorm-cp`. Native-endian layout:
//!
//! ```text
//! 0     magic "NSTMNODE" [u8; 8]
//! 8     layout version   u32 = NODE_FILE_VERSION
//! 12    workers          u32   (dp worker threads; each owns a contiguous element range)
//! 16    buffer_elems     u64
//! 24    dp pid           u32
//! 32    join             u64   cp: round + 1 of the newest round from which rejoined nodes take
//!                              part (0 = none); stored before the barrier at it is lifted
//! 40    joined           [u64; 3] cp: the nodes that rejoin at that round (a NodeSet, before `join`)
//! 64    request          u64   trainer: round + 1 of the newest round it asked for (0 = none)
//! 72    sync_ack         u64   trainer: `join` value whose state sync it started (rounds at or
//!                              past a join start only once the trainer acknowledged it)
//! 80    join_members     [u64; 3] cp: every member of the rounds from `join` on (a NodeSet,
//!                              before `join`; written once per rejoin)
//! 128   barrier          u64   cp: rounds at or past this must not start (u64::MAX = none):
//!                              the node agent's undecided activation round, or a committed
//!                              activation whose policy the dp has not installed yet
//! 136   barrier_epoch    u64   cp: the epoch that barrier waits for (for a restarted cp)
//! 144   freeze           u64   cp: round + 1 of a round the workers must not release on
//!                              their own (a coordinator is deciding its outcome; 0 = none)
//! 152   decided          u64   cp: round + 1 of the newest round whose outcome was decided
//! 160   decided_failed   u64   cp: 1 if that outcome is "failed" (stored before `decided`)
//! 168   lost             [u64; 3] cp: the nodes a failed round lost (a NodeSet, before `decided`)
//! 192   installed_epoch  u64   dp: newest policy epoch installed from the policy ring
//! 200   active_epoch     u64   dp: epoch the newest started round runs under
//! 208   members          [u64; 3] dp/cp: the nodes rounds sum over now (a NodeSet)
//! 232   alone            u64   cp: 1 once every other node was lost (no round can run)
//! 240   first_round      u64   cp of a rejoined node: round + 1 of its first round (0 = none)
//! 256   done[w]          u64   dp worker w: round + 1 of the newest round complete there
//! 264   started[w]       u64   dp worker w: round + 1 of the newest round started there
//! 272   status[w]        u64   dp worker w: its answer to `freeze`: (round + 1) << 2 | status
//!                              (1 released, 2 completed, 3 incomplete)
//! 280   aborted[w]       u64   dp worker w: round + 1 of the newest round it abandoned
//!                              (one 64-byte line per worker: done, started, status, aborted)
//! 4096  buffer           f32 × buffer_elems
//! ```
//!
//! Protocol: the trainer writes the buffer, then stores `request = r + 1` (Release); each dp
//! worker, seeing `request > done[w]` (Acquire) and `r < barrier`, copies its range in, runs
//! round `r`, copies the result back and stores `done[w] = r + 1` (Release); the trainer
//! returns when every `done[w] == r + 1`. Between a request and its completion only the dp
//! touches the buffer; otherwise only the trainer does.
//!
//! A failed round (issue 19): the cp stores `lost`, `decided_failed = 1`, then
//! `decided = r + 1`; every worker that has not released round r abandons it and stores
//! `aborted[w] = r + 1` once it no longer touches the buffer. The round is over at a worker
//! when `done[w]` or `aborted[w]` reached `r + 1`; the trainer returns "failed, lost = ..."
//! (its own buffer unchanged) when it is over everywhere and some worker aborted it. The
//! cp keeps `freeze` set until the decided round is over at every worker (an idle worker
//! looks at `decided` only while a freeze is set). The
//! words added for this are zero in a file of an older dp (no freeze, no decision, no
//! abort), so the layout version is unchanged.
//!
//! A rejoin (issue 19): the cp of every member of the admitting policy stores `joined`,
//! then `join` (and the rejoiner's cp `first_round`) when the policy commits, before it
//! pushes the policy to the dp, so before the barrier at the join round is lifted: a worker
//! that sees the barrier lifted sees the join. A worker starts a round at or past `join`
//! only once `sync_ack >= join` (the trainer knows of the join and syncs state first); the
//! trainer, seeing the join before or while it waits for such a round, takes its request
//! back (no worker can have started it) and tells its caller. Zero in an older dp's file.
//!
//! Start gate (the cp's barrier vs. the worker's start, both SeqCst, Dekker style): a worker
//! stores `started[w] = r + 1`, then re-reads the barrier and takes the start back if
//! `r >= barrier`; the cp stores the barrier, then reads `started`. So either the worker sees
//! the barrier and does not start, or the cp sees the start (and its agent refuses the
//! activation round with a PrepareNack) — never neither.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::ops::Range;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

pub const NODE_FILE_MAGIC: [u8; 8] = *b"NSTMNODE";
pub const NODE_FILE_VERSION: u32 = 2;
/// Bytes before the buffer.
pub const NODE_HEADER_SIZE: usize = 4096;
/// Most workers the header has room for.
pub const MAX_WORKERS: usize = (NODE_HEADER_SIZE - OFF_DONE) / 64;

const OFF_VERSION: usize = 8;
const OFF_WORKERS: usize = 12;
const OFF_ELEMS: usize = 16;
const OFF_PID: usize = 24;
const OFF_JOIN: usize = 32;
const OFF_JOINED: usize = 40;
const OFF_REQUEST: usize = 64;
const OFF_SYNC_ACK: usize = 72;
const OFF_JOIN_MEMBERS: usize = 80;
const OFF_BARRIER: usize = 128;
const OFF_BARRIER_EPOCH: usize = 136;
const OFF_FREEZE: usize = 144;
const OFF_DECIDED: usize = 152;
const OFF_DECIDED_FAILED: usize = 160;
const OFF_LOST: usize = 168;
const OFF_INSTALLED: usize = 192;
const OFF_ACTIVE: usize = 200;
const OFF_MEMBERS: usize = 208;
const OFF_ALONE: usize = 232;
const OFF_FIRST_ROUND: usize = 240;
const OFF_DONE: usize = 256;
const OFF_STARTED: usize = 264;
const OFF_STATUS: usize = 272;
const OFF_ABORTED: usize = 280;

/// A set of node ids below [`NodeSet::CAPACITY`], as the node file stores it (three words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct NodeSet {
    words: [u64; 3],
}

impl NodeSet {
    /// Node ids a set can hold (0..192).
    pub const CAPACITY: usize = 192;

    /// The nodes `0..n` (capped at [`NodeSet::CAPACITY`]).
    pub fn first(n: usize) -> Self {
        (0..n.min(Self::CAPACITY) as u16).collect()
    }
    /// Adds `node`; false (and nothing added) if it is not below [`NodeSet::CAPACITY`].
    pub fn insert(&mut self, node: u16) -> bool {
        let i = node as usize;
        if i >= Self::CAPACITY {
            return false;
        }
        self.words[i / 64] |= 1 << (i % 64);
        true
    }
    pub fn contains(&self, node: u16) -> bool {
        let i = node as usize;
        i < Self::CAPACITY && self.words[i / 64] >> (i % 64) & 1 == 1
    }
    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }
    pub fn is_empty(&self) -> bool {
        self.words == [0; 3]
    }
    /// The ids, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (0..Self::CAPACITY as u16).filter(|&v| self.contains(v))
    }
}

impl FromIterator<u16> for NodeSet {
    fn from_iter<I: IntoIterator<Item = u16>>(iter: I) -> Self {
        let mut s = NodeSet::default();
        for v in iter {
            s.insert(v);
        }
        s
    }
}

/// A dp worker's answer to a freeze (see the module docs' `status[w]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrozenStatus {
    /// Released here: the result was handed over.
    Released,
    /// Holds the full result, not released.
    Completed,
    /// No full result (and, once the round is decided failed, never one).
    Incomplete,
}

impl FrozenStatus {
    fn code(self) -> u64 {
        match self {
            FrozenStatus::Released => 1,
            FrozenStatus::Completed => 2,
            FrozenStatus::Incomplete => 3,
        }
    }
    fn from_code(code: u64) -> Option<Self> {
        match code {
            1 => Some(FrozenStatus::Released),
            2 => Some(FrozenStatus::Completed),
            3 => Some(FrozenStatus::Incomplete),
            _ => None,
        }
    }
}

/// A coordinator's decision about one round, as the node file carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundDecision {
    pub round: u64,
    /// `None`: succeeded; `Some(lost)`: failed, losing these nodes.
    pub failed: Option<NodeSet>,
}
/// "No barrier" in the barrier word.
pub const NO_BARRIER: u64 = u64::MAX;

/// Why a node file could not be created or opened.
#[derive(Debug, thiserror::Error)]
pub enum NodeFileError {
    #[error("node file {path}: {op}: {source}")]
    Io {
        path: String,
        op: &'static str,
        source: std::io::Error,
    },
    #[error("node file {path}: not a NetStorm node file (bad magic); is netstorm-dp running for this node?")]
    BadMagic { path: String },
    /// Shorter than its header: a dp is between creating and sizing it (or it is not a
    /// node file). A waiting reader retries this like [`NodeFileError::BadMagic`].
    #[error("node file {path}: {len} bytes, shorter than its {NODE_HEADER_SIZE}-byte header (is netstorm-dp still creating it?)")]
    Incomplete { path: String, len: u64 },
    #[error("node file {path}: {field} {found}, expected {expected}")]
    Mismatch {
        path: String,
        field: &'static str,
        found: u64,
        expected: u64,
    },
    #[error("node file {path}: {workers} workers, at most {MAX_WORKERS} supported")]
    TooManyWorkers { path: String, workers: usize },
    /// Left by a netstorm-dp that is gone (a new one replaces the file when it starts). A
    /// waiting reader retries this like [`NodeFileError::BadMagic`].
    #[error("node file {path}: made by netstorm-dp pid {pid}, which is not running")]
    NotServed { path: String, pid: u32 },
}

impl NodeFileError {
    /// Whether a reader waiting for its dp to come up should try again (the file is missing,
    /// being created, or left by a dp that is gone) rather than give up.
    pub fn is_dp_pending(&self) -> bool {
        matches!(
            self,
            NodeFileError::BadMagic { .. }
                | NodeFileError::Incomplete { .. }
                | NodeFileError::NotServed { .. }
        ) || matches!(self, NodeFileError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// A mapped node file.
#[derive(Debug)]
pub struct NodeFile {
    path: PathBuf,
    map: memmap2::MmapRaw,
    workers: usize,
    buffer_elems: usize,
    _file: File,
}

// SAFETY: the mapping is shared memory accessed only through atomics and raw-pointer copies
// whose exclusivity the protocol in the module docs guarantees; the handle itself holds no
// thread-affine state.
unsafe impl Send for NodeFile {}
// SAFETY: as above; `&NodeFile` only exposes atomic words and copies.
unsafe impl Sync for NodeFile {}

impl NodeFile {
    fn total_len(buffer_elems: usize) -> u64 {
        (NODE_HEADER_SIZE + buffer_elems * 4) as u64
    }

    /// The data plane's side: (re)creates the file for `workers` workers and `buffer_elems`
    /// elements, zeroed (request, done, started all 0; no barrier), and records this process
    /// as its dp.
    pub fn create(path: &Path, workers: usize, buffer_elems: usize) -> Result<Self, NodeFileError> {
        let p = path.display().to_string();
        if workers == 0 || workers > MAX_WORKERS {
            return Err(NodeFileError::TooManyWorkers { path: p, workers });
        }
        let io = |op| {
            let p = p.clone();
            move |source| NodeFileError::Io {
                path: p,
                op,
                source,
            }
        };
        // Built under a temporary name and renamed into place: a process still mapping a
        // predecessor's file (a cp or trainer that outlived its dp) keeps a valid mapping of
        // the old inode instead of faulting (SIGBUS) while this one is sized, and sees it is
        // no longer served ([`NodeFile::is_served`]).
        let mut tmp_name = path.as_os_str().to_owned();
        tmp_name.push(format!(".{}.tmp", std::process::id()));
        let tmp = PathBuf::from(tmp_name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io("open"))?;
        file.set_len(Self::total_len(buffer_elems))
            .map_err(io("resize"))?;
        let map = memmap2::MmapRaw::map_raw(&file).map_err(io("mmap"))?;
        let nf = Self {
            path: path.to_path_buf(),
            map,
            workers,
            buffer_elems,
            _file: file,
        };
        nf.word32(OFF_VERSION)
            .store(NODE_FILE_VERSION, Ordering::Relaxed);
        nf.word32(OFF_WORKERS)
            .store(workers as u32, Ordering::Relaxed);
        nf.word64(OFF_ELEMS)
            .store(buffer_elems as u64, Ordering::Relaxed);
        nf.word32(OFF_PID)
            .store(std::process::id(), Ordering::Relaxed);
        nf.word64(OFF_BARRIER).store(NO_BARRIER, Ordering::Relaxed);
        // The magic last (Release): a reader seeing it sees the rest.
        nf.word64(0)
            .store(u64::from_ne_bytes(NODE_FILE_MAGIC), Ordering::Release);
        std::fs::rename(&tmp, path).map_err(|source| {
            let _ = std::fs::remove_file(&tmp);
            NodeFileError::Io {
                path: p.clone(),
                op: "rename into place",
                source,
            }
        })?;
        Ok(nf)
    }

    /// The trainer's and the control plane's side: maps an existing file and checks it
    /// against the expected geometry (`buffer_elems`; `workers` if given).
    pub fn open(
        path: &Path,
        buffer_elems: usize,
        workers: Option<usize>,
    ) -> Result<Self, NodeFileError> {
        let p = path.display().to_string();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| NodeFileError::Io {
                path: p.clone(),
                op: "open (is netstorm-dp running for this node?)",
                source,
            })?;
        let len = file
            .metadata()
            .map_err(|source| NodeFileError::Io {
                path: p.clone(),
                op: "stat",
                source,
            })?
            .len();
        if len < NODE_HEADER_SIZE as u64 {
            // `create` opens (creating an empty file), then sizes it: a reader can see it
            // empty for a moment. Not a mismatch: callers waiting for the dp retry it.
            return Err(NodeFileError::Incomplete { path: p, len });
        }
        let map = memmap2::MmapRaw::map_raw(&file).map_err(|source| NodeFileError::Io {
            path: p.clone(),
            op: "mmap",
            source,
        })?;
        let mut nf = Self {
            path: path.to_path_buf(),
            map,
            workers: 0,
            buffer_elems,
            _file: file,
        };
        if nf.word64(0).load(Ordering::Acquire) != u64::from_ne_bytes(NODE_FILE_MAGIC) {
            return Err(NodeFileError::BadMagic { path: p });
        }
        let check = |field, found: u64, expected: u64| {
            if found == expected {
                Ok(())
            } else {
                Err(NodeFileError::Mismatch {
                    path: p.clone(),
                    field,
                    found,
                    expected,
                })
            }
        };
        check(
            "layout version",
            nf.word32(OFF_VERSION).load(Ordering::Relaxed) as u64,
            NODE_FILE_VERSION as u64,
        )?;
        check(
            "buffer_elems",
            nf.word64(OFF_ELEMS).load(Ordering::Relaxed),
            buffer_elems as u64,
        )?;
        check("file length", len, Self::total_len(buffer_elems))?;
        let w = nf.word32(OFF_WORKERS).load(Ordering::Relaxed) as usize;
        if let Some(expected) = workers {
            check("workers", w as u64, expected as u64)?;
        }
        if w == 0 || w > MAX_WORKERS {
            return Err(NodeFileError::TooManyWorkers {
                path: p,
                workers: w,
            });
        }
        nf.workers = w;
        let pid = nf.dp_pid();
        if !crate::sys::pid_alive(pid) {
            return Err(NodeFileError::NotServed { path: p, pid });
        }
        Ok(nf)
    }

    fn word64(&self, off: usize) -> &AtomicU64 {
        debug_assert!(off & 7 == 0 && off + 8 <= NODE_HEADER_SIZE);
        // SAFETY: `off` is an 8-aligned offset inside the header (the mapping is page
        // aligned and at least NODE_HEADER_SIZE long, checked at create/open); the mapping
        // lives as long as `self`; other processes access these words only atomically.
        unsafe { &*(self.map.as_mut_ptr().add(off) as *const AtomicU64) }
    }

    fn word32(&self, off: usize) -> &AtomicU32 {
        debug_assert!(off & 3 == 0 && off + 4 <= NODE_HEADER_SIZE);
        // SAFETY: as in `word64`, for a 4-aligned u32 word.
        unsafe { &*(self.map.as_mut_ptr().add(off) as *const AtomicU32) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn workers(&self) -> usize {
        self.workers
    }
    pub fn buffer_elems(&self) -> usize {
        self.buffer_elems
    }
    /// Pid of the dp that created the file.
    /// Whether this mapping is still the node's file and its dp is alive: false once the dp
    /// died or a new dp replaced the file (a reader then reopens it). Two syscalls: for
    /// periodic checks, not per round.
    pub fn is_served(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        let same_file = match (std::fs::metadata(&self.path), self._file.metadata()) {
            (Ok(named), Ok(mapped)) => named.ino() == mapped.ino() && named.dev() == mapped.dev(),
            _ => false,
        };
        same_file && crate::sys::pid_alive(self.dp_pid())
    }

    pub fn dp_pid(&self) -> u32 {
        self.word32(OFF_PID).load(Ordering::Relaxed)
    }

    /// Round + 1 of the newest round the trainer asked for (0 = none).
    pub fn request(&self) -> u64 {
        self.word64(OFF_REQUEST).load(Ordering::Acquire)
    }
    pub fn set_request(&self, v: u64) {
        self.word64(OFF_REQUEST).store(v, Ordering::Release)
    }
    /// Rounds at or past this must not start ([`NO_BARRIER`] = none).
    pub fn barrier(&self) -> u64 {
        self.word64(OFF_BARRIER).load(Ordering::SeqCst)
    }
    /// The epoch the barrier waits for (meaningful while a barrier is set).
    pub fn barrier_epoch(&self) -> u64 {
        self.word64(OFF_BARRIER_EPOCH).load(Ordering::Acquire)
    }
    /// Publishes the start barrier (the cp): `None` lifts it. The epoch is stored first so a
    /// reader of the barrier sees the epoch it belongs to.
    pub fn set_barrier(&self, barrier: Option<(u64, u32)>) {
        match barrier {
            Some((round, epoch)) => {
                self.word64(OFF_BARRIER_EPOCH)
                    .store(epoch as u64, Ordering::Release);
                self.word64(OFF_BARRIER).store(round, Ordering::SeqCst);
            }
            None => self.word64(OFF_BARRIER).store(NO_BARRIER, Ordering::SeqCst),
        }
    }
    pub fn installed_epoch(&self) -> u64 {
        self.word64(OFF_INSTALLED).load(Ordering::Acquire)
    }
    pub fn set_installed_epoch(&self, v: u64) {
        self.word64(OFF_INSTALLED).fetch_max(v, Ordering::AcqRel);
    }
    pub fn active_epoch(&self) -> u64 {
        self.word64(OFF_ACTIVE).load(Ordering::Acquire)
    }
    pub fn set_active_epoch(&self, v: u64) {
        self.word64(OFF_ACTIVE).store(v, Ordering::Release)
    }
    /// Round + 1 of the newest round complete at worker `w`.
    pub fn done(&self, w: usize) -> u64 {
        assert!(w < self.workers);
        self.word64(OFF_DONE + 64 * w).load(Ordering::Acquire)
    }
    pub fn set_done(&self, w: usize, v: u64) {
        assert!(w < self.workers);
        self.word64(OFF_DONE + 64 * w).store(v, Ordering::Release)
    }
    /// Round + 1 of the newest round started at worker `w` (the start gate's side).
    pub fn started(&self, w: usize) -> u64 {
        assert!(w < self.workers);
        self.word64(OFF_STARTED + 64 * w).load(Ordering::SeqCst)
    }
    pub fn set_started(&self, w: usize, v: u64) {
        assert!(w < self.workers);
        self.word64(OFF_STARTED + 64 * w).store(v, Ordering::SeqCst)
    }
    /// The newest round started at any worker (`None` before the first).
    pub fn started_round(&self) -> Option<u32> {
        let s = (0..self.workers)
            .map(|w| self.started(w))
            .max()
            .unwrap_or(0);
        s.checked_sub(1).map(|r| r.min(u32::MAX as u64) as u32)
    }
    /// Round + 1 of the newest round complete at every worker.
    pub fn done_all(&self) -> u64 {
        (0..self.workers).map(|w| self.done(w)).min().unwrap_or(0)
    }

    // -- failed rounds (issue 19) ---------------------------------------------------------

    fn read_set(&self, off: usize) -> NodeSet {
        let mut s = NodeSet::default();
        for (i, w) in s.words.iter_mut().enumerate() {
            *w = self.word64(off + 8 * i).load(Ordering::Acquire);
        }
        s
    }
    fn write_set(&self, off: usize, set: NodeSet) {
        for (i, w) in set.words.iter().enumerate() {
            self.word64(off + 8 * i).store(*w, Ordering::Release);
        }
    }
    /// The round (not round + 1) whose release the workers must hold, if any.
    pub fn freeze(&self) -> Option<u64> {
        self.word64(OFF_FREEZE)
            .load(Ordering::Acquire)
            .checked_sub(1)
    }
    /// The cp: hold `round`'s release (`None`: hold nothing).
    pub fn set_freeze(&self, round: Option<u64>) {
        self.word64(OFF_FREEZE)
            .store(round.map_or(0, |r| r + 1), Ordering::Release)
    }
    /// The newest decided round and its outcome.
    pub fn decision(&self) -> Option<RoundDecision> {
        let round = self
            .word64(OFF_DECIDED)
            .load(Ordering::Acquire)
            .checked_sub(1)?;
        let failed = self.word64(OFF_DECIDED_FAILED).load(Ordering::Acquire) == 1;
        Some(RoundDecision {
            round,
            failed: failed.then(|| self.read_set(OFF_LOST)),
        })
    }
    /// The cp: publishes a decision (its parts first, the round last).
    pub fn set_decision(&self, d: RoundDecision) {
        self.write_set(OFF_LOST, d.failed.unwrap_or_default());
        self.word64(OFF_DECIDED_FAILED)
            .store(u64::from(d.failed.is_some()), Ordering::Release);
        self.word64(OFF_DECIDED)
            .store(d.round + 1, Ordering::Release);
    }
    /// Every other node was lost: no round can run (issue 19).
    pub fn alone(&self) -> bool {
        self.word64(OFF_ALONE).load(Ordering::Acquire) == 1
    }
    pub fn set_alone(&self, alone: bool) {
        self.word64(OFF_ALONE)
            .store(u64::from(alone), Ordering::Release)
    }
    /// The nodes rounds sum over now (empty in a file of an older dp).
    pub fn members(&self) -> NodeSet {
        self.read_set(OFF_MEMBERS)
    }
    pub fn set_members(&self, members: NodeSet) {
        self.write_set(OFF_MEMBERS, members)
    }
    // -- rejoins (issue 19) ----------------------------------------------------------------

    /// The newest join: the round from which `joined` take part, and who.
    pub fn join(&self) -> Option<(u64, NodeSet)> {
        let round = self
            .word64(OFF_JOIN)
            .load(Ordering::Acquire)
            .checked_sub(1)?;
        Some((round, self.read_set(OFF_JOINED)))
    }
    /// Every member of the rounds from the newest join on (empty without a join).
    pub fn join_members(&self) -> NodeSet {
        self.read_set(OFF_JOIN_MEMBERS)
    }
    /// The cp: publishes a join (the sets first, the round last).
    pub fn set_join(&self, round: u64, joined: NodeSet, members: NodeSet) {
        self.write_set(OFF_JOINED, joined);
        self.write_set(OFF_JOIN_MEMBERS, members);
        self.word64(OFF_JOIN).store(round + 1, Ordering::Release);
    }
    /// The join value (round + 1) the trainer acknowledged (0 = none).
    pub fn sync_ack(&self) -> u64 {
        self.word64(OFF_SYNC_ACK).load(Ordering::Acquire)
    }
    pub fn set_sync_ack(&self, v: u64) {
        self.word64(OFF_SYNC_ACK).fetch_max(v, Ordering::AcqRel);
    }
    /// Whether round `round` may start as far as joins go: before the newest join, or the
    /// trainer acknowledged it.
    pub fn join_allows(&self, round: u64) -> bool {
        let join = self.word64(OFF_JOIN).load(Ordering::Acquire);
        join == 0 || round + 1 < join || self.sync_ack() >= join
    }
    /// A rejoined node's first round (its data plane started afresh; earlier rounds ran
    /// without it).
    pub fn first_round(&self) -> Option<u64> {
        self.word64(OFF_FIRST_ROUND)
            .load(Ordering::Acquire)
            .checked_sub(1)
    }
    pub fn set_first_round(&self, round: u64) {
        self.word64(OFF_FIRST_ROUND)
            .store(round + 1, Ordering::Release)
    }

    /// Worker `w`'s answer to the freeze: the round and its status there.
    pub fn frozen_status(&self, w: usize) -> Option<(u64, FrozenStatus)> {
        assert!(w < self.workers);
        let v = self.word64(OFF_STATUS + 64 * w).load(Ordering::Acquire);
        Some(((v >> 2).checked_sub(1)?, FrozenStatus::from_code(v & 3)?))
    }
    pub fn set_frozen_status(&self, w: usize, round: u64, status: FrozenStatus) {
        assert!(w < self.workers);
        self.word64(OFF_STATUS + 64 * w)
            .store((round + 1) << 2 | status.code(), Ordering::Release)
    }
    /// Round + 1 of the newest round worker `w` abandoned (0 = none).
    pub fn aborted(&self, w: usize) -> u64 {
        assert!(w < self.workers);
        self.word64(OFF_ABORTED + 64 * w).load(Ordering::Acquire)
    }
    pub fn set_aborted(&self, w: usize, v: u64) {
        assert!(w < self.workers);
        self.word64(OFF_ABORTED + 64 * w)
            .store(v, Ordering::Release)
    }
    /// Round + 1 of the newest round over (done or abandoned) at every worker.
    pub fn over_all(&self) -> u64 {
        (0..self.workers)
            .map(|w| self.done(w).max(self.aborted(w)))
            .min()
            .unwrap_or(0)
    }

    /// Copies `src` into the buffer at `range.start`.
    pub fn write_buffer(&self, start: usize, src: &[f32]) {
        assert!(start + src.len() <= self.buffer_elems);
        // SAFETY: the destination lies inside the mapping (checked above; the file length was
        // checked at open/create); the protocol gives this process exclusive use of the range
        // (module docs); `src` is a separate allocation, so they do not overlap.
        unsafe {
            let dst = self.map.as_mut_ptr().add(NODE_HEADER_SIZE) as *mut f32;
            std::ptr::copy_nonoverlapping(src.as_ptr(), dst.add(start), src.len());
        }
    }

    /// Copies the buffer's `range` into `dst`.
    pub fn read_buffer(&self, range: Range<usize>, dst: &mut [f32]) {
        assert!(range.end <= self.buffer_elems && dst.len() == range.len());
        // SAFETY: as in `write_buffer`, reading instead of writing.
        unsafe {
            let src = self.map.as_ptr().add(NODE_HEADER_SIZE) as *const f32;
            std::ptr::copy_nonoverlapping(src.add(range.start), dst.as_mut_ptr(), range.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_open_and_signal() {
        let dir = std::env::temp_dir().join(format!("nsnode-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.node");
        let dp = NodeFile::create(&path, 2, 100).unwrap();
        let tr = NodeFile::open(&path, 100, None).unwrap();
        assert_eq!(tr.workers(), 2);
        tr.write_buffer(0, &[1.5; 100]);
        tr.set_request(1);
        assert_eq!(dp.request(), 1);
        let mut out = vec![0.0; 50];
        dp.read_buffer(50..100, &mut out);
        assert!(out.iter().all(|&x| x == 1.5));
        dp.set_done(0, 1);
        assert_eq!(tr.done_all(), 0);
        dp.set_done(1, 1);
        assert_eq!(tr.done_all(), 1);
        assert_eq!(tr.barrier(), NO_BARRIER);
        assert_eq!(tr.started_round(), None);
        dp.set_started(1, 4);
        assert_eq!(tr.started_round(), Some(3));
        tr.set_barrier(Some((5, 2)));
        assert_eq!((dp.barrier(), dp.barrier_epoch()), (5, 2));
        tr.set_barrier(None);
        assert_eq!(dp.barrier(), NO_BARRIER);
        // Failed-round words: zero (nothing) in a new file, then as the cp and dp set them.
        assert_eq!(
            (tr.freeze(), tr.decision(), tr.members()),
            (None, None, NodeSet::default())
        );
        assert_eq!((dp.frozen_status(1), dp.aborted(1)), (None, 0));
        tr.set_freeze(Some(6));
        assert_eq!(dp.freeze(), Some(6));
        dp.set_frozen_status(1, 6, FrozenStatus::Completed);
        assert_eq!(tr.frozen_status(1), Some((6, FrozenStatus::Completed)));
        assert_eq!(tr.frozen_status(0), None);
        let lost: NodeSet = [3u16, 70, 191].into_iter().collect();
        tr.set_decision(RoundDecision {
            round: 6,
            failed: Some(lost),
        });
        let d = dp.decision().unwrap();
        assert_eq!(
            (d.round, d.failed.map(|s| s.iter().collect::<Vec<_>>())),
            (6, Some(vec![3, 70, 191]))
        );
        tr.set_decision(RoundDecision {
            round: 7,
            failed: None,
        });
        assert_eq!(
            dp.decision(),
            Some(RoundDecision {
                round: 7,
                failed: None
            })
        );
        dp.set_members(NodeSet::first(4));
        assert_eq!(tr.members().iter().collect::<Vec<_>>(), [0, 1, 2, 3]);
        // Round 1 is over at worker 0 (done) and, once it aborts it, at worker 1.
        assert_eq!(tr.over_all(), 1);
        dp.set_done(0, 2);
        assert_eq!(tr.over_all(), 1);
        dp.set_aborted(1, 2);
        assert_eq!(tr.over_all(), 2);
        // Joins: none in a new file; a round at or past one waits for the trainer's ack.
        assert_eq!(
            (tr.join(), tr.first_round(), tr.sync_ack()),
            (None, None, 0)
        );
        assert!(dp.join_allows(40));
        tr.set_join(30, [2u16].into_iter().collect(), NodeSet::first(3));
        tr.set_first_round(30);
        let (round, joined) = dp.join().unwrap();
        assert_eq!((round, joined.iter().collect::<Vec<_>>()), (30, vec![2]));
        assert_eq!(dp.join_members(), NodeSet::first(3));
        assert_eq!(dp.first_round(), Some(30));
        assert!(dp.join_allows(29) && !dp.join_allows(30) && !dp.join_allows(31));
        tr.set_sync_ack(31);
        assert!(dp.join_allows(30) && dp.join_allows(31));
        let mut s = NodeSet::default();
        assert!(!s.insert(192) && s.is_empty() && !s.contains(192));
        let e = NodeFile::open(&path, 99, None).unwrap_err().to_string();
        assert!(e.contains("buffer_elems 100, expected 99"), "{e}");
        std::fs::write(dir.join("bad.node"), vec![7u8; 5000]).unwrap();
        let e = NodeFile::open(&dir.join("bad.node"), 100, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a NetStorm node file"), "{e}");
        std::fs::write(dir.join("empty.node"), b"").unwrap();
        let e = NodeFile::open(&dir.join("empty.node"), 100, None).unwrap_err();
        assert!(matches!(e, NodeFileError::Incomplete { len: 0, .. }), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A restarted dp replaces the file instead of truncating it under its readers: a reader
    /// of the old one keeps a valid mapping (no SIGBUS) and learns it is stale; a file whose
    /// dp is gone is refused as "not served" (a waiting reader retries it).
    #[test]
    fn a_new_dp_replaces_the_file_and_a_dead_dps_file_is_not_served() {
        let dir = std::env::temp_dir().join(format!("nsnode-restart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.node");
        let old_dp = NodeFile::create(&path, 1, 100).unwrap();
        let reader = NodeFile::open(&path, 100, None).unwrap();
        reader.write_buffer(0, &[1.5; 100]);
        assert!(reader.is_served());
        old_dp.set_done(0, 9);
        let new_dp = NodeFile::create(&path, 1, 100).unwrap();
        // The old mapping still reads what it held (was: zeroed, or SIGBUS mid-resize).
        let mut back = [0.0f32; 100];
        reader.read_buffer(0..100, &mut back);
        assert_eq!((back, reader.done(0)), ([1.5; 100], 9));
        assert!(!reader.is_served(), "the path names the new dp's file now");
        let fresh = NodeFile::open(&path, 100, None).unwrap();
        assert_eq!(fresh.done(0), 0);
        assert!(fresh.is_served());
        // No temporary file is left beside it.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        // The new dp dies: its file is refused, and a waiting reader would retry.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        new_dp.word32(OFF_PID).store(dead, Ordering::Relaxed);
        assert!(!fresh.is_served());
        let e = NodeFile::open(&path, 100, None).unwrap_err();
        assert!(
            matches!(e, NodeFileError::NotServed { pid, .. } if pid == dead) && e.is_dp_pending(),
            "{e}"
        );
        assert!(e.to_string().contains("which is not running"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
