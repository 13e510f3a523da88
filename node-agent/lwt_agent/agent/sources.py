"""Where a policy hook's program comes from: the built-in catalogue or a ConfigMap.

Turns a hook of a parsed policy into a ProgramRequest (object bytes, section, built-in name
and config) for the program store. Built-in objects are read once per file version.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lwt_policy.catalogue import CATALOGUE, builtin_object_dir
from lwt_policy.configmap import resolve_configmap_program
from lwt_policy.errors import ProgramSourceError, join_path
from lwt_policy.model import FAIL_CLOSED_BUILTIN, BuiltinSource, HookSpec, PolicyRef

from .errors import ProgramError


@dataclass(frozen=True)
class ProgramRequest:
    """One program to have loaded for (policy, hook)."""

    policy: PolicyRef
    hook: str
    object_bytes: bytes = field(repr=False)
    section: str
    origin: str  # for messages: "built-in port-filter", "ConfigMap shop/f key f.o"
    field_path: str  # the policy field naming the program (spec.hooks.out.program)
    builtin: str | None = None  # catalogue name: config and counters are known
    config: Mapping[str, Any] = field(default_factory=dict)
    fallback: bool = False  # the FailClosed drop-all, not the policy's own program

    @property
    def digest(self) -> str:
        """Identity of the code: object bytes and section (config is not part of it, so a
        config change never reloads)."""
        h = hashlib.sha256(self.section.encode() + b"\0" + self.object_bytes)
        return h.hexdigest()[:16]


class ProgramSources:
    """Builds ProgramRequests; caches built-in object files by (path, mtime, size)."""

    def __init__(self, object_dir: Path | None = None) -> None:
        self.object_dir = object_dir
        self._cache: dict[Path, tuple[tuple[int, int], bytes]] = {}

    def _builtin_bytes(self, name: str, field_path: str) -> bytes:
        program = CATALOGUE[name]
        path = program.object_path(self.object_dir or builtin_object_dir())
        try:
            st = os.stat(path)
            stamp = (st.st_mtime_ns, st.st_size)
            cached = self._cache.get(path)
            if cached is not None and cached[0] == stamp:
                return cached[1]
            data = path.read_bytes()
        except OSError as exc:
            raise ProgramError(
                field_path,
                f"the object of built-in {name!r} cannot be read at {path}: {exc.strerror}; "
                "build it (make -C bpf) or set LWT_BPF_DIR to the agent's objects",
            ) from exc
        self._cache[path] = (stamp, data)
        return data

    def request(self, policy: PolicyRef, hook: HookSpec,
                configmaps: Mapping[tuple[str, str], Mapping[str, Any]]) -> ProgramRequest:
        field_path = join_path(hook.field_path, "program")
        source = hook.program
        if isinstance(source, BuiltinSource):
            program = CATALOGUE.get(source.name)
            if program is None:  # validation catches this first; a different catalogue?
                raise ProgramError(join_path(field_path, "builtin"),
                                   f"unknown built-in {source.name!r}")
            return ProgramRequest(
                policy, hook.hook, self._builtin_bytes(source.name, field_path),
                program.section, f"built-in {source.name}", field_path,
                builtin=source.name, config=dict(hook.config))
        try:
            blob = resolve_configmap_program(hook, configmaps)
        except ProgramSourceError as exc:
            raise ProgramError(exc.field, exc.message) from exc
        return ProgramRequest(
            policy, hook.hook, blob, source.section,
            f"ConfigMap {source.namespace}/{source.name} key {source.key}", field_path)

    def fallback(self, policy: PolicyRef, hook: str) -> ProgramRequest:
        """The drop-all built-in a FailClosed policy's routes get on ``hook``."""
        field_path = f"spec.hooks.{hook}.program"
        program = CATALOGUE[FAIL_CLOSED_BUILTIN]
        return ProgramRequest(
            policy, hook, self._builtin_bytes(FAIL_CLOSED_BUILTIN, field_path),
            program.section, f"built-in {FAIL_CLOSED_BUILTIN} (FailClosed)", field_path,
            builtin=FAIL_CLOSED_BUILTIN, fallback=True)
