"""The engine's background loop keeps count of failed rounds, so a loop that always fails
does not look healthy (engine.background)."""

from __future__ import annotations

import time

from momently.engine.background import FAILING_AFTER, Background


def _wait_for(condition: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_consecutive_failures_are_counted_and_reset_by_a_good_round() -> None:
    broken = True
    rounds = 0

    def step() -> int:
        nonlocal rounds
        rounds += 1
        if broken:
            raise RuntimeError("no such table: cursors")
        return 0

    loop = Background("test", step, idle_seconds=0.05)
    assert not loop.health().running
    loop.start()
    try:
        _wait_for(lambda: loop.health().consecutive_failures >= FAILING_AFTER)
        health = loop.health()
        assert health.running
        assert health.failing
        assert health.last_error == "RuntimeError"  # the kind only: the text (SQL, parameters) is logged
        broken = False
        loop.wake()
        _wait_for(lambda: loop.health().consecutive_failures == 0)
        assert not loop.health().failing
        assert loop.health().last_error == "RuntimeError"  # kept for diagnosis
    finally:
        loop.stop()
    assert not loop.health().running


def test_wait_idle_returns_once_a_round_started_after_it_found_nothing_to_do() -> None:
    """Virtual time: the clock moved, so work may be due that the sleeping loop has not seen.
    ``wait_idle`` wakes it and returns once that work is done, without waiting out the idle
    time (here far longer than the test)."""
    pending = 0

    def step() -> int:
        nonlocal pending
        if pending:
            pending -= 1
            return 1
        return 0

    loop = Background("test", step, idle_seconds=60.0)
    assert loop.wait_idle(0.1)  # not running: nothing to wait for
    loop.start()
    try:
        time.sleep(0.1)  # asleep for its idle minute
        pending = 3  # due now that the clock moved; nobody woke the loop
        started = time.monotonic()
        assert loop.wait_idle(10.0)
        assert pending == 0
        assert time.monotonic() - started < 5.0
    finally:
        loop.stop()
