"""/healthz says which part fails, through the real HTTP API: a channel whose provider refuses
every message, a disk below the free-space threshold, a failing engine loop (without the
database's error text), an unreachable database; /livez stays up through all of it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from aiosmtpd.controller import Controller

from momently.api import create_app
from momently.engine.channel_health import FAILING_AFTER
from momently.services import Services
from momently.settings import Settings
from tests.conftest import PG_ADMIN_URL, free_port, serving
from tests.flows.conftest import FlowEnv, make_env


class RefusingSmtp:
    """A real SMTP server that refuses every message at DATA, as a relay that lost its
    permission to send for the domain would; ``accept`` turns that off."""

    def __init__(self) -> None:
        self.accept = False
        self.accepted = 0
        self.controller = Controller(self, hostname="127.0.0.1", port=free_port())
        self.controller.start()
        self.url = f"smtp+insecure://127.0.0.1:{self.controller.port}"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if not self.accept:
            return "554 5.7.1 relaying denied"
        self.accepted += 1
        return "250 Message accepted"


@pytest.fixture
def smtp() -> Iterator[RefusingSmtp]:
    server = RefusingSmtp()
    yield server
    server.controller.stop()


@pytest.fixture
def env(database_url: str, smtp: RefusingSmtp, tmp_path: Path) -> Iterator[FlowEnv]:
    with make_env(
        database_url,
        smtp_url=smtp.url,
        email_from="Acme <hello@acme.example>",
        console_path=str(tmp_path / "console.jsonl"),
    ) as e:
        yield e


RECEIPT = """
id: receipt
tier: A
trigger: {event: Order Completed}
reentry: every_time
channels: [email, console]
message:
  subject: "Your order"
  body: "Thanks for your order."
"""


def order(env: FlowEnv, user: str) -> None:
    env.send(
        {"type": "identify", "userId": user, "traits": {"email": f"{user}@example.com"}},
        {"type": "track", "userId": user, "event": "Order Completed"},
    )
    env.services.dispatcher.run_until_idle()


def health(url: str) -> tuple[int, dict[str, Any]]:
    reply = httpx.get(url + "/healthz")
    return reply.status_code, reply.json()


def test_a_channel_whose_server_refuses_every_message_is_reported(env: FlowEnv, smtp: RefusingSmtp) -> None:
    # Given an SMTP server that refuses every message, when a few sends in a row fail
    env.flow("receipt", RECEIPT)
    for n in range(FAILING_AFTER - 1):
        order(env, f"p{n}")
    code, body = health(env.url)
    assert (code, body["status"], body["checks"]["channels"]["email"]["status"]) == (200, "ok", "ok")
    order(env, "last")
    # Then /healthz names the channel, its last error and the count, and says degraded:
    # the server still takes events, so it stays in the load balancer (200)
    code, body = health(env.url)
    assert (code, body["status"]) == (200, "degraded"), body
    email = body["checks"]["channels"]["email"]
    assert email["status"] == "failing"
    assert email["lastError"] == "smtp_554"
    assert email["consecutiveFailures"] == FAILING_AFTER
    assert email["lastSuccessAt"] is None
    assert body["checks"]["channels"]["console"]["status"] == "ok"  # the fallback worked
    assert body["checks"]["database"]["status"] == "ok"

    # When the server accepts again, one success clears it
    smtp.accept = True
    order(env, "again")
    assert smtp.accepted == 1
    code, body = health(env.url)
    assert (code, body["status"]) == (200, "ok")
    email = body["checks"]["channels"]["email"]
    assert (email["status"], email["consecutiveFailures"], email["lastError"]) == ("ok", 0, "smtp_554")
    assert email["lastSuccessAt"] is not None


def test_a_disk_below_the_free_space_threshold_fails_health(database_url: str) -> None:
    # Given a threshold above the free space there is (as on a full disk)
    settings = Settings(database_url=database_url, health_min_free_disk_mb=1e12, run_engine=False)
    services = Services.build(settings)
    try:
        with serving(create_app(services)) as url:
            code, body = health(url)
            assert httpx.get(url + "/livez").status_code == 200
    finally:
        services.close()
    disk = body["checks"]["disk"]
    if services.db.is_sqlite:
        # Then SQLite's disk is reported failing, and the process is not ready
        assert (code, body["status"], disk["status"]) == (503, "failing", "failing")
        assert disk["freeBytes"] < disk["minFreeBytes"] == 10**12 * 1024 * 1024
    else:  # PostgreSQL's disk is its server's to watch
        assert (code, body["status"], disk["status"]) == (200, "ok", "skipped")


def test_an_unreachable_database_fails_health_without_its_error_text(database_url: str) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("a SQLite file cannot be made unreachable to a process that has it open")
    name = database_url.rsplit("/", 1)[1]
    services = Services.build(Settings(database_url=database_url, run_engine=False))
    try:
        with serving(create_app(services)) as url:
            assert health(url)[0] == 200
            # When the database stops taking connections (and the open ones are cut)
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
                )
            try:
                reply = httpx.get(url + "/healthz")
                live = httpx.get(url + "/livez")
            finally:
                with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                    conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    finally:
        services.close()
    # Then /healthz is 503 naming the database, but not the driver's message (which names the
    # database and the server); /livez still answers
    assert reply.status_code == 503, reply.text
    body = reply.json()
    assert body["status"] == "failing"
    assert body["checks"]["database"] == {
        "status": "failing",
        "dialect": "postgresql",
        "error": "unreachable (see the server log)",
    }
    assert name not in reply.text
    assert "connection" not in reply.text.lower()
    assert live.status_code == 200
