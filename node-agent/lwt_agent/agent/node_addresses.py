"""The node's own addresses, read from the kernel: what `encap`'s outer source is checked
against (lwt_policy.program_config.EncapRules).

Read at every reconcile pass that has an encap program, so an address removed from the node
stops being usable as an outer source at the next pass (the agent then clears that encap's
config and the program drops instead of sending in another host's name).
"""
from __future__ import annotations

import ipaddress

from lwt_policy.program_config import IPAddress
from pyroute2 import IPRoute


def local_addresses(netns: str | None) -> frozenset[IPAddress]:
    """Every address configured on an interface of `netns` (None: this namespace), IPv4 and
    IPv6, any scope."""
    with IPRoute(netns=netns) if netns else IPRoute() as ipr:
        found: set[IPAddress] = set()
        for msg in ipr.get_addr():
            text = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
            if text:
                found.add(ipaddress.ip_address(text.split("%", 1)[0]))
        return frozenset(found)
