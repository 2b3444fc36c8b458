//! A round the coordinator decides failed, on real processes (dp + cp per node, loopback):
//! node a asks for round 2, b never does, so a's round cannot complete. The test plays a's
//! coordinator through a's node file: it freezes round 2 (a's worker answers "incomplete"),
//! then decides it failed, losing b. a's `Session::allreduce` returns `PeerLost` naming the
//! round and b, with the caller's buffer unchanged, and a's dp lives on.

mod common;

use common::{trainer, wait_file, Cluster, CP, DP};
use netstorm_node::nodefile::{FrozenStatus, NodeFile, RoundDecision};
use netstorm_node::{Session, SessionError};
use std::time::{Duration, Instant};

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_round_decided_failed_returns_peer_lost_with_the_buffer_unchanged() {
    let mut cl = Cluster::new("failed", 26500);
    let cfg = cl.cfg();
    let dp_a = cl.spawn(DP, "a");
    cl.spawn(CP, "a");
    cl.spawn(DP, "b");
    cl.spawn(CP, "b");
    for n in ["a", "b"] {
        wait_file(&cfg.node_file_path(n));
    }
    // Two good rounds (released through the gossip: every element checked).
    let (a, b) = (trainer("a", 2, cfg.clone()), trainer("b", 2, cfg.clone()));
    a.join().unwrap();
    b.join().unwrap();
    let cfg_a = cfg.clone();
    let round2 = std::thread::spawn(move || {
        let mut s = Session::connect(&cfg_a, "a").unwrap();
        assert_eq!(s.next_round(), 2);
        let mut buf = vec![7.5f32; cfg_a.buffer_elems];
        let result = s.allreduce(&mut buf);
        (result, buf)
    });
    let nf = NodeFile::open(&cfg.node_file_path("a"), cfg.buffer_elems, None).unwrap();
    assert_eq!(nf.members().len(), 2);
    wait_until("a to start round 2", || nf.started_round() == Some(2));
    nf.set_freeze(Some(2));
    wait_until("every worker's answer", || {
        (0..nf.workers()).all(|w| nf.frozen_status(w) == Some((2, FrozenStatus::Incomplete)))
    });
    nf.set_decision(RoundDecision {
        round: 2,
        failed: Some([1u16].into_iter().collect()),
    });
    let (result, buf) = round2.join().unwrap();
    match result {
        Err(SessionError::PeerLost { round: 2, lost }) => assert_eq!(lost, [1]),
        other => panic!("expected PeerLost for round 2, got {other:?}"),
    }
    assert!(buf.iter().all(|&x| x == 7.5), "the caller's buffer changed");
    assert!((0..nf.workers()).all(|w| nf.aborted(w) == 3));
    assert!(
        cl.children[dp_a].try_wait().unwrap().is_none(),
        "a's dp died"
    );
}
