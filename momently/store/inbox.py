"""The in-app inbox: cards written by the in-app channel, read and marked by the widget.

``add`` is idempotent on the delivery key, so a dispatcher retried after a crash never shows
a card twice. ``Inbox.changed`` is a process-local signal that wakes server-sent-event
streams at once; streams also poll, so cards added by an engine in another process
(``momently worker``) still arrive within a second.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from sqlalchemy import Connection, and_, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from momently.domain.actions import one_tap_token
from momently.store.database import Database
from momently.store.schema import inbox_cards

Mark = Literal["seen", "acted", "dismissed"]


@dataclass(frozen=True, slots=True)
class Card:
    id: int
    person_id: str
    delivery_key: str
    flow_id: str
    content: dict[str, Any]
    created_ms: int
    expires_ms: int | None
    seen_ms: int | None
    acted_ms: int | None
    dismissed_ms: int | None

    def document(self, workspace_id: str) -> dict[str, Any]:
        """The card as the widget gets it: a one-tap link in its action is left out (the
        widget acts through ``POST /v1/inbox/{id}/act``, which records the action for the
        verified person), so the payload carries no reusable token."""
        content = self.content
        action = content.get("action")
        if isinstance(action, dict) and one_tap_token(action.get("url"), workspace_id) is not None:
            content = {**content, "action": {k: v for k, v in action.items() if k != "url"}}
        return {
            "id": self.id,
            "flow": self.flow_id,
            **content,
            "createdAt": self.created_ms,
            "expiresAt": self.expires_ms,
            "seen": self.seen_ms is not None,
        }


class Inbox:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._insert = postgresql.insert if db.dialect == "postgresql" else sqlite.insert
        self.changed = threading.Condition()
        self.version = 0

    def add(
        self,
        workspace_id: str,
        person_id: str,
        *,
        delivery_key: str,
        flow_id: str,
        content: dict[str, Any],
        now_ms: int,
        expires_ms: int | None,
    ) -> int:
        values = {
            "workspace_id": workspace_id,
            "person_id": person_id,
            "delivery_key": delivery_key,
            "flow_id": flow_id,
            "card": orjson.dumps(content).decode(),
            "created_ms": now_ms,
            "expires_ms": expires_ms,
        }
        with self.db.write() as conn:
            conn.execute(self._insert(inbox_cards).values(**values).on_conflict_do_nothing())
            card_id = conn.execute(
                select(inbox_cards.c.id).where(
                    inbox_cards.c.workspace_id == workspace_id, inbox_cards.c.delivery_key == delivery_key
                )
            ).scalar_one()
        with self.changed:
            self.version += 1
            self.changed.notify_all()
        return int(card_id)

    def open_cards(
        self, workspace_id: str, person_ids: list[str], *, now_ms: int, after_id: int = 0, limit: int = 20
    ) -> list[Card]:
        """Cards still to show: not expired, not acted on, not dismissed; oldest first."""
        if not person_ids:
            return []
        with self.db.read() as conn:
            rows = conn.execute(
                select(inbox_cards)
                .where(
                    inbox_cards.c.workspace_id == workspace_id,
                    inbox_cards.c.person_id.in_(person_ids),
                    inbox_cards.c.id > after_id,
                    inbox_cards.c.acted_ms.is_(None),
                    inbox_cards.c.dismissed_ms.is_(None),
                    or_(inbox_cards.c.expires_ms.is_(None), inbox_cards.c.expires_ms > now_ms),
                )
                .order_by(inbox_cards.c.id)
                .limit(limit)
            ).all()
        return [_card(r._mapping) for r in rows]

    def mark(
        self, workspace_id: str, person_ids: list[str], card_id: int, what: Mark, *, now_ms: int
    ) -> Card | None:
        """Set seen/acted/dismissed the first time; returns the card if it belongs to the
        person and the mark is new (so its event is logged once), else None."""
        column = inbox_cards.c[f"{what}_ms"]
        with self.db.write() as conn:
            row = conn.execute(
                update(inbox_cards)
                .where(
                    and_(
                        inbox_cards.c.workspace_id == workspace_id,
                        inbox_cards.c.id == card_id,
                        inbox_cards.c.person_id.in_(person_ids),
                        column.is_(None),
                    )
                )
                .values({column: now_ms})
                .returning(*inbox_cards.c)
            ).first()
        return _card(row._mapping) if row is not None else None

    def get(self, conn: Connection, workspace_id: str, card_id: int) -> Card | None:
        row = conn.execute(
            select(inbox_cards).where(inbox_cards.c.workspace_id == workspace_id, inbox_cards.c.id == card_id)
        ).first()
        return _card(row._mapping) if row is not None else None

    def wait_for_change(self, seen_version: int, timeout: float) -> int:
        with self.changed:
            if self.version == seen_version:
                self.changed.wait(timeout)
            return self.version


def _card(m: Any) -> Card:
    return Card(
        id=int(m["id"]),
        person_id=str(m["person_id"]),
        delivery_key=str(m["delivery_key"]),
        flow_id=str(m["flow_id"]),
        content=orjson.loads(m["card"]),
        created_ms=int(m["created_ms"]),
        expires_ms=m["expires_ms"],
        seen_ms=m["seen_ms"],
        acted_ms=m["acted_ms"],
        dismissed_ms=m["dismissed_ms"],
    )
