from __future__ import annotations

import logging

import pytest

from momently.services import Services
from momently.settings import Settings
from momently.store.database import Database


def test_start_up_warns_when_postgresql_runs_without_autovacuum(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    db = Database(database_url)
    if db.is_sqlite:
        expected = False  # SQLite keeps no statistics Momently relies on
    else:
        with db.engine.connect() as conn:
            expected = conn.exec_driver_sql("SHOW autovacuum").scalar() == "off"
    db.dispose()
    with caplog.at_level(logging.WARNING, logger="momently.services"):
        Services.build(Settings(database_url=database_url, run_engine=False)).close()
    warned = [r.getMessage() for r in caplog.records if "autovacuum is off" in r.getMessage()]
    assert bool(warned) == expected
    if warned:
        assert "run ANALYZE" in warned[0]
