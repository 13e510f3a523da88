"""Reads the sampler built-in's ring buffers: each sample -> a structured log line + a metric.

One thread serves every sampler program. It owns a duplicate of each ring's map fd, so the
program store may drop a program at any time without pulling the mapping from under the
reader. Log lines go to the ``lwt_agent.samples`` logger as one JSON object each, at most
``max_lines_per_second`` (the rest are still counted).
"""
from __future__ import annotations

import collections
import contextlib
import ipaddress
import json
import logging
import os
import select
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from lwt_policy.sampler import Sample, SampleError, decode_sample

from lwt_agent.bpf.ringbuf import RingBuffer, RingBufferError

from .steps import Attached
from .store import ProgramKey

log = logging.getLogger(__name__)
sample_log = logging.getLogger("lwt_agent.samples")

PROTOCOLS = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6"}


@dataclass
class _Ring:
    item: Attached
    fd: int
    ring: RingBuffer

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ring.close()
        with contextlib.suppress(OSError):
            os.close(self.fd)


def packet_summary(sample: Sample) -> dict[str, Any]:
    """Source, destination, protocol and ports read from a sample's captured headers."""
    data = sample.data
    out: dict[str, Any] = {"protocol": PROTOCOLS.get(sample.l4_protocol, sample.l4_protocol)}
    l4 = b""
    if sample.ip_version == 4 and len(data) >= 20:
        ihl = (data[0] & 0x0F) * 4
        out["src"] = str(ipaddress.IPv4Address(data[12:16]))
        out["dst"] = str(ipaddress.IPv4Address(data[16:20]))
        l4 = data[ihl:]
    elif sample.ip_version == 6 and len(data) >= 40:
        out["src"] = str(ipaddress.IPv6Address(data[8:24]))
        out["dst"] = str(ipaddress.IPv6Address(data[24:40]))
        l4 = data[40:] if data[6] == sample.l4_protocol else b""
    if sample.l4_protocol in (6, 17) and len(l4) >= 4:
        out["srcPort"], out["dstPort"] = struct.unpack("!HH", l4[:4])
    return out


class SampleReader:
    """Polls the rings of every attached sampler program; calls ``on_sample`` for each."""

    def __init__(self, on_sample: Callable[[Attached, Sample], None],
                 max_lines_per_second: int = 50, keep: int = 200) -> None:
        self.on_sample = on_sample
        self.max_lines_per_second = max_lines_per_second
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=keep)
        self.read = 0
        self.suppressed = 0
        self._rings: dict[ProgramKey, _Ring] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lwt-samples", daemon=True)
        self._second = 0
        self._lines = 0

    def start(self) -> SampleReader:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with self._lock:
            for ring in self._rings.values():
                ring.close()
            self._rings.clear()

    def update(self, attached: Sequence[Attached]) -> None:
        """Follow the sampler programs of the latest reconcile (call with the programs
        still open: the reader duplicates their ring fds)."""
        wanted = {a.program.key: a for a in attached
                  if a.program.builtin == "sampler" and "smp_ring" in a.program.maps}
        with self._lock:
            for key in [k for k in self._rings if k not in wanted]:
                self._rings.pop(key).close()
            for key, item in wanted.items():
                if key in self._rings:
                    self._rings[key].item = item  # new pod mapping
                    continue
                ring_map = item.program.maps["smp_ring"]
                fd = os.dup(ring_map.fd)
                try:
                    ring = RingBuffer(fd, ring_map.max_entries)
                except RingBufferError as exc:
                    os.close(fd)
                    log.error("cannot read samples of %s: %s", item.program.label, exc)
                    continue
                self._rings[key] = _Ring(item, fd, ring)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                rings = list(self._rings.values())
            if not rings:
                self._stop.wait(0.2)
                continue
            poller = select.poll()
            for ring in rings:
                poller.register(ring.fd, select.POLLIN)
            poller.poll(200)
            with self._lock:
                for ring in list(self._rings.values()):
                    self._drain(ring)

    def _drain(self, ring: _Ring) -> None:
        try:
            records = list(ring.ring.consume(limit=4096))
        except RingBufferError as exc:
            log.error("ring buffer of %s: %s", ring.item.program.label, exc)
            return
        for record in records:
            try:
                sample = decode_sample(record)
            except SampleError as exc:
                log.error("%s", exc)
                continue
            self.read += 1
            self.on_sample(ring.item, sample)
            line = self.describe(ring.item, sample)
            self.recent.append(line)
            self._log(line)

    @staticmethod
    def describe(item: Attached, sample: Sample) -> dict[str, Any]:
        return {
            "event": "sample",
            "policy": str(item.policy),
            "hook": item.hook,
            "pod": item.destinations.get(sample.destination, ""),
            "destination": sample.destination,
            "length": sample.length,
            "ifindex": sample.ifindex,
            "timestampNs": sample.timestamp_ns,
            **packet_summary(sample),
        }

    def _log(self, line: dict[str, Any]) -> None:
        second = int(time.monotonic())
        if second != self._second:
            if self.suppressed and self._lines >= self.max_lines_per_second:
                sample_log.info(json.dumps({"event": "samples-suppressed",
                                            "count": self.suppressed}))
                self.suppressed = 0
            self._second, self._lines = second, 0
        if self._lines >= self.max_lines_per_second:
            self.suppressed += 1
            return
        self._lines += 1
        sample_log.info(json.dumps(line, sort_keys=True))
