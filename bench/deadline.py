"""Deadline latency, live: how long after an absence window closes its decision is written,
with the engine running on the system clock under a steady load.

    python bench/deadline.py                       # 1,000 events/s for 20 s, lateness 0s
    python bench/deadline.py --lateness 5m --seconds 400

A tier A flow (``lateness: 0s``) waits for ``Product Added`` not followed by ``Order Completed``
within 2 seconds; ten new carts a second are added on top of ``--rate`` events/s of other
traffic from 1,000 people. Latency is the moment the engine writes the decision (inside the
batch's transaction) minus the deadline (``within`` after the add): the allowed lateness, plus
the commit grace (``domain.lateness.COMMIT_GRACE_MS``), plus the engine's idle poll
(``--poll``, as ``MOMENTLY_IDLE_POLL_SECONDS``), plus the batch itself. The baseline printed
with it is an event trigger's decision under the same load (event commit to decision).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from momently import catalog
from momently.domain.definitions import load
from momently.domain.event import BatchDefaults, Event, normalize
from momently.domain.timestamps import to_millis
from momently.services import Services
from momently.settings import Settings
from momently.store.engine_state import Changes, EngineState

FLOWS = """
id: eta
tier: A
trigger:
  absence:
    first: {event: Product Added}
    then: {event: Order Completed}
    within: 2s
    key: properties.cart_id
lateness: {lateness}
reentry: every_time
---
id: opened
trigger: {event: App Opened}
reentry: every_time
"""


def run(rate: int, seconds: float, lateness: str, poll: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        s = Services.build(Settings(database_url=f"sqlite:///{tmp}/d.db"))
        try:
            s.workspaces.create("w", name="bench", now=s.clock.now())
            docs, problems = load(FLOWS.replace("{lateness}", lateness), "flows.yaml")
            assert not problems, problems
            catalog.apply(s, "w", catalog.Loaded(docs, []))
            written: list[tuple[float, str, int]] = []  # (wall ms, flow, decided ms)
            save = EngineState.save

            def timed_save(state: EngineState, conn: Any, workspace_id: str, ch: Changes) -> None:
                now = time.time() * 1000
                written.extend((now, e.flow_id, e.decided_ms) for e in ch.enrollments)
                save(state, conn, workspace_id, ch)

            s.engine_state.save = timed_save.__get__(s.engine_state)  # type: ignore[method-assign]
            s.writer.start()
            s.projector.start(idle_poll_seconds=poll)
            rng = random.Random(7)
            per_tick = max(1, rate // 100)
            sent_at: dict[int, float] = {}  # decided ms of an App Opened -> wall ms of its commit
            started = time.perf_counter()
            i = 0
            while time.perf_counter() - started < seconds:
                tick = started + i / 100
                delay = tick - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                raws: list[dict[str, Any]] = [
                    {"type": "track", "userId": f"u{rng.randrange(1000)}", "event": "Page Viewed"}
                    for _ in range(per_tick - 1)
                ]
                if i % 10 == 0:  # ten new carts a second
                    raws.append({"type": "track", "userId": f"c{i}", "event": "Product Added",
                                 "properties": {"cart_id": f"k{i}"}})  # fmt: skip
                else:
                    raws.append({"type": "track", "userId": f"u{rng.randrange(1000)}", "event": "App Opened"})
                batch = []
                for raw in raws:
                    now = s.clock.now()
                    ev = normalize(raw, default_type=None, defaults=BatchDefaults(), received_at=now)
                    assert isinstance(ev, Event)
                    batch.append(ev)
                s.writer.append_blocking("w", batch)
                if raws[-1]["event"] == "App Opened":
                    sent_at[to_millis(batch[-1].timestamp)] = time.time() * 1000
                i += 1
            time.sleep(max(4.0, poll * 3))
        finally:
            s.close()
    deadline = sorted(w - d for w, f, d in written if f == "eta")
    opened = sorted(w - sent_at[d] for w, f, d in written if f == "opened" and d in sent_at)
    if not deadline:
        print(f"no deadline decided in {seconds:.0f}s (lateness {lateness}): run longer")
        return

    def p(xs: list[float], q: float) -> float:
        return xs[min(len(xs) - 1, int(len(xs) * q))]

    print(f"load {rate} events/s for {seconds:.0f}s, engine idle poll {poll}s, flow lateness {lateness}")
    print(
        f"event trigger (baseline): event commit -> decision  p50 {statistics.median(opened):8.0f} ms"
        f"  p99 {p(opened, 0.99):8.0f} ms  ({len(opened)} decisions)"
    )
    print(
        f"absence deadline -> decision                      p50 {statistics.median(deadline):8.0f} ms"
        f"  p99 {p(deadline, 0.99):8.0f} ms  ({len(deadline)} decisions)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--lateness", default="0s")
    parser.add_argument("--poll", type=float, default=1.0, help="engine idle poll, seconds")
    args = parser.parse_args()
    run(args.rate, args.seconds, args.lateness, args.poll)


if __name__ == "__main__":
    main()
