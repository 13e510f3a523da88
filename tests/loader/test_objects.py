"""What the loader reads from objects and what it creates in the kernel for them."""
from __future__ import annotations

import struct
from pathlib import Path

import pytest
from lwt_agent.bpf import (
    Hook,
    KernelError,
    LoaderError,
    ObjectSpec,
    UnsatisfiedRelocationError,
    UnsupportedFeatureError,
    VerifierError,
    loader,
)
from lwt_agent.bpf.maps import kernel_name

pytestmark = pytest.mark.kernel


def _u32(value: int) -> bytes:
    return struct.pack("<I", value)


def test_btf_map_definitions(testobj: Path) -> None:
    spec = ObjectSpec.from_file(testobj / "btf_maps.o")
    got = {name: (m.type_name, m.key_size, m.value_size, m.max_entries, m.flags, m.pinning)
           for name, m in spec.maps.items()}
    assert got == {
        "pkt_count": ("percpu_array", 4, 8, 4, 0, 0),
        "flow_bytes": ("hash", 8, 8, 1024, 1, 0),  # key: struct flow_key; BPF_F_NO_PREALLOC
        "shared_cfg": ("array", 4, 4, 2, 0, 1),  # key_size/value_size; LIBBPF_PIN_BY_NAME
    }
    assert spec.license == "GPL" and spec.has_btf


def test_legacy_maps_read_like_their_btf_twin(testobj: Path) -> None:
    legacy = ObjectSpec.from_file(testobj / "legacy_maps.o").maps
    twin = ObjectSpec.from_file(testobj / "legacy_twin.o").maps

    def shape(maps: dict) -> dict:  # type: ignore[type-arg]
        return {n: (m.type, m.key_size, m.value_size, m.max_entries, m.flags)
                for n, m in maps.items()}

    assert shape(legacy) == shape(twin)
    assert {m.kind for m in legacy.values()} == {"legacy"}


def test_maps_work_after_load(testobj: Path) -> None:
    with ObjectSpec.from_file(testobj / "btf_maps.o").load("lwt_out_btf", Hook.OUT) as prog:
        flows = prog.maps["flow_bytes"]
        assert flows.id > 0 and flows.type_name == "hash"
        key = _u32(0xABCD) + _u32(8)
        assert flows.lookup(key) is None
        flows.update(key, struct.pack("<Q", 1500))
        assert flows.lookup(key) == struct.pack("<Q", 1500)
        assert list(flows.keys()) == [key]
        assert flows.delete(key) and not flows.delete(key)
        counts = prog.maps["pkt_count"]
        counts.update(_u32(1), struct.pack("<Q", 5))  # one value, copied to every CPU
        per_cpu = counts.lookup_percpu(_u32(1))
        assert per_cpu is not None and set(per_cpu) == {struct.pack("<Q", 5)}
        with pytest.raises(ValueError, match="key is 3 bytes"):
            counts.lookup_percpu(b"abc")
        with pytest.raises(ValueError, match="use lookup_percpu"):
            counts.lookup(_u32(1))


def test_global_data_is_initialised_and_rodata_frozen(testobj: Path) -> None:
    spec = ObjectSpec.from_file(testobj / "global_data.o")
    assert spec.data_sections == [".data", ".rodata", ".rodata.cfg", ".bss", ".rodata.cst8"]
    with spec.load("lwt_xmit_gd", Hook.XMIT) as prog:
        # clang lists the static `weights` (placed in .rodata.cst8) in the .rodata DATASEC,
        # so the kernel refuses this object's BTF (libbpf's too); the load goes on without
        assert not prog.btf
        by_section = {spec.maps[name].section: m for name, m in prog.maps.items()}
        assert set(by_section) == set(spec.data_sections)
        zero = _u32(0)
        assert by_section[".data"].lookup(zero) == struct.pack("<Q", 7)
        assert by_section[".bss"].lookup(zero) == bytes(4)
        assert by_section[".rodata"].lookup(zero) == _u32(9000)
        assert by_section[".rodata.cfg"].lookup(zero) == _u32(0x1234)
        assert by_section[".rodata.cst8"].lookup(zero) == bytes([1, 2, 3, 5, 8, 13, 21, 34])
        by_section[".data"].update(zero, struct.pack("<Q", 8))  # writable
        for ro in (".rodata", ".rodata.cfg", ".rodata.cst8"):
            assert by_section[ro].flags & (1 << 7), "BPF_F_RDONLY_PROG"
            with pytest.raises(KernelError) as info:
                by_section[ro].update(zero, bytes(by_section[ro].value_size))
            assert info.value.errno == 1  # EPERM: frozen


def test_only_reachable_subprograms_in_libbpf_order(testobj: Path) -> None:
    spec = ObjectSpec.from_file(testobj / "subprogs.o")
    funcs = {f.name: f.insn_count for f in spec.text_funcs}
    assert {"orphan", "orphan_helper", "mid", "leaf_a", "leaf_b", "leaf_c",
            "loop_step", "global_len"} <= set(funcs)
    # prog_a calls mid (which calls leaf_b -> leaf_a, then leaf_a), then leaf_a, global_len
    a = spec.link("lwt_in_sub")
    assert a.subprograms == ["mid", "leaf_b", "leaf_a", "global_len"]
    # prog_b calls leaf_c (-> leaf_b -> leaf_a), then mid, then passes loop_step to bpf_loop
    b = spec.link("lwt_out_sub")
    assert b.subprograms == ["leaf_c", "leaf_b", "leaf_a", "mid", "loop_step"]
    callback = 0x18 | (4 << 12)  # ld_imm64 with src_reg BPF_PSEUDO_FUNC
    assert any(int.from_bytes(b.insns[i:i + 2], "little") & 0xF0FF == callback
               for i in range(0, len(b.insns), 8))
    for linked in (a, b):
        assert len(linked.insns) // 8 == linked.main.insn_count + sum(
            funcs[n] for n in linked.subprograms)
    with spec.load("lwt_in_sub", Hook.IN) as prog:
        assert prog.subprograms == a.subprograms
    with spec.load("lwt_out_sub", Hook.OUT) as prog:  # callbacks need BTF func_info
        assert prog.btf and prog.subprograms == b.subprograms


def test_kernel_names_are_sanitised_and_truncated(testobj: Path) -> None:
    assert kernel_name("a-b/c.d") == "a_b_c.d"
    assert kernel_name("x" * 40) == "x" * 15
    spec = ObjectSpec.from_file(testobj / "long_names.o")
    assert spec.sections() == ["lwt_xmit/with/slashes"]
    with spec.load("lwt_xmit/with/slashes", Hook.XMIT) as prog:
        assert prog.name == "a_program_with_"
        m = prog.maps["a_map_with_a_rather_long_name"]
        assert m.id > 0


@pytest.mark.parametrize(("obj", "section", "feature", "where"), [
    ("map_in_map.o", "lwt_in_mim", "map-in-map", ".maps"),
    ("ksym.o", "lwt_in_ksym", "ksym/extern symbol", "lwt_in_ksym"),
    ("kfunc.o", "lwt_in_kfunc", "kfunc", "lwt_in_kfunc"),
])
def test_unsupported_features_are_refused(obj: str, section: str, feature: str, where: str,
                                          testobj: Path) -> None:
    spec = ObjectSpec.from_file(testobj / obj)  # parsing (and inspect) still works
    assert (feature, where) in {(u["feature"], u["section"])
                                for u in spec.describe()["unsupported"]}  # type: ignore[union-attr]
    with pytest.raises(UnsupportedFeatureError) as info:
        spec.load(section, Hook.IN)
    assert info.value.feature == feature and info.value.section == where
    assert feature in str(info.value) and where in str(info.value)


def test_core_relocation_to_a_type_the_kernel_lacks_is_refused(testobj: Path) -> None:
    """struct pkt_view is not in vmlinux: the unguarded read is poisoned and the verifier
    reaches it; the error names the relocation instead of `unknown#195896080`."""
    with pytest.raises(UnsatisfiedRelocationError) as info:
        ObjectSpec.from_file(testobj / "core_reloc.o").load("lwt_out_core", Hook.OUT)
    assert "struct pkt_view.pkt_type" in str(info.value)
    assert "'lwt_out_core'" in str(info.value)


def test_several_programs_in_one_section(testobj: Path) -> None:
    spec = ObjectSpec.from_file(testobj / "multi_prog.o")
    assert [(p.section, p.name) for p in spec.programs] == [
        ("lwt_multi", "multi_first"), ("lwt_multi", "multi_second")]
    with pytest.raises(LoaderError, match=r"several programs.*multi_first, multi_second"):
        spec.load("lwt_multi", Hook.OUT)
    with spec.load("multi_second", Hook.OUT) as prog:
        assert prog.name == "multi_second" and prog.section == "lwt_multi"


def test_verifier_log_is_bounded_and_keeps_the_reason(testobj: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "VERIFIER_LOG_KEEP", 200)
    with pytest.raises(VerifierError) as info:
        ObjectSpec.from_file(testobj / "out_write.o").load("lwt_write", Hook.OUT)
    log = info.value.log
    assert log.startswith("[...]\n") and len(log) <= 200 + len("[...]\n")
    assert info.value.log_truncated
    assert "cannot use helper bpf_skb_store_bytes" in info.value.excerpt(5)


def test_verifier_log_shows_source_lines(testobj: Path) -> None:
    """BTF line_info goes to the kernel with the program, so the log quotes the C source."""
    with pytest.raises(VerifierError) as info:
        ObjectSpec.from_file(testobj / "out_write.o").load("lwt_write", Hook.OUT)
    assert "bpf_skb_store_bytes(skb, 1, &tos, sizeof(tos), 0); @ out_write.c:" in info.value.log
