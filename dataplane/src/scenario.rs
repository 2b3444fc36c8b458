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

use crate::topology::{Link, Node, Topology};
use crate::{Nanos, NodeId, NANOS_PER_SEC};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;
use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use toml::Spanned;

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
        let src = Source { text, origin };
        let raw: RawScenario = toml::from_str(text).map_err(|e| src.toml_error(&e))?;
        src.build(raw)
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
        let link_count = self.topology.links.len();
        ChangeStream {
            events: self.timed_events().into(),
            next_event: 0,
            redraw: self
                .dynamics
                .filter(|d| d.every_ns > 0 && link_count > 0)
                .map(|dynamics| RedrawState {
                    rng: ChaCha8Rng::seed_from_u64(dynamics.seed),
                    dynamics,
                    link_count,
                    round: 0,
                    next_link: 0,
                }),
        }
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

/// The time-ordered changes of a scenario; see [`Scenario::changes`].
#[derive(Debug, Clone)]
pub struct ChangeStream {
    events: Arc<[TimedChange]>,
    next_event: usize,
    redraw: Option<RedrawState>,
}

#[derive(Debug, Clone)]
struct RedrawState {
    dynamics: Dynamics,
    link_count: usize,
    round: u64,
    next_link: usize,
    rng: ChaCha8Rng,
}

impl Iterator for ChangeStream {
    type Item = TimedChange;

    fn next(&mut self) -> Option<TimedChange> {
        let redraw_ns = self
            .redraw
            .as_ref()
            .and_then(|r| r.dynamics.redraw_time_ns(r.round));
        if redraw_ns.is_none() {
            self.redraw = None;
        }
        let event_ns = self.events.get(self.next_event).map(|tc| tc.at_ns);
        match (redraw_ns, event_ns) {
            (Some(redraw), event) if !matches!(event, Some(e) if e < redraw) => {
                let r = self.redraw.as_mut()?;
                let link = r.next_link;
                let rate_bps = r.dynamics.draw(&mut r.rng);
                r.next_link += 1;
                if r.next_link == r.link_count {
                    r.next_link = 0;
                    match r.round.checked_add(1) {
                        Some(round) => r.round = round,
                        None => self.redraw = None,
                    }
                }
                Some(TimedChange {
                    at_ns: redraw,
                    change: Change::LinkRate { link, rate_bps },
                })
            }
            (_, Some(_)) => {
                let tc = self.events[self.next_event];
                self.next_event += 1;
                Some(tc)
            }
            (_, None) => None,
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.events.len() - self.next_event;
        match self.redraw {
            Some(_) => (usize::MAX, None),
            None => (left, Some(left)),
        }
    }
}

/// A topology being changed over time: applies [`Change`]s, remembers which nodes are down.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveTopology {
    configured: Topology,
    down: Vec<bool>,
}

impl LiveTopology {
    pub fn new(topology: Topology) -> LiveTopology {
        let down = vec![false; topology.nodes.len()];
        LiveTopology {
            configured: topology,
            down,
        }
    }

    /// Applies one change. Changes naming a link or node that does not exist are ignored.
    pub fn apply(&mut self, change: &Change) {
        match *change {
            Change::LinkRate { link, rate_bps } => {
                if let Some(l) = self.configured.links.get_mut(link) {
                    l.rate_bps = rate_bps;
                }
            }
            Change::LinkLatency { link, latency_ns } => {
                if let Some(l) = self.configured.links.get_mut(link) {
                    l.latency_ns = latency_ns;
                }
            }
            Change::LinkLoss { link, loss } => {
                if let Some(l) = self.configured.links.get_mut(link) {
                    l.loss = loss;
                }
            }
            Change::NodeDown(node) | Change::NodeUp(node) => {
                if let Some(d) = self.down.get_mut(node as usize) {
                    *d = matches!(change, Change::NodeDown(_));
                }
            }
        }
    }

    pub fn is_up(&self, node: NodeId) -> bool {
        !self.down.get(node as usize).copied().unwrap_or(false)
    }

    /// The links' configured values, ignoring which nodes are down.
    pub fn configured(&self) -> &Topology {
        &self.configured
    }

    /// The network now: configured values, links touching a down node at rate 0.
    pub fn current(&self) -> Topology {
        let mut topo = self.configured.clone();
        for l in &mut topo.links {
            if !self.is_up(l.from) || !self.is_up(l.to) {
                l.rate_bps = 0.0;
            }
        }
        topo
    }
}

// ---------------------------------------------------------------------------------------
// The file format as serde sees it. Every value is `Spanned` so errors can name its line.
// ---------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Spanned<String>,
    #[serde(default)]
    node: Vec<Spanned<RawNode>>,
    #[serde(default)]
    link: Vec<Spanned<RawLink>>,
    #[serde(default)]
    dynamics: Option<Spanned<RawDynamics>>,
    #[serde(default)]
    event: Vec<Spanned<RawEvent>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: Spanned<String>,
    #[serde(default)]
    egress_mbps: Option<Spanned<f64>>,
    #[serde(default)]
    ingress_mbps: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLink {
    from: Spanned<String>,
    to: Spanned<String>,
    mbps: Spanned<f64>,
    #[serde(default)]
    latency_ms: Option<Spanned<f64>>,
    #[serde(default)]
    loss: Option<Spanned<f64>>,
    #[serde(default)]
    bidirectional: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDynamics {
    kind: Spanned<String>,
    every_s: Spanned<f64>,
    min_mbps: Spanned<f64>,
    max_mbps: Spanned<f64>,
    #[serde(default)]
    seed: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    at_s: Spanned<f64>,
    #[serde(default)]
    from: Option<Spanned<String>>,
    #[serde(default)]
    to: Option<Spanned<String>>,
    #[serde(default)]
    mbps: Option<Spanned<f64>>,
    #[serde(default)]
    latency_ms: Option<Spanned<f64>>,
    #[serde(default)]
    loss: Option<Spanned<f64>>,
    #[serde(default)]
    bidirectional: Option<Spanned<bool>>,
    #[serde(default)]
    down: Option<Spanned<String>>,
    #[serde(default)]
    up: Option<Spanned<String>>,
}

/// Tables of the format, recognised in serde's "expected one of" lists by a key only they have.
const TABLES: &[(&str, &str)] = &[
    ("`at_s`", "in [[event]]"),
    ("`every_s`", "in [dynamics]"),
    ("`ingress_mbps`", "in [[node]]"),
    ("`bidirectional`", "in [[link]]"),
    ("`dynamics`", "at the top level"),
];

/// Internal struct names serde may print, and what to say instead.
const STRUCT_NAMES: &[(&str, &str)] = &[
    ("struct RawScenario", "a scenario table"),
    ("struct RawNode", "a [[node]] table"),
    ("struct RawLink", "a [[link]] table"),
    ("struct RawDynamics", "a [dynamics] table"),
    ("struct RawEvent", "an [[event]] table"),
];

/// 1-based line and column (in characters) of byte `offset` in `text`, for error messages
/// about TOML files (scenarios here, cluster configs in the node crate). Never panics.
pub fn text_position(text: &str, offset: usize) -> (usize, usize) {
    let bytes = text.as_bytes();
    let before = &bytes[..offset.min(bytes.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let column = before[line_start..]
        .iter()
        .filter(|&&b| (b & 0xC0) != 0x80)
        .count()
        + 1;
    (line, column)
}

/// The text being parsed and its name, for turning byte spans into messages.
struct Source<'a> {
    text: &'a str,
    origin: &'a str,
}

impl Source<'_> {
    fn position(&self, offset: usize) -> (usize, usize) {
        text_position(self.text, offset)
    }

    fn line(&self, span: Range<usize>) -> usize {
        self.position(span.start).0
    }

    /// The text of the line holding `offset`, or "" if out of range.
    fn line_text(&self, offset: usize) -> &str {
        let line = self.position(offset).0;
        self.text.lines().nth(line - 1).unwrap_or("")
    }

    fn invalid(&self, span: Range<usize>, key: &str, message: String) -> ScenarioError {
        ScenarioError::Invalid {
            file: self.origin.to_string(),
            line: Some(self.line(span)),
            key: key.to_string(),
            message,
        }
    }

    /// Where `offset` is: "in [[link]]" (the table header in force, found by scanning back
    /// from its line) or "at the top level".
    fn enclosing_table(&self, offset: usize) -> String {
        let line = self.position(offset).0;
        self.text
            .lines()
            .take(line)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .find_map(table_header)
            .map_or_else(|| "at the top level".to_string(), |h| format!("in {h}"))
    }

    /// A TOML or serde error, reworded to name the key and the table.
    fn toml_error(&self, err: &toml::de::Error) -> ScenarioError {
        let span = err.span().unwrap_or(0..0);
        let (line, column) = self.position(span.start);
        let raw = err.message().trim();
        let mut message = if let Some(rest) = raw.strip_prefix("unknown field `") {
            unknown_key_message(rest)
        } else if let Some(rest) = raw.strip_prefix("missing field `") {
            let key = rest.split('`').next().unwrap_or(rest);
            let table = if span.is_empty() {
                "at the top level".to_string()
            } else {
                self.enclosing_table(span.start)
            };
            format!("missing required key '{key}' {table}")
        } else if raw.starts_with("invalid type") || raw.starts_with("invalid value") {
            let line_text = self.line_text(span.start);
            match table_header(line_text) {
                Some(header) => {
                    let name = header.trim_matches(|c| c == '[' || c == ']');
                    let hint = match (header.starts_with("[["), name) {
                        (false, "node" | "link" | "event") => {
                            format!(" (write [[{name}]]: there can be several)")
                        }
                        (true, "dynamics") => " (write [dynamics]: there is only one)".into(),
                        _ => String::new(),
                    };
                    format!("invalid value for '{name}' at the top level: {raw}{hint}")
                }
                None => match line_text.split_once('=') {
                    Some((key, _)) if !key.trim().is_empty() && !key.contains('{') => {
                        let key = key.trim().trim_matches('"');
                        let table = self.enclosing_table(span.start);
                        format!("invalid value for '{key}' {table}: {raw}")
                    }
                    _ => raw.to_string(),
                },
            }
        } else {
            raw.to_string()
        };
        for (internal, public) in STRUCT_NAMES {
            message = message.replace(internal, public);
        }
        // TOML syntax errors span several lines ("invalid table header\nexpected ...").
        let message = message
            .lines()
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(": ");
        ScenarioError::Parse {
            file: self.origin.to_string(),
            line,
            column,
            message,
        }
    }

    fn build(&self, raw: RawScenario) -> Result<Scenario, ScenarioError> {
        let name = raw.name.get_ref().trim();
        if name.is_empty() {
            return Err(self.invalid(raw.name.span(), "name", "the scenario name is empty".into()));
        }

        // Nodes.
        if raw.node.is_empty() {
            return Err(ScenarioError::Invalid {
                file: self.origin.to_string(),
                line: None,
                key: "node".into(),
                message: "no [[node]] table: a scenario needs at least one node".into(),
            });
        }
        if raw.node.len() > MAX_NODES {
            let span = raw.node[MAX_NODES].span();
            return Err(self.invalid(span, "node", format!("more than {MAX_NODES} nodes")));
        }
        let mut ids: HashMap<&str, (NodeId, usize)> = HashMap::new();
        let mut nodes = Vec::with_capacity(raw.node.len());
        for (i, node) in raw.node.iter().enumerate() {
            let node = node.get_ref();
            let node_name = node.name.get_ref().as_str();
            if node_name.trim().is_empty() {
                let msg = format!("[[node]] #{} has an empty name", i + 1);
                return Err(self.invalid(node.name.span(), "name", msg));
            }
            let line = self.line(node.name.span());
            if let Some((_, first)) = ids.insert(node_name, (i as NodeId, line)) {
                let msg =
                    format!("duplicate node name '{node_name}' (first defined on line {first})");
                return Err(self.invalid(node.name.span(), "name", msg));
            }
            nodes.push(Node {
                name: node_name.to_string(),
                egress_bps: self.optional_cap(&node.egress_mbps, "egress_mbps", node_name)?,
                ingress_bps: self.optional_cap(&node.ingress_mbps, "ingress_mbps", node_name)?,
            });
        }
        let names = NodeNames {
            ids,
            known: known_names(&raw.node),
        };
        let lookup = |field: &Spanned<String>, key: &str, table: &str| {
            self.node_id(&names, field, key, table)
        };

        // Links.
        let mut links: Vec<Link> = Vec::new();
        let mut pairs: HashMap<(NodeId, NodeId), usize> = HashMap::new();
        for (i, spanned) in raw.link.iter().enumerate() {
            let link = spanned.get_ref();
            let table = format!("[[link]] #{}", i + 1);
            let from = lookup(&link.from, "from", &table)?;
            let to = lookup(&link.to, "to", &table)?;
            if from == to {
                let msg = format!("{table} goes from '{}' to itself", link.from.get_ref());
                return Err(self.invalid(link.to.span(), "to", msg));
            }
            let rate_bps = self.rate(&link.mbps, "mbps", &table, false)?;
            let latency_ns = self.latency(link.latency_ms.as_ref(), &table)?.unwrap_or(0);
            let loss = self.loss(link.loss.as_ref(), &table)?.unwrap_or(0.0);
            let bidirectional = link.bidirectional.as_ref().is_some_and(|b| *b.get_ref());
            let header_line = self.line(spanned.span());
            let mut directions = vec![(from, to, "to")];
            if bidirectional {
                directions.push((to, from, "bidirectional"));
            }
            for (a, b, key) in directions {
                if let Some(first) = pairs.insert((a, b), header_line) {
                    let (na, nb) = (&nodes[a as usize].name, &nodes[b as usize].name);
                    let msg = format!(
                        "{table} repeats the link {na} -> {nb} (first defined by the [[link]] on \
                         line {first}); at most one link per ordered pair"
                    );
                    return Err(self.invalid(spanned.span(), key, msg));
                }
                links.push(Link {
                    from: a,
                    to: b,
                    rate_bps,
                    latency_ns,
                    loss,
                });
            }
        }
        let topology = Topology { nodes, links };

        // Dynamics.
        let dynamics = match &raw.dynamics {
            None => None,
            Some(spanned) => {
                let d = spanned.get_ref();
                let kind = DynamicsKind::from_name(d.kind.get_ref()).ok_or_else(|| {
                    let kinds: Vec<_> = DynamicsKind::ALL.iter().map(|k| k.name()).collect();
                    let msg = format!(
                        "unknown dynamics kind '{}' (expected one of: {})",
                        d.kind.get_ref(),
                        kinds.join(", ")
                    );
                    self.invalid(d.kind.span(), "kind", msg)
                })?;
                let every_ns = self.seconds(&d.every_s, "every_s", "[dynamics]")?;
                if every_ns == 0 {
                    let msg = format!(
                        "every_s in [dynamics] must be > 0 (at least 1 ns), got {}",
                        d.every_s.get_ref()
                    );
                    return Err(self.invalid(d.every_s.span(), "every_s", msg));
                }
                let min_bps = self.rate(&d.min_mbps, "min_mbps", "[dynamics]", false)?;
                let max_bps = self.rate(&d.max_mbps, "max_mbps", "[dynamics]", false)?;
                if max_bps < min_bps {
                    let msg = format!(
                        "max_mbps = {} is below min_mbps = {}",
                        d.max_mbps.get_ref(),
                        d.min_mbps.get_ref()
                    );
                    return Err(self.invalid(d.max_mbps.span(), "max_mbps", msg));
                }
                if topology.links.is_empty() {
                    let msg = "[dynamics] needs at least one [[link]] to redraw".into();
                    return Err(self.invalid(spanned.span(), "dynamics", msg));
                }
                let seed = d.seed.as_ref().map_or(1, |s| *s.get_ref());
                Some(Dynamics {
                    kind,
                    every_ns,
                    min_bps,
                    max_bps,
                    seed,
                })
            }
        };

        // Events.
        let mut events = Vec::with_capacity(raw.event.len());
        for (i, spanned) in raw.event.iter().enumerate() {
            let ev = spanned.get_ref();
            let table = format!("[[event]] #{}", i + 1);
            let at_ns = self.seconds(&ev.at_s, "at_s", &table)?;
            let link_keys: Vec<(&str, Range<usize>)> = [
                ("from", ev.from.as_ref().map(Spanned::span)),
                ("to", ev.to.as_ref().map(Spanned::span)),
                ("mbps", ev.mbps.as_ref().map(Spanned::span)),
                ("latency_ms", ev.latency_ms.as_ref().map(Spanned::span)),
                ("loss", ev.loss.as_ref().map(Spanned::span)),
                (
                    "bidirectional",
                    ev.bidirectional.as_ref().map(Spanned::span),
                ),
            ]
            .into_iter()
            .filter_map(|(k, s)| s.map(|s| (k, s)))
            .collect();
            let changes = match (&ev.down, &ev.up) {
                (Some(a), Some(_)) => {
                    let msg = format!("{table} has both 'down' and 'up'; use two events");
                    return Err(self.invalid(a.span(), "up", msg));
                }
                (Some(node), None) | (None, Some(node)) => {
                    let key = if ev.down.is_some() { "down" } else { "up" };
                    if let Some((other, span)) = link_keys.first() {
                        let msg = format!(
                            "{table} sets '{key}' and '{other}': an event either changes a link \
                             (from/to) or takes a node down/up, not both"
                        );
                        return Err(self.invalid(span.clone(), other, msg));
                    }
                    let id = lookup(node, key, &table)?;
                    if key == "down" {
                        vec![Change::NodeDown(id)]
                    } else {
                        vec![Change::NodeUp(id)]
                    }
                }
                (None, None) => self.link_event(ev, spanned.span(), &table, &topology, &names)?,
            };
            events.push(Event { at_ns, changes });
        }
        events.sort_by_key(|e| e.at_ns);

        Ok(Scenario {
            name: name.to_string(),
            topology,
            dynamics,
            events,
        })
    }

    /// The changes of an event with from/to.
    fn link_event(
        &self,
        ev: &RawEvent,
        span: Range<usize>,
        table: &str,
        topology: &Topology,
        names: &NodeNames<'_>,
    ) -> Result<Vec<Change>, ScenarioError> {
        let (from_field, to_field) = match (&ev.from, &ev.to) {
            (Some(f), Some(t)) => (f, t),
            (None, None) => {
                let msg = format!(
                    "{table} changes nothing: give from + to with mbps/latency_ms/loss, or \
                     down = \"<node>\" / up = \"<node>\""
                );
                return Err(self.invalid(span, "event", msg));
            }
            (Some(f), None) => {
                let msg = format!("{table} has 'from' but no 'to'");
                return Err(self.invalid(f.span(), "to", msg));
            }
            (None, Some(t)) => {
                let msg = format!("{table} has 'to' but no 'from'");
                return Err(self.invalid(t.span(), "from", msg));
            }
        };
        let from = self.node_id(names, from_field, "from", table)?;
        let to = self.node_id(names, to_field, "to", table)?;
        if ev.mbps.is_none() && ev.latency_ms.is_none() && ev.loss.is_none() {
            let msg = format!("{table} sets none of mbps, latency_ms, loss");
            return Err(self.invalid(span, "event", msg));
        }
        let rate_bps = ev
            .mbps
            .as_ref()
            .map(|m| self.rate(m, "mbps", table, true))
            .transpose()?;
        let latency_ns = self.latency(ev.latency_ms.as_ref(), table)?;
        let loss = self.loss(ev.loss.as_ref(), table)?;
        let mut directions = vec![(from, to, from_field, to_field)];
        if ev.bidirectional.as_ref().is_some_and(|b| *b.get_ref()) {
            directions.push((to, from, to_field, from_field));
        }
        let mut changes = Vec::new();
        for (a, b, a_field, b_field) in directions {
            let link = topology.link_index(a, b).ok_or_else(|| {
                let msg = format!(
                    "{table} changes the link {} -> {}, which no [[link]] defines",
                    a_field.get_ref(),
                    b_field.get_ref()
                );
                let key = if a == from { "to" } else { "bidirectional" };
                self.invalid(to_field.span(), key, msg)
            })?;
            if let Some(rate_bps) = rate_bps {
                changes.push(Change::LinkRate { link, rate_bps });
            }
            if let Some(latency_ns) = latency_ns {
                changes.push(Change::LinkLatency { link, latency_ns });
            }
            if let Some(loss) = loss {
                changes.push(Change::LinkLoss { link, loss });
            }
        }
        Ok(changes)
    }

    /// The id of the node a `from`/`to`/`down`/`up` value names.
    fn node_id(
        &self,
        names: &NodeNames<'_>,
        field: &Spanned<String>,
        key: &str,
        table: &str,
    ) -> Result<NodeId, ScenarioError> {
        names
            .ids
            .get(field.get_ref().as_str())
            .map(|&(id, _)| id)
            .ok_or_else(|| {
                let msg = format!(
                    "unknown node '{}' in {table} ({})",
                    field.get_ref(),
                    names.known
                );
                self.invalid(field.span(), key, msg)
            })
    }

    /// Mbit/s -> bit/s; finite and > 0 (or >= 0 if `zero_ok`).
    fn rate(
        &self,
        mbps: &Spanned<f64>,
        key: &str,
        table: &str,
        zero_ok: bool,
    ) -> Result<f64, ScenarioError> {
        let v = *mbps.get_ref();
        let bps = v * BPS_PER_MBPS;
        let ok = bps.is_finite() && if zero_ok { v >= 0.0 } else { v > 0.0 };
        if ok {
            Ok(bps)
        } else {
            let bound = if zero_ok { ">= 0" } else { "> 0" };
            let msg = format!("{key} in {table} must be a finite number {bound} (Mbit/s), got {v}");
            Err(self.invalid(mbps.span(), key, msg))
        }
    }

    fn optional_cap(
        &self,
        mbps: &Option<Spanned<f64>>,
        key: &str,
        node: &str,
    ) -> Result<Option<f64>, ScenarioError> {
        let table = format!("[[node]] '{node}'");
        mbps.as_ref()
            .map(|m| self.rate(m, key, &table, false))
            .transpose()
    }

    /// Milliseconds -> ns; finite and >= 0 (saturating at `u64::MAX` ns).
    fn latency(
        &self,
        ms: Option<&Spanned<f64>>,
        table: &str,
    ) -> Result<Option<u64>, ScenarioError> {
        let Some(ms) = ms else { return Ok(None) };
        let v = *ms.get_ref();
        if !(v.is_finite() && v >= 0.0) {
            let msg = format!("latency_ms in {table} must be a finite number >= 0, got {v}");
            return Err(self.invalid(ms.span(), "latency_ms", msg));
        }
        Ok(Some((v * NANOS_PER_MS).round() as u64))
    }

    fn loss(&self, loss: Option<&Spanned<f64>>, table: &str) -> Result<Option<f64>, ScenarioError> {
        let Some(loss) = loss else { return Ok(None) };
        let v = *loss.get_ref();
        if !(0.0..1.0).contains(&v) {
            let msg = format!("loss in {table} must be a probability in [0, 1), got {v}");
            return Err(self.invalid(loss.span(), "loss", msg));
        }
        Ok(Some(v))
    }

    /// Seconds -> ns; finite and >= 0 (saturating at `u64::MAX` ns).
    fn seconds(&self, s: &Spanned<f64>, key: &str, table: &str) -> Result<u64, ScenarioError> {
        let v = *s.get_ref();
        if !(v.is_finite() && v >= 0.0) {
            let msg = format!("{key} in {table} must be a finite number of seconds >= 0, got {v}");
            return Err(self.invalid(s.span(), key, msg));
        }
        Ok((v * NANOS_PER_SEC as f64).round() as u64)
    }
}

/// Node names seen so far: id and line of each, plus the list for error messages.
struct NodeNames<'a> {
    ids: HashMap<&'a str, (NodeId, usize)>,
    known: String,
}

/// "known nodes: a, b, c" (shortened for big scenarios), for unknown-node messages.
fn known_names(nodes: &[Spanned<RawNode>]) -> String {
    const SHOWN: usize = 12;
    let names: Vec<&str> = nodes
        .iter()
        .take(SHOWN)
        .map(|n| n.get_ref().name.get_ref().as_str())
        .collect();
    let more = if nodes.len() > SHOWN {
        format!(", ... ({} in all)", nodes.len())
    } else {
        String::new()
    };
    format!("known nodes: {}{more}", names.join(", "))
}

/// The header (`[[link]]`, `[dynamics]`) if `line` is a table header line.
fn table_header(line: &str) -> Option<String> {
    let line = line.trim();
    if !line.starts_with('[') {
        return None;
    }
    let end = if line.starts_with("[[") {
        line.find("]]").map(|i| i + 2)
    } else {
        line.find(']').map(|i| i + 1)
    };
    Some(line[..end.unwrap_or(line.len())].to_string())
}

/// Rewords serde's "unknown field `x`, expected one of `a`, `b`" (given from after the first
/// backtick) as "unknown key 'x' in [[link]] (expected one of a, b; did you mean 'y'?)".
fn unknown_key_message(rest: &str) -> String {
    let (key, tail) = rest.split_once('`').unwrap_or((rest, ""));
    let table = TABLES
        .iter()
        .find(|(marker, _)| tail.contains(marker))
        .map_or("in this table", |(_, table)| table);
    let expected: Vec<&str> = tail
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| !s.is_empty())
        .collect();
    let mut msg = format!("unknown key '{key}' {table}");
    if !expected.is_empty() {
        msg.push_str(&format!(" (expected one of {})", expected.join(", ")));
    }
    if let Some(best) = expected
        .iter()
        .map(|e| (edit_distance(key, e), *e))
        .filter(|&(d, e)| d <= 2.max(e.len() / 3))
        .min()
    {
        msg.push_str(&format!("; did you mean '{}'?", best.1));
    }
    msg
}

/// Levenshtein distance, for "did you mean" hints on short keys.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().take(64).collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let subst = prev[j] + usize::from(ca != cb);
            cur[j + 1] = subst.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_NODES: &str = "name = \"t\"\n[[node]]\nname = \"a\"\n[[node]]\nname = \"b\"\n\
                             [[link]]\nfrom = \"a\"\nto = \"b\"\nmbps = 10\nbidirectional = true\n";

    fn dynamic(seed: u64) -> Scenario {
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
    fn stream_orders_and_repeats() {
        let s = dynamic(1);
        let a: Vec<_> = s.changes().take(10).collect();
        assert_eq!(a, dynamic(1).changes().take(10).collect::<Vec<_>>());
        assert_ne!(a, dynamic(2).changes().take(10).collect::<Vec<_>>());
        let times: Vec<_> = a.iter().map(|c| c.at_ns).collect();
        let half = NANOS_PER_SEC / 2;
        assert_eq!(
            times,
            [
                0,
                0,
                half,
                half,
                2 * half,
                2 * half,
                3 * half,
                3 * half,
                4 * half,
                4 * half
            ]
        );
        assert_eq!(s.changes().size_hint(), (usize::MAX, None));
        let fixed = Scenario::parse_str(TWO_NODES, "t.toml").unwrap();
        assert_eq!(fixed.changes().size_hint(), (0, Some(0)));
    }

    #[test]
    fn stream_ends_at_the_end_of_time() {
        let mut s = dynamic(1);
        s.dynamics.as_mut().unwrap().every_ns = u64::MAX / 2 + 1;
        // Rounds at 0 and 2^63; 2^64 does not exist.
        assert_eq!(s.changes().count(), 4);
        s.dynamics.as_mut().unwrap().every_ns = 1;
        assert_eq!(s.topology_at(u64::MAX).links.len(), 2);
    }

    #[test]
    fn live_topology_masks_down_nodes() {
        let s = Scenario::parse_str(TWO_NODES, "t.toml").unwrap();
        let mut live = LiveTopology::new(s.topology.clone());
        live.apply(&Change::NodeDown(1));
        assert!(!live.is_up(1) && live.is_up(0));
        assert!(live.current().links.iter().all(|l| l.rate_bps == 0.0));
        live.apply(&Change::LinkRate {
            link: 0,
            rate_bps: 5.0,
        });
        live.apply(&Change::LinkRate {
            link: 99,
            rate_bps: 5.0,
        }); // ignored
        live.apply(&Change::NodeDown(99)); // ignored
        assert_eq!(live.configured().links[0].rate_bps, 5.0);
        live.apply(&Change::NodeUp(1));
        assert_eq!(live.current().links[0].rate_bps, 5.0);
        assert_eq!(live.current().links[1].rate_bps, 10e6);
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
    fn positions_count_lines_and_characters() {
        let src = Source {
            text: "ab\nçé=x\n",
            origin: "o",
        };
        assert_eq!(src.position(0), (1, 1));
        assert_eq!(src.position(3), (2, 1));
        assert_eq!(src.position(7), (2, 3)); // after two 2-byte characters
        assert_eq!(src.position(4), (2, 2)); // inside a character: no panic
        assert_eq!(src.position(1000), (3, 1));
        assert_eq!(src.line_text(5), "çé=x");
    }

    #[test]
    fn error_rewording_helpers() {
        assert_eq!(table_header("  [[link]] # c"), Some("[[link]]".into()));
        assert_eq!(table_header("[dynamics]"), Some("[dynamics]".into()));
        assert_eq!(table_header("[[oops"), Some("[[oops".into()));
        assert_eq!(table_header("mbps = 1"), None);
        assert_eq!(edit_distance("mbsp", "mbps"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
        let msg = unknown_key_message(
            "latency`, expected one of `from`, `to`, `latency_ms`, `bidirectional`",
        );
        assert_eq!(
            msg,
            "unknown key 'latency' in [[link]] (expected one of from, to, latency_ms, bidirectional); \
             did you mean 'latency_ms'?"
        );
        assert_eq!(
            unknown_key_message("zzz"),
            "unknown key 'zzz' in this table"
        );
        assert_eq!(
            DynamicsKind::from_name("uniform"),
            Some(DynamicsKind::Uniform)
        );
        assert_eq!(DynamicsKind::from_name("Uniform"), None);
    }
}
