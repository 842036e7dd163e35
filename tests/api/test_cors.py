"""CORS as browsers use it: credentialed beacons and JSON posts (preflighted) to ingest and
the public in-app and push routes are allowed from the configured origins, which are echoed;
the admin API answers browsers no CORS headers unless its own setting names an origin."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from momently.api import create_app
from momently.domain.credentials import KeyKind
from momently.services import Services
from momently.settings import Settings
from tests.conftest import LiveServer, serving

SHOP = "https://shop.example"
PREFLIGHT = {
    "Origin": SHOP,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "content-type,authorization",
}
BROWSER_ROUTES = ["/v1/t", "/v1/batch", "/v1/import", "/v1/inbox/7/seen", "/v1/push/subscriptions"]


def test_a_json_beacon_is_preflighted_and_answered_with_the_origin(live_server: LiveServer) -> None:
    # Given analytics.js posting JSON with credentials: 'include' from a shop's page
    for path in BROWSER_ROUTES:
        preflight = httpx.options(live_server.url + path, headers=PREFLIGHT)
        # Then the preflight names the origin (never *), allows credentials and the SDK's headers
        assert preflight.status_code == 200, (path, preflight.text)
        assert preflight.headers["access-control-allow-origin"] == SHOP
        assert preflight.headers["access-control-allow-credentials"] == "true"
        allowed = preflight.headers["access-control-allow-headers"].lower()
        assert {"content-type", "authorization", "content-encoding"} <= set(allowed.split(", "))
        assert "Origin" in preflight.headers["vary"]
    # And the post itself is answered with the origin too, so the browser lets the page see it
    sent = httpx.post(
        live_server.url + "/v1/t",
        json={"type": "track", "event": "Viewed", "anonymousId": "a1", "writeKey": live_server.write_key},
        headers={"Origin": SHOP},
    )
    assert sent.status_code == 200, sent.text
    assert sent.headers["access-control-allow-origin"] == SHOP
    assert sent.headers["access-control-allow-credentials"] == "true"
    assert "Origin" in sent.headers["vary"]


def test_the_admin_api_sends_browsers_no_cors_headers(live_server: LiveServer) -> None:
    preflight = httpx.options(
        live_server.url + "/v1/profiles/pat",
        headers={**PREFLIGHT, "Access-Control-Request-Method": "GET"},
    )
    with live_server.admin() as admin:
        read = admin.get("/v1/events", headers={"Origin": SHOP})
    assert read.status_code == 200
    for reply in (preflight, read):
        assert not [h for h in reply.headers if h.lower().startswith("access-control-")], reply.headers
    assert preflight.status_code == 405
    assert preflight.json()["code"] == "method_not_allowed"


@pytest.fixture
def listed_origins(database_url: str) -> Iterator[LiveServer]:
    settings = Settings(
        database_url=database_url,
        auth_cache_seconds=0.0,
        cors_origins=[SHOP],
        admin_cors_origins=["https://dash.example"],
    )
    services = Services.build(settings)
    try:
        now = services.clock.now()
        ws = services.workspaces.create("acme", name="Acme", now=now)
        write = services.workspaces.issue_key(ws.id, KeyKind.WRITE, label="t", now=now)
        admin = services.workspaces.issue_key(ws.id, KeyKind.ADMIN, label="t", now=now)
        with serving(create_app(services)) as url:
            yield LiveServer(url, services, ws.id, write.secret, admin.secret)
    finally:
        services.close()


def test_listed_origins_only(listed_origins: LiveServer) -> None:
    srv = listed_origins
    # a listed origin is echoed; another gets no allow-origin, and its preflight is refused
    allowed = httpx.options(srv.url + "/v1/batch", headers=PREFLIGHT)
    other = httpx.options(srv.url + "/v1/batch", headers={**PREFLIGHT, "Origin": "https://evil.example"})
    assert allowed.headers["access-control-allow-origin"] == SHOP
    assert other.status_code == 400
    assert other.json()["code"] == "cors_refused"
    assert "access-control-allow-origin" not in other.headers
    # the admin API follows its own list: the dashboard, without credentials; not the shop
    dash = httpx.options(
        srv.url + "/v1/events",
        headers={"Origin": "https://dash.example", "Access-Control-Request-Method": "GET"},
    )
    assert dash.status_code == 200
    assert dash.headers["access-control-allow-origin"] == "https://dash.example"
    assert "access-control-allow-credentials" not in dash.headers
    with srv.admin() as admin:
        from_shop = admin.get("/v1/events", headers={"Origin": SHOP})
    assert "access-control-allow-origin" not in from_shop.headers
