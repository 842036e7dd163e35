"""Experiment outcomes, folded from the log: each person's first ``Experiment Viewed`` per
experiment becomes an exposure (``experiment_exposures``); every later event of the person
updates its outcomes (``domain.outcomes.observe``), and the change it makes to each metric
is added to the per arm, day and metric sums (``experiment_stats``).

A consumer of its own, behind the profile projector: it reads no further than the profiles
cursor, so every event it folds has its person in ``identities`` and ``person_events``. Each
batch is computed from a snapshot and written in one transaction with its cursor
(compare-and-set, as ``engine.profile_projector``): a crash re-does the batch, two consumers
never both apply it, and ``replay`` (reset, refold) gives the same tables.

When an exposure arrives, the person's events already in the log (stamped from 30 days before
it on) are folded into it at once: its covariate, and outcomes logged before the exposure was
(an event the engine had not yet turned into an exposure). Events after it in the log are
folded as they come, so each event counts once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection

from momently.domain.conditions import ALWAYS, Condition, Facts, compile_condition
from momently.domain.durations import parse_duration
from momently.domain.outcomes import (
    DEFAULT_GOAL_WINDOW_MS,
    PRE_WINDOW_MS,
    Exposure,
    Viewed,
    delta,
    observe,
    viewed,
)
from momently.domain.profile import LoggedEvent, Profile
from momently.engine.background import Background, LoopHealth
from momently.engine.profile_projector import CONSUMER as PROFILES
from momently.store.database import Database
from momently.store.definitions import Definitions, UnknownDefinition
from momently.store.events import EventLog
from momently.store.experiment_outcomes import OutcomeStore, StatKey, Sums
from momently.store.profiles import CursorMoved, ProfileStore

log = logging.getLogger(__name__)

CONSUMER = "experiment-outcomes"


class MergedMeanwhile(RuntimeError):
    pass


class _Goal:
    """A flow version's goal, compiled once."""

    __slots__ = ("event", "where", "within_ms")

    def __init__(self, body: dict[str, Any] | None) -> None:
        goal = body.get("goal") if isinstance(body, dict) else None
        if isinstance(goal, dict) and isinstance(goal.get("event"), str):
            self.event: str | None = goal["event"]
            self.within_ms = parse_duration(goal["within"])
            self.where: Condition = compile_condition(goal.get("where"))
        else:
            self.event, self.within_ms, self.where = None, DEFAULT_GOAL_WINDOW_MS, ALWAYS


class ExperimentProjector:
    def __init__(
        self,
        db: Database,
        log_: EventLog,
        profiles: ProfileStore,
        definitions: Definitions,
        store: OutcomeStore,
        *,
        batch_size: int = 5000,
        default_timezone: str = "UTC",
    ) -> None:
        self.db = db
        self.log = log_
        self.profiles = profiles
        self.definitions = definitions
        self.store = store
        self.batch_size = batch_size
        self.default_timezone = default_timezone
        self._goals: dict[tuple[str, str, int], _Goal] = {}
        self._loop = Background("experiments", self.run_once, idle_seconds=1.0)

    # driving ---------------------------------------------------------------------------
    def wake(self) -> None:
        self._loop.wake()

    def start(self, *, idle_poll_seconds: float = 1.0) -> None:
        self._loop.start(idle_poll_seconds)

    def stop(self) -> None:
        self._loop.stop()

    def health(self) -> LoopHealth:
        return self._loop.health()

    def run_once(self) -> int:
        """One batch per workspace whose profiles are ahead of this consumer."""
        done = 0
        for workspace_id, cursor, last_seq in self.profiles.backlog(CONSUMER):
            if cursor < last_seq:
                done += self.process_batch(workspace_id)
        return done

    def run_until_idle(self) -> int:
        total = 0
        while done := self.run_once():
            total += done
        return total

    def replay(self, workspace_id: str) -> int:
        """Rebuild the workspace's exposures and statistics from the first event."""
        with self.db.write() as conn:
            self.store.reset(conn, workspace_id, CONSUMER)
        return self.run_until_idle()

    # one batch -------------------------------------------------------------------------
    def process_batch(self, workspace_id: str) -> int:
        with self.db.read() as conn:
            cursor = self.profiles.cursor(conn, CONSUMER, workspace_id)
            bound = self.profiles.cursor(conn, PROFILES, workspace_id)
            if bound <= cursor:
                return 0
            batch = self.log.read_in(conn, workspace_id, after_seq=cursor, limit=self.batch_size)
            batch = [ev for ev in batch if ev.seq <= bound]
            if not batch:
                return 0
            changed, resolved = self._fold(conn, workspace_id, batch)
        # people found through the identity map had a profile when read; one that has none at
        # write time was merged away (or erased) meanwhile
        touched = {pid for pid, _ in changed} & resolved
        sums: dict[StatKey, Sums] = {}
        for old, new in changed.values():
            for metric, d in delta(old, new).items():
                key = (new.experiment_id, new.arm, new.day, metric)
                sums[key] = _add(sums[key], d) if key in sums else d
        try:
            # derived state moved with its cursor: as the engine's batches, not waiting for the disk
            with self.db.write(durable=False) as conn:
                self.profiles.advance_cursor(conn, CONSUMER, workspace_id, old=cursor, new=batch[-1].seq)
                # the engine runs ahead: a person merged away since our snapshot has their
                # exposures under the survivor now, and writing ours would bring the old id back
                if touched and self.store.gone(conn, workspace_id, touched):
                    raise MergedMeanwhile(workspace_id)
                self.store.save(conn, workspace_id, [new for _, new in changed.values()], sums)
        except CursorMoved:
            log.info("another consumer folded experiment outcomes of %s first", workspace_id)
            return 0
        except MergedMeanwhile:
            log.info("a person of this batch of %s was merged meanwhile; recomputing", workspace_id)
            return 0
        return len(batch)

    def _fold(
        self, conn: Connection, workspace_id: str, batch: list[LoggedEvent]
    ) -> tuple[dict[tuple[str, str], tuple[Exposure | None, Exposure]], set[str]]:
        """Every exposure the batch created or changed: (as stored before, as it is now), and
        the people the identity map named."""
        if not any(viewed(ev) is not None for ev in batch) and not self.store.any(conn, workspace_id):
            return {}, set()  # no experiment in this workspace yet: nothing to resolve or read
        people, resolved = self._people(conn, workspace_id, batch)
        exposures = self.store.load(conn, workspace_id, {p for p in people if p is not None})
        originals = {(p, e): x for p, byexp in exposures.items() for e, x in byexp.items()}
        changed: dict[tuple[str, str], tuple[Exposure | None, Exposure]] = {}
        arriving = self._arriving(conn, workspace_id, batch, people, exposures)
        histories = self._histories(conn, workspace_id, arriving)
        profile_cache: dict[str, Profile] = {}

        def hit(pid: str, goal: _Goal) -> Callable[[LoggedEvent], bool]:
            def matches(ev: LoggedEvent) -> bool:
                if goal.where is ALWAYS:
                    return True
                if pid not in profile_cache:
                    loaded = self.profiles.load(conn, workspace_id, [pid]).get(pid)
                    profile_cache[pid] = loaded or Profile(person_id=pid)
                return goal.where(_facts(profile_cache[pid], ev, self.default_timezone))

            return matches

        for ev, pid in zip(batch, people, strict=True):
            if pid is None:
                continue
            new = arriving.get(ev.seq)
            mine = exposures.setdefault(pid, {})
            for experiment, x in list(mine.items()):
                if x is new:
                    continue
                goal = self._goal(conn, workspace_id, x.flow_id, x.flow_version)
                after = observe(x, ev, hit(pid, goal))
                if after is not x:
                    mine[experiment] = after
                    changed[(pid, experiment)] = (originals.get((pid, experiment)), after)
            if new is not None:
                goal = self._goal(conn, workspace_id, new.flow_id, new.flow_version)
                for old_ev in histories.get(pid, []):
                    if old_ev.seq < new.seq and old_ev.time_ms >= new.exposed_ms - PRE_WINDOW_MS:
                        new = observe(new, old_ev, hit(pid, goal))
                mine[new.experiment_id] = new
                changed[(pid, new.experiment_id)] = (None, new)
                arriving[ev.seq] = new
        return changed, resolved

    def _people(
        self, conn: Connection, workspace_id: str, batch: list[LoggedEvent]
    ) -> tuple[list[str | None], set[str]]:
        """Each event's person as the identity map knows them now (userId first, as the profile
        projector resolves): after a merge, the survivor. An exposure's ``person_id`` is used
        only for an event without a known identity."""
        wanted: set[tuple[str, str]] = set()
        for ev in batch:
            if ev.user_id is not None:
                wanted.add(("user", ev.user_id))
            if ev.anonymous_id is not None:
                wanted.add(("anon", ev.anonymous_id))
        known = self.profiles.lookup_identities(conn, workspace_id, wanted)
        resolved = set(known.values())
        out: list[str | None] = []
        for ev in batch:
            person = known.get(("user", ev.user_id)) if ev.user_id is not None else None
            if person is None and ev.anonymous_id is not None:
                person = known.get(("anon", ev.anonymous_id))
            if person is None:
                seen = viewed(ev)
                person = seen.person_id if seen is not None else None
            out.append(person)
        return out, resolved

    def _arriving(
        self,
        conn: Connection,
        workspace_id: str,
        batch: list[LoggedEvent],
        people: list[str | None],
        exposures: dict[str, dict[str, Exposure]],
    ) -> dict[int, Exposure]:
        """The batch's first exposures (log seq -> exposure, outcomes not yet folded); later
        views of a person already exposed to the experiment are ignored."""
        out: dict[int, Exposure] = {}
        taken = {(p, e) for p, byexp in exposures.items() for e in byexp}
        for ev, pid in zip(batch, people, strict=True):
            seen: Viewed | None = viewed(ev)
            if seen is None or pid is None or (pid, seen.experiment_id) in taken:
                continue
            taken.add((pid, seen.experiment_id))
            goal = self._goal(conn, workspace_id, seen.flow_id, seen.flow_version)
            out[ev.seq] = Exposure(
                experiment_id=seen.experiment_id,
                person_id=pid,
                arm=seen.arm,
                flow_id=seen.flow_id,
                flow_version=seen.flow_version,
                exposed_ms=ev.time_ms,
                seq=ev.seq,
                goal_event=goal.event,
                window_ms=goal.within_ms,
            )
        return out

    def _histories(
        self, conn: Connection, workspace_id: str, arriving: dict[int, Exposure]
    ) -> dict[str, list[LoggedEvent]]:
        if not arriving:
            return {}
        xs = list(arriving.values())
        return self.store.history(
            conn,
            workspace_id,
            {x.person_id for x in xs},
            since_ms=min(x.exposed_ms for x in xs) - PRE_WINDOW_MS,
            before_seq=max(x.seq for x in xs),
        )

    def _goal(self, conn: Connection, workspace_id: str, flow_id: str, version: int) -> _Goal:
        key = (workspace_id, flow_id, version)
        goal = self._goals.get(key)
        if goal is None:
            try:
                if version > 0:
                    body = self.definitions.body(conn, workspace_id, "flow", flow_id, version)
                else:
                    body = self.definitions.get(workspace_id, "flow", flow_id).body
            except UnknownDefinition:
                body = None
            goal = self._goals[key] = _Goal(body)
        return goal


def _facts(profile: Profile, ev: LoggedEvent, default_timezone: str) -> Facts:
    """A goal's ``where`` sees the event and the person's profile as it is when the event is
    folded (as the dispatcher's goal check does)."""
    try:
        tz = ZoneInfo(profile.timezone or default_timezone)
    except (ValueError, KeyError):
        tz = ZoneInfo("UTC")
    return Facts(profile=profile, now_ms=ev.time_ms, tz=tz, event=ev.body)


def _add(a: Sums, b: Sums) -> Sums:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3], a[4] + b[4], a[5] + b[5])
