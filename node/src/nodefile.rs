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
//! 64    request          u64   trainer: round + 1 of the newest round it asked for (0 = none)
//! 128   barrier          u64   cp: rounds at or past this must not start (u64::MAX = none):
//!                              the node agent's undecided activation round, or a committed
//!                              activation whose policy the dp has not installed yet
//! 136   barrier_epoch    u64   cp: the epoch that barrier waits for (for a restarted cp)
//! 192   installed_epoch  u64   dp: newest policy epoch installed from the policy ring
//! 200   active_epoch     u64   dp: epoch the newest started round runs under
//! 256   done[w]          u64   dp worker w: round + 1 of the newest round complete there
//! 264   started[w]       u64   dp worker w: round + 1 of the newest round started there
//!                              (one 64-byte line per worker: done, started)
//! 4096  buffer           f32 × buffer_elems
//! ```
//!
//! Protocol: the trainer writes the buffer, then stores `request = r + 1` (Release); each dp
//! worker, seeing `request > done[w]` (Acquire) and `r < barrier`, copies its range in, runs
//! round `r`, copies the result back and stores `done[w] = r + 1` (Release); the trainer
//! returns when every `done[w] == r + 1`. Between a request and its completion only the dp
//! touches the buffer; otherwise only the trainer does.
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
const OFF_REQUEST: usize = 64;
const OFF_BARRIER: usize = 128;
const OFF_BARRIER_EPOCH: usize = 136;
const OFF_INSTALLED: usize = 192;
const OFF_ACTIVE: usize = 200;
const OFF_DONE: usize = 256;
const OFF_STARTED: usize = 264;
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
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io("open"))?;
        file.set_len(0).map_err(io("truncate"))?;
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
}
