"""The guard: keeps managed attachments on their routes while the CNI churns them.

CNIs rewrite their routes (Calico resync, kube-router RouteReplace, flannel re-adding every
10 s): a delete + re-create, or a replace without our encap, silently removes the program.
The guard listens to RTM_NEWROUTE/RTM_DELROUTE (RTMGRP_IPV4_ROUTE|RTMGRP_IPV6_ROUTE) in the
route's netns and re-applies the desired encap as soon as a managed route shows up without
it — within milliseconds, well under the 1 s bound. Lost events (ENOBUFS) and a periodic
timer trigger a full resync from a dump, so a missed event is repaired too.

The guard never loads programs: the desired state holds ProgramRef fds the caller keeps open.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import threading
import time
from collections.abc import Iterable

from . import labels, netlink
from .engine import RouteEngine
from .model import RT_TABLE_MAIN, ObservedRoute
from .plan import Kind, RouteIntent

log = logging.getLogger(__name__)

# After the first event of a burst, wait this long for the rest (a CNI delete+add, or a
# resync touching many routes, arrives as a burst): one batch instead of many.
DEBOUNCE_SECONDS = 0.005


class RouteGuard:
    """Watches one table of one netns and re-applies the desired intents when lost."""

    def __init__(
        self,
        netns: str | None = None,
        table: int = RT_TABLE_MAIN,
        resync_seconds: float = 30.0,
    ) -> None:
        self.netns = netns
        self.table = table
        self.resync_seconds = resync_seconds
        self.reapplies = 0  # routes whose encap the guard had to put back
        self.resyncs = 0
        self.last_error: str | None = None
        self._desired: dict[tuple[bytes, int], RouteIntent] = {}
        self._expected: dict[tuple[bytes, int], dict[str, str]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake_r, self._wake_w = _pipe()
        self._thread: threading.Thread | None = None
        self._events = netlink.RouteSocket(
            netns, groups=netlink.RTMGRP_IPV4_ROUTE | netlink.RTMGRP_IPV6_ROUTE
        )
        self._engine = RouteEngine(netns, table)
        self._resync_all = False

    # --- desired state -------------------------------------------------------------------

    def set_desired(self, intents: Iterable[RouteIntent]) -> None:
        """Replace the set of guarded intents (each one complete for its hooks)."""
        desired: dict[tuple[bytes, int], RouteIntent] = {}
        expected: dict[tuple[bytes, int], dict[str, str]] = {}
        for intent in intents:
            desired[intent.dst.key] = intent
            expected[intent.dst.key] = {
                hook: labels.wire_label(prog.label, hook, intent.headroom if hook == "xmit" else 0)
                for hook, prog in intent.hooks.items()
                if prog is not None
            }
        with self._lock:
            self._desired = desired
            self._expected = expected
            self._resync_all = True
        self._wake()

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> RouteGuard:
        self._thread = threading.Thread(target=self._run, name="lwt-route-guard", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._events.close()
        self._engine.close()
        _close_pipe(self._wake_r, self._wake_w)

    def __enter__(self) -> RouteGuard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # a full pipe already wakes the loop
            os.write(self._wake_w, b"x")

    # --- loop ----------------------------------------------------------------------------

    def _is_lost(self, kind: int, route: ObservedRoute) -> bool:
        """True when an event shows a managed route without (all of) its encap."""
        expected = self._expected.get(route.dst.key)
        if expected is None:
            # A wider route changed: owned host routes may need (re)creating.
            return not route.dst.is_host and route.table == self.table
        if route.table != self.table:
            return False
        if kind == netlink.RTM_DELROUTE:
            return route.owned  # ours to re-create; a CNI route comes back by itself
        return any(route.encap_labels.get(h) != label for h, label in expected.items())

    def _run(self) -> None:
        next_resync = time.monotonic() + self.resync_seconds
        poller = select.poll()
        poller.register(self._events.fileno(), select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while not self._stop.is_set():
            timeout_ms = max(0, int((next_resync - time.monotonic()) * 1000))
            ready = poller.poll(timeout_ms)
            dirty: set[tuple[bytes, int]] = set()
            resync = False
            for fd, _mask in ready:
                if fd == self._wake_r:
                    os.read(self._wake_r, 4096)
            if any(fd == self._events.fileno() for fd, _ in ready):
                time.sleep(DEBOUNCE_SECONDS)
                resync |= self._drain(dirty)
            with self._lock:
                if self._resync_all:
                    resync, self._resync_all = True, False
            if time.monotonic() >= next_resync:
                resync = True
            if resync:
                next_resync = time.monotonic() + self.resync_seconds
                self.resyncs += 1
            if self._stop.is_set():
                break
            if resync or dirty:
                self._reapply(None if resync else dirty)

    def _drain(self, dirty: set[tuple[bytes, int]]) -> bool:
        """Read every pending event; returns True when a full resync is needed."""
        resync = False
        while True:
            ready, _, _ = select.select([self._events.sock], [], [], 0)
            if not ready:
                return resync
            try:
                events = self._events.recv_events()
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # events were dropped: trust only a dump
                    resync = True
                    continue
                raise
            with self._lock:
                for event in events:
                    if self._is_lost(event.kind, event.route):
                        if event.route.dst.key in self._expected:
                            dirty.add(event.route.dst.key)
                        else:
                            resync = True

    def _reapply(self, dirty: set[tuple[bytes, int]] | None) -> None:
        with self._lock:
            if dirty is None:
                intents = list(self._desired.values())
            else:
                intents = [self._desired[k] for k in dirty if k in self._desired]
        if not intents:
            return
        try:
            result = self._engine.apply(self._engine.plan(intents))
        except Exception as exc:  # keep guarding: report and retry at the next event/resync
            self.last_error = str(exc)
            log.exception("guard re-apply failed")
            return
        changed = sum(n for k, n in result.counts.items() if k != Kind.UNCHANGED.value)
        self.reapplies += changed
        if changed:
            log.info("guard re-applied %d route(s): %s", changed, result.counts)
        # Unknown destinations are routes the CNI removed: they come back with an event.
        errors = {
            d: e for d, e in result.failures.items() if "no route delivers" not in str(e)
        }
        self.last_error = next(iter(errors.values())).args[0] if errors else None


def _pipe() -> tuple[int, int]:
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    return r, w


def _close_pipe(r: int, w: int) -> None:
    for fd in (r, w):
        with contextlib.suppress(OSError):
            os.close(fd)
