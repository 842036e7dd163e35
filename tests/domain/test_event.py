from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from momently.domain.event import (
    MAX_DEPTH,
    MAX_EVENT_BYTES,
    MAX_FUTURE,
    BatchDefaults,
    Event,
    Rejection,
    normalize,
)

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def _nested(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"n": value}
    return value


def norm(
    raw: Any, default_type: str | None = "track", defaults: BatchDefaults | None = None
) -> Event | Rejection:
    return normalize(raw, default_type=default_type, defaults=defaults or BatchDefaults(), received_at=NOW)


@pytest.mark.parametrize(
    ("raw", "default_type", "code"),
    [
        ([], "track", "invalid_event"),
        ({"userId": "u", "event": "e"}, None, "invalid_type"),
        ({"type": "screenview", "userId": "u"}, None, "invalid_type"),
        ({"event": "e"}, "track", "no_user_anon_id"),
        ({"event": "e", "userId": None, "anonymousId": ""}, "track", "no_user_anon_id"),
        ({"event": "e", "userId": True}, "track", "no_user_anon_id"),
        ({"userId": "u"}, "track", "missing_event"),
        ({"userId": "u", "event": "  "}, "track", "missing_event"),
        ({"userId": "u"}, "alias", "missing_previous_id"),
        ({"userId": "u"}, "group", "missing_group_id"),
        ({"userId": "u", "event": "e", "context": "x"}, "track", "invalid_field"),
        ({"userId": "u", "event": "e", "timestamp": "soon"}, "track", "invalid_timestamp"),
        ({"userId": "u", "event": "e", "messageId": "m" * 300}, "track", "invalid_message_id"),
        (
            {"userId": "u", "event": "Segment Entered", "context": {"library": {"name": "momently-engine"}}},
            "track",
            "reserved_library",
        ),
        ({"userId": "u\x00", "event": "e"}, "track", "invalid_character"),
        ({"userId": "u", "event": "e", "traits": {"email": "a\x00@b"}}, "identify", "invalid_character"),
        ({"userId": "u", "event": "e", "properties": {"list": [{"k\x00": 1}]}}, "track", "invalid_character"),
        (
            {"userId": "u", "event": "e", "properties": {"x": "y" * MAX_EVENT_BYTES}},
            "track",
            "event_too_large",
        ),
        ({"type": ["track"], "userId": "u", "event": "e"}, None, "invalid_type"),
        ({"type": {"track": 1}, "userId": "u", "event": "e"}, "track", "invalid_type"),
        (
            {"userId": "u", "event": "e", "timestamp": "0001-01-01T00:00:00+01:00"},
            "track",
            "invalid_timestamp",
        ),
        ({"userId": "u", "event": "e", "sentAt": "9999-12-31T23:59:59-01:00"}, "track", "invalid_timestamp"),
        (
            {
                "userId": "u",
                "event": "e",
                "originalTimestamp": "0001-01-01T00:00Z",
                "sentAt": "9999-01-01T00:00Z",
            },
            "track",
            None,  # no skew to correct: originalTimestamp is the time
        ),
        ({"userId": "u", "event": "e", "properties": {"a": [[[[]]]] * 20}}, "track", None),
        ({"userId": "u", "event": "e", "properties": _nested(MAX_DEPTH - 1)}, "track", None),
        ({"userId": "u", "event": "e", "properties": _nested(MAX_DEPTH)}, "track", "too_deep"),
        ({"userId": "u", "event": "e", "context": {"a": _nested(300)}}, "track", "too_deep"),
    ],
)
def test_rejections(raw: Any, default_type: str | None, code: str | None) -> None:
    result = norm(raw, default_type)
    if code is None:  # the case at the edge that is still accepted
        assert isinstance(result, Event)
    else:
        assert isinstance(result, Rejection)
        assert result.code == code


def test_a_backslash_u_0000_typed_as_text_is_not_a_nul() -> None:
    ev = norm({"userId": "u", "event": "e", "properties": {"note": "\\u0000 is how JSON writes NUL"}})
    assert isinstance(ev, Event)


def test_ids_are_coerced_and_nulls_dropped() -> None:
    ev = norm({"userId": 42, "anonymousId": None, "event": "e", "messageId": 7})
    assert isinstance(ev, Event)
    assert (ev.user_id, ev.anonymous_id, ev.message_id) == ("42", None, "7")
    assert "anonymousId" not in ev.body


def test_batch_defaults_merge_under_the_message() -> None:
    defaults = BatchDefaults(
        context={"ip": "1.2.3.4", "locale": "en"},
        integrations={"All": False},
        sent_at=NOW + timedelta(hours=1),
    )
    ev = norm(
        {
            "userId": "u",
            "event": "e",
            "context": {"locale": "fr"},
            "originalTimestamp": "2026-11-23T12:59:00Z",
        },
        defaults=defaults,
    )
    assert isinstance(ev, Event)
    assert ev.body["context"] == {"ip": "1.2.3.4", "locale": "fr"}
    assert ev.body["integrations"] == {"All": False}
    assert ev.timestamp == NOW - timedelta(minutes=1)  # skew-corrected with the batch's sentAt
    assert ev.body["originalTimestamp"] == "2026-11-23T12:59:00.000Z"


def test_identify_traits_from_context_and_top_level() -> None:
    ev = norm({"userId": "u", "traits": {"a": 1}, "context": {"traits": {"a": 0, "b": 2}}}, "identify")
    assert isinstance(ev, Event)
    assert ev.body["traits"] == {"a": 1, "b": 2}


def test_write_key_never_stored_and_message_id_assigned() -> None:
    ev = norm({"userId": "u", "event": "e", "writeKey": "wk_secret"})
    assert isinstance(ev, Event)
    assert "writeKey" not in ev.body
    assert b"wk_secret" not in ev.payload
    assert ev.message_id.startswith("mom-")
    assert ev.body["receivedAt"] == "2026-11-23T12:00:00.000Z"


@pytest.mark.parametrize(
    ("fields", "stored"),
    [
        ({"timestamp": "2099-01-01T00:00:00Z"}, {"originalTimestamp": "2099-01-01T00:00:00.000Z"}),
        (
            {"timestamp": "2099-01-01T00:00:00Z", "originalTimestamp": "2098-01-01T00:00:00Z"},
            {"originalTimestamp": "2098-01-01T00:00:00.000Z", "clientTimestamp": "2099-01-01T00:00:00.000Z"},
        ),
        ({"originalTimestamp": "2099-01-01T00:00:00Z"}, {"originalTimestamp": "2099-01-01T00:00:00.000Z"}),
        (  # skew-corrected into the future: the client's clocks are in the message already
            {"originalTimestamp": "2026-11-25T12:00:00Z", "sentAt": "2026-11-23T12:00:00Z"},
            {"originalTimestamp": "2026-11-25T12:00:00.000Z", "sentAt": "2026-11-23T12:00:00.000Z"},
        ),
    ],
    ids=["timestamp", "timestamp and originalTimestamp", "originalTimestamp", "skew-corrected"],
)
def test_a_time_more_than_a_day_ahead_becomes_received_at(
    fields: dict[str, str], stored: dict[str, str]
) -> None:
    ev = norm({"userId": "u", "event": "e", **fields})
    assert isinstance(ev, Event)
    assert (ev.timestamp, ev.timestamp_ms) == (NOW, ev.received_ms)
    assert ev.body["timestamp"] == ev.body["receivedAt"] == "2026-11-23T12:00:00.000Z"
    assert {k: ev.body[k] for k in stored} == stored


def test_a_time_up_to_a_day_ahead_is_kept() -> None:
    ev = norm({"userId": "u", "event": "e", "timestamp": (NOW + MAX_FUTURE).isoformat()})
    assert isinstance(ev, Event)
    assert ev.timestamp == NOW + MAX_FUTURE
    assert "originalTimestamp" not in ev.body


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_fields = ("type", "userId", "anonymousId", "messageId", "event", "name", "timestamp", "originalTimestamp")
_odd_message = st.dictionaries(
    st.sampled_from(
        (*_fields, "sentAt", "previousId", "groupId", "properties", "traits", "context", "integrations")
    ),
    _json | st.sampled_from(["track", "identify", "2099-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00"]),
)


@settings(max_examples=300, deadline=None)
@given(raw=_odd_message | _json, default_type=st.sampled_from([None, "track", "identify", "alias", "group"]))
def test_normalize_never_raises(raw: Any, default_type: str | None) -> None:
    """Whatever JSON is in whatever field: an event or a rejection, never an exception."""
    result = norm(raw, default_type)
    assert isinstance(result, Event | Rejection)
