"""Delays through the real HTTP API, on virtual time: the post-purchase thank-you two days
after ``Order Completed``, at 10:00 in the customer's time zone, cancelled for a customer who
returned the order meanwhile (with the reason in the log)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from momently.domain.profile import LoggedEvent
from momently.domain.timestamps import to_millis
from tests.flows.conftest import START, FlowEnv
from tests.flows.test_dispatch_e2e import dispatch, log_of
from tests.webhook_receiver import Receiver, webhook_env

AMS = ZoneInfo("Europe/Amsterdam")
NY = ZoneInfo("America/New_York")

THANKS = """
id: order-thanks
trigger: {event: Order Completed}
reentry: every_time
channels: [webhook]
goal: {event: Review Written, within: 7d}
follow_up: {channel: console, after: 2h}
delay:
  for: 2d
  at: "10:00"
  cancel_if: {last: Order Returned, since: decision}
message:
  body: "Thanks for your order {{ event.properties.order_id }}!"
"""


@pytest.fixture
def env(database_url: str, receiver: Receiver, tmp_path: Path) -> Iterator[FlowEnv]:
    with webhook_env(database_url, receiver, console_path=str(tmp_path / "console.jsonl")) as e:
        yield e


def order(env: FlowEnv, user: str, tz: str, name: str = "Order Completed", **props: object) -> None:
    env.send(
        {
            "type": "track",
            "userId": user,
            "event": name,
            "properties": props,
            "context": {"timezone": tz},
        }
    )


def advance_to(env: FlowEnv, moment: datetime) -> None:
    env.advance(seconds=(moment - env.clock.now()).total_seconds())
    dispatch(env)


def test_thanked_at_ten_local_two_days_later_unless_returned_meanwhile(
    env: FlowEnv, receiver: Receiver
) -> None:
    # Given the flow, and on Monday 2 November at 09:00 Amsterdam time (08:00 UTC): Ada in
    # Amsterdam and Bob in New York order; Cy (Amsterdam) returned an earlier order before hers
    env.flow("order-thanks", THANKS)
    order(env, "cy", "Europe/Amsterdam", "Order Returned", order_id="c0")
    env.advance(minutes=1)
    order(env, "ada", "Europe/Amsterdam", order_id="a1")
    order(env, "bob", "America/New_York", order_id="b1")
    order(env, "cy", "Europe/Amsterdam", order_id="c1")
    dispatch(env)
    # the enrollments are decided now, with the planned time
    sends = {e.person_id: e for e in env.sends("order-thanks")}
    assert len(sends) == 3
    ada_at = datetime(2026, 11, 4, 10, 0, tzinfo=AMS)  # Wednesday: Monday 09:01 + 2d, then 10:00
    bob_at = datetime(2026, 11, 4, 10, 0, tzinfo=NY)  # 03:01 in New York + 2d, then 10:00 there
    assert sends[env.person("ada")].detail["at"] == to_millis(ada_at)
    assert sends[env.person("bob")].detail["at"] == to_millis(bob_at)

    # When Bob returns his order the next day
    env.advance(days=1)
    order(env, "bob", "America/New_York", "Order Returned", order_id="b1")
    # Then nothing is sent before the time: not after one day, not one minute before 10:00
    dispatch(env)
    advance_to(env, ada_at - timedelta(minutes=1))
    assert receiver.received == []
    assert log_of(env, "Message Sent") == []

    # At 10:00 Amsterdam time Ada and Cy are thanked (Cy's return was before her order)
    advance_to(env, ada_at)
    got = sorted((m["person"]["userId"], m["message"]["body"]) for m in receiver.received)
    assert got == [("ada", "Thanks for your order a1!"), ("cy", "Thanks for your order c1!")]
    sent = log_of(env, "Message Sent")
    assert len(sent) == 2
    # the decision is timestamped at the order, the send at 10:00 local
    decided = {e.body["properties"]["delivery_key"]: e for e in _events(env, "Message Decided")}
    assert {e.time_ms for e in decided.values()} == {to_millis(START + timedelta(minutes=1))}
    assert {e.time_ms for e in _events(env, "Message Sent")} == {to_millis(ada_at)}

    # At 10:00 New York time Bob's is due, and cancelled: a suppression with its reason
    advance_to(env, bob_at)
    assert len(receiver.received) == 2
    [cancelled] = log_of(env, "Message Suppressed")
    assert cancelled["reason"] == "cancelled"
    assert cancelled["flow_id"] == "order-thanks"
    assert "delay.cancel_if held" in cancelled["detail"]
    assert "Order Returned" in cancelled["detail"]
    bob = env.person("bob")
    rows = {(d.person_id, d.kind): d for d in env.services.outbox.list(env.workspace)}
    assert rows[(bob, "message")].status == "suppressed"
    assert (rows[(bob, "message")].last_error or "").startswith("cancelled: ")

    # The follow-ups count from the delayed send (12:00 local) and are cancelled the same way
    ada = env.person("ada")
    assert rows[(ada, "follow_up")].next_attempt_ms == to_millis(ada_at + timedelta(hours=2))
    advance_to(env, bob_at + timedelta(hours=2))
    rows = {(d.person_id, d.kind): d for d in env.services.outbox.list(env.workspace)}
    assert rows[(ada, "follow_up")].status == "sent"
    assert rows[(bob, "follow_up")].status == "suppressed"
    assert [s["reason"] for s in log_of(env, "Message Suppressed")] == ["cancelled", "cancelled"]


def test_a_delayed_message_in_quiet_hours_is_deferred_to_their_end(env: FlowEnv, receiver: Receiver) -> None:
    # Given workspace quiet hours 09:00-11:00 (odd, to catch a 10:00 send) and a delayed flow
    with env.admin() as c:
        r = c.put("/v1/guardrails", json={"quietHours": {"start": "09:00", "end": "11:00"}})
        assert r.status_code == 200, r.text
    env.flow("order-thanks", THANKS)
    order(env, "ada", "Europe/Amsterdam", order_id="a1")
    # When it falls due at 10:00 local
    due = datetime(2026, 11, 4, 10, 0, tzinfo=AMS)
    advance_to(env, due)
    # Then it is deferred to 11:00 local, and sent then
    assert receiver.received == []
    [deferred] = log_of(env, "Message Deferred")
    assert deferred["reason"] == "quiet_hours_deferred"
    assert deferred["until"] == to_millis(datetime(2026, 11, 4, 11, 0, tzinfo=AMS))
    advance_to(env, datetime(2026, 11, 4, 11, 0, tzinfo=AMS))
    assert [m["person"]["userId"] for m in receiver.received] == ["ada"]


def test_a_delay_does_not_make_a_message_stale(env: FlowEnv, receiver: Receiver) -> None:
    # Given a flow whose delay (3 days) is longer than the server's send max age (24 hours)
    env.flow("order-thanks", THANKS.replace("for: 2d", "for: 3d"))
    # When Ada's order arrives 30 hours late (its decision is 30 hours old, its send is ahead)
    late = START - timedelta(hours=30)
    env.send(
        {
            "type": "track",
            "userId": "ada",
            "event": "Order Completed",
            "properties": {"order_id": "a1"},
            "timestamp": late.isoformat(),
            "context": {"timezone": "Europe/Amsterdam"},
        }
    )
    # and Bob orders now, and the flow is paused when his message falls due, an hour long
    order(env, "bob", "Europe/Amsterdam", order_id="b1")
    rows = {d.person_id: d for d in env.services.outbox.list(env.workspace) if d.kind == "message"}
    assert rows[env.person("ada")].status == "pending"
    ada_at = datetime(2026, 11, 4, 10, 0, tzinfo=AMS)  # 1 November 03:00 local + 3d, then 10:00
    assert rows[env.person("ada")].next_attempt_ms == to_millis(ada_at)
    advance_to(env, ada_at)
    assert [m["person"]["userId"] for m in receiver.received] == ["ada"]
    bob_at = datetime(2026, 11, 5, 10, 0, tzinfo=AMS)
    advance_to(env, bob_at - timedelta(minutes=1))
    with env.admin() as c:
        assert c.post("/v1/flows/order-thanks/pause").status_code == 200
    advance_to(env, bob_at)
    advance_to(env, bob_at + timedelta(minutes=30))
    assert [m["person"]["userId"] for m in receiver.received] == ["ada"]
    with env.admin() as c:
        assert c.post("/v1/flows/order-thanks/resume").status_code == 200
    advance_to(env, bob_at + timedelta(hours=1))
    # Then both are sent: the age of a queued message counts from when it was meant to go
    assert [m["person"]["userId"] for m in receiver.received] == ["ada", "bob"]
    assert [s["reason"] for s in log_of(env, "Message Suppressed")] == []


def _events(env: FlowEnv, name: str) -> list[LoggedEvent]:
    return [e for e in env.services.events.read(env.workspace, after_seq=0, limit=10_000) if e.name == name]
