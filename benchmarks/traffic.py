"""The three traffic measurements, each sent to the measured pod along one `TrafficPath`.

- TCP throughput: iperf3, one stream, bits/s received by the pod, and bits per CPU-second
  of the sender and receiver processes.
- UDP packet rate: iperf3 `-u -b 0 -l 64`, small packets so the per-packet cost of a hook
  shows, not the per-byte cost of copying: packets/s sent, packets per CPU-second of the
  sender (softirq work runs inline and is charged to it: forwarding through the host),
  and packets/s delivered (noisy: it depends on how much CPU the receiver got).

Per-CPU-second figures are the ones to trust on a shared machine: a throughput falls when
someone else takes the CPU, the CPU cost of a packet barely moves.
- Request/response latency: `tcp_rr` (1-byte request, 1-byte answer, one connection, the
  netperf TCP_RR equivalent), transactions/s and latency percentiles.

Servers run in the measured pod for the whole run; clients are started per measurement.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from benchmarks import shell
from benchmarks.errors import BenchError, MeasurementError
from benchmarks.topology import POD_B_IP, BenchNode, TrafficPath

IPERF_PORT = 5201
RR_PORT = 7001
# The port every filter scenario denies. Nothing listens there; the benchmark traffic uses
# the ports above, so filters evaluate every packet and pass it.
DENIED_TCP_PORT = 7999
UDP_PAYLOAD = 64
# Every sender and receiver runs on one CPU (as netperf -T pins them). Left to the
# scheduler on these 2 vCPUs, request/response sometimes lands on different vCPUs and every
# transaction then waits for a halted vCPU to be woken through the hypervisor (the median flips
# from ~5 µs to ~40 µs while that placement lasts), and the CPU cost of a UDP packet moves by
# ±5 % with the placement; on one CPU both are steady (±1 %). The whole path (sender, the
# host's forwarding softirq with the hook under test, receiver) then shares that CPU, so the
# raw rates are one-CPU figures.
TRAFFIC_CPU = str((os.cpu_count() or 1) - 1)
_ON_TRAFFIC_CPU = ("taskset", "-c", TRAFFIC_CPU)


# What each kind of measurement yields (metric names are those of results.METRICS).
KINDS: dict[str, tuple[str, ...]] = {
    "tcp": ("tcp_bps", "tcp_bits_per_cpu_s"),
    "udp": ("udp_pps", "udp_packets_per_cpu_s", "udp_delivered_pps"),
    "rr": ("rr_tps", "rr_mean_us", "rr_p50_us", "rr_p99_us"),
}


class TrafficServers:
    """iperf3 and tcp_rr servers inside the measured pod, kept for the whole run."""

    def __init__(self, node: BenchNode, tcp_rr: Path) -> None:
        shell.require_tools("iperf3", "taskset")
        self.node = node
        self.tcp_rr = tcp_rr
        self._iperf = shell.start([*_ON_TRAFFIC_CPU, "iperf3", "-s", "-p", str(IPERF_PORT)],
                                  netns=node.pod_b)
        self._rr = shell.start([*_ON_TRAFFIC_CPU, str(tcp_rr), "server", str(RR_PORT)],
                               netns=node.pod_b)
        self._wait_listening()

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for proc, what in ((self._iperf, "iperf3 -s"), (self._rr, "tcp_rr server")):
                if proc.poll() is not None:
                    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                    raise BenchError(f"{what} in the pod namespace exited: {err.strip()}")
            out = shell.run(["ss", "-Hltn"], netns=self.node.pod_b).stdout
            if f":{IPERF_PORT} " in out and f":{RR_PORT} " in out:
                return
            time.sleep(0.05)
        raise BenchError("traffic servers did not start listening within 10 s")


def measure(kind: str, path: TrafficPath, servers: TrafficServers,
            seconds: float) -> dict[str, float]:
    """One measurement of one kind (`KINDS`) along `path`: {metric: value}."""
    if kind == "tcp":
        return _tcp_throughput(path, seconds)
    if kind == "udp":
        return _udp_rate(path, seconds)
    if kind == "rr":
        rr = _request_response(path, servers.tcp_rr, seconds)
        return {
            "rr_tps": rr["transactions"] / rr["seconds"],
            "rr_mean_us": rr["mean_us"],
            "rr_p50_us": rr["p50_us"],
            "rr_p99_us": rr["p99_us"],
        }
    raise BenchError(f"unknown measurement kind {kind!r}; known: {', '.join(KINDS)}")


def _iperf(path: TrafficPath, seconds: float, *extra: str) -> dict:
    # iperf3 takes whole seconds; the server answers one test at a time, so retry briefly
    # when a previous test is still being torn down ("the server is busy").
    duration = str(max(1, round(seconds)))
    argv = [*_ON_TRAFFIC_CPU, "iperf3", "-c", POD_B_IP, "-p", str(IPERF_PORT), "-t", duration,
            "-J", *extra]
    for _ in range(5):
        proc = shell.run(argv, netns=path.sender_netns, check=False,
                         timeout=float(duration) + 30)
        try:
            result = json.loads(proc.stdout)
        except json.JSONDecodeError as e:
            raise MeasurementError(
                f"iperf3 gave no JSON (exit {proc.returncode}): {proc.stderr.strip()}"
            ) from e
        error = result.get("error")
        if not error:
            return result
        if "busy" not in error:
            raise MeasurementError(f"iperf3 {' '.join(extra)} along {path.name}: {error}")
        time.sleep(0.5)
    raise MeasurementError("iperf3 server stayed busy; is another client using it?")


def _cpu_seconds(result: dict, *sides: str) -> float:
    """CPU time (user + system) iperf3 measured for its client ("host") and/or server
    ("remote") process over the test. With this kernel's tick-based accounting the softirq
    work a process triggers inline (here: forwarding the packet through the host namespace
    to the pod) is charged to that process, so this is the CPU the path cost."""
    cpu = result["end"]["cpu_utilization_percent"]
    seconds = float(result["end"]["sum_sent"]["seconds"])
    return sum(float(cpu[f"{side}_total"]) for side in sides) / 100.0 * seconds


def _tcp_throughput(path: TrafficPath, seconds: float) -> dict[str, float]:
    result = _iperf(path, seconds)
    received = result["end"]["sum_received"]
    bits = float(received["bytes"]) * 8
    cpu = _cpu_seconds(result, "host", "remote")
    if cpu <= 0:
        raise MeasurementError("iperf3 TCP reported no CPU time")
    return {"tcp_bps": float(received["bits_per_second"]), "tcp_bits_per_cpu_s": bits / cpu}


def _udp_rate(path: TrafficPath, seconds: float) -> dict[str, float]:
    result = _iperf(path, seconds, "-u", "-b", "0", "-l", str(UDP_PAYLOAD))
    sent = result["end"]["sum_sent"]
    received = result["end"]["sum_received"]
    if sent["seconds"] <= 0 or received["seconds"] <= 0:
        raise MeasurementError("iperf3 UDP reported a zero-length test")
    cpu = _cpu_seconds(result, "host")
    if cpu <= 0:
        raise MeasurementError("iperf3 UDP reported no sender CPU time")
    delivered = received["packets"] - received["lost_packets"]
    return {
        "udp_pps": float(sent["packets"]) / float(sent["seconds"]),
        "udp_packets_per_cpu_s": float(sent["packets"]) / cpu,
        "udp_delivered_pps": float(delivered) / float(received["seconds"]),
    }


def _request_response(path: TrafficPath, tcp_rr: Path, seconds: float) -> dict:
    argv = [*_ON_TRAFFIC_CPU, str(tcp_rr), "client", POD_B_IP, str(RR_PORT), str(seconds)]
    proc = shell.run(argv, netns=path.sender_netns, check=False, timeout=seconds + 30)
    if proc.returncode != 0:
        raise MeasurementError(f"tcp_rr along {path.name}: {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def syn_gets_through(path: TrafficPath, tcp_rr: Path, port: int, timeout_ms: int = 300) -> bool:
    """True if a SYN to `port` of the measured pod is answered (SYN-ACK or RST)."""
    proc = shell.run([str(tcp_rr), "probe", POD_B_IP, str(port), str(timeout_ms)],
                     netns=path.sender_netns, check=False)
    if proc.returncode == 0:
        return True
    if proc.returncode == 3:
        return False
    raise MeasurementError(f"tcp_rr probe along {path.name}: {proc.stderr.strip()}")
