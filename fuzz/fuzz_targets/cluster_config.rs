//! Fuzz the cluster config parser (`netstorm_node::config::ClusterConfig::parse_str`) and the
//! cp <-> coordinator framing (`netstorm_node::proto::read_msg`): no panic; config errors name
//! the file; an accepted framed message re-frames to one that reads back the same.
#![no_main]

use netstorm_node::config::ClusterConfig;
use netstorm_node::proto::{read_msg, write_msg};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(e) = ClusterConfig::parse_str(text, "fuzz-cluster.toml") {
            let msg = e.to_string();
            assert!(
                msg.contains("fuzz-cluster.toml"),
                "error does not name the file: {msg}"
            );
        }
    }
    if let Ok(msg) = read_msg(&mut &data[..]) {
        let mut framed = Vec::new();
        write_msg(&mut framed, &msg).expect("write to a Vec");
        let again = read_msg(&mut &framed[..]).expect("re-framed message reads back");
        let mut framed2 = Vec::new();
        write_msg(&mut framed2, &again).expect("write to a Vec");
        assert_eq!(framed, framed2, "cp message does not re-frame stably");
    }
});
