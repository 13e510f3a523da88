"""Running the operator in-process against the emulator, and waiting for conditions."""
from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from lwt_operator.config import OperatorConfig
from lwt_operator.runner import run_operator

T = TypeVar("T")


class RunningOperator:
    """`run_operator` in a thread with its own event loop; `stop()` ends it like SIGTERM does."""

    def __init__(self, config: OperatorConfig) -> None:
        self.config = config
        self.stop_flag = threading.Event()
        self.ready_flag = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="lwt-operator", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(run_operator(self.config, stop_flag=self.stop_flag,
                                     ready_flag=self.ready_flag))
        except BaseException as exc:  # reported by stop() / wait_ready()
            self.error = exc

    def start(self, timeout: float = 20) -> RunningOperator:
        self._thread.start()
        if not self.ready_flag.wait(timeout):
            self.stop()
            raise TimeoutError(f"the operator did not get ready in {timeout}s: {self.error!r}")
        return self

    def stop(self, timeout: float = 20) -> None:
        self.stop_flag.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError("the operator did not stop")
        if self.error is not None:
            raise self.error


def wait_for(probe: Callable[[], T | None], timeout: float = 15, what: str = "") -> T:
    """Poll `probe` until it returns something truthy; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except Exception as exc:  # the object may not exist yet
            last = exc
        else:
            if last:
                return last
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or probe}; last: {last!r}")
