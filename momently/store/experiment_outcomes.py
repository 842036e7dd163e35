"""Experiment exposures and their per arm, day and metric sufficient statistics.

Derived from the log by ``engine.experiment_projector`` (rebuilt by ``momently replay``).
``experiment_stats`` rows only ever move by the difference an exposure's change makes
(``domain.outcomes.delta``), added in SQL, so two batches never overwrite each other's
sums and a report reads O(arms x days x metrics) rows whatever the number of exposures.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from momently.domain.outcomes import Exposure
from momently.domain.profile import LoggedEvent
from momently.store.bulk import Bulk, binds
from momently.store.database import Database
from momently.store.events import _logged, _select_logged
from momently.store.schema import (
    cursors,
    events,
    experiment_exposures,
    experiment_stats,
    person_events,
    profiles,
)

_CHUNK = 500

EXPOSURE_COLUMNS = (
    "workspace_id",
    "experiment_id",
    "person_id",
    "arm",
    "flow_id",
    "flow_version",
    "exposed_ms",
    "seq",
    "day",
    "goal_event",
    "window_ms",
    "converted_ms",
    "revenue",
    "active_ms",
    "ordered_ms",
    "unsubscribed_ms",
    "complained_ms",
    "failed_ms",
    "pre_revenue",
    "pre_events",
)
STAT_COLUMNS = ("n", "sum", "sum_squares", "cov_sum", "cov_sum_squares", "sum_products")
STAT_KEY = ("workspace_id", "experiment_id", "arm", "day", "metric")

StatKey = tuple[str, str, int, str]  # experiment, arm, day, metric
Sums = tuple[int, float, float, float, float, float]


@dataclass(frozen=True, slots=True)
class StatRow:
    arm: str
    day: int
    metric: str
    n: int
    sum: float
    sum_squares: float
    cov_sum: float
    cov_sum_squares: float
    sum_products: float


class OutcomeStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        insert = postgresql.insert if db.dialect == "postgresql" else sqlite.insert
        upsert = insert(experiment_exposures).values(binds(EXPOSURE_COLUMNS))
        self._save = Bulk(
            db.engine,
            upsert.on_conflict_do_update(
                index_elements=["workspace_id", "experiment_id", "person_id"],
                set_={c: upsert.excluded[c] for c in EXPOSURE_COLUMNS[3:]},
            ),
            EXPOSURE_COLUMNS,
        )
        add = insert(experiment_stats).values(binds((*STAT_KEY, *STAT_COLUMNS)))
        self._add = Bulk(
            db.engine,
            add.on_conflict_do_update(
                index_elements=list(STAT_KEY),
                set_={c: experiment_stats.c[c] + add.excluded[c] for c in STAT_COLUMNS},
            ),
            (*STAT_KEY, *STAT_COLUMNS),
        )
        self._load = select(experiment_exposures).where(
            experiment_exposures.c.workspace_id == bindparam("ws"),
            experiment_exposures.c.person_id.in_(bindparam("ids", expanding=True)),
        )
        # two lookups, each on its primary key: joined, SQLite's planner walked the log instead
        self._seqs = select(person_events.c.person_id, person_events.c.seq).where(
            person_events.c.workspace_id == bindparam("ws"),
            person_events.c.person_id.in_(bindparam("ids", expanding=True)),
            person_events.c.seq < bindparam("before"),
        )
        self._events = _select_logged().where(
            events.c.workspace_id == bindparam("ws"),
            events.c.seq.in_(bindparam("seqs", expanding=True)),
            events.c.timestamp_ms >= bindparam("since"),
        )

    def load(
        self, conn: Connection, workspace_id: str, people: Iterable[str]
    ) -> dict[str, dict[str, Exposure]]:
        """person -> experiment -> exposure, for the people that have any."""
        ids = sorted(set(people))
        out: dict[str, dict[str, Exposure]] = {}
        for i in range(0, len(ids), _CHUNK):
            for r in conn.execute(self._load, {"ws": workspace_id, "ids": ids[i : i + _CHUNK]}).all():
                x = _exposure(dict(r._mapping))
                out.setdefault(x.person_id, {})[x.experiment_id] = x
        return out

    def gone(self, conn: Connection, workspace_id: str, people: Iterable[str]) -> set[str]:
        """Which of these people no longer have a profile: merged into another (or erased)
        since the batch read them, so what it computed for them must not be written."""
        ids = sorted(set(people))
        present: set[str] = set()
        for i in range(0, len(ids), _CHUNK):
            present.update(
                str(r[0])
                for r in conn.execute(
                    select(profiles.c.person_id).where(
                        profiles.c.workspace_id == workspace_id, profiles.c.person_id.in_(ids[i : i + _CHUNK])
                    )
                )
            )
        return set(ids) - present

    def any(self, conn: Connection, workspace_id: str) -> bool:
        """Whether the workspace has any exposure (most batches of most workspaces: no)."""
        found = conn.execute(
            select(experiment_exposures.c.person_id)
            .where(experiment_exposures.c.workspace_id == workspace_id)
            .limit(1)
        ).first()
        return found is not None

    def history(
        self, conn: Connection, workspace_id: str, people: Iterable[str], *, since_ms: int, before_seq: int
    ) -> dict[str, list[LoggedEvent]]:
        """The people's events logged before ``before_seq`` and stamped from ``since_ms`` on
        (``timestamp_ms``: a superset of ``time_ms``), in log order, through the person ->
        events index the profile projector keeps."""
        ids = sorted(set(people))
        owner: dict[int, str] = {}
        for i in range(0, len(ids), _CHUNK):
            params = {"ws": workspace_id, "ids": ids[i : i + _CHUNK], "before": before_seq}
            owner.update({int(r[1]): str(r[0]) for r in conn.execute(self._seqs, params).all()})
        seqs = sorted(owner)
        found: list[LoggedEvent] = []
        for i in range(0, len(seqs), _CHUNK):
            params = {"ws": workspace_id, "seqs": seqs[i : i + _CHUNK], "since": since_ms}
            found += [_logged(r) for r in conn.execute(self._events, params).all()]
        out: dict[str, list[LoggedEvent]] = {}
        for ev in sorted(found, key=lambda e: e.seq):
            out.setdefault(owner[ev.seq], []).append(ev)
        return out

    def save(
        self,
        conn: Connection,
        workspace_id: str,
        exposures: Sequence[Exposure],
        sums: Mapping[StatKey, Sums],
    ) -> None:
        """Write changed exposures and add ``sums`` to the statistics, in the caller's
        transaction (the consumer's, with its cursor)."""
        # in key order, as the stats below: concurrent writers lock rows in one order
        ordered = sorted(exposures, key=lambda x: (x.experiment_id, x.person_id))
        self._save.run(conn, [_row(workspace_id, x) for x in ordered])
        self._add.run(conn, [(workspace_id, *key, *value) for key, value in sorted(sums.items())])

    def reset(self, conn: Connection, workspace_id: str, consumer: str) -> None:
        """Drop everything derived for a workspace, ready for a replay from the start."""
        for table in (experiment_exposures, experiment_stats):
            conn.execute(delete(table).where(table.c.workspace_id == workspace_id))
        conn.execute(
            delete(cursors).where(cursors.c.workspace_id == workspace_id, cursors.c.consumer == consumer)
        )

    def stats(
        self, workspace_id: str, experiment_id: str, *, first_day: int | None, last_day: int | None
    ) -> list[StatRow]:
        """The statistics rows of one experiment over a range of exposure days (inclusive)."""
        t = experiment_stats.c
        query = select(
            t.arm, t.day, t.metric, t.n, t.sum, t.sum_squares, t.cov_sum, t.cov_sum_squares, t.sum_products
        ).where(t.workspace_id == workspace_id, t.experiment_id == experiment_id)
        if first_day is not None:
            query = query.where(t.day >= first_day)
        if last_day is not None:
            query = query.where(t.day <= last_day)
        with self.db.read() as conn:
            rows = conn.execute(query).all()
        # positional: a few thousand rows, where reading columns by name cost more than the query
        return [StatRow(*r) for r in rows]

    def exposures(self, workspace_id: str, experiment_id: str) -> list[Exposure]:
        """Every exposure of an experiment (tests and audits; reports read ``stats``)."""
        with self.db.read() as conn:
            rows = conn.execute(
                select(experiment_exposures)
                .where(
                    experiment_exposures.c.workspace_id == workspace_id,
                    experiment_exposures.c.experiment_id == experiment_id,
                )
                .order_by(experiment_exposures.c.person_id)
            ).all()
        return [_exposure(dict(r._mapping)) for r in rows]


def exposure_row(workspace_id: str, x: Exposure) -> tuple[Any, ...]:
    """An exposure as a row in ``EXPOSURE_COLUMNS`` order."""
    return _row(workspace_id, x)


def _row(workspace_id: str, x: Exposure) -> tuple[Any, ...]:
    return (
        workspace_id,
        x.experiment_id,
        x.person_id,
        x.arm,
        x.flow_id,
        x.flow_version,
        x.exposed_ms,
        x.seq,
        x.day,
        x.goal_event,
        x.window_ms,
        x.converted_ms,
        x.revenue,
        x.active_ms,
        x.ordered_ms,
        x.unsubscribed_ms,
        x.complained_ms,
        x.failed_ms,
        x.pre_revenue,
        x.pre_events,
    )


def _exposure(m: Mapping[str, Any]) -> Exposure:
    return Exposure(
        experiment_id=str(m["experiment_id"]),
        person_id=str(m["person_id"]),
        arm=str(m["arm"]),
        flow_id=str(m["flow_id"]),
        flow_version=int(m["flow_version"]),
        exposed_ms=int(m["exposed_ms"]),
        seq=int(m["seq"]),
        goal_event=m["goal_event"],
        window_ms=int(m["window_ms"]),
        converted_ms=m["converted_ms"],
        revenue=float(m["revenue"]),
        active_ms=m["active_ms"],
        ordered_ms=m["ordered_ms"],
        unsubscribed_ms=m["unsubscribed_ms"],
        complained_ms=m["complained_ms"],
        failed_ms=m["failed_ms"],
        pre_revenue=float(m["pre_revenue"]),
        pre_events=int(m["pre_events"]),
    )
