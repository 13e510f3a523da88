"""The local demo: a sandbox node, the standalone agent, policies from examples/, real traffic.

    sudo .venv/bin/python -m lwt_agent.demo        # or ./scripts/run-demo.sh

What it does (see docs/demo.md): builds a node out of network namespaces (a host, four pods,
a client, a tunnel endpoint), runs `lwt-agent run` in standalone mode with the policies of
examples/ (deny a port, per-pod counters, sampling, encapsulation), sends TCP and UDP from
the client, and shows what passed and what was dropped, the per-pod counters from the
agent's /metrics, the samples from its log, the encapsulated packets arriving at the tunnel
endpoint, a live config change (same program, same route label, counters keep counting)
and the status. Then it stops the agent (which detaches everything) and removes every
namespace, also on Ctrl-C and errors. Pins live on a private bpffs that vanishes with the
demo. Exit 0 when every expectation held, 1 otherwise.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import ipaddress
import os
import re
import signal
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml
from lwt_policy.catalogue import CATALOGUE, builtin_object_dir

from lwt_agent.sandbox import (
    REMOTE_GW_V4,
    REMOTE_V4,
    PodNetns,
    Sandbox,
    SandboxError,
    SandboxPod,
    build_sandbox,
    drain,
    ip,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE_FILES = ("deny-port.yaml", "pod-counters.yaml", "sampling.yaml", "encapsulation.yaml")
PODS = (
    SandboxPod("shop", "web-0", {"app": "web", "tier": "frontend"}),
    SandboxPod("shop", "web-1", {"app": "web", "tier": "frontend"}),
    SandboxPod("shop", "checkout-0", {"app": "checkout", "tier": "backend"}),
    SandboxPod("payments", "legacy-db-0", {"app": "legacy-db"}),
)
NODE_LABELS = {"lwt.dev/sampling": "enabled", "kubernetes.io/hostname": "sandbox-node"}
SAMPLE_ONE_IN = 5
CLONE_NEWNS = 0x00020000
MS_REC, MS_PRIVATE = 0x4000, 1 << 18
PR_SET_PDEATHSIG = 1


class DemoError(Exception):
    """The demo cannot run here; the message says what to do."""


# --- output --------------------------------------------------------------------------------

class Out:
    def __init__(self) -> None:
        self.failed: list[str] = []

    def heading(self, text: str) -> None:
        print(f"\n== {text} " + "=" * max(0, 70 - len(text)), flush=True)

    def say(self, text: str = "") -> None:
        print(text, flush=True)

    def check(self, ok: bool, text: str) -> bool:
        print(f"  {'ok  ' if ok else 'FAIL'} {text}", flush=True)
        if not ok:
            self.failed.append(text)
        return ok

    def table(self, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
        widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
        for n, row in enumerate(cells):
            print("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
            if n == 0:
                print("  " + "  ".join("-" * w for w in widths))
        sys.stdout.flush()


# --- setup ---------------------------------------------------------------------------------

def _preflight() -> None:
    if os.geteuid() != 0:
        raise DemoError("the demo needs root (network namespaces, bpf(2)): run it with sudo")
    missing = [p.object for p in CATALOGUE.values()
               if not (builtin_object_dir() / p.object).exists()]
    if missing:
        raise DemoError(f"built-in objects missing in {builtin_object_dir()} "
                        f"({', '.join(missing)}): run `make -C bpf` (scripts/bootstrap.sh does)")


@contextlib.contextmanager
def private_bpffs() -> Iterator[Path]:
    """A bpffs on a temp dir inside a private mount namespace: the demo's pins can never
    touch the host's /sys/fs/bpf and vanish with the process."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0:
        raise DemoError(f"unshare(CLONE_NEWNS) failed: {os.strerror(ctypes.get_errno())}")
    if libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        raise DemoError(f"mount --make-rprivate / failed: {os.strerror(ctypes.get_errno())}")
    path = Path(tempfile.mkdtemp(prefix="lwt-demo-bpffs-"))
    subprocess.run(["mount", "-t", "bpf", "bpf", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
        with contextlib.suppress(OSError):
            path.rmdir()


def demo_policies(box: Sandbox, one_in: int = SAMPLE_ONE_IN,
                  extra_deny: Sequence[int] = ()) -> list[dict[str, Any]]:
    """The example policies, adapted to the sandbox where the sandbox must differ."""
    docs = []
    for name in EXAMPLE_FILES:
        for doc in yaml.safe_load_all((EXAMPLES / name).read_text()):
            doc = copy.deepcopy(doc)
            hooks = doc["spec"]["hooks"]
            if name == "sampling.yaml":
                hooks["out"]["config"]["oneIn"] = one_in  # 1 in 1000 is too rare for a demo
            if name == "encapsulation.yaml":  # the sandbox's tunnel endpoint
                hooks["xmit"]["config"].update(remote=REMOTE_V4, source=REMOTE_GW_V4)
            if name == "deny-port.yaml" and extra_deny:
                ports = hooks["out"]["config"]["denyTCPPorts"]
                hooks["out"]["config"]["denyTCPPorts"] = [*ports, *extra_deny]
            docs.append(doc)
    return docs


def write_yaml(path: Path, docs: Sequence[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    tmp.replace(path)  # atomic: the agent never reads half a file


# --- the agent -----------------------------------------------------------------------------

class AgentProcess:
    """`lwt-agent run` (standalone) as a child process; stdout = status, stderr = log."""

    def __init__(self, workdir: Path, box: Sandbox, pin_dir: Path) -> None:
        self.status_path = workdir / "status.yaml"
        self.log_path = workdir / "agent.log"
        args = [sys.executable, "-m", "lwt_agent.cli", "-v", "run",
                "--policy-file", str(workdir / "policies.yaml"),
                "--pods-file", str(workdir / "pods.yaml"),
                "--nodes-file", str(workdir / "nodes.yaml"),
                "--node-name", box.node_name, "--netns", box.host,
                "--pin-dir", str(pin_dir),
                "--metrics-port", "0", "--metrics-address", "127.0.0.1"]
        self.proc = subprocess.Popen(
            args, stdout=self.status_path.open("w"), stderr=self.log_path.open("w"),
            preexec_fn=_die_with_parent)
        self.metrics_url = self._metrics_url()

    def _metrics_url(self, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(r"# metrics: (http://\S+)", self.log_path.read_text())
            if found:
                return found.group(1)
            if self.proc.poll() is not None:
                raise DemoError(f"the agent exited ({self.proc.returncode}):\n{self.log()}")
            time.sleep(0.05)
        raise DemoError(f"the agent did not start in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text()

    def statuses(self) -> dict[str, dict[str, Any]]:
        """The latest status document of each policy (ns/name -> document), each with this
        node's entry for it (from the LwtNodeState printed last) under "entry"."""
        latest: dict[str, dict[str, Any]] = {}
        entries: dict[str, dict[str, Any]] = {}
        with contextlib.suppress(yaml.YAMLError):
            for doc in yaml.safe_load_all(self.status_path.read_text()):
                if doc and doc.get("kind") == "LwtNodeState":
                    entries = {f"{e['namespace']}/{e['name']}": e
                               for e in doc["status"]["policies"]}
                elif doc:
                    meta = doc["metadata"]
                    latest[f"{meta['namespace']}/{meta['name']}"] = doc
        for name, doc in latest.items():
            doc["entry"] = entries.get(name)
        return latest

    def wait_ready(self, names: Sequence[str], generation: dict[str, int] | None = None,
                   timeout: float = 30) -> dict[str, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            docs = self.statuses()
            if all(_ready(docs.get(n), (generation or {}).get(n)) for n in names):
                return docs
            if self.proc.poll() is not None:
                raise DemoError(f"the agent exited ({self.proc.returncode}):\n{self.log()}")
            time.sleep(0.1)
        raise DemoError(f"policies not ready after {timeout}s: {self.statuses()}")

    def metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            return response.read().decode()

    def stop(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _ready(doc: dict[str, Any] | None, generation: int | None) -> bool:
    if not doc:
        return False
    status, entry = doc["status"], doc.get("entry")
    ready = status["conditions"][0]["status"] == "True"
    return (ready and entry is not None
            and entry["observedGeneration"] == status["observedGeneration"]
            and (generation is None or status["observedGeneration"] == generation))


def metric_values(text: str, name: str) -> dict[tuple[str, str, str], float]:
    """{(policy ns/name, hook, pod): value} of one metric family in exposition text."""
    values: dict[tuple[str, str, str], float] = {}
    pattern = re.compile(rf"^{name}\{{(.*)\}} (\S+)$")
    for line in text.splitlines():
        match = pattern.match(line)
        if match:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
            pod = labels.get("pod_name", "")
            key = (f"{labels['policy_namespace']}/{labels['policy']}", labels["hook"],
                   f"{labels['pod_namespace']}/{pod}" if pod else "")
            values[key] = float(match.group(2))
    return values


def inner_header(payload: bytes) -> str:
    """'src -> dst proto dport' of the IPv4 packet a UDP tunnel carried."""
    if len(payload) < 24 or payload[0] >> 4 != 4:
        return f"{len(payload)} bytes"
    ihl = (payload[0] & 0x0F) * 4
    proto = {6: "tcp", 17: "udp", 1: "icmp"}.get(payload[9], str(payload[9]))
    dport = struct.unpack_from("!H", payload, ihl + 2)[0] if payload[9] in (6, 17) else ""
    return (f"{ipaddress.IPv4Address(payload[12:16])} -> "
            f"{ipaddress.IPv4Address(payload[16:20])} {proto} {dport}").strip()


# --- the story -----------------------------------------------------------------------------

def run_demo(prefix: str, out: Out) -> None:
    _preflight()
    with private_bpffs() as bpffs, tempfile.TemporaryDirectory(prefix="lwt-demo-") as tmp, \
            build_sandbox(prefix, PODS) as box:
        workdir = Path(tmp)
        out.heading("1. A sandbox node")
        out.say(f"  host netns {box.host}; client {box.client}; tunnel endpoint {box.remote}")
        out.table(["pod", "labels", "IPv4", "IPv6", "host route"],
                  [[f"{p.spec.namespace}/{p.spec.name}",
                    ",".join(f"{k}={v}" for k, v in p.spec.labels.items()),
                    p.ipv4, p.ipv6, f"{p.ipv4}/32 dev {p.host_if}"] for p in box.pods])
        policies = demo_policies(box)
        write_yaml(workdir / "policies.yaml", policies)
        write_yaml(workdir / "pods.yaml", [box.pod_objects()])
        write_yaml(workdir / "nodes.yaml", [box.node_object(NODE_LABELS)])
        names = [f"{d['metadata']['namespace']}/{d['metadata']['name']}" for d in policies]

        out.heading("2. The standalone agent applies the example policies")
        out.table(["policy (examples/)", "target", "hook", "program", "config"],
                  [[n, _target(d), h, s["program"]["builtin"], _short(s.get("config", {}))]
                   for n, d in zip(names, policies, strict=True)
                   for h, s in d["spec"]["hooks"].items()])
        out.say(f"  (sampling: oneIn {SAMPLE_ONE_IN} instead of 1000; encapsulation: remote "
                f"{REMOTE_V4}, the sandbox's tunnel endpoint)")
        agent = AgentProcess(workdir, box, bpffs / "lwt")
        try:
            docs = agent.wait_ready(names)
            _show_routes(out, box)
            first_ids = _program_ids(docs)
            _traffic(out, box, agent)
            _config_change(out, box, agent, workdir, names, first_ids)
            _show_status(out, agent.statuses())
            out.heading("8. Stop the agent (SIGTERM): it detaches everything it attached")
            code = agent.stop()
            out.check(code == 0, f"agent exited with {code}")
            routes = ip(box.host, "route")
            out.check("encap" not in routes, "every pod route is plain again")
            out.say("  " + "\n  ".join(routes.strip().splitlines()))
        finally:
            agent.stop()
    out.heading("9. Cleaned up")
    out.say("  namespaces removed, pins gone with the private bpffs")


def _target(doc: dict[str, Any]) -> str:
    spec = doc["spec"]
    selector = spec.get("podSelector", {})
    text = ",".join(f"{k}={v}" for k, v in selector.get("matchLabels", {}).items())
    for expr in selector.get("matchExpressions", []):
        text += ("," if text else "") + f"{expr['key']} {expr['operator']} " + \
            ",".join(expr.get("values", []))
    return f"{doc['metadata']['namespace']}: {text}".strip()


def _short(config: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in config.items()) or "-"


def _show_routes(out: Out, box: Sandbox) -> None:
    out.heading("3. The pod routes now carry programs (one program per policy and hook)")
    for line in ip(box.host, "route").strip().splitlines():
        if "encap" in line:
            out.say("  " + line.strip())


def _program_ids(docs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: entry for name, doc in docs.items()
            for entry in [doc["entry"]["programs"]]}


def _traffic(out: Out, box: Sandbox, agent: AgentProcess) -> None:
    out.heading("4. Real traffic from the client")
    web0, web1 = box.pod("web-0"), box.pod("web-1")
    checkout, db = box.pod("checkout-0"), box.pod("legacy-db-0")
    listeners = [box.tcp_listen(p, port) for p in (web0, web1) for port in (80, 8080, 9090)]
    try:
        rows = []
        for pod, port, expect in ((web0, 80, True), (web0, 8080, False), (web0, 9090, False),
                                  (web1, 80, True), (web1, 8080, False)):
            got = box.tcp_connects(pod.ipv4, port)
            rows.append([f"shop/{pod.spec.name}", f"tcp/{port}",
                         "passed" if got else "DROPPED", "ok" if got == expect else "FAIL"])
            if got != expect:
                out.failed.append(f"tcp {pod.spec.name}:{port}")
        out.say("  web-deny-debug-ports (port-filter on out) — TCP handshakes:")
        out.table(["pod", "port", "result", "as the policy says"], rows)
    finally:
        for sock in listeners:
            sock.close()

    rx = box.udp_receiver(db.ns, db.ipv4, 5432)
    tunnel = box.udp_receiver(box.remote, REMOTE_V4, 5555)
    try:
        for pod in (web0, web1, checkout):
            box.udp_send(pod.ipv4, 7000, 20)
        box.udp_send(db.ipv4, 5432, 5)
        time.sleep(0.5)
        reached_pod, carried = drain(rx), drain(tunnel)
    finally:
        rx.close()
        tunnel.close()
    out.say("\n  legacy-db-via-scrubber (encap on xmit, UDP tunnel) — 5 UDP packets to "
            f"{db.ipv4}:5432:")
    out.check(len(reached_pod) == 0, f"{len(reached_pod)} reached the pod directly")
    out.check(len(carried) == 5, f"{len(carried)} arrived encapsulated at the tunnel endpoint "
              f"{REMOTE_V4}:5555")
    if carried:
        out.say(f"  inner packet of the first: {inner_header(carried[0])}")

    time.sleep(0.5)
    text = agent.metrics()
    out.heading("5. Counters, read from the programs' maps by the agent's /metrics")
    packets = metric_values(text, "lwt_route_packets_total")
    drops = metric_values(text, "lwt_route_dropped_packets_total")
    octets = metric_values(text, "lwt_route_bytes_total")
    keys = sorted(set(packets) | set(drops))
    out.table(["policy", "hook", "pod", "packets", "bytes", "dropped"],
              [[k[0], k[1], k[2], int(packets.get(k, 0)), int(octets.get(k, 0)),
                "-" if k not in drops else int(drops[k])] for k in keys])
    counted = packets.get(("shop/shop-traffic-counters", "in", "shop/checkout-0"), 0)
    out.check(counted >= 20, f"shop-traffic-counters counted {int(counted)} packets "
              "(>= the 20 UDP sent) to checkout-0")
    dropped = drops.get(("shop/web-deny-debug-ports", "out", "shop/web-0"), 0)
    out.check(dropped >= 2, f"web-deny-debug-ports dropped {int(dropped)} packets to web-0")
    samples = _samples(agent, box, checkout)
    out.say(f"\n  checkout-sampling: {len(samples)} samples in the agent's log (1 in "
            f"{SAMPLE_ONE_IN} of the packets sent, random), e.g.:")
    for line in samples[:2]:
        out.say("  " + line)
    out.check(len(samples) > 0, "samples arrived through the ring buffer")


def _samples(agent: AgentProcess, box: Sandbox, checkout: PodNetns) -> list[str]:
    """The sample lines in the agent's log. Sampling is random (1 in SAMPLE_ONE_IN), so 20
    packets give none about 1 time in 90, and the agent logs a sample a moment after the
    packet: wait a little, and send another 20 packets a few times before giving up."""
    for _ in range(4):
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            samples = [line for line in agent.log().splitlines() if '"event": "sample"' in line]
            if samples:
                return samples
            time.sleep(0.1)
        box.udp_send(checkout.ipv4, 7000, 20)
    return []


def _config_change(out: Out, box: Sandbox, agent: AgentProcess, workdir: Path,
                   names: Sequence[str], before: dict[str, dict[str, Any]]) -> None:
    out.heading("6. Live config change: web-deny-debug-ports also denies tcp/80")
    name = "shop/web-deny-debug-ports"
    old_drops = metric_values(agent.metrics(), "lwt_route_dropped_packets_total").get(
        (name, "out", "shop/web-0"), 0)
    write_yaml(workdir / "policies.yaml", demo_policies(box, extra_deny=[80]))
    docs = agent.wait_ready(names, generation={name: 2})
    after = _program_ids(docs)[name]["out"]
    out.check(after == before[name]["out"],
              f"same program (id {after['id']}) and label {after['label']}: no re-attach")
    web0 = box.pod("web-0")
    listener = box.tcp_listen(web0, 80)
    try:
        out.check(not box.tcp_connects(web0.ipv4, 80), "tcp/80 to web-0 is now dropped")
    finally:
        listener.close()
    new_drops = metric_values(agent.metrics(), "lwt_route_dropped_packets_total").get(
        (name, "out", "shop/web-0"), 0)
    out.check(new_drops > old_drops,
              f"drop counter kept counting: {int(old_drops)} -> {int(new_drops)}")


def _show_status(out: Out, docs: dict[str, dict[str, Any]]) -> None:
    out.heading("7. Status (policies and this node's LwtNodeState, printed by the agent on stdout)")
    rows = []
    for name, doc in sorted(docs.items()):
        status = doc["status"]
        entry = doc["entry"]
        programs = ", ".join(f"{h}: id {p['id']}" for h, p in entry["programs"].items())
        rows.append([name, status["observedGeneration"], status["conditions"][0]["status"],
                     entry["routes"], entry["attachedRoutes"], programs,
                     (entry["lastError"] or {}).get("message", "-")])
    out.table(["policy", "gen", "ready", "routes", "attached", "programs", "lastError"], rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lwt_agent.demo",
                                     description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--prefix", default="lwtdemo",
                        help="name prefix of the demo's network namespaces")
    args = parser.parse_args(argv)
    out = Out()
    try:
        run_demo(args.prefix, out)
    except (DemoError, SandboxError) as exc:
        print(f"\ndemo: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ndemo: interrupted; everything was cleaned up", file=sys.stderr)
        return 130
    if out.failed:
        print(f"\ndemo: {len(out.failed)} expectation(s) failed: {'; '.join(out.failed)}",
              file=sys.stderr)
        return 1
    print("\nAll expectations held.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
