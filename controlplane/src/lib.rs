//! NetStorm control plane.
//!
//! * [`network`] — the network model planners read (capacities, latencies, loss, NIC caps).
//! * [`awareness`] — that model learned from telemetry, with change detection.
//! * [`coordinator`] — consistent policy updates: two-phase install of policy epochs.
//! * [`replanner`] — the re-planning loop: estimator → change → settle → plan → propose.
//! * [`cluster_coordinator`] — the coordinator of real hosts (hellos, the two-phase
//!   coordinator and the re-planner), sans-IO; `netstorm-cp` drives it over TCP.
//! * [`membership`] — the replicated coordinator state (members, committed policy, install in
//!   flight, round outcomes) applied from log entries, and the round-resolution rule.
//! * [`replicated`] — that state replicated among the control planes with Raft (raft-rs),
//!   sans-IO: ticks, peer bytes and proposals in; bytes, applied entries, leader events out.
//! * [`planner`] — the planner interface, the fluid round-time model, and every planner:
//!   NetStorm's own (`paper`), ours (`packing`), and the baselines as topologies.
//! * [`bounds`] — the physical limit: the fluid-optimum LP and the latency lower bound.
//! * [`round_bound`] — the proven lower bound on a round: bandwidth and latency together.
//! * [`models`] — per-tensor parameter counts of the paper's DNNs.
//! * [`experiment`] — strategies through the real engine on the emulated WAN, checked.
//! * [`faults`] — the fault-injection suite in virtual time (`netstorm faults`).
//! * [`train_demo`] — softmax regression trained over the emulated WAN (`netstorm train-demo`).
#![deny(unsafe_code)]

pub mod arborescence;
pub mod awareness;
pub mod bounds;
pub mod cluster_coordinator;
pub mod coordinator;
pub mod experiment;
pub mod faults;
pub mod membership;
pub mod models;
pub mod network;
pub mod peer_loss;
pub mod planner;
pub mod replanner;
pub mod replicated;
pub mod round_bound;
pub mod train_demo;

#[cfg(test)]
mod test_support;
