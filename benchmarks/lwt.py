"""Our built-in LWT programs, loaded once each, and attached to many routes.

Loading goes through the project's own loader (`lwt_agent.bpf.ObjectSpec`) and catalogue
(`lwt_policy.catalogue`), configuration through `lwt_policy.program_config.sync_config`,
labels through `lwt_agent.route.labels`: the benchmark measures the code the agent runs.

Each (built-in, hook) is loaded at most once per run and that one program is attached to
every route of a scenario (the measured pod's and all the other pods'). NEVER one program
per route: freeing thousands of programs at once deadlocked this kernel's BPF JIT allocator
(docs/kernel-facts.md#one-program-per-policy-hook-never-one-per-route).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.errors import ScenarioError

LABEL_OWNER = "bench"


@dataclass
class LwtProgram:
    builtin: str
    hook: str
    fd: int
    prog_id: int
    label: str
    handle: Any  # the loader's LoadedProgram: keeps the fd (and its maps) open

    def close(self) -> None:
        self.handle.close()


class LwtPrograms:
    """Loads built-ins on demand, once per (built-in, hook); `close()` releases them all."""

    def __init__(self, config: dict[str, dict[str, Any]]) -> None:
        self._config = config  # built-in name -> policy `config` for it
        self._loaded: dict[tuple[str, str], LwtProgram] = {}

    @property
    def loaded_count(self) -> int:
        return len(self._loaded)

    def get(self, builtin: str, hook: str) -> LwtProgram:
        key = (builtin, hook)
        if key not in self._loaded:
            self._loaded[key] = self._load(builtin, hook)
        return self._loaded[key]

    def get_object(self, path: Path, section: str, hook: str) -> LwtProgram:
        """A program of an object outside the catalogue (the benchmark's own no-op)."""
        key = (str(path), hook)
        if key not in self._loaded:
            try:
                from lwt_agent.bpf import Hook, ObjectSpec
                from lwt_agent.route.labels import program_label
            except ImportError as e:
                raise ScenarioError(f"the loader (lwt_agent.bpf) is missing: {e}") from e
            try:
                prog = ObjectSpec.from_file(path).load(section, Hook(hook))
            except Exception as e:
                raise ScenarioError(f"loading {path.name} for hook {hook} failed: {e}") from e
            label = program_label(LABEL_OWNER, hook, prog.tag, prog.id)
            self._loaded[key] = LwtProgram(path.stem, hook, prog.fd, prog.id, label, prog)
        return self._loaded[key]

    def _load(self, builtin: str, hook: str) -> LwtProgram:
        try:
            from lwt_agent.bpf import Hook, ObjectSpec
            from lwt_agent.route.labels import program_label
            from lwt_policy.catalogue import CATALOGUE
            from lwt_policy.program_config import sync_config
        except ImportError as e:
            raise ScenarioError(
                f"cannot load {builtin} on {hook}: the project module it needs is missing "
                f"({e}); is the checkout complete and installed (`pip install -e .`)?"
            ) from e
        spec_entry = CATALOGUE.get(builtin)
        if spec_entry is None:
            raise ScenarioError(f"{builtin!r} is not in the built-in catalogue")
        path = spec_entry.object_path()
        if not path.is_file():
            raise ScenarioError(f"{path} missing: build the built-ins with `make -C bpf`")
        try:
            prog = ObjectSpec.from_file(path).load(spec_entry.section, Hook(hook))
        except Exception as e:  # the loader's typed errors all say what went wrong
            raise ScenarioError(f"loading {builtin} for hook {hook} failed: {e}") from e
        try:
            sync_config(builtin, self._config.get(builtin, {}), prog.maps)
            label = program_label(LABEL_OWNER, hook, prog.tag, prog.id)
        except Exception as e:
            prog.close()
            raise ScenarioError(f"configuring {builtin} for hook {hook} failed: {e}") from e
        return LwtProgram(builtin, hook, prog.fd, prog.id, label, prog)

    def close(self) -> None:
        for prog in self._loaded.values():
            prog.close()
        self._loaded.clear()


class RouteAttacher:
    """Attaches one program to many routes, and restores them plain, with the project's route
    engine (`lwt_agent.route.RouteEngine`, batched netlink): the code the agent runs."""

    def __init__(self, netns: str) -> None:
        try:
            from lwt_agent.route import RouteEngine
        except ImportError as e:
            raise ScenarioError(f"the route engine (lwt_agent.route) is missing: {e}") from e
        self._engine = RouteEngine(netns)

    def close(self) -> None:
        self._engine.close()

    def attach(self, prog: LwtProgram, dsts: Sequence[str]) -> None:
        from lwt_agent.route import ProgramRef

        if not dsts:
            return
        try:
            self._engine.attach(dsts, prog.hook, ProgramRef(prog.fd, prog.label))
        except Exception as e:  # the engine's typed errors say which route and why
            raise ScenarioError(
                f"attaching {prog.builtin}/{prog.hook} to {len(dsts)} route(s) failed: {e}"
            ) from e

    def detach(self, dsts: Sequence[str]) -> None:
        if not dsts:
            return
        try:
            self._engine.detach(dsts)
        except Exception as e:
            raise ScenarioError(f"detaching from {len(dsts)} route(s) failed: {e}") from e
