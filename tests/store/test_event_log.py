"""The event log's append statement (store.events) on each database: the rows it is handed
(``EncodedRows``: small field arrays plus the bodies back to back, cut out by byte offset)
come back exactly as they went in, whatever the characters in them."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from momently.domain.event import BatchDefaults, Event, normalize
from momently.services import Services
from momently.store.events import encode_rows


def _event(services: Services, mid: str, user: str, props: dict[str, Any]) -> Event:
    ev = normalize(
        {"type": "track", "userId": user, "event": "Ünïcode ✓", "messageId": mid, "properties": props},
        default_type=None,
        defaults=BatchDefaults(),
        received_at=services.clock.now(),
    )
    assert isinstance(ev, Event)
    return ev


def _append(services: Services, events: list[Event], parts: int = 1) -> list[int | None]:
    size = -(-len(events) // parts)
    encoded = [encode_rows(events[i : i + size]) for i in range(0, len(events), size)]
    with services.db.write() as conn:
        return services.events.append_rows(conn, "w", encoded)


@pytest.fixture
def ws(services: Services) -> Services:
    services.workspaces.create("w", name=None, now=services.clock.now())
    return services


def test_bodies_and_fields_round_trip_with_multibyte_and_escaped_text(ws: Services) -> None:
    """Given bodies of different byte and character lengths (accents, emoji, quotes,
    backslashes, newlines, a backslash-u escape written as text), appended as two parts in one transaction,
    when they are read back, then each row has its own body and fields, byte for byte."""
    texts = [
        "plain",
        "Zoë Ødegård",
        "🛒🚚 emoji",
        'quote " and \\ backslash',
        "line\nbreak\ttab",
        "\\u00e9 \\u0000",
    ]
    events = [_event(ws, f"m{i}", f"user-{t}", {"note": t, "n": i}) for i, t in enumerate(texts * 3)]
    seqs = _append(ws, events, parts=2)
    assert seqs == list(range(1, len(events) + 1))
    stored = ws.events.read("w", after_seq=0, limit=100)
    assert [orjson.dumps(e.body) for e in stored] == [e.payload for e in events]
    assert [(e.user_id, e.name, e.type) for e in stored] == [(e.user_id, e.name, e.type) for e in events]
    assert [e.timestamp_ms for e in stored] == [e.timestamp_ms for e in events]


def test_selected_rows_keep_their_own_bodies(ws: Services) -> None:
    events = [_event(ws, f"m{i}", f"u{i}", {"i": i, "pad": "é" * i}) for i in range(6)]
    rows = encode_rows(events).select([4, 1, 5])
    with ws.db.write() as conn:
        assert ws.events.append_rows(conn, "w", [rows]) == [1, 2, 3]
    stored = ws.events.read("w", after_seq=0, limit=10)
    assert [(e.user_id, e.body["properties"]["i"]) for e in stored] == [("u4", 4), ("u1", 1), ("u5", 5)]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    notes=st.lists(
        st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40), min_size=1, max_size=8
    )
)
def test_any_text_round_trips(ws: Services, notes: list[str]) -> None:
    """Property: whatever text the properties hold (NUL is refused at ingest), the stored
    body is the payload."""
    before = ws.events.count("w")
    events = [_event(ws, f"h{before + i}", "u", {"note": n}) for i, n in enumerate(notes)]
    _append(ws, events, parts=min(2, len(events)))
    stored = ws.events.read("w", after_seq=before, limit=100)
    assert [orjson.dumps(e.body) for e in stored] == [e.payload for e in events]
