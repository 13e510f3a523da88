"""Property test: mutated objects never make the parser (or inspect's description) raise
anything but a LoaderError. Parse only: fuzzed objects are never loaded into the kernel."""
from __future__ import annotations

import contextlib
import struct
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lwt_agent.bpf import LoaderError, ObjectSpec

OBJECTS = ["btf_maps.o", "subprogs.o", "global_data.o", "legacy_maps.o", "core_reloc.o",
           "map_in_map.o", "kfunc.o"]
_BASE = Path(__file__).resolve().parents[2] / "bpf" / "build" / "testobj"


def _corpus() -> dict[str, bytes]:
    return {name: (_BASE / name).read_bytes() for name in OBJECTS if (_BASE / name).exists()}


CORPUS = _corpus()


def _hot_offsets(data: bytes) -> list[int]:
    """The bytes that steer parsing: the ELF header and the section header table."""
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    return list(range(64)) + list(range(shoff, len(data)))


@st.composite
def mutated_objects(draw: st.DrawFn) -> bytes:
    name = draw(st.sampled_from(sorted(CORPUS)))
    data = bytearray(CORPUS[name])
    hot = _hot_offsets(bytes(data))
    for _ in range(draw(st.integers(1, 8))):
        if draw(st.booleans()):
            pos = draw(st.sampled_from(hot))
        else:
            pos = draw(st.integers(0, len(data) - 1))
        data[pos] = draw(st.integers(0, 255))
    if draw(st.integers(0, 9)) == 0:
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutated_objects())
def test_mutated_objects_only_raise_loader_errors(data: bytes) -> None:
    assert CORPUS, "no test objects: run make -C bpf"
    try:
        spec = ObjectSpec.from_bytes(data, "fuzzed.o")
    except LoaderError:
        return
    description = spec.describe()  # what `inspect` prints
    assert isinstance(description["programs"], list)
    for prog in spec.programs:
        with contextlib.suppress(LoaderError):
            spec.link(prog.section)
