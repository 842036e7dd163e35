"""Decisions follow event time: the same events give the same decisions whatever order they
arrive in within the allowed lateness (a property), and one log gives the same decisions live,
after an outage, on replay and in a backtest."""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete

from momently import catalog
from momently.backtest import backtest
from momently.clock import ManualClock
from momently.domain.definitions import load
from momently.domain.event import BatchDefaults, Event, normalize
from momently.domain.timestamps import from_millis, to_millis
from momently.services import Services
from momently.settings import Settings
from momently.store.schema import deliveries, enrollments

START = datetime(2026, 11, 2, 8, tzinfo=UTC)
LATENESS_MS = 300_000
FLOWS = """
id: cart
trigger:
  absence:
    first: {event: Product Added}
    then: {event: Order Completed}
    within: 30m
    key: properties.cart_id
reentry: every_time
---
id: no-open
trigger: {inactivity: {for: 2h, event: App Opened}}
reentry: every_time
---
id: quiet
trigger: {inactivity: {for: 3h}}
reentry: every_time
---
id: quiet-long
trigger: {inactivity: {for: 100m}}
lateness: 10m
reentry: every_time
---
id: thanks
trigger: {event: Order Completed}
reentry: every_time
"""


@dataclass(frozen=True)
class Happening:
    message_id: str
    user: str
    name: str
    cart: str
    time_ms: int
    arrival_ms: int


class Run:
    """A workspace on a scratch SQLite database and virtual time."""

    def __init__(self, tmp: str) -> None:
        self.clock = ManualClock(START)
        self.s = Services.build(
            Settings(database_url=f"sqlite:///{tmp}/m.db", run_engine=False), clock=self.clock
        )
        self.s.workspaces.create("w", name="w", now=self.clock.now())
        docs, _ = load(FLOWS, "flows.yaml")
        catalog.apply(self.s, "w", catalog.Loaded(docs, []))

    def feed(self, story: Sequence[Happening], *, live: bool) -> None:
        """Events in the order they arrive; ``live``: the engine keeps up, else it is down
        until the end (an outage) and catches up then."""
        for h in story:
            if h.arrival_ms > to_millis(self.clock.now()):
                if live:  # up to the moment before it arrives, the engine fires what is due
                    self.clock.set(from_millis(h.arrival_ms - 1))
                    self.s.projector.run_until_idle()
                self.clock.set(from_millis(h.arrival_ms))
            raw = {
                "type": "track",
                "userId": h.user,
                "event": h.name,
                "properties": {"cart_id": h.cart},
                "messageId": h.message_id,
                "timestamp": from_millis(h.time_ms).isoformat(),
            }
            ev = normalize(raw, default_type=None, defaults=BatchDefaults(), received_at=self.clock.now())
            assert isinstance(ev, Event)
            with self.s.db.write() as conn:
                self.s.events.append(conn, [("w", ev)])
            if live:
                self.s.projector.run_until_idle()
        end = max((h.arrival_ms for h in story), default=to_millis(START))
        self.clock.set(max(self.clock.now(), from_millis(end) + timedelta(days=1)))
        self.s.projector.run_until_idle()

    def decisions(self) -> list[tuple[Any, ...]]:
        """Enrollments, their log positions replaced by the messageId found there (the same
        events land at other positions when they arrive in another order)."""
        ids = {e.seq: e.body["messageId"] for e in self.s.events.read("w", after_seq=0, limit=100_000)}
        rows = self.s.engine_state.enrollments("w", limit=100_000)
        return sorted(
            (
                e.flow_id,
                e.person_id,
                e.occurrence[0],
                ids[int(e.occurrence[1:])],
                e.outcome,
                e.reason,
                e.decided_ms,
            )
            for e in rows
        )


@contextmanager
def run() -> Iterator[Run]:
    with tempfile.TemporaryDirectory() as tmp:
        r = Run(tmp)
        try:
            yield r
        finally:
            r.s.close()


happening = st.tuples(
    st.sampled_from(["ann", "ben"]),
    st.sampled_from(["Product Added", "Order Completed", "App Opened"]),
    st.sampled_from(["c1", "c2"]),
    st.integers(0, 150),  # minute it happened: close enough for windows to meet
    st.integers(0, LATENESS_MS),  # how late it arrives: within the allowed lateness
    st.integers(0, 1000),  # a tie-break among events arriving at the same moment
)


def _story(raw: list[tuple[Any, ...]]) -> tuple[list[Happening], list[Happening]]:
    """The events in time order as they happened, and in the order they arrive late."""
    events = [
        # distinct event times: equal timestamps of one person have no order to keep
        (Happening(f"m{i}", user, name, cart, to_millis(START) + minute * 60_000 + i, 0), delay, tie)
        for i, (user, name, cart, minute, delay, tie) in enumerate(raw)
    ]
    on_time = [
        Happening(h.message_id, h.user, h.name, h.cart, h.time_ms, h.time_ms)
        for h, _, _ in sorted(events, key=lambda e: e[0].time_ms)
    ]
    late = [
        Happening(h.message_id, h.user, h.name, h.cart, h.time_ms, h.time_ms + delay)
        for h, delay, _ in sorted(events, key=lambda e: (e[0].time_ms + e[1], e[2]))
    ]
    return on_time, late


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.lists(happening, min_size=1, max_size=14), live=st.booleans())
def test_any_arrival_order_within_the_allowed_lateness_gives_the_same_decisions(
    raw: list[tuple[Any, ...]], live: bool
) -> None:
    on_time, late = _story(raw)
    with run() as a, run() as b:
        a.feed(on_time, live=True)
        b.feed(late, live=live)
        assert b.decisions() == a.decisions()


SCENARIO = [
    # ann adds c1, orders it 29 minutes later from a phone that flushes at 33
    ("ann", "Product Added", "c1", 0, 0),
    ("ann", "Order Completed", "c1", 29, 4),
    # ben adds c2 and leaves; his server's order for another cart comes first
    ("ben", "Order Completed", "c9", 12, 0),
    ("ben", "Product Added", "c2", 10, 3),
    # cat opens the app, then an old open from before is flushed
    ("cat", "App Opened", "c0", 60, 0),
    ("cat", "App Opened", "c0", 58, 5),
    ("cat", "App Opened", "c0", 300, 1),
    # dan's add arrives hours after its window closed
    ("dan", "Product Added", "c3", 20, 240),
]


def _scenario() -> list[Happening]:
    story = [
        Happening(f"s{i}", user, name, cart, to_millis(START) + minute * 60_000, 0)
        for i, (user, name, cart, minute, _) in enumerate(SCENARIO)
    ]
    arrived = [
        Happening(h.message_id, h.user, h.name, h.cart, h.time_ms, h.time_ms + late * 60_000)
        for h, (*_, late) in zip(story, SCENARIO, strict=True)
    ]
    return sorted(arrived, key=lambda h: h.arrival_ms)


def test_live_outage_replay_and_backtest_give_the_same_decisions() -> None:
    story = _scenario()
    with run() as live, run() as outage:
        live.feed(story, live=True)
        outage.feed(story, live=False)
        decided = live.decisions()
        assert outage.decisions() == decided
        # what the scenario is about, in words
        outcomes = Counter((flow, kind, outcome, reason) for flow, _, kind, _, outcome, reason, _ in decided)
        assert outcomes[("cart", "a", "send", None)] == 1  # ben only: ann ordered in time
        assert outcomes[("cart", "a", "suppress", "late_event")] == 1  # dan's window was long gone

        # a replay rebuilds the same decisions from the log alone
        with live.s.db.write() as conn:
            conn.execute(delete(deliveries).where(deliveries.c.workspace_id == "w"))
            conn.execute(delete(enrollments).where(enrollments.c.workspace_id == "w"))
        live.s.projector.replay("w")
        assert live.decisions() == decided

        # and a backtest of each flow over the same log counts the same decisions
        docs, _ = load(FLOWS, "flows.yaml")
        for doc in docs:
            report = backtest(live.s, "w", doc.data, since=START - timedelta(days=1), until=live.clock.now())
            expected = Counter(
                reason or outcome for flow, *_, outcome, reason, _ in decided if flow == doc.id
            )
            assert report.decisions == dict(expected), doc.id
