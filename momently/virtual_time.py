"""Moving a virtual clock forward the way real time would pass: stopping at every due timer
and delivery on the way, and letting the engine and the dispatcher catch up at each stop.

Jumping straight to the target would fire the timers in the right order (the engine stamps
each decision at its due time) but send every message at the target, long after it was
decided: a day's jump would expire a 30-minute cart nudge as too old to send. Walking keeps
each send at the time it would have happened live. Used by ``momently flows test`` (which
drains the engine itself) and by ``POST /v1/clock`` on ``serve --clock virtual`` (which
waits for the running engine loops).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Final

from momently.clock import ManualClock
from momently.domain.timestamps import format_timestamp, from_millis, to_millis
from momently.engine.profile_projector import CONSUMER
from momently.services import Services

MAX_WAKES: Final = 100_000  # stops in one walk: a runaway (a message re-deferred forever)
HELD_STEP_MS: Final = 60_000  # a timer due but not yet fired (a live engine's commit grace): walk on
LOOP_TIMEOUT_SECONDS: Final = 30.0


class Runaway(RuntimeError):
    """The walk found something due at every stop, ``MAX_WAKES`` times."""


def next_stop(services: Services, workspace_ids: Iterable[str]) -> int | None:
    """The earliest due timer or pending delivery of these workspaces."""
    due = [
        t
        for ws in workspace_ids
        for t in (services.engine_state.next_due(ws), services.outbox.next_attempt_ms(ws))
        if t is not None
    ]
    return min(due, default=None)


def walk(
    clock: ManualClock, target: datetime, *, stop: Callable[[], int | None], settle: Callable[[], None]
) -> None:
    """Move ``clock`` to ``target``, settling at each ``stop()`` on the way and at the end."""
    target_ms = to_millis(target)
    for _ in range(MAX_WAKES):
        settle()
        now = to_millis(clock.now())
        nxt = stop()
        if nxt is None or nxt > target_ms or now >= target_ms:
            break
        # due and still there: held back (the commit grace of a clock that catches up with real
        # time, domain.lateness) until the clock is a little later
        clock.set(from_millis(nxt if nxt > now else min(now + HELD_STEP_MS, target_ms)))
    else:
        raise Runaway(f"the engine did not settle: {MAX_WAKES} stops before {format_timestamp(target)}")
    if clock.now() < target:
        clock.set(target)
    settle()


def advance_serving(services: Services, clock: ManualClock, target: datetime) -> None:
    """Walk a running server's clock: at each stop, wake the engine and the dispatcher loops
    and wait until a round of each that started after the move found nothing to do."""
    workspace_ids = [w.id for w in services.workspaces.all()]

    def settle() -> None:
        for _ in range(100):  # each one's work wakes the other: until both are quiet together
            services.projector.wait_idle(LOOP_TIMEOUT_SECONDS)
            services.dispatcher.wait_idle(LOOP_TIMEOUT_SECONDS)
            if _quiet(services, workspace_ids, to_millis(clock.now())):
                return

    walk(clock, target, stop=lambda: next_stop(services, workspace_ids), settle=settle)


def _quiet(services: Services, workspace_ids: list[str], now_ms: int) -> bool:
    if not services.settings.run_engine:
        return True  # the engine runs elsewhere, on its own clock: nothing to wait for here
    behind = any(cursor < last for _, cursor, last in services.profiles.backlog(CONSUMER))
    due = [services.outbox.next_attempt_ms(ws) for ws in workspace_ids]
    return not behind and not any(t is not None and t <= now_ms for t in due)
