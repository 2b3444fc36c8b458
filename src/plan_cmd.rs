//! `netstorm plan`: one planner's policy for a scenario, with its modeled time and the limit.

use anyhow::{bail, Context, Result};
use clap::Args;
use netstorm_controlplane::bounds;
use netstorm_controlplane::network::NetworkModel;
use netstorm_controlplane::planner::{self, PlannerOptions};
use netstorm_controlplane::round_bound;
use netstorm_dataplane::scenario::Scenario;
use serde_json::{json, Map, Value};
use std::fmt::Write as _;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct PlanArgs {
    /// Scenario file (TOML).
    #[arg(long)]
    pub scenario: PathBuf,
    /// Model size in MB (10^6 bytes).
    #[arg(long)]
    pub model_mb: f64,
    /// Planner: packing, paper, mxnet-ps, mlnet, tsengine, ring, mesh, spt.
    #[arg(long, default_value = "packing")]
    pub planner: String,
    /// `paper`: number of roots to keep (default: all).
    #[arg(long)]
    pub roots: Option<usize>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Write the trees as Graphviz.
    #[arg(long)]
    pub dot: Option<PathBuf>,
}

pub fn run(a: &PlanArgs) -> Result<()> {
    if !(a.model_mb.is_finite() && a.model_mb > 0.0) {
        bail!("--model-mb must be a positive number (got {})", a.model_mb);
    }
    let scenario = Scenario::load(&a.scenario)
        .with_context(|| format!("loading scenario {}", a.scenario.display()))?;
    let net = NetworkModel::from_topology(scenario.topology_at(0));
    let bits = a.model_mb * 8e6;
    let opts = PlannerOptions {
        roots: a.roots,
        ..PlannerOptions::default()
    };
    let planner = planner::by_name(&a.planner, &opts)?;
    let plan = planner
        .plan(&net, bits)
        .with_context(|| format!("planner '{}' on {}", a.planner, a.scenario.display()))?;
    let modeled = plan.modeled_time(&net, bits);
    let optimum =
        bounds::fluid_optimum_cached(&net, bits).context("computing the fluid optimum")?;
    let latency = bounds::latency_bound_s(&net);
    let bound = round_bound::round_lower_bound_cached(&net, bits)
        .context("computing the proven round bound")?;
    let topo = &net.topology;
    let name = |v: u16| topo.node_name(v).to_string();
    if a.json {
        let trees: Vec<Value> = plan
            .trees
            .iter()
            .map(|t| {
                let map = |parents: Vec<Option<u16>>| -> Map<String, Value> {
                    parents
                        .iter()
                        .enumerate()
                        .filter_map(|(v, p)| p.map(|p| (name(v as u16), Value::String(name(p)))))
                        .collect()
                };
                json!({
                    "root": name(t.root),
                    "share": t.share,
                    "reduce_parent": map(t.reduce_parent()),
                    "broadcast_parent": map(t.broadcast_parent()),
                    "forward": format!("{:?}", t.forward),
                })
            })
            .collect();
        let out = json!({
            "planner": a.planner,
            "scenario": scenario.name,
            "model_mb": a.model_mb,
            "modeled_s": modeled.total_s,
            "modeled_bandwidth_s": modeled.bandwidth_s,
            "modeled_latency_s": modeled.latency_s,
            "optimum_s": optimum.time_s,
            "latency_bound_s": latency,
            "vs_optimum": modeled.total_s / (optimum.time_s + latency),
            "bound_s": bound.time_s,
            "bound_gap": bound.gap,
            "vs_bound": modeled.total_s / bound.time_s,
            "tree_count": plan.trees.len(),
            "trees": trees,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "planner {} on '{}' for {} MB: {} trees, modeled {:.4} s (bandwidth {:.4} s + latency {:.4} s); fluid optimum {:.4} s + latency bound {:.4} s; ratio {:.3}x",
            a.planner, scenario.name, a.model_mb, plan.trees.len(), modeled.total_s, modeled.bandwidth_s, modeled.latency_s, optimum.time_s, latency,
            modeled.total_s / (optimum.time_s + latency)
        );
        println!(
            "proven round bound {:.4} s (certified; relaxation within {:.2}%); vs bound {:.3}x",
            bound.time_s,
            bound.gap * 100.0,
            modeled.total_s / bound.time_s
        );
        for (i, t) in plan.trees.iter().enumerate() {
            println!(
                "tree {i}: root {} share {:.4} ({:?})",
                name(t.root),
                t.share,
                t.forward
            );
            let edges = |parents: Vec<Option<u16>>, up: bool| -> String {
                parents
                    .iter()
                    .enumerate()
                    .filter_map(|(v, p)| {
                        p.map(|p| {
                            if up {
                                format!("{}->{}", name(v as u16), name(p))
                            } else {
                                format!("{}->{}", name(p), name(v as u16))
                            }
                        })
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            println!("  reduce:    {}", edges(t.reduce_parent(), true));
            println!("  broadcast: {}", edges(t.broadcast_parent(), false));
            for m in &t.multipath {
                let routes: Vec<String> = m
                    .routes
                    .iter()
                    .map(|(r, w)| {
                        let hops: Vec<String> = r.iter().map(|&h| name(h)).collect();
                        format!("{} {:.0}%", hops.join("->"), w * 100.0)
                    })
                    .collect();
                println!(
                    "  multipath ({}): {}",
                    if m.reduce { "reduce" } else { "broadcast" },
                    routes.join(" | ")
                );
            }
        }
    }
    if let Some(path) = &a.dot {
        let mut s = String::from("digraph netstorm {\n  rankdir=LR;\n");
        for (i, t) in plan.trees.iter().enumerate() {
            let _ = writeln!(
                s,
                "  subgraph cluster_{i} {{\n    label=\"tree {i}: root {} share {:.3}\";",
                name(t.root),
                t.share
            );
            for (v, p) in t.reduce_parent().iter().enumerate() {
                if let Some(p) = p {
                    let _ = writeln!(
                        s,
                        "    \"{0}.{i}\" -> \"{1}.{i}\" [color=blue];",
                        name(v as u16),
                        name(*p)
                    );
                }
            }
            for (v, p) in t.broadcast_parent().iter().enumerate() {
                if let Some(p) = p {
                    let _ = writeln!(
                        s,
                        "    \"{1}.{i}\" -> \"{0}.{i}\" [color=red, style=dashed];",
                        name(v as u16),
                        name(*p)
                    );
                }
            }
            for v in 0..topo.node_count() {
                let _ = writeln!(s, "    \"{0}.{i}\" [label=\"{0}\"];", name(v as u16));
            }
            s.push_str("  }\n");
        }
        s.push_str("}\n");
        std::fs::write(path, s).with_context(|| format!("writing {}", path.display()))?;
        eprintln!(
            "wrote {} (blue: reduce, red dashed: broadcast)",
            path.display()
        );
    }
    Ok(())
}
