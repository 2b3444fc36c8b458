//! Checks shared by the cluster-config fuzz target and the node crate's corpus replay test:
//! the cluster config parser (`ClusterConfig::parse_str`) never panics and its errors name the
//! file; a cp <-> coordinator message that reads re-frames to one that reads back the same.

use netstorm_node::config::ClusterConfig;
use netstorm_node::proto::{read_msg, write_msg};

/// Panics (as a fuzz target should) when a check fails.
pub fn check_cluster_input(data: &[u8]) {
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
}
