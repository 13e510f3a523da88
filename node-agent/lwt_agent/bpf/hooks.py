"""LWT hooks and the program type each one loads as."""
from __future__ import annotations

import enum

BPF_PROG_TYPE_LWT_IN = 10
BPF_PROG_TYPE_LWT_OUT = 11
BPF_PROG_TYPE_LWT_XMIT = 12


class Hook(enum.Enum):
    """Where on a route a program runs: `in` (input/forward), `out` (local output), `xmit`
    (just before neighbour output; the only hook that may rewrite packets)."""

    IN = "in"
    OUT = "out"
    XMIT = "xmit"

    @property
    def prog_type(self) -> int:
        return _PROG_TYPES[self]

    @classmethod
    def parse(cls, value: str | Hook) -> Hook:
        if isinstance(value, Hook):
            return value
        try:
            return cls(value.lower())
        except ValueError:
            choices = ", ".join(h.value for h in cls)
            raise ValueError(f"unknown hook {value!r}: choose one of {choices}") from None

    def __str__(self) -> str:
        return self.value


_PROG_TYPES = {
    Hook.IN: BPF_PROG_TYPE_LWT_IN,
    Hook.OUT: BPF_PROG_TYPE_LWT_OUT,
    Hook.XMIT: BPF_PROG_TYPE_LWT_XMIT,
}
