"""Fixtures of the loader tests: test objects, a throwaway netns with a veth for iproute2's
reference loads, and a helper that lets iproute2 load a section and reports the kernel's tag.

Program budget: every kernel load here costs a program
(docs/kernel-facts.md#one-program-per-policy-hook-never-one-per-route); the tests load each
section once per purpose and close everything (LoadedProgram is a context manager).
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from lwt_agent.bpf import KernelError, syscall
from lwt_agent.netns import Namespaces

NETNS_PREFIX = "lwtL"


@pytest.fixture(scope="session")
def testobj(bpf_objects: Path) -> Path:
    path = bpf_objects / "testobj"
    if not (path / "subprogs.o").is_file():
        raise RuntimeError(f"{path} has no loader test objects: run `make -C bpf`")
    return path


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def program_gone(prog_id: int, timeout: float = 5.0) -> bool:
    """True once no program has this id (the kernel frees programs after an RCU grace)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.close(syscall.prog_get_fd_by_id(prog_id))
        except KernelError as exc:
            if exc.errno == 2:  # ENOENT
                return True
            raise
        time.sleep(0.05)
    return False


def host_bpf_mounts() -> list[str]:
    """bpffs mounts of the host (pid 1's mount namespace), not of this test process."""
    return [line for line in Path("/proc/1/mounts").read_text().splitlines()
            if line.split()[2] == "bpf"]


# The host's bpffs mounts before any loader test ran: iproute2 must not add to them.
HOST_BPF_MOUNTS_AT_START = host_bpf_mounts()


@dataclass
class ReferenceLoad:
    returncode: int
    output: str
    programs: list[dict]  # type: ignore[type-arg]  # bpftool entries of the new program(s)


class IpRoute2:
    """Loads sections through `ip route add ... encap bpf` inside a private netns."""

    def __init__(self, netns: str) -> None:
        self.netns = netns
        self._next_host = 10

    def load(self, obj: Path, section: str, hook: str, function: str) -> ReferenceLoad:
        """Add one route whose encap loads `section`; the kernel's entry for the program it
        created is the one new program with that name and type. Other engineers' tests may
        load a same-named program at the same moment: then it is ambiguous and we retry
        with a fresh route (iproute2's program is always among the new ones)."""
        for _attempt in range(4):
            ref = self._load_once(obj, section, hook, function)
            if ref.returncode != 0 or len(ref.programs) <= 1:
                return ref
        return ref

    def _load_once(self, obj: Path, section: str, hook: str, function: str) -> ReferenceLoad:
        before = {p["id"] for p in bpftool_programs()}
        self._next_host += 1
        addr = f"10.77.{self._next_host // 250}.{self._next_host % 250 + 2}/32"
        # iproute2 (libbpf) wants a bpffs at /sys/fs/bpf: give it a fresh one in a mount
        # namespace of its own, so neither the host nor this process ever sees its pins.
        script = ('mount -t bpf bpf /sys/fs/bpf && exec ip -n "$0" route add "$1" dev v0 '
                  'encap bpf "$2" obj "$3" section "$4"')
        proc = subprocess.run(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", script,
             self.netns, addr, hook, str(obj), section],
            capture_output=True, text=True, timeout=60,
        )
        new = [p for p in bpftool_programs()
               if p["id"] not in before and p.get("name") == function[:15]
               and p.get("type") == f"lwt_{hook}"]
        return ReferenceLoad(proc.returncode, proc.stdout + proc.stderr, new)


def bpftool_programs() -> list[dict]:  # type: ignore[type-arg]
    out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    return json.loads(out or "[]")


@pytest.fixture(scope="session")
def builtin_tags() -> dict[str, str]:
    """Tags our loader got for the built-ins ({name: tag}), filled by the per-hook test so
    the iproute2 comparison need not load each built-in again (program budget)."""
    return {}


@pytest.fixture(scope="module")
def netns() -> Iterator[str]:
    """A private netns with a veth pair (v0 up, 10.77.0.1/24) for reference route loads."""
    with Namespaces(f"{NETNS_PREFIX}{secrets.token_hex(4)}") as nets:
        net = nets.add("ref")
        net.veth("v0", "v1")
        net.addr("v0", "10.77.0.1/24")
        yield net.name


@pytest.fixture(scope="module")
def iproute2(netns: str) -> IpRoute2:
    return IpRoute2(netns)


@pytest.fixture
def pin_dir(bpffs: Path) -> Iterator[Path]:
    """A fresh directory on the test bpffs, emptied (pins removed) afterwards."""
    path = bpffs / f"loader-{secrets.token_hex(4)}"
    path.mkdir()
    try:
        yield path
    finally:
        for entry in path.iterdir():
            entry.unlink()
        path.rmdir()
