from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from momently.domain.event import MAX_EVENT_BYTES, BatchDefaults, Event, Rejection, normalize

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


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
    ],
)
def test_rejections(raw: Any, default_type: str | None, code: str) -> None:
    result = norm(raw, default_type)
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
