"""The ingest routes through a live server: what real clients send is accepted, every bad
input gets its documented status and code, and nothing valid is lost alongside it."""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import LiveServer


def post(srv: LiveServer, path: str, body: Any, *, auth: bool = True, **kwargs: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return httpx.post(
        srv.url + path, content=content, auth=(srv.write_key, "") if auth else None, timeout=30, **kwargs
    )


def stored(srv: LiveServer) -> list[dict[str, Any]]:
    with srv.admin() as admin:
        return list(admin.get("/v1/events", params={"limit": 1000}).json()["events"])


BAD_REQUESTS: list[tuple[str, str, Any, dict[str, str], int, str]] = [
    ("not json", "/v1/track", b"{nope", {}, 400, "invalid_json"),
    ("empty body", "/v1/track", b"", {}, 400, "invalid_json"),
    ("json array", "/v1/track", b"[1]", {}, 400, "invalid_body"),
    (
        "truncated gzip",
        "/v1/batch",
        gzip.compress(b'{"batch": []}')[:-6],
        {"Content-Encoding": "gzip"},
        400,
        "invalid_gzip",
    ),
    ("not gzip", "/v1/batch", b"plain text", {"Content-Encoding": "gzip"}, 400, "invalid_gzip"),
    ("brotli", "/v1/batch", b"{}", {"Content-Encoding": "br"}, 400, "unsupported_encoding"),
    ("10 MB body", "/v1/batch", b"x" * (10 * 1024 * 1024), {}, 400, "request_too_large"),
    (
        "batch over 500 KB",
        "/v1/batch",
        orjson.dumps(
            {
                "batch": [{"type": "track", "userId": "u", "event": "e", "properties": {"p": "x" * 30_000}}]
                * 20
            }
        ),
        {},
        400,
        "request_too_large",
    ),
    (
        "gzip bomb",
        "/v1/batch",
        gzip.compress(b" " * (20 * 1024 * 1024)),
        {"Content-Encoding": "gzip"},
        400,
        "request_too_large",
    ),
    (
        "single over 32 KB",
        "/v1/track",
        orjson.dumps({"userId": "u", "event": "e", "properties": {"p": "x" * 40_000}}),
        {},
        400,
        "request_too_large",
    ),
    ("too many events", "/v1/batch", orjson.dumps({"batch": [{}] * 2501}), {}, 400, "too_many_events"),
    ("batch not a list", "/v1/batch", orjson.dumps({"batch": {"type": "track"}}), {}, 400, "invalid_batch"),
    ("track without event", "/v1/track", orjson.dumps({"userId": "u"}), {}, 400, "missing_event"),
    ("no ids", "/v1/track", orjson.dumps({"event": "e", "userId": None}), {}, 400, "no_user_anon_id"),
    ("alias without previousId", "/v1/alias", orjson.dumps({"userId": "u"}), {}, 400, "missing_previous_id"),
    ("group without groupId", "/v1/group", orjson.dumps({"userId": "u"}), {}, 400, "missing_group_id"),
    (
        "bad timestamp",
        "/v1/track",
        orjson.dumps({"userId": "u", "event": "e", "timestamp": "yesterday"}),
        {},
        400,
        "invalid_timestamp",
    ),
    (
        "properties not an object",
        "/v1/track",
        orjson.dumps({"userId": "u", "event": "e", "properties": [1]}),
        {},
        400,
        "invalid_field",
    ),
]


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "code"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_bad_input_gets_its_code_and_loses_nothing(
    live_server: LiveServer, path: str, body: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    reply = post(live_server, path, body, headers=headers)
    assert reply.status_code == status, reply.text
    assert reply.json()["code"] == code
    assert reply.json()["message"]
    # and the server is unaffected: a valid event right after is stored
    ok = post(live_server, "/v1/track", {"userId": "u", "event": "After"})
    assert ok.status_code == 200
    assert [e["event"] for e in stored(live_server)] == ["After"]


@pytest.mark.parametrize(
    ("headers", "body_key", "status", "code"),
    [
        ({}, None, 401, "missing_write_key"),
        ({"Authorization": "Basic " + "d2tfbm9wZTo="}, None, 401, "invalid_write_key"),  # wk_nope:
        ({"Authorization": "Basic !!!"}, None, 401, "invalid_write_key"),
        ({}, "wk_unknown", 401, "invalid_write_key"),
    ],
    ids=["missing", "wrong basic", "malformed basic", "wrong body key"],
)
def test_bad_write_key_is_401(
    live_server: LiveServer, headers: dict[str, str], body_key: str | None, status: int, code: str
) -> None:
    body: dict[str, Any] = {"userId": "u", "event": "e"}
    if body_key:
        body["writeKey"] = body_key
    reply = post(live_server, "/v1/track", body, auth=False, headers=headers)
    assert (reply.status_code, reply.json()["code"]) == (status, code)
    assert stored(live_server) == []


def test_revoked_key_stops_working(live_server: LiveServer) -> None:
    s = live_server.services
    key = next(k for k in s.workspaces.list_keys(live_server.workspace) if k.kind.value == "server")
    assert post(live_server, "/v1/track", {"userId": "u", "event": "e"}).status_code == 200
    s.workspaces.revoke_key(key.id, now=s.clock.now())
    reply = post(live_server, "/v1/track", {"userId": "u", "event": "e2"})
    assert (reply.status_code, reply.json()["code"]) == (401, "invalid_write_key")


def test_batch_keeps_valid_events_and_lists_rejected(live_server: LiveServer) -> None:
    batch = [
        {"type": "track", "userId": "u1", "event": "Kept", "messageId": "m1"},
        {"type": "track", "userId": None, "anonymousId": None, "event": "No ids", "messageId": "m2"},
        {"type": "track", "userId": "u1", "messageId": "m3"},
        {"type": "bogus", "userId": "u1"},
        "not an object",
        {"type": "identify", "anonymousId": "a1", "traits": {"plan": "pro"}, "messageId": "m6"},
    ]
    reply = post(live_server, "/v1/batch", {"batch": batch})
    assert reply.status_code == 200
    body = reply.json()
    assert body["accepted"] == 2
    assert [(r["index"], r["code"]) for r in body["rejected"]] == [
        (1, "no_user_anon_id"),
        (2, "missing_event"),
        (3, "invalid_type"),
        (4, "invalid_event"),
    ]
    assert body["rejected"][0]["messageId"] == "m2"
    assert [e["messageId"] for e in stored(live_server)] == ["m1", "m6"]


def test_a_nul_character_rejects_only_its_own_event(live_server: LiveServer) -> None:
    """PostgreSQL text cannot hold NUL: such an event must be refused on its own, not fail
    the commit it would share with everyone else's events."""
    batch = [
        {"type": "track", "userId": "u1", "event": "Kept", "messageId": "n1"},
        {"type": "track", "userId": "bad\u0000id", "event": "E", "messageId": "n2"},
        {"type": "identify", "userId": "u2", "traits": {"email": "x\u0000@y"}, "messageId": "n3"},
        {"type": "track", "userId": "u1", "event": "Kept too", "messageId": "n4"},
    ]
    reply = post(live_server, "/v1/batch", {"batch": batch})
    assert reply.status_code == 200
    assert [(r["index"], r["code"]) for r in reply.json()["rejected"]] == [
        (1, "invalid_character"),
        (2, "invalid_character"),
    ]
    assert [e["messageId"] for e in stored(live_server)] == ["n1", "n4"]


def test_same_message_id_twice_is_stored_once(live_server: LiveServer) -> None:
    event = {"type": "track", "userId": "u", "event": "Paid", "messageId": "dup-1"}
    first = post(live_server, "/v1/batch", {"batch": [event, event]}).json()
    again = post(live_server, "/v1/track", event).json()
    assert (first["accepted"], first["duplicates"]) == (1, 1)
    assert (again["accepted"], again["duplicates"]) == (0, 1)
    assert len(stored(live_server)) == 1


def test_what_real_clients_send_is_accepted(live_server: LiveServer) -> None:
    # analytics.js: text/plain body, write key in the body, short path, batch-level context
    reply = post(
        live_server,
        "/v1/b",
        {
            "writeKey": live_server.write_key,
            "context": {"library": {"name": "analytics.js"}, "locale": "fr-FR"},
            "integrations": {"All": True},
            "sentAt": "2026-11-23T10:00:10.000Z",
            "batch": [
                {
                    "type": "page",
                    "anonymousId": "a-9",
                    "userId": None,
                    "name": "Home",
                    "originalTimestamp": "2026-11-23T10:00:00.000Z",
                    "context": {"locale": "en-GB"},
                },
                {
                    "type": "identify",
                    "userId": 123,
                    "anonymousId": "a-9",
                    "context": {"traits": {"email": "x@y.io"}},
                    "traits": {"name": "X"},
                    "timestamp": "2026-11-23T09:00:00.123456+00:00",
                },
                {"type": "track", "userId": "123", "event": "Clicked", "timestamp": "2026-11-23T09:00:01Z"},
            ],
        },
        auth=False,
        headers={"Content-Type": "text/plain"},
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["accepted"] == 3
    page, identify, track = stored(live_server)
    received = page["receivedAt"]
    # skew correction: the page happened 10 s before the client sent it
    from momently.domain.timestamps import parse_timestamp

    assert (parse_timestamp(received) - parse_timestamp(page["timestamp"])).total_seconds() == pytest.approx(
        10
    )
    assert page["context"] == {"library": {"name": "analytics.js"}, "locale": "en-GB"}
    assert page["integrations"] == {"All": True}
    assert "userId" not in page
    assert "writeKey" not in page
    assert identify["userId"] == "123"
    assert identify["traits"] == {"email": "x@y.io", "name": "X"}
    assert identify["timestamp"] == "2026-11-23T09:00:00.123Z"
    assert track["timestamp"] == "2026-11-23T09:00:01.000Z"
    assert all(e["messageId"].startswith("mom-") for e in (page, identify, track))


def test_gzip_body_is_accepted(live_server: LiveServer) -> None:
    body = zlib.compress(
        json.dumps({"batch": [{"type": "track", "userId": "g", "event": "Zipped"}]}).encode(), wbits=31
    )
    reply = post(live_server, "/v1/import", body, headers={"Content-Encoding": "gzip"})
    assert reply.status_code == 200
    assert [e["event"] for e in stored(live_server)] == ["Zipped"]


def test_cors_preflight_allows_sdk_headers(live_server: LiveServer) -> None:
    reply = httpx.options(
        live_server.url + "/v1/t",
        headers={
            "Origin": "https://shop.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,x-retry-count",
        },
    )
    assert reply.status_code == 200
    allowed = reply.headers["access-control-allow-headers"].lower()
    assert {"authorization", "content-type", "x-retry-count"} <= {h.strip() for h in allowed.split(",")}


def test_browser_posts_get_cors_headers_on_success_and_error(live_server: LiveServer) -> None:
    """analytics.js reads the reply only if the POST itself carries the CORS header; the
    tracking routes are answered by ``IngestFastPath``, inside the CORS middleware."""
    origin = {"Origin": "https://shop.example"}
    ok = post(live_server, "/v1/t", {"type": "track", "userId": "b", "event": "Seen"}, headers=origin)
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == "https://shop.example"
    bad = post(live_server, "/v1/t", {"type": "track", "event": "Seen"}, headers=origin)
    assert (bad.status_code, bad.json()["code"]) == (400, "no_user_anon_id")
    assert bad.headers["access-control-allow-origin"] == "https://shop.example"


def test_other_methods_on_tracking_routes_are_json_405(live_server: LiveServer) -> None:
    reply = httpx.get(live_server.url + "/v1/batch", auth=(live_server.write_key, ""))
    assert reply.status_code == 405
    assert reply.json()["code"] == "method_not_allowed"


def test_rate_limit_is_429_with_retry_after(live_server: LiveServer) -> None:
    s = live_server.services
    s.workspaces.set_rate_limit(live_server.workspace, 5)  # burst of 10 events
    # a debt of 90 events takes 18 s to repay, however slowly the first request commits
    batch = {"batch": [{"type": "track", "userId": "r", "event": "e"} for _ in range(100)]}
    assert post(live_server, "/v1/batch", batch).status_code == 200  # admitted, bucket now in debt
    throttled = post(live_server, "/v1/track", {"userId": "r", "event": "again"})
    assert throttled.status_code == 429
    assert throttled.json()["code"] == "rate_limited"
    assert int(throttled.headers["Retry-After"]) >= 1
    assert len(stored(live_server)) == 100
