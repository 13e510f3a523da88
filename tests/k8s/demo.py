"""The cluster demo (`./scripts/run-demo.sh --cluster`): a real control plane, the chart
installed with helm, two nodes made of network namespaces, the example policies applied with
kubectl, real traffic, then the policy deleted and the routes restored.

Run it through the script: it needs the control-plane binaries (scripts/k8s-binaries.sh,
built once) and a private mount namespace for its bpffs (the script uses `unshare`).
Exit 0 when every expectation held, 1 otherwise.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.agent.harness import encap_labels, wait_for
from tests.k8s.binaries import BinariesMissing
from tests.k8s.cluster import ControlPlane
from tests.k8s.stand import REPO, Stand, create_namespace, installed_stand
from tests.topology import Node

EXAMPLE = REPO / "examples" / "deny-port.yaml"
POLICY = "web-deny-debug-ports"


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def show(stand: Stand, *args: str) -> str:
    print(f"$ kubectl {' '.join(args)}", flush=True)
    out = stand.kubectl(*args).stdout
    print(out.rstrip(), flush=True)
    return out


def reaches(node: Node, port: int) -> bool:
    pod = node.pods[0]
    listener = node.tcp_listen(pod.ns, pod.ipv4, port)
    try:
        return node.tcp_connects(node.client, pod.ipv4, port, timeout=0.5)
    finally:
        listener.close()


def traffic(stand: Stand, expect_blocked: bool) -> bool:
    ok = True
    for name, node in stand.nodes.items():
        for port in (80, 8080):
            passed = reaches(node, port)
            blocked = port == 8080 and expect_blocked
            verdict = "passes" if passed else "dropped"
            good = passed != blocked
            ok &= good
            print(f"  {name}: client -> {node.pods[0].ipv4}:{port} {verdict}"
                  f"{'' if good else '   <-- UNEXPECTED'}", flush=True)
    return ok


def run(bpffs: Path) -> bool:
    workdir = Path(tempfile.mkdtemp(prefix="lwt-cluster-demo-"))
    try:
        say("starting etcd, kube-apiserver and kube-controller-manager on 127.0.0.1")
        with ControlPlane.started(workdir) as cp:
            print(f"Kubernetes {cp.server_version}, up in {cp.startup_seconds:.1f} s", flush=True)
            say("helm install lwt charts/lwt-operator (CRDs applied server-side first); "
                "two nodes made of network namespaces")
            with installed_stand(cp, bpffs, prefix="lwtD") as stand:
                return scenario(stand)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def scenario(stand: Stand) -> bool:
    ok = True
    show(stand, "get", "nodes", "-o", "wide")
    show(stand, "get", "pods", "-n", stand.namespace, "-o", "wide")
    create_namespace(stand.cp, "shop", None)
    for name, node in stand.nodes.items():
        stand.kubelet.run_pod("shop", f"{name}-web-0", name, {"app": "web"},
                              [node.pods[0].ipv4, node.pods[0].ipv6])
    say("before any policy")
    ok &= traffic(stand, expect_blocked=False)

    say(f"kubectl apply --server-side -f {EXAMPLE.relative_to(REPO)}")
    print(stand.kubectl("apply", "--server-side", "-f", str(EXAMPLE)).stdout.rstrip())
    wait_for(lambda: "True" in stand.kubectl("get", "lrp", "-n", "shop", POLICY, "-o",
                                             "jsonpath={.status.conditions[?(@.type=="
                                             "\"Ready\")].status}").stdout, 60,
             "the policy Ready")
    show(stand, "get", "lrp", "-A")
    say("traffic with the policy: TCP 8080 is dropped on both nodes")
    ok &= traffic(stand, expect_blocked=True)
    for name, node in stand.nodes.items():
        print(f"  {name} route: {node.pods[0].ipv4} -> {encap_labels(node)[node.pods[0].ipv4]}")
    show(stand, "describe", "lrp", "-n", "shop", POLICY)

    say("kubectl delete lrp: the agents detach, the finalizer is released")
    t0 = time.monotonic()
    show(stand, "delete", "lrp", "-n", "shop", POLICY)
    print(f"(gone after {time.monotonic() - t0:.1f} s)")
    for name, node in stand.nodes.items():
        restored = encap_labels(node)[node.pods[0].ipv4] == ""
        ok &= restored
        state = "restored" if restored else "STILL HAS A PROGRAM"
        print(f"  {name}: route to {node.pods[0].ipv4} {state}")
    ok &= traffic(stand, expect_blocked=False)
    stand.kubectl("delete", "namespace", "shop", "--wait=false")
    return ok


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="run-demo.sh --cluster", description=__doc__).parse_args(argv)
    bpffs = Path(tempfile.mkdtemp(prefix="lwt-demo-bpffs-"))
    subprocess.run(["mount", "-t", "bpf", "bpf", str(bpffs)], check=True)
    try:
        ok = run(bpffs)
    except BinariesMissing as exc:
        print(exc, file=sys.stderr)
        return 2
    finally:
        subprocess.run(["umount", "-l", str(bpffs)], check=False)
        bpffs.rmdir()
    say("demo finished: every expectation held" if ok else "demo finished: SOMETHING FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
