//! Packet protection: every datagram (data, ack, probe, heartbeat, round-done) is sealed
//! with AES-128-GCM from `ring`, keyed per sender, with the sender's packet number as nonce.
//!
//! **Modes** ([`ProtectionMode`], `EngineConfig::protection`):
//! * `encrypt` — the payload is encrypted, the header authenticated as associated data;
//!   flags `AUTH | ENCRYPTED`.
//! * `authenticate` — the payload travels in clear; the tag is the AES-GCM tag of the same
//!   seal as `encrypt` (header as associated data, payload as plaintext) computed over a
//!   scratch copy of the payload, whose ciphertext is discarded; the receiver repeats the seal
//!   on a copy and compares tags in constant time; flag `AUTH`. This is what `encrypt` costs
//!   plus one copy: `ring` feeds associated data to GHASH a block at a time, so GMAC over the
//!   whole datagram (empty plaintext, header ‖ payload as associated data) measured 2.6x the
//!   cost of a seal (`cargo bench --bench protect`). Forging a tag still means forging an
//!   AES-GCM tag (the receiver checks GHASH over payload ⊕ keystream of a fresh nonce).
//! * `off` — no tag; only when configured explicitly (`--no-mac` is an alias).
//!
//! In both protected modes the TTL byte is taken as zero (relays decrement it and forward the
//! datagram otherwise untouched); everything else in the header is authenticated.
//!
//! **Keys** (HKDF-SHA256):
//! ```text
//! job_key     = HKDF-Extract(salt = "netstorm v1 job <job id>", secret)
//! traffic key = HKDF-Expand(job_key, "dp" ‖ run_id ‖ sender ‖ sender_start ‖ key_phase, 28)
//!             = AES-128 key (16 bytes) ‖ IV (12 bytes)
//! nonce       = IV XOR (0^32 ‖ packet_number)          key_phase = packet_number >> 22
//! ```
//! `secret` is the job's secret file ([`KeySource::Secret`]); the emulator, tests and CI use
//! [`KeySource::InsecureJobDerived`], a fixed public string: the key then follows from the
//! (public) job id and protects against corruption and foreign traffic, **not** against an
//! attacker. `run_id` (`EngineConfig::run_id`) separates runs of one job.
//!
//! **Nonces are never reused under a key.** Each engine numbers every datagram it sends with
//! one 64-bit counter (a retransmission is a new packet with a new number, sealed afresh).
//! A restarted sender picks a new `sender_start` ([`new_sender_start`]: the wall clock in
//! ns with random low bits, strictly increasing within a process), which selects new keys.
//! The key phase changes every 2^22 packets, well under RFC 9001 §6.6's 2^23-packet
//! confidentiality limit for AES-GCM; sender and receivers derive it from the packet number,
//! with no coordination.
//!
//! **Receivers** ([`Opener`]) keep, per sender, a few derived keys (current and next phase,
//! the next one derived as soon as a phase's first authentic packet opened, so a rollover
//! and reordering over a phase boundary cost nothing), the newest `sender_start` that opened
//! (packets of an older start are rejected: the sender restarted) and one anti-replay window
//! per path (WireGuard-style, [`REPLAY_WINDOW_BITS`] packet numbers; relay paths reorder, so
//! one window per path). The window is updated only after a tag verified. A key is derived
//! only for a (sender, start, phase) not cached, at most [`DERIVE_BURST`] at once and
//! [`DERIVE_PER_SEC`] per second per sender: a forged `sender_start` costs the attacker one
//! failed derivation and open, and flooding them is counted (`rx_key_limited`), not paid for.
//!
//! Nothing here allocates, locks or reads a clock per packet (a receiver's per-path windows
//! are allocated the first time a path is seen; `authenticate`'s scratch buffers once, when
//! the sealer or opener is built; [`new_sender_start`] reads the clock once per engine).
//! The AES-GCM keys (`LessSafeKey`: the expanded AES key schedule and GHASH table) are built
//! once per key phase, never per packet.

mod replay;
#[cfg(test)]
mod tests;

pub use replay::{ReplayWindow, REPLAY_WINDOW_BITS};

use crate::wire::{
    self, AUTH_TAG_LEN, FLAGS_OFFSET, HEADER_LEN, PACKET_NUMBER_OFFSET, SENDER_START_OFFSET,
    TTL_OFFSET,
};
use crate::{Nanos, NodeId};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, NONCE_LEN};
use ring::hkdf;
use std::sync::atomic::{AtomicU64, Ordering};

/// Shortest accepted job secret in bytes.
pub const MIN_SECRET_LEN: usize = 32;
/// Packets per key phase: the key changes at `packet_number >> DEFAULT_PHASE_SHIFT`.
pub const DEFAULT_PHASE_SHIFT: u32 = 22;
/// Keys a receiver may derive for one sender at once (then [`DERIVE_PER_SEC`]).
pub const DERIVE_BURST: u32 = 8;
/// Keys a receiver derives for one sender per second once the burst is spent.
pub const DERIVE_PER_SEC: u64 = 8;
/// Paths per sender a receiver keeps replay windows for.
pub const MAX_PATHS_PER_SENDER: usize = 1024;
/// Keys cached per sender.
const KEY_SLOTS: usize = 4;
/// The "secret" of [`KeySource::InsecureJobDerived`]: public, so the keys follow from the job id.
const INSECURE_SECRET: &[u8] = b"netstorm insecure job-derived keys: not a secret";

/// How datagrams are protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProtectionMode {
    /// Payload encrypted, header authenticated.
    #[default]
    Encrypt,
    /// Payload in clear, header and payload authenticated.
    Authenticate,
    /// No tag (explicit only).
    Off,
}

impl ProtectionMode {
    /// The config spelling: "encrypt", "authenticate", "off".
    pub const fn name(self) -> &'static str {
        match self {
            ProtectionMode::Encrypt => "encrypt",
            ProtectionMode::Authenticate => "authenticate",
            ProtectionMode::Off => "off",
        }
    }

    /// Parses [`ProtectionMode::name`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "encrypt" => Some(ProtectionMode::Encrypt),
            "authenticate" => Some(ProtectionMode::Authenticate),
            "off" => Some(ProtectionMode::Off),
            _ => None,
        }
    }

    /// Header flags a datagram sealed in this mode carries.
    pub const fn flags(self) -> u8 {
        match self {
            ProtectionMode::Encrypt => wire::flags::AUTH | wire::flags::ENCRYPTED,
            ProtectionMode::Authenticate => wire::flags::AUTH,
            ProtectionMode::Off => 0,
        }
    }
}

impl core::fmt::Display for ProtectionMode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// A job secret (at least [`MIN_SECRET_LEN`] bytes). `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct JobSecret(Box<[u8]>);

impl core::fmt::Debug for JobSecret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("JobSecret(<redacted>)")
    }
}

/// A secret that is too short.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a job secret needs at least {MIN_SECRET_LEN} bytes, got {0}")]
pub struct ShortSecret(pub usize);

impl JobSecret {
    /// A secret from its bytes (refused if shorter than [`MIN_SECRET_LEN`]).
    pub fn new(bytes: &[u8]) -> Result<Self, ShortSecret> {
        if bytes.len() < MIN_SECRET_LEN {
            return Err(ShortSecret(bytes.len()));
        }
        Ok(Self(bytes.into()))
    }

    /// A secret from a 128-bit `mac_key` of a config written before `secret_file` (still a
    /// 128-bit secret; new deployments use a 32-byte secret file).
    pub fn from_mac_key(key: [u8; 16]) -> Self {
        Self(key.into())
    }

    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Where the job key comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum KeySource {
    /// Keys follow from the public job id: for the emulator, tests and CI only (not secret).
    #[default]
    InsecureJobDerived,
    /// Keys follow from the job's secret file.
    Secret(JobSecret),
}

/// The protection setting of an engine (`EngineConfig::protection`). Default: `encrypt`
/// with [`KeySource::InsecureJobDerived`] (the emulator's setting; real hosts configure a
/// secret).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Protection {
    /// What is sealed.
    pub mode: ProtectionMode,
    /// The job key's origin.
    pub keys: KeySource,
}

impl Protection {
    /// No protection.
    pub fn off() -> Self {
        Self {
            mode: ProtectionMode::Off,
            keys: KeySource::InsecureJobDerived,
        }
    }

    /// `mode` with keys from `secret`.
    pub fn with_secret(mode: ProtectionMode, secret: JobSecret) -> Self {
        Self {
            mode,
            keys: KeySource::Secret(secret),
        }
    }

    /// `mode` with the public job-derived keys (tests, emulator).
    pub fn insecure(mode: ProtectionMode) -> Self {
        Self {
            mode,
            keys: KeySource::InsecureJobDerived,
        }
    }

    /// True unless the mode is off.
    pub const fn enabled(&self) -> bool {
        !matches!(self.mode, ProtectionMode::Off)
    }

    /// Tag bytes each datagram carries (0 or [`AUTH_TAG_LEN`]).
    pub const fn tag_len(&self) -> usize {
        if self.enabled() {
            AUTH_TAG_LEN
        } else {
            0
        }
    }
}

/// A fresh `sender_start`: the wall clock in ns with 16 random low bits, and strictly greater
/// than any value returned before in this process (an engine re-created in the same process
/// must not reuse its keys). Read once per engine.
pub fn new_sender_start() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut random = [0u8; 2];
    // Without randomness the clock alone still orders restarts.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random);
    let candidate = (now & !0xFFFF) | u64::from(u16::from_be_bytes(random));
    let prev = LAST
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
            Some(candidate.max(last + 1))
        })
        .unwrap_or(0);
    candidate.max(prev + 1)
}

/// A new random job secret of 32 bytes (what `netstorm keygen` writes), from the operating
/// system's generator (ring's `SystemRandom`).
pub fn random_secret() -> Result<[u8; 32], ring::error::Unspecified> {
    let mut out = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut out)?;
    Ok(out)
}

/// The job key (HKDF-Extract of the secret).
fn job_key(keys: &KeySource, job: u32) -> hkdf::Prk {
    let salt_text = format!("netstorm v1 job {job}");
    let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, salt_text.as_bytes());
    salt.extract(match keys {
        KeySource::InsecureJobDerived => INSECURE_SECRET,
        KeySource::Secret(s) => s.bytes(),
    })
}

/// Length of the key material one traffic key takes: AES-128 key + IV.
struct TrafficKeyLen;

impl hkdf::KeyType for TrafficKeyLen {
    fn len(&self) -> usize {
        16 + NONCE_LEN
    }
}

/// One AEAD key and its IV.
struct TrafficKey {
    key: LessSafeKey,
    iv: [u8; NONCE_LEN],
}

impl TrafficKey {
    fn derive(job_key: &hkdf::Prk, run_id: u64, sender: NodeId, start: u64, phase: u64) -> Self {
        let (run, node, start, phase) = (
            run_id.to_be_bytes(),
            sender.to_be_bytes(),
            start.to_be_bytes(),
            phase.to_be_bytes(),
        );
        let info: [&[u8]; 5] = [b"dp", &run, &node, &start, &phase];
        let mut okm = [0u8; 16 + NONCE_LEN];
        job_key
            .expand(&info, TrafficKeyLen)
            .and_then(|o| o.fill(&mut okm))
            .expect("28 bytes are within HKDF-SHA256's output limit");
        let key = UnboundKey::new(&AES_128_GCM, &okm[..16]).expect("16-byte AES-128 key");
        let mut iv = [0u8; NONCE_LEN];
        iv.copy_from_slice(&okm[16..]);
        Self {
            key: LessSafeKey::new(key),
            iv,
        }
    }

    #[inline]
    fn nonce(&self, pn: u64) -> Nonce {
        let mut n = self.iv;
        for (b, p) in n[4..].iter_mut().zip(pn.to_be_bytes()) {
            *b ^= p;
        }
        Nonce::assume_unique_for_key(n)
    }
}

/// The header with the TTL byte zeroed: the associated data of both protected modes.
#[inline]
fn aad_header(datagram: &[u8]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h.copy_from_slice(&datagram[..HEADER_LEN]);
    h[TTL_OFFSET] = 0;
    h
}

#[inline]
fn read_u64(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_be_bytes(b)
}

/// The sending half: numbers and seals every datagram this engine emits.
pub struct Sealer {
    mode: ProtectionMode,
    job_key: hkdf::Prk,
    run_id: u64,
    sender: NodeId,
    start: u64,
    phase_shift: u32,
    next_pn: u64,
    phase: u64,
    key: TrafficKey,
    /// `authenticate`: where the payload is sealed for its tag (empty in other modes).
    scratch: Box<[u8]>,
}

/// The scratch buffer `authenticate` mode seals payloads in: the largest payload a datagram
/// can carry (empty in the other modes).
fn auth_scratch(mode: ProtectionMode) -> Box<[u8]> {
    if mode == ProtectionMode::Authenticate {
        vec![0u8; wire::MAX_DATAGRAM_LEN - HEADER_LEN].into_boxed_slice()
    } else {
        Box::default()
    }
}

/// Constant-time equality of two tags (no early exit on the first differing byte).
#[inline]
fn tags_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && core::hint::black_box(a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y))) == 0
}

impl core::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Sealer")
            .field("mode", &self.mode)
            .field("sender", &self.sender)
            .field("start", &self.start)
            .field("next_pn", &self.next_pn)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// The sealer of node `sender` (as an engine builds it; tests use it to speak for
    /// another node).
    pub fn new(p: &Protection, job: u32, run_id: u64, sender: NodeId, start: u64) -> Self {
        Self::with_phase_shift(p, job, run_id, sender, start, DEFAULT_PHASE_SHIFT)
    }

    fn with_phase_shift(
        p: &Protection,
        job: u32,
        run_id: u64,
        sender: NodeId,
        start: u64,
        phase_shift: u32,
    ) -> Self {
        let job_key = job_key(&p.keys, job);
        let key = TrafficKey::derive(&job_key, run_id, sender, start, 0);
        Self {
            mode: p.mode,
            job_key,
            run_id,
            sender,
            start,
            phase_shift,
            next_pn: 0,
            phase: 0,
            key,
            scratch: auth_scratch(p.mode),
        }
    }

    /// Header flags of this sender's datagrams.
    #[inline]
    pub fn flags(&self) -> u8 {
        self.mode.flags()
    }

    /// Numbers the datagram whose header (flags from [`Sealer::flags`]) + payload are
    /// `out[..body_len]`, seals it and appends the tag; returns the datagram length
    /// (`body_len` in `off` mode, or if `out` has no room for the tag — never the case for
    /// the engine's buffers).
    #[inline]
    pub fn seal(&mut self, out: &mut [u8], body_len: usize) -> usize {
        if body_len < HEADER_LEN || out.len() < body_len + self.mode_tag_len() {
            return body_len;
        }
        let pn = self.next_pn;
        self.next_pn += 1;
        out[FLAGS_OFFSET] = self.mode.flags();
        out[PACKET_NUMBER_OFFSET..PACKET_NUMBER_OFFSET + 8].copy_from_slice(&pn.to_be_bytes());
        out[SENDER_START_OFFSET..SENDER_START_OFFSET + 8]
            .copy_from_slice(&self.start.to_be_bytes());
        if self.mode == ProtectionMode::Off {
            return body_len;
        }
        let phase = pn >> self.phase_shift;
        if phase != self.phase {
            self.key =
                TrafficKey::derive(&self.job_key, self.run_id, self.sender, self.start, phase);
            self.phase = phase;
        }
        let nonce = self.key.nonce(pn);
        let (body, rest) = out.split_at_mut(body_len);
        let aad = aad_header(body);
        let (_, payload) = body.split_at_mut(HEADER_LEN);
        let tag = if self.mode == ProtectionMode::Encrypt {
            self.key
                .key
                .seal_in_place_separate_tag(nonce, Aad::from(&aad), payload)
        } else {
            // The payload stays in clear: seal a copy, keep the tag.
            let Some(copy) = self.scratch.get_mut(..payload.len()) else {
                return body_len;
            };
            copy.copy_from_slice(payload);
            self.key
                .key
                .seal_in_place_separate_tag(nonce, Aad::from(&aad), copy)
        };
        let tag = tag.expect("a datagram is far below AES-GCM's message length limit");
        rest[..AUTH_TAG_LEN].copy_from_slice(tag.as_ref());
        body_len + AUTH_TAG_LEN
    }

    const fn mode_tag_len(&self) -> usize {
        if matches!(self.mode, ProtectionMode::Off) {
            0
        } else {
            AUTH_TAG_LEN
        }
    }

    /// Continues numbering at `pn`. A sender must never seal two datagrams with one number
    /// under one start: only for tests that impersonate a sender seen on the wire.
    pub fn with_first_packet_number(mut self, pn: u64) -> Self {
        self.next_pn = pn;
        self
    }

    /// The next packet number (datagrams sealed so far).
    pub fn next_packet_number(&self) -> u64 {
        self.next_pn
    }

    /// This sender's start value.
    pub fn sender_start(&self) -> u64 {
        self.start
    }
}

/// Why a datagram was not opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// The tag did not verify, the flags do not match the mode, or the sender is unknown.
    BadTag,
    /// Its packet number was seen (or is behind the window) on this path, or its sender
    /// has restarted since (an older `sender_start`).
    Replayed,
    /// A key would have to be derived, but the sender's derivation budget is spent.
    KeyLimited,
    /// The sender is not a node of the job (no keys are derived for it).
    UnknownSender,
}

/// A derived key cached by a receiver.
struct CachedKey {
    start: u64,
    phase: u64,
    key: TrafficKey,
}

/// What a receiver keeps per sender.
#[derive(Default)]
struct SenderState {
    /// Newest start that opened; older ones are rejected.
    newest_start: Option<u64>,
    keys: [Option<CachedKey>; KEY_SLOTS],
    /// Derivation budget (tokens) and when it was last refilled.
    tokens: u32,
    refilled_at: Nanos,
    /// Per path id: the anti-replay window of `newest_start`.
    windows: Vec<(u16, ReplayWindow)>,
}

/// The receiving half: opens datagrams, keeps keys and replay windows per sender.
pub struct Opener {
    mode: ProtectionMode,
    job_key: hkdf::Prk,
    run_id: u64,
    phase_shift: u32,
    senders: Vec<SenderState>,
    /// `authenticate`: where a received payload is resealed to check its tag.
    scratch: Box<[u8]>,
}

impl core::fmt::Debug for Opener {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Opener")
            .field("mode", &self.mode)
            .field("senders", &self.senders.len())
            .finish_non_exhaustive()
    }
}

impl Opener {
    fn new(p: &Protection, job: u32, run_id: u64, node_count: u16, phase_shift: u32) -> Self {
        Self {
            mode: p.mode,
            job_key: job_key(&p.keys, job),
            run_id,
            phase_shift,
            senders: (0..node_count)
                .map(|_| SenderState {
                    tokens: DERIVE_BURST,
                    ..SenderState::default()
                })
                .collect(),
            scratch: auth_scratch(p.mode),
        }
    }

    /// Verifies (and in `encrypt` mode decrypts in place) `datagram`, a whole datagram that
    /// passed `Packet::new_checked`; on success its payload is plaintext and its packet
    /// number has been recorded in the replay window of its (sender, path). In `off` mode
    /// only refuses encrypted datagrams. `now` feeds the derivation budget.
    pub fn open(&mut self, now: Nanos, datagram: &mut [u8]) -> Result<(), OpenError> {
        if datagram.len() < HEADER_LEN {
            return Err(OpenError::BadTag);
        }
        let flags = datagram[FLAGS_OFFSET];
        if self.mode == ProtectionMode::Off {
            return if flags & wire::flags::ENCRYPTED != 0 {
                Err(OpenError::BadTag)
            } else {
                Ok(())
            };
        }
        if flags & (wire::flags::AUTH | wire::flags::ENCRYPTED) != self.mode.flags()
            || datagram.len() < HEADER_LEN + AUTH_TAG_LEN
        {
            return Err(OpenError::BadTag);
        }
        let src = u16::from_be_bytes([datagram[24], datagram[25]]);
        let path = u16::from_be_bytes([datagram[22], datagram[23]]);
        let pn = read_u64(datagram, PACKET_NUMBER_OFFSET);
        let start = read_u64(datagram, SENDER_START_OFFSET);
        let phase = pn >> self.phase_shift;
        let mode = self.mode;
        let Some(s) = self.senders.get_mut(usize::from(src)) else {
            return Err(OpenError::UnknownSender);
        };
        if s.newest_start.is_some_and(|n| start < n) {
            return Err(OpenError::Replayed);
        }
        // Cheap pre-check before any AEAD work: a packet number already seen on this path.
        if s.newest_start == Some(start) {
            if let Some((_, w)) = s.windows.iter().find(|(p, _)| *p == path) {
                if !w.would_accept(pn) {
                    return Err(OpenError::Replayed);
                }
            }
        }
        let cached = s.keys.iter().position(|k| {
            k.as_ref()
                .is_some_and(|k| k.start == start && k.phase == phase)
        });
        let derived = match cached {
            Some(_) => None,
            None => {
                refill(s, now);
                if s.tokens == 0 {
                    return Err(OpenError::KeyLimited);
                }
                s.tokens -= 1;
                Some(TrafficKey::derive(
                    &self.job_key,
                    self.run_id,
                    src,
                    start,
                    phase,
                ))
            }
        };
        let key = match (&derived, cached) {
            (Some(k), _) => k,
            (None, Some(i)) => &s.keys[i].as_ref().expect("found above").key,
            (None, None) => return Err(OpenError::BadTag),
        };
        open_with(mode, key, pn, datagram, &mut self.scratch)?;
        if let Some(key) = derived {
            let slot = victim(s, start);
            s.keys[slot] = Some(CachedKey { start, phase, key });
        }
        // Keep the next phase's key ready: a rollover then costs no derivation on the
        // receive path and none of the budget (this runs only for authentic packets).
        let next = phase + 1;
        if !s.keys.iter().any(|k| {
            k.as_ref()
                .is_some_and(|k| k.start == start && k.phase == next)
        }) {
            let key = TrafficKey::derive(&self.job_key, self.run_id, src, start, next);
            let slot = victim(s, start);
            s.keys[slot] = Some(CachedKey {
                start,
                phase: next,
                key,
            });
        }
        if s.newest_start != Some(start) {
            // The sender (re)started: its older keys and windows are void.
            s.newest_start = Some(start);
            s.windows.clear();
            for k in s.keys.iter_mut() {
                if k.as_ref().is_some_and(|k| k.start != start) {
                    *k = None;
                }
            }
        }
        let window = match s.windows.iter().position(|(p, _)| *p == path) {
            Some(i) => &mut s.windows[i].1,
            None => {
                if s.windows.len() >= MAX_PATHS_PER_SENDER {
                    return Err(OpenError::BadTag);
                }
                s.windows.push((path, ReplayWindow::default()));
                &mut s.windows.last_mut().expect("just pushed").1
            }
        };
        if window.check_and_update(pn) {
            Ok(())
        } else {
            Err(OpenError::Replayed)
        }
    }
}

/// Adds the tokens earned since the last refill (capped at [`DERIVE_BURST`]).
fn refill(s: &mut SenderState, now: Nanos) {
    let per_token = crate::NANOS_PER_SEC / DERIVE_PER_SEC;
    let earned = now.saturating_sub(s.refilled_at) / per_token;
    if earned > 0 {
        s.tokens = (u64::from(s.tokens) + earned).min(u64::from(DERIVE_BURST)) as u32;
        s.refilled_at = now;
    }
}

/// The key slot to replace: an empty one, else one of another start, else the lowest phase.
fn victim(s: &SenderState, start: u64) -> usize {
    s.keys
        .iter()
        .position(|k| k.is_none())
        .or_else(|| {
            s.keys
                .iter()
                .position(|k| k.as_ref().is_some_and(|k| k.start != start))
        })
        .unwrap_or_else(|| {
            (0..KEY_SLOTS)
                .min_by_key(|&i| s.keys[i].as_ref().map_or(0, |k| k.phase))
                .unwrap_or(0)
        })
}

/// Verifies (and decrypts) `datagram` under `key`; `authenticate` reseals the payload in
/// `scratch`.
#[inline]
fn open_with(
    mode: ProtectionMode,
    key: &TrafficKey,
    pn: u64,
    datagram: &mut [u8],
    scratch: &mut [u8],
) -> Result<(), OpenError> {
    let nonce = key.nonce(pn);
    let aad = aad_header(datagram);
    let ok = if mode == ProtectionMode::Encrypt {
        key.key
            .open_in_place(nonce, Aad::from(&aad), &mut datagram[HEADER_LEN..])
            .is_ok()
    } else {
        let (payload, tag) =
            datagram[HEADER_LEN..].split_at(datagram.len() - HEADER_LEN - AUTH_TAG_LEN);
        let Some(copy) = scratch.get_mut(..payload.len()) else {
            return Err(OpenError::BadTag);
        };
        copy.copy_from_slice(payload);
        key.key
            .seal_in_place_separate_tag(nonce, Aad::from(&aad), copy)
            .is_ok_and(|expected| tags_equal(expected.as_ref(), tag))
    };
    if ok {
        Ok(())
    } else {
        Err(OpenError::BadTag)
    }
}

/// Both halves, as an engine holds them.
#[derive(Debug)]
pub struct PacketProtection {
    /// Seals what this node sends.
    pub sealer: Sealer,
    /// Opens what it receives.
    pub opener: Opener,
}

impl PacketProtection {
    /// Protection for node `me` of `node_count` in `job`, run `run_id`, with start `start`.
    pub fn new(
        p: &Protection,
        job: u32,
        run_id: u64,
        me: NodeId,
        node_count: u16,
        start: u64,
    ) -> Self {
        Self::with_phase_shift(p, job, run_id, me, node_count, start, DEFAULT_PHASE_SHIFT)
    }

    /// [`PacketProtection::new`] with another key-phase length (2^`phase_shift` packets), so
    /// tests can cross phase boundaries.
    pub fn with_phase_shift(
        p: &Protection,
        job: u32,
        run_id: u64,
        me: NodeId,
        node_count: u16,
        start: u64,
        phase_shift: u32,
    ) -> Self {
        Self {
            sealer: Sealer::with_phase_shift(p, job, run_id, me, start, phase_shift),
            opener: Opener::new(p, job, run_id, node_count, phase_shift),
        }
    }

    /// True unless the mode is off.
    #[inline]
    pub fn enabled(&self) -> bool {
        self.sealer.mode != ProtectionMode::Off
    }
}
