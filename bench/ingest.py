"""Ingest benchmark: events/s over real HTTP against the raw append rate of the same rows.

    python bench/ingest.py --database sqlite          # or postgresql
    python bench/ingest.py --database sqlite --events 500000 --clients 8

1. Baseline: the same normalized rows inserted straight into the events table of a fresh
   database of the same kind by the DBAPI driver (executemany of plain tuples, 10,000 rows
   per transaction, same durability settings; no HTTP, no validation, no de-dup).
2. Momently: `momently serve --no-engine` in its own process on a fresh database; concurrent
   clients POST 100-event /v1/batch requests (pre-encoded, unique messageIds); every 200 is a
   durable commit with de-duplication on. Reports accepted events/s and request latency.
The ratio ingest/raw says how close the HTTP path gets to the database's own append rate.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from momently.domain.credentials import KeyKind
from momently.domain.event import BatchDefaults, Event, normalize
from momently.domain.timestamps import to_millis
from momently.services import Services
from momently.settings import Settings
from momently.sim.customers import Shop
from momently.store.schema import events as events_table

PG_ADMIN = os.environ.get("MOMENTLY_BENCH_PG", "postgresql://127.0.0.1:5432/test")


class FreshDatabase:
    """A new empty database of the requested kind, removed afterwards."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.tmp = Path(tempfile.mkdtemp(prefix="momently-bench-"))
        self.names: list[str] = []

    def new(self) -> str:
        if self.kind == "sqlite":
            return f"sqlite:///{self.tmp}/{uuid.uuid4().hex[:8]}.db"
        name = f"momently_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.names.append(name)
        return PG_ADMIN.rsplit("/", 1)[0] + "/" + name

    def cleanup(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
        for name in self.names:
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def make_batches(n_events: int, batch_size: int) -> list[list[dict[str, object]]]:
    shop = Shop(people=100_000, seed=1)
    events = list(shop.events(n_events))
    return [events[i : i + batch_size] for i in range(0, len(events), batch_size)]


def raw_append_rate(url: str, batches: list[list[dict[str, object]]]) -> float:
    s = Services.build(Settings(database_url=url))
    s.workspaces.create("bench", name=None, now=s.clock.now())
    now = s.clock.now()
    rows: list[tuple[str, Event]] = []
    for batch in batches:
        for raw in batch:
            ev = normalize(raw, default_type=None, defaults=BatchDefaults(), received_at=now)
            assert isinstance(ev, Event)
            rows.append(("bench", ev))
    columns = [c.name for c in events_table.columns]
    mark = "?" if s.db.is_sqlite else "%s"
    sql = f"INSERT INTO events ({', '.join(columns)}) VALUES ({', '.join([mark] * len(columns))})"
    tuples = [
        (
            "bench",
            seq,
            e.message_id,
            e.type,
            e.name,
            e.user_id,
            e.anonymous_id,
            to_millis(e.timestamp),
            to_millis(e.received_at),
            e.payload.decode(),
        )
        for seq, (_, e) in enumerate(rows, 1)
    ]
    conn = s.db.engine.raw_connection()  # same pragmas (WAL, synchronous=FULL) as Momently's own
    try:
        cur = conn.cursor()
        started = time.perf_counter()
        for i in range(0, len(tuples), 10_000):
            if s.db.is_sqlite:
                cur.execute("BEGIN IMMEDIATE")
            cur.executemany(sql, tuples[i : i + 10_000])
            conn.commit() if not s.db.is_sqlite else cur.execute("COMMIT")
        elapsed = time.perf_counter() - started
    finally:
        conn.close()
    s.close()
    return len(rows) / elapsed


def writer_rate(url: str, batches: list[list[dict[str, object]]], clients: int) -> float:
    """The log writer alone, in this process: group commit + de-dup + append, no HTTP."""
    s = Services.build(Settings(database_url=url))
    s.workspaces.create("bench", name=None, now=s.clock.now())
    now = s.clock.now()
    requests = []
    for batch in batches:
        normalized = [
            normalize(raw, default_type=None, defaults=BatchDefaults(), received_at=now) for raw in batch
        ]
        requests.append([e for e in normalized if isinstance(e, Event)])
    s.writer.start()
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        stored = sum(o.stored for o in pool.map(lambda evs: s.writer.append_blocking("bench", evs), requests))
    elapsed = time.perf_counter() - started
    s.close()
    return stored / elapsed


def batch_request(port: int, key: str, body: bytes) -> bytes:
    """A complete HTTP/1.1 ``POST /v1/batch``, built before the clock starts. The benchmarks
    speak HTTP on asyncio streams rather than through an HTTP client library: they share the
    machine's two cores with the server, and a full-featured client spends more CPU per
    request than the server does per event."""
    auth = base64.b64encode(f"{key}:".encode()).decode()
    return (
        f"POST /v1/batch HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Basic {auth}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def read_reply(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Status code and body of one HTTP/1.1 response (Content-Length framed)."""
    status = await reader.readline()
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return int(status.split()[1]), await reader.readexactly(length)


async def drive(port: int, key: str, bodies: list[bytes], clients: int) -> tuple[int, float, list[float]]:
    """Concurrent keep-alive clients, each posting the next body and waiting for the reply."""
    pending = iter([batch_request(port, key, body) for body in bodies])
    latencies: list[float] = []
    accepted = 0

    async def worker() -> None:
        nonlocal accepted
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for request in pending:
                t0 = time.perf_counter()
                writer.write(request)
                status, reply = await read_reply(reader)
                latencies.append(time.perf_counter() - t0)
                if status != 200:
                    raise RuntimeError(f"HTTP {status}: {reply[:200]!r}")
                accepted += orjson.loads(reply)["accepted"]
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return accepted, time.perf_counter() - started, latencies


def _tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its children (Linux /proc), to show where
    the cores went."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat.parent.name) == pid or int(fields[1]) == pid:  # fields[1] is the parent pid
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def wait_for_workers(base: str, workers: int, timeout: float = 10.0) -> None:
    """The first worker up answers /healthz while the others may still be starting, and
    connections made meanwhile all go to it (and stay there, kept alive): wait until each
    worker has answered (``process`` in /healthz), on fresh connections, or ``timeout``."""
    seen: set[object] = set()
    deadline = time.monotonic() + timeout
    while len(seen) < workers and time.monotonic() < deadline:
        seen.add(httpx.get(base + "/healthz", timeout=1).json().get("process"))
        time.sleep(0.02)


def http_rate(
    url: str, batches: list[list[dict[str, object]]], clients: int, port: int, workers: int
) -> dict[str, float]:
    s = Services.build(Settings(database_url=url))
    s.workspaces.create("bench", name=None, now=s.clock.now())
    key = s.workspaces.issue_key("bench", KeyKind.SERVER, label="bench", now=s.clock.now()).secret
    s.close()
    env = {
        **os.environ,
        "MOMENTLY_DATABASE_URL": url,
        "MOMENTLY_PORT": str(port),
        "MOMENTLY_LOG_LEVEL": "warning",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "momently", "serve", "--no-engine", "--workers", str(workers)],
        env=env,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.1)
        wait_for_workers(base, workers)
        bodies = [orjson.dumps({"batch": b, "sentAt": "2026-11-23T00:00:00Z"}) for b in batches]
        warm, rest = bodies[:20], bodies[20:]
        asyncio.run(drive(port, key, warm, clients))
        server_cpu0, client_cpu0 = _tree_cpu_seconds(server.pid), time.process_time()
        accepted, elapsed, latencies = asyncio.run(drive(port, key, rest, clients))
        server_cpu = _tree_cpu_seconds(server.pid) - server_cpu0
        client_cpu = time.process_time() - client_cpu0
        expected = sum(len(b) for b in batches[20:])
        if accepted != expected:
            raise RuntimeError(f"accepted {accepted} of {expected} events")
        latencies.sort()
        return {
            "events_per_s": accepted / elapsed,
            "requests_per_s": len(rest) / elapsed,
            "p50_ms": statistics.median(latencies) * 1000,
            "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
            "server_cpu": server_cpu / elapsed,
            "client_cpu": client_cpu / elapsed,
        }
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--port", type=int, default=8931)
    parser.add_argument(
        "--workers", type=int, default=2, help="momently serve --workers (default 2: both cores)"
    )
    args = parser.parse_args()

    print(f"preparing {args.events:,} events in batches of {args.batch} ...", flush=True)
    batches = make_batches(args.events, args.batch)
    dbs = FreshDatabase(args.database)
    try:
        raw = raw_append_rate(dbs.new(), batches)
        writer = writer_rate(dbs.new(), batches, args.clients)
        print(f"raw driver insert ({args.database}, 10k rows/txn): {raw:>10,.0f} rows/s", flush=True)
        print(f"log writer alone (no HTTP, dedup on):  {writer:>10,.0f} events/s", flush=True)
        result = http_rate(dbs.new(), batches, args.clients, args.port, args.workers)
    finally:
        dbs.cleanup()
    rate, rps = result["events_per_s"], result["requests_per_s"]
    print(
        f"HTTP ingest ({args.workers} workers, {args.clients} clients, dedup on): {rate:>10,.0f} events/s",
        end="",
    )
    print(f" ({rps:,.0f} requests/s)")
    print(f"request latency: p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms")
    print(f"CPU in use: server {result['server_cpu']:.2f} cores, ", end="")
    print(f"benchmark clients {result['client_cpu']:.2f} cores")
    print(f"ratio ingest/raw: {result['events_per_s'] / raw:.2f}")


if __name__ == "__main__":
    main()
