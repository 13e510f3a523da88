#!/usr/bin/env bash
# Sets up everything (Debian packages, .venv, BPF objects) and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh --test-tools
.venv/bin/ruff check .
exec .venv/bin/pytest "$@"
