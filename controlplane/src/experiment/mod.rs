//! Runs a strategy (a planner) through the real engine on the emulated WAN, round after
//! round, in virtual time, re-planning when the network changes, and checks every result.
//!
//! Modules, each depending only on those listed before it:
//! * `spec` — what to run ([`ExperimentConfig`], [`Knowledge`]) and what comes out.
//! * `harness` — the emulated job: engines on the WAN, test gradients, the exact checks.
//! * `oracle` — knowledge from the emulator's current rates, installed everywhere at once.
//! * `learned` — knowledge learned from telemetry by the [`crate::replanner::Replanner`],
//!   installed through the coordinator's two-phase protocol over an emulated control channel.
//! * `cluster` — [`EmulatedCluster`]: the same engines as an all-reduce service for trainers.
//!
//! This module only picks the runner ([`run_strategy`]).

mod cluster;
mod harness;
mod learned;
mod oracle;
mod spec;

pub use cluster::EmulatedCluster;
pub use harness::current_network;
pub use spec::{
    ExperimentConfig, ExperimentError, Knowledge, LearnedConfig, LearningStats, RoundResult,
    StrategyResult,
};

use crate::planner::Planner;
use netstorm_dataplane::scenario::Scenario;

/// Runs `planner` on `scenario` for a buffer of `elems` f32.
pub fn run_strategy(
    scenario: &Scenario,
    elems: usize,
    planner: &dyn Planner,
    cfg: &ExperimentConfig,
    on_round: impl FnMut(&RoundResult),
) -> Result<StrategyResult, ExperimentError> {
    if cfg.rounds == 0 {
        return Err(ExperimentError::NoRounds);
    }
    match &cfg.knowledge {
        Knowledge::Oracle => oracle::run_oracle(scenario, elems, planner, cfg, on_round),
        Knowledge::Learned(lc) => learned::run_learned(scenario, elems, planner, cfg, lc, on_round),
    }
}
