"""Every answer carries the security headers, and every answer that may hold personal data
is ``no-store``; only the public widget script and the API description may be cached."""

from __future__ import annotations

import httpx

from tests.conftest import LiveServer

ALWAYS = {
    "x-content-type-options": "nosniff",
    "content-security-policy": "frame-ancestors 'none'",
    "referrer-policy": "no-referrer",
}


def test_security_headers_and_no_store_on_personal_data(live_server: LiveServer) -> None:
    base = live_server.url
    write = (live_server.write_key, "")
    event = {"type": "track", "event": "Viewed", "userId": "pat"}
    with live_server.admin() as admin:
        replies = {
            "ingest": httpx.post(base + "/v1/track", json=event, auth=write),
            "ingest error": httpx.post(base + "/v1/track", content=b"{nope", auth=write),
            "batch": httpx.post(base + "/v1/batch", json={"batch": [event]}, auth=write),
            "events": admin.get("/v1/events"),
            "profile 404": admin.get("/v1/profiles/nobody"),
            "export": admin.get("/v1/people/nobody/export"),
            "consent": admin.get("/v1/consent", params={"userId": "pat"}),
            "deliveries": admin.get("/v1/deliveries"),
            "inbox": httpx.get(base + "/v1/inbox", params={"userId": "pat"}, auth=write),
            "one-tap page": httpx.get(base + f"/a/{live_server.workspace}/not-a-token"),
            "unsubscribe page": httpx.get(base + f"/u/{live_server.workspace}/not-a-token"),
            "unauthenticated": httpx.get(base + "/v1/events"),
            "not found": httpx.get(base + "/nowhere"),
            "preflight": httpx.options(
                base + "/v1/batch",
                headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"},
            ),
            "health": httpx.get(base + "/healthz"),
        }
    for name, reply in replies.items():
        assert reply.status_code < 500, (name, reply.text)
        for header, value in ALWAYS.items():
            assert reply.headers.get(header) == value, (name, header, reply.headers)
        assert reply.headers.get_list("cache-control") == ["no-store"], (name, reply.headers)


def test_public_documents_keep_their_own_caching(live_server: LiveServer) -> None:
    widget = httpx.get(live_server.url + "/widget.js")
    spec = httpx.get(live_server.url + "/openapi.json")
    assert widget.headers["cache-control"] == "public, max-age=300"
    assert "no-store" not in spec.headers.get("cache-control", "")
    for reply in (widget, spec):
        assert reply.headers["x-content-type-options"] == "nosniff"
        assert reply.headers["referrer-policy"] == "no-referrer"
