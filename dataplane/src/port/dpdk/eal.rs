//! The EAL, once per process: [`eal_init`] from an [`EalConfig`] (a second call with the same
//! arguments is a no-op, with different ones an error; a failed init is remembered, DPDK
//! cannot retry), and the worker threads' lcore ids ([`register_thread`]).

use super::ffi;
use super::{device_error, errno_hint, DpdkError, EalConfig};
use netstorm_dpdk_sys as sys;

/// Initializes the EAL (once per process). Calling again with the same config is a no-op;
/// with a different config it is an error, as is every call after a failed init.
pub fn eal_init(cfg: &EalConfig) -> Result<(), DpdkError> {
    if !sys::LINKED {
        return Err(DpdkError::NotLinked);
    }
    cfg.validate()?;
    let requested = cfg.args();
    let (first, outcome) = ffi::eal_init_once(&requested);
    if first != &requested {
        // Only the default (pid-derived) file prefix may differ textually between two equal
        // configs in one process — it cannot — so any difference is a real conflict.
        return Err(DpdkError::EalAlreadyInitialized {
            first: first.clone(),
            requested,
        });
    }
    outcome.clone().map_err(|e| {
        let (errno, msg) = e.split_once('\u{1}').map_or((0, e.clone()), |(n, m)| {
            (n.parse().unwrap_or(0), m.to_string())
        });
        DpdkError::EalInit {
            errno,
            msg,
            hint: errno_hint(errno).to_string(),
            args: first.clone(),
        }
    })
}

/// Whether the EAL was initialized successfully in this process.
pub fn eal_initialized() -> bool {
    ffi::eal_ready()
}

/// Registers the calling (non-EAL) thread with the EAL so it gets an lcore id, which makes
/// the mbuf pools' per-lcore caches work for it (without one, every mbuf alloc/free goes to
/// the pool's shared ring). Optional; call once per worker thread after [`eal_init`].
pub fn register_thread() -> Result<(), DpdkError> {
    if !sys::LINKED {
        return Err(DpdkError::NotLinked);
    }
    if !eal_initialized() {
        return Err(DpdkError::EalNotInitialized);
    }
    let ret = ffi::thread_register();
    if ret < 0 {
        return Err(device_error(
            "rte_thread_register (no free lcore id: lower the EAL lcores or threads)",
            "(thread)",
            ret,
        ));
    }
    Ok(())
}

/// Releases the lcore id [`register_thread`] gave the calling thread (call before the thread
/// ends; ids are a small, finite set).
pub fn unregister_thread() {
    ffi::thread_unregister();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_libdpdk_constructors_say_so() {
        if sys::LINKED {
            return;
        }
        let e = eal_init(&EalConfig::default()).unwrap_err();
        assert!(e.to_string().contains("libdpdk"), "{e}");
    }
}
