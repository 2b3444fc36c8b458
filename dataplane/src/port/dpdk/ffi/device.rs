//! The ethdev and its mbuf pool: claimed, configured, started, stopped; its queues dealt out
//! in [`Queues`] sets.

use super::{eal_ready, ethdev_count, rte_errno};
use crate::port::dpdk::MAX_BURST;
use netstorm_dpdk_sys as sys;
use std::ffi::{c_int, CStr, CString};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An mbuf pool. Never freed once a device may hold its mbufs (see [`Device`]'s drop).
#[derive(Debug)]
pub(in crate::port::dpdk) struct Mempool(pub(super) NonNull<sys::RteMempool>);

// SAFETY: DPDK's pktmbuf pools use the thread-safe ring_mp_mc ops: allocating, freeing and
// counting from any thread is allowed, and the pool itself is never freed while shared.
unsafe impl Send for Mempool {}
// SAFETY: as above; every method takes `&self` and is thread-safe in DPDK.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// `rte_pktmbuf_pool_create`; `Err(rte_errno)` on failure.
    fn create(
        name: &CStr,
        mbufs: u32,
        cache: u32,
        data_room: u16,
        socket: c_int,
    ) -> Result<Self, c_int> {
        if !eal_ready() {
            return Err(libc::ENODEV);
        }
        // SAFETY: EAL initialized; name NUL-terminated (DPDK copies it).
        let pool =
            unsafe { sys::ns_pktmbuf_pool_create(name.as_ptr(), mbufs, cache, data_room, socket) };
        NonNull::new(pool).map(Mempool).ok_or_else(rte_errno)
    }

    /// Frees a pool no device was started with (so no queue can hold its mbufs).
    fn free_unused(self) {
        // SAFETY: only called while bringing a device up, before its start succeeded: no
        // started queue ever took mbufs from this pool and no mbuf of it was handed out.
        unsafe { sys::ns_mempool_free(self.0.as_ptr()) };
    }

    /// Free mbufs in the pool.
    pub(in crate::port::dpdk) fn available(&self) -> u32 {
        // SAFETY: the pool is valid for as long as `self` (never freed while shared).
        unsafe { sys::ns_mempool_avail_count(self.0.as_ptr()) }
    }
}

/// Devices opened by a live [`Device`] in this process.
static OPEN_DEVICES: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// What [`Device::open`] needs (from the port config).
#[derive(Debug, Clone)]
pub(in crate::port::dpdk) struct DeviceSpec<'a> {
    pub name: &'a str,
    pub rx_queues: u16,
    pub tx_queues: u16,
    pub rx_desc: u16,
    pub tx_desc: u16,
    pub mtu: u16,
    pub promiscuous: bool,
    pub mempool_mbufs: u32,
    pub mempool_cache: u32,
    pub mbuf_data_room: u16,
    /// Keep retrying a failed start this long (a `net_memif` client waiting for its server).
    pub start_retry: Duration,
}

/// The bring-up step that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::port::dpdk) enum Step {
    Configure,
    RxQueueSetup,
    TxQueueSetup,
    Promiscuous,
    Start,
}

/// Why [`Device::open`] failed.
#[derive(Debug)]
pub(in crate::port::dpdk) enum OpenError {
    /// No ethdev of that name; `available` ethdevs exist.
    NoSuchDevice { available: u16 },
    /// Another live [`Device`] in this process has it.
    Busy,
    /// The mbuf pool could not be created (`rte_errno`).
    Mempool { errno: c_int },
    /// A step returned a negative errno.
    Step { step: Step, ret: c_int },
}

/// A configured, started ethdev and its mbuf pool, claimed by this process; stopped when the
/// last [`Queues`] set of it is dropped.
#[derive(Debug)]
pub(in crate::port::dpdk) struct Device {
    name: String,
    port_id: u16,
    pool: Mempool,
}

/// How [`Device::open`] deals the device's queues out into [`Queues`] sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::port::dpdk) enum QueueSplit {
    /// Set `i` gets rx queue `i` and tx queue `i` (one set per queue pair; the device must
    /// have as many rx as tx queues).
    PerPair,
    /// One set with every rx and every tx queue.
    All,
}

/// Some queues of one started device, owned together: the only way to burst on them.
/// [`Device::open`] deals every queue into exactly one set, and a set is not `Clone`, so
/// holding it (bursts take it `&mut`) is DPDK's "one thread per queue". The set keeps the
/// device started.
#[derive(Debug)]
pub(in crate::port::dpdk) struct Queues {
    pub(super) device: Arc<Device>,
    pub(super) rx: Box<[u16]>,
    tx: Box<[u16]>,
}

impl Queues {
    /// The device.
    pub(in crate::port::dpdk) fn device(&self) -> &Device {
        &self.device
    }

    /// Rx queues in the set.
    pub(in crate::port::dpdk) fn rx_count(&self) -> usize {
        self.rx.len()
    }

    /// Tx queues in the set.
    pub(in crate::port::dpdk) fn tx_count(&self) -> usize {
        self.tx.len()
    }

    /// Hands `mbufs[..n]` (owned, framed) to the set's tx queue `tx` in one burst; returns how
    /// many the driver took (the first ones; none for a `tx` outside the set). The rest are
    /// still the caller's.
    pub(super) fn tx_burst(
        &mut self,
        tx: usize,
        mbufs: &mut [*mut sys::RteMbuf; MAX_BURST],
        n: usize,
    ) -> usize {
        let n = n.min(MAX_BURST);
        let Some(&queue) = self.tx.get(tx) else {
            return 0;
        };
        if n == 0 {
            return 0;
        }
        // SAFETY: the device is started (the set holds it) and this set is the queue's only
        // user; mbufs[..n] are valid, owned, filled mbufs (the callers' invariant); the first
        // `sent` now belong to the driver.
        let sent = unsafe {
            sys::ns_eth_tx_burst(self.device.port_id, queue, mbufs.as_mut_ptr(), n as u16)
        };
        sent as usize
    }
}

impl Device {
    /// Looks up `spec.name`, claims it for this process, creates its mbuf pool, configures
    /// it (no RSS, no offloads; the MTU best effort), sets up its queues and starts it.
    pub(in crate::port::dpdk) fn open(
        spec: &DeviceSpec<'_>,
        split: QueueSplit,
    ) -> Result<Vec<Queues>, OpenError> {
        static POOL_SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let no_such = || OpenError::NoSuchDevice {
            available: ethdev_count(),
        };
        if !eal_ready() {
            return Err(no_such());
        }
        let name = CString::new(spec.name).map_err(|_| no_such())?;
        let mut port_id = 0u16;
        // SAFETY: name is NUL-terminated, port_id writable; the EAL is initialized.
        let ret = unsafe { sys::ns_eth_dev_get_port_by_name(name.as_ptr(), &mut port_id) };
        if ret != 0 {
            return Err(no_such());
        }
        {
            let mut open = OPEN_DEVICES.lock().unwrap_or_else(|e| e.into_inner());
            if open.contains(&port_id) {
                return Err(OpenError::Busy);
            }
            open.push(port_id);
        }
        let release = || {
            OPEN_DEVICES
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|&p| p != port_id);
        };
        // SAFETY: valid port id (looked up by name); only reads the device's NUMA socket.
        let socket = unsafe { sys::ns_eth_dev_socket_id(port_id) };
        let pool_name = CString::new(format!(
            "ns_pool_{port_id}_{}",
            POOL_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ))
        .expect("no NUL in a formatted name");
        let pool = Mempool::create(
            &pool_name,
            spec.mempool_mbufs,
            spec.mempool_cache,
            spec.mbuf_data_room,
            socket.max(sys::SOCKET_ID_ANY),
        )
        .map_err(|errno| {
            release();
            OpenError::Mempool { errno }
        })?;
        if let Err(e) = Self::configure_and_start(port_id, socket, &pool, spec) {
            pool.free_unused();
            release();
            return Err(e);
        }
        let device = Arc::new(Device {
            name: spec.name.to_string(),
            port_id,
            pool,
        });
        Ok(match split {
            QueueSplit::PerPair => (0..spec.rx_queues.min(spec.tx_queues))
                .map(|q| Queues {
                    device: device.clone(),
                    rx: Box::new([q]),
                    tx: Box::new([q]),
                })
                .collect(),
            QueueSplit::All => vec![Queues {
                device,
                rx: (0..spec.rx_queues).collect(),
                tx: (0..spec.tx_queues).collect(),
            }],
        })
    }

    /// Configures the claimed, stopped device `port_id`, sets up its queues over `pool` and
    /// starts it (retrying the start for `spec.start_retry`).
    fn configure_and_start(
        port_id: u16,
        socket: c_int,
        pool: &Mempool,
        spec: &DeviceSpec<'_>,
    ) -> Result<(), OpenError> {
        let check = |step: Step, ret: c_int| {
            if ret < 0 {
                Err(OpenError::Step { step, ret })
            } else {
                Ok(())
            }
        };
        // SAFETY: the device is ours alone (claimed in OPEN_DEVICES, so nothing else in the
        // process configures it or bursts on it) and stopped; the port id is valid.
        let ret = unsafe { sys::ns_eth_dev_configure(port_id, spec.rx_queues, spec.tx_queues) };
        check(Step::Configure, ret)?;
        // Best effort: virtual devices often do not implement MTU changes.
        // SAFETY: as above (ours alone, stopped); a configured port.
        let _ = unsafe { sys::ns_eth_dev_set_mtu(port_id, spec.mtu) };
        for q in 0..spec.rx_queues {
            // SAFETY: configured, stopped port; q < the configured queue count; the pool
            // outlives the device (never freed once the device started).
            let ret = unsafe {
                sys::ns_eth_rx_queue_setup(port_id, q, spec.rx_desc, socket, pool.0.as_ptr())
            };
            check(Step::RxQueueSetup, ret)?;
        }
        for q in 0..spec.tx_queues {
            // SAFETY: configured, stopped port; q < the configured queue count.
            let ret = unsafe { sys::ns_eth_tx_queue_setup(port_id, q, spec.tx_desc, socket) };
            check(Step::TxQueueSetup, ret)?;
        }
        if spec.promiscuous {
            // SAFETY: valid port, ours alone.
            let ret = unsafe { sys::ns_eth_promiscuous_enable(port_id) };
            check(Step::Promiscuous, ret)?;
        }
        // SAFETY: queues set up, no queue in use yet; a failed start leaves the port
        // configured and stopped, so it may be tried again.
        let start = || unsafe { sys::ns_eth_dev_start(port_id) };
        let mut ret = start();
        let deadline = Instant::now() + spec.start_retry;
        while ret < 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            ret = start();
        }
        check(Step::Start, ret)
    }

    /// The ethdev port id.
    pub(in crate::port::dpdk) fn port_id(&self) -> u16 {
        self.port_id
    }

    /// The device name it was opened by.
    pub(in crate::port::dpdk) fn name(&self) -> &str {
        &self.name
    }

    /// The device's mbuf pool.
    pub(in crate::port::dpdk) fn pool(&self) -> &Mempool {
        &self.pool
    }

    /// The device's own MAC, or a negative errno.
    pub(in crate::port::dpdk) fn mac_addr(&self) -> Result<[u8; 6], c_int> {
        let mut m = [0u8; 6];
        // SAFETY: m has 6 bytes; valid port; only reads the device's address.
        let ret = unsafe { sys::ns_eth_macaddr_get(self.port_id, m.as_mut_ptr()) };
        if ret < 0 {
            return Err(ret);
        }
        Ok(m)
    }

    /// 1 when the link is up, 0 when down, a negative errno when the device cannot say.
    pub(in crate::port::dpdk) fn link_status(&self) -> c_int {
        // SAFETY: valid, started port; rte_eth_link_get_nowait only reads its state.
        unsafe { sys::ns_eth_link_up(self.port_id) }
    }

    /// The ethdev's counters: [ipackets, opackets, ibytes, obytes, imissed, oerrors].
    pub(in crate::port::dpdk) fn stats(&self) -> Option<[u64; 6]> {
        let mut out = [0u64; 6];
        // SAFETY: out has room for 6 u64; valid port; rte_eth_stats_get only reads.
        let ret = unsafe { sys::ns_eth_stats_get(self.port_id, out.as_mut_ptr()) };
        (ret == 0).then_some(out)
    }

    /// Stops and starts the device again, keeping its queues and pool. `sets` must be every
    /// [`Queues`] set of one device (so no other thread can be inside an rx/tx burst on it):
    /// `Ok(false)` without touching it otherwise. `Err((op, ret))` when a call fails.
    pub(in crate::port::dpdk) fn restart(
        sets: &mut [&mut Queues],
    ) -> Result<bool, (&'static str, c_int)> {
        let Some(first) = sets.first() else {
            return Ok(true);
        };
        let dev = Arc::clone(&first.device);
        // `dev` plus one per set given: no other set of the device exists (only sets hold
        // it), and the sets are borrowed mutably, so none is in use.
        if Arc::strong_count(&dev) != sets.len() + 1
            || sets.iter().any(|s| !Arc::ptr_eq(&s.device, &dev))
        {
            return Ok(false);
        }
        // SAFETY: no thread is in rx/tx burst on the device (see above); a stopped,
        // configured port may be started again.
        let ret = unsafe { sys::ns_eth_dev_stop(dev.port_id) };
        if ret < 0 {
            return Err(("rte_eth_dev_stop", ret));
        }
        // SAFETY: as above; the queues set up at open are kept across stop/start.
        let ret = unsafe { sys::ns_eth_dev_start(dev.port_id) };
        if ret < 0 {
            return Err(("rte_eth_dev_start", ret));
        }
        Ok(true)
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        // The device is stopped, not closed: closing releases vdevs (net_ring) for good, and a
        // stopped device can be configured and started again by a later `Device::open`.
        // SAFETY: the last `Queues` set is gone (only sets hold the device), so no thread is
        // inside rx/tx burst on it.
        unsafe {
            sys::ns_eth_dev_stop(self.port_id);
        }
        // The pool is deliberately not freed: the stopped device (and, for net_ring, rings
        // that outlive it) may still hold its mbufs. A bounded leak per `open`.
        if let Ok(mut open) = OPEN_DEVICES.lock() {
            open.retain(|&p| p != self.port_id);
        }
    }
}
