//! Shared-memory rings between two real processes: the test binary re-runs itself as a child
//! (selected by `NETSTORM_SHM_CHILD_ROLE`), the parent SIGKILLs the child mid-stream several
//! times and restarts it, and checks the delivery rule of `netstorm_dataplane::shm`:
//!
//! * producer killed: every message arrives exactly once, in order, uncorrupted;
//! * consumer killed: messages arrive in order, uncorrupted; the only duplicates are the
//!   message the consumer was handling when it died (at most one per kill, equal to the
//!   previous message).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use netstorm_dataplane::shm::{
    PushError, RingConfig, RingGeometry, ShmConsumer, ShmProducer, ShmRegion,
};
use netstorm_dataplane::shm_records::fnv1a32;

const ROLE_ENV: &str = "NETSTORM_SHM_CHILD_ROLE";
const PATH_ENV: &str = "NETSTORM_SHM_CHILD_PATH";
const TOTAL: u64 = 20_000;
/// The parent kills the child when it has received this many messages.
const KILL_AT: [u64; 6] = [150, 1_000, 3_333, 7_000, 12_345, 17_000];
const DEADLINE: Duration = Duration::from_secs(120);

fn config() -> RingConfig {
    let g = RingGeometry {
        slot_size: 4096,
        slot_count: 8,
    };
    RingConfig {
        policy: g,
        telemetry: g,
    }
}

/// Message `seq`: `[seq u64][pattern of 0..=4000 bytes][fnv1a32 of everything before]`
/// (large, so a slot write takes long enough for a torn read to show up if the protocol
/// allowed one).
fn message(seq: u64) -> Vec<u8> {
    let len = (seq.wrapping_mul(2_654_435_761) % 4001) as usize;
    let mut m = seq.to_le_bytes().to_vec();
    m.extend((0..len).map(|i| {
        (seq as u8)
            .wrapping_mul(131)
            .wrapping_add((i as u8).wrapping_mul(7))
    }));
    let sum = fnv1a32(&m);
    m.extend_from_slice(&sum.to_le_bytes());
    m
}

/// The sequence number of an intact message, panicking on any corruption.
fn check(m: &[u8]) -> u64 {
    assert!(m.len() >= 12, "short message: {m:?}");
    let seq = u64::from_le_bytes(m[..8].try_into().unwrap());
    let expected = message(seq);
    if m != &expected[..] {
        let at = m
            .iter()
            .zip(&expected)
            .position(|(a, b)| a != b)
            .unwrap_or(m.len().min(expected.len()));
        panic!(
            "message {seq} corrupted: {} bytes, expected {}, first difference at byte {at}",
            m.len(),
            expected.len()
        );
    }
    seq
}

/// Child side: push, waiting for room; exits the process if the ring stays full for 10 s
/// (the parent died), so a failed run leaves no spinning orphan behind.
fn push_spin(p: &mut ShmProducer, m: &[u8]) {
    let start = Instant::now();
    loop {
        match p.try_push(m) {
            Ok(()) => return,
            Err(PushError::Full) if start.elapsed() > Duration::from_secs(10) => {
                std::process::exit(3)
            }
            Err(PushError::Full) => std::thread::yield_now(),
            Err(e) => panic!("push: {e}"),
        }
    }
}

struct TempRingFile(PathBuf);
impl TempRingFile {
    fn new(tag: &str) -> Self {
        let dir = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        Self(dir.join(format!("netstorm-proc-{tag}-{}", std::process::id())))
    }
}
impl Drop for TempRingFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Attaches to the parent's ring file, retrying while the previous (killed) incarnation's
/// claims are being released by the parent reaping it.
fn child_region() -> ShmRegion {
    let path = std::env::var(PATH_ENV).expect("child without ring path");
    ShmRegion::attach(path, config()).expect("child attach")
}

/// A child process that is killed and reaped when dropped (also when the parent test fails).
struct ChildGuard(Child);

impl std::ops::Deref for ChildGuard {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}
impl std::ops::DerefMut for ChildGuard {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}
impl Drop for ChildGuard {
    fn drop(&mut self) {
        kill_and_reap(&mut self.0);
    }
}

fn spawn_child(test: &str, role: &str, path: &Path) -> ChildGuard {
    let child = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE_ENV, role)
        .env(PATH_ENV, path)
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn child");
    ChildGuard(child)
}

fn kill_and_reap(child: &mut Child) {
    let _ = child.kill(); // SIGKILL (harmless if it already exited)
    let _ = child.wait(); // reaped: its pid no longer counts as a live claim
}

fn finish(child: &mut Child) {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(10) {
            kill_and_reap(child);
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn two_processes_producer_killed_mid_stream_exactly_once() {
    if std::env::var(ROLE_ENV).as_deref() == Ok("producer") {
        // Child: produce from wherever the ring stands until TOTAL.
        let region = child_region();
        let mut tx = region.policy_producer().expect("producer claim");
        while tx.next_seq() < TOTAL {
            let m = message(tx.next_seq());
            push_spin(&mut tx, &m);
        }
        return;
    }
    let file = TempRingFile::new("producer");
    let region = ShmRegion::create(&file.0, config()).unwrap();
    let mut rx: ShmConsumer = region.policy_consumer().unwrap();
    let test = "two_processes_producer_killed_mid_stream_exactly_once";
    let mut child = spawn_child(test, "producer", &file.0);
    let mut kills = KILL_AT.iter().peekable();
    let mut buf = vec![0u8; 4092];
    let mut next = 0u64;
    let start = Instant::now();
    while next < TOTAL {
        assert!(start.elapsed() < DEADLINE, "stalled at message {next}");
        match rx.try_pop(&mut buf).unwrap() {
            Some(n) => {
                let seq = check(&buf[..n]);
                assert_eq!(seq, next, "lost, duplicated or reordered message");
                next += 1;
                if next == 1 {
                    // The live child holds the producer role: a second producer is refused,
                    // naming the child's pid.
                    let err = region.policy_producer().unwrap_err().to_string();
                    let expected = format!(
                        "policy ring: ring producer already attached by pid {}",
                        child.id()
                    );
                    assert!(err.ends_with(&expected), "{err}");
                }
            }
            None => {
                if let Some(status) = child.try_wait().unwrap() {
                    panic!("producer child exited early ({status}) at message {next}");
                }
                std::thread::yield_now();
            }
        }
        if kills.peek().is_some_and(|&&k| next == k) {
            kills.next();
            drop(child); // SIGKILL + reap
            child = spawn_child(test, "producer", &file.0);
        }
    }
    finish(&mut child);
    assert_eq!(kills.count(), 0);
    assert_eq!(rx.try_pop(&mut buf), Ok(None), "nothing beyond TOTAL");
    eprintln!(
        "producer killed {} times: {TOTAL} messages exactly once in order",
        KILL_AT.len()
    );
}

#[test]
fn two_processes_consumer_killed_mid_stream_at_least_once() {
    if std::env::var(ROLE_ENV).as_deref() == Ok("relay") {
        // Child: consume the policy ring, relay each message onto the telemetry ring; commit
        // the policy message only after relaying it (`pop_with`).
        let region = child_region();
        let mut rx = region.policy_consumer().expect("consumer claim");
        let mut tx = region.telemetry_producer().expect("producer claim");
        let mut idle = Instant::now();
        loop {
            match rx.pop_with(|m| {
                push_spin(&mut tx, m);
                check(m)
            }) {
                Ok(Some(seq)) if seq + 1 == TOTAL => return,
                Ok(Some(_)) => idle = Instant::now(),
                Ok(None) if idle.elapsed() > Duration::from_secs(10) => return,
                Ok(None) => std::thread::yield_now(),
                Err(e) => panic!("pop: {e}"),
            }
        }
    }
    let file = TempRingFile::new("consumer");
    let region = ShmRegion::create(&file.0, config()).unwrap();
    let mut tx = region.policy_producer().unwrap();
    let mut rx = region.telemetry_consumer().unwrap();
    let test = "two_processes_consumer_killed_mid_stream_at_least_once";
    let mut child = spawn_child(test, "relay", &file.0);
    let mut kills = KILL_AT.iter().peekable();
    let mut buf = vec![0u8; 4092];
    let mut next = 0u64; // next new message expected back
    let mut duplicates = 0u64;
    let start = Instant::now();
    while next < TOTAL {
        assert!(start.elapsed() < DEADLINE, "stalled at message {next}");
        // Keep the policy ring fed.
        while tx.next_seq() < TOTAL {
            match tx.try_push(&message(tx.next_seq())) {
                Ok(()) => {}
                Err(PushError::Full) => break,
                Err(e) => panic!("push: {e}"),
            }
        }
        match rx.try_pop(&mut buf).unwrap() {
            Some(n) => {
                let seq = check(&buf[..n]);
                if seq + 1 == next {
                    duplicates += 1; // redelivery of the message a killed consumer held
                } else {
                    assert_eq!(seq, next, "lost or reordered message");
                    next += 1;
                }
            }
            None => {
                if let Some(status) = child.try_wait().unwrap() {
                    panic!("relay child exited early ({status}) at message {next}");
                }
                std::thread::yield_now();
            }
        }
        if kills.peek().is_some_and(|&&k| next == k) {
            kills.next();
            drop(child); // SIGKILL + reap
            child = spawn_child(test, "relay", &file.0);
        }
    }
    finish(&mut child);
    assert_eq!(kills.count(), 0);
    assert!(
        duplicates <= KILL_AT.len() as u64,
        "{duplicates} duplicates for {} kills",
        KILL_AT.len()
    );
    eprintln!(
        "consumer killed {} times: {TOTAL} messages in order, {duplicates} redelivered",
        KILL_AT.len()
    );
    assert_eq!(rx.try_pop(&mut buf), Ok(None), "nothing beyond TOTAL");
}
