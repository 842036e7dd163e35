"""Decisions become messages: the outbox and dispatcher against a real webhook receiver
(Standard Webhooks signatures verified with the ``standardwebhooks`` library) and the console
channel, on SQLite and PostgreSQL, on virtual time."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.flows.conftest import FlowEnv, make_env
from tests.webhook_receiver import SECRET, Receiver, webhook_env


@pytest.fixture
def env(database_url: str, receiver: Receiver, tmp_path: Path) -> Iterator[FlowEnv]:
    with webhook_env(
        database_url,
        receiver,
        console_path=str(tmp_path / "console.jsonl"),
        dispatch_max_attempts=3,
        dispatch_backoff_seconds=10,
    ) as e:
        yield e


TIP = """
id: tip
trigger: {event: Feature Used}
reentry: every_time
channels: %s
message:
  variants:
    - id: short
      title: "Nice, {{ traits.name | default: 'there' }}!"
      body: "You used {{ event.properties.feature }}. Try the shortcut next time."
      action: {label: Show me, url: "https://app.example/tips/{{ event.properties.feature }}"}
"""


def used(env: FlowEnv, user: str = "ada", feature: str = "export", **traits: Any) -> None:
    env.send(
        {"type": "identify", "userId": user, "traits": traits},
        {"type": "track", "userId": user, "event": "Feature Used", "properties": {"feature": feature}},
    )


def dispatch(env: FlowEnv) -> None:
    env.services.dispatcher.run_until_idle()


def log_of(env: FlowEnv, name: str) -> list[dict[str, Any]]:
    events = env.services.events.read(env.workspace, after_seq=0, limit=10_000)
    return [e.body["properties"] for e in events if e.name == name]


def test_webhook_receives_a_signed_rendered_message(env: FlowEnv, receiver: Receiver) -> None:
    env.flow("tip", TIP % "[webhook]")
    used(env, name="Ada")
    dispatch(env)
    assert len(receiver.received) == 1
    got = receiver.received[0]
    link = got["message"]["action"].pop("url")
    assert got["message"] == {
        "variant": "short",
        "title": "Nice, Ada!",
        "body": "You used export. Try the shortcut next time.",
        "action": {"label": "Show me"},
    }
    assert link.startswith(f"{env.url}/a/acme/")  # a one-tap link to the rendered URL
    assert httpx.post(link).headers["location"] == "https://app.example/tips/export"
    assert got["flow"] == "tip"
    assert got["person"]["userId"] == "ada"
    assert got["trigger"]["event"] == "Feature Used"
    [sent] = log_of(env, "Message Sent")
    assert sent["channel"] == "webhook"
    assert sent["provider_id"] == "req-1"
    [decided] = log_of(env, "Message Decided")  # every funnel starts in the log too
    assert (decided["delivery_key"], decided["variant"], decided["channels"]) == (
        sent["delivery_key"],
        "short",
        ["webhook"],
    )
    assert [d.status for d in env.services.outbox.list(env.workspace)] == ["sent"]


def test_retryable_failures_back_off_then_succeed_with_one_delivery_key(
    env: FlowEnv, receiver: Receiver
) -> None:
    env.flow("tip", TIP % "[webhook]")
    receiver.script = [500, 503]
    used(env)
    dispatch(env)
    assert [d.status for d in env.services.outbox.list(env.workspace)] == ["pending"]
    for _ in range(2):
        env.clock.advance(timedelta(seconds=41))  # past the longest jittered delay (10 s, then 20 s)
        dispatch(env)
    assert [d.status for d in env.services.outbox.list(env.workspace)] == ["sent"]
    assert len(set(receiver.ids)) == 1  # three requests, one webhook-id: the receiver can de-duplicate
    assert len(receiver.ids) == 3
    failed = log_of(env, "Message Failed")
    assert [(f["reason"], f["final"]) for f in failed] == [("http_500", False), ("http_503", False)]
    assert len(log_of(env, "Message Sent")) == 1


def test_timeouts_are_retried_then_dead_lettered(database_url: str, receiver: Receiver) -> None:
    """A receiver slower than the channel's timeout: each attempt fails ``timeout`` and is
    retried with the same delivery key; after the last attempt the delivery is dead."""
    with webhook_env(
        database_url,
        receiver,
        webhook_timeout_seconds=0.3,
        dispatch_max_attempts=3,
        dispatch_backoff_seconds=10,
    ) as env:
        env.flow("tip", TIP % "[webhook]")
        receiver.delays = [1.0] * 3
        used(env)
        dispatch(env)
        for _ in range(2):
            env.clock.advance(timedelta(seconds=41))
            dispatch(env)
        [delivery] = env.services.outbox.list(env.workspace)
        assert (delivery.status, delivery.last_error, delivery.attempts) == ("dead", "timeout", 3)
        failed = log_of(env, "Message Failed")
        assert [(f["reason"], f["final"]) for f in failed] == [
            ("timeout", False),
            ("timeout", False),
            ("timeout", True),
        ]
        assert len(set(receiver.ids)) == 1
        assert log_of(env, "Message Sent") == []


def test_exhausted_channel_falls_back_then_dead_letters(
    env: FlowEnv, receiver: Receiver, tmp_path: Path
) -> None:
    env.flow("tip", TIP % "[webhook, console]")
    env.flow("tip-only-hook", (TIP % "[webhook]").replace("id: tip", "id: tip-only-hook"))
    receiver.script = [500] * 6
    used(env)
    dispatch(env)
    for _ in range(3):
        env.clock.advance(timedelta(minutes=5))
        dispatch(env)
    by_flow = {d.flow_id: d for d in env.services.outbox.list(env.workspace)}
    assert by_flow["tip"].status == "sent"
    assert by_flow["tip"].channel == "console"
    line = json.loads((tmp_path / "console.jsonl").read_text().splitlines()[0])
    assert line["title"] == "Nice, there!"
    assert by_flow["tip-only-hook"].status == "dead"
    assert by_flow["tip-only-hook"].last_error == "http_500"
    dead = [f for f in log_of(env, "Message Failed") if f["final"]]
    assert [f["flow_id"] for f in dead] == ["tip-only-hook"]
    # the operator fixes the receiver and retries the dead delivery
    receiver.script = []
    assert env.services.outbox.retry(env.workspace, by_flow["tip-only-hook"].id, now_ms=_now(env))
    dispatch(env)
    assert {d.flow_id: d.status for d in env.services.outbox.list(env.workspace)} == {
        "tip": "sent",
        "tip-only-hook": "sent",
    }


def test_missing_value_suppresses_instead_of_rendering_blank(env: FlowEnv, receiver: Receiver) -> None:
    env.flow("tip", (TIP % "[webhook]").replace("traits.name | default: 'there'", "traits.name"))
    used(env, name="")  # an empty trait is missing too
    dispatch(env)
    assert receiver.received == []
    [d] = env.services.outbox.list(env.workspace)
    assert d.status == "suppressed"
    [s] = log_of(env, "Message Suppressed")
    assert s["reason"] == "render_missing_value"


def test_a_crash_after_sending_resends_with_the_same_key(env: FlowEnv, receiver: Receiver) -> None:
    env.flow("tip", TIP % "[webhook]")
    used(env)
    dispatcher = env.services.dispatcher
    original = dispatcher._commit

    def crash(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("killed after the provider accepted, before the outcome was stored")

    dispatcher._commit = crash  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        dispatcher.run_once()
    dispatcher._commit = original  # type: ignore[method-assign]
    dispatch(env)
    assert len(receiver.ids) == 1  # the lease has not expired: nobody sends it again yet
    env.clock.advance(timedelta(seconds=61))
    dispatch(env)
    assert len(receiver.ids) == 2
    assert receiver.ids[0] == receiver.ids[1]
    assert [d.status for d in env.services.outbox.list(env.workspace)] == ["sent"]


def test_private_addresses_are_refused_unless_allowed(database_url: str, receiver: Receiver) -> None:
    with make_env(database_url, webhook_url=receiver.url, webhook_secret=SECRET) as e:
        e.flow("tip", TIP % "[webhook]")
        used(e)
        dispatch(e)
        [d] = e.services.outbox.list(e.workspace)
        assert (d.status, d.last_error) == ("dead", "address_not_allowed")
        assert receiver.received == []


def _now(env: FlowEnv) -> int:
    return int(env.clock.now().timestamp() * 1000)


def test_deliveries_api_lists_and_retries(env: FlowEnv, receiver: Receiver) -> None:
    env.flow("tip", TIP % "[webhook]")
    receiver.script = [400]  # permanent: no retry, no fallback left
    used(env)
    dispatch(env)
    with env.admin() as c:
        [dead] = c.get("/v1/deliveries", params={"status": "dead"}).json()["deliveries"]
        assert (dead["flow"], dead["lastError"], dead["channel"]) == ("tip", "http_400", "webhook")
        assert c.post(f"/v1/deliveries/{dead['id']}/retry").json()["status"] == "pending"
        assert c.post(f"/v1/deliveries/{dead['id']}/retry").status_code == 404  # no longer dead
    dispatch(env)
    with env.admin() as c:
        assert [d["status"] for d in c.get("/v1/deliveries").json()["deliveries"]] == ["sent"]


GOAL = """
id: eta
trigger: {event: Parcel At Hub}
channels: [webhook]
goal: {event: Delivery Confirmed, within: 6h}
message:
  body: "Your parcel is at the hub. Keep the {{ event.properties.slot }} slot?"
  action: {label: Keep, url: "https://shop.example/kept", event: Delivery Confirmed}
"""


def test_one_tap_action_records_the_goal_once_and_redirects(env: FlowEnv, receiver: Receiver) -> None:
    env.flow("eta", GOAL)
    env.send({"type": "track", "userId": "ada", "event": "Parcel At Hub", "properties": {"slot": "14:00"}})
    dispatch(env)
    link = receiver.received[0]["message"]["action"]["url"]
    assert link.startswith(f"{env.url}/a/acme/")
    with httpx.Client() as c:
        first = c.post(link)
        again = c.post(link)
    assert first.status_code == 303
    assert first.headers["location"] == "https://shop.example/kept"
    assert again.status_code == 303
    confirmed = [
        e
        for e in env.services.events.read(env.workspace, after_seq=0, limit=1000)
        if e.name == "Delivery Confirmed"
    ]
    assert len(confirmed) == 1  # two taps, one goal event
    assert confirmed[0].user_id == "ada"
    assert confirmed[0].body["properties"]["via"] == "one_tap"


def test_opening_a_link_records_nothing_until_its_page_submits(env: FlowEnv, receiver: Receiver) -> None:
    env.flow("eta", GOAL)
    env.send({"type": "track", "userId": "ada", "event": "Parcel At Hub", "properties": {"slot": "14:00"}})
    dispatch(env)
    link = receiver.received[0]["message"]["action"]["url"]
    with httpx.Client(follow_redirects=True) as scanner:  # what a mail security scanner does
        opened = scanner.get(link)
        assert scanner.head(link).status_code in (200, 405)
    assert opened.status_code == 200
    assert '<form method="post"' in opened.text
    assert "submit()" in opened.text  # the person's browser submits it at once
    assert opened.headers["cache-control"] == "no-store"
    env.settle()
    assert "Delivery Confirmed" not in env.log_names()
    assert httpx.post(link).status_code == 303  # the form's POST
    env.settle()
    assert env.log_names().count("Delivery Confirmed") == 1


REDIRECT = """
id: next
trigger: {event: Step Done}
channels: [webhook]
message:
  %s
  body: "Next step"
  action: {label: Go, url: "{{ event.properties.next }}"}
"""


def test_a_link_target_from_data_must_be_on_a_declared_host(env: FlowEnv, receiver: Receiver) -> None:
    refused = env.put("flow", "next", REDIRECT % "")
    assert refused.status_code == 400
    assert "message.link_hosts" in refused.json()["problems"][0]["message"]
    env.flow("next", REDIRECT % "link_hosts: [shop.example]")
    for i, target in enumerate(
        [
            "https://shop.example/step/2",
            "https://evil.example/login",
            "https://shop.example@evil.example/",
            "https://evil.example\\@shop.example/",
            "javascript:alert(1)",
        ]
    ):
        env.send({"type": "track", "userId": f"u{i}", "event": "Step Done", "properties": {"next": target}})
    dispatch(env)
    [sent] = receiver.received
    assert httpx.post(sent["message"]["action"]["url"]).headers["location"] == "https://shop.example/step/2"
    suppressed = log_of(env, "Message Suppressed")
    assert [s["reason"] for s in suppressed] == ["link_not_allowed"] * 4


def test_a_literal_host_cannot_be_escaped_by_the_data_after_it(env: FlowEnv, receiver: Receiver) -> None:
    glued = (TIP % "[webhook]").replace("https://app.example/tips/", "https://app.example")
    assert env.put("flow", "tip", glued).status_code == 400  # the host is not written out whole
    env.flow("tip", glued.replace("message:", "message:\n  link_hosts: [app.example]"))
    used(env, feature=".evil.example/x")  # https://app.example.evil.example/x
    used(env, "bob", feature="/tips")
    dispatch(env)
    [sent] = receiver.received
    assert httpx.post(sent["message"]["action"]["url"]).headers["location"] == "https://app.example/tips"
    assert [s["reason"] for s in log_of(env, "Message Suppressed")] == ["link_not_allowed"]


def test_forged_altered_and_expired_links_are_refused(env: FlowEnv, receiver: Receiver) -> None:
    env.flow("eta", GOAL)
    for user in ("ada", "bob"):
        env.send({"type": "track", "userId": user, "event": "Parcel At Hub", "properties": {"slot": "9:00"}})
    dispatch(env)
    ada_link, bob_link = (r["message"]["action"]["url"] for r in receiver.received)

    def parts(link: str) -> tuple[str, str]:
        token = link.rsplit("/", 1)[1]
        payload, _, signature = token.rpartition(".")  # payload (may start with "."), timestamp.signature
        head, _, stamp = payload.rpartition(".")
        return head, f"{stamp}.{signature}"

    bob_payload, _ = parts(bob_link)
    ada_payload, ada_signature = parts(ada_link)
    swapped = ada_link.replace(f"{ada_payload}.{ada_signature}", f"{bob_payload}.{ada_signature}")
    with httpx.Client() as c:
        assert c.get(swapped).status_code == 400  # bob's payload under ada's signature
        assert c.get(ada_link[:-3] + "abc").status_code == 400  # forged signature
        assert c.get(ada_link.replace("/a/acme/", "/a/other/")).status_code == 404
        env.clock.advance(timedelta(hours=7))  # the goal window was 6h
        assert c.get(ada_link).status_code == 410
    names = [e.name for e in env.services.events.read(env.workspace, after_seq=0, limit=1000)]
    assert "Delivery Confirmed" not in names


def test_decisions_about_the_distant_past_are_recorded_but_not_sent(env: FlowEnv, receiver: Receiver) -> None:
    old = (env.clock.now() - timedelta(days=3)).isoformat()
    env.send({"type": "track", "userId": "ada", "event": "Feature Used", "timestamp": old})
    env.flow("tip", TIP % "[webhook]")
    env.services.projector.replay(env.workspace)  # a new flow run over history
    assert [e.outcome for e in env.enrollments("tip")] == ["send"]
    dispatch(env)
    assert receiver.received == []
    assert [d.status for d in env.services.outbox.list(env.workspace)] == ["expired"]


def test_a_channel_rate_limit_defers_without_spending_attempts(
    database_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    with make_env(
        database_url,
        webhook_url=receiver.url,
        webhook_secret=SECRET,
        webhook_allow_networks=["127.0.0.0/8"],
        channel_rate_limits={"webhook": 2},
    ) as env:
        env.flow("tip", TIP % "[webhook]")
        for i in range(5):
            used(env, user=f"u{i}")
        dispatch(env)
        assert len(receiver.received) == 2  # the provider's 2/s, nothing more
        waiting = [d for d in env.services.outbox.list(env.workspace) if d.status == "pending"]
        assert len(waiting) == 3
        assert {d.attempts for d in waiting} == {0}
        for _ in range(3):
            env.clock.advance(timedelta(seconds=1.3))
            dispatch(env)
        assert len(receiver.received) == 5
        assert log_of(env, "Message Failed") == []  # deferring is not failing
        assert [e["reason"] for e in log_of(env, "Message Deferred")] == ["rate_limited"] * 3


def test_a_429_retry_after_is_honoured(env: FlowEnv, receiver: Receiver) -> None:
    env.flow("tip", TIP % "[webhook]")
    receiver.script = [429]
    used(env)
    dispatch(env)
    [d] = env.services.outbox.list(env.workspace)
    now_ms = int(env.clock.now().timestamp() * 1000)
    assert d.status == "pending"
    assert d.next_attempt_ms >= now_ms + 30_000  # not the shorter jittered backoff
