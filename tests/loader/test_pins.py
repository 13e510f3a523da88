"""Pinning under a pin directory: pins are created, compatible by-name pins are reused,
incompatible ones are refused with what differs, and a failed load leaves nothing behind."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from lwt_agent.bpf import BpfMap, Hook, ObjectSpec, PinConflictError, syscall

pytestmark = pytest.mark.kernel


def test_pins_program_and_maps_and_reuses_by_name(testobj: Path, pin_dir: Path) -> None:
    spec = ObjectSpec.from_file(testobj / "btf_maps.o")
    with spec.load("lwt_out_btf", Hook.OUT, pin_dir=pin_dir) as first:
        assert first.pinned == str(pin_dir / "count_out")
        shared_id = first.maps["shared_cfg"].id
        first.maps["shared_cfg"].update(b"\0" * 4, (1).to_bytes(4, "little"))
    assert sorted(os.listdir(pin_dir)) == ["count_out", "flow_bytes", "pkt_count",
                                           "shared_cfg"]
    # the pinned program outlives the closed fds
    fd = syscall.obj_get(str(pin_dir / "count_out"))
    try:
        assert syscall.prog_info(fd).id == first.id
    finally:
        os.close(fd)
    # a second load reuses shared_cfg (pinning by name) once the private pins are gone
    for private in ("count_out", "flow_bytes", "pkt_count"):
        (pin_dir / private).unlink()
    with spec.load("lwt_out_btf", Hook.OUT, pin_dir=pin_dir) as second:
        assert second.maps["shared_cfg"].id == shared_id
        assert second.maps["shared_cfg"].lookup(b"\0" * 4) == (1).to_bytes(4, "little")
        assert second.maps["pkt_count"].id != first.maps["pkt_count"].id


def test_incompatible_pin_is_refused_and_nothing_is_left(testobj: Path,
                                                          pin_dir: Path) -> None:
    # an array under the name shared_cfg, but with 8 entries instead of 2
    fd = syscall.map_create(2, 4, 4, 8, 0, "shared_cfg")
    try:
        syscall.obj_pin(fd, str(pin_dir / "shared_cfg"))
    finally:
        os.close(fd)
    fds_before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(PinConflictError) as info:
        ObjectSpec.from_file(testobj / "btf_maps.o").load("lwt_out_btf", Hook.OUT,
                                                          pin_dir=pin_dir)
    assert "max_entries: object wants 2, pinned map has 8" in str(info.value)
    assert info.value.path == str(pin_dir / "shared_cfg")
    assert os.listdir(pin_dir) == ["shared_cfg"], "maps pinned before the conflict remain"
    assert set(os.listdir("/proc/self/fd")) == fds_before
    with BpfMap.from_pin(pin_dir / "shared_cfg") as kept:
        assert kept.max_entries == 8  # the existing pin is never replaced


def test_existing_program_pin_is_refused(testobj: Path, pin_dir: Path) -> None:
    spec = ObjectSpec.from_file(testobj / "subprogs.o")
    with spec.load("lwt_in_sub", Hook.IN, pin_dir=pin_dir):
        pass
    with pytest.raises(PinConflictError, match="prog_a"):
        spec.load("lwt_in_sub", Hook.IN, pin_dir=pin_dir)


def test_map_not_declaring_pinning_never_shares_a_pin(testobj: Path, pin_dir: Path) -> None:
    fd = syscall.map_create(6, 4, 8, 4, 0, "pkt_count")  # same shape as btf_maps' pkt_count
    try:
        syscall.obj_pin(fd, str(pin_dir / "pkt_count"))
    finally:
        os.close(fd)
    with pytest.raises(PinConflictError, match="does not declare pinning"):
        ObjectSpec.from_file(testobj / "btf_maps.o").load("lwt_out_btf", Hook.OUT,
                                                          pin_dir=pin_dir)
    assert os.listdir(pin_dir) == ["pkt_count"]
