"""Same instructions as the reference: our tag equals the tag the kernel reports when
iproute2 (libbpf) loads the same section with `ip route add ... encap bpf`.

The kernel's tag is a hash of the submitted instructions (map fds zeroed), so equal tags
mean we appended the same sub-programs in the same order and patched the same references.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from lwt_agent.bpf import Hook, ObjectSpec, VerifierError
from lwt_policy.catalogue import CATALOGUE, builtin_object_dir

from .conftest import IpRoute2, host_bpf_mounts

pytestmark = pytest.mark.kernel

# (object under bpf/build/testobj, section, hook, function)
TESTOBJ_CASES = [
    ("btf_maps.o", "lwt_out_btf", "out", "count_out"),
    ("subprogs.o", "lwt_in_sub", "in", "prog_a"),
    ("subprogs.o", "lwt_out_sub", "out", "prog_b"),
    ("global_data.o", "lwt_xmit_gd", "xmit", "global_xmit"),
    ("legacy_twin.o", "lwt_in_twin", "in", "twin_in"),
]


def _our_tag(obj: Path, section: str, hook: str) -> str:
    with ObjectSpec.from_file(obj).load(section, Hook(hook)) as prog:
        assert len(prog.tag) == 16
        return prog.tag


def _reference_tag(iproute2: IpRoute2, obj: Path, section: str, hook: str,
                   function: str) -> str:
    mounts = host_bpf_mounts()
    ref = iproute2.load(obj, section, hook, function)
    assert host_bpf_mounts() == mounts, "iproute2's bpffs mount leaked to the host"
    assert ref.returncode == 0, f"iproute2 failed to load {obj}:{section}:\n{ref.output}"
    assert len(ref.programs) == 1, f"expected one new program, bpftool shows {ref.programs}"
    return str(ref.programs[0]["tag"])


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_builtin_tag_matches_iproute2(name: str, iproute2: IpRoute2,
                                      builtin_tags: dict[str, str]) -> None:
    builtin = CATALOGUE[name]
    obj = builtin_object_dir() / builtin.object
    hook = sorted(builtin.hooks)[0]
    function = builtin.function or ObjectSpec.from_file(obj).program(builtin.section).name
    ours = builtin_tags.get(name) or _our_tag(obj, builtin.section, hook)
    assert ours == _reference_tag(iproute2, obj, builtin.section, hook, function)


@pytest.mark.parametrize(("obj", "section", "hook", "function"), TESTOBJ_CASES)
def test_testobj_tag_matches_iproute2(obj: str, section: str, hook: str, function: str,
                                      testobj: Path, iproute2: IpRoute2) -> None:
    path = testobj / obj
    assert _our_tag(path, section, hook) == _reference_tag(iproute2, path, section, hook,
                                                           function)


def test_legacy_maps_match_their_btf_twin(testobj: Path, iproute2: IpRoute2) -> None:
    """iproute2 (libbpf >= 1.0) refuses legacy `maps`; its twin with BTF maps is the
    reference for the legacy object's instructions."""
    legacy = iproute2.load(testobj / "legacy_maps.o", "lwt_in_twin", "in", "twin_in")
    assert legacy.returncode != 0 and not legacy.programs
    assert "legacy map definitions" in legacy.output
    reference = _reference_tag(iproute2, testobj / "legacy_twin.o", "lwt_in_twin", "in",
                               "twin_in")
    assert _our_tag(testobj / "legacy_maps.o", "lwt_in_twin", "in") == reference


def _rejections() -> list[tuple[str, str, str, str]]:
    """(object path, section, hook, function) that the kernel must refuse: a packet write on
    `out` and `in`, and every built-in on each hook it does not declare."""
    cases = [("testobj/out_write.o", "lwt_write", hook, "write_pkt") for hook in ("out", "in")]
    for builtin in CATALOGUE.values():
        for hook in sorted({"in", "out", "xmit"} - builtin.hooks):
            cases.append((builtin.object, builtin.section, hook, builtin.function))
    return cases


@pytest.mark.parametrize(("obj", "section", "hook", "function"), _rejections())
def test_what_iproute2_rejects_we_reject_with_the_log(obj: str, section: str, hook: str,
                                                      function: str,
                                                      iproute2: IpRoute2) -> None:
    path = builtin_object_dir() / obj
    ref = iproute2.load(path, section, hook, function)
    assert ref.returncode != 0 and not ref.programs, ref.output
    with pytest.raises(VerifierError) as info:
        ObjectSpec.from_file(path).load(section, Hook(hook))
    reason = info.value.reason  # e.g. "program of this type cannot use helper bpf_...#9"
    assert reason and not reason.startswith("processed") and reason in str(info.value)
    assert reason in ref.output, f"iproute2 refused it for another reason:\n{ref.output}"
    assert info.value.errno != 0


def test_packet_writer_loads_on_xmit_with_the_reference_tag(testobj: Path,
                                                            iproute2: IpRoute2) -> None:
    obj = testobj / "out_write.o"
    assert _our_tag(obj, "lwt_write", "xmit") == _reference_tag(
        iproute2, obj, "lwt_write", "xmit", "write_pkt")
