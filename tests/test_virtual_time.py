"""The clock walk of virtual time: it stops at every due time on the way, and walks on past
a timer that is held back (an allowed lateness) instead of jumping over what it causes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from momently.clock import ManualClock
from momently.domain.timestamps import to_millis
from momently.virtual_time import HELD_STEP_MS, Runaway, walk

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
MIN = 60_000


class Timers:
    """Due times that fire once the clock is ``lateness`` past them; each firing is recorded
    with the clock at that moment, and may schedule another one ``then`` later."""

    def __init__(self, clock: ManualClock, due: list[int], *, lateness: int = 0, then: int = 0) -> None:
        self.clock, self.due, self.lateness, self.then = clock, sorted(due), lateness, then
        self.fired: list[tuple[int, int]] = []  # (due, clock)

    def stop(self) -> int | None:
        return self.due[0] if self.due else None

    def settle(self) -> None:
        now = to_millis(self.clock.now())
        while self.due and self.due[0] + self.lateness <= now:
            due = self.due.pop(0)
            self.fired.append((due, now))
            if self.then:
                self.due = sorted([*self.due, due + self.then])
                self.then = 0


@pytest.mark.parametrize("lateness", [0, 5 * MIN, 2 * HELD_STEP_MS + 1])
def test_the_walk_stops_at_each_due_time(lateness: int) -> None:
    clock = ManualClock(START)
    t0 = to_millis(START)
    timers = Timers(clock, [t0 + 30 * MIN, t0 + 3 * 60 * MIN], lateness=lateness, then=2 * 60 * MIN)
    walk(clock, START + timedelta(days=1), stop=timers.stop, settle=timers.settle)
    assert clock.now() == START + timedelta(days=1)
    # each fired as soon as its lateness allowed, a minute at a time at worst: not at the target
    assert [due - t0 for due, _ in timers.fired] == [30 * MIN, 150 * MIN, 180 * MIN]
    for due, at in timers.fired:
        assert due + lateness <= at < due + lateness + HELD_STEP_MS


def test_a_walk_never_ends_early_and_a_timer_due_after_the_target_waits() -> None:
    clock = ManualClock(START)
    later = to_millis(START + timedelta(days=2))
    timers = Timers(clock, [later])
    walk(clock, START + timedelta(days=1), stop=timers.stop, settle=timers.settle)
    assert timers.fired == []
    assert clock.now() == START + timedelta(days=1)


def test_something_due_at_every_stop_is_a_runaway() -> None:
    clock = ManualClock(START)
    with pytest.raises(Runaway, match="did not settle"):
        walk(clock, START + timedelta(days=365), stop=lambda: to_millis(clock.now()) + 1, settle=lambda: None)
