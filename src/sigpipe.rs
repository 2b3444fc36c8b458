//! FFI: restore the default SIGPIPE action, so `netstorm plan ... | head` ends quietly
//! instead of panicking on a closed stdout (Rust ignores SIGPIPE by default).
#![allow(unsafe_code)]

pub fn reset() {
    #[cfg(unix)]
    // SAFETY: called once at the start of main, before any thread exists; `signal` with
    // SIG_DFL installs no handler code, it only restores the kernel's default action.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
