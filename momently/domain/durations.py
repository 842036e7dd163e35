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


def parse_duration(text: object) -> int:
    """Milliseconds in ``text``; raises InvalidDuration with the grammar in the message."""
    if not isinstance(text, str) or not _WHOLE.match(text.strip()):
        raise InvalidDuration(f"{text!r} is not a duration: {HINT}")
    total = _total(text, text.strip())
    if total <= 0:
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
