"""Ingest at the edges of what JSON and clocks allow, through a live server on both databases:
one malformed event is refused on its own (never a 500, never its batch lost), integers keep
every digit, a clock far in the future does not move a person's last-seen time, and a byte
order mark is skipped."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from momently.api.ingest import IngestFastPath
from momently.domain.event import MAX_DEPTH
from momently.domain.timestamps import parse_timestamp
from tests.conftest import LiveServer, serving

BOM = b"\xef\xbb\xbf"


def post(srv: LiveServer, path: str, body: Any, **kwargs: Any) -> httpx.Response:
    # json, not orjson: it writes every integer exactly and nests past orjson's 255 levels
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(srv.url + path, content=content, auth=(srv.write_key, ""), timeout=30, **kwargs)


def stored(srv: LiveServer) -> list[dict[str, Any]]:
    with srv.admin() as admin:
        return list(admin.get("/v1/events", params={"limit": 1000}).json()["events"])


def nested(levels: int) -> Any:
    """Objects nested ``levels`` deep: ``{"n": {"n": ... 1}}``."""
    value: Any = 1
    for _ in range(levels):
        value = {"n": value}
    return value


def deep_list(levels: int) -> Any:
    value: Any = []
    for _ in range(levels - 1):
        value = [value]
    return value


# (why, the bad part of a track event, the code it gets)
MALFORMED: list[tuple[str, dict[str, Any], str]] = [
    ("timestamp before year 1 in UTC", {"timestamp": "0001-01-01T00:00:00+01:00"}, "invalid_timestamp"),
    ("timestamp after 9999 in UTC", {"timestamp": "9999-12-31T23:59:59-01:00"}, "invalid_timestamp"),
    (
        "originalTimestamp out of range",
        {"originalTimestamp": "0001-01-01T00:00:00+01:00"},
        "invalid_timestamp",
    ),
    ("sentAt out of range", {"sentAt": "9999-12-31T23:59:59-01:00"}, "invalid_timestamp"),
    ("timestamp a deeply nested array", {"timestamp": deep_list(900)}, "invalid_timestamp"),
    ("type a list", {"type": ["track"]}, "invalid_type"),
    ("type an object", {"type": {"track": 1}}, "invalid_type"),
    ("type a number", {"type": 7}, "invalid_type"),
    ("properties 300 levels deep", {"properties": nested(300)}, "too_deep"),
    (f"properties past {MAX_DEPTH} levels", {"properties": nested(MAX_DEPTH)}, "too_deep"),
    ("traits an array 900 deep", {"type": "identify", "traits": {"a": deep_list(900)}}, "too_deep"),
]


@pytest.mark.parametrize(
    ("bad", "code"), [case[1:] for case in MALFORMED], ids=[case[0] for case in MALFORMED]
)
def test_a_malformed_event_is_refused_alone_and_its_batch_kept(
    live_server: LiveServer, bad: dict[str, Any], code: str
) -> None:
    batch = [
        {"type": "track", "userId": "u1", "event": "Before", "messageId": "ok-1"},
        {"type": "track", "userId": "u1", "event": "Bad", "messageId": "bad-1", **bad},
        {"type": "track", "userId": "u1", "event": "After", "messageId": "ok-2"},
    ]
    reply = post(live_server, "/v1/batch", {"batch": batch})
    assert reply.status_code == 200, reply.text
    assert [(r["index"], r["code"], r["messageId"]) for r in reply.json()["rejected"]] == [(1, code, "bad-1")]
    assert [e["messageId"] for e in stored(live_server)] == ["ok-1", "ok-2"]


@pytest.mark.parametrize(
    ("bad", "code"), [case[1:] for case in MALFORMED], ids=[case[0] for case in MALFORMED]
)
def test_a_malformed_single_call_is_a_400_and_the_connection_stays_usable(
    live_server: LiveServer, bad: dict[str, Any], code: str
) -> None:
    with httpx.Client(base_url=live_server.url, auth=(live_server.write_key, ""), timeout=30) as client:
        reply = client.post("/v1/track", content=json.dumps({"userId": "u", "event": "E", **bad}))
        assert (reply.status_code, reply.json()["code"]) == (400, code), reply.text
        assert len(reply.json()["message"]) < 300
        assert client.post("/v1/track", json={"userId": "u", "event": "Next"}).status_code == 200
    assert [e["event"] for e in stored(live_server)] == ["Next"]


def test_a_nesting_at_the_bound_is_accepted(live_server: LiveServer) -> None:
    # the event is level 1, so its properties may hold MAX_DEPTH - 1 levels of objects
    reply = post(live_server, "/v1/track", {"userId": "u", "event": "E", "properties": nested(MAX_DEPTH - 1)})
    assert reply.status_code == 200, reply.text
    assert stored(live_server)[0]["properties"] == nested(MAX_DEPTH - 1)


def test_an_out_of_range_envelope_sent_at_only_disables_skew_correction(live_server: LiveServer) -> None:
    body = {
        "sentAt": "0001-01-01T00:00:00+01:00",
        "batch": [{"type": "track", "userId": "u", "event": "E", "timestamp": "2026-11-23T10:00:00.000Z"}],
    }
    reply = post(live_server, "/v1/batch", body)
    assert (reply.status_code, reply.json()["accepted"]) == (200, 1)
    assert stored(live_server)[0]["timestamp"] == "2026-11-23T10:00:00.000Z"


def test_clocks_too_far_apart_to_correct_leave_original_timestamp_as_the_time(
    live_server: LiveServer,
) -> None:
    body = {
        "sentAt": "9999-12-31T00:00:00Z",
        "batch": [
            {"type": "track", "userId": "u", "event": "E", "originalTimestamp": "2026-11-23T10:00:00Z"}
        ],
    }
    reply = post(live_server, "/v1/batch", body)
    assert (reply.status_code, reply.json()["accepted"]) == (200, 1), reply.text
    assert stored(live_server)[0]["timestamp"] == "2026-11-23T10:00:00.000Z"


def test_a_write_key_that_is_not_a_string_does_not_hide_a_later_one(live_server: LiveServer) -> None:
    body = {
        "batch": [
            {"type": "track", "userId": "u", "event": "A", "writeKey": ["not", "a", "key"]},
            {"type": "track", "userId": "u", "event": "B", "writeKey": live_server.write_key},
        ]
    }
    reply = httpx.post(live_server.url + "/v1/b", content=orjson.dumps(body), timeout=30)
    assert (reply.status_code, reply.json()["accepted"]) == (200, 2), reply.text


def test_integers_beyond_64_bits_keep_every_digit(live_server: LiveServer) -> None:
    # json.dumps writes Python integers exactly, as a client in any language may
    body = json.dumps(
        {
            "userId": 123456789012345678901234,
            "event": "Big",
            "properties": {
                "huge": 123456789012345678901234567890,
                "below_int64": -9223372036854775809,
                "uint64_max": 18446744073709551615,
                "int64_max": 9223372036854775807,
                "int64_min": -9223372036854775808,
                "nested": [{"id": 99999999999999999999}],
                "price": 12.5,
                "digits_as_text": "12345678901234567890123",
            },
        }
    ).encode()
    reply = post(live_server, "/v1/track", body)
    assert reply.status_code == 200, reply.text
    event = stored(live_server)[0]
    assert event["userId"] == "123456789012345678901234"
    assert event["properties"] == {
        "huge": "123456789012345678901234567890",
        "below_int64": "-9223372036854775809",
        "uint64_max": "18446744073709551615",
        "int64_max": 9223372036854775807,
        "int64_min": -9223372036854775808,
        "nested": [{"id": "99999999999999999999"}],
        "price": 12.5,
        "digits_as_text": "12345678901234567890123",
    }


@pytest.mark.parametrize(
    "body",
    [b"[12345678901234567890, NaN]", b'[12345678901234567890, "\\ud800"]', b"[1e400]"],
    ids=["NaN", "lone surrogate", "infinite"],
)
def test_the_exact_integer_parse_refuses_what_json_refuses(live_server: LiveServer, body: bytes) -> None:
    reply = post(live_server, "/v1/batch", body)
    assert (reply.status_code, reply.json()["code"]) == (400, "invalid_json")


def test_a_timestamp_far_in_the_future_is_corrected_and_kept(live_server: LiveServer) -> None:
    soon = (datetime.now(UTC) + timedelta(hours=23)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    batch = [
        {
            "type": "track",
            "userId": "fut",
            "event": "E",
            "messageId": "t1",
            "timestamp": "2099-01-01T00:00:00Z",
        },
        {
            "type": "track",
            "userId": "fut",
            "event": "E",
            "messageId": "t2",
            "timestamp": "2099-01-01T00:00:00Z",
            "originalTimestamp": "2098-12-31T23:59:00Z",
        },
        {
            "type": "track",
            "userId": "fut",
            "event": "E",
            "messageId": "t3",
            "originalTimestamp": "2099-01-01T00:00Z",
        },
        {"type": "track", "userId": "near", "event": "E", "messageId": "t4", "timestamp": soon},
    ]
    reply = post(live_server, "/v1/batch", {"batch": batch})
    assert (reply.status_code, reply.json()["accepted"]) == (200, 4), reply.text
    t1, t2, t3, t4 = stored(live_server)
    for corrected in (t1, t2, t3):
        assert corrected["timestamp"] == corrected["receivedAt"]
    assert t1["originalTimestamp"] == "2099-01-01T00:00:00.000Z"
    assert (t2["originalTimestamp"], t2["clientTimestamp"]) == (
        "2098-12-31T23:59:00.000Z",
        "2099-01-01T00:00:00.000Z",
    )
    assert t3["originalTimestamp"] == "2099-01-01T00:00:00.000Z"
    assert t4["timestamp"] == soon  # less than a day ahead: as sent
    assert "originalTimestamp" not in t4

    # the person's last-seen time is when the events arrived, not in 2099
    live_server.wait_for_engine()
    with live_server.admin() as admin:
        profile = admin.get("/v1/profiles/fut").json()
    assert parse_timestamp(profile["lastSeen"]) == parse_timestamp(t1["receivedAt"])


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("path", ["/v1/track", "/v1/batch"])
def test_a_utf8_byte_order_mark_is_skipped(live_server: LiveServer, path: str, compress: bool) -> None:
    event = {"type": "track", "userId": "u", "event": "Späti"}
    body = BOM + orjson.dumps(event if path == "/v1/track" else {"batch": [event]})
    headers = {"Content-Type": "text/plain; charset=utf-8"}
    if compress:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    reply = post(live_server, path, body, headers=headers)
    assert reply.status_code == 200, reply.text
    assert [e["event"] for e in stored(live_server)] == ["Späti"]


class _FailingIngest:
    """Stands in for the ingest handlers to give the fast path a defect to contain."""

    async def batch(self, request: Request) -> Any:
        raise RuntimeError("a defect")

    async def single(self, request: Request, msg_type: str) -> Any:
        raise KeyError(msg_type)


def test_an_unexpected_failure_on_the_fast_path_is_a_json_500_on_a_live_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def other(request: Request) -> PlainTextResponse:
        return PlainTextResponse("inner app")

    app = IngestFastPath(Starlette(routes=[Route("/v1/batch", other)]), ingest=_FailingIngest())  # type: ignore[arg-type]
    with serving(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        for path in ("/v1/batch", "/v1/t"):
            reply = client.post(path, content=b"{}")
            assert reply.status_code == 500
            assert reply.json()["code"] == "internal_error"
            assert reply.headers.get("connection") != "close"
        assert client.get("/v1/batch").text == "inner app"  # the same connection, still open
    assert "ingest request to /v1/batch failed" in caplog.text
