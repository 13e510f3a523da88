"""Every built-in is accepted by the kernel verifier on each hook it declares and refused on
the hooks it does not declare (today only encap, which uses bpf_lwt_push_encap: LWT_OUT
programs may not call it)."""
from __future__ import annotations

import itertools

import pytest
from lwt_agent.bpf import VerifierError
from lwt_policy.catalogue import CATALOGUE, HOOKS

from .netns import Node

CASES = [(name, hook) for name, program in CATALOGUE.items() for hook in sorted(HOOKS)]
_route_numbers = itertools.count(10)


@pytest.mark.kernel
@pytest.mark.parametrize(("builtin", "hook"), CASES, ids=[f"{b}-{h}" for b, h in CASES])
def test_verifier_accepts_declared_hooks_only(node: Node, attacher, builtin: str,
                                              hook: str) -> None:
    declared = hook in CATALOGUE[builtin].hooks
    dst = f"10.201.9.{next(_route_numbers)}/32"
    try:
        proc = attacher.route_add(node, node.host, dst, node.POD_DEV, {hook: builtin},
                                  check=False)
        error = "" if proc is None or proc.returncode == 0 else proc.stderr
    except VerifierError as exc:  # the loader's way of refusing
        error = f"{exc}\n{exc.log}"
    if declared:
        assert not error, f"{builtin} refused on {hook}: {error[-2000:]}"
        routes = node.ip(node.host, "route", "show", dst).stdout
        assert "encap bpf" in routes and hook in routes
    else:
        assert error, f"{builtin} was accepted on undeclared hook {hook}"
        # the verifier names the helper LWT_OUT may not call
        assert "bpf_lwt_push_encap" in error, error[-2000:]
        assert node.ip(node.host, "route", "show", dst).stdout == ""
