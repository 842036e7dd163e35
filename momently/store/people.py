"""Data rights and retention: everything about one person (export), forgetting them (erase),
and deleting old events per workspace (retention).

Erasure deletes the person's events from the log, their profile and identities, engine state,
enrollments, deliveries, in-app cards and push subscriptions, and leaves a tombstone for each
id they were known by. The consent ledger keeps its records (proof of consent is itself a
legal obligation, and the hash chain must stay verifiable) and gains one more: the erasure.

Erasing runs in one transaction that first locks the engine's cursor row, so it cannot
interleave with an engine batch that is folding the same person's events: either the batch
commits first and erasure removes its effects, or erasure commits first and the batch, which
checks the tombstones under the same lock, starts over without them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, and_, bindparam, delete, func, or_, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite

from momently.domain import consent
from momently.domain.identity import Identity
from momently.domain.profile import document
from momently.store.consent import ConsentLedger, phone_key
from momently.store.database import Database
from momently.store.events import EventLog
from momently.store.profiles import ProfileStore
from momently.store.schema import (
    cohort_members,
    cursors,
    deliveries,
    enrollments,
    erased_identities,
    events,
    experiment_exposures,
    exposures,
    identities,
    inbox_cards,
    person_events,
    person_state,
    profiles,
    push_subscriptions,
    segment_members,
    timers,
    workspaces,
)

ENGINE_CONSUMER = "profiles"
_CHUNK = 500
# read by the engine twice a batch: built once
_TOMBSTONE_COUNT = select(func.count()).where(erased_identities.c.workspace_id == bindparam("ws"))
PERSON_TABLES = (
    person_events,
    segment_members,
    person_state,
    timers,
    cohort_members,
    enrollments,
    exposures,
    deliveries,
    inbox_cards,
    experiment_exposures,
    identities,
    profiles,
)


class People:
    def __init__(self, db: Database, log_: EventLog, store: ProfileStore, ledger: ConsentLedger) -> None:
        self.db = db
        self.log = log_
        self.store = store
        self.ledger = ledger
        self._insert = postgresql.insert if db.dialect == "postgresql" else sqlite.insert
        self._tombstones: dict[str, tuple[int, frozenset[Identity]]] = {}

    # export -------------------------------------------------------------------------------
    def export(self, workspace_id: str, person_id: str) -> dict[str, Any] | None:
        """Everything stored about the person, as JSON-ready data."""
        ws = workspace_id
        profile = self.store.get(ws, person_id)
        if profile is None:
            return None
        with self.db.read() as conn:
            ids = self._identities(conn, ws, person_id)
            seqs = [
                int(r[0])
                for r in conn.execute(
                    select(person_events.c.seq)
                    .where(person_events.c.workspace_id == ws, person_events.c.person_id == person_id)
                    .order_by(person_events.c.seq)
                )
            ]

            def rows(table: Any) -> list[dict[str, Any]]:
                found = conn.execute(
                    select(table).where(table.c.workspace_id == ws, table.c.person_id == person_id)
                ).all()
                return [{k: v for k, v in r._mapping.items() if k != "workspace_id"} for r in found]

            related = {
                "segments": rows(segment_members),
                "enrollments": rows(enrollments),
                "deliveries": rows(deliveries),
                "inAppCards": rows(inbox_cards),
                "experimentExposures": rows(experiment_exposures),
            }
            subs = self._subscriptions(conn, ws, ids)
        records = self.ledger.of_person(
            ws,
            self.store,
            user_id=profile.user_id,
            anonymous_id=profile.anonymous_ids[0] if profile.anonymous_ids else None,
        )
        events_ = []
        for i in range(0, len(seqs), _CHUNK):
            events_ += [{"seq": e.seq, **e.body} for e in self.log.by_seqs(ws, seqs[i : i + _CHUNK])]
        return {
            "personId": person_id,
            "profile": document(profile),
            "identities": [{"kind": k, "value": v} for k, v in ids],
            "events": events_,
            "consent": [{**r.grant.content(), "seq": r.seq, "hash": r.hash} for r in records],
            "pushSubscriptions": subs,
            **related,
        }

    # erase --------------------------------------------------------------------------------
    def erase(self, workspace_id: str, person_id: str, *, now_ms: int) -> dict[str, int] | None:
        """Forget the person. Returns how many rows went, per kind; None if unknown."""
        ws = workspace_id
        with self.db.write() as conn:
            self._lock_engine(conn, ws)
            self.store.bump_epoch(conn, ws)  # an engine's cached copy of this person is stale
            ids = self._identities(conn, ws, person_id)
            if (
                not ids
                and conn.execute(
                    select(profiles.c.person_id).where(
                        profiles.c.workspace_id == ws, profiles.c.person_id == person_id
                    )
                ).first()
                is None
            ):
                return None
            users = [v for k, v in ids if k == "user"]
            anons = [v for k, v in ids if k == "anon"]
            phone = conn.execute(
                select(profiles.c.phone).where(
                    profiles.c.workspace_id == ws, profiles.c.person_id == person_id
                )
            ).scalar()
            counts: dict[str, int] = {}
            seqs = [
                int(r[0])
                for r in conn.execute(
                    select(person_events.c.seq).where(
                        person_events.c.workspace_id == ws, person_events.c.person_id == person_id
                    )
                )
            ]
            gone = 0
            for i in range(0, len(seqs), _CHUNK):
                gone += len(
                    conn.execute(
                        delete(events)
                        .where(events.c.workspace_id == ws, events.c.seq.in_(seqs[i : i + _CHUNK]))
                        .returning(events.c.seq)
                    ).all()
                )
            gone += self._drop_unfolded(conn, ws, users, anons)
            counts["events"] = gone
            for table in PERSON_TABLES:
                counts[table.name] = len(
                    conn.execute(
                        delete(table)
                        .where(table.c.workspace_id == ws, table.c.person_id == person_id)
                        .returning(table.c.workspace_id)
                    ).all()
                )
            if ids:
                counts["push_subscriptions"] = len(
                    conn.execute(
                        delete(push_subscriptions)
                        .where(
                            push_subscriptions.c.workspace_id == ws,
                            tuple_(push_subscriptions.c.kind, push_subscriptions.c.value).in_(ids),
                        )
                        .returning(push_subscriptions.c.endpoint)
                    ).all()
                )
                conn.execute(
                    self._insert(erased_identities)
                    .values(
                        [{"workspace_id": ws, "kind": k, "value": v, "erased_ms": now_ms} for k, v in ids]
                    )
                    .on_conflict_do_nothing()
                )
            self.ledger.append(
                conn,
                ws,
                [
                    consent.Grant(
                        users[0] if users else None,
                        anons[0] if anons else (phone_key(phone) if phone else None),
                        "*",
                        "*",
                        False,
                        "erasure",
                        now_ms,
                        note=f"erased: {gone} events",
                    )
                ]
                if users or anons
                else [],
            )
        return counts

    def _lock_engine(self, conn: Connection, workspace_id: str) -> None:
        """Wait for (and then hold off) the engine's batch for this workspace."""
        query = select(cursors.c.seq).where(
            cursors.c.consumer == ENGINE_CONSUMER, cursors.c.workspace_id == workspace_id
        )
        if self.db.dialect == "postgresql":
            query = query.with_for_update()
        conn.execute(query)  # on SQLite the write transaction is already exclusive

    def _drop_unfolded(self, conn: Connection, ws: str, users: Sequence[str], anons: Sequence[str]) -> int:
        """The person's events the engine has not reached yet (no person index row yet)."""
        cursor = (
            conn.execute(
                select(cursors.c.seq).where(
                    cursors.c.consumer == ENGINE_CONSUMER, cursors.c.workspace_id == ws
                )
            ).scalar()
            or 0
        )
        who = []
        if users:
            who.append(events.c.user_id.in_(list(users)))
        if anons:
            who.append(events.c.anonymous_id.in_(list(anons)))
        if not who:
            return 0
        return len(
            conn.execute(
                delete(events)
                .where(and_(events.c.workspace_id == ws, events.c.seq > int(cursor), or_(*who)))
                .returning(events.c.seq)
            ).all()
        )

    # tombstones, as the engine sees them ----------------------------------------------------
    def tombstones(self, conn: Connection, workspace_id: str) -> frozenset[Identity]:
        """Every erased id of the workspace. Read once per engine batch: a count query, and the
        ids themselves only when the count moved."""
        n = int(conn.execute(_TOMBSTONE_COUNT, {"ws": workspace_id}).scalar_one())
        cached = self._tombstones.get(workspace_id)
        if cached is not None and cached[0] == n:
            return cached[1]
        rows = conn.execute(
            select(erased_identities.c.kind, erased_identities.c.value).where(
                erased_identities.c.workspace_id == workspace_id
            )
        ).all()
        found = frozenset((str(r[0]), str(r[1])) for r in rows)
        self._tombstones[workspace_id] = (n, found)
        return found

    def lift(self, conn: Connection, workspace_id: str, ids: Iterable[Identity]) -> None:
        """They came back and agreed again: the ids may make a person anew."""
        wanted = sorted(set(ids))
        if wanted:
            conn.execute(
                delete(erased_identities).where(
                    erased_identities.c.workspace_id == workspace_id,
                    tuple_(erased_identities.c.kind, erased_identities.c.value).in_(wanted),
                )
            )

    def drop_events(self, conn: Connection, workspace_id: str, seqs: Sequence[int]) -> None:
        for i in range(0, len(seqs), _CHUNK):
            conn.execute(
                delete(events).where(
                    events.c.workspace_id == workspace_id, events.c.seq.in_(seqs[i : i + _CHUNK])
                )
            )

    # retention ----------------------------------------------------------------------------
    def apply_retention(self, *, now_ms: int) -> dict[str, int]:
        """Delete events older than each workspace's ``retention_days`` that the engine has
        already folded in. Profiles (counts, first/last seen), segment memberships,
        enrollments, deliveries and per-name event counts are kept."""
        with self.db.read() as conn:
            rows = conn.execute(
                select(workspaces.c.id, workspaces.c.retention_days).where(
                    workspaces.c.retention_days.is_not(None)
                )
            ).all()
        out: dict[str, int] = {}
        for ws, days in rows:
            cutoff = now_ms - int(days) * 86_400_000
            with self.db.write() as conn:
                cursor = (
                    conn.execute(
                        select(cursors.c.seq).where(
                            cursors.c.consumer == ENGINE_CONSUMER, cursors.c.workspace_id == ws
                        )
                    ).scalar()
                    or 0
                )
                old = conn.execute(
                    select(func.max(events.c.seq)).where(
                        events.c.workspace_id == ws,
                        events.c.received_ms < cutoff,
                        events.c.seq <= int(cursor),
                    )
                ).scalar()
                if old is None:
                    out[str(ws)] = 0
                    continue
                out[str(ws)] = len(
                    conn.execute(
                        delete(events)
                        .where(
                            events.c.workspace_id == ws,
                            events.c.seq <= int(old),
                            events.c.received_ms < cutoff,
                        )
                        .returning(events.c.seq)
                    ).all()
                )
                kept = select(events.c.seq).where(events.c.workspace_id == ws, events.c.seq <= int(old))
                conn.execute(
                    delete(person_events).where(
                        person_events.c.workspace_id == ws,
                        person_events.c.seq <= int(old),
                        person_events.c.seq.not_in(kept),
                    )
                )
        return out

    # helpers ------------------------------------------------------------------------------
    @staticmethod
    def _identities(conn: Connection, ws: str, person_id: str) -> list[Identity]:
        rows = conn.execute(
            select(identities.c.kind, identities.c.value).where(
                identities.c.workspace_id == ws, identities.c.person_id == person_id
            )
        ).all()
        return sorted((str(r[0]), str(r[1])) for r in rows)

    @staticmethod
    def _subscriptions(conn: Connection, ws: str, ids: Sequence[Identity]) -> list[dict[str, Any]]:
        if not ids:
            return []
        rows = conn.execute(
            select(push_subscriptions.c.endpoint, push_subscriptions.c.created_ms).where(
                push_subscriptions.c.workspace_id == ws,
                tuple_(push_subscriptions.c.kind, push_subscriptions.c.value).in_(list(ids)),
            )
        ).all()
        return [{"endpoint": r[0], "createdMs": r[1]} for r in rows]
