"""Engine benchmark: events/s through profiles + 20 segments + 50 flows, against the raw rate
of reading the same log; event-to-decision latency at a steady rate; 1M pending timers.

    python bench/engine.py --database sqlite                 # 1M events, 100k people
    python bench/engine.py --database postgresql --events 200000 --people 20000

1. Load: ``--events`` events from ``--people`` people (an identify each, then tracks over 30
   days with 30 event names) are appended to a fresh database, and 20 segments and 50 flows
   (20 event, 10 absence, 10 inactivity, 5 segment, 3 date, 2 cohort triggers) are applied.
   On PostgreSQL the engine, timer and latency phases start with an ``ANALYZE``, as
   autovacuum would provide.
2. Baseline: the same log read back in 2,000-event batches and decoded (what the engine must
   do at least), in events/s.
3. Engine: the whole log processed by the engine (``run_until_idle``) on virtual time at the
   end of the 30 days: events/s, and the ratio to the baseline. Also the part of that time
   the database spent executing the batches' row writes and committing them
   (``StorageTime``): the rate those writes alone would allow, a ceiling for any engine that
   stores the same rows.
4. Timers: 10 yearly date flows are applied, which plans one timer per person each (1M with
   100k people) on top of those already pending; then the clock jumps a year and the engine
   fires them all (each date timer enrolls and re-plans the next year): timers/s, peak memory.
5. Latency: the engine thread running live while a writer appends at a steady ``--rate``
   events/s for ``--seconds``, after 2 seconds of the same load reported apart (warm-up);
   latency is commit of the event to commit of the engine batch that decided it (the cursor
   moves in the same transaction), p50/p99.
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import psycopg
from sqlalchemy import Connection

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ingest import FreshDatabase
from momently import catalog, heap
from momently.clock import ManualClock
from momently.domain.definitions import load
from momently.domain.event import BatchDefaults, Event, normalize
from momently.domain.timestamps import format_timestamp
from momently.services import Services
from momently.settings import Settings
from momently.store.bulk import Bulk
from momently.store.database import Database
from momently.store.engine_state import Changes

T = TypeVar("T")
START = datetime(2026, 10, 1, tzinfo=UTC)
DAYS = 30
DATABASES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
WARMUP = 2.0  # seconds of live load before the latency phase counts
NAMES = [f"Event {i:02d}" for i in range(22)] + [
    "Product Viewed",
    "Product Added",
    "Checkout Started",
    "Order Completed",
    "App Opened",
    "Feature Used",
    "Parcel At Hub",
    "Milestone Reached",
]
WEIGHTS = [1.0 / (i + 1) for i in range(len(NAMES))]
random.Random(0).shuffle(WEIGHTS)


EXPERIMENT = False  # --experiment: the first event flow is an experiment (two arms, 10% holdout)


def definitions() -> str:
    docs: list[str] = [f"kind: events\nid: catalog\nnames: [{', '.join(NAMES)}]"]
    for i in range(20):
        name = NAMES[i % len(NAMES)]
        if i % 4 == 0:
            rule = f"{{count: '{name}', in_last: 7d, gte: 3}}"
        elif i % 4 == 1:
            rule = f"{{last: '{name}', older_than: 10d}}"
        elif i % 4 == 2:
            rule = f"{{all: [{{trait: plan, equals: pro}}, {{count: '{name}', gte: 2}}]}}"
        else:
            rule = f"{{any: [{{computed: revenue, gte: {50 + i}}}, {{trait: city, in: [c1, c2]}}]}}"
        docs.append(f"kind: segment\nid: seg-{i}\nrule: {rule}")
    flows: list[str] = []
    for i in range(20):
        name = NAMES[(i * 7) % len(NAMES)]
        flows.append(
            f"id: ev-{i}\ntrigger: {{event: '{name}', where: {{event: properties.n, gte: {i % 5}}}}}\n"
            f"audience: {{all: [{{trait: plan, in: [pro, free]}}, {{segment: seg-{i % 20}, is: false}}]}}\n"
            "reentry: {once_per: 1d}"
            + ("\nexperiment: {holdout: 10%, arms: [{id: a}, {id: b}]}" if EXPERIMENT and i == 0 else "")
        )
    for i in range(10):
        flows.append(
            f"id: abs-{i}\ntrigger:\n  absence: {{first: {{event: '{NAMES[(i * 3) % len(NAMES)]}'}}, "
            f"then: {{event: '{NAMES[(i * 3 + 1) % len(NAMES)]}'}}, within: {30 + i}m, key: properties.cart}}"
        )
    for i in range(10):
        flows.append(f"id: idle-{i}\ntrigger: {{inactivity: {{for: {40 + i}d}}}}\nreentry: every_time")
    for i in range(5):
        flows.append(
            f"id: seg-flow-{i}\ntrigger: {{segment: {{id: seg-{i}, on: {'enter' if i % 2 else 'leave'}}}}}"
        )
    for i in range(3):
        flows.append(f"id: date-{i}\ntrigger: {{date: {{trait: birthday, offset: -{i}d, at: '09:00'}}}}")
    for i in range(2):
        flows.append(
            f"id: cohort-{i}\ntrigger: {{cohort: {{event: Milestone Reached, area: {{geohash: {4 + i}}}, "
            "min_people: 5, within: 7d}}"
        )
    return "\n---\n".join(docs + flows) + "\n"


def generate(n_events: int, people: int, seed: int = 1) -> list[Event]:
    rng = random.Random(seed)
    out: list[Event] = []
    span_ms = DAYS * 86_400_000
    step = span_ms / n_events
    defaults = BatchDefaults()
    for i in range(n_events):
        at = START + timedelta(milliseconds=int(i * step))
        if i < people:
            u = i
            raw: dict[str, object] = {
                "type": "identify",
                "userId": f"u{u}",
                "traits": {
                    "plan": rng.choice(["pro", "free", "trial"]),
                    "city": f"c{rng.randrange(50)}",
                    "birthday": f"19{rng.randrange(50, 99)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 28):02d}",  # noqa: E501
                },
                "context": {"timezone": rng.choice(["Europe/Amsterdam", "America/New_York", "Asia/Tokyo"])},
            }
        else:
            u = rng.randrange(people)
            name = rng.choices(NAMES, WEIGHTS)[0]
            raw = {
                "type": "track",
                "userId": f"u{u}",
                "event": name,
                "properties": {"n": rng.randrange(10), "cart": f"k{u % 7}", "revenue": rng.randrange(100)},
                "context": {"location": {"latitude": 52 + (u % 100) / 100, "longitude": 4 + (u % 37) / 100}},
            }
        raw["timestamp"] = format_timestamp(at)
        raw["messageId"] = f"m{i}"
        ev = normalize(raw, default_type=None, defaults=defaults, received_at=at)
        assert isinstance(ev, Event), ev
        out.append(ev)
    return out


def setup(url: str, evs: list[Event]) -> None:
    s = Services.build(Settings(database_url=url, run_engine=False), clock=ManualClock(START))
    try:
        s.workspaces.create("w", name="bench", now=START)
        docs, problems = load(definitions(), "bench.yaml")
        assert not problems, problems
        catalog.apply(s, "w", catalog.Loaded(docs, []))
        for i in range(0, len(evs), 10_000):
            with s.db.write() as conn:
                s.events.append(conn, [("w", e) for e in evs[i : i + 10_000]])
    finally:
        s.close()


def read_rate(url: str) -> float:
    s = Services.build(Settings(database_url=url, run_engine=False), migrate=False)
    try:
        started = time.perf_counter()
        after, n = 0, 0
        while True:
            batch = s.events.read("w", after_seq=after, limit=2000)
            if not batch:
                break
            after, n = batch[-1].seq, n + len(batch)
        return n / (time.perf_counter() - started)
    finally:
        s.close()


class StorageTime:
    """Seconds the database spends executing the engine's batch row writes (every ``Bulk``
    statement: profiles, person events, timers, memberships, person state, enrollments,
    outbox rows, emitted ids) and committing: what storing a batch costs whatever the Python
    around it, so ``events / seconds`` is the most any engine writing these rows could do.
    Reads and the few statements outside ``Bulk`` are not counted, so it is an upper bound."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.seconds = 0.0

    def __enter__(self) -> StorageTime:
        run, dialect = Bulk.run, self.db.engine.dialect
        commit = dialect.do_commit

        def timed_run(bulk: Bulk, conn: Connection, rows: Sequence[tuple[object, ...]]) -> None:
            t = time.perf_counter()
            try:
                run(bulk, conn, rows)
            finally:
                self.seconds += time.perf_counter() - t

        def timed_commit(dbapi_connection: object) -> None:
            t = time.perf_counter()
            try:
                commit(dbapi_connection)
            finally:
                self.seconds += time.perf_counter() - t

        self._restore = (run, dialect, commit)
        Bulk.run = timed_run  # type: ignore[method-assign]
        dialect.do_commit = timed_commit  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        run, dialect, commit = self._restore
        Bulk.run = run  # type: ignore[method-assign]
        dialect.do_commit = commit  # type: ignore[method-assign]


def engine_rate(url: str, n_events: int) -> tuple[float, int, float]:
    """(events/s, timers pending after, seconds of it the database spent writing and committing)."""
    clock = ManualClock(START + timedelta(days=DAYS))
    s = Services.build(Settings(database_url=url, run_engine=False), clock=clock, migrate=False)
    s.db.start_checkpoints()  # as `momently worker` and `replay` do
    heap.settle_after_startup()
    try:
        started = time.perf_counter()
        last = [started]

        def progress(ws: str, cursor: int, total: int) -> None:
            now = time.perf_counter()
            if now - last[0] > 5:
                last[0] = now
                print(f"  engine {cursor}/{total} events, {cursor / (now - started):,.0f}/s", flush=True)

        with StorageTime(s.db) as storage:
            s.projector.run_until_idle(progress)
        elapsed = time.perf_counter() - started
        return n_events / elapsed, s.engine_state.pending_timers("w"), storage.seconds
    finally:
        s.close()


def plan_million(url: str, flows: int) -> tuple[int, float, float]:
    """Apply ``flows`` yearly date flows: each plans a timer for every person with a birthday,
    through the real apply path. Returns (timers pending, seconds, peak RSS MB)."""
    clock = ManualClock(START + timedelta(days=DAYS))
    s = Services.build(Settings(database_url=url, run_engine=False), clock=clock, migrate=False)
    try:
        text = "\n---\n".join(
            f"id: bday-{i}\ntrigger: {{date: {{trait: birthday, offset: {i}d, at: '10:00'}}}}\n"
            "reentry: every_time"
            for i in range(flows)
        )
        docs, problems = load(text, "dates.yaml")
        assert not problems, problems
        started = time.perf_counter()
        with PeakMemory() as mem:
            catalog.apply(s, "w", catalog.Loaded(docs, []))
        elapsed = time.perf_counter() - started
        return s.engine_state.pending_timers("w"), elapsed, mem.mb
    finally:
        s.close()


def fire_timers(url: str, days: int) -> tuple[int, int, float, float]:
    """Jump the clock and fire everything due: (fired, enrollments made, seconds, peak heap MB)."""
    clock = ManualClock(START + timedelta(days=DAYS + days))
    s = Services.build(Settings(database_url=url, run_engine=False), clock=clock, migrate=False)
    s.db.start_checkpoints()  # as `momently worker` does
    heap.settle_after_startup()
    try:
        enrolled_before = len(s.engine_state.enrollments("w", limit=10_000_000))
        fired = {"n": 0}
        original = s.engine_state.save

        def counting_save(conn: object, ws: str, changes: Changes) -> None:
            fired["n"] += len(changes.fired)
            original(conn, ws, changes)  # type: ignore[arg-type]

        s.engine_state.save = counting_save  # type: ignore[method-assign]
        started = time.perf_counter()
        with PeakMemory() as mem:
            s.projector.run_until_idle()
        elapsed = time.perf_counter() - started
        enrolled = len(s.engine_state.enrollments("w", limit=10_000_000)) - enrolled_before
        return fired["n"], enrolled, elapsed, mem.mb
    finally:
        s.close()


def latency(url: str, rate: int, seconds: float, warmup: float = WARMUP) -> tuple[float, float, int, float]:
    """(p50, p99, events counted, p99 of the warm-up): the first ``warmup`` seconds of the
    load are reported apart. A just-started engine meets people, pages and compiled flows for
    the first time there (its worst latencies, in traces of this phase, all fell in its first
    half second), which is not the steady rate the figure is about."""
    s = Services.build(Settings(database_url=url), migrate=False)  # system clock, live engine
    s.db.start_checkpoints()  # as momently serve and worker do
    heap.settle_after_startup()  # so do these
    try:
        s.projector.run_until_idle()
        s.writer.start()
        s.projector.start(idle_poll_seconds=0.05)
        seen: list[tuple[float, int]] = []
        s.projector.on_batch = lambda ws, cursor: seen.append((time.perf_counter(), cursor))
        rng = random.Random(7)
        committed: list[tuple[float, int]] = []
        per_tick = max(1, rate // 100)
        started = time.perf_counter()
        i = 0
        while time.perf_counter() - started < warmup + seconds:
            tick = started + i * per_tick / rate
            delay = tick - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            batch = []
            for _ in range(per_tick):
                raw = {
                    "type": "track",
                    "userId": f"u{rng.randrange(1000)}",
                    "event": rng.choices(NAMES, WEIGHTS)[0],
                    "properties": {"n": rng.randrange(10), "cart": "k1"},
                }
                ev = normalize(raw, default_type=None, defaults=BatchDefaults(), received_at=s.clock.now())
                assert isinstance(ev, Event)
                batch.append(ev)
            s.writer.append_blocking("w", batch)
            done = time.perf_counter()
            ws = s.workspaces.get("w")  # the only writer: its last seq is this batch's
            assert ws is not None
            committed += [(done, ws.last_seq)] * len(batch)
            i += 1
        time.sleep(1.0)
        lat: list[float] = []
        warm: list[float] = []
        j = 0
        for at, seq in committed:
            while j < len(seen) and (seen[j][1] < seq or seen[j][0] < at):
                j += 1
            if j < len(seen):
                (warm if at - started < warmup else lat).append((seen[j][0] - at) * 1000)
        lat.sort()
        warm.sort()
        warm_p99 = warm[int(len(warm) * 0.99)] if warm else 0.0
        return statistics.median(lat), lat[int(len(lat) * 0.99)], len(lat), warm_p99
    finally:
        s.close()


def analyze(url: str) -> None:
    """PostgreSQL: refresh the planner's statistics, as autovacuum does on a server that runs
    it (the default; this machine's CI configuration turns it off). With the statistics of
    the empty tables the engine started from, the re-entry lookup of every live batch chose a
    scan of all the workspace's send decisions: 40 ms a batch instead of 3.5 ms."""
    if url.startswith("postgresql"):
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ANALYZE")


class PeakMemory:
    """Peak anonymous resident memory of this process (the heap, not the memory-mapped or
    cached database file), sampled every 20 ms while a phase runs."""

    def __init__(self) -> None:
        self.peak_kb = 0
        self._stop = False
        import threading

        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def now_kb() -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
        return 0

    def _run(self) -> None:
        while not self._stop:
            self.peak_kb = max(self.peak_kb, self.now_kb())
            time.sleep(0.02)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self._thread.join()
        self.peak_kb = max(self.peak_kb, self.now_kb())

    @property
    def mb(self) -> float:
        return self.peak_kb / 1024


def isolated(fn: Callable[..., T], *args: object) -> T:
    """Run one phase in a fresh process, so its peak memory is its own."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--rate", type=int, default=1000, help="events/s for the latency run")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument(
        "--date-flows", type=int, default=10, help="yearly date flows: one timer each per person"
    )
    parser.add_argument(
        "--experiment", action="store_true", help="make one event flow an experiment (2 arms, 10%% holdout)"
    )
    args = parser.parse_args()
    global EXPERIMENT
    EXPERIMENT = args.experiment
    fresh = FreshDatabase(args.database)
    try:
        url = fresh.new()
        t = time.perf_counter()
        evs = generate(args.events, args.people)
        print(
            f"generated {len(evs):,} events from {args.people:,} people in {time.perf_counter() - t:.0f}s",
            flush=True,
        )
        t = time.perf_counter()
        setup(url, evs)
        del evs
        print(
            f"appended them and applied 20 segments + 50 flows in {time.perf_counter() - t:.0f}s", flush=True
        )
        baseline = isolated(read_rate, url)
        print(f"baseline: read and decode the log      {baseline:12,.0f} events/s", flush=True)
        analyze(url)
        rate, pending, stored = isolated(engine_rate, url, args.events)
        print(f"engine: profiles + segments + flows    {rate:12,.0f} events/s  (ratio {rate / baseline:.2f})")
        print(
            f"  of which {DATABASES[args.database]} writing and committing {stored:.0f}s = "
            f"{stored * 1e6 / args.events:.0f} µs/event: those rows alone allow at most "
            f"{args.events / stored:,.0f} events/s",
            flush=True,
        )
        print(f"pending timers after the run           {pending:12,}", flush=True)
        analyze(url)
        pending, secs, rss = isolated(plan_million, url, args.date_flows)
        print(
            f"{args.date_flows} date flows applied: timers pending      {pending:12,} "
            f"(planned in {secs:.0f}s, peak heap {rss:,.0f} MB)",
            flush=True,
        )
        analyze(url)
        fired, enrolled, secs, rss = isolated(fire_timers, url, 370)
        print(
            f"clock +1 year: timers fired           {fired:12,} in {secs:.0f}s = {fired / secs:,.0f}/s, "
            f"{enrolled:,} enrollments, peak heap {rss:,.0f} MB",
            flush=True,
        )
        analyze(url)
        p50, p99, n, warm_p99 = isolated(latency, url, args.rate, args.seconds)
        print(
            f"latency at {args.rate}/s for {args.seconds:.0f}s ({n:,} events, after {WARMUP:.0f}s of "
            f"warm-up whose p99 was {warm_p99:.1f} ms): event-to-decision p50 {p50:.1f} ms, p99 {p99:.1f} ms"
        )
    finally:
        fresh.cleanup()


if __name__ == "__main__":
    main()
