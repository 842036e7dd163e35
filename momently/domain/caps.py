"""Frequency caps: at most ``limit`` messages per person over a rolling window (``1h``,
``1d``, ``1w``) or a calendar day in the person's time zone, counted globally or only for one
channel, flow or tag.

Transactional (tier A) messages are exempt from caps by default (a receipt must not be
blocked by a promotion) but they are counted, so they use up room for marketing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from momently.domain.durations import InvalidDuration, parse_duration

CALENDAR_DAY = "calendar_day"
NEVER = 2**62
MAX_LIMIT = 1_000_000


class InvalidCap(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Send:
    """A message sent (history) or about to be (the candidate)."""

    at_ms: int
    channel: str
    flow_id: str
    tags: tuple[str, ...] = ()
    tier: str = "B"


@dataclass(frozen=True, slots=True)
class Cap:
    limit: int
    window_ms: int | None  # rolling window; None with calendar_day
    calendar_day: bool = False
    channel: str | None = None
    flow: str | None = None
    tag: str | None = None
    transactional: bool = False  # also applies to tier A

    def matches(self, s: Send) -> bool:
        return (
            (self.channel is None or s.channel == self.channel)
            and (self.flow is None or s.flow_id == self.flow)
            and (self.tag is None or self.tag in s.tags)
        )

    def applies_to(self, candidate: Send) -> bool:
        return self.matches(candidate) and (self.transactional or candidate.tier != "A")

    def describe(self) -> str:
        scope = (
            f"channel {self.channel}"
            if self.channel
            else f"flow {self.flow}"
            if self.flow
            else f"tag {self.tag}"
            if self.tag
            else "all messages"
        )
        per = "calendar day" if self.calendar_day else f"{(self.window_ms or 0) // 1000}s"
        return f"{self.limit} per {per} ({scope})"

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "limit": self.limit,
            "per": CALENDAR_DAY if self.calendar_day else f"{self.window_ms}ms",
        }
        for key in ("channel", "flow", "tag"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.transactional:
            out["transactional"] = True
        return out

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], where: str = "cap") -> Cap:
        unknown = set(doc) - {"limit", "per", "channel", "flow", "tag", "transactional"}
        if unknown:
            raise InvalidCap(f"{where}: unknown key {sorted(unknown)[0]!r}")
        limit = doc.get("limit")
        # a million messages per window caps nothing already; the bound keeps the stored
        # policy a JSON document every reader can parse (no integer past 64 bits)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 0 <= limit <= MAX_LIMIT:
            raise InvalidCap(f"{where}: limit must be a whole number from 0 to {MAX_LIMIT:,}")
        per = doc.get("per")
        if per == CALENDAR_DAY:
            window, calendar = None, True
        else:
            try:
                window, calendar = parse_duration(per), False
            except InvalidDuration as exc:
                raise InvalidCap(
                    f"{where}: per must be a duration (1h, 1d, 1w) or calendar_day: {exc}"
                ) from None
        filters = [k for k in ("channel", "flow", "tag") if doc.get(k) is not None]
        if len(filters) > 1:
            raise InvalidCap(f"{where}: a cap counts one thing: give at most one of channel, flow, tag")
        return cls(
            limit,
            window,
            calendar,
            doc.get("channel"),
            doc.get("flow"),
            doc.get("tag"),
            bool(doc.get("transactional", False)),
        )


def _day_bounds(at_ms: int, tz: ZoneInfo) -> tuple[int, int]:
    local = datetime.fromtimestamp(at_ms / 1000, tz)
    start = datetime.combine(local.date(), datetime.min.time(), tz)
    end = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), tz)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def blocked_until(cap: Cap, history: Sequence[Send], at_ms: int, tz: ZoneInfo) -> int | None:
    """None when one more send at ``at_ms`` keeps within ``cap``; else the earliest time the
    count drops below the limit (given no other sends)."""
    if cap.limit == 0:
        return NEVER
    if cap.calendar_day:
        start, end = _day_bounds(at_ms, tz)
        counted = [s.at_ms for s in history if cap.matches(s) and start <= s.at_ms <= at_ms]
        return end if len(counted) >= cap.limit else None
    assert cap.window_ms is not None
    counted = sorted(s.at_ms for s in history if cap.matches(s) and at_ms - cap.window_ms < s.at_ms <= at_ms)
    if len(counted) < cap.limit:
        return None
    # the send that must leave the window for the count to drop below the limit
    return counted[len(counted) - cap.limit] + cap.window_ms


def first_allowed(
    caps: Sequence[Cap], history: Sequence[Send], candidate: Send, tz: ZoneInfo
) -> tuple[int, Cap | None]:
    """The first moment at or after the candidate's time when every cap that applies allows
    it, and the cap that held it back (None if it may go now). A ``limit: 0`` cap blocks
    forever: returns a huge time."""
    t = candidate.at_ms
    holding: Cap | None = None
    for _ in range(100):
        worst: tuple[int, Cap] | None = None
        for cap in caps:
            if not cap.applies_to(candidate):
                continue
            if cap.limit == 0:
                return NEVER, cap
            until = blocked_until(cap, history, t, tz)
            if until is not None and (worst is None or until > worst[0]):
                worst = (until, cap)
        if worst is None:
            return t, holding
        t, holding = worst[0], holding or worst[1]
    return t, holding  # pragma: no cover - each round moves t past a send; history is finite
