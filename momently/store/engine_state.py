"""What the flows engine keeps between batches: segment membership, per-person event history,
durable timers, cohort windows, event names, enrollments and the derived events it emitted.

``reset`` drops the derived part for a replay; enrollments and emitted ids are effects and
are kept, which is what makes a replay unable to enroll (and later send) twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import BindParameter, Connection, and_, bindparam, delete, func, or_, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite

from momently.domain.event import Event
from momently.store.bulk import Bulk, binds
from momently.store.commit_watch import notify
from momently.store.database import Database
from momently.store.events import EventLog
from momently.store.schema import (
    cohort_members,
    deliveries,
    emitted,
    enrollments,
    event_names,
    experiment_changes,
    exposures,
    person_state,
    segment_members,
    timers,
)

_CHUNK = 500
ENROLLMENT_COLUMNS = (
    "workspace_id",
    "flow_id",
    "person_id",
    "occurrence",
    "flow_version",
    "trigger_kind",
    "trigger_seq",
    "decided_ms",
    "outcome",
    "reason",
    "detail",
)
# an outbox row as the flows stage builds it (``Changes.deliveries``), after the workspace
OUTBOX_COLUMNS = (
    "workspace_id",
    "key",
    "flow_id",
    "flow_version",
    "person_id",
    "occurrence",
    "trigger_seq",
    "variant",
    "channels",
    "channel_index",
    "status",
    "attempts",
    "next_attempt_ms",
    "created_ms",
    "updated_ms",
    "kind",
    "due_ms",
)

TimerKey = tuple[str, str, str, str]  # person, kind, owner, key


@dataclass(slots=True)
class Timer:
    due_ms: int
    person_id: str
    kind: str
    owner: str
    key: str = ""
    payload: dict[str, Any] = field(default_factory=dict)
    id: int | None = None  # set when loaded from the table

    @property
    def identity(self) -> TimerKey:
        return (self.person_id, self.kind, self.owner, self.key)


@dataclass(frozen=True, slots=True)
class Enrollment:
    flow_id: str
    person_id: str
    occurrence: str
    flow_version: int
    trigger_kind: str
    trigger_seq: int | None
    decided_ms: int
    outcome: str
    reason: str | None
    detail: dict[str, Any]


class TimerClaimed(RuntimeError):
    """Another engine fired one of this batch's timers first; the batch is recomputed."""


@dataclass(slots=True)
class Changes:
    """Everything one engine batch writes, in the transaction that moves its cursor."""

    members: dict[tuple[str, str], int | None] = field(default_factory=dict)  # (person, seg) -> since | None
    states: dict[str, dict[str, Any]] = field(default_factory=dict)
    fired: list[int] = field(default_factory=list)  # ids of loaded timers that fired
    timers: dict[TimerKey, Timer | None] = field(default_factory=dict)
    cohorts: dict[tuple[str, str, str], tuple[int, int, int] | None] = field(default_factory=dict)
    names: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (count, last)
    enrollments: list[Enrollment] = field(default_factory=list)
    derived: list[Event] = field(default_factory=list)
    merges: list[tuple[str, str]] = field(default_factory=list)  # (loser, winner), in order
    deliveries: list[dict[str, Any]] = field(default_factory=list)  # outbox rows for send decisions
    exposures: list[Exposure] = field(default_factory=list)  # new (or re-drawn) experiment assignments


@dataclass(frozen=True, slots=True)
class Exposure:
    """A person's sticky assignment in one experiment."""

    experiment_id: str
    person_id: str
    arm: str
    salt: str
    first_exposed_ms: int
    flow_id: str
    flow_version: int


class EngineState:
    def __init__(self, db: Database, log_: EventLog) -> None:
        self.db = db
        self.log = log_
        self._insert = postgresql.insert if db.dialect == "postgresql" else sqlite.insert
        self._build_statements()

    def _build_statements(self) -> None:
        """The statements of every engine batch, built once: building them per call cost
        ~70 µs each in SQLAlchemy's construction and cache-key work, a tenth of a live batch."""
        ws: BindParameter[str] = bindparam("ws")
        persons: BindParameter[list[str]] = bindparam("persons", expanding=True)
        self._members = select(
            segment_members.c.person_id, segment_members.c.segment_id, segment_members.c.since_ms
        ).where(segment_members.c.workspace_id == ws, segment_members.c.person_id.in_(persons))
        self._states = select(person_state.c.person_id, person_state.c.data).where(
            person_state.c.workspace_id == ws, person_state.c.person_id.in_(persons)
        )
        self._due = (
            select(timers)
            .where(timers.c.workspace_id == ws, timers.c.due_ms <= bindparam("until"))
            .order_by(timers.c.due_ms, timers.c.id)
            .limit(bindparam("limit"))
        )
        self._last_sends = (
            select(enrollments.c.flow_id, enrollments.c.person_id, func.max(enrollments.c.decided_ms))
            .where(
                enrollments.c.workspace_id == ws,
                enrollments.c.person_id.in_(persons),
                # the holdout counts as sent, so re-entry treats it as the arms it is compared to
                or_(enrollments.c.outcome == "send", enrollments.c.reason == "holdout"),
            )
            .group_by(enrollments.c.person_id, enrollments.c.flow_id)
        )
        self._claim = (
            delete(timers).where(timers.c.id.in_(bindparam("ids", expanding=True))).returning(timers.c.id)
        )
        eng = self.db.engine
        self._disarm = Bulk(
            eng,
            delete(timers).where(
                timers.c.workspace_id == ws,
                timers.c.person_id == bindparam("p"),
                timers.c.kind == bindparam("k"),
                timers.c.owner == bindparam("o"),
                timers.c.key == bindparam("y"),
            ),
            ("ws", "p", "k", "o", "y"),
        )
        timer_names = ("workspace_id", "due_ms", "person_id", "kind", "owner", "key", "payload")
        arm = self._insert(timers).values(binds(timer_names))
        self._arm = Bulk(
            eng,
            arm.on_conflict_do_update(
                index_elements=["workspace_id", "person_id", "kind", "owner", "key"],
                set_={"due_ms": arm.excluded.due_ms, "payload": arm.excluded.payload},
            ),
            timer_names,
        )
        self._leave = Bulk(
            eng,
            delete(segment_members).where(
                segment_members.c.workspace_id == ws,
                segment_members.c.person_id == bindparam("p"),
                segment_members.c.segment_id == bindparam("s"),
            ),
            ("ws", "p", "s"),
        )
        member_names = ("workspace_id", "person_id", "segment_id", "since_ms")
        self._join = Bulk(
            eng,
            self._insert(segment_members).values(binds(member_names)).on_conflict_do_nothing(),
            member_names,
        )
        state_names = ("workspace_id", "person_id", "data")
        state = self._insert(person_state).values(binds(state_names))
        self._save_state = Bulk(
            eng,
            state.on_conflict_do_update(
                index_elements=["workspace_id", "person_id"], set_={"data": state.excluded.data}
            ),
            state_names,
        )
        name_names = ("workspace_id", "name", "count", "last_ms")
        names = self._insert(event_names).values(binds(name_names))
        self._count_names = Bulk(
            eng,
            names.on_conflict_do_update(
                index_elements=["workspace_id", "name"],
                set_={
                    "count": event_names.c.count + names.excluded.count,
                    "last_ms": func.max(event_names.c.last_ms, names.excluded.last_ms)
                    if self.db.dialect == "sqlite"
                    else func.greatest(event_names.c.last_ms, names.excluded.last_ms),
                },
            ),
            name_names,
        )
        self._enroll = Bulk(
            eng,
            self._insert(enrollments).values(binds(ENROLLMENT_COLUMNS)).on_conflict_do_nothing(),
            ENROLLMENT_COLUMNS,
        )
        self._outbox = Bulk(
            eng,
            self._insert(deliveries)
            .values(binds(OUTBOX_COLUMNS))
            .on_conflict_do_nothing(index_elements=["workspace_id", "key"]),
            OUTBOX_COLUMNS,
        )
        self._emitted = select(emitted.c.message_id).where(
            emitted.c.workspace_id == ws, emitted.c.message_id.in_(bindparam("ids", expanding=True))
        )
        self._emit = Bulk(
            eng,
            emitted.insert().values(binds(("workspace_id", "message_id"))),
            ("workspace_id", "message_id"),
        )
        self._next_due = select(func.min(timers.c.due_ms)).where(timers.c.workspace_id == ws)
        self._experiment_states = (
            select(
                experiment_changes.c.experiment_id,
                experiment_changes.c.state,
                experiment_changes.c.arm,
                experiment_changes.c.version,
            )
            .where(experiment_changes.c.workspace_id == ws)
            .order_by(experiment_changes.c.experiment_id, experiment_changes.c.version)
        )
        self._exposures = select(
            exposures.c.experiment_id,
            exposures.c.person_id,
            exposures.c.arm,
            exposures.c.salt,
            exposures.c.first_exposed_ms,
            exposures.c.flow_id,
            exposures.c.flow_version,
        ).where(exposures.c.workspace_id == ws, exposures.c.person_id.in_(persons))
        exposure_names = (
            "workspace_id",
            "experiment_id",
            "person_id",
            "arm",
            "salt",
            "first_exposed_ms",
            "flow_id",
            "flow_version",
        )
        expose = self._insert(exposures).values(binds(exposure_names))
        self._expose = Bulk(
            eng,
            expose.on_conflict_do_update(
                index_elements=["workspace_id", "experiment_id", "person_id"],
                set_={n: expose.excluded[n] for n in exposure_names[3:]},
            ),
            exposure_names,
        )

    # reads -------------------------------------------------------------------------------
    def members(
        self, conn: Connection, workspace_id: str, persons: Iterable[str]
    ) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for chunk in _chunks(persons):
            rows = conn.execute(self._members, {"ws": workspace_id, "persons": chunk}).all()
            for pid, seg, since in rows:
                out.setdefault(str(pid), {})[str(seg)] = int(since)
        return out

    def states(
        self, conn: Connection, workspace_id: str, persons: Iterable[str]
    ) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for chunk in _chunks(persons):
            rows = conn.execute(self._states, {"ws": workspace_id, "persons": chunk}).all()
            out.update({str(pid): orjson.loads(data) for pid, data in rows})
        return out

    def due_timers(self, conn: Connection, workspace_id: str, *, until_ms: int, limit: int) -> list[Timer]:
        rows = conn.execute(self._due, {"ws": workspace_id, "until": until_ms, "limit": limit}).all()
        return [_timer(dict(r._mapping)) for r in rows]

    def next_due(self, workspace_id: str) -> int | None:
        with self.db.read() as conn:
            value = conn.execute(self._next_due, {"ws": workspace_id}).scalar()
        return int(value) if value is not None else None

    def experiment_states(self, conn: Connection, workspace_id: str) -> dict[str, tuple[str, str | None]]:
        """experiment -> (state, shipped arm), for the experiments whose state ever changed
        (the others are running)."""
        out: dict[str, tuple[str, str | None]] = {}
        for exp_id, state, arm, _ in conn.execute(self._experiment_states, {"ws": workspace_id}):
            out[str(exp_id)] = (str(state), arm)
        return out

    def exposures(self, conn: Connection, workspace_id: str, persons: Iterable[str]) -> list[Exposure]:
        out: list[Exposure] = []
        for chunk in _chunks(persons):
            for r in conn.execute(self._exposures, {"ws": workspace_id, "persons": chunk}):
                out.append(
                    Exposure(str(r[0]), str(r[1]), str(r[2]), str(r[3]), int(r[4]), str(r[5]), int(r[6]))
                )
        return out

    def pending_timers(self, workspace_id: str) -> int:
        with self.db.read() as conn:
            return int(
                conn.execute(
                    select(func.count()).select_from(timers).where(timers.c.workspace_id == workspace_id)
                ).scalar_one()
            )

    def cohort(
        self, conn: Connection, workspace_id: str, flow_id: str, area: str
    ) -> dict[str, tuple[int, int, int]]:
        rows = conn.execute(
            select(
                cohort_members.c.person_id,
                cohort_members.c.ts_ms,
                cohort_members.c.seq,
                cohort_members.c.fired,
            ).where(
                cohort_members.c.workspace_id == workspace_id,
                cohort_members.c.flow_id == flow_id,
                cohort_members.c.area == area,
            )
        ).all()
        return {str(r[0]): (int(r[1]), int(r[2]), int(r[3])) for r in rows}

    def last_sends(
        self, conn: Connection, workspace_id: str, pairs: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], int]:
        """(flow, person) -> when that person last got a send decision in that flow (or was held
        out of its experiment: re-entry treats the holdout as sent)."""
        wanted = set(pairs)
        persons = {p for _, p in wanted}
        out: dict[tuple[str, str], int] = {}
        for chunk in _chunks(persons):  # by person: ix_enrollments_person answers it
            rows = conn.execute(self._last_sends, {"ws": workspace_id, "persons": chunk}).all()
            for f, p, ms in rows:
                if (f, p) in wanted:
                    out[(str(f), str(p))] = int(ms)
        return out

    def known_event_names(self, workspace_id: str) -> dict[str, int]:
        with self.db.read() as conn:
            rows = conn.execute(
                select(event_names.c.name, event_names.c.count).where(
                    event_names.c.workspace_id == workspace_id
                )
            ).all()
        return {str(n): int(c) for n, c in rows}

    def segment_members(
        self, workspace_id: str, segment_id: str, *, limit: int, after: str | None = None
    ) -> list[tuple[str, int]]:
        query = select(segment_members.c.person_id, segment_members.c.since_ms).where(
            segment_members.c.workspace_id == workspace_id, segment_members.c.segment_id == segment_id
        )
        if after is not None:
            query = query.where(segment_members.c.person_id > after)
        with self.db.read() as conn:
            rows = conn.execute(query.order_by(segment_members.c.person_id).limit(limit)).all()
        return [(str(p), int(s)) for p, s in rows]

    def segment_sizes(self, workspace_id: str) -> dict[str, int]:
        with self.db.read() as conn:
            rows = conn.execute(
                select(segment_members.c.segment_id, func.count())
                .where(segment_members.c.workspace_id == workspace_id)
                .group_by(segment_members.c.segment_id)
            ).all()
        return {str(s): int(n) for s, n in rows}

    def enrollments(
        self,
        workspace_id: str,
        *,
        flow_id: str | None = None,
        person_id: str | None = None,
        since_ms: int | None = None,
        limit: int = 1000,
    ) -> list[Enrollment]:
        query = select(enrollments).where(enrollments.c.workspace_id == workspace_id)
        if flow_id is not None:
            query = query.where(enrollments.c.flow_id == flow_id)
        if person_id is not None:
            query = query.where(enrollments.c.person_id == person_id)
        if since_ms is not None:
            query = query.where(enrollments.c.decided_ms >= since_ms)
        with self.db.read() as conn:
            rows = conn.execute(
                query.order_by(enrollments.c.decided_ms, enrollments.c.flow_id).limit(limit)
            ).all()
        return [_enrollment(dict(r._mapping)) for r in rows]

    def decision_counts(
        self, workspace_id: str, flow_id: str, *, since_ms: int | None = None
    ) -> dict[str, int]:
        query = select(enrollments.c.outcome, enrollments.c.reason, func.count()).where(
            enrollments.c.workspace_id == workspace_id, enrollments.c.flow_id == flow_id
        )
        if since_ms is not None:
            query = query.where(enrollments.c.decided_ms >= since_ms)
        with self.db.read() as conn:
            rows = conn.execute(query.group_by(enrollments.c.outcome, enrollments.c.reason)).all()
        return {(str(r[1]) if r[1] else str(r[0])): int(r[2]) for r in rows}

    # writes ------------------------------------------------------------------------------
    def save(self, conn: Connection, workspace_id: str, ch: Changes) -> None:
        ws = workspace_id
        for chunk in _chunks(ch.fired):
            claimed = conn.execute(self._claim, {"ids": chunk}).all()
            if len(claimed) != len(chunk):
                raise TimerClaimed(f"{len(chunk) - len(claimed)} timers were fired by another engine")
        for loser, winner in ch.merges:
            self.repoint(conn, ws, loser, winner)
        self._disarm.run(conn, [(ws, *key) for key, t in ch.timers.items() if t is None])
        self._arm.run(
            conn,
            [
                (ws, t.due_ms, t.person_id, t.kind, t.owner, t.key, orjson.dumps(t.payload).decode())
                for t in ch.timers.values()
                if t is not None
            ],
        )
        self._leave.run(conn, [(ws, p, s) for (p, s), since in ch.members.items() if since is None])
        self._join.run(conn, [(ws, p, s, since) for (p, s), since in ch.members.items() if since is not None])
        self._save_state.run(conn, [(ws, p, orjson.dumps(d).decode()) for p, d in ch.states.items()])
        self._save_cohorts(conn, ws, ch.cohorts)
        self._count_names.run(conn, [(ws, n, c, last) for n, (c, last) in ch.names.items()])
        self._enroll.run(
            conn,
            [
                (
                    ws,
                    e.flow_id,
                    e.person_id,
                    e.occurrence,
                    e.flow_version,
                    e.trigger_kind,
                    e.trigger_seq,
                    e.decided_ms,
                    e.outcome,
                    e.reason,
                    orjson.dumps(e.detail).decode(),
                )
                for e in ch.enrollments
            ],
        )
        if ch.deliveries:
            self._outbox.run(conn, [(ws, *(row[n] for n in OUTBOX_COLUMNS[1:])) for row in ch.deliveries])
            notify(conn)  # a dispatcher in another process wakes at commit (PostgreSQL)
        self._expose.run(
            conn,
            [
                (
                    ws,
                    x.experiment_id,
                    x.person_id,
                    x.arm,
                    x.salt,
                    x.first_exposed_ms,
                    x.flow_id,
                    x.flow_version,
                )
                for x in ch.exposures
            ],
        )
        if ch.derived:
            ids = [ev.message_id for ev in ch.derived]
            seen: set[str] = set()
            for chunk in _chunks(ids):
                seen.update(str(r[0]) for r in conn.execute(self._emitted, {"ws": ws, "ids": chunk}))
            fresh: list[Event] = []
            for ev in ch.derived:
                if ev.message_id not in seen:
                    seen.add(ev.message_id)
                    fresh.append(ev)
            if fresh:
                self._emit.run(conn, [(ws, ev.message_id) for ev in fresh])
                self.log.append(conn, [(ws, ev) for ev in fresh])

    def _save_cohorts(
        self, conn: Connection, ws: str, cohorts: Mapping[tuple[str, str, str], tuple[int, int, int] | None]
    ) -> None:
        gone = [k for k, v in cohorts.items() if v is None]
        if gone:
            conn.execute(
                delete(cohort_members).where(
                    cohort_members.c.workspace_id == ws,
                    cohort_members.c.flow_id == bindparam("f"),
                    cohort_members.c.area == bindparam("a"),
                    cohort_members.c.person_id == bindparam("p"),
                ),
                [{"f": f, "a": a, "p": p} for f, a, p in gone],
            )
        kept = [(k, v) for k, v in cohorts.items() if v is not None]
        if kept:
            stmt = self._insert(cohort_members)
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["workspace_id", "flow_id", "area", "person_id"],
                    set_={
                        "ts_ms": stmt.excluded.ts_ms,
                        "seq": stmt.excluded.seq,
                        "fired": stmt.excluded.fired,
                    },
                ),
                [
                    {
                        "workspace_id": ws,
                        "flow_id": f,
                        "area": a,
                        "person_id": p,
                        "ts_ms": ts,
                        "seq": seq,
                        "fired": fired,
                    }
                    for (f, a, p), (ts, seq, fired) in kept
                ],
            )

    def repoint(self, conn: Connection, workspace_id: str, loser: str, winner: str) -> None:
        """Two people turned out to be one: the loser's timers and cohort places move to the
        winner unless the winner already has the same one; its memberships and state go (the
        engine re-evaluates the winner's segments after a merge)."""
        ws = workspace_id
        for table, cols in ((timers, ("kind", "owner", "key")), (cohort_members, ("flow_id", "area"))):
            mine = select(*[table.c[c] for c in cols]).where(
                table.c.workspace_id == ws, table.c.person_id == winner
            )
            conn.execute(
                delete(table).where(
                    table.c.workspace_id == ws,
                    table.c.person_id == loser,
                    tuple_(*[table.c[c] for c in cols]).in_(mine),
                )
            )
            conn.execute(
                update(table)
                .where(table.c.workspace_id == ws, table.c.person_id == loser)
                .values(person_id=winner)
            )
        for table in (segment_members, person_state):
            conn.execute(delete(table).where(table.c.workspace_id == ws, table.c.person_id == loser))
        self._merge_exposures(conn, ws, loser, winner)
        conn.execute(
            update(enrollments)
            .where(
                enrollments.c.workspace_id == ws,
                enrollments.c.person_id == loser,
                ~tuple_(enrollments.c.flow_id, enrollments.c.occurrence).in_(
                    select(enrollments.c.flow_id, enrollments.c.occurrence).where(
                        and_(enrollments.c.workspace_id == ws, enrollments.c.person_id == winner)
                    )
                ),
            )
            .values(person_id=winner)
        )

    def _merge_exposures(self, conn: Connection, ws: str, loser: str, winner: str) -> None:
        """In each experiment both people were assigned in, the earlier assignment wins (the
        winner's on a tie); the loser's others become the winner's."""
        mine = exposures.alias("mine")
        theirs = exposures.alias("theirs")
        earlier_theirs = select(theirs.c.experiment_id).where(
            theirs.c.workspace_id == ws,
            theirs.c.person_id == loser,
            theirs.c.experiment_id == exposures.c.experiment_id,
            theirs.c.first_exposed_ms < exposures.c.first_exposed_ms,
        )
        conn.execute(
            delete(exposures).where(
                exposures.c.workspace_id == ws, exposures.c.person_id == winner, earlier_theirs.exists()
            )
        )
        kept_mine = select(mine.c.experiment_id).where(mine.c.workspace_id == ws, mine.c.person_id == winner)
        conn.execute(
            delete(exposures).where(
                exposures.c.workspace_id == ws,
                exposures.c.person_id == loser,
                exposures.c.experiment_id.in_(kept_mine),
            )
        )
        conn.execute(
            update(exposures)
            .where(exposures.c.workspace_id == ws, exposures.c.person_id == loser)
            .values(person_id=winner)
        )

    def reset(self, conn: Connection, workspace_id: str) -> None:
        for table in (segment_members, person_state, timers, cohort_members, event_names):
            conn.execute(delete(table).where(table.c.workspace_id == workspace_id))


def _chunks(items: Iterable[Any]) -> Iterable[list[Any]]:
    values = list(items)
    for i in range(0, len(values), _CHUNK):
        yield values[i : i + _CHUNK]


def _timer(m: Mapping[str, Any]) -> Timer:
    return Timer(
        due_ms=int(m["due_ms"]),
        person_id=str(m["person_id"]),
        kind=str(m["kind"]),
        owner=str(m["owner"]),
        key=str(m["key"]),
        payload=orjson.loads(m["payload"]),
        id=int(m["id"]),
    )


def _enrollment(m: Mapping[str, Any]) -> Enrollment:
    return Enrollment(
        flow_id=str(m["flow_id"]),
        person_id=str(m["person_id"]),
        occurrence=str(m["occurrence"]),
        flow_version=int(m["flow_version"]),
        trigger_kind=str(m["trigger_kind"]),
        trigger_seq=int(m["trigger_seq"]) if m["trigger_seq"] is not None else None,
        decided_ms=int(m["decided_ms"]),
        outcome=str(m["outcome"]),
        reason=m["reason"],
        detail=orjson.loads(m["detail"]),
    )
