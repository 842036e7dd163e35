"""``POST /v1/clock`` on a server with a virtual clock (``serve --clock virtual``), through
HTTP with the engine and the dispatcher running in their own threads."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from momently.api import create_app
from momently.cli import main
from momently.clock import ManualClock
from momently.domain.credentials import KeyKind
from momently.services import Services
from momently.settings import Settings
from tests.conftest import LiveServer, serving

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
FLOW = """\
id: cart-nudge
trigger:
  absence:
    first: {event: Product Added}
    then: {event: Order Completed}
    within: 30m
message: {body: "Your cart is waiting."}
channels: [in_app]
"""


@pytest.fixture
def virtual(database_url: str) -> Iterator[tuple[str, Services, str, str]]:
    clock = ManualClock(START)
    services = Services.build(
        Settings(database_url=database_url, auth_cache_seconds=0.0, run_engine=True), clock=clock
    )
    ws = services.workspaces.create("acme", name="Acme", now=clock.now())
    write = services.workspaces.issue_key(ws.id, KeyKind.SERVER, label="t", now=clock.now())
    admin = services.workspaces.issue_key(ws.id, KeyKind.ADMIN, label="t", now=clock.now())
    with serving(create_app(services)) as url:  # its lifespan starts the engine and the dispatcher
        yield url, services, write.secret, admin.secret


def test_advancing_fires_due_timers_and_sends_at_their_time(virtual: tuple[str, Services, str, str]) -> None:
    url, services, write, admin = virtual
    bearer = {"Authorization": f"Bearer {admin}"}
    with httpx.Client(base_url=url, timeout=60) as c:
        r = c.put(
            "/v1/flows/cart-nudge", content=FLOW, headers={**bearer, "Content-Type": "application/yaml"}
        )
        assert r.status_code == 200, r.text
        r = c.post(
            "/v1/track",
            auth=(write, ""),
            json={"userId": "ann", "event": "Product Added", "properties": {"cart_id": "c1"}},
        )
        assert r.status_code == 200, r.text
        r = c.post("/v1/clock", headers=bearer, json={"advance": "1d"})
        assert r.status_code == 200, r.text
        assert r.json() == {"now": "2026-03-03T09:00:00.000Z", "from": "2026-03-02T09:00:00.000Z"}
        # the answer comes once everything due has run: the nudge was decided at +30m and
        # sent when that deadline was released (+5m of allowed lateness), not a day later
        (enrollment,) = services.engine_state.enrollments("acme", flow_id="cart-nudge")
        assert (enrollment.outcome, enrollment.decided_ms) == (
            "send",
            int(START.timestamp() * 1000) + 1_800_000,
        )
        sent = [e for e in services.events.read("acme", after_seq=0, limit=100) if e.name == "Message Sent"]
        assert [e.body["timestamp"] for e in sent] == ["2026-03-02T09:35:00.000Z"]
        r = c.post("/v1/clock", headers=bearer, json={"to": "2026-03-10T00:00:00Z"})
        assert r.status_code == 200
        assert r.json()["now"] == "2026-03-10T00:00:00.000Z"


def test_time_only_moves_forward(virtual: tuple[str, Services, str, str]) -> None:
    url, _, _, admin = virtual
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin}"}, timeout=30) as c:
        r = c.post("/v1/clock", json={"to": "2026-03-01T00:00:00Z"})
        assert r.status_code == 400
        assert r.json()["code"] == "time_backwards"
        assert "2026-03-02T09:00:00.000Z" in r.json()["message"]
        for body in ({}, {"advance": "1d", "to": "2026-04-01T00:00:00Z"}):
            r = c.post("/v1/clock", json=body)
            assert r.status_code == 400, body
            assert r.json()["code"] == "invalid_clock_move", body
        r = c.post("/v1/clock", json={"advance": "2 days"})
        assert r.status_code == 400
        assert "write 2d" in r.json()["message"]
        r = c.post("/v1/clock", json={"advance": "-1d"})
        assert r.status_code == 400
        assert (
            c.post("/v1/clock", json={"advance": "1d"}, headers={"Authorization": "Bearer nope"}).status_code
            == 401
        )


def test_a_server_on_the_system_clock_answers_409(live_server: LiveServer) -> None:
    with live_server.admin() as c:
        r = c.post("/v1/clock", json={"advance": "1d"})
    assert r.status_code == 409
    assert r.json()["code"] == "clock_not_virtual"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--clock", "virtual", "--workers", "2"], "a virtual clock lives in one process"),
        (["--clock", "virtual", "--no-engine"], "a virtual clock lives in one process"),
        (["--clock", "virtual=tomorrow"], "not an ISO-8601 timestamp"),
        (["--clock", "sundial"], "system, virtual or virtual="),
    ],
)
def test_serve_refuses_a_virtual_clock_it_cannot_keep(tmp_path: Path, args: list[str], says: str) -> None:
    result = CliRunner().invoke(main, ["--database-url", f"sqlite:///{tmp_path}/m.db", "serve", *args])
    assert result.exit_code == 2, result.output
    assert says in result.output
