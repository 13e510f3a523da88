"""Issue 12 item 3: a refused object is remembered by (policy, hook, code digest), so a parse
bomb or a forbidden program is parsed once, not on every reconcile pass; failures of the
node are retried. Real ProgramStore on the test bpffs."""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from lwt_agent.agent.errors import ProgramError
from lwt_agent.agent.refusals import RefusalMemo
from lwt_agent.agent.sources import ProgramRequest
from lwt_agent.agent.store import ProgramStore
from lwt_agent.bpf import MalformedObjectError
from lwt_policy.model import PolicyRef

from tests.conftest import BPF_BUILD
from tests.loader.elfbuild import overlap_bomb

pytestmark = pytest.mark.kernel


def _request(blob: bytes, section: str, name: str = "p") -> ProgramRequest:
    return ProgramRequest(PolicyRef("shop", name), "out", blob, section,
                          f"ConfigMap shop/{name} key x.o", "spec.hooks.out.program")


def test_refused_objects_are_not_parsed_again(bpffs: Path) -> None:
    store = ProgramStore(bpffs / f"refusals-{uuid.uuid4().hex[:8]}")
    base = (BPF_BUILD / "testobj" / "btf_maps.o").read_bytes()
    attacks = (BPF_BUILD / "testobj" / "tenant_attacks.o").read_bytes()
    for request, reason in ((_request(overlap_bomb(base), "lwt_out_btf"), "MAX_SECTIONS"),
                            (_request(attacks, "lwt_out_snoop", "q"), "get_current_task")):
        with pytest.raises(ProgramError, match=reason) as first:
            store.ensure(request)
        hits = store.refusals.hits
        with pytest.raises(ProgramError) as again:
            store.ensure(request)
        assert again.value is first.value  # the remembered refusal, no parse this time
        assert store.refusals.hits == hits + 1
    assert len(store.refusals) == 2
    assert store.loads == 0


def test_node_failures_are_retried(tmp_path: Path) -> None:
    store = ProgramStore(tmp_path / "not-bpffs")  # pins cannot work here
    good = (BPF_BUILD / "testobj" / "tenant_globals.o").read_bytes()
    for _ in range(2):
        with pytest.raises(ProgramError, match="not on a bpffs"):
            store.ensure(_request(good, "lwt_out_globals"))
    assert len(store.refusals) == 0 and store.refusals.hits == 0


def test_memo_is_bounded() -> None:
    memo = RefusalMemo(max_entries=2)
    for key in "abc":
        error = ProgramError("f", key)
        error.__cause__ = OSError()  # not a refusal of the object: never remembered
        memo.remember(key, error)
    assert len(memo) == 0
    for key in "abc":
        error = ProgramError("f", key)
        error.__cause__ = MalformedObjectError(key)
        memo.remember(key, error)
    assert len(memo) == 2 and memo.get("a") is None and memo.get("c") is not None
