"""Attaching built-ins to routes in the tests, and opening their maps.

Two ways, one interface:
- `LoaderAttacher` (preferred): `lwt_agent.bpf.ObjectSpec` loads each (built-in, hook) once
  and pyroute2 attaches that one program fd to every route that needs it.
- `IprouteAttacher` (the reference, or when the loader is unavailable;
  LWT_BUILTINS_ATTACH=iproute2 selects it): `ip route add ... encap bpf HOOK obj F section
  S`, which loads the object again for every route (so tests use 1-3 routes). Maps pinned
  by name land under $TC_BPF_MNT/tc/globals and are shared by those loads.
Both pin maps under a directory private to the test, so counters start from zero. A test
uses each built-in on one hook only, so both ways give it one set of maps.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from lwt_agent.netns import entered
from lwt_policy.catalogue import CATALOGUE, builtin_object_dir

from .netns import Node

try:
    from lwt_agent.bpf.maps import BpfMap
except ImportError:  # pragma: no cover - the loader package is being written concurrently
    BpfMap = None  # type: ignore[assignment,misc]


def _loader_available() -> bool:
    try:
        from lwt_agent.bpf import Hook, ObjectSpec  # noqa: F401
    except ImportError:
        return False
    return True


class IprouteAttacher:
    kind = "iproute2"

    def __init__(self, pin_root: Path) -> None:
        self.pin_root = pin_root
        # must exist on the bpffs: for a missing directory `ip -n` mounts a new bpffs there
        # inside its own short-lived mount namespace, and the pins vanish with it
        self.pin_root.mkdir(parents=True)
        self.env = dict(os.environ, TC_BPF_MNT=str(pin_root))
        self._maps: list[Any] = []

    @property
    def pin_dir(self) -> Path:
        return self.pin_root / "tc" / "globals"

    def route_add(self, node: Node, ns: str, dst: str, dev: str, hooks: dict[str, str],
                  headroom: int | None = None, check: bool = True) -> Any:
        """Adds `dst dev DEV` with `hooks` ({hook: built-in name}) attached."""
        args = ["route", "add", dst, "dev", dev, "encap", "bpf"]
        for hook, builtin in hooks.items():
            program = CATALOGUE[builtin]
            args += [hook, "obj", str(program.object_path(builtin_object_dir())),
                     "section", program.section]
        if headroom is not None:
            args += ["headroom", str(headroom)]
        family = ["-6"] if ":" in dst else []
        return node.ip(ns, *family, *args, env=self.env, check=check)

    def maps(self, builtin: str) -> dict[str, Any]:
        assert BpfMap is not None, "lwt_agent.bpf.maps.BpfMap is needed to read maps"
        out = {}
        for spec in CATALOGUE[builtin].maps:
            bpf_map = BpfMap.from_pin(self.pin_dir / spec.name)
            self._maps.append(bpf_map)
            out[spec.name] = bpf_map
        return out

    def close(self) -> None:
        for bpf_map in self._maps:
            bpf_map.close()
        self._maps.clear()
        shutil.rmtree(self.pin_root, ignore_errors=True)


class LoaderAttacher:
    """Loads each (built-in, hook) once with the project's loader; attaches with pyroute2."""

    kind = "loader"

    def __init__(self, pin_root: Path) -> None:
        self.pin_root = pin_root
        self.pin_root.mkdir(parents=True, exist_ok=True)
        self._programs: dict[tuple[str, str], Any] = {}

    @property
    def pin_dir(self) -> Path:
        return self.pin_root

    def program(self, builtin: str, hook: str) -> Any:
        from lwt_agent.bpf import Hook, ObjectSpec

        key = (builtin, hook)
        if key not in self._programs:
            spec = CATALOGUE[builtin]
            obj = ObjectSpec.from_file(spec.object_path(builtin_object_dir()))
            # one pin directory per program, as the agent keeps one per (policy, hook):
            # the loader pins the program itself by name, too
            pin_dir = self.pin_root / f"{builtin}-{hook}"
            pin_dir.mkdir()
            self._programs[key] = obj.load(spec.section, Hook(hook), pin_dir=str(pin_dir))
        return self._programs[key]

    def route_add(self, node: Node, ns: str, dst: str, dev: str, hooks: dict[str, str],
                  headroom: int | None = None, check: bool = True) -> Any:
        from pyroute2 import IPRoute

        encap: dict[str, Any] = {"type": "bpf"}
        for hook, builtin in hooks.items():
            prog = self.program(builtin, hook)
            encap[hook] = {"fd": prog.fd, "name": f"lwtB/{builtin}/{hook}/{prog.tag[:8]}"}
        if headroom is not None and "xmit" in encap:
            encap["xmit"]["headroom"] = headroom
        with entered(ns):
            ipr = IPRoute()
        try:
            (idx,) = ipr.link_lookup(ifname=dev)
            family = 10 if ":" in dst else 2
            ipr.route("add", dst=dst, oif=idx, family=family, scope=253 if family == 2 else 0,
                      encap=encap)
        finally:
            ipr.close()
        return None

    def maps(self, builtin: str) -> dict[str, Any]:
        loaded = [prog for (name, _hook), prog in self._programs.items() if name == builtin]
        assert len(loaded) == 1, f"{builtin}: {len(loaded)} programs loaded, tests use one"
        return dict(loaded[0].maps)

    def close(self) -> None:
        for prog in self._programs.values():
            prog.close()
        self._programs.clear()
        shutil.rmtree(self.pin_root, ignore_errors=True)


def make_attacher(pin_root: Path) -> IprouteAttacher | LoaderAttacher:
    if _loader_available() and os.environ.get("LWT_BUILTINS_ATTACH") != "iproute2":
        return LoaderAttacher(pin_root)
    return IprouteAttacher(pin_root)


__all__ = ["IprouteAttacher", "LoaderAttacher", "make_attacher"]
