"""The event log: append-only, one increasing sequence per workspace.

Everything downstream (profiles now; segments, enrollments, metrics later) is derived from
these rows and can be rebuilt by replaying them in sequence order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, Select, bindparam, func, select, update

from momently.domain.event import Event
from momently.domain.profile import LoggedEvent
from momently.store.commit_watch import notify
from momently.store.database import Database
from momently.store.schema import events, workspaces


class UnknownWorkspace(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class Appended:
    """What one append stored: the sequence number given to each event, None for an event
    the database refused as a duplicate (PostgreSQL only, see the unique index)."""

    seqs: list[int | None]


class EventLog:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._column_names = [str(c.name) for c in events.columns]  # plain str: orjson keys
        self._pg_insert_sql = (
            "INSERT INTO events SELECT * FROM json_populate_recordset(NULL::events, %s) "
            "ON CONFLICT (workspace_id, message_id) DO NOTHING RETURNING seq"
        )
        columns = [c.name for c in events.columns]
        # built once: the engine reads and the log writer appends many times a second
        self._read_in = (
            _select_logged()
            .where(events.c.workspace_id == bindparam("ws"), events.c.seq > bindparam("after"))
            .order_by(events.c.seq)
            .limit(bindparam("limit"))
        )
        self._by_seqs = (
            _select_logged()
            .where(
                events.c.workspace_id == bindparam("ws"), events.c.seq.in_(bindparam("seqs", expanding=True))
            )
            .order_by(events.c.seq.desc())
        )
        self._reserve = (
            update(workspaces)
            .where(workspaces.c.id == bindparam("ws"))
            .values(last_seq=workspaces.c.last_seq + bindparam("n"))
            .returning(workspaces.c.last_seq)
        )
        self._sqlite_insert_sql = (
            f"INSERT INTO events ({', '.join(columns)}) "
            f"SELECT {', '.join(f'value ->> {i}' for i in range(len(columns)))} FROM json_each(?)"
        )

    def append(self, conn: Connection, batch: Sequence[tuple[str, Event]]) -> Appended:
        """Append within the caller's write transaction. Events keep their order in ``batch``."""
        counts: dict[str, int] = {}
        for workspace_id, _ in batch:
            counts[workspace_id] = counts.get(workspace_id, 0) + 1
        next_seq: dict[str, int] = {}
        for workspace_id, n in counts.items():
            last = conn.execute(self._reserve, {"ws": workspace_id, "n": n}).scalar()
            if last is None:
                raise UnknownWorkspace(workspace_id)
            next_seq[workspace_id] = int(last) - n + 1
        seqs: list[int | None] = []
        rows: list[tuple[object, ...]] = []
        for workspace_id, ev in batch:
            seq = next_seq[workspace_id]
            next_seq[workspace_id] = seq + 1
            seqs.append(seq)
            rows.append(
                (
                    workspace_id,
                    seq,
                    ev.message_id,
                    ev.type,
                    ev.name,
                    ev.user_id,
                    ev.anonymous_id,
                    ev.timestamp_ms,
                    ev.received_ms,
                    ev.payload.decode(),
                )
            )
        if not rows:
            return Appended([])
        notify(conn)  # an engine in another process wakes at commit (PostgreSQL)
        if self.db.dialect == "postgresql":
            # Same idea as on SQLite below: one statement, rows unpacked server-side from one
            # JSON parameter; the unique index turns a cross-node duplicate into no row.
            names = self._column_names
            doc = orjson.dumps([dict(zip(names, r, strict=True)) for r in rows]).decode()
            stored = {int(r[0]) for r in conn.exec_driver_sql(self._pg_insert_sql, (doc,))}
            return Appended([s if s in stored else None for s in seqs])
        # The whole group goes to SQLite as one JSON parameter and is unpacked by json_each
        # inside one statement: the driver then releases the GIL for the entire insert instead
        # of re-taking it to bind every row, which is what starves the API thread otherwise.
        conn.exec_driver_sql(self._sqlite_insert_sql, (orjson.dumps(rows).decode(),))
        return Appended(seqs)

    def read(self, workspace_id: str, *, after_seq: int, limit: int) -> list[LoggedEvent]:
        with self.db.read() as conn:
            return self.read_in(conn, workspace_id, after_seq=after_seq, limit=limit)

    def read_in(
        self, conn: Connection, workspace_id: str, *, after_seq: int, limit: int
    ) -> list[LoggedEvent]:
        rows = conn.execute(self._read_in, {"ws": workspace_id, "after": after_seq, "limit": limit}).all()
        return [_logged(r) for r in rows]

    def by_seqs(self, workspace_id: str, seqs: Sequence[int]) -> list[LoggedEvent]:
        if not seqs:
            return []
        with self.db.read() as conn:
            rows = conn.execute(self._by_seqs, {"ws": workspace_id, "seqs": list(seqs)}).all()
        return [_logged(r) for r in rows]

    def tail(self, workspace_id: str, *, limit: int) -> list[LoggedEvent]:
        """The newest ``limit`` events, oldest first."""
        with self.db.read() as conn:
            rows = conn.execute(
                _select_logged()
                .where(events.c.workspace_id == workspace_id)
                .order_by(events.c.seq.desc())
                .limit(limit)
            ).all()
        return [_logged(r) for r in reversed(rows)]

    def count(self, workspace_id: str) -> int:
        with self.db.read() as conn:
            return int(
                conn.execute(
                    select(func.count()).select_from(events).where(events.c.workspace_id == workspace_id)
                ).scalar_one()
            )

    def recent_message_ids(self, conn: Connection, *, since_ms: int) -> Iterator[tuple[str, str, int]]:
        """(workspace, messageId, received_ms) of events received since ``since_ms``."""
        result = conn.execution_options(stream_results=True, yield_per=50_000).execute(
            select(events.c.workspace_id, events.c.message_id, events.c.received_ms).where(
                events.c.received_ms >= since_ms
            )
        )
        for row in result:
            yield str(row[0]), str(row[1]), int(row[2])

    # SQLite only: the physical append order, so a writer process can see what other writer
    # processes appended since it last looked (rowids only grow: rows are never updated).
    def position(self, conn: Connection) -> int:
        return int(conn.exec_driver_sql("SELECT coalesce(max(rowid), 0) FROM events").scalar_one())

    def appended_after(self, conn: Connection, position: int) -> list[tuple[int, str, str, int]]:
        """(rowid, workspace, messageId, received_ms) of rows appended after ``position``."""
        rows = conn.exec_driver_sql(
            "SELECT rowid, workspace_id, message_id, received_ms FROM events WHERE rowid > ? ORDER BY rowid",
            (position,),
        ).all()
        return [(int(r[0]), str(r[1]), str(r[2]), int(r[3])) for r in rows]


def _select_logged() -> Select[Any]:
    """The columns ``_logged`` turns into a ``LoggedEvent``."""
    return select(
        events.c.seq,
        events.c.type,
        events.c.name,
        events.c.user_id,
        events.c.anonymous_id,
        events.c.timestamp_ms,
        events.c.body,
        events.c.received_ms,
    )


def _logged(row: Sequence[object]) -> LoggedEvent:
    seq, type_, name, user_id, anonymous_id, ts, body, received = row
    return LoggedEvent(
        seq=int(seq),  # type: ignore[call-overload]
        type=str(type_),
        name=name if isinstance(name, str) else None,
        user_id=user_id if isinstance(user_id, str) else None,
        anonymous_id=anonymous_id if isinstance(anonymous_id, str) else None,
        timestamp_ms=int(ts),  # type: ignore[call-overload]
        body=orjson.loads(body),  # type: ignore[arg-type]
        received_ms=int(received),  # type: ignore[call-overload]
    )
