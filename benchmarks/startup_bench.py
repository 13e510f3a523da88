"""Agent cold start: from `lwt-agent run` to every targeted route carrying its program.

Each figure comes with a baseline measured in the same run on the same node, so the ratio
says how proportionate start-up is:

- standalone, N pods (10,000 in full mode) from a pods file: `lwt-agent run --once` (start,
  read the files, validate, target, load one program, attach, print status, exit), wall and
  CPU time, against the attach alone: one program loaded in this process and attached to
  the same N routes by the route engine (what start-up cannot do faster);
- cluster mode on a large node (250 local pods and 5,000 podSubnets routes to the other
  nodes' pod CIDRs, as a host-gw CNI installs them; full mode): a `lwt-agent run
  --kubeconfig` process against the Kubernetes API emulator, from its start until all
  5,250 routes carry a program, against the same inputs given as files to a standalone
  agent (the difference is the API: lists, watches, status patches).
"""
from __future__ import annotations

import ipaddress
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from benchmarks import agent_bench, shell
from benchmarks.errors import BenchError
from benchmarks.settings import Settings
from benchmarks.topology import OTHER_PODS_DEV, POD_B_IP, BenchNode

NODE = agent_bench.NODE_NAME
NAMESPACE = agent_bench.NAMESPACE
ADMIN_NAMESPACE = "lwt-system"
SUBNETS = ipaddress.ip_network("100.64.0.0/10")  # the other nodes' pod CIDRs (/24 each)
TIMEOUT_S = 300.0
# (standalone pods, cluster local pods, cluster podSubnets routes) per benchmark mode
SIZES = {"full": (10_000, 250, 5_000), "quick": (2_000, 50, 1_000), "tiny": (200, 10, 100)}


def run(settings: Settings, scratch: Path, progress: Callable[[str], None]) -> dict[str, Any]:
    pods, local, subnets = SIZES.get(settings.mode, SIZES["tiny"])
    return {"standalone": _standalone(pods, scratch, progress),
            "cluster": _cluster(local, subnets, scratch, progress)}


def failures(result: dict[str, Any] | None) -> list[str]:
    if not result:
        return []
    return [f"start-up, {name}: {part['error']}" for name, part in result.items()
            if isinstance(part, dict) and part.get("error")]


# --- standalone --------------------------------------------------------------------------

def _standalone(pods: int, scratch: Path, progress: Callable[[str], None]) -> dict[str, Any]:
    result: dict[str, Any] = {"pods": pods}
    node = BenchNode()
    work = scratch / f"startup-{pods}"
    work.mkdir()
    try:
        node.set_other_pods(pods - 1)
        ips = [POD_B_IP, *node.other_pod_ips(pods - 1)]
        result["attach_only_s"] = round(_attach_only(node, ips), 3)
        pin_dir = scratch / "bpffs" / f"startup-{pods}"
        pin_dir.mkdir()
        _write(work / "pods.yaml", agent_bench._pods(node, pods))
        _write(work / "policy.yaml", [agent_bench.policy([agent_bench.DENIED_TCP_PORT])])
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "lwt_agent.cli", "run", "--once", "--policy-file",
             str(work / "policy.yaml"), "--pods-file", str(work / "pods.yaml"), "--netns",
             node.host, "--pin-dir", str(pin_dir), "--node-name", NODE],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=TIMEOUT_S,
            preexec_fn=shell.die_with_parent)
        wall = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            raise BenchError(f"run --once exited {done.returncode}: {done.stderr[-800:]}")
        attached = _count(node, "encap bpf out")
        if attached < pods:
            raise BenchError(f"only {attached} of {pods} routes carry the program")
        result["cold_start_s"] = round(wall, 3)
        result["cold_start_cpu_s"] = round(after.ru_utime + after.ru_stime
                                           - before.ru_utime - before.ru_stime, 3)
        result["ratio_to_attach_only"] = round(wall / result["attach_only_s"], 1)
        shell.run([sys.executable, "-m", "lwt_agent.cli", "cleanup", "--netns", node.host,
                   "--pin-dir", str(pin_dir)])
        progress(f"start-up, standalone {pods} pods: run --once {wall:.2f} s wall "
                 f"({result['cold_start_cpu_s']:.2f} s CPU), the attach alone "
                 f"{result['attach_only_s']:.2f} s: ratio {result['ratio_to_attach_only']}")
    except (BenchError, OSError, subprocess.TimeoutExpired) as e:
        result["error"] = str(e)
        progress(f"FAILED start-up, standalone {pods} pods: {e}")
    finally:
        node.close()
    return result


def _attach_only(node: BenchNode, ips: list[str]) -> float:
    """One port-filter program loaded here, attached to `ips`' routes by the route engine,
    then detached again: the floor of any start-up."""
    from lwt_agent.bpf import Hook, ObjectSpec
    from lwt_agent.route import ProgramRef, RouteEngine, RouteIntent, labels
    from lwt_agent.route.model import Destination
    from lwt_policy.catalogue import CATALOGUE

    builtin = CATALOGUE["port-filter"]
    program = ObjectSpec.from_file(builtin.object_path()).load(builtin.section, Hook.OUT)
    try:
        label = labels.program_label("bench-baseline", "out", program.tag, program.id)
        ref = ProgramRef(program.fd, label)
        intents = [RouteIntent(Destination.of(ipaddress.ip_network(ip)), {"out": ref})
                   for ip in ips]
        with RouteEngine(node.host) as engine:
            started = time.monotonic()
            outcome = engine.converge(intents, {"bench-baseline"})
            elapsed = time.monotonic() - started
            if outcome.failures:
                raise BenchError(f"baseline attach failed: {next(iter(outcome.failures.values()))}")
            engine.converge([], {"bench-baseline"})
    finally:
        program.close()
    return elapsed


# --- cluster mode ------------------------------------------------------------------------

def _subnet_routes(node: BenchNode, count: int) -> list[str]:
    cidrs = [str(net) for net, _ in zip(SUBNETS.subnets(new_prefix=24), range(count),
                                        strict=False)]
    batch = "".join(f"route add {cidr} dev {OTHER_PODS_DEV} scope link\n" for cidr in cidrs)
    shell.run(["ip", "-n", node.host, "-batch", "-"], input_text=batch)
    return cidrs


def _inputs(node: BenchNode, local: int, cidrs: list[str]) -> dict[str, list[dict[str, Any]]]:
    nodes = [{"apiVersion": "v1", "kind": "Node",
              "metadata": {"name": NODE, "labels": {"kubernetes.io/os": "linux"}},
              "spec": {"podCIDRs": ["10.244.0.0/24"]}}]
    nodes += [{"apiVersion": "v1", "kind": "Node",
               "metadata": {"name": f"other-{i}", "labels": {"kubernetes.io/os": "linux"}},
               "spec": {"podCIDRs": [cidr]}} for i, cidr in enumerate(cidrs)]
    subnets = {"apiVersion": "lwt.dev/v1alpha1", "kind": "LwtRoutePolicy",
               "metadata": {"name": "bench-subnet-counters", "namespace": ADMIN_NAMESPACE},
               "spec": {"podSubnets": ["remote"],
                        "hooks": {"out": {"program": {"builtin": "counters"}}}}}
    return {"pods": agent_bench._pods(node, local), "nodes": nodes,
            "policies": [agent_bench.policy([agent_bench.DENIED_TCP_PORT]), subnets]}


def _cluster(local: int, subnets: int, scratch: Path,
             progress: Callable[[str], None]) -> dict[str, Any]:
    result: dict[str, Any] = {"local_pods": local, "subnet_routes": subnets}
    try:
        from lwt_kube import Kube, api_path
        from lwt_operator.config import OperatorConfig, Timings
        from lwt_operator.settings import AgentSettings

        from tests.k8s.conftest import POLICIES, start_api_server
        from tests.k8s.harness import RunningOperator
    except ImportError as e:
        return {**result, "skipped": f"no Kubernetes API stand here ({e})"}
    node = BenchNode()
    work = scratch / "startup-cluster"
    work.mkdir()
    api = operator = None
    want = local + subnets
    try:
        node.set_other_pods(local - 1)
        cidrs = _subnet_routes(node, subnets)
        inputs = _inputs(node, local, cidrs)
        # Baseline: the same inputs as files, standalone.
        for kind, docs in inputs.items():
            _write(work / f"{kind}.yaml", docs)
        result["standalone_s"] = round(_timed_agent(node, work, "standalone", want, [
            "--policy-file", str(work / "policies.yaml"), "--pods-file",
            str(work / "pods.yaml"), "--nodes-file", str(work / "nodes.yaml"),
            "--admin-namespace", ADMIN_NAMESPACE], scratch), 3)
        api = start_api_server(work)
        kube = Kube.at(api.url)
        operator = RunningOperator(OperatorConfig(
            kubeconfig=api.kubeconfig, namespace=ADMIN_NAMESPACE,
            agent=AgentSettings(image="registry.example/lwt:bench"),
            timings=Timings())).start()
        for obj in inputs["nodes"]:
            kube.create(api_path("v1/nodes"), obj)
        for obj in inputs["pods"]:
            kube.create(api_path("v1/pods", NAMESPACE), obj)
        for obj in inputs["policies"]:
            kube.create(api_path(POLICIES, obj["metadata"]["namespace"]), obj)
        time.sleep(2.0)  # the operator accepts both policies before the agent starts
        result["cluster_s"] = round(_timed_agent(node, work, "cluster", want, [
            "--kubeconfig", str(api.kubeconfig), "--admin-namespace", ADMIN_NAMESPACE,
            "--metrics-port", "0", "--metrics-address", "127.0.0.1"], scratch), 3)
        result["ratio_to_standalone"] = round(result["cluster_s"] / result["standalone_s"], 2)
        progress(f"start-up, cluster mode {local} pods + {subnets} podSubnets routes: "
                 f"{result['cluster_s']:.2f} s to all {want} routes, standalone with the same "
                 f"inputs {result['standalone_s']:.2f} s: ratio {result['ratio_to_standalone']}")
    except Exception as e:  # the emulator stand raises its own types; a figure is lost, not the run
        result["error"] = f"{type(e).__name__}: {e}"
        progress(f"FAILED start-up, cluster mode: {result['error']}")
    finally:
        if operator is not None:
            try:
                operator.stop()
            except Exception as e:  # a stop problem must not hide the figures
                result.setdefault("warnings", []).append(f"operator stop: {e}")
        if api is not None:
            api.close()
        node.close()
    return result


def _timed_agent(node: BenchNode, work: Path, name: str, want: int, args: list[str],
                 scratch: Path) -> float:
    """Seconds from an agent's start until `want` routes carry a program (it then stops
    with SIGTERM, detaching)."""
    pin_dir = scratch / "bpffs" / f"startup-{name}"
    pin_dir.mkdir()
    log_path = work / f"{name}.log"
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lwt_agent.cli", "run", *args, "--node-name", NODE, "--netns",
         node.host, "--pin-dir", str(pin_dir), "--detach-on-exit"],
        stdout=subprocess.DEVNULL, stderr=log_path.open("w"), stdin=subprocess.DEVNULL,
        preexec_fn=shell.die_with_parent)
    try:
        while time.monotonic() - started < TIMEOUT_S:
            if proc.poll() is not None:
                raise BenchError(f"the {name} agent exited {proc.returncode}: "
                                 f"{log_path.read_text()[-800:].strip()}")
            if _count(node, "encap bpf out") >= want:
                return time.monotonic() - started
            time.sleep(0.1)
        raise BenchError(f"the {name} agent did not attach {want} routes in {TIMEOUT_S:.0f} s")
    finally:
        shell.stop(proc, grace=60)


def _count(node: BenchNode, text: str) -> int:
    return shell.run(["ip", "-n", node.host, "route", "show"]).stdout.count(text)


def _write(path: Path, docs: list[dict[str, Any]]) -> None:
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
