//! Replays the committed fuzz corpus of the cluster-config / cp-framing target
//! (fuzz/corpus/cluster_config) through the checks the fuzz target uses (`fuzz/checks_cluster.rs`),
//! plus bounded deterministic mutations of every seed: no panic, config errors name the file,
//! framed messages re-frame stably.

#[path = "../../fuzz/checks_cluster.rs"]
mod checks;
use checks::check_cluster_input as check;

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
