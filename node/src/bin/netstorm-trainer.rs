//! `netstorm-trainer`, an example trainer (a binary so tests and scripts can run it): runs R all-reduce rounds through the local `netstorm-dp` with
//! deterministic test gradients (small integers, so f32 sums are exact in any order) and
//! checks every result against the reference sum over all nodes (bit for bit; within the
//! documented error bound for a 16-bit `wire`, with a per-round digest of the buffer so the
//! nodes' results can be compared).
//!
//! ```text
//! netstorm-trainer --config cluster.toml --node a --rounds 10
//! ```
//! Prints one line per round and `trainer: OK <rounds> rounds ...` at the end; exits 1 on a
//! mismatch or a timeout. A round the cluster decided failed (a node was lost, issue 19)
//! prints `trainer <node>: round <r> failed: lost <nodes> ...` and training goes on: later
//! rounds are checked against the sum over the nodes that contributed, and the last line
//! reads `trainer: OK <N> rounds, <F> failed (peer lost: <nodes>) of ...`.
//!
//! Rejoins (issue 19): the trainer keeps a state (a block of every byte value and NaN / -0.0
//! bit patterns, then the running f32 sum of every good round's result: the same bytes on
//! every member). When nodes rejoin (`SessionError::MembersJoined`), every member syncs it
//! from the lowest-id member that did not just join (`Session::sync_state`) and prints
//! `trainer <node>: round <r>: state synced from <root> (<bytes> bytes, digest <d>)`; a
//! rejoined trainer starts from an empty state and learns it so. Every result is still
//! checked against the reference sum over its contributors, and the state's digest is
//! printed before the last line (`trainer <node>: state digest <d> after <N> rounds`) so
//! the nodes' states can be compared.

use clap::Parser;
use netstorm_dataplane::reference::{digest, fill_test_gradient, reference_sum, result_ok_over};
use netstorm_node::{ClusterConfig, Session, SessionError};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long)]
    config: PathBuf,
    #[arg(long)]
    node: String,
    #[arg(long, default_value_t = 10)]
    rounds: u32,
    /// Pause between rounds (simulated compute), milliseconds.
    #[arg(long, default_value_t = 0)]
    compute_ms: u64,
    /// Wait up to this long for the dp to come up.
    #[arg(long, default_value_t = 30.0)]
    connect_timeout_s: f64,
    /// Before this run's round N (0-based), write `<pause-file>.<node>.waiting` and wait until
    /// `<pause-file>` exists (up to `--pause-timeout-s`): lets a script change the network at
    /// a known round however busy the machine is. May be given again for later pauses:
    /// the k-th (k > 1) before round M uses `<pause-file>.<M>.<node>.waiting` and
    /// `<pause-file>.<M>`.
    #[arg(long, requires = "pause_file")]
    pause_before_round: Vec<u32>,
    /// Stop once the next round would be this cluster round (a rejoined node's trainer
    /// starts at a later round than the others: every node then ends at the same round).
    #[arg(long)]
    until_round: Option<u64>,
    #[arg(long)]
    pause_file: Option<PathBuf>,
    #[arg(long, default_value_t = 60.0)]
    pause_timeout_s: f64,
    /// The first N good rounds of this run are checked but not timed (the Mbit/s figure
    /// leaves out start-up: first policy, first rates, cold caches).
    #[arg(long, default_value_t = 0)]
    warmup_rounds: u32,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("trainer: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let cfg = ClusterConfig::load(&args.config)?;
    // Real hosts never run on keys derived from the public job id (issue 20).
    cfg.require_secret()?;
    let me = cfg.node(&args.node)?.id as usize;
    let n = cfg.nodes.len();
    let t0 = std::time::Instant::now();
    let mut session = loop {
        match Session::connect(&cfg, &args.node) {
            Ok(s) => break s,
            Err(e) if t0.elapsed().as_secs_f64() < args.connect_timeout_s => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e.into()),
        }
    };
    let mut buf = vec![0.0f32; cfg.buffer_elems];
    let mut state = TrainerState::initial(cfg.buffer_elems);
    let mut syncs: Vec<String> = Vec::new();
    // A sync that failed (a member lost mid-sync) is made again at the next call.
    let mut pending_sync: Option<u16> = None;
    let mut total = Duration::ZERO;
    let mut timed_rounds = 0u32;
    let mut epochs = Vec::new();
    let (mut ok_rounds, mut failed) = (0u32, 0u32);
    let mut lost_nodes: BTreeSet<String> = BTreeSet::new();
    let name = |v: u16| {
        cfg.nodes
            .get(usize::from(v))
            .map_or_else(|| v.to_string(), |n| n.name.clone())
    };
    let mut i = 0;
    let mut paused: Vec<u32> = Vec::new();
    while i < args.rounds {
        if let Some(k) = args.pause_before_round.iter().position(|&p| p == i) {
            if !paused.contains(&i) {
                paused.push(i);
                pause(&args, (k > 0).then_some(i))?;
            }
        }
        if args.until_round.is_some_and(|u| session.next_round() >= u) {
            break;
        }
        if let Some(root) = pending_sync {
            let r = session.next_round();
            match session.sync_state(state.bytes_mut(), root) {
                Ok(()) => {
                    pending_sync = None;
                    println!(
                        "trainer {}: round {r}: state synced from {} ({} bytes, digest {:016x})",
                        args.node,
                        name(root),
                        state.bytes.len(),
                        state.digest()
                    );
                }
                Err(SessionError::PeerLost { round, lost }) => {
                    let names: Vec<String> = lost.iter().map(|&v| name(v)).collect();
                    println!(
                        "trainer {}: round {round} (state sync) failed: lost {}; syncing again",
                        args.node,
                        names.join(", ")
                    );
                }
                Err(SessionError::MembersJoined { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            continue;
        }
        let r = session.next_round() as u32;
        fill_test_gradient(&mut buf, me, r);
        let st = match session.allreduce(&mut buf) {
            Ok(st) => st,
            Err(SessionError::MembersJoined {
                round,
                joined,
                members,
            }) => {
                // Every member picks the same root: the lowest-id member that did not join.
                let root = members
                    .iter()
                    .copied()
                    .find(|v| !joined.contains(v))
                    .or(members.first().copied())
                    .unwrap_or(0);
                let names: Vec<String> = joined.iter().map(|&v| name(v)).collect();
                if joined.contains(&(me as u16)) {
                    // Rejoined: whatever this process holds is not the job's state.
                    state.bytes.fill(0);
                }
                println!(
                    "trainer {}: round {round}: {} rejoin(s); syncing state from {} before contributing",
                    args.node,
                    names.join(", "),
                    name(root)
                );
                syncs.extend(names);
                pending_sync = Some(root);
                continue;
            }
            Err(SessionError::PeerLost { round, lost }) => {
                failed += 1;
                let names: Vec<String> = lost.iter().map(|&v| name(v)).collect();
                lost_nodes.extend(names.iter().cloned());
                println!(
                    "trainer {}: round {round} failed: lost {} (buffer unchanged; going on with the survivors)",
                    args.node,
                    names.join(", ")
                );
                i += 1;
                continue;
            }
            Err(SessionError::Alone) => {
                anyhow::bail!(
                    "node {} is the only member left (lost: {}): nothing to synchronize with; stopping after {ok_rounds} good rounds",
                    args.node,
                    lost_nodes.iter().cloned().collect::<Vec<_>>().join(", ")
                );
            }
            Err(e) => return Err(e.into()),
        };
        if ok_rounds >= args.warmup_rounds {
            total += st.elapsed;
            timed_rounds += 1;
        }
        ok_rounds += 1;
        i += 1;
        // The nodes the result sums (every node unless one was lost).
        let contributors: Vec<usize> = if st.contributors.is_empty() {
            (0..n).collect()
        } else {
            st.contributors.iter().map(usize::from).collect()
        };
        for (i, x) in buf.iter().enumerate() {
            if !result_ok_over(cfg.wire, &contributors, r, i, *x) {
                let want = reference_sum(contributors.iter().copied(), r, i);
                anyhow::bail!(
                    "round {r}: element {i} is {x}, expected {want}{} (node {})",
                    if cfg.wire.is_16bit() {
                        format!(" within the {} error bound", cfg.wire)
                    } else {
                        String::new()
                    },
                    args.node
                );
            }
        }
        state.add(&buf);
        if !epochs.contains(&st.epoch) {
            epochs.push(st.epoch);
        }
        let over = if contributors.len() < n {
            let names: Vec<String> = contributors.iter().map(|&v| name(v as u16)).collect();
            format!(", over {}", names.join(","))
        } else {
            String::new()
        };
        println!(
            "trainer {}: round {} ok in {:.3} ms (epoch {}, digest {:016x}{over})",
            args.node,
            st.round,
            st.elapsed.as_secs_f64() * 1e3,
            st.epoch,
            digest(&buf)
        );
        std::thread::sleep(Duration::from_millis(args.compute_ms));
    }
    let bits = cfg.buffer_elems as f64 * 32.0 * f64::from(timed_rounds);
    let failures = if failed > 0 {
        format!(
            ", {failed} failed (peer lost: {})",
            lost_nodes.into_iter().collect::<Vec<_>>().join(", ")
        )
    } else {
        String::new()
    };
    let rejoins = if syncs.is_empty() {
        String::new()
    } else {
        println!(
            "trainer {}: state digest {:016x} after {} rounds",
            args.node,
            state.digest(),
            session.next_round()
        );
        format!("; state synced for rejoin(s) of {}", syncs.join(", "))
    };
    println!(
        "trainer: OK {} rounds{failures} of {} elements at node {}, {}; epochs {:?}{rejoins}; {:.1} Mbit/s of buffer per second of sync",
        ok_rounds,
        cfg.buffer_elems,
        args.node,
        if cfg.wire.is_16bit() {
            format!("{} payloads, within the error bound of the reference sum (digests per round compare nodes)", cfg.wire)
        } else {
            "bit-identical to the reference sum".to_string()
        },
        epochs,
        bits / total.as_secs_f64().max(1e-9) / 1e6
    );
    Ok(())
}

/// Announces the pause and waits for the go file (see `--pause-before-round`).
fn pause(args: &Args, later: Option<u32>) -> anyhow::Result<()> {
    let mut go = args.pause_file.clone().expect("clap requires --pause-file");
    if let Some(round) = later {
        let mut g = go.into_os_string();
        g.push(format!(".{round}"));
        go = g.into();
    }
    let go = &go;
    let mut waiting = go.clone().into_os_string();
    waiting.push(format!(".{}.waiting", args.node));
    std::fs::write(&waiting, b"")
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", PathBuf::from(&waiting).display()))?;
    let t0 = std::time::Instant::now();
    while !go.exists() {
        if t0.elapsed().as_secs_f64() > args.pause_timeout_s {
            anyhow::bail!(
                "paused for {} s and {} never appeared",
                args.pause_timeout_s,
                go.display()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// The trainer's state, as bytes: a block of every byte value and special f32 bit patterns
/// (signalling and quiet NaN, -0.0, infinity: a sync must carry them unchanged), then the
/// running sum of every good round's result (f32, little-endian).
struct TrainerState {
    bytes: Vec<u8>,
}

/// Bytes of the fixed block in front of the running sum.
const PATTERN_BYTES: usize = 256 + 16;

impl TrainerState {
    fn initial(elems: usize) -> Self {
        let mut bytes: Vec<u8> = (0..=255u8).collect();
        for f in [0x7f80_0001u32, 0x7fc0_0000, 0x8000_0000, 0x7f80_0000] {
            bytes.extend(f.to_le_bytes());
        }
        bytes.resize(PATTERN_BYTES + 4 * elems, 0);
        Self { bytes }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }

    /// Adds a round's result to the running sum (the same f32 additions on every member).
    fn add(&mut self, result: &[f32]) {
        for (chunk, x) in self.bytes[PATTERN_BYTES..].chunks_exact_mut(4).zip(result) {
            let sum = f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) + x;
            chunk.copy_from_slice(&sum.to_le_bytes());
        }
    }

    /// FNV-1a over the bytes.
    fn digest(&self) -> u64 {
        self.bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    }
}
