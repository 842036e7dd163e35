"""Web push subscriptions, keyed by endpoint and filed under the id (userId or anonymousId)
the browser knew the person by, so a subscription made before login still reaches them.

At most ``per_person`` subscriptions are kept under one id (a browser re-registering counts as
new): adding one more drops the oldest, so one message never fans out to an unbounded number
of endpoints."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import and_, delete, or_, select
from sqlalchemy.dialects import postgresql, sqlite

from momently.domain.identity import Identity
from momently.store.database import Database
from momently.store.schema import push_subscriptions


@dataclass(frozen=True, slots=True)
class Subscription:
    endpoint: str
    p256dh: str
    auth: str

    def info(self) -> dict[str, object]:
        return {"endpoint": self.endpoint, "keys": {"p256dh": self.p256dh, "auth": self.auth}}


class PushSubscriptions:
    def __init__(self, db: Database, *, per_person: int = 5) -> None:
        self.db = db
        self.per_person = per_person
        self._insert = postgresql.insert if db.dialect == "postgresql" else sqlite.insert

    def add(self, workspace_id: str, identity: Identity, sub: Subscription, *, now_ms: int) -> None:
        stmt = self._insert(push_subscriptions).values(
            workspace_id=workspace_id,
            endpoint=sub.endpoint,
            kind=identity[0],
            value=identity[1],
            p256dh=sub.p256dh,
            auth=sub.auth,
            created_ms=now_ms,
        )
        with self.db.write() as conn:
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["workspace_id", "endpoint"],
                    set_={
                        "kind": stmt.excluded.kind,
                        "value": stmt.excluded.value,
                        "p256dh": stmt.excluded.p256dh,
                        "auth": stmt.excluded.auth,
                        "created_ms": stmt.excluded.created_ms,
                    },
                )
            )
            mine = and_(
                push_subscriptions.c.workspace_id == workspace_id,
                push_subscriptions.c.kind == identity[0],
                push_subscriptions.c.value == identity[1],
            )
            keep = (
                select(push_subscriptions.c.endpoint)
                .where(mine)
                .order_by(
                    push_subscriptions.c.created_ms.desc(),
                    (push_subscriptions.c.endpoint == sub.endpoint).desc(),
                    push_subscriptions.c.endpoint,
                )
                .limit(self.per_person)
            )
            conn.execute(delete(push_subscriptions).where(mine, push_subscriptions.c.endpoint.not_in(keep)))

    def remove(self, workspace_id: str, endpoint: str, owner: Identity | None = None) -> bool:
        """Remove a subscription; with ``owner``, only if it is filed under that id."""
        where = [push_subscriptions.c.workspace_id == workspace_id, push_subscriptions.c.endpoint == endpoint]
        if owner is not None:
            where += [push_subscriptions.c.kind == owner[0], push_subscriptions.c.value == owner[1]]
        with self.db.write() as conn:
            gone = conn.execute(
                delete(push_subscriptions).where(*where).returning(push_subscriptions.c.endpoint)
            ).first()
        return gone is not None

    def for_identities(self, workspace_id: str, ids: Sequence[Identity]) -> list[Subscription]:
        if not ids:
            return []
        match = or_(*[and_(push_subscriptions.c.kind == k, push_subscriptions.c.value == v) for k, v in ids])
        with self.db.read() as conn:
            rows = conn.execute(
                select(push_subscriptions.c.endpoint, push_subscriptions.c.p256dh, push_subscriptions.c.auth)
                .where(push_subscriptions.c.workspace_id == workspace_id, match)
                .order_by(push_subscriptions.c.created_ms)
            ).all()
        return [Subscription(str(e), str(p), str(a)) for e, p, a in rows]
