"""Typed errors of the BPF loader.

`MalformedObjectError` and `UnsupportedFeatureError` mean the input cannot be used (CLI exit 2);
`VerifierError` and `KernelError` mean the kernel refused a valid request (CLI exit 1).
"""
from __future__ import annotations

import errno as errno_mod
import os


class LoaderError(Exception):
    """Base of every error the loader raises on purpose."""


class MalformedObjectError(LoaderError):
    """The file is not a well-formed BPF ELF object (truncated, wrong machine, bad BTF...)."""


class UnsupportedFeatureError(LoaderError):
    """The object uses a feature this loader refuses (map-in-map, kfuncs, ksyms)."""

    def __init__(self, feature: str, section: str, detail: str = "") -> None:
        self.feature = feature
        self.section = section
        message = f"unsupported feature {feature!r} in section {section!r}"
        if detail:
            message += f": {detail}"
        message += " (this loader does not support it; rebuild the object without it)"
        super().__init__(message)


class KernelError(LoaderError, OSError):
    """A bpf(2) call failed; `.errno` says why."""

    def __init__(self, err: int, operation: str, hint: str = "") -> None:
        name = errno_mod.errorcode.get(err, str(err))
        message = f"{operation}: {os.strerror(err)} ({name})"
        if hint:
            message += f"; {hint}"
        OSError.__init__(self, err, message)
        self.operation = operation

    def __str__(self) -> str:
        return str(self.strerror)


class VerifierError(KernelError):
    """The verifier rejected a program; `.log` holds its (bounded) log."""

    def __init__(self, err: int, program: str, log: str, truncated: bool = False) -> None:
        self.log = log
        self.log_truncated = truncated
        last = _last_meaningful_line(log)
        hint = f"verifier: {last}" if last else "the verifier gave no log"
        super().__init__(err, f"loading program {program!r}", hint)

    @property
    def reason(self) -> str:
        """The verifier's last word: the line saying why it stopped."""
        return _last_meaningful_line(self.log)

    def excerpt(self, max_lines: int = 20) -> str:
        """The last lines of the log: where the verifier stopped and why."""
        lines = [line for line in self.log.splitlines() if line.strip()]
        return "\n".join(lines[-max_lines:])


class CoreRelocationError(LoaderError):
    """A CO-RE relocation cannot be applied as libbpf would (ambiguous candidates, a
    malformed access string, an instruction unlike what clang emits): the object does not
    fit this kernel's types."""


class UnsatisfiedRelocationError(VerifierError):
    """The verifier reached an instruction CO-RE poisoned (a field, type or enum value this
    kernel does not have, used without a bpf_core_*_exists() guard)."""

    def __init__(self, err: int, program: str, log: str, truncated: bool, what: str) -> None:
        super().__init__(err, program, log, truncated)
        self.what = what
        self.strerror = (f"loading program {program!r}: {what} cannot be satisfied on this "
                         "kernel and the instruction is reachable; guard it with "
                         "bpf_core_field_exists()/bpf_core_type_exists() or build against "
                         "this kernel's vmlinux.h")


class PinConflictError(LoaderError):
    """A pinned map exists under the requested name but differs from the object's definition."""

    def __init__(self, path: str, differences: list[str]) -> None:
        self.path = path
        self.differences = differences
        super().__init__(
            f"pinned map {path} is incompatible with the object's definition "
            f"({'; '.join(differences)}); remove the pin or use another --pin-dir"
        )


def _last_meaningful_line(log: str) -> str:
    for line in reversed(log.splitlines()):
        text = line.strip()
        if text and not text.startswith(("processed ", "verification time", "stack depth")):
            return text
    return ""


class PinNameError(LoaderError):
    """A map or program name cannot become a pin under the policy's pin directory (outside
    [A-Za-z0-9_] after the global-data mapping, or a path that would leave the directory)."""


class PinDirError(LoaderError):
    """The pin directory cannot hold pins (missing, or not on a bpffs)."""


class LimitError(MalformedObjectError):
    """The object exceeds a parsing bound (counts, sizes, string lengths, overlaps):
    refused before it can cost more memory or time; `.limit` names the bound."""

    def __init__(self, source: str, limit: str, problem: str) -> None:
        self.limit = limit
        super().__init__(f"{source}: {problem} (loader limit {limit}; see docs/loader.md "
                         "'Loader rules')")


class ForbiddenInstructionError(LoaderError):
    """The program holds an instruction the loader refuses before bpf(2): a map/BTF
    reference no relocation produced, a helper outside the LWT allowlist, a kfunc call."""

    def __init__(self, program: str, index: int, problem: str) -> None:
        self.program = program
        self.index = index
        super().__init__(f"program {program!r}, instruction {index}: {problem}")
