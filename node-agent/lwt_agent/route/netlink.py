"""The route engine's only netlink I/O edge: raw rtnetlink, pre-encoded batches.

pyroute2 builds ~3.3k route messages/s here; a plain ``ip -batch`` adds ~190k routes/s
(docs/kernel-facts.md#programming-routes-fast). To stay within a small factor of the
latter this module encodes RTM_NEWROUTE/RTM_DELROUTE messages with ``struct`` from the
raw attributes of the dumped route (so every attribute the route had is written back, even
ones we do not interpret), packs up to ``CHUNK_MESSAGES`` of them into one sendmsg, asks
an ACK only for the last message of a chunk (the kernel processes a chunk in order,
synchronously, inside sendmsg) and maps the error replies back to messages by sequence
number.
"""
from __future__ import annotations

import contextlib
import errno as errno_mod
import os
import socket
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TypeVar

from lwt_agent.netns import NetnsError, NetnsMissingError, entered

from .errors import NetlinkError, NetnsNotFoundError
from .model import (
    HOOK_ORDER,
    LWTUNNEL_ENCAP_BPF,
    RTPROT_LWT,
    Destination,
    EncapSpec,
    ObservedRoute,
)

# netlink / rtnetlink numbers (linux/netlink.h, linux/rtnetlink.h, linux/lwtunnel.h)
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_ACK_TLVS = 0x200
NLM_F_DUMP_INTR = 0x10
NLMSGERR_ATTR_MSG = 1
RTM_NEWLINK, RTM_GETLINK = 16, 18
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_PREFSRC = 1, 4, 5, 6, 7
RTA_MULTIPATH, RTA_CACHEINFO, RTA_TABLE, RTA_VIA = 9, 12, 15, 18
RTA_ENCAP_TYPE, RTA_ENCAP, RTA_NH_ID = 21, 22, 30
IFLA_IFNAME = 3
LWT_BPF_HOOK_ATTR = {"in": 1, "out": 2, "xmit": 3}
LWT_BPF_XMIT_HEADROOM = 4
LWT_BPF_PROG_FD, LWT_BPF_PROG_NAME = 1, 2
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF
RTM_F_CLONED = 0x200
# rtm_flags a request may carry back (onlink; IPv6 prefix route). The others (dead,
# linkdown, offload, trap...) are dump-only and the kernel rejects some of them.
_KEEP_RTM_FLAGS = 0x4 | 0x800
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_ROUTE = 0x400
SOL_NETLINK = 270
NETLINK_CAP_ACK, NETLINK_EXT_ACK, NETLINK_GET_STRICT_CHK = 10, 11, 12
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33

CHUNK_MESSAGES = 1024
DUMP_ATTEMPTS = 5
CHUNK_BYTES = 512 * 1024
RT_TABLE_COMPAT = 252

_NLMSGHDR = struct.Struct("=IHHII")
_RTMSG = struct.Struct("=BBBBBBBBI")
_NLATTR = struct.Struct("=HH")
_U32 = struct.Struct("=I")
_SKIP_ATTRS = frozenset({RTA_DST, RTA_CACHEINFO, RTA_ENCAP_TYPE, RTA_ENCAP})

T = TypeVar("T")


def in_netns(netns: str | None, fn: Callable[[], T]) -> T:
    """Run ``fn`` with this thread inside ``netns`` (sockets keep the netns they are made in)."""
    if netns is None:
        return fn()
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(entered(netns))
        except NetnsMissingError as exc:
            raise NetnsNotFoundError(str(exc)) from exc
        except NetnsError as exc:
            cause = exc.__cause__
            raise NetlinkError(getattr(cause, "errno", None) or errno_mod.EPERM,
                               f"setns({netns})") from exc
        return fn()


# --- encoding ----------------------------------------------------------------------------


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return _NLATTR.pack(length, kind) + payload + b"\0" * ((4 - length % 4) % 4)


def encode_encap(encap: EncapSpec, fds: Mapping[str, int]) -> bytes:
    """RTA_ENCAP_TYPE + RTA_ENCAP for a bpf encap; ``fds`` gives the fd for each hook."""
    nested = b""
    for hook, program in encap.hooks:
        prog = _attr(LWT_BPF_PROG_FD, _U32.pack(fds[hook])) + _attr(
            LWT_BPF_PROG_NAME, program.label.encode() + b"\0"
        )
        nested += _attr(LWT_BPF_HOOK_ATTR[hook] | NLA_F_NESTED, prog)
    if encap.headroom:
        nested += _attr(LWT_BPF_XMIT_HEADROOM, _U32.pack(encap.headroom))
    return _attr(RTA_ENCAP_TYPE, struct.pack("=H", LWTUNNEL_ENCAP_BPF) + b"\0\0") + _attr(
        RTA_ENCAP | NLA_F_NESTED, nested
    )


def _message(kind: int, flags: int, body: bytes) -> bytes:
    return _NLMSGHDR.pack(16 + len(body), kind, NLM_F_REQUEST | flags, 0, 0) + body


def replace_message(route: ObservedRoute, encap_attrs: bytes) -> bytes:
    """Rewrite an existing route with every attribute it has, plus (or minus) the encap.

    No NLM_F_CREATE: if the route vanished meanwhile the kernel answers ENOENT instead of
    re-creating a route its owner (the CNI) just removed.
    """
    body = route.header + route.dst_attr + route.attrs + encap_attrs
    return _NLMSGHDR.pack(16 + len(body), RTM_NEWROUTE, NLM_F_REQUEST | NLM_F_REPLACE, 0, 0) + body


def create_owned_message(template: ObservedRoute, dst: Destination, encap_attrs: bytes) -> bytes:
    """A host route for ``dst`` copied from the subnet route, marked RTPROT_LWT, with encap.

    Created and given its encap in one message (CREATE|EXCL): it never exists plain.
    """
    fam, _dlen, slen, tos, table, _prot, scope, rtype, flags = _RTMSG.unpack(template.header)
    header = _RTMSG.pack(fam, dst.prefixlen, slen, tos, table, RTPROT_LWT, scope, rtype, flags)
    body = header + _attr(RTA_DST, dst.raw) + template.attrs + encap_attrs
    return _message(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, body)


def delete_message(route: ObservedRoute) -> bytes:
    return _message(RTM_DELROUTE, 0, route.header + route.dst_attr + route.attrs)


# --- decoding ----------------------------------------------------------------------------


def _iter_attrs(data: bytes | memoryview, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(type, payload start, payload end) of each attribute in data[start:end]."""
    unpack = _NLATTR.unpack_from
    pos = start
    while pos + 4 <= end:
        length, kind = unpack(data, pos)
        if length < 4:
            break
        yield kind & NLA_TYPE_MASK, pos + 4, pos + length
        pos += (length + 3) & ~3


def _decode_bpf_encap(data: bytes, start: int, end: int) -> dict[str, str]:
    hook_names = {v: k for k, v in LWT_BPF_HOOK_ATTR.items()}
    found: dict[str, str] = {}
    for kind, s, e in _iter_attrs(data, start, end):
        hook = hook_names.get(kind)
        if hook is None:
            continue
        for inner, s2, e2 in _iter_attrs(data, s, e):
            if inner == LWT_BPF_PROG_NAME:
                found[hook] = bytes(data[s2:e2]).split(b"\0", 1)[0].decode(errors="replace")
    return {hook: found[hook] for hook in HOOK_ORDER if hook in found}


_ENCAP_CACHE: dict[bytes, Mapping[str, str]] = {}


def parse_route(data: bytes, start: int, end: int) -> ObservedRoute | None:
    """Decode one RTM_NEWROUTE/RTM_DELROUTE message (data[start:end], netlink header first).

    Hot path (10,000 routes per dump): one flat loop, no per-attribute generator.
    """
    body = start + 16
    fam, dst_len, slen, tos, table, proto, scope, rtype, flags = _RTMSG.unpack_from(data, body)
    if flags & RTM_F_CLONED or (fam != socket.AF_INET and fam != socket.AF_INET6):
        return None
    dst_raw = b""
    dst_attr = b""
    oif = gateway = prefsrc = metric = nh_id = encap_type = None
    multipath = False
    labels: Mapping[str, str] = {}
    keep: list[bytes] = []
    encap_span: tuple[int, int] | None = None
    unpack_attr = _NLATTR.unpack_from
    unpack_u32 = _U32.unpack_from
    pos = body + 12
    while pos + 4 <= end:
        length, kind = unpack_attr(data, pos)
        if length < 4:
            break
        kind &= NLA_TYPE_MASK
        s, e = pos + 4, pos + length
        nxt = (e + 3) & ~3
        if kind == RTA_DST:
            dst_raw = data[s:e]
            dst_attr = data[pos:nxt]
        elif kind == RTA_ENCAP_TYPE:
            encap_type = struct.unpack_from("=H", data, s)[0]
        elif kind == RTA_ENCAP:
            encap_span = (s, e)
        elif kind != RTA_CACHEINFO:
            keep.append(data[pos:nxt])
            if kind == RTA_OIF:
                oif = unpack_u32(data, s)[0]
            elif kind == RTA_TABLE:
                table = unpack_u32(data, s)[0]
            elif kind == RTA_PRIORITY:
                metric = unpack_u32(data, s)[0]
            elif kind == RTA_GATEWAY:
                gateway = socket.inet_ntop(fam, data[s:e])
            elif kind == RTA_VIA:
                gateway = f"via:{bytes(data[s:e]).hex()}"
            elif kind == RTA_PREFSRC:
                prefsrc = socket.inet_ntop(fam, data[s:e])
            elif kind == RTA_MULTIPATH:
                multipath = True
            elif kind == RTA_NH_ID:
                nh_id = unpack_u32(data, s)[0]
        pos = nxt
    if encap_type == LWTUNNEL_ENCAP_BPF and encap_span is not None:
        # Thousands of routes carry byte-identical encaps (one label per program): decode once.
        raw_encap = data[encap_span[0] : encap_span[1]]
        cached = _ENCAP_CACHE.get(raw_encap)
        if cached is not None:
            labels = cached
        else:
            if len(_ENCAP_CACHE) > 4096:
                _ENCAP_CACHE.clear()
            labels = MappingProxyType(_decode_bpf_encap(data, *encap_span))  # shared: read-only
            _ENCAP_CACHE[raw_encap] = labels
    if not dst_raw:
        dst_raw = b"\0" * (4 if fam == socket.AF_INET else 16)
    header = _RTMSG.pack(fam, dst_len, slen, tos, table if table < 256 else RT_TABLE_COMPAT,
                         proto, scope, rtype, flags & _KEEP_RTM_FLAGS)
    return ObservedRoute(
        fam,
        Destination(dst_raw, dst_len),
        table,
        proto,
        scope,
        rtype,
        oif,
        gateway,
        prefsrc,
        metric,
        multipath,
        nh_id,
        encap_type,
        labels,
        header,
        dst_attr,
        b"".join(keep),
    )


def _parse_error(data: bytes, start: int, end: int) -> tuple[int, int, str | None]:
    """(errno as positive int, seq of the request, extack message) of an NLMSG_ERROR."""
    flags = _NLMSGHDR.unpack_from(data, start)[2]
    error = struct.unpack_from("=i", data, start + 16)[0]
    _len, _t, _f, req_seq, _p = _NLMSGHDR.unpack_from(data, start + 20)
    extack = None
    if flags & NLM_F_ACK_TLVS:
        # CAP_ACK is on, so the request header is echoed without its payload.
        for kind, s, e in _iter_attrs(data, start + 36, end):
            if kind == NLMSGERR_ATTR_MSG:
                extack = bytes(data[s:e]).split(b"\0", 1)[0].decode(errors="replace")
    return -error, req_seq, extack


# --- socket --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RouteEvent:
    kind: int  # RTM_NEWROUTE or RTM_DELROUTE
    route: ObservedRoute


class RouteSocket:
    """A NETLINK_ROUTE socket in one network namespace."""

    def __init__(self, netns: str | None = None, groups: int = 0) -> None:
        self.netns = netns
        self.sock: socket.socket = in_netns(netns, lambda: self._open(groups))
        self._seq = 0
        self._buf = bytearray(1 << 20)

    @staticmethod
    def _open(groups: int) -> socket.socket:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 8 << 20)
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
            for option in (NETLINK_CAP_ACK, NETLINK_EXT_ACK, NETLINK_GET_STRICT_CHK):
                sock.setsockopt(SOL_NETLINK, option, 1)
            sock.bind((0, groups))
        except OSError:
            sock.close()
            raise
        return sock

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RouteSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fileno(self) -> int:
        return self.sock.fileno()

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0x7FFFFFFF or 1
        return self._seq

    def _recv(self) -> memoryview:
        size = self.sock.recv_into(self._buf)
        return memoryview(self._buf)[:size]

    def _dump(self, request: bytes, on_message: Callable[[bytes, int, int, int], None]) -> bool:
        """Run one dump; returns False when the kernel flagged it inconsistent (changed
        while dumping: NLM_F_DUMP_INTR) — the caller must discard what it got and retry."""
        seq = self._next_seq()
        msg = bytearray(request)
        struct.pack_into("=I", msg, 8, seq)
        self.sock.send(msg)
        consistent = True
        while True:
            data = bytes(self._recv())
            pos = 0
            while pos + 16 <= len(data):
                length, kind, flags, mseq, _pid = _NLMSGHDR.unpack_from(data, pos)
                if length < 16:
                    return consistent
                if mseq == seq:
                    if flags & NLM_F_DUMP_INTR:
                        consistent = False
                    if kind == NLMSG_DONE:
                        return consistent
                    if kind == NLMSG_ERROR:
                        err, _s, extack = _parse_error(data, pos, pos + length)
                        if err:
                            raise NetlinkError(err, "route dump refused", extack)
                        return consistent
                    on_message(data, kind, pos, pos + length)
                pos += (length + 3) & ~3

    def _consistent_dump(
        self,
        request: bytes,
        collect: Callable[[bytes, int, int, int], None],
        reset: Callable[[], None],
    ) -> None:
        for _attempt in range(DUMP_ATTEMPTS):
            if self._dump(request, collect):
                return
            reset()
        raise NetlinkError(
            errno_mod.EAGAIN,
            f"the routes kept changing during {DUMP_ATTEMPTS} dumps in a row; retry later",
        )

    def dump_routes(self, family: int, table: int | None) -> list[ObservedRoute]:
        """Every route of ``family`` in ``table`` (None: all tables), cloned ones skipped."""
        attrs = b""
        rtm_table = 0
        if table is not None:
            rtm_table = table if table < 256 else RT_TABLE_COMPAT
            attrs = _attr(RTA_TABLE, _U32.pack(table))
        body = _RTMSG.pack(family, 0, 0, 0, rtm_table, 0, 0, 0, 0) + attrs
        request = _message(RTM_GETROUTE, NLM_F_DUMP, body)
        routes: list[ObservedRoute] = []

        def collect(data: bytes, kind: int, start: int, end: int) -> None:
            if kind == RTM_NEWROUTE:
                route = parse_route(data, start, end)
                if route is not None and (table is None or route.table == table):
                    routes.append(route)

        self._consistent_dump(request, collect, routes.clear)
        return routes

    def dump_links(self) -> dict[int, str]:
        """ifindex -> name of every link."""
        body = struct.pack("=BxHiII", socket.AF_UNSPEC, 0, 0, 0, 0)
        request = _message(RTM_GETLINK, NLM_F_DUMP, body)
        links: dict[int, str] = {}

        def collect(data: bytes, kind: int, start: int, end: int) -> None:
            if kind != RTM_NEWLINK:
                return
            index = struct.unpack_from("=i", data, start + 20)[0]
            for attr, s, e in _iter_attrs(data, start + 32, end):
                if attr == IFLA_IFNAME:
                    links[index] = bytes(data[s:e]).split(b"\0", 1)[0].decode()

        self._consistent_dump(request, collect, links.clear)
        return links

    def send_batch(self, messages: Sequence[bytes]) -> dict[int, NetlinkError]:
        """Send pre-encoded requests in chunks; return {message index: error} of failures."""
        failures: dict[int, NetlinkError] = {}
        for first in range(0, len(messages), CHUNK_MESSAGES):
            chunk = messages[first : first + CHUNK_MESSAGES]
            # Split further when large; each piece still gets its own final ACK.
            piece: list[bytes] = []
            size = 0
            start = first
            for message in chunk:
                if piece and size + len(message) > CHUNK_BYTES:
                    self._send_chunk(piece, start, failures)
                    start += len(piece)
                    piece, size = [], 0
                piece.append(message)
                size += len(message)
            if piece:
                self._send_chunk(piece, start, failures)
        return failures

    def _send_chunk(
        self, messages: Sequence[bytes], first_index: int, failures: dict[int, NetlinkError]
    ) -> None:
        buf = bytearray(b"".join(messages))
        seq_to_index: dict[int, int] = {}
        pos = 0
        last = len(messages) - 1
        for i, message in enumerate(messages):
            seq = self._next_seq()
            seq_to_index[seq] = first_index + i
            struct.pack_into("=I", buf, pos + 8, seq)
            if i == last:
                flags = struct.unpack_from("=H", buf, pos + 6)[0]
                struct.pack_into("=H", buf, pos + 6, flags | NLM_F_ACK)
            pos += len(message)
        last_seq = self._seq
        self.sock.send(buf)
        while True:
            data = self._recv()
            pos = 0
            while pos + 16 <= len(data):
                length, kind, _flags, _mseq, _pid = _NLMSGHDR.unpack_from(data, pos)
                if length < 16:
                    break
                if kind == NLMSG_ERROR:
                    err, seq, extack = _parse_error(data, pos, pos + length)
                    if err and seq in seq_to_index:
                        failures[seq_to_index[seq]] = NetlinkError(
                            err, f"route request refused ({os.strerror(err)})", extack
                        )
                    if seq == last_seq:
                        return
                pos += (length + 3) & ~3

    def recv_events(self) -> list[RouteEvent]:
        """Route events from a socket bound to RTMGRP_IPV4_ROUTE/RTMGRP_IPV6_ROUTE.

        Raises OSError(ENOBUFS) when events were lost: the caller must resync from a dump.
        """
        data = bytes(self._recv())
        events: list[RouteEvent] = []
        pos = 0
        while pos + 16 <= len(data):
            length, kind, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, pos)
            if length < 16:
                break
            if kind in (RTM_NEWROUTE, RTM_DELROUTE):
                route = parse_route(data, pos, pos + length)
                if route is not None:
                    events.append(RouteEvent(kind, route))
            pos += (length + 3) & ~3
        return events

