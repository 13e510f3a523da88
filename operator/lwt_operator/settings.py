"""The agent DaemonSet settings: the YAML file the Helm chart mounts at
/etc/lwt-operator/agent.yaml (operator flag --agent-config).

Keys of the shared contract: image, imagePullPolicy, serviceAccountName, tolerations,
nodeSelector, affinity, resources, updateStrategy, priorityClassName, metricsPort (9469),
bpffsPath (/sys/fs/bpf), capabilities, logLevel. The chart adds imagePullSecrets and podLabels.
Unknown keys are refused, so that a typo does not silently fall back to a default.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from lwt_policy.custom_programs import (
    DEFAULT_NAMESPACE_SELECTOR,
    CustomProgramRule,
    CustomProgramSettingError,
)
from lwt_policy.program_config import parse_allowed_remotes

from lwt_operator.errors import SettingsError

DEFAULT_IMAGE = "ghcr.io/lwt-operator/lwt-operator:latest"
# Each proven necessary on the kernel: tests/packaging/test_agent_capabilities.py.
DEFAULT_CAPABILITIES = ("BPF", "NET_ADMIN")
LOG_LEVELS = ("debug", "info", "warning", "error")


METRICS_AUTH = ("kubernetes", "none")


@dataclass(frozen=True)
class AgentSettings:
    image: str = DEFAULT_IMAGE
    imagePullPolicy: str = "IfNotPresent"
    imagePullSecrets: tuple[Mapping[str, Any], ...] = ()
    serviceAccountName: str = "lwt-agent"
    tolerations: tuple[Mapping[str, Any], ...] = ({"operator": "Exists"},)
    nodeSelector: Mapping[str, str] = field(default_factory=lambda: {"kubernetes.io/os": "linux"})
    affinity: Mapping[str, Any] = field(default_factory=dict)
    resources: Mapping[str, Any] = field(default_factory=dict)
    updateStrategy: Mapping[str, Any] = field(
        default_factory=lambda: {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}
    )
    priorityClassName: str = ""
    metricsPort: int = 9469
    # Who may read the agents' /metrics: "kubernetes" (HTTPS, TokenReview + SubjectAccessReview;
    # the chart's default) or "none" (plain HTTP, open; the default of a bare operator).
    metricsAuth: str = "none"
    bpffsPath: str = "/sys/fs/bpf"
    capabilities: tuple[str, ...] = DEFAULT_CAPABILITIES
    logLevel: str = "info"
    podLabels: Mapping[str, str] = field(default_factory=dict)
    # Who may run their own bytecode (program.configMap): nobody unless the admin turns it on,
    # then only namespaces whose labels match (lwt_policy.custom_programs).
    configMapPrograms: bool = False
    configMapProgramNamespaceSelector: str = DEFAULT_NAMESPACE_SELECTOR
    # The tunnel endpoints the encap built-in may send to (CIDRs); empty: encap is refused.
    encapAllowedRemotes: tuple[str, ...] = ()

    @property
    def custom_programs(self) -> CustomProgramRule:
        return CustomProgramRule(bool(self.configMapPrograms),
                                 self.configMapProgramNamespaceSelector)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "agent settings") -> AgentSettings:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise SettingsError(f"{source}: unknown key(s) {', '.join(unknown)}; "
                                f"known keys: {', '.join(sorted(known))}")
        values = {k: v for k, v in data.items() if v is not None}
        for key in ("imagePullSecrets", "tolerations", "capabilities", "encapAllowedRemotes"):
            if key in values:
                if not isinstance(values[key], list):
                    raise SettingsError(f"{source}: {key} must be a list")
                values[key] = tuple(values[key])
        for key in ("nodeSelector", "affinity", "resources", "updateStrategy", "podLabels"):
            if key in values and not isinstance(values[key], Mapping):
                raise SettingsError(f"{source}: {key} must be a mapping")
        settings = cls(**values)
        settings.check(source)
        return settings

    @classmethod
    def from_file(cls, path: Path) -> AgentSettings:
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except OSError as exc:
            raise SettingsError(f"cannot read agent settings {path}: {exc.strerror}; pass "
                                f"--agent-config with the file the chart mounts") from exc
        except yaml.YAMLError as exc:
            raise SettingsError(f"agent settings {path} is not valid YAML: {exc}") from exc
        if not isinstance(data, Mapping):
            raise SettingsError(f"agent settings {path} must be a YAML mapping")
        return cls.from_mapping(data, str(path))

    def check(self, source: str) -> None:
        if not self.image:
            raise SettingsError(f"{source}: image must not be empty")
        if not isinstance(self.metricsPort, int) or not 1 <= self.metricsPort <= 65535:
            raise SettingsError(f"{source}: metricsPort must be a port number (1..65535), "
                                f"got {self.metricsPort!r}")
        if self.metricsAuth not in METRICS_AUTH:
            raise SettingsError(f"{source}: metricsAuth must be one of "
                                f"{', '.join(METRICS_AUTH)}, got {self.metricsAuth!r}")
        if not str(self.bpffsPath).startswith("/"):
            raise SettingsError(f"{source}: bpffsPath must be an absolute host path")
        if self.logLevel not in LOG_LEVELS:
            raise SettingsError(f"{source}: logLevel must be one of {', '.join(LOG_LEVELS)}")
        if self.imagePullPolicy not in ("Always", "IfNotPresent", "Never"):
            raise SettingsError(f"{source}: imagePullPolicy must be Always, IfNotPresent or "
                                f"Never")
        if not isinstance(self.configMapPrograms, bool):
            raise SettingsError(f"{source}: configMapPrograms must be true or false")
        try:
            self.custom_programs  # noqa: B018 (parses the selector)
        except CustomProgramSettingError as exc:
            raise SettingsError(f"{source}: configMapProgramNamespaceSelector: {exc}") from None
        for cidr in self.encapAllowedRemotes:
            if not isinstance(cidr, str) or "," in cidr:
                raise SettingsError(f"{source}: encapAllowedRemotes holds CIDR prefixes, one "
                                    f"per list item, got {cidr!r}")
            try:
                parse_allowed_remotes(cidr)
            except ValueError as exc:
                raise SettingsError(f"{source}: encapAllowedRemotes: {exc}") from None
        for cap in self.capabilities:
            if not isinstance(cap, str) or not cap.isupper() or cap.startswith("CAP_"):
                raise SettingsError(f"{source}: capabilities are names like BPF or NET_ADMIN "
                                    f"(without CAP_), got {cap!r}")
