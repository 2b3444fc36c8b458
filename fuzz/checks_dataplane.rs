//! Checks shared by the data-plane fuzz targets
//! (`fuzz_targets/{scenario_toml,shm_records,udp_frame}.rs`) and by the corpus replay in the
//! normal test suite (`dataplane/tests/fuzz_corpus.rs`): no panic on any input, errors that
//! name their origin, and what is accepted is usable and re-emits to something that parses to
//! the same value.

use netstorm_dataplane::scenario::Scenario;
use netstorm_dataplane::shm_records::{
    PolicyAssembler, PolicyChunkHeader, PolicyRecord, TelemetryRecord,
};
use netstorm_dataplane::wire::frame::{emit_frame, parse_frame, FRAME_HEADER_LEN};
use netstorm_dataplane::wire::{
    EthernetFrame, Ipv4Packet, Ipv4Repr, UdpPacket, UdpRepr, ETH_HEADER_LEN, IPPROTO_UDP,
    IPV4_HEADER_LEN,
};

/// Origin name handed to the scenario parser; its errors must mention it.
pub const SCENARIO_ORIGIN: &str = "fuzz-input.toml";

/// Scenario TOML: `Scenario::parse_str` never panics; an error names the file; an accepted
/// scenario validates and its change stream and topologies can be computed.
pub fn check_scenario(data: &[u8]) -> Result<bool, String> {
    let Ok(text) = std::str::from_utf8(data) else {
        return Ok(false);
    };
    match Scenario::parse_str(text, SCENARIO_ORIGIN) {
        Err(e) => {
            let msg = e.to_string();
            if !msg.contains(SCENARIO_ORIGIN) {
                return Err(format!("scenario error does not name the file: {msg}"));
            }
            Ok(false)
        }
        Ok(s) => {
            s.validate()
                .map_err(|e| format!("parse accepted a scenario validate rejects: {e}"))?;
            let changes: Vec<_> = s.changes().take(256).collect();
            if changes.windows(2).any(|w| w[0].at_ns > w[1].at_ns) {
                return Err("change stream is not time-ordered".into());
            }
            let t = s.topology_at(changes.last().map_or(0, |c| c.at_ns));
            if t.node_count() != s.topology.node_count() {
                return Err("topology_at changed the node count".into());
            }
            Ok(true)
        }
    }
}

/// Shared-memory records: `TelemetryRecord::parse`, `PolicyChunkHeader::parse` and a
/// `PolicyAssembler` fed the input cut into chunks (`u16` LE length + bytes, repeated)
/// never panic; parse ∘ emit is the identity on parsed values; a reassembled policy
/// re-chunks and reassembles to itself.
pub fn check_shm_records(data: &[u8]) -> Result<bool, String> {
    let mut accepted = false;
    if let Ok(t) = TelemetryRecord::parse(data) {
        let again = TelemetryRecord::parse(&t.to_bytes()).map_err(|e| e.to_string())?;
        if again != t {
            return Err(format!(
                "telemetry record does not round-trip: {t:?} vs {again:?}"
            ));
        }
        accepted = true;
    }
    if let Ok((h, bytes)) = PolicyChunkHeader::parse(data) {
        if bytes.len() != h.chunk_len as usize {
            return Err(format!(
                "chunk says {} bytes, parse gave {}",
                h.chunk_len,
                bytes.len()
            ));
        }
        accepted = true;
    }
    let mut asm = PolicyAssembler::new(1 << 16);
    let mut rest = data;
    while rest.len() >= 2 {
        let len = (u16::from_le_bytes([rest[0], rest[1]]) as usize).min(rest.len() - 2);
        let chunk = &rest[2..2 + len];
        rest = &rest[2 + len..];
        if let Ok(Some(rec)) = asm.push_chunk(chunk) {
            accepted = true;
            check_policy_record(&rec)?;
        }
    }
    Ok(accepted)
}

fn check_policy_record(rec: &PolicyRecord) -> Result<(), String> {
    for max_payload in [64usize, 4096] {
        let chunks = rec.chunks(max_payload).map_err(|e| e.to_string())?;
        let mut asm = PolicyAssembler::new(1 << 16);
        let mut out = None;
        for c in &chunks {
            out = asm
                .push_chunk(c)
                .map_err(|e| format!("re-chunked policy: {e}"))?;
        }
        if out.as_ref() != Some(rec) {
            return Err("policy record does not re-chunk to itself".into());
        }
    }
    Ok(())
}

/// Ethernet/IPv4/UDP frames (the DPDK port's receive path): `parse_frame` and the layer parsers
/// (`EthernetFrame`, `Ipv4Packet` / `Ipv4Repr`, `UdpPacket` / `UdpRepr`) never panic; an
/// accepted frame's datagram lies inside the input, the layers agree with `parse_frame`, and
/// re-emitting what was parsed gives a frame that parses to the same thing — byte for byte the
/// input's headers when the input used NetStorm's fixed fields (TOS 0, TTL 64, DF only).
/// `Ok(true)` when `parse_frame` accepted the input.
pub fn check_frame(data: &[u8]) -> Result<bool, String> {
    check_layers(data)?;
    let Ok(parsed) = parse_frame(data) else {
        return Ok(false);
    };
    let end = parsed.payload_offset + parsed.payload_len;
    let Some(datagram) = data.get(parsed.payload_offset..end) else {
        return Err(format!(
            "datagram {}..{end} outside the {}-byte frame",
            parsed.payload_offset,
            data.len()
        ));
    };
    // The layers, one by one, say the same.
    let eth =
        EthernetFrame::new_checked(data).map_err(|e| format!("accepted frame, Ethernet: {e}"))?;
    let ip =
        Ipv4Packet::new_checked(eth.payload()).map_err(|e| format!("accepted frame, IPv4: {e}"))?;
    let ip_repr = Ipv4Repr::parse(&ip).map_err(|e| format!("accepted frame, IPv4 repr: {e}"))?;
    let udp =
        UdpPacket::new_checked(ip.payload()).map_err(|e| format!("accepted frame, UDP: {e}"))?;
    let udp_repr = UdpRepr::parse(&udp, ip_repr.src_addr, ip_repr.dst_addr)
        .map_err(|e| format!("accepted frame, UDP repr: {e}"))?;
    let a = parsed.addrs;
    if (
        eth.src_addr(),
        eth.dst_addr(),
        ip_repr.src_addr,
        ip_repr.dst_addr,
        udp_repr.src_port,
        udp_repr.dst_port,
    ) != (
        a.src_mac, a.dst_mac, a.src_ip, a.dst_ip, a.src_port, a.dst_port,
    ) || ip_repr.protocol != IPPROTO_UDP
        || udp.payload() != datagram
    {
        return Err(format!("the layers disagree with parse_frame: {parsed:?}"));
    }
    // Re-emit and parse again.
    let with_checksum = udp.checksum() != 0;
    let mut again = vec![0u8; FRAME_HEADER_LEN + datagram.len()];
    again[FRAME_HEADER_LEN..].copy_from_slice(datagram);
    emit_frame(&a, ip_repr.ident, datagram.len(), with_checksum, &mut again);
    let reparsed = parse_frame(&again).map_err(|d| format!("re-emitted frame dropped: {d:?}"))?;
    if reparsed != parsed {
        return Err(format!(
            "re-emitted frame parses to {reparsed:?}, not {parsed:?}"
        ));
    }
    let ip_bytes = &data[ETH_HEADER_LEN..ETH_HEADER_LEN + IPV4_HEADER_LEN];
    let ours = ip_bytes[1] == 0 && ip_bytes[8] == 64 && ip_bytes[6..8] == [0x40, 0];
    // The header checksum field is compared apart: 0x0000 and 0xffff are the same ones'
    // complement number, so an input may carry either where we write 0x0000.
    let csum = ETH_HEADER_LEN + 10..ETH_HEADER_LEN + 12;
    let same_checksum = again[csum.clone()] == data[csum.clone()]
        || [&again[csum.clone()], &data[csum.clone()]]
            .iter()
            .all(|c| **c == [0, 0] || **c == [0xff, 0xff]);
    if ours
        && (again[..csum.start] != data[..csum.start]
            || again[csum.end..FRAME_HEADER_LEN] != data[csum.end..FRAME_HEADER_LEN]
            || !same_checksum)
    {
        return Err("re-emitted headers differ from the input's".into());
    }
    Ok(true)
}

/// Each layer parser on its own, over the whole input: no panic, and what a repr accepts
/// re-emits to something it parses back to.
fn check_layers(data: &[u8]) -> Result<(), String> {
    if let Ok(eth) = EthernetFrame::new_checked(data) {
        let _ = (
            eth.src_addr(),
            eth.dst_addr(),
            eth.ethertype(),
            eth.payload().len(),
        );
    }
    if let Ok(ip) = Ipv4Packet::new_checked(data) {
        if let Ok(repr) = Ipv4Repr::parse(&ip) {
            let mut out = vec![0u8; repr.buffer_len()];
            repr.emit(&mut Ipv4Packet::new_unchecked(&mut out[..]))
                .map_err(|e| format!("IPv4 re-emit: {e}"))?;
            let back = Ipv4Repr::parse(&Ipv4Packet::new_unchecked(&out[..]))
                .map_err(|e| format!("IPv4 re-emitted header rejected: {e}"))?;
            if back != repr {
                return Err(format!("IPv4 repr {repr:?} re-parses as {back:?}"));
            }
        }
    }
    if let Ok(udp) = UdpPacket::new_checked(data) {
        let (src, dst) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        let _ = (
            udp.src_port(),
            udp.dst_port(),
            udp.payload().len(),
            udp.verify_checksum(src, dst),
        );
        if let Ok(repr) = UdpRepr::parse(&udp, src, dst) {
            let mut out = data.to_vec();
            repr.emit(&mut UdpPacket::new_unchecked(&mut out[..]), src, dst, true)
                .map_err(|e| format!("UDP re-emit: {e}"))?;
            let back = UdpRepr::parse(&UdpPacket::new_unchecked(&out[..]), src, dst)
                .map_err(|e| format!("UDP re-emitted datagram rejected: {e}"))?;
            if back != repr {
                return Err(format!("UDP repr {repr:?} re-parses as {back:?}"));
            }
        }
    }
    Ok(())
}
