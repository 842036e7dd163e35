"""When the database fails, clients get a 503 that says to retry, never the database's own
error text (table names, hosts, queries); the server log has that."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import LiveServer

LEAKS = ("events", "sqlite", "psycopg", "relation", "table", "INSERT", "SELECT")


def test_a_failed_commit_is_a_503_without_database_text(
    live_server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a log table the database cannot write into any more
    sqlite = live_server.services.db.is_sqlite
    with live_server.services.db.write() as conn:
        conn.exec_driver_sql("DROP TABLE events" if sqlite else "DROP TABLE events CASCADE")
    write = (live_server.write_key, "")
    event = {"type": "track", "event": "Viewed", "userId": "pat"}
    # When SDKs send, and a page reads
    replies = [
        httpx.post(live_server.url + "/v1/track", json=event, auth=write),
        httpx.post(live_server.url + "/v1/batch", json={"batch": [event]}, auth=write),
    ]
    if sqlite:  # SQLite reports the missing table as an OperationalError, as it does a locked file
        with live_server.admin() as admin:
            replies.append(admin.get("/v1/events"))
    # Then each is a 503 to retry, and says nothing of the database
    for reply in replies:
        assert reply.status_code == 503, reply.text
        body = reply.json()
        assert body["code"] == "storage_unavailable"
        assert "retry" in body["message"]
        assert reply.headers["retry-after"] == "1"
        assert not [word for word in LEAKS if word.lower() in reply.text.lower()], reply.text
    # And the server log names the cause
    assert any("events" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
