"""What the public write key may do, through the real HTTP API on both databases.

The public key is in every web page, so each test plays an attacker holding it and guessing a
victim's userId, and shows the call refused (or its personal part dropped), then shows the
legitimate path working: the same call with the victim's user token (made by the customer's
backend), or from the backend with a server key.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from momently.domain.actions import Action, sign
from momently.domain.timestamps import to_millis
from momently.domain.trust import user_token
from tests.conftest import LiveServer

PUSH = {
    "endpoint": "https://fcm.googleapis.com/fcm/send/abc",
    "keys": {"p256dh": "BPz" + "a" * 84, "auth": "x" * 22},
}


def send(srv: LiveServer, key: str, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(srv.url + path, content=orjson.dumps(body), auth=(key, ""), timeout=30)


def token(srv: LiveServer, user_id: str) -> str:
    s = srv.services
    return user_token(s.workspaces.identity_secret(srv.workspace, now=s.clock.now()), user_id)


def profile(srv: LiveServer, user_id: str) -> dict[str, Any]:
    with srv.admin() as admin:
        found: dict[str, Any] = admin.get(f"/v1/profiles/{user_id}").json()
    return found


def consent_records(srv: LiveServer, user_id: str) -> list[dict[str, Any]]:
    with srv.admin() as admin:
        return list(admin.get("/v1/consent", params={"userId": user_id}).json()["records"])


def settle(srv: LiveServer) -> None:
    """Wait for the engine past a late event of an erased person (dropped from the log, so
    the cursor never reaches its seq): someone else's event after it."""
    assert send(srv, srv.write_key, "/v1/track", {"userId": "zed", "event": "Marker"}).is_success
    srv.wait_for_engine()


def victim_with_card(srv: LiveServer) -> int:
    """Given ada, known by her email, with an in-app card whose action records a goal."""
    assert send(
        srv, srv.write_key, "/v1/identify", {"userId": "ada", "traits": {"email": "ada@x.io"}}
    ).is_success
    srv.wait_for_engine()
    s = srv.services
    person = s.profiles.person_for(srv.workspace, ("user", "ada"))
    assert person is not None
    secret = s.workspaces.signing_key(srv.workspace, now=s.clock.now())
    action = Action("d1", "tip", person, "ada", None, "Goal Reached", "Go", "https://shop.example/next")
    link = f"{srv.url}/a/{srv.workspace}/{sign(secret, action, s.clock.now)}"
    now = to_millis(s.clock.now())
    return s.inbox.add(
        srv.workspace,
        person,
        delivery_key="d1",
        flow_id="tip",
        content={"title": "Hi", "body": "Try it", "action": {"label": "Go", "url": link}},
        now_ms=now,
        expires_ms=now + 3_600_000,
    )


def test_public_key_cannot_read_or_mark_anothers_inbox(live_server: LiveServer) -> None:
    srv, public = live_server, live_server.public_key
    card = victim_with_card(srv)
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        # When an attacker asks for ada's cards with the public key alone
        tries = (
            {"userId": "ada"},
            {"anonymousId": "ada"},
            {"userId": "ada", "userToken": "0" * 64},
            {"userId": "ada", "userToken": "é"},
        )
        for params in tries:
            reply = c.get("/v1/inbox", params={"writeKey": public, **params})
            assert (reply.status_code, reply.json()["code"]) == (403, "identity_unverified")
        stream = c.get("/v1/inbox/stream", params={"writeKey": public, "userId": "ada"})
        assert (stream.status_code, stream.json()["code"]) == (403, "identity_unverified")
        # ... or with a token made for their own userId
        mine = {"writeKey": public, "userId": "ada", "userToken": token(srv, "mallory")}
        assert c.get("/v1/inbox", params=mine).status_code == 403
        for mark in ("seen", "dismiss", "act"):
            reply = c.post(f"/v1/inbox/{card}/{mark}", json={"writeKey": public, "userId": "ada"})
            assert (reply.status_code, reply.json()["code"]) == (403, "identity_unverified")

        # Then ada's page, with her user token, sees the card, without any one-tap link in it
        ada = {"writeKey": public, "userId": "ada", "userToken": token(srv, "ada")}
        cards = c.get("/v1/inbox", params=ada).json()["cards"]
        assert [x["id"] for x in cards] == [card]
        assert cards[0]["action"] == {"label": "Go"}
        assert "/a/" not in orjson.dumps(cards).decode()
        # and acting records the goal for ada and answers where to go
        acted = c.post(f"/v1/inbox/{card}/act", json=ada).json()
        assert acted == {"id": card, "marked": True, "redirect": "https://shop.example/next"}
        # a server key may read anyone's inbox (the customer's backend)
        assert c.get("/v1/inbox", params={"userId": "ada"}, auth=(srv.write_key, "")).json() == {"cards": []}
    srv.wait_for_engine()
    with srv.admin() as admin:
        names = [e.get("event") for e in admin.get("/v1/events", params={"limit": 100}).json()["events"]]
    assert names.count("Goal Reached") == 1
    assert names.count("Message Clicked") == 1
    assert "Message Seen" not in names
    assert "Message Dismissed" not in names


def test_public_key_cannot_redirect_a_persons_messages(live_server: LiveServer) -> None:
    srv, public = live_server, live_server.public_key
    victim_with_card(srv)
    # When an attacker identifies ada with their own email and phone through the public key
    evil = {"userId": "ada", "traits": {"email": "evil@x.io", "phone": "+15550000", "plan": "pro"}}
    evil["context"] = {"device": {"token": "evil-push", "type": "ios"}}
    reply = send(srv, public, "/v1/identify", evil)
    assert reply.status_code == 200  # the event is kept ...
    srv.wait_for_engine()
    p = profile(srv, "ada")
    assert p["addresses"] == {"email": "ada@x.io", "phone": None, "push": []}  # ... not its addresses
    assert p["traits"]["plan"] == "pro"  # what a visitor may say about themselves is applied
    with srv.admin() as admin:
        [stored] = [
            e
            for e in admin.get("/v1/events", params={"limit": 100}).json()["events"]
            if e["type"] == "identify"
        ][-1:]
    stamp = stored["context"]["momently"]
    assert stamp["reason"] == "identity_unverified"
    assert set(stamp["ignored"]) == {"email", "phone", "context.device.token"}
    assert "evil@x.io" not in orjson.dumps(stored).decode()

    # Then ada's own page, with her token, may change her email; so may the backend
    own = {"userId": "ada", "traits": {"email": "ada@new.io"}, "context": {"userToken": token(srv, "ada")}}
    assert send(srv, public, "/v1/identify", own).status_code == 200
    srv.wait_for_engine()
    assert profile(srv, "ada")["addresses"]["email"] == "ada@new.io"
    assert send(
        srv, srv.write_key, "/v1/identify", {"userId": "ada", "traits": {"phone": "+1555"}}
    ).is_success
    srv.wait_for_engine()
    assert profile(srv, "ada")["addresses"]["phone"] == "+1555"
    with srv.admin() as admin:
        events = admin.get("/v1/events", params={"limit": 100}).json()["events"]
    assert all("userToken" not in e["context"] for e in events)  # a credential, not data


def test_public_key_cannot_consent_for_someone_and_each_record_names_its_key(live_server: LiveServer) -> None:
    srv, public = live_server, live_server.public_key
    keys = {k.kind.value: k.id for k in srv.services.workspaces.list_keys(srv.workspace)}
    # When an attacker opts ada in through the public key
    assert send(srv, public, "/v1/identify", {"userId": "ada", "traits": {"email_opt_in": True}}).is_success
    srv.wait_for_engine()
    assert consent_records(srv, "ada") == []
    # Then with her token her page can; the backend can for bob; each record names its key
    mine = {"userId": "ada", "traits": {"email_opt_in": True}, "context": {"userToken": token(srv, "ada")}}
    assert send(srv, public, "/v1/identify", mine).is_success
    assert send(
        srv, srv.write_key, "/v1/identify", {"userId": "bob", "traits": {"sms_opt_in": True}}
    ).is_success
    srv.wait_for_engine()
    [ada] = consent_records(srv, "ada")
    [bob] = consent_records(srv, "bob")
    assert (ada["granted"], ada["keyId"], bob["keyId"]) == (True, keys["write"], keys["server"])
    with srv.admin() as admin:
        stop = admin.post("/v1/consent/stop", json={"userId": "ada"}).json()["records"]
    assert {r["keyId"] for r in stop} == {keys["admin"]}


def test_public_key_cannot_lift_an_erased_persons_tombstone(live_server: LiveServer) -> None:
    srv, public = live_server, live_server.public_key
    victim_with_card(srv)
    with srv.admin() as admin:
        assert admin.delete("/v1/people/ada").json()["erased"] is True
    # When an attacker identifies the erased ada with an opt-in through the public key
    back = {"userId": "ada", "traits": {"email": "evil@x.io", "email_opt_in": True}}
    assert send(srv, public, "/v1/identify", back).is_success
    settle(srv)
    with srv.admin() as admin:
        assert admin.get("/v1/profiles/ada").status_code == 404  # still erased
    assert [r["source"] for r in consent_records(srv, "ada")] == ["erasure"]  # no grant
    # Then the backend (server key) can bring her back with her consent
    assert send(srv, srv.write_key, "/v1/identify", back).is_success
    settle(srv)
    assert profile(srv, "ada")["addresses"]["email"] == "evil@x.io"


def test_push_subscriptions_need_the_persons_token_and_are_capped(live_server: LiveServer) -> None:
    srv, public = live_server, live_server.public_key
    push = srv.services.push
    # this machine cannot resolve the push service's name: answer it with a public address
    srv.services.push_http.resolver = lambda host, port: ["142.250.74.10"]
    # When an attacker files their endpoint under ada with the public key
    for extra in ({}, {"userToken": token(srv, "mallory")}, {"anonymousId": "a1"}):
        body = {"userId": "ada", "subscription": PUSH, **extra}
        reply = send(srv, public, "/v1/push/subscriptions", body)
        assert (reply.status_code, reply.json()["code"]) == (403, "identity_unverified"), extra
    assert push.for_identities(srv.workspace, [("user", "ada")]) == []
    # Then ada's page, with her token, registers her browser
    ada = {"userId": "ada", "userToken": token(srv, "ada")}
    assert send(srv, public, "/v1/push/subscriptions", {**ada, "subscription": PUSH}).json() == {
        "subscribed": True
    }
    # and nobody else can remove it, even with their own valid token
    mallory = {"userId": "mallory", "userToken": token(srv, "mallory"), "endpoint": PUSH["endpoint"]}
    gone = httpx.request("DELETE", srv.url + "/v1/push/subscriptions", json={"writeKey": public, **mallory})
    assert gone.json() == {"removed": False}
    assert len(push.for_identities(srv.workspace, [("user", "ada")])) == 1
    # at most five per person: a sixth and seventh drop the oldest
    for i in range(7):
        sub = {**PUSH, "endpoint": f"https://fcm.googleapis.com/fcm/send/n{i}"}
        assert send(
            srv, srv.write_key, "/v1/push/subscriptions", {"userId": "ada", "subscription": sub}
        ).is_success
    kept = [s.endpoint for s in push.for_identities(srv.workspace, [("user", "ada")])]
    assert len(kept) == 5
    assert "https://fcm.googleapis.com/fcm/send/n6" in kept
    assert PUSH["endpoint"] not in kept
    # ada's own page can remove hers
    mine = {"writeKey": public, **ada, "endpoint": "https://fcm.googleapis.com/fcm/send/n6"}
    assert httpx.request("DELETE", srv.url + "/v1/push/subscriptions", json=mine).json() == {"removed": True}


@pytest.mark.parametrize("anonymous_only", [True, False])
def test_public_key_track_events_stay_accepted(live_server: LiveServer, anonymous_only: bool) -> None:
    """What analytics.js does in every page keeps working with the public key."""
    ids = {"anonymousId": "v1"} if anonymous_only else {"userId": "ada", "anonymousId": "v1"}
    reply = send(live_server, live_server.public_key, "/v1/track", {**ids, "event": "Viewed"})
    assert reply.json()["accepted"] == 1
    page = send(live_server, live_server.public_key, "/v1/page", {**ids, "name": "Home"})
    assert page.json()["accepted"] == 1
