"""Test programs for the route engine, loaded ONCE per test session.

bpf/build/testobj/route_out.o is loaded twice (as lwt_out and as lwt_in: 4 programs each)
and route_xmit.o once: 9 programs for the whole tests/route run, each attached to as many
routes as a test needs (never a program per route: DESIGN.md §6).
They are loaded with bpftool into the session bpffs and opened from their pins.
"""
from __future__ import annotations

import json
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from lwt_agent.bpf import syscall
from lwt_agent.route import ProgramRef, labels


@dataclass(frozen=True)
class TestProgram:
    __test__ = False  # not a pytest test class

    name: str
    hook: str
    fd: int
    id: int
    tag: str

    def ref(self, owner: str = "test") -> ProgramRef:
        return ProgramRef(self.fd, labels.program_label(owner, self.hook, self.tag, self.id))


@dataclass
class TestPrograms:
    __test__ = False

    out: dict[str, TestProgram]
    in_: dict[str, TestProgram]
    xmit: TestProgram
    count_map_fd: int

    def count_for(self, address: str) -> int:
        """Packets route_count saw toward ``address`` (IPv4: the address; IPv6: low 32 bits)."""
        import ipaddress

        key = ipaddress.ip_address(address).packed[-4:]
        value = syscall.map_lookup_elem(self.count_map_fd, key, 8)
        return 0 if value is None else struct.unpack("=Q", value)[0]

    def reset_counts(self) -> None:
        key = syscall.map_get_next_key(self.count_map_fd, None, 4)
        while key is not None:
            nxt = syscall.map_get_next_key(self.count_map_fd, key, 4)
            syscall.map_delete_elem(self.count_map_fd, key)
            key = nxt


def _open(pin: Path, name: str, hook: str) -> TestProgram:
    fd = syscall.obj_get(str(pin))
    info = syscall.prog_info(fd)
    return TestProgram(name, hook, fd, info.id, info.tag)


def load_test_programs(bpffs: Path, build: Path) -> TestPrograms:
    root = bpffs / "route-tests"
    for sub in ("out", "in", "xmit", "maps"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    obj = build / "testobj" / "route_out.o"
    subprocess.run(["bpftool", "prog", "loadall", str(obj), str(root / "out"), "type", "lwt_out",
                    "pinmaps", str(root / "maps")], check=True)
    subprocess.run(["bpftool", "prog", "loadall", str(obj), str(root / "in"), "type", "lwt_in"],
                   check=True)
    subprocess.run(["bpftool", "prog", "load", str(build / "testobj" / "route_xmit.o"),
                    str(root / "xmit" / "push_ipip"), "type", "lwt_xmit"], check=True)
    names = ("drop_a", "drop_b", "drop_all", "count")
    out = {n: _open(root / "out" / f"route_{n}", n, "out") for n in names}
    in_ = {n: _open(root / "in" / f"route_{n}", n, "in") for n in names}
    xmit = _open(root / "xmit" / "push_ipip", "push_ipip", "xmit")
    count_map = syscall.obj_get(str(root / "maps" / "route_cnt"))
    return TestPrograms(out, in_, xmit, count_map)


def prog_show(prog_id: int) -> dict[str, object]:
    out = subprocess.run(["bpftool", "-j", "prog", "show", "id", str(prog_id)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)
