"""What a tap records, and what a flow's action may declare: table-driven."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from momently.domain.actions import Action, _serializer, read, sign, tap_tracks
from momently.domain.definitions import Known, load, validate

AT = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
SECRET = "s" * 32


def now() -> datetime:
    return AT


def action(event: str | None = None, channel: str = "email") -> Action:
    return Action(
        delivery_key="keep-slot:p_1:e7",
        flow_id="keep-slot",
        person_id="p_1",
        user_id="ada",
        anonymous_id=None,
        event=event,
        label="Keep slot",
        redirect="https://shop.example/slot",
        flow_version=3,
        variant="main",
        channel=channel,
    )


@pytest.mark.parametrize(
    ("declared", "channel", "via", "recorded"),
    [
        (None, "email", "one_tap", [("Message Clicked", "click:keep-slot:p_1:e7")]),
        (
            "Slot Confirmed",
            "sms",
            "one_tap",
            [("Message Clicked", "click:keep-slot:p_1:e7"), ("Slot Confirmed", "action:keep-slot:p_1:e7")],
        ),
        (
            "Slot Confirmed",
            "sms",
            "sms_reply",
            [("Message Clicked", "click:keep-slot:p_1:e7"), ("Slot Confirmed", "action:keep-slot:p_1:e7")],
        ),
        # the widget's act call already records an in-app card's click
        ("Slot Confirmed", "in_app", "one_tap", [("Slot Confirmed", "action:keep-slot:p_1:e7")]),
        (None, "in_app", "one_tap", []),
    ],
)
def test_a_tap_records_a_click_and_the_declared_event(
    declared: str | None, channel: str, via: str, recorded: list[tuple[str, str]]
) -> None:
    events = tap_tracks(action(declared, channel), via=via)
    assert [(e["event"], e["messageId"]) for e in events] == recorded
    for e in events:
        assert e["userId"] == "ada"
        assert e["properties"] == {
            "flow_id": "keep-slot",
            "flow_version": 3,
            "variant": "main",
            "channel": channel,
            "delivery_key": "keep-slot:p_1:e7",
            "action": "Keep slot",
            "url": "https://shop.example/slot",
            "via": via,
        }


def test_a_token_round_trips_and_an_earlier_ones_goal_is_ignored() -> None:
    declared = action("Slot Confirmed")
    assert read(SECRET, sign(SECRET, declared, now), now=now) == declared
    assert read(SECRET, sign(SECRET, action(None), now), now=now).event is None
    legacy = {"k": "cart:p_1:e1", "f": "cart", "p": "p_1", "u": "ada", "e": "Order Completed", "t": 3600}
    old = read(SECRET, _serializer(SECRET, now).dumps(legacy), now=now)
    assert (old.event, old.flow_id, old.flow_version, old.channel) == (None, "cart", None, None)


FLOW = """
id: keep-slot
trigger: {event: Parcel At Hub}
goal: {event: %s, within: 1d}
message:
  body: Keep the 9-11 slot?
  action: %s
"""

ACTION_PROBLEMS = [
    ("{label: Keep, url: 'https://s.example/k', event: Slot Confirmed}", "Slot Confirmed", []),
    # no declared event: the goal must be an event the workspace knows (reached elsewhere)
    (
        "{label: Keep, url: 'https://s.example/k'}",
        "Slot Confirmed",
        ["f.yaml:4: unknown event 'Slot Confirmed'"],
    ),
    ("{label: Keep, url: 'https://s.example/k'}", "Order Completed", []),
    (
        "{label: Buy, url: 'https://s.example/k', event: Order Completed}",
        "Order Completed",
        [
            "f.yaml:7: a tap is not a purchase: action.event cannot be 'Order Completed' (the shop "
            "records orders); declare what the tap is, e.g. 'Offer Claimed', or leave it out to "
            "record 'Message Clicked'"
        ],
    ),
    (
        "{label: Keep, event: Message Clicked}",
        "Order Completed",
        [
            "f.yaml:7: action.event cannot be 'Message Clicked', one of Momently's own events (a tap "
            "always records 'Message Clicked'); declare what the tap is, e.g. 'Slot Confirmed'"
        ],
    ),
    (
        "{label: Keep, evnt: Slot Confirmed}",
        "Order Completed",
        ["f.yaml:7: unknown key 'evnt' in the action (it takes label, url, event) (did you mean 'event'?)"],
    ),
    (
        "{label: Keep, event: '{{ event.name }}'}",
        "Order Completed",
        ["f.yaml:7: action.event '{{ event.name }}' must be a plain event name, not a template"],
    ),
    (
        "{label: Keep, event: 3}",
        "Order Completed",
        ["f.yaml:7: action.event is the name of the event a tap records, e.g. 'Slot Confirmed'"],
    ),
]


@pytest.mark.parametrize(("spec", "goal", "expected"), ACTION_PROBLEMS)
def test_what_an_action_may_declare(spec: str, goal: str, expected: list[str]) -> None:
    # the catalog knows the trigger and orders, not the tap's own event: the flow brings it
    known = Known(events=frozenset({"Parcel At Hub", "Order Completed"}))
    docs, bad = load(FLOW % (goal, spec), "f.yaml")
    assert [str(p) for p in bad + validate(docs, known)] == expected


def test_a_declared_event_does_not_turn_on_name_checks_in_an_empty_workspace() -> None:
    docs, _ = load(FLOW % ("Slot Confirmed", "{label: Keep, event: Slot Confirmed}"), "f.yaml")
    assert validate(docs, Known()) == []
