"""Compiles the benchmark's own helpers at run time into a scratch directory.

- `tcp_rr`: the request/response latency client/server (netperf is not in Debian).
- `tc_port_filter.o`: the tc clsact BPF program the LWT port-filter is compared against.
- `lwt_noop.o`: an LWT program that only returns BPF_OK (the cost of the hook itself).

Nothing is written into the source tree; the caller removes the scratch directory.
"""
from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

from benchmarks import shell

SOURCE_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Helpers:
    tcp_rr: Path
    tc_port_filter: Path
    lwt_noop: Path


def build_helpers(scratch: Path) -> Helpers:
    shell.require_tools("clang")
    tcp_rr = scratch / "tcp_rr"
    shell.run(["clang", "-O2", "-Wall", "-Werror", "-o", str(tcp_rr),
               str(SOURCE_DIR / "tcp_rr.c")])
    # -target bpf with kernel uapi headers: the arch include dir provides asm/, and an empty
    # gnu/stubs-32.h keeps Debian's libc headers happy
    # (docs/kernel-facts.md#building-bpf-objects-on-debian).
    include = scratch / "include"
    (include / "gnu").mkdir(parents=True, exist_ok=True)
    (include / "gnu" / "stubs-32.h").touch()
    objects = {}
    for name in ("tc_port_filter", "lwt_noop"):
        objects[name] = scratch / f"{name}.o"
        shell.run(["clang", "-O2", "-g", "-target", "bpf", "-Wall", "-Werror",
                   f"-I{include}", f"-I/usr/include/{platform.machine()}-linux-gnu",
                   "-c", str(SOURCE_DIR / f"{name}.c"), "-o", str(objects[name])])
    return Helpers(tcp_rr=tcp_rr, tc_port_filter=objects["tc_port_filter"],
                   lwt_noop=objects["lwt_noop"])
