"""The one place that defines the label written on a route's bpf encap.

The kernel keeps only a name per hook (LWT_BPF_PROG_NAME, at most 255 bytes) and dumps
only that name back; it also compares encaps by name alone: an IPv4 replace whose label
equals the one already on the route keeps the OLD program
(docs/kernel-facts.md#replacing-a-route). So a label must change whenever the program
changes, and must never be per route (the kernel shares equal encaps; per-route labels
make route adds quadratic).

Format (one label per loaded program, per hook, per headroom)::

    lwt/<owner>/<hook>/<tag8>.<id>[+h<headroom>]

- ``owner``: who manages the attachment (``<namespace>/<policy>`` for the agent, ``cli``
  for the CLI). Characters ``[A-Za-z0-9._:@/-]``. An owner token longer than
  ``MAX_OWNER_TOKEN`` bytes is shortened to ``<first 96 chars>~<sha256(owner)[:16]>``:
  still readable, still unique, and always computed by :func:`owner_token`, so
  comparisons never need the original.
- ``hook``: ``in``, ``out`` or ``xmit`` — the hook the program was loaded for.
- ``tag8``: the first 8 hex digits of the program's kernel tag (its code hash).
- ``id``: the kernel program id. Ids are unique among live programs and a route holds a
  reference on its program, so the id in a label on a live route always names exactly
  the program on that route: ``status`` and adoption find the program (and its maps)
  by id, and a reload (new id) always gets a new label — even when the code, hence the
  tag, is unchanged and only the configuration differs.
- ``+h<headroom>``: only on ``xmit`` with headroom > 0. The kernel never dumps headroom
  back and compares encaps by name only, so a headroom change must change the label.

Anything not matching this grammar is a foreign label (put there by `ip route ... encap
bpf obj` or another tool) and is never touched without ``--force``.
"""
from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from typing import Protocol

from .errors import HeadroomError, LabelError
from .model import HOOK_ORDER

PREFIX = "lwt/"
HOOKS: tuple[str, ...] = HOOK_ORDER
MAX_LABEL = 255
MAX_HEADROOM = 256
MAX_OWNER_TOKEN = 128
_HASHED_KEEP = 96
_OWNER_CHARS = re.compile(r"^[A-Za-z0-9._:@/~-]+$")
_LABEL = re.compile(
    r"^lwt/(?P<owner>[A-Za-z0-9._:@/~-]+)/(?P<hook>" + "|".join(HOOKS) + r")/"
    r"(?P<tag8>[0-9a-f]{8})\.(?P<id>[0-9]{1,10})(?:\+h(?P<headroom>[0-9]{1,3}))?$"
)


@dataclass(frozen=True)
class Label:
    """A parsed label of ours."""

    owner: str  # the owner token (possibly the hashed form)
    hook: str
    tag8: str
    prog_id: int
    headroom: int = 0

    def __str__(self) -> str:
        text = f"{PREFIX}{self.owner}/{self.hook}/{self.tag8}.{self.prog_id}"
        return f"{text}+h{self.headroom}" if self.headroom else text


def owner_token(owner: str) -> str:
    """The owner as it appears inside labels (hashed when long)."""
    if not owner or not _OWNER_CHARS.match(owner) or owner.startswith("/") or "//" in owner:
        raise LabelError(
            f"owner {owner!r} is not usable in a route label: use [A-Za-z0-9._:@/-], "
            "no empty path parts"
        )
    if len(owner) <= MAX_OWNER_TOKEN:
        return owner
    digest = hashlib.sha256(owner.encode()).hexdigest()[:16]
    return f"{owner[:_HASHED_KEEP].rstrip('/')}~{digest}"


class PolicyName(Protocol):
    """What names a policy (lwt_policy.model.PolicyRef; this layer imports no policies)."""

    @property
    def namespace(self) -> str: ...
    @property
    def name(self) -> str: ...


# A cluster-scoped policy (namespace "") owns routes as ``_cluster/<name>``: no namespace can
# be named so (DNS labels have no '_'). Equal to lwt_policy.model.CLUSTER_SCOPE (a test holds
# them together; this layer imports no policies).
CLUSTER_SCOPE = "_cluster"


def policy_owner(ref: PolicyName) -> str:
    """The owner written into route labels for a policy (its ``namespace/name`` token)."""
    return owner_token(f"{ref.namespace or CLUSTER_SCOPE}/{ref.name}")


def is_policy_owner(owner: str) -> bool:
    """True for owner tokens the agent writes (``ns/name`` or its hashed form); the CLI
    writes ``cli`` and other tools other words, which the agent never garbage-collects."""
    return owner.count("/") == 1 or "~" in owner


def program_label(owner: str, hook: str, tag: str, prog_id: int) -> str:
    """The label for one loaded program (``tag``: the kernel tag, hex) on one hook."""
    if hook not in HOOKS:
        raise LabelError(f"hook {hook!r} is not one of {', '.join(HOOKS)}")
    tag8 = tag.lower()[:8]
    if not re.fullmatch(r"[0-9a-f]{8}", tag8):
        raise LabelError(f"program tag {tag!r} is not hex; pass the kernel tag (16 hex digits)")
    if prog_id <= 0:
        raise LabelError(f"program id {prog_id} is not a kernel program id")
    label = str(Label(owner_token(owner), hook, tag8, prog_id))
    assert len(label.encode()) <= MAX_LABEL, label  # guaranteed by MAX_OWNER_TOKEN
    return label


@functools.lru_cache(maxsize=1024)
def wire_label(label: str, hook: str, headroom: int) -> str:
    """The label actually written on the route: ``label`` plus the xmit headroom."""
    check_headroom(hook, headroom)
    parsed = parse(label)
    if parsed is None:
        raise LabelError(f"{label!r} is not a label of ours; build it with program_label()")
    if parsed.hook != hook:
        raise LabelError(f"label {label!r} was made for hook {parsed.hook}, not {hook}")
    return str(Label(parsed.owner, parsed.hook, parsed.tag8, parsed.prog_id, headroom))


def check_headroom(hook: str, headroom: int) -> None:
    if headroom < 0 or headroom > MAX_HEADROOM:
        raise HeadroomError(f"headroom {headroom} is outside 0..{MAX_HEADROOM} (kernel limit)")
    if headroom and hook != "xmit":
        raise HeadroomError(f"headroom is only meaningful on the xmit hook, not {hook}")


@functools.lru_cache(maxsize=4096)  # a few labels, read back from thousands of routes
def parse(label: str) -> Label | None:
    """Parse a label read back from a route; None when it is not ours."""
    match = _LABEL.match(label)
    if match is None:
        return None
    headroom = int(match["headroom"] or 0)
    if headroom > MAX_HEADROOM or (headroom and match["hook"] != "xmit"):
        return None
    return Label(match["owner"], match["hook"], match["tag8"], int(match["id"]), headroom)
