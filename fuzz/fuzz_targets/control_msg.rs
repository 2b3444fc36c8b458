//! Fuzz the coordinator's control messages (`ControlMsg` as serde_json) and feed what parses
//! to a node agent and a coordinator: see `../checks_control.rs`.
#![no_main]

#[path = "../checks_control.rs"]
#[allow(dead_code)]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(e) = checks::check_control_msg(data) {
        panic!("{e}");
    }
});
