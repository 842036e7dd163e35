"""Scenario documents read into steps and expectations on one timeline, and the checks of
what a run observed, as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from momently.domain.definitions import load
from momently.domain.scenario import (
    Decision,
    Delivery,
    Observed,
    Scenario,
    SegmentChange,
    check,
    parse_scenario,
    resolve_time,
    timeline,
)

START = int(datetime(2026, 3, 2, 9, 0, tzinfo=UTC).timestamp() * 1000)
H = 3_600_000
D = 24 * H


def scenario(text: str) -> Scenario:
    (doc,), problems = load("kind: scenario\nid: s\n" + text, "s.yaml")
    assert not problems
    parsed = parse_scenario(doc)
    assert isinstance(parsed, Scenario), parsed
    return parsed


def problems(text: str) -> list[str]:
    (doc,), _ = load("kind: scenario\nid: s\n" + text, "s.yaml")
    parsed = parse_scenario(doc)
    assert isinstance(parsed, list)
    return [str(p) for p in parsed]


@pytest.mark.parametrize(
    ("written", "ms"),
    [
        ("+0m", START),
        ("+13d", START + 13 * D),
        ("+2h30m", START + 2 * H + 30 * 60_000),
        ("2026-03-05T08:00:00Z", START + 2 * D + 23 * H),
        ("2026-03-05T09:00:00+01:00", START + 2 * D + 23 * H),
        (datetime(2026, 3, 3, 9, 0, tzinfo=UTC), START + D),  # YAML reads unquoted ISO itself
    ],
)
def test_times_are_offsets_from_the_start_or_absolute(written: object, ms: int) -> None:
    assert resolve_time(written, START) == ms


def test_steps_keep_a_clock_that_waits_move_and_late_events_do_not_rewind() -> None:
    s = scenario(
        "start: 2026-03-02T09:00:00Z\n"
        "steps:\n"
        "  - at: +1h\n    track: {userId: a, event: X}\n"
        "  - at: +30m\n    arrives: +2h\n    track: {userId: a, event: Y}\n"
        "  - wait: 1d\n"
        "  - track: {userId: a, event: Z}\n"  # no at: now, where the wait left the clock
        "settle: 2h\n"
    )
    assert [(st.kind, st.at_ms - START, st.arrives_ms - START) for st in s.steps] == [
        ("track", H, H),
        ("track", 30 * 60_000, 2 * H),
        ("wait", D + 2 * H, D + 2 * H),
        ("track", D + 2 * H, D + 2 * H),
    ]
    assert [st.line for st in s.steps] == [5, 7, 10, 11]
    assert s.end_ms == START + D + 4 * H
    assert s.offset(START + D + 2 * H + 30 * 60_000) == "+1d2h30m"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("stpes: []\n", "s.yaml:3: unknown key 'stpes' (did you mean 'steps'?)"),
        ("steps:\n  - track: {userId: a, event: X, timestamp: x}\n", "the step's at: sets the timestamp"),
        ("steps:\n  - {wait: 1d, at: +1h}\n", "a wait has no at/arrives"),
        ("steps:\n  - {track: {userId: a}, identify: {userId: a}}\n", "exactly one of track"),
        ("expect:\n  - message: {flow: f}\n", "message needs person:"),
        (
            "expect:\n  - message: {flow: f, person: a, cout: 1}\n",
            "unknown key 'cout' in message (did you mean 'count'?)",
        ),
        ("expect:\n  - segment: {id: s, person: a, member: yes}\n", "member is true or false"),
        ("settle: 1.5d\n", "durations are whole numbers: write 1d12h"),
        ("flows: cart\n", "flows is a list of flow ids"),
    ],
)
def test_mistakes_name_the_line_and_the_fix(text: str, problem: str) -> None:
    assert any(problem in p for p in problems(text)), problems(text)


EXPECT = """\
expect:
  - message: {flow: f, person: a, at: +30m, channel: console}
  - no_message: {person: b}
  - suppressed: {flow: f, person: c, reason: audience_false}
  - segment: {id: loyal, person: a, entered: +1d, member: true}
"""


def observed(
    *, a_at: int = START + 30 * 60_000, b_sent: bool = False, c_reason: str = "audience_false"
) -> Observed:
    return Observed(
        decisions=(Decision("f", "a", a_at, "send"), Decision("f", "c", START, "suppress", c_reason)),
        deliveries=(Delivery("f", "a", a_at, "sent", "console", "default"),)
        + ((Delivery("f", "b", START + H, "sent", "email", "default"),) if b_sent else ()),
        # a rule flipping just past a window is stamped a millisecond later: the same second
        segments=(SegmentChange("loyal", "a", START + D + 1, True),),
        members=frozenset({("loyal", "a")}),
    )


def test_every_expectation_holds_on_what_happened() -> None:
    assert check(scenario(EXPECT), observed()) == []


@pytest.mark.parametrize(
    ("seen", "line", "why"),
    [
        (
            observed(a_at=START + 31 * 60_000),
            4,
            "1 message(s) sent, none like this: decided at +31m (2026-03-02T09:31:00Z) on console",
        ),
        (observed(b_sent=True), 5, "sent: f decided at +1h (2026-03-02T10:00:00Z) on email"),
        (observed(c_reason="reentry_once"), 6, "suppressed, but not as expected: reentry_once at +0m"),
    ],
)
def test_a_failed_expectation_says_what_happened_instead(seen: Observed, line: int, why: str) -> None:
    (failure,) = check(scenario(EXPECT), seen)
    assert failure.expectation.line == line
    assert why in failure.why


def test_the_timeline_lists_a_persons_decisions_deliveries_and_segments_in_time_order() -> None:
    assert timeline(scenario(EXPECT), observed(), "a") == [
        "+30m (2026-03-02T09:30:00Z)  f: decided send",
        "+30m (2026-03-02T09:30:00Z)  f: message sent on console",
        "+1d (2026-03-03T09:00:00Z)  segment loyal: entered",
    ]
    assert timeline(scenario(EXPECT), observed(), "nobody") == ["(nothing happened)"]
