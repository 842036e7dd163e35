"""Data rights through the HTTP API on SQLite and PostgreSQL: export, erase (then late events
do not bring the person back unless they opt in again), and event retention."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.flows.conftest import FlowEnv
from tests.flows.test_dispatch_e2e import TIP, dispatch
from tests.webhook_receiver import Receiver, webhook_env


@pytest.fixture
def env(database_url: str, receiver: Receiver, tmp_path: Path) -> Iterator[FlowEnv]:
    with webhook_env(database_url, receiver) as e:
        yield e


def ada_uses_the_product(env: FlowEnv) -> None:
    env.flow("tip", TIP % "[webhook]")
    env.send(
        {
            "type": "identify",
            "userId": "ada",
            "anonymousId": "a-1",
            "traits": {"email": "ada@example.com", "email_opt_in": True},
        },
        {"type": "track", "userId": "ada", "event": "Feature Used", "properties": {"feature": "export"}},
        {"type": "track", "userId": "bob", "event": "Feature Used", "properties": {"feature": "share"}},
    )
    dispatch(env)
    env.settle()  # the dispatcher's Message events, folded in too


def log_users(env: FlowEnv) -> list[Any]:
    return [e.user_id for e in env.services.events.read(env.workspace, after_seq=0, limit=10_000)]


def test_export_has_everything_about_the_person(env: FlowEnv) -> None:
    ada_uses_the_product(env)
    with env.admin() as c:
        got = c.get("/v1/people/ada/export").json()
        assert c.get("/v1/people/nobody/export").status_code == 404
    assert got["profile"]["userId"] == "ada"
    assert {"kind": "anon", "value": "a-1"} in got["identities"]
    names = [e.get("event") for e in got["events"]]
    assert "Feature Used" in names
    assert "Message Sent" in names
    assert all(e.get("userId") == "ada" for e in got["events"])  # nobody else's
    assert [(r["channel"], r["granted"]) for r in got["consent"]] == [("email", True)]
    assert [d["flow_id"] for d in got["deliveries"]] == ["tip"]


def test_erase_then_late_events_do_not_recreate_the_person_until_they_opt_in(env: FlowEnv) -> None:
    ada_uses_the_product(env)
    with env.admin() as c:
        r = c.delete("/v1/people/ada")
        assert r.status_code == 200
        deleted = r.json()["deleted"]
        assert deleted["events"] >= 3
        assert deleted["profiles"] == 1
        assert deleted["deliveries"] == 1
        assert c.get("/v1/profiles/ada").status_code == 404
        assert "ada" not in log_users(env)
        assert "bob" in log_users(env)  # nobody else is touched
        ledger = c.get("/v1/consent", params={"userId": "ada"}).json()["records"]
        assert [r["source"] for r in ledger] == ["identify", "erasure"]  # the erasure is on record
        assert c.get("/v1/consent/verify").json()["ok"] is True

        env.send({"type": "track", "userId": "ada", "event": "Feature Used", "properties": {"feature": "x"}})
        env.send({"type": "page", "anonymousId": "a-1", "name": "Home"})
        assert c.get("/v1/profiles/ada").status_code == 404
        assert c.get("/v1/profiles/a-1", params={"by": "anonymousId"}).status_code == 404
        assert "ada" not in log_users(env)  # the late events were dropped from the log

        env.send({"type": "identify", "userId": "ada", "traits": {"email_opt_in": True}})
        assert c.get("/v1/profiles/ada").status_code == 200  # back, because they agreed again


def test_erase_wins_over_events_the_engine_has_not_reached(env: FlowEnv) -> None:
    ada_uses_the_product(env)
    with httpx.Client(base_url=env.url, auth=(env.write_key, "")) as c:  # stored, not yet folded in
        assert c.post("/v1/track", json={"userId": "ada", "event": "Late"}).status_code == 200
    with env.admin() as c:
        assert c.delete("/v1/people/ada").json()["deleted"]["events"] >= 4
    env.settle()
    with env.admin() as c:
        assert c.get("/v1/profiles/ada").status_code == 404
    assert "ada" not in log_users(env)


def test_retention_deletes_old_events_and_keeps_profiles(env: FlowEnv) -> None:
    ada_uses_the_product(env)
    old = len(log_users(env))
    env.advance(days=40)
    env.send({"type": "track", "userId": "ada", "event": "Feature Used", "properties": {"feature": "y"}})
    with env.admin() as c:
        assert c.put("/v1/retention", json={"days": 30}).json() == {"days": 30}
        assert c.put("/v1/retention", json={"days": 0}).status_code == 400
    deleted = env.services.people.apply_retention(now_ms=int(env.clock.now().timestamp() * 1000))
    assert deleted == {"acme": old}
    assert len(log_users(env)) >= 1
    with env.admin() as c:
        profile = c.get("/v1/profiles/ada").json()
        recent = c.get("/v1/profiles/ada/events").json()["events"]
    assert profile["eventCounts"]["Feature Used"] == 2  # aggregates survive
    assert [e["event"] for e in recent if e.get("event") == "Feature Used"] == ["Feature Used"]


def test_the_cli_exports_erases_and_sets_retention(env: FlowEnv, database_url: str, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from momently.cli import main

    ada_uses_the_product(env)
    run = CliRunner().invoke
    base = ["--database-url", database_url]
    out = tmp_path / "ada.json"
    r = run(main, [*base, "people", "export", "ada", "--workspace", "acme", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert '"userId": "ada"' in out.read_text()
    r = run(main, [*base, "people", "erase", "ada", "--workspace", "acme"], input="n\n")
    assert r.exit_code == 1  # asked, and said no
    r = run(main, [*base, "people", "erase", "ada", "--workspace", "acme", "--yes"])
    assert r.exit_code == 0, r.output
    assert "ada erased from acme" in r.output
    assert run(main, [*base, "people", "export", "ada", "--workspace", "acme"]).exit_code == 1
    assert run(main, [*base, "retention", "set", "0", "--workspace", "acme"]).exit_code == 2
    r = run(main, [*base, "retention", "set", "90", "--workspace", "acme"])
    assert "events kept 90 days" in r.output
    r = run(main, [*base, "guardrails", "pause", "--workspace", "acme", "--channel", "sms"])
    assert r.exit_code == 0, r.output
    assert env.services.guardrails.get("acme", fresh=True).paused_channels == frozenset({"sms"})
