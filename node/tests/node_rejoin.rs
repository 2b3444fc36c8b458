//! A lost node comes back (issue 19 item 4) on real processes: three nodes on loopback (dp +
//! cp + netstorm-trainer each). Every trainer pauses before round 6; the test kills node c's
//! three processes (SIGKILL); a and b fail round 6 naming c and train on over a and b, then
//! pause again before round 10. The test restarts c's dp, cp and trainer: the coordinator
//! admits c under a new epoch from a later round, c's trainer is told it rejoined
//! (`MembersJoined`) and waits in its state sync; a and b go on, are told too at that round,
//! and sync their state from a (the lowest-id member that did not join). The test asserts
//! that the state c received is bit-identical to a's and b's (digests of the bytes, which
//! hold every byte value and NaN / -0.0 patterns plus every result so far), that every later
//! round sums over all three and is exact, and that every trainer ends at the same round
//! with the same state. It prints the kill → failed-round and restart → first-round-with-c
//! times (never asserted).

mod common;

use common::{three_nodes, wait_file, Cluster, CP, DP};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TRAINER: &str = env!("CARGO_BIN_EXE_netstorm-trainer");
const KILL_AT: u32 = 6;
const REJOIN_AT: u32 = 10;
const UNTIL: u64 = 22;

fn spawn_trainer(cl: &mut Cluster, node: &str, out: &Path, extra: &[String]) -> usize {
    let child = Command::new(TRAINER)
        .arg("--config")
        .arg(&cl.config)
        .args(["--node", node, "--rounds", "1000"])
        .args(["--until-round", &UNTIL.to_string()])
        .args(extra)
        .stdout(std::fs::File::create(out).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    cl.children.push(child);
    cl.children.len() - 1
}

/// Waits (bounded) until `path` holds a line `pred` accepts; returns when it appeared.
fn wait_line(path: &Path, what: &str, pred: impl Fn(&str) -> bool) -> Instant {
    let t0 = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().any(&pred) {
            return Instant::now();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "{what}: not seen in 90 s:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn waiting_file(go: &Path, node: &str) -> PathBuf {
    let mut w = go.to_path_buf().into_os_string();
    w.push(format!(".{node}.waiting"));
    w.into()
}

/// The state digest a trainer printed after its sync (round, digest).
fn synced(text: &str, node: &str) -> (u64, String) {
    let prefix = format!("trainer {node}: round ");
    let line = text
        .lines()
        .find(|l| l.starts_with(&prefix) && l.contains(": state synced from a ("))
        .unwrap_or_else(|| panic!("{node} did not sync:\n{text}"));
    let round = line[prefix.len()..]
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let digest = line.rsplit("digest ").next().unwrap().trim_end_matches(')');
    (round, digest.to_string())
}

#[test]
fn a_killed_node_restarts_rejoins_with_the_state_and_is_summed_again() {
    let mut cl = Cluster::with_config("noderejoin", 27200, three_nodes);
    let cfg = cl.cfg();
    let go = cl.dir.join("go");
    let go_rejoin = cl.dir.join(format!("go.{REJOIN_AT}"));
    let mut procs: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for n in ["a", "b", "c"] {
        let dp = cl.spawn(DP, n);
        let cp = cl.spawn(CP, n);
        procs.insert(n, vec![dp, cp]);
    }
    for n in ["a", "b", "c"] {
        wait_file(&cfg.node_file_path(n));
    }
    let out: BTreeMap<&str, PathBuf> = ["a", "b", "c"]
        .iter()
        .map(|&n| (n, cl.dir.join(format!("trainer-{n}.out"))))
        .collect();
    for n in ["a", "b", "c"] {
        let pauses = [
            "--pause-before-round".to_string(),
            KILL_AT.to_string(),
            "--pause-before-round".to_string(),
            REJOIN_AT.to_string(),
            "--pause-file".to_string(),
            go.display().to_string(),
        ];
        let t = spawn_trainer(&mut cl, n, &out[n], &pauses);
        procs.get_mut(n).unwrap().push(t);
    }
    for n in ["a", "b", "c"] {
        wait_file(&waiting_file(&go, n));
    }
    // Node c goes away whole; a and b start round 6, fail it, and train on to the second
    // pause.
    for &i in &procs["c"] {
        cl.children[i].kill().unwrap();
        cl.children[i].wait().unwrap();
    }
    let killed = Instant::now();
    std::fs::write(&go, b"").unwrap();
    let mut failed_at = killed;
    for n in ["a", "b"] {
        let seen = wait_line(&out[n], "the failed round", |l| {
            l.starts_with(&format!("trainer {n}: round {KILL_AT} failed: lost c"))
        });
        failed_at = failed_at.max(seen);
    }
    for n in ["a", "b"] {
        wait_file(&waiting_file(&go_rejoin, n));
    }
    // c restarts: a fresh dp (its old node file removed first, so its trainer cannot map
    // the dead dp's), cp and trainer.
    let _ = std::fs::remove_file(cfg.node_file_path("c"));
    let restarted = Instant::now();
    let dp = cl.spawn(DP, "c");
    wait_file(&cfg.node_file_path("c"));
    let cp = cl.spawn(CP, "c");
    let out_c2 = cl.dir.join("trainer-c-rejoined.out");
    let t = spawn_trainer(&mut cl, "c", &out_c2, &[]);
    procs.insert("c", vec![dp, cp, t]);
    // Admitted: c's trainer was told it rejoined and waits in its sync; a and b go on.
    wait_line(&out_c2, "c told it rejoined", |l| {
        l.starts_with("trainer c: round ") && l.contains("c rejoin(s); syncing state from a")
    });
    std::fs::write(&go_rejoin, b"").unwrap();
    let first_with_c = wait_line(&out_c2, "c's first round", |l| {
        l.starts_with("trainer c: round ") && l.contains(" ok in ")
    });
    let mut texts = BTreeMap::new();
    for n in ["a", "b", "c"] {
        let i = procs[n][2];
        let st = loop {
            if let Some(st) = cl.children[i].try_wait().unwrap() {
                break st;
            }
            assert!(
                restarted.elapsed() < Duration::from_secs(120),
                "trainer {n} still running 120 s after the restart"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let path = if n == "c" { &out_c2 } else { &out[n] };
        let text = std::fs::read_to_string(path).unwrap();
        eprintln!("{text}");
        assert!(st.success(), "trainer {n}: {st}\n{text}");
        texts.insert(n, text);
    }
    // One sync, at the same round, from a, leaving the same bytes everywhere.
    let (join, digest) = synced(&texts["a"], "a");
    for n in ["b", "c"] {
        assert_eq!(
            synced(&texts[n], n),
            (join, digest.clone()),
            "{n}'s state after the sync"
        );
    }
    assert!(join > u64::from(REJOIN_AT), "the join round {join}");
    for n in ["a", "b"] {
        let text = &texts[n];
        assert!(
            text.contains(&format!(
                "trainer {n}: round {KILL_AT} failed: lost c (buffer unchanged"
            )),
            "{text}"
        );
        for r in KILL_AT + 1..REJOIN_AT {
            assert!(
                text.lines()
                    .any(|l| l.starts_with(&format!("trainer {n}: round {r} ok"))
                        && l.ends_with(", over a,b)")),
                "round {r} at {n} did not run over a and b:\n{text}"
            );
        }
    }
    // 4000 elements of results + 272 pattern bytes + the 8-byte length, 3 bytes per
    // element: the sync takes rounds join and join + 1; every round after sums all three.
    for n in ["a", "b", "c"] {
        let text = &texts[n];
        for r in join + 2..UNTIL {
            assert!(
                text.lines()
                    .any(|l| l.starts_with(&format!("trainer {n}: round {r} ok"))
                        && !l.contains(", over ")),
                "round {r} at {n} did not run over a, b and c:\n{text}"
            );
        }
        let last = text.lines().last().unwrap_or_default();
        assert!(last.starts_with("trainer: OK "), "{last}");
        assert!(last.contains("state synced for rejoin(s) of c"), "{last}");
        assert!(
            last.ends_with("Mbit/s of buffer per second of sync"),
            "{last}"
        );
    }
    let final_digest = |n: &str| {
        texts[n]
            .lines()
            .find_map(|l| l.strip_prefix(&format!("trainer {n}: state digest ")))
            .unwrap_or_else(|| panic!("no final state digest at {n}"))
            .to_string()
    };
    assert_eq!(
        final_digest("a"),
        format!(
            "{} after {UNTIL} rounds",
            final_digest("a").split(' ').next().unwrap()
        )
    );
    for n in ["b", "c"] {
        assert_eq!(final_digest(n), final_digest("a"), "{n}'s final state");
    }
    let c_rounds = UNTIL - (join + 2);
    assert!(
        texts["c"].lines().last().unwrap().starts_with(&format!(
            "trainer: OK {c_rounds} rounds of 4000 elements at node c"
        )),
        "{}",
        texts["c"]
    );
    eprintln!(
        "kill to both survivors' failed round {KILL_AT}: {:.2} s; restart of c to its first round (round {}): {:.2} s (the survivors were paused until c's trainer waited in its sync)",
        (failed_at - killed).as_secs_f64(),
        join + 2,
        (first_with_c - restarted).as_secs_f64()
    );
    // The coordinator's counters file: c is no longer lost, its rejoin is logged.
    let t0 = Instant::now();
    let (stats, v) = loop {
        let stats =
            std::fs::read_to_string(cl.dir.join("netstorm-9.coordinator.json")).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&stats).unwrap_or_default();
        if v["lost"] == serde_json::json!([]) || t0.elapsed() > Duration::from_secs(20) {
            break (stats, v);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(v["lost"], serde_json::json!([]), "{stats}");
    assert!(stats.contains("node c rejoins"), "{stats}");
}
