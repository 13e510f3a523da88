"""Resolve a `program.configMap` source to the bytes of its BPF object.

The object lives in `binaryData[key]` (base64, as the API returns it and as
`kubectl get configmap -o yaml` prints it) of a ConfigMap in the policy's own namespace.
When the policy gives `sha256`, the decoded bytes must hash to it: an object changed behind
the policy's back is refused rather than loaded.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from lwt_policy.errors import ProgramSourceError, join_path
from lwt_policy.limits import program_size_problem
from lwt_policy.model import ConfigMapSource, HookSpec

ConfigMaps = Iterable[Mapping[str, Any]] | Mapping[tuple[str, str], Mapping[str, Any]]


def _index(configmaps: ConfigMaps) -> Mapping[tuple[str, str], Mapping[str, Any]]:
    if isinstance(configmaps, Mapping):
        return configmaps
    index: dict[tuple[str, str], Mapping[str, Any]] = {}
    for cm in configmaps:
        meta = cm.get("metadata") or {}
        index[(meta.get("namespace") or "default", meta.get("name", ""))] = cm
    return index


def index_configmaps(configmaps: Iterable[Mapping[str, Any]]
                     ) -> dict[tuple[str, str], Mapping[str, Any]]:
    """ConfigMap dicts keyed by (namespace, name); build once, resolve many hooks."""
    return dict(_index(list(configmaps)))


def resolve_configmap_program(hook: HookSpec, configmaps: ConfigMaps) -> bytes:
    """The object bytes of `hook`'s configMap program.

    `configmaps`: ConfigMap object dicts, or `index_configmaps()` of them.
    Raises ProgramSourceError whose `.field` is the policy field to fix.
    """
    source = hook.program
    if not isinstance(source, ConfigMapSource):
        raise TypeError(f"{hook.field_path}.program is a builtin, not a configMap source")
    base = join_path(hook.field_path, "program")
    cm = _index(configmaps).get((source.namespace, source.name))
    if cm is None:
        raise ProgramSourceError(
            join_path(base, "configMap", "name"),
            f"ConfigMap {source.namespace}/{source.name} does not exist: create it with "
            f"`kubectl -n {source.namespace} create configmap {source.name} "
            f"--from-file={source.key}=PROGRAM.o`",
        )
    binary = cm.get("binaryData") or {}
    if source.key not in binary:
        if source.key in (cm.get("data") or {}):
            hint = ("it is under data (text); a BPF object must be under binaryData "
                    "(`kubectl create configmap --from-file` puts binary files there)")
        else:
            keys = ", ".join(sorted(binary)) or "none"
            hint = f"binaryData keys present: {keys}"
        raise ProgramSourceError(
            join_path(base, "configMap", "key"),
            f"ConfigMap {source.namespace}/{source.name} has no binaryData key "
            f"{source.key!r}: {hint}",
        )
    too_large = program_size_problem(binary[source.key])
    if too_large is not None:
        raise ProgramSourceError(
            join_path(base, "configMap", "key"),
            f"binaryData[{source.key!r}] of ConfigMap {source.namespace}/{source.name}: "
            f"{too_large}")
    try:
        blob = base64.b64decode(binary[source.key], validate=True)
    except (binascii.Error, TypeError, ValueError) as err:
        raise ProgramSourceError(
            join_path(base, "configMap", "key"),
            f"binaryData[{source.key!r}] of ConfigMap {source.namespace}/{source.name} is "
            f"not valid base64 ({err})",
        ) from None
    if source.sha256 is not None:
        digest = hashlib.sha256(blob).hexdigest()
        if digest != source.sha256:
            raise ProgramSourceError(
                join_path(base, "sha256"),
                f"binaryData[{source.key!r}] of ConfigMap {source.namespace}/{source.name} "
                f"has sha256 {digest}, the policy expects {source.sha256}: update the "
                "policy's sha256 or restore the object",
            )
    return blob
