//! `netstorm._netstorm`, the native half of the `netstorm` Python package: a trainer's
//! [`netstorm_node::Session`] for Python buffers. Buffers are taken through the buffer
//! protocol (numpy arrays, torch CPU tensors via `Tensor.numpy()`) and reduced in place:
//! the only copies are the ones into and out of the node file, as in the Rust `Session`,
//! and the GIL is released while a round runs. The Python half (`netstorm/__init__.py`)
//! checks torch tensors and defines the exceptions (`netstorm.errors`).
#![deny(unsafe_code)]

mod buffer;
mod errors;
mod pack;
mod rounds;

use buffer::Buffers;
use errors::{config_error, raise, session_error, size_message, Kind};
use netstorm_node::{ClusterConfig, Session, SessionError};
use pyo3::prelude::*;
use rounds::{divide, run_rounds, CallError, CallStats, Contribution};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Statistics of a call's last round.
#[pyclass(module = "netstorm._netstorm", name = "RoundStats", frozen, get_all)]
#[derive(Debug, Clone)]
pub struct PyRoundStats {
    /// Cluster-wide number of the call's last round.
    round: u64,
    /// Rounds the call ran (buffers larger than `buffer_elems` take several).
    rounds: usize,
    /// Seconds from handing the first round over to having the last result back.
    time: f64,
    /// Policy epoch the last round ran under (0 if unknown).
    epoch: u64,
    /// Nodes whose buffers the sum holds. Today always every node of the cluster; with
    /// membership (issue 19) the live nodes of the round.
    contributors: usize,
    /// Floats the call reduced.
    elems: usize,
}

#[pymethods]
impl PyRoundStats {
    fn __repr__(&self) -> String {
        format!(
            "RoundStats(round={}, rounds={}, time={:.6}, epoch={}, contributors={}, elems={})",
            self.round, self.rounds, self.time, self.epoch, self.contributors, self.elems
        )
    }
}

/// A trainer's connection to its node's `netstorm-dp`.
#[pyclass(module = "netstorm._netstorm", name = "Session")]
#[derive(Debug)]
pub struct PySession {
    session: Session,
    config: String,
    node: String,
    node_id: usize,
    node_names: Vec<String>,
    /// This node's data-plane IP (reachable from the other nodes, so a side channel such as
    /// the torch backend's gloo group binds to it).
    host: String,
    timeout: f64,
    last: Option<PyRoundStats>,
    /// The round a call timed out in: the dp may still run it and write the shared buffer,
    /// so this session refuses further calls (a new one waits for that round first).
    timed_out: Option<u64>,
}

/// A timeout given in seconds: negative or NaN is zero, too large (or infinite) is forever.
fn seconds(s: f64) -> Duration {
    if s.is_nan() || s <= 0.0 {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX)
}

enum ConnectFailure {
    Session(SessionError),
    NotServed(String),
}

/// Opens the node's session, waiting up to `wait` for a live dp to serve it.
fn connect_waiting(
    cfg: &ClusterConfig,
    node: &str,
    wait: Duration,
) -> Result<Session, ConnectFailure> {
    let t0 = Instant::now();
    loop {
        let why = match Session::connect(cfg, node) {
            Ok(s) => return Ok(s),
            // Missing, still being created, or left by a dp that is gone (`NotServed`).
            Err(SessionError::NodeFile(e)) if e.is_dp_pending() => e.to_string(),
            Err(e) => return Err(ConnectFailure::Session(e)),
        };
        if t0.elapsed() >= wait {
            return Err(ConnectFailure::NotServed(why));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn parse_average(py: Python<'_>, op: &str) -> PyResult<bool> {
    match op.to_ascii_lowercase().as_str() {
        "sum" => Ok(false),
        "avg" | "mean" => Ok(true),
        _ => Err(raise(
            py,
            Kind::Netstorm,
            format!("op {op:?} is not supported: NetStorm all-reduces with \"sum\" or \"avg\""),
        )),
    }
}

impl PySession {
    fn contributors(&self) -> usize {
        // Issue 19 (membership) will report the round's live nodes; today every node adds in.
        self.node_names.len()
    }

    /// Runs a call's rounds with the GIL released and records its statistics.
    fn run(
        &mut self,
        py: Python<'_>,
        bufs: &[Bound<'_, PyAny>],
        contribution: Contribution,
        read_back: bool,
        average: bool,
        check_layout: bool,
    ) -> PyResult<PyRoundStats> {
        if let Some(round) = self.timed_out {
            return Err(raise(
                py,
                Kind::Netstorm,
                format!(
                    "this session timed out in round {round}, which the dp may still be \
                     running: open a new netstorm.Session (it waits for that round to end)"
                ),
            ));
        }
        let mut held = Buffers::get(bufs)?;
        let elems = held.lens().iter().sum();
        let contributors = self.contributors();
        let session = &mut self.session;
        let res: Result<CallStats, CallError> = py.detach(|| {
            let mut parts = held.slices();
            let check = check_layout.then_some(contributors);
            let st = run_rounds(session, &mut parts, contribution, read_back, check)?;
            if average {
                divide(&mut parts, contributors);
            }
            Ok(st)
        });
        let st = res.map_err(|e| match e {
            CallError::Session(e) => {
                if let SessionError::Timeout { round, .. } = e {
                    self.timed_out = Some(round);
                }
                session_error(py, &e, &self.config)
            }
            e @ CallError::Layout { .. } => raise(py, Kind::Buffer, e.to_string()),
        })?;
        let stats = PyRoundStats {
            round: st.last.round,
            rounds: st.rounds,
            time: st.elapsed.as_secs_f64(),
            epoch: st.last.epoch,
            contributors,
            elems,
        };
        self.last = Some(stats.clone());
        Ok(stats)
    }
}

#[pymethods]
impl PySession {
    /// Connects to the `netstorm-dp` serving `node` of the cluster config `config`, waiting
    /// up to `connect_timeout` seconds for it; rounds wait up to `timeout` seconds (default:
    /// the config's `trainer_timeout_s`).
    #[new]
    #[pyo3(signature = (config, node, connect_timeout = 30.0, timeout = None))]
    fn new(
        py: Python<'_>,
        config: PathBuf,
        node: &str,
        connect_timeout: f64,
        timeout: Option<f64>,
    ) -> PyResult<Self> {
        let cfg = ClusterConfig::load(&config).map_err(|e| config_error(py, &e))?;
        let me = cfg.node(node).map_err(|e| config_error(py, &e))?;
        let (node_id, host) = (me.id as usize, me.address.ip().to_string());
        let config_name = config.display().to_string();
        let wait = seconds(connect_timeout);
        let mut session = py
            .detach(|| connect_waiting(&cfg, node, wait))
            .map_err(|f| match f {
                ConnectFailure::Session(e) => session_error(py, &e, &config_name),
                ConnectFailure::NotServed(why) => raise(
                    py,
                    Kind::NoDataPlane,
                    format!(
                        "no netstorm-dp serves node '{node}' of job {} (waited {connect_timeout} s; \
                         {why}): start it with `netstorm up --config {config_name} --node {node}`",
                        cfg.job
                    ),
                ),
            })?;
        let timeout = timeout.unwrap_or(cfg.trainer_timeout_s);
        session.set_timeout(seconds(timeout));
        Ok(Self {
            session,
            config: config_name,
            node: node.to_string(),
            node_id,
            node_names: cfg.nodes.iter().map(|n| n.name.clone()).collect(),
            host,
            timeout,
            last: None,
            timed_out: None,
        })
    }

    /// All-reduces `buf` in place: exactly `buffer_elems` float32, one round.
    #[pyo3(signature = (buf, op = "sum"))]
    fn allreduce(
        &mut self,
        py: Python<'_>,
        buf: Bound<'_, PyAny>,
        op: &str,
    ) -> PyResult<PyRoundStats> {
        let average = parse_average(py, op)?;
        let held = Buffers::get(std::slice::from_ref(&buf))?;
        let want = self.session.buffer_elems();
        let got = held.lens()[0];
        drop(held);
        if got != want {
            return Err(raise(
                py,
                Kind::Buffer,
                size_message(got, want, &self.config),
            ));
        }
        self.run(py, &[buf], Contribution::Buffers, true, average, false)
    }

    /// All-reduces several buffers in place, packed back to back into as few rounds of
    /// `buffer_elems` as they fit (the last one padded).
    #[pyo3(signature = (bufs, op = "sum"))]
    fn allreduce_many(
        &mut self,
        py: Python<'_>,
        bufs: Vec<Bound<'_, PyAny>>,
        op: &str,
    ) -> PyResult<PyRoundStats> {
        let average = parse_average(py, op)?;
        self.run(py, &bufs, Contribution::Buffers, true, average, true)
    }

    /// Every node ends with the buffers of node `root` (a name or an id), bit for bit; every
    /// node must pass buffers of the same sizes.
    fn broadcast(
        &mut self,
        py: Python<'_>,
        bufs: Vec<Bound<'_, PyAny>>,
        root: Bound<'_, PyAny>,
    ) -> PyResult<PyRoundStats> {
        let root_id = if let Ok(name) = root.extract::<String>() {
            self.node_names.iter().position(|n| *n == name)
        } else {
            root.extract::<usize>()
                .ok()
                .filter(|&i| i < self.node_names.len())
        };
        let Some(root_id) = root_id else {
            return Err(raise(
                py,
                Kind::Netstorm,
                format!(
                    "broadcast root {} is not a node of {} (nodes: {})",
                    root.repr().map(|r| r.to_string()).unwrap_or_default(),
                    self.config,
                    self.node_names.join(", ")
                ),
            ));
        };
        let me = root_id == self.node_id;
        let contribution = if me {
            Contribution::Buffers
        } else {
            Contribution::Identity
        };
        self.run(py, &bufs, contribution, !me, false, true)
    }

    /// Every member's state bytes become node `root`'s, exactly (issue 19 rejoin): the
    /// call to make, on every member with the same root, after `MembersJoinedError`.
    /// Takes and returns `bytes` (copied: state sync is rare, not per step).
    fn sync_state<'py>(
        &mut self,
        py: Python<'py>,
        state: Vec<u8>,
        root: usize,
    ) -> PyResult<Bound<'py, pyo3::types::PyBytes>> {
        if root >= self.node_names.len() {
            return Err(raise(
                py,
                Kind::Netstorm,
                format!(
                    "sync_state root {root} is not a node id of {} (nodes: {})",
                    self.config,
                    self.node_names.join(", ")
                ),
            ));
        }
        let mut state = state;
        let session = &mut self.session;
        let res = py.detach(|| session.sync_state(&mut state, root as u16));
        if let Err(e) = res {
            if let SessionError::Timeout { round, .. } = e {
                self.timed_out = Some(round);
            }
            return Err(session_error(py, &e, &self.config));
        }
        Ok(pyo3::types::PyBytes::new(py, &state))
    }

    /// Floats one round carries (the cluster's `buffer_elems`).
    #[getter]
    fn buffer_elems(&self) -> usize {
        self.session.buffer_elems()
    }
    #[getter]
    fn node(&self) -> &str {
        &self.node
    }
    #[getter]
    fn node_id(&self) -> usize {
        self.node_id
    }
    /// Node names in id order.
    #[getter]
    fn nodes(&self) -> Vec<String> {
        self.node_names.clone()
    }
    /// This node's IP address in the cluster config.
    #[getter]
    fn host(&self) -> &str {
        &self.host
    }
    #[getter]
    fn config(&self) -> &str {
        &self.config
    }
    /// Seconds a round may take before `netstorm.TimeoutError`.
    #[getter]
    fn timeout(&self) -> f64 {
        self.timeout
    }
    #[setter]
    fn set_timeout(&mut self, secs: f64) {
        self.timeout = secs;
        self.session.set_timeout(seconds(secs));
    }
    /// The round the next call starts with.
    #[getter]
    fn next_round(&self) -> u64 {
        self.session.next_round()
    }
    #[getter]
    fn dp_pid(&self) -> u32 {
        self.session.dp_pid()
    }
    /// Statistics of the last call (None before the first).
    #[getter]
    fn last_stats(&self) -> Option<PyRoundStats> {
        self.last.clone()
    }
    fn __repr__(&self) -> String {
        format!(
            "Session(node={:?}, config={:?}, buffer_elems={}, next_round={})",
            self.node,
            self.config,
            self.session.buffer_elems(),
            self.session.next_round()
        )
    }
}

#[pymodule]
fn _netstorm(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PySession>()?;
    m.add_class::<PyRoundStats>()?;
    Ok(())
}
