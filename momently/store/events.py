"""The event log: append-only, one increasing sequence per workspace.

Everything downstream (profiles now; segments, enrollments, metrics later) is derived from
these rows and can be rebuilt by replaying them in sequence order.
"""

from __future__ import annotations

import itertools
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


# The fields of one event as the append statement unpacks them, in this order, followed by
# where its body lies in ``EncodedRows.bodies``. The workspace and the sequence number are not
# in a row: the writer adds them in SQL.
ROW_FIELDS = ("message_id", "type", "name", "user_id", "anonymous_id", "timestamp_ms", "received_ms")
_INTEGER_FIELDS = frozenset({"timestamp_ms", "received_ms"})
_BODY_AT = len(ROW_FIELDS)  # 1-based byte offset of the body, then its length in bytes


@dataclass(frozen=True, slots=True)
class EncodedRows:
    """Events in the form the append statement takes: ``fields`` is a JSON array with one
    small array per event (``ROW_FIELDS``, then the offset and length of its body), and
    ``bodies`` holds the events' JSON bodies back to back.

    Why the bodies stay out of the JSON: SQLite's JSON functions parse a row's text again
    for every column they extract, so with a ~400-byte body (escaped as a JSON string)
    inside each row, parsing took ~60% of the insert (8 µs of 13 µs an event); cutting the
    body out of a byte string costs nothing. Measured in docs/benchmarks.md."""

    fields: bytes
    bodies: bytes
    count: int

    def select(self, keep: Sequence[int]) -> EncodedRows:
        """Only the rows at ``keep`` (in that order); the bodies are left as they are."""
        rows = orjson.loads(self.fields)
        return EncodedRows(orjson.dumps([rows[i] for i in keep]), self.bodies, len(keep))


def encode_rows(batch: Sequence[Event]) -> EncodedRows:
    """Whoever holds the events builds this (a request handler, an HTTP worker process), so
    the log writer does no per-event work while it holds the write lock."""
    fields: list[list[object]] = []
    bodies: list[bytes] = []
    at = 1
    for e in batch:
        body = e.payload
        fields.append(
            [
                e.message_id,
                e.type,
                e.name,
                e.user_id,
                e.anonymous_id,
                e.timestamp_ms,
                e.received_ms,
                at,
                len(body),
            ]
        )
        bodies.append(body)
        at += len(body)
    return EncodedRows(orjson.dumps(fields), b"".join(bodies), len(fields))


class EventLog:
    def __init__(self, db: Database) -> None:
        self.db = db
        names = ", ".join(("workspace_id", "seq", *ROW_FIELDS, "body"))
        # One statement per part: rows are unpacked server-side from one JSON parameter and
        # the bodies cut out of one byte string, so the driver binds four values instead of
        # ten per row, and on SQLite it releases the GIL for the whole insert instead of
        # re-taking it for every row (which starves the API thread). Sequence numbers are the
        # part's first one plus the row's index.
        self._sqlite_insert_sql = (
            f"INSERT INTO events ({names}) SELECT ?1, ?2 + key, "
            + ", ".join(f"value ->> {i}" for i in range(len(ROW_FIELDS)))
            + f", CAST(substr(?4, value ->> {_BODY_AT}, value ->> {_BODY_AT + 1}) AS TEXT)"
            + " FROM json_each(?3)"
        )
        pg_values = ", ".join(
            f"(t.e ->> {i})::bigint" if f in _INTEGER_FIELDS else f"t.e ->> {i}"
            for i, f in enumerate(ROW_FIELDS)
        )
        pg_body = (
            f"convert_from(substring(%(bodies)s::bytea FROM (t.e ->> {_BODY_AT})::int"
            f" FOR (t.e ->> {_BODY_AT + 1})::int), 'UTF8')"
        )
        # One statement per part too: a single statement over all parts (unnest of the parts'
        # arrays, then json_array_elements of each) was measured 40% slower than one per part,
        # round trips included. The unique index turns a cross-node duplicate into no row.
        self._pg_insert_sql = (
            f"INSERT INTO events ({names}) SELECT %(ws)s, %(first)s + t.i - 1, {pg_values}, {pg_body} "
            "FROM json_array_elements(%(fields)s::json) WITH ORDINALITY AS t(e, i) "
            "ON CONFLICT (workspace_id, message_id) DO NOTHING RETURNING seq"
        )
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

    def append(self, conn: Connection, batch: Sequence[tuple[str, Event]]) -> Appended:
        """Append within the caller's write transaction. Events keep their order in ``batch``."""
        by_workspace: dict[str, list[int]] = {}
        for position, (workspace_id, _) in enumerate(batch):
            by_workspace.setdefault(workspace_id, []).append(position)
        seqs: list[int | None] = [None] * len(batch)
        for workspace_id, positions in by_workspace.items():
            rows = encode_rows([batch[p][1] for p in positions])
            appended = self.append_rows(conn, workspace_id, [rows])
            for p, seq in zip(positions, appended, strict=True):
                seqs[p] = seq
        return Appended(seqs)

    def append_rows(
        self, conn: Connection, workspace_id: str, parts: Sequence[EncodedRows]
    ) -> list[int | None]:
        """Append the rows of ``parts`` to one workspace, in order, within the caller's write
        transaction; the sequence number of each row, None for a row the database refused as
        a duplicate (PostgreSQL only, see the unique index)."""
        count = sum(part.count for part in parts)
        if count == 0:
            return []
        last = conn.execute(self._reserve, {"ws": workspace_id, "n": count}).scalar()
        if last is None:
            raise UnknownWorkspace(workspace_id)
        first = int(last) - count + 1
        notify(conn)  # an engine in another process wakes at commit (PostgreSQL)
        # One statement per part (a request's ~100 events: its fixed cost is small beside its
        # rows): each part's offsets point into its own bodies, so parts are not spliced.
        firsts = itertools.accumulate((p.count for p in parts[:-1]), initial=first)
        placed = [(part, at) for part, at in zip(parts, firsts, strict=True) if part.count]
        if self.db.dialect == "postgresql":
            stored: set[int] = set()
            for part, at in placed:
                params = {
                    "ws": workspace_id,
                    "first": at,
                    "fields": part.fields.decode(),
                    "bodies": part.bodies,
                }
                stored.update(int(r[0]) for r in conn.exec_driver_sql(self._pg_insert_sql, params))
            return [s if s in stored else None for s in range(first, first + count)]
        for part, at in placed:
            conn.exec_driver_sql(
                self._sqlite_insert_sql, (workspace_id, at, part.fields.decode(), part.bodies)
            )
        return list(range(first, first + count))

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
