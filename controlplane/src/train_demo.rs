//! The trainer demo (`netstorm train-demo`): data-parallel training of a real model on a real data set, with
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

//!
//! [`TrainDemo::new`] checks the configuration, loads and partitions the data and trains the
//! reference (the same f32 gradients summed locally in node order, no network);
//! [`TrainDemo::run`] trains once per strategy (in parallel threads) and compares.

use crate::experiment::{EmulatedCluster, ExperimentConfig, ExperimentError};
use crate::planner::{self, PlanError, PlannerOptions};
use netstorm_dataplane::scenario::Scenario;
use serde::Serialize;
use std::sync::Mutex;

/// Strategy names the demo accepts, and the planner each one runs.
pub const STRATEGIES: &[(&str, &str)] = &[
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
pub const SAME_ACCURACY_PP: f64 = 0.5;

/// What to train, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainDemoConfig {
    /// Data set shipped by linfa-datasets: `winequality` or `iris`.
    pub dataset: String,
    /// Training rounds per strategy (each a full pass over every node's partition).
    pub rounds: u32,
    /// Learning rate and momentum of the SGD update.
    pub lr: f64,
    pub momentum: f64,
    /// Strategy names (see [`STRATEGIES`]).
    pub strategies: Vec<String>,
    /// Local gradient computation per round, milliseconds of emulated time.
    pub compute_ms: f64,
    /// Size of the synchronized vector in MB: the gradient, then zeros.
    pub pad_mb: f64,
    /// Seed of the train/test split and of the emulator.
    pub seed: u64,
    /// Strategies run in parallel (default: available cores, at most 2).
    pub jobs: Option<usize>,
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum TrainDemoError {
    /// A configuration value out of range (the message names the option).
    #[error("{0}")]
    Config(String),
    #[error("unknown strategy '{name}' (known: {known})")]
    UnknownStrategy { name: String, known: String },
    #[error("{0}")]
    Data(String),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Emulation(#[from] ExperimentError),
    /// The synchronized vector came back wrong.
    #[error("{0}")]
    Sync(String),
    #[error("strategy {name}: {source}")]
    Strategy {
        name: String,
        #[source]
        source: Box<TrainDemoError>,
    },
}

type Result<T> = std::result::Result<T, TrainDemoError>;

macro_rules! bail {
    ($kind:ident, $($arg:tt)*) => {
        return Err(TrainDemoError::$kind(format!($($arg)*)))
    };
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
        other => bail!(
            Data,
            "unknown data set '{other}' (known: winequality, iris)"
        ),
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
            Data,
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
                    Sync,
                    "the synchronized vector has {} elements, expected {elems}",
                    sum.len()
                );
            }
            if let Some(i) = sum[params..].iter().position(|x| x.to_bits() != 0) {
                bail!(
                    Sync,
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

/// What one strategy's training did.
#[derive(Debug, Clone, Serialize)]
pub struct StrategyReport {
    pub strategy: String,
    pub planner: String,
    pub final_accuracy: f64,
    pub final_test_loss: f64,
    pub rounds: u32,
    /// Emulated time at the end of the last round, seconds.
    pub emulated_s: f64,
    pub mean_sync_s: f64,
    /// Emulated time at which test accuracy first reached the target (see the report).
    pub time_to_target_s: f64,
    /// Largest |w - w_reference| over the final weights.
    pub max_abs_dw_vs_reference: f64,
    /// (emulated seconds, test accuracy), starting at (0, accuracy of the zero weights).
    pub curve: Vec<(f64, f64)>,
    #[serde(skip)]
    pub weights: Vec<f32>,
    #[serde(skip)]
    pub wall_s: f64,
}

impl StrategyReport {
    /// Accuracy of the newest weights the strategy holds at emulated time `t`.
    pub fn accuracy_at(&self, t: f64) -> f64 {
        self.curve
            .iter()
            .take_while(|(ti, _)| *ti <= t + 1e-9)
            .last()
            .map_or(f64::NAN, |&(_, a)| a)
    }
}

/// The setup, before any strategy runs (what the demo prints first).
#[derive(Debug, Clone, PartialEq)]
pub struct Setup {
    pub dataset: &'static str,
    pub description: &'static str,
    pub rows: usize,
    pub train_rows: usize,
    pub test_rows: usize,
    /// Parameters of the model (its gradient's length).
    pub parameters: usize,
    /// Length of the synchronized vector (gradient + zeros).
    pub synchronized_elements: usize,
    pub scenario: String,
    pub nodes: usize,
    /// Fewest and most training rows of a node.
    pub partition_rows: (usize, usize),
    /// What always answering the training set's most frequent class scores on the test set.
    pub majority_accuracy: f64,
    /// The local reference's final test accuracy and loss.
    pub reference_accuracy: f64,
    pub reference_loss: f64,
}

/// Everything the demo measured (serialized as the `--json` report).
#[derive(Debug, Clone, Serialize)]
pub struct TrainDemoReport {
    pub dataset: String,
    pub scenario: String,
    pub nodes: usize,
    pub model: String,
    pub parameters: usize,
    pub synchronized_elements: usize,
    pub padding: &'static str,
    pub rounds: u32,
    pub compute_ms: f64,
    pub lr: f64,
    pub momentum: f64,
    pub reference_accuracy: f64,
    pub majority_accuracy: f64,
    /// The accuracy every strategy ends with (the lowest final accuracy).
    pub target_accuracy: f64,
    pub max_abs_dw_between_strategies: f64,
    pub accuracy_spread_pp: f64,
    pub results: Vec<StrategyReport>,
    /// Highest final accuracy of a strategy.
    #[serde(skip)]
    pub max_accuracy: f64,
}

impl TrainDemoReport {
    /// Whether every strategy and the reference agree within [`SAME_ACCURACY_PP`].
    pub fn same_accuracy(&self) -> bool {
        self.accuracy_spread_pp <= SAME_ACCURACY_PP + 1e-9
    }
}

/// Progress of one strategy (its index in the configured list).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Progress {
    /// A round synchronized in `sync_s` of emulated time.
    Round {
        sync_s: f64,
    },
    Done,
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).abs())
        .fold(0.0, f64::max)
}

/// A configured demo: the data loaded and partitioned, the reference trained.
#[derive(Debug)]
pub struct TrainDemo<'s> {
    scenario: &'s Scenario,
    cfg: TrainDemoConfig,
    strategies: Vec<(&'static str, &'static str)>,
    data: Data,
    model: Model,
    bounds: Vec<usize>,
    setup: Setup,
    initial_accuracy: f64,
    reference_weights: Vec<f32>,
}

impl<'s> TrainDemo<'s> {
    /// Checks `cfg`, loads the data set, partitions it over `scenario`'s nodes and trains
    /// the reference.
    pub fn new(scenario: &'s Scenario, cfg: &TrainDemoConfig) -> Result<Self> {
        if cfg.rounds == 0 {
            bail!(Config, "--rounds must be at least 1");
        }
        if !(cfg.lr.is_finite() && cfg.lr >= 0.0) {
            bail!(
                Config,
                "--lr must be a non-negative number (got {})",
                cfg.lr
            );
        }
        if !(cfg.momentum.is_finite() && (0.0..1.0).contains(&cfg.momentum)) {
            bail!(
                Config,
                "--momentum must be in [0, 1) (got {})",
                cfg.momentum
            );
        }
        if !(cfg.compute_ms.is_finite() && cfg.compute_ms >= 0.0) {
            bail!(
                Config,
                "--compute-ms must be a non-negative number (got {})",
                cfg.compute_ms
            );
        }
        if !(cfg.pad_mb.is_finite() && (0.0..=1000.0).contains(&cfg.pad_mb)) {
            bail!(Config, "--pad-mb must be in [0, 1000] (got {})", cfg.pad_mb);
        }
        let mut strategies: Vec<(&'static str, &'static str)> = Vec::new();
        for s in &cfg.strategies {
            let Some(&(name, planner_name)) = STRATEGIES.iter().find(|(n, _)| n == s) else {
                let known: Vec<&str> = STRATEGIES.iter().map(|(n, _)| *n).collect();
                return Err(TrainDemoError::UnknownStrategy {
                    name: s.clone(),
                    known: known.join(", "),
                });
            };
            if strategies.iter().any(|(n, _)| *n == name) {
                bail!(Config, "strategy '{name}' given twice");
            }
            strategies.push((name, planner_name));
        }
        if strategies.is_empty() {
            bail!(Config, "give at least one strategy");
        }

        let n = scenario.topology.node_count();
        let data = load_data(&cfg.dataset, cfg.seed)?;
        let model = Model {
            features: data.features,
            classes: data.classes,
        };
        let params = model.params();
        let elems = params.max((cfg.pad_mb * 1e6 / 4.0).round() as usize);
        let n_train = data.train_y.len();
        if n_train < n {
            bail!(
                Data,
                "{n_train} training rows cannot be partitioned over {n} nodes"
            );
        }
        let bounds: Vec<usize> = (0..=n).map(|v| v * n_train / n).collect();
        let sizes: Vec<usize> = bounds.windows(2).map(|b| b[1] - b[0]).collect();
        let initial_accuracy = model
            .evaluate(&vec![0.0; params], &data.test_x, &data.test_y)
            .0;
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
        let mut demo = Self {
            scenario,
            cfg: cfg.clone(),
            strategies,
            setup: Setup {
                dataset: data.name,
                description: data.description,
                rows: data.rows,
                train_rows: n_train,
                test_rows: data.test_y.len(),
                parameters: params,
                synchronized_elements: elems,
                scenario: scenario.name.clone(),
                nodes: n,
                partition_rows: (
                    sizes.iter().min().copied().unwrap_or(0),
                    sizes.iter().max().copied().unwrap_or(0),
                ),
                majority_accuracy,
                reference_accuracy: f64::NAN,
                reference_loss: f64::NAN,
            },
            data,
            model,
            bounds,
            initial_accuracy,
            reference_weights: Vec::new(),
        };
        // The reference: the same training with the nodes' f32 gradients summed locally in
        // node order, no network.
        let (reference_w, reference_acc) = demo.trainer().train(cfg.rounds, params, |inputs| {
            let mut sum = vec![0.0f32; params];
            for input in inputs {
                for (s, x) in sum.iter_mut().zip(input) {
                    *s += x;
                }
            }
            Ok(sum)
        })?;
        let (reference_accuracy, reference_loss) =
            model.evaluate(&reference_w, &demo.data.test_x, &demo.data.test_y);
        debug_assert_eq!(reference_acc.last().copied(), Some(reference_accuracy));
        demo.setup.reference_accuracy = reference_accuracy;
        demo.setup.reference_loss = reference_loss;
        demo.reference_weights = reference_w;
        Ok(demo)
    }

    pub fn setup(&self) -> &Setup {
        &self.setup
    }

    /// The strategies to run, in order.
    pub fn strategies(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.strategies.iter().map(|(name, _)| *name)
    }

    fn trainer(&self) -> Trainer<'_> {
        Trainer {
            data: &self.data,
            model: self.model,
            bounds: self.bounds.clone(),
            lr: self.cfg.lr as f32,
            momentum: self.cfg.momentum as f32,
        }
    }

    /// Trains once per strategy through the emulated WAN (up to `jobs` in parallel),
    /// reporting progress as `progress(strategy index, ..)`, and compares the results.
    pub fn run(&self, progress: &(dyn Fn(usize, Progress) + Sync)) -> Result<TrainDemoReport> {
        let jobs = self
            .cfg
            .jobs
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map_or(1, |n| n.get())
                    .min(2)
            })
            .max(1);
        let next = Mutex::new(0usize);
        let results: Mutex<Vec<Option<Result<StrategyReport>>>> =
            Mutex::new((0..self.strategies.len()).map(|_| None).collect());
        std::thread::scope(|scope| {
            for _ in 0..jobs.min(self.strategies.len()) {
                scope.spawn(|| loop {
                    let i = {
                        let mut next = next.lock().expect("queue lock");
                        let i = *next;
                        *next += 1;
                        i
                    };
                    let Some(&(name, planner_name)) = self.strategies.get(i) else {
                        break;
                    };
                    let r = self
                        .run_strategy(name, planner_name, &|p| progress(i, p))
                        .map_err(|e| TrainDemoError::Strategy {
                            name: name.to_string(),
                            source: Box::new(e),
                        });
                    results.lock().expect("results lock")[i] = Some(r);
                });
            }
        });
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
                max_dw_between =
                    max_dw_between.max(max_abs_diff(&rows[i].weights, &rows[j].weights));
            }
        }
        for r in &mut rows {
            r.max_abs_dw_vs_reference = max_abs_diff(&r.weights, &self.reference_weights);
        }
        let min_acc = rows
            .iter()
            .map(|r| r.final_accuracy)
            .fold(f64::INFINITY, f64::min);
        let max_acc = rows
            .iter()
            .map(|r| r.final_accuracy)
            .fold(f64::NEG_INFINITY, f64::max);
        let reference_accuracy = self.setup.reference_accuracy;
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
        Ok(TrainDemoReport {
            dataset: self.setup.dataset.to_string(),
            scenario: self.setup.scenario.clone(),
            nodes: self.setup.nodes,
            model: "softmax regression".into(),
            parameters: self.setup.parameters,
            synchronized_elements: self.setup.synchronized_elements,
            padding: "zeros after the model's gradient, standing for the rest of a large model's gradient",
            rounds: self.cfg.rounds,
            compute_ms: self.cfg.compute_ms,
            lr: self.cfg.lr,
            momentum: self.cfg.momentum,
            reference_accuracy,
            majority_accuracy: self.setup.majority_accuracy,
            target_accuracy: target,
            max_abs_dw_between_strategies: max_dw_between,
            accuracy_spread_pp: spread_pp,
            results: rows,
            max_accuracy: max_acc,
        })
    }

    fn run_strategy(
        &self,
        name: &str,
        planner_name: &str,
        progress: &dyn Fn(Progress),
    ) -> Result<StrategyReport> {
        let t0 = std::time::Instant::now();
        let planner = planner::by_name(planner_name, &PlannerOptions::default())?;
        let planner_label = planner.name().to_string();
        let cfg = ExperimentConfig {
            seed: self.cfg.seed,
            ..ExperimentConfig::default()
        };
        let elems = self.setup.synchronized_elements;
        let rounds = self.cfg.rounds;
        let mut cluster = EmulatedCluster::new(self.scenario, elems, planner, &cfg)?;
        let compute_s = self.cfg.compute_ms / 1e3;
        let mut times = Vec::with_capacity(rounds as usize);
        let mut sync_total = 0.0;
        let trainer = self.trainer();
        let (weights, accuracy) = trainer.train(rounds, elems, |inputs| {
            cluster.advance_s(compute_s)?;
            let (sum, sync_s) = cluster.allreduce(inputs)?;
            sync_total += sync_s;
            times.push(cluster.now_s());
            progress(Progress::Round { sync_s });
            Ok(sum)
        })?;
        progress(Progress::Done);
        let curve: Vec<(f64, f64)> = std::iter::once((0.0, self.initial_accuracy))
            .chain(times.iter().copied().zip(accuracy.iter().copied()))
            .collect();
        let (final_accuracy, final_test_loss) =
            self.model
                .evaluate(&weights, &self.data.test_x, &self.data.test_y);
        Ok(StrategyReport {
            strategy: name.to_string(),
            planner: planner_label,
            final_accuracy,
            final_test_loss,
            rounds,
            emulated_s: cluster.now_s(),
            mean_sync_s: sync_total / rounds as f64,
            time_to_target_s: f64::NAN,
            max_abs_dw_vs_reference: f64::NAN,
            curve,
            weights,
            wall_s: t0.elapsed().as_secs_f64(),
        })
    }
}
