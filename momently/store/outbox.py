"""The deliveries outbox: written with the engine's decisions, drained by the dispatcher.

A row is claimed with a lease (``status = sending``, ``lease_until_ms``); a dispatcher that
dies mid-send leaves the lease to expire and the row is tried again, with the same delivery
key, which channels pass to providers as the idempotency key.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import BindParameter, Connection, Update, and_, bindparam, or_, select, update

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
            .values(status="sending", lease_until_ms=bindparam("until"), attempts=deliveries.c.attempts + 1)
            .returning(*deliveries.c)
        )
        self._finish: dict[tuple[str, ...], Update] = {}
        self._sent_since = select(deliveries).where(
            deliveries.c.workspace_id == bindparam("ws"),
            deliveries.c.person_id.in_(bindparam("persons", expanding=True)),
            deliveries.c.status == "sent",
            deliveries.c.updated_ms >= bindparam("since"),
        )

    def claim(self, *, now_ms: int, lease_ms: int, limit: int) -> list[Delivery]:
        with self.db.read() as conn:  # most wake-ups find nothing: no write lock for that
            if conn.execute(self._any_due, {"now": now_ms}).first() is None:
                return []
        with self.db.write() as conn:
            rows = conn.execute(
                self._claim, {"now": now_ms, "limit": limit, "until": now_ms + lease_ms}
            ).all()
        return sorted((_delivery(dict(r._mapping)) for r in rows), key=lambda d: d.next_attempt_ms)

    def finish_all(self, conn: Connection, outcomes: Sequence[tuple[int, Mapping[str, Any]]]) -> None:
        """``finish`` for a dispatch round: outcomes that set the same columns share one
        executemany, instead of one compiled statement per delivery."""
        by_columns: dict[tuple[str, ...], builtins.list[dict[str, Any]]] = {}
        for delivery_id, values in outcomes:
            columns = tuple(sorted(values))
            by_columns.setdefault(columns, []).append(
                {"b_delivery_id": delivery_id, **{f"b_{c}": v for c, v in values.items()}}
            )
        for columns, rows in by_columns.items():
            stmt = self._finish.get(columns)
            if stmt is None:  # a handful of shapes (sent, retry, dead, ...): each built once
                stmt = self._finish[columns] = (
                    update(deliveries)
                    .where(deliveries.c.id == bindparam("b_delivery_id"))
                    .values({c: bindparam(f"b_{c}") for c in columns})
                )
            conn.execute(stmt, rows)

    def list(
        self, workspace_id: str, *, statuses: Sequence[str] | None = None, limit: int = 100
    ) -> list[Delivery]:
        query = select(deliveries).where(deliveries.c.workspace_id == workspace_id)
        if statuses:
            query = query.where(deliveries.c.status.in_(list(statuses)))
        with self.db.read() as conn:
            rows = conn.execute(query.order_by(deliveries.c.id.desc()).limit(limit)).all()
        return [_delivery(dict(r._mapping)) for r in rows]

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
        """What these people were sent since ``since_ms``: the history frequency caps count."""
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
                    status="pending", attempts=0, channel_index=0, next_attempt_ms=now_ms, updated_ms=now_ms
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
    )
