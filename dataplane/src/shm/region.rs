//! The mmap backing of the rings: the named ring file ([`ShmRegion`]), its header, the
//! creation rule (exclusive `flock` to (re)initialise, shared while mapped) and the handles on
//! it ([`ShmProducer`], [`ShmConsumer`]). Not compiled under `cfg(loom)`.

use super::sync::Ordering;
use super::*;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64 as StdAtomicU64};
use std::sync::Arc;
use std::time::{Duration, Instant};

const OFF_VERSION: usize = 8;
const OFF_HEADER_SIZE: usize = 12;
const OFF_TOTAL_SIZE: usize = 16;
const OFF_POLICY_GEOMETRY: usize = 24;
const OFF_TELEMETRY_GEOMETRY: usize = 32;
const OFF_GENERATION: usize = 40;
const OFF_CREATOR_PID: usize = 48;
const OFF_STATE: usize = 52;
const OFF_POLICY_RING: usize = 56;
const OFF_TELEMETRY_RING: usize = 64;
/// Offsets within a ring's control block.
const RING_HEAD: usize = 0;
const RING_PRODUCER_PID: usize = 8;
const RING_TAIL: usize = CACHE_LINE;
const RING_CONSUMER_PID: usize = CACHE_LINE + 8;
/// How long `create`/`attach` wait for another process to finish initialising the file.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// Why a ring file could not be created or attached.
#[derive(Debug, thiserror::Error)]
pub enum ShmError {
    #[error("ring file {path}: {op}: {source}")]
    Io {
        path: String,
        op: &'static str,
        source: io::Error,
    },
    #[error("ring file {path}: invalid configuration: {source}")]
    Config { path: String, source: ConfigError },
    #[error(
        "ring file {path}: not a NetStorm ring file (magic {found:02x?}, expected {:02x?})",
        MAGIC
    )]
    NotARingFile { path: String, found: [u8; 8] },
    #[error("ring file {path}: truncated: {len} bytes, {what} needs {needed}")]
    Truncated {
        path: String,
        len: u64,
        what: &'static str,
        needed: u64,
    },
    #[error("ring file {path}: {field} {found}, expected {expected}")]
    Mismatch {
        path: String,
        field: &'static str,
        found: u64,
        expected: u64,
    },
    #[error("ring file {path}: {field} {found}, expected {expected}; not re-initialised because another process has it mapped")]
    InUseMismatch {
        path: String,
        field: &'static str,
        found: u64,
        expected: u64,
    },
    #[error("ring file {path}: not initialised (state {state:#x}): its creator died while initialising it")]
    NotReady { path: String, state: u32 },
    #[error(
        "ring file {path}: still locked by another process after {:?} (initialising it?)",
        LOCK_WAIT
    )]
    Busy { path: String },
    #[error("ring file {path}: {ring} ring: {source}")]
    RoleTaken {
        path: String,
        ring: &'static str,
        source: RoleTaken,
    },
}

/// A mapped ring file; dropping it (and every handle) unmaps it and releases the lock.
#[derive(Debug)]
struct Mapping {
    map: memmap2::MmapRaw,
    /// Holds the shared `flock` for as long as the file is mapped. Dropped after `map`.
    _file: File,
}

/// One ring inside a mapped ring file.
#[derive(Debug)]
pub struct ShmRingMemory {
    mapping: Arc<Mapping>,
    /// Offset of the ring's control block in the mapping.
    offset: usize,
    geometry: RingGeometry,
}

impl ShmRingMemory {
    fn ptr(&self, at: usize) -> *mut u8 {
        // In bounds: `at` < the ring's file bytes, checked against the mapping length in
        // `ShmRegion::map`; `wrapping_add` keeps this safe code anyway.
        self.mapping.map.as_mut_ptr().wrapping_add(self.offset + at)
    }
    fn pid_word(&self, role: Role) -> &AtomicU32 {
        let at = match role {
            Role::Producer => RING_PRODUCER_PID,
            Role::Consumer => RING_CONSUMER_PID,
        };
        // SAFETY: the word is inside the mapping (checked in `ShmRegion::map`), 4-aligned
        // (the mapping is page-aligned, ring offsets are multiples of 128), lives as long
        // as `self.mapping`, and is only ever accessed atomically by every process.
        unsafe { AtomicU32::from_ptr(self.ptr(at).cast()) }
    }
}

fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks for existence/permission; pid > 0 names one
    // process, never a group.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

// SAFETY: head/tail are fixed 8-aligned words in the ring's control block; slots are the
// `slot_count` distinct `slot_size`-byte ranges after it, all inside the mapping (checked
// in `ShmRegion::map`) that the Arc keeps alive; claims are pid words taken with AcqRel CAS
// and released with Release stores, refusing live holders.
unsafe impl RingMemory for ShmRingMemory {
    fn geometry(&self) -> RingGeometry {
        self.geometry
    }
    fn head(&self) -> &StdAtomicU64 {
        // SAFETY: in the mapping, 8-aligned (page-aligned mapping, offsets multiples of
        // 128), alive as long as `self`, only accessed atomically.
        unsafe { StdAtomicU64::from_ptr(self.ptr(RING_HEAD).cast()) }
    }
    fn tail(&self) -> &StdAtomicU64 {
        // SAFETY: as for `head`.
        unsafe { StdAtomicU64::from_ptr(self.ptr(RING_TAIL).cast()) }
    }
    fn claim(&self, role: Role) -> Result<(), RoleTaken> {
        let word = self.pid_word(role);
        let me = std::process::id();
        let mut current = word.load(Ordering::Acquire);
        loop {
            if current != 0 && (current == me || pid_alive(current)) {
                return Err(RoleTaken {
                    role,
                    holder_pid: Some(current),
                });
            }
            // Free, or its holder died without releasing it: take it over.
            match word.compare_exchange(current, me, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(()),
                Err(now) => current = now,
            }
        }
    }
    fn release(&self, role: Role) {
        let me = std::process::id();
        let _ = self
            .pid_word(role)
            .compare_exchange(me, 0, Ordering::Release, Ordering::Relaxed);
    }
    unsafe fn with_slot_mut<R>(&self, index: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
        let at = RING_CONTROL_SIZE + index * self.geometry.slot_size as usize;
        // SAFETY: index < slot_count (caller), so the slot is inside the mapping and
        // disjoint from the counters and other slots; the caller has exclusive access to
        // it under the ring protocol, so no other reference to these bytes exists.
        f(
            unsafe {
                std::slice::from_raw_parts_mut(self.ptr(at), self.geometry.slot_size as usize)
            },
        )
    }
    unsafe fn with_slot<R>(&self, index: usize, f: impl FnOnce(&[u8]) -> R) -> R {
        let at = RING_CONTROL_SIZE + index * self.geometry.slot_size as usize;
        // SAFETY: index < slot_count (caller), so the slot is inside the mapping; nobody
        // writes it while we read under the ring protocol.
        f(unsafe { std::slice::from_raw_parts(self.ptr(at), self.geometry.slot_size as usize) })
    }
}

/// Producer handle on a ring file.
pub type ShmProducer = Producer<ShmRingMemory>;
/// Consumer handle on a ring file.
pub type ShmConsumer = Consumer<ShmRingMemory>;

/// A mapped ring file with a policy ring and a telemetry ring.
#[derive(Debug)]
pub struct ShmRegion {
    path: PathBuf,
    config: RingConfig,
    generation: u64,
    mapping: Arc<Mapping>,
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> ShmError + 'a {
    move |source| ShmError::Io {
        path: path.display().to_string(),
        op,
        source,
    }
}

/// `flock(op | LOCK_NB)`: Ok(true) locked, Ok(false) would block.
fn try_flock(file: &File, op: libc::c_int) -> io::Result<bool> {
    loop {
        // SAFETY: flock on a file descriptor we own; no memory is passed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EWOULDBLOCK) => return Ok(false),
            Some(libc::EINTR) => continue,
            _ => return Err(err),
        }
    }
}

/// Takes the shared lock, waiting up to [`LOCK_WAIT`] for an initialising creator.
fn lock_shared(file: &File, path: &Path) -> Result<(), ShmError> {
    let start = Instant::now();
    while !try_flock(file, libc::LOCK_SH).map_err(io_err(path, "flock"))? {
        if start.elapsed() > LOCK_WAIT {
            return Err(ShmError::Busy {
                path: path.display().to_string(),
            });
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

fn rd_u32(h: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&h[at..at + 4]);
    u32::from_ne_bytes(b)
}
fn rd_u64(h: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[at..at + 8]);
    u64::from_ne_bytes(b)
}

fn encode_header(config: &RingConfig, generation: u64, state: u32) -> [u8; HEADER_SIZE] {
    let mut h = [0u8; HEADER_SIZE];
    h[..8].copy_from_slice(&MAGIC);
    h[OFF_VERSION..][..4].copy_from_slice(&LAYOUT_VERSION.to_ne_bytes());
    h[OFF_HEADER_SIZE..][..4].copy_from_slice(&(HEADER_SIZE as u32).to_ne_bytes());
    h[OFF_TOTAL_SIZE..][..8].copy_from_slice(&config.total_size().to_ne_bytes());
    h[OFF_POLICY_GEOMETRY..][..4].copy_from_slice(&config.policy.slot_size.to_ne_bytes());
    h[OFF_POLICY_GEOMETRY + 4..][..4].copy_from_slice(&config.policy.slot_count.to_ne_bytes());
    h[OFF_TELEMETRY_GEOMETRY..][..4].copy_from_slice(&config.telemetry.slot_size.to_ne_bytes());
    h[OFF_TELEMETRY_GEOMETRY + 4..][..4]
        .copy_from_slice(&config.telemetry.slot_count.to_ne_bytes());
    h[OFF_GENERATION..][..8].copy_from_slice(&generation.to_ne_bytes());
    h[OFF_CREATOR_PID..][..4].copy_from_slice(&std::process::id().to_ne_bytes());
    h[OFF_STATE..][..4].copy_from_slice(&state.to_ne_bytes());
    h[OFF_POLICY_RING..][..8].copy_from_slice(&config.policy_offset().to_ne_bytes());
    h[OFF_TELEMETRY_RING..][..8].copy_from_slice(&config.telemetry_offset().to_ne_bytes());
    h
}

/// Reads and checks the header and the file length against `expected`; returns the
/// generation. Errors name the file and the first mismatching field.
fn check_file(file: &File, path: &Path, expected: &RingConfig) -> Result<u64, ShmError> {
    let p = || path.display().to_string();
    let len = file.metadata().map_err(io_err(path, "stat"))?.len();
    let mut h = [0u8; HEADER_SIZE];
    let readable = (len as usize).min(HEADER_SIZE);
    file.read_exact_at(&mut h[..readable], 0)
        .map_err(io_err(path, "read header"))?;
    if len < MAGIC.len() as u64 {
        return Err(ShmError::Truncated {
            path: p(),
            len,
            what: "the header",
            needed: HEADER_SIZE as u64,
        });
    }
    if h[..8] != MAGIC {
        let mut found = [0u8; 8];
        found.copy_from_slice(&h[..8]);
        return Err(ShmError::NotARingFile { path: p(), found });
    }
    if len < HEADER_SIZE as u64 {
        return Err(ShmError::Truncated {
            path: p(),
            len,
            what: "the header",
            needed: HEADER_SIZE as u64,
        });
    }
    let mismatch = |field, found: u64, expected: u64| {
        if found == expected {
            Ok(())
        } else {
            Err(ShmError::Mismatch {
                path: p(),
                field,
                found,
                expected,
            })
        }
    };
    mismatch(
        "layout version",
        rd_u32(&h, OFF_VERSION).into(),
        LAYOUT_VERSION.into(),
    )?;
    mismatch(
        "header size",
        rd_u32(&h, OFF_HEADER_SIZE).into(),
        HEADER_SIZE as u64,
    )?;
    let state = rd_u32(&h, OFF_STATE);
    if state != STATE_READY {
        return Err(ShmError::NotReady { path: p(), state });
    }
    mismatch(
        "policy slot size",
        rd_u32(&h, OFF_POLICY_GEOMETRY).into(),
        expected.policy.slot_size.into(),
    )?;
    mismatch(
        "policy slot count",
        rd_u32(&h, OFF_POLICY_GEOMETRY + 4).into(),
        expected.policy.slot_count.into(),
    )?;
    mismatch(
        "telemetry slot size",
        rd_u32(&h, OFF_TELEMETRY_GEOMETRY).into(),
        expected.telemetry.slot_size.into(),
    )?;
    mismatch(
        "telemetry slot count",
        rd_u32(&h, OFF_TELEMETRY_GEOMETRY + 4).into(),
        expected.telemetry.slot_count.into(),
    )?;
    mismatch(
        "policy ring offset",
        rd_u64(&h, OFF_POLICY_RING),
        expected.policy_offset(),
    )?;
    mismatch(
        "telemetry ring offset",
        rd_u64(&h, OFF_TELEMETRY_RING),
        expected.telemetry_offset(),
    )?;
    mismatch(
        "total size",
        rd_u64(&h, OFF_TOTAL_SIZE),
        expected.total_size(),
    )?;
    if len < expected.total_size() {
        return Err(ShmError::Truncated {
            path: p(),
            len,
            what: "the rings",
            needed: expected.total_size(),
        });
    }
    mismatch("file length", len, expected.total_size())?;
    Ok(rd_u64(&h, OFF_GENERATION))
}

impl ShmRegion {
    /// The data plane's side: creates the ring file, or re-initialises it if nobody has it
    /// mapped, or attaches to it if another process has it mapped and its layout matches
    /// (see "Creation rule" in the module docs).
    pub fn create(path: impl AsRef<Path>, config: RingConfig) -> Result<Self, ShmError> {
        let path = path.as_ref();
        config.validate().map_err(|source| ShmError::Config {
            path: path.display().to_string(),
            source,
        })?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io_err(path, "open"))?;
        // `mode` applies to a new file only: a ring left by an older version with wider
        // permissions is made owner-only too (best effort: it may belong to someone else).
        let _ = file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600));
        for _ in 0..100 {
            if try_flock(&file, libc::LOCK_EX).map_err(io_err(path, "flock"))? {
                let generation = Self::initialise(&file, path, &config)?;
                // Downgrade; another creator sneaking in meanwhile finds an initialised file
                // nobody has mapped and initialises it again, which harms nobody.
                lock_shared(&file, path)?;
                return Self::map(file, path, config, generation);
            }
            // Somebody has it mapped (shared) or is initialising it (exclusive).
            if try_flock(&file, libc::LOCK_SH).map_err(io_err(path, "flock"))? {
                return match check_file(&file, path, &config) {
                    Ok(generation) => Self::map(file, path, config, generation),
                    // Still empty: an attacher held the lock for a moment while checking
                    // the fresh file (and found it not ready). Try again to initialise it.
                    Err(ShmError::Truncated { len: 0, .. }) => {
                        std::thread::sleep(Duration::from_millis(
                            LOCK_WAIT.as_millis() as u64 / 100,
                        ));
                        continue;
                    }
                    Err(ShmError::Mismatch {
                        path,
                        field,
                        found,
                        expected,
                    }) => Err(ShmError::InUseMismatch {
                        path,
                        field,
                        found,
                        expected,
                    }),
                    Err(e) => Err(e),
                };
            }
            std::thread::sleep(Duration::from_millis(LOCK_WAIT.as_millis() as u64 / 100));
        }
        Err(ShmError::Busy {
            path: path.display().to_string(),
        })
    }

    /// Writes a fresh layout; the caller holds the exclusive lock. Returns the generation.
    fn initialise(file: &File, path: &Path, config: &RingConfig) -> Result<u64, ShmError> {
        let mut old = [0u8; HEADER_SIZE];
        let previous_generation = match file.read_exact_at(&mut old, 0) {
            Ok(()) if old[..8] == MAGIC => rd_u64(&old, OFF_GENERATION),
            _ => 0,
        };
        let generation = previous_generation.wrapping_add(1);
        // Truncating to 0 zeroes everything (counters, claims, state) before sizing.
        file.set_len(0).map_err(io_err(path, "truncate"))?;
        file.set_len(config.total_size())
            .map_err(io_err(path, "resize"))?;
        let header = encode_header(config, generation, 0);
        file.write_all_at(&header, 0)
            .map_err(io_err(path, "write header"))?;
        // The state word last: a creator dying before this leaves a file attach refuses.
        file.write_all_at(&STATE_READY.to_ne_bytes(), OFF_STATE as u64)
            .map_err(io_err(path, "write header"))?;
        Ok(generation)
    }

    /// The control plane's side: attaches to an initialised ring file whose layout matches
    /// `expected`; never modifies the layout.
    pub fn attach(path: impl AsRef<Path>, expected: RingConfig) -> Result<Self, ShmError> {
        let path = path.as_ref();
        expected.validate().map_err(|source| ShmError::Config {
            path: path.display().to_string(),
            source,
        })?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_err(path, "open"))?;
        lock_shared(&file, path)?;
        let generation = check_file(&file, path, &expected)?;
        Self::map(file, path, expected, generation)
    }

    fn map(file: File, path: &Path, config: RingConfig, generation: u64) -> Result<Self, ShmError> {
        let map = memmap2::MmapRaw::map_raw(&file).map_err(io_err(path, "mmap"))?;
        if (map.len() as u64) < config.total_size() {
            return Err(ShmError::Truncated {
                path: path.display().to_string(),
                len: map.len() as u64,
                what: "the rings",
                needed: config.total_size(),
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            config,
            generation,
            mapping: Arc::new(Mapping { map, _file: file }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn config(&self) -> RingConfig {
        self.config
    }
    /// Initialisation count of the file (changes when the data plane re-initialised it).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn ring(&self, ring: &'static str) -> Arc<ShmRingMemory> {
        let (offset, geometry) = match ring {
            "policy" => (self.config.policy_offset(), self.config.policy),
            _ => (self.config.telemetry_offset(), self.config.telemetry),
        };
        Arc::new(ShmRingMemory {
            mapping: self.mapping.clone(),
            offset: offset as usize,
            geometry,
        })
    }

    fn role_err(&self, ring: &'static str) -> impl FnOnce(RoleTaken) -> ShmError + '_ {
        move |source| ShmError::RoleTaken {
            path: self.path.display().to_string(),
            ring,
            source,
        }
    }

    /// The control plane's end of the policy ring.
    pub fn policy_producer(&self) -> Result<ShmProducer, ShmError> {
        Producer::attach(self.ring("policy")).map_err(self.role_err("policy"))
    }
    /// The data plane's end of the policy ring.
    pub fn policy_consumer(&self) -> Result<ShmConsumer, ShmError> {
        Consumer::attach(self.ring("policy")).map_err(self.role_err("policy"))
    }
    /// The data plane's end of the telemetry ring.
    pub fn telemetry_producer(&self) -> Result<ShmProducer, ShmError> {
        Producer::attach(self.ring("telemetry")).map_err(self.role_err("telemetry"))
    }
    /// The control plane's end of the telemetry ring.
    pub fn telemetry_consumer(&self) -> Result<ShmConsumer, ShmError> {
        Consumer::attach(self.ring("telemetry")).map_err(self.role_err("telemetry"))
    }
}
