from __future__ import annotations

from typing import Any

import pytest

from momently.domain.chain import Follows, chained, depth_after, follows, loops
from momently.domain.definitions import Known, load, validate

FLOW_ID = "properties.flow_id"


def after(*flows: str, event: str = "Message Sent") -> dict[str, Any]:
    """A flow triggered by ``event`` of ``flows``."""
    return {"trigger": {"event": event, "where": {"event": FLOW_ID, "in": list(flows)}}}


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        (None, Follows()),
        ({"event": FLOW_ID, "equals": "tip"}, Follows(only=frozenset({"tip"}))),
        (
            {"event": FLOW_ID, "in": ["a", "b"], "not_equals": "a"},
            Follows(frozenset({"a", "b"}), frozenset({"a"})),
        ),
        (
            {"all": [{"event": FLOW_ID, "in": ["a", "b"]}, {"event": FLOW_ID, "equals": "b"}]},
            Follows(frozenset({"b"})),
        ),
        ({"event": FLOW_ID, "not_in": ["x"]}, Follows(unless=frozenset({"x"}))),
        ({"event": FLOW_ID, "exists": False}, Follows(only=frozenset())),
        # what a condition only may require says nothing
        ({"any": [{"event": FLOW_ID, "equals": "a"}, {"event": "properties.x", "equals": 1}]}, Follows()),
        ({"not": {"event": FLOW_ID, "equals": "a"}}, Follows()),
        ({"event": "properties.channel", "equals": "sms"}, Follows()),
    ],
)
def test_what_a_filter_says_about_the_flow_followed(where: object, expected: Follows) -> None:
    assert follows(where) == expected


@pytest.mark.parametrize(
    ("flows", "declared", "expected"),
    [
        ({"tip": {"trigger": {"event": "Feature Used"}}, "tip-2": after("tip")}, {}, {}),
        ({"a": after("a")}, {}, {"a": ("a", "a")}),
        ({"a": {"trigger": {"event": "Message Clicked"}}}, {}, {"a": ("a", "a")}),
        (
            {"a": after("b"), "b": after("a", event="Message Delivered")},
            {},
            {"a": ("a", "b", "a"), "b": ("b", "a", "b")},
        ),
        (
            {"a": after("b"), "b": after("c"), "c": after("a"), "d": after("a")},
            {},
            {
                "a": ("a", "c", "b", "a"),  # d follows a but leads nowhere
                "b": ("b", "a", "c", "b"),
                "c": ("c", "b", "a", "c"),
            },
        ),
        # "any flow but me" still loops through another flow that does the same
        (
            {
                "a": {"trigger": {"event": "Message Sent", "where": {"event": FLOW_ID, "not_equals": "a"}}},
                "b": {"trigger": {"event": "Message Sent", "where": {"event": FLOW_ID, "not_equals": "b"}}},
            },
            {},
            {"a": ("a", "b", "a"), "b": ("b", "a", "b")},
        ),
        # an action's declared event, recorded by a tap with its flow_id
        ({"a": {"trigger": {"event": "Slot Kept"}}}, {"a": ["Slot Kept"]}, {"a": ("a", "a")}),
        ({"a": {"trigger": {"event": "Slot Kept"}}, "b": {}}, {"b": ["Slot Kept"]}, {}),
        # an absence's first event enrolls, its then only cancels
        (
            {"a": {"trigger": {"absence": {"first": {"event": "Message Sent"}, "then": {"event": "X"}}}}},
            {},
            {"a": ("a", "a")},
        ),
        (
            {"a": {"trigger": {"absence": {"first": {"event": "X"}, "then": {"event": "Message Clicked"}}}}},
            {},
            {},
        ),
    ],
)
def test_loops(
    flows: dict[str, Any], declared: dict[str, list[str]], expected: dict[str, tuple[str, ...]]
) -> None:
    assert {fid: loop.path for fid, loop in loops(flows, declared).items()} == expected


def test_the_chain_depth_travels_in_the_delivery_key() -> None:
    assert chained("e12", 0) == "e12"
    assert chained("e12", 2) == "e12~c2"
    assert depth_after({"event": "Feature Used", "properties": {}}) == 0
    assert depth_after(None) == 0
    assert depth_after({"properties": {"delivery_key": "tip:p_1:e12"}}) == 1
    assert depth_after({"properties": {"delivery_key": "tip-2:p_1:e40~c1"}}) == 2
    assert depth_after({"properties": {"delivery_key": "tip-2:p_1:e40~c3:follow-up"}}) == 4


def test_validate_refuses_a_loop_with_the_stored_flows() -> None:
    docs, _ = load(
        "id: b\ntrigger:\n  event: Message Sent\n  where: {event: properties.flow_id, equals: a}\n", "b.yaml"
    )
    known = Known(flows={"a": after("b")})
    [problem] = validate(docs, known)
    assert (problem.line, problem.message) == (
        3,  # the trigger's event
        "flows would trigger each other in a loop: b -> a -> b (the messages of each trigger "
        "the next); a flow may follow another one's messages, not one that follows its own",
    )
    assert validate(docs, Known(flows={"a": after("c")})) == []
