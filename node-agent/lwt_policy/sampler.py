"""The sampler built-in's record format (bpf/sampler.c `struct smp_sample`), decoded.

    sample = decode_sample(record)     # one ring-buffer record -> Sample
    sample.destination, sample.length, sample.data, sample.as_dict()

It belongs with the catalogue (what each built-in's maps and records hold), not with the
loader: the ring-buffer reader (lwt_agent.bpf.ringbuf) hands over raw records and knows
nothing of their layout. tests/builtins/test_sampler_record.py holds SAMPLE_SIZE to the
compiled object's BTF.
"""
from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import Any

SAMPLE_STRUCT = "smp_sample"
SAMPLE_FORMAT = "<16sQIIIIIHBBII128s"
SAMPLE_SIZE = struct.calcsize(SAMPLE_FORMAT)  # 184 = sizeof(struct smp_sample)


class SampleError(ValueError):
    """A record that is not a sampler record of this version."""


@dataclass(frozen=True)
class Sample:
    destination: str
    timestamp_ns: int
    length: int
    mark: int
    ifindex: int
    ingress_ifindex: int
    hash: int
    protocol: int      # ethertype, host order (0x0800 IPv4, 0x86dd IPv6)
    ip_version: int
    l4_protocol: int
    cpu: int
    data: bytes        # the first bytes of the packet, from the IP header on

    def as_dict(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "timestampNs": self.timestamp_ns,
            "length": self.length,
            "mark": self.mark,
            "ifindex": self.ifindex,
            "ingressIfindex": self.ingress_ifindex,
            "hash": self.hash,
            "protocol": self.protocol,
            "ipVersion": self.ip_version,
            "l4Protocol": self.l4_protocol,
            "cpu": self.cpu,
            "data": self.data.hex(),
        }


def _addr_text(raw: bytes) -> str:
    if raw[:12] == b"\x00" * 10 + b"\xff\xff":
        return socket.inet_ntop(socket.AF_INET, raw[12:])
    return socket.inet_ntop(socket.AF_INET6, raw)


def decode_sample(record: bytes) -> Sample:
    """Decodes one sampler record."""
    if len(record) < SAMPLE_SIZE:
        raise SampleError(f"sampler record is {len(record)} bytes, expected {SAMPLE_SIZE}: "
                          "the sampler object and the agent differ; rebuild the image")
    (dst, ts, length, mark, ifindex, ingress, hsh, proto_be, version, l4, cpu, captured,
     data) = struct.unpack_from(SAMPLE_FORMAT, record)
    # skb->protocol is kept in network order; read as a little-endian u16 it is swapped.
    protocol = int.from_bytes(proto_be.to_bytes(2, "little"), "big")
    return Sample(destination=_addr_text(dst), timestamp_ns=ts, length=length, mark=mark,
                  ifindex=ifindex, ingress_ifindex=ingress, hash=hsh, protocol=protocol,
                  ip_version=version, l4_protocol=l4, cpu=cpu,
                  data=data[:min(captured, len(data))])
