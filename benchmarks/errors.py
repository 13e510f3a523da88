"""Typed errors of the benchmark harness. Each message says what to do about it."""
from __future__ import annotations


class BenchError(Exception):
    """Base class: the benchmark could not do something it needs."""


class ToolMissingError(BenchError):
    """A command-line tool the benchmark drives is not installed."""


class CommandError(BenchError):
    """A command failed; carries its argv and stderr."""

    def __init__(self, argv: list[str], returncode: int, stderr: str) -> None:
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(
            f"`{' '.join(argv)}` exited {returncode}: {stderr.strip()[-800:] or '(no stderr)'}"
        )


class ScenarioError(BenchError):
    """A scenario could not be set up or did not do what it claims (for example a filter that
    lets the denied port through). The run goes on with the other scenarios and exits non-zero."""


class MeasurementError(BenchError):
    """A traffic tool produced no usable figure."""
