//! Fuzz the Ethernet/IPv4/UDP frame parsers (`wire::parse_frame` and the layer views the DPDK
//! port's receive path uses): see `../checks_dataplane.rs`.
#![no_main]

#[path = "../checks_dataplane.rs"]
#[allow(dead_code)]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(e) = checks::check_frame(data) {
        panic!("{e}");
    }
});
