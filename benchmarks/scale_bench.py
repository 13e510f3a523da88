"""Status at scale (issue 14): N simulated agents and the real operator on a real API server.

    python -m benchmarks.scale_bench --nodes 100,1000 [--trials 5] [--json out.json]

Per N: a fresh control plane (tests/k8s/cluster.py: etcd, kube-apiserver,
kube-controller-manager from scripts/k8s-binaries.sh), the CRDs, N Node objects, the real
operator (`lwt-operator`, its own process) and N simulated agents as asyncio tasks in this
process. Each simulated agent is an agent's control-plane side: its own list+watch of
LwtRoutePolicies, the agent's admission (`PolicyBook.cluster`), targeting
(`lwt_policy.targets.desired_attachments`) over 10 pods of its node, its decision step
(`agent.steps.node_result`) and status shaping (`node_state_status`), and one JSON merge patch
of its own LwtNodeState per change, as `agent/cluster.py` writes it. What is not real: the
route engine and program store (an in-memory stand-in: every targeted route attached, or in
the refusal case every program refused with a 4 KiB verifier log), the pods (made in memory,
not watched: the pods watch is per node and does not change with N), and the agents'
credentials (the admin's client certificate, so the node-restriction policy is not in the
path). A simulated agent also skips a pass when nothing admission reads changed (the real one
runs it and writes nothing), and the simulated agents share one validation per policy version
(each real agent validates it once, in parallel on its own node).

Measured per N: apply -> Ready N/N (the policy's Ready condition True at the new generation
with summary.readyNodes == N) over `--trials` spec changes, p50/p99; per rollout the API
requests and bytes (the API server's own counters: apiserver_request_total and
apiserver_watch_events_sizes, by resource) and the agents' writes; failed writes; the largest
policy and node-state objects; the operator's CPU seconds and peak RSS; the API server's RSS;
and the case "the verifier refuses the program on every node".
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import re
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from lwt_agent.agent import admission
from lwt_agent.agent.admission import PolicyBook
from lwt_agent.agent.steps import node_result
from lwt_policy import schema
from lwt_policy.model import PolicyRef
from lwt_policy.status import (
    NodeError,
    node_state_entry,
    node_state_object,
    node_state_status,
    node_status,
)
from lwt_policy.targets import desired_attachments

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.k8s.cluster import ControlPlane  # noqa: E402  (the test stand's control plane)

NAMESPACE = "shop"
SYSTEM = "lwt-system"
POLICY = "web"
PODS_PER_NODE = 10
POLICIES = f"/apis/{schema.API_VERSION}/namespaces/{NAMESPACE}/{schema.PLURAL}"
STATES = f"/apis/{schema.API_VERSION}/{schema.NODE_STATE_PLURAL}"
VERIFIER_LOG = "".join(f"{i}: (79) r0 = *(u32 *)(r1 +{i})\n" for i in range(200))[-4096:]
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- the simulated agents ----------------------------------------------------------------

_parse_policy = admission.parse_policy
_parsed: dict[str, Any] = {}


def _shared_parse(obj: Mapping[str, Any], admin_namespace: str) -> Any:
    """Each real agent validates a new generation once, on its own node, in parallel with the
    others; N simulated agents on one core would do it N times in a row (CEL validation takes
    milliseconds). So the simulated agents share one parse per distinct object."""
    key = json.dumps(obj, sort_keys=True) + admin_namespace
    if key not in _parsed:
        _parsed[key] = _parse_policy(obj, admin_namespace=admin_namespace)
    return _parsed[key]


admission.parse_policy = _shared_parse  # type: ignore[assignment]

@dataclass
class Counters:
    writes: int = 0
    write_bytes: int = 0
    failed_writes: int = 0
    watch_bytes: int = 0
    watch_events: int = 0


@dataclass
class World:
    """What every simulated agent shares: the HTTP session, counters, the failure switch and
    the time each node wrote each generation."""

    session: aiohttp.ClientSession
    server: str
    counters: Counters = field(default_factory=Counters)
    refuse: bool = False
    written: dict[int, list[float]] = field(default_factory=dict)  # generation -> times


def _pods(node: str, index: int) -> list[dict[str, Any]]:
    return [{"metadata": {"name": f"{node}-web-{i}", "namespace": NAMESPACE,
                          "labels": {"app": "web"}, "uid": f"{node}-{i}"},
             "spec": {"nodeName": node},
             "status": {"phase": "Running",
                        "podIP": f"10.{index // 250 % 250}.{index % 250}.{i + 1}"}}
            for i in range(PODS_PER_NODE)]


class SimAgent:
    def __init__(self, world: World, node: str, index: int, uid: str) -> None:
        self.world = world
        self.node = node
        self.uid = uid
        self.pods = _pods(node, index)
        self.nodes = [{"metadata": {"name": node, "labels": {"kubernetes.io/os": "linux"}}}]
        self.book = PolicyBook(SYSTEM)
        self.policies: dict[str, dict[str, Any]] = {}
        self.written: dict[str, Any] | None = None
        self._seen: Any = None

    async def start(self) -> None:
        body = node_state_object(self.node, self.uid)
        async with self.world.session.post(self.world.server + STATES, json=body) as r:
            if r.status not in (201, 409):
                raise RuntimeError(f"create LwtNodeState {self.node}: {r.status} "
                                   f"{await r.text()}")

    async def run(self) -> None:
        while True:
            try:
                await self._list_and_watch()
            except (TimeoutError, aiohttp.ClientError):
                await asyncio.sleep(0.5)

    async def _list_and_watch(self) -> None:
        session = self.world.session
        async with session.get(self.world.server + POLICIES) as r:
            listed = await r.json()
        self.policies = {o["metadata"]["name"]: o for o in listed.get("items") or []}
        await self._pass()
        params = {"watch": "1", "resourceVersion": listed["metadata"]["resourceVersion"],
                  "timeoutSeconds": "3600", "allowWatchBookmarks": "true"}
        async with session.get(self.world.server + POLICIES, params=params,
                               timeout=aiohttp.ClientTimeout(total=None)) as r:
            async for line in r.content:
                self.world.counters.watch_bytes += len(line)
                self.world.counters.watch_events += 1
                event = json.loads(line)
                obj = event["object"]
                if event["type"] == "BOOKMARK":
                    continue
                if event["type"] == "DELETED":
                    self.policies.pop(obj["metadata"]["name"], None)
                else:
                    self.policies[obj["metadata"]["name"]] = obj
                await self._pass()

    def _admission_inputs(self) -> Any:
        """What admission reads: generation, spec, the Accepted condition, deletion."""
        out = []
        for obj in self.policies.values():
            accepted = next((c for c in (obj.get("status") or {}).get("conditions") or []
                             if c.get("type") == "Accepted"), None)
            out.append((obj["metadata"].get("generation"), json.dumps(obj.get("spec")),
                        json.dumps(accepted), obj["metadata"].get("deletionTimestamp")))
        return out

    async def _pass(self) -> None:
        seen = (self._admission_inputs(), self.world.refuse)
        if seen == self._seen:
            return
        self._seen = seen
        views = self.book.cluster(list(self.policies.values()))
        acting = [v.policy for v in views if v.policy is not None and not v.deleting]
        desired = desired_attachments(acting, self.pods, self.nodes, self.node, SYSTEM)
        programs: dict[Any, Any] = {}
        errors: dict[PolicyRef, NodeError] = {}
        for ref, hook in {(a.policy, a.hook) for hooks in desired.attachments.values()
                          for a in hooks.values()}:
            if self.world.refuse:
                programs[(ref, hook)] = None
                errors[ref] = NodeError(
                    f"the kernel refused program lwt/{ref}/{hook}: permission denied (the "
                    "verifier's log says why)", VERIFIER_LOG)
            else:
                programs[(ref, hook)] = types.SimpleNamespace(
                    id=1000, tag="0123456789abcdef", label=f"lwt/{ref}/{hook}/01234567",
                    fallback=False)
        now = dt.datetime.now(dt.UTC)
        entries = []
        for view in views:
            if view.policy is None and view.error is None and not view.deleting:
                continue  # not judged yet
            result = node_result(view, desired, programs, errors, {}, False, now)
            entries.append(node_state_entry(view.ref, node_status(result)))
        status = node_state_status(entries, (self.written or {}).get("policies") or ())
        if self.written is not None and _comparable(status) == _comparable(self.written):
            return
        body = json.dumps({"status": status}).encode()
        url = f"{self.world.server}{STATES}/{self.node}/status"
        async with self.world.session.patch(
                url, data=body, headers={"Content-Type": "application/merge-patch+json"}) as r:
            await r.read()
            self.world.counters.writes += 1
            self.world.counters.write_bytes += len(body)
            if r.status >= 300:
                self.world.counters.failed_writes += 1
                self._seen = None  # retried at the next event
                return
        self.written = status
        for entry in entries:
            self.world.written.setdefault(entry["observedGeneration"], []).append(
                time.monotonic())


def _comparable(status: Mapping[str, Any]) -> Any:
    return [{k: v for k, v in e.items() if k != "lastUpdateTime"}
            for e in status.get("policies") or ()]


# --- measuring -----------------------------------------------------------------------------

_SAMPLE = re.compile(r'^(\w+)\{([^}]*)\} (\S+)$')


async def api_metrics(world: World) -> dict[tuple[str, ...], float]:
    """{(metric, resource, subresource, verb, code): value} of the API server's counters
    for our resources."""
    async with world.session.get(world.server + "/metrics") as r:
        text = await r.text()
    out: dict[tuple[str, ...], float] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if not m or m.group(1) not in ("apiserver_request_total",
                                       "apiserver_watch_events_sizes_sum",
                                       "apiserver_watch_events_total"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
        if labels.get("group") != schema.GROUP:
            continue
        key = (m.group(1), labels.get("resource", ""), labels.get("subresource", ""),
               labels.get("verb", ""), labels.get("code", ""))
        out[key] = out.get(key, 0.0) + float(m.group(3))
    return out


def _delta(after: Mapping[tuple[str, ...], float], before: Mapping[tuple[str, ...], float]
           ) -> dict[str, float]:
    summary: dict[str, float] = {}
    for key, value in after.items():
        change = value - before.get(key, 0.0)
        if not change:
            continue
        metric, resource, sub, verb, code = key
        if metric == "apiserver_request_total":
            name = f"requests {verb} {resource}{'/' + sub if sub else ''}"
            if code and not code.startswith("2"):
                name += f" code {code}"
        elif metric == "apiserver_watch_events_total":
            name = f"watch events {resource}"
        else:
            name = f"watch bytes {resource}"
        summary[name] = summary.get(name, 0.0) + change
    return summary


def proc_stats(pid: int) -> dict[str, float]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    status = dict(line.split(":", 1) for line in
                  Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {"cpu_s": (int(fields[11]) + int(fields[12])) / CLK_TCK,
            "rss_mib": int(status["VmRSS"].split()[0]) / 1024,
            "peak_rss_mib": int(status["VmHWM"].split()[0]) / 1024}


async def get_json(world: World, path: str) -> Any:
    async with world.session.get(world.server + path) as r:
        return await r.json()


async def wait_policy(world: World, generation: int, n: int, *, refused: bool,
                      timeout: float) -> tuple[float, dict[str, Any]]:
    """Seconds until the policy's status says N/N ready (or, refused, N/N failing) at
    `generation`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        obj = await get_json(world, f"{POLICIES}/{POLICY}")
        status = obj.get("status") or {}
        ready = next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), {})
        summary = status.get("summary") or {}
        if ready.get("observedGeneration") == generation and summary.get("nodes") == n:
            listed = len(status.get("nodesNotReady") or []) + (status.get("moreNodesNotReady")
                                                                 or 0)
            if not refused and ready.get("status") == "True" and summary["readyNodes"] == n:
                return time.monotonic() - started, obj
            degraded = next((c for c in status["conditions"] if c["type"] == "Degraded"), {})
            if refused and listed == n and degraded.get("status") == "True" and all(
                    p["reason"] == "Error" for p in status.get("nodesNotReady") or []):
                return time.monotonic() - started, obj
        await asyncio.sleep(0.05)
    raise TimeoutError(f"policy not {'failing' if refused else 'ready'} on {n} nodes at "
                       f"generation {generation} after {timeout}s")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def rollout(world: World, cp: ControlPlane, operator: subprocess.Popen[bytes], n: int,
                  change: dict[str, Any] | None, *, refused: bool = False,
                  timeout: float = 600) -> dict[str, Any]:
    before = await api_metrics(world)
    counters = Counters(**world.counters.__dict__)
    op_before = proc_stats(operator.pid)
    started = time.monotonic()
    if change is None:
        body = {"apiVersion": schema.API_VERSION, "kind": schema.KIND,
                "metadata": {"name": POLICY, "namespace": NAMESPACE},
                "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "priority": 100,
                         "hooks": {"out": {"program": {"builtin": "counters"}}}}}
        async with world.session.post(world.server + POLICIES, json=body) as r:
            obj = await r.json()
    else:
        async with world.session.patch(world.server + f"{POLICIES}/{POLICY}",
                                       data=json.dumps(change).encode(),
                                       headers={"Content-Type": "application/merge-patch+json"}
                                       ) as r:
            obj = await r.json()
    generation = obj["metadata"]["generation"]
    seconds, final = await wait_policy(world, generation, n, refused=refused, timeout=timeout)
    await asyncio.sleep(1.5)  # the operator's last debounced write lands in the counters
    after = await api_metrics(world)
    op_after = proc_stats(operator.pid)
    writes = [t - started for t in world.written.get(generation, [])]
    states = (await get_json(world, STATES))["items"]
    return {
        "generation": generation,
        "ready_seconds": round(seconds, 3),
        "node_write_p50_s": round(_percentile(writes, 0.5), 3) if writes else None,
        "node_write_p99_s": round(_percentile(writes, 0.99), 3) if writes else None,
        "agent_writes": world.counters.writes - counters.writes,
        "agent_write_bytes": world.counters.write_bytes - counters.write_bytes,
        "agent_failed_writes": world.counters.failed_writes - counters.failed_writes,
        "agent_watch_events": world.counters.watch_events - counters.watch_events,
        "agent_watch_bytes": world.counters.watch_bytes - counters.watch_bytes,
        "api": _delta(after, before),
        "policy_bytes": len(json.dumps(final)),
        "largest_node_state_bytes": max(len(json.dumps(s)) for s in states),
        "operator_cpu_s": round(op_after["cpu_s"] - op_before["cpu_s"], 2),
    }


async def run_n(n: int, trials: int, workdir: Path, progress: Any) -> dict[str, Any]:
    result: dict[str, Any] = {"nodes": n, "pods_per_node": PODS_PER_NODE}
    with ControlPlane.started(workdir) as cp:
        context = ssl.create_default_context(cafile=str(cp.pki / "ca.crt"))
        context.load_cert_chain(str(cp.pki / "admin.crt"), str(cp.pki / "admin.key"))
        cp.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        cp.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                   f"crd/{schema.CRD_NAME}", f"crd/{schema.NODE_STATE_CRD_NAME}")
        for ns in (NAMESPACE, SYSTEM):
            cp.kubectl("create", "namespace", ns)
        connector = aiohttp.TCPConnector(ssl=context, limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            world = World(session, cp.server)
            names = [f"node-{i:05}" for i in range(n)]
            uids = await _create_nodes(world, names)
            progress(f"{n} nodes: {len(uids)} Node objects created")
            log = open(workdir / "operator.log", "wb")  # noqa: SIM115
            operator = subprocess.Popen(
                [str(REPO / ".venv" / "bin" / "lwt-operator"), "--kubeconfig",
                 str(cp.kubeconfig), "--namespace", SYSTEM, "--standalone", "--resync", "60",
                 "--log-level", "warning"], stdout=log, stderr=subprocess.STDOUT)
            agents = [SimAgent(world, name, i, uids[name]) for i, name in enumerate(names)]
            tasks: list[asyncio.Task[None]] = []
            try:
                await _gather_bounded([a.start() for a in agents], 64)
                tasks = [asyncio.create_task(a.run()) for a in agents]
                await asyncio.sleep(2 + n / 500)  # every watch open
                runs = [await rollout(world, cp, operator, n, None)]
                progress(f"{n} nodes: apply -> Ready {n}/{n} in {runs[0]['ready_seconds']} s")
                for trial in range(1, trials):
                    runs.append(await rollout(world, cp, operator, n,
                                              {"spec": {"priority": 100 + trial}}))
                    progress(f"{n} nodes: change {trial} -> Ready in "
                             f"{runs[-1]['ready_seconds']} s")
                world.refuse = True
                refused = await rollout(world, cp, operator, n,
                                        {"spec": {"priority": 50}}, refused=True)
                progress(f"{n} nodes: verifier refuses everywhere -> reported in "
                         f"{refused['ready_seconds']} s, policy {refused['policy_bytes']} B")
                ready = [r["ready_seconds"] for r in runs]
                result.update({
                    "trials": runs,
                    "ready_p50_s": round(statistics.median(ready), 3),
                    "ready_p99_s": round(_percentile(ready, 0.99), 3),
                    "refused": refused,
                    "operator": proc_stats(operator.pid),
                    "apiserver": proc_stats(cp.components["kube-apiserver"].proc.pid),  # type: ignore[union-attr]
                })
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                operator.terminate()
                try:
                    operator.wait(20)
                except subprocess.TimeoutExpired:
                    operator.kill()
                    operator.wait()
                log.close()
    return result


async def _gather_bounded(coros: list[Any], limit: int) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def one(coro: Any) -> Any:
        async with gate:
            return await coro
    return await asyncio.gather(*(one(c) for c in coros))


async def _create_nodes(world: World, names: list[str]) -> dict[str, str]:
    async def create(name: str) -> tuple[str, str]:
        body = {"apiVersion": "v1", "kind": "Node", "metadata": {
            "name": name, "labels": {"kubernetes.io/os": "linux",
                                     "kubernetes.io/hostname": name}}}
        async with world.session.post(world.server + "/api/v1/nodes", json=body) as r:
            obj = await r.json()
            if r.status != 201:
                raise RuntimeError(f"create Node {name}: {r.status} {obj}")
            return name, obj["metadata"]["uid"]
    return dict(await _gather_bounded([create(n) for n in names], 64))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale_bench",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", default="100,1000",
                        help="comma-separated node counts (default: %(default)s)")
    parser.add_argument("--trials", type=int, default=5,
                        help="rollouts per node count: the apply, then spec changes")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--keep", action="store_true",
                        help="keep each run's directory (logs of the operator and the API)")
    args = parser.parse_args(argv)
    results = []
    for n in [int(x) for x in args.nodes.split(",")]:
        workdir = Path(tempfile.mkdtemp(prefix=f"lwt-scale-{n}-"))
        try:
            results.append(asyncio.run(run_n(n, args.trials, workdir,
                                             lambda m: print(m, flush=True))))
        except Exception as exc:  # one N failing must not lose the others
            results.append({"nodes": n, "error": f"{type(exc).__name__}: {exc}"})
            print(f"{n} nodes: could not run: {exc}", flush=True)
        finally:
            if args.keep:
                print(f"{n} nodes: kept {workdir}", flush=True)
            else:
                subprocess.run(["rm", "-rf", str(workdir)], check=False)
    text = json.dumps(results, indent=1)
    if args.json:
        args.json.write_text(text)
    print(text)
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
