"""The keyed consent ledger on SQLite and PostgreSQL: someone who can write to the database but
lacks the ledger key rewrites a revoke as a grant and recomputes the chain; the record fails
verification and the dispatcher does not obey it. Plus the key's home, the head export for
anchoring, and re-chaining records from before the ledger was keyed."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import ValidationError
from sqlalchemy import select, update

from momently.cli import main
from momently.domain.consent import GENESIS, Grant, chain_hash
from momently.services import Services
from momently.settings import Settings
from momently.store.ledger_key import LedgerKeyError
from momently.store.schema import consent_records
from tests.flows.conftest import FlowEnv
from tests.flows.test_dispatch_e2e import TIP, dispatch, used
from tests.webhook_receiver import Receiver, webhook_env


@pytest.fixture
def env(database_url: str, receiver: Receiver) -> Iterator[FlowEnv]:
    with webhook_env(database_url, receiver) as e:
        with e.admin() as c:
            assert c.put("/v1/consent/policy", json={"optIn": {"marketing": ["webhook"]}}).status_code == 200
        yield e


def consent(env: FlowEnv, granted: bool) -> None:
    body = {"userId": "ada", "channel": "webhook", "purpose": "marketing", "granted": granted}
    with env.admin() as c:
        assert c.post("/v1/consent", json=body).status_code == 200


def rewrite_unkeyed(env: FlowEnv, *, granted: dict[int, bool] | None = None, legacy: bool = False) -> None:
    """What a database writer without the key can do: change rows and recompute every hash
    the way an unkeyed chain is computed, so the chain is consistent again."""
    with env.services.db.write() as conn:
        rows = conn.execute(
            select(consent_records)
            .where(consent_records.c.workspace_id == env.workspace)
            .order_by(consent_records.c.seq)
        ).all()
        prev = GENESIS
        for r in rows:
            m = r._mapping
            value = (granted or {}).get(m["seq"], bool(m["granted"]))
            grant = Grant(
                m["user_id"], m["anonymous_id"], m["channel"], m["purpose"], value, m["source"], m["at_ms"],
                m["expires_ms"], m["note"], m["ref"], None if legacy else m["key_id"],
            )  # fmt: skip
            h = chain_hash(prev, m["seq"], env.workspace, grant)
            values = {"granted": int(value), "prev_hash": prev, "hash": h}
            if legacy:
                values.update(key_id=None, chain=None)
            conn.execute(
                update(consent_records)
                .where(consent_records.c.workspace_id == env.workspace, consent_records.c.seq == m["seq"])
                .values(**values)
            )
            prev = h


def statuses(env: FlowEnv) -> list[tuple[str, str | None]]:
    return [(d.status, d.last_error) for d in reversed(env.services.outbox.list(env.workspace))]


def test_a_revoke_rewritten_as_a_grant_is_not_obeyed(env: FlowEnv, receiver: Receiver) -> None:
    env.flow("tip", TIP % "[webhook]")
    consent(env, True)
    used(env)  # decided while ada agreed: queued
    consent(env, False)  # then she withdraws (record 2)
    # When someone with database access turns the revoke back into a grant, hashes recomputed
    rewrite_unkeyed(env, granted={2: True})
    dispatch(env)
    # Then nothing is sent: the record does not verify under the key, so nothing is assumed
    assert receiver.received == []
    assert statuses(env) == [("suppressed", "consent_unverified: webhook/marketing")]
    with env.admin() as c:
        report = c.get("/v1/consent/verify").json()
        current = c.get("/v1/consent", params={"userId": "ada"}).json()
    assert report["ok"] is False
    assert [r["verified"] for r in current["records"]] == [False, False]
    assert current["current"]["email"]["transactional"]["reason"] == "consent_unverified"


def test_head_export_and_rekey_of_records_from_before_the_key(
    env: FlowEnv, receiver: Receiver, database_url: str
) -> None:
    env.flow("tip", TIP % "[webhook]")
    consent(env, True)
    with env.admin() as c:
        head = c.get("/v1/consent/head").json()
    with env.services.db.read() as conn:
        last = conn.execute(select(consent_records.c.hash).where(consent_records.c.seq == 1)).scalar()
    assert head == {"workspace": "acme", "seq": 1, "mac": last}
    runner = CliRunner()
    out = runner.invoke(main, ["--database-url", database_url, "consent", "head", "--workspace", "acme"])
    assert out.output.strip() == f"acme\t1\t{last}"

    # Given records as an install before the keyed ledger wrote them (plain SHA-256 chain)
    rewrite_unkeyed(env, legacy=True)
    used(env)
    dispatch(env)
    assert statuses(env) == [("suppressed", "consent_unverified: webhook/marketing")]
    # When the operator re-chains them under the key, they are obeyed again
    done = runner.invoke(main, ["--database-url", database_url, "consent", "rekey", "--workspace", "acme"])
    assert done.exit_code == 0, done.output
    assert "1 records re-chained" in done.output
    used(env)
    dispatch(env)
    assert statuses(env)[-1] == ("sent", None)
    with env.admin() as c:
        assert c.get("/v1/consent/verify").json()["ok"] is True

    # A legacy chain that does not verify is not re-chained unless the operator vouches for it
    rewrite_unkeyed(env, legacy=True)
    with env.services.db.write() as conn:
        conn.execute(update(consent_records).values(granted=0))
    bad = runner.invoke(main, ["--database-url", database_url, "consent", "rekey", "--workspace", "acme"])
    assert bad.exit_code == 1
    assert "record 1: content does not match its hash" in bad.output
    forced = ["consent", "rekey", "--workspace", "acme", "--accept-breaks"]
    assert runner.invoke(main, ["--database-url", database_url, *forced]).exit_code == 0


def test_the_ledger_key_lives_outside_the_database(tmp_path: Path, database_url: str) -> None:
    if database_url.startswith("postgresql"):
        with pytest.raises(LedgerKeyError, match="MOMENTLY_LEDGER_KEY"):
            Services.build(Settings(database_url=database_url, ledger_key=None))
        return
    settings = Settings(database_url=database_url, ledger_key=None)
    first = Services.build(settings)
    key_file = Path(f"{first.db.sqlite_path}.ledger-key")
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert first.consent.key == key_file.read_bytes().strip()
    first.close()
    again = Services.build(settings)
    assert again.consent.key == key_file.read_bytes().strip()  # the same key on every start
    again.close()
    with pytest.raises(ValidationError, match="at least 32"):  # refused with the other settings
        Settings(database_url=database_url, ledger_key="short")
