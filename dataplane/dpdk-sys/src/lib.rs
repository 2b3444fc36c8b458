//! Hand-written FFI to DPDK for NetStorm.
//!
//! DPDK's fast path (`rte_eth_rx_burst`, `rte_pktmbuf_alloc`, ...) is made of `static inline`
//! functions, so `shim/shim.c` wraps each of them (and the few control-path calls NetStorm
//! needs) as a real symbol named `ns_*`. This crate declares exactly those `ns_*` functions;
//! it never names a DPDK struct layout (all DPDK types are opaque here).
//!
//! Built without libdpdk (pkg-config cannot find it, or `NETSTORM_DPDK_DISABLE=1`), every
//! function is a stub returning `-ENOTSUP`, 0 or null, and [`LINKED`] is `false`; callers check
//! [`LINKED`] first and report "libdpdk missing" instead of calling into the stubs.
//!
//! Conventions of the functions (as DPDK's): `int` results are 0 (or a non-negative id) on
//! success and a negative errno on failure, except `ns_eal_init` (-1 and `ns_errno()`) and
//! the pointer-returning creators (null and `ns_errno()`).
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_uint, c_void};

/// `true` when the crate was built against libdpdk; `false` when the functions are stubs.
pub const LINKED: bool = cfg!(not(netstorm_dpdk_missing));

/// `ENOTSUP`, what the stubs report.
pub const ENOTSUP: c_int = 95;

/// DPDK's `SOCKET_ID_ANY`.
pub const SOCKET_ID_ANY: c_int = -1;

/// Opaque `struct rte_mbuf`.
#[repr(C)]
#[derive(Debug)]
pub struct RteMbuf {
    _opaque: [u8; 0],
}

/// Opaque `struct rte_mempool`.
#[repr(C)]
#[derive(Debug)]
pub struct RteMempool {
    _opaque: [u8; 0],
}

/// Opaque `struct rte_ring`.
#[repr(C)]
#[derive(Debug)]
pub struct RteRing {
    _opaque: [u8; 0],
}

/// What a stub returns when DPDK is missing.
#[cfg_attr(not(netstorm_dpdk_missing), allow(dead_code))]
trait Stub {
    fn stub() -> Self;
}
impl Stub for () {
    fn stub() {}
}
impl Stub for c_int {
    fn stub() -> Self {
        -ENOTSUP
    }
}
impl Stub for u16 {
    fn stub() -> Self {
        0
    }
}
impl Stub for u32 {
    fn stub() -> Self {
        0
    }
}
impl<T> Stub for *mut T {
    fn stub() -> Self {
        std::ptr::null_mut()
    }
}
impl<T> Stub for *const T {
    fn stub() -> Self {
        std::ptr::null()
    }
}

/// Declares the shim's functions: `extern "C"` declarations when linked, stubs otherwise.
macro_rules! shim_functions {
    ($( $(#[$m:meta])* pub fn $name:ident($($arg:ident : $t:ty),* $(,)?) $(-> $ret:ty)?; )*) => {
        #[cfg(not(netstorm_dpdk_missing))]
        extern "C" {
            $( $(#[$m])* pub fn $name($($arg: $t),*) $(-> $ret)?; )*
        }
        $(
            #[cfg(netstorm_dpdk_missing)]
            $(#[$m])*
            ///
            /// # Safety
            /// Stub (built without libdpdk): safe to call, does nothing.
            #[allow(unused_variables)]
            pub unsafe extern "C" fn $name($($arg: $t),*) $(-> $ret)? {
                Stub::stub()
            }
        )*
    };
}

shim_functions! {
    /// `rte_eal_init`: parses `argv`, returns the number of parsed arguments or -1 (`ns_errno`).
    /// # Safety
    /// `argv` points to `argc` NUL-terminated strings that stay alive for the whole process
    /// (DPDK may keep pointers to them); call from one thread, once per process.
    pub fn ns_eal_init(argc: c_int, argv: *mut *mut c_char) -> c_int;
    /// `rte_eal_cleanup`.
    /// # Safety
    /// No DPDK object may be used afterwards.
    pub fn ns_eal_cleanup() -> c_int;
    /// `rte_errno` of the calling thread.
    /// # Safety
    /// Always safe.
    pub fn ns_errno() -> c_int;
    /// `rte_strerror`: a static (or thread-local) NUL-terminated message.
    /// # Safety
    /// Always safe; the pointer is valid until the next call on this thread.
    pub fn ns_strerror(errnum: c_int) -> *const c_char;
    /// `rte_version`: static NUL-terminated string.
    /// # Safety
    /// Always safe.
    pub fn ns_version() -> *const c_char;
    /// `rte_socket_id` of the calling thread.
    /// # Safety
    /// EAL initialized.
    pub fn ns_socket_id() -> c_int;

    /// `rte_pktmbuf_pool_create(name, n, cache, 0, data_room, socket)`; null and `ns_errno`
    /// on failure.
    /// # Safety
    /// EAL initialized; `name` NUL-terminated.
    pub fn ns_pktmbuf_pool_create(name: *const c_char, n: c_uint, cache_size: c_uint, data_room_size: u16, socket_id: c_int) -> *mut RteMempool;
    /// `rte_mempool_free`.
    /// # Safety
    /// `mp` from `ns_pktmbuf_pool_create`, no mbuf of it in use, no device using it.
    pub fn ns_mempool_free(mp: *mut RteMempool);
    /// `rte_mempool_avail_count`.
    /// # Safety
    /// `mp` valid.
    pub fn ns_mempool_avail_count(mp: *const RteMempool) -> c_uint;
    /// `rte_pktmbuf_alloc`: null when the pool is empty.
    /// # Safety
    /// `mp` valid.
    pub fn ns_pktmbuf_alloc(mp: *mut RteMempool) -> *mut RteMbuf;
    /// `rte_pktmbuf_alloc_bulk`: 0, or a negative errno and nothing allocated.
    /// # Safety
    /// `mp` valid, `mbufs` has room for `count` pointers.
    pub fn ns_pktmbuf_alloc_bulk(mp: *mut RteMempool, mbufs: *mut *mut RteMbuf, count: c_uint) -> c_int;
    /// `rte_pktmbuf_free` (null is allowed).
    /// # Safety
    /// `m` owned by the caller and not used afterwards.
    pub fn ns_pktmbuf_free(m: *mut RteMbuf);
    /// `rte_pktmbuf_free_bulk`.
    /// # Safety
    /// `count` owned mbufs (nulls allowed), not used afterwards.
    pub fn ns_pktmbuf_free_bulk(mbufs: *mut *mut RteMbuf, count: c_uint);
    /// `rte_pktmbuf_mtod`: start of the first segment's data.
    /// # Safety
    /// `m` valid.
    pub fn ns_pktmbuf_mtod(m: *mut RteMbuf) -> *mut u8;
    /// `rte_pktmbuf_data_len`: bytes in the first segment.
    /// # Safety
    /// `m` valid.
    pub fn ns_pktmbuf_data_len(m: *const RteMbuf) -> u16;
    /// `rte_pktmbuf_pkt_len`: bytes in all segments.
    /// # Safety
    /// `m` valid.
    pub fn ns_pktmbuf_pkt_len(m: *const RteMbuf) -> u32;
    /// `m->nb_segs`.
    /// # Safety
    /// `m` valid.
    pub fn ns_pktmbuf_nb_segs(m: *const RteMbuf) -> u16;
    /// `rte_pktmbuf_tailroom`.
    /// # Safety
    /// `m` valid.
    pub fn ns_pktmbuf_tailroom(m: *const RteMbuf) -> u16;
    /// `rte_pktmbuf_append`: pointer to `len` new bytes at the end, or null (no tailroom).
    /// # Safety
    /// `m` valid and owned.
    pub fn ns_pktmbuf_append(m: *mut RteMbuf, len: u16) -> *mut u8;

    /// `rte_eth_dev_count_avail`.
    /// # Safety
    /// EAL initialized.
    pub fn ns_eth_dev_count_avail() -> u16;
    /// `rte_eth_dev_get_port_by_name`: 0 and `*port_id`, or a negative errno.
    /// # Safety
    /// `name` NUL-terminated, `port_id` writable.
    pub fn ns_eth_dev_get_port_by_name(name: *const c_char, port_id: *mut u16) -> c_int;
    /// `rte_eth_dev_get_name_by_port` into `name[..len]` (NUL-terminated, truncated).
    /// # Safety
    /// `name` has room for `len` bytes.
    pub fn ns_eth_dev_get_name_by_port(port_id: u16, name: *mut c_char, len: c_uint) -> c_int;
    /// `rte_eth_dev_is_valid_port`: 1 if valid.
    /// # Safety
    /// EAL initialized.
    pub fn ns_eth_dev_is_valid_port(port_id: u16) -> c_int;
    /// `rte_eth_dev_socket_id`.
    /// # Safety
    /// EAL initialized.
    pub fn ns_eth_dev_socket_id(port_id: u16) -> c_int;
    /// `rte_eth_dev_configure` with a zeroed `rte_eth_conf` (no RSS, no offloads).
    /// # Safety
    /// Valid, stopped port.
    pub fn ns_eth_dev_configure(port_id: u16, nb_rx_q: u16, nb_tx_q: u16) -> c_int;
    /// `rte_eth_dev_set_mtu`.
    /// # Safety
    /// Valid port.
    pub fn ns_eth_dev_set_mtu(port_id: u16, mtu: u16) -> c_int;
    /// `rte_eth_rx_queue_setup` (default rxconf; `socket_id` < 0 = any).
    /// # Safety
    /// Configured, stopped port; `mp` valid for the port's lifetime.
    pub fn ns_eth_rx_queue_setup(port_id: u16, queue: u16, nb_desc: u16, socket_id: c_int, mp: *mut RteMempool) -> c_int;
    /// `rte_eth_tx_queue_setup` (default txconf).
    /// # Safety
    /// Configured, stopped port.
    pub fn ns_eth_tx_queue_setup(port_id: u16, queue: u16, nb_desc: u16, socket_id: c_int) -> c_int;
    /// `rte_eth_dev_start`.
    /// # Safety
    /// Queues set up.
    pub fn ns_eth_dev_start(port_id: u16) -> c_int;
    /// `rte_eth_dev_stop`.
    /// # Safety
    /// No thread is in rx/tx burst on this port.
    pub fn ns_eth_dev_stop(port_id: u16) -> c_int;
    /// `rte_eth_dev_close`.
    /// # Safety
    /// Port stopped.
    pub fn ns_eth_dev_close(port_id: u16) -> c_int;
    /// `rte_eth_promiscuous_enable`.
    /// # Safety
    /// Valid port.
    pub fn ns_eth_promiscuous_enable(port_id: u16) -> c_int;
    /// `rte_eth_link_get_nowait`: 1 when the link is up, 0 when down, a negative errno.
    /// # Safety
    /// Valid port.
    pub fn ns_eth_link_up(port_id: u16) -> c_int;
    /// `rte_eth_macaddr_get` into `mac[0..6]`.
    /// # Safety
    /// `mac` has room for 6 bytes.
    pub fn ns_eth_macaddr_get(port_id: u16, mac: *mut u8) -> c_int;
    /// `rte_eth_stats_get` into `out` = [ipackets, opackets, ibytes, obytes, imissed, oerrors].
    /// # Safety
    /// `out` has room for 6 `u64`.
    pub fn ns_eth_stats_get(port_id: u16, out: *mut u64) -> c_int;
    /// `rte_eth_rx_burst`.
    /// # Safety
    /// Started port; one thread per queue; `pkts` has room for `n` pointers.
    pub fn ns_eth_rx_burst(port_id: u16, queue: u16, pkts: *mut *mut RteMbuf, n: u16) -> u16;
    /// `rte_eth_tx_burst`: the first `k` returned mbufs now belong to the driver.
    /// # Safety
    /// Started port; one thread per queue; `pkts[..n]` owned, valid mbufs.
    pub fn ns_eth_tx_burst(port_id: u16, queue: u16, pkts: *mut *mut RteMbuf, n: u16) -> u16;

    /// `rte_eth_rx_burst`, then per received mbuf `i`: `data[i]` = its first segment's data
    /// (null when the mbuf is chained) and `len[i]` = that segment's length.
    /// # Safety
    /// Started port; one thread per queue; `pkts`, `data`, `len` have room for `n` entries.
    pub fn ns_eth_rx_burst_views(port_id: u16, queue: u16, pkts: *mut *mut RteMbuf, n: u16, data: *mut *mut u8, len: *mut u16) -> u16;
    /// Allocates `n` mbufs and appends `len[i]` bytes to mbuf `i` (start in `data[i]`): 0, or a
    /// negative errno (`-ENOBUFS` pool empty, `-ENOSPC` too little tailroom) with nothing
    /// allocated.
    /// # Safety
    /// `mp` valid; `mbufs` and `data` have room for `n` entries, `len` holds `n`.
    pub fn ns_pktmbuf_alloc_bulk_append(mp: *mut RteMempool, mbufs: *mut *mut RteMbuf, n: c_uint, len: *const u16, data: *mut *mut u8) -> c_int;
    /// Sets data_len = pkt_len = `len` of a single-segment mbuf.
    /// # Safety
    /// `m` valid and owned, one segment, `len` at most the bytes appended to it.
    pub fn ns_pktmbuf_set_len(m: *mut RteMbuf, len: u16);
    /// `rte_thread_register`: 0, or a negative errno (no free lcore id).
    /// # Safety
    /// EAL initialized.
    pub fn ns_thread_register() -> c_int;
    /// `rte_thread_unregister`.
    /// # Safety
    /// The calling thread registered and no longer uses per-lcore DPDK state.
    pub fn ns_thread_unregister();

    /// `rte_ring_create`; null and `ns_errno` on failure.
    /// # Safety
    /// EAL initialized; `name` NUL-terminated.
    pub fn ns_ring_create(name: *const c_char, count: c_uint, socket_id: c_int, flags: c_uint) -> *mut RteRing;
    /// `rte_ring_free`.
    /// # Safety
    /// `r` unused afterwards.
    pub fn ns_ring_free(r: *mut RteRing);
    /// `rte_ring_enqueue_burst`: how many were enqueued.
    /// # Safety
    /// `r` valid; `objs` has `n` entries.
    pub fn ns_ring_enqueue_burst(r: *mut RteRing, objs: *mut *mut c_void, n: c_uint) -> c_uint;
    /// `rte_ring_dequeue_burst`: how many were dequeued.
    /// # Safety
    /// `r` valid; `objs` has room for `n` entries.
    pub fn ns_ring_dequeue_burst(r: *mut RteRing, objs: *mut *mut c_void, n: c_uint) -> c_uint;
    /// `RING_F_SP_ENQ`.
    /// # Safety
    /// Always safe.
    pub fn ns_ring_flag_sp_enq() -> c_uint;
    /// `RING_F_SC_DEQ`.
    /// # Safety
    /// Always safe.
    pub fn ns_ring_flag_sc_deq() -> c_uint;
    /// `rte_eth_from_rings` (net_ring PMD, looked up in the copy the EAL loaded): the new
    /// port id, or a negative errno.
    /// # Safety
    /// EAL initialized; `rx`/`tx` hold `nb_rx`/`nb_tx` valid rings that outlive the port.
    pub fn ns_eth_from_rings(name: *const c_char, rx: *const *mut RteRing, nb_rx: c_uint, tx: *const *mut RteRing, nb_tx: c_uint, numa_node: c_uint) -> c_int;
}

/// `rte_strerror(errnum)` as an owned string.
pub fn strerror(errnum: c_int) -> String {
    if !LINKED {
        return format!("errno {errnum} (built without libdpdk)");
    }
    // SAFETY: rte_strerror accepts any value and returns a valid NUL-terminated string.
    let p = unsafe { ns_strerror(errnum) };
    if p.is_null() {
        return format!("errno {errnum}");
    }
    // SAFETY: non-null, NUL-terminated, valid until the next call on this thread.
    unsafe { std::ffi::CStr::from_ptr(p) }
        .to_string_lossy()
        .into_owned()
}

/// DPDK's version string (`"DPDK 22.11.x"`), or `None` when built without libdpdk.
pub fn version() -> Option<String> {
    if !LINKED {
        return None;
    }
    // SAFETY: rte_version returns a static NUL-terminated string; no EAL needed.
    let p = unsafe { ns_version() };
    if p.is_null() {
        return None;
    }
    // SAFETY: non-null, NUL-terminated, static lifetime.
    let v = unsafe { std::ffi::CStr::from_ptr(p) };
    Some(v.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_matches_linkage() {
        let v = version();
        assert_eq!(v.is_some(), LINKED);
        if let Some(v) = v {
            assert!(v.starts_with("DPDK"), "{v}");
        }
    }

    #[test]
    fn strerror_is_text() {
        assert!(!strerror(22).is_empty());
    }
}
