//! Fuzz the shared-memory ring records (`TelemetryRecord::parse`, `PolicyChunkHeader::parse`,
//! `PolicyAssembler`): see `../checks_dataplane.rs`.
#![no_main]

#[path = "../checks_dataplane.rs"]
#[allow(dead_code)]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(e) = checks::check_shm_records(data) {
        panic!("{e}");
    }
});
