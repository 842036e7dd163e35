"""Shared fixtures: every backend-touching test runs on SQLite and on a real PostgreSQL.

PostgreSQL is skipped when unreachable on a laptop, but under CI=true an unreachable
PostgreSQL fails the run: those tests are required there.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn

from momently.api import create_app
from momently.domain.credentials import KeyKind
from momently.services import Services
from momently.settings import Settings

# the consent ledger's key, for every process a test starts (PostgreSQL installs require one)
os.environ.setdefault("MOMENTLY_LEDGER_KEY", "test-ledger-key-" + "k" * 32)
PG_ADMIN_URL = os.environ.get("MOMENTLY_TEST_PG", "postgresql://127.0.0.1:5432/test")
ON_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _pg_reachable() -> str | None:
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return None
    except Exception as exc:
        return str(exc)


@pytest.fixture(scope="session")
def pg_available() -> None:
    problem = _pg_reachable()
    if problem is not None:
        if ON_CI:
            pytest.fail(f"PostgreSQL is required on CI but unreachable at {PG_ADMIN_URL}: {problem}")
        pytest.skip(f"PostgreSQL unreachable at {PG_ADMIN_URL}: {problem}")


def _new_pg_database() -> tuple[str, str]:
    name = f"momently_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return name, f"{base}/{name}"


def _drop_pg_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/momently.db"
        return
    request.getfixturevalue("pg_available")
    name, url = _new_pg_database()
    try:
        yield url
    finally:
        _drop_pg_database(name)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, auth_cache_seconds=0.0)


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    s = Services.build(settings)
    try:
        yield s
    finally:
        s.close()


@dataclass
class LiveServer:
    """``write_key`` is a server key: most tests play the customer's backend. Tests of what a
    web page may do use ``public_key``, the public write key."""

    url: str
    services: Services
    workspace: str
    write_key: str
    admin_token: str
    public_key: str = ""

    def admin(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.admin_token}"}, timeout=10
        )

    def wait_for_engine(self, timeout: float = 20.0) -> None:
        """Block until the projector has folded every committed event into profiles."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(cursor >= last for _, cursor, last in self.services.profiles.backlog("profiles")):
                return
            time.sleep(0.02)
        raise AssertionError("the profile projector did not catch up")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(app: Any, port: int | None = None) -> Iterator[str]:
    """A real uvicorn server for ``app`` on 127.0.0.1, in a thread; yields its base URL."""
    port = port or free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive(), "test server died while starting"
        assert time.monotonic() < deadline, "test server did not start in time"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture
def live_server(services: Services) -> Iterator[LiveServer]:
    """The real ASGI app on a real uvicorn server bound to 127.0.0.1, in a thread."""
    ws = services.workspaces.create("acme", name="Acme", now=services.clock.now())
    server = services.workspaces.issue_key(ws.id, KeyKind.SERVER, label="test", now=services.clock.now())
    public = services.workspaces.issue_key(ws.id, KeyKind.WRITE, label="web", now=services.clock.now())
    admin = services.workspaces.issue_key(ws.id, KeyKind.ADMIN, label="test", now=services.clock.now())
    with serving(create_app(services)) as url:
        yield LiveServer(url, services, ws.id, server.secret, admin.secret, public.secret)


@pytest.fixture
def receiver() -> Iterator[Any]:
    """A Standard Webhooks receiver on 127.0.0.1 (tests.webhook_receiver)."""
    from tests.webhook_receiver import Receiver

    r = Receiver()
    yield r
    r.close()
