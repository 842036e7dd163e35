"""Property: the enrollments (and their decisions) depend only on the log and the clock, not on
how processing was batched, interrupted, restarted or replayed."""

from __future__ import annotations

import contextlib
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from momently import catalog
from momently.clock import ManualClock
from momently.domain.definitions import load
from momently.domain.event import BatchDefaults, Event, normalize
from momently.services import Services
from momently.settings import Settings

FLOWS = """
id: on-order
trigger: {event: Order Completed, where: {event: properties.total, gte: 10}}
reentry: {once_per: 1d}
---
id: cart
trigger:
  absence: {first: {event: Product Added}, then: {event: Order Completed}, within: 30m}
reentry: every_time
---
id: quiet
trigger: {inactivity: {for: 2h}}
reentry: every_time
---
kind: segment
id: buyers
rule: {count: Order Completed, in_last: 3h, gte: 1}
---
id: buyer-welcome
trigger: {segment: {id: buyers}}
reentry: every_time
---
id: buyer-gone
trigger: {segment: {id: buyers, on: leave}}
reentry: every_time
"""

step = st.one_of(
    st.tuples(
        st.just("event"),
        st.sampled_from(["ann", "ben", "cat"]),
        st.sampled_from(["Order Completed", "Product Added", "App Opened"]),
        st.integers(0, 20),
    ),
    st.tuples(st.just("wait"), st.integers(1, 200)),  # minutes
)


def _by_id(occurrence: str, ids: dict[int, str]) -> str:
    if occurrence.startswith(("senter:", "sleave:")):
        verb, cause = occurrence.split(":", 1)
        return f"{verb}:{_by_id(cause, ids)}"
    kind, rest = occurrence[0], occurrence[1:]
    return f"{kind}:{ids[int(rest)]}" if kind in "eai" and rest.isdigit() else occurrence


class Run:
    def __init__(self, tmp: Path, *, batch_size: int) -> None:
        self.url = f"sqlite:///{tmp}/m.db"
        self.clock = ManualClock(datetime(2026, 11, 2, 8, tzinfo=UTC))
        self.batch_size = batch_size
        self.s = self._open(migrate=True)
        self.s.workspaces.create("w", name="w", now=self.clock.now())
        docs, _ = load(FLOWS, "flows.yaml")
        catalog.apply(self.s, "w", catalog.Loaded(docs, []))

    def _open(self, *, migrate: bool) -> Services:
        s = Services.build(
            Settings(database_url=self.url, run_engine=False), clock=self.clock, migrate=migrate
        )
        s.projector.batch_size = self.batch_size
        return s

    def restart(self) -> None:
        self.s.close()
        self.s = self._open(migrate=False)

    def send(self, message_id: str, user: str, name: str, total: int) -> None:
        raw = {
            "type": "track",
            "userId": user,
            "event": name,
            "properties": {"total": total},
            "messageId": message_id,
        }
        ev = normalize(raw, default_type=None, defaults=BatchDefaults(), received_at=self.clock.now())
        assert isinstance(ev, Event)
        with self.s.db.write() as conn:
            self.s.events.append(conn, [("w", ev)])

    def result(self) -> list[tuple[Any, ...]]:
        """Enrollments, with log positions replaced by the messageId found there: the engine
        appends its own events (segment entered) between the clients', so two runs of the same
        story number the log differently, while each run is stable under replay."""
        ids = {e.seq: e.body["messageId"] for e in self.s.events.read("w", after_seq=0, limit=100_000)}
        rows = self.s.engine_state.enrollments("w", limit=100_000)
        return sorted(
            (e.flow_id, e.person_id, _by_id(e.occurrence, ids), e.outcome, e.reason, e.decided_ms)
            for e in rows
        )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(step, min_size=1, max_size=25),
    batch_size=st.integers(1, 4),
    interrupt=st.lists(st.booleans(), min_size=25, max_size=25),
    crash_at=st.integers(0, 30),
)
def test_batching_restarts_crashes_and_replay_give_the_same_enrollments(
    steps: list[tuple[Any, ...]], batch_size: int, interrupt: list[bool], crash_at: int
) -> None:
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        ref = Run(Path(a), batch_size=2000)
        other = Run(Path(b), batch_size=batch_size)
        saves = {"n": 0}
        original_save = other.s.engine_state.save

        def crashing_save(*args: Any, **kwargs: Any) -> None:
            saves["n"] += 1
            original_save(*args, **kwargs)
            if saves["n"] == crash_at:  # after the effects were written, before commit
                raise RuntimeError("power cut")

        other.s.engine_state.save = crashing_save  # type: ignore[method-assign]
        try:
            for i, st_ in enumerate(steps):
                for run in (ref, other):
                    if st_[0] == "event":
                        run.send(f"m{i}", st_[1], st_[2], st_[3])
                    else:
                        run.clock.advance(timedelta(minutes=st_[1]))
                ref.s.projector.run_until_idle()
                if interrupt[i]:
                    with contextlib.suppress(RuntimeError):  # the injected power cut
                        other.s.projector.run_once()  # only part of the backlog
                    if i % 3 == 0:
                        other.restart()
            try:
                other.s.projector.run_until_idle()
            except RuntimeError:
                other.s.projector.run_until_idle()
            other.restart()
            other.s.projector.run_until_idle()
            assert other.result() == ref.result()
            before = ref.result()
            ref.s.projector.replay("w")
            assert ref.result() == before
        finally:
            ref.s.close()
            other.s.close()
