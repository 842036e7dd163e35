"""Web push subscriptions, keyed by endpoint and filed under the id (userId or anonymousId)
the browser knew the person by, so a subscription made before login still reaches them."""

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
    def __init__(self, db: Database) -> None:
        self.db = db
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
                    },
                )
            )

    def remove(self, workspace_id: str, endpoint: str) -> bool:
        with self.db.write() as conn:
            gone = conn.execute(
                delete(push_subscriptions)
                .where(
                    push_subscriptions.c.workspace_id == workspace_id,
                    push_subscriptions.c.endpoint == endpoint,
                )
                .returning(push_subscriptions.c.endpoint)
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
