"""tests/policy's validation cases on the real API server: each module maps the cases'
namespaces to namespaces of its own (other tests of the session create and delete `shop`
and the admin namespace on the same server)."""
from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Mapping
from typing import Any

from tests.k8s.cluster import ControlPlane
from tests.k8s.stand import apply_crds, create_namespace


@contextlib.contextmanager
def case_namespaces(cp: ControlPlane, namespaces: Mapping[str, str]) -> Iterator[ControlPlane]:
    """The CRDs applied and the mapped namespaces created; the namespaces deleted after."""
    apply_crds(cp)
    for namespace in namespaces.values():
        create_namespace(cp, namespace, None)
    try:
        yield cp
    finally:
        for namespace in namespaces.values():
            cp.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def as_sent(obj: dict[str, Any], namespaces: Mapping[str, str]) -> dict[str, Any]:
    """A case's object as a user would send it: no server-set fields, namespace mapped."""
    sent = copy.deepcopy(obj)
    meta = sent.get("metadata") or {}
    for key in ("uid", "generation"):  # set by the server, not by users
        meta.pop(key, None)
    if meta.get("namespace") in namespaces:
        meta["namespace"] = namespaces[meta["namespace"]]
    return sent
