"""The program store: one loaded program per (policy, hook, code), pinned, config in maps.

Layout under the agent's pin root (a directory on bpffs)::

    <root>/<namespace>/<policy>/<hook>/<digest>/<program pin> + one pin per map

``digest`` identifies the code (object bytes + section, ``ProgramRequest.digest``), never
the config: a config change rewrites map entries of the same program (same id, same route
label, counters keep counting). A code change loads a new program beside the old one; the
reconciler swaps routes over and then the store drops the old directory.

A restarted agent finds the pinned program and its maps again (``adopted``): same program
id, hence the same label, so the route engine sees every route as already right and
changes nothing (no flap). The pins hold programs and maps alive across restarts; routes
hold the programs too, so removing a pin never detaches anything by itself.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lwt_policy.model import PolicyRef
from lwt_policy.program_config import (
    CLEAR_WHEN_REFUSED,
    EncapRules,
    MapLayoutError,
    ProgramConfigError,
    check_map_layout,
    clear_config,
    sync_config,
)

from lwt_agent.bpf import (
    BpfMap,
    LoaderError,
    MalformedObjectError,
    ObjectSpec,
    UnsupportedFeatureError,
    VerifierError,
    pins,
)
from lwt_agent.bpf import syscall as bpf_syscall
from lwt_agent.bpf.maps import kernel_name
from lwt_agent.route import ProgramRef, labels

from .errors import ProgramError
from .refusals import RefusalMemo
from .sources import ProgramRequest

log = logging.getLogger(__name__)
_DIGEST = re.compile(r"[0-9a-f]{16}")


@dataclass(frozen=True)
class ProgramKey:
    policy: PolicyRef
    hook: str
    digest: str

    def path(self, root: Path) -> Path:
        return root / self.policy.scope / self.policy.name / self.hook / self.digest


@dataclass
class StoredProgram:
    """A loaded (or adopted) program with its maps; the store owns every fd."""

    key: ProgramKey
    fd: int
    id: int
    tag: str
    label: str
    maps: dict[str, BpfMap]
    pin_dir: Path
    origin: str
    builtin: str | None
    fallback: bool
    adopted: bool
    applied_config: str | None = None  # canonical JSON of the config in the maps
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ref(self) -> ProgramRef:
        return ProgramRef(self.fd, self.label)

    def close(self) -> None:
        for bpf_map in self.maps.values():
            with contextlib.suppress(OSError):
                bpf_map.close()
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


def _canonical(config: Mapping[str, Any]) -> str:
    return json.dumps(config, sort_keys=True, separators=(",", ":"))


class ProgramStore:
    """Loads each (policy, hook, code) once, adopts pinned ones, drops unused ones."""

    def __init__(self, pin_root: Path,
                 encap_rules: Callable[[], EncapRules] | None = None) -> None:
        self.root = Path(pin_root)
        # the node's facts encap configs are checked against, read afresh at every pass
        self._encap_rules = encap_rules
        self._programs: dict[ProgramKey, StoredProgram] = {}
        self.loads = 0  # programs loaded by this process (not adopted)
        self.adoptions = 0
        self.refusals = RefusalMemo()  # refused code is not parsed again every pass

    # --- queries -------------------------------------------------------------------------

    def programs(self) -> list[StoredProgram]:
        return list(self._programs.values())

    def get(self, key: ProgramKey) -> StoredProgram | None:
        return self._programs.get(key)

    # --- ensure --------------------------------------------------------------------------

    def ensure(self, request: ProgramRequest) -> StoredProgram:
        """The loaded program for ``request``, with its config written into its maps.

        Raises ProgramError naming the policy field; nothing stays loaded or pinned from a
        failed attempt, and programs already in the store are untouched.
        """
        key = ProgramKey(request.policy, request.hook, request.digest)
        program = self._programs.get(key)
        if program is None:
            refused = self.refusals.get(key)
            if refused is not None:
                raise refused.with_traceback(None)  # no traceback piling up pass after pass
            try:
                program = self._open(key, request)
            except ProgramError as exc:
                self.refusals.remember(key, exc)
                raise
            self._programs[key] = program
        if request.builtin is not None and not request.fallback:
            self._apply_config(program, request)
        return program

    def _open(self, key: ProgramKey, request: ProgramRequest) -> StoredProgram:
        try:
            spec = ObjectSpec.from_bytes(request.object_bytes, source=request.origin)
            prog_name = pins.program_pin_name(kernel_name(spec.program(request.section).name))
            pins.check_segments(key.policy.scope, key.policy.name, key.hook, key.digest)
            pin_dir = key.path(self.root)
            pins.check_under(self.root, pin_dir)  # the policy's own directory, nothing else
        except MalformedObjectError as exc:
            raise ProgramError(self._section_field(request, exc), str(exc)) from exc
        except LoaderError as exc:
            raise ProgramError(request.field_path, str(exc)) from exc
        prog_pin = pin_dir / prog_name
        if prog_pin.exists():
            try:
                program = self._adopt(key, request, pin_dir, prog_pin)
            except (OSError, LoaderError, MapLayoutError) as exc:
                log.warning("cannot adopt %s (%s): loading it again", pin_dir, exc)
                _remove_dir(pin_dir)
            else:
                self.adoptions += 1
                log.info("adopted %s (prog id %d) from %s", program.label, program.id, pin_dir)
                return program
        return self._load(key, request, spec, pin_dir)

    def _load(self, key: ProgramKey, request: ProgramRequest, spec: ObjectSpec,
              pin_dir: Path) -> StoredProgram:
        created = not pin_dir.exists()
        try:
            pin_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ProgramError(request.field_path,
                               f"cannot create the pin directory {pin_dir}: {exc.strerror}; "
                               "is the agent's --pin-dir on a mounted bpffs?") from exc
        try:
            loaded = spec.load(request.section, request.hook, pin_dir=pin_dir)
        except VerifierError as exc:
            self._forget(pin_dir, created)
            raise ProgramError(
                request.field_path,
                f"the kernel verifier refused {request.origin} (section {request.section!r}) "
                f"on hook {request.hook}: {exc}",
                verifier_log=exc.log,
            ) from exc
        except MalformedObjectError as exc:
            self._forget(pin_dir, created)
            raise ProgramError(self._section_field(request, exc), str(exc)) from exc
        except (UnsupportedFeatureError, LoaderError) as exc:
            self._forget(pin_dir, created)
            raise ProgramError(request.field_path, str(exc)) from exc
        program = StoredProgram(
            key=key, fd=loaded.fd, id=loaded.id, tag=loaded.tag,
            label=labels.program_label(labels.policy_owner(key.policy), key.hook, loaded.tag,
                                       loaded.id),
            maps={pins.canonical_map_name(name): m for name, m in loaded.maps.items()},
            pin_dir=pin_dir, origin=request.origin,
            builtin=request.builtin, fallback=request.fallback, adopted=False)
        loaded.fd = -1  # the StoredProgram owns the fds now
        loaded.maps = {}
        if request.builtin is not None:
            try:
                check_map_layout(request.builtin, program.maps)
            except MapLayoutError as exc:
                program.close()
                self._forget(pin_dir, True)
                raise ProgramError(request.field_path, str(exc)) from exc
        self.loads += 1
        log.info("loaded %s for %s hook %s: prog id %d tag %s", request.origin,
                 key.policy, key.hook, program.id, program.tag)
        return program

    def _adopt(self, key: ProgramKey, request: ProgramRequest, pin_dir: Path,
               prog_pin: Path) -> StoredProgram:
        fd = bpf_syscall.obj_get(str(prog_pin))
        maps: dict[str, BpfMap] = {}
        try:
            info = bpf_syscall.prog_info(fd)
            for entry in sorted(os.listdir(pin_dir)):
                if entry != prog_pin.name:
                    name = pins.map_name(entry)  # the same names a fresh load gives
                    if name is None:
                        raise LoaderError(f"{pin_dir / entry} is not a map pin of this agent")
                    maps[name] = BpfMap.from_pin(pin_dir / entry)
                    maps[name].name = name
            pinned_ids = {m.id for m in maps.values()}
            if not set(info.map_ids) <= pinned_ids:
                raise LoaderError(f"the pinned program uses maps {sorted(info.map_ids)} but "
                                  f"the directory pins {sorted(pinned_ids)}")
            if request.builtin is not None:
                check_map_layout(request.builtin, maps)
        except BaseException:
            for bpf_map in maps.values():
                bpf_map.close()
            os.close(fd)
            raise
        return StoredProgram(
            key=key, fd=fd, id=info.id, tag=info.tag,
            label=labels.program_label(labels.policy_owner(key.policy), key.hook, info.tag,
                                       info.id),
            maps=maps, pin_dir=pin_dir, origin=request.origin, builtin=request.builtin,
            fallback=request.fallback, adopted=True)

    def _apply_config(self, program: StoredProgram, request: ProgramRequest) -> None:
        rules = None
        wanted = _canonical(request.config)
        if request.builtin == "encap" and self._encap_rules is not None:
            # An address leaving the node or an allowlist change must re-check the config
            # even when the policy did not change: the facts are part of what was applied.
            rules = self._encap_rules()
            wanted += _canonical({
                "addresses": sorted(str(a) for a in rules.node_addresses or ()),
                "remotes": None if rules.allowed_remotes is None
                else [str(n) for n in rules.allowed_remotes]})
        if program.applied_config == wanted:
            return
        assert request.builtin is not None
        try:
            result = sync_config(request.builtin, request.config, program.maps, rules)
        except ProgramConfigError as exc:
            if request.builtin in CLEAR_WHEN_REFUSED and program.applied_config is not None:
                # what it was sending with is no longer allowed: stop, do not keep going
                clear_config(request.builtin, program.maps)
                program.applied_config = None
                log.warning("config of %s refused (%s): cleared, the program now drops",
                            program.label, exc)
            raise ProgramError(f"{request.field_path.rsplit('.', 1)[0]}.{exc.field}",
                               exc.message) from exc
        except MapLayoutError as exc:
            raise ProgramError(request.field_path, str(exc)) from exc
        except OSError as exc:
            raise ProgramError(request.field_path,
                               f"writing the config into the maps of prog id {program.id} "
                               f"failed: {exc}") from exc
        if program.applied_config is not None:
            log.info("config of %s rewritten in place (%d entries written, %d deleted)",
                     program.label, result.written, result.deleted)
        program.applied_config = wanted

    @staticmethod
    def _section_field(request: ProgramRequest, exc: Exception) -> str:
        if "no program section" in str(exc) and request.builtin is None:
            return f"{request.field_path}.section"
        return request.field_path

    def _forget(self, pin_dir: Path, created: bool) -> None:
        if created:
            _remove_dir(pin_dir)
            _prune_empty(pin_dir.parent, self.root)

    # --- dropping ------------------------------------------------------------------------

    def drop_except(self, keep: Iterable[ProgramKey],
                    keep_policies: Iterable[PolicyRef] = ()) -> list[ProgramKey]:
        """Close and unpin every program not in ``keep``, and remove pin directories of
        programs this store does not hold (left by an earlier run), except everything of
        ``keep_policies`` (held as they are). Call it only after the routes stopped using
        them."""
        keep = set(keep)
        held = set(keep_policies)
        dropped: list[ProgramKey] = []
        for key in [k for k in self._programs if k not in keep and k.policy not in held]:
            program = self._programs.pop(key)
            program.close()
            _remove_dir(program.pin_dir)
            _prune_empty(program.pin_dir.parent, self.root)
            dropped.append(key)
            log.info("dropped %s (prog id %d)", program.label, program.id)
        wanted_dirs = {k.path(self.root) for k in keep}
        held_dirs = {self.root / ref.scope / ref.name for ref in held}
        for pin_dir in self._pinned_dirs():
            if pin_dir not in wanted_dirs and pin_dir.parent.parent not in held_dirs:
                log.info("removing stale pins %s", pin_dir)
                _remove_dir(pin_dir)
                _prune_empty(pin_dir.parent, self.root)
        return dropped

    def _pinned_dirs(self) -> list[Path]:
        """<root>/<ns>/<policy>/<hook>/<digest> directories on disk."""
        if not self.root.is_dir():
            return []
        # Only our own layout (hook name, 16 hex digits): a --pin-dir shared with other
        # tools must never lose their pins.
        return [p for p in self.root.glob("*/*/*/*")
                if p.is_dir() and p.parent.name in labels.HOOKS
                and _DIGEST.fullmatch(p.name)]

    def close(self) -> None:
        """Close every fd; pins stay (a restarted agent adopts them)."""
        for program in self._programs.values():
            program.close()
        self._programs.clear()

    def unpin_all(self, policy: PolicyRef | None = None) -> list[Path]:
        """Close everything and remove every pin under the root, or only ``policy``'s
        (after detaching); returns the program directories removed."""
        self.close()
        removed = []
        for pin_dir in self._pinned_dirs():
            if policy is not None and pin_dir.parent.parent != (
                    self.root / policy.scope / policy.name):
                continue
            _remove_dir(pin_dir)
            _prune_empty(pin_dir.parent, self.root)
            removed.append(pin_dir)
        return removed


def _remove_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _prune_empty(path: Path, root: Path) -> None:
    """Remove empty parents up to (not including) ``root``."""
    while path != root and root in path.parents:
        try:
            path.rmdir()
        except OSError:
            return
        path = path.parent
