//! NetStorm control plane.
//!
//! * [`network`] — the network model planners read (capacities, latencies, loss, NIC caps).
//! * [`awareness`] — that model learned from telemetry, with change detection.
//! * [`coordinator`] — consistent policy updates: two-phase install of policy epochs.
//! * [`planner`] — the planner interface, the fluid round-time model, and every planner:
//!   NetStorm's own (`paper`), ours (`packing`), and the baselines as topologies.
//! * [`bounds`] — the physical limit: the fluid-optimum LP and the latency lower bound.
//! * [`round_bound`] — the proven lower bound on a round: bandwidth and latency together.
//! * [`models`] — per-tensor parameter counts of the paper's DNNs.
#![deny(unsafe_code)]

pub mod adaptive;
pub mod arborescence;
pub mod awareness;
pub mod bounds;
pub mod coordinator;
pub mod experiment;
pub mod models;
pub mod network;
pub mod planner;
pub mod round_bound;
