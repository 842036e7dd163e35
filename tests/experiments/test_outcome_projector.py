"""Experiment outcomes folded from the log: exact per-exposure outcomes, incremental sums equal
to a replay, restarts, and two consumers at once. On SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from momently import catalog
from momently.domain.definitions import load
from momently.domain.event import BatchDefaults, Event, derived_event, normalize
from momently.domain.outcomes import DAY_MS, delta
from momently.engine.experiment_projector import CONSUMER, ExperimentProjector
from momently.services import Services
from momently.store.experiment_outcomes import OutcomeStore, StatRow

T0 = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
LATER = datetime(2026, 11, 1, tzinfo=UTC)  # when the events arrive: after every timestamp

FLOW = """
id: nudge
trigger: {event: Cart Viewed}
goal: {event: Order Completed, within: 1d, where: {event: properties.total, gte: 10}}
experiment:
  arms: [{id: short, weight: 1}, {id: long, weight: 1}]
  holdout: 20%
"""


def at(**delta_: float) -> datetime:
    return T0 + timedelta(**delta_)


def track(user: str, name: str, when: datetime, **props: Any) -> Event:
    ev = normalize(
        {"type": "track", "userId": user, "event": name, "timestamp": when.isoformat(), "properties": props},
        default_type=None,
        defaults=BatchDefaults(),
        received_at=LATER,
    )
    assert isinstance(ev, Event), ev
    return ev


def exposure(s: Services, user: str, arm: str, when: datetime, n: int = 0) -> Event:
    """As the engine appends it: a derived ``Experiment Viewed`` naming the person."""
    person = s.profiles.person_for("w", ("user", user))
    assert person is not None, f"{user} must be known before the engine exposes them"
    return derived_event(
        message_id=f"exp:{user}:{arm}:{n}",
        name="Experiment Viewed",
        user_id=user,
        anonymous_id=None,
        at=when,
        received_at=LATER,
        properties={
            "experiment_id": "nudge",
            "experiment_name": "nudge",
            "variation_id": arm,
            "variation_name": arm,
            "flow_id": "nudge",
            "flow_version": 1,
            "occurrence": f"e{n}",
            "person_id": person,
            "channel": "console",
        },
    )


def append(s: Services, *events: Event) -> None:
    with s.db.write() as conn:
        s.events.append(conn, [("w", e) for e in events])


def setup(s: Services) -> None:
    s.workspaces.create("w", name=None, now=s.clock.now())
    docs, problems = load(FLOW, "nudge.yaml")
    assert not problems
    catalog.apply(s, "w", catalog.Loaded(docs, []))


def story(s: Services) -> list[list[Event]]:
    """The log after ``story_first``, in arrival chunks (exposures come after their person
    is known, as the engine's do)."""
    return [
        [
            # dan's goal is logged before the engine's exposure of him (stamped after it)
            track("dan", "Order Completed", at(minutes=30), total=12),
        ],
        [
            exposure(s, "ada", "short", at()),
            exposure(s, "bob", "holdout", at(minutes=10)),
            exposure(s, "cy", "long", at()),
            exposure(s, "dan", "short", at(minutes=1)),
            exposure(s, "eve", "long", at(hours=1)),
            track("ada", "Order Completed", at(hours=1), total=30),
            track("bob", "Order Completed", at(hours=2), total=5),  # below the goal's where
        ],
        [
            exposure(s, "ada", "long", at(days=1), n=1),  # a second exposure: ignored
            track("cy", "Message Failed", at(minutes=1), flow_id="nudge"),
            track("cy", "Message Failed", at(minutes=2), flow_id="other"),
            track("cy", "Unsubscribed", at(hours=1), channel="email"),
            track("cy", "Message Replied", at(hours=2), channel="sms", keyword="stop", text="STOP"),
            track("eve", "Page Viewed", at(days=40)),  # retained at 90 days, not at 30
            # eve's order arrives late, stamped before her exposure: the covariate
            track("eve", "Order Completed", at(days=-1), revenue=7.5),
            # ada orders again on day 2: outside the goal window, inside the 30-day retention
            track("ada", "Order Completed", at(days=2), total=99),
        ],
    ]


def fold(s: Services, chunks: list[list[Event]]) -> None:
    for chunk in chunks:
        append(s, *chunk)
        s.projector.run_until_idle()
        s.outcomes.run_until_idle()


def test_each_exposure_gets_its_outcomes(services: Services) -> None:
    s = services
    setup(s)
    fold(s, story_after_people(s))
    got = {x.person_id: x for x in OutcomeStore(s.db).exposures("w", "nudge")}
    pid = {u: s.profiles.person_for("w", ("user", u)) for u in ("ada", "bob", "cy", "dan", "eve")}
    ada, bob, cy, dan, eve = (got[pid[u] or ""] for u in ("ada", "bob", "cy", "dan", "eve"))
    ms = int(T0.timestamp() * 1000)
    assert ada.arm == "short"
    assert ada.exposed_ms == ms
    assert ada.converted_ms == ms + 3_600_000
    assert ada.revenue == 30
    assert ada.pre_revenue == 20
    assert ada.pre_events == 2
    assert ada.ordered_ms == ms + 3_600_000
    assert ada.active_ms == ms + 3_600_000
    assert bob.arm == "holdout"
    assert bob.converted_ms is None
    assert bob.revenue == 5
    assert bob.pre_events == 0  # his page view was 40 days before
    assert bob.active_ms == ms + 7_200_000  # an order is activity too
    assert eve.active_ms == ms + 40 * DAY_MS
    assert cy.failed_ms == ms + 60_000
    assert cy.unsubscribed_ms == ms + 3_600_000
    assert cy.complained_ms == ms + 7_200_000
    assert cy.active_ms is None  # Momently's events about its messages are not activity
    assert dan.converted_ms == ms + 30 * 60_000
    assert dan.revenue == 12
    assert eve.pre_revenue == 7.5
    assert eve.converted_ms is None


def story_after_people(s: Services) -> list[list[Event]]:
    """``story`` needs each person known to build their exposure: fold the first chunk, then
    build the rest."""
    append(s, *story_first())
    s.projector.run_until_idle()
    return story(s)


def story_first() -> list[Event]:
    return [
        track("ada", "Page Viewed", at(days=-3)),
        track("ada", "Order Completed", at(days=-2), total=20),
        track("bob", "Page Viewed", at(days=-40)),
        track("cy", "Page Viewed", at(minutes=-5)),
        track("dan", "Page Viewed", at(minutes=-5)),
        track("eve", "Page Viewed", at(minutes=-5)),
    ]


def stats(s: Services) -> dict[tuple[str, int, str], StatRow]:
    return {
        (r.arm, r.day, r.metric): r
        for r in OutcomeStore(s.db).stats("w", "nudge", first_day=None, last_day=None)
    }


def assert_same_stats(a: dict[tuple[str, int, str], StatRow], b: dict[tuple[str, int, str], StatRow]) -> None:
    assert a.keys() == b.keys()
    for key, x in a.items():
        y = b[key]
        assert x.n == y.n, key
        for field in ("sum", "sum_squares", "cov_sum", "cov_sum_squares", "sum_products"):
            assert getattr(x, field) == pytest.approx(getattr(y, field), rel=1e-9, abs=1e-9), (key, field)


def from_exposures(s: Services) -> dict[tuple[str, int, str], tuple[int, float, float, float, float, float]]:
    """The sums computed afresh from the exposures table (no deltas)."""
    out: dict[tuple[str, int, str], list[float]] = {}
    for x in OutcomeStore(s.db).exposures("w", "nudge"):
        for metric, d in delta(None, x).items():
            acc = out.setdefault((x.arm, x.day, metric), [0, 0.0, 0.0, 0.0, 0.0, 0.0])
            for i, v in enumerate(d):
                acc[i] += v
    return {k: (int(v[0]), v[1], v[2], v[3], v[4], v[5]) for k, v in out.items()}


def test_incremental_statistics_equal_a_replay_from_the_log(services: Services) -> None:
    s = services
    setup(s)
    s.outcomes.batch_size = 2  # many small batches: every window updated late
    fold(s, story_after_people(s))
    incremental = stats(s)
    assert incremental, "the story produced statistics"
    fresh = from_exposures(s)
    assert fresh.keys() <= incremental.keys()
    for key, row in incremental.items():
        want = fresh.get(key, (0, 0.0, 0.0, 0.0, 0.0, 0.0))
        assert row.n == want[0], key
        for i, field in enumerate(("sum", "sum_squares", "cov_sum", "cov_sum_squares", "sum_products")):
            assert getattr(row, field) == pytest.approx(want[i + 1], abs=1e-9), (key, field)
    s.outcomes.batch_size = 5000
    s.outcomes.replay("w")
    assert_same_stats(incremental, stats(s))


def test_a_restarted_consumer_continues_where_it_stopped(services: Services) -> None:
    s = services
    setup(s)
    chunks = story_after_people(s)
    for chunk in chunks:
        append(s, *chunk)
    s.projector.run_until_idle()
    first = ExperimentProjector(s.db, s.events, s.profiles, s.definitions, OutcomeStore(s.db), batch_size=3)
    assert first.run_once() == 3
    with s.db.read() as conn:
        stopped_at = s.profiles.cursor(conn, CONSUMER, "w")
    # a new process: nothing of the first one's memory
    second = ExperimentProjector(s.db, s.events, s.profiles, s.definitions, OutcomeStore(s.db), batch_size=3)
    assert second.run_until_idle() > 0
    with s.db.read() as conn:
        assert s.profiles.cursor(conn, CONSUMER, "w") > stopped_at
    restarted = stats(s)
    second.replay("w")
    assert_same_stats(restarted, stats(s))


def test_two_consumers_at_once_apply_each_event_once(services: Services) -> None:
    s = services
    setup(s)
    for chunk in story_after_people(s):
        append(s, *chunk)
    s.projector.run_until_idle()
    consumers = [
        ExperimentProjector(s.db, s.events, s.profiles, s.definitions, OutcomeStore(s.db), batch_size=1)
        for _ in range(2)
    ]
    threads = [threading.Thread(target=c.run_until_idle) for c in consumers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    together = stats(s)
    consumers[0].replay("w")
    assert_same_stats(together, stats(s))


def test_the_consumer_stays_behind_the_profiles(services: Services) -> None:
    s = services
    setup(s)
    append(s, *story_first())
    assert s.outcomes.run_until_idle() == 0  # the profiles have not folded these yet
    s.projector.run_until_idle()
    # the whole log: the story, and the flow's `Experiment Started` when it was applied
    assert s.outcomes.run_until_idle() == len(s.events.read("w", after_seq=0, limit=1000))


def test_an_exposure_follows_its_person_through_a_merge(services: Services) -> None:
    s = services
    setup(s)
    browse = normalize(
        {"type": "page", "anonymousId": "a9", "name": "Cart", "timestamp": at(minutes=-1).isoformat()},
        default_type=None,
        defaults=BatchDefaults(),
        received_at=LATER,
    )
    assert isinstance(browse, Event)
    # zed is known already (another device), so logging in merges the visitor into zed
    append(s, track("zed", "Page Viewed", at(days=-40)), browse)
    s.projector.run_until_idle()
    anon = s.profiles.person_for("w", ("anon", "a9"))
    viewed = derived_event(
        message_id="exp:a9",
        name="Experiment Viewed",
        user_id=None,
        anonymous_id="a9",
        at=at(),
        received_at=LATER,
        properties={
            "experiment_id": "nudge",
            "variation_id": "short",
            "flow_id": "nudge",
            "flow_version": 1,
            "person_id": anon,
        },
    )
    append(s, viewed)
    s.projector.run_until_idle()
    s.outcomes.run_until_idle()
    # Given the anonymous visitor exposed, when they log in (merged into the user) and buy
    login = normalize(
        {"type": "identify", "userId": "zed", "anonymousId": "a9", "timestamp": at(minutes=5).isoformat()},
        default_type=None,
        defaults=BatchDefaults(),
        received_at=LATER,
    )
    assert isinstance(login, Event)
    fold(s, [[login, track("zed", "Order Completed", at(minutes=20), total=15)]])
    # Then the exposure is the survivor's, and converted
    zed = s.profiles.person_for("w", ("user", "zed"))
    assert zed != anon
    (x,) = OutcomeStore(s.db).exposures("w", "nudge")
    assert x.person_id == zed
    assert x.converted_ms == int(at(minutes=20).timestamp() * 1000)
    assert x.pre_events == 1  # the visitor's browsing; zed's own was before the 30 days
    before = stats(s)
    s.outcomes.replay("w")
    assert_same_stats(before, stats(s))
    (again,) = OutcomeStore(s.db).exposures("w", "nudge")
    assert again == x


def test_the_docs_worked_example(services: Services) -> None:
    """docs/experiments.md, "Worked example": the conversion rows it prints."""
    s = services
    s.workspaces.create("w", name=None, now=s.clock.now())
    flow = FLOW.replace("within: 1d, where: {event: properties.total, gte: 10}", "within: 1h")
    docs, problems = load(flow, "nudge.yaml")
    assert not problems
    catalog.apply(s, "w", catalog.Loaded(docs, []))
    before = [
        track("ada", "Page Viewed", at(days=-1)),
        track("ada", "Page Viewed", at(days=-2)),
        track("bo", "Identified", at(days=-40)),
        track("cy", "Page Viewed", at(days=-3)),
        *[track("di", "Page Viewed", at(days=-d)) for d in (1, 2, 3, 4)],
        track("ed", "Identified", at(days=-40)),
    ]
    append(s, *before)
    s.projector.run_until_idle()
    fold(
        s,
        [
            [
                exposure(s, "ada", "short", at()),
                exposure(s, "bo", "short", at()),
                exposure(s, "cy", "holdout", at()),
                exposure(s, "di", "holdout", at()),
                exposure(s, "ed", "holdout", at()),
                track("ada", "Order Completed", at(minutes=10), total=30),
                track("bo", "Order Completed", at(hours=3), total=12),
                track("di", "Order Completed", at(minutes=40), total=20),
                track("ed", "Page Viewed", at(days=40)),
            ]
        ],
    )
    day = int(T0.timestamp() * 1000) // DAY_MS
    rows = stats(s)
    short, holdout = rows[("short", day, "conversion")], rows[("holdout", day, "conversion")]
    assert (
        short.n,
        short.sum,
        short.sum_squares,
        short.cov_sum,
        short.cov_sum_squares,
        short.sum_products,
    ) == (
        2,
        1,
        1,
        2,
        4,
        2,
    )
    assert (
        holdout.n,
        holdout.sum,
        holdout.sum_squares,
        holdout.cov_sum,
        holdout.cov_sum_squares,
        holdout.sum_products,
    ) == (3, 1, 1, 5, 17, 4)
    assert rows[("short", day, "revenue")].sum == 30
    assert rows[("short", day, "orders_30d")].sum == 2
    assert rows[("holdout", day, "retention_90d")].sum == 2  # di's order, ed's page view
    assert rows[("holdout", day, "retention_30d")].sum == 1


class MergeDuringBatch(ExperimentProjector):
    """Lets the engine commit a batch between this consumer's snapshot and its write, once."""

    def __init__(self, s: Services) -> None:
        super().__init__(s.db, s.events, s.profiles, s.definitions, OutcomeStore(s.db))
        self.engine: Services | None = s

    def _fold(self, conn: Any, workspace_id: str, batch: list[Any]) -> Any:
        changed = super()._fold(conn, workspace_id, batch)
        if self.engine is not None:
            self.engine.projector.run_until_idle()  # commits in its own transaction
            self.engine = None
        return changed


def test_a_merge_committed_during_a_batch_makes_it_start_over(services: Services) -> None:
    s = services
    setup(s)
    browse = normalize(
        {"type": "page", "anonymousId": "a9", "name": "Cart", "timestamp": at(minutes=-1).isoformat()},
        default_type=None,
        defaults=BatchDefaults(),
        received_at=LATER,
    )
    assert isinstance(browse, Event)
    append(s, track("zed", "Page Viewed", at(days=-40)), browse)
    s.projector.run_until_idle()
    anon = s.profiles.person_for("w", ("anon", "a9"))
    props = {"experiment_id": "nudge", "variation_id": "short", "flow_id": "nudge", "flow_version": 1}
    viewed = derived_event(
        message_id="exp:a9",
        name="Experiment Viewed",
        user_id=None,
        anonymous_id="a9",
        at=at(),
        received_at=LATER,
        properties={**props, "person_id": anon},
    )
    append(s, viewed)
    s.projector.run_until_idle()
    s.outcomes.run_until_idle()
    # Given the visitor orders (the engine has folded it), then logs in (not folded yet)
    order = normalize(
        {
            "type": "track",
            "anonymousId": "a9",
            "event": "Order Completed",
            "properties": {"total": 15},
            "timestamp": at(minutes=20).isoformat(),
        },
        default_type=None,
        defaults=BatchDefaults(),
        received_at=LATER,
    )
    login = normalize(
        {"type": "identify", "userId": "zed", "anonymousId": "a9", "timestamp": at(minutes=30).isoformat()},
        default_type=None,
        defaults=BatchDefaults(),
        received_at=LATER,
    )
    assert isinstance(order, Event)
    assert isinstance(login, Event)
    append(s, order)
    s.projector.run_until_idle()
    append(s, login)
    # When the engine merges the visitor into zed while the consumer folds the order
    racing = MergeDuringBatch(s)
    assert racing.run_once() == 0  # its snapshot is stale: nothing written, cursor kept
    racing.run_until_idle()
    # Then the one exposure is zed's, converted, and the sums are a replay's
    zed = s.profiles.person_for("w", ("user", "zed"))
    (x,) = OutcomeStore(s.db).exposures("w", "nudge")
    assert x.person_id == zed
    assert x.converted_ms == int(at(minutes=20).timestamp() * 1000)
    before = stats(s)
    s.outcomes.replay("w")
    assert_same_stats(before, stats(s))
