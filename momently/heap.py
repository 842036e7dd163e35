"""Settling the garbage collector once a long-running process has started.

Why: CPython's cyclic collector runs a young collection every 700 container allocations and,
every hundred of those, may walk every object the process holds. An HTTP worker allocates a
few thousand dicts and lists per 100-event batch, so it collected several times per request,
and each older collection walked the whole framework heap built at start (FastAPI, pydantic,
SQLAlchemy: hundreds of thousands of objects that live as long as the process): `perf` put a
quarter of a worker's interpreter time in the collector. Moving what exists after start-up
into the permanent generation (``gc.freeze``) takes it out of every later walk, and a larger
young threshold makes collections rarer; nearly all request garbage is freed by reference
counting anyway, only cycles wait for the rarer collections. Measured in docs/benchmarks.md
(ingest, 2026-12-01).

The engine (``momently worker``, ``replay`` and the ``serve --workers N`` supervisor that runs
it; one-process ``serve`` already settles) needs it more: its
person cache (``engine.person_cache``) holds millions of objects, and every full collection
walked them all. On the 1M-event benchmark, full collections took 15 of 120 seconds; settled,
the collector took 5 seconds in all, 4,452 -> 4,941 events/s. This is safe only because an
engine batch leaves no reference cycles behind (see ``Pass.attach``): with full collections
rare, cyclic garbage would otherwise pile up (a whole batch's objects, each batch).
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000
OLDER_THRESHOLDS = (20, 20)


def settle_after_startup() -> None:
    """Call once the process has built what it keeps for its lifetime."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
