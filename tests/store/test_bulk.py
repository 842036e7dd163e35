from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, insert, select

from momently.store.bulk import Bulk, binds
from momently.store.schema import metadata, person_events


def test_rows_in_another_order_than_the_statement_binds_are_refused(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path}/b.db")
    names = ("workspace_id", "person_id", "seq")
    with pytest.raises(ValueError, match="statement binds"):
        Bulk(engine, insert(person_events).values(binds(names)), ("person_id", "workspace_id", "seq"))


def test_rows_reach_the_table_through_the_driver(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path}/b.db")
    metadata.create_all(engine, tables=[person_events])
    names = ("workspace_id", "person_id", "seq")
    bulk = Bulk(engine, insert(person_events).values(binds(names)), names)
    assert bulk.sql is not None  # SQLite: the compiled text, handed to executemany
    with engine.begin() as conn:
        bulk.run(conn, [("w", "p1", 1), ("w", "p2", 2)])
        bulk.run(conn, [])
    with engine.connect() as conn:
        assert conn.execute(select(person_events).order_by(person_events.c.seq)).all() == [
            ("w", "p1", 1),
            ("w", "p2", 2),
        ]
