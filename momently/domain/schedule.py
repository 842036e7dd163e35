"""When date triggers fire: a date trait (birthday, signup anniversary, renewal date) plus an
offset, at a local time of day in the person's own time zone.

Yearly dates on 29 February fire on 28 February in other years. Local times that do not
exist (skipped by a daylight-saving change) move forward with the clock, as zoneinfo does.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from momently.domain.flow import DateTrigger


def trait_date(value: object) -> date | None:
    """``1990-05-17``, an ISO date-time (its calendar date as written), or None."""
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def _on_year(d: date, year: int) -> date:
    try:
        return d.replace(year=year)
    except ValueError:  # 29 February in a common year
        return date(year, 2, 28)


def fire_at(trigger: DateTrigger, day: date, tz: ZoneInfo) -> int:
    """When the anniversary ``day`` fires in ``tz`` (epoch ms): its local time plus the offset."""
    hh, mm = trigger.at
    local = datetime.combine(day, time(hh, mm), tzinfo=tz) + timedelta(milliseconds=trigger.offset_ms)
    return int(local.timestamp() * 1000)


def next_fire(trigger: DateTrigger, value: object, tz: ZoneInfo, after_ms: int) -> tuple[int, str] | None:
    """The first firing strictly after ``after_ms``: (epoch ms, the anniversary's local date
    as the occurrence key), or None when the trait is not a date or a one-off date has passed."""
    d = trait_date(value)
    if d is None:
        return None

    if trigger.repeat == "none":
        at = fire_at(trigger, d, tz)
        return (at, d.isoformat()) if at > after_ms else None
    # From the year before "now" (an offset can move a date across New Year), but never
    # before the date itself: a future renewal date first fires on that date.
    year = max(datetime.fromtimestamp(after_ms / 1000, tz=tz).year - 1, d.year)
    for y in range(year, year + 3):
        day = _on_year(d, y)
        at = fire_at(trigger, day, tz)
        if at > after_ms:
            return at, day.isoformat()
    return None  # pragma: no cover - three candidate years always include a future one


def moved(
    trigger: DateTrigger, value: object, old: ZoneInfo, new: ZoneInfo, at_ms: int
) -> tuple[int, str] | None:
    """The firing after the person's time zone changed from ``old`` to ``new`` at ``at_ms``.
    The anniversary still pending in the old zone keeps its occurrence key and moves to its
    local time in the new zone, or to ``at_ms`` when that time has already passed there (it is
    late, not skipped). One that already fired in the old zone is not planned again: the next
    is a year later (a one-off date, never)."""
    pending = next_fire(trigger, value, old, at_ms)
    if pending is None:
        return None
    at = fire_at(trigger, date.fromisoformat(pending[1]), new)
    return max(at, at_ms), pending[1]
