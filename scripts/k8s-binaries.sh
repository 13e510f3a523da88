#!/usr/bin/env bash
# Builds the upstream control-plane binaries the test suite runs (kube-apiserver,
# kube-controller-manager, kubectl, etcd, helm) from the Go module proxy at the pinned
# versions below, and caches them outside the work tree keyed by version, so a second run
# (or a fresh clone on the same machine) builds nothing.
#
#   scripts/k8s-binaries.sh              build what is missing, print progress and timings
#   scripts/k8s-binaries.sh --bin-dir    print the directory holding all five binaries
#                                        (exit 1 if any is missing; never builds)
#   scripts/k8s-binaries.sh --check      exit 0 if all five are cached, 1 otherwise
#
# LWT_K8S_CACHE overrides the cache root (default /var/cache/lwt-operator/k8s).
# This file is the one place the versions are pinned; tests/k8s/binaries.py asks it.
set -euo pipefail

KUBERNETES_VERSION=v1.37.2   # kube-apiserver, kube-controller-manager, kubectl
ETCD_VERSION=v3.6.8          # go.etcd.io/etcd/server/v3
HELM_VERSION=v3.22.0         # helm.sh/helm/v3

CACHE=${LWT_K8S_CACHE:-/var/cache/lwt-operator/k8s}
KEY="kubernetes-${KUBERNETES_VERSION}_etcd-${ETCD_VERSION}_helm-${HELM_VERSION}"
BIN="$CACHE/$KEY/bin"
BINARIES=(kube-apiserver kube-controller-manager kubectl etcd helm)

all_cached() {
  local b
  for b in "${BINARIES[@]}"; do [ -x "$BIN/$b" ] || return 1; done
}

case "${1:-}" in
  --bin-dir) all_cached || { echo "k8s-binaries: not built yet; run scripts/k8s-binaries.sh" >&2; exit 1; }
             echo "$BIN"; exit 0 ;;
  --check) all_cached; exit $? ;;
  "") ;;
  *) echo "usage: $0 [--bin-dir|--check]" >&2; exit 2 ;;
esac

if all_cached; then
  echo "k8s-binaries: all cached in $BIN (kubernetes $KUBERNETES_VERSION, etcd $ETCD_VERSION, helm $HELM_VERSION); nothing to build"
  exit 0
fi

command -v go >/dev/null || PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "k8s-binaries: needs a Go toolchain >= 1.26 on PATH (Kubernetes $KUBERNETES_VERSION's go.mod asks for it)" >&2; exit 1; }
mkdir -p "$BIN" "$CACHE/src"
# One build at a time per cache: parallel CI runs would otherwise race on the same outputs.
exec 9>"$CACHE/.lock"
flock 9

export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0
export GOPROXY=${GOPROXY:-https://proxy.golang.org}
LDFLAGS="-s -w"

timed() {  # timed LABEL CMD...: run CMD, print how long it took
  local label=$1 t0=$SECONDS; shift
  echo "k8s-binaries: building $label ..."
  "$@"
  echo "k8s-binaries: built $label in $((SECONDS - t0)) s"
}

# k8s.io/kubernetes replaces every k8s.io/* staging module with ./staging/src/...; `go
# build` of it from the proxy therefore needs a wrapper module that requires it and points
# each staging module at its published v0.x twin (same minor: v1.X.Y <-> v0.X.Y).
build_kubernetes() {
  local dir="$CACHE/src/kubernetes-$KUBERNETES_VERSION" staging="v0.${KUBERNETES_VERSION#v1.}"
  mkdir -p "$dir"
  (
    cd "$dir"
    local gomod
    gomod=$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/^\s*"GoMod": "\(.*\)",\?$/\1/p')
    {
      echo "module lwt.test/kubernetes-binaries"
      echo
      sed -n 's/^go \(.*\)$/go \1/p' "$gomod" | head -1
      echo
      echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
      echo
      echo "replace ("
      sed -n 's#^\s*\(k8s\.io/[a-z0-9-]*\) => \./staging/.*#\t\1 => \1 '"$staging"'#p' "$gomod"
      echo ")"
    } > go.mod
    cat > tools.go <<'EOF'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
EOF
    go mod tidy -e >/dev/null 2>&1 || true
    # Stamp the version (the release build does it with ldflags too): helm checks the chart's
    # kubeVersion against it and kubectl reports it; unstamped, it reads v0.0.0-master.
    local minor=${KUBERNETES_VERSION#v1.} stamp="" pkg
    minor=${minor%%.*}
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      stamp+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
      stamp+=" -X $pkg.gitTreeState=clean"
    done
    go build -trimpath -ldflags="$LDFLAGS$stamp" -o "$BIN/" \
      k8s.io/kubernetes/cmd/kube-apiserver \
      k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kubectl
  )
}

# etcd's server module replaces its sibling modules with ../ paths too: same wrapper trick.
build_etcd() {
  local dir="$CACHE/src/etcd-$ETCD_VERSION"
  mkdir -p "$dir"
  (
    cd "$dir"
    cat > go.mod <<EOF
module lwt.test/etcd-binary

go 1.25

require go.etcd.io/etcd/server/v3 $ETCD_VERSION

replace (
	go.etcd.io/etcd/api/v3 => go.etcd.io/etcd/api/v3 $ETCD_VERSION
	go.etcd.io/etcd/client/pkg/v3 => go.etcd.io/etcd/client/pkg/v3 $ETCD_VERSION
	go.etcd.io/etcd/client/v3 => go.etcd.io/etcd/client/v3 $ETCD_VERSION
	go.etcd.io/etcd/pkg/v3 => go.etcd.io/etcd/pkg/v3 $ETCD_VERSION
)
EOF
    cat > tools.go <<'EOF'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
EOF
    go mod tidy -e >/dev/null 2>&1 || true
    go build -trimpath -ldflags="$LDFLAGS" -o "$BIN/etcd" go.etcd.io/etcd/server/v3
  )
}

build_helm() {
  GOBIN="$BIN" go install -trimpath -ldflags="$LDFLAGS" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
}

total0=$SECONDS
[ -x "$BIN/etcd" ] || timed "etcd $ETCD_VERSION" build_etcd
[ -x "$BIN/helm" ] || timed "helm $HELM_VERSION" build_helm
if [ ! -x "$BIN/kube-apiserver" ] || [ ! -x "$BIN/kube-controller-manager" ] || [ ! -x "$BIN/kubectl" ]; then
  timed "kube-apiserver, kube-controller-manager, kubectl $KUBERNETES_VERSION" build_kubernetes
fi
all_cached || { echo "k8s-binaries: build finished but binaries are missing from $BIN" >&2; exit 1; }
echo "k8s-binaries: all built in $((SECONDS - total0)) s into $BIN"
