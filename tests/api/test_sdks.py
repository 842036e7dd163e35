"""The real tracking SDKs send to Momently unchanged (Segment analytics-python, RudderStack
rudder-sdk-python), with gzip on and off, and a lost acknowledgement makes the SDK retry the
same batch, which is stored once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from rudderstack.analytics.client import Client as RudderClient
from segment.analytics.client import Client as SegmentClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.conftest import LiveServer, free_port


def _client(sdk: str, write_key: str, host: str, gzip: bool, errors: list[Any]) -> Any:
    kwargs: dict[str, Any] = {"host": host, "gzip": gzip, "on_error": lambda e, batch: errors.append(e)}
    if sdk == "segment":
        return SegmentClient(write_key, max_retries=3, **kwargs)
    return RudderClient(write_key, max_retries=3, **kwargs)


@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("sdk", ["segment", "rudder"])
def test_sdk_events_reach_the_profile(live_server: LiveServer, sdk: str, gzip: bool) -> None:
    # Given a workspace and a tracking SDK pointed at Momently
    errors: list[Any] = []
    client = _client(sdk, live_server.write_key, live_server.url, gzip, errors)

    # When the app identifies a visitor, tracks a purchase and a page view
    client.page(anonymous_id="anon-7", name="Pricing", properties={"path": "/pricing"})
    client.identify(
        "ada",
        {"email": "Ada@Example.com", "name": "Ada"},
        anonymous_id="anon-7",
        context={"timezone": "Europe/Paris"},
    )
    client.track("ada", "Order Completed", {"revenue": 42.5, "currency": "EUR"})
    client.track("ada", "Order Completed", {"total": 10})
    client.flush()
    client.join()

    # Then every event is accepted and the profile shows them, history before login included
    assert errors == []
    live_server.wait_for_engine()
    with live_server.admin() as admin:
        profile = admin.get("/v1/profiles/ada").json()
        events = admin.get("/v1/profiles/ada/events").json()["events"]
    assert profile["userId"] == "ada"
    assert profile["anonymousIds"] == ["anon-7"]
    assert profile["traits"] == {"email": "Ada@Example.com", "name": "Ada"}
    assert profile["addresses"]["email"] == "ada@example.com"
    assert profile["timezone"] == "Europe/Paris"
    assert profile["eventCounts"] == {"$page": 1, "Order Completed": 2}
    assert profile["computed"]["ordersCompleted"] == 2
    assert profile["computed"]["revenue"] == pytest.approx(52.5)
    assert [e["type"] for e in events] == ["track", "track", "identify", "page"]
    assert all(e["receivedAt"] and e["messageId"] for e in events)


class _LosesFirstAck:
    """A network hop that delivers the first batch but loses Momently's reply, telling the SDK
    503 instead, as a proxy or flaky link would. Later requests pass through untouched."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.attempts = 0
        self.first_reply: dict[str, Any] | None = None

    async def forward(self, request: Request) -> Response:
        self.attempts += 1
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with httpx.AsyncClient() as client:
            reply = await client.post(
                self.upstream + request.url.path, content=await request.body(), headers=headers
            )
        if self.attempts == 1:
            self.first_reply = reply.json()
            return Response(b'{"code":"upstream_lost"}', status_code=503)
        return Response(reply.content, status_code=reply.status_code, media_type="application/json")


@pytest.fixture
def lossy_proxy(live_server: LiveServer) -> Iterator[tuple[str, _LosesFirstAck]]:
    hop = _LosesFirstAck(live_server.url)
    port = free_port()
    app = Starlette(routes=[Route("/v1/batch", hop.forward, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", hop
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.mark.parametrize("sdk", ["segment", "rudder"])
def test_retried_batch_is_stored_once(
    live_server: LiveServer, lossy_proxy: tuple[str, Any], sdk: str
) -> None:
    url, hop = lossy_proxy
    errors: list[Any] = []
    client = _client(sdk, live_server.write_key, url, False, errors)
    for i in range(5):
        client.track("grace", "Product Added", {"i": i})
    client.flush()
    client.join()

    assert errors == []
    assert hop.attempts == 2, "the SDK should have retried once after the lost reply"
    assert hop.first_reply is not None
    assert hop.first_reply["accepted"] == 5
    assert live_server.services.events.count(live_server.workspace) == 5
    live_server.wait_for_engine()
    with live_server.admin() as admin:
        assert admin.get("/v1/profiles/grace").json()["eventCounts"] == {"Product Added": 5}
