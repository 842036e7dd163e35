"""Every validation message says what is wrong and what would be right: table-driven, one row
a mistake flow authors make."""

from __future__ import annotations

import pytest

from momently.domain.definitions import Known, load, validate
from momently.domain.durations import duration_problem, format_duration, time_of_day_problem

KNOWN = Known(events=frozenset({"App Opened", "Product Added", "Order Completed"}))

MESSAGES = [
    # a misspelt re-entry rule: the key is suggested, not the words of the other form
    ("id: a\ntrigger: {event: App Opened}\nreentry: {once_pr: 1d}\n",
     "f.yaml:3: unknown key 'once_pr' in reentry (did you mean 'once_per'?)"),
    ("id: a\ntrigger: {event: App Opened}\nreentry: onse\n",
     "f.yaml:3: reentry: 'onse' is not one of once, every_time (did you mean 'once'?)"),
    # durations: whole numbers, a unit, no words
    ("id: a\ntrigger: {inactivity: {for: 1.5h}}\n",
     "f.yaml:2: trigger.inactivity.for: '1.5h': durations are whole numbers: write 1h30m"),
    ("kind: segment\nid: s\nrule: {count: Order Completed, in_last: 90, gte: 3}\n",
     "f.yaml:3: rule.in_last: 90: a duration needs a unit, e.g. 90d, 90h or 90m"),
    ("id: a\ntrigger: {absence: {first: {event: App Opened}, then: {event: Product Added}, within: 30}}\n",
     "f.yaml:2: trigger.absence.within: 30: a duration needs a unit, e.g. 30d, 30h or 30m"),
    ("id: a\ntrigger: {event: App Opened}\ngoal: {event: App Opened, within: 1 day}\n",
     "f.yaml:3: goal.within: '1 day': write 1d (a number and its unit, no space)"),
    ("id: a\ntrigger: {event: App Opened}\nreentry: {once_per: 1 month}\n",
     "f.yaml:3: reentry.once_per: '1 month': months and years are not durations (their length "
     "varies): write days or weeks, e.g. 30d"),
    ("id: a\ntrigger: {event: App Opened}\naudience: {computed: last_seen, within: soon}\n",
     "f.yaml:3: audience.within: 'soon': not a duration: write a whole number and a unit "
     "(ms, s, m, h, d, w), e.g. 30m, 2h, 7d or 1h30m"),
    ("id: a\ntrigger: {date: {trait: birthday, offset: 0.5d}}\n",
     "f.yaml:2: trigger.date.offset: '0.5d': durations are whole numbers: write 12h"),
    # times of day: HH:MM
    ("id: a\ntrigger: {date: {trait: birthday, at: '9:00'}}\n",
     "f.yaml:2: trigger.date.at: '9:00': a time of day is HH:MM with two digits: write 09:00"),
    ("id: a\ntrigger: {event: App Opened}\nquiet_hours: {start: '22:00', end: '7:00'}\n",
     "f.yaml:3: quiet_hours.end: '7:00': a time of day is HH:MM with two digits: write 07:00"),
    ("id: a\ntrigger: {date: {trait: birthday, at: '25:00'}}\n",
     "f.yaml:2: trigger.date.at: '25:00': not a time of day: write HH:MM, 24-hour, e.g. 09:00 or 21:30"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), MESSAGES)
def test_each_message_says_what_is_wrong_and_what_would_be_right(text: str, message: str) -> None:
    docs, bad = load(text, "f.yaml")
    assert [str(p) for p in bad + validate(docs, KNOWN)] == [message]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (90, "a duration needs a unit, e.g. 90d, 90h or 90m"),
        ("1.5", "a duration is a whole number and a unit, e.g. 90m or 2h"),
        ("0.3s", "durations are whole numbers: write 300ms"),
        ("2 weeks", "write 2w (a number and its unit, no space)"),
        ("30 mins", "write 30m (a number and its unit, no space)"),
        ("1y", "months and years are not durations (their length varies): write days or weeks, e.g. 30d"),
        (
            True,
            "not a duration: write a whole number and a unit (ms, s, m, h, d, w), e.g. 30m, 2h, 7d or 1h30m",
        ),
    ],
)
def test_duration_problems(value: object, problem: str) -> None:
    assert duration_problem(value) == problem


def test_times_of_day_and_duration_spelling() -> None:
    assert time_of_day_problem("7:5") == "a time of day is HH:MM with two digits: write 07:05"
    assert time_of_day_problem("noon").startswith("not a time of day")
    assert [format_duration(ms) for ms in (5_400_000, 86_400_000 + 1, 0)] == ["1h30m", "1d1ms", "0s"]
