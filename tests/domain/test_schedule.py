from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from momently.domain.flow import DateTrigger
from momently.domain.schedule import moved, next_fire

AMS = ZoneInfo("Europe/Amsterdam")
TOKYO = ZoneInfo("Asia/Tokyo")
NEW_YORK = ZoneInfo("America/New_York")


def ms(*args: int, tz: ZoneInfo | None = None) -> int:
    return int(datetime(*args, tzinfo=tz or UTC).timestamp() * 1000)


def test_birthday_at_nine_local_with_offset() -> None:
    trig = DateTrigger(trait="birthday", offset_ms=-86_400_000, at=(9, 0))
    assert next_fire(trig, "1990-11-06", AMS, ms(2026, 11, 2)) == (
        ms(2026, 11, 5, 9, 0, tz=AMS),
        "2026-11-06",
    )
    # already past this year: next year
    assert next_fire(trig, "1990-03-01", AMS, ms(2026, 11, 2))[1] == "2027-03-01"


def test_leap_day_and_one_off_dates() -> None:
    trig = DateTrigger(trait="b", at=(8, 30))
    assert next_fire(trig, "2000-02-29", UTC, ms(2026, 1, 1)) == (ms(2026, 2, 28, 8, 30), "2026-02-28")
    once = DateTrigger(trait="renewal", repeat="none")
    assert next_fire(once, "2027-01-15T00:00:00Z", UTC, ms(2026, 11, 2)) == (ms(2027, 1, 15, 9), "2027-01-15")
    assert next_fire(once, "2026-01-15", UTC, ms(2026, 11, 2)) is None
    assert next_fire(trig, "soon", UTC, 0) is None


@given(
    day=st.dates(min_value=datetime(1950, 1, 1).date(), max_value=datetime(2030, 12, 31).date()),
    after=st.integers(ms(2020, 1, 1), ms(2035, 1, 1)),
    offset_days=st.integers(-30, 30),
)
def test_always_strictly_after_and_within_a_year(day: object, after: int, offset_days: int) -> None:
    trig = DateTrigger(trait="d", offset_ms=offset_days * 86_400_000)
    got = next_fire(trig, str(day), AMS, after)
    assert got is not None
    assert got[0] > after
    if str(day) < "2019":
        assert got[0] - after <= 367 * 86_400_000


BIRTHDAY = DateTrigger(trait="birthday", at=(9, 0))


@pytest.mark.parametrize(
    ("old", "new", "now", "expected"),
    [
        # planned 09:00 UTC; Tokyo arrives days before: 09:00 Tokyo (00:00 UTC)
        (UTC, TOKYO, ms(2026, 11, 3), (ms(2026, 11, 6, 0), "2026-11-06")),
        # ... or on the day, after 09:00 Tokyo but before 09:00 UTC: late, at once, not skipped
        (UTC, TOKYO, ms(2026, 11, 6, 3), (ms(2026, 11, 6, 3), "2026-11-06")),
        # Tokyo to New York before the day: 09:00 New York (14:00 UTC in November)
        (TOKYO, NEW_YORK, ms(2026, 11, 3), (ms(2026, 11, 6, 9, tz=NEW_YORK), "2026-11-06")),
        # ... after it fired in Tokyo: New York's 09:00 is still ahead, but that anniversary
        # was had; the next is a year later
        (TOKYO, NEW_YORK, ms(2026, 11, 6, 1), (ms(2027, 11, 6, 9, tz=NEW_YORK), "2027-11-06")),
    ],
)
def test_a_date_moves_with_the_time_zone_and_fires_once(
    old: ZoneInfo, new: ZoneInfo, now: int, expected: tuple[int, str]
) -> None:
    assert moved(BIRTHDAY, "1990-11-06", old, new, now) == expected


def test_a_one_off_date_had_in_the_old_zone_is_not_planned_again() -> None:
    once = DateTrigger(trait="renewal", repeat="none")
    assert moved(once, "2026-11-06", TOKYO, NEW_YORK, ms(2026, 11, 6, 1)) is None
    assert moved(once, "2026-11-06", UTC, TOKYO, ms(2026, 11, 2)) == (ms(2026, 11, 6, 0), "2026-11-06")
