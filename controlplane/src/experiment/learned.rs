//! Learned network knowledge, end to end in virtual time: the engines measure (delivery
//! rates, RTTs, losses, capacity probes), each node's control plane ships telemetry to the
//! coordinator, the coordinator's [`Replanner`] decides when the network changed, plans on
//! what it learned and proposes the new policy to the two-phase protocol of
//! [`crate::coordinator`] over an emulated control channel (latency of the WAN path to the
//! coordinator, optional loss). Nodes gate round starts on undecided activations, so no
//! round ever mixes epochs.
//!
//! The control plane runs in ticks of `tick_ns` of virtual time between emulator events;
//! the engines and the emulated WAN are the same as with oracle knowledge.

use super::harness::{build_simulation, check_finished_round, current_network, install_everywhere};
use super::spec::{
    ExperimentConfig, ExperimentError, LearnedConfig, LearningStats, RoundResult, StrategyResult,
};
use crate::awareness::LinkSample;
use crate::coordinator::{ControlMsg, Coordinator, NodeAgent};
use crate::network::NetworkModel;
use crate::planner::Planner;
use crate::replanner::{Replanner, ReplannerConfig};
use netstorm_dataplane::emu::{EmuError, Simulation};
use netstorm_dataplane::engine::Engine;
use netstorm_dataplane::policy::PathId;
use netstorm_dataplane::scenario::Scenario;
use netstorm_dataplane::topology::Topology;
use netstorm_dataplane::{Nanos, NodeId};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Dest {
    Node(NodeId),
    Coordinator { from: NodeId },
}

/// Per node: what telemetry was already shipped.
#[derive(Debug, Default)]
struct Shipped {
    /// Per path: (last rate sample time, delivered bytes, lost packets) at the last report.
    paths: HashMap<PathId, (Nanos, u64, u64)>,
    /// Per in-neighbour: last probe sample time.
    probes: HashMap<NodeId, Nanos>,
}

/// New link samples from one engine since the last call.
fn collect_samples(e: &Engine, me: NodeId, shipped: &mut Shipped) -> Vec<LinkSample> {
    let frame = e.config().frame_bytes().max(1) as u64;
    let probing = e.config().probe.enabled();
    let mut out = Vec::new();
    for p in e.telemetry() {
        let Some(rs) = p.rate_sample else { continue };
        let last = shipped.paths.entry(p.path).or_insert((0, 0, 0));
        if rs.at <= last.0 && last.0 != 0 {
            continue;
        }
        let delivered = (p.delivered_bytes - last.1.min(p.delivered_bytes)) / frame;
        let lost = p.lost_packets - last.2.min(p.lost_packets);
        *last = (rs.at, p.delivered_bytes, p.lost_packets);
        if p.hops.len() == 2 {
            out.push(LinkSample {
                from: p.hops[0],
                to: p.hops[1],
                at: rs.at,
                // Senders pace at the rate the policy assumed, and a delivery-rate sample
                // over a window with bunched acknowledgements overshoots the capacity (a
                // windowed max keeps the overshoot), so with capacity probes running the
                // rate comes from the probe trains; data samples still bring RTT and loss.
                rate_bps: (!probing).then_some(rs.bps),
                app_limited: rs.app_limited,
                rtt_ns: p.srtt_ns,
                sent: delivered + lost,
                lost,
            });
        } else if !probing {
            // A relayed path: each hop is at least as fast as the whole path.
            for w in p.hops.windows(2) {
                out.push(LinkSample {
                    from: w[0],
                    to: w[1],
                    at: rs.at,
                    rate_bps: Some(rs.bps),
                    app_limited: true,
                    rtt_ns: None,
                    sent: 0,
                    lost: 0,
                });
            }
        }
    }
    for s in e.probe_samples() {
        let last = shipped.probes.entry(s.from).or_insert(0);
        if s.at <= *last {
            continue;
        }
        *last = s.at;
        out.push(LinkSample {
            from: s.from,
            to: me,
            at: s.at,
            rate_bps: Some(s.bps),
            app_limited: false,
            rtt_ns: None,
            sent: 0,
            lost: 0,
        });
    }
    out
}

/// The control channel: messages in flight, ordered by arrival.
struct Channel {
    queue: BTreeMap<(Nanos, u64), (Dest, ControlMsg)>,
    seq: u64,
    /// One-way latency between the coordinator and each node.
    latency: Vec<Nanos>,
    loss: f64,
    rng: ChaCha8Rng,
    sent: u64,
    lost: u64,
}

impl Channel {
    fn send(&mut self, now: Nanos, dest: Dest, msg: ControlMsg) {
        self.sent += 1;
        if self.loss > 0.0 && self.rng.random::<f64>() < self.loss {
            self.lost += 1;
            return;
        }
        let v = match dest {
            Dest::Node(v) | Dest::Coordinator { from: v } => v,
        };
        self.seq += 1;
        self.queue
            .insert((now + self.latency[v as usize], self.seq), (dest, msg));
    }

    fn pop_due(&mut self, now: Nanos) -> Option<(Dest, ControlMsg)> {
        let (&(at, _), _) = self.queue.first_key_value()?;
        (at <= now).then(|| self.queue.pop_first().expect("peeked").1)
    }
}

/// Runs `planner` with learned knowledge (see the module documentation).
pub(crate) fn run_learned(
    scenario: &Scenario,
    elems: usize,
    planner: &dyn Planner,
    cfg: &ExperimentConfig,
    lc: &LearnedConfig,
    mut on_round: impl FnMut(&RoundResult),
) -> Result<StrategyResult, ExperimentError> {
    let topo = &scenario.topology;
    let n = topo.node_count();
    let model_bits = elems as f64 * 8.0 * cfg.wire.elem_bytes() as f64;
    let (mut sim, checker) = build_simulation(scenario, elems, cfg)?;
    // The prior is the configured network (what an operator knows before the job runs).
    let mut replanner = Replanner::new(
        planner,
        model_bits,
        topo.clone(),
        ReplannerConfig {
            awareness: lc.awareness.clone(),
            settle_ns: lc.settle_ns,
            ..ReplannerConfig::default()
        },
    );
    let mut coord = Coordinator::new(n, 1, lc.coordinator.clone());
    let mut agents: Vec<NodeAgent> = (0..n).map(|v| NodeAgent::new(v as NodeId, 1)).collect();
    let c = lc.coordinator_node;
    let latency = (0..n as NodeId)
        .map(|v| {
            let wan: Nanos = topo
                .fewest_hop_route(c, v)
                .map(|r| {
                    r.windows(2)
                        .map(|w| topo.link(w[0], w[1]).map_or(0, |l| l.latency_ns))
                        .sum()
                })
                .unwrap_or(0);
            wan + lc.control_delay_ns
        })
        .collect();
    let mut chan = Channel {
        queue: BTreeMap::new(),
        seq: 0,
        latency,
        loss: lc.control_loss,
        rng: ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x6e65_7473_746f_726d),
        sent: 0,
        lost: 0,
    };
    let mut stats = LearningStats::default();
    let mut shipped: Vec<Shipped> = (0..n).map(|_| Shipped::default()).collect();
    let mut started: Vec<Option<u32>> = vec![None; n];
    let mut parked_seen: Vec<Option<u32>> = vec![None; n];
    // Start-up: probe every link, learn, then plan and distribute the first policy (no
    // round runs yet, so every node simply installs it) and start round 0.
    for v in 0..n {
        sim.wake(v as NodeId);
    }
    let mut t: Nanos = 0;
    if lc.warmup_ns > 0 {
        t = lc.warmup_ns;
        sim.advance_to(t)?;
        // The warm-up is long enough for the trains and the telemetry's trip to the
        // coordinator; the samples are folded in as of its end.
        for (v, shipped) in shipped.iter_mut().enumerate() {
            let samples = collect_samples(sim.engine(v as NodeId), v as NodeId, shipped);
            replanner.handle_telemetry(t, &samples);
        }
    }
    let (_, policy) = replanner
        .plan_now(t, 1)
        .map_err(|err| ExperimentError::plan(planner, err))?;
    install_everywhere(&mut sim, &policy, 0)?;
    sim.set_auto_advance(cfg.rounds - 1, cfg.compute_ns);
    for v in 0..n {
        sim.schedule_start(v as NodeId, 0, t);
    }
    let mut results = Vec::with_capacity(cfg.rounds as usize);
    let mut next_telemetry = t + lc.telemetry_interval_ns;
    let mut last_progress: Nanos = t;
    let mut round_start_net: HashMap<u32, NetworkModel> = HashMap::new();
    while (results.len() as u32) < cfg.rounds {
        t += lc.tick_ns;
        sim.advance_to(t)?;
        // Nodes: heartbeats for rounds started since the last tick; the truth at each
        // round's first start is kept for reporting.
        for v in 0..n {
            let r = sim.engine(v as NodeId).last_round();
            if r != started[v] {
                started[v] = r;
                let r = r.expect("rounds only move forward");
                round_start_net
                    .entry(r)
                    .or_insert_with(|| sim_network(&sim, topo));
                let hb = agents[v].started(r);
                chan.send(t, Dest::Coordinator { from: v as NodeId }, hb);
            }
            let parked = sim.parked_start(v as NodeId);
            if parked.is_some() && parked != parked_seen[v] {
                stats.gated_starts += 1;
            }
            parked_seen[v] = parked;
        }
        // Control messages that arrived.
        while let Some((dest, msg)) = chan.pop_due(t) {
            match dest {
                Dest::Node(v) => {
                    let agent = &mut agents[v as usize];
                    if let Some(reply) = agent.handle(msg) {
                        chan.send(t, Dest::Coordinator { from: v }, reply);
                    }
                    sync_node(&mut sim, agent)?;
                }
                Dest::Coordinator { from } => coord.handle(t, from, msg),
            }
        }
        // Telemetry.
        if t >= next_telemetry {
            next_telemetry += lc.telemetry_interval_ns;
            for (v, shipped) in shipped.iter_mut().enumerate() {
                let samples = collect_samples(sim.engine(v as NodeId), v as NodeId, shipped);
                if !samples.is_empty() {
                    let msg = ControlMsg::Telemetry {
                        node: v as NodeId,
                        samples,
                    };
                    chan.send(t, Dest::Coordinator { from: v as NodeId }, msg);
                }
            }
        }
        // The coordinator: learn, decide, drive the install protocol (a new policy only
        // while some round is left to activate it at).
        let rounds_left = started
            .iter()
            .flatten()
            .min()
            .is_none_or(|&r| r + 1 < cfg.rounds);
        replanner.set_proposals_enabled(rounds_left);
        replanner
            .handle_timeout(t, &mut coord)
            .map_err(|err| ExperimentError::plan(planner, err))?;
        while replanner.poll_proposal().is_some() {}
        while let Some((v, msg)) = coord.poll_transmit() {
            chan.send(t, Dest::Node(v), msg);
        }
        // Finished rounds.
        while let Some(s) = sim.summary(results.len() as u32) {
            let r = results.len() as u32;
            last_progress = t;
            let epoch = check_finished_round(&sim, &checker, &s, cfg.rounds)?;
            let net = round_start_net
                .remove(&r)
                .unwrap_or_else(|| sim_network(&sim, topo));
            let plan = replanner
                .plan_for_epoch(epoch)
                .expect("epoch 1 is always planned");
            let rr = RoundResult {
                round: r,
                started_s: s.started_at as f64 / 1e9,
                sync_s: s.sync_ns() as f64 / 1e9,
                epoch,
                modeled_s: plan.modeled_time(&net, model_bits).total_s,
                topology: net.topology,
                estimated_bps: Some(
                    replanner
                        .estimator()
                        .model()
                        .topology
                        .links
                        .iter()
                        .map(|l| l.rate_bps)
                        .collect(),
                ),
            };
            on_round(&rr);
            results.push(rr);
        }
        if t.saturating_sub(last_progress) > cfg.max_round_virtual_ns {
            let r = results.len() as u32;
            let pending = (0..n)
                .filter(|&v| {
                    let e = sim.engine(v as NodeId);
                    e.last_round() < Some(r) || (e.last_round() == Some(r) && e.round_active())
                })
                .count();
            return Err(ExperimentError::Emu(EmuError::Stuck {
                round: results.len() as u32,
                at_s: t as f64 / 1e9,
                pending,
                why: format!(
                    "no round finished in {:.0} s of virtual time (coordinator deciding: {})",
                    cfg.max_round_virtual_ns as f64 / 1e9,
                    coord.deciding()
                ),
            }));
        }
    }
    stats.proposals = replanner.counters.proposals;
    stats.telemetry_accepted = replanner.counters.telemetry_accepted;
    stats.telemetry_rejected = replanner.counters.telemetry_rejected;
    stats.commits = coord.counters.committed;
    stats.aborts = coord.counters.aborted;
    stats.control_messages = chan.sent;
    stats.control_lost = chan.lost;
    for e in sim.engines() {
        let c = e.counters();
        stats.probe_bytes += c.tx_probe_bytes;
        stats.other_bytes += c.tx_bytes - c.tx_probe_bytes;
    }
    let retransmits = sim.retransmits();
    Ok(StrategyResult {
        strategy: planner.name().to_string(),
        rounds: results,
        wan_bytes: sim.wan_bytes(),
        policies_installed: 1 + coord.counters.committed as u32,
        retransmits,
        early_dropped: sim.early_dropped(),
        cpu_limited_acks: sim.cpu_limited_acks(),
        events: sim.events_processed(),
        learning: Some(stats),
    })
}

/// The emulator's current network (the truth, for reporting only).
fn sim_network(sim: &Simulation, topo: &Topology) -> NetworkModel {
    current_network(topo, &sim.link_rates_bps())
}

/// Applies an agent's state to its node: the start barrier of an undecided activation,
/// and committed policies handed to the engine.
fn sync_node(sim: &mut Simulation, agent: &mut NodeAgent) -> Result<(), ExperimentError> {
    let v = agent.node();
    sim.set_start_barrier(v, agent.barrier());
    while let Some((policy, at)) = agent.take_install() {
        sim.engine_mut(v)
            .install_policy(policy, at)
            .map_err(|err| ExperimentError::Engine { node: v, err })?;
    }
    Ok(())
}
