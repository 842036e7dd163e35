"""Folding a person's events into an exposure's outcomes: windows, and that arrival order does
not matter."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from momently.domain.event import DERIVED_LIBRARY
from momently.domain.outcomes import DAY_MS, Exposure, delta, observe, values
from momently.domain.profile import LoggedEvent

X = 100 * DAY_MS  # exposure time
HOUR = 3_600_000


def exposure(**kw: Any) -> Exposure:
    base: dict[str, Any] = dict(
        experiment_id="e",
        person_id="p",
        arm="a",
        flow_id="f",
        flow_version=1,
        exposed_ms=X,
        seq=10,
        goal_event="Order Completed",
        window_ms=HOUR,
    )
    return Exposure(**{**base, **kw})


def ev(name: str, t: int, seq: int = 20, type_: str = "track", **props: Any) -> LoggedEvent:
    body: dict[str, Any] = {"properties": props}
    if props.pop("derived", False):
        body["context"] = {"library": {"name": DERIVED_LIBRARY}}
    return LoggedEvent(seq, type_, name, "u", None, t, body, t)


def always(_: LoggedEvent) -> bool:
    return True


@pytest.mark.parametrize(
    ("event", "field", "expected"),
    [
        (ev("Order Completed", X + HOUR, total=5), "converted_ms", X + HOUR),  # the window's edge
        (ev("Order Completed", X + HOUR + 1, total=5), "converted_ms", None),
        (ev("Order Completed", X + HOUR, total=5), "revenue", 5.0),
        (ev("Order Completed", X + HOUR + 1, revenue=5), "revenue", 0.0),
        (ev("Order Completed", X + 2 * HOUR, revenue="7.5"), "ordered_ms", X + 2 * HOUR),
        (ev("Order Completed", X - 1, total=5), "pre_revenue", 5.0),
        (ev("Order Completed", X - 30 * DAY_MS - 1, total=5), "pre_revenue", 0.0),
        (ev("Page Viewed", X - DAY_MS, type_="page"), "pre_events", 1),
        (ev("Page Viewed", X + DAY_MS, type_="page"), "active_ms", X + DAY_MS),
        (ev("Message Clicked", X + 1), "active_ms", None),  # our messages are not activity
        (ev("Segment Entered", X + 1, derived=True), "active_ms", None),
        (ev("Identify", X + 1, type_="identify"), "active_ms", None),
        (ev("Page Viewed", X + 91 * DAY_MS), "active_ms", None),  # past the longest window
        (ev("Unsubscribed", X + 7 * DAY_MS), "unsubscribed_ms", X + 7 * DAY_MS),
        (ev("Unsubscribed", X + 7 * DAY_MS + 1), "unsubscribed_ms", None),
        (ev("Message Replied", X + 1, keyword="stop"), "complained_ms", X + 1),
        (ev("Message Replied", X + 1, keyword="help"), "complained_ms", None),
        (ev("Message Failed", X + 1, flow_id="f"), "failed_ms", X + 1),
        (ev("Message Failed", X + 1, flow_id="g"), "failed_ms", None),
    ],
)
def test_one_event(event: LoggedEvent, field: str, expected: object) -> None:
    assert getattr(observe(exposure(), event, always), field) == expected


def test_goal_where_decides() -> None:
    order = ev("Order Completed", X + 1, total=5)
    assert observe(exposure(), order, lambda _: False).converted_ms is None
    assert observe(exposure(), order, lambda _: False).revenue == 5.0  # revenue has no where


def test_the_metric_values_of_an_exposure() -> None:
    x = exposure(
        converted_ms=X + 90_000, revenue=12.0, active_ms=X + 40 * DAY_MS, pre_events=3, pre_revenue=8.0
    )
    v = values(x)
    assert v["conversion"].value == 1.0
    assert v["conversion"].covariate == 3.0
    assert v["time_to_goal"].included
    assert v["time_to_goal"].value == 90.0
    assert v["revenue"].value == 12.0
    assert v["revenue"].covariate == 8.0
    assert v["retention_30d"].value == 0.0
    assert v["retention_90d"].value == 1.0
    assert not values(exposure())["time_to_goal"].included
    d = delta(None, x)
    assert d["conversion"] == (1, 1.0, 1.0, 3.0, 9.0, 3.0)
    assert delta(x, x) == {}


EVENTS = [
    ev("Order Completed", X - DAY_MS, seq=1, total=3),
    ev("Page Viewed", X - 2 * DAY_MS, seq=2),
    ev("Order Completed", X + 10, seq=3, total=4),
    ev("Order Completed", X + 5, seq=4, total=6),
    ev("Page Viewed", X + 31 * DAY_MS, seq=5),
    ev("Unsubscribed", X + 2 * DAY_MS, seq=6),
    ev("Message Replied", X + HOUR, seq=7, keyword="stop"),
]


@given(st.permutations(EVENTS))
def test_any_arrival_order_gives_the_same_outcomes(order: list[LoggedEvent]) -> None:
    folded = exposure()
    for e in order:
        folded = observe(folded, e, always)
    reference = exposure()
    for e in EVENTS:
        reference = observe(reference, e, always)
    assert folded == reference
    assert folded.converted_ms == X + 5
    assert folded.revenue == 10.0
