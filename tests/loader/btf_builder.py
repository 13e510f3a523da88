"""Hand-made BTF for unit tests of CO-RE (no compiler, no kernel): types are added one by
one and get ids 1, 2, ... in order; `build()` gives the raw .BTF bytes."""
from __future__ import annotations

import struct

INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST = range(1, 11)
FUNC_PROTO, ENUM64 = 13, 19


class BtfBuilder:
    def __init__(self, first_id: int = 1, base_strings: int = 0) -> None:
        self.strings = bytearray(b"\0") if not base_strings else bytearray()
        self.str_base = base_strings
        self.types: list[bytes] = []
        self.first_id = first_id
        self._str_cache: dict[str, int] = {"": 0}

    def _str(self, name: str) -> int:
        if name not in self._str_cache:
            self._str_cache[name] = self.str_base + len(self.strings)
            self.strings += name.encode() + b"\0"
        return self._str_cache[name]

    def _add(self, name: str, kind: int, vlen: int, size_or_type: int, extra: bytes = b"",
             kflag: bool = False) -> int:
        info = (int(kflag) << 31) | (kind << 24) | vlen
        self.types.append(struct.pack("<III", self._str(name), info, size_or_type) + extra)
        return self.first_id + len(self.types) - 1

    def int_(self, name: str, size: int, signed: bool = False, bits: int | None = None,
             offset: int = 0) -> int:
        enc = (1 if signed else 0) << 24 | offset << 16 | (bits if bits else size * 8)
        return self._add(name, INT, 0, size, struct.pack("<I", enc))

    def ptr(self, target: int) -> int:
        return self._add("", PTR, 0, target)

    def typedef(self, name: str, target: int) -> int:
        return self._add(name, TYPEDEF, 0, target)

    def const(self, target: int) -> int:
        return self._add("", CONST, 0, target)

    def array(self, elem: int, nelems: int, index_type: int = 0) -> int:
        return self._add("", ARRAY, 0, 0, struct.pack("<III", elem, index_type, nelems))

    def struct(self, name: str, size: int, members: list[tuple[str, int, int, int]],
               union: bool = False) -> int:
        """members: (name, type, bit offset, bitfield size)."""
        kflag = any(bits for *_x, bits in members)
        body = b"".join(struct.pack("<III", self._str(m), t,
                                    (bits << 24 | off) if kflag else off)
                        for m, t, off, bits in members)
        return self._add(name, UNION if union else STRUCT, len(members), size, body, kflag)

    def enum(self, name: str, values: list[tuple[str, int]], size: int = 4,
             signed: bool = False) -> int:
        body = b"".join(struct.pack("<Ii", self._str(n), v) for n, v in values)
        return self._add(name, ENUM, len(values), size, body, signed)

    def enum64(self, name: str, values: list[tuple[str, int]], signed: bool = False) -> int:
        body = b"".join(struct.pack("<III", self._str(n), v & 0xFFFFFFFF, v >> 32)
                        for n, v in values)
        return self._add(name, ENUM64, len(values), 8, body, signed)

    def fwd(self, name: str, union: bool = False) -> int:
        return self._add(name, FWD, 0, 0, kflag=union)

    def func_proto(self, ret: int, params: list[int]) -> int:
        body = b"".join(struct.pack("<II", 0, p) for p in params)
        return self._add("", FUNC_PROTO, len(params), ret, body)

    def build(self) -> bytes:
        types = b"".join(self.types)
        header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types),
                             len(self.strings))
        return header + types + bytes(self.strings)


def insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, src << 4 | dst, off, imm)


LDX_W, LDX_DW, LDX_H = 0x61, 0x79, 0x69  # BPF_LDX | BPF_MEM | size
MOV64_IMM = 0xB7
LD_IMM64 = 0x18


def ld_imm64(dst: int, value: int) -> bytes:
    return (insn(LD_IMM64, dst, imm=_s32(value & 0xFFFFFFFF))
            + insn(0, imm=_s32(value >> 32 & 0xFFFFFFFF)))


def _s32(v: int) -> int:
    return v - (1 << 32) if v & 0x80000000 else v


def decode(buf: bytes, index: int) -> tuple[int, int, int, int, int]:
    """(code, dst, src, off, imm) of instruction `index`."""
    code, regs, off, imm = struct.unpack_from("<BBhi", buf, index * 8)
    return code, regs & 0xF, regs >> 4, off, imm
