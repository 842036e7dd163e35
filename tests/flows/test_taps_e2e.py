"""A tap records what it is: a ``Message Clicked``, and the action's declared event when the
flow gives one. It is the goal only when that declared event is the flow's goal; a tap on
"Open cart" never writes an ``Order Completed`` (a fake order in the profile and segments)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from momently.domain.actions import _serializer
from tests.flows.conftest import FlowEnv
from tests.flows.test_dispatch_e2e import dispatch, log_of
from tests.webhook_receiver import Receiver, webhook_env


@pytest.fixture
def env(database_url: str, receiver: Receiver, tmp_path: Path) -> Iterator[FlowEnv]:
    with webhook_env(database_url, receiver, console_path=str(tmp_path / "console.jsonl")) as e:
        yield e


BUYERS = """
kind: segment
id: buyers
rule: {count: Order Completed, gte: 1}
"""

CART_NUDGE = """
id: cart-nudge
trigger:
  absence:
    first: {event: Product Added}
    then: {event: Order Completed}
    within: 30m
    key: properties.cart_id
channels: [webhook]
goal: {event: Order Completed, within: 1d}
message:
  variants:
    - id: plain
      body: "Your cart is waiting."
      action: {label: Open cart, url: "https://shop.example/cart/{{ event.properties.cart_id }}"}
"""

KEEP_SLOT = """
id: keep-slot
tier: A
trigger: {event: Parcel At Hub}
channels: [webhook, console]
goal: {event: Slot Confirmed, within: 1d}
follow_up: {channel: console, after: 2h}
message:
  body: "Your parcel arrives tomorrow 9-11. Keep the slot?"
  action: {label: Keep slot, url: "https://shop.example/slot", event: Slot Confirmed}
"""


def tap(link: str) -> httpx.Response:
    """What the self-submitting page does in the person's browser."""
    return httpx.post(link)


def test_a_tap_on_a_cart_nudge_is_a_click_not_an_order(env: FlowEnv, receiver: Receiver) -> None:
    # Given a cart nudge whose goal is an order, and a segment of buyers
    env.segment("buyers", BUYERS)
    env.flow("cart-nudge", CART_NUDGE)
    env.send(
        {"type": "track", "userId": "ada", "event": "Product Added", "properties": {"cart_id": "c1"}},
    )
    env.advance(minutes=31)
    dispatch(env)
    [message] = receiver.received
    link = message["message"]["action"]["url"]
    # When Ada taps "Open cart" (twice)
    assert tap(link).headers["location"] == "https://shop.example/cart/c1"
    assert tap(link).status_code == 303
    env.settle()
    # Then the log holds one click with what was tapped, and no order
    [clicked] = log_of(env, "Message Clicked")
    [sent] = log_of(env, "Message Sent")
    assert clicked == {
        "flow_id": "cart-nudge",
        "flow_version": 1,
        "variant": "plain",
        "channel": "webhook",
        "delivery_key": sent["delivery_key"],
        "action": "Open cart",
        "url": "https://shop.example/cart/c1",
        "via": "one_tap",
    }
    assert "Order Completed" not in env.log_names()
    with env.admin() as c:
        profile = c.get("/v1/profiles/ada").json()
        members = c.get("/v1/segments/buyers/members").json()
    assert (profile["computed"]["ordersCompleted"], profile["computed"]["revenue"]) == (0, 0)
    assert members["members"] == []
    assert "Order Completed" not in profile["eventCounts"]
    assert log_of(env, "Segment Entered") == []


def test_a_tap_on_an_action_that_is_the_goal_records_the_goal(env: FlowEnv, receiver: Receiver) -> None:
    # Given a flow whose action declares the goal's event
    env.flow("keep-slot", KEEP_SLOT)
    env.send({"type": "track", "userId": "ada", "event": "Parcel At Hub"})
    env.send({"type": "track", "userId": "bob", "event": "Parcel At Hub"})
    dispatch(env)
    links = {m["person"]["userId"]: m["message"]["action"]["url"] for m in receiver.received}
    # When Ada taps "Keep slot" and Bob does not
    assert tap(links["ada"]).status_code == 303
    env.advance(hours=2, minutes=1)
    dispatch(env)
    # Then Ada's tap is a click and the goal, and only Bob gets the follow-up
    [confirmed] = log_of(env, "Slot Confirmed")
    assert (confirmed["flow_id"], confirmed["action"]) == ("keep-slot", "Keep slot")
    assert confirmed["via"] == "one_tap"
    assert [c["delivery_key"] for c in log_of(env, "Message Clicked")] == [confirmed["delivery_key"]]
    [skipped] = log_of(env, "Message Suppressed")
    assert skipped["reason"] == "goal_reached"
    follow_ups = [d for d in env.services.outbox.list(env.workspace) if d.kind == "follow_up"]
    assert sorted(d.status for d in follow_ups) == ["sent", "suppressed"]


def test_a_link_signed_before_actions_declared_events_records_only_a_click(
    env: FlowEnv, receiver: Receiver
) -> None:
    """Links already in inboxes when Momently is upgraded carry the flow's goal event in
    their token ("e"): a tap on one records a click, never that goal."""
    env.flow("cart-nudge", CART_NUDGE)
    env.send({"type": "track", "userId": "ada", "event": "Product Added", "properties": {"cart_id": "c1"}})
    legacy = {  # what links signed by earlier versions carried: the flow's goal event in "e"
        "k": f"cart-nudge:{env.person('ada')}:e1",
        "f": "cart-nudge",
        "p": env.person("ada"),
        "u": "ada",
        "a": None,
        "e": "Order Completed",
        "l": "Open cart",
        "r": "https://shop.example/cart/c1",
        "t": 86_400,
    }
    secret = env.services.workspaces.signing_key(env.workspace, now=env.clock.now())
    token = _serializer(secret, env.clock.now).dumps(legacy)
    assert tap(f"{env.url}/a/{env.workspace}/{token}").status_code == 303
    env.settle()
    assert [c["flow_id"] for c in log_of(env, "Message Clicked")] == ["cart-nudge"]
    assert "Order Completed" not in env.log_names()


# the queries docs/flows.md gives for taps that earlier versions recorded as goals
EARLIER_TAPS = {
    "sqlite": "SELECT seq, name FROM events WHERE workspace_id = 'acme' AND message_id LIKE 'action:%' "
    "AND json_extract(body, '$.properties.flow_version') IS NULL",
    "postgresql": "SELECT seq, name FROM events WHERE workspace_id = 'acme' AND message_id LIKE 'action:%' "
    "AND body::jsonb #>> '{properties,flow_version}' IS NULL",
}


def test_the_migration_query_finds_taps_recorded_as_goals_and_nothing_else(
    env: FlowEnv, receiver: Receiver
) -> None:
    # Given a tap an earlier version recorded as the goal (as it wrote it), and one recorded now
    env.flow("keep-slot", KEEP_SLOT)
    earlier = {"flow_id": "cart-nudge", "delivery_key": "cart-nudge:p_1:e1", "action": "Open cart"}
    env.send(
        {
            "type": "track",
            "userId": "bob",
            "event": "Order Completed",
            "messageId": "action:cart-nudge:p_1:e1",
            "properties": {**earlier, "via": "one_tap"},
        },
        {"type": "track", "userId": "bob", "event": "Order Completed", "properties": {"revenue": 9}},
    )
    env.send({"type": "track", "userId": "ada", "event": "Parcel At Hub"})
    dispatch(env)
    assert tap(receiver.received[0]["message"]["action"]["url"]).status_code == 303
    env.settle()
    assert "Slot Confirmed" in env.log_names()
    # When the documented query runs
    with env.services.db.read() as conn:
        rows = conn.execute(text(EARLIER_TAPS[conn.dialect.name])).all()
    # Then it finds only the earlier tap
    assert [name for _seq, name in rows] == ["Order Completed"]
