//! The rte_rings of the in-process fabrics and the ethdevs made of them.

use super::{eal_ready, rte_errno};
use crate::port::dpdk::MAX_BURST;
use netstorm_dpdk_sys as sys;
use std::ffi::{c_int, c_void, CStr};
use std::ptr::{null_mut, NonNull};

/// `rte_ring_create`, never freed (the rings back ethdevs for the life of the process);
/// `Err(rte_errno)` on failure.
fn ring_create(name: &CStr, size: u32, flags: u32) -> Result<NonNull<sys::RteRing>, c_int> {
    if !eal_ready() {
        return Err(libc::ENODEV);
    }
    // SAFETY: EAL up; name NUL-terminated (copied by DPDK).
    let r = unsafe { sys::ns_ring_create(name.as_ptr(), size, sys::SOCKET_ID_ANY, flags) };
    NonNull::new(r).ok_or_else(rte_errno)
}

/// A multi-producer/multi-consumer ring of mbufs, alive for the process.
#[derive(Debug, Clone, Copy)]
pub(in crate::port::dpdk) struct FabricRing(NonNull<sys::RteRing>);

// SAFETY: MP/MC rte_rings may be used from any number of threads at once; never freed.
unsafe impl Send for FabricRing {}
// SAFETY: as above.
unsafe impl Sync for FabricRing {}

/// An mbuf taken off a [`FabricRing`]: ours until pushed onto another or dropped (freed).
#[derive(Debug)]
pub(in crate::port::dpdk) struct RingMbuf(NonNull<sys::RteMbuf>);

impl RingMbuf {
    /// The first segment's bytes.
    pub(in crate::port::dpdk) fn bytes(&self) -> &[u8] {
        // SAFETY: the mbuf is ours and valid; mtod/data_len describe its first segment.
        let (data, len) = unsafe {
            (
                sys::ns_pktmbuf_mtod(self.0.as_ptr()),
                sys::ns_pktmbuf_data_len(self.0.as_ptr()),
            )
        };
        if data.is_null() {
            return &[];
        }
        // SAFETY: the first segment holds `len` initialized bytes at `data`, unchanged while
        // we own the mbuf; the slice borrows `self`.
        unsafe { std::slice::from_raw_parts(data, len as usize) }
    }
}

impl Drop for RingMbuf {
    fn drop(&mut self) {
        // SAFETY: the mbuf is ours and nothing refers to it after this.
        unsafe { sys::ns_pktmbuf_free(self.0.as_ptr()) };
    }
}

impl FabricRing {
    /// Creates an MP/MC ring of `size` (a power of two) entries.
    pub(in crate::port::dpdk) fn create(name: &CStr, size: u32) -> Result<Self, c_int> {
        ring_create(name, size, 0).map(FabricRing)
    }

    /// Takes up to [`MAX_BURST`] mbufs off the ring and hands each to `f`; returns how many.
    pub(in crate::port::dpdk) fn pop_burst(&self, mut f: impl FnMut(RingMbuf)) -> usize {
        let mut objs = [null_mut::<c_void>(); MAX_BURST];
        // SAFETY: valid MP/MC ring; objs has room for MAX_BURST pointers.
        let n = unsafe {
            sys::ns_ring_dequeue_burst(self.0.as_ptr(), objs.as_mut_ptr(), MAX_BURST as u32)
        } as usize;
        for &o in &objs[..n.min(MAX_BURST)] {
            // The ring holds mbufs the drivers enqueued; each dequeued one is ours now.
            if let Some(m) = NonNull::new(o.cast::<sys::RteMbuf>()) {
                f(RingMbuf(m));
            }
        }
        n
    }

    /// Puts `m` on the ring, or gives it back when the ring is full.
    pub(in crate::port::dpdk) fn push(&self, m: RingMbuf) -> Result<(), RingMbuf> {
        let mut one = [m.0.as_ptr().cast::<c_void>()];
        // SAFETY: valid MP/MC ring; `one` holds one owned mbuf, handed over on success.
        let pushed = unsafe { sys::ns_ring_enqueue_burst(self.0.as_ptr(), one.as_mut_ptr(), 1) };
        if pushed == 1 {
            std::mem::forget(m);
            Ok(())
        } else {
            Err(m)
        }
    }
}

/// A single-producer/single-consumer ring: one tx queue of one ethdev and one rx queue of
/// another, used only by their drivers (never touched here after creation).
#[derive(Debug, Clone, Copy)]
pub(in crate::port::dpdk) struct LinkRing(NonNull<sys::RteRing>);

impl LinkRing {
    /// Creates an SP/SC ring of `size` (a power of two) entries.
    pub(in crate::port::dpdk) fn create(name: &CStr, size: u32) -> Result<Self, c_int> {
        // SAFETY: returns constant flags.
        let flags = unsafe { sys::ns_ring_flag_sp_enq() | sys::ns_ring_flag_sc_deq() };
        ring_create(name, size, flags).map(LinkRing)
    }
}

/// A ring an ethdev can be made of.
pub(in crate::port::dpdk) trait EthRing: Copy {
    fn raw(self) -> *mut sys::RteRing;
}

impl EthRing for FabricRing {
    fn raw(self) -> *mut sys::RteRing {
        self.0.as_ptr()
    }
}

impl EthRing for LinkRing {
    fn raw(self) -> *mut sys::RteRing {
        self.0.as_ptr()
    }
}

/// `rte_eth_from_rings`: an ethdev named `name` whose rx queue `i` reads `rx[i]` and tx queue
/// `i` writes `tx[i]`. Returns its port id, or a negative errno.
pub(in crate::port::dpdk) fn eth_from_rings<R: EthRing>(
    name: &CStr,
    rx: &[R],
    tx: &[R],
) -> Result<u16, c_int> {
    if !eal_ready() {
        return Err(-libc::ENODEV);
    }
    let rx: Vec<*mut sys::RteRing> = rx.iter().map(|r| r.raw()).collect();
    let tx: Vec<*mut sys::RteRing> = tx.iter().map(|r| r.raw()).collect();
    // SAFETY: EAL up; name NUL-terminated; `rx`/`tx` hold that many valid rings, which are
    // never freed, so they outlive the port.
    let ret = unsafe {
        sys::ns_eth_from_rings(
            name.as_ptr(),
            rx.as_ptr(),
            rx.len() as u32,
            tx.as_ptr(),
            tx.len() as u32,
            0,
        )
    };
    if ret < 0 {
        return Err(ret);
    }
    Ok(ret as u16)
}
