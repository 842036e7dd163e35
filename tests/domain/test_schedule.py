from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from momently.domain.flow import DateTrigger
from momently.domain.schedule import next_fire

AMS = ZoneInfo("Europe/Amsterdam")


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
