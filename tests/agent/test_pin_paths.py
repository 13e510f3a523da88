"""Issue 12: a policy's pins stay in its own directory under the agent's pin root, whatever
its name says (standalone names like `../../../../etc` once became pin paths). Defence in
depth behind name validation: the store itself refuses a directory resolving elsewhere."""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from lwt_agent.agent.errors import ProgramError
from lwt_agent.agent.sources import ProgramRequest
from lwt_agent.agent.store import ProgramStore
from lwt_policy.model import PolicyRef

from tests.conftest import BPF_BUILD

pytestmark = pytest.mark.kernel


@pytest.mark.parametrize("name", ["../../escape", "../outside", "/abs"])
def test_policy_directory_outside_the_pin_root_is_refused(bpffs: Path, name: str) -> None:
    root = bpffs / f"root-{uuid.uuid4().hex[:8]}" / "lwt"
    root.mkdir(parents=True)
    before = sorted(p.relative_to(bpffs) for p in bpffs.rglob("*"))
    blob = (BPF_BUILD / "testobj" / "btf_maps.o").read_bytes()
    request = ProgramRequest(PolicyRef("shop", name), "out", blob, "lwt_out_btf",
                             "ConfigMap shop/x key x.o", "spec.hooks.out.program")
    store = ProgramStore(root)
    with pytest.raises(ProgramError, match=r"one path component|outside the pin root"):
        store.ensure(request)
    assert sorted(p.relative_to(bpffs) for p in bpffs.rglob("*")) == before
    assert store.loads == 0
