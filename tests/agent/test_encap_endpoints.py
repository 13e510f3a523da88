"""encap's endpoints, enforced by the agent with real traffic (issue 12, item 6).

- The outer source must be one of the node's own addresses: a spoofed source (another
  host's address) is refused with the field in the status, and no packet carrying it leaves.
- The remote must be inside the admin's allowlist (`--encap-allowed-remotes`, from the
  chart's agent.encapAllowedRemotes): one outside it is refused the same way.
- An address that leaves the node stops being usable at the next pass: the agent clears the
  program's config (it then drops) instead of sending in a name the node no longer has.
"""
from __future__ import annotations

import socket
import time

from tests.agent.harness import (
    AgentProcess,
    builtin_hook,
    pod_objects,
    policy,
    remote_endpoint,
    write_docs,
)
from tests.topology import Node, ip

LEGACY = {"app": "legacy"}
HOST_R = "10.213.253.1"     # the host's address on the link to the remote
SPARE = "10.213.253.9"      # a second host address, removed during the test
REMOTE = "10.213.253.2"
OTHER_HOST = "10.213.253.7"  # on the remote's link, not the node's: a spoofed source
PORT = 5555


def _tunnel(source: str, remote: str = REMOTE) -> dict[str, object]:
    return policy("tunnel", {"xmit": builtin_hook(
        "encap", {"remote": remote, "source": source, "mode": "udp", "udpPort": PORT},
        headroom=28)}, selector={"matchLabels": LEGACY}, failurePolicy="FailClosed")


def _send(node: Node, dst: str, count: int) -> None:
    sender = node.udp_sender(node.client, dst)
    try:
        for _ in range(count):
            sender.sendto(b"x" * 64, (dst, 5432))
    finally:
        sender.close()


def _arrivals(sock: socket.socket, wait: float = 0.5) -> list[str]:
    """Outer source addresses of the encapsulated datagrams that reached the remote."""
    sources: list[str] = []
    deadline = time.monotonic() + wait
    sock.setblocking(False)
    while time.monotonic() < deadline:
        try:
            _data, (src, _port) = sock.recvfrom(4096)
            sources.append(src)
        except BlockingIOError:
            time.sleep(0.02)
    return sources


def test_encap_endpoints_are_the_nodes_own_and_the_admins(agent: AgentProcess,
                                                          node: Node) -> None:
    with remote_endpoint(node) as remote:
        ip(node.host, "addr", "add", f"{SPARE}/32", "dev", "rm0")
        pod = node.pods[0]
        write_docs(agent.pods, pod_objects(node, [LEGACY]))
        write_docs(agent.policies, [_tunnel(OTHER_HOST)])
        agent.start("--encap-allowed-remotes", "10.213.253.0/24")
        tunnel = node.udp_receiver(remote, REMOTE, PORT)
        try:
            # a spoofed outer source: refused, named, and nothing leaves with it
            entry = agent.wait_entry("shop/tunnel", lambda e: e["lastError"] is not None)
            message = entry["lastError"]["message"]
            assert message.startswith("spec.hooks.xmit.config.source: "), message
            assert f"{OTHER_HOST} is not an address of this node" in message
            _send(node, pod.ipv4, 5)
            assert _arrivals(tunnel) == []

            # a remote outside the admin's allowlist: refused, named
            write_docs(agent.policies, [_tunnel(HOST_R, remote="10.213.254.2")])
            entry = agent.wait_entry(
                "shop/tunnel", lambda e: e["lastError"] is not None
                and e["lastError"]["message"].startswith("spec.hooks.xmit.config.remote: "))
            assert "agent.encapAllowedRemotes" in entry["lastError"]["message"]

            # the node's own address to an allowed remote: carried, with that outer source
            write_docs(agent.policies, [_tunnel(SPARE)])
            agent.wait_entry("shop/tunnel", lambda e: e["lastError"] is None
                             and e["attachedRoutes"] == 2)
            _send(node, pod.ipv4, 5)
            assert _arrivals(tunnel) == [SPARE] * 5

            # the address leaves the node: at the next pass the config is refused and cleared
            ip(node.host, "addr", "del", f"{SPARE}/32", "dev", "rm0")
            entry = agent.wait_entry("shop/tunnel", lambda e: e["lastError"] is not None,
                                     timeout=10)
            assert entry["lastError"]["message"].startswith("spec.hooks.xmit.config.source: ")
            _send(node, pod.ipv4, 5)
            assert _arrivals(tunnel) == []
        finally:
            tunnel.close()


def test_without_an_allowlist_flag_a_standalone_agent_allows_any_remote_but_checks_the_source(
        agent: AgentProcess, node: Node) -> None:
    with remote_endpoint(node):
        write_docs(agent.pods, pod_objects(node, [LEGACY]))
        # a remote no allowlist names: the host admin's own files decide
        write_docs(agent.policies, [_tunnel(HOST_R, remote="10.213.254.2")])
        agent.start()
        agent.wait_entry("shop/tunnel", lambda e: e["lastError"] is None
                         and e["attachedRoutes"] == 2)
        write_docs(agent.policies, [_tunnel("192.0.2.77")])
        entry = agent.wait_entry("shop/tunnel", lambda e: e["lastError"] is not None)
        assert entry["lastError"]["message"].startswith(
            "spec.hooks.xmit.config.source: 192.0.2.77 is not an address of this node")
