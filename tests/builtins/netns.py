"""A small node built out of network namespaces for the built-in program tests.

    client (C) --veth-- host (H) --veth-- pod (P)
                          |
                          +------veth---- remote (R)   (the encap tunnel endpoint)

H forwards between C and P; the route to the pod is a Calico-style `/32 dev hp scope link`
(and `/128` for IPv6) that the tests create with an LWT program on it. Built from the
primitives of `lwt_agent.netns`. Namespace names are `lwtB` + a random suffix + `-` + a role
letter; `close()` deletes them all (and with them every veth, route and the programs those
routes held).
"""
from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass, field

from lwt_agent.netns import Namespaces, calico_pod, routed_link


def sh(*args: str, check: bool = True, env: dict[str, str] | None = None
       ) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): "
                           f"{proc.stderr.strip() or proc.stdout.strip()}")
    return proc


@dataclass
class Node:
    client: str
    host: str
    pod: str
    remote: str
    namespaces: list[str] = field(default_factory=list)
    nets: Namespaces | None = None

    # addresses
    CLIENT4 = "10.201.1.2"
    HOST_C4 = "10.201.1.1"
    POD4 = "10.201.2.2"
    HOST_P4 = "10.201.2.1"
    REMOTE4 = "10.201.3.2"
    HOST_R4 = "10.201.3.1"
    CLIENT6 = "fd00:201:1::2"
    HOST_C6 = "fd00:201:1::1"
    POD6 = "fd00:201:2::2"
    HOST_P6 = "fd00:201:2::1"
    REMOTE6 = "fd00:201:3::2"
    HOST_R6 = "fd00:201:3::1"
    POD_DEV = "hp"      # host side of the pod veth: the device of the pod routes
    REMOTE_DEV = "r0"   # remote side of the host<->remote veth (capture here)

    def ip(self, ns: str, *args: str, env: dict[str, str] | None = None,
           check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "-n", ns, *args, env=env, check=check)

    def close(self) -> None:
        if self.nets is not None:
            self.nets.close()
        self.namespaces.clear()


def build_node() -> Node:
    nets = Namespaces(f"lwtB{secrets.token_hex(3)}")
    try:
        h, c, p, r = (nets.add(role) for role in ("h", "c", "p", "r"))
        h.enable_forwarding()
        for net in (h, p):
            net.disable_rp_filter()
        node = Node(client=c.name, host=h.name, pod=p.name, remote=r.name,
                    namespaces=nets.names, nets=nets)
        routed_link(h, c, "hc", [f"{node.HOST_C4}/24", f"{node.HOST_C6}/64"],
                    [f"{node.CLIENT4}/24", f"{node.CLIENT6}/64"], peer_if="c0")
        # the host's route to the pod is what each test adds, with its program on it
        calico_pod(h, p, node.POD_DEV, [node.POD4, node.POD6], pod_if="p0",
                   gateways=(node.HOST_P4, node.HOST_P6), host_routes=False)
        routed_link(h, r, "hr", [f"{node.HOST_R4}/24", f"{node.HOST_R6}/64"],
                    [f"{node.REMOTE4}/24", f"{node.REMOTE6}/64"], peer_if=node.REMOTE_DEV)
    except BaseException:
        nets.close()
        raise
    return node
