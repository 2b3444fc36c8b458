//! Fuzz the scenario TOML parser (`Scenario::parse_str`): see `../checks_dataplane.rs`.
#![no_main]

#[path = "../checks_dataplane.rs"]
#[allow(dead_code)]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(e) = checks::check_scenario(data) {
        panic!("{e}");
    }
});
