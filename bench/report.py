"""Experiment report benchmark: the results of one flow's experiment (query + analyse of every
metric, Holm, SRM, hiding) over 1,000,000 exposures.

    python bench/report.py                         # SQLite
    python bench/report.py --database postgresql

1. Seed: ``--exposures`` exposures of one experiment (holdout + two arms, 90 days), outcomes
   drawn at random, written to ``experiment_exposures``, and their sums to ``experiment_stats``
   exactly as the consumer produces them (``domain.outcomes.delta`` of each exposure, summed
   per arm, day and metric). Plus ``--other`` exposures of another experiment, so the tables
   hold more than the one asked about.
2. Baseline: ``SELECT count(*)`` of the experiment's exposures (the cheapest question about
   them that reads them all).
3. The report: ``experiments.results.experiment_results`` for the flow, every exposure day,
   then the last 30 days only; ``--repeat`` times each, median and worst.
4. With ``--fold N``: the consumer itself, on a log of N people (a page view, an exposure, and
   for a third of them an order, 3 to 4 events each) appended through the log; its rate
   against the profile projector's (without flows) over the same log, the baseline.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ingest import FreshDatabase
from momently import catalog
from momently.domain.definitions import load
from momently.domain.event import BatchDefaults, Event, derived_event, normalize
from momently.domain.identity import person_id_for
from momently.domain.outcomes import DAY_MS, Exposure, delta
from momently.engine.profile_projector import ProfileProjector
from momently.experiments.results import experiment_results
from momently.services import Services
from momently.settings import Settings
from momently.store.experiment_outcomes import (
    EXPOSURE_COLUMNS,
    STAT_COLUMNS,
    STAT_KEY,
    OutcomeStore,
    exposure_row,
)
from momently.store.schema import experiment_exposures

FLOW = """
id: nudge
trigger: {event: Cart Viewed}
goal: {event: Order Completed, within: 1d}
experiment:
  arms: [{id: short}, {id: long}]
  holdout: 10%
"""
START = datetime(2026, 6, 1, tzinfo=UTC)
DAYS = 90
BENCH_LEDGER_KEY = "bench-ledger-key-bench-ledger-key-0123"  # PostgreSQL needs one; nothing is signed
ARMS = (("holdout", 0.1, 0.05), ("short", 0.45, 0.06), ("long", 0.45, 0.065))  # arm, share, conversion


def exposures(experiment: str, n: int, seed: int) -> list[Exposure]:
    rng = random.Random(seed)
    start_ms = int(START.timestamp() * 1000)
    out: list[Exposure] = []
    names, weights = [a for a, _, _ in ARMS], [w for _, w, _ in ARMS]
    rates = {a: r for a, _, r in ARMS}
    for i in range(n):
        arm = rng.choices(names, weights)[0]
        exposed = start_ms + rng.randrange(DAYS * DAY_MS)
        pre_events = rng.randrange(0, 20)
        pre_revenue = round(rng.expovariate(1 / 40), 2) if rng.random() < 0.3 else 0.0
        converted = exposed + rng.randrange(DAY_MS) if rng.random() < rates[arm] else None
        active = exposed + rng.randrange(90 * DAY_MS) if rng.random() < 0.6 else None
        ordered = converted if converted is not None else (active if rng.random() < 0.2 else None)
        out.append(
            Exposure(
                experiment_id=experiment,
                person_id=f"p_{i:020x}",
                arm=arm,
                flow_id="nudge",
                flow_version=1,
                exposed_ms=exposed,
                seq=i + 1,
                goal_event="Order Completed",
                window_ms=DAY_MS,
                converted_ms=converted,
                revenue=round(rng.expovariate(1 / 50), 2) if converted is not None else 0.0,
                active_ms=active,
                ordered_ms=ordered,
                unsubscribed_ms=exposed + 1 if rng.random() < 0.004 else None,
                complained_ms=exposed + 1 if rng.random() < 0.001 else None,
                failed_ms=exposed + 1 if arm != "holdout" and rng.random() < 0.01 else None,
                pre_revenue=pre_revenue,
                pre_events=pre_events,
            )
        )
    return out


def sums(xs: list[Exposure]) -> list[tuple[object, ...]]:
    """The statistics rows the consumer would have left: each exposure's delta, summed."""
    acc: dict[tuple[str, str, int, str], list[float]] = {}
    for x in xs:
        for metric, d in delta(None, x).items():
            row = acc.setdefault((x.experiment_id, x.arm, x.day, metric), [0, 0.0, 0.0, 0.0, 0.0, 0.0])
            for i, v in enumerate(d):
                row[i] += v
    return [("bench", *key, int(v[0]), *v[1:]) for key, v in sorted(acc.items())]


def seed(s: Services, xs: list[Exposure]) -> None:
    rows = [exposure_row("bench", x) for x in xs]
    stats = sums(xs)
    with s.db.write() as conn:
        if s.db.dialect == "sqlite":
            marks = ", ".join("?" * len(EXPOSURE_COLUMNS))
            conn.exec_driver_sql(
                f"INSERT INTO experiment_exposures ({', '.join(EXPOSURE_COLUMNS)}) VALUES ({marks})", rows
            )
            marks = ", ".join("?" * (len(STAT_KEY) + len(STAT_COLUMNS)))
            conn.exec_driver_sql(
                f"INSERT INTO experiment_stats ({', '.join((*STAT_KEY, *STAT_COLUMNS))}) VALUES ({marks})",
                stats,
            )
        else:
            raw = conn.connection.driver_connection
            assert raw is not None
            with raw.cursor() as cur:  # type: ignore[attr-defined]
                for table, columns, data in (
                    ("experiment_exposures", EXPOSURE_COLUMNS, rows),
                    ("experiment_stats", (*STAT_KEY, *STAT_COLUMNS), stats),
                ):
                    with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                        for row in data:
                            copy.write_row(row)
    with s.db.write() as conn:
        if s.db.dialect == "postgresql":
            conn.exec_driver_sql("ANALYZE experiment_exposures")
            conn.exec_driver_sql("ANALYZE experiment_stats")
        else:
            conn.exec_driver_sql("ANALYZE")


def timed(fn: object, repeat: int) -> tuple[float, float, float]:
    """(first, median, worst) in ms."""
    assert callable(fn)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return times[0], statistics.median(times), max(times)


def fold_rate(url: str, people: int) -> None:
    s = Services.build(Settings(database_url=url, run_engine=False, ledger_key=BENCH_LEDGER_KEY))
    s.workspaces.create("bench", name=None, now=s.clock.now())
    docs, problems = load(FLOW, "nudge.yaml")
    assert not problems
    catalog.apply(s, "bench", catalog.Loaded(docs, []))
    rng = random.Random(3)
    received = START + timedelta(days=200)
    log: list[Event] = []
    for i in range(people):
        user = f"u{i}"
        when = START + timedelta(seconds=rng.randrange(DAYS * 86400))
        raw = {"type": "track", "userId": user, "event": "Page Viewed", "timestamp": when.isoformat()}
        ev = normalize(raw, default_type=None, defaults=BatchDefaults(), received_at=received)
        assert isinstance(ev, Event)
        log.append(ev)
        arm = rng.choice(("holdout", "short", "long"))
        log.append(
            derived_event(
                message_id=f"x{i}",
                name="Experiment Viewed",
                user_id=user,
                anonymous_id=None,
                at=when + timedelta(minutes=1),
                received_at=received,
                properties={
                    "experiment_id": "nudge",
                    "variation_id": arm,
                    "flow_id": "nudge",
                    "flow_version": 1,
                    "person_id": person_id_for(("user", user)),
                },
            )
        )
        if rng.random() < 1 / 3:
            raw = {
                "type": "track",
                "userId": user,
                "event": "Order Completed",
                "timestamp": (when + timedelta(hours=2)).isoformat(),
                "properties": {"total": 20},
            }
            ev = normalize(raw, default_type=None, defaults=BatchDefaults(), received_at=received)
            assert isinstance(ev, Event)
            log.append(ev)
    for i in range(0, len(log), 5000):
        with s.db.write() as conn:
            s.events.append(conn, [("bench", e) for e in log[i : i + 5000]])
    profiles = ProfileProjector(s.db, s.events, s.profiles)  # no flows: the cheapest fold of the log
    t = time.perf_counter()
    profiles.run_until_idle()
    baseline = time.perf_counter() - t
    t = time.perf_counter()
    s.outcomes.run_until_idle()
    folded = time.perf_counter() - t
    print(
        f"  fold {len(log):,} events of {people:,} people: profile projector (baseline) "
        f"{len(log) / baseline:,.0f} events/s, experiment outcomes {len(log) / folded:,.0f} events/s"
    )
    s.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--exposures", type=int, default=1_000_000)
    parser.add_argument("--other", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--fold", type=int, default=0, help="also time the consumer on a log of N people")
    args = parser.parse_args()
    fresh = FreshDatabase(args.database)
    try:
        s = Services.build(Settings(database_url=fresh.new(), run_engine=False, ledger_key=BENCH_LEDGER_KEY))
        s.workspaces.create("bench", name=None, now=s.clock.now())
        docs, problems = load(FLOW, "nudge.yaml")
        assert not problems
        catalog.apply(s, "bench", catalog.Loaded(docs, []))
        t = time.perf_counter()
        xs = exposures("nudge", args.exposures, seed=1) + exposures("other", args.other, seed=2)
        made = time.perf_counter() - t
        t = time.perf_counter()
        seed(s, xs)
        seeded = time.perf_counter() - t
        store = OutcomeStore(s.db)
        with s.db.read() as conn:
            stat_rows = conn.exec_driver_sql(
                "SELECT count(*) FROM experiment_stats WHERE experiment_id = 'nudge'"
            ).scalar_one()
        print(
            f"{args.database}: {args.exposures:,} exposures (+{args.other:,} of another experiment), "
            f"{stat_rows:,} statistics rows; drawn in {made:.1f}s, seeded in {seeded:.1f}s"
        )
        now_ms = int((START + timedelta(days=DAYS + 100)).timestamp() * 1000)

        def baseline() -> int:
            with s.db.read() as conn:
                return int(
                    conn.execute(
                        select(func.count()).where(
                            experiment_exposures.c.workspace_id == "bench",
                            experiment_exposures.c.experiment_id == "nudge",
                        )
                    ).scalar_one()
                )

        def report_all() -> object:
            return experiment_results(store, s.definitions, "bench", "nudge", now_ms=now_ms)

        last_day = (START + timedelta(days=DAYS - 1)).date()

        def report_30d() -> object:
            return experiment_results(
                store,
                s.definitions,
                "bench",
                "nudge",
                now_ms=now_ms,
                since=last_day - timedelta(days=29),
                until=last_day,
            )

        assert baseline() == args.exposures
        for label, fn in (
            ("baseline: SELECT count(*) of its exposures", baseline),
            ("report, all 90 days (query + analyse, 10 metrics)", report_all),
            ("report, last 30 days", report_30d),
        ):
            first, median, worst = timed(fn, args.repeat)
            print(f"  {label:<52} first {first:8.1f} ms   median {median:8.1f} ms   worst {worst:8.1f} ms")
        r = experiment_results(store, s.definitions, "bench", "nudge", now_ms=now_ms)
        conv = r.metrics["conversion"].results["long"]
        assert conv is not None
        assert r.srm_p is not None
        print(
            f"  check: exposures {r.exposures}, SRM p {r.srm_p:.3f}, "
            f"conversion lift long vs holdout {conv.lift:+.3f} (p {conv.p_value:.2g})"
        )
        s.close()
        if args.fold:
            fold_rate(fresh.new(), args.fold)
    finally:
        fresh.cleanup()


if __name__ == "__main__":
    main()
