"""What the node agent does to the kernel, step by step, run with a restricted capability set.

Run as a child process by test_agent_capabilities.py, under `setpriv` with only the capabilities
under test, inside a network namespace the test created:

    python capability_probe.py BPF_OBJECT_DIR PIN_DIR DEVICE DESTINATION

Prints one JSON object: for every step, "ok" or the errno name it failed with. Programs loaded:
one per built-in and hook it declares (fourteen), closed before exit; the routes it adds are
deleted again.
"""
from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path
from typing import Any

from lwt_agent.bpf import Hook, KernelError, LoadedProgram, ObjectSpec
from lwt_agent.bpf import syscall as bpf_syscall
from lwt_policy.catalogue import CATALOGUE
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

LABEL = "lwt/capability-probe/out/0"


def effective_capabilities() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    raise RuntimeError("no CapEff in /proc/self/status")


def outcome(exc: BaseException) -> str:
    code = getattr(exc, "errno", None) or getattr(exc, "code", None)
    if isinstance(code, int) and code in errno.errorcode:
        return errno.errorcode[code]
    return f"{type(exc).__name__}: {exc}"


def main(object_dir: Path, pin_dir: Path, device: str, destination: str) -> dict[str, Any]:
    steps: dict[str, Any] = {"capeff": hex(effective_capabilities())}
    programs: dict[str, LoadedProgram] = {}
    with IPRoute() as ipr:
        (index,) = ipr.link_lookup(ifname=device)
        # A plain route: what the agent does for owned /32 routes (bridge CNIs).
        try:
            ipr.route("add", dst=f"{destination}/32", oif=index, scope="link")
            ipr.route("del", dst=f"{destination}/32", oif=index, scope="link")
            steps["plain_route"] = "ok"
        except NetlinkError as exc:
            steps["plain_route"] = outcome(exc)
        # Load every built-in on every hook it declares (maps, BTF, a ring buffer) and pin
        # it on bpffs, as the agent does: one program per (built-in, hook), closed below.
        for name, builtin in sorted(CATALOGUE.items()):
            for hook_name in sorted(builtin.hooks):
                spec = ObjectSpec.from_file(object_dir / builtin.object)
                pins = pin_dir / f"{name}-{hook_name}"
                pins.mkdir()
                try:
                    programs[f"{name}/{hook_name}"] = spec.load(
                        builtin.section, Hook(hook_name), pin_dir=pins)
                    steps[f"load_{name}/{hook_name}"] = "ok"
                except KernelError as exc:
                    steps[f"load_{name}/{hook_name}"] = outcome(exc)
        # Attach each loaded program to a route on its hook, and read the label back.
        for key, prog in sorted(programs.items()):
            hook_name = key.split("/")[1]
            try:
                ipr.route(
                    "add", dst=f"{destination}/32", oif=index, scope="link",
                    encap={"type": "bpf", hook_name: {"fd": prog.fd, "name": LABEL}},
                )
                dumped = ipr.route("get", dst=destination)
                steps[f"attach_{key}"] = "ok" if LABEL in str(dumped) else "label not dumped back"
                ipr.route("del", dst=f"{destination}/32", oif=index, scope="link")
            except NetlinkError as exc:
                steps[f"attach_{key}"] = outcome(exc)
        if programs:
            prog = next(iter(programs.values()))
            # Adopting a program after a restart by id needs CAP_SYS_ADMIN; the agent reopens
            # its pins instead (docs/install.md, agent capabilities). Both are probed.
            try:
                os.close(bpf_syscall.obj_get(str(prog.pinned)))
                steps["reopen_pin"] = "ok"
            except KernelError as exc:
                steps["reopen_pin"] = outcome(exc)
            try:
                os.close(bpf_syscall.prog_get_fd_by_id(prog.id))
                steps["fd_by_id"] = "ok"
            except KernelError as exc:
                steps["fd_by_id"] = outcome(exc)
        for prog in programs.values():
            prog.close()
    return steps


if __name__ == "__main__":
    object_dir, pin_dir, device, destination = sys.argv[1:5]
    print(json.dumps(main(Path(object_dir), Path(pin_dir), device, destination)))
