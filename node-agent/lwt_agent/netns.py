"""Network namespaces for the demo, the tests and the benchmarks: the one toolkit.

    with Namespaces("lwtdemo1a2b3c") as nets:
        host, pod = nets.add("host"), nets.add("p0")
        host.enable_forwarding()
        calico_pod(host, pod, "cali0", ["10.77.1.1", "fd00:77:1::1"])
        sock = socket_in(pod.name, socket.AF_INET, socket.SOCK_DGRAM)  # lives in the pod

Built on pyroute2 (namespace creation and removal, veth pairs, addresses, links, routes):
nothing here runs iproute2, and nothing forks (see `create`). pyroute2 is imported only when
something is built: entering a namespace (`entered`, the agent's ``--netns``) does not need
it. `Namespaces.close()` removes
every namespace it made (and with it every veth, route and the BPF programs those routes
held); it runs on leaving the `with` block, on errors and Ctrl-C, and at the latest at
interpreter exit (a finalizer). Processes started inside are their starter's to end.

The route engine (lwt_agent.route) does not build routes with pyroute2: pyroute2 encodes
~3-4k routes/s and parses a 10k-route dump ~25x slower than its own encoder (see
docs/route-engine.md; at its default buffer it also lost every event of a 10k burst). It
uses `entered` here for its ``--netns`` option only.
"""
from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
import socket
import subprocess
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from pyroute2 import IPRoute

T = TypeVar("T")
_libc = ctypes.CDLL(None, use_errno=True)

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
RTPROT_BOOT = 3  # what `ip route add` marks routes with: dumps read as iproute2's would
RT_SCOPE_LINK = 253
IFA_F_NODAD = 0x02
# Calico's pod gateways: the host owns them on every caliN (Calico itself answers by proxy
# ARP off its default route; a namespace node has none, so it holds the address instead).
CALICO_GATEWAYS = ("169.254.1.1", "fe80::1")


class NetnsError(Exception):
    """A namespace, link, address or route could not be made; the message says which."""


class NetnsMissingError(NetnsError):
    """No network namespace of that name exists."""


def family_of(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def netns_path(name: str) -> Path:
    path = NETNS_DIR / name
    if not name or "/" in name or name in (".", "..") or not path.exists():
        raise NetnsMissingError(f"network namespace {name!r} does not exist (no {path}); "
                                "list them with `ip netns list`")
    return path


def _setns(fd: int, what: str) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NetnsError(f"cannot enter {what}: {os.strerror(err)} (needs root)") \
            from OSError(err, os.strerror(err))


@contextlib.contextmanager
def entered(name: str) -> Iterator[None]:
    """This thread inside netns ``name`` for the block, back where it was after (also on
    errors). Sockets made in the block stay in ``name``; processes started in it run there.

    setns(2) itself, not pyroute2's: the agent's ``--netns`` comes through here, and
    importing pyroute2 would add 0.2-0.9 s to every such agent's start-up."""
    path = netns_path(name)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target, f"network namespace {name!r}")
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(home, "the thread's own network namespace again")
    finally:
        os.close(home)


def in_netns(name: str, fn: Callable[[], T]) -> T:
    """``fn()`` run on this thread inside netns ``name``."""
    with entered(name):
        return fn()


def socket_in(name: str, family: int, kind: int, proto: int = 0) -> socket.socket:
    """A socket of netns ``name`` (a socket keeps the namespace it was made in)."""
    return in_netns(name, lambda: socket.socket(family, kind, proto))


def run(name: str, argv: Sequence[str], *, timeout: float = 60.0, check: bool = True,
        **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` to completion inside netns ``name``; its output as text."""
    proc = in_netns(name, lambda: subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, check=False, **kwargs))
    if check and proc.returncode != 0:
        raise NetnsError(f"{' '.join(argv)} in netns {name} failed ({proc.returncode}): "
                         f"{(proc.stderr or proc.stdout).strip()}")
    return proc


def tcp_listen(name: str, address: str, port: int, backlog: int = 64) -> socket.socket:
    """A listening TCP socket of netns ``name`` on ``address:port``."""
    sock = socket_in(name, family_of(address), socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    sock.listen(backlog)
    return sock


def tcp_connects(name: str, dst: str, port: int, timeout: float = 1.0) -> bool:
    """True when a TCP handshake from netns ``name`` to ``dst:port`` completes in time."""
    sock = socket_in(name, family_of(dst), socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect((dst, port))
        return True
    except OSError:
        return False
    finally:
        sock.close()


def udp_receiver(name: str, address: str, port: int) -> socket.socket:
    """A non-blocking UDP socket of netns ``name`` bound to ``address:port``, with a receive
    buffer large enough for a test's burst (read it with `drain`)."""
    sock = socket_in(name, family_of(address), socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((address, port))
    sock.setblocking(False)
    return sock


def drain(sock: socket.socket) -> list[bytes]:
    """Every datagram already waiting on a non-blocking socket."""
    got: list[bytes] = []
    while True:
        try:
            got.append(sock.recv(65535))
        except BlockingIOError:
            return got


def names(prefix: str = "") -> list[str]:
    """The named network namespaces (``ip netns list``) that start with ``prefix``."""
    from pyroute2 import netns as pyroute2_netns

    return sorted(n for n in pyroute2_netns.listnetns() if n.startswith(prefix))


def pids(name: str) -> list[int]:
    """The processes inside netns ``name``."""
    from pyroute2 import netns as pyroute2_netns

    return list(pyroute2_netns.ns_pids().get(name, []))


def remove(name: str) -> None:
    """Remove netns ``name`` if it exists; it goes away once no process is left in it."""
    from pyroute2 import netns as pyroute2_netns

    with contextlib.suppress(FileNotFoundError):
        pyroute2_netns.remove(name)


def create(name: str) -> None:
    """Create netns ``name`` (``ip netns add``) without forking.

    pyroute2's own ``netns.create`` forks a child that runs Python: a signal reaching it
    (Ctrl-C, a handler like the benchmarks' SIGTERM one) unwinds the parent's copied stack
    in the child, whose ``finally`` blocks then tear down the parent's namespaces. Here a
    short-lived thread moves itself alone into a new namespace and pyroute2 bind-mounts
    that thread's namespace at /run/netns/<name>; the mount keeps it alive after the
    thread ends."""
    from pyroute2 import netns as pyroute2_netns

    failed: list[BaseException] = []

    def make() -> None:
        try:
            if _libc.unshare(CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
            pyroute2_netns.attach(name, f"{os.getpid()}/task/{threading.get_native_id()}")
        except BaseException as exc:  # handed to the caller's thread
            failed.append(exc)

    worker = threading.Thread(target=make, name=f"netns-create-{name}")
    worker.start()
    worker.join()
    if failed:
        if not isinstance(failed[0], FileExistsError):
            remove(name)  # the mount point file of a half-made namespace
        raise failed[0]


def _prefix_of(address: str) -> int:
    return 128 if ":" in address else 32


def _iproute_in(name: str) -> IPRoute:
    from pyroute2 import IPRoute

    with entered(name):
        ipr = IPRoute()
        ipr.link_lookup(ifname="lo")  # its socket is opened now, in here
    return ipr


class Netns:
    """One named network namespace and a pyroute2 socket inside it.

    pyroute2 opens a netlink socket per thread, in whatever namespace that thread is in
    at the time: the socket of the thread that made this object is opened inside the
    namespace and kept; another thread gets a fresh one per call, closed after it. (Not
    pyroute2's ``netns=``: that forks a child per socket, see `create`.)"""

    def __init__(self, name: str) -> None:
        self.name = name
        self._owner = threading.get_ident()
        self._ipr = _iproute_in(name)

    def __repr__(self) -> str:
        return f"Netns({self.name!r})"

    def close(self) -> None:
        self._ipr.close()

    @contextlib.contextmanager
    def _socket(self) -> Iterator[IPRoute]:
        if threading.get_ident() == self._owner:
            yield self._ipr
            return
        ipr = _iproute_in(self.name)
        try:
            yield ipr
        finally:
            ipr.close()

    def _call(self, what: str, method: str, *args: Any, **kwargs: Any) -> Any:
        with self._socket() as ipr:
            try:
                return getattr(ipr, method)(*args, **kwargs)
            except Exception as exc:  # pyroute2's NetlinkError is not an OSError
                raise NetnsError(f"netns {self.name}: {what}: {exc}") from exc

    def index(self, dev: str) -> int:
        found = self._call(f"find {dev}", "link_lookup", ifname=dev)
        if not found:
            raise NetnsError(f"no device {dev!r} in netns {self.name}")
        return int(found[0])

    def up(self, *devs: str) -> None:
        for dev in devs:
            self._call(f"set {dev} up", "link", "set", index=self.index(dev), state="up")

    def veth(self, dev: str, peer_dev: str, peer: Netns | None = None) -> None:
        """A veth pair, ``dev`` here and ``peer_dev`` in ``peer`` (or here); both up."""
        spec: dict[str, Any] = {"ifname": peer_dev}
        if peer is not None:
            spec["net_ns_fd"] = peer.name
        self._call(f"add veth {dev}/{peer_dev}", "link", "add", ifname=dev,
                   kind="veth", peer=spec)
        self.up(dev)
        (peer or self).up(peer_dev)

    def bridge(self, dev: str) -> None:
        self._call(f"add bridge {dev}", "link", "add", ifname=dev, kind="bridge")
        self.up(dev)

    def enslave(self, dev: str, master: str) -> None:
        self._call(f"enslave {dev} to {master}", "link", "set", index=self.index(dev),
                   master=self.index(master))

    def addr(self, dev: str, cidr: str, *, scope_link: bool = False) -> None:
        """Add ``cidr`` (address/prefix) to ``dev``; IPv6 addresses skip DAD (usable at once)."""
        iface = ipaddress.ip_interface(cidr)
        extra: dict[str, Any] = {"scope": RT_SCOPE_LINK} if scope_link else {}
        if iface.version == 6:
            extra["flags"] = IFA_F_NODAD
        self._call(f"add address {cidr} on {dev}", "addr", "add",
                   index=self.index(dev), address=str(iface.ip),
                   prefixlen=iface.network.prefixlen, **extra)

    def route(self, dst: str, *, dev: str | None = None, via: str | None = None,
              scope_link: bool = False) -> None:
        """Add a route: ``dst`` is an address, a prefix or "default" (family from ``via``)."""
        family = family_of(via if dst == "default" and via else dst)
        default = "::/0" if family == socket.AF_INET6 else "0.0.0.0/0"
        target = default if dst == "default" else dst
        if "/" not in target:
            target = f"{target}/{_prefix_of(target)}"
        extra: dict[str, Any] = {"proto": RTPROT_BOOT, "family": family}
        if dev is not None:
            extra["oif"] = self.index(dev)
        if via is not None:
            extra["gateway"] = via
        if scope_link:
            extra["scope"] = RT_SCOPE_LINK
        self._call(f"add route {dst}", "route", "add", dst=target, **extra)

    def sysctl(self, key: str, value: str | int) -> None:
        """Set ``net.*`` sysctl ``key`` of this namespace (a thread reads its own netns's)."""
        path = Path("/proc/sys", *key.split("."))
        with entered(self.name):
            path.write_text(f"{value}\n")

    def enable_forwarding(self) -> None:
        self.sysctl("net.ipv4.ip_forward", 1)
        self.sysctl("net.ipv6.conf.all.forwarding", 1)

    def disable_rp_filter(self) -> None:
        self.sysctl("net.ipv4.conf.all.rp_filter", 0)
        self.sysctl("net.ipv4.conf.default.rp_filter", 0)



def _teardown(nets: list[Netns]) -> None:
    for net in reversed(nets):
        with contextlib.suppress(Exception):
            net.close()
        remove(net.name)
    nets.clear()


class Namespaces:
    """Namespaces named ``<base>-<role>``, made by `add` and all removed by `close`."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.made: list[Netns] = []
        self._finalizer = weakref.finalize(self, _teardown, self.made)

    def __enter__(self) -> Namespaces:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._finalizer()

    @property
    def names(self) -> list[str]:
        return [net.name for net in self.made]

    def add(self, role: str) -> Netns:
        """A new namespace ``<base>-<role>``: loopback up, no IPv6 duplicate address
        detection (addresses are usable at once)."""
        name = f"{self.base}-{role}"
        try:
            create(name)
        except OSError as exc:
            raise NetnsError(f"cannot create network namespace {name}: "
                             f"{os.strerror(exc.errno or 0)} (needs root; a leftover of "
                             f"a killed run? `ip netns del {name}`)") from exc
        try:
            net = Netns(name)
        except BaseException:
            remove(name)
            raise
        self.made.append(net)
        net.up("lo")
        net.sysctl("net.ipv6.conf.all.accept_dad", 0)
        net.sysctl("net.ipv6.conf.default.accept_dad", 0)
        return net

_V4_LINK_LOCAL = ipaddress.ip_network("169.254.0.0/16")


def _gateway_cidr(gateway: str) -> str:
    address = ipaddress.ip_address(gateway)
    return f"{gateway}/64" if address.version == 6 and address.is_link_local \
        else f"{gateway}/{_prefix_of(gateway)}"


def calico_pod(host: Netns, pod: Netns, host_if: str, addresses: Sequence[str], *,
               gateways: Sequence[str] = CALICO_GATEWAYS, pod_if: str = "eth0",
               host_routes: bool = True) -> None:
    """Wire ``pod`` to ``host`` the Calico way: veth ``host_if``/``pod_if``, each pod address
    as a /32 (/128) with a default route via the gateway of its family, which the host owns
    on ``host_if``; with ``host_routes`` the host routes ``<address>/32 dev host_if scope
    link`` (the routes our programs ride on)."""
    families = {family_of(a) for a in addresses}
    used = [gw for gw in gateways if family_of(gw) in families]
    host.veth(host_if, pod_if, pod)
    for gateway in used:
        host.addr(host_if, _gateway_cidr(gateway),
                  scope_link=ipaddress.ip_address(gateway) in _V4_LINK_LOCAL)
    for address in addresses:
        pod.addr(pod_if, f"{address}/{_prefix_of(address)}")
    for gateway in used:
        v6 = ":" in gateway
        if not (v6 and ipaddress.ip_address(gateway).is_link_local):
            # an IPv6 link-local gateway is on-link by definition; any other needs a route
            pod.route(gateway, dev=pod_if, scope_link=not v6)
        pod.route("default", via=gateway, dev=pod_if)
    if host_routes:
        for address in addresses:
            host.route(address, dev=host_if, scope_link=":" not in address)


def routed_link(host: Netns, peer: Netns, host_if: str, host_cidrs: Sequence[str],
                peer_cidrs: Sequence[str], *, peer_if: str = "eth0") -> None:
    """An ordinary routed link: veth ``host_if``/``peer_if``, the addresses on each end, and
    the peer's default route(s) via the host's addresses."""
    host.veth(host_if, peer_if, peer)
    for cidr in host_cidrs:
        host.addr(host_if, cidr)
    for cidr in peer_cidrs:
        peer.addr(peer_if, cidr)
    for cidr in host_cidrs:
        peer.route("default", via=str(ipaddress.ip_interface(cidr).ip))


__all__ = [
    "CALICO_GATEWAYS",
    "Namespaces",
    "Netns",
    "NetnsError",
    "NetnsMissingError",
    "calico_pod",
    "create",
    "drain",
    "entered",
    "family_of",
    "in_netns",
    "names",
    "netns_path",
    "pids",
    "remove",
    "routed_link",
    "run",
    "socket_in",
    "tcp_connects",
    "tcp_listen",
    "udp_receiver",
]
