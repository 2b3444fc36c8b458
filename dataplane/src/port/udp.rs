//! Kernel UDP port: one non-blocking socket, batched syscalls (`recvmmsg`/`sendmmsg`), and
//! UDP GSO (`UDP_SEGMENT`) on send / GRO (`UDP_GRO`) on receive where the kernel has them.
//!
//! Linux only. The peer table maps each neighbour [`NodeId`] to its socket address (IPv4 or
//! IPv6; on an IPv6 socket IPv4 peers are reached as v4-mapped addresses). Datagrams whose
//! source is not in the table are dropped and counted ([`UdpCounters::rx_unknown_peer`]),
//! never returned.
//!
//! Invariants:
//! * nothing allocates per packet: the `mmsghdr`, `iovec`, `sockaddr` and control-message
//!   arrays (and, with GRO, the coalesced receive buffers) are allocated once at open;
//! * every raw pointer handed to the kernel is written immediately before the syscall that
//!   uses it and points into memory borrowed for the whole call (the caller's buffers or the
//!   port's own arrays), so no pointer outlives the call that set it;
//! * the socket is non-blocking: `recv_batch`/`send_batch` never block (back-pressure is a
//!   short count, [`UdpCounters::tx_would_block`]);
//! * GSO/GRO are optional: probed at open, switchable off in [`UdpConfig`], and a GSO send the
//!   kernel rejects (`EIO`/`EINVAL`) switches GSO off and resends the datagrams one by one.
//!
//! # Receive timestamps
//!
//! Each datagram is handed to the loop with the kernel's receive stamp (`SO_TIMESTAMPNS`,
//! read from the `recvmmsg` control messages) converted to the loop's clock
//! ([`super::rx_stamp`]), so a receive batch no longer collapses a train into one arrival
//! time and a thread that was descheduled does not read as a slow link. A kernel that
//! refuses the option is reported once (a warning) and the port falls back to the loop's
//! one clock read per batch; [`UdpPort::rx_timestamps`] is then false and every datagram
//! counts in [`UdpCounters::rx_unstamped`] — the sign that delay and rate estimates are
//! degraded. With GRO on (the default where the kernel has `UDP_GRO`), a coalesced message
//! carries one stamp, the first segment's, which every datagram split from it shares: a GSO
//! train that crossed the stack as one buffer (loopback, veth without a qdisc that splits
//! it) did arrive at once; one that was merged on receive (NIC or veth NAPI GRO) arrived
//! within one GRO flush, microseconds. Probes that need spacing must not rely on a train
//! staying split. The kernel turns receive stamping on asynchronously when the first socket
//! of the system asks (a deferred static key): datagrams of its first moments may be
//! stamped late — never early, so at worst they read like the batch-time fallback.
#![allow(unsafe_code)]

use super::rx_stamp;
use super::{PacketBuf, Port, PortError, RxSink};
use crate::NodeId;
use std::collections::HashMap;
use std::io;
use std::mem::size_of;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;

/// Largest UDP payload over IPv4 (65535 − 20-byte IP header − 8-byte UDP header); also the
/// bound for one GSO send.
pub const MAX_UDP_PAYLOAD: usize = 65_507;
/// Most datagrams the kernel accepts in one GSO send (`UDP_MAX_SEGMENTS`).
pub const GSO_MAX_SEGMENTS: usize = 64;
/// Bytes of one coalesced GRO receive buffer (a coalesced skb never exceeds 64 KiB).
const GRO_BUFFER_BYTES: usize = 1 << 16;
/// Most coalesced messages per GRO `recvmmsg` (each may hold up to 64 datagrams), which
/// bounds the GRO buffers to 1 MiB per port.
const GRO_MAX_MESSAGES: usize = 16;
/// Room for the control messages of one datagram: a `UDP_SEGMENT` u16 on send; a `UDP_GRO`
/// int and an `SCM_TIMESTAMPNS` timespec on receive (24 + 32 bytes on 64-bit Linux),
/// generously rounded up.
const CMSG_BUF_BYTES: usize = 128;
/// Datagrams one [`Port::recv_each`] call hands over at most (the stamps of a call are kept
/// in an array of this size, allocated at open).
const MAX_RX_PER_CALL: usize = 1024;

/// How to open a [`UdpPort`].
#[derive(Debug, Clone, PartialEq)]
pub struct UdpConfig {
    /// Local address to bind (port 0 = any free port; read it back with
    /// [`UdpPort::local_addr`]).
    pub bind: SocketAddr,
    /// Neighbours: node → socket address. May be empty at open and set later with
    /// [`UdpPort::set_peers`].
    pub peers: Vec<(NodeId, SocketAddr)>,
    /// Largest datagram carried. Default 1472 (one IPv4 datagram in a 1500-byte MTU, and the
    /// engine's default largest datagram).
    pub max_datagram_len: usize,
    /// Messages per `recvmmsg`/`sendmmsg` call. Default 64.
    pub batch: usize,
    /// Use UDP GSO on send when the kernel supports it. Default true.
    pub gso: bool,
    /// Use UDP GRO on receive when the kernel supports it. Default true.
    pub gro: bool,
    /// Requested `SO_RCVBUF`/`SO_SNDBUF` (best effort; the kernel may cap it). Default 4 MiB.
    pub socket_buffer_bytes: Option<usize>,
    /// Stamp every received datagram with the kernel's receive time (`SO_TIMESTAMPNS`; see
    /// the module docs). Default true.
    pub rx_timestamps: bool,
}

impl UdpConfig {
    /// Defaults (see the fields) for a socket bound to `bind` with no peers yet.
    pub fn new(bind: SocketAddr) -> Self {
        Self {
            bind,
            peers: Vec::new(),
            max_datagram_len: 1472,
            batch: 64,
            gso: true,
            gro: true,
            socket_buffer_bytes: Some(4 << 20),
            rx_timestamps: true,
        }
    }

    /// Rejects values that cannot work.
    pub fn validate(&self) -> Result<(), UdpError> {
        let bad = |field: &'static str, why: String| Err(UdpError::Config { field, why });
        if self.max_datagram_len == 0 || self.max_datagram_len > MAX_UDP_PAYLOAD {
            return bad(
                "max_datagram_len",
                format!("{} is not in 1..={MAX_UDP_PAYLOAD}", self.max_datagram_len),
            );
        }
        if self.batch == 0 || self.batch > 1024 {
            return bad("batch", format!("{} is not in 1..=1024", self.batch));
        }
        Ok(())
    }
}

/// Errors opening or configuring a [`UdpPort`].
#[derive(Debug, thiserror::Error)]
pub enum UdpError {
    #[error("udp port config: {field}: {why}")]
    Config { field: &'static str, why: String },
    #[error("binding a UDP socket to {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("configuring the UDP socket bound to {addr} ({what}): {source}")]
    Socket {
        addr: SocketAddr,
        what: &'static str,
        source: io::Error,
    },
    #[error("peer table: node {node} at {addr}: {why}")]
    Peer {
        node: NodeId,
        addr: SocketAddr,
        why: &'static str,
    },
}

/// What a [`UdpPort`] did. Datagram counts are after GSO/GRO splitting (one per engine
/// datagram), syscall counts are kernel calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpCounters {
    /// Datagrams returned by `recv_batch`.
    pub rx: u64,
    /// Payload bytes returned by `recv_batch`.
    pub rx_bytes: u64,
    /// Datagrams taken by `send_batch` and accepted by the kernel.
    pub tx: u64,
    /// Payload bytes accepted by the kernel.
    pub tx_bytes: u64,
    /// Datagrams dropped because their source address is not in the peer table.
    pub rx_unknown_peer: u64,
    /// Datagrams dropped because they did not fit the receive buffer.
    pub rx_truncated: u64,
    /// Datagrams that arrived coalesced by GRO (more than one per kernel message).
    pub rx_gro_coalesced: u64,
    /// Offers refused because the socket send buffer was full (each refused offer counts).
    pub tx_would_block: u64,
    /// Datagrams dropped on a send error (unreachable network, ...), as the network would.
    pub tx_errors: u64,
    /// Kernel messages that carried several datagrams with GSO.
    pub tx_gso_messages: u64,
    /// Times a GSO send was rejected and GSO switched off.
    pub gso_fallbacks: u64,
    /// `recvmmsg` calls.
    pub rx_syscalls: u64,
    /// `sendmmsg` calls.
    pub tx_syscalls: u64,
    /// Datagrams handed over without a usable kernel receive stamp (stamps refused, missing
    /// or implausible): their arrival is the loop's clock read of their batch. Non-zero means
    /// the delay and rate estimates built on arrival times are degraded.
    pub rx_unstamped: u64,
}

/// A socket address in the kernel's representation.
#[derive(Clone, Copy)]
struct RawAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

/// Aligned room for one control message.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct CmsgBuf([u8; CMSG_BUF_BYTES]);

/// Coalesced receive buffers for GRO and the state of splitting them.
struct GroRx {
    bufs: Vec<Box<[u8]>>,
    /// Per message of the last `recvmmsg`: length, segment size, sender (None = drop).
    len: Vec<usize>,
    seg: Vec<usize>,
    peer: Vec<Option<NodeId>>,
    /// Kernel receive stamp (`CLOCK_REALTIME` ns, 0 = none).
    stamp: Vec<u64>,
    /// Messages filled by the last `recvmmsg`; the next message and offset to split.
    filled: usize,
    cur: usize,
    off: usize,
}

/// A [`Port`] over one kernel UDP socket. See the module docs.
pub struct UdpPort {
    socket: UdpSocket,
    local: SocketAddr,
    v6: bool,
    max_len: usize,
    batch: usize,
    gso: bool,
    gro: bool,
    peer_of: HashMap<SocketAddr, NodeId>,
    addr_of: Vec<Option<RawAddr>>,
    counters: UdpCounters,
    // Send arrays: `batch` messages, `batch * GSO_MAX_SEGMENTS` (or `batch`) iovecs.
    tx_msgs: Vec<libc::mmsghdr>,
    tx_iov: Vec<libc::iovec>,
    tx_cmsg: Vec<CmsgBuf>,
    tx_segs: Vec<usize>,
    // Receive arrays: `batch` messages.
    rx_msgs: Vec<libc::mmsghdr>,
    rx_iov: Vec<libc::iovec>,
    rx_names: Vec<libc::sockaddr_storage>,
    rx_cmsg: Vec<CmsgBuf>,
    gro_rx: Option<GroRx>,
    /// The kernel stamps received datagrams (`SO_TIMESTAMPNS` accepted).
    rx_timestamps: bool,
    /// Per datagram returned by the last `recv_batch`: its kernel stamp (0 = none).
    rx_stamps: Vec<u64>,
}

// SAFETY: the raw pointers inside the mmsghdr/iovec arrays are scratch space: every one is
// rewritten right before the syscall that reads it and points either into the port's own heap
// arrays or into buffers borrowed for that call. Nothing is shared with another thread, so
// moving the port to another thread is sound.
unsafe impl Send for UdpPort {}

impl std::fmt::Debug for UdpPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpPort")
            .field("local", &self.local)
            .field("peers", &self.peer_of)
            .field("gso", &self.gso)
            .field("gro", &self.gro)
            .field("batch", &self.batch)
            .field("rx_timestamps", &self.rx_timestamps)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

fn zeroed_storage() -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is a plain C struct of integers; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

fn zeroed_mmsghdr() -> libc::mmsghdr {
    // SAFETY: mmsghdr is a plain C struct of integers and raw pointers; all-zero (null
    // pointers, zero lengths) is a valid value.
    unsafe { std::mem::zeroed() }
}

fn empty_iovec() -> libc::iovec {
    libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }
}

/// `CMSG_SPACE(n)`.
fn cmsg_space(n: usize) -> usize {
    // SAFETY: CMSG_SPACE is pure arithmetic on its argument (unsafe only by declaration).
    unsafe { libc::CMSG_SPACE(n as libc::c_uint) as usize }
}

/// `CMSG_LEN(n)`.
fn cmsg_len(n: usize) -> usize {
    // SAFETY: CMSG_LEN is pure arithmetic on its argument (unsafe only by declaration).
    unsafe { libc::CMSG_LEN(n as libc::c_uint) as usize }
}

/// The address the peer table uses as a key: IPv4-mapped IPv6 folded to IPv4, no flow info
/// or scope, so the same peer matches however the kernel spells its address.
fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(a) => SocketAddr::V4(a),
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, a.port())),
            None => SocketAddr::V6(SocketAddrV6::new(*a.ip(), a.port(), 0, 0)),
        },
    }
}

/// `addr` in the representation of a socket of family v6 (`true`) or v4 (`false`).
fn to_raw(addr: SocketAddr, v6: bool) -> Option<RawAddr> {
    let mut storage = zeroed_storage();
    let len = match (canonical(addr), v6) {
        (SocketAddr::V4(a), false) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and at least as aligned as
            // sockaddr_in (that is its purpose); the write stays inside `storage`.
            unsafe {
                std::ptr::write(
                    (&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>(),
                    sin,
                )
            };
            size_of::<libc::sockaddr_in>()
        }
        (SocketAddr::V6(_), false) => return None,
        (a, true) => {
            let (ip, port, flowinfo, scope) = match (a, addr) {
                (SocketAddr::V4(v4), _) => (v4.ip().to_ipv6_mapped(), v4.port(), 0, 0),
                (SocketAddr::V6(c), SocketAddr::V6(orig)) => {
                    (*c.ip(), c.port(), orig.flowinfo(), orig.scope_id())
                }
                (SocketAddr::V6(c), SocketAddr::V4(_)) => (*c.ip(), c.port(), 0, 0),
            };
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: port.to_be(),
                sin6_flowinfo: flowinfo,
                sin6_addr: libc::in6_addr {
                    s6_addr: ip.octets(),
                },
                sin6_scope_id: scope,
            };
            // SAFETY: sockaddr_storage is larger than and at least as aligned as
            // sockaddr_in6 (that is its purpose); the write stays inside `storage`.
            unsafe {
                std::ptr::write(
                    (&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>(),
                    sin6,
                )
            };
            size_of::<libc::sockaddr_in6>()
        }
    };
    Some(RawAddr {
        storage,
        len: len as libc::socklen_t,
    })
}

/// What the control messages of a received message say: the GRO segment size (`UDP_GRO`,
/// when coalesced) and the kernel receive stamp (`SCM_TIMESTAMPNS`, `CLOCK_REALTIME` ns,
/// 0 when absent).
fn read_rx_cmsgs(hdr: &libc::msghdr) -> (Option<usize>, u64) {
    let (mut seg, mut stamp) = (None, 0);
    if hdr.msg_control.is_null() {
        return (seg, stamp);
    }
    // SAFETY: after recvmmsg, msg_control/msg_controllen describe the control messages the
    // kernel wrote inside the port's rx_cmsg buffer (the pointer was set by prepare_rx and
    // the buffer is alive); CMSG_FIRSTHDR/CMSG_NXTHDR only return headers lying within
    // msg_controllen (or null). Payloads are read unaligned and only when cmsg_len says the
    // whole payload is there: a c_int for UDP_GRO, a timespec for SCM_TIMESTAMPNS.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(hdr);
        while !c.is_null() {
            let (level, kind, len) = ((*c).cmsg_level, (*c).cmsg_type, (*c).cmsg_len as usize);
            if level == libc::SOL_UDP
                && kind == libc::UDP_GRO
                && len >= cmsg_len(size_of::<libc::c_int>())
            {
                let s = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                if s > 0 {
                    seg = Some(s as usize);
                }
            } else if level == libc::SOL_SOCKET
                && kind == libc::SCM_TIMESTAMPNS
                && len >= cmsg_len(size_of::<libc::timespec>())
            {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::timespec>());
                if ts.tv_sec > 0 {
                    stamp = (ts.tv_sec as u64)
                        .saturating_mul(1_000_000_000)
                        .saturating_add(ts.tv_nsec as u64);
                }
            }
            c = libc::CMSG_NXTHDR(hdr, c);
        }
    }
    (seg, stamp)
}

/// The canonical address in a `sockaddr_storage` the kernel filled (`len` bytes valid).
fn from_raw(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match storage.ss_family as libc::c_int {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, the kernel wrote at
            // least that many bytes, and sockaddr_storage is suitably sized and aligned.
            let sin =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the family says the storage holds a sockaddr_in6, the kernel wrote at
            // least that many bytes, and sockaddr_storage is suitably sized and aligned.
            let sin6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            Some(canonical(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                0,
                0,
            ))))
        }
        _ => None,
    }
}

fn setsockopt_int(
    fd: libc::c_int,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` is a live c_int and the length passed is its size; the kernel only
    // reads it. An invalid fd/option is reported through the return value.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn getsockopt_int(fd: libc::c_int, level: libc::c_int, name: libc::c_int) -> io::Result<i32> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are live locals; the kernel writes at most `len` bytes into
    // `value` and updates `len`.
    let r = unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

impl UdpPort {
    /// Binds the socket, makes it non-blocking, sizes its buffers, probes GSO/GRO and
    /// preallocates every array the hot path uses.
    pub fn open(cfg: &UdpConfig) -> Result<Self, UdpError> {
        cfg.validate()?;
        let socket = UdpSocket::bind(cfg.bind).map_err(|source| UdpError::Bind {
            addr: cfg.bind,
            source,
        })?;
        let sock_err = |what: &'static str| {
            move |source: io::Error| UdpError::Socket {
                addr: cfg.bind,
                what,
                source,
            }
        };
        socket
            .set_nonblocking(true)
            .map_err(sock_err("set non-blocking"))?;
        let local = socket.local_addr().map_err(sock_err("local address"))?;
        let fd = socket.as_raw_fd();
        if let Some(bytes) = cfg.socket_buffer_bytes {
            let bytes = bytes.min(i32::MAX as usize) as libc::c_int;
            // Best effort: the privileged *FORCE variants ignore rmem_max/wmem_max; the
            // plain ones are capped by them. Neither failing is fatal.
            for (force, plain) in [
                (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
                (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
            ] {
                if setsockopt_int(fd, libc::SOL_SOCKET, force, bytes).is_err() {
                    let _ = setsockopt_int(fd, libc::SOL_SOCKET, plain, bytes);
                }
            }
        }
        let gso = cfg.gso && getsockopt_int(fd, libc::SOL_UDP, libc::UDP_SEGMENT).is_ok();
        let rx_timestamps = cfg.rx_timestamps
            && match setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1) {
                Ok(()) => true,
                Err(error) => {
                    tracing::warn!(
                        local = %local, %error,
                        "the kernel refused SO_TIMESTAMPNS: datagrams get their batch's clock \
                         read as arrival time; delay and rate estimates are degraded"
                    );
                    false
                }
            };
        let gro = cfg.gro && setsockopt_int(fd, libc::SOL_UDP, libc::UDP_GRO, 1).is_ok();
        let batch = cfg.batch;
        let tx_iov_len = if gso { batch * GSO_MAX_SEGMENTS } else { batch };
        let gro_rx = gro.then(|| GroRx {
            bufs: (0..batch.min(GRO_MAX_MESSAGES))
                .map(|_| vec![0u8; GRO_BUFFER_BYTES].into_boxed_slice())
                .collect(),
            len: vec![0; batch.min(GRO_MAX_MESSAGES)],
            seg: vec![0; batch.min(GRO_MAX_MESSAGES)],
            peer: vec![None; batch.min(GRO_MAX_MESSAGES)],
            stamp: vec![0; batch.min(GRO_MAX_MESSAGES)],
            filled: 0,
            cur: 0,
            off: 0,
        });
        let mut port = Self {
            socket,
            local,
            v6: local.is_ipv6(),
            max_len: cfg.max_datagram_len,
            batch,
            gso,
            gro,
            peer_of: HashMap::new(),
            addr_of: Vec::new(),
            counters: UdpCounters::default(),
            tx_msgs: vec![zeroed_mmsghdr(); batch],
            tx_iov: vec![empty_iovec(); tx_iov_len],
            tx_cmsg: vec![CmsgBuf([0; CMSG_BUF_BYTES]); batch],
            tx_segs: vec![0; batch],
            rx_msgs: vec![zeroed_mmsghdr(); batch],
            rx_iov: vec![empty_iovec(); batch],
            rx_names: vec![zeroed_storage(); batch],
            rx_cmsg: vec![CmsgBuf([0; CMSG_BUF_BYTES]); batch],
            gro_rx,
            rx_timestamps,
            rx_stamps: vec![0; MAX_RX_PER_CALL],
        };
        port.set_peers(&cfg.peers)?;
        Ok(port)
    }

    /// Replaces the peer table. A node may appear once and an address once; on an IPv4
    /// socket every peer must be IPv4 (or v4-mapped). Not for the hot path (allocates).
    pub fn set_peers(&mut self, peers: &[(NodeId, SocketAddr)]) -> Result<(), UdpError> {
        let mut peer_of = HashMap::with_capacity(peers.len());
        let mut addr_of: Vec<Option<RawAddr>> = Vec::new();
        for &(node, addr) in peers {
            let err = |why| UdpError::Peer { node, addr, why };
            let raw = to_raw(addr, self.v6)
                .ok_or_else(|| err("an IPv6 peer cannot be reached from an IPv4 socket"))?;
            if peer_of.insert(canonical(addr), node).is_some() {
                return Err(err("address listed twice"));
            }
            let i = node as usize;
            if addr_of.len() <= i {
                addr_of.resize(i + 1, None);
            }
            if addr_of[i].replace(raw).is_some() {
                return Err(err("node listed twice"));
            }
        }
        self.peer_of = peer_of;
        self.addr_of = addr_of;
        Ok(())
    }

    /// The address the socket is bound to (with the port the kernel chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// What the port did so far.
    pub fn counters(&self) -> UdpCounters {
        self.counters
    }

    /// Whether sends use UDP GSO (probed at open; switched off after a rejected GSO send).
    pub fn gso_enabled(&self) -> bool {
        self.gso
    }

    /// Whether receives use UDP GRO (probed at open).
    pub fn gro_enabled(&self) -> bool {
        self.gro
    }

    /// Whether the kernel stamps received datagrams (`SO_TIMESTAMPNS` accepted at open).
    /// False: arrival times are per batch and the estimates built on them degraded.
    pub fn rx_timestamps(&self) -> bool {
        self.rx_timestamps
    }

    fn peer_addr(&self, node: NodeId) -> Option<&RawAddr> {
        self.addr_of.get(node as usize).and_then(Option::as_ref)
    }

    /// Fills the send arrays for `bufs` (all peers known): returns (messages, datagrams).
    fn build_tx(&mut self, bufs: &[PacketBuf]) -> (usize, usize) {
        let mut m = 0;
        let mut i = 0;
        while m < self.batch && i < bufs.len() && i < self.tx_iov.len() {
            let first = &bufs[i];
            let size = first.len;
            let mut count = 1;
            if self.gso && size > 0 {
                let max_segs = GSO_MAX_SEGMENTS.min(MAX_UDP_PAYLOAD / size);
                while count < max_segs && i + count < bufs.len() && i + count < self.tx_iov.len() {
                    let b = &bufs[i + count];
                    if b.peer != first.peer || b.len == 0 || b.len > size {
                        break;
                    }
                    count += 1;
                    if b.len < size {
                        break; // only the last segment of a GSO message may be short
                    }
                }
            }
            for (iov, b) in self.tx_iov[i..i + count].iter_mut().zip(&bufs[i..]) {
                let bytes = b.bytes();
                iov.iov_base = bytes.as_ptr() as *mut libc::c_void;
                iov.iov_len = bytes.len();
            }
            let addr = self
                .addr_of
                .get(first.peer as usize)
                .and_then(Option::as_ref)
                .expect("send_batch checked every peer");
            let hdr = &mut self.tx_msgs[m].msg_hdr;
            hdr.msg_name = (&addr.storage as *const libc::sockaddr_storage) as *mut libc::c_void;
            hdr.msg_namelen = addr.len;
            hdr.msg_iov = &mut self.tx_iov[i];
            hdr.msg_iovlen = count as _;
            hdr.msg_flags = 0;
            if count > 1 {
                let cbuf = &mut self.tx_cmsg[m];
                hdr.msg_control = cbuf.0.as_mut_ptr().cast();
                hdr.msg_controllen = cmsg_space(size_of::<u16>()) as _;
                // SAFETY: msg_control points at a live, 8-aligned CMSG_BUF_BYTES buffer and
                // msg_controllen (CMSG_SPACE(2) = 24 on 64-bit Linux) is within it, so
                // CMSG_FIRSTHDR returns a pointer to its start, and the header plus the u16
                // written through CMSG_DATA lie inside the buffer.
                unsafe {
                    let c = libc::CMSG_FIRSTHDR(hdr);
                    (*c).cmsg_level = libc::SOL_UDP;
                    (*c).cmsg_type = libc::UDP_SEGMENT;
                    (*c).cmsg_len = cmsg_len(size_of::<u16>()) as _;
                    std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), size as u16);
                }
                self.counters.tx_gso_messages += 1;
            } else {
                hdr.msg_control = std::ptr::null_mut();
                hdr.msg_controllen = 0;
            }
            self.tx_msgs[m].msg_len = 0;
            self.tx_segs[m] = count;
            m += 1;
            i += count;
        }
        (m, i)
    }

    /// Receives straight into the caller's buffers (no GRO).
    fn recv_plain(&mut self, bufs: &mut [PacketBuf]) -> Result<usize, PortError> {
        let n = bufs.len().min(self.batch);
        let stamps = self.rx_timestamps;
        for (j, b) in bufs[..n].iter_mut().enumerate() {
            self.prepare_rx(j, &mut b.data, stamps.then_some(j));
        }
        let r = self.recvmmsg(n)?;
        let mut k = 0;
        for j in 0..r {
            let msg = &self.rx_msgs[j];
            if msg.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                self.counters.rx_truncated += 1;
                continue;
            }
            let Some(peer) = self.lookup(j) else {
                self.counters.rx_unknown_peer += 1;
                continue;
            };
            let len = msg.msg_len as usize;
            let (_, stamp) = read_rx_cmsgs(&msg.msg_hdr);
            if let Some(s) = self.rx_stamps.get_mut(k) {
                *s = stamp;
            }
            bufs.swap(k, j);
            bufs[k].len = len;
            bufs[k].peer = peer;
            self.counters.rx += 1;
            self.counters.rx_bytes += len as u64;
            k += 1;
        }
        Ok(k)
    }

    /// Points receive message `j` at `data`, its name slot and (with `control`) a control
    /// buffer. The pointers are valid while `data` and the port's arrays are not moved,
    /// i.e. for the `recvmmsg` that follows.
    fn prepare_rx(&mut self, j: usize, data: &mut [u8], control: Option<usize>) {
        self.rx_iov[j] = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: data.len(),
        };
        let hdr = &mut self.rx_msgs[j].msg_hdr;
        hdr.msg_name = (&mut self.rx_names[j] as *mut libc::sockaddr_storage).cast();
        hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        hdr.msg_iov = &mut self.rx_iov[j];
        hdr.msg_iovlen = 1;
        match control {
            Some(c) => {
                hdr.msg_control = self.rx_cmsg[c].0.as_mut_ptr().cast();
                hdr.msg_controllen = CMSG_BUF_BYTES as _;
            }
            None => {
                hdr.msg_control = std::ptr::null_mut();
                hdr.msg_controllen = 0;
            }
        }
        hdr.msg_flags = 0;
        self.rx_msgs[j].msg_len = 0;
    }

    /// The peer node of received message `j`, if its source is in the table.
    fn lookup(&self, j: usize) -> Option<NodeId> {
        let addr = from_raw(&self.rx_names[j], self.rx_msgs[j].msg_hdr.msg_namelen)?;
        self.peer_of.get(&addr).copied()
    }

    /// One `recvmmsg` over the first `n` prepared messages; would-block is 0.
    fn recvmmsg(&mut self, n: usize) -> Result<usize, PortError> {
        if n == 0 {
            return Ok(0);
        }
        self.counters.rx_syscalls += 1;
        // SAFETY: rx_msgs[..n] were fully initialized just before this call: each names a
        // sockaddr_storage of rx_names, one iovec of rx_iov covering a live buffer the port
        // or the caller lends for this call, and either no control buffer or one rx_cmsg
        // entry. The kernel writes only within those lengths. MSG_DONTWAIT and a null
        // timeout make the call return at once.
        let r = unsafe {
            libc::recvmmsg(
                self.socket.as_raw_fd(),
                self.rx_msgs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN | libc::EINTR | libc::ECONNREFUSED) => Ok(0),
            _ => Err(PortError::Io(e)),
        }
    }

    /// Receives into the coalesced GRO buffers and splits them into the caller's buffers.
    fn recv_gro(&mut self, bufs: &mut [PacketBuf]) -> Result<usize, PortError> {
        let mut k = self.drain_gro(bufs, 0);
        let pending = self.gro_rx.as_ref().is_some_and(|g| g.cur < g.filled);
        if k == bufs.len() || pending {
            return Ok(k);
        }
        let n = self.batch.min(GRO_MAX_MESSAGES);
        let mut g = self.gro_rx.take().expect("GRO is on");
        for (j, data) in g.bufs.iter_mut().enumerate().take(n) {
            self.prepare_rx(j, data, Some(j));
        }
        self.gro_rx = Some(g);
        let r = self.recvmmsg(n)?;
        for j in 0..r {
            let len = self.rx_msgs[j].msg_len as usize;
            let hdr = &self.rx_msgs[j].msg_hdr;
            let (gro_seg, stamp) = read_rx_cmsgs(hdr);
            let seg = gro_seg.unwrap_or(len);
            let truncated = hdr.msg_flags & libc::MSG_TRUNC != 0;
            let segments = if seg == 0 { 1 } else { len.div_ceil(seg) } as u64;
            let peer = if truncated {
                self.counters.rx_truncated += segments;
                None
            } else {
                let p = self.lookup(j);
                if p.is_none() {
                    self.counters.rx_unknown_peer += segments;
                } else if segments > 1 {
                    self.counters.rx_gro_coalesced += segments;
                }
                p
            };
            let g = self.gro_rx.as_mut().expect("GRO is on");
            g.len[j] = len;
            g.seg[j] = seg;
            g.peer[j] = peer;
            g.stamp[j] = stamp;
        }
        let g = self.gro_rx.as_mut().expect("GRO is on");
        g.filled = r;
        g.cur = 0;
        g.off = 0;
        k = self.drain_gro(bufs, k);
        Ok(k)
    }

    /// Copies pending GRO segments into `bufs[k..]`; returns the new fill count.
    fn drain_gro(&mut self, bufs: &mut [PacketBuf], mut k: usize) -> usize {
        let Some(g) = self.gro_rx.as_mut() else {
            return k;
        };
        while k < bufs.len() && g.cur < g.filled {
            let j = g.cur;
            let Some(peer) = g.peer[j] else {
                g.cur += 1;
                g.off = 0;
                continue;
            };
            let len = g.len[j];
            let seg_len = g.seg[j].min(len - g.off);
            let dst = &mut bufs[k];
            if seg_len <= dst.data.len() {
                dst.data[..seg_len].copy_from_slice(&g.bufs[j][g.off..g.off + seg_len]);
                dst.len = seg_len;
                dst.peer = peer;
                if let Some(s) = self.rx_stamps.get_mut(k) {
                    *s = g.stamp[j];
                }
                self.counters.rx += 1;
                self.counters.rx_bytes += seg_len as u64;
                k += 1;
            } else {
                self.counters.rx_truncated += 1;
            }
            g.off += seg_len;
            if g.off >= len {
                g.cur += 1;
                g.off = 0;
            }
        }
        k
    }
}

impl Port for UdpPort {
    fn max_datagram_len(&self) -> usize {
        self.max_len
    }

    fn recv_batch(&mut self, bufs: &mut [PacketBuf]) -> Result<usize, PortError> {
        if self.gro {
            self.recv_gro(bufs)
        } else {
            self.recv_plain(bufs)
        }
    }

    /// Hands each datagram over with its kernel receive stamp in the loop's clock (see the
    /// module docs and [`super::rx_stamp`]).
    fn recv_each(
        &mut self,
        scratch: &mut [PacketBuf],
        sink: &mut dyn RxSink,
    ) -> Result<usize, PortError> {
        let n = scratch.len().min(MAX_RX_PER_CALL);
        let k = self.recv_batch(&mut scratch[..n])?;
        // The one real-time clock read of the call, after the receive and just before the
        // loop's own clock read: ages measured up to it make arrivals late by the few ns
        // between the two reads, never early.
        let realtime_now = if self.rx_timestamps && k > 0 {
            rx_stamp::realtime_ns()
        } else {
            0
        };
        let now = sink.received();
        for (b, &stamp) in scratch[..k].iter().zip(&self.rx_stamps) {
            let arrival = rx_stamp::to_loop_time(stamp, realtime_now, now).unwrap_or_else(|| {
                self.counters.rx_unstamped += 1;
                now
            });
            sink.datagram(b.peer, b.bytes(), arrival);
        }
        Ok(k)
    }

    fn send_batch(&mut self, bufs: &[PacketBuf]) -> Result<usize, PortError> {
        if let Some(b) = bufs.iter().find(|b| self.peer_addr(b.peer).is_none()) {
            return Err(PortError::UnknownPeer(b.peer));
        }
        let fd = self.socket.as_raw_fd();
        let mut done = 0;
        while done < bufs.len() {
            let (m, _) = self.build_tx(&bufs[done..]);
            self.counters.tx_syscalls += 1;
            // SAFETY: tx_msgs[..m] were fully initialized by build_tx just now: each names a
            // sockaddr in addr_of, iovecs of tx_iov covering bytes of `bufs` (borrowed for
            // this whole call), and either no control buffer or a UDP_SEGMENT message in
            // tx_cmsg. The kernel only reads them (and writes msg_len). The socket is
            // non-blocking.
            let r = unsafe { libc::sendmmsg(fd, self.tx_msgs.as_mut_ptr(), m as libc::c_uint, 0) };
            if r >= 0 {
                for j in 0..r as usize {
                    let segs = self.tx_segs[j];
                    let bytes: usize = bufs[done..done + segs].iter().map(|b| b.len).sum();
                    self.counters.tx += segs as u64;
                    self.counters.tx_bytes += bytes as u64;
                    done += segs;
                }
                continue; // a short count means the next message failed: retry to see why
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::EAGAIN | libc::ENOBUFS) => {
                    self.counters.tx_would_block += (bufs.len() - done) as u64;
                    break;
                }
                Some(libc::EIO | libc::EINVAL) if self.tx_segs[0] > 1 => {
                    // The kernel or the device rejected segmentation offload: send the
                    // datagrams one by one from now on.
                    self.gso = false;
                    self.counters.gso_fallbacks += 1;
                    tracing::debug!(local = %self.local, error = %e, "UDP GSO rejected; disabled");
                }
                Some(libc::EBADF | libc::ENOTSOCK | libc::EFAULT) => return Err(PortError::Io(e)),
                _ => {
                    // Unreachable, refused, too big, ...: the datagrams of the first message
                    // are lost as the network would lose them; loss recovery resends.
                    let segs = self.tx_segs[0];
                    self.counters.tx_errors += segs as u64;
                    done += segs;
                }
            }
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_through_the_kernel_representation() {
        let cases: [SocketAddr; 3] = [
            "10.1.2.3:4000".parse().unwrap(),
            "[2001:db8::7]:9".parse().unwrap(),
            "[::ffff:10.1.2.3]:4000".parse().unwrap(),
        ];
        for a in cases {
            let raw = to_raw(a, true).unwrap();
            assert_eq!(from_raw(&raw.storage, raw.len), Some(canonical(a)), "{a}");
        }
        let v4: SocketAddr = "10.1.2.3:4000".parse().unwrap();
        let raw = to_raw(v4, false).unwrap();
        assert_eq!(from_raw(&raw.storage, raw.len), Some(v4));
        assert!(to_raw("[2001:db8::7]:9".parse().unwrap(), false).is_none());
        assert_eq!(canonical(cases[2]), v4);
    }

    #[test]
    fn control_buffers_fit_one_message() {
        assert!(
            cmsg_space(size_of::<libc::c_int>()) + cmsg_space(size_of::<libc::timespec>())
                <= CMSG_BUF_BYTES,
            "UDP_GRO and SCM_TIMESTAMPNS together"
        );
        assert!(cmsg_len(size_of::<u16>()) <= cmsg_space(size_of::<u16>()));
    }

    #[test]
    fn config_validation_names_the_field() {
        let mut c = UdpConfig::new("127.0.0.1:0".parse().unwrap());
        c.validate().unwrap();
        c.batch = 0;
        assert!(matches!(
            c.validate(),
            Err(UdpError::Config { field: "batch", .. })
        ));
        c.batch = 8;
        c.max_datagram_len = 70_000;
        assert!(matches!(
            c.validate(),
            Err(UdpError::Config {
                field: "max_datagram_len",
                ..
            })
        ));
    }

    #[test]
    fn peer_table_rejects_duplicates_and_v6_on_v4() {
        let mut p = UdpPort::open(&UdpConfig::new("127.0.0.1:0".parse().unwrap())).unwrap();
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        assert!(p.set_peers(&[(0, a), (0, b)]).is_err());
        assert!(p.set_peers(&[(0, a), (1, a)]).is_err());
        assert!(p.set_peers(&[(0, "[::1]:5".parse().unwrap())]).is_err());
        p.set_peers(&[(0, a), (3, b)]).unwrap();
        assert!(p.peer_addr(3).is_some() && p.peer_addr(1).is_none());
        let bufs = [PacketBuf::new(16)];
        assert_eq!(p.send_batch(&bufs).unwrap(), 1);
        let mut b1 = PacketBuf::new(16);
        b1.peer = 9;
        assert!(matches!(
            p.send_batch(&[b1]),
            Err(PortError::UnknownPeer(9))
        ));
    }

    /// Records what the loop would get.
    struct Arrivals {
        loop_now: crate::Nanos,
        got: Vec<(NodeId, usize, crate::Nanos)>,
    }

    impl RxSink for Arrivals {
        fn received(&mut self) -> crate::Nanos {
            self.loop_now
        }
        fn datagram(&mut self, peer: NodeId, datagram: &[u8], arrival: crate::Nanos) {
            self.got.push((peer, datagram.len(), arrival));
        }
    }

    /// Sends `lens` datagrams from `tx` to `rx` (node 0 at `tx`, node 1 at `rx`), lets
    /// them wait `wait` in the socket (at least that long however busy the machine is),
    /// then receives them at loop time `loop_now`.
    fn exchange(
        tx: &mut UdpPort,
        rx: &mut UdpPort,
        lens: &[usize],
        wait: std::time::Duration,
        loop_now: crate::Nanos,
    ) -> Vec<(NodeId, usize, crate::Nanos)> {
        let mut out = PacketBuf::batch(lens.len(), 100);
        for (b, &len) in out.iter_mut().zip(lens) {
            b.len = len;
            b.peer = 0;
        }
        assert_eq!(tx.send_batch(&out).unwrap(), lens.len());
        std::thread::sleep(wait);
        let mut sink = Arrivals {
            loop_now,
            got: Vec::new(),
        };
        let mut scratch = PacketBuf::batch(8, 1500);
        while sink.got.len() < lens.len() {
            rx.recv_each(&mut scratch, &mut sink).unwrap();
        }
        sink.got
    }

    /// Datagrams that waited in the socket are handed over with the kernel's receive time
    /// (at least the wait before the loop's time), in order; with stamps off (or refused)
    /// they get the loop's time and count as unstamped.
    #[test]
    fn datagrams_carry_their_kernel_receive_time() {
        const WAIT: std::time::Duration = std::time::Duration::from_millis(20);
        let wait_ns = WAIT.as_nanos() as crate::Nanos;
        let loop_now = 10 * crate::NANOS_PER_SEC;
        for (gro, stamps) in [(false, true), (true, true), (false, false)] {
            let mut rc = UdpConfig::new("127.0.0.1:0".parse().unwrap());
            rc.gro = gro;
            rc.rx_timestamps = stamps;
            let mut rx = UdpPort::open(&rc).unwrap();
            let mut tx = UdpPort::open(&UdpConfig::new("127.0.0.1:0".parse().unwrap())).unwrap();
            rx.set_peers(&[(1, tx.local_addr())]).unwrap();
            tx.set_peers(&[(0, rx.local_addr())]).unwrap();
            assert_eq!(rx.rx_timestamps(), stamps);
            if stamps {
                // The kernel turns receive stamping on asynchronously (a deferred static
                // key) when the first socket asks; until then datagrams are stamped late
                // (never early). Wait for it: a stamped datagram shows its wait.
                let ready = (0..250).any(|_| {
                    let got = exchange(&mut tx, &mut rx, &[1], WAIT, loop_now);
                    got[0].2 <= loop_now - wait_ns
                });
                assert!(ready, "the kernel never stamped a datagram on arrival");
            }
            let unstamped_before = rx.counters().rx_unstamped;
            let got = exchange(&mut tx, &mut rx, &[10, 11, 12], WAIT, loop_now);
            let lens: Vec<usize> = got.iter().map(|g| g.1).collect();
            assert_eq!(lens, [10, 11, 12], "gro {gro}, stamps {stamps}");
            assert!(got.iter().all(|g| g.0 == 1));
            let unstamped = rx.counters().rx_unstamped - unstamped_before;
            if stamps {
                assert_eq!(unstamped, 0);
                for g in &got {
                    assert!(
                        g.2 <= loop_now - wait_ns,
                        "gro {gro}: arrival {} is not the kernel's ({loop_now})",
                        g.2
                    );
                }
                assert!(got.windows(2).all(|w| w[0].2 <= w[1].2), "in order");
            } else {
                assert_eq!(unstamped, 3);
                assert!(got.iter().all(|g| g.2 == loop_now));
            }
        }
    }
}
