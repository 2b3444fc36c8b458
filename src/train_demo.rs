//! `netstorm train-demo`: data-parallel training of a real model on a real data set, with
//! the gradients synchronized through the engine on the emulated WAN by each strategy.
//!
//! The model is multinomial logistic (softmax) regression; the data set ships inside the
//! `linfa-datasets` crate (red wine quality or iris; nothing is downloaded at run time).
//! The training rows are partitioned over the scenario's data centers. Every round each node
//! computes the gradient of the mean loss on its own partition, scaled so that the sum over
//! the nodes is the global full-batch gradient, the cluster all-reduces it, and every node
//! applies the same momentum-SGD update to the same sum. `EmulatedCluster::allreduce` checks
//! that the sum is bit-identical on every node, so all nodes hold identical weights and one
//! copy stands for all of them here.
//!
//! The model has tens of parameters; so that the network matters as it does for a real
//! model, the synchronized vector is padded with zeros to `--pad-mb` MB. The padding stands
//! for the rest of a large model's gradient: it is zeros, sums to zeros (checked every
//! round) and does not touch the model.
//!
//! Emulated time per round = `--compute-ms` (local gradient computation, emulated) + the
//! round's synchronization time on the emulated WAN. Every strategy runs the same rounds on
//! the same data, so the accuracy curves differ only in the time axis, and in the last bits
//! of the weights: each strategy adds the nodes' f32 gradients in its own tree order.

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use netstorm_controlplane::experiment::{EmulatedCluster, ExperimentConfig};
use netstorm_controlplane::planner::{self, PlannerOptions};
use netstorm_dataplane::scenario::Scenario;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Mutex;

/// Strategy names the command accepts, and the planner each one runs.
const STRATEGIES: &[(&str, &str)] = &[
    ("mxnet-ps", "mxnet-ps"),
    ("mlnet", "mlnet"),
    ("tsengine", "tsengine"),
    ("ring", "ring"),
    ("mesh", "mesh"),
    ("spt", "spt"),
    ("netstorm-paper", "paper"),
    ("netstorm-packing", "packing"),
];

/// Strategies must agree on test accuracy to within this many percentage points.
const SAME_ACCURACY_PP: f64 = 0.5;

#[derive(Args, Debug, Clone)]
pub struct TrainDemoArgs {
    /// Scenario file (TOML; see scenarios/).
    #[arg(long, default_value = "scenarios/paper9-static100.toml")]
    pub scenario: PathBuf,
    /// Data set shipped by the linfa-datasets crate: winequality (red wine quality, 6
    /// classes) or iris (3 classes).
    #[arg(long, default_value = "winequality", value_parser = ["winequality", "iris"])]
    pub dataset: String,
    /// Training rounds per strategy. Each round every node makes one full pass over its
    /// partition (one epoch), so rounds = epochs.
    #[arg(long, visible_alias = "epochs", default_value_t = 30)]
    pub rounds: u32,
    /// Learning rate of the momentum-SGD update.
    #[arg(long, default_value_t = 0.5)]
    pub lr: f64,
    /// Momentum of the SGD update (0 = plain gradient descent).
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// Comma-separated strategies: mxnet-ps, mlnet, tsengine, ring, mesh, spt,
    /// netstorm-paper, netstorm-packing.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "mxnet-ps,ring,netstorm-paper,netstorm-packing"
    )]
    pub strategies: Vec<String>,
    /// Local gradient computation per round, milliseconds of emulated time.
    #[arg(long, default_value_t = 50.0)]
    pub compute_ms: f64,
    /// Size of the synchronized vector in MB (10^6 bytes of f32): the model's gradient
    /// followed by zeros that stand for the rest of a large model's gradient, so that the
    /// network matters as it does for a real model. 0 = the model's gradient only.
    #[arg(long, default_value_t = 25.0)]
    pub pad_mb: f64,
    /// Seed of the train/test split and of the emulator.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Strategies run in parallel (default: available cores, at most 2).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// No progress bars.
    #[arg(long)]
    pub no_progress: bool,
    /// Write the results as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// A classification data set, standardized and split.
#[derive(Debug, Clone)]
struct Data {
    name: &'static str,
    description: &'static str,
    rows: usize,
    features: usize,
    classes: usize,
    /// Row-major, `features` values per row, standardized with the training set's statistics.
    train_x: Vec<f64>,
    train_y: Vec<usize>,
    test_x: Vec<f64>,
    test_y: Vec<usize>,
}

/// SplitMix64: a tiny seeded generator for the deterministic train/test split.
#[derive(Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

fn load_data(name: &str, seed: u64) -> Result<Data> {
    let (ds, description) = match name {
        "winequality" => (
            linfa_datasets::winequality(),
            "red wine quality (UCI), 11 physico-chemical features, quality 3-8",
        ),
        "iris" => (
            linfa_datasets::iris(),
            "iris flowers (Fisher), 4 features, 3 species",
        ),
        other => bail!("unknown data set '{other}' (known: winequality, iris)"),
    };
    let rows = ds.records.nrows();
    let features = ds.records.ncols();
    let x: Vec<f64> = (0..rows)
        .flat_map(|i| (0..features).map(move |j| (i, j)))
        .map(|(i, j)| ds.records[[i, j]])
        .collect();
    // Labels (e.g. wine quality 3..8) become class indices 0..classes in label order.
    let mut labels: Vec<usize> = ds.targets.iter().copied().collect();
    labels.sort_unstable();
    labels.dedup();
    let y: Vec<usize> = ds
        .targets
        .iter()
        .map(|t| labels.binary_search(t).expect("label present"))
        .collect();
    if rows < 10 || labels.len() < 2 {
        bail!(
            "data set '{name}' is too small ({rows} rows, {} classes)",
            labels.len()
        );
    }

    // Deterministic shuffle (Fisher-Yates), then 80 % train / 20 % test.
    let mut order: Vec<usize> = (0..rows).collect();
    let mut rng = SplitMix64(seed ^ 0x7261_696E_6465_6D6F);
    for i in (1..rows).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let n_train = rows * 4 / 5;
    let gather = |idx: &[usize]| -> (Vec<f64>, Vec<usize>) {
        let xs = idx
            .iter()
            .flat_map(|&i| x[i * features..(i + 1) * features].iter().copied())
            .collect();
        let ys = idx.iter().map(|&i| y[i]).collect();
        (xs, ys)
    };
    let (mut train_x, train_y) = gather(&order[..n_train]);
    let (mut test_x, test_y) = gather(&order[n_train..]);

    // Standardize every feature with the training set's mean and standard deviation.
    for j in 0..features {
        let col = || train_x.iter().skip(j).step_by(features);
        let mean = col().sum::<f64>() / n_train as f64;
        let var = col().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n_train as f64;
        let sd = if var > 0.0 { var.sqrt() } else { 1.0 };
        for v in train_x
            .iter_mut()
            .skip(j)
            .step_by(features)
            .chain(test_x.iter_mut().skip(j).step_by(features))
        {
            *v = (*v - mean) / sd;
        }
    }
    Ok(Data {
        name: if name == "iris" {
            "iris"
        } else {
            "winequality"
        },
        description,
        rows,
        features,
        classes: labels.len(),
        train_x,
        train_y,
        test_x,
        test_y,
    })
}

/// Softmax regression: `classes` rows of `features + 1` weights (the last one is the bias).
#[derive(Debug, Clone, Copy)]
struct Model {
    features: usize,
    classes: usize,
}

impl Model {
    fn params(&self) -> usize {
        self.classes * (self.features + 1)
    }

    /// Class probabilities of one row, into `p`.
    fn probabilities(&self, w: &[f32], x: &[f64], p: &mut [f64]) {
        let stride = self.features + 1;
        for (c, pc) in p.iter_mut().enumerate() {
            let row = &w[c * stride..(c + 1) * stride];
            *pc = row[self.features] as f64
                + row[..self.features]
                    .iter()
                    .zip(x)
                    .map(|(&a, &b)| a as f64 * b)
                    .sum::<f64>();
        }
        let max = p.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mut total = 0.0;
        for v in p.iter_mut() {
            *v = (*v - max).exp();
            total += *v;
        }
        for v in p.iter_mut() {
            *v /= total;
        }
    }

    /// Writes into `out[..params]` the gradient of the cross-entropy summed over the rows
    /// `x`/`y`, divided by `scale` (the global training-set size: the nodes' gradients then
    /// sum to the gradient of the global mean loss).
    fn gradient(&self, w: &[f32], x: &[f64], y: &[usize], scale: f64, out: &mut [f32]) {
        let stride = self.features + 1;
        let mut g = vec![0.0f64; self.params()];
        let mut p = vec![0.0f64; self.classes];
        for (row, &label) in x.chunks_exact(self.features).zip(y) {
            self.probabilities(w, row, &mut p);
            for (c, &pc) in p.iter().enumerate() {
                let err = pc - if c == label { 1.0 } else { 0.0 };
                let gc = &mut g[c * stride..(c + 1) * stride];
                for (gj, &xj) in gc.iter_mut().zip(row) {
                    *gj += err * xj;
                }
                gc[self.features] += err;
            }
        }
        for (o, gi) in out.iter_mut().zip(&g) {
            *o = (gi / scale) as f32;
        }
    }

    /// Test accuracy (ties go to the lower class index) and mean cross-entropy.
    fn evaluate(&self, w: &[f32], x: &[f64], y: &[usize]) -> (f64, f64) {
        let mut p = vec![0.0f64; self.classes];
        let mut correct = 0usize;
        let mut loss = 0.0;
        for (row, &label) in x.chunks_exact(self.features).zip(y) {
            self.probabilities(w, row, &mut p);
            let best = p
                .iter()
                .enumerate()
                .fold(0, |b, (c, &v)| if v > p[b] { c } else { b });
            correct += usize::from(best == label);
            loss -= p[label].max(1e-300).ln();
        }
        (correct as f64 / y.len() as f64, loss / y.len() as f64)
    }
}

/// What every strategy shares: the data, its partition over the nodes, the optimizer.
#[derive(Debug)]
struct Trainer<'a> {
    data: &'a Data,
    model: Model,
    /// Node v trains on rows `bounds[v]..bounds[v + 1]` of the training set.
    bounds: Vec<usize>,
    lr: f32,
    momentum: f32,
}

impl Trainer<'_> {
    fn nodes(&self) -> usize {
        self.bounds.len() - 1
    }

    /// Each node's gradient on its own partition, into the first `params` entries of its
    /// input buffer (the rest, the padding, stays zero).
    fn local_gradients(&self, w: &[f32], inputs: &mut [Vec<f32>]) {
        let f = self.model.features;
        let scale = self.data.train_y.len() as f64;
        for (v, input) in inputs.iter_mut().enumerate() {
            let (a, b) = (self.bounds[v], self.bounds[v + 1]);
            let x = &self.data.train_x[a * f..b * f];
            let y = &self.data.train_y[a..b];
            self.model
                .gradient(w, x, y, scale, &mut input[..self.model.params()]);
        }
    }

    /// The same update every node applies to the same synchronized sum.
    fn apply(&self, w: &mut [f32], velocity: &mut [f32], sum: &[f32]) {
        for ((wi, vi), &gi) in w.iter_mut().zip(velocity.iter_mut()).zip(sum) {
            *vi = self.momentum * *vi + gi;
            *wi -= self.lr * *vi;
        }
    }

    /// Trains for `rounds`, calling `sync` to sum the nodes' inputs; returns the final
    /// weights and the accuracy after each round.
    fn train(
        &self,
        rounds: u32,
        elems: usize,
        mut sync: impl FnMut(&[Vec<f32>]) -> Result<Vec<f32>>,
    ) -> Result<(Vec<f32>, Vec<f64>)> {
        let params = self.model.params();
        let mut w = vec![0.0f32; params];
        let mut velocity = vec![0.0f32; params];
        let mut inputs = vec![vec![0.0f32; elems]; self.nodes()];
        let mut accuracy = Vec::with_capacity(rounds as usize);
        for _ in 0..rounds {
            self.local_gradients(&w, &mut inputs);
            let sum = sync(&inputs)?;
            if sum.len() != elems {
                bail!(
                    "the synchronized vector has {} elements, expected {elems}",
                    sum.len()
                );
            }
            if let Some(i) = sum[params..].iter().position(|x| x.to_bits() != 0) {
                bail!(
                    "padding element {} came back as {} instead of zero",
                    params + i,
                    sum[params + i]
                );
            }
            self.apply(&mut w, &mut velocity, &sum[..params]);
            accuracy.push(
                self.model
                    .evaluate(&w, &self.data.test_x, &self.data.test_y)
                    .0,
            );
        }
        Ok((w, accuracy))
    }
}

#[derive(Debug, Clone, Serialize)]
struct StrategyReport {
    strategy: String,
    planner: String,
    final_accuracy: f64,
    final_test_loss: f64,
    rounds: u32,
    /// Emulated time at the end of the last round, seconds.
    emulated_s: f64,
    mean_sync_s: f64,
    /// Emulated time at which test accuracy first reached the target (see the report).
    time_to_target_s: f64,
    /// Largest |w - w_reference| over the final weights.
    max_abs_dw_vs_reference: f64,
    /// (emulated seconds, test accuracy), starting at (0, accuracy of the zero weights).
    curve: Vec<(f64, f64)>,
    #[serde(skip)]
    weights: Vec<f32>,
    #[serde(skip)]
    wall_s: f64,
}

#[derive(Debug, Serialize)]
struct JsonReport {
    dataset: String,
    scenario: String,
    nodes: usize,
    model: String,
    parameters: usize,
    synchronized_elements: usize,
    padding: &'static str,
    rounds: u32,
    compute_ms: f64,
    lr: f64,
    momentum: f64,
    reference_accuracy: f64,
    majority_accuracy: f64,
    target_accuracy: f64,
    max_abs_dw_between_strategies: f64,
    accuracy_spread_pp: f64,
    results: Vec<StrategyReport>,
}

/// Accuracy of the newest weights a strategy holds at emulated time `t`.
fn accuracy_at(curve: &[(f64, f64)], t: f64) -> f64 {
    curve
        .iter()
        .take_while(|(ti, _)| *ti <= t + 1e-9)
        .last()
        .map_or(f64::NAN, |&(_, a)| a)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).abs())
        .fold(0.0, f64::max)
}

fn pct(a: f64) -> String {
    format!("{:.2} %", a * 100.0)
}

#[allow(clippy::too_many_arguments)]
fn run_strategy(
    trainer: &Trainer<'_>,
    scenario: &Scenario,
    name: &str,
    planner_name: &str,
    args: &TrainDemoArgs,
    elems: usize,
    initial_accuracy: f64,
    bar: &ProgressBar,
) -> Result<StrategyReport> {
    let t0 = std::time::Instant::now();
    let planner = planner::by_name(planner_name, &PlannerOptions::default())?;
    let planner_label = planner.name().to_string();
    let cfg = ExperimentConfig {
        seed: args.seed,
        ..ExperimentConfig::default()
    };
    let mut cluster = EmulatedCluster::new(scenario, elems, planner, &cfg)?;
    let compute_s = args.compute_ms / 1e3;
    let mut times = Vec::with_capacity(args.rounds as usize);
    let mut sync_total = 0.0;
    let (weights, accuracy) = trainer.train(args.rounds, elems, |inputs| {
        cluster.advance_s(compute_s)?;
        let (sum, sync_s) = cluster.allreduce(inputs)?;
        sync_total += sync_s;
        times.push(cluster.now_s());
        bar.inc(1);
        bar.set_message(format!("{sync_s:.2} s sync/round"));
        Ok(sum)
    })?;
    bar.finish();
    let curve: Vec<(f64, f64)> = std::iter::once((0.0, initial_accuracy))
        .chain(times.iter().copied().zip(accuracy.iter().copied()))
        .collect();
    let (final_accuracy, final_test_loss) =
        trainer
            .model
            .evaluate(&weights, &trainer.data.test_x, &trainer.data.test_y);
    Ok(StrategyReport {
        strategy: name.to_string(),
        planner: planner_label,
        final_accuracy,
        final_test_loss,
        rounds: args.rounds,
        emulated_s: cluster.now_s(),
        mean_sync_s: sync_total / args.rounds as f64,
        time_to_target_s: f64::NAN,
        max_abs_dw_vs_reference: f64::NAN,
        curve,
        weights,
        wall_s: t0.elapsed().as_secs_f64(),
    })
}

pub fn run(args: &TrainDemoArgs) -> Result<()> {
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    if !(args.lr.is_finite() && args.lr >= 0.0) {
        bail!("--lr must be a non-negative number (got {})", args.lr);
    }
    if !(args.momentum.is_finite() && (0.0..1.0).contains(&args.momentum)) {
        bail!("--momentum must be in [0, 1) (got {})", args.momentum);
    }
    if !(args.compute_ms.is_finite() && args.compute_ms >= 0.0) {
        bail!(
            "--compute-ms must be a non-negative number (got {})",
            args.compute_ms
        );
    }
    if !(args.pad_mb.is_finite() && (0.0..=1000.0).contains(&args.pad_mb)) {
        bail!("--pad-mb must be in [0, 1000] (got {})", args.pad_mb);
    }
    let mut strategies: Vec<(&'static str, &'static str)> = Vec::new();
    for s in &args.strategies {
        let Some(&(name, planner_name)) = STRATEGIES.iter().find(|(n, _)| n == s) else {
            let known: Vec<&str> = STRATEGIES.iter().map(|(n, _)| *n).collect();
            bail!("unknown strategy '{s}' (known: {})", known.join(", "));
        };
        if strategies.iter().any(|(n, _)| *n == name) {
            bail!("strategy '{name}' given twice");
        }
        strategies.push((name, planner_name));
    }
    if strategies.is_empty() {
        bail!("give at least one strategy");
    }

    let scenario = Scenario::load(&args.scenario)
        .with_context(|| format!("loading scenario {}", args.scenario.display()))?;
    let n = scenario.topology.node_count();
    let data = load_data(&args.dataset, args.seed)?;
    let model = Model {
        features: data.features,
        classes: data.classes,
    };
    let params = model.params();
    let elems = params.max((args.pad_mb * 1e6 / 4.0).round() as usize);
    let n_train = data.train_y.len();
    if n_train < n {
        bail!("{n_train} training rows cannot be partitioned over {n} nodes");
    }
    let trainer = Trainer {
        data: &data,
        model,
        bounds: (0..=n).map(|v| v * n_train / n).collect(),
        lr: args.lr as f32,
        momentum: args.momentum as f32,
    };
    let sizes: Vec<usize> = trainer.bounds.windows(2).map(|b| b[1] - b[0]).collect();
    let initial_accuracy = model
        .evaluate(&vec![0.0; params], &data.test_x, &data.test_y)
        .0;
    // What always answering the training set's most frequent class scores on the test set.
    let majority_accuracy = {
        let mut counts = vec![0usize; data.classes];
        for &y in &data.train_y {
            counts[y] += 1;
        }
        let top = counts
            .iter()
            .enumerate()
            .fold(0, |b, (c, &k)| if k > counts[b] { c } else { b });
        data.test_y.iter().filter(|&&y| y == top).count() as f64 / data.test_y.len() as f64
    };

    println!(
        "NetStorm train-demo — data set {} ({}; {} rows: {} train / {} test), softmax regression, {} parameters",
        data.name,
        data.description,
        data.rows,
        n_train,
        data.test_y.len(),
        params
    );
    println!(
        "scenario '{}': {} data centers, training rows partitioned {}–{} per node; each round every node takes one full-batch gradient of its partition",
        scenario.name,
        n,
        sizes.iter().min().copied().unwrap_or(0),
        sizes.iter().max().copied().unwrap_or(0)
    );
    println!(
        "synchronized per round: {} gradient values + {} zeros = {:.1} MB (the zeros stand for the rest of a large model's gradient)",
        params,
        elems - params,
        elems as f64 * 4.0 / 1e6
    );
    println!(
        "{} rounds, {} ms emulated compute per round, SGD lr {} momentum {}, seed {}; always guessing the most frequent class scores {}",
        args.rounds, args.compute_ms, args.lr, args.momentum, args.seed, pct(majority_accuracy)
    );

    // The reference: the same training with the nodes' f32 gradients summed locally in node
    // order, no network.
    let (reference_w, reference_acc) = trainer.train(args.rounds, params, |inputs| {
        let mut sum = vec![0.0f32; params];
        for input in inputs {
            for (s, x) in sum.iter_mut().zip(input) {
                *s += x;
            }
        }
        Ok(sum)
    })?;
    let (reference_accuracy, reference_loss) =
        model.evaluate(&reference_w, &data.test_x, &data.test_y);
    debug_assert_eq!(reference_acc.last().copied(), Some(reference_accuracy));

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
    let bars: Vec<ProgressBar> = strategies
        .iter()
        .map(|(name, _)| {
            let b = multi.add(ProgressBar::new(args.rounds as u64));
            b.set_style(style.clone());
            b.set_prefix(*name);
            b
        })
        .collect();
    let next = Mutex::new(0usize);
    let results: Mutex<Vec<Option<Result<StrategyReport>>>> =
        Mutex::new((0..strategies.len()).map(|_| None).collect());
    let started = std::time::Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(strategies.len()) {
            scope.spawn(|| loop {
                let i = {
                    let mut next = next.lock().expect("queue lock");
                    let i = *next;
                    *next += 1;
                    i
                };
                let Some(&(name, planner_name)) = strategies.get(i) else {
                    break;
                };
                let r = run_strategy(
                    &trainer,
                    &scenario,
                    name,
                    planner_name,
                    args,
                    elems,
                    initial_accuracy,
                    &bars[i],
                )
                .with_context(|| format!("strategy {name}"));
                results.lock().expect("results lock")[i] = Some(r);
            });
        }
    });
    let wall_s = started.elapsed().as_secs_f64();
    let mut rows: Vec<StrategyReport> = results
        .into_inner()
        .expect("results lock")
        .into_iter()
        .map(|r| r.expect("every strategy ran"))
        .collect::<Result<_>>()?;

    // The same accuracy: final weights against the reference and against each other.
    let mut max_dw_between: f64 = 0.0;
    for i in 0..rows.len() {
        for j in i + 1..rows.len() {
            max_dw_between = max_dw_between.max(max_abs_diff(&rows[i].weights, &rows[j].weights));
        }
    }
    for r in &mut rows {
        r.max_abs_dw_vs_reference = max_abs_diff(&r.weights, &reference_w);
    }
    let min_acc = rows
        .iter()
        .map(|r| r.final_accuracy)
        .fold(f64::INFINITY, f64::min);
    let max_acc = rows
        .iter()
        .map(|r| r.final_accuracy)
        .fold(f64::NEG_INFINITY, f64::max);
    let spread_pp = (max_acc.max(reference_accuracy) - min_acc.min(reference_accuracy)) * 100.0;
    // Time to accuracy: the first moment a strategy's test accuracy reached the accuracy
    // every strategy ends with (test accuracy is not monotone, so this can precede the end).
    let target = min_acc;
    for r in &mut rows {
        r.time_to_target_s = r
            .curve
            .iter()
            .find(|(_, a)| *a >= target)
            .map_or(r.emulated_s, |&(t, _)| t);
    }

    println!();
    println!(
        "{:<17} {:>10} {:>9} {:>7} {:>11} {:>12} {:>14} {:>10}",
        "strategy",
        "final acc",
        "test loss",
        "rounds",
        "emulated s",
        "mean sync s",
        format!("to {:.1} % s", target * 100.0),
        "max |Δw|"
    );
    for r in &rows {
        println!(
            "{:<17} {:>10} {:>9.4} {:>7} {:>11.2} {:>12.3} {:>14.2} {:>10.1e}",
            r.strategy,
            pct(r.final_accuracy),
            r.final_test_loss,
            r.rounds,
            r.emulated_s,
            r.mean_sync_s,
            r.time_to_target_s,
            r.max_abs_dw_vs_reference
        );
    }
    println!(
        "{:<17} {:>10} {:>9.4} {:>7}   (no network: the same f32 gradients summed locally in node order)",
        "reference",
        pct(reference_accuracy),
        reference_loss,
        args.rounds
    );

    // Accuracy against emulated time at a few checkpoints: a quarter and half of the fastest
    // strategy's run, then the moment each strategy finishes.
    let mut finish: Vec<f64> = rows.iter().map(|r| r.emulated_s).collect();
    finish.sort_by(f64::total_cmp);
    let mut checkpoints = vec![finish[0] / 4.0, finish[0] / 2.0];
    for t in finish {
        // Within 5 % of the previous checkpoint: the table would repeat a column.
        if t > checkpoints[checkpoints.len() - 1] * 1.05 {
            checkpoints.push(t);
        }
    }
    println!();
    println!("test accuracy against emulated time (the newest weights each strategy holds at that moment):");
    print!("{:<17}", "strategy");
    for t in &checkpoints {
        print!(" {:>10}", format!("t={t:.1}s"));
    }
    println!();
    for r in &rows {
        print!("{:<17}", r.strategy);
        for &t in &checkpoints {
            let a = accuracy_at(&r.curve, t);
            let done = if t >= r.emulated_s - 1e-9 { "*" } else { " " };
            print!(" {:>9}{done}", format!("{:.1}%", a * 100.0));
        }
        println!();
    }
    println!(
        "(* = finished all {} rounds; the table holds its final accuracy from then on)",
        args.rounds
    );

    println!();
    println!(
        "Same accuracy, measured: final test accuracies {}–{} (reference {}), spread {:.2} pp (allowed {SAME_ACCURACY_PP} pp); max |Δw| between strategies {:.1e}, vs the reference {:.1e}.",
        pct(min_acc),
        pct(max_acc),
        pct(reference_accuracy),
        spread_pp,
        max_dw_between,
        rows.iter().map(|r| r.max_abs_dw_vs_reference).fold(0.0, f64::max)
    );
    println!(
        "Each round's sum was bit-identical on every node; strategies differ only in the order their trees add the nodes' f32 gradients (last bits)."
    );
    let same = spread_pp <= SAME_ACCURACY_PP + 1e-9;
    let by = |s: &str| rows.iter().find(|r| r.strategy == s);
    let speed = match (by("netstorm-packing"), by("mxnet-ps")) {
        (Some(k), Some(p)) if k.time_to_target_s > 0.0 => format!(
            "; NetStorm-packing got there {:.1}x sooner than MXNet PS ({:.1} s vs {:.1} s emulated)",
            p.time_to_target_s / k.time_to_target_s,
            k.time_to_target_s,
            p.time_to_target_s
        ),
        _ if rows.len() > 1 && rows.iter().all(|r| r.time_to_target_s > 0.0) => {
            let key = |r: &&StrategyReport| r.time_to_target_s;
            let fast = rows.iter().min_by(|a, b| key(a).total_cmp(&key(b))).expect("rows");
            let slow = rows.iter().max_by(|a, b| key(a).total_cmp(&key(b))).expect("rows");
            format!(
                "; {} got there {:.1}x sooner than {} ({:.1} s vs {:.1} s emulated)",
                fast.strategy,
                slow.time_to_target_s / fast.time_to_target_s,
                slow.strategy,
                fast.time_to_target_s,
                slow.time_to_target_s
            )
        }
        _ => String::new(),
    };
    if same {
        println!(
            "Every strategy reached the same accuracy ({}) — bit-identical synchronized gradients on every node{speed}.",
            pct(min_acc)
        );
    }
    println!("Wall time {wall_s:.1} s.");

    if let Some(path) = &args.json {
        let report = JsonReport {
            dataset: data.name.to_string(),
            scenario: scenario.name.clone(),
            nodes: n,
            model: "softmax regression".into(),
            parameters: params,
            synchronized_elements: elems,
            padding: "zeros after the model's gradient, standing for the rest of a large model's gradient",
            rounds: args.rounds,
            compute_ms: args.compute_ms,
            lr: args.lr,
            momentum: args.momentum,
            reference_accuracy,
            majority_accuracy,
            target_accuracy: target,
            max_abs_dw_between_strategies: max_dw_between,
            accuracy_spread_pp: spread_pp,
            results: rows.clone(),
        };
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    if !same {
        bail!("strategies disagree on the final accuracy by {spread_pp:.2} pp (more than {SAME_ACCURACY_PP} pp)");
    }
    for r in &rows {
        tracing::debug!(strategy = %r.strategy, wall_s = r.wall_s, "strategy done");
    }
    Ok(())
}
