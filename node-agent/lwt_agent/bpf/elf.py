"""The ELF side of a BPF object: sections, symbols and relocations, validated.

pyelftools does the decoding; every check a BPF object needs (machine, class, byte order,
bounds of sections, symbols and relocations) happens here, and every failure becomes a
MalformedObjectError naming what is wrong.
"""
from __future__ import annotations

import io
import struct
from dataclasses import dataclass

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection
from elftools.elf.sections import SymbolTableSection

from . import limits
from .errors import MalformedObjectError

EM_BPF = 247
SHT_NOBITS = 8
SHF_EXECINSTR = 0x4
SHN_UNDEF = 0
SHN_ABS = 0xFFF1
SHN_COMMON = 0xFFF2

R_BPF_NONE = 0
R_BPF_64_64 = 1
R_BPF_64_ABS64 = 2
R_BPF_64_ABS32 = 3
R_BPF_64_NODYLD32 = 4
R_BPF_64_32 = 10

# Errors pyelftools and struct raise on broken input.
PARSE_ERRORS = (ELFError, struct.error, ValueError, KeyError, IndexError, TypeError,
                AttributeError, UnicodeDecodeError, AssertionError, OverflowError, EOFError)


@dataclass(frozen=True)
class Section:
    index: int
    name: str
    type: str
    flags: int
    size: int
    data: bytes | memoryview  # a view into the object's bytes; empty for NOBITS (.bss)

    @property
    def is_exec(self) -> bool:
        return bool(self.flags & SHF_EXECINSTR) and self.type == "SHT_PROGBITS"

    @property
    def is_nobits(self) -> bool:
        return self.type == "SHT_NOBITS"


@dataclass(frozen=True)
class Symbol:
    index: int
    name: str
    value: int
    size: int
    type: str  # STT_FUNC, STT_OBJECT, STT_SECTION, STT_NOTYPE...
    bind: str  # STB_GLOBAL, STB_LOCAL, STB_WEAK
    shndx: int  # SHN_UNDEF (0) for externs; SHN_ABS/SHN_COMMON as numbers

    @property
    def is_undefined(self) -> bool:
        return self.shndx == SHN_UNDEF


@dataclass(frozen=True)
class Relocation:
    offset: int  # byte offset in the target section
    type: int
    symbol: Symbol


class ElfObject:
    """A parsed relocatable BPF ELF: sections by index and name, symbols, relocations."""

    def __init__(self, data: bytes, source: str = "<bytes>") -> None:
        self.source = source
        try:
            self._parse(data)
        except MalformedObjectError:
            raise
        except PARSE_ERRORS as exc:
            raise MalformedObjectError(
                f"{source}: malformed ELF ({type(exc).__name__}: {exc})"
            ) from None

    def _fail(self, problem: str) -> MalformedObjectError:
        return MalformedObjectError(f"{self.source}: {problem}")

    def _parse(self, data: bytes) -> None:
        if len(data) < 16 or data[:4] != b"\x7fELF":
            raise self._fail("not an ELF file (no \\x7fELF magic); expected a BPF object "
                             "built with clang -target bpf")
        if data[4] != 2:
            raise self._fail("ELF class is not 64-bit; BPF objects are ELF64")
        if data[5] != 1:
            raise self._fail("ELF is big-endian; only little-endian BPF objects are supported "
                             "(build with -target bpf or bpfel)")
        if len(data) < 64:
            raise self._fail(f"truncated ELF header ({len(data)} bytes, need 64)")
        limits.check_elf(data, self.source)  # before any cost that grows faster than data
        view = memoryview(data)  # sections are views into it, never copies
        elf = ELFFile(io.BytesIO(data))
        machine = elf.header["e_machine"]
        if machine not in ("EM_BPF", EM_BPF):
            raise self._fail(f"ELF machine is {machine}, not EM_BPF: not a BPF object")
        if elf.header["e_type"] != "ET_REL":
            raise self._fail(f"ELF type is {elf.header['e_type']}, expected a relocatable "
                             "object (ET_REL) as clang -c produces")
        shoff, shnum, shentsize = (elf.header["e_shoff"], elf.header["e_shnum"],
                                   elf.header["e_shentsize"])
        if shnum == 0 or shoff + shnum * shentsize > len(data):
            raise self._fail(f"truncated: section header table ({shnum} entries at offset "
                             f"{shoff}) runs past the end of the file ({len(data)} bytes)")

        self.sections: list[Section] = []
        self.by_name: dict[str, Section] = {}
        raw_sections = []
        for index in range(shnum):
            sec = elf.get_section(index)
            raw_sections.append(sec)
            size = sec["sh_size"]
            if sec["sh_type"] == "SHT_NOBITS":
                payload = b""
            else:
                offset = sec["sh_offset"]
                if offset + size > len(data):
                    raise self._fail(f"truncated: section #{index} {sec.name!r} "
                                     f"(offset {offset}, size {size}) runs past the end "
                                     f"of the file ({len(data)} bytes)")
                payload = view[offset:offset + size]
            section = Section(index, sec.name, sec["sh_type"], sec["sh_flags"], size, payload)
            self.sections.append(section)
            if section.name and section.name not in self.by_name:
                self.by_name[section.name] = section

        self.symbols: list[Symbol] = []
        symtabs = [s for s in raw_sections if isinstance(s, SymbolTableSection)
                   and s["sh_type"] == "SHT_SYMTAB"]
        if len(symtabs) != 1:
            raise self._fail(f"expected one symbol table (.symtab), found {len(symtabs)}")
        symtab = symtabs[0]
        if symtab["sh_entsize"] != 24:
            raise self._fail(f"symbol table entry size {symtab['sh_entsize']} is not 24")
        for i in range(symtab.num_symbols()):
            sym = symtab.get_symbol(i)
            shndx = sym["st_shndx"]
            if isinstance(shndx, str):
                shndx = {"SHN_UNDEF": SHN_UNDEF, "SHN_ABS": SHN_ABS,
                         "SHN_COMMON": SHN_COMMON}.get(shndx, 0xFFFF)
            elif shndx >= len(self.sections):
                raise self._fail(f"symbol #{i} {sym.name!r} points at section #{shndx}, "
                                 f"which does not exist")
            self.symbols.append(Symbol(i, sym.name, sym["st_value"], sym["st_size"],
                                       sym["st_info"]["type"], sym["st_info"]["bind"], shndx))

        self.relocations: dict[int, list[Relocation]] = {}
        for sec in raw_sections:
            if not isinstance(sec, RelocationSection):
                continue
            if sec.is_RELA():
                raise self._fail(f"section {sec.name!r} is RELA; BPF objects use REL")
            target = sec["sh_info"]
            if not 0 < target < len(self.sections):
                raise self._fail(f"relocation section {sec.name!r} targets section "
                                 f"#{target}, which does not exist")
            if not self.sections[target].is_exec:
                continue  # debug-info relocations do not matter for loading
            if sec["sh_link"] != symtab_index(raw_sections, symtab):
                raise self._fail(f"relocation section {sec.name!r} does not use .symtab")
            if sec["sh_entsize"] != 16:
                raise self._fail(f"relocation entry size {sec['sh_entsize']} in "
                                 f"{sec.name!r} is not 16")
            target_sec = self.sections[target]
            relocs = []
            for n in range(sec.num_relocations()):
                rel = sec.get_relocation(n)
                sym_index = rel["r_info_sym"]
                if sym_index >= len(self.symbols):
                    raise self._fail(f"relocation #{n} in {sec.name!r} refers to unknown "
                                     f"symbol #{sym_index} (the symbol table has "
                                     f"{len(self.symbols)})")
                offset = rel["r_offset"]
                if offset % 8 or offset + 8 > target_sec.size:
                    raise self._fail(f"relocation #{n} in {sec.name!r} has offset {offset}, "
                                     f"outside section {target_sec.name!r} "
                                     f"({target_sec.size} bytes) or not on an instruction")
                relocs.append(Relocation(offset, rel["r_info_type"], self.symbols[sym_index]))
            self.relocations.setdefault(target, []).extend(relocs)

    def section(self, name: str) -> Section | None:
        return self.by_name.get(name)

    def section_name(self, index: int) -> str:
        if 0 <= index < len(self.sections):
            return self.sections[index].name
        return f"#{index}"


def symtab_index(raw_sections: list, symtab: SymbolTableSection) -> int:  # type: ignore[type-arg]
    for i, sec in enumerate(raw_sections):
        if sec is symtab:
            return i
    return -1
