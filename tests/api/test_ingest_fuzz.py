"""A fuzzer over the tracking routes, through the real app on a live server (SQLite: this is
about parsing, and the store is the same for every event).

Requests mix well-formed events with any JSON in any field (odd types, huge integers, deep
nesting, timestamps at the calendar's ends), in every encoding an SDK uses (gzip, a byte order
mark, ``text/plain``), and sizes near the limits. Whatever is sent: never a 5xx, and every
well-formed event of a batch is stored (read back through ``GET /v1/events``).
"""

from __future__ import annotations

import gzip
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from momently.api.ingest import MAX_BATCH_BYTES, MAX_SINGLE_BYTES
from tests.conftest import LiveServer

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
EVENT_TYPES = ("track", "identify", "page", "screen", "group", "alias")
FIELDS = (
    "type",
    "userId",
    "anonymousId",
    "messageId",
    "event",
    "name",
    "timestamp",
    "originalTimestamp",
    "sentAt",
    "previousId",
    "groupId",
    "properties",
    "traits",
    "context",
    "integrations",
    "writeKey",
)
EDGE_TIMES = (
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999Z",
    "2099-01-01T00:00:00Z",
    "2026-11-23T10:00:00",
    "2026-02-30T00:00:00Z",
    "",
)


def nested(levels: int, leaf: Any) -> Any:
    for level in range(levels):
        leaf = {"n": leaf} if level % 2 else [leaf]
    return leaf


clean_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=12)
any_text = st.text(max_size=12)  # NUL included
numbers = (
    st.integers(-(2**63), 2**63 - 1)
    | st.integers(min_value=2**63 - 2, max_value=2**80)
    | st.integers(max_value=-(2**63) + 2, min_value=-(2**80))
    | st.floats(allow_nan=False, allow_infinity=False)
)


def json_values(text: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    return st.recursive(
        st.none() | st.booleans() | numbers | text,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
        max_leaves=6,
    )


odd_values = (
    json_values(any_text)
    | st.sampled_from(EDGE_TIMES + EVENT_TYPES)
    | st.builds(nested, st.integers(50, 400), json_values(any_text))
)
junk_events = st.dictionaries(st.sampled_from(FIELDS), odd_values, max_size=6) | odd_values
ids = clean_text.filter(lambda s: bool(s.strip())) | st.integers(-(2**63), 2**63 - 1)
times = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
).map(lambda t: t.isoformat())


ENVELOPE = ("context", "integrations", "sentAt", "writeKey")
good_envelopes = st.fixed_dictionaries(
    {},
    optional={
        "context": st.dictionaries(clean_text, json_values(clean_text), max_size=3),
        "integrations": st.dictionaries(clean_text, st.booleans(), max_size=3),
        "sentAt": times | st.sampled_from(EDGE_TIMES),  # a bad one only disables skew correction
    },
)


@st.composite
def good_events(draw: st.DrawFn) -> dict[str, Any]:
    """An event every field of which is valid, whatever else it carries."""
    kind = draw(st.sampled_from(EVENT_TYPES))
    event: dict[str, Any] = {"type": kind}
    who = draw(st.sampled_from(["userId", "anonymousId", "both"]))
    for key in ("userId", "anonymousId"):
        if who in (key, "both"):
            event[key] = draw(ids)
    required = {"track": "event", "alias": "previousId", "group": "groupId"}.get(kind)
    if required:
        event[required] = draw(ids)
    for key in ("properties", "traits", "context", "integrations"):
        if draw(st.booleans()):
            event[key] = draw(st.dictionaries(clean_text, json_values(clean_text), max_size=3))
    for key in ("timestamp", "originalTimestamp", "sentAt"):
        if draw(st.integers(0, 3)) == 0:
            event[key] = draw(times)
    event.update(
        draw(st.dictionaries(clean_text.map(lambda k: "x-" + k), json_values(clean_text), max_size=1))
    )
    return event


@dataclass
class Encoding:
    gzip: bool
    bom: bool
    content_type: str | None
    ascii: bool

    def encode(self, body: Any) -> tuple[bytes, dict[str, str], int]:
        """The body to send, its headers, and its size once decompressed."""
        raw = (b"\xef\xbb\xbf" if self.bom else b"") + json.dumps(body, ensure_ascii=self.ascii).encode()
        headers = {"Content-Type": self.content_type} if self.content_type else {}
        size = len(raw)
        if self.gzip:
            raw = gzip.compress(raw)
            headers["Content-Encoding"] = "gzip"
        return raw, headers, max(size, len(raw))


encodings = st.builds(
    Encoding,
    gzip=st.booleans(),
    bom=st.booleans(),
    content_type=st.sampled_from([None, "application/json", "text/plain", "text/plain;charset=UTF-8"]),
    ascii=st.booleans(),
)


@dataclass
class Log:
    """What the server has stored so far, read in sequence order."""

    admin: httpx.Client
    after: int = 0
    message_ids: set[str] = field(default_factory=set)

    def catch_up(self) -> set[str]:
        while True:
            page = self.admin.get("/v1/events", params={"after": self.after, "limit": 1000}).json()
            if not page["events"]:
                return self.message_ids
            self.message_ids.update(e["messageId"] for e in page["events"])
            self.after = page["next"]


@pytest.fixture
def client(live_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.url, auth=(live_server.write_key, ""), timeout=30) as c:
        yield c


@pytest.fixture
def log(live_server: LiveServer) -> Iterator[Log]:
    with live_server.admin() as admin:
        yield Log(admin)


def test_batches_mixing_good_and_bad_events(client: httpx.Client, log: Log) -> None:
    serial = itertools.count()

    @settings(FUZZ, max_examples=100)
    @given(
        items=st.lists(
            good_events().map(lambda e: (True, e)) | junk_events.map(lambda j: (False, j)),
            min_size=1,
            max_size=8,
        ),
        path=st.sampled_from(["/v1/batch", "/v1/import", "/v1/b"]),
        envelope_ok=st.booleans(),
        good_envelope=good_envelopes,
        odd_envelope=st.dictionaries(st.sampled_from(ENVELOPE), odd_values, max_size=3),
        encoding=encodings,
    )
    def run(
        items: list[tuple[bool, Any]],
        path: str,
        envelope_ok: bool,
        good_envelope: dict[str, Any],
        odd_envelope: dict[str, Any],
        encoding: Encoding,
    ) -> None:
        batch: list[Any] = []
        good: dict[int, str] = {}
        for index, (is_good, event) in enumerate(items):
            if is_good:
                event = {**event, "messageId": f"fz-{next(serial)}"}
                good[index] = event["messageId"]
            batch.append(event)
        envelope = good_envelope if envelope_ok else odd_envelope
        raw, headers, size = encoding.encode({**envelope, "batch": batch})
        reply = client.post(path, content=raw, headers=headers)
        assert reply.status_code < 500, reply.text
        if not envelope_ok or size > MAX_BATCH_BYTES:  # an odd batch context is merged into every event
            return
        assert reply.status_code == 200, reply.text
        refused = {r["index"] for r in reply.json()["rejected"]}
        assert not refused & good.keys(), reply.text
        assert set(good.values()) <= log.catch_up()

    run()


def test_single_calls_with_any_json(client: httpx.Client, log: Log) -> None:
    serial = itertools.count()

    @FUZZ
    @given(
        is_good=st.booleans(),
        event=good_events(),
        junk=junk_events,
        route=st.sampled_from(["track", "t", "identify", "i", "page", "screen", "group", "alias", "a"]),
        encoding=encodings,
    )
    def run(is_good: bool, event: dict[str, Any], junk: Any, route: str, encoding: Encoding) -> None:
        message_id = f"fs-{next(serial)}"
        raw, headers, size = encoding.encode({**event, "messageId": message_id} if is_good else junk)
        reply = client.post(f"/v1/{route}", content=raw, headers=headers)
        assert reply.status_code < 500, reply.text
        if reply.status_code >= 400:
            body = reply.json()
            assert isinstance(body["code"], str)
            assert isinstance(body["message"], str)
        # a good event keeps its own type, whatever the route's (the body's type wins)
        if is_good and size <= MAX_SINGLE_BYTES:
            assert reply.status_code == 200, reply.text
            assert message_id in log.catch_up()

    run()


def test_bodies_that_are_not_json_or_near_the_limits(client: httpx.Client) -> None:
    @settings(FUZZ, max_examples=30)
    @given(
        body=st.binary(max_size=200)
        | st.integers(MAX_SINGLE_BYTES - 300, MAX_SINGLE_BYTES + 50).map(
            lambda n: json.dumps({"userId": "u", "event": "E", "properties": {"p": "x" * (n - 60)}}).encode()
        ),
        path=st.sampled_from(["/v1/track", "/v1/batch"]),
        gzipped=st.booleans(),
    )
    def run(body: bytes, path: str, gzipped: bool) -> None:
        headers = {"Content-Encoding": "gzip"} if gzipped else {}
        reply = client.post(path, content=gzip.compress(body) if gzipped else body, headers=headers)
        assert reply.status_code < 500, reply.text
        assert reply.status_code in (200, 400), reply.text

    run()


def test_batches_near_the_size_and_count_limits(client: httpx.Client) -> None:
    @settings(FUZZ, max_examples=4)
    @given(
        count=st.integers(2490, 2510),
        pad=st.integers(0, 200),
        gzipped=st.booleans(),
    )
    def run(count: int, pad: int, gzipped: bool) -> None:
        batch = [{"type": "track", "userId": "u", "event": "E", "properties": {"p": "x" * pad}}] * count
        raw = json.dumps({"batch": batch}).encode()
        headers = {"Content-Encoding": "gzip"} if gzipped else {}
        reply = client.post("/v1/batch", content=gzip.compress(raw) if gzipped else raw, headers=headers)
        expected = 200 if count <= 2500 and len(raw) <= MAX_BATCH_BYTES else 400
        assert reply.status_code == expected, reply.text

    run()
