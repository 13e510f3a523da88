"""Bad input never detaches a good policy (real kernel, `lwt-agent run` as a process).

Hostile documents are written beside a good policy attached to every pod route of the
node, one at a time, while the agent runs: each is refused naming the field (in the status
of that policy when the document can be keyed, else on stderr with the file kept at its
last good contents), the agent keeps running, and the routes and pins never change. A
restart meeting a bad new version of a policy keeps what is attached as it is until a good
version arrives.
"""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.agent.harness import (
    REPO,
    AgentProcess,
    builtin_hook,
    encap_labels,
    pod_objects,
    policy,
    wait_for,
    write_docs,
)
from tests.topology import Node

WEB = {"app": "web"}
GOOD = policy("good", {"out": builtin_hook("port-filter", {"denyTCPPorts": [8080]})},
              selector={"matchLabels": WEB})
HOOKS = "  hooks: {out: {program: {builtin: counters}}}\n"
HEAD = "apiVersion: lwt.dev/v1alpha1\nkind: LwtRoutePolicy\n"


def _doc(meta: str, spec: str = "  podSelector: {}\n" + HOOKS) -> str:
    return f"{HEAD}metadata: {meta}\nspec:\n{spec}"


def _bomb(levels: int) -> str:
    lines = ["  podSelector: {}", HOOKS.rstrip("\n"), "  x0: &x0 [a, a, a, a, a, a, a, a, a]"]
    for level in range(1, levels + 1):
        lines.append(f"  x{level}: &x{level} [" + ", ".join([f"*x{level - 1}"] * 9) + "]")
    return _doc("{name: bomb, namespace: shop}", "\n".join(lines) + "\n")


# (document text, where the refusal shows: "status:<ns/name>" or "log", text naming the field)
HOSTILE: dict[str, tuple[str, str, str]] = {
    "int key in spec": (_doc("{name: h1, namespace: shop}", "  1: x\n  podSelector: {}\n"
                             + HOOKS), "log", "key 1 is not a string"),
    "null key in config": (_doc("{name: h2, namespace: shop}", "  podSelector: {}\n  hooks: "
                                "{out: {program: {builtin: counters}, config: {~: 1}}}\n"),
                           "log", "key None is not a string"),
    "int key in matchLabels": (_doc("{name: h3, namespace: shop}", "  podSelector: "
                                    "{matchLabels: {7: web}}\n" + HOOKS),
                               "log", "key 7 is not a string"),
    "int namespace": (_doc("{name: h4, namespace: 5}"), "log", "metadata.namespace"),
    "dict namespace": (_doc("{name: h5, namespace: {a: 1}}"), "log", "metadata.namespace"),
    "list namespace": (_doc("{name: h6, namespace: [shop]}"), "log", "metadata.namespace"),
    "timestamp namespace": (_doc("{name: h7, namespace: 2024-01-01T00:00:00Z}"),
                            "status:2024-01-01T00:00:00Z/h7", "metadata.namespace"),
    "int name": (_doc("{name: 5, namespace: shop}"), "log", "metadata.name"),
    "duplicate key": (_doc("{name: h8, namespace: shop, name: h9}"), "log",
                      "duplicate mapping key: 'name'"),
    "alias bomb": (_bomb(9), "log", "alias replay limit exceeded"),
    "non-ASCII name": (_doc("{name: wéb, namespace: shop}"), "status:shop/wéb",
                       "metadata.name"),
    "name with slashes": (_doc("{name: team-a/web-counters, namespace: shop}"),
                          "status:shop/team-a/web-counters", "metadata.name"),
    "quoted timestamp namespace": (_doc("{name: h10, namespace: '2024-01-01T00:00:00Z'}"),
                                   "status:2024-01-01T00:00:00Z/h10", "metadata.namespace"),
    "generation abc": (_doc("{name: h11, namespace: shop, generation: abc}"),
                       "status:shop/h11", "metadata.generation"),
    "deletionTimestamp 5": (_doc("{name: h12, namespace: shop, deletionTimestamp: 5}"),
                            "status:shop/h12", "metadata.deletionTimestamp"),
    "uppercase name": (_doc("{name: Web, namespace: shop}"), "status:shop/Web",
                       "metadata.name"),
}


def _pins(agent: AgentProcess) -> list[str]:
    return sorted(str(p.relative_to(agent.pin_dir)) for p in agent.pin_dir.rglob("*"))


def _write(agent: AgentProcess, *texts: str) -> None:
    tmp = agent.policies.with_suffix(".tmp")
    tmp.write_text("---\n".join(texts))
    tmp.replace(agent.policies)


def test_hostile_documents_beside_a_good_policy_change_nothing(
        agent: AgentProcess, node: Node) -> None:
    write_docs(agent.pods, pod_objects(node, [WEB] * len(node.pods)))
    write_docs(agent.policies, [GOOD])
    agent.start()
    good = agent.wait_ready("shop/good")
    assert good["attachedRoutes"] == len(node.pods) * 2  # IPv4 and IPv6 routes
    routes, pins = encap_labels(node), _pins(agent)
    assert all(routes.values()) and pins
    good_text = yaml.safe_dump(GOOD, sort_keys=False)
    for what, (text, where, field) in HOSTILE.items():
        before = agent.log().count("keeping the previous policies")
        _write(agent, good_text, text)
        if where == "log":
            wait_for(lambda n=before: agent.log().count("keeping the previous policies") > n,
                     10, f"the refusal of the {what} document")
            refusal = agent.log().split("keeping the previous policies")[-2].splitlines()[-1]
            assert field in refusal, (what, refusal)
        else:
            entry = agent.wait_entry(where.removeprefix("status:"),
                                     lambda e: e["lastError"] is not None, what=what)
            assert field in entry["lastError"]["message"], (what, entry["lastError"])
            assert entry["attachedRoutes"] == 0 and entry["programs"] == {}
            assert field in agent.log(), f"{what}: the refusal is on stderr too"
        assert agent.proc is not None and agent.proc.poll() is None, agent.log()
        assert "Traceback" not in agent.log(), agent.log()
        assert encap_labels(node) == routes, what
        assert _pins(agent) == pins, what
    # Back to the good policy alone: still attached as it was, nothing reloaded.
    write_docs(agent.policies, [GOOD])
    agent.wait_ready("shop/good")
    assert encap_labels(node) == routes and _pins(agent) == pins


def _bad(ports: object) -> dict[str, object]:
    bad = policy("good", {"out": builtin_hook("port-filter", {"denyTCPPorts": ports})},
                 selector={"matchLabels": WEB})
    return bad


def test_restart_meeting_a_bad_new_version_keeps_what_is_attached(
        agent: AgentProcess, node: Node) -> None:
    write_docs(agent.pods, pod_objects(node, [WEB] * len(node.pods)))
    write_docs(agent.policies, [GOOD])
    agent.start("--keep-on-exit")
    first = agent.wait_ready("shop/good")
    routes, pins = encap_labels(node), _pins(agent)
    assert agent.signal(signal.SIGTERM) == 0
    # The file now holds only a bad version: the restarted agent never saw the good one.
    write_docs(agent.policies, [_bad(["http"])])
    agent.start()
    entry = agent.wait_entry("shop/good", lambda e: e["lastError"] is not None)
    passes = agent.metric("lwt_agent_reconciles_total")
    wait_for(lambda: agent.metric("lwt_agent_reconciles_total") >= passes + 2, 15,
             "two more reconcile passes (resync every 2 s)")
    assert encap_labels(node) == routes and _pins(agent) == pins
    assert "spec.hooks.out.config.denyTCPPorts[0]" in entry["lastError"]["message"]
    assert "stays as it is" in entry["lastError"]["message"]
    # A good version arrives: it takes over (same code: the pinned program is adopted).
    write_docs(agent.policies, [_bad([8080, 9090])])
    second = agent.wait_ready("shop/good", generation=2)
    assert second["programs"] == first["programs"]
    assert encap_labels(node) == routes and _pins(agent) == pins
    assert agent.signal(signal.SIGINT) == 0
    assert all(text == "" for text in encap_labels(node).values())  # SIGINT still detaches


@pytest.mark.parametrize("text", [HOSTILE["int key in spec"][0],
                                  HOSTILE["non-ASCII name"][0]])
def test_once_refuses_bad_input_with_exit_2_naming_the_field(
        tmp_path: Path, node: Node, pin_dir: Path, text: str) -> None:
    policies = tmp_path / "p.yaml"
    policies.write_text(text)
    done = subprocess.run(
        [sys.executable, "-m", "lwt_agent.cli", "run", "--once", "--policy-file",
         str(policies), "--node-name", "n", "--netns", node.host, "--pin-dir", str(pin_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "metadata.name" in done.stderr or "is not a string" in done.stderr, done.stderr
