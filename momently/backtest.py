"""``momently flows backtest``: run history through one flow without sending anything.

The workspace's whole log is copied into a scratch SQLite database next to nothing else,
the flow (stored or from a file) and the workspace's segments are applied there, and the
real engine runs it up to now on virtual time. Enrollments decided since ``since`` are then
counted by outcome and reason. The live database is only read.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, update

from momently.clock import ManualClock
from momently.domain.timestamps import to_millis
from momently.services import Services
from momently.settings import Settings
from momently.store.schema import events, workspaces

COPY_CHUNK = 5000


@dataclass(frozen=True, slots=True)
class BacktestReport:
    flow_id: str
    flow_version: int
    since_ms: int
    until_ms: int
    events: int
    people_enrolled: int
    decisions: dict[str, int] = field(default_factory=dict)  # "send" or a suppression reason -> count

    def as_json(self) -> dict[str, Any]:
        return {
            "flow": self.flow_id,
            "flowVersion": self.flow_version,
            "since": self.since_ms,
            "until": self.until_ms,
            "eventsReplayed": self.events,
            "peopleEnrolled": self.people_enrolled,
            "decisions": self.decisions,
        }


def backtest(
    source: Services,
    workspace_id: str,
    flow: dict[str, Any],
    *,
    since: datetime,
    until: datetime,
    progress: Callable[[str, int, int], None] | None = None,
) -> BacktestReport:
    """``flow`` is a validated flow document (without ``kind``)."""
    with tempfile.TemporaryDirectory(prefix="momently-backtest-") as tmp:
        clock = ManualClock(until)
        scratch = Services.build(
            Settings(
                database_url=f"sqlite:///{Path(tmp) / 'backtest.db'}",
                run_engine=False,
                allowed_lateness_seconds=source.settings.allowed_lateness_seconds,
            ),
            clock=clock,
        )
        try:
            scratch.workspaces.create(workspace_id, name="backtest", now=until)
            copied = _copy_log(source, scratch, workspace_id, progress)
            now_ms = to_millis(until)
            # the workspace's allowed lateness decides when deadlines act: the same as live
            scratch.guardrails.put(
                workspace_id, source.guardrails.get(workspace_id, fresh=True), now_ms=now_ms
            )
            for seg in source.definitions.heads(workspace_id, "segment"):
                if seg.status != "archived":
                    scratch.definitions.apply(
                        workspace_id, "segment", seg.id, seg.body, source="backtest", now_ms=now_ms
                    )
            applied = scratch.definitions.apply(
                workspace_id, "flow", flow["id"], flow, source="backtest", now_ms=now_ms
            )
            scratch.projector.run_until_idle(progress)
            rows = scratch.engine_state.enrollments(
                workspace_id, flow_id=flow["id"], since_ms=to_millis(since), limit=10_000_000
            )
        finally:
            scratch.close()
    decisions = Counter(r.reason or r.outcome for r in rows)
    return BacktestReport(
        flow_id=flow["id"],
        flow_version=applied.version,
        since_ms=to_millis(since),
        until_ms=to_millis(until),
        events=copied,
        people_enrolled=len({r.person_id for r in rows if r.outcome == "send"}),
        decisions=dict(sorted(decisions.items())),
    )


def _copy_log(
    source: Services, target: Services, workspace_id: str, progress: Callable[[str, int, int], None] | None
) -> int:
    """Copy every event row as stored (sequence numbers included)."""
    ws = source.workspaces.get(workspace_id)
    if ws is None:
        raise LookupError(f"no workspace {workspace_id!r}")
    after = 0
    copied = 0
    while True:
        with source.db.read() as conn:
            rows = conn.execute(
                select(events)
                .where(events.c.workspace_id == workspace_id, events.c.seq > after)
                .order_by(events.c.seq)
                .limit(COPY_CHUNK)
            ).all()
        if not rows:
            break
        with target.db.write() as conn:
            conn.execute(insert(events), [dict(r._mapping) for r in rows])
            conn.execute(
                update(workspaces).where(workspaces.c.id == workspace_id).values(last_seq=int(rows[-1].seq))
            )
        after = int(rows[-1].seq)
        copied += len(rows)
        if progress is not None:
            progress(f"copy {workspace_id}", after, ws.last_seq)
    return copied
