"""The three traffic measurements, each sent to the measured pod along one `TrafficPath`.

- TCP throughput: iperf3, one stream, bits/s received by the pod.
- UDP packet rate: iperf3 `-u -b 0 -l 64`, packets/s *delivered* to the pod (sent - lost):
  small packets so the per-packet cost of a hook shows, not the per-byte cost of copying.
- Request/response latency: `tcp_rr` (1-byte request, 1-byte answer, one connection, the
  netperf TCP_RR equivalent), transactions/s and latency percentiles.

Servers run in the measured pod for the whole run; clients are started per measurement.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Sample:
    """One measurement of all three metrics for one scenario in one round."""

    tcp_bps: float
    udp_pps: float
    rr_tps: float
    rr_mean_us: float
    rr_p50_us: float
    rr_p99_us: float


class TrafficServers:
    """iperf3 and tcp_rr servers inside the measured pod, kept for the whole run."""

    def __init__(self, node: BenchNode, tcp_rr: Path) -> None:
        shell.require_tools("iperf3")
        self.node = node
        self.tcp_rr = tcp_rr
        self._iperf = shell.start(["iperf3", "-s", "-p", str(IPERF_PORT)], netns=node.pod_b)
        self._rr = shell.start([str(tcp_rr), "server", str(RR_PORT)], netns=node.pod_b)
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


def measure(path: TrafficPath, servers: TrafficServers, seconds: float) -> Sample:
    tcp = _tcp_throughput(path, seconds)
    udp = _udp_rate(path, seconds)
    rr = _request_response(path, servers.tcp_rr, seconds)
    return Sample(
        tcp_bps=tcp,
        udp_pps=udp,
        rr_tps=rr["transactions"] / rr["seconds"],
        rr_mean_us=rr["mean_us"],
        rr_p50_us=rr["p50_us"],
        rr_p99_us=rr["p99_us"],
    )


def _iperf(path: TrafficPath, seconds: float, *extra: str) -> dict:
    # iperf3 takes whole seconds; the server answers one test at a time, so retry briefly
    # when a previous test is still being torn down ("the server is busy").
    duration = str(max(1, round(seconds)))
    argv = ["iperf3", "-c", POD_B_IP, "-p", str(IPERF_PORT), "-t", duration, "-J", *extra]
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


def _tcp_throughput(path: TrafficPath, seconds: float) -> float:
    result = _iperf(path, seconds)
    return float(result["end"]["sum_received"]["bits_per_second"])


def _udp_rate(path: TrafficPath, seconds: float) -> float:
    result = _iperf(path, seconds, "-u", "-b", "0", "-l", str(UDP_PAYLOAD))
    received = result["end"]["sum_received"]
    delivered = received["packets"] - received["lost_packets"]
    if received["seconds"] <= 0:
        raise MeasurementError("iperf3 UDP reported a zero-length test")
    return float(delivered) / float(received["seconds"])


def _request_response(path: TrafficPath, tcp_rr: Path, seconds: float) -> dict:
    proc = shell.run([str(tcp_rr), "client", POD_B_IP, str(RR_PORT), str(seconds)],
                     netns=path.sender_netns, check=False, timeout=seconds + 30)
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
