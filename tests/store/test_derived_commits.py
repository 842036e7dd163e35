"""Which commits wait for the disk: events and everything primary do; the engine's batches,
which hold only state derived from the log (moved with its cursor), do not. Read from inside
each transaction, on SQLite (``PRAGMA synchronous``: 2 = FULL, 1 = NORMAL) and PostgreSQL
(``synchronous_commit``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, event

from momently import catalog
from momently.domain.definitions import load
from momently.services import Services
from momently.settings import Settings
from momently.store.database import Database
from tests.store.test_commit_watch import _event as signed_up


def _level(db: Database, conn: Connection) -> str:
    if db.is_sqlite:
        return {2: "durable", 1: "not durable"}[int(conn.exec_driver_sql("PRAGMA synchronous").scalar_one())]
    return {"on": "durable", "off": "not durable"}[
        str(conn.exec_driver_sql("SHOW synchronous_commit").scalar())
    ]


def test_a_write_is_durable_unless_asked_and_the_setting_never_leaks(database_url: str) -> None:
    db = Database(database_url)
    try:
        seen = []
        for durable in (True, False, True, False, False, True):
            with db.write(durable=durable) as conn:
                seen.append(_level(db, conn))
        # a plain write after the others: the pooled connection was switched back
        with db.write() as conn:
            seen.append(_level(db, conn))
        assert seen == [
            "durable",
            "not durable",
            "durable",
            "not durable",
            "not durable",
            "durable",
            "durable",
        ]
    finally:
        db.dispose()


def test_only_the_engine_batch_skips_the_disk_wait(database_url: str) -> None:
    s = Services.build(Settings(database_url=database_url, run_engine=False))
    # the log append, the engine's decision, the dispatcher's claim (and later its outcome)
    levels: dict[str, set[str]] = {
        "INSERT INTO events": set(),
        "INSERT INTO enrollments": set(),
        "UPDATE deliveries": set(),
    }

    def record(conn: Connection, _cursor: Any, statement: str, *_rest: Any) -> None:
        for prefix in levels:
            if statement.startswith(prefix):
                levels[prefix].add(_level(s.db, conn))  # asked in the same transaction

    try:
        s.workspaces.create("w", name="w", now=s.clock.now())
        flow = "id: hi\ntrigger: {event: Signed Up}\nchannels: [console]\nmessage: {body: 'Hi'}\n"
        docs, problems = load(flow, "f.yaml")
        assert not problems
        catalog.apply(s, "w", catalog.Loaded(docs, []))
        event.listen(s.db.engine, "before_cursor_execute", record)
        ev = signed_up(s, "ada")
        s.writer.start()  # the ingest path: the group-commit log writer
        s.writer.append_blocking("w", [ev])
        s.projector.run_until_idle()
        assert len(s.engine_state.enrollments("w")) == 1
        assert s.dispatcher.run_until_idle() == 1  # the console channel: nothing to reach
        assert levels == {
            "INSERT INTO events": {"durable"},  # the event, and the dispatcher's Message Sent
            "INSERT INTO enrollments": {"not durable"},
            "UPDATE deliveries": {"durable"},  # the claim, before anything is sent
        }
    finally:
        event.remove(s.db.engine, "before_cursor_execute", record)
        s.close()
