"""One background loop for the engine's workers (the projector, the dispatcher): call
``step`` while it has work, sleep until woken or ``idle_seconds`` pass when it has none, and
keep going after an error (the step's own transaction guarantees nothing was half done).

A loop whose every round fails still looks alive from outside, so it keeps count: ``health``
says how many rounds in a row failed and why the last one did, and ``/healthz`` reports a
loop that has failed ``FAILING_AFTER`` rounds in a row (see api/app.py)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Final

FAILING_AFTER: Final = 3  # consecutive failed rounds (about a second apart) before "failing"

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LoopHealth:
    running: bool
    consecutive_failures: int
    last_error: str | None  # the exception type of the latest failed round, kept after a success

    @property
    def failing(self) -> bool:
        return self.consecutive_failures >= FAILING_AFTER

    def as_json(self) -> dict[str, object]:
        return {
            "running": self.running,
            "failing": self.failing,
            "consecutiveFailures": self.consecutive_failures,
            "lastError": self.last_error,
        }


class Background:
    def __init__(self, name: str, step: Callable[[], int], *, idle_seconds: float) -> None:
        self.name = name
        self.step = step
        self.idle_seconds = idle_seconds
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failures = 0
        self._last_error: str | None = None
        self._idle_rounds = 0  # rounds that found nothing to do, for ``wait_idle``
        self._idle = threading.Condition()

    def health(self) -> LoopHealth:
        return LoopHealth(self._thread is not None, self._failures, self._last_error)

    def wake(self) -> None:
        self._wake.set()

    def wait_idle(self, timeout: float) -> bool:
        """Wake the loop and block until a round that started after this call found nothing
        to do (virtual time: the clock was moved, everything now due has been handled).
        True at once when the loop is not running; False on timeout."""
        if self._thread is None:
            return True
        deadline = time.monotonic() + timeout
        with self._idle:
            # the first idle round may have started before the call; the second cannot have
            wanted = self._idle_rounds + 2
            while self._idle_rounds < wanted and self._thread is not None:
                seen = self._idle_rounds
                self._wake.set()  # again after each idle round, or the loop sleeps its idle time
                left = deadline - time.monotonic()
                if left <= 0 or not self._idle.wait_for(partial(self._idle_since, seen), left):
                    return False
            return True

    def _idle_since(self, rounds: int) -> bool:
        return self._idle_rounds > rounds

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
                self._failures = 0
            except Exception as exc:
                self._failures += 1
                # the kind only: the message of a database error quotes SQL and parameters, which
                # /healthz (unauthenticated) must not show; the log below has all of it
                self._last_error = type(exc).__name__
                log.exception("%s: a round failed (%d in a row); retrying", self.name, self._failures)
                busy = 0
                self._stop.wait(1.0)
            if not busy:
                with self._idle:
                    self._idle_rounds += 1
                    self._idle.notify_all()
                self._wake.wait(self.idle_seconds)
                self._wake.clear()
