//! The DPDK port's only `unsafe` code: every call into `netstorm-dpdk-sys` and every raw mbuf,
//! mempool and ring pointer lives here, behind types whose ownership carries DPDK's rules, so
//! the rest of `port::dpdk` is safe code.
//!
//! * **EAL** (here) — [`eal_init_once`] runs `rte_eal_init` once per process (on a helper
//!   thread, so the caller's CPU affinity is left alone); [`thread_register`] /
//!   [`thread_unregister`].
//! * **[`Device`]** (`device.rs`) — an ethdev this process claimed ([`Device::open`]: look
//!   up, claim, pool, configure, queues, start) with its [`Mempool`](device::Mempool);
//!   stopped when the last handle goes. [`Device::open`] hands each queue out once, in a
//!   [`Queues`] set: owning the set (it is not `Clone`; bursts take it `&mut`) is DPDK's "one
//!   thread per queue".
//! * **mbufs** (`mbuf.rs`) — [`RxBurst`] (one rx burst, lent out as byte slices until it is
//!   freed), [`TxStash`] → [`TxMbuf`](mbuf::TxMbuf) → [`TxPending`] (mbufs allocated ahead,
//!   written in place, queued per tx queue, handed over in one burst), [`TxBulk`] (a bulk
//!   allocation for one burst). Whatever the driver does not take is freed; nothing leaks or
//!   is used after it left us.
//! * **rings** (`ring.rs`) — [`FabricRing`] (multi-producer/consumer, moved by the test
//!   switch), [`LinkRing`] (single-producer/consumer, touched only by the net_ring PMD) and
//!   [`eth_from_rings`] for the in-process fabrics.
//!
//! Every `unsafe` block says why it is sound (`// SAFETY:`). Built without libdpdk the sys
//! functions are stubs; constructors check [`sys::LINKED`] (or the EAL being up) first.

mod device;
mod mbuf;
mod ring;

pub(super) use device::{Device, DeviceSpec, OpenError, QueueSplit, Queues, Step};
pub(super) use mbuf::{AllocError, RxBurst, TxBulk, TxPending, TxStash};
pub(super) use ring::{eth_from_rings, FabricRing, LinkRing, RingMbuf};

use netstorm_dpdk_sys as sys;
use std::ffi::{c_char, c_int, CStr, CString};
use std::ptr::null_mut;
use std::sync::OnceLock;

/// The process's EAL: the arguments it was initialized with, and how that went
/// (`Err("errno\u{1}message")`).
static EAL: OnceLock<(Vec<String>, Result<(), String>)> = OnceLock::new();

/// Initializes the EAL with `args` (program name first) the first time it is called in this
/// process and returns the arguments of that first call and its outcome; later calls only
/// return them (DPDK cannot initialize twice, nor retry a failed init). The caller checks
/// [`sys::LINKED`] first.
pub(super) fn eal_init_once(args: &[String]) -> &'static (Vec<String>, Result<(), String>) {
    EAL.get_or_init(|| {
        let owned = args.to_vec();
        // rte_eal_init pins the calling thread to the main lcore: run it on a helper thread
        // so the caller's (and its future children's) affinity is left alone.
        let res = std::thread::Builder::new()
            .name("netstorm-eal-init".into())
            .spawn(move || run_eal_init(&owned))
            .map_err(|e| format!("cannot spawn the EAL init thread: {e}"))
            .and_then(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("the EAL init thread panicked".into()))
            });
        (args.to_vec(), res)
    })
}

/// `Err("errno\u{1}message")` on failure.
fn run_eal_init(args: &[String]) -> Result<(), String> {
    let mut ptrs: Vec<*mut c_char> = Vec::with_capacity(args.len() + 1);
    for a in args {
        let c =
            CString::new(a.as_str()).map_err(|_| format!("22\u{1}argument {a:?} contains NUL"))?;
        // DPDK may keep pointers into argv for the life of the process: leak them.
        ptrs.push(c.into_raw());
    }
    ptrs.push(null_mut());
    let argv = Box::leak(ptrs.into_boxed_slice());
    // SAFETY: argv holds args.len() valid NUL-terminated strings (leaked, so they live for the
    // process) followed by NULL; this runs once per process (guarded by the EAL OnceLock).
    let ret = unsafe { sys::ns_eal_init(args.len() as c_int, argv.as_mut_ptr()) };
    if ret < 0 {
        let errno = rte_errno();
        return Err(format!("{errno}\u{1}{}", sys::strerror(errno)));
    }
    Ok(())
}

/// Whether the EAL was initialized successfully in this process.
pub(super) fn eal_ready() -> bool {
    sys::LINKED && matches!(EAL.get(), Some((_, Ok(()))))
}

/// The calling thread's `rte_errno`.
pub(super) fn rte_errno() -> c_int {
    // SAFETY: reads the calling thread's rte_errno, always valid (0 when built without DPDK).
    unsafe { sys::ns_errno() }
}

/// `rte_thread_register` for the calling thread: 0, or a negative errno (`-ENODEV` when the
/// EAL is not up).
pub(super) fn thread_register() -> c_int {
    if !eal_ready() {
        return -libc::ENODEV;
    }
    // SAFETY: the EAL is initialized; registers only the calling thread.
    unsafe { sys::ns_thread_register() }
}

/// `rte_thread_unregister` for the calling thread (nothing when the EAL is not up).
pub(super) fn thread_unregister() {
    if eal_ready() {
        // SAFETY: the EAL is initialized; rte_thread_unregister is a no-op for threads that
        // did not register, and a registered thread calls this when it is done with DPDK.
        unsafe { sys::ns_thread_unregister() };
    }
}

/// `rte_eth_dev_count_avail` (0 when the EAL is not up).
pub(super) fn ethdev_count() -> u16 {
    if !eal_ready() {
        return 0;
    }
    // SAFETY: the EAL is initialized; only reads the ethdev table.
    unsafe { sys::ns_eth_dev_count_avail() }
}

/// The name of ethdev `port_id`, or a negative errno.
pub(super) fn ethdev_name(port_id: u16) -> Result<String, c_int> {
    if !eal_ready() {
        return Err(-libc::ENODEV);
    }
    let mut buf = [0 as c_char; 64];
    // SAFETY: buf has 64 bytes, the length passed; the EAL is initialized.
    let ret = unsafe { sys::ns_eth_dev_get_name_by_port(port_id, buf.as_mut_ptr(), 64) };
    if ret < 0 {
        return Err(ret);
    }
    // SAFETY: on success the shim NUL-terminates within buf.
    let name = unsafe { CStr::from_ptr(buf.as_ptr()) };
    Ok(name.to_string_lossy().into_owned())
}
