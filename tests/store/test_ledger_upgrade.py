"""Upgrading a database from before the keyed consent ledger: the start that migrates it
re-chains an intact old ledger under the key, so consent keeps being obeyed; a broken one is
left for the operator; unkeyed rows that appear later are never blessed by a restart."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert

from momently.domain.consent import GENESIS, Grant, chain_hash
from momently.services import KEYED_LEDGER_REVISION, Services
from momently.settings import Settings
from momently.store.database import Database
from momently.store.schema import consent_records

KEY = "k" * 40
BEFORE_KEYED = f"{int(KEYED_LEDGER_REVISION) - 1:04d}"


def legacy_rows(workspace_id: str, seqs: range, *, prev: str = GENESIS, edit: int | None = None) -> list[Any]:
    """Rows as an install before the keyed ledger wrote them (plain SHA-256 chain, no chain
    marker); ``edit`` flips one grant after its hash was made."""
    rows = []
    for seq in seqs:
        grant = Grant("ada", None, "email", "marketing", True, "api", 1_000 * seq, None, None, None, None)
        digest = chain_hash(prev, seq, workspace_id, grant)
        rows.append(
            {
                "workspace_id": workspace_id, "seq": seq, "user_id": "ada", "anonymous_id": None,
                "channel": "email", "purpose": "marketing", "granted": 0 if seq == edit else 1,
                "source": "api", "at_ms": 1_000 * seq, "expires_ms": None, "note": None, "ref": None,
                "prev_hash": prev, "hash": digest,
            }
        )  # fmt: skip
        prev = digest
    return rows


def write(database_url: str, rows: list[Any]) -> None:
    db = Database(database_url)
    try:
        with db.write() as conn:
            conn.execute(insert(consent_records), rows)
    finally:
        db.dispose()


def test_the_upgrading_start_re_chains_an_intact_ledger_and_only_that_start(database_url: str) -> None:
    # Given a database from before the keyed ledger, with one intact ledger and one edited
    db = Database(database_url)
    db.migrate(BEFORE_KEYED)
    db.dispose()
    intact = legacy_rows("good", range(1, 3))
    write(database_url, [*intact, *legacy_rows("bad", range(1, 3), edit=2)])
    settings = Settings(database_url=database_url, ledger_key=KEY)

    # When the new version starts on it
    services = Services.build(settings)
    try:
        # Then the intact ledger is keyed and obeyed; the edited one is left unkeyed, not obeyed
        assert services.db.revision() != BEFORE_KEYED
        assert services.consent.verify("good").ok
        assert verified(services, "good") == [True, True]
        assert not services.consent.verify("bad").ok
        assert verified(services, "bad") == [False, False]
    finally:
        services.close()

    # Given an unkeyed row slipped in later by someone without the key
    forged = legacy_rows("good", range(3, 4), prev=services_head(settings))
    write(database_url, forged)
    # When the server starts again, it is not re-chained
    again = Services.build(settings)
    try:
        assert not again.consent.verify("good").ok
        assert verified(again, "good") == [True, True, False]
    finally:
        again.close()


def services_head(settings: Settings) -> str:
    s = Services.build(settings)
    try:
        return s.consent.head("good")[1]
    finally:
        s.close()


def verified(services: Services, workspace_id: str) -> list[bool]:
    with services.db.read() as conn:
        records = services.consent.history(conn, workspace_id, user_ids=["ada"], anonymous_ids=[])
    return [r.verified for r in records]
