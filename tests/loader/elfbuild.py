"""Rebuilding BPF ELF objects section by section, to make hostile shapes on purpose: parse
bombs (overlapping sections, a BTF string bomb) and the structured mutations of the fuzz
run. Objects come apart into `Sec`s (pyelftools reads them) and go back together with
`build`, which lays sections out one after another unless a section aliases another's
bytes (`alias`) or overrides its header fields."""
from __future__ import annotations

import io
import struct
from dataclasses import dataclass, replace

from elftools.elf.elffile import ELFFile

SHT_PROGBITS = 1
SHT_SYMTAB = 2
SHT_STRTAB = 3
SHT_REL = 9
SHT_NOBITS = 8
KIND_STRUCT = 4


@dataclass
class Sec:
    name: str
    type: int
    flags: int = 0
    data: bytes = b""
    link: int = 0
    info: int = 0
    entsize: int = 0
    addralign: int = 8
    alias: int | None = None  # index of a section whose bytes this header points at
    offset: int | None = None  # header overrides (None: where build puts the data)
    size: int | None = None
    name_off: int | None = None


def _sh_type(name: str | int) -> int:
    if isinstance(name, int):
        return name
    return {"SHT_PROGBITS": 1, "SHT_SYMTAB": 2, "SHT_STRTAB": 3, "SHT_RELA": 4,
            "SHT_NOBITS": 8, "SHT_REL": 9, "SHT_LLVM_ADDRSIG": 0x6FFF4C03}.get(name, 1)


def explode(data: bytes) -> list[Sec]:
    """Sections of a clang object (null section excluded) as build() takes them back:
    indexes are preserved, the original string table stays where it is and is also used
    for section names."""
    elf = ELFFile(io.BytesIO(data))
    out: list[Sec] = []
    for index, sec in enumerate(elf.iter_sections()):
        if index == 0:
            continue
        raw = b"" if sec["sh_type"] == "SHT_NOBITS" else sec.data()
        out.append(Sec(sec.name, _sh_type(sec["sh_type"]), sec["sh_flags"], raw,
                       sec["sh_link"], sec["sh_info"], sec["sh_entsize"],
                       sec["sh_addralign"] or 1,
                       size=sec["sh_size"] if sec["sh_type"] == "SHT_NOBITS" else None,
                       name_off=sec["sh_name"]))
    return out


def shstrndx_of(data: bytes) -> int:
    return int(ELFFile(io.BytesIO(data)).header["e_shstrndx"])


def build(sections: list[Sec], shstrndx: int) -> bytes:
    """An ELF64 little-endian EM_BPF relocatable object with `sections` at indexes 1.."""
    body = bytearray(b"\0" * 64)
    placed: list[tuple[int, int]] = []
    for sec in sections:
        if sec.alias is not None:
            placed.append(placed[sec.alias - 1])
            continue
        body += b"\0" * (-len(body) % 8)
        placed.append((len(body), len(sec.data) if sec.size is None else sec.size))
        if sec.type != SHT_NOBITS:
            body += sec.data
    body += b"\0" * (-len(body) % 8)
    shoff = len(body)
    headers = bytearray(64)  # the null section
    for sec, (off, size) in zip(sections, placed, strict=True):
        headers += struct.pack(
            "<IIQQQQIIQQ", sec.name_off or 0, sec.type, sec.flags, 0,
            off if sec.offset is None else sec.offset, size if sec.size is None else sec.size,
            sec.link, sec.info, sec.addralign, sec.entsize)
    ehdr = struct.pack("<4sBBBBB7sHHIQQQIHHHHHH", b"\x7fELF", 2, 1, 1, 0, 0, b"", 1, 247,
                       1, 0, 0, shoff, 0, 64, 0, 0, 64, len(sections) + 1, shstrndx)
    body[:64] = ehdr
    return bytes(body + headers)


def rebuild(data: bytes, sections: list[Sec] | None = None) -> bytes:
    return build(explode(data) if sections is None else sections, shstrndx_of(data))


def overlap_bomb(base: bytes, total: int = 730_000, blob: int = 600_000,
                 headers: int | None = None) -> bytes:
    """`base` plus one big section and as many section headers as fit in `total` bytes,
    all pointing at that section's bytes (issue 12: 1.98 GiB RSS from 730 KB), or just
    `headers` of them."""
    secs = explode(base)
    secs.append(Sec("", SHT_PROGBITS, data=b"\x01" * blob))
    anchor = len(secs)  # 1-based index of the blob
    count = (total - len(rebuild(base, secs))) // 64 if headers is None else headers
    secs += [replace(secs[anchor - 1], data=b"", alias=anchor) for _ in range(count)]
    return rebuild(base, secs)


def btf_string_bomb(base: bytes, total: int = 730_000) -> bytes:
    """`base` with its .BTF replaced: one long string without a NUL until its end, and
    structs whose members all name a different suffix of it (issue 12: > 6 GiB)."""
    secs = explode(base)
    members = (total // 2) // 12
    strings = b"\0" + b"A" * (total // 2 - 64) + b"\0"
    types = bytearray()
    left = members
    while left:
        vlen = min(left, 0xFFFF)
        types += struct.pack("<III", 0, (KIND_STRUCT << 24) | vlen, 4)
        for i in range(vlen):
            types += struct.pack("<III", 1 + (i % 4096), 0, 0)
        left -= vlen
    header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types),
                         len(strings))
    btf = header + bytes(types) + strings
    for i, sec in enumerate(secs):
        if sec.name == ".BTF":
            secs[i] = replace(sec, data=btf)
        elif sec.name == ".BTF.ext":
            secs[i] = replace(sec, data=b"")
    return rebuild(base, secs)


def _with_btf(base: bytes, btf: bytes, ext: bytes | None = None) -> bytes:
    secs = explode(base)
    for i, sec in enumerate(secs):
        if sec.name == ".BTF":
            secs[i] = replace(sec, data=btf)
        elif sec.name == ".BTF.ext" and ext is not None:
            secs[i] = replace(sec, data=ext)
    return rebuild(base, secs)


def _btf_blob(types: bytes, strings: bytes) -> bytes:
    return struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types),
                       len(strings)) + types + strings


def btf_suffix_bomb(base: bytes, total: int = 730_000) -> bytes:
    """Names of at most 511 bytes, but every member names a different suffix of them:
    distinct names adding up to ~256x the string table."""
    strings = b"\0" + (b"A" * 511 + b"\0") * (total // 2 // 512)
    offsets = [i for i in range(1, len(strings)) if strings[i]]
    count = min(len(offsets), (total // 2) // 12)
    types = bytearray()
    for start in range(0, count, 0xFFFF):
        chunk = offsets[start:min(start + 0xFFFF, count)]
        types += struct.pack("<III", 0, (KIND_STRUCT << 24) | len(chunk), 4)
        for off in chunk:
            types += struct.pack("<III", off, 0, 0)
    return _with_btf(base, _btf_blob(bytes(types), strings))


def btf_types_bomb(base: bytes, total: int = (4 << 20) - 8192) -> bytes:
    """As many small BTF types (INT, 16 bytes each) as fit: the type-count bound."""
    count = (total - 4096) // 16
    types = struct.pack("<IIII", 0, 1 << 24, 4, 32) * count
    return _with_btf(base, _btf_blob(types, b"\0"))


def btf_ext_bomb(base: bytes, total: int = 730_000) -> bytes:
    """A .BTF.ext func_info area of 8-byte records, as many as fit."""
    count = (total - 4096) // 8
    area = struct.pack("<I", 8) + struct.pack("<II", 0, count) + b"\0" * (8 * count)
    ext = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(area), len(area), 0) + area
    return _with_btf(base, _btf_blob(struct.pack("<IIII", 0, 1 << 24, 4, 32), b"\0"), ext)


def symbols_bomb(base: bytes, total: int = 730_000) -> bytes:
    """The symbol table grown with copies of its last symbol until the object is `total`
    bytes (the symbol-count bound)."""
    secs = explode(base)
    for i, sec in enumerate(secs):
        if sec.type == SHT_SYMTAB:
            extra = (total - len(rebuild(base))) // 24
            secs[i] = replace(sec, data=sec.data + sec.data[-24:] * extra)
    return rebuild(base, secs)
