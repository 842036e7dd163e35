"""Follow-up on another channel: "if the app overlay fails, the SMS still does the job".
The card goes out at once; the webhook (standing in for the second channel) only if the goal
was not reached within the follow-up delay, checked at send time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.flows.conftest import FlowEnv
from tests.flows.test_dispatch_e2e import dispatch, log_of
from tests.webhook_receiver import Receiver, webhook_env


@pytest.fixture
def env(database_url: str, receiver: Receiver, tmp_path: Path) -> Iterator[FlowEnv]:
    with webhook_env(
        database_url,
        receiver,
        console_path=str(tmp_path / "console.jsonl"),
    ) as e:
        yield e


CONFIRM = """
id: confirm-slot
tier: A
trigger: {event: Parcel At Hub}
reentry: every_time
channels: [in_app]
goal: {event: Slot Confirmed, within: 1d, where: {event: properties.ok, equals: true}}
follow_up: {channel: webhook, after: 2h}
message:
  variants:
    - id: main
      title: Your parcel arrives tomorrow
      body: Confirm the 9-11 slot?
      action: {label: Confirm, url: "https://shop.example/slot"}
"""


def at_hub(env: FlowEnv, user: str) -> None:
    env.send({"type": "track", "userId": user, "event": "Parcel At Hub"})
    dispatch(env)


def test_follow_up_goes_only_when_the_goal_was_not_reached(env: FlowEnv, receiver: Receiver) -> None:
    env.flow("confirm-slot", CONFIRM)
    at_hub(env, "ada")
    at_hub(env, "bob")
    at_hub(env, "cy")
    assert receiver.received == []  # the cards went out; the follow-ups wait two hours
    env.advance(minutes=30)
    env.send({"type": "track", "userId": "ada", "event": "Slot Confirmed", "properties": {"ok": True}})
    env.send({"type": "track", "userId": "cy", "event": "Slot Confirmed", "properties": {"ok": False}})
    env.advance(hours=2)
    dispatch(env)
    assert sorted(m["person"]["userId"] for m in receiver.received) == ["bob", "cy"]
    assert {m["deliveryKey"].endswith(":follow-up") for m in receiver.received} == {True}
    by_kind = {(d.kind, d.status) for d in env.services.outbox.list(env.workspace)}
    assert by_kind == {("message", "sent"), ("follow_up", "sent"), ("follow_up", "suppressed")}
    [skipped] = log_of(env, "Message Suppressed")
    assert skipped["reason"] == "goal_reached"


def test_a_follow_up_needs_a_goal_and_another_channel(env: FlowEnv) -> None:
    no_goal = CONFIRM.replace(
        "goal: {event: Slot Confirmed, within: 1d, where: {event: properties.ok, equals: true}}\n", ""
    )
    r = env.put("flow", "confirm-slot", no_goal)
    assert r.status_code == 400
    assert "give the flow a 'goal'" in r.text
    same = CONFIRM.replace("follow_up: {channel: webhook", "follow_up: {channel: in_app")
    r = env.put("flow", "confirm-slot", same)
    assert r.status_code == 400
    assert "different channel" in r.text
    r = env.put("flow", "confirm-slot", CONFIRM.replace("after: 2h", "after: soon"))
    assert r.status_code == 400
