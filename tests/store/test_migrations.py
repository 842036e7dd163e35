from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from momently.store.database import Database
from momently.store.schema import metadata


def test_migrations_produce_the_declared_schema(database_url: str) -> None:
    db = Database(database_url)
    db.migrate()
    db.migrate()  # idempotent
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    # the PostgreSQL-only unique index on message ids is deliberate (see migration 0001)
    diff = [d for d in diff if not (d[0] == "remove_index" and d[1].name == "ux_events_message_id")]
    assert diff == []
    db.dispose()
