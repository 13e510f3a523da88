"""Typed errors of the agent. Each names the policy field to fix, so status can point at it."""
from __future__ import annotations

from lwt_policy.status import NodeError


class AgentError(Exception):
    """Base of every agent error."""


class ProgramError(AgentError):
    """A policy's program for one hook cannot be made ready on this node.

    ``field`` is the policy field to fix (``spec.hooks.out.program.section``), ``message``
    says what went wrong and what to do, ``verifier_log`` is the verifier's log when the
    kernel refused the program.
    """

    def __init__(self, field: str, message: str, verifier_log: str | None = None) -> None:
        self.field = field
        self.message = message
        self.verifier_log = verifier_log
        super().__init__(f"{field}: {message}")

    def node_error(self) -> NodeError:
        return NodeError(str(self), self.verifier_log)


class InputError(AgentError):
    """Standalone input files cannot be read; the previous good input stays in force."""


class StartupError(AgentError):
    """The agent cannot start (pin root, netns, port); the message says what to fix."""
