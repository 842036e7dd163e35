"""The event: one Segment-spec message, validated and normalized for the log.

``normalize`` turns what a tracking SDK sent into an ``Event`` or a ``Rejection`` with a
machine-readable code. It accepts what real clients send: ``null`` ids, numeric ids,
identify traits at top level or in ``context.traits``, batch-level ``context`` and
``integrations`` merged under the message's own, and the timestamp forms of
``domain.timestamps``. Whatever JSON value is in whatever field, the result is one of the
two: a malformed message is refused on its own and never fails its batch.

Two bounds keep what is stored usable: values nest at most ``MAX_DEPTH`` levels, and an event
time more than ``MAX_FUTURE`` ahead of ``receivedAt`` (a wrong device clock) is replaced by
``receivedAt``, the client's value kept as ``originalTimestamp`` (or ``clientTimestamp`` when
the message already had one), so a person's last-seen time is never in the future.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import orjson

from momently.domain.timestamps import (
    InvalidTimestamp,
    event_time,
    format_timestamp,
    is_canonical,
    parse_timestamp,
    to_millis,
)

EVENT_TYPES: Final = frozenset({"track", "identify", "page", "screen", "group", "alias"})
MAX_EVENT_BYTES: Final = 32 * 1024
MAX_MESSAGE_ID_CHARS: Final = 256
MAX_DEPTH: Final = 64  # objects and arrays, the message itself being level 1
MAX_FUTURE: Final = timedelta(days=1)
_MAX_FUTURE_MS: Final = MAX_FUTURE // timedelta(milliseconds=1)
_OBJECT_FIELDS: Final = ("properties", "traits", "context", "integrations")
DERIVED_LIBRARY: Final = "momently-engine"  # marks events the engine appends itself


@dataclass(slots=True)  # not frozen: a frozen dataclass costs ~3 µs more to build, per event
class Event:
    """An accepted message, ready to append. ``body`` is the normalized message as stored.
    Treat it as immutable once built."""

    message_id: str
    type: str
    name: str | None
    user_id: str | None
    anonymous_id: str | None
    timestamp: datetime
    received_at: datetime
    body: dict[str, Any]
    payload: bytes  # ``body`` serialized once, as stored and as measured against the size limit
    timestamp_ms: int
    received_ms: int


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why one message was refused; listed in a batch response, or the body of a 400."""

    code: str
    message: str
    index: int | None = None
    message_id: str | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.index is not None:
            out["index"] = self.index
        if self.message_id is not None:
            out["messageId"] = self.message_id
        return out


@dataclass(frozen=True, slots=True)
class BatchDefaults:
    """Fields a batch envelope carries for all its messages."""

    context: dict[str, Any] | None = None
    integrations: dict[str, Any] | None = None
    sent_at: datetime | None = None
    received_text: str | None = None  # receivedAt formatted once per request, not per event
    sent_text: str | None = None  # likewise the envelope's sentAt
    received_ms: int | None = None  # and receivedAt in milliseconds


def _as_id(value: object) -> str | None:
    """Ids arrive as strings, numbers or explicit nulls; empty means absent."""
    if type(value) is str:  # the common case first: this runs several times per event
        return (
            value if value and not value[0].isspace() and not value[-1].isspace() else (value.strip() or None)
        )
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    return None


def _holds_nul(value: object) -> bool:
    """Whether a NUL character is anywhere in the value: its keys, strings, nested ones."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return False


def _deeper_than(value: object, levels: int) -> bool:
    """Whether objects and arrays nest more than ``levels`` deep in ``value``; stops as soon as
    they do, so its own recursion is bounded by ``levels``."""
    if isinstance(value, dict):
        children: Any = value.values()
    elif isinstance(value, list):
        children = value
    else:
        return False
    return levels < 1 or any(_deeper_than(v, levels - 1) for v in children)


def new_message_id() -> str:
    return f"mom-{uuid.uuid4()}"


def normalize(
    raw: object,
    *,
    default_type: str | None,
    defaults: BatchDefaults,
    received_at: datetime,
    index: int | None = None,
) -> Event | Rejection:
    """Validate one message. ``default_type`` is the route's type for single calls."""
    # The hot path of ingest (every event of every request): written for speed, so each
    # field is fetched once and the common shapes are tested first.
    if type(raw) is not dict:
        return Rejection("invalid_event", "each event must be a JSON object", index)
    get = raw.get
    mid_raw = _as_id(get("messageId"))

    def reject(code: str, message: str) -> Rejection:
        return Rejection(code, message, index, mid_raw)

    msg_type = get("type") or default_type
    if type(msg_type) is not str or msg_type not in EVENT_TYPES:  # a list is not even hashable
        shown = repr(msg_type[:32]) if type(msg_type) is str else "a value that is not a string"
        return reject("invalid_type", f"type must be one of {sorted(EVENT_TYPES)}, got {shown}")
    properties, traits, context, integrations = (
        get("properties"),
        get("traits"),
        get("context"),
        get("integrations"),
    )
    if not (
        (properties is None or type(properties) is dict)
        and (traits is None or type(traits) is dict)
        and (context is None or type(context) is dict)
        and (integrations is None or type(integrations) is dict)
    ):  # spelled out: a loop over zip() here cost more than the rest of the checks together
        field = next(f for f in _OBJECT_FIELDS if get(f) is not None and type(get(f)) is not dict)
        return reject("invalid_field", f"{field} must be a JSON object")

    user_id = _as_id(get("userId"))
    anonymous_id = _as_id(get("anonymousId"))
    if user_id is None and anonymous_id is None:
        return reject("no_user_anon_id", "userId or anonymousId is required")
    if mid_raw is not None and len(mid_raw) > MAX_MESSAGE_ID_CHARS:
        return reject("invalid_message_id", f"messageId is longer than {MAX_MESSAGE_ID_CHARS} characters")

    name: str | None = None
    if msg_type == "track":
        name = _as_id(get("event"))
        if name is None:
            return reject("missing_event", "track requires a non-empty event name")
    elif msg_type == "page" or msg_type == "screen":
        name = _as_id(get("name"))
    elif msg_type == "alias" and _as_id(get("previousId")) is None:
        return reject("missing_previous_id", "alias requires previousId")
    elif msg_type == "group" and _as_id(get("groupId")) is None:
        return reject("missing_group_id", "group requires groupId")

    raw_ts = get("timestamp")
    raw_original = get("originalTimestamp")
    raw_sent = get("sentAt")
    try:
        explicit_ts = parse_timestamp(raw_ts) if raw_ts else None
        original_ts = parse_timestamp(raw_original) if raw_original else None
        sent_at = parse_timestamp(raw_sent) if raw_sent else defaults.sent_at
        timestamp = explicit_ts or event_time(
            timestamp=None, original_timestamp=original_ts, sent_at=sent_at, received_at=received_at
        )
    except InvalidTimestamp as exc:
        return reject("invalid_timestamp", str(exc))
    timestamp_ms = to_millis(timestamp)
    received_ms = defaults.received_ms if defaults.received_ms is not None else to_millis(received_at)

    # A copy without explicit nulls; most messages have none, so test before filtering.
    body: dict[str, Any] = (
        {k: v for k, v in raw.items() if v is not None} if None in raw.values() else raw.copy()
    )
    body.pop("writeKey", None)
    context = context or {}
    if defaults.context:
        context = {**defaults.context, **context}
    integrations = integrations or {}
    if defaults.integrations:
        integrations = {**defaults.integrations, **integrations}
    library = context.get("library")
    if type(library) is dict and library.get("name") == DERIVED_LIBRARY:
        return reject(
            "reserved_library", f"context.library.name '{DERIVED_LIBRARY}' is reserved for the engine"
        )
    if msg_type == "identify":
        context_traits = context.get("traits")
        body["traits"] = (
            {**context_traits, **(traits or {})} if isinstance(context_traits, dict) else traits or {}
        )
    message_id = mid_raw or new_message_id()
    body["type"] = msg_type
    body["messageId"] = message_id
    body["timestamp"] = (
        raw_ts
        if explicit_ts is not None and type(raw_ts) is str and is_canonical(raw_ts)
        else format_timestamp(timestamp)
    )
    if timestamp_ms - received_ms > _MAX_FUTURE_MS:  # a device clock far ahead: see the module doc
        if explicit_ts is not None:  # else the client's clock is in originalTimestamp already
            if original_ts is None:
                original_ts = explicit_ts
            else:
                body["clientTimestamp"] = body["timestamp"]
        timestamp, timestamp_ms = received_at, received_ms
        body["timestamp"] = defaults.received_text or format_timestamp(received_at)
    body["receivedAt"] = defaults.received_text or format_timestamp(received_at)
    body["context"] = context
    body["integrations"] = integrations
    if user_id is None:
        body.pop("userId", None)
    else:
        body["userId"] = user_id
    if anonymous_id is None:
        body.pop("anonymousId", None)
    else:
        body["anonymousId"] = anonymous_id
    if original_ts is not None:
        body["originalTimestamp"] = format_timestamp(original_ts)
    if sent_at is not None:
        body["sentAt"] = (
            defaults.sent_text
            if defaults.sent_text and sent_at is defaults.sent_at
            else format_timestamp(sent_at)
        )
    try:
        payload = orjson.dumps(body)
    except orjson.JSONEncodeError:  # parsed JSON can only fail it by nesting past orjson's 255 levels
        return reject("too_deep", f"objects and arrays in an event may nest at most {MAX_DEPTH} levels")
    if len(payload) > MAX_EVENT_BYTES:
        return reject("event_too_large", f"an event may be at most {MAX_EVENT_BYTES} bytes")
    # Nesting deeper than MAX_DEPTH needs more brackets than that: a byte count (two when
    # there is an array, found by a fast memchr) clears nearly every event; only one with
    # many objects or arrays needs the walk.
    if (
        (brackets := payload.count(b"{")) > MAX_DEPTH
        or (b"[" in payload and brackets + payload.count(b"[") > MAX_DEPTH)
    ) and _deeper_than(body, MAX_DEPTH):
        return reject("too_deep", f"objects and arrays in an event may nest at most {MAX_DEPTH} levels")
    # PostgreSQL text cannot hold NUL, so one such id or trait would fail the whole group
    # commit (everyone's requests) or stop the engine at that event. JSON always escapes NUL
    # as \u0000: a memchr for a backslash clears most events, a substring search nearly all
    # the rest; only a hit needs the walk.
    if b"\\" in payload and b"\\u0000" in payload and _holds_nul(body):
        return reject("invalid_character", "text in an event must not contain NUL (\\u0000) characters")
    return Event(
        message_id=message_id,
        type=msg_type,
        name=name,
        user_id=user_id,
        anonymous_id=anonymous_id,
        timestamp=timestamp,
        received_at=received_at,
        body=body,
        payload=payload,
        timestamp_ms=timestamp_ms,
        received_ms=received_ms,
    )


def derived_event(
    *,
    message_id: str,
    name: str,
    user_id: str | None,
    anonymous_id: str | None,
    at: datetime,
    received_at: datetime,
    properties: dict[str, Any],
) -> Event:
    """A ``track`` event the engine appends itself (segment entered or exited)."""
    body: dict[str, Any] = {
        "type": "track",
        "event": name,
        "messageId": message_id,
        "properties": properties,
        "timestamp": format_timestamp(at),
        "receivedAt": format_timestamp(received_at),
        "context": {"library": {"name": DERIVED_LIBRARY}},
        "integrations": {},
    }
    if user_id is not None:
        body["userId"] = user_id
    if anonymous_id is not None:
        body["anonymousId"] = anonymous_id
    return Event(
        message_id=message_id,
        type="track",
        name=name,
        user_id=user_id,
        anonymous_id=anonymous_id,
        timestamp=at,
        received_at=received_at,
        body=body,
        payload=orjson.dumps(body),
        timestamp_ms=to_millis(at),
        received_ms=to_millis(received_at),
    )
