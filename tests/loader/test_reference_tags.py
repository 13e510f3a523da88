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


def test_what_iproute2_rejects_we_reject_with_the_log(testobj: Path,
                                                      iproute2: IpRoute2) -> None:
    """A packet write on `out`: the verifier refuses bpf_skb_store_bytes there."""
    obj = testobj / "out_write.o"
    ref = iproute2.load(obj, "lwt_write", "out", "write_pkt")
    assert ref.returncode != 0 and not ref.programs
    assert "bpf_skb_store_bytes" in ref.output
    with pytest.raises(VerifierError) as info:
        ObjectSpec.from_file(obj).load("lwt_write", Hook.OUT)
    assert "cannot use helper bpf_skb_store_bytes" in info.value.log
    assert "bpf_skb_store_bytes" in str(info.value)
    assert info.value.errno != 0
    # the same section is fine where packet writes are allowed
    assert _our_tag(obj, "lwt_write", "xmit") == _reference_tag(
        iproute2, obj, "lwt_write", "xmit", "write_pkt")
