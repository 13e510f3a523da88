"""fd hygiene: loads, closes and every error path leave no descriptor open, and a closed,
unpinned, unattached program is gone from the kernel."""
from __future__ import annotations

from pathlib import Path

import pytest
from lwt_agent.bpf import (
    Hook,
    LoaderError,
    MalformedObjectError,
    ObjectSpec,
    PinDirError,
    UnsupportedFeatureError,
    VerifierError,
)
from lwt_policy.catalogue import CATALOGUE, builtin_object_dir

from .conftest import open_fds, program_gone

pytestmark = pytest.mark.kernel


def test_no_fd_leaks_on_success_and_error_paths(testobj: Path, tmp_path: Path) -> None:
    before = open_fds()
    counters = CATALOGUE["counters"]
    with ObjectSpec.from_file(builtin_object_dir() / counters.object).load(
            counters.section, Hook.OUT) as prog:
        assert prog.fd >= 0 and all(m.fd >= 0 for m in prog.maps.values())
        prog_id = prog.id
    assert prog.fd == -1
    with pytest.raises(VerifierError):  # maps created, then the verifier refuses
        ObjectSpec.from_file(testobj / "out_write.o").load("lwt_write", Hook.OUT)
    with pytest.raises(UnsupportedFeatureError):
        ObjectSpec.from_file(testobj / "map_in_map.o").load("lwt_in_mim", Hook.IN)
    with pytest.raises(MalformedObjectError):
        ObjectSpec.from_file(testobj / "subprogs.o").load("no_such_section", Hook.IN)
    with pytest.raises(LoaderError):
        ObjectSpec.from_file(testobj / "subprogs.o").load("lwt_in_sub", Hook.IN,
                                                          pin_dir=tmp_path / "missing")
    truncated = tmp_path / "t.o"
    truncated.write_bytes((testobj / "btf_maps.o").read_bytes()[:3000])
    with pytest.raises(MalformedObjectError):
        ObjectSpec.from_file(truncated)
    # a pin directory that is not on bpffs: refused before any map is created
    not_bpffs = tmp_path / "plain-dir"
    not_bpffs.mkdir()
    with pytest.raises(PinDirError, match="not on a bpffs"):
        ObjectSpec.from_file(testobj / "btf_maps.o").load("lwt_out_btf", Hook.OUT,
                                                          pin_dir=not_bpffs)
    assert list(not_bpffs.iterdir()) == []
    assert open_fds() == before
    assert program_gone(prog_id), f"program {prog_id} still loaded after close()"
