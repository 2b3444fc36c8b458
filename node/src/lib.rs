//! NetStorm on real hosts.
//!
//! * [`config`] — the cluster config (TOML, one file for every host).
//! * [`nodefile`] — the shared-memory gradient buffer + doorbell between a trainer, its
//!   `netstorm-dp` and its `netstorm-cp`.
//! * [`session`] — the trainer API: [`Session::allreduce`].
//! * [`worker`] — a dp poll-mode worker (engine + UDP or DPDK port on a pinned core, on the
//!   data plane's one real-time loop).
//! * [`coordinator_task`] — the coordinator's TCP side (in the coordinating `netstorm-cp`).
//! * [`proto`] — the cp ↔ coordinator wire (`ControlMsg` over TCP) and the dp → cp link records.
//! * [`up`] — `netstorm up`: start dp + cp for a node, forward signals.
//! * [`bench`] — the harnesses of `netstorm bench` (`bench dataplane` runs netstorm-dp's
//!   worker as its aggregator).
//! * `sys` — lock files and signals (the only other `unsafe` besides `nodefile`).
//!
//! Binaries: `netstorm-dp` (data plane), `netstorm-cp` (control plane, one is the
//! coordinator), `netstorm-trainer` (example trainer).
#![deny(unsafe_code)]

pub mod bench;
pub mod config;
pub mod coordinator_task;
pub mod loss_agent;
pub mod metrics;
pub mod nodefile;
pub mod proto;
pub mod secret;
pub mod session;
pub mod status;
pub mod sys;
pub mod up;
pub mod worker;

pub use config::{ClusterConfig, ConfigError};
pub use session::{RoundIo, RoundStats, Session, SessionError};
