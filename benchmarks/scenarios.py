"""Datapath scenarios: what sits on the path to the measured pod while traffic runs.

Every filtering scenario applies the same policy, "drop TCP to port DENIED_TCP_PORT of the
pod", so the benchmark traffic (other ports) is evaluated and passed:

- `plain`: nothing; the baseline every figure is divided by.
- `lwt-noop/<hook>`: an LWT program that only passes the packet (the cost of the hook
  itself; a built-in's own work is its cost over the no-op on the same hook).
- `counters/<hook>`, `port-filter/<hook>`: our built-ins on the pod's host route.
- `tc-bpf`: benchmarks/tc_port_filter.c on the pod's host-side veth (clsact egress).
- `iptables`: one rule per pod in FORWARD (`-d POD -p tcp --dport P -j DROP`); the measured
  pod's rule comes last, so its packets walk every other pod's rule first, as the last pod
  added to a linear chain does.
- `nftables`: one rule matching a set of {pod address . port} with one element per pod.

With `other_pods` = N (scale phase), LWT programs are attached to the N other pod routes too
(the same single program), iptables gets N more rules, the nftables set N more elements.
tc filters sit on each pod's own veth, so other pods do not change the measured pod's path:
tc is not part of the scale phase.
"""
from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks import shell
from benchmarks.errors import CommandError, ScenarioError
from benchmarks.lwt import LwtProgram, LwtPrograms, RouteAttacher
from benchmarks.topology import (
    MEASURED_ROUTE,
    POD_B_HOST_DEV,
    POD_B_IP,
    BenchNode,
)
from benchmarks.traffic import DENIED_TCP_PORT

IPPROTO_TCP = 6
NFT_TABLE = "lwtbench"


@dataclass
class Context:
    """What scenarios need to set themselves up; owned and closed by the runner."""

    node: BenchNode
    programs: LwtPrograms
    attacher: RouteAttacher
    bpffs: Path
    tc_object: Path
    tcp_rr: Path
    lwt_noop: Path
    _tc_pin: Path | None = None

    def tc_program(self) -> Path:
        """The tc comparison program, loaded (once) and pinned; its deny map configured."""
        if self._tc_pin is None:
            shell.require_tools("bpftool", "tc")
            pin = self.bpffs / "tc_port_filter"
            maps = self.bpffs / "tc_maps"
            maps.mkdir(exist_ok=True)
            shell.run(["bpftool", "prog", "load", str(self.tc_object), str(pin),
                       "type", "classifier", "pinmaps", str(maps)])
            key = struct.pack("<HBB", DENIED_TCP_PORT, IPPROTO_TCP, 0)
            shell.run(["bpftool", "map", "update", "pinned", str(maps / "tc_pf_ports"),
                       "key", *(f"0x{b:02x}" for b in key), "value", "0x01"])
            self._tc_pin = pin
        return self._tc_pin


class Scenario:
    name: str = ""
    family: str = ""  # plain | ours | tc | iptables | nftables
    drops_denied_port: bool = False
    scales: bool = True  # takes part in the scale phase

    def setup(self, ctx: Context) -> None:
        raise NotImplementedError

    def teardown(self, ctx: Context) -> None:
        raise NotImplementedError

    def check_applied(self, ctx: Context) -> None:
        """Raises ScenarioError when the set-up is not visibly in place."""


class PlainRoute(Scenario):
    name = "plain"
    family = "plain"

    def setup(self, ctx: Context) -> None:
        pass

    def teardown(self, ctx: Context) -> None:
        pass

    def check_applied(self, ctx: Context) -> None:
        if "encap" in ctx.node.measured_route_dump():
            raise ScenarioError("the plain route still carries an encap: a teardown failed")


class OurProgram(Scenario):
    family = "ours"

    def __init__(self, builtin: str, hook: str) -> None:
        self.builtin = builtin
        self.hook = hook
        self.name = f"{builtin}/{hook}"
        self.drops_denied_port = builtin == "port-filter"

    def _routes(self, ctx: Context) -> tuple[list[str], list[str]]:
        others = [f"{ip}/32" for ip in ctx.node.other_pod_ips(ctx.node.other_pods)]
        return [MEASURED_ROUTE], others

    def program(self, ctx: Context) -> LwtProgram:
        return ctx.programs.get(self.builtin, self.hook)

    def setup(self, ctx: Context) -> None:
        prog = self.program(ctx)
        measured, others = self._routes(ctx)
        ctx.attacher.attach(prog, others)
        ctx.attacher.attach(prog, measured)

    def teardown(self, ctx: Context) -> None:
        measured, others = self._routes(ctx)
        ctx.attacher.detach(measured)
        ctx.attacher.detach(others)

    def check_applied(self, ctx: Context) -> None:
        dump = ctx.node.measured_route_dump()
        if f"encap bpf {self.hook} " not in dump:
            raise ScenarioError(f"{self.name}: the measured route has no {self.hook} encap: {dump}")


class LwtNoop(OurProgram):
    """benchmarks/lwt_noop.c on a hook: what being on the route costs before any work."""

    def __init__(self, hook: str) -> None:
        super().__init__("lwt-noop", hook)
        self.family = "lwt-noop"

    def program(self, ctx: Context) -> LwtProgram:
        return ctx.programs.get_object(ctx.lwt_noop, "lwt/noop", self.hook)


class TcBpf(Scenario):
    name = "tc-bpf"
    family = "tc"
    drops_denied_port = True
    scales = False

    def setup(self, ctx: Context) -> None:
        pin = ctx.tc_program()
        host = ctx.node.host
        shell.run(["tc", "-n", host, "qdisc", "add", "dev", POD_B_HOST_DEV, "clsact"])
        shell.run(["tc", "-n", host, "filter", "add", "dev", POD_B_HOST_DEV, "egress",
                   "bpf", "direct-action", "object-pinned", str(pin)])

    def teardown(self, ctx: Context) -> None:
        shell.run(["tc", "-n", ctx.node.host, "qdisc", "del", "dev", POD_B_HOST_DEV, "clsact"],
                  check=False)


class Iptables(Scenario):
    name = "iptables"
    family = "iptables"
    drops_denied_port = True

    def setup(self, ctx: Context) -> None:
        shell.require_tools("iptables-restore")
        pods: Sequence[str] = [*ctx.node.other_pod_ips(ctx.node.other_pods), POD_B_IP]
        rules = "".join(
            f"-A FORWARD -d {ip}/32 -p tcp -m tcp --dport {DENIED_TCP_PORT} -j DROP\n"
            for ip in pods
        )
        shell.run(["iptables-restore", "-w"], netns=ctx.node.host,
                  input_text=f"*filter\n:FORWARD ACCEPT [0:0]\n{rules}COMMIT\n")

    def teardown(self, ctx: Context) -> None:
        # iptables-nft (Debian's iptables) keeps an emptied chain hooked into netfilter:
        # delete the whole table so later scenarios pay nothing for it.
        shell.run(["iptables", "-w", "-F"], netns=ctx.node.host, check=False)
        shell.run(["nft", "delete", "table", "ip", "filter"], netns=ctx.node.host,
                  check=False)

    def check_applied(self, ctx: Context) -> None:
        out = shell.run(["iptables", "-w", "-S", "FORWARD"], netns=ctx.node.host).stdout
        count = out.count("-j DROP")
        if count != ctx.node.other_pods + 1:
            raise ScenarioError(f"iptables: {count} rules in FORWARD, expected "
                                f"{ctx.node.other_pods + 1}")


class Nftables(Scenario):
    name = "nftables"
    family = "nftables"
    drops_denied_port = True

    def setup(self, ctx: Context) -> None:
        shell.require_tools("nft")
        pods = [*ctx.node.other_pod_ips(ctx.node.other_pods), POD_B_IP]
        elements = ", ".join(f"{ip} . {DENIED_TCP_PORT}" for ip in pods)
        ruleset = (
            f"table ip {NFT_TABLE} {{\n"
            "  set deny {\n"
            "    type ipv4_addr . inet_service\n"
            f"    elements = {{ {elements} }}\n"
            "  }\n"
            "  chain forward {\n"
            "    type filter hook forward priority 0; policy accept;\n"
            "    ip daddr . tcp dport @deny drop\n"
            "  }\n"
            "}\n"
        )
        try:
            shell.run(["nft", "-f", "-"], netns=ctx.node.host, input_text=ruleset)
        except CommandError as e:
            raise ScenarioError(f"nftables: loading the ruleset failed: {e}") from e

    def teardown(self, ctx: Context) -> None:
        shell.run(["nft", "delete", "table", "ip", NFT_TABLE], netns=ctx.node.host,
                  check=False)


def all_scenarios(hooks: Sequence[str] = ("out", "in", "xmit")) -> list[Scenario]:
    ours: list[Scenario] = [
        OurProgram(builtin, hook) for builtin in ("counters", "port-filter") for hook in hooks
    ]
    # lwt-noop on every hook: a built-in's own work is its cost over the no-op on its hook
    noops: list[Scenario] = [LwtNoop(hook) for hook in hooks]
    return [PlainRoute(), *noops, *ours, TcBpf(), Iptables(), Nftables()]
