//! `netstorm compare` / `netstorm demo`: every strategy through the same engine on the same
//! emulated WAN, side by side, with the physical limit beside them.

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use netstorm_controlplane::bounds;
use netstorm_controlplane::experiment::{
    self, ExperimentConfig, Knowledge, LearnedConfig, StrategyResult,
};
use netstorm_controlplane::models::ModelProfile;
use netstorm_controlplane::network::NetworkModel;
use netstorm_controlplane::planner::{self, Planner, PlannerOptions};
use netstorm_controlplane::round_bound;
use netstorm_dataplane::scenario::Scenario;
use netstorm_dataplane::wire::PayloadType;
use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

#[derive(Args, Debug, Clone)]
pub struct CompareArgs {
    /// Scenario file (TOML; see scenarios/).
    #[arg(long)]
    pub scenario: PathBuf,
    /// Model profile: alexnet, resnet50, mobilenet, vgg16.
    #[arg(
        long,
        conflicts_with = "model_mb",
        required_unless_present = "model_mb"
    )]
    pub model: Option<String>,
    /// Synthetic model of this many MB (10^6 bytes) of f32 gradients.
    #[arg(long)]
    pub model_mb: Option<f64>,
    /// Synchronization rounds per strategy.
    #[arg(long, default_value_t = 5)]
    pub rounds: u32,
    /// Compute time between rounds, milliseconds of emulated time.
    #[arg(long, default_value_t = 0.0)]
    pub compute_ms: f64,
    /// Comma-separated strategies (default: all). See `--strategies help`.
    #[arg(long, value_delimiter = ',')]
    pub strategies: Option<Vec<String>>,
    /// Write results as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Draw round times as SVG.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Seed of the emulator (loss) and randomized planners.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Gradient bytes per segment (one datagram); 1392 fits a 1500-byte MTU with the
    /// 64-byte header and the 16-byte tag.
    #[arg(long, default_value_t = 1392)]
    pub segment_bytes: usize,
    /// Strategies run in parallel (default: available cores, at most 2).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// TSEngine's probability of exploiting the best known peer.
    #[arg(long, default_value_t = 0.9)]
    pub greed: f64,
    /// No progress bars.
    #[arg(long)]
    pub no_progress: bool,
    /// Plan from the scenario's true current rates (a reference point) instead of what the
    /// control plane learns from telemetry and probes.
    #[arg(long)]
    pub oracle: bool,
    /// Payload type on the wire: f32, bf16 or f16 (tree nodes aggregate in f32 whatever it
    /// is). A 16-bit type also runs every strategy in f32 and prints the two side by side.
    #[arg(long, default_value = "f32")]
    pub wire: PayloadType,
    #[arg(skip)]
    pub demo: bool,
}

/// One strategy of the comparison: display name, planner, and where it deviates from the
/// system it imitates.
struct Strategy {
    name: &'static str,
    planner: Box<dyn Planner>,
    note: &'static str,
}

const STRATEGY_NAMES: &[&str] = &[
    "mxnet-ps",
    "mlnet",
    "tsengine",
    "ring",
    "mesh",
    "spt",
    "netstorm-paper",
    "netstorm-paper-mp",
    "netstorm-packing",
];

fn strategies(names: &[String], opts: &PlannerOptions) -> Result<Vec<Strategy>> {
    let mut out = Vec::new();
    for name in names {
        let (planner_name, note) = match name.as_str() {
            "mxnet-ps" => ("mxnet-ps", "ps-lite key sharding, a server per DC; keys are store-and-forward as in ps-lite, segments pipeline over relays"),
            "mlnet" => ("mlnet", "regular fan-out-2 tree in index order, bandwidth-blind; segments pipeline"),
            "tsengine" => ("tsengine", "online greedy schedule simulated offline on known rates; children send concurrently"),
            "ring" => ("ring", "ring all-reduce as n chain trees over a high-capacity ring"),
            "mesh" => ("mesh", "direct reduce-scatter/all-gather, shards proportional to node capacity"),
            "spt" => ("spt", "single root, shortest-path trees"),
            "netstorm-paper" => ("paper", "the paper's FAPT planner (Dijkstra instead of path enumeration); run on our pipelined engine"),
            "netstorm-paper-mp" => ("paper+mp2", "the paper's FAPT + up to 2 auxiliary relay routes per tree edge, split by route rate; a split is kept only where it lowers the modeled round time"),
            "netstorm-packing" => ("packing", "ours: multiplicative-weights tree packing + share LP"),
            other => bail!("unknown strategy '{other}' (known: {})", STRATEGY_NAMES.join(", ")),
        };
        out.push(Strategy {
            name: STRATEGY_NAMES
                .iter()
                .find(|&&s| s == name)
                .copied()
                .expect("matched"),
            planner: planner::by_name(planner_name, opts)?,
            note,
        });
    }
    Ok(out)
}

/// A finished strategy run and its wall time in seconds.
type StrategyOutcome = Result<(StrategyResult, f64)>;

#[derive(Debug, Serialize)]
struct JsonResult {
    strategy: String,
    round_s_mean: f64,
    round_s_p50: f64,
    round_s_p99: f64,
    vs_optimum: f64,
    /// Mean round time / mean proven round bound of the rounds' networks
    /// (`round_bound`: bandwidth and latency together).
    vs_bound: f64,
    speedup_vs_mxnet_ps: Option<f64>,
    wan_bytes: u64,
    policies_installed: u32,
    retransmits: u64,
    /// Next-round packets dropped for want of room in the nodes' early pools.
    rx_early_dropped: u64,
    /// Acks the engines took as CPU-limited (expected 0 in virtual time).
    cpu_limited_acks: u64,
    /// Probe bytes / other bytes sent (learned knowledge only).
    probe_fraction: Option<f64>,
    /// Policies the coordinator proposed after the first (learned knowledge only).
    replans: Option<u64>,
    rounds: Vec<JsonRound>,
    note: String,
    /// With a 16-bit `--wire`: the same strategy's mean round time and WAN bytes in f32.
    #[serde(skip_serializing_if = "Option::is_none")]
    f32_round_s_mean: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    f32_wan_bytes: Option<u64>,
}

#[derive(Debug, Serialize)]
struct JsonRound {
    round: u32,
    started_s: f64,
    sync_s: f64,
    optimum_s: f64,
    /// The proven lower bound on this round's time (its network at the start).
    bound_s: f64,
    modeled_s: f64,
    epoch: u32,
}

#[derive(Debug, Serialize)]
struct JsonReport {
    scenario: String,
    model: String,
    model_bytes: u64,
    rounds: u32,
    knowledge: &'static str,
    /// Payload type of `results`.
    wire: PayloadType,
    latency_bound_s: f64,
    results: Vec<JsonResult>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn run(args: &CompareArgs) -> Result<()> {
    let scenario = Scenario::load(&args.scenario)
        .with_context(|| format!("loading scenario {}", args.scenario.display()))?;
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    if args.segment_bytes == 0
        || !args.segment_bytes.is_multiple_of(4)
        || args.segment_bytes > 65_000
    {
        bail!(
            "--segment-bytes must be a positive multiple of 4 below 65000 (got {})",
            args.segment_bytes
        );
    }
    let profile = match (&args.model, args.model_mb) {
        (Some(name), _) => ModelProfile::by_name(name)?,
        (None, Some(mb)) if mb > 0.0 && mb.is_finite() => ModelProfile::synthetic(mb),
        (None, Some(mb)) => bail!("--model-mb must be a positive number (got {mb})"),
        (None, None) => bail!("give --model NAME or --model-mb N"),
    };
    let elems = profile.total_elements() as usize;
    let model_bits = elems as f64 * 8.0 * args.wire.elem_bytes() as f64;
    // Fail early, with the planner's words, if the network cannot be planned at all.
    planner::check_network(&NetworkModel::from_topology(scenario.topology.clone()))
        .with_context(|| format!("scenario {}", args.scenario.display()))?;

    let names: Vec<String> = match &args.strategies {
        Some(list) if list.iter().any(|s| s == "help") => {
            println!("strategies: {}", STRATEGY_NAMES.join(", "));
            return Ok(());
        }
        Some(list) => list.clone(),
        None => STRATEGY_NAMES.iter().map(|s| s.to_string()).collect(),
    };
    let opts = PlannerOptions {
        tensor_sizes: Some(profile.tensors.iter().map(|t| t.elements).collect()),
        greed: args.greed,
        seed: args.seed,
        ..PlannerOptions::default()
    };
    let strategies = strategies(&names, &opts)?;
    let cfg = ExperimentConfig {
        rounds: args.rounds,
        compute_ns: (args.compute_ms * 1e6) as u64,
        segment_elems: args.segment_bytes / 4,
        wire: args.wire,
        seed: args.seed,
        knowledge: if args.oracle {
            Knowledge::Oracle
        } else {
            Knowledge::Learned(LearnedConfig::default())
        },
        ..ExperimentConfig::default()
    };
    let knowledge_name = if args.oracle { "oracle" } else { "learned" };

    println!(
        "NetStorm compare — scenario '{}' ({} nodes, {} links{}), model {} ({:.1} MB), {} rounds, {} network knowledge",
        scenario.name,
        scenario.topology.node_count(),
        scenario.topology.links.len(),
        if scenario.dynamics.is_some() { ", dynamic" } else { "" },
        profile.name,
        profile.bytes_f32() as f64 / 1e6,
        args.rounds,
        knowledge_name
    );
    if args.wire.is_16bit() {
        println!(
            "Payload {} on the wire ({:.1} MB per round, aggregated in f32 at tree nodes); every strategy also runs in f32 for comparison.",
            args.wire,
            elems as f64 * args.wire.elem_bytes() as f64 / 1e6
        );
    }
    // Jobs: every strategy in the chosen type, then (16-bit only) every strategy in f32.
    let wires: Vec<PayloadType> = if args.wire.is_16bit() {
        vec![args.wire, PayloadType::F32]
    } else {
        vec![args.wire]
    };
    let job_list: Vec<(usize, PayloadType)> = wires
        .iter()
        .flat_map(|&w| (0..strategies.len()).map(move |i| (i, w)))
        .collect();

    let jobs = args
        .jobs
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(2)
        })
        .max(1);
    let multi = MultiProgress::new();
    if args.no_progress || std::env::var_os("CI").is_some() {
        multi.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let style = ProgressStyle::with_template("{prefix:>17} {bar:30} {pos}/{len} rounds  {msg}")
        .expect("static template");
    let bars: Vec<ProgressBar> = job_list
        .iter()
        .map(|&(i, w)| {
            let b = multi.add(ProgressBar::new(args.rounds as u64));
            b.set_style(style.clone());
            if w == args.wire {
                b.set_prefix(strategies[i].name);
            } else {
                b.set_prefix(format!("{} ({w})", strategies[i].name));
            }
            b
        })
        .collect();
    let f32_cfg = ExperimentConfig {
        wire: PayloadType::F32,
        ..cfg.clone()
    };
    let next = Mutex::new(0usize);
    let results: Mutex<Vec<Option<StrategyOutcome>>> =
        Mutex::new((0..job_list.len()).map(|_| None).collect());
    let started = std::time::Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(job_list.len()) {
            scope.spawn(|| loop {
                let i = {
                    let mut n = next.lock().expect("queue lock");
                    let i = *n;
                    *n += 1;
                    i
                };
                let Some(&(si, wire)) = job_list.get(i) else {
                    break;
                };
                let s = &strategies[si];
                let bar = &bars[i];
                let t0 = std::time::Instant::now();
                let job_cfg = if wire == cfg.wire { &cfg } else { &f32_cfg };
                let r =
                    experiment::run_strategy(&scenario, elems, s.planner.as_ref(), job_cfg, |rr| {
                        bar.inc(1);
                        bar.set_message(format!("{:.2} s/round", rr.sync_s));
                    })
                    .with_context(|| format!("strategy {} ({wire})", s.name))
                    .map(|r| (r, t0.elapsed().as_secs_f64()));
                bar.finish();
                results.lock().expect("results lock")[i] = Some(r);
            });
        }
    });
    let wall_s = started.elapsed().as_secs_f64();
    let results: Vec<(StrategyResult, f64)> = results
        .into_inner()
        .expect("results lock")
        .into_iter()
        .map(|r| r.expect("every strategy ran"))
        .collect::<Result<_>>()?;
    let (results, f32_results) = {
        let mut results = results;
        let f32_results = results.split_off(strategies.len());
        (results, f32_results)
    };

    // The physical limit of each network state the rounds started on (cached by rates).
    let mut optimum_cache: HashMap<Vec<u64>, f64> = HashMap::new();
    let mut optimum_of = |topo: &netstorm_dataplane::topology::Topology| -> Result<f64> {
        let key: Vec<u64> = topo.links.iter().map(|l| l.rate_bps.to_bits()).collect();
        if let Some(&v) = optimum_cache.get(&key) {
            return Ok(v);
        }
        let net = NetworkModel::from_topology(topo.clone());
        let v = bounds::fluid_optimum_cached(&net, model_bits)
            .context("fluid optimum")?
            .time_s;
        optimum_cache.insert(key, v);
        Ok(v)
    };
    // The proven round bound of each network state (cached per network by round_bound).
    let bound_of = |topo: &netstorm_dataplane::topology::Topology| -> Result<f64> {
        let net = NetworkModel::from_topology(topo.clone());
        Ok(round_bound::round_lower_bound_cached(&net, model_bits)
            .context("proven round bound")?
            .time_s)
    };
    let latency_bound_s =
        bounds::latency_bound_s(&NetworkModel::from_topology(scenario.topology.clone()));

    let mut rows = Vec::new();
    for ((r, _wall), s) in results.iter().zip(&strategies) {
        let mut times: Vec<f64> = r.rounds.iter().map(|x| x.sync_s).collect();
        let mean = times.iter().sum::<f64>() / times.len() as f64;
        times.sort_by(f64::total_cmp);
        let mut opt_sum = 0.0;
        let mut bound_sum = 0.0;
        let mut rounds = Vec::new();
        for x in &r.rounds {
            let o = optimum_of(&x.topology)?;
            let b = bound_of(&x.topology)?;
            opt_sum += o;
            bound_sum += b;
            rounds.push(JsonRound {
                round: x.round,
                started_s: x.started_s,
                sync_s: x.sync_s,
                optimum_s: o,
                bound_s: b,
                modeled_s: x.modeled_s,
                epoch: x.epoch,
            });
        }
        let opt_mean = opt_sum / r.rounds.len() as f64;
        rows.push(JsonResult {
            strategy: s.name.to_string(),
            round_s_mean: mean,
            round_s_p50: percentile(&times, 50.0),
            round_s_p99: percentile(&times, 99.0),
            vs_optimum: mean / (opt_mean + latency_bound_s),
            vs_bound: mean / (bound_sum / r.rounds.len() as f64),
            speedup_vs_mxnet_ps: None,
            wan_bytes: r.wan_bytes,
            policies_installed: r.policies_installed,
            retransmits: r.retransmits,
            rx_early_dropped: r.early_dropped,
            cpu_limited_acks: r.cpu_limited_acks,
            probe_fraction: r
                .learning
                .map(|l| l.probe_bytes as f64 / l.other_bytes.max(1) as f64),
            replans: r.learning.map(|l| l.proposals),
            rounds,
            note: s.note.to_string(),
            f32_round_s_mean: None,
            f32_wan_bytes: None,
        });
    }
    for (row, (f, _)) in rows.iter_mut().zip(&f32_results) {
        let mean = f.rounds.iter().map(|x| x.sync_s).sum::<f64>() / f.rounds.len() as f64;
        row.f32_round_s_mean = Some(mean);
        row.f32_wan_bytes = Some(f.wan_bytes);
    }
    let ps_mean = rows
        .iter()
        .find(|r| r.strategy == "mxnet-ps")
        .map(|r| r.round_s_mean);
    for r in &mut rows {
        r.speedup_vs_mxnet_ps = ps_mean.map(|p| p / r.round_s_mean);
    }

    println!();
    println!(
        "{:<17} {:>10} {:>9} {:>9} {:>9} {:>10} {:>9} {:>9} {:>8}",
        "strategy", "mean s", "p50 s", "p99 s", "vs PS", "vs limit", "vs bound", "WAN GB", "epochs"
    );
    for r in &rows {
        println!(
            "{:<17} {:>10.3} {:>9.3} {:>9.3} {:>9} {:>9.2}x {:>8.2}x {:>9.2} {:>8}",
            r.strategy,
            r.round_s_mean,
            r.round_s_p50,
            r.round_s_p99,
            r.speedup_vs_mxnet_ps
                .map_or("-".into(), |s| format!("{s:.2}x")),
            r.vs_optimum,
            r.vs_bound,
            r.wan_bytes as f64 / 1e9,
            r.policies_installed
        );
    }
    let opt_all: Vec<f64> = rows
        .iter()
        .flat_map(|r| r.rounds.iter().map(|x| x.optimum_s))
        .collect();
    let opt_mean = opt_all.iter().sum::<f64>() / opt_all.len().max(1) as f64;
    println!(
        "{:<17} {:>10.3}   (fluid optimum, mean over the rounds' networks; + latency bound {:.3} s)",
        "physical limit", opt_mean, latency_bound_s
    );
    let bound_all: Vec<f64> = rows
        .iter()
        .flat_map(|r| r.rounds.iter().map(|x| x.bound_s))
        .collect();
    println!(
        "{:<17} {:>10.3}   (proven lower bound on a round, bandwidth and latency together; mean over the rounds' networks)",
        "round bound",
        bound_all.iter().sum::<f64>() / bound_all.len().max(1) as f64
    );
    if !f32_results.is_empty() {
        println!();
        println!(
            "{:<17} {:>10} {:>10} {:>8} {:>10} {:>10} {:>8}",
            "strategy",
            "f32 s",
            format!("{} s", args.wire),
            "ratio",
            "f32 GB",
            format!("{} GB", args.wire),
            "ratio"
        );
        for r in &rows {
            let (Some(f32_s), Some(f32_b)) = (r.f32_round_s_mean, r.f32_wan_bytes) else {
                continue;
            };
            println!(
                "{:<17} {:>10.3} {:>10.3} {:>7.3}x {:>10.3} {:>10.3} {:>7.3}x",
                r.strategy,
                f32_s,
                r.round_s_mean,
                r.round_s_mean / f32_s,
                f32_b as f64 / 1e9,
                r.wan_bytes as f64 / 1e9,
                r.wan_bytes as f64 / f32_b.max(1) as f64
            );
        }
    }
    println!();
    if args.wire.is_16bit() {
        println!("Every round of every strategy was checked: all nodes bit-identical; {} results within the documented error bound of the exact sum, f32 results equal to it.", args.wire);
    } else {
        println!("Every round of every strategy was checked: all nodes bit-identical, equal to the reference sum.");
    }
    println!("'vs limit' = mean round time / (fluid optimum + largest pairwise latency), a heuristic yardstick; 'vs bound' = mean round time / proven round bound. Emulated time; wall time {wall_s:.1} s.");
    println!("Where baselines deviate from the systems they imitate:");
    for r in &rows {
        println!("  {:<16} {}", r.strategy, r.note);
    }
    if scenario.dynamics.is_some() {
        if args.oracle {
            println!("Dynamic network: strategies re-plan with oracle knowledge of the current rates when the first node finishes a round; faster strategies see more of the schedule's early periods.");
        } else {
            println!("Dynamic network: strategies re-plan from what the control plane learned (telemetry + capacity probes, ≤ 1 % of bytes), installed by the coordinator's two-phase protocol; --oracle plans from the true rates instead. Faster strategies see more of the schedule's early periods.");
        }
    }
    if args.demo {
        println!();
        println!("{}", interpretation(&rows));
    }
    if let Some(path) = &args.json {
        let report = JsonReport {
            scenario: scenario.name.clone(),
            model: profile.name.to_string(),
            model_bytes: profile.bytes_f32(),
            rounds: args.rounds,
            knowledge: knowledge_name,
            wire: args.wire,
            latency_bound_s,
            results: rows,
        };
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
        if let Some(plot) = &args.plot {
            plot_rows(
                plot,
                &report.results,
                &scenario.name,
                scenario.dynamics.is_some(),
            )?;
        }
    } else if let Some(plot) = &args.plot {
        plot_rows(plot, &rows, &scenario.name, scenario.dynamics.is_some())?;
    }
    Ok(())
}

fn interpretation(rows: &[JsonResult]) -> String {
    let best = rows
        .iter()
        .min_by(|a, b| a.round_s_mean.total_cmp(&b.round_s_mean));
    let packing = rows.iter().find(|r| r.strategy == "netstorm-packing");
    let paper = rows.iter().find(|r| r.strategy == "netstorm-paper");
    match (best, packing, paper) {
        (Some(b), Some(k), Some(p)) => format!(
            "In short: {} is fastest here; NetStorm with our packing planner syncs ResNet-50 {:.1}x faster than MXNet's parameter server and {:.2}x faster than the paper's own planner, within {:.2}x of the physical limit ({:.2}x of the proven round bound).",
            b.strategy,
            k.speedup_vs_mxnet_ps.unwrap_or(f64::NAN),
            p.round_s_mean / k.round_s_mean,
            k.vs_optimum,
            k.vs_bound
        ),
        (Some(b), _, _) => format!("In short: {} is fastest here.", b.strategy),
        _ => String::new(),
    }
}

fn plot_rows(
    path: &std::path::Path,
    rows: &[JsonResult],
    title: &str,
    over_time: bool,
) -> Result<()> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (1000, if over_time { 900 } else { 480 })).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = if over_time {
        root.split_vertically(440)
    } else {
        (root.clone(), root.clone())
    };
    let max = rows.iter().map(|r| r.round_s_p99).fold(0.0, f64::max) * 1.1;
    {
        let mut chart = ChartBuilder::on(&top)
            .caption(
                format!("{title}: mean round time per strategy (emulated s)"),
                ("sans-serif", 20),
            )
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.5..(rows.len() as f64 - 0.5), 0.0..max.max(1e-9))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(rows.len())
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 0.01 && i >= 0.0 {
                    rows.get(i as usize)
                        .map(|r| r.strategy.clone())
                        .unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_desc("seconds")
            .draw()?;
        chart.draw_series(rows.iter().enumerate().map(|(i, r)| {
            let color = Palette99::pick(i).filled();
            Rectangle::new(
                [(i as f64 - 0.4, 0.0), (i as f64 + 0.4, r.round_s_mean)],
                color,
            )
        }))?;
    }
    if over_time {
        let t_max = rows
            .iter()
            .flat_map(|r| r.rounds.iter().map(|x| x.started_s + x.sync_s))
            .fold(0.0, f64::max);
        let mut chart = ChartBuilder::on(&bottom)
            .caption(
                "round time vs when the round finished (dynamic network)",
                ("sans-serif", 20),
            )
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..t_max.max(1e-9), 0.0..max.max(1e-9))?;
        chart
            .configure_mesh()
            .x_desc("emulated time (s)")
            .y_desc("round time (s)")
            .draw()?;
        for (i, r) in rows.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(
                    r.rounds.iter().map(|x| (x.started_s + x.sync_s, x.sync_s)),
                    color.stroke_width(2),
                ))?
                .label(r.strategy.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()?;
    }
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}
