//! `netstorm faults`: the fault-injection suite in virtual time
//! ([`netstorm_controlplane::faults`]), printed as text or as a Markdown table for
//! RELIABILITY.md.

use anyhow::{Context, Result};
use clap::Args;
use netstorm_controlplane::faults::{self, FaultResult, FaultSuiteConfig};
use netstorm_dataplane::scenario::Scenario;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct FaultsArgs {
    /// Scenario file (its topology; the WAN stays static during the runs).
    #[arg(long, default_value = "scenarios/aws10-latency.toml")]
    pub scenario: PathBuf,
    /// Planner that makes the policy (and re-plans after a crash).
    #[arg(long, default_value = "packing")]
    pub planner: String,
    /// Rounds per fault.
    #[arg(long, default_value_t = 4)]
    pub rounds: u32,
    /// Buffer size in MB (10^6 bytes) of f32.
    #[arg(long, default_value_t = 40.0)]
    pub model_mb: f64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Only the faults whose name contains this.
    #[arg(long)]
    pub only: Option<String>,
    /// Also write the results as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Print a Markdown table (for RELIABILITY.md) instead of plain text.
    #[arg(long)]
    pub markdown: bool,
}

fn recover(r: &FaultResult) -> String {
    r.recover_s.map_or("—".into(), |s| format!("{s:.2} s"))
}

pub fn run(args: &FaultsArgs) -> Result<()> {
    let scenario = Scenario::load(&args.scenario)
        .with_context(|| format!("loading {}", args.scenario.display()))?;
    let cfg = FaultSuiteConfig {
        planner: args.planner.clone(),
        rounds: args.rounds,
        model_mb: args.model_mb,
        seed: args.seed,
        only: args.only.clone(),
    };
    let report = faults::run_suite(&scenario, &args.scenario.display().to_string(), &cfg)?;
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if args.markdown {
        println!(
            "Scenario `{}`, planner `{}`, {} MB buffer, {} rounds per fault, seed {}.\n",
            report.scenario, report.planner, report.model_mb, report.rounds, report.seed
        );
        println!("| fault | injected | what happened | rounds completed | segments lost | time to recover |");
        println!("|---|---|---|---|---|---|");
        for r in &report.results {
            println!(
                "| {} | {} | {} | {}/{} | {} | {} |",
                r.fault,
                r.injected,
                r.outcome,
                r.rounds_completed,
                report.rounds,
                r.segments_lost,
                recover(r)
            );
        }
    } else {
        for r in &report.results {
            println!(
                "{:<32} rounds {}/{}  segments lost {:>6}  recover {:>8}  retx {:>6}  round s {:?}",
                r.fault,
                r.rounds_completed,
                report.rounds,
                r.segments_lost,
                recover(r),
                r.retransmits,
                r.round_s
                    .iter()
                    .map(|s| (s * 1000.0).round() / 1000.0)
                    .collect::<Vec<_>>()
            );
            println!("    {}", r.outcome);
        }
    }
    Ok(())
}
