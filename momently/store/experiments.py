"""Experiments as the admin sees them: each one's state and its history of changes, the
assignments counted per arm, and the changes themselves (start, stop, ship, resume), each
stored with its version and appended to the event log in the same transaction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, insert, select

from momently.domain import experiments as rules
from momently.domain.event import derived_event
from momently.domain.timestamps import from_millis
from momently.store.database import Database
from momently.store.events import EventLog
from momently.store.schema import experiment_changes, exposures


@dataclass(frozen=True, slots=True)
class Change:
    version: int
    state: str
    arm: str | None
    by: str
    reason: str
    at_ms: int


class Experiments:
    def __init__(self, db: Database, log_: EventLog) -> None:
        self.db = db
        self.log = log_

    def history(
        self, workspace_id: str, experiment_id: str, *, conn: Connection | None = None
    ) -> list[Change]:
        query = (
            select(
                experiment_changes.c.version,
                experiment_changes.c.state,
                experiment_changes.c.arm,
                experiment_changes.c.by,
                experiment_changes.c.reason,
                experiment_changes.c.at_ms,
            )
            .where(
                experiment_changes.c.workspace_id == workspace_id,
                experiment_changes.c.experiment_id == experiment_id,
            )
            .order_by(experiment_changes.c.version)
        )
        if conn is None:
            with self.db.read() as c:
                rows = c.execute(query).all()
        else:
            rows = conn.execute(query).all()
        return [Change(int(r[0]), str(r[1]), r[2], str(r[3]), str(r[4]), int(r[5])) for r in rows]

    def statuses(self, workspace_id: str) -> dict[str, rules.Status]:
        """The current state of every experiment whose state was ever recorded."""
        with self.db.read() as conn:
            rows = conn.execute(
                select(
                    experiment_changes.c.experiment_id,
                    experiment_changes.c.state,
                    experiment_changes.c.arm,
                    experiment_changes.c.version,
                )
                .where(experiment_changes.c.workspace_id == workspace_id)
                .order_by(experiment_changes.c.version)
            ).all()
        return {str(r[0]): rules.Status(r[1], r[2], int(r[3])) for r in rows}

    def assigned(self, workspace_id: str, experiment_id: str) -> dict[str, int]:
        """People assigned so far, per arm (``holdout`` included)."""
        with self.db.read() as conn:
            rows = conn.execute(
                select(exposures.c.arm, func.count())
                .where(exposures.c.workspace_id == workspace_id, exposures.c.experiment_id == experiment_id)
                .group_by(exposures.c.arm)
            ).all()
        return {str(arm): int(n) for arm, n in rows}

    def change(
        self,
        workspace_id: str,
        experiment: rules.Experiment,
        flow_id: str,
        action: rules.Action,
        *,
        arm: str | None = None,
        by: str,
        reason: str = "",
        now_ms: int,
        only_if_new: bool = False,
    ) -> rules.Status | None:
        """Record ``action``: a new version of the experiment's state, and its event in the
        log. Raises ``rules.InvalidChange`` when it does not apply; with ``only_if_new`` (a
        flow applied again) a start that was recorded before is skipped (returns None)."""
        with self.db.write() as conn:
            past = self.history(workspace_id, experiment.id, conn=conn)
            current = rules.Status(past[-1].state, past[-1].arm, past[-1].version) if past else None  # type: ignore[arg-type]
            if only_if_new and current is not None:
                return None
            status, name = rules.change(current, action, arm, [a.id for a in experiment.arms])
            conn.execute(
                insert(experiment_changes).values(
                    workspace_id=workspace_id,
                    experiment_id=experiment.id,
                    version=status.version,
                    flow_id=flow_id,
                    state=status.state,
                    arm=status.arm,
                    by=by,
                    reason=reason,
                    at_ms=now_ms,
                )
            )
            props: dict[str, Any] = {
                "experiment_id": experiment.id,
                "experiment_name": experiment.name,
                "flow_id": flow_id,
                "version": status.version,
                "by": by,
                "reason": reason,
            }
            if status.arm is not None:
                props["arm"] = status.arm
            at = from_millis(now_ms)
            event = derived_event(
                message_id=f"momently:experiment:{workspace_id}:{experiment.id}:{status.version}",
                name=name,
                user_id=None,
                anonymous_id=None,
                at=at,
                received_at=at,
                properties=props,
            )
            self.log.append(conn, [(workspace_id, event)])
        return status
