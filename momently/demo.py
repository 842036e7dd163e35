"""``momently demo``: the main job end to end on one machine, for a first look.

Applies the example flows (momently/sim/flows/shop.yaml), starts the real server, sends
synthetic shop traffic to it over HTTP with a fresh server key, waits for the engine to fold
it into profiles, segments and enrollments, and prints a profile, what each flow decided and
the commands to try next. Everything goes through the public API a real SDK would use.

The shop's day started two hours ago. Its events are sent as a live SDK would have sent them
then: the server runs on a clock that catches up (``clock.CatchUpClock``), each batch arrives
at the time its events happened, and the clock then walks to now, stopping at every deadline
so that each nudge is decided and sent when it would have been. Then the clock is real time.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import click
import httpx
import uvicorn

from momently import catalog
from momently.api import create_app
from momently.clock import CatchUpClock
from momently.domain.credentials import KeyKind
from momently.domain.timestamps import parse_timestamp
from momently.services import Services
from momently.sim.customers import Shop
from momently.virtual_time import next_stop, walk

WORKSPACE = "demo"
FLOWS = Path(__file__).parent / "sim" / "flows"


def run_demo(services: Services, *, people: int, exit_after: bool, start_engine: bool = False) -> int:
    """``start_engine``: start the engine's and dispatcher's loops once the synthetic past has
    been played (the walk drives them until then: loops running on a clock that jumps hours
    would take over each other's leases)."""
    s = services
    settings = s.settings
    if s.workspaces.get(WORKSPACE) is None:
        s.workspaces.create(WORKSPACE, name="Demo shop", now=s.clock.now())
    # the simulated shop's backend sends, so a server key (a page would get the public key)
    write = s.workspaces.issue_key(WORKSPACE, KeyKind.SERVER, label="demo", now=s.clock.now()).secret
    admin = s.workspaces.issue_key(WORKSPACE, KeyKind.ADMIN, label="demo", now=s.clock.now()).secret
    applied = catalog.apply(s, WORKSPACE, catalog.read_path(FLOWS))
    click.echo(f"applied {len(applied)} flows and segments from {FLOWS}")

    server = uvicorn.Server(
        uvicorn.Config(
            create_app(s), host=settings.host, port=settings.port, log_level="warning", access_log=False
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://{settings.host}:{settings.port}"
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            click.echo(f"the server did not start on {base} (is the port taken? try --port)", err=True)
            return 1
        time.sleep(0.05)

    # New message ids on every run (nothing de-duplicated), and a shop day that started when
    # the clock does (two hours ago, see momently.cli demo): carts left then are past their
    # 30-minute nudge, and recent enough to be sent.
    shop = Shop(people=people, seed=time.time_ns(), start=s.clock.now())
    batch = [shop.identify(i) for i in range(people)] + list(shop.events(people * 20))
    clock = s.clock if isinstance(s.clock, CatchUpClock) and not s.clock.released else None

    def settle() -> None:
        """The engine catches up with what has arrived and is due, then the dispatcher."""
        s.projector.run_until_idle()  # events, and the timers now due (abandoned carts)
        s.dispatcher.run_until_idle()  # and the messages decided
        s.outcomes.run_until_idle()

    def until(when: datetime) -> None:
        """Let time pass to ``when`` as it would have live."""
        if clock is not None and when > clock.now():
            walk(clock, when, stop=lambda: next_stop(s, [WORKSPACE]), settle=settle)

    with httpx.Client(base_url=base, auth=(write, ""), timeout=10) as client:
        sent = 0
        for i in range(0, len(batch), 100):
            chunk = batch[i : i + 100]
            until(max(parse_timestamp(e["timestamp"]) for e in chunk))  # it arrives as it happens
            reply = client.post("/v1/batch", json={"batch": chunk})
            reply.raise_for_status()
            sent += reply.json()["accepted"]
        click.echo(f"sent {sent} synthetic events for {people} customers to {base}/v1/batch")
        if clock is not None:
            until(datetime.now(UTC))
            clock.release()  # from here on, real time
        settle()
        if start_engine:
            s.start_engine(watch_commits=False)
        got = httpx.get(f"{base}/v1/profiles/user-1", headers={"Authorization": f"Bearer {admin}"})
        profile = got.json() if got.status_code == 200 else None
    if profile is not None:
        click.echo("profile of user-1, as GET /v1/profiles/user-1 returns it:")
        click.echo(
            f"  email {profile['addresses']['email']}, time zone {profile['timezone']}, "
            f"{profile['computed']['ordersCompleted']} orders worth {profile['computed']['revenue']:.2f}, "
            f"events {profile['eventCounts']}"
        )
    click.echo("what the flows decided (momently flows show FLOW --workspace demo):")
    for flow in s.definitions.heads(WORKSPACE, "flow"):
        counts = s.engine_state.decision_counts(WORKSPACE, flow.id)
        summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "no trigger yet"
        click.echo(f"  {flow.id:14} {summary}")
    sizes = s.engine_state.segment_sizes(WORKSPACE)
    segs = s.definitions.heads(WORKSPACE, "segment")
    click.echo("segment sizes: " + ", ".join(f"{seg.id} {sizes.get(seg.id, 0)}" for seg in segs))
    statuses: dict[str, int] = {}
    for d in s.outbox.list(WORKSPACE, limit=1_000_000):
        statuses[d.status] = statuses.get(d.status, 0) + 1
    where = settings.console_path or "standard output"
    click.echo(
        "deliveries: "
        + (", ".join(f"{k} {v}" for k, v in sorted(statuses.items())) or "none")
        + f"; console messages in {where} (momently deliveries list --workspace demo)"
    )
    click.echo(f"""
Workspace '{WORKSPACE}' is ready at {base}
  server key:  {write}
  admin token: {admin}

Send your first event:
  curl -u '{write}:' -H 'Content-Type: application/json' \\
    -d '{{"userId":"ada","event":"Order Completed","properties":{{"revenue":42}}}}' {base}/v1/track
Then look at the profile:
  curl -H 'Authorization: Bearer {admin}' {base}/v1/profiles/ada
API docs: {base}/docs    OpenAPI: {base}/openapi.json
""")
    if exit_after:
        server.should_exit = True
        thread.join()
        return 0
    click.echo("Serving; press Ctrl-C to stop.")
    try:
        while thread.is_alive():
            thread.join(0.5)
    except KeyboardInterrupt:
        server.should_exit = True
        thread.join()
    return 0
