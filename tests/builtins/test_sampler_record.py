"""The sampler's record format is written twice (bpf/sampler.c, lwt_policy/sampler.py):
held together here (the struct stays out of the object's BTF: only a pointer to it is
used), and decoded from a record built by hand."""
from __future__ import annotations

import re
import socket
import struct
from pathlib import Path

import pytest
from lwt_policy.sampler import (
    SAMPLE_FORMAT,
    SAMPLE_SIZE,
    SAMPLE_STRUCT,
    SampleError,
    decode_sample,
)

REPO = Path(__file__).resolve().parents[2]


def test_record_layout_is_the_c_structs() -> None:
    source = (REPO / "bpf" / "sampler.c").read_text()
    asserted = re.search(rf"sizeof\(struct {SAMPLE_STRUCT}\) == (\d+)", source)
    assert asserted is not None and int(asserted[1]) == SAMPLE_SIZE
    body = re.search(rf"struct {SAMPLE_STRUCT} {{(.*?)\n}};", source, re.S)
    assert body is not None
    fields = re.findall(r"^\s*(?:struct )?\w+ (\w+)(?:\[\w+\])?;", body[1], re.M)
    assert fields == ["dst", "timestamp_ns", "pkt_len", "mark", "ifindex", "ingress_ifindex",
                      "hash", "protocol", "version", "l4_proto", "cpu", "captured", "data"]
    assert len(re.findall(r"\d*[a-zA-Z]", SAMPLE_FORMAT.lstrip("<"))) == len(fields)


def test_decode_a_record() -> None:
    dst = b"\x00" * 10 + b"\xff\xff" + socket.inet_aton("10.244.1.7")
    record = struct.pack(SAMPLE_FORMAT, dst, 123, 84, 7, 3, 2, 99, 0x0008, 4, 17, 1, 4,
                         b"\x45\x00\x00\x54" + b"\xee" * 124)
    sample = decode_sample(record)
    assert (sample.destination, sample.length, sample.protocol, sample.l4_protocol) == (
        "10.244.1.7", 84, 0x0800, 17)
    assert sample.data == b"\x45\x00\x00\x54"  # only the captured bytes
    assert sample.as_dict()["data"] == "45000054"
    with pytest.raises(SampleError, match="rebuild"):
        decode_sample(record[:100])
