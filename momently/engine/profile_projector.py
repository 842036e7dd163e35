"""The engine's pipeline: folds the event log, in sequence order per workspace, into
profiles, and hands each event to the flows stage (``engine.flows``: segments, triggers,
timers, enrollments).

Each batch is computed from a snapshot and written in one transaction together with the
consumer cursor (compare-and-set), so a crash mid-batch or a second projector can never
apply an event twice or skip one. ``run_until_idle`` drains deterministically for tests,
the CLI and replays; ``start`` runs the same loop in a thread, woken by the log writer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Connection

from momently.clock import Clock, SystemClock
from momently.domain import consent, trust
from momently.domain.identity import Identity, resolve
from momently.domain.profile import LoggedEvent, Profile, apply, merge
from momently.domain.timestamps import to_millis
from momently.engine.background import Background, LoopHealth
from momently.engine.flows import FlowStage, Pass
from momently.engine.person_cache import PersonCache, WorkspaceCache
from momently.store.consent import ConsentLedger, phone_key
from momently.store.database import Database
from momently.store.engine_state import TimerClaimed
from momently.store.events import EventLog
from momently.store.people import People
from momently.store.profiles import CursorMoved, ProfileStore

log = logging.getLogger(__name__)

CONSUMER = "profiles"
CONSENT_CONSUMER = "consent-traits"
RETENTION_EVERY_MS = 3_600_000


class ErasedMeanwhile(RuntimeError):
    pass


@dataclass(slots=True)
class _Batch:
    """Working state of one batch: what the database knew plus what this batch decided."""

    workspace_id: str
    known: dict[Identity, str]
    profiles: dict[str, Profile]
    links: dict[Identity, str] = field(default_factory=dict)
    merged: dict[str, str] = field(default_factory=dict)
    event_rows: list[tuple[str, int]] = field(default_factory=list)
    changed: set[str] = field(default_factory=set)


def _phone_keys(batch: _Batch, ev: LoggedEvent) -> list[str]:
    """The consent key of the phone number of the person this event is about, if known."""
    keys: list[str] = []
    ids = [("user", ev.user_id)] if ev.user_id else []
    ids += [("anon", ev.anonymous_id)] if ev.anonymous_id else []
    for identity in ids:
        person = batch.links.get(identity) or batch.known.get(identity)
        while person in batch.merged:
            person = batch.merged[person]
        profile = batch.profiles.get(person) if person else None
        if profile is not None and profile.phone:
            keys.append(phone_key(profile.phone))
    return keys


class ProfileProjector:
    def __init__(
        self,
        db: Database,
        log_: EventLog,
        store: ProfileStore,
        *,
        flows: FlowStage | None = None,
        clock: Clock | None = None,
        consent_ledger: ConsentLedger | None = None,
        people: People | None = None,
        batch_size: int = 5000,
        cache_people: int = 100_000,
        timer_grace_ms: int = 0,
    ) -> None:
        self.db = db
        self.log = log_
        self.store = store
        self.flows = flows
        self.clock = clock or SystemClock()
        self.consent = consent_ledger
        self.people = people
        self._next_retention_ms = 0
        self.batch_size = batch_size
        # live, a timer is released only this long after its time, so an event received just
        # before it but committed just after is not overtaken (``domain.lateness``)
        self.timer_grace_ms = timer_grace_ms
        self.cache = PersonCache(cache_people)
        # called after each committed batch with (workspace, cursor): for metrics and benchmarks
        self.on_batch: Callable[[str, int], None] | None = None
        # a failed batch moved no cursor, so the loop can simply try again
        self._loop = Background("engine", self.run_once, idle_seconds=1.0)

    # driving ---------------------------------------------------------------------------
    def wake(self) -> None:
        self._loop.wake()

    def start(self, *, idle_poll_seconds: float = 1.0) -> None:
        self._loop.start(idle_poll_seconds)

    def stop(self) -> None:
        self._loop.stop()

    def health(self) -> LoopHealth:
        return self._loop.health()

    def wait_idle(self, timeout: float) -> bool:
        """See ``Background.wait_idle``: for ``POST /v1/clock`` on a virtual clock."""
        return self._loop.wait_idle(timeout)

    def run_once(self) -> int:
        """Process at most one batch per workspace that is behind, or, for a workspace whose
        log is drained, fire the timers that are due. Returns events and timers processed."""
        done = 0
        now_ms = to_millis(self.clock.now())
        if self.people is not None and now_ms >= self._next_retention_ms:
            self._next_retention_ms = now_ms + RETENTION_EVERY_MS
            for workspace_id, deleted in self.people.apply_retention(now_ms=now_ms).items():
                if deleted:
                    log.info("retention: deleted %d old events of %s", deleted, workspace_id)
        for workspace_id, cursor, last_seq in self.store.backlog(CONSUMER):
            if cursor < last_seq:
                done += self.process_batch(workspace_id)
            elif self.flows is not None:
                due = self.flows.state.next_due(workspace_id)
                if due is not None and due <= now_ms - self.timer_grace_ms:
                    done += self.process_timers(workspace_id, now_ms - self.timer_grace_ms)
        return done

    def run_until_idle(self, progress: Callable[[str, int, int], None] | None = None) -> int:
        total = 0
        while True:
            done = self.run_once()
            if progress is not None:
                for workspace_id, cursor, last_seq in self.store.backlog(CONSUMER):
                    progress(workspace_id, cursor, last_seq)
            if not done:
                return total
            total += done

    def replay(self, workspace_id: str, progress: Callable[[str, int, int], None] | None = None) -> int:
        """Rebuild the workspace's profiles, segments and timers from the first event.
        Enrollments are kept: their keys stop the replay from enrolling anyone twice."""
        with self.db.write() as conn:
            self.store.reset(conn, workspace_id, CONSUMER)  # moves the epoch: caches are stale
            if self.flows is not None:
                self.flows.state.reset(conn, workspace_id)
        self.cache.drop(workspace_id)
        return self.run_until_idle(progress)

    # one batch -------------------------------------------------------------------------
    def process_batch(self, workspace_id: str) -> int:
        return self._process(workspace_id, timers_only_until=None)

    def process_timers(self, workspace_id: str, now_ms: int) -> int:
        """Fire the timers due by ``now_ms`` (the log being drained); the cursor stays put."""
        return self._process(workspace_id, timers_only_until=now_ms)

    def _screen_erased(self, workspace_id: str) -> int:
        """Late events of an erased person are dropped from the log, so they cannot make the
        person again, unless they identify again with consent (an opt-in trait set), which
        lifts the tombstone. Returns how many events were dropped or let back in."""
        assert self.people is not None
        with self.db.read() as conn:
            gone = self.people.tombstones(conn, workspace_id)
            if not gone:
                return 0
            cursor = self.store.cursor(conn, CONSUMER, workspace_id)
            events = self.log.read_in(conn, workspace_id, after_seq=cursor, limit=self.batch_size)
        traits = self.consent.policy(workspace_id).traits if self.consent is not None else {}
        drop: list[int] = []
        lift: set[Identity] = set()
        for ev in events:
            ids = set(_identities(ev)) - lift
            if not ids & gone:
                continue
            body_traits = ev.body.get("traits") if ev.type == "identify" else None
            if isinstance(body_traits, dict) and any(body_traits.get(t) is True for t in traits):
                lift |= ids & gone
            else:
                drop.append(ev.seq)
        if not drop and not lift:
            return 0
        with self.db.write() as conn:
            self.people.lift(conn, workspace_id, lift)
            self.people.drop_events(conn, workspace_id, drop)
        if drop:
            log.info("dropped %d late events of erased people in %s", len(drop), workspace_id)
        return len(drop) + len(lift)

    def _process(self, workspace_id: str, *, timers_only_until: int | None) -> int:
        if self.people is not None and timers_only_until is None:
            screened = self._screen_erased(workspace_id)
            if screened:
                return screened
        try:
            return self._process_batch(workspace_id, timers_only_until=timers_only_until)
        except BaseException:
            self.cache.drop(workspace_id)  # the batch may have changed cached objects in place
            raise

    def _load_people(
        self, conn: Connection, batch: _Batch, cache: WorkspaceCache, flows: Pass | None, people: set[str]
    ) -> None:
        """Bring ``people`` into the batch: cached ones handed over, the rest read."""
        hits, missing = cache.take(people - batch.profiles.keys())
        for pid, person in hits.items():
            batch.profiles[pid] = person.profile
        if flows is not None:
            for pid, person in hits.items():
                flows.members[pid] = person.members
                flows.history[pid] = person.history
        if missing:
            batch.profiles.update(self.store.load(conn, batch.workspace_id, missing))
            if flows is not None:
                flows.load_people(missing)

    def _keep_in_cache(self, batch: _Batch, cache: WorkspaceCache, flows: Pass | None) -> None:
        """After a commit the cache kept: the batch's people as they now are."""
        for loser in batch.merged:
            cache.forget(loser)
        for pid, profile in batch.profiles.items():
            if flows is None:
                cache.put(pid, profile, {}, {})
            else:
                cache.put(pid, profile, flows.members.setdefault(pid, {}), flows.history.setdefault(pid, {}))
        cache.link(batch.known)
        cache.trim()

    def _process_batch(self, workspace_id: str, *, timers_only_until: int | None) -> int:
        flows: Pass | None = None
        with self.db.read() as conn:
            cursor = self.store.cursor(conn, CONSUMER, workspace_id)
            cache = self.cache.open(workspace_id, self.store.epoch(conn, workspace_id))
            if timers_only_until is None:
                events = self.log.read_in(conn, workspace_id, after_seq=cursor, limit=self.batch_size)
                if not events:
                    return 0
            else:
                events = []
            if self.flows is not None:
                flows = self.flows.begin(
                    conn, workspace_id, events, now_ms=timers_only_until or to_millis(self.clock.now())
                )
                events = flows.events
            wanted: set[Identity] = set()
            for ev in events:
                wanted.update(_identities(ev))
            known, unknown = cache.known(wanted)
            known.update(self.store.lookup_identities(conn, workspace_id, unknown))
            batch = _Batch(workspace_id=workspace_id, known=known, profiles={})
            people = set(known.values()) | (flows.timer_persons if flows is not None else set())
            self._load_people(conn, batch, cache, flows, people)
            if flows is not None:

                def load(into: Pass, persons: set[str]) -> None:
                    self._load_people(conn, batch, cache, into, persons)

                flows.attach(batch.profiles, load)
                for ev in events:
                    flows.fire_until(ev.arrival_ms - 1)
                    if _about_nobody(ev):
                        continue
                    pid, is_new, losers = self._apply(batch, ev)
                    for loser in losers:
                        flows.on_merge(loser, pid)
                    flows.on_event(ev, pid, batch.profiles[pid], is_new=is_new, merged=bool(losers))
                if timers_only_until is not None:
                    flows.fire_until(timers_only_until)
                elif flows.trimmed:  # the held-back events come after every loaded timer
                    flows.fire_until(flows.horizon)
            else:
                for ev in events:
                    if not _about_nobody(ev):
                        self._apply(batch, ev)
        fired = 0
        state = self.flows.state if self.flows is not None else None
        try:
            # derived state only, moved with the cursor: committed without waiting for the disk
            # (see store.database); the consent ledger records below are derived from
            # identify events in the log too, and their own cursor moves with them
            with self.db.write(durable=False) as conn:
                if events:
                    self.store.advance_cursor(conn, CONSUMER, workspace_id, old=cursor, new=events[-1].seq)
                    # the cursor row is now locked: an erasure that committed meanwhile shows
                    if self.people is not None and self.people.tombstones(conn, workspace_id) & wanted:
                        raise ErasedMeanwhile(workspace_id)
                # after the cursor, as erasure does: on PostgreSQL both rows are locked until
                # commit, and taking them in the other order could deadlock with an erasure
                epoch = self.store.bump_epoch(conn, workspace_id)
                self.store.save(
                    conn,
                    workspace_id,
                    changed=[batch.profiles[p] for p in batch.changed if p in batch.profiles],
                    merged=batch.merged,
                    links=batch.links,
                    event_rows=batch.event_rows,
                )
                if self.consent is not None and events:
                    self._record_consent_traits(conn, workspace_id, events, batch)
                if flows is not None and state is not None:
                    changes = flows.finish(conn)
                    fired = len(changes.fired)
                    state.save(conn, workspace_id, changes)
        except CursorMoved:
            log.info("another projector advanced %s first; skipping this batch", workspace_id)
            self.cache.drop(workspace_id)
            return 0
        except ErasedMeanwhile:
            log.info("a person in this batch of %s was erased meanwhile; recomputing", workspace_id)
            self.cache.drop(workspace_id)
            return 0
        except TimerClaimed:
            log.info("another engine fired timers of %s first; recomputing", workspace_id)
            self.cache.drop(workspace_id)
            return 0
        if self.cache.committed(workspace_id, cache, epoch=epoch):
            self._keep_in_cache(batch, cache, flows)
        if self.on_batch is not None and events:
            self.on_batch(workspace_id, events[-1].seq)
        if flows is not None and flows.changes.derived:
            self.wake()  # the derived events it appended are new log entries to process
        return len(events) + fired

    def _record_consent_traits(
        self, conn: Connection, workspace_id: str, events: list[LoggedEvent], batch: _Batch
    ) -> None:
        """Identify traits the workspace policy maps to consent (``email_opt_in: true``) become
        ledger records, in the batch's transaction so a crash cannot record them twice. They
        are weighed against the records under the person's phone number too: a STOP from the
        handset is filed there, and a trait must not lift it."""
        assert self.consent is not None
        policy = self.consent.policy(workspace_id)
        candidates = [
            ev
            for ev in events
            if ev.type == "identify"
            and isinstance(ev.body.get("traits"), dict)
            and any(t in ev.body["traits"] for t in policy.traits)
        ]
        if not candidates:
            return  # the usual batch: nothing to read or write here
        # The ledger is a primary record, not derived state: a replay of the log must not
        # record an old identify again, so this stage keeps its own cursor, never reset (moved
        # only by batches that hold consent traits, which is all a replay needs to skip).
        done = self.store.cursor(conn, CONSENT_CONSUMER, workspace_id)
        fresh = [ev for ev in candidates if ev.seq > done]
        if not fresh:
            return
        self.store.advance_cursor(conn, CONSENT_CONSUMER, workspace_id, old=done, new=fresh[-1].seq)
        now_ms = to_millis(self.clock.now())
        for ev in fresh:
            traits = ev.body["traits"]
            records = self.consent.history(
                conn,
                workspace_id,
                user_ids=[ev.user_id] if ev.user_id else [],
                anonymous_ids=[*([ev.anonymous_id] if ev.anonymous_id else []), *_phone_keys(batch, ev)],
            )
            grants = consent.trait_grants(
                traits,
                policy,
                records,
                user_id=ev.user_id,
                anonymous_id=ev.anonymous_id,
                at_ms=ev.time_ms,
                now_ms=now_ms,
                ref=f"event:{ev.seq}",
                key_id=trust.writer_key(ev.body),
            )
            self.consent.append(conn, workspace_id, grants)

    def _apply(self, batch: _Batch, ev: LoggedEvent) -> tuple[str, bool, list[str]]:
        """Fold one event; returns the person, whether they are new, and who merged into them."""
        previous = ev.body.get("previousId")
        res = resolve(
            type=ev.type,
            user_id=ev.user_id,
            anonymous_id=ev.anonymous_id,
            previous_id=str(previous) if previous is not None else None,
            lookup=batch.known.get,
            user_of=lambda pid: batch.profiles[pid].user_id if pid in batch.profiles else None,
        )
        pid = res.person_id
        existing = batch.profiles.get(pid)
        profile = existing or Profile(person_id=pid)
        losers: list[str] = []
        for loser_id in res.merges:
            loser = batch.profiles.pop(loser_id, None)
            if loser is not None:
                profile = merge(profile, loser)
            self._repoint(batch, loser_id, pid)
            losers.append(loser_id)
        for identity in res.links:
            batch.known[identity] = pid
            batch.links[identity] = pid
        batch.profiles[pid] = apply(profile, ev)
        batch.changed.add(pid)
        batch.event_rows.append((pid, ev.seq))
        return pid, existing is None and not losers, losers

    @staticmethod
    def _repoint(batch: _Batch, loser: str, winner: str) -> None:
        """Everything this batch (or the database) had for ``loser`` now belongs to ``winner``."""
        for merged_loser, target in list(batch.merged.items()):
            if target == loser:
                batch.merged[merged_loser] = winner
        batch.merged[loser] = winner
        for identity, person in list(batch.known.items()):
            if person == loser:
                batch.known[identity] = winner
        for identity, person in list(batch.links.items()):
            if person == loser:
                batch.links[identity] = winner
        batch.event_rows[:] = [(winner if p == loser else p, s) for p, s in batch.event_rows]
        batch.changed.discard(loser)


def _identities(ev: LoggedEvent) -> list[Identity]:
    out: list[Identity] = []
    if ev.user_id is not None:
        out.append(("user", ev.user_id))
    if ev.anonymous_id is not None:
        out.append(("anon", ev.anonymous_id))
    previous = ev.body.get("previousId")
    if ev.type == "alias" and previous is not None:
        out += [("user", str(previous)), ("anon", str(previous))]
    return out


def _about_nobody(ev: LoggedEvent) -> bool:
    """Momently's own records about no person (an experiment stopped): ingest refuses events
    without a userId or anonymousId, so only these have neither."""
    return ev.user_id is None and ev.anonymous_id is None and ev.derived
