"""The clock is injected wherever time matters, so tests can pin it and the flows engine can
run virtual time (weeks of timers in a second, in tests, the demo and backtests)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Current time, timezone-aware, in UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """Virtual time: stands still until advanced. Thread-safe, as the API and engine share it."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("ManualClock needs a timezone-aware start")
        self._now = start.astimezone(UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta) -> datetime:
        if delta < timedelta(0):
            raise ValueError("time only moves forward")
        with self._lock:
            self._now += delta
            return self._now

    def set(self, when: datetime) -> None:
        with self._lock:
            if when < self._now:
                raise ValueError("time only moves forward")
            self._now = when.astimezone(UTC)


class CatchUpClock(ManualClock):
    """Virtual time that becomes real time: it stands still until moved, like a ManualClock,
    then ``release()`` hands over to the system clock for good. ``momently demo`` plays hours
    of synthetic traffic as if it arrived live, then serves live on the same engine."""

    def __init__(self, start: datetime) -> None:
        super().__init__(start)
        self._released = False

    def now(self) -> datetime:
        return datetime.now(UTC) if self._released else super().now()

    def release(self) -> None:
        if super().now() > datetime.now(UTC):
            raise ValueError("the virtual time is ahead of the system clock")
        self._released = True

    @property
    def released(self) -> bool:
        return self._released
