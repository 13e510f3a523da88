"""The .BTF and .BTF.ext sections: enough of the type graph to read BTF-defined maps and
global-data layouts, and func/line info (CO-RE records: core.py; the kernel's BTF:
btf_index.py).

Format: uapi/linux/btf.h. Every inconsistency (bad magic, lengths past the section, type ids
out of range, cycles) raises MalformedObjectError("corrupt BTF: ...").
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

from . import limits
from .errors import LimitError, MalformedObjectError

BTF_MAGIC = 0xEB9F

KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM = 1, 2, 3, 4, 5, 6
KIND_FWD, KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT = 7, 8, 9, 10, 11
KIND_FUNC, KIND_FUNC_PROTO, KIND_VAR, KIND_DATASEC, KIND_FLOAT = 12, 13, 14, 15, 16
KIND_DECL_TAG, KIND_TYPE_TAG, KIND_ENUM64 = 17, 18, 19

_MODIFIERS = {KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG}
_MAX_DEPTH = 32


@dataclass
class BtfType:
    id: int
    kind: int
    name: str
    vlen: int
    kflag: bool
    size_or_type: int
    # kind-specific: ARRAY (elem_type, index_type, nelems); STRUCT/UNION members
    # (name, type, bit offset); DATASEC vars (type, offset, size); VAR linkage; INT encoding
    pos: int = 0  # byte offset of this type's header in the type area
    array: tuple[int, int, int] | None = None
    members: list[tuple[str, int, int]] = field(default_factory=list)
    secinfos: list[tuple[int, int, int]] = field(default_factory=list)


def _corrupt(problem: str) -> MalformedObjectError:
    return MalformedObjectError(f"corrupt BTF: {problem}")


class Btf:
    """Parsed .BTF: types by id (id 0 is void) and the string table."""

    def __init__(self, data: bytes) -> None:
        try:
            self._parse(data)
        except struct.error as exc:
            raise _corrupt(f"truncated ({exc})") from None

    def _parse(self, data: bytes) -> None:
        if len(data) < 24:
            raise _corrupt(f"section is {len(data)} bytes, shorter than the 24-byte header")
        magic, version, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
        if magic != BTF_MAGIC:
            raise _corrupt(f"bad magic {magic:#06x} (expected {BTF_MAGIC:#06x})")
        if version != 1:
            raise _corrupt(f"unknown version {version}")
        type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", data, 8)
        if hdr_len < 24 or hdr_len > len(data):
            raise _corrupt(f"header length {hdr_len} is invalid")
        body = data[hdr_len:]
        if type_off + type_len > len(body) or str_off + str_len > len(body):
            raise _corrupt(f"type ({type_off}+{type_len}) or string ({str_off}+{str_len}) "
                           f"area runs past the section ({len(body)} bytes after the header)")
        self.raw = bytes(data)
        self._types_start = hdr_len + type_off
        self.strings = body[str_off:str_off + str_len]
        if self.strings and self.strings[0] != 0:
            raise _corrupt("string table does not start with an empty string")
        self.types: list[BtfType] = [BtfType(0, 0, "", 0, False, 0)]  # void
        # names decoded so far, by offset: a name is decoded once however many types use
        # it, and their total is bounded (suffixes of one long run are distinct names)
        self._names: dict[int, str] = {}
        self._name_bytes = 0
        self._parse_types(body[type_off:type_off + type_len])
        for t in self.types[1:]:
            for ref in self._references(t):
                if ref >= len(self.types):
                    raise _corrupt(f"type #{t.id} {t.name!r} refers to type #{ref}, but "
                                   f"there are only {len(self.types) - 1} types")

    def string(self, offset: int) -> str:
        if offset >= len(self.strings) and offset != 0:
            raise _corrupt(f"string offset {offset} is past the string table "
                           f"({len(self.strings)} bytes)")
        known = self._names.get(offset)
        if known is not None:
            return known
        end = self.strings.find(b"\0", offset, offset + limits.MAX_NAME + 1)
        if end < 0:
            if len(self.strings) - offset > limits.MAX_NAME:
                raise LimitError("BTF", f"MAX_NAME={limits.MAX_NAME}", f"the name at string "
                                 f"offset {offset} is longer than {limits.MAX_NAME} bytes")
            raise _corrupt(f"string at offset {offset} is not NUL-terminated")
        self._name_bytes += end - offset
        if self._name_bytes > 2 * len(self.strings) + 4096:
            raise LimitError("BTF", "names <= 2x the string table", "the names its types "
                             "use add up to more than twice its string table (overlapping "
                             "names)")
        try:
            name = self._names[offset] = self.strings[offset:end].decode()
        except UnicodeDecodeError:
            raise _corrupt(f"string at offset {offset} is not UTF-8") from None
        return name

    def _parse_types(self, area: bytes) -> None:
        pos = 0
        members = 0
        while pos < len(area):
            name_off, info, size_or_type = struct.unpack_from("<III", area, pos)
            pos += 12
            kind = (info >> 24) & 0x1F
            vlen = info & 0xFFFF
            members += vlen
            if len(self.types) > limits.MAX_BTF_TYPES or members > limits.MAX_BTF_MEMBERS:
                raise LimitError("BTF", f"MAX_BTF_TYPES={limits.MAX_BTF_TYPES}, "
                                 f"MAX_BTF_MEMBERS={limits.MAX_BTF_MEMBERS}",
                                 f"more than {len(self.types) - 1} types or {members} members")
            t = BtfType(len(self.types), kind, self.string(name_off), vlen,
                        bool(info >> 31), size_or_type, pos - 12)
            if kind in (KIND_INT, KIND_VAR, KIND_DECL_TAG):
                pos += 4
            elif kind == KIND_ARRAY:
                t.array = struct.unpack_from("<III", area, pos)
                pos += 12
            elif kind in (KIND_STRUCT, KIND_UNION):
                for _ in range(vlen):
                    m_name, m_type, m_off = struct.unpack_from("<III", area, pos)
                    t.members.append((self.string(m_name), m_type, m_off))
                    pos += 12
            elif kind == KIND_ENUM:
                pos += 8 * vlen
            elif kind == KIND_ENUM64:
                pos += 12 * vlen
            elif kind == KIND_FUNC_PROTO:
                for _ in range(vlen):
                    struct.unpack_from("<II", area, pos)
                    pos += 8
            elif kind == KIND_DATASEC:
                for _ in range(vlen):
                    t.secinfos.append(struct.unpack_from("<III", area, pos))
                    pos += 12
            elif kind in (KIND_PTR, KIND_FWD, KIND_FUNC, KIND_FLOAT) or kind in _MODIFIERS:
                pass
            else:
                raise _corrupt(f"type #{t.id} has unknown kind {kind}")
            if pos > len(area):
                raise _corrupt(f"type #{t.id} runs past the end of the type area")
            self.types.append(t)

    @staticmethod
    def _references(t: BtfType) -> list[int]:
        refs: list[int] = []
        if t.kind in (KIND_PTR, KIND_VAR, KIND_FUNC, KIND_DECL_TAG) or t.kind in _MODIFIERS:
            refs.append(t.size_or_type)
        if t.array:
            refs.extend(t.array[:2])
        refs.extend(m[1] for m in t.members)
        refs.extend(s[0] for s in t.secinfos)
        return refs

    def type(self, type_id: int) -> BtfType:
        if not 0 <= type_id < len(self.types):
            raise _corrupt(f"type id {type_id} out of range")
        return self.types[type_id]

    def skip_modifiers(self, type_id: int) -> BtfType:
        t = self.type(type_id)
        for _ in range(_MAX_DEPTH):
            if t.kind not in _MODIFIERS:
                return t
            t = self.type(t.size_or_type)
        raise _corrupt(f"modifier chain from type #{type_id} is too long (a cycle?)")

    def size_of(self, type_id: int, depth: int = 0) -> int:
        if depth > _MAX_DEPTH:
            raise _corrupt(f"type #{type_id} nests too deeply (a cycle?)")
        t = self.skip_modifiers(type_id)
        if t.kind == KIND_PTR:
            return 8
        if t.kind == KIND_ARRAY and t.array:
            return t.array[2] * self.size_of(t.array[0], depth + 1)
        if t.kind in (KIND_INT, KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_ENUM64, KIND_FLOAT,
                      KIND_DATASEC):
            return t.size_or_type
        if t.kind == KIND_VAR:
            return self.size_of(t.size_or_type, depth + 1)
        raise _corrupt(f"type #{t.id} {t.name!r} (kind {t.kind}) has no size")

    def datasec(self, name: str) -> BtfType | None:
        for t in self.types:
            if t.kind == KIND_DATASEC and t.name == name:
                return t
        return None

    def for_kernel(self, section_sizes: dict[str, int],
                   symbol_offsets: dict[str, dict[str, int]]) -> bytes:
        """The .BTF bytes with what the compiler leaves for the loader filled in, as libbpf
        does: each DATASEC's size (the ELF section's) and its variables' offsets (their
        symbols' values). Sections or variables not found are left as they are (the kernel
        then refuses the BTF and the program loads without it)."""
        buf = bytearray(self.raw)
        for t in self.types:
            if t.kind != KIND_DATASEC:
                continue
            base = self._types_start + t.pos
            size = section_sizes.get(t.name)
            if size is not None and t.size_or_type == 0:
                struct.pack_into("<I", buf, base + 8, size)
            offsets = symbol_offsets.get(t.name, {})
            for i, (type_id, _off, _size) in enumerate(t.secinfos):
                var_name = self.types[type_id].name
                if var_name in offsets:
                    struct.pack_into("<I", buf, base + 12 + 12 * i + 4, offsets[var_name])
        return bytes(buf)


@dataclass(frozen=True)
class ExtRecord:
    """A func_info or line_info record of .BTF.ext: `insn_off` in bytes within its ELF
    section (as stored); `rest` is the record after insn_off, passed to the kernel as is."""

    insn_off: int
    rest: bytes


@dataclass
class BtfExt:
    """func_info and line_info of .BTF.ext, by ELF section name."""

    func_info_rec_size: int = 8
    line_info_rec_size: int = 16
    func_info: dict[str, list[ExtRecord]] = field(default_factory=dict)
    line_info: dict[str, list[ExtRecord]] = field(default_factory=dict)


def ext_info(ext: bytes, btf: Btf) -> BtfExt:
    """Read func_info and line_info from .BTF.ext."""
    info = BtfExt()
    try:
        magic, version, _flags, hdr_len = struct.unpack_from("<HBBI", ext, 0)
        if magic != BTF_MAGIC or version != 1 or hdr_len < 24:
            raise _corrupt(f".BTF.ext has bad magic {magic:#06x}, version {version} or "
                           f"header length {hdr_len}")
        func_off, func_len, line_off, line_len = struct.unpack_from("<IIII", ext, 8)
        info.func_info_rec_size, info.func_info = _ext_area(
            ext, hdr_len + func_off, func_len, btf, "func_info", 8)
        info.line_info_rec_size, info.line_info = _ext_area(
            ext, hdr_len + line_off, line_len, btf, "line_info", 16)
    except struct.error as exc:
        raise _corrupt(f".BTF.ext truncated ({exc})") from None
    return info


def _ext_area(ext: bytes, start: int, length: int, btf: Btf, what: str,
              min_rec: int) -> tuple[int, dict[str, list[ExtRecord]]]:
    if length == 0:
        return min_rec, {}
    if start + length > len(ext):
        raise _corrupt(f".BTF.ext {what} area runs past the section")
    area = ext[start:start + length]
    rec_size = struct.unpack_from("<I", area, 0)[0]
    if rec_size < min_rec or rec_size > 256:
        raise _corrupt(f".BTF.ext {what} record size {rec_size} is invalid")
    pos = 4
    found: dict[str, list[ExtRecord]] = {}
    total = 0
    while pos < len(area):
        sec_name_off, num = struct.unpack_from("<II", area, pos)
        pos += 8
        if pos + num * rec_size > len(area):
            raise _corrupt(f".BTF.ext {what} records run past their area")
        total += num
        if total > limits.MAX_BTF_EXT_RECORDS:
            raise LimitError(".BTF.ext", f"MAX_BTF_EXT_RECORDS={limits.MAX_BTF_EXT_RECORDS}",
                             f"{total} or more {what} records")
        records = found.setdefault(btf.string(sec_name_off), [])
        for _ in range(num):
            records.append(ExtRecord(struct.unpack_from("<I", area, pos)[0],
                                     area[pos + 4:pos + rec_size]))
            pos += rec_size
    return rec_size, found
