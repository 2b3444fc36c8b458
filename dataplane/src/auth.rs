//! Packet authentication: a keyed MAC over header + payload in the optional 16-byte tag.
//!
//! **Construction.** The tag is the AES-GCM-SIV authentication tag (RFC 8452) of
//! AES-128-GCM-SIV under the 128-bit [`MacKey`] K, with the fixed nonce N = 0^96, an empty
//! plaintext and, as additional data, the byte string
//!
//! ```text
//! M = payload ‖ zeros to a multiple of 16 bytes ‖ header (48 bytes, TTL byte set to 0)
//! ```
//!
//! (payload first, so that a payload sent several times is hashed once and finished with
//! each header: [`PacketMac::payload_hash`], [`PacketMac::tag_with`]; M is an injective
//! encoding because the fixed-size header at its end carries `payload_len`). Datagrams shorter than a header, which parsing rejects before any
//! verification, are tagged with their raw bytes as the additional data. Spelled out:
//! * once per key ([`PacketMac::new`]): H = the first 8 bytes of AES_K(LE32(0) ‖ N) and of
//!   AES_K(LE32(1) ‖ N); K_enc the same from counters 2 and 3; AES key schedule of K_enc
//!   and the powers H^1..H^8 for POLYVAL;
//! * per packet ([`PacketMac::tag`]): S = POLYVAL_H(M ‖ LE64(8·|M|) ‖ LE64(0)), S ^= N
//!   (a no-op), S[15] &= 0x7f, tag = AES_K_enc(S).
//!
//! The unit tests check the tag bit for bit against the `aes-gcm-siv` crate (RustCrypto) for
//! random keys, headers and payload lengths, and the POLYVAL code against the `polyval` crate.
//!
//! **Why it is a MAC.** POLYVAL is an almost-XOR-universal hash (two distinct messages of
//! at most ℓ blocks collide with probability ≤ ℓ/2^128 over H) and its output goes through
//! AES under an independent key: a hash-then-PRF MAC, needing no nonce. A forger's success
//! after seeing q tags is bounded by roughly q²·ℓ/2^128 plus the AES distinguishing
//! advantage — for q = 2^32 packets of ℓ ≈ 92 blocks under one key, about 2^-57 (keys are
//! per job). AES-GCM-SIV is nonce-misuse resistant, so fixing the nonce costs only
//! determinism: equal packets get equal tags, which reveals nothing here — retransmissions
//! differ in `timestamp_ns`, and replays of captured packets are dropped by the sequence,
//! round, epoch and stale-ack checks (RELIABILITY.md, "Authenticated traffic").
//!
//! **Why not SipHash any more.** SipHash-2-4-128 (this module's MAC until now) is sequential
//! 64-bit ARX: `cargo bench --bench mac` measures ~420 ns per 1456-byte datagram
//! (3.2 GiB/s); it was most of the engine's per-packet CPU. The AES-GCM-SIV tag takes
//! ~150 ns (9 GiB/s) with PCLMULQDQ, which the default build enables (`.cargo/config.toml`),
//! and ~65 ns on AVX-512 VPCLMULQDQ machines with a path that this project does not build
//! (`auth/uhf.rs` says why).
//!
//! **Why not GMAC or Poly1305**, the usual fast MACs: both are Wegman–Carter MACs whose
//! security needs a unique nonce (GMAC) or one-time key (Poly1305) per message under a key.
//! A retransmission re-sends the same sequence number with a new timestamp, so a nonce
//! derived from the packet would repeat on different messages — for GMAC that reveals H
//! and allows universal forgery — and a truly unique nonce would need per-sender counter
//! state and header bytes. GCM-SIV's fixed nonce has no such failure mode.
//!
//! **What is covered.** The 48-byte header with the TTL byte zeroed (relays decrement the
//! TTL and forward the datagram untouched otherwise, so they need not re-sign) and the
//! payload, as M above. The tag is compared in constant time.
//!
//! **Keys.** [`Auth`] in `EngineConfig`: the default, [`Auth::JobDerived`], derives the key
//! from the job id with a fixed public key (a SipHash-2-4-128 PRF, once per engine; kept
//! as it was, so job-derived keys did not change with the MAC). It is *on by default* —
//! every packet is tagged and checked, so corruption, stray datagrams of other deployments
//! and packets forged without knowledge of the scheme are rejected — but it is **not a
//! secret**: anyone who knows the job id can compute it. Deployments set [`Auth::Key`] with
//! a secret key from their configuration; [`Auth::Disabled`] turns tagging off and must be
//! written explicitly.
//!
//! Nothing here allocates, locks or reads a clock per packet.

mod uhf;

use crate::wire::{self, Packet, AUTH_TAG_LEN, HEADER_LEN};
use aes::cipher::{BlockEncrypt, KeyInit};
use aes::Aes128;
use core::hash::Hasher as _;
use siphasher::sip128::{Hasher128, SipHasher24};

/// Length of a MAC key in bytes (an AES-128 key).
pub const MAC_KEY_LEN: usize = 16;

/// Offset of the TTL byte in the header (excluded from the MAC: relays rewrite it).
const TTL_OFFSET: usize = 5;

/// Public key of the job-id key derivation of [`Auth::JobDerived`] ("netstorm-job-mac").
const JOB_DERIVATION_KEY: [u8; MAC_KEY_LEN] = *b"netstorm-job-mac";

/// A 128-bit MAC key. `Debug` never prints the key bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct MacKey([u8; MAC_KEY_LEN]);

impl core::fmt::Debug for MacKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("MacKey(<redacted>)")
    }
}

/// Why a key could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// A hex key of the wrong length or with a non-hex character.
    #[error("mac key: expected {expected} hex digits, got {got:?} (length {len})")]
    BadHexKey {
        /// Hex digits required.
        expected: usize,
        /// The first characters of what was given (never the whole key).
        got: String,
        /// Its length.
        len: usize,
    },
}

impl MacKey {
    /// A key from raw bytes.
    pub const fn from_bytes(bytes: [u8; MAC_KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// A key from 32 hex digits (as in a config file).
    pub fn from_hex(hex: &str) -> Result<Self, AuthError> {
        let bad = || AuthError::BadHexKey {
            expected: 2 * MAC_KEY_LEN,
            got: hex.chars().take(4).chain("…".chars()).collect(),
            len: hex.len(),
        };
        let hex = hex.trim();
        if hex.len() != 2 * MAC_KEY_LEN || !hex.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; MAC_KEY_LEN];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Self(out))
    }

    /// The public, deterministic key of [`Auth::JobDerived`] for `job` (not a secret).
    pub fn derived_for_job(job: u32) -> Self {
        let mut h = SipHasher24::new_with_key(&JOB_DERIVATION_KEY);
        h.write(b"netstorm job key v1");
        h.write(&job.to_be_bytes());
        Self(h.finish128().as_bytes())
    }

    /// The key bytes.
    pub const fn as_bytes(&self) -> &[u8; MAC_KEY_LEN] {
        &self.0
    }
}

/// How an engine authenticates packets (a field of `EngineConfig`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Auth {
    /// No tag is sent and none is checked. Only when explicitly configured.
    Disabled,
    /// Tag every packet with [`MacKey::derived_for_job`] of the engine's job id (the
    /// default): integrity against corruption and foreign packets, not secrecy of the key.
    #[default]
    JobDerived,
    /// Tag every packet with this secret key.
    Key(MacKey),
}

impl Auth {
    /// The key packets of `job` are tagged with, `None` when disabled.
    pub fn key_for(&self, job: u32) -> Option<MacKey> {
        match self {
            Auth::Disabled => None,
            Auth::JobDerived => Some(MacKey::derived_for_job(job)),
            Auth::Key(k) => Some(*k),
        }
    }

    /// True unless [`Auth::Disabled`].
    pub const fn enabled(&self) -> bool {
        !matches!(self, Auth::Disabled)
    }

    /// Tag bytes each datagram carries under this setting (0 or [`AUTH_TAG_LEN`]).
    pub const fn tag_len(&self) -> usize {
        if self.enabled() {
            AUTH_TAG_LEN
        } else {
            0
        }
    }
}

/// A ready-to-use MAC: the per-key work (AES-GCM-SIV key derivation, AES key schedule,
/// POLYVAL powers) done once, at engine construction.
#[derive(Clone)]
pub struct PacketMac {
    /// AES-128 under the derived message-encryption key.
    enc: Aes128,
    /// POLYVAL under the derived message-authentication key.
    uhf: uhf::Polyval,
}

impl core::fmt::Debug for PacketMac {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("PacketMac(AES-128-GCM-SIV tag)")
    }
}

impl PacketMac {
    /// A MAC with `key` (the AES-GCM-SIV key-generating key).
    pub fn new(key: MacKey) -> Self {
        // RFC 8452 §4 with the fixed nonce N = 0^96: block i = LE32(i) ‖ N, keep the first
        // 8 bytes of each AES_K(block i); i = 0, 1 give the message-authentication key (H),
        // i = 2, 3 the message-encryption key.
        let kgk = Aes128::new(&key.0.into());
        let mut derived = [[0u8; 16]; 2];
        for (i, half) in (0u32..4).zip(derived.iter_mut().flat_map(|k| k.chunks_exact_mut(8))) {
            let mut block = aes::Block::default();
            block[..4].copy_from_slice(&i.to_le_bytes());
            kgk.encrypt_block(&mut block);
            half.copy_from_slice(&block[..8]);
        }
        let [auth_key, enc_key] = derived;
        Self {
            enc: Aes128::new(&enc_key.into()),
            uhf: uhf::Polyval::new(auth_key),
        }
    }

    /// The tag of a datagram whose header + payload are `body` (at least [`HEADER_LEN`]
    /// bytes; shorter input is tagged as is — it can never verify, since parsing rejects
    /// it first). The TTL byte is taken as zero.
    ///
    /// = the AES-128-GCM-SIV tag (nonce 0^96, empty plaintext) of the AAD
    /// `payload ‖ zeros to a multiple of 16 ‖ header with TTL 0` (see the module doc).
    #[inline]
    pub fn tag(&self, body: &[u8]) -> [u8; AUTH_TAG_LEN] {
        match body.split_first_chunk::<HEADER_LEN>() {
            Some((header, payload)) => {
                self.tag_with(header, payload.len(), &self.payload_hash(payload))
            }
            None => {
                let mut length = [0u8; 16];
                length[..8].copy_from_slice(&bit_len(body.len()));
                self.finish(self.uhf.resume(self.uhf.hash(body), &length))
            }
        }
    }

    /// The part of a tag that depends on the payload alone (the POLYVAL state after it).
    /// A payload sent several times — a broadcast segment to each child, or forwarded as it
    /// was received — is hashed once; [`PacketMac::tag_with`] finishes each header.
    #[inline]
    pub fn payload_hash(&self, payload: &[u8]) -> PayloadHash {
        PayloadHash(self.uhf.hash(payload))
    }

    /// The tag of `header ‖ payload` given the payload's [`PacketMac::payload_hash`]:
    /// equal to [`PacketMac::tag`] of the datagram. The TTL byte is taken as zero.
    #[inline]
    pub fn tag_with(
        &self,
        header: &[u8; HEADER_LEN],
        payload_len: usize,
        payload: &PayloadHash,
    ) -> [u8; AUTH_TAG_LEN] {
        // POLYVAL over: AAD padded to 16 bytes, (empty plaintext), length block
        // LE64(bit length of the AAD) ‖ LE64(0).
        let mut trailer = [0u8; HEADER_LEN + 16];
        trailer[..HEADER_LEN].copy_from_slice(header);
        trailer[TTL_OFFSET] = 0;
        let aad_len = payload_len.next_multiple_of(16) + HEADER_LEN;
        trailer[HEADER_LEN..HEADER_LEN + 8].copy_from_slice(&bit_len(aad_len));
        self.finish(self.uhf.resume(payload.0, &trailer))
    }

    /// S ^= nonce (all zero: nothing to do); clear the top bit; encrypt.
    #[inline]
    fn finish(&self, mut s: [u8; 16]) -> [u8; AUTH_TAG_LEN] {
        s[15] &= 0x7f;
        let mut block = aes::Block::from(s);
        self.enc.encrypt_block(&mut block);
        block.into()
    }

    /// Writes the tag of `out[..body_len]` into `out[body_len..body_len + AUTH_TAG_LEN]`.
    /// The header in `out` must already carry [`wire::flags::AUTH`]. Returns false (and
    /// writes nothing) if `out` is too short.
    #[inline]
    pub fn sign(&self, out: &mut [u8], body_len: usize) -> bool {
        let Some(buf) = out.get_mut(..body_len + AUTH_TAG_LEN) else {
            return false;
        };
        let (body, tag) = buf.split_at_mut(body_len);
        tag.copy_from_slice(&self.tag(body));
        true
    }

    /// [`PacketMac::sign`] for a body of at least a header, with the payload's hash from
    /// `payload_hash(payload)` — which may hand back one kept from an earlier copy of the
    /// same payload (the engine's broadcast segments). Returns false (and writes nothing) if
    /// `out` is too short.
    #[inline]
    pub fn sign_with(
        &self,
        out: &mut [u8],
        body_len: usize,
        payload_hash: impl FnOnce(&[u8]) -> PayloadHash,
    ) -> bool {
        let Some(buf) = out.get_mut(..body_len + AUTH_TAG_LEN) else {
            return false;
        };
        let (body, tag) = buf.split_at_mut(body_len);
        let Some((header, payload)) = body.split_first_chunk::<HEADER_LEN>() else {
            return false;
        };
        tag.copy_from_slice(&self.tag_with(header, payload.len(), &payload_hash(payload)));
        true
    }

    /// True if `pkt` carries a tag and the tag matches (constant-time comparison).
    #[inline]
    pub fn verify<T: AsRef<[u8]>>(&self, pkt: &Packet<T>) -> bool {
        self.verify_payload(pkt).is_some()
    }

    /// [`PacketMac::verify`], returning the payload's hash when the tag matches, so that a
    /// payload sent on unchanged (a broadcast segment forwarded to children) is not hashed
    /// again.
    #[inline]
    pub fn verify_payload<T: AsRef<[u8]>>(&self, pkt: &Packet<T>) -> Option<PayloadHash> {
        let tag = pkt.auth_tag()?;
        let (header, payload) = pkt
            .authenticated_bytes()
            .split_first_chunk::<HEADER_LEN>()?;
        let hash = self.payload_hash(payload);
        let want = self.tag_with(header, payload.len(), &hash);
        let diff = tag
            .iter()
            .zip(want.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        (diff == 0 && tag.len() == AUTH_TAG_LEN).then_some(hash)
    }
}

/// The POLYVAL state after a datagram's payload ([`PacketMac::payload_hash`]): what a tag
/// needs from the payload. Not a MAC by itself; never sent.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct PayloadHash([u8; 16]);

impl core::fmt::Debug for PayloadHash {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("PayloadHash(..)")
    }
}

/// `len` bytes in bits, as POLYVAL's length block wants it (LE64).
#[inline]
fn bit_len(len: usize) -> [u8; 8] {
    (len as u64 * 8).to_le_bytes()
}

/// Sender helper: if `mac` is set, tags `out[..body_len]` and returns the datagram length
/// with the tag; otherwise returns `body_len`. The header must carry [`flags_for`]`(mac)`.
#[inline]
pub fn seal(mac: Option<&PacketMac>, out: &mut [u8], body_len: usize) -> usize {
    match mac {
        Some(m) if m.sign(out, body_len) => body_len + AUTH_TAG_LEN,
        _ => body_len,
    }
}

/// Header flags a sender with `mac` sets: [`wire::flags::AUTH`] or nothing.
#[inline]
pub const fn flags_for(mac: Option<&PacketMac>) -> u8 {
    if mac.is_some() {
        wire::flags::AUTH
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{emit_packet, HeaderRepr, PacketKind};

    fn signed(mac: &PacketMac, seg: u32) -> Vec<u8> {
        let repr = HeaderRepr {
            kind: PacketKind::ReduceData,
            flags: wire::flags::AUTH,
            ttl: 3,
            job: 4,
            epoch: 2,
            segment: seg,
            ..HeaderRepr::default()
        };
        let mut buf = vec![0u8; 200];
        let n = emit_packet(&repr, &[1, 2, 3, 4, 5, 6, 7, 8], &mut buf).unwrap();
        assert!(mac.sign(&mut buf, n - AUTH_TAG_LEN));
        buf.truncate(n);
        buf
    }

    #[test]
    fn sign_then_verify_and_every_bit_flip_fails() {
        let mac = PacketMac::new(MacKey::from_bytes([9; 16]));
        let pkt = signed(&mac, 1);
        assert!(mac.verify(&Packet::new_checked(&pkt[..]).unwrap()));
        let mut rejected = 0;
        for i in 0..pkt.len() {
            for b in 0..8 {
                let mut p = pkt.clone();
                p[i] ^= 1 << b;
                if let Ok(parsed) = Packet::new_checked(&p[..]) {
                    if i == TTL_OFFSET {
                        assert!(mac.verify(&parsed), "TTL is not covered");
                    } else {
                        assert!(!mac.verify(&parsed), "flip of byte {i} bit {b} verified");
                        rejected += 1;
                    }
                }
            }
        }
        assert!(rejected > 300, "{rejected}");
    }

    #[test]
    fn verify_hands_back_the_payload_hash_that_finishes_other_headers() {
        let mac = PacketMac::new(MacKey::from_bytes([3; 16]));
        let a = signed(&mac, 1);
        let b = signed(&mac, 2);
        let pa = Packet::new_checked(&a[..]).unwrap();
        let hash = mac.verify_payload(&pa).expect("valid tag");
        assert_eq!(hash, mac.payload_hash(pa.payload()));
        // Same payload, other header: the kept hash finishes b's tag.
        let (header, payload) = b[..b.len() - AUTH_TAG_LEN]
            .split_first_chunk::<HEADER_LEN>()
            .unwrap();
        assert_eq!(
            mac.tag_with(header, payload.len(), &hash)[..],
            b[b.len() - AUTH_TAG_LEN..]
        );
        let mut bad = a.clone();
        bad[HEADER_LEN] ^= 1;
        assert_eq!(
            mac.verify_payload(&Packet::new_checked(&bad[..]).unwrap()),
            None
        );
    }

    #[test]
    fn other_key_and_missing_tag_fail() {
        let mac = PacketMac::new(MacKey::derived_for_job(4));
        let other = PacketMac::new(MacKey::derived_for_job(5));
        let pkt = signed(&mac, 0);
        let p = Packet::new_checked(&pkt[..]).unwrap();
        assert!(mac.verify(&p));
        assert!(!other.verify(&p));
        assert_ne!(MacKey::derived_for_job(4), MacKey::derived_for_job(5));
        // The same packet without the AUTH flag and tag does not verify.
        let mut bare = pkt[..pkt.len() - AUTH_TAG_LEN].to_vec();
        bare[4] = 0;
        assert!(!mac.verify(&Packet::new_checked(&bare[..]).unwrap()));
    }

    /// The reference: AES-128-GCM-SIV (RustCrypto `aes-gcm-siv`), nonce 0^96, empty
    /// plaintext, AAD = payload ‖ zero padding to 16 bytes ‖ header with TTL 0 (or the raw
    /// bytes when shorter than a header).
    fn reference_tag(key: &MacKey, body: &[u8]) -> [u8; AUTH_TAG_LEN] {
        use aes_gcm_siv::aead::{AeadInPlace, KeyInit as _};
        let mut aad = Vec::new();
        match body.split_first_chunk::<HEADER_LEN>() {
            Some((header, payload)) => {
                aad.extend_from_slice(payload);
                aad.resize(payload.len().next_multiple_of(16), 0);
                aad.extend_from_slice(header);
                let ttl = aad.len() - HEADER_LEN + TTL_OFFSET;
                aad[ttl] = 0;
            }
            None => aad.extend_from_slice(body),
        }
        let cipher = aes_gcm_siv::Aes128GcmSiv::new(&(*key.as_bytes()).into());
        cipher
            .encrypt_in_place_detached(&aes_gcm_siv::Nonce::default(), &aad, &mut [])
            .expect("short input")
            .into()
    }

    #[test]
    fn tag_is_the_aes_gcm_siv_tag() {
        use rand::{Rng, RngCore, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(8452);
        let mut lens: Vec<usize> = vec![0, 4, 12, 16, 1024, 1408];
        lens.extend((0..9000 / 8).map(|k| 4 * (2 * k + 1)).step_by(7));
        let mut body = vec![0u8; HEADER_LEN + 9000];
        let mut checked = 0;
        for round in 0..64 {
            let mut key = [0u8; MAC_KEY_LEN];
            rng.fill_bytes(&mut key);
            let key = MacKey::from_bytes(key);
            let mac = PacketMac::new(key);
            rng.fill_bytes(&mut body);
            // Every length for a few keys, a random sample of them for the others.
            let step = if round < 4 { 1 } else { 13 };
            let offset = rng.random_range(0..step);
            for &len in lens.iter().skip(offset).step_by(step) {
                let b = &body[..HEADER_LEN + len];
                assert_eq!(mac.tag(b), reference_tag(&key, b), "payload length {len}");
                checked += 1;
            }
            // Shorter than a header: the raw bytes are the AAD.
            let short = rng.random_range(0..HEADER_LEN);
            assert_eq!(mac.tag(&body[..short]), reference_tag(&key, &body[..short]));
        }
        assert!(checked > 300, "{checked}");
    }

    /// A pinned tag: changing the construction (or the AAD layout on both sides of the
    /// test above) changes the wire format and must be deliberate.
    #[test]
    fn known_answer() {
        let mac = PacketMac::new(MacKey::from_bytes(*b"0123456789abcdef"));
        let mut body = [0u8; HEADER_LEN + 8];
        for (i, b) in body.iter_mut().enumerate() {
            *b = i as u8;
        }
        let hex: String = mac.tag(&body).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "87fb5368ec53159bd461839f5df099b4");
        let key = MacKey::from_bytes(*b"0123456789abcdef");
        assert_eq!(reference_tag(&key, &body), mac.tag(&body));
        assert_eq!(format!("{mac:?}"), "PacketMac(AES-128-GCM-SIV tag)");
    }

    #[test]
    fn hex_keys() {
        let k = MacKey::from_hex("000102030405060708090a0b0c0d0e0f").unwrap();
        assert_eq!(k.as_bytes()[15], 15);
        let e = MacKey::from_hex("0011").unwrap_err().to_string();
        assert!(e.contains("32 hex digits"), "{e}");
        assert!(MacKey::from_hex("zz0102030405060708090a0b0c0d0e0f").is_err());
        assert_eq!(format!("{k:?}"), "MacKey(<redacted>)");
        assert_eq!(Auth::default(), Auth::JobDerived);
        assert_eq!(Auth::Disabled.key_for(1), None);
    }
}
