#!/usr/bin/env bash
# The README's test command: installs what the tests need (when root), then runs the whole
# suite (unit, property, end-to-end tests of every crate).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo test --workspace "$@"
