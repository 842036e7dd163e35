"""The demo's clock: virtual while the synthetic past is played, real time after."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from momently.clock import CatchUpClock


def test_stands_still_until_moved_then_follows_the_system_clock() -> None:
    start = datetime.now(UTC) - timedelta(hours=2)
    clock = CatchUpClock(start)
    assert clock.now() == start
    clock.set(start + timedelta(minutes=30))
    assert clock.now() == start + timedelta(minutes=30)
    clock.release()
    assert clock.released
    assert abs(clock.now() - datetime.now(UTC)) < timedelta(seconds=5)


def test_cannot_hand_over_from_a_virtual_time_ahead_of_the_system_clock() -> None:
    clock = CatchUpClock(datetime.now(UTC) + timedelta(hours=1))
    with pytest.raises(ValueError, match="ahead"):
        clock.release()
    assert not clock.released
