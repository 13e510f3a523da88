"""The agent's capability set, proven on the real kernel: the documented set (docs/install.md,
which test_chart.py holds the chart's `agent.capabilities` to) suffices for everything the agent
does to the kernel (load every built-in on every hook it declares, with its maps, BTF and ring
buffer, pin on bpffs, reopen pins, add plain routes, attach each program to an encap route), and
every member of it is necessary. CAP_PERFMON is not in the set: a ConfigMap program that needs
it is refused, with the verifier's reason in the policy's status.

Each case runs capability_probe.py as root with every other capability dropped (setpriv),
inside a network namespace of its own. Programs loaded: at most 14 per case, 3 cases; then
the real agent runs with the documented set and loads 3, and once more to refuse one.
"""
from __future__ import annotations

import base64
import json
import platform
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from lwt_policy.catalogue import CATALOGUE

from .test_chart import documented_capabilities

PROBE = Path(__file__).resolve().parent / "capability_probe.py"
REPO = Path(__file__).resolve().parents[2]
# Capability numbers (linux/capability.h), Kubernetes spelling.
CAPABILITY_NUMBERS = {"NET_ADMIN": 12, "PERFMON": 38, "BPF": 39}

pytestmark = pytest.mark.kernel


@pytest.fixture
def netns() -> Iterator[str]:
    """A network namespace with one veth pair, its own (lwtP prefix)."""
    name = f"lwtP-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for command in (
            "link add lwtp0 type veth peer name lwtp1",
            "link set lwtp0 up",
            "link set lwtp1 up",
            "addr add 10.213.0.1/24 dev lwtp0",
        ):
            subprocess.run(["ip", "-n", name, *command.split()], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def probe(netns: str, capabilities: list[str], bpf_objects: Path, pin_dir: Path) -> dict[str, str]:
    pin_dir.mkdir()
    keep = ",".join(["-all", *(f"+{cap.lower()}" for cap in capabilities)])
    command = [
        "ip", "netns", "exec", netns,
        "setpriv", "--inh-caps=-all", "--ambient-caps=-all", f"--bounding-set={keep}",
        sys.executable, str(PROBE), str(bpf_objects), str(pin_dir), "lwtp0", "10.213.1.7",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120,
                            cwd=REPO)
    assert result.returncode == 0, f"probe crashed:\n{result.stderr[-3000:]}"
    steps: dict[str, str] = json.loads(result.stdout)
    return steps


PROGRAMS = sorted(f"{name}/{hook}" for name, b in CATALOGUE.items() for hook in b.hooks)
ALL_OK = {
    "plain_route": "ok",
    **{f"load_{key}": "ok" for key in PROGRAMS},
    **{f"attach_{key}": "ok" for key in PROGRAMS},
    "reopen_pin": "ok",
    # Opening a program by id needs CAP_SYS_ADMIN: the agent reopens its pins instead.
    "fd_by_id": "EPERM",
}


def capability_mask(names: list[str]) -> int:
    return sum(1 << CAPABILITY_NUMBERS[name] for name in names)


def test_the_documented_set_is_enough(netns: str, bpf_objects: Path, bpffs: Path) -> None:
    caps = sorted(documented_capabilities())
    # every built-in loads and attaches on every declared hook without CAP_PERFMON
    assert "PERFMON" not in caps
    steps = probe(netns, caps, bpf_objects, bpffs / f"all-{netns}")
    assert int(steps.pop("capeff"), 16) == capability_mask(caps)
    assert steps == ALL_OK


@pytest.mark.parametrize("missing", sorted(documented_capabilities()))
def test_every_documented_capability_is_necessary(
    missing: str, netns: str, bpf_objects: Path, bpffs: Path
) -> None:
    caps = sorted(documented_capabilities() - {missing})
    steps = probe(netns, caps, bpf_objects, bpffs / f"no-{missing}-{netns}")
    assert int(steps.pop("capeff"), 16) == capability_mask(caps)
    failed = {step: steps.get(step) for step in steps.keys() | ALL_OK.keys()
              if ALL_OK.get(step) != steps.get(step)}
    # Nothing loads, so nothing is attached and there is no pin to reopen.
    not_loaded = {f"attach_{key}": None for key in PROGRAMS} | {"reopen_pin": None,
                                                                 "fd_by_id": None}
    if missing == "NET_ADMIN":
        # LWT program types are networking programs: loading them needs CAP_NET_ADMIN too.
        assert failed == {"plain_route": "EPERM", **{f"load_{k}": "EPERM" for k in PROGRAMS},
                          **not_loaded}
    else:
        assert missing == "BPF", f"no reason documented for CAP_{missing}"
        assert failed == {**{f"load_{k}": "EPERM" for k in PROGRAMS}, **not_loaded}


POLICIES = """
apiVersion: lwt.dev/v1alpha1
kind: LwtRoutePolicy
metadata: {name: count, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  hooks:
    in: {program: {builtin: counters}}
    out: {program: {builtin: port-filter}, config: {denyTCPPorts: [8080]}}
    xmit: {program: {builtin: sampler}, config: {oneIn: 10}}
"""


def node_entry(stdout: str, policy: str) -> dict:
    """This node's entry for a policy in the last node status `lwt-agent run` printed (an
    LwtNodeState document, printed each time the node's status changes)."""
    docs = [d for d in yaml.safe_load_all(stdout) if d]
    entries = [entry for d in docs if d.get("kind") == "LwtNodeState"
               for entry in (d.get("status") or {}).get("policies", [])
               if entry.get("name") == policy]
    # the format before node states were documents of their own: status.nodes[node]
    entries += [d["status"]["nodes"]["node-a"] for d in docs
                if d.get("metadata", {}).get("name") == policy
                and "node-a" in (d.get("status") or {}).get("nodes", {})]
    assert entries, f"no node status for policy {policy!r} in:\n{stdout[-3000:]}"
    return entries[-1]


def pods_manifest(addresses: list[str]) -> str:
    pods = [
        {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": f"web-{i}", "namespace": "shop", "labels": {"app": "web"}},
         "spec": {"nodeName": "node-a"},
         "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}
        for i, ip in enumerate(addresses)
    ]
    return yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": pods})


def test_the_agent_itself_runs_with_the_documented_set(
    netns: str, bpffs: Path, tmp_path: Path
) -> None:
    # The real `lwt-agent run` (standalone, --once), as the DaemonSet's container would run
    # it: root with only the documented capabilities. It loads three built-ins (one program
    # per policy hook), writes their config, pins them, attaches them to two pod routes.
    addresses = ["10.213.1.7", "10.213.1.8"]
    for address in addresses:
        subprocess.run(["ip", "-n", netns, "route", "add", f"{address}/32", "dev", "lwtp0",
                        "scope", "link"], check=True)
    policy_file = tmp_path / "policies.yaml"
    policy_file.write_text(POLICIES)
    pods_file = tmp_path / "pods.yaml"
    pods_file.write_text(pods_manifest(addresses))
    pin_dir = bpffs / f"agent-{netns}"
    pin_dir.mkdir()
    keep = ",".join(["-all", *(f"+{cap.lower()}" for cap in sorted(documented_capabilities()))])
    agent = Path(sys.executable).parent / "lwt-agent"
    try:
        result = subprocess.run(
            ["ip", "netns", "exec", netns,
             "setpriv", "--inh-caps=-all", "--ambient-caps=-all", f"--bounding-set={keep}",
             str(agent), "run", "--policy-file", str(policy_file), "--pods-file",
             str(pods_file), "--node-name", "node-a", "--pin-dir", str(pin_dir), "--once"],
            capture_output=True, text=True, check=False, timeout=120, cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        entry = node_entry(result.stdout, "count")
        assert entry["lastError"] is None, entry["lastError"]
        assert entry["routes"] == entry["attachedRoutes"] == len(addresses)
        assert set(entry["programs"]) == {"in", "out", "xmit"}
        routes = subprocess.run(["ip", "-n", netns, "route", "show"], capture_output=True,
                                text=True, check=True).stdout
        attached = [line for line in routes.splitlines() if "encap bpf" in line]
        assert len(attached) == len(addresses)
        # `lwt-agent status` inside the agent pod (same capabilities, no CAP_SYS_ADMIN) finds
        # every program through the agent's pins, with its tag and the built-in counters.
        shown = subprocess.run(
            ["ip", "netns", "exec", netns,
             "setpriv", "--inh-caps=-all", "--ambient-caps=-all", f"--bounding-set={keep}",
             str(agent), "status", "--pin-dir", str(pin_dir), "--json"],
            capture_output=True, text=True, check=False, timeout=60, cwd=tmp_path,
        )
        assert shown.returncode == 0, shown.stderr[-3000:]
        hooks = [h for r in json.loads(shown.stdout)["routes"] for h in r["hooks"]]
        assert len(hooks) == 3 * len(addresses)
        assert all(h["ours"] and h["tag"] and h["problem"] is None for h in hooks), hooks
        # counters and port-filter keep per-destination counters; the sampler does not.
        assert {h["counters"]["builtin"] for h in hooks if h["counters"]} == {
            "counters", "port-filter"}
    finally:
        # --once leaves everything attached and pinned: the netns fixture removes the routes,
        # this removes the pins (the programs go with the last reference).
        subprocess.run(["rm", "-rf", str(pin_dir)], check=False)


def compile_needs_perfmon(out_dir: Path, bpf_objects: Path) -> Path:
    """needs_perfmon.c -> .o with the flags of bpf/Makefile (its build include dir holds the
    empty gnu/stubs-32.h that Debian's libc headers want under -target bpf)."""
    obj = out_dir / "needs_perfmon.o"
    subprocess.run(
        ["clang", "-O2", "-g", "-target", "bpf", "-Wall", "-Werror",
         f"-I{bpf_objects / 'include'}", f"-I/usr/include/{platform.machine()}-linux-gnu",
         "-c", str(Path(__file__).with_name("needs_perfmon.c")), "-o", str(obj)],
        check=True, capture_output=True, timeout=120)
    return obj


def test_a_configmap_program_that_needs_perfmon_is_refused_with_the_reason(
    netns: str, bpffs: Path, bpf_objects: Path, tmp_path: Path
) -> None:
    # As root (with CAP_PERFMON) the kernel accepts this object; the agent, without it, must
    # refuse it and say why in the policy's status rather than fail silently.
    obj = compile_needs_perfmon(tmp_path, bpf_objects)
    address = "10.213.1.7"
    subprocess.run(["ip", "-n", netns, "route", "add", f"{address}/32", "dev", "lwtp0",
                    "scope", "link"], check=True)
    policy = {
        "apiVersion": "lwt.dev/v1alpha1", "kind": "LwtRoutePolicy",
        "metadata": {"name": "custom", "namespace": "shop"},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "hooks": {"out": {
            "program": {"configMap": {"name": "progs", "key": "np.o"},
                        "section": "lwt/needs_perfmon"}}}},
    }
    configmap = {"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": "progs", "namespace": "shop"},
                 "binaryData": {"np.o": base64.b64encode(obj.read_bytes()).decode()}}
    (tmp_path / "policies.yaml").write_text(yaml.safe_dump(policy))
    (tmp_path / "configmaps.yaml").write_text(yaml.safe_dump(configmap))
    (tmp_path / "pods.yaml").write_text(pods_manifest([address]))
    pin_dir = bpffs / f"perfmon-{netns}"
    pin_dir.mkdir()
    keep = ",".join(["-all", *(f"+{cap.lower()}" for cap in sorted(documented_capabilities()))])
    agent = Path(sys.executable).parent / "lwt-agent"
    try:
        result = subprocess.run(
            ["ip", "netns", "exec", netns,
             "setpriv", "--inh-caps=-all", "--ambient-caps=-all", f"--bounding-set={keep}",
             str(agent), "run", "--policy-file", str(tmp_path / "policies.yaml"),
             "--pods-file", str(tmp_path / "pods.yaml"),
             "--configmaps-file", str(tmp_path / "configmaps.yaml"),
             "--node-name", "node-a", "--pin-dir", str(pin_dir), "--once"],
            capture_output=True, text=True, check=False, timeout=120, cwd=tmp_path,
        )
        assert result.stdout, f"no status (exit {result.returncode}):\n{result.stderr[-3000:]}"
        entry = node_entry(result.stdout, "custom")
        assert entry["lastError"], entry
        message = entry["lastError"]["message"]
        assert "pointer arithmetic with it prohibited for !root" in message, message
        assert "encap bpf" not in subprocess.run(
            ["ip", "-n", netns, "route", "show"], capture_output=True, text=True,
            check=True).stdout
    finally:
        subprocess.run(["rm", "-rf", str(pin_dir)], check=False)
