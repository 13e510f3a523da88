"""Real traffic between the test namespaces: sockets are created inside a namespace with
`entered` (lwt_agent.netns) and used from the test thread."""
from __future__ import annotations

import contextlib
import socket
import struct
import time
from collections.abc import Iterator

from lwt_agent.netns import entered

ETH_P_ALL = 0x0003


def _family(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


@contextlib.contextmanager
def udp_receiver(ns: str, addr: str, port: int) -> Iterator[socket.socket]:
    with entered(ns):
        sock = socket.socket(_family(addr), socket.SOCK_DGRAM)
    try:
        sock.bind((addr, port))
        sock.settimeout(0.5)
        yield sock
    finally:
        sock.close()


def drain(sock: socket.socket, expect: int, timeout: float = 2.0) -> int:
    """Receives until `expect` datagrams arrived or nothing came for `timeout` seconds."""
    got = 0
    deadline = time.monotonic() + timeout
    while got < expect and time.monotonic() < deadline:
        try:
            sock.recv(65536)
            got += 1
            deadline = time.monotonic() + timeout
        except TimeoutError:
            continue
    return got


# An IPv6 destination-options extension header holding one PadN option (8 bytes in all):
# next header and length are filled in by the kernel from the option length.
DSTOPTS_PADN = bytes([0, 0, 1, 4, 0, 0, 0, 0])


def udp_send(ns: str, dst: str, port: int, count: int, payload: int = 100,
             pace_every: int = 0, ipv6_dstopts: bytes | None = None) -> None:
    with entered(ns):
        sock = socket.socket(_family(dst), socket.SOCK_DGRAM)
    try:
        if ipv6_dstopts is not None:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_DSTOPTS, ipv6_dstopts)
        for i in range(count):
            sock.sendto(bytes(payload), (dst, port))
            if pace_every and (i + 1) % pace_every == 0:
                time.sleep(0.01)
    finally:
        sock.close()


@contextlib.contextmanager
def tcp_listener(ns: str, addr: str, port: int) -> Iterator[socket.socket]:
    with entered(ns):
        sock = socket.socket(_family(addr), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((addr, port))
        sock.listen(16)
        yield sock
    finally:
        sock.close()


@contextlib.contextmanager
def capture(ns: str, dev: str) -> Iterator[socket.socket]:
    """A raw AF_PACKET socket on `dev` in `ns`: every frame the device sees."""
    with entered(ns):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        sock.bind((dev, 0))
        sock.settimeout(0.2)
        yield sock
    finally:
        sock.close()


def frames(sock: socket.socket, timeout: float = 1.0) -> list[bytes]:
    """Every frame received until nothing came for `timeout` seconds."""
    out = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            frame, addr = sock.recvfrom(65536)
        except TimeoutError:
            continue
        if addr[2] == socket.PACKET_OUTGOING:
            continue  # only what arrived at this end
        out.append(frame)
        deadline = time.monotonic() + timeout
    return out


def ethertype(frame: bytes) -> int:
    return int(struct.unpack_from("!H", frame, 12)[0])
