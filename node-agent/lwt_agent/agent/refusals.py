"""Programs the loader refused, remembered by code digest so a hostile or broken object is
parsed (and verified) once, not on every reconcile pass (issue 12: a parse bomb re-parsed
every pass kept every agent busy).

Only refusals that depend on the object's bytes alone are remembered: malformed or
over-limit objects, unsupported features, forbidden instructions, unpinnable names and the
verifier's verdict. Failures of the node (a missing pin directory, EPERM, ENOMEM, a pin
conflict) are not: the next pass tries again. The memo is bounded (least recently used
entries go first); a new object has a new digest and is parsed afresh.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

from lwt_agent.bpf import (
    ForbiddenInstructionError,
    MalformedObjectError,
    PinNameError,
    UnsupportedFeatureError,
    VerifierError,
)

from .errors import ProgramError

DETERMINISTIC = (MalformedObjectError, UnsupportedFeatureError, ForbiddenInstructionError,
                 PinNameError, VerifierError)
MAX_ENTRIES = 256


def is_deterministic(error: ProgramError) -> bool:
    """True when the loader error behind ``error`` depends only on the object's bytes
    (the store raises ProgramError ``from`` the loader's error)."""
    return isinstance(error.__cause__, DETERMINISTIC)


class RefusalMemo:
    """key (policy, hook, code digest) -> the ProgramError it was refused with."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, ProgramError] = OrderedDict()
        self.hits = 0

    def get(self, key: Hashable) -> ProgramError | None:
        error = self._entries.get(key)
        if error is not None:
            self._entries.move_to_end(key)
            self.hits += 1
        return error

    def remember(self, key: Hashable, error: ProgramError) -> None:
        if not is_deterministic(error):
            return
        self._entries[key] = error
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
