//! Scenario files: a network ([`Topology`]) plus how it changes over time, in TOML.
//!
//! # Format
//!
//! ```toml
//! name = "paper9-dynamic"      # required, non-empty
//!
//! [[node]]                     # at least one; node ids are assigned in file order
//! name = "dc1"                 # required, non-empty, unique
//! egress_mbps = 10000          # optional NIC cap on everything the node sends, > 0
//! ingress_mbps = 10000         # optional NIC cap on everything the node receives, > 0
//!
//! [[link]]                     # one direction (or both, see `bidirectional`)
//! from = "dc1"                 # required, a [[node]] name
//! to = "dc2"                   # required, a [[node]] name, != from
//! mbps = 100                   # required, > 0 (1 Mbit/s = 1e6 bit/s)
//! latency_ms = 20              # one-way propagation delay, >= 0, default 0
//! loss = 0.0                   # random loss probability per frame, in [0, 1), default 0
//! bidirectional = true         # also add to -> from with the same values, default false
//!
//! [dynamics]                   # optional
//! kind = "uniform"             # the only kind today
//! every_s = 180                # > 0: redraw at t = 0, every_s, 2 * every_s, ...
//! min_mbps = 20                # > 0
//! max_mbps = 155               # >= min_mbps
//! seed = 1                     # ChaCha8 seed, default 1
//!
//! [[event]]                    # optional explicit changes
//! at_s = 60                    # >= 0, seconds since the start
//! from = "dc1"                 # a link change: from + to and at least one of
//! to = "dc2"                   #   mbps (>= 0; 0 cuts the link), latency_ms, loss,
//! mbps = 30                    #   plus optional bidirectional (also change to -> from)
//!
//! [[event]]
//! at_s = 300
//! down = "dc3"                 # or `up = "dc3"`: a node failure / recovery
//! ```
//!
//! At most one link per ordered node pair. [`Topology::links`] lists the links in file order,
//! the reverse direction of a bidirectional link right after its forward direction.
//!
//! # Errors
//!
//! Bad files are rejected by [`Scenario::parse_str`] / [`Scenario::load`] before anything
//! runs, with an error naming the file, the line and the key, e.g.
//! `scenarios/x.toml:12:1: unknown key 'mbsp' in [[link]] (expected one of from, to, mbps, ...)`
//! or `scenarios/x.toml:7: invalid 'to': unknown node 'dc10' in [[link]] #3 (...)`.
//! No input makes the parser panic.
//!
//! # Time
//!
//! [`Scenario::changes`] merges the explicit events with the dynamics redraws into one
//! time-ordered, deterministic stream. At equal times a redraw comes before the explicit
//! events, so an event at the instant of a redraw wins (until the next redraw). A node that is
//! down keeps its links' configured values, but [`LiveTopology::current`] and
//! [`Scenario::topology_at`] report those links at rate 0 until the node is up again.

mod changes;
mod file;

pub use changes::{ChangeStream, LiveTopology};

use crate::topology::Topology;
use crate::{Nanos, NodeId};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Bits per second in one Mbit/s, the unit of every `*mbps` key.
pub const BPS_PER_MBPS: f64 = 1e6;

/// Nanoseconds per millisecond, the unit of `latency_ms`.
const NANOS_PER_MS: f64 = 1e6;

/// The largest number of nodes a scenario may have (node ids are [`NodeId`]).
pub const MAX_NODES: usize = NodeId::MAX as usize;

/// A network and how it changes over time.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub name: String,
    /// The network as configured in the file, before any dynamics redraw or event.
    pub topology: Topology,
    /// Periodic random redraws of every link direction's rate, if any.
    pub dynamics: Option<Dynamics>,
    /// Explicit changes, sorted by time (file order among equal times).
    pub events: Vec<Event>,
}

/// How link rates are redrawn. Only [`DynamicsKind::Uniform`] exists today.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DynamicsKind {
    /// Every `every_ns`, each link direction independently uniform in `[min_bps, max_bps]`.
    Uniform,
}

impl DynamicsKind {
    /// Every kind, for error messages.
    pub const ALL: &'static [DynamicsKind] = &[DynamicsKind::Uniform];

    /// The name used in the `kind` key.
    pub fn name(self) -> &'static str {
        match self {
            DynamicsKind::Uniform => "uniform",
        }
    }

    /// The kind called `name` in a file, if any.
    pub fn from_name(name: &str) -> Option<DynamicsKind> {
        Self::ALL.iter().copied().find(|k| k.name() == name)
    }
}

/// Periodic link-rate redraws (the `[dynamics]` table).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dynamics {
    pub kind: DynamicsKind,
    /// Redraw period; redraws happen at `0, every_ns, 2 * every_ns, ...`. Always `>= 1`.
    pub every_ns: u64,
    pub min_bps: f64,
    pub max_bps: f64,
    /// Seed of the [`ChaCha8Rng`] the redraws come from.
    pub seed: u64,
}

impl Dynamics {
    /// Time of redraw number `round` (`round * every_ns`), `None` past `u64::MAX` ns.
    pub fn redraw_time_ns(&self, round: u64) -> Option<Nanos> {
        round.checked_mul(self.every_ns)
    }

    /// The rates of redraw number `round` for a topology with `link_count` links, in
    /// [`Topology::links`] order. Random access: the same values [`Scenario::changes`] yields
    /// for that round, without drawing the earlier rounds.
    pub fn redraw_rates(&self, round: u64, link_count: usize) -> Vec<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        // Each draw consumes exactly one u64 = two 32-bit ChaCha words.
        rng.set_word_pos(2 * u128::from(round) * link_count as u128);
        (0..link_count).map(|_| self.draw(&mut rng)).collect()
    }

    fn draw(&self, rng: &mut ChaCha8Rng) -> f64 {
        match self.kind {
            DynamicsKind::Uniform => {
                // 53 random bits -> [0, 1), then scale; clamp against rounding past max.
                let unit = (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
                (self.min_bps + unit * (self.max_bps - self.min_bps)).min(self.max_bps)
            }
        }
    }
}

/// One change to the network.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change {
    /// Set the rate of `topology.links[link]`, bits per second (0 cuts the link).
    LinkRate { link: usize, rate_bps: f64 },
    /// Set the one-way latency of `topology.links[link]`.
    LinkLatency { link: usize, latency_ns: u64 },
    /// Set the loss probability of `topology.links[link]`, in `[0, 1)`.
    LinkLoss { link: usize, loss: f64 },
    /// The node fails: its links carry nothing until [`Change::NodeUp`].
    NodeDown(NodeId),
    /// The node recovers; its links get back their current configured values.
    NodeUp(NodeId),
}

/// A change and when it happens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimedChange {
    pub at_ns: Nanos,
    pub change: Change,
}

/// One `[[event]]`: changes that all happen at `at_ns`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub at_ns: Nanos,
    pub changes: Vec<Change>,
}

/// Why a scenario could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("{}: cannot read scenario file: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML, or a key/type that the format does not have (unknown key, missing
    /// required key, wrong type). `line` and `column` are 1-based.
    #[error("{file}:{line}:{column}: {message}")]
    Parse {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// Well-formed but wrong: an unknown node, a duplicate, a value out of range, ...
    #[error("{file}{}: invalid '{key}': {message}", .line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid {
        file: String,
        line: Option<usize>,
        key: String,
        message: String,
    },
}

impl Scenario {
    /// Reads and parses a scenario file; errors name `path`.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Scenario::parse_str(&text, &path.display().to_string())
    }

    /// Parses and validates scenario text; `origin` (a file name) is used in error messages.
    pub fn parse_str(text: &str, origin: &str) -> Result<Scenario, ScenarioError> {
        file::parse(text, origin)
    }

    /// Checks the invariants [`Scenario::parse_str`] guarantees, for scenarios built in code.
    /// Errors name the scenario instead of a file and have no line.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let invalid = |key: &str, message: String| ScenarioError::Invalid {
            file: self.name.clone(),
            line: None,
            key: key.to_string(),
            message,
        };
        let topo = &self.topology;
        if self.name.trim().is_empty() {
            return Err(invalid("name", "the scenario name is empty".into()));
        }
        if topo.nodes.is_empty() || topo.nodes.len() > MAX_NODES {
            return Err(invalid("node", format!("need 1..={MAX_NODES} nodes")));
        }
        let mut names = HashMap::new();
        for (i, node) in topo.nodes.iter().enumerate() {
            if node.name.trim().is_empty() {
                return Err(invalid(
                    "name",
                    format!("node #{} has an empty name", i + 1),
                ));
            }
            if names.insert(node.name.as_str(), i).is_some() {
                return Err(invalid(
                    "name",
                    format!("duplicate node name '{}'", node.name),
                ));
            }
            for (key, cap) in [
                ("egress_mbps", node.egress_bps),
                ("ingress_mbps", node.ingress_bps),
            ] {
                if cap.is_some_and(|c| !(c.is_finite() && c > 0.0)) {
                    return Err(invalid(
                        key,
                        format!("cap of node '{}' must be > 0", node.name),
                    ));
                }
            }
        }
        let n = topo.nodes.len();
        let mut pairs = HashMap::new();
        for (i, l) in topo.links.iter().enumerate() {
            if l.from as usize >= n || l.to as usize >= n {
                return Err(invalid(
                    "from",
                    format!("link #{i} names a node out of range"),
                ));
            }
            if l.from == l.to {
                return Err(invalid("to", format!("link #{i} is a self-loop")));
            }
            if pairs.insert((l.from, l.to), i).is_some() {
                return Err(invalid(
                    "to",
                    format!("link #{i} duplicates an earlier link"),
                ));
            }
            if !(l.rate_bps.is_finite() && l.rate_bps > 0.0) {
                return Err(invalid("mbps", format!("link #{i} rate must be > 0")));
            }
            if !(0.0..1.0).contains(&l.loss) {
                return Err(invalid("loss", format!("link #{i} loss must be in [0, 1)")));
            }
        }
        if let Some(d) = &self.dynamics {
            if d.every_ns == 0 {
                return Err(invalid("every_s", "the redraw period must be > 0".into()));
            }
            if !(d.min_bps.is_finite() && d.min_bps > 0.0) {
                return Err(invalid("min_mbps", "must be > 0".into()));
            }
            if !(d.max_bps.is_finite() && d.max_bps >= d.min_bps) {
                return Err(invalid("max_mbps", "must be >= min_mbps".into()));
            }
            if topo.links.is_empty() {
                return Err(invalid("dynamics", "there is no link to redraw".into()));
            }
        }
        for ev in &self.events {
            for c in &ev.changes {
                let ok = match *c {
                    Change::LinkRate { link, rate_bps } => {
                        link < topo.links.len() && rate_bps.is_finite() && rate_bps >= 0.0
                    }
                    Change::LinkLatency { link, .. } => link < topo.links.len(),
                    Change::LinkLoss { link, loss } => {
                        link < topo.links.len() && (0.0..1.0).contains(&loss)
                    }
                    Change::NodeDown(node) | Change::NodeUp(node) => (node as usize) < n,
                };
                if !ok {
                    return Err(invalid(
                        "event",
                        format!("bad change at {} ns: {c:?}", ev.at_ns),
                    ));
                }
            }
        }
        Ok(())
    }

    /// All changes in time order, merging explicit events and the dynamics redraws.
    ///
    /// Redraws happen at `t = 0, every, 2 * every, ...` (so a dynamic scenario's file rates
    /// are overridden from the start); each redraw yields one [`Change::LinkRate`] per link
    /// direction, in [`Topology::links`] order, uniform in `[min_bps, max_bps]`, from a
    /// [`ChaCha8Rng`] seeded with `seed` — deterministic. At equal times the redraw comes
    /// first, then the events in file order. Infinite when dynamics is set.
    pub fn changes(&self) -> ChangeStream {
        ChangeStream::new(
            self.timed_events().into(),
            self.dynamics,
            self.topology.links.len(),
        )
    }

    /// The topology as it stands at time `t_ns`: every change with `at_ns <= t_ns` applied
    /// (links of nodes that are down at rate 0). Cost is independent of `t_ns`.
    pub fn topology_at(&self, t_ns: Nanos) -> Topology {
        let mut live = LiveTopology::new(self.topology.clone());
        let link_count = self.topology.links.len();
        let mut last_redraw_ns = None;
        if let Some(d) = self.dynamics.filter(|d| d.every_ns > 0 && link_count > 0) {
            let round = t_ns / d.every_ns;
            for (link, rate_bps) in d.redraw_rates(round, link_count).into_iter().enumerate() {
                live.apply(&Change::LinkRate { link, rate_bps });
            }
            last_redraw_ns = Some(round * d.every_ns);
        }
        for tc in self.timed_events().iter().take_while(|tc| tc.at_ns <= t_ns) {
            let overridden = matches!(tc.change, Change::LinkRate { .. })
                && last_redraw_ns.is_some_and(|redraw| tc.at_ns < redraw);
            if !overridden {
                live.apply(&tc.change);
            }
        }
        live.current()
    }

    /// The explicit events flattened and stably sorted by time.
    fn timed_events(&self) -> Vec<TimedChange> {
        let mut out: Vec<TimedChange> = self
            .events
            .iter()
            .flat_map(|ev| {
                ev.changes.iter().map(|&change| TimedChange {
                    at_ns: ev.at_ns,
                    change,
                })
            })
            .collect();
        out.sort_by_key(|tc| tc.at_ns);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NANOS_PER_SEC;

    pub(super) const TWO_NODES: &str =
        "name = \"t\"\n[[node]]\nname = \"a\"\n[[node]]\nname = \"b\"\n\
                             [[link]]\nfrom = \"a\"\nto = \"b\"\nmbps = 10\nbidirectional = true\n";

    pub(super) fn dynamic(seed: u64) -> Scenario {
        let text = format!(
            "{TWO_NODES}[dynamics]\nkind = \"uniform\"\nevery_s = 0.5\nmin_mbps = 20\n\
             max_mbps = 155\nseed = {seed}\n"
        );
        Scenario::parse_str(&text, "t.toml").unwrap()
    }

    #[test]
    fn parses_units() {
        let text = format!("{TWO_NODES}latency_ms = 1.5\nloss = 0.25\n");
        let s = Scenario::parse_str(&text, "t.toml").unwrap();
        assert_eq!(s.name, "t");
        assert_eq!(s.topology.links.len(), 2);
        let l = &s.topology.links[1];
        assert_eq!(
            (l.from, l.to, l.rate_bps, l.latency_ns, l.loss),
            (1, 0, 10e6, 1_500_000, 0.25)
        );
        let d = dynamic(7).dynamics.unwrap();
        assert_eq!(
            (d.kind, d.every_ns, d.min_bps, d.max_bps, d.seed),
            (DynamicsKind::Uniform, NANOS_PER_SEC / 2, 20e6, 155e6, 7)
        );
        let text = TWO_NODES.replace(
            "[[link]]",
            "[dynamics]\nkind = \"uniform\"\nevery_s = 1\nmin_mbps = 1\nmax_mbps = 1\n[[link]]",
        );
        assert_eq!(
            Scenario::parse_str(&text, "t.toml")
                .unwrap()
                .dynamics
                .unwrap()
                .seed,
            1
        );
    }

    #[test]
    fn random_access_redraws_match_the_stream() {
        for links in [1usize, 2, 7, 26] {
            let d = Dynamics {
                kind: DynamicsKind::Uniform,
                every_ns: 10,
                min_bps: 1.0,
                max_bps: 2.0,
                seed: 3,
            };
            let mut rng = ChaCha8Rng::seed_from_u64(d.seed);
            for round in 0..20 {
                let sequential: Vec<f64> = (0..links).map(|_| d.draw(&mut rng)).collect();
                assert_eq!(
                    sequential,
                    d.redraw_rates(round, links),
                    "round {round}, {links} links"
                );
            }
        }
    }

    #[test]
    fn validate_catches_bad_programmatic_scenarios() {
        let good = Scenario::parse_str(TWO_NODES, "t.toml").unwrap();
        good.validate().unwrap();
        let mut bad = good.clone();
        bad.topology.links[0].loss = 1.0;
        assert!(bad.validate().unwrap_err().to_string().contains("'loss'"));
        let mut bad = good.clone();
        bad.events.push(Event {
            at_ns: 1,
            changes: vec![Change::LinkRate {
                link: 5,
                rate_bps: 1.0,
            }],
        });
        assert!(bad.validate().is_err());
        let mut bad = good;
        bad.topology.links[1].to = 1;
        assert!(bad.validate().is_err());
    }

    #[test]
    fn dynamics_kind_names() {
        assert_eq!(
            DynamicsKind::from_name("uniform"),
            Some(DynamicsKind::Uniform)
        );
        assert_eq!(DynamicsKind::from_name("Uniform"), None);
    }
}
