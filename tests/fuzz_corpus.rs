//! CI's stand-in for the `control_msg` fuzz target: every committed file of
//! `fuzz/corpus/control_msg/` goes through the target's checks (`fuzz/checks_control.rs`,
//! shared), plus a bounded proptest run of random and mutated messages. Regenerate the seeds
//! with `cargo test -p netstorm --test fuzz_corpus -- --ignored write_seed_corpus`.

#[path = "../fuzz/checks_control.rs"]
mod checks;

use netstorm_controlplane::coordinator::ControlMsg;
use netstorm_dataplane::policy::{ForwardMode, PolicyBuilder};
use proptest::prelude::*;
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/control_msg")
}

fn corpus() -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir())
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir().display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn control_msg_corpus_replays() {
    let files = corpus();
    assert!(files.len() >= 9, "{} files", files.len());
    for (path, bytes) in &files {
        match checks::check_control_msg(bytes) {
            Ok(true) => {}
            Ok(false) => panic!("seed {} does not parse", path.display()),
            Err(e) => panic!("corpus file {}: {e}", path.display()),
        }
    }
}

fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let seeds: Vec<Vec<u8>> = corpus().into_iter().map(|(_, b)| b).collect();
    let n = seeds.len();
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256),
        (
            0..n,
            proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)
        )
            .prop_map(move |(i, edits)| {
                let mut b = seeds[i].clone();
                for (at, byte) in edits {
                    let at = at % b.len();
                    // Mostly digits, so numbers change but the JSON often still parses.
                    b[at] = if byte < 200 { b'0' + byte % 10 } else { byte };
                }
                b
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn control_msg_parser_survives_mutations(data in mutated()) {
        checks::check_control_msg(&data).map_err(TestCaseError::fail)?;
    }
}

fn seeds() -> Vec<(&'static str, ControlMsg)> {
    let mut b = PolicyBuilder::new();
    let p = [None, Some(0), Some(0)];
    b.tree(0, 0.6, &p, &p, ForwardMode::Pipelined);
    let q = [Some(1), None, Some(1)];
    b.tree(1, 0.4, &q, &q, ForwardMode::StoreAndForward);
    let policy = b.build(2, 3);
    vec![
        (
            "prepare",
            ControlMsg::Prepare {
                epoch: 2,
                activate_at_round: 5,
                policy,
                joined: Vec::new(),
            },
        ),
        ("prepare_ack", ControlMsg::PrepareAck { node: 1, epoch: 2 }),
        (
            "prepare_nack",
            ControlMsg::PrepareNack {
                node: 2,
                epoch: 2,
                current_round: 6,
            },
        ),
        (
            "commit",
            ControlMsg::Commit {
                epoch: 2,
                activate_at_round: 5,
            },
        ),
        ("commit_ack", ControlMsg::CommitAck { node: 0, epoch: 2 }),
        ("abort", ControlMsg::Abort { epoch: 2 }),
        ("abort_ack", ControlMsg::AbortAck { node: 1, epoch: 2 }),
        ("heartbeat", ControlMsg::Heartbeat { node: 2, round: 4 }),
        (
            "telemetry_empty",
            ControlMsg::Telemetry {
                node: 1,
                samples: Vec::new(),
            },
        ),
    ]
}

#[test]
#[ignore = "writes fuzz/corpus/control_msg; run explicitly to regenerate the seeds"]
fn write_seed_corpus() {
    std::fs::create_dir_all(dir()).unwrap();
    for (name, msg) in seeds() {
        std::fs::write(
            dir().join(format!("seed_{name}.json")),
            serde_json::to_vec(&msg).unwrap(),
        )
        .unwrap();
    }
}
