//! Losing a whole node on real processes (issue 19): three nodes on loopback (dp + cp +
//! netstorm-trainer each), every trainer pauses before round 6; the test kills node c's
//! three processes (SIGKILL) and lets a and b go on. Their round 6 cannot complete without
//! c: the coordinator declares c lost (its data plane silent at a and b for
//! `peer_timeout_ms`, 1.5 s here), decides round 6 failed everywhere, and re-plans over a and b; both
//! trainers report round 6 failed naming c, every later round exact over a and b, and exit 0.

mod common;

use common::{three_nodes, wait_file, Cluster, CP, DP};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TRAINER: &str = env!("CARGO_BIN_EXE_netstorm-trainer");
const ROUNDS: u32 = 14;
const PAUSE_AT: u32 = 6;

#[test]
fn a_killed_node_fails_one_round_and_the_survivors_train_on_exactly() {
    let mut cl = Cluster::with_config("nodeloss", 27000, three_nodes);
    let cfg = cl.cfg();
    let go = cl.dir.join("go");
    let mut procs = std::collections::BTreeMap::new();
    for n in ["a", "b", "c"] {
        let dp = cl.spawn(DP, n);
        let cp = cl.spawn(CP, n);
        procs.insert(n, vec![dp, cp]);
    }
    for n in ["a", "b", "c"] {
        wait_file(&cfg.node_file_path(n));
    }
    let mut out = std::collections::BTreeMap::new();
    for n in ["a", "b", "c"] {
        let path = cl.dir.join(format!("trainer-{n}.out"));
        let child = Command::new(TRAINER)
            .arg("--config")
            .arg(&cl.config)
            .args(["--node", n, "--rounds", &ROUNDS.to_string()])
            .args(["--pause-before-round", &PAUSE_AT.to_string()])
            .arg("--pause-file")
            .arg(&go)
            .stdout(std::fs::File::create(&path).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        cl.children.push(child);
        procs.get_mut(n).unwrap().push(cl.children.len() - 1);
        out.insert(n, path);
    }
    for n in ["a", "b", "c"] {
        let mut waiting = go.clone().into_os_string();
        waiting.push(format!(".{n}.waiting"));
        wait_file(Path::new(&waiting));
    }
    // Node c goes away whole; a and b start round 6.
    for &i in &procs["c"] {
        cl.children[i].kill().unwrap();
        cl.children[i].wait().unwrap();
    }
    let killed = Instant::now();
    std::fs::write(&go, b"").unwrap();
    for n in ["a", "b"] {
        let i = procs[n][2];
        let st = loop {
            if let Some(st) = cl.children[i].try_wait().unwrap() {
                break st;
            }
            assert!(
                killed.elapsed() < Duration::from_secs(90),
                "trainer {n} still running 90 s after the kill"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let text = std::fs::read_to_string(&out[n]).unwrap();
        eprintln!("{text}");
        assert!(st.success(), "trainer {n}: {st}\n{text}");
        assert!(
            text.contains(&format!(
                "trainer {n}: round {PAUSE_AT} failed: lost c (buffer unchanged"
            )),
            "{text}"
        );
        for r in PAUSE_AT + 1..ROUNDS {
            assert!(
                text.lines()
                    .any(|l| l.starts_with(&format!("trainer {n}: round {r} ok"))
                        && l.ends_with(", over a,b)")),
                "round {r} at {n} did not run over a and b:\n{text}"
            );
        }
        let last = text.lines().last().unwrap_or_default();
        assert!(
            last.starts_with(&format!(
                "trainer: OK {} rounds, 1 failed (peer lost: c) of 4000 elements at node {n}",
                ROUNDS - 1
            )),
            "{last}"
        );
        assert!(
            last.ends_with("Mbit/s of buffer per second of sync"),
            "{last}"
        );
    }
    eprintln!(
        "kill to both survivors done with {ROUNDS} rounds: {:.2} s",
        killed.elapsed().as_secs_f64()
    );
    // The coordinator's counters file is rewritten every 100 ms: wait for one written after
    // the loss and its round's decision (the trainers may finish first; the loss and the
    // decision can land in different writes).
    let t0 = Instant::now();
    let (stats, v) = loop {
        let stats =
            std::fs::read_to_string(cl.dir.join("netstorm-9.coordinator.json")).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&stats).unwrap_or_default();
        let settled = v["loss_log"].as_array().is_some_and(|l| l.len() >= 2);
        if settled || t0.elapsed() > Duration::from_secs(20) {
            break (stats, v);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(v["lost"], serde_json::json!(["c"]), "{stats}");
    assert_eq!(v["loss_log"].as_array().map(Vec::len), Some(2), "{stats}");
    for n in ["a", "b"] {
        assert!(
            cl.children[procs[n][0]].try_wait().unwrap().is_none(),
            "the dp of {n} died"
        );
    }
}
