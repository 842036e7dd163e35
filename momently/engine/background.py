"""One background loop for the engine's workers (the projector, the dispatcher): call
``step`` while it has work, sleep until woken or ``idle_seconds`` pass when it has none, and
keep going after an error (the step's own transaction guarantees nothing was half done)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Background:
    def __init__(self, name: str, step: Callable[[], int], *, idle_seconds: float) -> None:
        self.name = name
        self.step = step
        self.idle_seconds = idle_seconds
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def wake(self) -> None:
        self._wake.set()

    def start(self, idle_seconds: float | None = None) -> None:
        if self._thread is not None:
            return
        if idle_seconds is not None:
            self.idle_seconds = idle_seconds
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"momently-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._wake.set()
        self._thread.join()
        self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.step()
            except Exception:
                log.exception("%s: a round failed; retrying", self.name)
                busy = 0
                self._stop.wait(1.0)
            if not busy:
                self._wake.wait(self.idle_seconds)
                self._wake.clear()
