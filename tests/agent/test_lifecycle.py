"""Standalone agent lifecycle: live config changes, removals, bad policies, signals, restart.

All against a topology node with real traffic; the agent is a real `lwt-agent run` process
watching its files.
"""
from __future__ import annotations

import hashlib
import signal
import subprocess
import time

from tests.agent.harness import (
    AgentProcess,
    builtin_hook,
    configmap,
    encap_labels,
    pod_objects,
    policy,
    wait_for,
    write_docs,
)
from tests.conftest import BPF_BUILD
from tests.topology import Node, ip

WEB, OTHER = {"app": "web"}, {"app": "other"}


def _deny(ports: list[int], name: str = "deny", **spec: object) -> dict[str, object]:
    return policy(name, {"out": builtin_hook("port-filter", {"denyTCPPorts": ports})},
                  selector={"matchLabels": WEB}, **spec)


def _counters(name: str = "count") -> dict[str, object]:
    return policy(name, {"in": builtin_hook("counters")}, selector={})


def _reaches(node: Node, index: int, port: int) -> bool:
    pod = node.pods[index]
    listener = node.tcp_listen(pod.ns, pod.ipv4, port)
    try:
        return node.tcp_connects(node.client, pod.ipv4, port, timeout=0.4)
    finally:
        listener.close()


def test_config_change_rewrites_maps_without_reattach(agent: AgentProcess, node: Node) -> None:
    write_docs(agent.pods, pod_objects(node, [WEB, WEB]))
    write_docs(agent.policies, [_deny([8080])])
    agent.start()
    before = agent.wait_ready("shop/deny")
    routes_before = encap_labels(node)
    assert not _reaches(node, 0, 8080) and _reaches(node, 0, 8081)
    passed = agent.metric("lwt_route_packets_total", policy="deny",
                          pod_namespace="shop", pod_name="pod-0")
    dropped = agent.metric("lwt_route_dropped_packets_total", policy="deny",
                           pod_namespace="shop", pod_name="pod-0")
    assert passed > 0 and dropped > 0

    write_docs(agent.policies, [_deny([8081])])
    after = agent.wait_ready("shop/deny", generation=2)
    assert after["programs"] == before["programs"]  # same id, tag and label
    assert encap_labels(node) == routes_before  # no route was touched
    assert _reaches(node, 0, 8080) and not _reaches(node, 0, 8081)
    assert agent.metric("lwt_route_packets_total", policy="deny",
                        pod_namespace="shop", pod_name="pod-0") > passed
    assert agent.metric("lwt_route_dropped_packets_total", policy="deny",
                        pod_namespace="shop", pod_name="pod-0") > dropped
    assert "rewritten in place" in agent.log()


def test_removed_policy_and_departed_pod_are_detached(agent: AgentProcess, node: Node) -> None:
    write_docs(agent.pods, pod_objects(node, [WEB, WEB]))
    write_docs(agent.policies, [_deny([8080]), _counters()])
    agent.start()
    agent.wait_ready("shop/deny")
    agent.wait_ready("shop/count")
    pod0, pod1 = node.pods[0], node.pods[1]
    assert "lwt/shop/deny/out/" in encap_labels(node)[pod0.ipv4]

    write_docs(agent.policies, [_counters()])  # the deny policy is gone from the file
    wait_for(lambda: "shop/deny" in agent.statuses() and agent.statuses()["shop/deny"] is None,
             10, "the removal reported")
    labels = encap_labels(node)
    assert all("lwt/shop/deny/" not in text for text in labels.values())
    assert all("lwt/shop/count/in/" in labels[p.ipv4] for p in (pod0, pod1))
    assert _reaches(node, 0, 8080)
    assert not list(agent.pin_dir.glob("shop/deny/*"))  # its pins are gone too

    write_docs(agent.pods, pod_objects(node, [WEB]))  # pod-1 left the node
    agent.wait_entry("shop/count", lambda e: e["routes"] == 2 and e["attachedRoutes"] == 2)
    labels = encap_labels(node)
    assert labels[pod1.ipv4] == "" and labels[pod1.ipv6] == ""
    assert "lwt/shop/count/in/" in labels[pod0.ipv4]


def test_bad_policies_are_refused_naming_the_field(agent: AgentProcess, node: Node) -> None:
    """Unknown built-in, config not matching the map layout, missing section, sha256
    mismatch, invalid selector: each refused with its field named, nothing attached for
    them and nothing already attached changed; a good policy turned bad keeps working."""
    counters_o = (BPF_BUILD / "counters.o").read_bytes()
    out_write_o = (BPF_BUILD / "testobj" / "out_write.o").read_bytes()
    write_docs(agent.configmaps, [configmap("progs", "counters.o", counters_o),
                                  configmap("writer", "w.o", out_write_o)])
    write_docs(agent.pods, pod_objects(node, [WEB, WEB, OTHER]))
    write_docs(agent.policies, [_deny([8080])])
    agent.start()
    good = agent.wait_ready("shop/deny")
    routes = encap_labels(node)

    def from_configmap(section: str, sha256: str | None = None) -> dict[str, object]:
        program: dict[str, object] = {"configMap": {"name": "progs", "key": "counters.o"},
                                      "section": section}
        if sha256:
            program["sha256"] = sha256
        return {"program": program}

    bad = {
        "unknown-builtin": (policy("unknown-builtin", {"in": builtin_hook("nope")}),
                            "spec.hooks.in.program.builtin"),
        "bad-config": (policy("bad-config", {"in": builtin_hook(
            "port-filter", {"denyTCPPorts": [70000]})}), "spec.hooks.in.config.denyTCPPorts[0]"),
        # these two reach the loader: distinct hooks, so neither loses a conflict
        "no-section": (policy("no-section", {"in": from_configmap("lwt/missing")},
                              selector={"matchLabels": OTHER}),
                       "spec.hooks.in.program.section"),
        "bad-sha": (policy("bad-sha", {"out": from_configmap("lwt/counters", "0" * 64)},
                           selector={"matchLabels": OTHER}),
                    "spec.hooks.out.program.sha256"),
        # writes packet data: the verifier refuses that on `in`; its log reaches the status
        "verifier": (policy("verifier", {"in": {"program": {
            "configMap": {"name": "writer", "key": "w.o"}, "section": "lwt_write"}}},
            selector={"matchLabels": WEB}), "spec.hooks.in.program"),
        "bad-selector": (policy("bad-selector", {"in": builtin_hook("counters")},
                                selector={"matchLabels": {"bad key!": "x"}}),
                         "spec.podSelector.matchLabels"),
    }
    write_docs(agent.policies, [_deny([8080]), *(doc for doc, _ in bad.values())])
    for name, (_, field) in bad.items():
        entry = agent.wait_entry(f"shop/{name}", lambda e: e["lastError"] is not None)
        assert field in entry["lastError"]["message"], (name, entry["lastError"])
        assert entry["attachedRoutes"] == 0 and entry["programs"] == {}
    log = agent.entry("shop/verifier")["lastError"]["verifierLog"]
    assert "store_bytes" in log or "unknown func" in log, log
    assert len(log) <= 4096
    time.sleep(0.3)
    assert encap_labels(node) == routes  # nothing attached changed
    assert agent.entry("shop/deny") is not None
    assert agent.entry("shop/deny")["programs"] == good["programs"]

    # The good policy turned bad: refused, the last valid version stays attached.
    broken = _deny([8080])
    broken["spec"]["hooks"]["out"]["config"] = {"denyTCPPorts": ["http"]}  # type: ignore[index]
    write_docs(agent.policies, [broken, _counters("fine")])
    entry = agent.wait_entry("shop/deny", lambda e: e["observedGeneration"] == 2
                             and e["lastError"] is not None)
    assert "spec.hooks.out.config.denyTCPPorts[0]" in entry["lastError"]["message"]
    assert entry["programs"] == good["programs"]
    agent.wait_ready("shop/fine")
    labels = encap_labels(node)
    assert all(good["programs"]["out"]["label"] in labels[p.ipv4] for p in node.pods[:2])
    assert not _reaches(node, 0, 8080)  # still enforced by generation 1

    # A matching sha256 is accepted (the same object, pinned by digest).
    digest = hashlib.sha256(counters_o).hexdigest()
    write_docs(agent.policies, [_deny([8080]), policy(
        "good-sha", {"in": from_configmap("lwt/counters", digest)})])
    agent.wait_ready("shop/good-sha", generation=1)


def test_sigterm_detaches_keep_on_exit_keeps_restart_adopts(
        agent: AgentProcess, node: Node) -> None:
    write_docs(agent.pods, pod_objects(node, [WEB, WEB]))
    write_docs(agent.policies, [_deny([8080]), _counters()])
    agent.start("--keep-on-exit")
    first = agent.wait_ready("shop/count")
    agent.wait_ready("shop/deny")
    for _ in range(3):
        node.ping(node.client, node.pods[1].ipv4)
    counted = agent.metric("lwt_route_packets_total", policy="count",
                           pod_namespace="shop", pod_name="pod-1")
    assert counted >= 3
    attached = encap_labels(node)
    assert agent.signal(signal.SIGTERM) == 0
    assert encap_labels(node) == attached  # --keep-on-exit: still attached
    assert not _reaches(node, 0, 8080)  # and still enforced without an agent
    assert list(agent.pin_dir.glob("shop/*/*/*"))  # pins kept for the next agent

    # Restart: the pinned programs are adopted, no route changes at all (no flap).
    monitor = subprocess.Popen(["ip", "-n", node.host, "monitor", "route"],
                               stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.2)
        agent.extra_args = []
        agent.start()
        second = agent.wait_ready("shop/count")
        agent.wait_ready("shop/deny")
        time.sleep(0.5)
    finally:
        monitor.terminate()
        events, _ = monitor.communicate(timeout=5)
    assert second["programs"] == first["programs"]
    assert encap_labels(node) == attached
    assert [line for line in events.splitlines() if "10.213.1." in line or
            "fd00:213:1:" in line] == []
    assert "adopted" in agent.log()
    # the adopted maps kept counting across the restart
    assert agent.metric("lwt_route_packets_total", policy="count",
                        pod_namespace="shop", pod_name="pod-1") >= counted

    # SIGINT without --keep-on-exit: everything detached, pins removed.
    assert agent.signal(signal.SIGINT) == 0
    assert all(text == "" for text in encap_labels(node).values())
    assert not list(agent.pin_dir.glob("shop/*/*/*"))
    assert _reaches(node, 0, 8080)


def test_guard_puts_programs_back_after_cni_churn(agent: AgentProcess, node: Node) -> None:
    """A CNI rewriting a pod route (replace without the encap, or delete + re-add) loses
    the program; the agent's guard puts it back within a second and counts it."""
    write_docs(agent.pods, pod_objects(node, [WEB, WEB]))
    write_docs(agent.policies, [_deny([8080])])
    agent.start()
    agent.wait_ready("shop/deny")
    attached = encap_labels(node)
    pod0, pod1 = node.pods[0], node.pods[1]
    ip(node.host, "route", "replace", f"{pod0.ipv4}/32", "dev", pod0.host_if, "scope", "link")
    ip(node.host, "route", "del", f"{pod1.ipv4}/32")
    ip(node.host, "route", "add", f"{pod1.ipv4}/32", "dev", pod1.host_if, "scope", "link")
    wait_for(lambda: encap_labels(node) == attached, 1.0, "the guard re-applied")
    assert not _reaches(node, 0, 8080) and not _reaches(node, 1, 8080)
    assert agent.metric("lwt_agent_route_reapplies_total") >= 2
