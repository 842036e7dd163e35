"""Dispatch benchmark: messages/s from the outbox to the webhook channel against a local
receiver, and event-to-handed-to-channel latency at a steady rate.

    python bench/dispatch.py                       # SQLite
    python bench/dispatch.py --database postgresql

1. Baseline: the same signed JSON POSTs sent straight to the receiver by one keep-alive
   client, in a loop (the ceiling of one sequential sender).
2. Throughput: ``--messages`` send decisions already in the outbox (one flow, one person
   each); the dispatcher drains them: render, sign, POST, record the outcome and append the
   ``Message Sent`` event, per message.
3. Latency, one process: writer, engine and dispatcher threads live in this process (as in
   ``momently serve``); events appended at ``--rate``/s for ``--seconds``; latency is from
   the event's commit to the receiver getting its message.
4. Latency over HTTP (``--split``): plain ``momently serve`` (API, engine and dispatcher in
   one process), then ``momently serve --no-engine`` and ``momently worker`` as separate
   processes, then with the engine and the dispatcher in a worker each; events POSTed to
   ``/v1/batch`` at ``--rate``/s; latency is from the HTTP 200 (the event is committed) to
   the receiver getting its message.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ingest import FreshDatabase, batch_request, read_reply
from momently import catalog
from momently.domain.credentials import KeyKind
from momently.domain.definitions import load
from momently.domain.event import BatchDefaults, Event, normalize
from momently.services import Services
from momently.settings import Settings

SECRET = "whsec_" + base64.b64encode(b"bench-secret-bench-secret-bench!").decode()
FLOW = """
id: ping
trigger: {event: Ping}
reentry: every_time
channels: [webhook]
message:
  title: "Hello {{ traits.name | default: 'there' }}"
  body: "Your order {{ event.properties.order }} is on its way."
  action: {label: Track, url: "https://shop.example/track/{{ event.properties.order }}"}
"""


def _serve(port_out: Any, log_path: str) -> None:
    """The receiver, in its own process (it must not share the GIL with the dispatcher):
    answers 200 at once and logs ``webhook-id`` and arrival time (wall clock)."""
    log = open(log_path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = orjson.loads(self.rfile.read(int(self.headers["content-length"])))
            message_id = (body.get("trigger") or {}).get("messageId", "-")
            log.write(f"{self.headers['webhook-id']} {message_id} {time.time()}\n")
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port_out.put(server.server_address[1])
    server.serve_forever()


class Receiver:
    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        ctx = multiprocessing.get_context("spawn")
        ports: Any = ctx.Queue()
        self.process = ctx.Process(target=_serve, args=(ports, str(log_path)), daemon=True)
        self.process.start()
        self.url = f"http://127.0.0.1:{ports.get(timeout=30)}/hook"

    def arrivals(self) -> dict[str, float]:
        """First arrival time of each delivery key."""
        out: dict[str, float] = {}
        for line in self.log_path.read_text().splitlines():
            key, _, at = line.split(" ")
            out.setdefault(key, float(at))
        return out

    def arrivals_by_trigger(self) -> dict[str, float]:
        """First arrival time of the message each trigger event's ``messageId`` caused."""
        out: dict[str, float] = {}
        for line in self.log_path.read_text().splitlines():
            _, message_id, at = line.split(" ")
            out.setdefault(message_id, float(at))
        return out

    def close(self) -> None:
        self.process.terminate()
        self.process.join()


def services(url: str, receiver: Receiver) -> Services:
    return Services.build(
        Settings(
            database_url=url,
            webhook_url=receiver.url,
            webhook_secret=SECRET,
            webhook_allow_networks=["127.0.0.0/8"],
            run_engine=True,
        )
    )


def ping(user: str, order: int, s: Services) -> Event:
    raw = {"type": "track", "userId": user, "event": "Ping", "properties": {"order": order}}
    ev = normalize(raw, default_type=None, defaults=BatchDefaults(), received_at=s.clock.now())
    assert isinstance(ev, Event)
    return ev


def baseline(receiver: Receiver, n: int) -> float:
    body = orjson.dumps({"type": "message", "message": {"title": "Hello", "body": "x" * 120}})
    with httpx.Client() as c:
        started = time.perf_counter()
        for i in range(n):
            c.post(
                receiver.url,
                content=body,
                headers={"webhook-id": f"base-{i}", "content-type": "application/json"},
            )
        return n / (time.perf_counter() - started)


def live_split(
    url: str, receiver: Receiver, rate: int, seconds: float, port: int, commands: list[list[str]]
) -> None:
    """Phase 4: load over HTTP to ``commands``, the ``momently`` command lines to run (the
    first serves the API; the others are workers)."""
    s = Services.build(Settings(database_url=url, run_engine=False), migrate=False)
    key = s.workspaces.issue_key("w", KeyKind.SERVER, label="bench", now=s.clock.now()).secret
    s.close()
    env = {
        **os.environ,
        "MOMENTLY_DATABASE_URL": url,
        "MOMENTLY_PORT": str(port),
        "MOMENTLY_LOG_LEVEL": "warning",
        "MOMENTLY_WEBHOOK_URL": receiver.url,
        "MOMENTLY_WEBHOOK_SECRET": SECRET,
        "MOMENTLY_ALLOW_PRIVATE_WEBHOOKS": "true",
    }
    procs = [
        subprocess.Popen([sys.executable, "-m", "momently", *cmd], env=env, start_new_session=True)
        for cmd in commands
    ]
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.1)
        acked = asyncio.run(_post_at_rate(port, key, rate, seconds))
        time.sleep(3)
        arrived = receiver.arrivals_by_trigger()
        lat = sorted((arrived[m] - at) * 1000 for m, at in acked.items() if m in arrived)
        p50, p99 = statistics.median(lat), lat[int(len(lat) * 0.99)]
        shape = " + ".join(" ".join(c) for c in commands)
        print(
            f"latency at {rate}/s for {seconds:.0f}s, {shape}: "
            f"{len(lat):,} of {len(acked):,} delivered; HTTP 200 -> receiver p50 {p50:.1f} ms, "
            f"p99 {p99:.1f} ms"
        )
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=30)


async def _post_at_rate(port: int, key: str, rate: int, seconds: float) -> dict[str, float]:
    """One keep-alive connection posting a batch every 20 ms; messageId -> time of its 200."""
    per_tick = max(1, rate // 50)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    acked: dict[str, float] = {}
    run = f"{time.time():.0f}"  # the runs share a database (and its de-duplication window)
    t0 = time.perf_counter()
    i = 0
    try:
        while time.perf_counter() - t0 < seconds:
            delay = t0 + i * per_tick / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            ids = [f"split-{run}-{i}-{j}" for j in range(per_tick)]
            batch = [
                {
                    "type": "track",
                    "userId": f"live{i}-{j}",
                    "event": "Ping",
                    "messageId": m,
                    "properties": {"order": j},
                }
                for j, m in enumerate(ids)
            ]
            writer.write(batch_request(port, key, orjson.dumps({"batch": batch})))
            status, reply = await read_reply(reader)
            done = time.time()
            if status != 200:
                raise RuntimeError(f"ingest answered HTTP {status}: {reply[:200]!r}")
            for m in ids:
                acked[m] = done
            i += 1
    finally:
        writer.close()
    return acked


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument(
        "--split",
        action="store_true",
        help="also measure latency over HTTP: serve alone, then with workers apart",
    )
    parser.add_argument("--port", type=int, default=8932)
    args = parser.parse_args()
    fresh = FreshDatabase(args.database)
    receiver = Receiver(fresh.tmp / "arrivals.log")
    try:
        url = fresh.new()
        s = services(url, receiver)
        try:
            s.workspaces.create("w", name="bench", now=s.clock.now())
            docs, problems = load(FLOW, "ping.yaml")
            assert not problems, problems
            catalog.apply(s, "w", catalog.Loaded(docs, []))
            ceiling = baseline(receiver, args.messages)
            print(f"baseline: one client POSTing to the receiver   {ceiling:8,.0f} requests/s")
            with s.db.write() as conn:
                s.events.append(conn, [("w", ping(f"u{i}", i, s)) for i in range(args.messages)])
            s.projector.run_until_idle()
            started = time.perf_counter()
            sent = s.dispatcher.run_until_idle()
            rate = sent / (time.perf_counter() - started)
            print(
                f"dispatcher: outbox -> webhook                  {rate:8,.0f} messages/s "
                f"({sent:,} sent, ratio {rate / ceiling:.2f})"
            )

            sys.setswitchinterval(0.0005)  # as create_app sets it for `momently serve`
            s.start()  # writer, engine and dispatcher threads, as in `momently serve`
            committed: dict[int, float] = {}  # seq -> commit time
            per_tick = max(1, args.rate // 50)
            t0 = time.perf_counter()
            i = 0
            while time.perf_counter() - t0 < args.seconds:
                delay = t0 + i * per_tick / args.rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                s.writer.append_blocking("w", [ping(f"live{i}-{j}", j, s) for j in range(per_tick)])
                done = time.time()
                ws = s.workspaces.get("w")  # the only writer: the batch holds the last seqs
                assert ws is not None
                for seq in range(ws.last_seq - per_tick + 1, ws.last_seq + 1):
                    committed[seq] = done
                i += 1
            time.sleep(3)
            lat = []
            for key, arrived in receiver.arrivals().items():
                occurrence = key.rsplit(":", 1)[-1]  # w:ping:PERSON:e{seq}
                seq = int(occurrence[1:]) if occurrence.startswith("e") and occurrence[1:].isdigit() else None
                if seq in committed:
                    lat.append((arrived - committed[seq]) * 1000)
            lat.sort()
            p50, p99 = statistics.median(lat), lat[int(len(lat) * 0.99)]
            print(
                f"latency at {args.rate}/s for {args.seconds:.0f}s: {len(lat):,} of {len(committed):,} "
                f"delivered; event commit -> receiver p50 {p50:.1f} ms, p99 {p99:.1f} ms"
            )
        finally:
            s.close()
        if args.split:
            api = ["serve", "--no-engine"]
            for commands in (
                [["serve"]],
                [api, ["worker"]],
                [api, ["worker", "--role", "engine"], ["worker", "--role", "dispatcher"]],
            ):
                live_split(url, receiver, args.rate, args.seconds, args.port, commands)
    finally:
        receiver.close()
        fresh.cleanup()


if __name__ == "__main__":
    main()
