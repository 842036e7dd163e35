from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from momently.domain.conditions import (
    OPERATORS,
    SUBJECTS,
    ConditionError,
    Facts,
    compile_condition,
    count_changes,
)
from momently.domain.profile import Profile

NOW = 1_795_000_000_000  # 2026-11-18
DAY = 86_400_000
AMS = ZoneInfo("Europe/Amsterdam")


def facts(traits: dict[str, Any] | None = None, event: dict[str, Any] | None = None, **kw: Any) -> Facts:
    profile = Profile(
        person_id="p",
        traits=traits or {},
        orders_count=kw.pop("orders", 0),
        event_counts=kw.pop("counts", {}),
    )
    return Facts(profile=profile, now_ms=kw.pop("now", NOW), tz=kw.pop("tz", AMS), event=event, **kw)


@pytest.mark.parametrize(
    ("spec", "traits", "expected"),
    [
        ({"trait": "plan", "equals": "pro"}, {"plan": "pro"}, True),
        ({"trait": "plan", "equals": "pro"}, {"plan": "free"}, False),
        ({"trait": "plan", "equals": "pro"}, {}, False),
        ({"trait": "age", "equals": 30}, {"age": 30.0}, True),
        ({"trait": "flag", "equals": 1}, {"flag": True}, False),
        ({"trait": "plan", "not_equals": "pro"}, {}, False),
        ({"trait": "plan", "in": ["pro", "plus"]}, {"plan": "plus"}, True),
        ({"trait": "plan", "not_in": ["pro"]}, {"plan": "free"}, True),
        ({"trait": "age", "gte": 18}, {"age": 18}, True),
        ({"trait": "age", "gt": 18}, {"age": "19"}, False),
        ({"trait": "age", "lt": 18}, {"age": None}, False),
        ({"trait": "age", "between": [18, 30]}, {"age": 30}, True),
        ({"trait": "email", "exists": True}, {"email": "a@b.c"}, True),
        ({"trait": "email", "exists": False}, {}, True),
        ({"trait": "email", "contains": "@corp"}, {"email": "x@corp.io"}, True),
        ({"trait": "tags", "contains": "vip"}, {"tags": ["new", "vip"]}, True),
        ({"trait": "email", "matches": r"^[a-z]+@corp\.io$"}, {"email": "ann@corp.io"}, True),
        ({"trait": "email", "matches": r"^(a+)+$"}, {"email": "a" * 5000 + "!"}, False),  # RE2: no blow-up
        ({"trait": "address.city", "equals": "Utrecht"}, {"address": {"city": "Utrecht"}}, True),
        ({"trait": "address.city", "equals": "Utrecht"}, {"address": "Utrecht"}, False),
        ({"trait": "signup", "within": "7d"}, {"signup": "2026-11-15T00:00:00Z"}, True),
        ({"trait": "signup", "older_than": "7d"}, {"signup": "2026-11-15T00:00:00Z"}, False),
        ({"trait": "signup", "older_than": "7d"}, {"signup": "not a date"}, False),
        (
            {"trait": "loc", "near": {"lat": 52.37, "lon": 4.89, "km": 5}},
            {"loc": {"lat": 52.36, "lon": 4.90}},
            True,
        ),
        ({"trait": "loc", "near": {"lat": 52.37, "lon": 4.89, "km": 5}}, {"loc": [48.85, 2.35]}, False),
        ({"trait": "loc", "geohash": "u173"}, {"loc": {"latitude": 52.37, "longitude": 4.89}}, True),
        ({"trait": "cell", "geohash": "u173"}, {"cell": "u173zm"}, True),
        ({"not": {"trait": "plan", "equals": "pro"}}, {}, True),
        ({"all": [{"trait": "a", "equals": 1}, {"trait": "b", "equals": 2}]}, {"a": 1, "b": 2}, True),
        ({"any": [{"trait": "a", "equals": 1}, {"trait": "b", "equals": 2}]}, {"b": 2}, True),
        ({"trait": "age", "gte": 18, "lt": 30}, {"age": 40}, False),
    ],
)
def test_operators(spec: dict[str, Any], traits: dict[str, Any], expected: bool) -> None:
    assert compile_condition(spec)(facts(traits)) is expected


def test_subjects_event_computed_count_last_segment_local() -> None:
    f = facts(
        event={"properties": {"total": 60}, "context": {"device": {"type": "ios"}}},
        orders=3,
        counts={"Order Completed": 3},
        segments=frozenset({"vip"}),
        history={"Order Completed": [NOW - 100 * DAY, NOW - 10 * DAY, NOW - DAY]},
        now=1_795_000_000_000,  # 2026-11-18 12:06:40 in Amsterdam (UTC+1), a Wednesday
    )
    assert compile_condition({"event": "properties.total", "gte": 50})(f)
    assert compile_condition({"event": "context.device.type", "in": ["ios", "android"]})(f)
    assert compile_condition({"computed": "orders_count", "gte": 3})(f)
    assert compile_condition({"count": "Order Completed", "gte": 3})(f)
    assert compile_condition({"count": "Order Completed", "in_last": "90d", "equals": 2})(f)
    assert compile_condition({"last": "Order Completed", "within": "2d"})(f)
    assert compile_condition({"segment": "vip"})(f)
    assert compile_condition({"segment": "churned", "is": False})(f)
    assert compile_condition({"local": "hour", "equals": 12})(f)
    assert compile_condition({"local": "weekday", "in": ["wed"]})(f)
    assert compile_condition({"local": "time", "between": ["11:00", "22:00"]})(f)
    assert not compile_condition({"local": "time", "between": ["22:00", "11:00"]})(f)  # wraps midnight
    assert compile_condition({"local": "time", "between": ["12:00", "11:00"]})(f)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"trait": "a"}, "needs an operator"),
        ({"trait": "a", "computed": "b", "equals": 1}, "exactly one subject"),
        ({"trait": "a", "withn": "2d"}, "unknown key 'withn'"),
        ({"trait": "a", "within": "2 days"}, "write 2d"),
        ({"trait": "a", "in": "pro"}, "non-empty list"),
        ({"trait": "a", "matches": "("}, "bad regular expression"),
        ({"computed": "nope", "equals": 1}, "unknown computed attribute"),
        ({"local": "season", "equals": 1}, "unknown local time part"),
        ({"all": []}, "non-empty list"),
        ({"trait": "a", "near": {"lat": 1}}, "'near' takes"),
    ],
)
def test_compile_errors_are_clear(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ConditionError, match=message):
        compile_condition(spec)


def test_segments_cannot_read_the_trigger_event_or_clock() -> None:
    with pytest.raises(ConditionError, match="segment"):
        compile_condition({"event": "properties.x", "equals": 1}, in_segment=True)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)
OPERANDS: dict[str, Any] = {
    "equals": st.sampled_from([1, "a", 2.5, True]),
    "not_equals": st.sampled_from([1, "a"]),
    "in": st.just([1, "a"]),
    "not_in": st.just([1, "a"]),
    "gt": st.sampled_from([0, "m"]),
    "gte": st.just(1),
    "lt": st.just(3),
    "lte": st.just("z"),
    "between": st.just([1, 5]),
    "exists": st.booleans(),
    "contains": st.just("a"),
    "matches": st.just("a.*"),
    "within": st.just("2d"),
    "older_than": st.just("1h"),
    "near": st.just({"lat": 1.0, "lon": 1.0, "km": 10}),
    "geohash": st.just("s0"),
    "is": st.booleans(),
    "since": st.just("decision"),
}


@given(
    op=st.sampled_from([o for o in OPERATORS if o != "is"]),
    data=st.data(),
    traits=st.dictionaries(st.sampled_from(["a", "b"]), json_values, max_size=2),
    event=json_values,
)
def test_missing_or_mistyped_values_never_raise_and_not_inverts(
    op: str, data: st.DataObject, traits: dict[str, Any], event: Any
) -> None:
    operand = data.draw(OPERANDS[op])
    for subject, target in (("trait", "a"), ("trait", "a.b"), ("event", "properties.a")):
        cond = compile_condition({subject: target, op: operand}, decided=True)
        f = facts(traits, event if isinstance(event, dict) else None)
        result = cond(f)
        assert isinstance(result, bool)
        assert compile_condition({"not": {subject: target, op: operand}}, decided=True)(f) is (not result)


@given(
    t=st.integers(NOW - 30 * DAY, NOW + DAY),
    span_days=st.integers(1, 20),
    op=st.sampled_from(["within", "older_than"]),
    probes=st.lists(st.integers(0, 40 * DAY), max_size=10),
)
def test_next_change_is_the_first_moment_the_result_can_flip(
    t: int, span_days: int, op: str, probes: list[int]
) -> None:
    cond = compile_condition({"trait": "at", op: f"{span_days}d"})
    traits = {"at": t}
    now = NOW
    result = cond(facts(traits, now=now))
    change = cond.next_change(facts(traits, now=now))
    for dt in probes:
        probe = now + dt
        if change is None or probe < change:
            assert cond(facts(traits, now=probe)) is result
    if change is not None:
        assert change > now


@given(
    times=st.lists(st.integers(NOW - 60 * DAY, NOW), max_size=8), probes=st.lists(st.integers(0, 60 * DAY))
)
def test_count_window_changes_only_when_its_timer_says(times: list[int], probes: list[int]) -> None:
    cond = compile_condition({"count": "X", "in_last": "30d", "gte": 2})
    history = {"X": sorted(times)}
    base = cond(facts(history=history))
    change = cond.next_change(facts(history=history))
    for dt in probes:
        if change is None or NOW + dt < change:
            assert cond(facts(history=history, now=NOW + dt)) is base


@given(
    times=st.lists(st.integers(NOW - 10 * DAY, NOW + DAY), max_size=12),
    window_days=st.integers(1, 5),
    now=st.integers(NOW - 5 * DAY, NOW + DAY),
)
def test_windowed_count_and_its_next_change_match_a_plain_scan(
    times: list[int], window_days: int, now: int
) -> None:
    """The evaluator bisects the (ascending) history; a scan of every time is the reference."""
    window = window_days * DAY
    history = sorted(times)
    inside = [t for t in history if now - window < t <= now]
    future = [t for t in history if t > now]
    flips = ([inside[0] + window] if inside else []) + ([future[0]] if future else [])
    assert count_changes(history, window, now) == (min(flips) if flips else None)
    for n in range(len(inside) + 2):
        cond = compile_condition({"count": "X", "in_last": f"{window_days}d", "gte": n})
        assert cond(facts(history={"X": history}, now=now)) is (len(inside) >= n)


def test_subject_and_operator_lists_are_documented() -> None:
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "flows.md").read_text()
    for word in (*SUBJECTS, *OPERATORS, "in_last"):
        assert f"`{word}`" in doc, word
