#!/usr/bin/env bash
# Sets up everything and runs the local demo: a sandboxed node built of network namespaces.
# `--cluster`: the cluster demo instead (a real control plane, the chart installed with helm,
# two netns nodes, kubectl); its first run builds the Kubernetes binaries (scripts/k8s-binaries.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--cluster" ]; then
  shift
  ./scripts/bootstrap.sh
  ./scripts/k8s-binaries.sh
  # A private mount namespace: the demo's bpffs mount vanishes with it.
  exec unshare --mount --propagation private .venv/bin/python -m tests.k8s.demo "$@"
fi
./scripts/bootstrap.sh
exec .venv/bin/python -m lwt_agent.demo "$@"
