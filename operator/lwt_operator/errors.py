"""Typed errors of the operator; messages say what to fix."""
from __future__ import annotations


class OperatorError(Exception):
    """Base of every lwt_operator error."""


class SettingsError(OperatorError):
    """The agent settings file (--agent-config) is unreadable or has a wrong value."""


class ConfigError(OperatorError):
    """A command-line option is wrong (missing credentials are lwt_kube.CredentialsError)."""
