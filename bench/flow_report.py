"""Report benchmark: ``momently report`` for one flow over 30 days of a busy workspace, against
reading that workspace's log into Python (what a report that scanned the log would do at least).

    python bench/flow_report.py --database sqlite --events 200000 --people 20000

The log is ``bench/engine.py``'s synthetic 30 days; one flow (``tip``: every ``Feature Used``
of a pro user, goal ``Order Completed`` within 1d, console channel) is applied before it, the
engine processes it on virtual time and the dispatcher sends every message. Then the report is
timed (median of 3, after one warm-up run), with the number of rows each of its queries handed
to Python.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.engine import DAYS, START, generate
from bench.ingest import FreshDatabase
from momently import catalog, reports
from momently.clock import ManualClock
from momently.domain.definitions import load
from momently.domain.timestamps import to_millis
from momently.services import Services
from momently.settings import Settings
from momently.store.reports import Reports

FLOW = """
kind: events
id: catalog
names: [Feature Used, Order Completed]
---
id: tip
trigger: {event: Feature Used}
audience: {trait: plan, equals: pro}
reentry: {once_per: 1d}
channels: [console]
goal: {event: Order Completed, within: 1d}
message: {body: "Press E to export in one step."}
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--people", type=int, default=20_000)
    parser.add_argument("--keep", action="store_true", help="keep the database (its URL is printed)")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp())
    fresh = FreshDatabase(args.database)
    url = fresh.new()
    print(url)
    try:
        end = START + timedelta(days=DAYS)
        clock = ManualClock(START)
        settings = Settings(
            database_url=url,
            run_engine=False,
            console_path=str(scratch / "console.jsonl"),
            send_max_age_hours=24 * 365,
            ledger_key="bench-report-ledger-key-0123456789abcdef",  # a scratch database's
        )
        s = Services.build(settings, clock=clock)
        try:
            s.workspaces.create("w", name="bench", now=START)
            docs, problems = load(FLOW, "bench.yaml")
            assert not problems, problems
            catalog.apply(s, "w", catalog.Loaded(docs, []))
            evs = generate(args.events, args.people)
            for i in range(0, len(evs), 10_000):
                with s.db.write() as conn:
                    s.events.append(conn, [("w", e) for e in evs[i : i + 10_000]])
            clock.set(end)
            started = time.perf_counter()
            s.projector.run_until_idle()
            s.dispatcher.run_until_idle()
            s.projector.run_until_idle()  # the dispatcher's events, filed under their people
            print(f"engine + dispatch: {time.perf_counter() - started:.1f} s")
            if args.database == "postgresql":
                with s.db.write() as conn:
                    conn.exec_driver_sql("ANALYZE")
            options = reports.options_for(s, "w", since="30d")
            store = Reports(s.db)
            window = {"since_ms": options.since_ms, "until_ms": options.until_ms}
            rows = {
                "enrollments": len(store.enrollments("w", "tip", **window)),
                "deliveries": len(store.deliveries("w", "tip", **window)),
                "message events": len(store.message_events("w", "tip", **window)),
            }
            for name, query in (
                ("enrollments", lambda: store.enrollments("w", "tip", **window)),
                ("deliveries", lambda: store.deliveries("w", "tip", **window)),
                ("message events", lambda: store.message_events("w", "tip", **window)),
                (
                    "after send",
                    lambda: store.after_send(
                        "w", "tip", **window, names=["Order Completed"], window_ms=86_400_000, with_body=False
                    ),
                ),
            ):
                t0 = time.perf_counter()
                query()
                print(f"  {name}: {(time.perf_counter() - t0) * 1000:.0f} ms")
            times = []
            for _ in range(4):
                t0 = time.perf_counter()
                out = reports.workspace_report(s, "w", options, flow_id="tip")
                times.append(time.perf_counter() - t0)
            report_s = statistics.median(times[1:])
            t0 = time.perf_counter()
            after, n = 0, 0
            since = to_millis(end - timedelta(days=30))
            while batch := s.events.read("w", after_seq=after, limit=2000):
                after = batch[-1].seq
                n += sum(1 for e in batch if e.time_ms >= since)
            scan_s = time.perf_counter() - t0
            funnel = out["flows"][0]["groups"][0]["funnel"]
            print(f"log: {args.events:,} events, {args.people:,} people; funnel {funnel}")
            print(f"rows handed to Python: {rows}")
            print(f"report (one flow, 30 days): {report_s * 1000:.0f} ms (median of 3)")
            print(f"reading the 30 days of log into Python instead: {scan_s * 1000:.0f} ms ({n:,} events)")
        finally:
            s.close()
    finally:
        if not args.keep:
            fresh.cleanup()


if __name__ == "__main__":
    main()
