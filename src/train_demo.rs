//! `netstorm train-demo`: softmax regression trained data-parallel over the emulated WAN
//! by each strategy ([`netstorm_controlplane::train_demo`]), printed as tables of accuracy
//! against emulated time, with progress bars.

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use netstorm_controlplane::train_demo::{
    Progress, StrategyReport, TrainDemo, TrainDemoConfig, SAME_ACCURACY_PP,
};
use netstorm_dataplane::scenario::Scenario;
use std::path::PathBuf;

#[derive(Args, Debug, Clone)]
pub struct TrainDemoArgs {
    /// Scenario file (TOML; see scenarios/).
    #[arg(long, default_value = "scenarios/paper9-static100.toml")]
    pub scenario: PathBuf,
    /// Data set shipped by the linfa-datasets crate: winequality (red wine quality, 6
    /// classes) or iris (3 classes).
    #[arg(long, default_value = "winequality", value_parser = ["winequality", "iris"])]
    pub dataset: String,
    /// Training rounds per strategy. Each round every node makes one full pass over its
    /// partition (one epoch), so rounds = epochs.
    #[arg(long, visible_alias = "epochs", default_value_t = 30)]
    pub rounds: u32,
    /// Learning rate of the momentum-SGD update.
    #[arg(long, default_value_t = 0.5)]
    pub lr: f64,
    /// Momentum of the SGD update (0 = plain gradient descent).
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// Comma-separated strategies: mxnet-ps, mlnet, tsengine, ring, mesh, spt,
    /// netstorm-paper, netstorm-packing.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "mxnet-ps,ring,netstorm-paper,netstorm-packing"
    )]
    pub strategies: Vec<String>,
    /// Local gradient computation per round, milliseconds of emulated time.
    #[arg(long, default_value_t = 50.0)]
    pub compute_ms: f64,
    /// Size of the synchronized vector in MB (10^6 bytes of f32): the model's gradient
    /// followed by zeros that stand for the rest of a large model's gradient, so that the
    /// network matters as it does for a real model. 0 = the model's gradient only.
    #[arg(long, default_value_t = 25.0)]
    pub pad_mb: f64,
    /// Seed of the train/test split and of the emulator.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Strategies run in parallel (default: available cores, at most 2).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// No progress bars.
    #[arg(long)]
    pub no_progress: bool,
    /// Write the results as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

fn pct(a: f64) -> String {
    format!("{:.2} %", a * 100.0)
}

pub fn run(args: &TrainDemoArgs) -> Result<()> {
    let scenario = Scenario::load(&args.scenario)
        .with_context(|| format!("loading scenario {}", args.scenario.display()))?;
    let demo = TrainDemo::new(
        &scenario,
        &TrainDemoConfig {
            dataset: args.dataset.clone(),
            rounds: args.rounds,
            lr: args.lr,
            momentum: args.momentum,
            strategies: args.strategies.clone(),
            compute_ms: args.compute_ms,
            pad_mb: args.pad_mb,
            seed: args.seed,
            jobs: args.jobs,
        },
    )?;
    let setup = demo.setup();
    println!(
        "NetStorm train-demo — data set {} ({}; {} rows: {} train / {} test), softmax regression, {} parameters",
        setup.dataset,
        setup.description,
        setup.rows,
        setup.train_rows,
        setup.test_rows,
        setup.parameters
    );
    println!(
        "scenario '{}': {} data centers, training rows partitioned {}–{} per node; each round every node takes one full-batch gradient of its partition",
        setup.scenario, setup.nodes, setup.partition_rows.0, setup.partition_rows.1
    );
    println!(
        "synchronized per round: {} gradient values + {} zeros = {:.1} MB (the zeros stand for the rest of a large model's gradient)",
        setup.parameters,
        setup.synchronized_elements - setup.parameters,
        setup.synchronized_elements as f64 * 4.0 / 1e6
    );
    println!(
        "{} rounds, {} ms emulated compute per round, SGD lr {} momentum {}, seed {}; always guessing the most frequent class scores {}",
        args.rounds, args.compute_ms, args.lr, args.momentum, args.seed, pct(setup.majority_accuracy)
    );

    let multi = MultiProgress::new();
    if args.no_progress || std::env::var_os("CI").is_some() {
        multi.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let style = ProgressStyle::with_template("{prefix:>17} {bar:30} {pos}/{len} rounds  {msg}")
        .expect("static template");
    let bars: Vec<ProgressBar> = demo
        .strategies()
        .map(|name| {
            let b = multi.add(ProgressBar::new(args.rounds as u64));
            b.set_style(style.clone());
            b.set_prefix(name);
            b
        })
        .collect();
    let started = std::time::Instant::now();
    let report = demo.run(&|i, p| match p {
        Progress::Round { sync_s } => {
            bars[i].inc(1);
            bars[i].set_message(format!("{sync_s:.2} s sync/round"));
        }
        Progress::Done => bars[i].finish(),
    })?;
    let wall_s = started.elapsed().as_secs_f64();
    let rows = &report.results;
    let (min_acc, max_acc) = (report.target_accuracy, report.max_accuracy);
    let target = report.target_accuracy;
    let reference_accuracy = report.reference_accuracy;
    let reference_loss = setup.reference_loss;
    let spread_pp = report.accuracy_spread_pp;
    let max_dw_between = report.max_abs_dw_between_strategies;

    println!();
    println!(
        "{:<17} {:>10} {:>9} {:>7} {:>11} {:>12} {:>14} {:>10}",
        "strategy",
        "final acc",
        "test loss",
        "rounds",
        "emulated s",
        "mean sync s",
        format!("to {:.1} % s", target * 100.0),
        "max |Δw|"
    );
    for r in rows {
        println!(
            "{:<17} {:>10} {:>9.4} {:>7} {:>11.2} {:>12.3} {:>14.2} {:>10.1e}",
            r.strategy,
            pct(r.final_accuracy),
            r.final_test_loss,
            r.rounds,
            r.emulated_s,
            r.mean_sync_s,
            r.time_to_target_s,
            r.max_abs_dw_vs_reference
        );
    }
    println!(
        "{:<17} {:>10} {:>9.4} {:>7}   (no network: the same f32 gradients summed locally in node order)",
        "reference",
        pct(reference_accuracy),
        reference_loss,
        args.rounds
    );

    // Accuracy against emulated time at a few checkpoints: a quarter and half of the fastest
    // strategy's run, then the moment each strategy finishes.
    let mut finish: Vec<f64> = rows.iter().map(|r| r.emulated_s).collect();
    finish.sort_by(f64::total_cmp);
    let mut checkpoints = vec![finish[0] / 4.0, finish[0] / 2.0];
    for t in finish {
        // Within 5 % of the previous checkpoint: the table would repeat a column.
        if t > checkpoints[checkpoints.len() - 1] * 1.05 {
            checkpoints.push(t);
        }
    }
    println!();
    println!("test accuracy against emulated time (the newest weights each strategy holds at that moment):");
    print!("{:<17}", "strategy");
    for t in &checkpoints {
        print!(" {:>10}", format!("t={t:.1}s"));
    }
    println!();
    for r in rows {
        print!("{:<17}", r.strategy);
        for &t in &checkpoints {
            let a = r.accuracy_at(t);
            let done = if t >= r.emulated_s - 1e-9 { "*" } else { " " };
            print!(" {:>9}{done}", format!("{:.1}%", a * 100.0));
        }
        println!();
    }
    println!(
        "(* = finished all {} rounds; the table holds its final accuracy from then on)",
        args.rounds
    );

    println!();
    println!(
        "Same accuracy, measured: final test accuracies {}–{} (reference {}), spread {:.2} pp (allowed {SAME_ACCURACY_PP} pp); max |Δw| between strategies {:.1e}, vs the reference {:.1e}.",
        pct(min_acc),
        pct(max_acc),
        pct(reference_accuracy),
        spread_pp,
        max_dw_between,
        rows.iter().map(|r| r.max_abs_dw_vs_reference).fold(0.0, f64::max)
    );
    println!(
        "Each round's sum was bit-identical on every node; strategies differ only in the order their trees add the nodes' f32 gradients (last bits)."
    );
    let same = report.same_accuracy();
    let by = |s: &str| rows.iter().find(|r| r.strategy == s);
    let speed = match (by("netstorm-packing"), by("mxnet-ps")) {
        (Some(k), Some(p)) if k.time_to_target_s > 0.0 => format!(
            "; NetStorm-packing got there {:.1}x sooner than MXNet PS ({:.1} s vs {:.1} s emulated)",
            p.time_to_target_s / k.time_to_target_s,
            k.time_to_target_s,
            p.time_to_target_s
        ),
        _ if rows.len() > 1 && rows.iter().all(|r| r.time_to_target_s > 0.0) => {
            let key = |r: &&StrategyReport| r.time_to_target_s;
            let fast = rows.iter().min_by(|a, b| key(a).total_cmp(&key(b))).expect("rows");
            let slow = rows.iter().max_by(|a, b| key(a).total_cmp(&key(b))).expect("rows");
            format!(
                "; {} got there {:.1}x sooner than {} ({:.1} s vs {:.1} s emulated)",
                fast.strategy,
                slow.time_to_target_s / fast.time_to_target_s,
                slow.strategy,
                fast.time_to_target_s,
                slow.time_to_target_s
            )
        }
        _ => String::new(),
    };
    if same {
        println!(
            "Every strategy reached the same accuracy ({}) — bit-identical synchronized gradients on every node{speed}.",
            pct(min_acc)
        );
    }
    println!("Wall time {wall_s:.1} s.");

    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    if !same {
        bail!("strategies disagree on the final accuracy by {spread_pp:.2} pp (more than {SAME_ACCURACY_PP} pp)");
    }
    for r in rows {
        tracing::debug!(strategy = %r.strategy, wall_s = r.wall_s, "strategy done");
    }
    Ok(())
}
