from __future__ import annotations

import time

import httpx

from tests.conftest import LiveServer


def test_profile_events_are_paged_newest_first(live_server: LiveServer) -> None:
    batch = [{"type": "track", "userId": "pat", "event": f"E{i}", "messageId": f"m{i}"} for i in range(7)]
    httpx.post(live_server.url + "/v1/batch", json={"batch": batch}, auth=(live_server.write_key, ""))
    live_server.wait_for_engine()
    with live_server.admin() as admin:
        page1 = admin.get("/v1/profiles/pat/events", params={"limit": 3}).json()
        page2 = admin.get("/v1/profiles/pat/events", params={"limit": 3, "before": page1["next"]}).json()
        page3 = admin.get("/v1/profiles/pat/events", params={"limit": 3, "before": page2["next"]}).json()
        by_anon = admin.get("/v1/profiles/nobody", params={"by": "anonymousId"})
    names = [e["event"] for p in (page1, page2, page3) for e in p["events"]]
    assert names == [f"E{i}" for i in reversed(range(7))]
    assert page3["next"] is None
    assert (by_anon.status_code, by_anon.json()["code"]) == (404, "profile_not_found")


def test_admin_auth_and_validation_errors(live_server: LiveServer) -> None:
    base = live_server.url
    assert httpx.get(base + "/v1/profiles/x").json()["code"] == "missing_admin_token"
    wrong = httpx.get(base + "/v1/profiles/x", headers={"Authorization": "Bearer mat_nope"})
    assert (wrong.status_code, wrong.json()["code"]) == (401, "invalid_admin_token")
    # a write key is not an admin token
    write = httpx.get(base + "/v1/profiles/x", headers={"Authorization": f"Bearer {live_server.write_key}"})
    assert write.status_code == 401
    with live_server.admin() as admin:
        bad = admin.get("/v1/events", params={"limit": 0})
    assert (bad.status_code, bad.json()["code"]) == (400, "invalid_request")


def test_openapi_and_health(live_server: LiveServer) -> None:
    spec = httpx.get(live_server.url + "/openapi.json").json()
    assert {"/v1/track", "/v1/batch", "/v1/profiles/{ident}", "/v1/profiles/{ident}/events"} <= set(
        spec["paths"]
    )
    health = httpx.get(live_server.url + "/healthz").json()
    assert health["status"] == "ok"
    assert health["checks"]["database"]["status"] == "ok"
    assert health["checks"]["disk"]["status"] in ("ok", "skipped")  # skipped: PostgreSQL
    assert health["checks"]["engine"]["status"] == "ok"
    assert health["checks"]["dispatcher"]["consecutiveFailures"] == 0
    assert health["checks"]["channels"]["console"]["status"] == "ok"


def test_health_is_503_when_the_engine_keeps_failing(live_server: LiveServer) -> None:
    # Given the engine running in the server, when every round fails (a table it needs is gone)
    with live_server.services.db.write() as conn:
        conn.exec_driver_sql("DROP TABLE cursors")
    deadline = time.monotonic() + 20
    while (reply := httpx.get(live_server.url + "/healthz")).status_code == 200:
        assert time.monotonic() < deadline, reply.text
        time.sleep(0.2)
    # Then /healthz says so, and which loop, and the kind of error: not the database's own
    # text, which quotes SQL (and would quote its parameters); that is in the log
    assert reply.status_code == 503
    body = reply.json()
    assert body["status"] == "failing"
    engine = body["checks"]["engine"]
    assert engine["status"] == "failing"
    assert engine["consecutiveFailures"] >= 3
    assert engine["lastError"] in ("OperationalError", "ProgrammingError")  # SQLite, PostgreSQL
    assert "cursors" not in reply.text
    assert body["checks"]["dispatcher"]["status"] == "ok"
