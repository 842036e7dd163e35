"""How each channel is doing, from the outcomes of the sends this process made.

A provider that refuses every message (an SMTP server answering 5xx, an expired API token)
does not stop the dispatcher: each delivery fails, falls back or dies, and the loop itself
stays healthy. So the dispatcher reports every send's outcome here, and ``/healthz`` shows a
channel whose last ``FAILING_AFTER`` sends in a row failed. One success clears it: a single
unknown mailbox is the recipient's problem, not the channel's.

Kept in memory, per process: it reflects the dispatcher running in this process."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Final

from momently.channels.base import Result, Sent

FAILING_AFTER: Final = 5  # sends in a row that failed before the channel is reported failing


@dataclass(frozen=True, slots=True)
class ChannelStatus:
    consecutive_failures: int = 0
    last_error: str | None = None  # the channel's reason code (smtp_550, timeout…), kept after a success
    last_success_ms: int | None = None
    last_failure_ms: int | None = None

    @property
    def failing(self) -> bool:
        return self.consecutive_failures >= FAILING_AFTER

    def after(self, result: Result, now_ms: int) -> ChannelStatus:
        if isinstance(result, Sent):
            return ChannelStatus(0, self.last_error, now_ms, self.last_failure_ms)
        return ChannelStatus(self.consecutive_failures + 1, result.reason[:200], self.last_success_ms, now_ms)


class ChannelHealth:
    """Thread-safe: the dispatcher sends from a pool of threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._status: dict[str, ChannelStatus] = {}

    def record(self, channel: str, result: Result, now_ms: int) -> None:
        with self._lock:
            self._status[channel] = self._status.get(channel, ChannelStatus()).after(result, now_ms)

    def snapshot(self) -> dict[str, ChannelStatus]:
        with self._lock:
            return dict(self._status)
