//! NetStorm errors as the typed Python exceptions of `netstorm.errors` (defined in Python, so
//! they carry attributes such as a config error's `file`, `line` and `key`).

use netstorm_node::nodefile::NodeFileError;
use netstorm_node::{ConfigError, SessionError};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// The exception classes of `netstorm.errors`.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Netstorm,
    Timeout,
    Config,
    Buffer,
    NoDataPlane,
    PeerLost,
    MembersJoined,
}

impl Kind {
    fn class_name(self) -> &'static str {
        match self {
            Kind::Netstorm => "NetstormError",
            Kind::Timeout => "TimeoutError",
            Kind::Config => "ConfigError",
            Kind::Buffer => "BufferError",
            Kind::NoDataPlane => "DataPlaneNotFoundError",
            Kind::PeerLost => "PeerLostError",
            Kind::MembersJoined => "MembersJoinedError",
        }
    }
}

/// `kind(message)`.
pub fn raise(py: Python<'_>, kind: Kind, message: String) -> PyErr {
    raise_with(py, kind, message, |_| Ok(()))
}

/// `kind(message, **attrs)` with the keyword arguments `attrs` sets.
pub fn raise_with(
    py: Python<'_>,
    kind: Kind,
    message: String,
    attrs: impl FnOnce(&Bound<'_, PyDict>) -> PyResult<()>,
) -> PyErr {
    let made = (|| -> PyResult<PyErr> {
        let class = py.import("netstorm.errors")?.getattr(kind.class_name())?;
        let kwargs = PyDict::new(py);
        attrs(&kwargs)?;
        Ok(PyErr::from_value(
            class.call((message.clone(),), Some(&kwargs))?,
        ))
    })();
    // Without the Python half of the package (the module imported on its own).
    made.unwrap_or_else(|_| PyRuntimeError::new_err(message))
}

pub fn config_error(py: Python<'_>, e: &ConfigError) -> PyErr {
    let (file, line, key) = match e {
        ConfigError::Io { path, .. } => (path.display().to_string(), None, None),
        ConfigError::Parse { file, line, .. } => (file.clone(), Some(*line), None),
        ConfigError::Invalid {
            file, line, key, ..
        } => (file.clone(), *line, Some(key.clone())),
    };
    raise_with(py, Kind::Config, e.to_string(), |kw| {
        kw.set_item("file", file)?;
        kw.set_item("line", line)?;
        kw.set_item("key", key)
    })
}

pub fn session_error(py: Python<'_>, e: &SessionError, config: &str) -> PyErr {
    match e {
        SessionError::Config(c) => config_error(py, c),
        SessionError::Timeout {
            round,
            waited,
            done_workers,
            workers,
            ..
        } => raise_with(py, Kind::Timeout, e.to_string(), |kw| {
            kw.set_item("round", round)?;
            kw.set_item("waited", waited.as_secs_f64())?;
            kw.set_item("done_workers", done_workers)?;
            kw.set_item("workers", workers)
        }),
        SessionError::Length { got, want } => {
            raise(py, Kind::Buffer, size_message(*got, *want, config))
        }
        SessionError::NodeFile(NodeFileError::Mismatch {
            field: "buffer_elems",
            found,
            expected,
            path,
        }) => raise_with(
            py,
            Kind::Config,
            format!(
                "{config}: buffer_elems = {expected}, but the netstorm-dp serving {path} was \
                 started with buffer_elems = {found}: restart it with this config"
            ),
            |kw| {
                kw.set_item("file", config)?;
                kw.set_item("line", None::<usize>)?;
                kw.set_item("key", "buffer_elems")
            },
        ),
        SessionError::NodeFile(_) => raise(py, Kind::Netstorm, e.to_string()),
        SessionError::Alone => raise_with(py, Kind::PeerLost, e.to_string(), |kw| {
            kw.set_item("nodes", Vec::<u16>::new())
        }),
        SessionError::PeerLost { round, lost } => {
            raise_with(py, Kind::PeerLost, e.to_string(), |kw| {
                kw.set_item("round", round)?;
                kw.set_item("nodes", lost.clone())
            })
        }
        SessionError::MembersJoined {
            round,
            joined,
            members,
        } => raise_with(py, Kind::MembersJoined, e.to_string(), |kw| {
            kw.set_item("round", round)?;
            kw.set_item("nodes", joined.clone())?;
            kw.set_item("members", members.clone())
        }),
        SessionError::SyncLength { .. } => raise(py, Kind::Buffer, e.to_string()),
        SessionError::NoIdentity => raise(py, Kind::Netstorm, e.to_string()),
    }
}

/// The refusal of a buffer whose size is not the cluster's round size.
pub fn size_message(got: usize, want: usize, config: &str) -> String {
    format!(
        "buffer has {got} floats, the cluster's buffer_elems is {want}: set buffer_elems = {got} \
         in {config} (and restart its netstorm-dp processes), or use allreduce_many(), which \
         packs any sizes into rounds of buffer_elems"
    )
}
