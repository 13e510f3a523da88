"""The built-ins on real routes with real traffic through a namespace node (client -> host
-> pod, host -> remote for encap). Configuration is written into the live maps with
program_config.sync_config, as the agent does: a config change never re-attaches."""
from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Callable
from typing import TypeVar

import pytest
from lwt_agent.bpf.ringbuf import RingBuffer
from lwt_agent.netns import tcp_connects
from lwt_policy.program_config import (
    check_map_layout,
    counters_status,
    decode_addr,
    encode_addr,
    read_destination_counters,
    read_program_counters,
    sync_config,
)
from lwt_policy.sampler import decode_sample

from .netns import Node, sh
from .traffic import (
    DSTOPTS_PADN,
    capture,
    drain,
    ethertype,
    frames,
    tcp_listener,
    udp_receiver,
    udp_send,
)

pytestmark = pytest.mark.kernel
T = TypeVar("T")

UDP_PAYLOAD = 100
V4_LEN = 20 + 8 + UDP_PAYLOAD   # 128: log2 bucket 7
V6_LEN = 40 + 8 + UDP_PAYLOAD   # 148: log2 bucket 7


def settle(read: Callable[[], T], done: Callable[[T], bool], timeout: float = 5.0) -> T:
    """Reads until `done` holds or `timeout` passes; returns the last reading. Sent packets
    may still be in a softirq backlog (ksoftirqd on a busy machine) when send() returns."""
    deadline = time.monotonic() + timeout
    value = read()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(0.02)
        value = read()
    return value


def collect(ring: RingBuffer, count: int, timeout: float = 5.0) -> list[bytes]:
    """Consumes records until `count` arrived (or `timeout` passed)."""
    records: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(records) < count and time.monotonic() < deadline:
        if ring.poll(timeout=max(0.0, deadline - time.monotonic())):
            records.extend(ring.consume())
    return records


def _route(node: Node, dst: str) -> str:
    family = ["-6"] if ":" in dst else []
    return node.ip(node.host, *family, "route", "show", dst).stdout.strip()


# --- port-filter ---------------------------------------------------------------------------

@pytest.mark.parametrize("hook", ["in", "out", "xmit"])
def test_port_filter_drops_denied_port_and_counts(node: Node, attacher, hook: str) -> None:
    attacher.route_add(node, node.host, f"{node.POD4}/32", node.POD_DEV, {hook: "port-filter"})
    maps = attacher.maps("port-filter")
    check_map_layout("port-filter", maps)
    sync_config("port-filter", {"denyTCPPorts": [8080]}, maps)
    route_before = _route(node, node.POD4)

    # UDP first, while nothing else flows: the counters must equal what was sent
    with udp_receiver(node.pod, node.POD4, 7000) as rx:
        udp_send(node.client, node.POD4, 7000, 50, UDP_PAYLOAD)
        assert drain(rx, 50) == 50
    c = read_destination_counters("port-filter", maps)[node.POD4]
    assert (c.packets, c.bytes, c.dropped_packets) == (50, 50 * V4_LEN, 0)

    with tcp_listener(node.pod, node.POD4, 8080), tcp_listener(node.pod, node.POD4, 9090):
        assert tcp_connects(node.client, node.POD4, 9090), "TCP to an allowed port failed"
        assert not tcp_connects(node.client, node.POD4, 8080, timeout=0.5), \
            "TCP to denied port 8080 got through"
    c = read_destination_counters("port-filter", maps)[node.POD4]
    assert c.dropped_packets >= 1  # the SYN (and its retransmissions)

    # live change: deny UDP 7000 instead of TCP 8080 (the TCP bitmap is cleared)
    sync_config("port-filter", {"denyUDPPorts": [7000]}, maps)
    tcp_bits = maps["pf_ports"].lookup(struct.pack("<I", 0))
    udp_bits = maps["pf_ports"].lookup(struct.pack("<I", 1))
    assert tcp_bits == bytes(8192)
    assert udp_bits == bytes(7000 >> 3) + bytes([1 << (7000 & 7)]) + bytes(8192 - 876)
    with tcp_listener(node.pod, node.POD4, 8080):
        assert tcp_connects(node.client, node.POD4, 8080), "TCP 8080 still denied"
    before = read_destination_counters("port-filter", maps)[node.POD4]
    with udp_receiver(node.pod, node.POD4, 7000) as rx:
        udp_send(node.client, node.POD4, 7000, 20, UDP_PAYLOAD)
        assert drain(rx, 20, timeout=0.5) == 0
    after = settle(lambda: read_destination_counters("port-filter", maps)[node.POD4],
                   lambda c: c.dropped_packets - before.dropped_packets >= 20)
    assert after.dropped_packets - before.dropped_packets == 20
    assert after.dropped_bytes - before.dropped_bytes == 20 * V4_LEN
    assert _route(node, node.POD4) == route_before, "config change must not re-attach"


def test_port_filter_source_prefixes_ipv4_and_ipv6(node: Node, attacher) -> None:
    attacher.route_add(node, node.host, f"{node.POD4}/32", node.POD_DEV, {"out": "port-filter"})
    attacher.route_add(node, node.host, f"{node.POD6}/128", node.POD_DEV,
                       {"out": "port-filter"})
    maps = attacher.maps("port-filter")
    for pod in (node.POD4, node.POD6):
        with udp_receiver(node.pod, pod, 7100) as rx:
            udp_send(node.client, pod, 7100, 10, UDP_PAYLOAD)
            assert drain(rx, 10) == 10, f"{pod} before any deny"

    # deny the client's IPv6 prefix only: IPv4 still passes
    sync_config("port-filter", {"denySourceCIDRs": ["fd00:201:1::/64", "192.0.2.0/24"]}, maps)
    with udp_receiver(node.pod, node.POD6, 7100) as rx6, \
            udp_receiver(node.pod, node.POD4, 7100) as rx4:
        udp_send(node.client, node.POD6, 7100, 10, UDP_PAYLOAD)
        udp_send(node.client, node.POD4, 7100, 10, UDP_PAYLOAD)
        assert drain(rx6, 10, timeout=0.5) == 0
        assert drain(rx4, 10) == 10

    # all of IPv6: IPv4 (looked up IPv4-mapped) must still pass
    sync_config("port-filter", {"denySourceCIDRs": ["::/0"]}, maps)
    with udp_receiver(node.pod, node.POD6, 7100) as rx6, \
            udp_receiver(node.pod, node.POD4, 7100) as rx4:
        udp_send(node.client, node.POD6, 7100, 10, UDP_PAYLOAD)
        udp_send(node.client, node.POD4, 7100, 10, UDP_PAYLOAD)
        assert drain(rx6, 10, timeout=0.5) == 0
        assert drain(rx4, 10) == 10

    # deny the client's IPv4 /24 too (IPv4-mapped in the trie); IPv6 TCP to a port as well
    sync_config("port-filter", {"denySourceCIDRs": ["10.201.1.0/24"],
                                "denyTCPPorts": [9090]}, maps)
    with udp_receiver(node.pod, node.POD4, 7100) as rx4:
        udp_send(node.client, node.POD4, 7100, 10, UDP_PAYLOAD)
        assert drain(rx4, 10, timeout=0.5) == 0
    with tcp_listener(node.pod, node.POD6, 9090), tcp_listener(node.pod, node.POD6, 9191):
        assert tcp_connects(node.client, node.POD6, 9191)
        assert not tcp_connects(node.client, node.POD6, 9090, timeout=0.5)

    counters = settle(lambda: read_destination_counters("port-filter", maps),
                      lambda c: c[node.POD4].dropped_packets >= 10)
    assert counters[node.POD4].packets == 30 and counters[node.POD4].dropped_packets == 10
    assert counters[node.POD6].packets >= 10 and counters[node.POD6].dropped_packets >= 21


def test_port_filter_finds_ports_behind_ipv6_extension_headers(node: Node, attacher) -> None:
    attacher.route_add(node, node.host, f"{node.POD6}/128", node.POD_DEV, {"in": "port-filter"})
    maps = attacher.maps("port-filter")
    sync_config("port-filter", {"denyUDPPorts": [7200]}, maps)
    with udp_receiver(node.pod, node.POD6, 7200) as denied, \
            udp_receiver(node.pod, node.POD6, 7201) as allowed:
        udp_send(node.client, node.POD6, 7200, 5, UDP_PAYLOAD, ipv6_dstopts=DSTOPTS_PADN)
        udp_send(node.client, node.POD6, 7201, 5, UDP_PAYLOAD, ipv6_dstopts=DSTOPTS_PADN)
        assert drain(allowed, 5) == 5
        assert drain(denied, 5, timeout=0.3) == 0
    c = settle(lambda: read_destination_counters("port-filter", maps)[node.POD6],
               lambda c: c.dropped_packets >= 5)
    assert (c.packets, c.dropped_packets) == (5, 5)
    assert c.bytes == 5 * (V6_LEN + len(DSTOPTS_PADN))


# --- counters ------------------------------------------------------------------------------
def _cache_slot(address: str) -> int:
    """lwt_cache_slot() of bpf/include/lwt_builtin.h, for picking colliding destinations."""
    key = encode_addr(address)
    x = int.from_bytes(key[:8], "little") ^ int.from_bytes(key[8:], "little")
    x ^= x >> 32
    return ((x & 0xFFFFFFFF) * 0x9E3779B1 & 0xFFFFFFFF) >> (32 - 7)


def test_counters_exact_when_two_destinations_share_a_cache_slot(node: Node, attacher) -> None:
    """The per-CPU destination cache: of two destinations with the same slot, the first one
    seen on a CPU owns the slot there and the other is counted in the hash; readers add
    both, so each is counted exactly."""
    first = f"10.201.2.{100}"
    second = next(f"10.201.2.{i}" for i in range(101, 255)
                  if _cache_slot(f"10.201.2.{i}") == _cache_slot(first))
    for dst in (first, second):
        attacher.route_add(node, node.host, f"{dst}/32", node.POD_DEV, {"out": "counters"})
    maps = attacher.maps("counters")
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})  # one CPU: one slot, so the second must miss it
    try:
        udp_send(node.client, first, 7000, 30, UDP_PAYLOAD)
        udp_send(node.client, second, 7000, 20, UDP_PAYLOAD)
        udp_send(node.client, first, 7000, 5, UDP_PAYLOAD)
    finally:
        os.sched_setaffinity(0, cpus)
    counters = read_destination_counters("counters", maps)
    assert (counters[first].packets, counters[second].packets) == (35, 20)
    assert counters[second].bytes == 20 * V4_LEN
    in_hash = {decode_addr(k) for k in maps["cnt_stats"].keys()}  # noqa: SIM118 (a BPF map)
    assert in_hash == {second}




def test_counters_equal_packets_sent(node: Node, attacher) -> None:
    attacher.route_add(node, node.host, f"{node.POD4}/32", node.POD_DEV, {"xmit": "counters"})
    attacher.route_add(node, node.host, f"{node.POD6}/128", node.POD_DEV, {"xmit": "counters"})
    maps = attacher.maps("counters")
    check_map_layout("counters", maps)
    with udp_receiver(node.pod, node.POD4, 7000) as rx4, \
            udp_receiver(node.pod, node.POD6, 7000) as rx6:
        udp_send(node.client, node.POD4, 7000, 40, UDP_PAYLOAD)
        udp_send(node.client, node.POD6, 7000, 25, UDP_PAYLOAD)
        udp_send(node.client, node.POD4, 7000, 3, 1400)  # 1428 bytes: bucket 10
        assert drain(rx4, 43) == 43 and drain(rx6, 25) == 25
    counters = read_destination_counters("counters", maps)
    v4, v6 = counters[node.POD4], counters[node.POD6]
    assert (v4.packets, v4.bytes) == (43, 40 * V4_LEN + 3 * 1428)
    assert v4.histogram[7] == 40 and v4.histogram[10] == 3 and sum(v4.histogram) == 43
    assert (v6.packets, v6.bytes) == (25, 25 * V6_LEN)
    assert v6.histogram[7] == 25
    assert v6.as_dict()["lengthHistogram"] == {"128-255": 25}
    assert read_program_counters("counters", maps) == {"notIP": 0, "tableFull": 0}
    status = counters_status("counters", maps)
    assert status["destinations"][node.POD6] == {
        "packets": 25, "bytes": 25 * V6_LEN, "droppedPackets": 0, "droppedBytes": 0,
        "lengthHistogram": {"128-255": 25}}
    assert status["program"] == {"notIP": 0, "tableFull": 0}


# --- sampler -------------------------------------------------------------------------------

def test_sampler_samples_arrive_through_the_ring_buffer(node: Node, attacher) -> None:
    attacher.route_add(node, node.host, f"{node.POD4}/32", node.POD_DEV, {"in": "sampler"})
    attacher.route_add(node, node.host, f"{node.POD6}/128", node.POD_DEV, {"in": "sampler"})
    maps = attacher.maps("sampler")
    check_map_layout("sampler", maps)
    sync_config("sampler", {"oneIn": 1, "snapLength": 48}, maps)
    with RingBuffer.from_map(maps["smp_ring"]) as ring:
        assert list(ring.consume()) == []
        udp_send(node.client, node.POD4, 7000, 15, UDP_PAYLOAD)
        udp_send(node.client, node.POD6, 7000, 5, UDP_PAYLOAD)
        samples = [decode_sample(r) for r in collect(ring, 20)]
        assert len(samples) == 20
        v4 = [s for s in samples if s.destination == node.POD4]
        v6 = [s for s in samples if s.destination == node.POD6]
        assert len(v4) == 15 and len(v6) == 5
        for s in v4:
            assert (s.length, s.protocol, s.ip_version, s.l4_protocol) == (V4_LEN, 0x0800, 4, 17)
            assert len(s.data) == 48 and s.data[0] == 0x45
            assert socket.inet_ntoa(s.data[16:20]) == node.POD4
            assert struct.unpack_from("!H", s.data, 22)[0] == 7000  # UDP destination port
        for s in v6:
            assert (s.length, s.protocol, s.ip_version) == (V6_LEN, 0x86DD, 6)
            assert socket.inet_ntop(socket.AF_INET6, s.data[24:40]) == node.POD6
        assert read_program_counters("sampler", maps) == {"seen": 20, "sampled": 20,
                                                          "ringFull": 0}

        # live: 1 in 4 (random) and a shorter snap
        sync_config("sampler", {"oneIn": 4, "snapLength": 8}, maps)
        udp_send(node.client, node.POD4, 7000, 400, UDP_PAYLOAD, pace_every=100)
        settle(lambda: read_program_counters("sampler", maps), lambda s: s["seen"] >= 420)
        sampled = [decode_sample(r) for r in ring.consume()]
        assert 40 <= len(sampled) <= 180, len(sampled)  # binomial(400, 1/4): mean 100
        assert all(len(s.data) == 8 for s in sampled)

        # paused
        sync_config("sampler", {"oneIn": 0}, maps)
        udp_send(node.client, node.POD4, 7000, 10, UDP_PAYLOAD)
        stats = settle(lambda: read_program_counters("sampler", maps),
                       lambda s: s["seen"] >= 430)
        assert list(ring.consume()) == []
        assert stats["seen"] == 430 and stats["sampled"] == 20 + len(sampled)


def test_sampler_ring_full_is_counted_and_reading_wraps(node: Node, attacher) -> None:
    attacher.route_add(node, node.host, f"{node.POD4}/32", node.POD_DEV, {"in": "sampler"})
    maps = attacher.maps("sampler")
    sync_config("sampler", {"oneIn": 1, "snapLength": 128}, maps)
    ring = RingBuffer.from_map(maps["smp_ring"])
    try:
        capacity = ring.size // 192  # 184-byte record + 8-byte header
        sent = capacity + 300
        udp_send(node.client, node.POD4, 7000, sent, UDP_PAYLOAD, pace_every=200)
        stats = settle(lambda: read_program_counters("sampler", maps),
                       lambda s: s["seen"] >= sent)
        assert stats["seen"] == sent
        assert stats["ringFull"] >= 250, stats
        got = len(list(ring.consume()))
        assert got == stats["sampled"] == sent - stats["ringFull"]

        # the buffer has wrapped: keep producing and consuming across the end
        total = 0
        for _ in range(4):
            udp_send(node.client, node.POD4, 7000, capacity // 2, UDP_PAYLOAD, pace_every=200)
            records = collect(ring, capacity // 2)
            assert all(decode_sample(r).destination == node.POD4 for r in records)
            total += len(records)
        assert total == 4 * (capacity // 2)
        assert ring.consumer_pos == ring.producer_pos > ring.size
    finally:
        ring.close()


# --- encap ---------------------------------------------------------------------------------

def _ipv4_outer(frame: bytes) -> tuple[int, str, str, bytes]:
    ip = frame[14:]
    ihl = (ip[0] & 0xF) * 4
    return ip[9], socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20]), ip[ihl:]


def _ipv4_checksum_ok(header: bytes) -> bool:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


def _to_remote(node: Node, frame: bytes) -> bool:
    """An IP packet addressed to the remote (not ARP/ND/MLD chatter of the link)."""
    if ethertype(frame) == 0x0800:
        return socket.inet_ntoa(frame[14 + 16:14 + 20]) == node.REMOTE4
    if ethertype(frame) == 0x86DD:
        return socket.inet_ntop(socket.AF_INET6, frame[14 + 24:14 + 40]) == node.REMOTE6
    return False


def _encapsulated(node: Node, send_to: str, count: int) -> list[bytes]:
    with capture(node.remote, node.REMOTE_DEV) as cap, \
            udp_receiver(node.pod, send_to, 7000) as rx:
        udp_send(node.client, send_to, 7000, count, UDP_PAYLOAD)
        got = [f for f in frames(cap, timeout=0.5) if _to_remote(node, f)]
        assert drain(rx, count, timeout=0.2) == 0, "encapsulated packets reached the pod"
    return got


def test_encap_pushes_outer_headers_on_the_wire(node: Node, attacher) -> None:
    attacher.route_add(node, node.host, f"{node.POD4}/32", node.POD_DEV, {"xmit": "encap"})
    attacher.route_add(node, node.host, f"{node.POD6}/128", node.POD_DEV, {"xmit": "encap"})
    maps = attacher.maps("encap")
    check_map_layout("encap", maps)

    # unconfigured: dropped and counted, never sent in the clear
    assert _encapsulated(node, node.POD4, 5) == []
    assert settle(lambda: read_program_counters("encap", maps)["unconfigured"],
                  lambda n: n >= 5) == 5

    # IPv4 in IPv4
    sync_config("encap", {"remote": node.REMOTE4, "source": node.HOST_R4}, maps)
    got = [_ipv4_outer(f) for f in _encapsulated(node, node.POD4, 5)]
    assert len(got) == 5
    for f in _encapsulated(node, node.POD4, 2):
        assert _ipv4_checksum_ok(f[14:34]), "outer IPv4 header checksum"
    for proto, src, dst, inner in got:
        assert (proto, src, dst) == (4, node.HOST_R4, node.REMOTE4)
        assert inner[0] == 0x45 and socket.inet_ntoa(inner[16:20]) == node.POD4
        assert len(inner) == V4_LEN

    # live switch to UDP (foo-over-UDP direct)
    sync_config("encap", {"remote": node.REMOTE4, "source": node.HOST_R4, "mode": "udp",
                          "udpPort": 5555, "ttl": 7}, maps)
    frames4 = [f for f in _encapsulated(node, node.POD4, 4)]
    assert len(frames4) == 4
    for f in frames4:
        assert f[14 + 8] == 7  # outer TTL
        proto, src, dst, l4 = _ipv4_outer(f)
        assert (proto, src, dst) == (17, node.HOST_R4, node.REMOTE4)
        sport, dport, length, _csum = struct.unpack_from("!HHHH", l4)
        assert dport == 5555 and 49152 <= sport < 65536 and length == 8 + V4_LEN
        assert socket.inet_ntoa(l4[8 + 16:8 + 20]) == node.POD4

    # IPv6 outer: IPv6 inner (next header 41) and IPv4 inner (next header 4)
    sync_config("encap", {"remote": node.REMOTE6, "source": node.HOST_R6}, maps)
    for pod, nexthdr, inner_len in ((node.POD6, 41, V6_LEN), (node.POD4, 4, V4_LEN)):
        got6 = _encapsulated(node, pod, 3)
        assert len(got6) == 3, pod
        for f in got6:
            ip6 = f[14:]
            assert ethertype(f) == 0x86DD and ip6[6] == nexthdr
            assert socket.inet_ntop(socket.AF_INET6, ip6[8:24]) == node.HOST_R6
            assert socket.inet_ntop(socket.AF_INET6, ip6[24:40]) == node.REMOTE6
            assert struct.unpack_from("!H", ip6, 4)[0] == inner_len
    stats = read_program_counters("encap", maps)
    assert stats["packets"] == 5 + 2 + 4 + 3 + 3 and stats["errors"] == 0


def test_encap_on_the_input_hook_reroutes_forwarded_traffic(node: Node, attacher) -> None:
    """On `in` the kernel routes the encapsulated packet as if it had arrived that way
    (ip_route_input). The agent allows only a node address as outer source, which input
    routing drops as a martian unless the ingress device has accept_local=1."""
    attacher.route_add(node, node.host, f"{node.POD4}/32", node.POD_DEV, {"in": "encap"})
    maps = attacher.maps("encap")
    sync_config("encap", {"remote": node.REMOTE4, "source": node.HOST_R4}, maps)
    assert _encapsulated(node, node.POD4, 3) == []  # martian source: dropped by the kernel
    assert read_program_counters("encap", maps)["packets"] == 3
    for dev in ("all", "hc"):  # the client-facing device, where the packets come in
        sh("ip", "netns", "exec", node.host, "sysctl", "-q", "-w",
           f"net.ipv4.conf.{dev}.accept_local=1")
    got = [_ipv4_outer(f) for f in _encapsulated(node, node.POD4, 4)]
    assert len(got) == 4
    for proto, src, dst, inner in got:
        assert (proto, src, dst) == (4, node.HOST_R4, node.REMOTE4)
        assert socket.inet_ntoa(inner[16:20]) == node.POD4
    assert read_program_counters("encap", maps)["packets"] == 3 + 4


# --- drop-all ------------------------------------------------------------------------------

def test_drop_all_drops_and_counts(node: Node, attacher) -> None:
    attacher.route_add(node, node.host, f"{node.POD4}/32", node.POD_DEV, {"out": "drop-all"})
    attacher.route_add(node, node.host, f"{node.POD6}/128", node.POD_DEV, {"out": "drop-all"})
    maps = attacher.maps("drop-all")
    check_map_layout("drop-all", maps)
    with udp_receiver(node.pod, node.POD4, 7000) as rx4, \
            udp_receiver(node.pod, node.POD6, 7000) as rx6:
        udp_send(node.client, node.POD4, 7000, 12, UDP_PAYLOAD)
        udp_send(node.client, node.POD6, 7000, 7, UDP_PAYLOAD)
        assert drain(rx4, 12, timeout=0.5) == 0 and drain(rx6, 7, timeout=0.2) == 0
    assert not tcp_connects(node.client, node.POD4, 22, timeout=0.3)
    counters = settle(lambda: read_destination_counters("drop-all", maps),
                      lambda c: node.POD4 in c and node.POD6 in c
                      and c[node.POD4].dropped_packets >= 13
                      and c[node.POD6].dropped_packets >= 7)
    assert counters[node.POD4].dropped_packets >= 13  # 12 UDP + at least one SYN
    assert counters[node.POD6].dropped_packets == 7
    assert counters[node.POD6].dropped_bytes == 7 * V6_LEN
