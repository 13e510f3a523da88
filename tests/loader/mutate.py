"""Byte-level surgery on real BPF objects, to make malformed inputs with a known defect."""
from __future__ import annotations

import io
import struct

from elftools.elf.elffile import ELFFile


def section_header(data: bytes, name: str) -> tuple[int, int, int]:
    """(offset of the section's header entry, sh_offset, sh_size) of section `name`."""
    elf = ELFFile(io.BytesIO(data))
    shoff, entsize = elf.header["e_shoff"], elf.header["e_shentsize"]
    for index, sec in enumerate(elf.iter_sections()):
        if sec.name == name:
            return shoff + index * entsize, sec["sh_offset"], sec["sh_size"]
    raise KeyError(name)


def patch(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    buf = bytearray(data)
    struct.pack_into(fmt, buf, offset, value)
    return bytes(buf)


def machine(data: bytes, e_machine: int) -> bytes:
    return patch(data, 18, "<H", e_machine)


def reloc_symbol(data: bytes, rel_section: str, symbol_index: int) -> bytes:
    _hdr, off, _size = section_header(data, rel_section)
    r_info = struct.unpack_from("<Q", data, off + 8)[0]
    return patch(data, off + 8, "<Q", (symbol_index << 32) | (r_info & 0xFFFFFFFF))


def reloc_offset(data: bytes, rel_section: str, r_offset: int) -> bytes:
    _hdr, off, _size = section_header(data, rel_section)
    return patch(data, off, "<Q", r_offset)


def section_offset(data: bytes, name: str, sh_offset: int) -> bytes:
    hdr, _off, _size = section_header(data, name)
    return patch(data, hdr + 24, "<Q", sh_offset)


def btf_field(data: bytes, field_offset: int, fmt: str, value: int) -> bytes:
    """Patch the .BTF section at `field_offset` (0 = magic, 16 = type_len, 20 = str_off...)."""
    _hdr, off, _size = section_header(data, ".BTF")
    return patch(data, off + field_offset, fmt, value)
