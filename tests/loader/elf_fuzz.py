"""A bounded, seeded fuzz run over BPF objects, up to the bpf(2) boundary (never loads).

    python -m tests.loader.elf_fuzz [--seed N] [--iterations N] [--seconds S] [--only I]

Each iteration takes a corpus object (the built-ins and test objects) and applies one to
four structured mutations: ELF header fields, section header fields, symbols, relocations,
BTF header/types/strings, instructions (pseudo src_reg, helper ids, opcodes), and whole
shapes (overlapping sections, a BTF string bomb, truncation, byte flips). Then it parses the
result, describes it (`inspect`) and prepares every program for each hook (everything a
load does before bpf(2)). Anything but success or a LoaderError is a failure, reported with
its iteration number: `--only I` replays exactly that object (iteration I's random
generator is seeded from (seed, I) alone). Prints one JSON report on stdout, including
ru_maxrss after the corpus was read and at the end, under a 2 GiB address-space limit.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import resource
import struct
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from elftools.elf.elffile import ELFFile
from lwt_agent.bpf import LoaderError, ObjectSpec
from lwt_agent.bpf.loader import prepare

from tests.loader import elfbuild

REPO = Path(__file__).resolve().parents[2]
CORPUS_DIRS = [REPO / "bpf" / "build", REPO / "bpf" / "build" / "testobj"]
HOOKS = ("in", "out", "xmit")
EDGE = [0, 1, 7, 8, 24, 63, 64, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 2**63, 2**64 - 1]
PSEUDO_SRC = [1, 2, 3, 4, 5, 6, 7, 15]
HELPERS = [6, 12, 35, 113, 149, 158, 165, 177, 9999]


class Obj:
    """An object being mutated, with where its structures are."""

    def __init__(self, data: bytes) -> None:
        self.buf = bytearray(data)
        elf = ELFFile(io.BytesIO(data))
        self.shoff = elf.header["e_shoff"]
        self.sections = [(i, s.name, s["sh_type"], s["sh_offset"], s["sh_size"])
                         for i, s in enumerate(elf.iter_sections())]

    def of_type(self, sh_type: str) -> list[tuple[int, str, str, int, int]]:
        return [s for s in self.sections if s[2] == sh_type]

    def named(self, name: str) -> tuple[int, str, str, int, int] | None:
        return next((s for s in self.sections if s[1] == name), None)


def _value(rng: random.Random, bits: int) -> int:
    return rng.choice([*EDGE, rng.getrandbits(bits)]) & ((1 << bits) - 1)


def _put(obj: Obj, offset: int, fmt: str, value: int) -> None:
    if 0 <= offset <= len(obj.buf) - struct.calcsize(fmt):
        struct.pack_into(fmt, obj.buf, offset, value)


def m_header(obj: Obj, rng: random.Random) -> None:
    field = rng.choice([(0x28, "<Q"), (0x3A, "<H"), (0x3C, "<H"), (0x3E, "<H"),
                        (0x12, "<H"), (0x10, "<H"), (0x04, "<B"), (0x05, "<B")])
    _put(obj, field[0], field[1], _value(rng, struct.calcsize(field[1]) * 8))


def m_section_header(obj: Obj, rng: random.Random) -> None:
    index = rng.randrange(len(obj.sections))
    at = obj.shoff + 64 * index
    off, fmt = rng.choice([(0, "<I"), (4, "<I"), (8, "<Q"), (24, "<Q"), (32, "<Q"),
                           (40, "<I"), (44, "<I"), (56, "<Q")])
    if off == 24 and rng.random() < 0.5:  # point it at another section's bytes
        _put(obj, at + off, fmt, rng.choice(obj.sections)[3])
    else:
        _put(obj, at + off, fmt, _value(rng, struct.calcsize(fmt) * 8))


def m_symbol(obj: Obj, rng: random.Random) -> None:
    for _i, _n, _t, offset, size in obj.of_type("SHT_SYMTAB"):
        if size >= 24:
            at = offset + 24 * rng.randrange(size // 24)
            off, fmt = rng.choice([(0, "<I"), (4, "<B"), (6, "<H"), (8, "<Q"), (16, "<Q")])
            _put(obj, at + off, fmt, _value(rng, struct.calcsize(fmt) * 8))


def m_reloc(obj: Obj, rng: random.Random) -> None:
    rels = [s for s in obj.of_type("SHT_REL") if s[4] >= 16]
    if rels:
        _i, _n, _t, offset, size = rng.choice(rels)
        at = offset + 16 * rng.randrange(size // 16)
        if rng.random() < 0.5:
            _put(obj, at, "<Q", _value(rng, 64))
        else:
            _put(obj, at + 8, "<I", rng.choice([0, 1, 2, 3, 4, 10, 11, 99]))
            _put(obj, at + 12, "<I", _value(rng, 32) if rng.random() < 0.3
                 else rng.randrange(64))


def m_btf(obj: Obj, rng: random.Random) -> None:
    sec = obj.named(rng.choice([".BTF", ".BTF", ".BTF.ext"]))
    if sec is None or sec[4] < 24:
        return
    _i, _n, _t, offset, size = sec
    choice = rng.random()
    if choice < 0.4:  # a header field
        _put(obj, offset + rng.choice([4, 8, 12, 16, 20, 24, 28]), "<I", _value(rng, 32))
    elif choice < 0.8:  # inside the type area: kinds, vlen, name offsets, type refs
        at = offset + 24 + 4 * rng.randrange(max(1, (size - 24) // 4))
        _put(obj, at, "<I", rng.choice([_value(rng, 32), (rng.randrange(32) << 24)
                                        | rng.randrange(0x10000)]))
    else:  # strip NULs from the string area (names run on)
        str_off, str_len = struct.unpack_from("<II", obj.buf, offset + 16)
        start = offset + 24 + str_off
        for at in range(start, min(start + str_len, offset + size, len(obj.buf))):
            if obj.buf[at] == 0 and rng.random() < 0.5:
                obj.buf[at] = 0x41


def m_insn(obj: Obj, rng: random.Random) -> None:
    text = [s for s in obj.of_type("SHT_PROGBITS") if s[4] >= 8 and s[4] % 8 == 0
            and (s[1].startswith(("lwt", ".text")))]
    if not text:
        return
    _i, _n, _t, offset, size = rng.choice(text)
    at = offset + 8 * rng.randrange(size // 8)
    code = obj.buf[at]
    if code == 0x18:  # ld_imm64: a pseudo source nobody relocated
        obj.buf[at + 1] = (rng.choice(PSEUDO_SRC) << 4) | (obj.buf[at + 1] & 0xF)
        _put(obj, at + 4, "<i", rng.choice([3, 4, 5, 0x7FFFFFFF]))
    elif code == 0x85:  # call: another helper, a kfunc, an unknown src
        if rng.random() < 0.6:
            _put(obj, at + 4, "<i", rng.choice(HELPERS))
        else:
            obj.buf[at + 1] = rng.choice([2, 3, 15]) << 4
    else:
        obj.buf[at] = rng.choice([0x18, 0x85, 0x8D, 0x95, rng.randrange(256)])


def m_flip(obj: Obj, rng: random.Random) -> None:
    for _ in range(rng.randint(1, 8)):
        obj.buf[rng.randrange(len(obj.buf))] ^= 1 << rng.randrange(8)


def m_truncate(obj: Obj, rng: random.Random) -> None:
    del obj.buf[rng.randrange(len(obj.buf)):]


MUTATORS: dict[str, Callable[[Obj, random.Random], None]] = {
    "header": m_header, "section": m_section_header, "symbol": m_symbol,
    "reloc": m_reloc, "btf": m_btf, "insn": m_insn, "flip": m_flip, "truncate": m_truncate,
}
SHAPES: dict[str, Callable[[bytes], bytes]] = {
    "overlap_bomb": lambda d: elfbuild.overlap_bomb(d, total=200_000, blob=150_000),
    "overlap_few": lambda d: elfbuild.overlap_bomb(d, blob=4096, headers=50),
    "btf_string_bomb": lambda d: elfbuild.btf_string_bomb(d, total=200_000),
    "btf_suffix_bomb": lambda d: elfbuild.btf_suffix_bomb(d, total=200_000),
}


def mutate(corpus: dict[str, bytes], seed: int, iteration: int) -> tuple[bytes, list[str]]:
    rng = random.Random(seed * 1_000_003 + iteration)
    name = rng.choice(sorted(corpus))
    data = corpus[name]
    applied = [name]
    if rng.random() < 0.05:
        shape = rng.choice(sorted(SHAPES))
        try:
            data = SHAPES[shape](data)
            applied.append(shape)
        except (ValueError, KeyError):
            pass  # an object without .BTF
    obj = Obj(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.choice(sorted(MUTATORS))
        with contextlib.suppress(struct.error, IndexError, ValueError):
            MUTATORS[kind](obj, rng)  # an earlier mutation may have cut what it targets
        applied.append(kind)
    return bytes(obj.buf), applied


def exercise(data: bytes) -> str:
    """Outcome of parsing + describing + preparing every program on every hook."""
    try:
        spec = ObjectSpec.from_bytes(data, "fuzzed.o")
    except LoaderError as exc:
        return f"refused:{type(exc).__name__}"
    spec.describe()
    outcomes = set()
    for program in spec.programs:
        for hook in HOOKS:
            try:
                prepare(spec, program.name, hook)
                outcomes.add("prepared")
            except LoaderError as exc:
                outcomes.add(f"refused:{type(exc).__name__}")
    return "parsed+" + ",".join(sorted(outcomes)) if outcomes else "parsed"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=25.0)
    parser.add_argument("--only", type=int, default=None)
    args = parser.parse_args()
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
    corpus = {p.name: p.read_bytes() for d in CORPUS_DIRS for p in sorted(d.glob("*.o"))}
    start_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    deadline = time.monotonic() + args.seconds
    outcomes: Counter[str] = Counter()
    mutators: Counter[str] = Counter()
    failures = []
    iterations = [args.only] if args.only is not None else range(args.iterations)
    done = 0
    for i in iterations:
        if time.monotonic() > deadline:
            break
        data, applied = mutate(corpus, args.seed, i)
        mutators.update(applied[1:])
        try:
            outcome = exercise(data)
        except Exception:  # anything but a LoaderError is what the run looks for
            failures.append({"iteration": i, "mutations": applied,
                             "traceback": traceback.format_exc(limit=6)})
            outcome = "FAILED"
        head, _, programs = outcome.partition("+")
        outcomes[head] += 1
        outcomes.update(f"program {p}" for p in programs.split(",") if p)
        done += 1
    end_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    json.dump({"seed": args.seed, "iterations": done, "corpus": len(corpus),
               "outcomes": dict(outcomes), "mutators": dict(mutators),
               "failures": failures[:20], "failure_count": len(failures),
               "start_rss": start_rss, "end_rss": end_rss}, sys.stdout)


if __name__ == "__main__":
    main()
