"""Timestamps as real clients send them, and the clock-skew rule.

Clients send ISO-8601 with ``Z`` or ``+00:00``, with or without milliseconds or
microseconds, and sometimes without an offset at all (taken as UTC).

The rule for an event's ``timestamp`` (the time the event happened, as used by every
window in the engine):

1. an explicit ``timestamp`` in the message is used as given (server-side SDKs such as
   analytics-python and rudder-sdk-python always set it);
2. otherwise, when the client sent ``originalTimestamp`` and ``sentAt`` (its own clock
   when the event happened and when the request left), the skew is corrected:
   ``timestamp = receivedAt - (sentAt - originalTimestamp)``;
3. otherwise ``originalTimestamp`` alone, and failing that ``receivedAt``.

A timestamp is refused when it cannot be represented in UTC (``0001-01-01T00:00:00+01:00``).
When the correction of rule 2 would leave the calendar (clocks thousands of years apart),
rule 3 applies instead. ``domain.event`` then bounds how far in the future the result may be.
"""

from __future__ import annotations

from datetime import UTC, datetime


class InvalidTimestamp(ValueError):
    pass


_JSON_KINDS = {
    dict: "an object",
    list: "an array",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    str: "an empty string",
}


def _shown(value: str) -> str:
    """The client's text in an error message, cut short: it is echoed back to the client."""
    return repr(value) if len(value) <= 64 else repr(value[:64]) + "…"


def parse_timestamp(value: object) -> datetime:
    """Parse an ISO-8601 string into an aware UTC datetime."""
    if not isinstance(value, str) or not value:
        # the type only: the repr of a deeply nested JSON value would itself overflow the stack
        raise InvalidTimestamp(f"expected an ISO-8601 string, got {_JSON_KINDS.get(type(value), 'nothing')}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidTimestamp(f"not an ISO-8601 timestamp: {_shown(value)}") from exc
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 would be in year 0 in UTC
        raise InvalidTimestamp(f"out of range once converted to UTC: {_shown(value)}") from None


def format_timestamp(value: datetime) -> str:
    """Canonical form stored in the log: UTC, millisecond precision, ``Z`` suffix."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def is_canonical(value: str) -> bool:
    """Already in the stored form (``2026-11-23T10:00:00.123Z``), so it can be kept as sent
    instead of re-formatted: the common case for SDK traffic, and a hot path."""
    return len(value) == 24 and value[23] == "Z" and value[19] == "." and value[10] == "T"


def to_millis(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def from_millis(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, tz=UTC)


def event_time(
    *,
    timestamp: datetime | None,
    original_timestamp: datetime | None,
    sent_at: datetime | None,
    received_at: datetime,
) -> datetime:
    """Apply the rule in the module docstring."""
    if timestamp is not None:
        return timestamp
    if original_timestamp is not None and sent_at is not None:
        try:
            return received_at - (sent_at - original_timestamp)
        except OverflowError:  # a clock thousands of years off: no skew worth correcting
            return original_timestamp
    if original_timestamp is not None:
        return original_timestamp
    return received_at
