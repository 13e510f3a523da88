"""The kernel's BTF for CO-RE: time and memory of the loader's lazy reading
(lwt_agent.bpf.btf_index) against decoding every type up front, measured in the same run.

    .venv/bin/python -m benchmarks.btf_bench [--rounds N]

Each measurement runs in a fresh Python process (nothing cached, RSS comparable):
- lazy: open /sys/kernel/btf/vmlinux (one walk recording where each type starts), then find
  the CO-RE candidates of a dozen names and relocate every record of the CO-RE test object
  bpf/build/testobj/core/kinds.o, as a load does;
- eager (baseline): decode every type's name and members/enumerators/params, as a parser
  that builds objects for the whole type graph would.
Printed: median seconds and RSS growth (MiB) of each, and lazy/eager ratios.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KINDS_OBJECT = ROOT / "bpf/build/testobj/core/kinds.o"

_CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, "node-agent")
from lwt_agent.bpf.btf_index import (kernel_btf, BtfIndex, VMLINUX_BTF, STRUCT, UNION,
                                     ENUM, ENUM64, FUNC_PROTO)
from lwt_agent.bpf import ObjectSpec
from lwt_agent.bpf.loader import apply_core

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()

mode, obj = sys.argv[1], sys.argv[2]
spec = ObjectSpec.from_file(obj)
linked = [spec.link(s) for s in spec.sections()]
before = rss()
start = time.perf_counter()
if mode == "lazy":
    btf = kernel_btf()
    for name in ("sk_buff", "__sk_buff", "task_struct", "iphdr", "tcphdr", "net_device",
                 "bpf_func_id", "sock", "inode", "file", "u32", "int"):
        btf.by_essential_name(name)
    relocated = sum(len(apply_core(spec, lk)) for lk in linked)
else:
    with open(VMLINUX_BTF, "rb") as f:
        btf = BtfIndex(f.read())
    decoded = []
    for tid in range(1, btf.count):
        kind = btf.kind(tid)
        entry = [btf.name(tid), kind]
        if kind in (STRUCT, UNION):
            entry.append(btf.members(tid))
        elif kind in (ENUM, ENUM64):
            entry.append(btf.enumerators(tid))
        elif kind == FUNC_PROTO:
            entry.append(btf.params(tid))
        decoded.append(entry)
    relocated = 0
elapsed = time.perf_counter() - start
print(json.dumps({"seconds": elapsed, "rss": rss() - before, "types": btf.count - 1,
                  "relocated": relocated}))
"""


def measure(mode: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", _CHILD, mode, str(KINDS_OBJECT)],
                         cwd=ROOT, capture_output=True, text=True, check=True, timeout=300)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if not KINDS_OBJECT.is_file():
        print(f"{KINDS_OBJECT} missing: run `make -C bpf`", file=sys.stderr)
        return 2
    runs: dict[str, list[dict[str, float]]] = {"lazy": [], "eager": []}
    for _ in range(args.rounds):
        for mode in runs:  # interleaved, so both see the same machine load
            runs[mode].append(measure(mode))
    med = {mode: {key: statistics.median(r[key] for r in rs) for key in ("seconds", "rss")}
           for mode, rs in runs.items()}
    lazy, eager = med["lazy"], med["eager"]
    print(f"vmlinux BTF: {int(runs['lazy'][0]['types'])} types; "
          f"{int(runs['lazy'][0]['relocated'])} CO-RE relocations of kinds.o applied "
          f"(median of {args.rounds} rounds, fresh process each)")
    print(f"  lazy (open + 12 candidate lookups + relocate): {lazy['seconds']:.3f} s, "
          f"+{lazy['rss'] / 2**20:.1f} MiB RSS")
    print(f"  eager baseline (decode every type):            {eager['seconds']:.3f} s, "
          f"+{eager['rss'] / 2**20:.1f} MiB RSS")
    print(f"  ratio lazy/eager: time {lazy['seconds'] / eager['seconds']:.2f}, "
          f"memory {lazy['rss'] / max(eager['rss'], 1):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
