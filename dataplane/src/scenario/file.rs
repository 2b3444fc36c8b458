//! The scenario file as serde sees it (every value `Spanned`, so errors can name its line) and
//! its translation into a checked [`Scenario`]: unknown keys and bad values are errors naming
//! the file, the line and the key (the wording is [`crate::toml_error`]'s).

use super::{
    Change, Dynamics, DynamicsKind, Event, Scenario, ScenarioError, BPS_PER_MBPS, MAX_NODES,
    NANOS_PER_MS,
};
use crate::toml_error::{KeyContext, Located, Tables, TomlSource};
use crate::topology::{Link, Node, Topology};
use crate::{NodeId, NANOS_PER_SEC};
use serde::Deserialize;
use std::collections::HashMap;
use std::ops::Range;
use toml::Spanned;

/// Parses and validates scenario text; `origin` names the file in errors.
pub(super) fn parse(text: &str, origin: &str) -> Result<Scenario, ScenarioError> {
    let src = Source { text, origin };
    let raw: RawScenario = toml::from_str(text).map_err(|e| src.toml_error(&e))?;
    src.build(raw)
}

// The file format as serde sees it. Every value is `Spanned` so errors can name its line.

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

/// What error messages may say about the format's tables: each recognised in serde's
/// "expected one of" lists by a key only it has, serde's internal struct names and what to say
/// instead, which tables are arrays.
const TABLES: Tables = Tables {
    by_key: &[
        ("`at_s`", "in [[event]]"),
        ("`every_s`", "in [dynamics]"),
        ("`ingress_mbps`", "in [[node]]"),
        ("`bidirectional`", "in [[link]]"),
        ("`dynamics`", "at the top level"),
    ],
    struct_names: &[
        ("struct RawScenario", "a scenario table"),
        ("struct RawNode", "a [[node]] table"),
        ("struct RawLink", "a [[link]] table"),
        ("struct RawDynamics", "a [dynamics] table"),
        ("struct RawEvent", "an [[event]] table"),
    ],
    arrays: &["node", "link", "event"],
    singles: &["dynamics"],
};

/// The text being parsed and its name, for turning byte spans into messages.
struct Source<'a> {
    text: &'a str,
    origin: &'a str,
}

impl<'a> Source<'a> {
    fn toml(&self) -> TomlSource<'a> {
        TomlSource::new(self.text, self.origin)
    }

    fn line(&self, span: Range<usize>) -> usize {
        self.toml().line(span)
    }

    fn invalid(&self, span: Range<usize>, key: &str, message: String) -> ScenarioError {
        ScenarioError::Invalid {
            file: self.origin.to_string(),
            line: Some(self.line(span)),
            key: key.to_string(),
            message,
        }
    }

    /// A TOML or serde error, reworded to name the key and the table.
    fn toml_error(&self, err: &toml::de::Error) -> ScenarioError {
        let Located {
            line,
            column,
            message,
        } = self.toml().locate(err, KeyContext::Table(TABLES));
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
