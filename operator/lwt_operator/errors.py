"""Typed errors of the operator; messages say what to fix."""
from __future__ import annotations


class OperatorError(Exception):
    """Base of every lwt_operator error."""


class SettingsError(OperatorError):
    """The agent settings file (--agent-config) is unreadable or has a wrong value."""


class ConfigError(OperatorError):
    """A command-line option or the Kubernetes connection settings are wrong."""


class ApiError(OperatorError):
    """The Kubernetes API answered with an error status."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(f"Kubernetes API error {status} {reason}: {message}")
