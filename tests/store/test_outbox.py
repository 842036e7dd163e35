"""The outbox's fencing on SQLite and PostgreSQL: a claim's token guards its renewals and its
outcome, so a dispatcher whose lease was taken over changes nothing; a cap reservation is
history for everyone until the row is claimed again."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from momently.store.database import Database
from momently.store.outbox import Outbox
from momently.store.schema import deliveries


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    database.migrate()
    with database.write() as conn:
        conn.execute(
            deliveries.insert(),
            {
                "workspace_id": "acme",
                "key": "tip:p1:e1",
                "flow_id": "tip",
                "flow_version": 1,
                "person_id": "p1",
                "occurrence": "e1",
                "channels": '["webhook"]',
                "status": "pending",
                "next_attempt_ms": 0,
                "created_ms": 0,
                "updated_ms": 0,
            },
        )
    yield database
    database.dispose()


def test_a_lease_taken_over_fences_out_the_first_holder(db: Database) -> None:
    outbox = Outbox(db)
    # Given a row claimed with a 1 s lease, and claimed again by another once it lapsed
    [first] = outbox.claim(now_ms=1_000, lease_ms=1_000, limit=10)
    assert outbox.claim(now_ms=1_500, lease_ms=1_000, limit=10) == []  # still held
    [second] = outbox.claim(now_ms=2_000, lease_ms=1_000, limit=10)
    assert first.lease_token is not None
    assert second.lease_token not in (None, first.lease_token)
    # When the first holder renews and records its outcome, then the second does
    assert outbox.renew(first.lease_token, [first.id], until_ms=9_000) == set()
    with db.write() as conn:
        written = outbox.finish_all(
            conn, first.lease_token, [(first.id, {"status": "sent", "updated_ms": 5})]
        )
    assert written == set()
    [row] = outbox.list("acme")
    assert (row.status, row.lease_until_ms) == ("sending", 3_000)  # untouched
    assert second.lease_token is not None
    assert outbox.renew(second.lease_token, [second.id], until_ms=4_000) == {second.id}
    with db.write() as conn:
        written = outbox.finish_all(
            conn,
            second.lease_token,
            [(second.id, {"status": "sent", "updated_ms": 6, "lease_until_ms": None})],
        )
    # Then only the second holder's outcome is recorded
    assert written == {second.id}
    [row] = outbox.list("acme")
    assert (row.status, row.updated_ms, row.attempts) == ("sent", 6, 2)


def test_a_reservation_counts_as_history_until_the_row_is_claimed_again(db: Database) -> None:
    outbox = Outbox(db)
    [claimed] = outbox.claim(now_ms=1_000, lease_ms=1_000, limit=10)
    assert claimed.lease_token is not None
    with db.write() as conn:
        outbox.lock_people(conn, "acme", ["p1"])
        outbox.reserve(conn, claimed.lease_token, [claimed.id], at_ms=1_200)
    with db.read() as conn:
        [past] = outbox.sent_since(conn, "acme", ["p1"], since_ms=0)
    assert (past.status, past.reserved_ms) == ("sending", 1_200)
    outbox.claim(now_ms=2_000, lease_ms=1_000, limit=10)  # its holder stalled: checked again
    with db.read() as conn:
        assert outbox.sent_since(conn, "acme", ["p1"], since_ms=0) == []
