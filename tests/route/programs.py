"""Test programs for the route engine, loaded ONCE per test session with the real loader.

bpf/build/testobj/route_out.o gives four `out` programs (drop port 7001, drop port 7002,
drop all, count per destination) and an `in` drop-all; route_xmit.o an IP-in-IP `xmit`
program: 6 programs for the whole tests/route run, each attached to as many routes as a
test needs (never a program per route:
docs/kernel-facts.md#one-program-per-policy-hook-never-one-per-route). The `out` programs
are pinned in the session bpffs so helper processes (the crash test's agent) can open them.
"""
from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from pathlib import Path

from lwt_agent.bpf import BpfMap, Hook, LoadedProgram, ObjectSpec
from lwt_agent.route import ProgramRef, labels


@dataclass(frozen=True)
class TestProgram:
    __test__ = False  # not a pytest test class

    name: str
    hook: str
    fd: int
    id: int
    tag: str
    pin: Path | None = None

    def ref(self, owner: str = "test") -> ProgramRef:
        return ProgramRef(self.fd, labels.program_label(owner, self.hook, self.tag, self.id))


@dataclass
class TestPrograms:
    __test__ = False

    out: dict[str, TestProgram]
    in_: dict[str, TestProgram]
    xmit: TestProgram
    count_map: BpfMap
    loaded: list[LoadedProgram]

    def count_for(self, address: str) -> int:
        """Packets route_count saw toward ``address`` (IPv4: the address; IPv6: low 32 bits)."""
        value = self.count_map.lookup(ipaddress.ip_address(address).packed[-4:])
        return 0 if value is None else struct.unpack("=Q", value)[0]

    def reset_counts(self) -> None:
        for key in list(self.count_map.keys()):
            self.count_map.delete(key)


def _keep(loaded: list[LoadedProgram], prog: LoadedProgram, name: str) -> TestProgram:
    loaded.append(prog)
    pin = Path(prog.pinned) if prog.pinned else None
    return TestProgram(name, prog.hook.value, prog.fd, prog.id, prog.tag, pin)


def load_test_programs(bpffs: Path, build: Path) -> TestPrograms:
    pin_dir = bpffs / "route-tests" / "out"
    pin_dir.mkdir(parents=True, exist_ok=True)
    route_out = ObjectSpec.from_file(build / "testobj" / "route_out.o")
    route_xmit = ObjectSpec.from_file(build / "testobj" / "route_xmit.o")
    loaded: list[LoadedProgram] = []
    out = {
        name: _keep(loaded, route_out.load(f"lwt_out/{name}", Hook.OUT, pin_dir=pin_dir), name)
        for name in ("drop_a", "drop_b", "drop_all", "count")
    }
    in_ = {"drop_all": _keep(loaded, route_out.load("lwt_out/drop_all", Hook.IN), "drop_all")}
    xmit = _keep(loaded, route_xmit.load("lwt_xmit/push_ipip", Hook.XMIT), "push_ipip")
    count_map = next(p.maps["route_cnt"] for p in loaded if "route_cnt" in p.maps)
    return TestPrograms(out, in_, xmit, count_map, loaded)
