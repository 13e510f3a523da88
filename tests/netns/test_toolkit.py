"""lwt_agent.netns, the one namespace toolkit: what it builds works (real traffic), and
nothing of it is left behind (`ip netns list` and the host's links before/after), also when
the body raises or the owner is dropped without `close`."""
from __future__ import annotations

import gc
import signal
import socket
import subprocess
import sys
import threading
import uuid

import pytest
from lwt_agent import netns
from lwt_agent.netns import Namespaces, NetnsError, calico_pod, routed_link, socket_in


def _ip(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout


PREFIX = "lwtT"
DEVICES = ("cali0", "cl0", "eth0")  # what the tests below create, in namespaces only


def _world() -> tuple[list[str], list[str]]:
    """What the toolkit could leave behind, as iproute2 sees it: our namespaces, and our
    devices in this (the host's) namespace. Other test runs on this machine come and go,
    so only names of ours count."""
    spaces = [line.split()[0] for line in _ip("netns", "list").splitlines()
              if line.startswith(PREFIX)]
    links = [line.split(":")[1].strip().split("@")[0]
             for line in _ip("-o", "link", "show").splitlines()]
    return spaces, [link for link in links if link in DEVICES]


def _base() -> str:
    return f"{PREFIX}{uuid.uuid4().hex[:6]}"


def _wire(nets: Namespaces) -> tuple[netns.Netns, netns.Netns, netns.Netns]:
    host, pod, client = nets.add("host"), nets.add("pod"), nets.add("cl")
    host.enable_forwarding()
    calico_pod(host, pod, "cali0", ["10.199.1.1", "fd00:199:1::1"])
    routed_link(host, client, "cl0", ["10.199.254.1/24", "fd00:199:fe::1/64"],
                ["10.199.254.2/24", "fd00:199:fe::2/64"])
    return host, pod, client


@pytest.mark.parametrize("dst", ["10.199.1.1", "fd00:199:1::1"])
def test_calico_pod_and_routed_client_carry_tcp_and_leave_nothing(dst: str) -> None:
    before = _world()
    with Namespaces(_base()) as nets:
        host, pod, client = _wire(nets)
        assert "10.199.1.1 dev cali0 scope link" in \
            netns.run(host.name, ["ip", "route"]).stdout
        server = socket_in(pod.name, netns.family_of(dst), socket.SOCK_STREAM)
        server.bind((dst, 8080))
        server.listen(1)
        sender = socket_in(client.name, netns.family_of(dst), socket.SOCK_STREAM)
        sender.settimeout(2)
        try:
            sender.connect((dst, 8080))  # client -> host (forwarding) -> pod
        finally:
            sender.close()
            server.close()
        assert set(netns.names(nets.base)) == set(nets.names)
    assert _world() == before


def test_an_exception_in_the_body_still_removes_everything() -> None:
    before = _world()
    with pytest.raises(RuntimeError, match="the body failed"), Namespaces(_base()) as nets:
        _wire(nets)
        raise RuntimeError("the body failed")
    assert _world() == before


def test_a_failed_build_step_is_a_typed_error_and_leaves_nothing() -> None:
    before = _world()
    with pytest.raises(NetnsError, match="no device 'nope'"), Namespaces(_base()) as nets:
        host = nets.add("host")
        host.addr("nope", "10.199.9.1/24")
    assert _world() == before


def test_an_owner_dropped_without_close_is_finalized() -> None:
    before = _world()
    nets = Namespaces(_base())
    _wire(nets)
    del nets
    gc.collect()
    assert _world() == before


def test_entered_returns_to_the_threads_own_namespace_also_on_errors() -> None:
    own = _ip("-o", "link", "show")
    with Namespaces(_base()) as nets:
        net = nets.add("x")
        with pytest.raises(ValueError), netns.entered(net.name):
            raise ValueError
        assert _ip("-o", "link", "show") == own
        # a Netns made on one thread is used from another: pyroute2 opens that thread's
        # socket inside the namespace too
        seen: list[int] = []
        worker = threading.Thread(target=lambda: seen.append(net.index("lo")))
        worker.start()
        worker.join()
        assert seen == [1]  # lo of a fresh namespace, not of the host


def test_a_missing_namespace_is_refused_with_what_to_do() -> None:
    with pytest.raises(NetnsError, match="ip netns list"):
        netns.in_netns("lwtT-no-such-netns", lambda: None)
    with pytest.raises(NetnsError, match="does not exist"):
        netns.entered("../etc").__enter__()


def test_building_forks_nothing_that_could_run_our_signal_handlers() -> None:
    """pyroute2's own netns.create and IPRoute(netns=) fork a Python child and SIGTERM it:
    with a handler that raises (as the benchmarks install), that child unwound our stack and
    ran our `finally` blocks, removing the namespaces under the parent's feet."""

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupted)
    try:
        with Namespaces(_base()) as nets:
            host, pod, client = _wire(nets)
            worker = threading.Thread(target=lambda: pod.up("eth0"))
            worker.start()
            worker.join()
            assert set(netns.names(nets.base)) == set(nets.names) == \
                {host.name, pod.name, client.name}
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_entering_a_namespace_does_not_import_pyroute2() -> None:
    """The agent's --netns goes through `entered`: it must not pay pyroute2's import time
    (0.2-0.9 s measured here), or every agent the tests and benchmarks start would."""
    with Namespaces(_base()) as nets:
        net = nets.add("x")
        script = ("import sys, socket\n"
                  "from lwt_agent.route.netlink import in_netns\n"
                  f"sock = in_netns({net.name!r}, lambda: socket.socket())\n"
                  "assert 'pyroute2' not in sys.modules, 'pyroute2 was imported'\n")
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
