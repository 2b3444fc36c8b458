//! Checks shared by the data-plane fuzz targets (`fuzz_targets/{scenario_toml,shm_records}.rs`)
//! and by the corpus replay in the normal test suite (`dataplane/tests/fuzz_corpus.rs`): no
//! panic on any input, errors that name their origin, and what is accepted is usable and
//! re-emits to something that parses to the same value.

use netstorm_dataplane::scenario::Scenario;
use netstorm_dataplane::shm_records::{
    PolicyAssembler, PolicyChunkHeader, PolicyRecord, TelemetryRecord,
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
