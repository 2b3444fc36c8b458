//! The shipped scenario files load and say what the data says; bad files are rejected with
//! messages naming the file, the line and the key; no input makes the parser panic.

use netstorm_dataplane::scenario::{Change, LiveTopology, Scenario, ScenarioError, TimedChange};
use netstorm_dataplane::topology::Topology;
use netstorm_dataplane::NANOS_PER_SEC;
use proptest::prelude::*;
use std::path::PathBuf;

const SHIPPED: &[&str] = &[
    "paper9-static100.toml",
    "paper9-static500.toml",
    "paper9-dynamic.toml",
    "aws11.toml",
    "aws10-latency.toml",
];

fn scenario_path(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios")
        .join(file)
}

fn load(file: &str) -> Scenario {
    Scenario::load(&scenario_path(file)).unwrap_or_else(|e| panic!("{e}"))
}

fn link_between<'a>(
    topo: &'a Topology,
    from: &str,
    to: &str,
) -> &'a netstorm_dataplane::topology::Link {
    let (a, b) = (topo.node_id(from).unwrap(), topo.node_id(to).unwrap());
    topo.link(a, b)
        .unwrap_or_else(|| panic!("no link {from} -> {to}"))
}

#[test]
fn every_shipped_file_loads_and_validates() {
    for file in SHIPPED {
        let s = load(file);
        assert_eq!(format!("{}.toml", s.name), *file);
        s.validate().unwrap();
        assert!(s.topology.is_strongly_connected(), "{file}");
    }
    // Every .toml in scenarios/ is a valid scenario, not only the ones listed above.
    let dir = scenario_path("");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

#[test]
fn paper9_static_files() {
    for (file, mbps) in [
        ("paper9-static100.toml", 100.0),
        ("paper9-static500.toml", 500.0),
    ] {
        let s = load(file);
        assert_eq!(s.topology.node_count(), 9);
        assert_eq!(s.topology.links.len(), 26);
        assert!(s.dynamics.is_none() && s.events.is_empty());
        let names: Vec<_> = s.topology.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(
            names,
            ["dc1", "dc2", "dc3", "dc4", "dc5", "dc6", "dc7", "dc8", "dc9"]
        );
        for l in &s.topology.links {
            assert_eq!(l.rate_bps, mbps * 1e6);
            assert_eq!(l.latency_ns, 0);
            assert_eq!(l.loss, 0.0);
            assert!(
                s.topology.link(l.to, l.from).is_some(),
                "every link is bidirectional"
            );
        }
        link_between(&s.topology, "dc6", "dc9");
        link_between(&s.topology, "dc9", "dc6");
        assert!(s.topology.link(0, 8).is_none());
        // No dynamics: the topology never changes.
        assert_eq!(s.changes().count(), 0);
        assert_eq!(s.topology_at(u64::MAX), s.topology);
    }
}

#[test]
fn paper9_dynamic_file() {
    let s = load("paper9-dynamic.toml");
    assert_eq!(s.topology.node_count(), 9);
    assert_eq!(s.topology.links.len(), 26);
    let d = s.dynamics.expect("dynamics");
    assert_eq!(d.every_ns, 180 * NANOS_PER_SEC);
    assert_eq!((d.min_bps, d.max_bps, d.seed), (20e6, 155e6, 1));
    // The same links as the static file.
    let fixed = load("paper9-static100.toml");
    assert_eq!(s.topology, fixed.topology);
}

#[test]
fn aws11_file() {
    let s = load("aws11.toml");
    assert_eq!(s.topology.node_count(), 11);
    assert_eq!(s.topology.links.len(), 110);
    let names: Vec<_> = s.topology.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(
        names,
        ["VA", "CA", "OR", "IE", "FRA", "TYO", "SEL", "SIN", "SYD", "BOM", "GRU"]
    );
    assert_eq!(link_between(&s.topology, "VA", "CA").rate_bps, 4360e6);
    // Row = source: the matrix is not symmetric.
    assert_eq!(link_between(&s.topology, "VA", "IE").rate_bps, 4320e6);
    assert_eq!(link_between(&s.topology, "IE", "VA").rate_bps, 4310e6);
    assert_eq!(link_between(&s.topology, "SIN", "GRU").rate_bps, 1930e6);
    for l in &s.topology.links {
        assert_eq!(l.latency_ns, 0);
    }
    assert!(s
        .topology
        .nodes
        .iter()
        .all(|n| n.egress_bps.is_none() && n.ingress_bps.is_none()));
}

#[test]
fn aws10_latency_file() {
    let s = load("aws10-latency.toml");
    assert_eq!(s.topology.node_count(), 10);
    assert_eq!(s.topology.links.len(), 90);
    let ov = link_between(&s.topology, "Oregon", "Virginia");
    assert_eq!(ov.latency_ns, 67_000_000);
    assert_eq!(ov.rate_bps, 790e6);
    let vo = link_between(&s.topology, "Virginia", "Oregon");
    assert_eq!((vo.latency_ns, vo.rate_bps), (67_000_000, 790e6));
    assert_eq!(
        link_between(&s.topology, "Ireland", "Frankfurt").latency_ns,
        24_000_000
    );
    assert_eq!(
        link_between(&s.topology, "Sydney", "London").rate_bps,
        326e6
    );
}

// ---------------------------------------------------------------------------------------
// Dynamics and events.
// ---------------------------------------------------------------------------------------

fn with_seed(seed: u64) -> Scenario {
    let mut s = load("paper9-dynamic.toml");
    s.dynamics.as_mut().unwrap().seed = seed;
    s
}

#[test]
fn dynamics_stream_is_deterministic() {
    let a: Vec<_> = with_seed(1).changes().take(100).collect();
    let b: Vec<_> = load("paper9-dynamic.toml").changes().take(100).collect();
    assert_eq!(a, b);
    let c: Vec<_> = with_seed(2).changes().take(100).collect();
    assert_ne!(a, c);
    // A clone continues where the original is.
    let mut stream = with_seed(1).changes();
    stream.nth(30);
    let clone = stream.clone();
    assert_eq!(
        stream.take(50).collect::<Vec<_>>(),
        clone.take(50).collect::<Vec<_>>()
    );
}

#[test]
fn redraws_lie_in_range_at_multiples_of_the_period() {
    let s = load("paper9-dynamic.toml");
    let d = s.dynamics.unwrap();
    let n = s.topology.links.len();
    let changes: Vec<_> = s.changes().take(n * 20).collect();
    for (i, tc) in changes.iter().enumerate() {
        // Round i / n, link i % n, in topology.links order, starting at t = 0.
        assert_eq!(tc.at_ns, (i / n) as u64 * 180 * NANOS_PER_SEC);
        match tc.change {
            Change::LinkRate { link, rate_bps } => {
                assert_eq!(link, i % n);
                assert!((20e6..=155e6).contains(&rate_bps), "{rate_bps}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // Not all the same, and spread over the range.
    let rates: Vec<f64> = changes
        .iter()
        .map(|tc| match tc.change {
            Change::LinkRate { rate_bps, .. } => rate_bps,
            _ => unreachable!(),
        })
        .collect();
    let min = rates.iter().copied().fold(f64::INFINITY, f64::min);
    let max = rates.iter().copied().fold(0.0, f64::max);
    assert!(min < 30e6 && max > 145e6, "{min} {max}");
    // topology_at agrees with the stream: the file's rates are overridden from t = 0.
    for round in [0u64, 1, 7, 19] {
        let at = round * d.every_ns + 5;
        let topo = s.topology_at(at);
        for (link, l) in topo.links.iter().enumerate() {
            assert_eq!(l.rate_bps, rates[round as usize * n + link]);
        }
        assert_eq!(
            topo.links.iter().map(|l| l.rate_bps).collect::<Vec<_>>(),
            d.redraw_rates(round, n)
        );
    }
    assert_ne!(s.topology_at(0), s.topology);
}

const EVENTS: &str = r#"
name = "events"
[[node]]
name = "a"
[[node]]
name = "b"
[[node]]
name = "c"
[[link]]
from = "a"
to = "b"
mbps = 100
bidirectional = true
[[link]]
from = "b"
to = "c"
mbps = 50
latency_ms = 10
[[event]]
at_s = 60
from = "a"
to = "b"
mbps = 30
latency_ms = 2.5
bidirectional = true
[[event]]
at_s = 30
down = "c"
[[event]]
at_s = 90
up = "c"
[[event]]
at_s = 120
from = "b"
to = "c"
loss = 0.01
mbps = 0
"#;

#[test]
fn topology_at_applies_events() {
    let s = Scenario::parse_str(EVENTS, "events.toml").unwrap();
    assert_eq!(s.topology.links.len(), 3);
    // Events are sorted by time.
    let times: Vec<_> = s.events.iter().map(|e| e.at_ns / NANOS_PER_SEC).collect();
    assert_eq!(times, [30, 60, 90, 120]);
    let sec = |t: u64| t * NANOS_PER_SEC;
    let rate = |t: u64, from: &str, to: &str| link_between(&s.topology_at(t), from, to).rate_bps;

    assert_eq!(s.topology_at(0), s.topology);
    assert_eq!(s.topology_at(sec(30) - 1), s.topology);
    // dc "c" down at 30 s: its link carries nothing.
    assert_eq!(rate(sec(30), "b", "c"), 0.0);
    assert_eq!(rate(sec(30), "a", "b"), 100e6);
    // At 60 s: a <-> b at 30 Mbit/s and 2.5 ms, both directions.
    let t60 = s.topology_at(sec(60));
    for (x, y) in [("a", "b"), ("b", "a")] {
        let l = link_between(&t60, x, y);
        assert_eq!((l.rate_bps, l.latency_ns), (30e6, 2_500_000));
    }
    assert_eq!(rate(sec(60), "b", "c"), 0.0);
    // "c" back at 90 s with its configured values.
    let l = link_between(&s.topology_at(sec(90)), "b", "c").clone();
    assert_eq!((l.rate_bps, l.latency_ns, l.loss), (50e6, 10_000_000, 0.0));
    // 120 s: b -> c cut (mbps = 0 is allowed in events) and lossy.
    let l = link_between(&s.topology_at(sec(120)), "b", "c").clone();
    assert_eq!((l.rate_bps, l.loss), (0.0, 0.01));
    assert_eq!(s.topology_at(u64::MAX), s.topology_at(sec(120)));

    // Without dynamics the stream is finite, time-ordered, and folds to topology_at.
    let changes: Vec<_> = s.changes().collect();
    assert_eq!(changes.len(), 1 + 4 + 1 + 2);
    assert!(changes.windows(2).all(|w| w[0].at_ns <= w[1].at_ns));
    assert_eq!(changes[0].change, Change::NodeDown(2));
    assert_fold_matches(&s, &changes);
}

#[test]
fn events_and_redraws_interleave() {
    let text = format!(
        "{EVENTS}\n[dynamics]\nkind = \"uniform\"\nevery_s = 45\nmin_mbps = 1\nmax_mbps = 2\n\
         [[event]]\nat_s = 45\nfrom = \"a\"\nto = \"b\"\nmbps = 500\n"
    );
    let s = Scenario::parse_str(&text, "mixed.toml").unwrap();
    let changes: Vec<_> = s.changes().take(40).collect();
    assert!(changes.windows(2).all(|w| w[0].at_ns <= w[1].at_ns));
    // At 45 s the redraw comes first, then the event, which therefore wins.
    let at45: Vec<_> = changes
        .iter()
        .filter(|c| c.at_ns == 45 * NANOS_PER_SEC)
        .collect();
    assert_eq!(at45.len(), 3 + 1);
    assert_eq!(
        at45[3].change,
        Change::LinkRate {
            link: 0,
            rate_bps: 500e6
        }
    );
    let sec = NANOS_PER_SEC;
    assert_eq!(s.topology_at(45 * sec).links[0].rate_bps, 500e6);
    // Until the next redraw at 90 s; the 60 s event (30 Mbit/s) wins over the 45 s redraw.
    assert_eq!(s.topology_at(60 * sec).links[0].rate_bps, 30e6);
    let at90 = s.topology_at(90 * sec).links[0].rate_bps;
    assert!((1e6..=2e6).contains(&at90));
    let stream: Vec<_> = s.changes().take_while(|c| c.at_ns <= 400 * sec).collect();
    assert_fold_matches(&s, &stream);
}

/// Applying `stream` (a prefix of `s.changes()`) change by change gives `s.topology_at(t)`
/// once all the changes at `t` are applied.
fn assert_fold_matches(s: &Scenario, stream: &[TimedChange]) {
    let mut live = LiveTopology::new(s.topology.clone());
    for (i, tc) in stream.iter().enumerate() {
        live.apply(&tc.change);
        if !matches!(stream.get(i + 1), Some(next) if next.at_ns == tc.at_ns) {
            assert_eq!(
                live.current(),
                s.topology_at(tc.at_ns),
                "at {} ns",
                tc.at_ns
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Bad input.
// ---------------------------------------------------------------------------------------

const GOOD: &str = r#"name = "good"

[[node]]
name = "dc1"

[[node]]
name = "dc2"

[[link]]
from = "dc1"
to = "dc2"
mbps = 100
bidirectional = true
"#;

/// Parses `text` as `scenarios/bad.toml`, expects an error and checks its message names the
/// file, `line` and `key`; returns the message.
fn expect_error(text: &str, line: usize, key: &str) -> String {
    let err = Scenario::parse_str(text, "scenarios/bad.toml").expect_err("must be rejected");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("scenarios/bad.toml:{line}:")),
        "{msg}"
    );
    assert!(msg.contains(&format!("'{key}'")), "{msg}");
    msg
}

#[test]
fn good_text_parses() {
    let s = Scenario::parse_str(GOOD, "good.toml").unwrap();
    assert_eq!(s.topology.links.len(), 2);
}

#[test]
fn unknown_key_in_link() {
    let text = GOOD.replace("mbps = 100", "mbsp = 100");
    let msg = expect_error(&text, 12, "mbsp");
    assert!(
        msg.starts_with("scenarios/bad.toml:12:1: unknown key 'mbsp' in [[link]]"),
        "{msg}"
    );
    assert!(msg.contains("expected one of from, to, mbps"), "{msg}");
    assert!(msg.contains("did you mean 'mbps'"), "{msg}");
    assert!(matches!(
        Scenario::parse_str(&text, "x").unwrap_err(),
        ScenarioError::Parse {
            line: 12,
            column: 1,
            ..
        }
    ));
}

#[test]
fn unknown_keys_elsewhere() {
    let msg = expect_error(
        &GOOD.replace("name = \"dc2\"", "name = \"dc2\"\negres_mbps = 5"),
        8,
        "egres_mbps",
    );
    assert!(msg.contains("in [[node]]"), "{msg}");
    let msg = expect_error(
        &format!("{GOOD}[dynamics]\nkind = \"uniform\"\nevery = 3\n"),
        16,
        "every",
    );
    assert!(msg.contains("in [dynamics]"), "{msg}");
    let msg = expect_error(
        &format!("{GOOD}[[event]]\nat_s = 1\ndown = \"dc1\"\ncolour = 1\n"),
        17,
        "colour",
    );
    assert!(msg.contains("in [[event]]"), "{msg}");
    let msg = expect_error(&format!("colour = 1\n{GOOD}"), 1, "colour");
    assert!(
        msg.contains("unknown key 'colour' at the top level"),
        "{msg}"
    );
    let msg = expect_error(&format!("{GOOD}[[links]]\nfrom = 1\n"), 14, "links");
    assert!(msg.contains("top level"), "{msg}");
}

#[test]
fn unknown_node_in_link() {
    let text = GOOD.replace("to = \"dc2\"", "to = \"dc7\"");
    let msg = expect_error(&text, 11, "to");
    assert!(msg.contains("unknown node 'dc7'"), "{msg}");
    assert!(msg.contains("dc1, dc2"), "{msg}");
    assert!(matches!(
        Scenario::parse_str(&text, "x").unwrap_err(),
        ScenarioError::Invalid { line: Some(11), ref key, .. } if key == "to"
    ));
}

#[test]
fn loss_out_of_range() {
    let msg = expect_error(
        &GOOD.replace("mbps = 100", "mbps = 100\nloss = 1.5"),
        13,
        "loss",
    );
    assert!(msg.contains("1.5") && msg.contains("[0, 1)"), "{msg}");
    expect_error(
        &GOOD.replace("mbps = 100", "mbps = 100\nloss = 1.0"),
        13,
        "loss",
    );
    expect_error(
        &GOOD.replace("mbps = 100", "mbps = 100\nloss = -0.1"),
        13,
        "loss",
    );
    expect_error(
        &GOOD.replace("mbps = 100", "mbps = 100\nloss = nan"),
        13,
        "loss",
    );
}

#[test]
fn zero_negative_nan_and_infinite_rates() {
    for bad in ["0", "-5", "nan", "inf", "-inf", "1e308", "0.0"] {
        let msg = expect_error(
            &GOOD.replace("mbps = 100", &format!("mbps = {bad}")),
            12,
            "mbps",
        );
        assert!(msg.contains("[[link]] #1"), "{msg}");
    }
    let caps = GOOD.replace("name = \"dc1\"", "name = \"dc1\"\ningress_mbps = 0");
    expect_error(&caps, 5, "ingress_mbps");
    expect_error(&GOOD.replace("mbps = 100", "mbps = \"fast\""), 12, "mbps");
}

#[test]
fn missing_name() {
    let text = GOOD.replace("name = \"good\"\n", "");
    let msg = expect_error(&text, 1, "name");
    assert!(
        msg.contains("missing required key 'name' at the top level"),
        "{msg}"
    );
    // A missing key in a table points at the table header.
    let msg = expect_error(&GOOD.replace("mbps = 100\n", ""), 9, "mbps");
    assert!(
        msg.contains("missing required key 'mbps' in [[link]]"),
        "{msg}"
    );
    // Empty names.
    expect_error(&GOOD.replace("name = \"good\"", "name = \"\""), 1, "name");
    expect_error(&GOOD.replace("name = \"dc2\"", "name = \" \""), 7, "name");
}

#[test]
fn bad_toml_syntax() {
    let text = GOOD.replace("[[link]]", "[[link]");
    let err = Scenario::parse_str(&text, "scenarios/bad.toml").unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("scenarios/bad.toml:9:"), "{msg}");
    assert!(!msg.contains('\n'), "one line: {msg}");
    assert!(matches!(err, ScenarioError::Parse { line: 9, .. }));
    let err =
        Scenario::parse_str("name = \"x\"\nname = \"y\"\n", "scenarios/bad.toml").unwrap_err();
    assert!(
        err.to_string().starts_with("scenarios/bad.toml:2:"),
        "{err}"
    );
    let msg = Scenario::parse_str("name = \n", "f.toml")
        .unwrap_err()
        .to_string();
    assert!(msg.starts_with("f.toml:1:"), "{msg}");
}

#[test]
fn other_validation_errors() {
    // No nodes.
    let err = Scenario::parse_str("name = \"x\"\n", "scenarios/bad.toml").unwrap_err();
    assert!(
        err.to_string().contains("scenarios/bad.toml") && err.to_string().contains("'node'"),
        "{err}"
    );
    // Duplicate node names.
    let msg = expect_error(&GOOD.replace("name = \"dc2\"", "name = \"dc1\""), 7, "name");
    assert!(
        msg.contains("duplicate node name 'dc1'") && msg.contains("line 4"),
        "{msg}"
    );
    // Duplicate ordered pair, directly and through bidirectional.
    let dup = format!("{GOOD}\n[[link]]\nfrom = \"dc2\"\nto = \"dc1\"\nmbps = 5\n");
    let msg = expect_error(&dup, 15, "to");
    assert!(
        msg.contains("dc2 -> dc1") && msg.contains("line 9"),
        "{msg}"
    );
    // Self-loop.
    expect_error(&GOOD.replace("to = \"dc2\"", "to = \"dc1\""), 11, "to");
    // Unknown node in the `from` of a link.
    expect_error(
        &GOOD.replace("from = \"dc1\"", "from = \"dc0\""),
        10,
        "from",
    );
    // Negative latency.
    expect_error(
        &GOOD.replace("mbps = 100", "mbps = 100\nlatency_ms = -1"),
        13,
        "latency_ms",
    );
    // Dynamics.
    let dynamics = |body: &str| format!("{GOOD}\n[dynamics]\n{body}");
    expect_error(
        &dynamics("kind = \"gauss\"\nevery_s = 1\nmin_mbps = 1\nmax_mbps = 2\n"),
        16,
        "kind",
    );
    expect_error(
        &dynamics("kind = \"uniform\"\nevery_s = 0\nmin_mbps = 1\nmax_mbps = 2\n"),
        17,
        "every_s",
    );
    expect_error(
        &dynamics("kind = \"uniform\"\nevery_s = 1e-12\nmin_mbps = 1\nmax_mbps = 2\n"),
        17,
        "every_s",
    );
    expect_error(
        &dynamics("kind = \"uniform\"\nevery_s = 1\nmin_mbps = 3\nmax_mbps = 2\n"),
        19,
        "max_mbps",
    );
    expect_error(
        &dynamics("kind = \"uniform\"\nevery_s = 1\nmin_mbps = 0\nmax_mbps = 2\n"),
        18,
        "min_mbps",
    );
    expect_error(
        &dynamics("kind = \"uniform\"\nevery_s = 1\nmin_mbps = 1\nmax_mbps = 2\nseed = -1\n"),
        20,
        "seed",
    );
    expect_error(
        &dynamics("every_s = 1\nmin_mbps = 1\nmax_mbps = 2\n"),
        15,
        "kind",
    );
    // Events.
    let event = |body: &str| format!("{GOOD}\n[[event]]\n{body}");
    expect_error(&event("at_s = -1\ndown = \"dc1\"\n"), 16, "at_s");
    expect_error(&event("at_s = 1\ndown = \"dc9\"\n"), 17, "down");
    expect_error(&event("at_s = 1\nup = \"dc9\"\n"), 17, "up");
    expect_error(
        &event("at_s = 1\nfrom = \"dc1\"\nto = \"dc5\"\nmbps = 1\n"),
        18,
        "to",
    );
    expect_error(
        &event("at_s = 1\nfrom = \"dc1\"\nto = \"dc2\"\nmbps = -1\n"),
        19,
        "mbps",
    );
    expect_error(
        &event("at_s = 1\nfrom = \"dc1\"\nto = \"dc2\"\nloss = 1\n"),
        19,
        "loss",
    );
    expect_error(
        &event("at_s = 1\nfrom = \"dc1\"\nto = \"dc2\"\n"),
        15,
        "event",
    );
    expect_error(&event("at_s = 1\n"), 15, "event");
    expect_error(&event("at_s = 1\nfrom = \"dc1\"\nmbps = 3\n"), 17, "to");
    expect_error(&event("at_s = 1\ndown = \"dc1\"\nup = \"dc1\"\n"), 17, "up");
    expect_error(&event("at_s = 1\ndown = \"dc1\"\nmbps = 3\n"), 18, "mbps");
    expect_error(&event("down = \"dc1\"\n"), 15, "at_s");
    // A link event on a one-way link asking for both directions.
    let one_way = GOOD.replace("bidirectional = true\n", "");
    let text = format!("{one_way}\n[[event]]\nat_s = 1\nfrom = \"dc1\"\nto = \"dc2\"\nmbps = 3\nbidirectional = true\n");
    expect_error(&text, 17, "bidirectional");
    // `[link]` instead of `[[link]]` gets a hint.
    let msg = expect_error(&GOOD.replace("[[link]]", "[link]"), 9, "link");
    assert!(msg.contains("[[link]]"), "{msg}");
}

#[test]
fn load_names_the_file() {
    let missing = scenario_path("does-not-exist.toml");
    let err = Scenario::load(&missing).unwrap_err();
    assert!(matches!(err, ScenarioError::Io { .. }));
    assert!(err.to_string().contains("does-not-exist.toml"), "{err}");

    let dir = std::env::temp_dir().join(format!("netstorm-scenario-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("typo.toml");
    std::fs::write(&path, GOOD.replace("mbps = 100", "mbsp = 100")).unwrap();
    let msg = Scenario::load(&path).unwrap_err().to_string();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        msg.starts_with(&format!("{}:12:1: unknown key 'mbsp'", path.display())),
        "{msg}"
    );
}

// ---------------------------------------------------------------------------------------
// No input panics.
// ---------------------------------------------------------------------------------------

/// Exercises a parsed scenario the way consumers do; must not panic either.
fn exercise(s: &Scenario) {
    s.validate().unwrap();
    let changes: Vec<_> = s.changes().take(300).collect();
    assert!(changes.windows(2).all(|w| w[0].at_ns <= w[1].at_ns));
    for t in [
        0,
        1,
        59 * NANOS_PER_SEC,
        10_000 * NANOS_PER_SEC,
        u64::MAX / 2,
        u64::MAX,
    ] {
        let topo = s.topology_at(t);
        assert_eq!(topo.links.len(), s.topology.links.len());
    }
}

/// Lines a scenario file is made of, valid and invalid.
fn scenario_line() -> impl Strategy<Value = String> {
    let header = prop::sample::select(vec![
        "[[node]]",
        "[[link]]",
        "[dynamics]",
        "[[event]]",
        "[node]",
        "[[dynamics]]",
        "[[link]",
    ])
    .prop_map(str::to_string);
    let key = prop::sample::select(vec![
        "name",
        "from",
        "to",
        "mbps",
        "latency_ms",
        "loss",
        "bidirectional",
        "kind",
        "every_s",
        "min_mbps",
        "max_mbps",
        "seed",
        "at_s",
        "down",
        "up",
        "egress_mbps",
        "ingress_mbps",
        "x",
    ]);
    let value = prop_oneof![
        prop::sample::select(vec![
            "\"dc1\"",
            "\"dc2\"",
            "\"dc3\"",
            "\"\"",
            "\"uniform\"",
            "true",
            "false",
            "0",
            "-1",
            "1e-12",
            "0.5",
            "1",
            "1e308",
            "nan",
            "inf",
            "-inf",
            "9223372036854775807",
            "[1, 2]",
            "{ a = 1 }",
            "\"é\"",
            "1979-05-27",
        ])
        .prop_map(str::to_string),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        any::<i64>().prop_map(|i| i.to_string()),
    ];
    prop_oneof![
        header,
        (key, value).prop_map(|(k, v)| format!("{k} = {v}")),
        "\\PC{0,12}"
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_text_never_panics(text in "\\PC{0,300}") {
        if let Ok(s) = Scenario::parse_str(&text, "fuzz.toml") {
            exercise(&s);
        }
    }

    #[test]
    fn random_scenario_lines_never_panic(lines in prop::collection::vec(scenario_line(), 0..40)) {
        let text = lines.join("\n");
        match Scenario::parse_str(&text, "fuzz.toml") {
            Ok(s) => exercise(&s),
            Err(e) => prop_assert!(e.to_string().starts_with("fuzz.toml"), "{}", e),
        }
    }

    #[test]
    fn mutated_shipped_files_never_panic(
        file in prop::sample::select(SHIPPED),
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..4, any::<char>()), 1..6),
    ) {
        let original = std::fs::read_to_string(scenario_path(file)).unwrap();
        let mut chars: Vec<char> = original.chars().collect();
        for (at, op, c) in edits {
            let i = at.index(chars.len().max(1)).min(chars.len());
            match op {
                0 => chars.insert(i, c),
                1 if i < chars.len() => { chars.remove(i); }
                2 if i < chars.len() => chars[i] = c,
                // Swap in a character that is meaningful to TOML.
                _ => chars.insert(i, ['=', '[', ']', '"', '\n', '#', '0', '-', '.'][c as usize % 9]),
            }
        }
        let text: String = chars.into_iter().collect();
        match Scenario::parse_str(&text, "mutated.toml") {
            Ok(s) => exercise(&s),
            Err(e) => prop_assert!(e.to_string().starts_with("mutated.toml"), "{}", e),
        }
    }
}
