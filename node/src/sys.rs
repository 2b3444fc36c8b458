//! The few OS calls the node processes need: an exclusive lock file per dp and signal flags.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};

/// An exclusive `flock` on a lock file holding the owner's pid; released when dropped or when
/// the process dies (the kernel drops `flock`s of dead processes, so no stale lock survives).
#[derive(Debug)]
pub struct PidLock {
    _file: File,
}

impl PidLock {
    /// Takes the lock, or returns `Err(Some(pid))` naming the live holder (`Err(None)` if its
    /// pid is unreadable), or an I/O error.
    pub fn acquire(path: &Path) -> std::io::Result<Result<PidLock, Option<u32>>> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)?;
        // SAFETY: flock on a file descriptor this function owns; no memory is passed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut s = String::new();
                let _ = file.read_to_string(&mut s);
                return Ok(Err(s.trim().parse().ok()));
            }
            return Err(err);
        }
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        writeln!(file, "{}", std::process::id())?;
        Ok(Ok(PidLock { _file: file }))
    }
}

static LAST_SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    LAST_SIGNAL.store(sig, Ordering::SeqCst);
}

/// Records SIGINT, SIGTERM and SIGHUP in a flag instead of dying (see [`take_signal`]).
pub fn catch_termination_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: installs an async-signal-safe handler (one atomic store) for a standard
        // signal; `on_signal` has the C ABI signature `signal` expects.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

/// The last signal caught since the previous call, if any.
pub fn take_signal() -> Option<i32> {
    match LAST_SIGNAL.swap(0, Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Whether process `pid` exists (`kill(pid, 0)`; a process of another user counts).
pub fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks existence/permission; pid > 0 names one process, never a
    // group.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Sends `sig` to process `pid` (best effort).
pub fn send_signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) takes plain integers; a vanished pid only yields ESRCH.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}
