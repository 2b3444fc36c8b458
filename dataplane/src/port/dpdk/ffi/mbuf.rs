//! mbufs on their way in ([`RxBurst`]) and out ([`TxStash`] → [`TxMbuf`] → [`TxPending`],
//! [`TxBulk`]): owned by exactly one of these until the driver takes them or they are freed.

use super::device::{Mempool, Queues};
use crate::port::dpdk::MAX_BURST;
use netstorm_dpdk_sys as sys;
use std::ptr::null_mut;

/// Frees `mbufs[..n]` (owned by the caller, not used afterwards).
fn free_bulk(mbufs: &mut [*mut sys::RteMbuf], n: usize) {
    let n = n.min(mbufs.len());
    if n > 0 {
        // SAFETY: the callers own mbufs[..n] (nulls are allowed) and drop every pointer to
        // them with this call.
        unsafe { sys::ns_pktmbuf_free_bulk(mbufs.as_mut_ptr(), n as u32) };
    }
}

/// Hints the CPU to fetch the `len` bytes at `p` into its cache, for writing or for reading
/// (no effect on other targets).
#[inline(always)]
fn prefetch_lines(p: *const u8, len: usize, for_write: bool) {
    #[cfg(target_arch = "x86_64")]
    for off in (0..len).step_by(64) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_ET0, _MM_HINT_T0};
        let line = p.wrapping_add(off) as *const i8;
        // SAFETY: a prefetch is a hint: it never faults and changes no state visible to the
        // program, whatever the address; `wrapping_add` keeps the pointer arithmetic defined.
        unsafe {
            if for_write {
                _mm_prefetch::<_MM_HINT_ET0>(line)
            } else {
                _mm_prefetch::<_MM_HINT_T0>(line)
            }
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, len, for_write);
}

/// One rx burst's mbufs, data pointers and lengths: kept in the port so a burst does not zero
/// fresh arrays on the stack (those stores queue behind the tx frames' still-pending stores to
/// lines other cores hold: `perf` put a third of the receive there). The frames are lent out
/// by [`RxBurst::frame`] until [`RxBurst::free`] (or the next receive) gives the mbufs back.
#[derive(Debug)]
pub(in crate::port::dpdk) struct RxBurst {
    mbufs: [*mut sys::RteMbuf; MAX_BURST],
    data: [*mut u8; MAX_BURST],
    lens: [u16; MAX_BURST],
    /// Received mbufs not yet freed: `mbufs[..n]`, with `data[..n]` / `lens[..n]`.
    n: usize,
}

// SAFETY: the burst owns its mbufs (received, not yet freed); mbufs may be freed from any
// thread, and the arrays are plain data.
unsafe impl Send for RxBurst {}

impl RxBurst {
    pub(in crate::port::dpdk) fn new() -> Self {
        Self {
            mbufs: [null_mut(); MAX_BURST],
            data: [null_mut(); MAX_BURST],
            lens: [0; MAX_BURST],
            n: 0,
        }
    }

    /// Frees the previous burst if any, then takes up to `want` (≤ [`MAX_BURST`]) frames from
    /// the set's rx queue `rx`. Returns how many arrived (0 for an `rx` outside the set).
    #[inline]
    pub(in crate::port::dpdk) fn receive(
        &mut self,
        queues: &mut Queues,
        rx: usize,
        want: usize,
    ) -> usize {
        self.free();
        self.append(queues, rx, want)
    }

    /// Takes up to `want` more frames from the set's rx queue `rx`, after those the burst
    /// holds (at most [`MAX_BURST`] in all): frames of several queues, lent out together.
    /// Returns how many arrived.
    #[inline]
    pub(in crate::port::dpdk) fn append(
        &mut self,
        queues: &mut Queues,
        rx: usize,
        want: usize,
    ) -> usize {
        let at = self.n;
        let want = want.min(MAX_BURST - at) as u16;
        let Some(&queue) = queues.rx.get(rx) else {
            return 0;
        };
        if want == 0 {
            return 0;
        }
        // SAFETY: the device is started (the set holds it) and the set is the only user of
        // its rx queues; from `at` on, the three arrays have room for `want` <= MAX_BURST - at
        // entries, and entries before `at` are left alone.
        let n = unsafe {
            sys::ns_eth_rx_burst_views(
                queues.device.port_id(),
                queue,
                self.mbufs[at..].as_mut_ptr(),
                want,
                self.data[at..].as_mut_ptr(),
                self.lens[at..].as_mut_ptr(),
            )
        } as usize;
        let n = n.min(want as usize);
        self.n = at + n;
        n
    }

    /// Frames the burst holds.
    #[inline]
    pub(in crate::port::dpdk) fn len(&self) -> usize {
        self.n
    }

    /// Frame `i` of the burst: its only segment's bytes, or `None` for a chained (multi-
    /// segment) mbuf or `i` beyond the burst.
    #[inline]
    pub(in crate::port::dpdk) fn frame(&self, i: usize) -> Option<&[u8]> {
        if i >= self.n {
            return None;
        }
        let (data, len) = (self.data[i], self.lens[i] as usize);
        if data.is_null() {
            return None;
        }
        // SAFETY: mbuf i is ours until `free` (which needs `&mut self`, so the slice cannot
        // outlive it); its only segment holds `len` initialized bytes at `data`, which
        // nothing else writes meanwhile.
        Some(unsafe { std::slice::from_raw_parts(data, len) })
    }

    /// Asks the CPU to start fetching frame `i` (written by another core) into its cache.
    #[inline]
    pub(in crate::port::dpdk) fn prefetch(&self, i: usize) {
        if i < self.n && !self.data[i].is_null() {
            prefetch_lines(self.data[i], self.lens[i] as usize, false);
        }
    }

    /// Gives the burst's mbufs back to their pool.
    #[inline]
    pub(in crate::port::dpdk) fn free(&mut self) {
        free_bulk(&mut self.mbufs, self.n);
        self.n = 0;
    }
}

impl Drop for RxBurst {
    fn drop(&mut self) {
        self.free();
    }
}

/// Why an mbuf allocation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::port::dpdk) enum AllocError {
    /// The pool is empty (back-pressure).
    PoolEmpty,
    /// An mbuf has too little room for the frame (`mbuf_data_room` too small).
    TooSmall,
}

/// `ns_pktmbuf_alloc_bulk_append` into `mbufs[..n]` / `data[..n]` with `lens[..n]`.
fn alloc_bulk_append(
    pool: &Mempool,
    mbufs: &mut [*mut sys::RteMbuf],
    data: &mut [*mut u8],
    lens: &[u16],
) -> Result<(), AllocError> {
    let n = mbufs.len().min(data.len()).min(lens.len());
    // SAFETY: the pool is valid; mbufs, data and lens have at least n entries.
    let ret = unsafe {
        sys::ns_pktmbuf_alloc_bulk_append(
            pool.0.as_ptr(),
            mbufs.as_mut_ptr(),
            n as u32,
            lens.as_ptr(),
            data.as_mut_ptr(),
        )
    };
    match ret {
        0 => Ok(()),
        r if r == -libc::ENOSPC => Err(AllocError::TooSmall),
        _ => Err(AllocError::PoolEmpty),
    }
}

/// mbufs allocated ahead for in-place sends, each with a full-size frame of `frame_len`
/// bytes appended: a LIFO, freed on drop.
#[derive(Debug)]
pub(in crate::port::dpdk) struct TxStash {
    mbufs: [*mut sys::RteMbuf; MAX_BURST],
    data: [*mut u8; MAX_BURST],
    /// `mbufs[..n]` are ours, each with `frame_len` bytes at `data[i]`.
    n: usize,
    frame_len: u16,
}

// SAFETY: the stash owns its mbufs (allocated, not handed out); mbufs may be used and freed
// from any thread, one at a time (the stash is not Sync).
unsafe impl Send for TxStash {}

impl TxStash {
    /// An empty stash for frames of `frame_len` bytes.
    pub(in crate::port::dpdk) fn new(frame_len: u16) -> Self {
        Self {
            mbufs: [null_mut(); MAX_BURST],
            data: [null_mut(); MAX_BURST],
            n: 0,
            frame_len,
        }
    }

    /// mbufs in the stash.
    #[inline]
    pub(in crate::port::dpdk) fn len(&self) -> usize {
        self.n
    }

    /// Bytes of each stashed frame.
    #[inline]
    pub(in crate::port::dpdk) fn frame_len(&self) -> usize {
        self.frame_len as usize
    }

    /// Tops the stash up to [`MAX_BURST`] mbufs from `pool` (all or none).
    pub(in crate::port::dpdk) fn refill(&mut self, pool: &Mempool) -> Result<(), AllocError> {
        let n = self.n;
        if n == MAX_BURST {
            return Ok(());
        }
        let lens = [self.frame_len; MAX_BURST];
        alloc_bulk_append(
            pool,
            &mut self.mbufs[n..],
            &mut self.data[n..],
            &lens[..MAX_BURST - n],
        )?;
        self.n = MAX_BURST;
        Ok(())
    }

    /// Asks the CPU for ownership of stash entry `i`'s cache lines (it will be written soon).
    #[inline]
    pub(in crate::port::dpdk) fn prefetch_for_write(&self, i: usize) {
        if i < self.n {
            prefetch_lines(self.data[i], self.frame_len as usize, true);
        }
    }

    /// The frame of the top mbuf (the next [`TxStash::pop`]), writable; `None` when empty.
    #[inline]
    pub(in crate::port::dpdk) fn top_frame(&mut self) -> Option<&mut [u8]> {
        let top = self.n.checked_sub(1)?;
        // SAFETY: mbuf `top` is ours (in the stash) with `frame_len` appended bytes at
        // data[top]; the slice borrows the stash mutably, so it ends before the mbuf can leave.
        Some(unsafe { std::slice::from_raw_parts_mut(self.data[top], self.frame_len as usize) })
    }

    /// Takes the top mbuf out of the stash.
    #[inline]
    pub(in crate::port::dpdk) fn pop(&mut self) -> Option<TxMbuf> {
        let top = self.n.checked_sub(1)?;
        self.n = top;
        Some(TxMbuf {
            mbuf: self.mbufs[top],
            data: self.data[top],
            cap: self.frame_len,
        })
    }
}

impl Drop for TxStash {
    fn drop(&mut self) {
        // The pool outlives the stash: the port holding it holds the device.
        free_bulk(&mut self.mbufs, self.n);
        self.n = 0;
    }
}

/// One owned single-segment mbuf with `cap` bytes appended, being written; freed if dropped.
#[derive(Debug)]
pub(in crate::port::dpdk) struct TxMbuf {
    mbuf: *mut sys::RteMbuf,
    data: *mut u8,
    cap: u16,
}

impl TxMbuf {
    /// Its `cap` bytes, writable.
    #[inline]
    pub(in crate::port::dpdk) fn frame_mut(&mut self) -> &mut [u8] {
        // SAFETY: the mbuf is ours alone with `cap` appended bytes at `data`; the slice
        // borrows `self` mutably, so it ends before the mbuf is sent or freed.
        unsafe { std::slice::from_raw_parts_mut(self.data, self.cap as usize) }
    }

    /// Trims the frame to `len` (≤ its capacity; larger values are clamped).
    #[inline]
    pub(in crate::port::dpdk) fn set_len(&mut self, len: usize) {
        let len = len.min(self.cap as usize) as u16;
        // SAFETY: the mbuf is ours, one segment, and `len` <= the bytes appended to it.
        unsafe { sys::ns_pktmbuf_set_len(self.mbuf, len) };
    }
}

impl Drop for TxMbuf {
    fn drop(&mut self) {
        // SAFETY: the mbuf is ours and nothing refers to it after this.
        unsafe { sys::ns_pktmbuf_free(self.mbuf) };
    }
}

/// Framed mbufs waiting for one tx queue's burst.
#[derive(Debug)]
pub(in crate::port::dpdk) struct TxPending {
    mbufs: [*mut sys::RteMbuf; MAX_BURST],
    /// `mbufs[..n]` are ours, framed, waiting.
    n: usize,
}

// SAFETY: the batch owns its waiting mbufs; mbufs may be sent or freed from any thread, one
// at a time (the batch is not Sync).
unsafe impl Send for TxPending {}

impl TxPending {
    pub(in crate::port::dpdk) fn new() -> Self {
        Self {
            mbufs: [null_mut(); MAX_BURST],
            n: 0,
        }
    }

    /// Queues a framed mbuf. Panics beyond [`MAX_BURST`] waiting (callers flush first).
    #[inline]
    pub(in crate::port::dpdk) fn push(&mut self, m: TxMbuf) {
        let m = std::mem::ManuallyDrop::new(m);
        self.mbufs[self.n] = m.mbuf;
        self.n += 1;
    }

    /// Whether no frame is waiting.
    #[inline]
    pub(in crate::port::dpdk) fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Hands the waiting frames to tx queue `tx` of `queues` in one burst and frees what it
    /// refuses. Returns (taken, refused).
    #[inline]
    pub(in crate::port::dpdk) fn flush(
        &mut self,
        queues: &mut Queues,
        tx: usize,
    ) -> (usize, usize) {
        let n = std::mem::take(&mut self.n);
        let sent = queues.tx_burst(tx, &mut self.mbufs, n);
        free_bulk(&mut self.mbufs[sent..], n - sent);
        (sent, n - sent)
    }
}

impl Drop for TxPending {
    fn drop(&mut self) {
        free_bulk(&mut self.mbufs, self.n);
        self.n = 0;
    }
}

/// `n` mbufs allocated together for one burst, with `lens[i]` bytes appended to mbuf `i`.
#[derive(Debug)]
pub(in crate::port::dpdk) struct TxBulk {
    mbufs: [*mut sys::RteMbuf; MAX_BURST],
    data: [*mut u8; MAX_BURST],
    lens: [u16; MAX_BURST],
    /// `mbufs[..n]` are ours until sent.
    n: usize,
}

impl TxBulk {
    /// Allocates `n` (≤ [`MAX_BURST`]) mbufs from `pool` with `lens[i]` bytes each.
    #[inline]
    pub(in crate::port::dpdk) fn alloc(
        pool: &Mempool,
        n: usize,
        lens: &[u16; MAX_BURST],
    ) -> Result<Self, AllocError> {
        let n = n.min(MAX_BURST);
        let mut bulk = Self {
            mbufs: [null_mut(); MAX_BURST],
            data: [null_mut(); MAX_BURST],
            lens: *lens,
            n: 0,
        };
        alloc_bulk_append(pool, &mut bulk.mbufs[..n], &mut bulk.data[..n], &lens[..n])?;
        bulk.n = n;
        Ok(bulk)
    }

    /// Frame `i`, writable (empty beyond the bulk).
    #[inline]
    pub(in crate::port::dpdk) fn frame_mut(&mut self, i: usize) -> &mut [u8] {
        if i >= self.n {
            return &mut [];
        }
        // SAFETY: mbuf i is ours with lens[i] appended bytes at data[i]; the slice borrows
        // the bulk mutably, so it ends before the mbufs are sent or freed.
        unsafe { std::slice::from_raw_parts_mut(self.data[i], self.lens[i] as usize) }
    }

    /// Sends the whole bulk on tx queue `tx` of `queues` in one burst, frees what the driver
    /// refuses; returns (taken, refused).
    #[inline]
    pub(in crate::port::dpdk) fn send(mut self, queues: &mut Queues, tx: usize) -> (usize, usize) {
        let n = std::mem::take(&mut self.n);
        let sent = queues.tx_burst(tx, &mut self.mbufs, n);
        free_bulk(&mut self.mbufs[sent..], n - sent);
        (sent, n - sent)
    }
}

impl Drop for TxBulk {
    fn drop(&mut self) {
        free_bulk(&mut self.mbufs, self.n);
    }
}
