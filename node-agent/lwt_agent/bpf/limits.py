"""Bounds on what parsing an object may cost, checked before pyelftools reads anything.

A ConfigMap of about 1 MiB is a tenant's to write; parsing it must stay within a fixed
memory budget (issue 12: a 730 KB object with overlapping sections took 1.98 GiB, a BTF
string bomb more than 6 GiB). The costs that grow faster than the file are refused here,
from the raw headers (struct on a memoryview, no copies):
- sections whose bytes overlap (each would be copied again) or run past the file;
- counts of sections, symbols and relocations;
- names (section, symbol; BTF names in btf.py) longer than the kernel's KSYM_NAME_LEN.
Every refusal is a LimitError (a MalformedObjectError) naming the bound. The budget these
bounds give (peak of parsing any object <= 64 MiB) is measured by
tests/loader/test_parse_bounds.py with bombs in a child process.
"""
from __future__ import annotations

import itertools
import struct

from .errors import LimitError

MAX_OBJECT_BYTES = 4 << 20  # built-ins are ~10-20 KB; a ConfigMap holds at most 1 MiB
MAX_SECTIONS = 1024
MAX_SYMBOLS = 32768
MAX_RELOCATIONS = 65536
MAX_NAME = 512  # KSYM_NAME_LEN: the kernel's own bound for BTF and symbol names
MAX_BTF_TYPES = 65536
MAX_BTF_MEMBERS = 131072  # members + params + enum values + datasec vars, all types
MAX_BTF_EXT_RECORDS = 32768  # func_info, line_info: each (one per source line)

SHT_SYMTAB = 2
SHT_RELA = 4
SHT_NOBITS = 8
SHT_REL = 9
_SHDR = struct.Struct("<IIQQQQIIQQ")


def check_size(size: int, source: str) -> None:
    if size > MAX_OBJECT_BYTES:
        raise LimitError(source, f"MAX_OBJECT_BYTES={MAX_OBJECT_BYTES}",
                         f"{size} bytes is too large for a BPF object")


def check_elf(data: bytes | memoryview, source: str) -> None:
    """Refuse an ELF whose section table would make parsing cost more than its size.
    Assumes the ELF64 little-endian header was already checked (elf.py does)."""
    view = memoryview(data)
    check_size(len(view), source)
    shoff, = struct.unpack_from("<Q", view, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", view, 0x3A)
    if shnum > MAX_SECTIONS:
        raise LimitError(source, f"MAX_SECTIONS={MAX_SECTIONS}", f"{shnum} sections")
    if shnum == 0 or shentsize != _SHDR.size or shoff + shnum * _SHDR.size > len(view):
        return  # elf.py reports the broken section table with its own message
    headers = [_SHDR.unpack_from(view, shoff + i * _SHDR.size) for i in range(shnum)]
    ranges = []
    for index, (_name, sh_type, _fl, _addr, offset, size, *_rest) in enumerate(headers):
        if sh_type == SHT_NOBITS or size == 0:
            continue
        if offset + size > len(view):
            return  # elf.py names the truncated section
        ranges.append((offset, offset + size, index))
    ranges.sort()
    for (_s1, end1, i1), (start2, _e2, i2) in itertools.pairwise(ranges):
        if start2 < end1:
            raise LimitError(source, "no overlapping sections",
                             f"sections #{i1} and #{i2} overlap in the file")
    if shstrndx < shnum:
        _check_names(view, headers, shstrndx, [h[0] for h in headers], source, "section")
    symbols = relocations = 0
    for sh_type, size, entsize, link, index in (
            (h[1], h[5], h[9], h[6], i) for i, h in enumerate(headers)):
        if sh_type == SHT_SYMTAB and entsize:
            count = size // entsize
            symbols += count
            if symbols > MAX_SYMBOLS:
                raise LimitError(source, f"MAX_SYMBOLS={MAX_SYMBOLS}",
                                 f"{symbols} or more symbols")
            if entsize == 24 and link < shnum:
                offset = headers[index][4]
                names = [struct.unpack_from("<I", view, offset + 24 * i)[0]
                         for i in range(count)]
                _check_names(view, headers, link, names, source, "symbol")
        elif sh_type in (SHT_REL, SHT_RELA) and entsize:
            relocations += size // entsize
            if relocations > MAX_RELOCATIONS:
                raise LimitError(source, f"MAX_RELOCATIONS={MAX_RELOCATIONS}",
                                 f"{relocations} or more relocations")


def _check_names(view: memoryview, headers: list[tuple[int, ...]], strtab: int,
                 offsets: list[int], source: str, what: str) -> None:
    """Every name in ``offsets`` ends (NUL) within MAX_NAME bytes of the string table."""
    _n, sh_type, _f, _a, start, size, *_rest = headers[strtab]
    if sh_type == SHT_NOBITS or start + size > len(view):
        return
    table = view[start:start + size]
    for off in set(offsets):
        if off >= size:
            continue  # pyelftools/elf.py refuse offsets past the table
        window = bytes(table[off:off + MAX_NAME + 1])
        if b"\0" not in window and len(window) > MAX_NAME:
            raise LimitError(source, f"MAX_NAME={MAX_NAME}",
                             f"a {what} name at string offset {off} is longer than "
                             f"{MAX_NAME} bytes")
