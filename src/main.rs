//! `netstorm`: the user-facing CLI. Thin: parses arguments and calls the crates.
#![deny(unsafe_code)]

mod bench_cmd;
mod bench_dataplane;
mod compare;
mod faults_cmd;
mod keygen_cmd;
mod plan_cmd;
mod sigpipe;
mod status_cmd;
mod train_demo;
mod up_cmd;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "netstorm",
    version,
    about = "NetStorm: adaptive gradient synchronization for geo-distributed ML"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The main job, no arguments needed: every strategy on the paper's dynamic 9-DC WAN
    /// with ResNet-50, side by side, in emulated time.
    Demo(DemoArgs),
    /// Run strategies through the real engine on an emulated WAN and compare them.
    Compare(compare::CompareArgs),
    /// Print a planner's policy for a scenario, its modeled round time and the optimum.
    Plan(plan_cmd::PlanArgs),
    /// Check scenario files and print a summary of each.
    Scenario(ScenarioArgs),
    /// Data-parallel training of a real model on a shipped data set, gradients synchronized by each strategy: accuracy vs emulated time.
    TrainDemo(train_demo::TrainDemoArgs),
    /// Benchmarks: data-plane backends and kernels, reported as ratios
    Bench(bench_cmd::BenchArgs),
    /// Fault-injection suite in virtual time: each fault, what happened, rounds completed, segments lost, time to recover.
    Faults(faults_cmd::FaultsArgs),
    /// Run NetStorm on a real host: start netstorm-dp + netstorm-cp for one node of a cluster config.
    Up(up_cmd::UpArgs),
    /// Write a new job secret (32 random bytes as hex, mode 0600) for the cluster config's
    /// `secret_file`.
    Keygen(keygen_cmd::KeygenArgs),
    /// What a running cluster is doing: membership, leader, epochs, rounds, traffic, link estimates, alerts (from the nodes' metrics endpoints).
    Status(status_cmd::StatusArgs),
}

#[derive(Args, Debug)]
struct DemoArgs {
    /// Rounds per strategy.
    #[arg(long, default_value_t = 4)]
    rounds: u32,
    /// Where the scenario files live.
    #[arg(long, default_value = "scenarios")]
    scenarios: PathBuf,
    /// Also write the results as JSON / an SVG plot.
    #[arg(long)]
    json: Option<PathBuf>,
    #[arg(long)]
    plot: Option<PathBuf>,
    /// No progress bars.
    #[arg(long)]
    no_progress: bool,
    /// Plan from the true network rates instead of learned knowledge.
    #[arg(long)]
    oracle: bool,
    /// Payload type on the wire: f32, bf16 or f16 (16-bit also runs f32 beside it).
    #[arg(long, default_value = "f32")]
    wire: netstorm_dataplane::wire::PayloadType,
}

#[derive(Args, Debug)]
struct ScenarioArgs {
    /// Scenario files to check.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

fn main() -> Result<()> {
    sigpipe::reset();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Demo(a) => {
            let scenario = a.scenarios.join("paper9-dynamic.toml");
            let args = compare::CompareArgs {
                scenario,
                model: Some("resnet50".into()),
                model_mb: None,
                rounds: a.rounds,
                compute_ms: 0.0,
                strategies: None,
                json: a.json,
                plot: a.plot,
                seed: 1,
                segment_bytes: 1392,
                jobs: None,
                greed: 0.9,
                no_progress: a.no_progress,
                oracle: a.oracle,
                wire: a.wire,
                demo: true,
            };
            compare::run(&args)
        }
        Command::Compare(a) => compare::run(&a),
        Command::Plan(a) => plan_cmd::run(&a),
        Command::Bench(a) => bench_cmd::run(&a),
        Command::TrainDemo(a) => train_demo::run(&a),
        Command::Faults(a) => faults_cmd::run(&a),
        Command::Up(a) => up_cmd::run(&a),
        Command::Status(a) => status_cmd::run(&a),
        Command::Keygen(a) => keygen_cmd::run(&a),
        Command::Scenario(a) => {
            for f in &a.files {
                let s = netstorm_dataplane::scenario::Scenario::load(f)
                    .with_context(|| format!("checking {}", f.display()))?;
                let t = &s.topology;
                let rates: Vec<f64> = t.links.iter().map(|l| l.rate_bps / 1e6).collect();
                let min = rates.iter().cloned().fold(f64::INFINITY, f64::min);
                let max = rates.iter().cloned().fold(0.0, f64::max);
                println!(
                    "{}: '{}' — {} nodes, {} directed links, {:.0}–{:.0} Mbit/s{}{}",
                    f.display(),
                    s.name,
                    t.node_count(),
                    t.links.len(),
                    min,
                    max,
                    if s.dynamics.is_some() {
                        ", dynamic"
                    } else {
                        ""
                    },
                    if s.events.is_empty() {
                        String::new()
                    } else {
                        format!(", {} events", s.events.len())
                    }
                );
            }
            Ok(())
        }
    }
}
