"""A minimal agent process for the crash test: reconcile N routes onto one pinned program.

    python -m tests.route.attach_many --netns NS --pin PIN --owner O --dst-file F
        [--chunk 200] [--pause 0.01]

It prints ``sent <n>`` after every chunk the kernel has processed (and sleeps ``--pause``
so a test can SIGKILL it mid-batch), then the result counts as one JSON line. Each run
adopts what an earlier (killed) run already did: the engine's reconcile is idempotent.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

from lwt_agent.bpf import syscall
from lwt_agent.route import ProgramRef, RouteEngine, RouteIntent, labels, netlink
from lwt_agent.route.model import Destination


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--netns", required=True)
    parser.add_argument("--pin", required=True)
    parser.add_argument("--owner", required=True)
    parser.add_argument("--dst-file", required=True)
    parser.add_argument("--chunk", type=int, default=netlink.CHUNK_MESSAGES)
    parser.add_argument("--pause", type=float, default=0.0)
    args = parser.parse_args(argv)

    netlink.CHUNK_MESSAGES = args.chunk
    send_chunk = netlink.RouteSocket._send_chunk

    def traced(self: netlink.RouteSocket, messages, first, failures) -> None:  # type: ignore[no-untyped-def]
        send_chunk(self, messages, first, failures)
        print(f"sent {first + len(messages)}", flush=True)
        if args.pause:
            time.sleep(args.pause)

    netlink.RouteSocket._send_chunk = traced  # type: ignore[method-assign]

    fd = syscall.obj_get(args.pin)
    info = syscall.prog_info(fd)
    ref = ProgramRef(fd, labels.program_label(args.owner, "out", info.tag, info.id))
    wanted = {"out": ref}
    with open(args.dst_file) as f:
        intents = [RouteIntent(Destination.of(line.strip()), wanted) for line in f if line.strip()]
    with RouteEngine(args.netns) as engine:
        result = engine.converge(intents, owners={labels.owner_token(args.owner)})
    print(json.dumps(result.to_json()), flush=True)
    return 1 if result.failures else 0


if __name__ == "__main__":
    sys.exit(main())
