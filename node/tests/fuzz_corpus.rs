//! Replays the committed fuzz corpus of the cluster-config / cp-framing target
//! (fuzz/corpus/cluster_config) through the same checks as `fuzz/fuzz_targets/cluster_config.rs`,
//! plus bounded deterministic mutations of every seed: no panic, config errors name the file,
//! framed messages re-frame stably.

use netstorm_node::config::ClusterConfig;
use netstorm_node::proto::{read_msg, write_msg};

fn check(data: &[u8]) {
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

#[test]
fn cluster_config_corpus_and_mutations() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/cluster_config");
    let mut seeds = 0;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for entry in std::fs::read_dir(&dir).expect("corpus directory") {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        check(&data);
        seeds += 1;
        for _ in 0..256 {
            let mut m = data.clone();
            for _ in 0..1 + next() % 4 {
                if m.is_empty() {
                    break;
                }
                let i = (next() % m.len() as u64) as usize;
                match next() % 3 {
                    0 => m[i] = next() as u8,
                    1 => {
                        m.remove(i);
                    }
                    _ => m.insert(i, b"=[]\"\n0"[(next() % 6) as usize]),
                }
            }
            check(&m);
        }
    }
    assert!(seeds >= 3, "corpus has {seeds} files");
}
