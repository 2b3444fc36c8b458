#!/usr/bin/env bash
# The Python package's tests: builds netstorm-dp / netstorm-cp (release) and the `netstorm`
# package into the venv (maturin develop --release: the native module lands beside
# python/netstorm, the venv imports python/ in place), then runs pytest on python/tests
# (loopback clusters; no root needed). Assumes the venv exists: scripts/install-python-venv.sh.
#
#   scripts/test-python.sh [PYTEST ARGS...]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${NETSTORM_VENV:-/opt/netstorm-venv}
if [ ! -x "$VENV/bin/python" ]; then
    echo "test-python: no venv at $VENV: run scripts/install-python-venv.sh first" >&2
    exit 2
fi
cargo build --release -p netstorm-node --bins
# pyo3 builds for the venv's interpreter.
VIRTUAL_ENV=$VENV PATH=$VENV/bin:$PATH PYO3_PYTHON=$VENV/bin/python \
    "$VENV/bin/maturin" develop --release --manifest-path python/Cargo.toml --quiet
cd python
NETSTORM_BIN_DIR=$PWD/../target/release exec "$VENV/bin/python" -m pytest -q tests "$@"
