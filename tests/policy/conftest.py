"""Shared helpers of the policy tests: a valid policy to mutate, the repo paths."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
ADMIN_NS = "lwt-system"

_BASE: dict[str, Any] = {
    "apiVersion": "lwt.dev/v1alpha1",
    "kind": "LwtRoutePolicy",
    "metadata": {"name": "web", "namespace": "shop", "uid": "u-1", "generation": 3},
    "spec": {
        "podSelector": {"matchLabels": {"app": "web"}},
        "hooks": {"out": {"program": {"builtin": "port-filter"},
                          "config": {"denyTCPPorts": [8080]}}},
    },
}


def base_policy() -> dict[str, Any]:
    """A valid policy; each caller mutates its own copy."""
    return copy.deepcopy(_BASE)
