"""The agent's capability set, proven on the real kernel: the documented set (docs/install.md,
which test_chart.py holds the chart's `agent.capabilities` to) suffices for everything the agent
does to the kernel (load every built-in with its maps, BTF and ring buffer, pin on bpffs, reopen
pins, add plain and encap routes), and every member of it is necessary.

Each case runs capability_probe.py as root with every other capability dropped (setpriv),
inside a network namespace of its own. Programs loaded: at most 5 per case, 4 cases.
"""
from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from lwt_policy.catalogue import CATALOGUE

from .test_chart import documented_capabilities

PROBE = Path(__file__).resolve().parent / "capability_probe.py"
REPO = Path(__file__).resolve().parents[2]
# Capability numbers (linux/capability.h), Kubernetes spelling.
CAPABILITY_NUMBERS = {"NET_ADMIN": 12, "PERFMON": 38, "BPF": 39}

pytestmark = pytest.mark.kernel


@pytest.fixture
def netns() -> Iterator[str]:
    """A network namespace with one veth pair, its own (lwtP prefix)."""
    name = f"lwtP-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for command in (
            "link add lwtp0 type veth peer name lwtp1",
            "link set lwtp0 up",
            "link set lwtp1 up",
            "addr add 10.213.0.1/24 dev lwtp0",
        ):
            subprocess.run(["ip", "-n", name, *command.split()], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def probe(netns: str, capabilities: list[str], bpf_objects: Path, pin_dir: Path) -> dict[str, str]:
    pin_dir.mkdir()
    keep = ",".join(["-all", *(f"+{cap.lower()}" for cap in capabilities)])
    command = [
        "ip", "netns", "exec", netns,
        "setpriv", "--inh-caps=-all", "--ambient-caps=-all", f"--bounding-set={keep}",
        sys.executable, str(PROBE), str(bpf_objects), str(pin_dir), "lwtp0", "10.213.1.7",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120,
                            cwd=REPO)
    assert result.returncode == 0, f"probe crashed:\n{result.stderr[-3000:]}"
    steps: dict[str, str] = json.loads(result.stdout)
    return steps


BUILTINS = sorted(CATALOGUE)
ALL_OK = {
    "plain_route": "ok",
    **{f"load_{name}": "ok" for name in BUILTINS},
    "attach": "ok",
    "reopen_pin": "ok",
    # Opening a program by id needs CAP_SYS_ADMIN: the agent reopens its pins instead.
    "fd_by_id": "EPERM",
}


def capability_mask(names: list[str]) -> int:
    return sum(1 << CAPABILITY_NUMBERS[name] for name in names)


def test_the_documented_set_is_enough(netns: str, bpf_objects: Path, bpffs: Path) -> None:
    caps = sorted(documented_capabilities())
    steps = probe(netns, caps, bpf_objects, bpffs / f"all-{netns}")
    assert int(steps.pop("capeff"), 16) == capability_mask(caps)
    assert steps == ALL_OK


@pytest.mark.parametrize("missing", sorted(documented_capabilities()))
def test_every_documented_capability_is_necessary(
    missing: str, netns: str, bpf_objects: Path, bpffs: Path
) -> None:
    caps = sorted(documented_capabilities() - {missing})
    steps = probe(netns, caps, bpf_objects, bpffs / f"no-{missing}-{netns}")
    assert int(steps.pop("capeff"), 16) == capability_mask(caps)
    failed = {step: result for step, result in steps.items() if ALL_OK.get(step) != result}
    if missing == "NET_ADMIN":
        # LWT program types are networking programs: loading them needs CAP_NET_ADMIN too.
        assert failed == {"plain_route": "EPERM", **{f"load_{n}": "EPERM" for n in BUILTINS}}
    elif missing == "BPF":
        assert failed == {f"load_{n}": "EPERM" for n in BUILTINS}
    else:
        assert missing == "PERFMON", f"no reason documented for CAP_{missing}"
        # Without CAP_PERFMON the verifier applies its Spectre v1 rules ("pointer arithmetic
        # with it prohibited for !root"), which the built-ins' map-value indexing trips.
        # When every built-in loads without it, drop PERFMON from the chart and the docs.
        assert failed, "every built-in loads without CAP_PERFMON: remove it from the set"
        assert set(failed.values()) == {"EACCES"}
        assert "load_counters" in failed
