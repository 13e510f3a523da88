"""Issue 10 defect 1: a ConfigMap program with .rodata, .data and .bss through `lwt-agent run`
(standalone), with real traffic. bpffs refuses pin names containing '.', so the agent pins
global-data maps under lwt_agent.bpf.pins' names (0rodata, 0data, 0bss); a restarted agent
adopts them by the same names and the counters keep counting.
"""
from __future__ import annotations

import signal
import struct
from pathlib import Path

from lwt_agent.bpf import BpfMap
from lwt_agent.bpf.pins import map_name

from tests.agent.harness import (
    AgentProcess,
    configmap,
    pod_objects,
    policy,
    write_docs,
)
from tests.conftest import BPF_BUILD
from tests.topology import Node

WEB = {"app": "web"}
BLOCKED_PORT = 9  # tenant_globals.c: const volatile blocked_port (.rodata)


def _globals_policy() -> dict[str, object]:
    return policy("globals", {"out": {"program": {
        "configMap": {"name": "globals", "key": "tenant_globals.o"},
        "section": "lwt_out_globals"}}}, selector={"matchLabels": WEB})


def _reaches(node: Node, port: int) -> bool:
    pod = node.pods[0]
    listener = node.tcp_listen(pod.ns, pod.ipv4, port)
    try:
        return node.tcp_connects(node.client, pod.ipv4, port, timeout=0.4)
    finally:
        listener.close()


def _counter(pin: Path) -> int:
    with BpfMap.from_pin(pin) as bpf_map:
        value = bpf_map.lookup(b"\0\0\0\0")
    assert value is not None
    return int(struct.unpack_from("<Q", value)[0])


def test_configmap_program_with_global_data_runs_and_is_adopted(
        agent: AgentProcess, node: Node) -> None:
    blob = (BPF_BUILD / "testobj" / "tenant_globals.o").read_bytes()
    write_docs(agent.configmaps, [configmap("globals", "tenant_globals.o", blob)])
    write_docs(agent.pods, pod_objects(node, [WEB]))
    write_docs(agent.policies, [_globals_policy()])
    agent.start("--keep-on-exit")
    first = agent.wait_ready("shop/globals")

    [pin_dir] = agent.pin_dir.glob("shop/globals/out/*")
    assert sorted(p.name for p in pin_dir.iterdir()) == ["0bss", "0data", "0rodata",
                                                          "globals_out"]
    assert [map_name(n) for n in ("0bss", "0data", "0rodata")] == [".bss", ".data",
                                                                   ".rodata"]
    with BpfMap.from_pin(pin_dir / "0rodata") as rodata:
        assert rodata.lookup(b"\0\0\0\0")[:2] == struct.pack("<H", BLOCKED_PORT)

    assert not _reaches(node, BLOCKED_PORT)  # the .rodata setting drops it
    assert _reaches(node, 8080)
    dropped, passed = _counter(pin_dir / "0bss"), _counter(pin_dir / "0data")
    assert dropped >= 1 and passed > 1000  # .bss from zero, .data from its initial 1000

    # restart: the pins (with '.'-free names) are adopted, the counters keep counting
    assert agent.signal(signal.SIGTERM) == 0
    agent.extra_args = []
    agent.start()
    second = agent.wait_ready("shop/globals")
    assert second["programs"] == first["programs"]
    assert "adopted" in agent.log()
    assert not _reaches(node, BLOCKED_PORT)
    assert _counter(pin_dir / "0bss") > dropped
