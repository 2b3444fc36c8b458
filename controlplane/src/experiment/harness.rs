//! The emulated job every experiment runs: one engine per scenario node on the emulated
//! WAN, the scenario's changes queued, test gradients filled at each round start, and every
//! node's result checked bit for bit against the reference sum — for 16-bit payload types,
//! bit for bit against the first node checked and within the documented error bound of the
//! exact sum ([`kernel16::reduction_error_bound`], for the deepest tree `n` nodes allow).

use super::spec::{ExperimentConfig, ExperimentError};
use crate::network::NetworkModel;
use netstorm_dataplane::emu::{EmuConfig, RoundSummary, Simulation};
use netstorm_dataplane::engine::{Engine, EngineConfig};
use netstorm_dataplane::kernel16;
use netstorm_dataplane::policy::Policy;
use netstorm_dataplane::reference::{fill_reference_sum, fill_test_gradient, test_gradient};
use netstorm_dataplane::scenario::Scenario;
use netstorm_dataplane::topology::Topology;
use netstorm_dataplane::wire::PayloadType;
use netstorm_dataplane::NodeId;
use std::sync::{Arc, Mutex};

/// The engines (buffers of `elems` f32) on the emulated WAN of `scenario`, its changes
/// queued and those at t = 0 applied (dynamic redraws take effect before the first plan).
pub(crate) fn emulated_wan(
    scenario: &Scenario,
    elems: usize,
    cfg: &ExperimentConfig,
) -> Result<Simulation, ExperimentError> {
    let topo = &scenario.topology;
    let n = topo.node_count();
    let engines = (0..n)
        .map(|v| {
            let mut ec = EngineConfig::new(v as NodeId, n as u16, elems);
            ec.segment_elems = cfg.segment_elems;
            ec.set_wire(cfg.wire);
            ec.release_gossip = cfg.release_gossip;
            Engine::new(ec, topo).map_err(|err| ExperimentError::Engine {
                node: v as NodeId,
                err,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut sim = Simulation::new(
        topo,
        engines,
        EmuConfig {
            seed: cfg.seed,
            ..EmuConfig::default()
        },
    )?;
    sim.set_changes(scenario.changes());
    sim.apply_changes_until(0);
    Ok(sim)
}

/// [`emulated_wan`] with the start hook that fills each round's test gradients and checks
/// each node's previous result before it is overwritten.
pub(crate) fn build_simulation(
    scenario: &Scenario,
    elems: usize,
    cfg: &ExperimentConfig,
) -> Result<(Simulation, Arc<Mutex<Checker>>), ExperimentError> {
    let mut sim = emulated_wan(scenario, elems, cfg)?;
    let checker = Arc::new(Mutex::new(Checker::new(
        scenario.topology.node_count(),
        cfg.wire,
    )));
    let hook_checker = Arc::clone(&checker);
    sim.set_start_hook(Box::new(move |v, r, buf| {
        let mut c = hook_checker.lock().expect("checker lock");
        if r > 0 {
            c.check(v as usize, r - 1, buf);
        }
        fill_test_gradient(buf, v as usize, r);
    }));
    Ok((sim, checker))
}

/// Installs `policy` on every node for rounds `>= activate_round`. The control plane does this
/// at an instant when no node can start that round yet, so no round mixes epochs.
pub(crate) fn install_everywhere(
    sim: &mut Simulation,
    policy: &Policy,
    activate_round: u32,
) -> Result<(), ExperimentError> {
    for v in 0..sim.engines().len() {
        sim.engine_mut(v as NodeId)
            .install_policy(policy.clone(), activate_round)
            .map_err(|err| ExperimentError::Engine {
                node: v as NodeId,
                err,
            })?;
    }
    Ok(())
}

/// The network model a planner sees: the scenario's nodes with the emulator's current rates.
pub fn current_network(base: &Topology, rates_bps: &[f64]) -> NetworkModel {
    let mut topo = base.clone();
    for (l, &r) in topo.links.iter_mut().zip(rates_bps) {
        l.rate_bps = r;
    }
    NetworkModel::from_topology(topo)
}

/// A finished round's epoch, after the checks: one epoch on every node, and (for the last
/// round, which no later start hook sees) every node's result against the reference.
pub(crate) fn check_finished_round(
    sim: &Simulation,
    checker: &Mutex<Checker>,
    s: &RoundSummary,
    rounds: u32,
) -> Result<u32, ExperimentError> {
    let r = s.round;
    let epoch = s.epoch.ok_or(ExperimentError::MixedEpochs { round: r })?;
    let mut c = checker.lock().expect("checker lock");
    if r + 1 == rounds {
        for v in 0..sim.engines().len() {
            c.check(v, r, sim.engine(v as NodeId).buffer());
        }
    }
    match c.error.take() {
        Some(err) => Err(err),
        None => Ok(epoch),
    }
}

/// Checks each node's result of a round when it is about to be overwritten: every element
/// bit-identical to the reference sum (computed once per round, in node order). For 16-bit
/// payload types: the first node checked in a round must be within the error bound of the
/// exact sum, and every other node bit-identical to it.
#[derive(Debug)]
pub(crate) struct Checker {
    n: usize,
    wire: PayloadType,
    reference_round: Option<u32>,
    reference: Vec<f32>,
    error: Option<ExperimentError>,
}

impl Checker {
    fn new(n: usize, wire: PayloadType) -> Self {
        Self {
            n,
            wire,
            reference_round: None,
            reference: Vec::new(),
            error: None,
        }
    }

    fn check(&mut self, v: usize, r: u32, buf: &[f32]) {
        if self.error.is_some() {
            return;
        }
        if self.reference_round != Some(r) {
            // Every node checks round r before any node can check round r + 1.
            self.reference.resize(buf.len(), 0.0);
            if self.wire.is_16bit() {
                // The first result seen is the one every other node must equal bit for bit.
                self.error = self.check_bound(v, r, buf);
                self.reference.copy_from_slice(buf);
            } else {
                fill_reference_sum(&mut self.reference, 0..self.n, r);
            }
            self.reference_round = Some(r);
        }
        if let Some(i) = buf
            .iter()
            .zip(&self.reference)
            .position(|(a, b)| a.to_bits() != b.to_bits())
        {
            self.error = Some(ExperimentError::Mismatch {
                round: r,
                node: v as NodeId,
                index: i,
                got: buf[i],
                want: self.reference[i],
            });
        }
    }

    /// `buf` against the exact (f64) sum of the test gradients, within the bound of a tree
    /// as deep as `n` nodes allow (`n - 1` edges).
    fn check_bound(&self, v: usize, r: u32, buf: &[f32]) -> Option<ExperimentError> {
        let depth = self.n.saturating_sub(1);
        buf.iter().enumerate().find_map(|(i, &got)| {
            let (exact, abs_sum) = (0..self.n).fold((0.0f64, 0.0f64), |(s, a), node| {
                let x = f64::from(test_gradient(node, r, i));
                (s + x, a + x.abs())
            });
            let bound = kernel16::reduction_error_bound(self.wire, depth, self.n, abs_sum);
            let ok = (f64::from(got) - exact).abs() <= bound;
            (!ok).then_some(ExperimentError::OutOfBound {
                round: r,
                node: v as NodeId,
                index: i,
                got,
                exact,
                bound,
                wire: self.wire,
            })
        })
    }
}
