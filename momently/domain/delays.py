"""Delays: the enrollment is decided now, the message waits.

``delay: {for: 2d, at: "10:00", cancel_if: {...}}`` (or just ``delay: 2d``) holds a flow's
message back: it goes at ``decision + for`` or, with ``at``, at the first local ``HH:MM`` at or
after that, in the person's time zone. ``cancel_if`` is a condition evaluated at send time
(by the dispatcher, on the person's profile, segments and history then); when it holds, the
message is not sent and a ``Message Suppressed`` with reason ``cancelled`` says why.

Local times follow the quiet-hours rules: a time skipped by a daylight-saving change moves
to the first instant after the gap; a time that occurs twice (clocks going back) is the first
occurrence at or after ``decision + for``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

from momently.domain.conditions import Condition, compile_condition
from momently.domain.durations import parse_duration
from momently.domain.quiet_hours import first_instant_at_or_after, parse_hhmm

CANCELLED: Final = "cancelled"  # the reason of a delayed message whose cancel_if held


@dataclass(frozen=True, slots=True)
class Delay:
    for_ms: int
    at: time | None = None
    cancel_if: Condition | None = None
    cancel_spec: Any = None  # the condition as written, for the suppression's detail

    def send_time(self, decided_ms: int, tz: ZoneInfo) -> int:
        """When a message decided at ``decided_ms`` goes (epoch ms)."""
        return send_time(decided_ms, self.for_ms, self.at, tz)


def compile_delay(spec: object) -> Delay:
    """A ``delay`` that passed ``definitions.validate``: a duration, or ``{for, at, cancel_if}``."""
    if not isinstance(spec, dict):
        return Delay(parse_duration(spec))
    cancel = spec.get("cancel_if")
    return Delay(
        for_ms=parse_duration(spec["for"]),
        at=parse_hhmm(spec["at"]) if "at" in spec else None,
        cancel_if=compile_condition(cancel, path=("delay", "cancel_if"), decided=True)
        if cancel is not None
        else None,
        cancel_spec=cancel,
    )


def send_time(decided_ms: int, for_ms: int, at: time | None, tz: ZoneInfo) -> int:
    """``decided_ms + for_ms``, or with ``at`` the first instant at or after it whose local
    wall-clock time in ``tz`` is ``at`` (the first instant after the gap when a spring-forward
    change skips ``at`` that day)."""
    earliest = decided_ms + for_ms
    if at is None:
        return earliest
    day = datetime.fromtimestamp(earliest / 1000, tz=tz).date()
    for d in (day, day + timedelta(days=1)):
        for candidate in _instants(d, at, tz):
            ms = _ms(candidate)
            if ms >= earliest:
                return ms
    raise AssertionError("a local time of day occurs within two days")  # pragma: no cover


def _instants(day: date, at: time, tz: ZoneInfo) -> list[datetime]:
    """The instants of ``day`` whose local time is ``at``, in order: one, two when the clocks
    go back over it, or (when it is skipped) the first instant after the gap."""
    first = first_instant_at_or_after(day, at, tz)
    second = datetime.combine(day, at).replace(tzinfo=tz, fold=1)
    if second.utcoffset() != first.utcoffset() and _real(second):
        return [first, second]
    return [first]


def _real(local: datetime) -> bool:
    back = local.astimezone(UTC).astimezone(local.tzinfo)
    return back.replace(tzinfo=None) == local.replace(tzinfo=None)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
