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
    /// a known round however busy the machine is.
    #[arg(long, requires = "pause_file")]
    pause_before_round: Option<u32>,
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
    for i in 0..args.rounds {
        if args.pause_before_round == Some(i) {
            pause(&args)?;
        }
        let r = session.next_round() as u32;
        fill_test_gradient(&mut buf, me, r);
        let st = match session.allreduce(&mut buf) {
            Ok(st) => st,
            Err(SessionError::PeerLost { round, lost }) => {
                failed += 1;
                let names: Vec<String> = lost.iter().map(|&v| name(v)).collect();
                lost_nodes.extend(names.iter().cloned());
                println!(
                    "trainer {}: round {round} failed: lost {} (buffer unchanged; going on with the survivors)",
                    args.node,
                    names.join(", ")
                );
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
    println!(
        "trainer: OK {} rounds{failures} of {} elements at node {}, {}; epochs {:?}; {:.1} Mbit/s of buffer per second of sync",
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
fn pause(args: &Args) -> anyhow::Result<()> {
    let go = args
        .pause_file
        .as_ref()
        .expect("clap requires --pause-file");
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
