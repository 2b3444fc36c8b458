//! What an experiment runs (its configuration, the control plane's knowledge) and what
//! comes out of it (per-round results, learning counters, errors).

use crate::awareness::AwarenessConfig;
use crate::coordinator::CoordinatorConfig;
use crate::planner::{PlanError, Planner};
use netstorm_dataplane::emu::EmuError;
use netstorm_dataplane::engine::EngineError;
use netstorm_dataplane::topology::Topology;
use netstorm_dataplane::wire::PayloadType;
use netstorm_dataplane::{Nanos, NodeId, NANOS_PER_SEC};

/// How to run a strategy.
#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentConfig {
    pub rounds: u32,
    /// Compute time between receiving a result and starting the next round.
    pub compute_ns: Nanos,
    /// Segment size in f32 elements (4 bytes each): the segment's payload bytes / 4. A
    /// 16-bit `wire` type carries twice as many elements in the same bytes.
    pub segment_elems: usize,
    /// Payload type on the wire (aggregation is f32 whatever it is).
    pub wire: PayloadType,
    pub seed: u64,
    /// A round that takes longer than this (virtual time) is reported as stuck.
    pub max_round_virtual_ns: Nanos,
    /// Re-plan when the network changed since the last plan.
    pub replan: bool,
    /// Where the planner's picture of the network comes from.
    pub knowledge: Knowledge,
    /// Release gossip in every engine (`EngineConfig::release_gossip`): a round's result is
    /// taken at its release. Off by default.
    pub release_gossip: bool,
}

/// What the control plane knows about the network.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Knowledge {
    /// The emulator's current truth, read at the moment the first node finishes a round;
    /// installed everywhere at that instant (a reference point, not something a real
    /// deployment has).
    #[default]
    Oracle,
    /// Learned from the engines' telemetry and probes, installed by the coordinator's
    /// two-phase protocol over an emulated control channel (see `experiment::learned`).
    Learned(LearnedConfig),
}

impl Default for ExperimentConfig {
    fn default() -> Self {
        Self {
            rounds: 5,
            compute_ns: 0,
            segment_elems: 352,
            wire: PayloadType::F32,
            seed: 1,
            max_round_virtual_ns: 3600 * NANOS_PER_SEC,
            replan: true,
            knowledge: Knowledge::Oracle,
            release_gossip: false,
        }
    }
}

/// How the control plane learns and installs, when knowledge is learned.
#[derive(Debug, Clone, PartialEq)]
pub struct LearnedConfig {
    pub awareness: AwarenessConfig,
    pub coordinator: CoordinatorConfig,
    /// The node whose control plane coordinates.
    pub coordinator_node: NodeId,
    /// Control-plane step in virtual time.
    pub tick_ns: Nanos,
    /// How often each node ships telemetry.
    pub telemetry_interval_ns: Nanos,
    /// Probability that a control message is lost (tests of the install protocol).
    pub control_loss: f64,
    /// Added to every control message's WAN latency.
    pub control_delay_ns: Nanos,
    /// Time between detecting a change and planning for it (lets related changes arrive).
    pub settle_ns: Nanos,
    /// Start-up measurement before the first plan: every link gets a probe train and the
    /// telemetry reaches the coordinator (0 = plan from the configured rates at once).
    pub warmup_ns: Nanos,
}

impl Default for LearnedConfig {
    fn default() -> Self {
        Self {
            awareness: AwarenessConfig::default(),
            coordinator: CoordinatorConfig::default(),
            coordinator_node: 0,
            tick_ns: 5_000_000,
            telemetry_interval_ns: 250_000_000,
            control_loss: 0.0,
            control_delay_ns: 1_000_000,
            settle_ns: 1_000_000_000,
            warmup_ns: 1_500_000_000,
        }
    }
}

/// What the control plane did while learning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LearningStats {
    /// Policies proposed after the first.
    pub proposals: u64,
    pub commits: u64,
    pub aborts: u64,
    pub control_messages: u64,
    pub control_lost: u64,
    pub telemetry_accepted: u64,
    pub telemetry_rejected: u64,
    /// Capacity-probe bytes and all other bytes the engines sent.
    pub probe_bytes: u64,
    pub other_bytes: u64,
    /// Rounds some node had to wait for at a policy decision.
    pub gated_starts: u64,
}

/// One round of one strategy.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundResult {
    pub round: u32,
    /// Virtual time the round started (first node), seconds.
    pub started_s: f64,
    /// First start to the last node holding the result, seconds.
    pub sync_s: f64,
    pub epoch: u32,
    /// The plan's fluid-model time on the network the round started on.
    pub modeled_s: f64,
    /// The network (current rates) when the round started.
    pub topology: Topology,
    /// With learned knowledge: the estimated rate of every link (indexed like
    /// `topology.links`) when the round finished.
    pub estimated_bps: Option<Vec<f64>>,
}

/// Everything a strategy did.
#[derive(Debug, Clone, PartialEq)]
pub struct StrategyResult {
    pub strategy: String,
    pub rounds: Vec<RoundResult>,
    /// Bytes that crossed WAN links, frame overhead included.
    pub wan_bytes: u64,
    pub policies_installed: u32,
    pub retransmits: u64,
    /// Next-round packets the nodes dropped for want of room in their early pools.
    pub early_dropped: u64,
    /// Acks the engines took as CPU-limited (0 in virtual time unless a rule misfires).
    pub cpu_limited_acks: u64,
    /// Events the emulator processed (for speed accounting).
    pub events: u64,
    /// With learned knowledge: what the control plane did.
    pub learning: Option<LearningStats>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExperimentError {
    #[error("planner '{planner}': {err}")]
    Plan { planner: String, err: PlanError },
    #[error(transparent)]
    Emu(#[from] EmuError),
    #[error("engine {node}: {err}")]
    Engine { node: NodeId, err: EngineError },
    #[error("round {round}: node {node} element {index} is {got}, expected {want}")]
    Mismatch {
        round: u32,
        node: NodeId,
        index: usize,
        got: f32,
        want: f32,
    },
    #[error("round {round}: node {node} element {index} is {got}, off the exact sum {exact} by more than the {wire} bound {bound}")]
    OutOfBound {
        round: u32,
        node: NodeId,
        index: usize,
        got: f32,
        exact: f64,
        bound: f64,
        wire: PayloadType,
    },
    #[error("round {round} ran under mixed policy epochs")]
    MixedEpochs { round: u32 },
    #[error("zero rounds requested")]
    NoRounds,
}

impl ExperimentError {
    /// `err` of `planner`, as an experiment error naming it.
    pub(crate) fn plan(planner: &dyn Planner, err: PlanError) -> Self {
        ExperimentError::Plan {
            planner: planner.name().to_string(),
            err,
        }
    }
}
