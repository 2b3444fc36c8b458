//! [`EmulatedCluster`]: the engines on an emulated WAN as an all-reduce service for
//! caller-provided buffers (trainers, examples), with oracle knowledge.

use super::harness::emulated_wan;
use super::oracle::OracleKnowledge;
use super::spec::{ExperimentConfig, ExperimentError};
use crate::planner::Planner;
use netstorm_dataplane::emu::Simulation;
use netstorm_dataplane::scenario::Scenario;
use netstorm_dataplane::{Nanos, NodeId};

/// A cluster of engines on an emulated WAN that synchronizes caller-provided buffers, one
/// all-reduce at a time (every node starts together), re-planning with oracle knowledge when
/// the network changed. For trainers and examples; `run_strategy` is the benchmark driver.
pub struct EmulatedCluster {
    sim: Simulation,
    oracle: OracleKnowledge<'static>,
    round: u32,
    elems: usize,
    max_round_virtual_ns: Nanos,
}

impl std::fmt::Debug for EmulatedCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatedCluster")
            .field("planner", &self.oracle.planner().name())
            .field("round", &self.round)
            .field("policies_installed", &self.oracle.installed)
            .finish_non_exhaustive()
    }
}

impl EmulatedCluster {
    /// One engine per scenario node, each with a buffer of `elems` f32.
    pub fn new(
        scenario: &Scenario,
        elems: usize,
        planner: Box<dyn Planner>,
        cfg: &ExperimentConfig,
    ) -> Result<Self, ExperimentError> {
        let mut sim = emulated_wan(scenario, elems, cfg)?;
        let oracle =
            OracleKnowledge::new(planner, &scenario.topology, &mut sim, elems as f64 * 32.0)?;
        Ok(Self {
            sim,
            oracle,
            round: 0,
            elems,
            max_round_virtual_ns: cfg.max_round_virtual_ns,
        })
    }

    pub fn node_count(&self) -> usize {
        self.sim.engines().len()
    }

    /// Emulated time now, seconds.
    pub fn now_s(&self) -> f64 {
        self.sim.now() as f64 / 1e9
    }

    /// Lets `seconds` of emulated time pass (e.g. local computation).
    pub fn advance_s(&mut self, seconds: f64) -> Result<(), ExperimentError> {
        let t = self.sim.now() + (seconds.max(0.0) * 1e9) as Nanos;
        Ok(self.sim.advance_to(t)?)
    }

    /// Sums `inputs[v]` over all nodes through the engine; returns the sum (identical on
    /// every node — checked) and the round's synchronization time in seconds.
    pub fn allreduce(&mut self, inputs: &[Vec<f32>]) -> Result<(Vec<f32>, f64), ExperimentError> {
        let n = self.node_count();
        assert_eq!(inputs.len(), n, "one input per node");
        let r = self.round;
        if r > 0 {
            self.oracle.follow(&mut self.sim, r)?;
        }
        for (v, input) in inputs.iter().enumerate() {
            assert_eq!(input.len(), self.elems, "input {v} has the wrong length");
            self.sim
                .engine_mut(v as NodeId)
                .buffer_mut()
                .copy_from_slice(input);
        }
        let summary = self.sim.run_round_all(r, self.max_round_virtual_ns)?;
        self.round += 1;
        let result = self.sim.engine(0).buffer().to_vec();
        for v in 1..n {
            let other = self.sim.engine(v as NodeId).buffer();
            if let Some(i) = result
                .iter()
                .zip(other)
                .position(|(a, b)| a.to_bits() != b.to_bits())
            {
                return Err(ExperimentError::Mismatch {
                    round: r,
                    node: v as NodeId,
                    index: i,
                    got: other[i],
                    want: result[i],
                });
            }
        }
        Ok((result, summary.sync_ns() as f64 / 1e9))
    }
}
