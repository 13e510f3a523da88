"""ObjectSpec: everything a BPF ELF object declares (programs, maps, global data, license,
unsupported features). Parsing only: loading a program is loader.py's job."""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import limits, syscall
from .btf import (
    KIND_ARRAY,
    KIND_PTR,
    KIND_STRUCT,
    Btf,
    BtfExt,
    ext_info,
)
from .btf_index import BtfIndex
from .core import CoreRelo, describe_spec, parse_core_relos, parse_spec
from .elf import (
    PARSE_ERRORS,
    R_BPF_64_32,
    R_BPF_64_64,
    R_BPF_NONE,
    ElfObject,
    Relocation,
    Section,
    Symbol,
)
from .errors import CoreRelocationError, LoaderError, MalformedObjectError, UnsupportedFeatureError
from .hooks import Hook
from .maps import (
    BPF_F_RDONLY_PROG,
    BPF_MAP_TYPE_ARRAY,
    MAP_IN_MAP_TYPES,
    PIN_BY_NAME,
    MapSpec,
    kernel_name,
)
from .pins import is_data_section
from .programs import (
    BPF_CALL,
    BPF_LD_IMM64,
    INSN_SIZE,
    LinkedProgram,
    ProgramSpec,
    ProgReloc,
    RelocKind,
    link,
)

if TYPE_CHECKING:
    from .loader import LoadedProgram

LEGACY_MAPS_SECTION = "maps"
BTF_MAPS_SECTION = ".maps"


@dataclass(frozen=True)
class UnsupportedFeature:
    feature: str  # "map-in-map", "kfunc", "ksym/extern symbol"
    section: str
    detail: str

    def error(self) -> UnsupportedFeatureError:
        return UnsupportedFeatureError(self.feature, self.section, self.detail)


def internal_map_name(object_name: str, section: str) -> str:
    """libbpf's name for a global-data map: "<object prefix><section>" within 15 chars,
    no prefix for custom sections like .rodata.cfg."""
    sfx_len = min(max(7, len(section)), syscall.BPF_OBJ_NAME_LEN - 1)
    pfx_len = 0 if "." in section[1:] else min(syscall.BPF_OBJ_NAME_LEN - sfx_len - 1,
                                               len(object_name))
    return kernel_name(object_name[:pfx_len] + section[:sfx_len])


class ObjectSpec:
    """A parsed BPF object. Parsing never touches the kernel."""

    def __init__(self, data: bytes, source: str = "<bytes>") -> None:
        self.source = source
        self.object_name = Path(source).name.split(".")[0] or "obj"
        try:
            self._parse(data)
        except LoaderError:
            raise
        except PARSE_ERRORS as exc:
            raise MalformedObjectError(
                f"{source}: malformed object ({type(exc).__name__}: {exc})") from None

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> ObjectSpec:
        path = os.fspath(path)
        try:
            size = os.path.getsize(path)
            limits.check_size(size, path)
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise MalformedObjectError(f"{path}: cannot read: {exc.strerror}") from None
        return cls(data, path)

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "<bytes>") -> ObjectSpec:
        return cls(data, source)

    # ---------------------------------------------------------------- parsing

    def _parse(self, data: bytes) -> None:
        self.elf = elf = ElfObject(data, self.source)
        lic = elf.section("license")
        self.license = (bytes(lic.data).split(b"\0", 1)[0].decode(errors="replace")
                        if lic else "")
        self.btf: Btf | None = None
        self.btf_ext: BtfExt | None = None
        self.btf_types: BtfIndex | None = None  # the same .BTF, as CO-RE reads it
        self.core_relos: dict[str, list[CoreRelo]] = {}  # by section
        self.unsupported: list[UnsupportedFeature] = []
        btf_sec = elf.section(".BTF")
        if btf_sec is not None:
            btf_bytes = bytes(btf_sec.data)  # the one copy both BTF readers share
            self.btf = Btf(btf_bytes)
            self.btf_types = BtfIndex(btf_bytes, label=self.source)
            ext = elf.section(".BTF.ext")
            if ext is not None:
                ext_bytes = bytes(ext.data)
                self.btf_ext = ext_info(ext_bytes, self.btf)
                self.core_relos = parse_core_relos(ext_bytes, self.btf.string)
        self.maps: dict[str, MapSpec] = {}
        self._map_by_location: dict[tuple[int, int], str] = {}  # (shndx, offset) -> name
        self._data_map_by_shndx: dict[int, str] = {}
        self._parse_legacy_maps()
        self._parse_btf_maps()
        self._parse_data_sections()
        self.programs: list[ProgramSpec] = []
        self.text_funcs: list[ProgramSpec] = []
        self._parse_programs()

    def _fail(self, problem: str) -> MalformedObjectError:
        return MalformedObjectError(f"{self.source}: {problem}")

    def _symbols_in(self, sec: Section, types: tuple[str, ...]) -> list[Symbol]:
        return sorted((s for s in self.elf.symbols if s.shndx == sec.index and s.name
                       and s.type in types), key=lambda s: s.value)

    def _add_map(self, spec: MapSpec, shndx: int) -> None:
        if spec.name in self.maps:
            raise self._fail(f"map {spec.name!r} is defined twice")
        self.maps[spec.name] = spec
        self._map_by_location[(shndx, spec.offset)] = spec.name

    def _parse_legacy_maps(self) -> None:
        sec = self.elf.section(LEGACY_MAPS_SECTION)
        if sec is None or sec.size == 0:
            return
        syms = self._symbols_in(sec, ("STT_OBJECT", "STT_NOTYPE"))
        if not syms:
            raise self._fail("section 'maps' has no map symbols")
        def_size = sec.size // len(syms)
        if def_size < 20 or def_size % 4:
            raise self._fail(f"section 'maps': {len(syms)} maps in {sec.size} bytes gives "
                             f"{def_size}-byte definitions; struct bpf_map_def needs 20")
        for sym in syms:
            if sym.value + def_size > sec.size:
                raise self._fail(f"map {sym.name!r} at offset {sym.value} runs past "
                                 f"section 'maps' ({sec.size} bytes)")
            fields = struct.unpack_from(f"<{def_size // 4}I", sec.data, sym.value)
            # iproute2's struct bpf_elf_map adds id, pinning, inner_id, inner_idx
            pinning = PIN_BY_NAME if len(fields) > 6 and fields[6] else 0
            spec = MapSpec(sym.name, fields[0], fields[1], fields[2], fields[3], fields[4],
                           pinning, "legacy", LEGACY_MAPS_SECTION, sym.value)
            if spec.type in MAP_IN_MAP_TYPES or (len(fields) > 7 and fields[7]):
                spec.unsupported.append("map-in-map")
            self._add_map(spec, sec.index)

    def _parse_btf_maps(self) -> None:
        sec = self.elf.section(BTF_MAPS_SECTION)
        if sec is None:
            return
        if self.btf is None:
            raise self._fail("section '.maps' needs .BTF to describe its maps, and there is "
                             "none (build with clang -g)")
        btf = self.btf
        datasec = btf.datasec(BTF_MAPS_SECTION)
        if datasec is None:
            raise self._fail("corrupt BTF: no DATASEC for '.maps'")
        variables = {}
        for type_id, _off, _size in datasec.secinfos:
            var = btf.type(type_id)
            variables[var.name] = var
        for sym in self._symbols_in(sec, ("STT_OBJECT", "STT_NOTYPE")):
            var = variables.get(sym.name)
            if var is None:
                raise self._fail(f"corrupt BTF: map {sym.name!r} in '.maps' has no BTF "
                                 "variable")
            self._add_map(self._btf_map(sym.name, var.size_or_type, sym.value), sec.index)

    def _btf_map(self, name: str, type_id: int, offset: int) -> MapSpec:
        assert self.btf is not None
        btf = self.btf
        struct_t = btf.skip_modifiers(type_id)
        if struct_t.kind != KIND_STRUCT:
            raise MalformedObjectError(f"corrupt BTF: map {name!r} is not a struct")
        values: dict[str, int] = {}
        spec = MapSpec(name, 0, 0, 0, 0, offset=offset)
        for member, m_type, _bits in struct_t.members:
            ptr = btf.skip_modifiers(m_type)
            if ptr.kind != KIND_PTR:
                if member in ("values",):
                    spec.unsupported.append("map-in-map")
                    continue
                raise MalformedObjectError(f"corrupt BTF: map {name!r} field {member!r} is "
                                           "not declared with __uint/__type")
            target = btf.skip_modifiers(ptr.size_or_type)
            if member in ("key", "value"):
                values[f"{member}_size"] = btf.size_of(ptr.size_or_type)
            elif member == "values":
                spec.unsupported.append("map-in-map")
            elif target.kind == KIND_ARRAY and target.array is not None:
                values[member] = target.array[2]  # __uint(name, N) is int (*name)[N]
            else:
                raise MalformedObjectError(f"corrupt BTF: map {name!r} field {member!r} has "
                                           "an unexpected type")
        for key in ("type", "max_entries"):
            if key not in values:
                raise self._fail(f"map {name!r} in '.maps' does not set {key}")
        for key in ("key_size", "value_size"):
            values.setdefault(key, 0)
        spec.type = values["type"]
        spec.key_size = values["key_size"]
        spec.value_size = values["value_size"]
        spec.max_entries = values["max_entries"]
        spec.flags = values.get("map_flags", 0)
        spec.pinning = values.get("pinning", 0)
        if spec.pinning not in (0, PIN_BY_NAME):
            raise self._fail(f"map {name!r}: pinning {spec.pinning} is unknown "
                             "(use LIBBPF_PIN_BY_NAME or none)")
        if spec.type in MAP_IN_MAP_TYPES and "map-in-map" not in spec.unsupported:
            spec.unsupported.append("map-in-map")
        return spec

    def _parse_data_sections(self) -> None:
        self.data_sections: list[str] = []
        for sec in self.elf.sections:
            if not is_data_section(sec.name) or sec.size == 0 or sec.is_exec:
                continue
            readonly = sec.name.startswith(".rodata")
            spec = MapSpec(
                internal_map_name(self.object_name, sec.name), BPF_MAP_TYPE_ARRAY,
                4, sec.size, 1, BPF_F_RDONLY_PROG if readonly else 0,
                kind="data", section=sec.name,
                initial=None if sec.is_nobits else bytes(sec.data), freeze=readonly)
            self._add_map(spec, sec.index)
            self._data_map_by_shndx[sec.index] = spec.name
            self.data_sections.append(sec.name)

    def _parse_programs(self) -> None:
        text = self.elf.section(".text")
        for sec in self.elf.sections:
            if not sec.is_exec or sec.size == 0:
                continue
            if sec.size % INSN_SIZE:
                raise self._fail(f"section {sec.name!r} is {sec.size} bytes, not a whole "
                                 "number of 8-byte instructions")
            funcs = self._symbols_in(sec, ("STT_FUNC",))
            specs: list[ProgramSpec] = []
            if not funcs:
                specs.append(ProgramSpec(sec.name, sec.name, 0, bytes(sec.data)))
            for sym in funcs:
                size = sym.size or sec.size - sym.value
                if sym.value % INSN_SIZE or size % INSN_SIZE or sym.value + size > sec.size:
                    raise self._fail(f"function {sym.name!r} (offset {sym.value}, size "
                                     f"{size}) does not fit section {sec.name!r} "
                                     f"({sec.size} bytes)")
                specs.append(ProgramSpec(sym.name, sec.name, sym.value // INSN_SIZE,
                                         bytes(sec.data[sym.value:sym.value + size])))
            for rel in self.elf.relocations.get(sec.index, []):
                self._attach_reloc(sec, specs, rel, text.index if text else -1)
            for core in self.core_relos.get(sec.name, []):
                self._attach_core_relo(sec, specs, core)
            if text is not None and sec.index == text.index:
                self.text_funcs.extend(specs)
            else:
                self.programs.extend(specs)

    def _attach_reloc(self, sec: Section, specs: list[ProgramSpec], rel: Relocation,
                      text_idx: int) -> None:
        if rel.type == R_BPF_NONE:
            return
        insn_idx = rel.offset // INSN_SIZE
        owner = next((p for p in specs
                      if p.sec_insn_off <= insn_idx < p.sec_insn_off + p.insn_count), None)
        if owner is None:
            raise self._fail(f"relocation at offset {rel.offset} of {sec.name!r} is outside "
                             "every function")
        code = sec.data[rel.offset]
        sym = rel.symbol
        where = f"{sec.name!r} instruction {insn_idx}"
        if rel.type == R_BPF_64_32:
            if code != BPF_CALL:
                raise self._fail(f"call relocation at {where} is not on a call instruction")
            if sym.is_undefined:
                kind, target = RelocKind.EXTERN, sym.name
                self.unsupported.append(UnsupportedFeature(
                    "kfunc", sec.name, f"call to kernel function {sym.name!r}"))
            elif sym.shndx != text_idx:
                raise self._fail(f"{where} calls into section "
                                 f"{self.elf.section_name(sym.shndx)!r}; sub-programs must "
                                 "be in .text")
            else:
                kind, target = RelocKind.CALL, ".text"
        elif rel.type == R_BPF_64_64:
            if code != BPF_LD_IMM64 or rel.offset + 2 * INSN_SIZE > sec.size:
                raise self._fail(f"64-bit relocation at {where} is not on a complete ld_imm64 "
                                 "instruction")
            kind, target = self._classify_ldimm64(sym, sec, where, text_idx)
        else:
            raise self._fail(f"relocation type {rel.type} at {where} is not supported "
                             "(expected R_BPF_64_64 or R_BPF_64_32)")
        local = insn_idx - owner.sec_insn_off
        owner.relocs[local] = ProgReloc(local, kind, target, sym.value)

    def _attach_core_relo(self, sec: Section, specs: list[ProgramSpec],
                          core: CoreRelo) -> None:
        insn_idx = core.insn_off // INSN_SIZE
        owner = next((p for p in specs
                      if p.sec_insn_off <= insn_idx < p.sec_insn_off + p.insn_count), None)
        if owner is None:
            raise self._fail(f"CO-RE relocation at byte {core.insn_off} of {sec.name!r} is "
                             "outside every function")
        owner.core_relos.append((insn_idx - owner.sec_insn_off, core))

    def _classify_ldimm64(self, sym: Symbol, sec: Section, where: str,
                          text_idx: int) -> tuple[RelocKind, str]:
        if sym.is_undefined:
            self.unsupported.append(UnsupportedFeature(
                "ksym/extern symbol", sec.name,
                f"{where} refers to extern {sym.name!r} (__ksym/__kconfig)"))
            return RelocKind.EXTERN, sym.name
        name = self._map_by_location.get((sym.shndx, sym.value))
        section = self.elf.section_name(sym.shndx)
        if section in (LEGACY_MAPS_SECTION, BTF_MAPS_SECTION):
            if name is None:
                raise self._fail(f"{where} refers to {sym.name or 'offset'} {sym.value} in "
                                 f"{section!r}, where no map starts")
            return RelocKind.MAP, name
        data_map = self._data_map_by_shndx.get(sym.shndx)
        if data_map is not None:
            return RelocKind.DATA, data_map
        if sym.shndx == text_idx:
            return RelocKind.SUBPROG_ADDR, ".text"
        if is_data_section(section):
            raise self._fail(f"{where} refers to empty data section {section!r}")
        raise self._fail(f"{where} refers to symbol {sym.name or '(section)'!r} in section "
                         f"{section!r}, which is neither a map, global data nor .text")

    # ---------------------------------------------------------------- queries

    @property
    def has_btf(self) -> bool:
        return self.btf is not None

    def sections(self) -> list[str]:
        seen: list[str] = []
        for p in self.programs:
            if p.section not in seen:
                seen.append(p.section)
        return seen

    def program(self, section: str) -> ProgramSpec:
        """The program in `section` (or, failing that, the function named `section`)."""
        in_section = [p for p in self.programs if p.section == section]
        if len(in_section) == 1:
            return in_section[0]
        if len(in_section) > 1:
            names = ", ".join(p.name for p in in_section)
            raise LoaderError(f"{self.source}: section {section!r} holds several programs "
                              f"({names}); name the function instead of the section")
        by_name = [p for p in self.programs if p.name == section]
        if by_name:
            return by_name[0]
        available = ", ".join(self.sections()) or "none"
        raise MalformedObjectError(f"{self.source}: no program section {section!r} "
                                   f"(program sections: {available})")

    def link(self, section: str) -> LinkedProgram:
        return link(self.program(section), self.text_funcs)

    def unsupported_for(self, linked: LinkedProgram) -> list[UnsupportedFeature]:
        """Unsupported features that loading this program would run into."""
        sections = {linked.main.section} | ({".text"} if linked.subprograms else set())
        found = [u for u in self.unsupported if u.section in sections]
        for _pos, rel in linked.relocs:
            spec = self.maps.get(rel.target)
            if spec is not None:
                found += [UnsupportedFeature(f, spec.section, f"map {spec.name!r}")
                          for f in spec.unsupported]
        return found

    def describe(self) -> dict[str, object]:
        """What `lwt-agent inspect` shows."""
        return {
            "object": self.source,
            "license": self.license or None,
            "btf": self.has_btf,
            "programs": [
                {"section": p.section, "function": p.name, "insns": p.insn_count,
                 "kernel_name": kernel_name(p.name),
                 "subprograms": self._reachable(p)}
                for p in self.programs
            ],
            "subprograms": [{"function": f.name, "insns": f.insn_count}
                            for f in self.text_funcs],
            "maps": [m.describe() for m in self.maps.values() if m.kind != "data"],
            "global_data": [
                {"section": m.section, "map": m.name, "size": m.value_size,
                 "read_only": m.freeze}
                for m in self.maps.values() if m.kind == "data"
            ],
            "core_relocations": self.describe_core_relos(),
            "unsupported": [
                {"feature": u.feature, "section": u.section, "detail": u.detail}
                for u in self._all_unsupported()
            ],
        }

    def describe_core_relos(self) -> list[dict[str, object]]:
        """Every CO-RE record: where, its kind, the local type and access string, and the
        field it names (`struct sk_buff.len (0:0 @ offset 0)`, as libbpf prints it)."""
        out: list[dict[str, object]] = []
        for prog in [*self.programs, *self.text_funcs]:
            for index, core in prog.core_relos:
                assert self.btf_types is not None
                try:
                    spec = describe_spec(parse_spec(self.btf_types, core), core.kind)
                    type_text = self.btf_types.describe(core.type_id)
                except (CoreRelocationError, MalformedObjectError) as exc:
                    spec, type_text = f"(invalid: {exc})", f"#{core.type_id}"
                out.append({"section": core.section, "function": prog.name,
                            "insn": index, "kind": str(core.kind), "type": type_text,
                            "access": core.access, "spec": spec})
        return out

    def _reachable(self, prog: ProgramSpec) -> list[str] | None:
        try:
            return link(prog, self.text_funcs).subprograms
        except MalformedObjectError:
            return None

    def _all_unsupported(self) -> list[UnsupportedFeature]:
        found = list(self.unsupported)
        for spec in self.maps.values():
            found += [UnsupportedFeature(f, spec.section, f"map {spec.name!r}")
                      for f in spec.unsupported]
        return found

    def load(self, section: str, hook: Hook | str,
             pin_dir: str | os.PathLike[str] | None = None) -> LoadedProgram:
        """Shorthand for `loader.load(self, ...)`: see there."""
        from .loader import load

        return load(self, section, hook, pin_dir)
