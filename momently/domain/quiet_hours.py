"""Quiet hours: a daily window of local time in which nothing is sent, in the person's own
time zone. A send that falls inside is deferred to the window's end, not dropped.

Windows may wrap midnight (21:00-08:00). Daylight-saving changes are handled in local time:
the end of the window is the first instant whose local wall-clock time is at or after ``end``,
so on a spring-forward night whose ``end`` falls in the skipped hour the send goes at the
first valid instant after the gap, and on a fall-back night the first of the two
occurrences is used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

UTC = ZoneInfo("UTC")
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class InvalidQuietHours(ValueError):
    pass


def parse_hhmm(text: object) -> time:
    m = _HHMM.match(str(text)) if isinstance(text, str) else None
    if m is None:
        raise InvalidQuietHours(f"expected a time of day as HH:MM (e.g. 21:00), not {text!r}")
    return time(int(m.group(1)), int(m.group(2)))


@dataclass(frozen=True, slots=True)
class QuietHours:
    start: time
    end: time

    @classmethod
    def parse(cls, start: object, end: object) -> QuietHours:
        q = cls(parse_hhmm(start), parse_hhmm(end))
        if q.start == q.end:
            raise InvalidQuietHours("quiet hours must not start and end at the same time")
        return q

    def contains(self, local: time) -> bool:
        """Is this wall-clock time inside the window (start inclusive, end exclusive)?"""
        t = local.replace(tzinfo=None, fold=0)
        if self.start < self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end


def is_quiet(q: QuietHours, at: datetime, tz: ZoneInfo) -> bool:
    return q.contains(at.astimezone(tz).time())


def next_allowed(q: QuietHours, at: datetime, tz: ZoneInfo) -> datetime:
    """``at`` itself when it is outside the window, else the window's end (UTC-aware)."""
    local = at.astimezone(tz)
    if not q.contains(local.time()):
        return at
    day = local.date()
    if q.start > q.end and local.time() >= q.start:
        day += timedelta(days=1)  # in the evening part of a window that wraps midnight
    return first_instant_at_or_after(day, q.end, tz).astimezone(at.tzinfo)


def first_instant_at_or_after(day: date, wall: time, tz: ZoneInfo) -> datetime:
    """The first real instant whose local time on ``day`` is ``wall`` or, if ``wall`` does not
    exist that day (spring forward), the first instant after the gap."""
    naive = datetime.combine(day, wall)
    probe = naive
    for _ in range(24 * 60):  # ``wall`` may fall in a gap: step to the first time that exists
        c = probe.replace(tzinfo=tz, fold=0)
        if c.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == probe:
            return c
        probe += timedelta(minutes=1)
    raise AssertionError("no valid local time within a day")  # pragma: no cover
