//! Fuzz the cluster config parser (`netstorm_node::config::ClusterConfig::parse_str`) and the
//! cp <-> coordinator framing (`netstorm_node::proto::read_msg`): no panic; config errors name
//! the file; an accepted framed message re-frames to one that reads back the same.
#![no_main]

#[path = "../checks_cluster.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_cluster_input(data));
