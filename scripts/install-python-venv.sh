#!/usr/bin/env bash
# Creates the Python venv the Python package's tests and the gloo comparison use, once:
# /opt/netstorm-venv (or $NETSTORM_VENV) with torch, numpy, scikit-learn, maturin and pytest
# from PyPI. Idempotent: installs python3-venv with apt only if venv creation needs it, and
# pip-installs only the packages the venv lacks (torch pulls ~5 GB of CUDA libraries; it runs
# on CPU). Needs root for apt and /opt.
set -euo pipefail
VENV=${NETSTORM_VENV:-/opt/netstorm-venv}
PY=/usr/bin/python3
if [ ! -x "$VENV/bin/python" ]; then
    if ! "$PY" -m venv --help >/dev/null 2>&1 || ! "$PY" -c 'import ensurepip' 2>/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-dev
    fi
    "$PY" -m venv "$VENV"
fi
missing=()
for pkg in torch numpy sklearn:scikit-learn maturin pytest; do
    mod=${pkg%%:*} dist=${pkg#*:}
    "$VENV/bin/python" -c "import $mod" 2>/dev/null || missing+=("$dist")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "install-python-venv: installing ${missing[*]} into $VENV"
    "$VENV/bin/pip" install --no-cache-dir "${missing[@]}"
fi
# pyo3 links the workspace build (cargo test) against libpython: it needs the headers too.
if [ ! -e /usr/include/python3.11/Python.h ] && ! ls /usr/include/python3*/Python.h >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-dev
fi
echo "install-python-venv: $VENV ready ($("$VENV/bin/python" -c 'import torch, numpy, sklearn; print("torch", torch.__version__, "numpy", numpy.__version__, "scikit-learn", sklearn.__version__)'))"
