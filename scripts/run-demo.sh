#!/usr/bin/env bash
# Sets up everything and runs the local demo: a sandboxed node built of network namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
exec .venv/bin/python -m lwt_agent.demo "$@"
