"""Numbers in paths, query strings and durations that no 64-bit column can hold are refused
as ``invalid_request`` (or the parameter's own code), never a server error."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import LiveServer

HUGE = str(2**64 + 1)
INT64_MAX = str(2**63 - 1)
INT32_MAX = str(2**31 - 1)


@pytest.mark.parametrize(
    ("method", "path", "params"),
    [
        ("POST", f"/v1/deliveries/{HUGE}/retry", {}),
        ("POST", "/v1/deliveries/0/retry", {}),
        ("POST", f"/v1/deliveries/{2**31}/retry", {}),
        ("GET", "/v1/events", {"after": HUGE}),
        ("GET", "/v1/profiles/pat/events", {"before": HUGE}),
        ("GET", f"/v1/flows/some-flow/versions/{HUGE}", {}),
        ("GET", "/v1/flows/some-flow/versions/0", {}),
    ],
)
def test_admin_integers_beyond_their_columns_are_invalid_requests(
    live_server: LiveServer, method: str, path: str, params: dict[str, str]
) -> None:
    with live_server.admin() as admin:
        reply = admin.request(method, path, params=params)
    assert (reply.status_code, reply.json()["code"]) == (400, "invalid_request"), reply.text


def test_the_largest_ids_the_columns_hold_are_still_valid(live_server: LiveServer) -> None:
    with live_server.admin() as admin:
        retry = admin.post(f"/v1/deliveries/{INT32_MAX}/retry")
        version = admin.get(f"/v1/flows/some-flow/versions/{INT32_MAX}")
        events = admin.get("/v1/events", params={"after": INT64_MAX})
    assert (retry.status_code, retry.json()["code"]) == (404, "delivery_not_found")
    assert (version.status_code, version.json()["code"]) == (404, "flow_not_found")
    assert events.status_code == 200
    assert events.json()["events"] == []


def test_inbox_card_id_beyond_64_bits_is_an_invalid_request(live_server: LiveServer) -> None:
    reply = httpx.post(
        f"{live_server.url}/v1/inbox/{HUGE}/seen",
        json={"writeKey": live_server.write_key, "userId": "pat"},
    )
    assert (reply.status_code, reply.json()["code"]) == (400, "invalid_request"), reply.text


@pytest.mark.parametrize("body_days", [2**64, 10**30])
def test_retention_beyond_any_column_is_an_invalid_request(live_server: LiveServer, body_days: int) -> None:
    with live_server.admin() as admin:
        reply = admin.put("/v1/retention", json={"days": body_days})
    assert (reply.status_code, reply.json()["code"]) == (400, "invalid_request"), reply.text


@pytest.mark.parametrize("expires_in", ["99999999999999999999d", "300000000w"])
def test_consent_expiry_beyond_any_date_is_invalid_expiry(live_server: LiveServer, expires_in: str) -> None:
    change = {"userId": "pat", "channel": "email", "purpose": "marketing", "granted": True}
    with live_server.admin() as admin:
        reply = admin.post("/v1/consent", json={**change, "expiresIn": expires_in})
        later = admin.post("/v1/consent", json={**change, "expiresIn": "365d"})
    assert (reply.status_code, reply.json()["code"]) == (400, "invalid_expiry"), reply.text
    assert later.status_code == 200, later.text


def test_alignment_window_beyond_any_date_is_invalid_duration(live_server: LiveServer) -> None:
    with live_server.admin() as admin:
        reply = admin.get("/v1/consent/alignment", params={"since": "99999999999999999999d"})
    assert (reply.status_code, reply.json()["code"]) == (400, "invalid_duration"), reply.text


def test_inbox_stream_resumes_only_from_a_card_id(live_server: LiveServer) -> None:
    params = {"writeKey": live_server.write_key, "userId": "pat"}
    for last in (HUGE.encode(), "²".encode("latin-1")):  # a superscript two: isdigit() but no int
        reply = httpx.get(
            f"{live_server.url}/v1/inbox/stream", params=params, headers={"Last-Event-ID": last}
        )
        assert (reply.status_code, reply.json()["code"]) == (400, "invalid_request"), reply.text


@pytest.mark.parametrize("expires_at", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"])
def test_consent_expiry_at_the_calendars_edge_is_invalid_expiry(
    live_server: LiveServer, expires_at: str
) -> None:
    change = {"userId": "pat", "channel": "email", "purpose": "marketing", "granted": True}
    with live_server.admin() as admin:
        reply = admin.post("/v1/consent", json={**change, "expiresAt": expires_at})
    assert (reply.status_code, reply.json()["code"]) == (400, "invalid_expiry"), reply.text


def test_a_cap_limit_past_a_million_is_invalid_guardrails(live_server: LiveServer) -> None:
    caps = [{"limit": 2**70, "per": "1d", "channel": "sms"}]
    with live_server.admin() as admin:
        reply = admin.put("/v1/guardrails", json={"caps": caps})
        fine = admin.put("/v1/guardrails", json={"caps": [{**caps[0], "limit": 1_000_000}]})
    assert (reply.status_code, reply.json()["code"]) == (400, "invalid_guardrails"), reply.text
    assert fine.status_code == 200, fine.text
