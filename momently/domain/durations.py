"""Durations as flow authors write them: ``30m``, ``2h``, ``7d``, ``1w``, ``1h30m``, ``90s``.

One grammar for every window in flows and segments, so ``within: 30m`` means the same thing
in a trigger, a goal and a condition. Months and years are not durations (their length
varies); date triggers have their own ``repeat: yearly``.
"""

from __future__ import annotations

import re
from typing import Final

UNITS_MS: Final = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
# No window, cap, expiry or offset is longer than a century. The bound keeps every instant
# computed from a duration (now + expiresIn, event time - window) a real date that a 64-bit
# millisecond column and a datetime can hold, whatever digits were written.
MAX_MS: Final = 36_525 * 86_400_000
PATTERN: Final = r"^(?:\d+(?:ms|s|m|h|d|w))+$"
_PART = re.compile(r"(\d+)(ms|s|m|h|d|w)")
_WHOLE = re.compile(PATTERN)
HINT: Final = "write a whole number and a unit (ms, s, m, h, d, w), e.g. 30m, 2h, 7d or 1h30m"


_WORDS: Final = {
    "ms": "ms", "millisecond": "ms", "milliseconds": "ms",
    "s": "s", "sec": "s", "secs": "s", "second": "s", "seconds": "s",
    "m": "m", "min": "m", "mins": "m", "minute": "m", "minutes": "m",
    "h": "h", "hr": "h", "hrs": "h", "hour": "h", "hours": "h",
    "d": "d", "day": "d", "days": "d",
    "w": "w", "wk": "w", "week": "w", "weeks": "w",
}  # fmt: skip
_NUMBER_UNIT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
TIME_OF_DAY: Final = r"^([01]\d|2[0-3]):[0-5]\d$"


class InvalidDuration(ValueError):
    pass


def _total(text: str, body: str) -> int:
    total = 0
    for number, unit in _PART.findall(body):
        digits = number.lstrip("0") or "0"
        if len(digits) > len(str(MAX_MS)):  # no int() of a thousand digits
            raise InvalidDuration(f"{text!r} is longer than 100 years")
        total += int(digits) * UNITS_MS[unit]
    if total > MAX_MS:
        raise InvalidDuration(f"{text!r} is longer than 100 years")
    return total


def format_duration(ms: int) -> str:
    """``5_400_000`` as ``1h30m``: the shortest spelling in whole units."""
    out = ""
    for unit in ("w", "d", "h", "m", "s", "ms"):
        n, ms = divmod(ms, UNITS_MS[unit])
        if n:
            out += f"{n}{unit}"
    return out or "0s"


def duration_problem(value: object) -> str:
    """What is wrong with a duration an author wrote, and what would be right: ``90`` needs a
    unit, ``1.5h`` is ``1h30m``, ``2 days`` is ``2d``; months are not durations."""
    text = str(value).strip() if isinstance(value, (str, int, float)) and not isinstance(value, bool) else ""
    match = _NUMBER_UNIT.match(text)
    if match:
        number, word = match.group(1), match.group(2).lower()
        if not word:
            if "." in number:
                return "a duration is a whole number and a unit, e.g. 90m or 2h"
            return f"a duration needs a unit, e.g. {number}d, {number}h or {number}m"
        if word in ("mo", "month", "months", "y", "yr", "year", "years"):
            return "months and years are not durations (their length varies): write days or weeks, e.g. 30d"
        unit = _WORDS.get(word)
        if unit is not None:
            amount = float(number) * UNITS_MS[unit]
            if "." in number and amount == int(amount) and amount > 0:
                return f"durations are whole numbers: write {format_duration(int(amount))}"
            if "." not in number:
                return f"write {number}{unit} (a number and its unit, no space)"
    return f"not a duration: {HINT}"


def time_of_day_problem(value: object) -> str:
    """A local time is ``HH:MM``, 24-hour, two digits each: ``9:00`` is ``09:00``. Unquoted,
    YAML 1.1 reads ``10:00`` as the number 600 (base 60): say to quote it."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 24 * 60:
        return f'quote the time: "{value // 60:02d}:{value % 60:02d}" (unquoted, YAML reads it as a number)'
    text = str(value).strip()
    parts = text.split(":")
    if len(parts) == 2 and all(p.isdigit() for p in parts) and int(parts[0]) < 24 and int(parts[1]) < 60:
        return f"a time of day is HH:MM with two digits: write {int(parts[0]):02d}:{int(parts[1]):02d}"
    return "not a time of day: write HH:MM, 24-hour, e.g. 09:00 or 21:30"


def parse_duration(text: object, *, allow_zero: bool = False) -> int:
    """Milliseconds in ``text``; raises InvalidDuration with the grammar in the message.
    ``allow_zero`` for settings where none is a meaningful amount (``lateness: 0s``)."""
    if not isinstance(text, str) or not _WHOLE.match(text.strip()):
        raise InvalidDuration(f"{text!r}: {duration_problem(text)}")
    total = _total(text, text.strip())
    if total <= 0 and not allow_zero:
        raise InvalidDuration(f"{text!r} is not a positive duration")
    return total


def parse_offset(text: object) -> int:
    """A signed duration that may be zero (date trigger offsets: ``-1d``, ``0d``, ``12h``)."""
    if not isinstance(text, str):
        raise InvalidDuration(f"{text!r} is not an offset: {HINT}, optionally preceded by -")
    body = text.strip()
    sign = -1 if body.startswith("-") else 1
    body = body.removeprefix("-")
    if not _WHOLE.match(body):
        raise InvalidDuration(f"{text!r} is not an offset: {HINT}, optionally preceded by -")
    return sign * _total(text, body)
