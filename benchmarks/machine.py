"""Facts about the machine a run happened on, recorded with every result."""
from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "not installed"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def _mem_total_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 0


def _virtualized() -> str:
    flags = Path("/proc/cpuinfo").read_text()
    return "yes (hypervisor flag set)" if " hypervisor" in flags else "no hypervisor flag"


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def facts() -> dict[str, Any]:
    return {
        "kernel": platform.release(),
        "kernel_version": platform.version(),
        "machine": platform.machine(),
        "cpus_online": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "virtualized": _virtualized(),
        "memory_mb": _mem_total_mb(),
        "os": _os_release(),
        "python": platform.python_version(),
        "iperf3": _version(["iperf3", "--version"]),
        "iptables": _version(["iptables", "--version"]),
        "nft": _version(["nft", "--version"]),
        "iproute2": _version(["ip", "-V"]),
        "clang": _version(["clang", "--version"]),
    }


def _os_release() -> str:
    path = Path("/etc/os-release")
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    return platform.platform()
