"""The consent ledger through the HTTP API, on SQLite and PostgreSQL: the policy, grants with
expiry, identify traits, stop-contact racing a queued send, and tamper detection."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import update

from momently.cli import main
from momently.store.schema import consent_records
from tests.flows.conftest import FlowEnv
from tests.flows.test_dispatch_e2e import TIP, dispatch, log_of, used
from tests.webhook_receiver import Receiver, webhook_env


@pytest.fixture
def env(database_url: str, receiver: Receiver, tmp_path: Path) -> Iterator[FlowEnv]:
    with webhook_env(
        database_url,
        receiver,
        console_path=str(tmp_path / "console.jsonl"),
    ) as e:
        with e.admin() as c:  # marketing on the webhook channel needs an opt-in here
            r = c.put("/v1/consent/policy", json={"optIn": {"marketing": ["webhook", "email"]}})
            assert r.status_code == 200, r.text
        yield e


def consent_call(env: FlowEnv, path: str, body: dict[str, Any]) -> dict[str, Any]:
    with env.admin() as c:
        r = c.post(path, json=body)
    assert r.status_code == 200, r.text
    return dict(r.json())


def statuses(env: FlowEnv) -> list[tuple[str, str | None]]:
    return [(d.status, d.last_error) for d in reversed(env.services.outbox.list(env.workspace))]


def test_no_opt_in_suppresses_with_a_reason_then_a_grant_lets_it_through(
    env: FlowEnv, receiver: Receiver
) -> None:
    env.flow("tip", TIP % "[webhook]")
    used(env)
    dispatch(env)
    assert receiver.received == []
    assert statuses(env) == [("suppressed", "no_consent: webhook/marketing")]
    [suppressed] = log_of(env, "Message Suppressed")
    assert suppressed["reason"] == "no_consent"

    consent_call(
        env, "/v1/consent", {"userId": "ada", "channel": "webhook", "purpose": "marketing", "granted": True}
    )
    used(env)
    dispatch(env)
    assert len(receiver.received) == 1
    assert statuses(env)[-1] == ("sent", None)


def test_a_lapsed_grant_suppresses_with_consent_expired(env: FlowEnv, receiver: Receiver) -> None:
    env.flow("tip", TIP % "[webhook]")
    body = {"userId": "ada", "channel": "*", "purpose": "marketing", "granted": True, "expiresIn": "1h"}
    [record] = consent_call(env, "/v1/consent", body)["records"]
    assert record["expiresAt"] == "2026-11-02T09:00:00.000Z"
    env.advance(hours=2)
    used(env)
    dispatch(env)
    assert statuses(env) == [("suppressed", "consent_expired: webhook/marketing")]


def test_stop_contact_stops_a_message_already_queued_but_not_a_transactional_one(
    env: FlowEnv, receiver: Receiver
) -> None:
    env.flow("tip", TIP % "[webhook]")
    env.flow("receipt", (TIP % "[webhook]").replace("id: tip", "id: receipt\ntier: A"))
    consent_call(
        env, "/v1/consent", {"userId": "ada", "channel": "webhook", "purpose": "marketing", "granted": True}
    )
    used(env)  # both flows decide to send; the messages wait in the outbox
    assert [d.status for d in env.services.outbox.list(env.workspace)] == ["pending", "pending"]
    stopped = consent_call(env, "/v1/consent/stop", {"userId": "ada"})
    assert {(r["channel"], r["purpose"], r["granted"]) for r in stopped["records"]} == {
        ("*", "marketing", False),
        ("*", "personalisation", False),
    }
    dispatch(env)
    by_flow = {d.flow_id: (d.status, d.last_error) for d in env.services.outbox.list(env.workspace)}
    assert by_flow == {"tip": ("suppressed", "stop_contact: webhook/marketing"), "receipt": ("sent", None)}
    assert [m["flow"] for m in receiver.received] == ["receipt"]

    consent_call(env, "/v1/consent/stop", {"userId": "ada", "includeTransactional": True})
    used(env)
    dispatch(env)
    assert [m["flow"] for m in receiver.received] == ["receipt"]  # nothing more


def test_identify_traits_become_ledger_records_once(env: FlowEnv) -> None:
    env.send({"type": "identify", "userId": "ada", "anonymousId": "a-1", "traits": {"email_opt_in": True}})
    env.send({"type": "identify", "userId": "ada", "traits": {"email_opt_in": True}})  # no change: no record
    with env.admin() as c:
        got = c.get("/v1/consent", params={"userId": "ada"}).json()
    assert [(r["channel"], r["purpose"], r["granted"], r["source"]) for r in got["records"]] == [
        ("email", "marketing", True, "identify")
    ]
    assert got["current"]["email"]["marketing"] == {"allowed": True, "reason": None, "record": 1}
    assert got["current"]["webhook"]["marketing"]["reason"] == "no_consent"  # opt-in per this policy
    assert got["current"]["sms"]["marketing"]["allowed"]  # no opt-in needed here
    env.send({"type": "identify", "userId": "ada", "traits": {"email_opt_in": False}})
    env.services.projector.replay(env.workspace)  # replaying the log adds nothing
    with env.admin() as c:
        got = c.get("/v1/consent", params={"anonymousId": "a-1"}).json()
    assert [r["granted"] for r in got["records"]] == [True, False]
    assert got["current"]["email"]["marketing"]["reason"] == "consent_revoked"


def test_bad_requests_get_clear_errors(env: FlowEnv) -> None:
    with env.admin() as c:
        r = c.post("/v1/consent", json={"channel": "email", "purpose": "marketing", "granted": True})
        assert r.status_code == 400
        assert r.json()["code"] == "invalid_request"
        r = c.post(
            "/v1/consent", json={"userId": "a", "channel": "fax", "purpose": "marketing", "granted": True}
        )
        assert r.status_code == 400
        r = c.post(
            "/v1/consent",
            json={
                "userId": "a",
                "channel": "email",
                "purpose": "marketing",
                "granted": True,
                "expiresIn": "soon",
            },
        )
        assert r.status_code == 400
        assert r.json()["code"] == "invalid_expiry"
        r = c.put("/v1/consent/policy", json={"optIn": {"marketing": ["fax"]}})
        assert r.status_code == 400
        assert "fax" in r.json()["message"]
        assert c.get("/v1/consent").json()["code"] == "no_user_anon_id"


def test_verify_detects_an_edited_row(env: FlowEnv, database_url: str) -> None:
    for ch in ("email", "sms", "push"):
        consent_call(
            env, "/v1/consent", {"userId": "ada", "channel": ch, "purpose": "marketing", "granted": True}
        )
    with env.admin() as c:
        assert c.get("/v1/consent/verify").json() == {"records": 3, "ok": True, "breaks": []}
    runner = CliRunner()
    ok = runner.invoke(main, ["--database-url", database_url, "consent", "verify", "--workspace", "acme"])
    assert ok.exit_code == 0
    assert "3 records, chain intact" in ok.output
    with env.services.db.write() as conn:  # someone quietly turns a revoke into a grant
        conn.execute(update(consent_records).where(consent_records.c.seq == 2).values(granted=0))
    with env.admin() as c:
        report = c.get("/v1/consent/verify").json()
    assert report["ok"] is False
    assert [b["seq"] for b in report["breaks"]] == [2]
    bad = runner.invoke(main, ["--database-url", database_url, "consent", "verify", "--workspace", "acme"])
    assert bad.exit_code == 1
    assert "record 2: content does not match its hash" in bad.output
