"""The reads behind ``momently report``: one flow's enrollments, deliveries and the log events
about them over a time window, each found through an index.

Nothing here scans the workspace's log. Deliveries are found by their key (``flow:person:…``,
a range of ``ux_deliveries_key``), enrollments by ``ix_enrollments_decided``, and the events
about a delivery (its ``Message …`` events, the goal, orders) through the person's own
events (``person_events``, keyed by person and sequence) from the delivery's trigger on,
then the log's primary key. The database filters by name, delivery key and time and
extracts the few properties a report reads, so Python gets one short row per enrollment,
delivery and message event, never event bodies (except goal events when the goal has a
``where`` to evaluate).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import text

from momently.store.database import Database

MESSAGE_EVENTS = (
    "Message Sent",
    "Message Suppressed",
    "Message Delivered",
    "Message Seen",
    "Message Clicked",
)
ORDER_COMPLETED = "Order Completed"


@dataclass(frozen=True, slots=True)
class EnrollmentRow:
    person_id: str
    occurrence: str
    outcome: str
    reason: str | None
    trigger_kind: str
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    key: str
    person_id: str
    occurrence: str
    status: str
    trigger_received_ms: int | None


@dataclass(frozen=True, slots=True)
class MessageEventRow:
    delivery_key: str
    name: str
    time_ms: int
    reason: str | None
    channel: str | None
    personalised: bool | None
    user_id: str | None
    anonymous_id: str | None


@dataclass(frozen=True, slots=True)
class AfterSendRow:
    """A goal or order event of the person within the window after a delivery was sent."""

    delivery_key: str
    name: str
    time_ms: int
    body: dict[str, Any] | None
    revenue: float | None


class Reports:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._pg = db.dialect == "postgresql"

    def _prop(self, column: str, name: str) -> str:
        if self._pg:
            return f"(CAST({column} AS jsonb) #>> '{{properties,{name}}}')"
        return f"json_extract({column}, '$.properties.{name}')"

    def _detail(self, name: str) -> str:
        if self._pg:
            return f"(CAST(en.detail AS jsonb) ->> '{name}')"
        return f"json_extract(en.detail, '$.{name}')"

    def flows_with_activity(self, workspace_id: str, *, since_ms: int, until_ms: int) -> list[str]:
        """The flows with an enrollment in the window."""
        with self.db.read() as conn:
            rows = conn.execute(
                text(
                    "SELECT DISTINCT flow_id FROM enrollments WHERE workspace_id = :ws"
                    " AND decided_ms >= :since AND decided_ms < :until ORDER BY flow_id"
                ),
                {"ws": workspace_id, "since": since_ms, "until": until_ms},
            ).all()
        return [str(r[0]) for r in rows]

    def enrollments(
        self, workspace_id: str, flow_id: str, *, since_ms: int, until_ms: int
    ) -> list[EnrollmentRow]:
        with self.db.read() as conn:
            rows = conn.execute(
                text(
                    "SELECT en.person_id, en.occurrence, en.outcome, en.reason, en.trigger_kind,"
                    f" {self._detail('arm')}, {self._detail('variant')}"
                    " FROM enrollments en WHERE en.workspace_id = :ws AND en.decided_ms >= :since"
                    " AND en.decided_ms < :until AND en.flow_id = :flow"
                ),
                {"ws": workspace_id, "flow": flow_id, "since": since_ms, "until": until_ms},
            ).all()
        return [
            EnrollmentRow(
                str(r[0]),
                str(r[1]),
                str(r[2]),
                r[3],
                str(r[4]),
                {k: v for k, v in (("arm", r[5]), ("variant", r[6])) if v is not None},
            )
            for r in rows
        ]

    def _deliveries_where(self) -> str:
        # the key is flow:person:occurrence, so one flow's deliveries are a range of the key index
        return (
            "d.workspace_id = :ws AND d.key >= :lo AND d.key < :hi AND d.kind = 'message'"
            " AND d.created_ms >= :since AND d.created_ms < :until"
        )

    @staticmethod
    def _params(workspace_id: str, flow_id: str, since_ms: int, until_ms: int) -> dict[str, Any]:
        return {
            "ws": workspace_id,
            "lo": f"{flow_id}:",
            "hi": f"{flow_id};",  # ';' follows ':'
            "since": since_ms,
            "until": until_ms,
        }

    def deliveries(
        self, workspace_id: str, flow_id: str, *, since_ms: int, until_ms: int
    ) -> list[DeliveryRow]:
        with self.db.read() as conn:
            rows = conn.execute(
                text(
                    "SELECT d.key, d.person_id, d.occurrence, d.status, tr.received_ms FROM deliveries d"
                    " LEFT JOIN events tr ON tr.workspace_id = d.workspace_id AND tr.seq = d.trigger_seq"
                    f" WHERE {self._deliveries_where()}"
                ),
                self._params(workspace_id, flow_id, since_ms, until_ms),
            ).all()
        return [
            DeliveryRow(str(r[0]), str(r[1]), str(r[2]), str(r[3]), int(r[4]) if r[4] is not None else None)
            for r in rows
        ]

    def _person_log(self) -> str:
        """The person's events from the delivery's trigger on (every ``Message …`` event of a
        delivery comes after its trigger). ``CROSS JOIN`` fixes SQLite's join order: left to
        itself it walked the workspace's log from each trigger on, checking each event's
        person, instead of the person's events (PostgreSQL plans it the same either way)."""
        return " CROSS JOIN person_events pe CROSS JOIN events e"

    @staticmethod
    def _person_log_where() -> str:
        return (
            " AND pe.workspace_id = d.workspace_id AND pe.person_id = d.person_id"
            " AND pe.seq >= COALESCE(d.trigger_seq, 0)"
            " AND e.workspace_id = pe.workspace_id AND e.seq = pe.seq"
        )

    def message_events(
        self, workspace_id: str, flow_id: str, *, since_ms: int, until_ms: int
    ) -> list[MessageEventRow]:
        names = ", ".join(f"'{n}'" for n in MESSAGE_EVENTS)
        with self.db.read() as conn:
            rows = conn.execute(
                text(
                    f"SELECT d.key, e.name, e.timestamp_ms, {self._prop('e.body', 'reason')},"
                    f" {self._prop('e.body', 'channel')}, {self._prop('e.body', 'personalised')},"
                    " e.user_id, e.anonymous_id FROM deliveries d"
                    f"{self._person_log()}"
                    f" WHERE {self._deliveries_where()}{self._person_log_where()} AND e.name IN ({names})"
                    f" AND {self._prop('e.body', 'delivery_key')} = d.key"
                ),
                self._params(workspace_id, flow_id, since_ms, until_ms),
            ).all()
        return [
            MessageEventRow(
                str(r[0]),
                str(r[1]),
                int(r[2]),
                r[3],
                r[4],
                _boolean(r[5]),
                r[6],
                r[7],
            )
            for r in rows
        ]

    def after_send(
        self,
        workspace_id: str,
        flow_id: str,
        *,
        since_ms: int,
        until_ms: int,
        names: Sequence[str],
        window_ms: int,
        with_body: bool,
    ) -> list[AfterSendRow]:
        """The events named ``names`` of each delivery's person within ``window_ms`` after the
        delivery's first ``Message Sent``."""
        if not names:
            return []
        params = self._params(workspace_id, flow_id, since_ms, until_ms)
        wanted = ", ".join(f":n{i}" for i in range(len(names)))
        params.update({f"n{i}": n for i, n in enumerate(names)})
        params["window"] = window_ms
        body = "e.body" if with_body else "NULL"
        revenue = self._prop("e.body", "revenue")
        total = self._prop("e.body", "total")
        sent = (
            "SELECT d.key, d.person_id, d.workspace_id, d.trigger_seq, MIN(e.timestamp_ms) AS sent_ms"
            f" FROM deliveries d{self._person_log()}"
            f" WHERE {self._deliveries_where()}{self._person_log_where()} AND e.name = 'Message Sent'"
            f" AND {self._prop('e.body', 'delivery_key')} = d.key"
            " GROUP BY d.key, d.person_id, d.workspace_id, d.trigger_seq"
        )
        with self.db.read() as conn:
            rows = conn.execute(
                text(
                    f"WITH s AS ({sent}) SELECT d.key, e.name, e.timestamp_ms, {body},"
                    f" COALESCE({revenue}, {total}) FROM s d{self._person_log()}"
                    f" WHERE e.name IN ({wanted}){self._person_log_where()} AND e.timestamp_ms >= d.sent_ms"
                    " AND e.timestamp_ms <= d.sent_ms + :window"
                ),
                params,
            ).all()
        return [
            AfterSendRow(
                str(r[0]),
                str(r[1]),
                int(r[2]),
                orjson.loads(r[3]) if r[3] is not None else None,
                _number(r[4]),
            )
            for r in rows
        ]


def _boolean(value: Any) -> bool | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value == "true"
    return bool(value)


def _number(value: Any) -> float | None:
    if value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if out == out and abs(out) != float("inf") else None
