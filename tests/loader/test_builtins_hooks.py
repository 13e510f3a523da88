"""Every catalogue built-in loads on every hook it declares and is refused on the others."""
from __future__ import annotations

import pytest
from lwt_agent.bpf import Hook, KernelError, ObjectSpec
from lwt_policy.catalogue import CATALOGUE, builtin_object_dir

pytestmark = pytest.mark.kernel

CASES = [(name, hook.value) for name in sorted(CATALOGUE) for hook in Hook]


@pytest.mark.parametrize(("name", "hook"), CASES)
def test_builtin_on_hook(name: str, hook: str, builtin_tags: dict[str, str]) -> None:
    builtin = CATALOGUE[name]
    spec = ObjectSpec.from_file(builtin_object_dir() / builtin.object)
    if hook in builtin.hooks:
        with spec.load(builtin.section, Hook(hook)) as prog:
            assert prog.id > 0 and len(prog.tag) == 16
            assert builtin_tags.setdefault(name, prog.tag) == prog.tag, "same on every hook"
            assert prog.hook is Hook(hook)
            if builtin.function:
                assert prog.name == builtin.function[:15]
            for expected in builtin.maps:
                got = prog.maps[expected.name]
                assert (got.type, got.key_size, got.value_size, got.max_entries) == (
                    expected.type_id, expected.key_size, expected.value_size,
                    expected.max_entries), expected.name
    else:
        with pytest.raises(KernelError) as info:
            spec.load(builtin.section, Hook(hook))
        assert getattr(info.value, "log", None), "a refusal must carry the verifier log"
