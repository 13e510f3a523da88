#!/usr/bin/env bash
# Installs everything the demo, the tests and the benchmarks need on a fresh Debian machine,
# as root: Debian packages, the project's virtualenv (.venv) and the compiled BPF objects.
# Idempotent: a second run only checks. `--test-tools` also prepares what only the test
# suite needs (checkov in its own virtualenv, .venv-checkov; the Kubernetes control-plane
# binaries, scripts/k8s-binaries.sh).
set -euo pipefail
TEST_TOOLS=0
[ "${1:-}" = "--test-tools" ] && TEST_TOOLS=1
cd "$(dirname "$0")/.."

DEB_PACKAGES=(
  make clang llvm libbpf-dev bpftool iproute2 linux-libc-dev
  python3 python3-venv python3-dev
  iperf3 tcpdump socat iptables nftables procps util-linux openssl
)

missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  echo "bootstrap: installing the project and its test and benchmark dependencies into .venv"
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e '.[test,bench]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi

echo "bootstrap: building BPF objects"
make -s -C bpf

if [ "$TEST_TOOLS" = 1 ]; then
  tests/packaging/bootstrap-checkov.sh
  # The real control plane of the Kubernetes tests: built once from the Go module proxy and
  # cached outside the work tree (first build ~20-40 min on 2 cores; then a no-op).
  scripts/k8s-binaries.sh
fi
