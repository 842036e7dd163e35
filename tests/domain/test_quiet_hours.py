"""Quiet hours in the person's time zone, across midnight and daylight-saving changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from momently.domain.quiet_hours import InvalidQuietHours, QuietHours, is_quiet, next_allowed

AMS = ZoneInfo("Europe/Amsterdam")
NIGHT = QuietHours.parse("21:00", "08:00")


def at(text: str, tz: ZoneInfo = AMS) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=tz).astimezone(UTC)


def test_a_wrapping_window_defers_to_the_next_morning() -> None:
    assert next_allowed(NIGHT, at("2026-06-01T20:59"), AMS) == at("2026-06-01T20:59")
    assert next_allowed(NIGHT, at("2026-06-01T21:00"), AMS) == at("2026-06-02T08:00")
    assert next_allowed(NIGHT, at("2026-06-02T03:00"), AMS) == at("2026-06-02T08:00")
    assert next_allowed(NIGHT, at("2026-06-02T08:00"), AMS) == at("2026-06-02T08:00")


def test_a_daytime_window() -> None:
    lunch = QuietHours.parse("12:00", "13:30")
    assert next_allowed(lunch, at("2026-06-01T12:10"), AMS) == at("2026-06-01T13:30")
    assert not is_quiet(lunch, at("2026-06-01T13:30"), AMS)


def test_the_window_is_in_the_persons_zone() -> None:
    tokyo = ZoneInfo("Asia/Tokyo")
    noon_utc = datetime(2026, 6, 1, 14, 0, tzinfo=UTC)  # 23:00 in Tokyo, 16:00 in Amsterdam
    assert is_quiet(NIGHT, noon_utc, tokyo)
    assert not is_quiet(NIGHT, noon_utc, AMS)
    assert next_allowed(NIGHT, noon_utc, tokyo) == at("2026-06-02T08:00", tokyo)


def test_spring_forward_gap_and_fall_back_repeat() -> None:
    early = QuietHours.parse("22:00", "02:30")  # 02:30 does not exist on 2026-03-29 in Amsterdam
    got = next_allowed(early, at("2026-03-29T01:00"), AMS)
    assert got == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # 03:00 CEST, the first instant after the gap
    assert not is_quiet(early, got, AMS)
    # 2026-10-25: 02:00-03:00 happens twice; the window's end is its first occurrence
    late = QuietHours.parse("23:00", "02:30")
    got = next_allowed(late, at("2026-10-25T00:30"), AMS)
    assert got == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 CEST
    # the length of the deferral follows the wall clock, not a fixed 8 hours
    summer = next_allowed(NIGHT, at("2026-10-24T23:00"), AMS) - at("2026-10-24T23:00")
    assert summer == timedelta(hours=10)  # 23:00 CEST -> 08:00 CET is ten real hours


def test_bad_windows_are_refused() -> None:
    with pytest.raises(InvalidQuietHours):
        QuietHours.parse("9pm", "08:00")
    with pytest.raises(InvalidQuietHours):
        QuietHours.parse("08:00", "08:00")


zones = st.sampled_from(
    ["Europe/Amsterdam", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "UTC"]
)
hhmm = st.tuples(st.integers(0, 23), st.sampled_from([0, 15, 30, 45])).map(lambda t: f"{t[0]:02d}:{t[1]:02d}")
instants = st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31)).map(
    lambda d: d.replace(tzinfo=UTC)
)


@given(hhmm, hhmm, instants, zones)
def test_the_deferred_send_is_the_first_allowed_moment(
    start: str, end: str, now: datetime, zone: str
) -> None:
    if start == end:
        return
    q, tz = QuietHours.parse(start, end), ZoneInfo(zone)
    got = next_allowed(q, now, tz)
    assert got >= now
    assert not is_quiet(q, got, tz)  # never sent inside quiet hours
    if not is_quiet(q, now, tz):
        assert got == now
    else:  # and no earlier minute would have done
        probe = got - timedelta(minutes=1)
        while probe > now and probe > got - timedelta(hours=3):
            assert is_quiet(q, probe, tz), probe
            probe -= timedelta(minutes=1)
        assert got - now <= timedelta(hours=26)
