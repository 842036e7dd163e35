"""A live server on virtual time: the flows engine is driven by the test (``settle``), so
weeks of timers pass in milliseconds and every step is deterministic."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from momently.api import create_app
from momently.clock import ManualClock
from momently.domain.credentials import KeyKind
from momently.services import Services
from momently.settings import Settings
from momently.store.engine_state import Enrollment
from tests.conftest import free_port, serving

START = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)  # a Monday


@dataclass
class FlowEnv:
    url: str
    services: Services
    clock: ManualClock
    workspace: str
    write_key: str
    admin_token: str

    def send(self, *events: dict[str, Any]) -> dict[str, Any]:
        with httpx.Client(base_url=self.url, auth=(self.write_key, ""), timeout=10) as c:
            r = c.post("/v1/batch", json={"batch": list(events)})
        assert r.status_code == 200, r.text
        assert not r.json().get("rejected"), r.json()
        self.settle()
        return dict(r.json())

    def admin(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.admin_token}"}, timeout=10
        )

    def put(self, kind: str, id_: str, yaml_text: str) -> httpx.Response:
        with self.admin() as c:
            return c.put(
                f"/v1/{kind}s/{id_}", content=yaml_text, headers={"Content-Type": "application/yaml"}
            )

    def flow(self, id_: str, yaml_text: str) -> None:
        r = self.put("flow", id_, yaml_text)
        assert r.status_code == 200, r.text

    def segment(self, id_: str, yaml_text: str) -> None:
        r = self.put("segment", id_, yaml_text)
        assert r.status_code == 200, r.text

    def settle(self) -> None:
        self.services.projector.run_until_idle()

    def advance(self, **delta: float) -> None:
        self.clock.advance(timedelta(**delta))
        self.settle()

    def enrollments(self, flow_id: str | None = None) -> list[Enrollment]:
        return self.services.engine_state.enrollments(self.workspace, flow_id=flow_id)

    def sends(self, flow_id: str) -> list[Enrollment]:
        return [e for e in self.enrollments(flow_id) if e.outcome == "send"]

    def person(self, user_id: str) -> str:
        pid = self.services.profiles.person_for(self.workspace, ("user", user_id))
        assert pid is not None, user_id
        return pid

    def log_names(self) -> list[str | None]:
        return [e.name for e in self.services.events.read(self.workspace, after_seq=0, limit=100000)]


@contextmanager
def make_env(database_url: str, **overrides: Any) -> Iterator[FlowEnv]:
    clock = ManualClock(START)
    port = free_port()
    overrides.setdefault("public_url", f"http://127.0.0.1:{port}")
    # deadlines act at once unless a test is about allowed lateness (tests/flows/test_event_time_e2e.py)
    overrides.setdefault("allowed_lateness_seconds", 0)
    settings = Settings(database_url=database_url, auth_cache_seconds=0.0, run_engine=False, **overrides)
    services = Services.build(settings, clock=clock)
    ws = services.workspaces.create("acme", name="Acme", now=clock.now())
    # a server key: these tests play the customer's backend (tests/api/test_trust.py plays a page)
    write = services.workspaces.issue_key(ws.id, KeyKind.SERVER, label="test", now=clock.now())
    admin = services.workspaces.issue_key(ws.id, KeyKind.ADMIN, label="test", now=clock.now())
    try:
        with serving(create_app(services), port) as url:
            yield FlowEnv(url, services, clock, ws.id, write.secret, admin.secret)
    finally:
        services.close()


@pytest.fixture
def env(database_url: str) -> Iterator[FlowEnv]:
    with make_env(database_url) as e:
        yield e
