"""Durations as flow authors write them: ``30m``, ``2h``, ``7d``, ``1w``, ``1h30m``, ``90s``.

One grammar for every window in flows and segments, so ``within: 30m`` means the same thing
in a trigger, a goal and a condition. Months and years are not durations (their length
varies); date triggers have their own ``repeat: yearly``.
"""

from __future__ import annotations

import re
from typing import Final

UNITS_MS: Final = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
PATTERN: Final = r"^(?:\d+(?:ms|s|m|h|d|w))+$"
_PART = re.compile(r"(\d+)(ms|s|m|h|d|w)")
_WHOLE = re.compile(PATTERN)
HINT: Final = "write a whole number and a unit (ms, s, m, h, d, w), e.g. 30m, 2h, 7d or 1h30m"


class InvalidDuration(ValueError):
    pass


def parse_duration(text: object) -> int:
    """Milliseconds in ``text``; raises InvalidDuration with the grammar in the message."""
    if not isinstance(text, str) or not _WHOLE.match(text.strip()):
        raise InvalidDuration(f"{text!r} is not a duration: {HINT}")
    total = sum(int(n) * UNITS_MS[unit] for n, unit in _PART.findall(text.strip()))
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
    return sign * sum(int(n) * UNITS_MS[unit] for n, unit in _PART.findall(body))
