"""The deliveries outbox: written with the engine's decisions, drained by the dispatcher.

A row is claimed with a lease (``status = sending``, ``lease_until_ms``) and a fencing token
(``lease_token``), new for every claim. Renewing the lease and writing the outcome are
conditional on the token: once a lease has expired and another dispatcher has claimed the
row, the first one's writes change nothing. A dispatcher that dies mid-send leaves the lease
to expire and the row is tried again, with the same delivery key, which channels pass to
providers as the idempotency key.

``reserved_ms`` marks a message that passed the frequency-cap check and is being sent: every
dispatcher counts it in the person's history, so two of them cannot both take the last place
under a cap (the check itself is serialised per person, see :meth:`Outbox.lock_people`).
"""

from __future__ import annotations

import builtins
import hashlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import BindParameter, Connection, Update, and_, bindparam, func, or_, select, text, update

from momently.store.database import Database
from momently.store.schema import deliveries


@dataclass(frozen=True, slots=True)
class Delivery:
    id: int
    workspace_id: str
    key: str
    flow_id: str
    flow_version: int
    person_id: str
    occurrence: str
    trigger_seq: int | None
    variant: str | None
    channels: list[str]
    channel_index: int
    status: str
    attempts: int
    next_attempt_ms: int
    last_error: str | None
    provider_id: str | None
    created_ms: int
    updated_ms: int
    kind: str = "message"
    lease_token: str | None = None
    lease_until_ms: int | None = None
    reserved_ms: int | None = None
    held_ms: int | None = None
    due_ms: int | None = None  # when the decision meant it to go (after its delay); older rows: None

    @property
    def planned_ms(self) -> int:
        """When the message was meant to go: its age for ``max_age`` counts from here."""
        return self.due_ms if self.due_ms is not None else self.created_ms

    @property
    def channel(self) -> str | None:
        return self.channels[self.channel_index] if self.channel_index < len(self.channels) else None


class Outbox:
    def __init__(self, db: Database) -> None:
        self.db = db
        # Every dispatch round runs these: built once (SQLAlchemy's statement construction
        # costs ~70 µs a statement, per call).
        now: BindParameter[int] = bindparam("now")
        due = or_(
            and_(deliveries.c.status == "pending", deliveries.c.next_attempt_ms <= now),
            and_(deliveries.c.status == "sending", deliveries.c.lease_until_ms <= now),
        )
        self._any_due = select(deliveries.c.id).where(due).limit(1)
        pick = (
            select(deliveries.c.id)
            .where(due)
            .order_by(deliveries.c.next_attempt_ms)
            .limit(bindparam("limit"))
        )
        if db.dialect == "postgresql":
            pick = pick.with_for_update(skip_locked=True)
        self._claim = (
            update(deliveries)
            .where(deliveries.c.id.in_(pick.scalar_subquery()), due)
            .values(
                status="sending",
                lease_until_ms=bindparam("until"),
                lease_token=bindparam("token"),
                reserved_ms=None,  # checked against the caps again by the new holder
                attempts=deliveries.c.attempts + 1,
            )
            .returning(*deliveries.c)
        )
        self._finish: dict[tuple[str, ...], Update] = {}
        held = and_(
            deliveries.c.id.in_(bindparam("ids", expanding=True)),
            deliveries.c.lease_token == bindparam("token"),
            deliveries.c.status == "sending",
        )
        self._held = select(deliveries.c.id).where(held)
        if db.dialect == "postgresql":
            # no claim can take these rows between the check and the outcome's update
            self._held = self._held.with_for_update()
        self._renew = (
            update(deliveries)
            .where(held)
            .values(lease_until_ms=bindparam("until"))
            .returning(deliveries.c.id)
        )
        self._reserve = update(deliveries).where(held).values(reserved_ms=bindparam("at"))
        self._sent_since = select(deliveries).where(
            deliveries.c.workspace_id == bindparam("ws"),
            deliveries.c.person_id.in_(bindparam("persons", expanding=True)),
            or_(
                and_(deliveries.c.status == "sent", deliveries.c.updated_ms >= bindparam("since")),
                # passed the cap check and being sent, by this dispatcher or another
                and_(deliveries.c.status == "sending", deliveries.c.reserved_ms.is_not(None)),
            ),
        )

    def claim(self, *, now_ms: int, lease_ms: int, limit: int) -> list[Delivery]:
        """Up to ``limit`` due rows (pending, or sending with an expired lease), leased until
        ``now_ms + lease_ms`` under one new token (every row's ``lease_token``)."""
        with self.db.read() as conn:  # most wake-ups find nothing: no write lock for that
            if conn.execute(self._any_due, {"now": now_ms}).first() is None:
                return []
        token = uuid.uuid4().hex
        with self.db.write() as conn:
            rows = conn.execute(
                self._claim, {"now": now_ms, "limit": limit, "until": now_ms + lease_ms, "token": token}
            ).all()
        return sorted((_delivery(dict(r._mapping)) for r in rows), key=lambda d: d.next_attempt_ms)

    def renew(self, token: str, ids: Sequence[int], *, until_ms: int) -> set[int]:
        """Extend the lease of the rows this claim still holds; returns their ids (a row
        missing was taken over by another dispatcher after its lease expired)."""
        if not ids:
            return set()
        with self.db.write() as conn:
            rows = conn.execute(self._renew, {"ids": list(ids), "token": token, "until": until_ms}).all()
        return {int(r[0]) for r in rows}

    def lock_people(self, conn: Connection, workspace_id: str, person_ids: Sequence[str]) -> None:
        """Serialise the frequency-cap check per person until the end of ``conn``'s
        transaction. PostgreSQL: transaction-scoped advisory locks, taken in one global order
        so two dispatchers cannot deadlock. SQLite: the write transaction is already the only
        one."""
        if self.db.dialect != "postgresql":
            return
        for key in sorted({_lock_key(workspace_id, p) for p in person_ids}):
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})

    def reserve(self, conn: Connection, token: str, ids: Sequence[int], *, at_ms: int) -> None:
        """Mark rows that passed the cap check: counted by every dispatcher from now on."""
        if ids:
            conn.execute(self._reserve, {"ids": list(ids), "token": token, "at": at_ms})

    def finish_all(
        self, conn: Connection, token: str, outcomes: Sequence[tuple[int, Mapping[str, Any]]]
    ) -> set[int]:
        """Record a dispatch round's outcomes, only on rows this claim (``token``) still
        holds; returns the ids written. Outcomes that set the same columns share one
        executemany, instead of one compiled statement per delivery."""
        ids = [delivery_id for delivery_id, _ in outcomes]
        if not ids:
            return set()
        mine = {int(r[0]) for r in conn.execute(self._held, {"ids": ids, "token": token}).all()}
        by_columns: dict[tuple[str, ...], builtins.list[dict[str, Any]]] = {}
        for delivery_id, values in outcomes:
            if delivery_id not in mine:
                continue
            columns = tuple(sorted(values))
            by_columns.setdefault(columns, []).append(
                {"b_delivery_id": delivery_id, "b_token": token, **{f"b_{c}": v for c, v in values.items()}}
            )
        for columns, rows in by_columns.items():
            stmt = self._finish.get(columns)
            if stmt is None:  # a handful of shapes (sent, retry, dead, ...): each built once
                stmt = self._finish[columns] = (
                    update(deliveries)
                    .where(
                        deliveries.c.id == bindparam("b_delivery_id"),
                        deliveries.c.lease_token == bindparam("b_token"),
                    )
                    .values({c: bindparam(f"b_{c}") for c in columns})
                )
            conn.execute(stmt, rows)
        return mine

    def list(
        self, workspace_id: str, *, statuses: Sequence[str] | None = None, limit: int = 100
    ) -> list[Delivery]:
        query = select(deliveries).where(deliveries.c.workspace_id == workspace_id)
        if statuses:
            query = query.where(deliveries.c.status.in_(list(statuses)))
        with self.db.read() as conn:
            rows = conn.execute(query.order_by(deliveries.c.id.desc()).limit(limit)).all()
        return [_delivery(dict(r._mapping)) for r in rows]

    def next_attempt_ms(self, workspace_id: str) -> int | None:
        """When the workspace's earliest pending delivery is due: how far virtual time may
        jump without stepping over a send (flow tests)."""
        query = select(func.min(deliveries.c.next_attempt_ms)).where(
            deliveries.c.workspace_id == workspace_id, deliveries.c.status == "pending"
        )
        with self.db.read() as conn:
            value = conn.execute(query).scalar()
        return int(value) if value is not None else None

    def by_provider_id(self, workspace_id: str, provider_id: str) -> Delivery | None:
        """The delivery a provider's status callback is about."""
        with self.db.read() as conn:
            row = conn.execute(
                select(deliveries)
                .where(deliveries.c.workspace_id == workspace_id, deliveries.c.provider_id == provider_id)
                .limit(1)
            ).first()
        return _delivery(dict(row._mapping)) if row is not None else None

    def sent_since(
        self, conn: Connection, workspace_id: str, person_ids: Sequence[str], *, since_ms: int
    ) -> builtins.list[Delivery]:
        """What these people were sent since ``since_ms``, and what is being sent to them
        after passing the cap check: the history frequency caps count."""
        out: builtins.list[Delivery] = []
        ids = sorted(set(person_ids))
        for i in range(0, len(ids), 500):
            rows = conn.execute(
                self._sent_since, {"ws": workspace_id, "persons": ids[i : i + 500], "since": since_ms}
            ).all()
            out += [_delivery(dict(r._mapping)) for r in rows]
        return out

    def recent_sent(
        self, workspace_id: str, person_id: str, *, channel: str, limit: int = 20
    ) -> builtins.list[Delivery]:
        """The person's latest sent deliveries on ``channel``, newest first (an SMS reply
        answers the last message)."""
        with self.db.read() as conn:
            rows = conn.execute(
                select(deliveries)
                .where(
                    deliveries.c.workspace_id == workspace_id,
                    deliveries.c.person_id == person_id,
                    deliveries.c.status == "sent",
                )
                .order_by(deliveries.c.updated_ms.desc(), deliveries.c.id.desc())
                .limit(limit)
            ).all()
        return [d for d in (_delivery(dict(r._mapping)) for r in rows) if d.channel == channel]

    def retry(self, workspace_id: str, delivery_id: int, *, now_ms: int) -> bool:
        """A dead delivery back to pending, from the first channel of its plan."""
        with self.db.write() as conn:
            done = conn.execute(
                update(deliveries)
                .where(
                    deliveries.c.workspace_id == workspace_id,
                    deliveries.c.id == delivery_id,
                    deliveries.c.status == "dead",
                )
                .values(
                    status="pending",
                    attempts=0,
                    channel_index=0,
                    next_attempt_ms=now_ms,
                    updated_ms=now_ms,
                    held_ms=None,
                )
                .returning(deliveries.c.id)
            ).first()
        return done is not None


def _delivery(m: dict[str, Any]) -> Delivery:
    return Delivery(
        id=int(m["id"]),
        workspace_id=str(m["workspace_id"]),
        key=str(m["key"]),
        flow_id=str(m["flow_id"]),
        flow_version=int(m["flow_version"]),
        person_id=str(m["person_id"]),
        occurrence=str(m["occurrence"]),
        trigger_seq=int(m["trigger_seq"]) if m["trigger_seq"] is not None else None,
        variant=m["variant"],
        channels=list(orjson.loads(m["channels"])),
        channel_index=int(m["channel_index"]),
        status=str(m["status"]),
        attempts=int(m["attempts"]),
        next_attempt_ms=int(m["next_attempt_ms"]),
        last_error=m["last_error"],
        provider_id=m["provider_id"],
        created_ms=int(m["created_ms"]),
        updated_ms=int(m["updated_ms"]),
        kind=str(m.get("kind") or "message"),
        lease_token=m.get("lease_token"),
        lease_until_ms=_int(m.get("lease_until_ms")),
        reserved_ms=_int(m.get("reserved_ms")),
        held_ms=_int(m.get("held_ms")),
        due_ms=_int(m.get("due_ms")),
    )


def _int(v: Any) -> int | None:
    return int(v) if v is not None else None


def _lock_key(workspace_id: str, person_id: str) -> int:
    """A signed 64-bit advisory lock key for one person's cap check."""
    digest = hashlib.blake2b(f"caps:{workspace_id}:{person_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)
