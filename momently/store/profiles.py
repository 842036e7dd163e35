"""Profiles, identities, the person -> events index and consumer cursors.

All of it is derived from the event log by ``engine.profile_projector`` and can be dropped
and rebuilt with ``momently replay``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
from sqlalchemy import Connection, bindparam, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from momently.domain.identity import Identity
from momently.domain.profile import Profile
from momently.store.bulk import Bulk, binds
from momently.store.database import Database
from momently.store.schema import (
    cursors,
    experiment_exposures,
    identities,
    person_events,
    profiles,
    workspaces,
)

_CHUNK = 500  # keeps IN lists under every driver's parameter limit
EPOCH = "profiles:epoch"  # a cursors row: see bump_epoch


class CursorMoved(RuntimeError):
    """Another consumer advanced the cursor first; this batch must be recomputed."""


class ProfileStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._dialect_insert = postgresql.insert if db.dialect == "postgresql" else sqlite.insert
        # The engine runs these on every batch: built once, they skip SQLAlchemy's statement
        # construction and cache-key work (~70 µs a statement, a tenth of a small live batch).
        self._cursor = select(cursors.c.seq).where(
            cursors.c.consumer == bindparam("consumer"), cursors.c.workspace_id == bindparam("ws")
        )
        self._advance = (
            update(cursors)
            .where(
                cursors.c.consumer == bindparam("who"),  # not "consumer": a column of the UPDATE
                cursors.c.workspace_id == bindparam("ws"),
                cursors.c.seq == bindparam("old"),
            )
            .values(seq=bindparam("new"))
            .returning(cursors.c.seq)
        )
        self._backlog = (
            select(workspaces.c.id, cursors.c.seq, workspaces.c.last_seq)
            .select_from(
                workspaces.outerjoin(
                    cursors,
                    (cursors.c.workspace_id == workspaces.c.id)
                    & (cursors.c.consumer == bindparam("consumer")),
                )
            )
            .order_by(workspaces.c.id)
        )
        self._identities = select(identities.c.value, identities.c.person_id).where(
            identities.c.workspace_id == bindparam("ws"),
            identities.c.kind == bindparam("kind"),
            identities.c.value.in_(bindparam("values", expanding=True)),
        )
        self._load = select(profiles).where(
            profiles.c.workspace_id == bindparam("ws"),
            profiles.c.person_id.in_(bindparam("ids", expanding=True)),
        )
        link_names = ("workspace_id", "kind", "value", "person_id")
        link = self._dialect_insert(identities).values(binds(link_names))
        self._link = Bulk(
            db.engine,
            link.on_conflict_do_update(
                index_elements=["workspace_id", "kind", "value"], set_={"person_id": link.excluded.person_id}
            ),
            link_names,
        )
        upsert = self._dialect_insert(profiles).values(binds(PROFILE_COLUMNS))
        self._upsert = Bulk(
            db.engine,
            upsert.on_conflict_do_update(
                index_elements=["workspace_id", "person_id"],
                set_={c: upsert.excluded[c] for c in PROFILE_COLUMNS[2:]},
            ),
            PROFILE_COLUMNS,
        )
        event_names = ("workspace_id", "person_id", "seq")
        bump = self._dialect_insert(cursors).values(consumer=EPOCH, workspace_id=bindparam("ws"), seq=1)
        self._bump = bump.on_conflict_do_update(
            index_elements=["consumer", "workspace_id"], set_={"seq": cursors.c.seq + 1}
        ).returning(cursors.c.seq)
        self._person_events = Bulk(db.engine, insert(person_events).values(binds(event_names)), event_names)

    # cursors -------------------------------------------------------------------------
    def cursor(self, conn: Connection, consumer: str, workspace_id: str) -> int:
        value = conn.execute(self._cursor, {"consumer": consumer, "ws": workspace_id}).scalar()
        return int(value or 0)

    def advance_cursor(
        self, conn: Connection, consumer: str, workspace_id: str, *, old: int, new: int
    ) -> None:
        """Compare-and-set, so two projectors can never both apply the same events."""
        # RETURNING rather than rowcount: psycopg reports -1 for some statements.
        moved = conn.execute(
            self._advance, {"who": consumer, "ws": workspace_id, "old": old, "new": new}
        ).first()
        if moved is not None:
            return
        if old == 0:
            created = conn.execute(
                self._dialect_insert(cursors)
                .values(consumer=consumer, workspace_id=workspace_id, seq=new)
                .on_conflict_do_nothing()
                .returning(cursors.c.seq)
            ).first()
            if created is not None:
                return
        raise CursorMoved(f"{consumer} cursor for {workspace_id} moved past {old}")

    def epoch(self, conn: Connection, workspace_id: str) -> int:
        """How many times the workspace's people's derived state was written (see
        ``engine.person_cache``): equal epochs mean nobody wrote in between."""
        return self.cursor(conn, EPOCH, workspace_id)

    def bump_epoch(self, conn: Connection, workspace_id: str) -> int:
        """Every transaction that writes profiles, identities, memberships or person state
        calls this, so an engine's cache of them knows it is stale. Returns the new epoch."""
        return int(conn.execute(self._bump, {"ws": workspace_id}).scalar_one())

    def backlog(self, consumer: str) -> list[tuple[str, int, int]]:
        """(workspace, cursor, last_seq) for every workspace."""
        with self.db.read() as conn:
            rows = conn.execute(self._backlog, {"consumer": consumer}).all()
        return [(str(r[0]), int(r[1] or 0), int(r[2] or 0)) for r in rows]

    # identities ----------------------------------------------------------------------
    def lookup_identities(
        self, conn: Connection, workspace_id: str, wanted: Iterable[Identity]
    ) -> dict[Identity, str]:
        by_kind: dict[str, list[str]] = {}
        for kind, value in set(wanted):
            by_kind.setdefault(kind, []).append(value)
        found: dict[Identity, str] = {}
        for kind, values in by_kind.items():  # one kind at a time: a plain IN the primary key answers
            for i in range(0, len(values), _CHUNK):
                rows = conn.execute(
                    self._identities, {"ws": workspace_id, "kind": kind, "values": values[i : i + _CHUNK]}
                ).all()
                found.update({(kind, str(r[0])): str(r[1]) for r in rows})
        return found

    def person_for(self, workspace_id: str, identity: Identity) -> str | None:
        with self.db.read() as conn:
            return self.lookup_identities(conn, workspace_id, [identity]).get(identity)

    def person_by_phone(self, workspace_id: str, phone: str) -> str | None:
        """Who has this (normalized) phone number; the most recently seen if several do."""
        with self.db.read() as conn:
            row = conn.execute(
                select(profiles.c.person_id)
                .where(profiles.c.workspace_id == workspace_id, profiles.c.phone == phone)
                .order_by(profiles.c.last_seen_ms.desc())
                .limit(1)
            ).first()
        return str(row[0]) if row is not None else None

    # profiles ------------------------------------------------------------------------
    def load(self, conn: Connection, workspace_id: str, person_ids: Iterable[str]) -> dict[str, Profile]:
        ids = list(set(person_ids))
        out: dict[str, Profile] = {}
        for i in range(0, len(ids), _CHUNK):
            rows = conn.execute(self._load, {"ws": workspace_id, "ids": ids[i : i + _CHUNK]}).all()
            for r in rows:
                p = _profile(dict(r._mapping))
                out[p.person_id] = p
        return out

    def page(self, workspace_id: str, *, after: str = "", limit: int = 1000) -> list[Profile]:
        """Profiles in person-id order, for the rare whole-workspace pass (a new date flow)."""
        with self.db.read() as conn:
            rows = conn.execute(
                select(profiles)
                .where(profiles.c.workspace_id == workspace_id, profiles.c.person_id > after)
                .order_by(profiles.c.person_id)
                .limit(limit)
            ).all()
        return [_profile(dict(r._mapping)) for r in rows]

    def get(self, workspace_id: str, person_id: str) -> Profile | None:
        with self.db.read() as conn:
            return self.load(conn, workspace_id, [person_id]).get(person_id)

    def event_seqs(
        self, workspace_id: str, person_id: str, *, before_seq: int | None, limit: int
    ) -> list[int]:
        """The person's log sequence numbers, newest first."""
        query = select(person_events.c.seq).where(
            person_events.c.workspace_id == workspace_id, person_events.c.person_id == person_id
        )
        if before_seq is not None:
            query = query.where(person_events.c.seq < before_seq)
        with self.db.read() as conn:
            rows = conn.execute(query.order_by(person_events.c.seq.desc()).limit(limit)).all()
        return [int(r[0]) for r in rows]

    def save(
        self,
        conn: Connection,
        workspace_id: str,
        *,
        changed: Sequence[Profile],
        merged: Mapping[str, str],
        links: Mapping[Identity, str],
        event_rows: Sequence[tuple[str, int]],
    ) -> None:
        """Write one projector batch. ``merged`` maps each absorbed person to its survivor."""
        for loser, winner in merged.items():
            for table in (identities, person_events):
                conn.execute(
                    update(table)
                    .where(table.c.workspace_id == workspace_id, table.c.person_id == loser)
                    .values(person_id=winner)
                )
            conn.execute(
                delete(profiles).where(profiles.c.workspace_id == workspace_id, profiles.c.person_id == loser)
            )
            # an exposure follows its person, unless the survivor was exposed to that experiment
            # too: then both stay as they are, each counted once (engine.experiment_projector)
            exposures = experiment_exposures.c
            theirs = select(exposures.experiment_id).where(
                exposures.workspace_id == workspace_id, exposures.person_id == winner
            )
            conn.execute(
                update(experiment_exposures)
                .where(
                    exposures.workspace_id == workspace_id,
                    exposures.person_id == loser,
                    exposures.experiment_id.not_in(theirs.scalar_subquery()),
                )
                .values(person_id=winner)
            )
        ws = workspace_id
        self._link.run(conn, [(ws, k, v, p) for (k, v), p in links.items()])
        self._upsert.run(conn, [_row(ws, p) for p in changed])
        self._person_events.run(conn, [(ws, p, s) for p, s in event_rows])

    def reset(self, conn: Connection, workspace_id: str, consumer: str) -> None:
        """Drop everything derived for a workspace, ready for a replay from the start."""
        for table in (profiles, identities, person_events):
            conn.execute(delete(table).where(table.c.workspace_id == workspace_id))
        conn.execute(
            delete(cursors).where(cursors.c.workspace_id == workspace_id, cursors.c.consumer == consumer)
        )
        self.bump_epoch(conn, workspace_id)


PROFILE_COLUMNS = (
    "workspace_id",
    "person_id",
    "user_id",
    "email",
    "phone",
    "timezone",
    "first_seen_ms",
    "last_seen_ms",
    "orders_count",
    "revenue",
    "last_order_ms",
    "last_seq",
    "data",
)


def _row(workspace_id: str, p: Profile) -> tuple[Any, ...]:
    """A profile as a row in ``PROFILE_COLUMNS`` order."""
    data = {
        "traits": p.traits,
        "anonymous_ids": p.anonymous_ids,
        "event_counts": p.event_counts,
        "push_tokens": p.push_tokens,
        "groups": p.groups,
    }
    return (
        workspace_id,
        p.person_id,
        p.user_id,
        p.email,
        p.phone,
        p.timezone,
        p.first_seen_ms,
        p.last_seen_ms,
        p.orders_count,
        p.revenue,
        p.last_order_ms,
        p.last_seq,
        orjson.dumps(data).decode(),
    )


def _profile(m: Mapping[str, Any]) -> Profile:
    data = orjson.loads(m["data"])
    return Profile(
        person_id=m["person_id"],
        user_id=m["user_id"],
        anonymous_ids=tuple(data["anonymous_ids"]),
        traits=data["traits"],
        email=m["email"],
        phone=m["phone"],
        push_tokens=tuple((str(a), str(b)) for a, b in data["push_tokens"]),
        timezone=m["timezone"],
        groups=tuple(data["groups"]),
        first_seen_ms=m["first_seen_ms"],
        last_seen_ms=m["last_seen_ms"],
        event_counts=data["event_counts"],
        orders_count=m["orders_count"],
        revenue=m["revenue"],
        last_order_ms=m["last_order_ms"],
        last_seq=m["last_seq"],
    )
