"""Delays: how flow authors write them (and what validation says when they get it wrong), and
when a delayed message goes: the first local HH:MM at or after decision + for."""

from __future__ import annotations

from datetime import datetime, time
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from momently.domain.conditions import ConditionError, Facts, compile_condition
from momently.domain.definitions import Known, load, validate
from momently.domain.delays import compile_delay, send_time
from momently.domain.flow import compile_flow
from momently.domain.profile import Profile

UTC = ZoneInfo("UTC")
AMS = ZoneInfo("Europe/Amsterdam")
NY = ZoneInfo("America/New_York")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")  # moves its clocks by 30 minutes
DAY = 86_400_000
KNOWN = Known(events=frozenset({"Order Completed", "Order Returned"}))
FLOW = "id: thanks\ntrigger: {event: Order Completed}\nmessage: {body: Thanks}\n"


def ms(y: int, mo: int, d: int, h: int = 0, mi: int = 0, *, tz: ZoneInfo = UTC) -> int:
    return int(datetime(y, mo, d, h, mi, tzinfo=tz).timestamp() * 1000)


def problems(extra: str) -> list[str]:
    docs, found = load(FLOW + extra, "f.yaml")
    return [str(p) for p in found + validate(docs, KNOWN)]


# writing a delay ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "delay: 2d\n",
        "delay: {for: 2d}\n",
        "delay: {for: 1d12h, at: '10:00'}\n",
        "delay:\n  for: 2d\n  at: '23:59'\n  cancel_if: {last: Order Returned, since: decision}\n",
        "delay: {for: 2d, cancel_if: {any: [{segment: vip}, {not: {trait: plan, equals: pro}}]}}\n",
    ],
)
def test_valid_delays(text: str) -> None:
    assert problems(text + "---\nkind: segment\nid: vip\nrule: {trait: vip, equals: true}\n") == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("delay: {for: 2d, at: '9:00'}",
         "delay.at: '9:00': a time of day is HH:MM with two digits: write 09:00"),
        ("delay: {for: 2d, at: '25:00'}",
         "delay.at: '25:00': not a time of day: write HH:MM, 24-hour, e.g. 09:00 or 21:30"),
        ("delay: {for: 2d, at: 10:00}",
         'delay.at: 600: quote the time: "10:00" (unquoted, YAML reads it as a number)'),
        ("delay: {for: 2 days}", "delay.for: '2 days': write 2d (a number and its unit, no space)"),
        ("delay: {for: 1.5d}", "delay.for: '1.5d': durations are whole numbers: write 1d12h"),
        ("delay: 48", "delay: 48: a duration needs a unit, e.g. 48d, 48h or 48m"),
        ("delay: 0s", "delay: '0s' is not a positive duration"),
        ("delay: {for: 0m, at: '10:00'}", "delay.for: '0m' is not a positive duration"),
        ("delay: {at: '10:00'}",
         'delay: \'for\' is required: how long to wait, e.g. {for: 2d, at: "10:00"}'),
        ("delay: {for: 2d, cancel: {segment: vip}}",
         "unknown key 'cancel' in delay (did you mean 'cancel_if'?)"),
        ("delay: {for: 2d, cancel_if: {last: Order Retruned, since: decision}}",
         "unknown event 'Order Retruned' (did you mean 'Order Returned'?)"),
        ("delay: {for: 2d, cancel_if: {last: Order Returned, since: yesterday}}",
         "'since' takes the word decision: {last: Order Returned, since: decision}"),
        ("audience: {last: Order Returned, since: decision}",
         "'since: decision' compares with the moment the flow decided, so it belongs in a "
         "delay's cancel_if (checked when the delayed message is due)"),
    ],
)  # fmt: skip
def test_each_mistake_says_what_would_be_right(text: str, message: str) -> None:
    assert problems(text + "\n") == [f"f.yaml:4: {message}"]


def test_the_short_form_and_the_long_form_compile_to_the_same_wait() -> None:
    short = compile_flow({"id": "t", "trigger": {"event": "X"}, "delay": "2d"}, 1).delay
    long = compile_flow({"id": "t", "trigger": {"event": "X"}, "delay": {"for": "2d"}}, 1).delay
    assert short is not None
    assert long is not None
    assert short.for_ms == long.for_ms == 2 * DAY
    assert (short.at, short.cancel_if) == (None, None)
    full = compile_delay({"for": "2d", "at": "10:00", "cancel_if": {"segment": "vip"}})
    assert full.at == time(10, 0)
    assert full.cancel_if is not None
    assert compile_flow({"id": "t", "trigger": {"event": "X"}}, 1).delay is None


def test_since_decision_holds_only_for_times_after_the_decision() -> None:
    cond = compile_condition({"last": "Order Returned", "since": "decision"}, decided=True)
    decided = ms(2026, 11, 2, 15)

    def at(*times: int, decided_ms: int | None = decided) -> bool:
        history = {"Order Returned": list(times)} if times else {}
        return cond(Facts(Profile("p"), decided + 2 * DAY, UTC, history=history, decided_ms=decided_ms))

    assert at(decided + DAY)
    assert not at(decided - DAY)  # returned an earlier order, before this one was decided on
    assert not at(decided)  # the same instant is not "meanwhile"
    assert not at()
    assert not at(decided + DAY, decided_ms=None)  # no decision, nothing is after it
    with pytest.raises(ConditionError, match="cancel_if"):
        compile_condition({"last": "Order Returned", "since": "decision"})


# when it goes --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("decided", "for_ms", "at", "tz", "expected"),
    [
        # an order on Monday afternoon: thanked on Thursday morning (Wednesday 15:00 + is past 10:00)
        (ms(2026, 11, 2, 15, tz=AMS), 2 * DAY, time(10), AMS, ms(2026, 11, 5, 10, tz=AMS)),
        # an order on Monday morning: on Wednesday at 10:00
        (ms(2026, 11, 2, 8, tz=AMS), 2 * DAY, time(10), AMS, ms(2026, 11, 4, 10, tz=AMS)),
        # exactly at the time: then, not a day later
        (ms(2026, 11, 2, 10, tz=AMS), 2 * DAY, time(10), AMS, ms(2026, 11, 4, 10, tz=AMS)),
        # no local time: decision + for
        (ms(2026, 11, 2, 15, tz=AMS), 2 * DAY, None, AMS, ms(2026, 11, 4, 15, tz=AMS)),
        # the same instant, another zone: 10:00 in New York
        (ms(2026, 11, 2, 15, tz=AMS), 2 * DAY, time(10), NY, ms(2026, 11, 4, 10, tz=NY)),
        # across the autumn change (Amsterdam, 25 October 2026): 10:00 stays 10:00 local
        (ms(2026, 10, 23, 12, tz=AMS), 2 * DAY, time(10), AMS, ms(2026, 10, 26, 10, tz=AMS)),
        # spring forward (Amsterdam, 29 March 2026, 02:00 -> 03:00): 02:30 does not exist
        (ms(2026, 3, 27, 12, tz=AMS), 1 * DAY, time(2, 30), AMS, ms(2026, 3, 29, 1, 0)),
        # fall back (New York, 1 November 2026, 01:00-02:00 twice): the second 01:30 still
        # counts when the first is before decision + for
        (ms(2026, 11, 1, 5, 45), 1000, time(1, 30), NY, ms(2026, 11, 1, 6, 30)),
        (ms(2026, 11, 1, 5, 0), 1000, time(1, 30), NY, ms(2026, 11, 1, 5, 30)),
    ],
)
def test_send_times(decided: int, for_ms: int, at: time | None, tz: ZoneInfo, expected: int) -> None:
    assert send_time(decided, for_ms, at, tz) == expected


ZONES = [ZoneInfo(z) for z in ("UTC", "Europe/Amsterdam", "America/New_York", "Asia/Kolkata")]


@given(
    decided=st.integers(ms(2020, 1, 1), ms(2035, 1, 1)),
    for_ms=st.integers(1, 60 * DAY),
    hour=st.integers(0, 23),
    minute=st.integers(0, 59),
    tz=st.sampled_from([*ZONES, LORD_HOWE]),
)
def test_the_first_local_time_at_or_after_decision_plus_for(
    decided: int, for_ms: int, hour: int, minute: int, tz: ZoneInfo
) -> None:
    at = time(hour, minute)
    got = send_time(decided, for_ms, at, tz)
    earliest = decided + for_ms
    # never early, and never a whole day late
    assert got >= earliest
    assert got - earliest < DAY + 3_600_000
    local = datetime.fromtimestamp(got / 1000, tz=tz)
    if local.time().replace(second=0, microsecond=0) != at:
        # only when the clocks skipped ``at`` that day: then the first minute after the gap
        naive = datetime.combine(local.date(), at)
        assert naive.replace(tzinfo=tz).astimezone(UTC).astimezone(tz).replace(tzinfo=None) != naive
        before = datetime.fromtimestamp((got - 60_000) / 1000, tz=tz)
        assert before.utcoffset() != local.utcoffset()
    # the first: no whole minute between decision + for and the result shows that local time
    minute_ms = 60_000
    probe = -(-earliest // minute_ms) * minute_ms
    while probe < got:
        assert datetime.fromtimestamp(probe / 1000, tz=tz).time() != at, probe
        probe += minute_ms


@given(decided=st.integers(ms(2020, 1, 1), ms(2035, 1, 1)), for_ms=st.integers(1, 60 * DAY))
def test_without_a_local_time_it_is_decision_plus_for(decided: int, for_ms: int) -> None:
    assert send_time(decided, for_ms, None, AMS) == decided + for_ms


def test_a_day_with_the_time_twice_gives_the_first_one_that_is_not_early() -> None:
    first = ms(2026, 11, 1, 5, 30)  # 01:30 EDT
    second = first + 3_600_000  # 01:30 EST
    assert send_time(first - 3_600_000, 1, time(1, 30), NY) == first
    assert send_time(first, 1, time(1, 30), NY) == second
