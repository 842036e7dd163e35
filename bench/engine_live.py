"""Live engine latency only, repeated on copies of one database: the way to compare two
versions of the code on a noisy machine (run it from each checkout in turn, alternating).

    python bench/engine_live.py --database /tmp/live100k.db                 # builds it once
    python bench/engine_live.py --database /tmp/live1m.db --events 1000000 --people 100000
    python bench/engine_live.py --database /tmp/live100k.db --runs 3 --seconds 20

The first call builds the database the way ``bench/engine.py`` does (events, 20 segments, 50
flows) and lets the engine process all of it, so every later run starts from the same state.
Each run copies it, then measures what ``bench/engine.py``'s latency phase measures: the
engine thread live while a writer appends ``--rate`` events/s; the engine's commit of the
batch that decided an event minus the event's commit; p50/p99, after a 2-second warm-up
reported apart.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.engine import WARMUP, engine_rate, generate, isolated, latency, setup


def build(path: Path, events: int, people: int) -> None:
    started = time.perf_counter()
    url = f"sqlite:///{path}"
    setup(url, generate(events, people))
    rate, _, _ = isolated(engine_rate, url, events)
    print(f"built {path} ({events:,} events, engine {rate:,.0f}/s) in {time.perf_counter() - started:.0f}s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database", type=Path, required=True, help="SQLite file, built if missing")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--people", type=int, default=10_000)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    if not args.database.exists():
        build(args.database, args.events, args.people)
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="momently-live-") as tmp:
            copy = Path(tmp) / "live.db"
            shutil.copy(args.database, copy)  # closed cleanly when built: no WAL to carry
            p50, p99, n, warm_p99 = isolated(latency, f"sqlite:///{copy}", args.rate, args.seconds)
        print(
            f"run {i + 1}: {args.rate}/s for {args.seconds:.0f}s ({n:,} events): "
            f"p50 {p50:.1f} ms, p99 {p99:.1f} ms (first {WARMUP:.0f}s, not counted: p99 {warm_p99:.1f} ms)"
        )


if __name__ == "__main__":
    main()
