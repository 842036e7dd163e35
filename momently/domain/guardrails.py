"""Send-time guardrails beyond consent: quiet hours, frequency caps and kill switches, as one
workspace policy plus per-flow rules, and the pure decision the dispatcher applies to each
message just before it goes out.

The decision (:func:`plan`) is: send now, defer to a moment (the first one when every cap
allows it and it is outside quiet hours), or drop with a reason. Deferring is the default
when a cap is hit (``on_cap: {action: defer, max_delay: 1d}``); a flow may choose ``drop``.
``max_delay`` counts from the moment a guardrail first held the message back, not from the
decision: with a rolling ``1d`` cap the earlier message was sent after the later one was
decided, so "a day after the decision" would never be long enough.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from momently.domain.caps import NEVER, Cap, InvalidCap, Send, first_allowed
from momently.domain.durations import InvalidDuration, format_duration, parse_duration
from momently.domain.experiments import InvalidShare, format_share, parse_share
from momently.domain.lateness import MAX_LATENESS_MS
from momently.domain.quiet_hours import InvalidQuietHours, QuietHours, next_allowed

DEFAULT_MAX_DELAY_MS = 86_400_000
# a report cell counting fewer people than this is not shown (domain.privacy)
DEFAULT_REPORT_MIN_COUNT = 10
MAX_REPORT_MIN_COUNT = 1000
# an in-app card interrupts nobody: it shows while the person is using the product anyway
QUIET_EXEMPT_CHANNELS = frozenset({"in_app"})


class InvalidGuardrails(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Policy:
    """A workspace's guardrails: ``PUT /v1/guardrails`` / ``momently guardrails set``."""

    quiet_hours: QuietHours | None = None
    caps: tuple[Cap, ...] = ()
    paused: bool = False  # the whole workspace: nothing is sent, queued messages wait
    paused_channels: frozenset[str] = frozenset()
    # how long the engine's deadlines wait for late events (``domain.lateness``); None: the server's
    allowed_lateness_ms: int | None = None
    # reports hide every cell counting fewer people (and whatever would reveal one by difference)
    report_min_count: int = DEFAULT_REPORT_MIN_COUNT
    # share of the workspace's people who get no tier-B message at all (``domain.experiments``)
    global_control: float = 0.0

    def with_pause(self, channel: str | None, on: bool) -> Policy:
        """Pause (or resume) the whole workspace, or one channel."""
        if channel is None:
            return replace(self, paused=on)
        channels = self.paused_channels | {channel} if on else self.paused_channels - {channel}
        return replace(self, paused_channels=frozenset(channels))

    def as_json(self) -> dict[str, Any]:
        q = self.quiet_hours
        return {
            "quietHours": {"start": q.start.strftime("%H:%M"), "end": q.end.strftime("%H:%M")} if q else None,
            "caps": [c.as_json() for c in self.caps],
            "paused": self.paused,
            "pausedChannels": sorted(self.paused_channels),
            "allowedLateness": None
            if self.allowed_lateness_ms is None
            else format_duration(self.allowed_lateness_ms),
            "reportMinCount": self.report_min_count,
            "globalControl": format_share(self.global_control),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Policy:
        keys = {
            "quietHours",
            "caps",
            "paused",
            "pausedChannels",
            "allowedLateness",
            "reportMinCount",
            "globalControl",
        }
        unknown = set(doc) - keys
        if unknown:
            raise InvalidGuardrails(
                f"unknown key {sorted(unknown)[0]!r}: quietHours, caps, paused, pausedChannels, "
                "allowedLateness, reportMinCount, globalControl"
            )
        quiet = None
        q = doc.get("quietHours")
        if q is not None:
            if not isinstance(q, dict):
                raise InvalidGuardrails("quietHours must be {start: HH:MM, end: HH:MM} or null")
            try:
                quiet = QuietHours.parse(q.get("start"), q.get("end"))
            except InvalidQuietHours as exc:
                raise InvalidGuardrails(f"quietHours: {exc}") from None
        raw_caps = doc.get("caps", [])
        if not isinstance(raw_caps, list):
            raise InvalidGuardrails("caps must be a list")
        try:
            caps = tuple(
                Cap.from_json(c, f"caps[{i}]") for i, c in enumerate(raw_caps) if isinstance(c, dict)
            )
        except InvalidCap as exc:
            raise InvalidGuardrails(str(exc)) from None
        if len(caps) != len(raw_caps):
            raise InvalidGuardrails("each cap is an object: {limit, per, channel|flow|tag}")
        channels = doc.get("pausedChannels", [])
        if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
            raise InvalidGuardrails("pausedChannels must be a list of channel names")
        lateness = doc.get("allowedLateness")
        lateness_ms = None
        if lateness is not None:
            try:
                lateness_ms = parse_duration(lateness, allow_zero=True) if isinstance(lateness, str) else -1
            except InvalidDuration as exc:
                raise InvalidGuardrails(f"allowedLateness: {exc}") from None
            if not 0 <= lateness_ms <= MAX_LATENESS_MS:
                raise InvalidGuardrails('allowedLateness must be a duration from "0s" to "1d", e.g. "5m"')
        min_count = doc.get("reportMinCount", DEFAULT_REPORT_MIN_COUNT)
        if min_count is None:
            min_count = DEFAULT_REPORT_MIN_COUNT
        if (
            not isinstance(min_count, int)
            or isinstance(min_count, bool)
            or not 1 <= min_count <= MAX_REPORT_MIN_COUNT
        ):
            raise InvalidGuardrails(f"reportMinCount must be a whole number from 1 to {MAX_REPORT_MIN_COUNT}")
        try:
            control = parse_share(doc.get("globalControl", 0) or 0, what="globalControl", at_most=0.5)
        except InvalidShare as exc:
            raise InvalidGuardrails(str(exc)) from None
        return cls(
            quiet, caps, bool(doc.get("paused", False)), frozenset(channels), lateness_ms, min_count, control
        )


@dataclass(frozen=True, slots=True)
class FlowRules:
    """A flow's own say: ``quiet_hours: {start, end}`` (its own window), ``quiet_hours:
    bypass`` (tier A only: an ETA at 22:00 is wanted), and ``on_cap``."""

    quiet_hours: QuietHours | None = None
    bypass_quiet_hours: bool = False
    on_cap: Literal["defer", "drop"] = "defer"
    max_delay_ms: int = DEFAULT_MAX_DELAY_MS
    priority: int = 0
    tags: tuple[str, ...] = field(default_factory=tuple)
    tier: str = "B"

    @classmethod
    def of(cls, flow: Mapping[str, Any]) -> FlowRules:
        """From a stored flow document (validated by ``flows validate``)."""
        q = flow.get("quiet_hours")
        on_cap = flow.get("on_cap") if isinstance(flow.get("on_cap"), dict) else {}
        assert isinstance(on_cap, dict)
        try:
            own = QuietHours.parse(q["start"], q["end"]) if isinstance(q, dict) else None
            delay = parse_duration(on_cap["max_delay"]) if "max_delay" in on_cap else DEFAULT_MAX_DELAY_MS
        except (InvalidQuietHours, InvalidDuration, KeyError) as exc:
            raise InvalidGuardrails(str(exc)) from None
        return cls(
            quiet_hours=own,
            bypass_quiet_hours=q == "bypass",
            on_cap="drop" if on_cap.get("action") == "drop" else "defer",
            max_delay_ms=delay,
            priority=int(flow.get("priority", 0)),
            tags=tuple(str(t) for t in flow.get("tags", ()) or ()),
            tier=str(flow.get("tier", "B")),
        )


@dataclass(frozen=True, slots=True)
class Go:
    pass


@dataclass(frozen=True, slots=True)
class Defer:
    until_ms: int
    reason: Literal["quiet_hours_deferred", "frequency_cap"]
    detail: str


@dataclass(frozen=True, slots=True)
class Drop:
    reason: Literal["frequency_cap"]
    detail: str


Verdict = Go | Defer | Drop


def plan(
    policy: Policy,
    rules: FlowRules,
    candidate: Send,
    history: Sequence[Send],
    tz: ZoneInfo,
    *,
    held_since_ms: int,
) -> Verdict:
    """When may ``candidate`` (at its ``at_ms``, now) go? Alternates caps and quiet hours
    until both allow the same moment: the first allowed one. ``held_since_ms`` is when a
    guardrail first held this message back (now, the first time): a cap that keeps it waiting
    more than ``max_delay`` past that drops it."""
    quiet = None if rules.bypass_quiet_hours else rules.quiet_hours or policy.quiet_hours
    if candidate.channel in QUIET_EXEMPT_CHANNELS:
        quiet = None
    t = candidate.at_ms
    why: Defer | None = None
    for _ in range(50):
        at_cap, cap = first_allowed(policy.caps, history, _at(candidate, t), tz)
        if cap is not None:
            detail = cap.describe()
            if rules.on_cap == "drop" or at_cap >= NEVER or at_cap - held_since_ms > rules.max_delay_ms:
                return Drop("frequency_cap", detail)
            why = Defer(at_cap, "frequency_cap", detail)
        t = at_cap
        if quiet is None:
            break
        after = _ms(next_allowed(quiet, _dt(t), tz))
        if after == t:
            break
        t = after
        why = Defer(t, "quiet_hours_deferred", f"{quiet.start:%H:%M}-{quiet.end:%H:%M} {tz.key}")
    if t == candidate.at_ms or why is None:
        return Go()
    return Defer(t, why.reason, why.detail)


def _at(s: Send, t: int) -> Send:
    return Send(t, s.channel, s.flow_id, s.tags, s.tier)


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _ms(d: datetime) -> int:
    return int(d.timestamp() * 1000)
