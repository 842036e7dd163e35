"""The flows stage of the engine: after each event has updated the person's profile, keep
segments current, match triggers through an index, arm and fire durable timers, and record
enrollments with their decision.

It runs inside the profile projector's batch (``engine.profile_projector``), so everything it
writes commits in the same transaction as the consumer cursor: a crash mid-batch leaves no
half-applied effects, and the enrollment key (workspace, flow, person, occurrence) makes a
replay unable to enroll twice.

Time. An event happens at ``LoggedEvent.time_ms`` (its timestamp, never later than its
arrival), and deadlines wait for late events (``domain.lateness``): a timer is stored at its
release (deadline plus allowed lateness) with the deadline in its payload (``at``), and fires
before the first event that arrived after its release. Once the log is drained, timers fire
when the clock passes their release. So the same log gives the same enrollments whether it is
processed live, after an outage, on replay or in a backtest, whatever order events arrived in.

Per person, small marks kept with the event history (names starting with ``MARK``) remember
what arrival order would otherwise hide: the latest start of each absence window, the times of
the events that complete it, and the latest activity each inactivity flow measures from.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from sqlalchemy import Connection

from momently.domain import geo
from momently.domain import lateness as lateness_rule
from momently.domain.chain import chained, depth_after
from momently.domain.conditions import Facts
from momently.domain.decision import HOLDOUT_REASON, Decision, decide, with_arm
from momently.domain.delays import Delay
from momently.domain.event import derived_event
from momently.domain.experiments import in_global_control, person_key
from momently.domain.flow import (
    FLOW_MESSAGE_EVENTS,
    SEGMENT_ENTERED,
    SEGMENT_EXITED,
    AbsenceTrigger,
    CohortTrigger,
    DateTrigger,
    EventTrigger,
    Flow,
    InactivityTrigger,
    Segment,
    SegmentTrigger,
    compile_flow,
    compile_segment,
)
from momently.domain.profile import LoggedEvent, Profile, valid_timezone
from momently.domain.schedule import moved, next_fire
from momently.domain.timestamps import from_millis
from momently.engine.experiments import Assigner, viewed
from momently.store.definitions import Definitions
from momently.store.engine_state import Changes, EngineState, Enrollment, Timer, TimerKey

ANY_ACTIVITY = "*"  # owner of the shared per-person timer of "inactivity of any kind" flows
MAX_HISTORY = 1000  # per person and event name: bounds state size for very active people
MARK = "\x00"  # history names of the engine's own marks; no event name starts with it
MAX_MARKS = 20  # completion times kept per absence window and key


@dataclass(slots=True)
class Compiled:
    """A workspace's flows and segments, compiled once per version, with the indexes that make
    the cost of an event independent of the flows that cannot match its name."""

    states: tuple[tuple[str, str, int, str], ...]
    flows: dict[str, Flow] = field(default_factory=dict)
    paused: set[str] = field(default_factory=set)
    segments: list[Segment] = field(default_factory=list)
    on_event: dict[str, list[Flow]] = field(default_factory=dict)
    absence_first: dict[str, list[Flow]] = field(default_factory=dict)
    absence_then: dict[str, list[Flow]] = field(default_factory=dict)
    inactivity_named: dict[str, list[Flow]] = field(default_factory=dict)
    inactivity_any: list[Flow] = field(default_factory=list)
    cohort: dict[str, list[Flow]] = field(default_factory=dict)
    on_segment: dict[tuple[str, str], list[Flow]] = field(default_factory=dict)
    date_by_trait: dict[str, list[Flow]] = field(default_factory=dict)
    seg_by_event: dict[str, list[Segment]] = field(default_factory=dict)
    seg_traits: list[Segment] = field(default_factory=list)
    seg_any: list[Segment] = field(default_factory=list)
    history: dict[str, int] = field(default_factory=dict)  # event name -> window kept (ms)

    def index(self) -> None:
        for flow in self.flows.values():
            t = flow.trigger
            if isinstance(t, EventTrigger):
                self.on_event.setdefault(t.name, []).append(flow)
            elif isinstance(t, AbsenceTrigger):
                self.absence_first.setdefault(t.first, []).append(flow)
                self.absence_then.setdefault(t.then, []).append(flow)
            elif isinstance(t, InactivityTrigger):
                if t.event is None:
                    self.inactivity_any.append(flow)
                else:
                    self.inactivity_named.setdefault(t.event, []).append(flow)
            elif isinstance(t, CohortTrigger):
                self.cohort.setdefault(t.event, []).append(flow)
            elif isinstance(t, SegmentTrigger):
                self.on_segment.setdefault((t.segment, t.on), []).append(flow)
            else:
                self.date_by_trait.setdefault(t.trait.split(".")[0], []).append(flow)
            deps = flow.audience.deps
            if flow.delay is not None and flow.delay.cancel_if is not None:
                deps = deps | flow.delay.cancel_if.deps  # read by the dispatcher when the message is due
            for name, window in deps.history.items():
                self.history[name] = max(self.history.get(name, 0), window)
        self.inactivity_any.sort(key=lambda f: (getattr(f.trigger, "for_ms", 0), f.id))
        # segments that read other segments go last, so they see this event's changes
        self.segments.sort(key=lambda s: (bool(s.rule.deps.segments), s.id))
        for seg in self.segments:
            deps = seg.rule.deps
            for name in deps.events:
                self.seg_by_event.setdefault(name, []).append(seg)
            if deps.traits or deps.segments:
                self.seg_traits.append(seg)
            if deps.any_event:
                self.seg_any.append(seg)
            for name, window in deps.history.items():
                self.history[name] = max(self.history.get(name, 0), window)


@dataclass(slots=True)
class _Candidate:
    flow: Flow
    person_id: str
    occurrence: str
    kind: str
    seq: int | None
    now_ms: int
    audience_ok: bool
    paused: bool
    send_at_ms: int  # now_ms, or the end of the flow's delay
    late: bool = False
    chain: int = 0


class FlowStage:
    def __init__(
        self,
        definitions: Definitions,
        state: EngineState,
        *,
        default_timezone: str = "UTC",
        send_max_age_ms: int = 86_400_000,
        lateness_ms: Callable[[str], int] | None = None,
        global_control: Callable[[str], float] | None = None,
    ) -> None:
        self.definitions = definitions
        self.state = state
        # the share of the workspace's people in its global control group (guardrails policy)
        self.global_control = global_control or (lambda _workspace: 0.0)
        # the workspace's allowed lateness (``domain.lateness``), read once per batch
        self.lateness_ms = lateness_ms or (lambda _workspace: lateness_rule.DEFAULT_LATENESS_MS)
        self.default_tz = ZoneInfo(default_timezone)
        self.send_max_age_ms = send_max_age_ms
        self.timer_batch = 5000  # timers loaded per batch
        self._cache: dict[str, Compiled] = {}
        self._zones: dict[str, ZoneInfo] = {}

    def compiled(self, conn: Connection, workspace_id: str) -> Compiled:
        states = tuple(sorted(self.definitions.states(conn, workspace_id)))
        cached = self._cache.get(workspace_id)
        if cached is not None and cached.states == states:
            return cached
        old_flows = {(f.id, f.version): f for f in cached.flows.values()} if cached else {}
        old_segs = {(s.id, s.version): s for s in cached.segments} if cached else {}
        c = Compiled(states=states)
        for kind, id_, version, status in states:
            if status == "archived":
                continue
            if kind == "flow":
                flow = old_flows.get((id_, version)) or compile_flow(
                    self.definitions.body(conn, workspace_id, kind, id_, version), version
                )
                c.flows[id_] = flow
                if status == "paused":
                    c.paused.add(id_)
            elif kind == "segment":
                c.segments.append(
                    old_segs.get((id_, version))
                    or compile_segment(self.definitions.body(conn, workspace_id, kind, id_, version), version)
                )
        c.index()
        self._cache[workspace_id] = c
        return c

    def zone(self, profile: Profile | None) -> ZoneInfo:
        return self.zone_named(profile.timezone if profile is not None else None)

    def zone_named(self, name: str | None) -> ZoneInfo:
        if not name:
            return self.default_tz
        tz = self._zones.get(name)
        if tz is None:
            tz = ZoneInfo(name) if valid_timezone(name) else self.default_tz
            self._zones[name] = tz
        return tz

    def date_timer(
        self, flow: Flow, trigger: DateTrigger, pid: str, profile: Profile, after_ms: int
    ) -> Timer | None:
        """The next firing of a date flow for one person, or None (no date in the trait, or a
        one-off date already past)."""
        value = _lookup(profile.traits, trigger.trait)
        planned = None if value is None else next_fire(trigger, value, self.zone(profile), after_ms)
        if planned is None:
            return None
        return Timer(planned[0], pid, "date", flow.id, "", {"value": value, "date": planned[1]})

    def moved_date_timer(
        self, flow: Flow, trigger: DateTrigger, pid: str, profile: Profile, old: str | None, at_ms: int
    ) -> Timer | None:
        """The date timer of someone whose time zone was ``old`` until ``at_ms`` (None: the
        default); ``schedule.moved`` keeps an anniversary from firing twice."""
        value = _lookup(profile.traits, trigger.trait)
        if value is None:
            return None
        planned = moved(trigger, value, self.zone_named(old), self.zone(profile), at_ms)
        if planned is None:
            return None
        return Timer(planned[0], pid, "date", flow.id, "", {"value": value, "date": planned[1]})

    def plan_dates(self, flow: Flow, profiles: Sequence[Profile], *, now_ms: int) -> list[Timer]:
        """Timers for a date flow applied after people already had the trait: the engine
        otherwise plans them only when an identify sets the trait."""
        trig = flow.trigger
        if not isinstance(trig, DateTrigger):
            return []
        timers = (self.date_timer(flow, trig, p.person_id, p, now_ms) for p in profiles)
        return [t for t in timers if t is not None]

    def begin(
        self,
        conn: Connection,
        workspace_id: str,
        events: list[LoggedEvent],
        *,
        now_ms: int,
    ) -> Pass:
        """Start a batch. With events, the timers released before the last event arrived are
        loaded; with none, those released by ``now_ms``. When more than ``timer_batch`` timers
        are due, the events after the last loaded timer wait for the next batch
        (``Pass.trimmed``), so order is kept."""
        compiled = self.compiled(conn, workspace_id)
        horizon = max(ev.arrival_ms for ev in events) - 1 if events else now_ms
        due = self.state.due_timers(conn, workspace_id, until_ms=horizon, limit=self.timer_batch)
        trimmed = False
        if len(due) == self.timer_batch and events:
            horizon = due[-1].due_ms
            cut = next((i for i, ev in enumerate(events) if ev.arrival_ms - 1 > horizon), len(events))
            trimmed = cut < len(events)
            events = events[:cut]
        p = Pass(self, conn, workspace_id, compiled, events, due, horizon)
        p.lateness = self.lateness_ms(workspace_id)
        p.global_share = self.global_control(workspace_id)
        p.clock_ms = now_ms
        p.trimmed = trimmed
        return p


class Pass:
    """One batch of the flows stage: working state over what the database knew."""

    def __init__(
        self,
        stage: FlowStage,
        conn: Connection,
        workspace_id: str,
        compiled: Compiled,
        events: list[LoggedEvent],
        due: list[Timer],
        horizon: int,
    ) -> None:
        self.stage = stage
        self.ws = workspace_id
        self.c = compiled
        self.events = events
        self.horizon = horizon
        self.clock_ms = horizon  # wall-clock time of this batch, set by FlowStage.begin
        self.trimmed = False  # events were held back because many timers fall due first
        self.lateness = lateness_rule.DEFAULT_LATENESS_MS  # the workspace's, set by FlowStage.begin
        self.global_share = 0.0  # the workspace's global control group, set by FlowStage.begin
        self.arrival = 0  # when the event being processed arrived
        self._span_cache: dict[str, tuple[int, int]] = {}
        self.changes = Changes()
        self.members: dict[str, dict[str, int]] = {}
        self.history: dict[str, dict[str, list[int]]] = {}
        self.candidates: list[_Candidate] = []
        self.merged: dict[str, str] = {}
        self._heap: list[tuple[int, int, TimerKey]] = []
        self._live: dict[TimerKey, Timer] = {}
        self._order = itertools.count()
        self._cohorts: dict[tuple[str, str], dict[str, tuple[int, int, int]]] = {}
        self._conn = conn
        self._profiles: dict[str, Profile] = {}
        self._zones_before: dict[str, str | None] = {}  # time zones date timers were planned in
        self._load: Callable[[Pass, set[str]], None] = lambda _pass, _people: None
        for t in due:
            self._schedule(t, loaded=True)
        self.timer_persons = {t.person_id for t in due}

    # loading -----------------------------------------------------------------------------
    def attach(self, profiles: dict[str, Profile], load: Callable[[Pass, set[str]], None]) -> None:
        """The batch's profiles, and how to load people the batch did not (a cohort
        neighbour): ``load(this pass, people)`` adds their profiles there and their state
        here. The pass is an argument, not captured, so a batch is no reference cycle and
        its objects are freed as soon as it is done, without the cyclic garbage collector."""
        self._profiles = profiles
        self._load = load
        if self.c.date_by_trait:
            self._zones_before = {pid: p.timezone for pid, p in profiles.items()}

    def _profile(self, pid: str) -> Profile | None:
        if pid not in self._profiles:
            self._load(self, {pid})
        return self._profiles.get(pid)

    def load_people(self, persons: set[str]) -> None:
        """Memberships and event history of ``persons``, from the database."""
        self.members.update(self.stage.state.members(self._conn, self.ws, persons))
        for pid, data in self.stage.state.states(self._conn, self.ws, persons).items():
            self.history[pid] = {k: list(v) for k, v in data.get("history", {}).items()}

    # timers ------------------------------------------------------------------------------
    def _schedule(self, timer: Timer, *, loaded: bool = False) -> None:
        key = timer.identity
        previous = self._live.get(key)
        if not loaded and previous is not None and previous.id is not None:
            timer.id = previous.id  # re-arming a stored timer: if this one fires, its row is claimed
        self._live[key] = timer
        if not loaded:
            self.changes.timers[key] = timer
        if timer.due_ms <= self.horizon:
            heapq.heappush(self._heap, (timer.due_ms, next(self._order), key))

    def _cancel(self, key: TimerKey) -> None:
        self._live.pop(key, None)
        self.changes.timers[key] = None

    def fire_until(self, until_ms: int) -> None:
        """Fire the timers released by ``until_ms``: before an event, its arrival minus one
        (an event arriving at a release still counts for it)."""
        while self._heap and self._heap[0][0] <= until_ms:
            due, _, key = heapq.heappop(self._heap)
            timer = self._live.get(key)
            if timer is None or timer.due_ms != due:
                continue  # cancelled or re-armed since it was queued
            del self._live[key]
            if timer.id is not None:
                self.changes.fired.append(timer.id)
            if self.changes.timers.get(key) is timer:
                del self.changes.timers[key]  # armed and fired within this batch: never stored
            pid = self._resolve(timer.person_id)
            profile = self._profiles.get(pid)
            if profile is None:
                continue
            self._fire(timer, pid, profile)

    def _fire(self, timer: Timer, pid: str, profile: Profile) -> None:
        now = int(timer.payload.get("at", timer.due_ms))  # the deadline, not its release
        if timer.kind == "segment":
            segs = [s for s in self.c.segments if s.id == timer.owner]
            self._evaluate_segments(pid, profile, now, segs, cause=f"t{now}")
            return
        if timer.kind == "inactivity" and timer.owner == ANY_ACTIVITY:
            self._fire_idle(timer, pid, profile)
            return
        flow = self.c.flows.get(timer.owner)
        if flow is None:
            return  # the flow was archived since the timer was armed
        seq = timer.payload.get("seq")
        late = bool(timer.payload.get("late"))
        if timer.kind == "absence" and isinstance(flow.trigger, AbsenceTrigger):
            mark = _window_mark(flow.id, timer.key)
            start = timer.payload.get("t0")
            self._set_mark(pid, "first" + mark, [])
            if start is not None and self._completed(pid, mark, int(start), now):
                return  # completed in time (in case the completion could not cancel it)
            self._occur(flow, pid, profile, f"a{seq}", now, seq, timer.payload.get("event"), late=late)
        elif timer.kind == "inactivity" and isinstance(flow.trigger, InactivityTrigger):
            self._occur(flow, pid, profile, f"i{seq}", now, seq, None, late=late)
        elif timer.kind == "date" and isinstance(flow.trigger, DateTrigger):
            value = _lookup(profile.traits, flow.trigger.trait)
            if value != timer.payload.get("value"):
                self._arm_date(flow, flow.trigger, pid, profile, now)  # the trait changed: re-plan
                return
            self._occur(flow, pid, profile, f"d{timer.payload.get('date')}", now, None, None)
            if flow.trigger.repeat == "yearly":
                self._arm_date(flow, flow.trigger, pid, profile, now)

    def _fire_idle(self, timer: Timer, pid: str, profile: Profile) -> None:
        """One timer per person serves every flow triggered by inactivity of any kind: it fires
        at the first release among them, enrolls the flows released now (each decided at the
        end of its own silence), and re-arms itself for the next one. Ten such flows cost one
        timer row per person, not ten."""
        released = timer.due_ms
        seq, since = timer.payload.get("seq"), int(timer.payload.get("t", 0))
        arrival = int(timer.payload.get("a", 0))
        later: list[int] = []
        for flow in self.c.inactivity_any:
            assert isinstance(flow.trigger, InactivityTrigger)
            end = since + flow.trigger.for_ms
            release = lateness_rule.release(end, self._lateness(flow))
            if release == released:
                late = lateness_rule.is_late(release, arrival)
                self._occur(flow, pid, profile, f"i{seq}", end, seq, None, late=late)
            elif release > released:
                later.append(release)
        if later:
            self._schedule(Timer(min(later), pid, "inactivity", ANY_ACTIVITY, "", timer.payload))

    def _arm_date(self, flow: Flow, trigger: DateTrigger, pid: str, profile: Profile, after_ms: int) -> None:
        self._set_date(flow, pid, self.stage.date_timer(flow, trigger, pid, profile, after_ms))

    def _set_date(self, flow: Flow, pid: str, timer: Timer | None) -> None:
        if timer is None:
            self._cancel((pid, "date", flow.id, ""))
        else:
            self._schedule(timer)

    # events ------------------------------------------------------------------------------
    def on_merge(self, loser: str, winner: str) -> None:
        """Two people are one: move what this batch holds for ``loser`` to ``winner``."""
        self.merged[loser] = winner
        self.changes.merges.append((loser, winner))
        for target, final in list(self.merged.items()):
            if final == loser:
                self.merged[target] = winner
        mine = self.history.setdefault(winner, {})
        for name, times in self.history.pop(loser, {}).items():
            if name.startswith(MARK + "seen:"):  # [time, seq, arrival]: the latest of the two
                mine[name] = max(mine.get(name, []), times)
            else:
                mine[name] = sorted(mine.get(name, []) + times)[-MAX_HISTORY:]
        self.members.pop(loser, None)
        self.changes.states.pop(loser, None)
        for key in [k for k in self.changes.members if k[0] == loser]:
            del self.changes.members[key]
        # Timers loaded from the table keep their row (the save moves it to the winner); those
        # armed or cancelled in this batch are re-keyed to the winner here.
        for tkey in [k for k in self.changes.timers if k[0] == loser]:
            timer = self.changes.timers.pop(tkey)
            self._live.pop(tkey, None)
            moved: TimerKey = (winner, tkey[1], tkey[2], tkey[3])
            if timer is None:
                self._cancel(moved)
            elif moved not in self._live:
                timer.person_id = winner
                self._schedule(timer)
        for ckey in [k for k in self.changes.cohorts if k[2] == loser]:
            del self.changes.cohorts[ckey]

    def _resolve(self, pid: str) -> str:
        return self.merged.get(pid, pid)

    def on_event(self, ev: LoggedEvent, pid: str, profile: Profile, *, is_new: bool, merged: bool) -> None:
        c = self.c
        t = ev.time_ms
        self.arrival = ev.arrival_ms
        name = ev.name
        if ev.type == "track" and name is not None:
            count, last = self.changes.names.get(name, (0, 0))
            self.changes.names[name] = (count + 1, max(last, t))
        if ev.derived:
            if name in (SEGMENT_ENTERED, SEGMENT_EXITED):
                props = ev.body.get("properties") or {}
                on = "enter" if name == SEGMENT_ENTERED else "leave"
                # keyed by what caused the change, not by where the event landed in the log,
                # so the same history gives the same occurrence however it was batched
                occurrence = f"s{on}:{props.get('cause', ev.seq)}"
                for flow in c.on_segment.get((str(props.get("segment_id")), on), ()):
                    self._occur(flow, pid, profile, occurrence, t, ev.seq, ev.body)
            elif name in FLOW_MESSAGE_EVENTS:
                self._on_message(ev, pid, profile)
            return
        if name is not None and name in c.history:
            self._remember(pid, name, t, c.history[name])
        # segments first, so audiences see this event's memberships
        if is_new or merged:
            segs: Sequence[Segment] = c.segments
        else:
            chosen: dict[str, Segment] = {}
            if name is not None:
                chosen.update((s.id, s) for s in c.seg_by_event.get(name, ()))
            if ev.type == "identify":
                chosen.update((s.id, s) for s in c.seg_traits)
            chosen.update((s.id, s) for s in c.seg_any)
            segs = [s for s in c.segments if s.id in chosen] if chosen else ()
        if segs:
            self._evaluate_segments(pid, profile, t, segs, cause=f"e{ev.seq}")
        if c.date_by_trait:
            self._dates(ev, pid, profile, merged=merged)
        if name is None:
            name = ""
        on_event = c.on_event.get(name, ())
        then = c.absence_then.get(name, ())
        first = c.absence_first.get(name, ())
        cohort = c.cohort.get(name, ())
        # one set of facts for every filter and audience of this event: nothing below changes
        # the profile or the memberships they read
        facts = self._facts(pid, profile, t, ev.body) if on_event or then or first or cohort else None
        if facts is not None:
            self._match(ev, pid, profile, facts, on_event, then, first)
        named = c.inactivity_named.get(name, ())
        if named:
            self._silences(pid, name, named, ev.seq, t)
        if c.inactivity_any:
            self._silences(pid, ANY_ACTIVITY, c.inactivity_any, ev.seq, t)
        if facts is not None:
            for flow in cohort:
                trig = flow.trigger
                assert isinstance(trig, CohortTrigger)
                if trig.where(facts):
                    self._cohort(flow, trig, pid, profile, ev, t)

    def _on_message(self, ev: LoggedEvent, pid: str, profile: Profile) -> None:
        """A message's event the engine itself appended (sent, failed): it triggers the flows
        that follow that message like a person's event does, but it is not the person's
        activity and changes no segment. Its depth travels in its ``delivery_key``."""
        name = ev.name or ""
        if name in self.c.history:
            self._remember(pid, name, ev.time_ms, self.c.history[name])
        on_event = self.c.on_event.get(name, ())
        then = self.c.absence_then.get(name, ())
        first = self.c.absence_first.get(name, ())
        cohort = self.c.cohort.get(name, ())
        if not (on_event or then or first or cohort):
            return
        facts = self._facts(pid, profile, ev.time_ms, ev.body)
        self._match(ev, pid, profile, facts, on_event, then, first)
        for flow in cohort:
            trig = flow.trigger
            assert isinstance(trig, CohortTrigger)
            if trig.where(facts):
                self._cohort(flow, trig, pid, profile, ev, ev.time_ms)

    def _dates(self, ev: LoggedEvent, pid: str, profile: Profile, *, merged: bool) -> None:
        """Date timers are planned when an identify sets the trait (or two people merge), and
        re-planned when the person's time zone first arrives or changes (``context.timezone``
        of any event, a ``timezone`` trait), which may come after the trait."""
        before = self._zones_before.get(pid)
        self._zones_before[pid] = profile.timezone
        zone_moved = before != profile.timezone and not merged
        traits = (ev.body.get("traits") or {}) if ev.type == "identify" else {}
        for trait, flows in self.c.date_by_trait.items():
            if trait in traits or merged:
                for flow in flows:
                    assert isinstance(flow.trigger, DateTrigger)
                    self._arm_date(flow, flow.trigger, pid, profile, ev.time_ms)
            elif zone_moved and _lookup(profile.traits, trait) is not None:
                for flow in flows:
                    assert isinstance(flow.trigger, DateTrigger)
                    timer = self.stage.moved_date_timer(flow, flow.trigger, pid, profile, before, ev.time_ms)
                    self._set_date(flow, pid, timer)

    def _match(
        self,
        ev: LoggedEvent,
        pid: str,
        profile: Profile,
        facts: Facts,
        on_event: Sequence[Flow],
        then: Sequence[Flow],
        first: Sequence[Flow],
    ) -> None:
        """Event triggers, and absences the event completes or starts."""
        t = ev.time_ms
        for flow in on_event:
            assert isinstance(flow.trigger, EventTrigger)
            if flow.trigger.where(facts):
                self._occur(flow, pid, profile, f"e{ev.seq}", t, ev.seq, ev.body, facts=facts)
        for flow in then:
            trig = flow.trigger
            assert isinstance(trig, AbsenceTrigger)
            if trig.then_where(facts):
                self._complete(flow, trig, pid, _key_value(trig.key, ev.body), t)
        for flow in first:
            trig = flow.trigger
            assert isinstance(trig, AbsenceTrigger)
            if trig.first_where(facts):
                self._open(flow, trig, pid, ev, t)

    # absence windows and inactivity, in event time ------------------------------------
    def _lateness(self, flow: Flow) -> int:
        return self.lateness if flow.lateness_ms is None else flow.lateness_ms

    def _mark(self, pid: str, name: str) -> list[int]:
        return self.history.get(pid, {}).get(MARK + name, [])

    def _set_mark(self, pid: str, name: str, times: list[int]) -> None:
        per = self.history.setdefault(pid, {})
        if times:
            per[MARK + name] = times
        elif per.pop(MARK + name, None) is None:
            return
        self.changes.states[pid] = {"history": per}

    def _silences(self, pid: str, name: str, flows: Sequence[Flow], seq: int, t: int) -> None:
        """An event (of ``name``, or of any kind: ``ANY_ACTIVITY``) at ``t``, for the flows
        that wait for a silence of it. Each event may start a silence; a silence is broken by
        an event inside it, in event time, whatever order they arrive in.

        The silence since the latest event is one timer with a stable key, re-armed by each
        newer event (one row per person, however many events): per flow for a named event, and
        one for all the flows of any activity (``_fire_idle``). The ``seen`` mark holds that
        latest event: ``[time, seq, arrival]``.

        - A newer event breaks that silence for the flows whose duration it falls inside. For
          a flow whose silence it ends after the duration, the silence happened: when its
          deadline is still waiting for late events, it moves to a timer of its own, keyed by
          its start (listed in the ``idle`` mark), and fires at its release.
        - An older event (flushed late) starts no silence, since a later one is known, and
          cancels the moved silences it falls inside."""
        seen = self._mark(pid, "seen:" + name)
        moved = self._mark(pid, "idle:" + name)
        if moved:
            self._break_moved(pid, name, flows, moved, t)
        if seen and t < seen[0]:
            return
        shortest, first_release = self._spans(name, flows)
        if seen and t > seen[0] + shortest:
            self._move_ended(pid, name, flows, seen, t)
        self._set_mark(pid, "seen:" + name, [t, seq, self.arrival])
        if name == ANY_ACTIVITY:
            payload = {"seq": seq, "t": t, "a": self.arrival}
            self._schedule(Timer(t + first_release, pid, "inactivity", ANY_ACTIVITY, "", payload))
            return
        for flow in flows:
            end = t + getattr(flow.trigger, "for_ms", 0)
            release = lateness_rule.release(end, self._lateness(flow))
            payload = {"seq": seq, "at": end, "late": lateness_rule.is_late(release, self.arrival)}
            self._schedule(Timer(release, pid, "inactivity", flow.id, "", payload))

    def _spans(self, name: str, flows: Sequence[Flow]) -> tuple[int, int]:
        """The shortest silence of these flows, and the first release after a silence's start
        (what the shared timer of any activity is armed at), cached per batch."""
        spans = self._span_cache.get(name)
        if spans is None:
            spans = (
                min(getattr(f.trigger, "for_ms", 0) for f in flows),
                min(getattr(f.trigger, "for_ms", 0) + self._lateness(f) for f in flows),
            )
            self._span_cache[name] = spans
        return spans

    def _move_ended(self, pid: str, name: str, flows: Sequence[Flow], seen: list[int], t: int) -> None:
        """The silence since ``seen`` ended for the flows shorter than the gap to ``t``: those
        still waiting for late events get a timer of their own, keyed by its start."""
        start, start_seq, start_arrival = seen[0], seen[1], seen[2]
        moved = False
        for flow in flows:
            end = start + getattr(flow.trigger, "for_ms", 0)
            release = lateness_rule.release(end, self._lateness(flow))
            if end < t and release >= self.arrival:  # ended, and not yet released
                late = lateness_rule.is_late(release, start_arrival)
                payload = {"seq": start_seq, "at": end, "late": late}
                self._schedule(Timer(release, pid, "inactivity", flow.id, str(start), payload))
                moved = True
        if moved:
            self._set_mark(pid, "idle:" + name, sorted({*self._mark(pid, "idle:" + name), start}))

    def _break_moved(self, pid: str, name: str, flows: Sequence[Flow], moved: list[int], t: int) -> None:
        """An event at ``t`` cancels the moved silences it falls inside; a start is forgotten
        once every flow's silence from it is broken or released."""
        horizon = max(getattr(f.trigger, "for_ms", 0) + self._lateness(f) for f in flows)
        for start in moved:
            if start < t:
                for flow in flows:
                    if t <= start + getattr(flow.trigger, "for_ms", 0):
                        self._cancel((pid, "inactivity", flow.id, str(start)))
        shortest = self._spans(name, flows)[0]
        kept = [s for s in moved if s + horizon >= self.arrival and not s < t <= s + shortest]
        if kept != moved:
            self._set_mark(pid, "idle:" + name, kept)

    def _completed(self, pid: str, mark: str, start: int, end: int) -> bool:
        return any(start <= done <= end for done in self._mark(pid, "then" + mark))

    def _open(self, flow: Flow, trig: AbsenceTrigger, pid: str, ev: LoggedEvent, t: int) -> None:
        """``first`` happened at ``t``: the window closes at ``t + within``, unless ``then``
        is already known to have followed it in time (it may arrive first), or a later
        ``first`` of the same key already holds the window open (the latest start wins, as it
        does when events arrive in order)."""
        key = _key_value(trig.key, ev.body)
        mark = _window_mark(flow.id, key)
        if self._completed(pid, mark, t, t + trig.within_ms):
            return
        start = self._mark(pid, "first" + mark)
        if start and max(start) > t:
            return
        self._set_mark(pid, "first" + mark, [t])
        end = t + trig.within_ms
        release = lateness_rule.release(end, self._lateness(flow))
        body = {k: v for k, v in ev.body.items() if k != "integrations"}
        payload = {
            "seq": ev.seq,
            "event": body,
            "at": end,
            "t0": t,
            "late": lateness_rule.is_late(release, self.arrival),
        }
        self._schedule(Timer(release, pid, "absence", flow.id, key, payload))

    def _complete(self, flow: Flow, trig: AbsenceTrigger, pid: str, key: str, t: int) -> None:
        """``then`` happened at ``t``: it closes the window if it falls inside it, in event
        time (a ``then`` after the deadline does not: the absence happened, and the send-time
        goal check keeps a message from going out after the goal was reached), and it is
        remembered for a ``first`` that arrives after it."""
        mark = _window_mark(flow.id, key)
        keep_from = self.arrival - trig.within_ms - self._lateness(flow)
        done = sorted(x for x in [*self._mark(pid, "then" + mark), t] if x >= keep_from)
        self._set_mark(pid, "then" + mark, done[-MAX_MARKS:])
        start = self._mark(pid, "first" + mark)
        if start and max(start) <= t <= max(start) + trig.within_ms:
            self._set_mark(pid, "first" + mark, [])
            self._cancel((pid, "absence", flow.id, key))

    def _remember(self, pid: str, name: str, t: int, window: int) -> None:
        per = self.history.setdefault(pid, {})
        times = per.setdefault(name, [])
        bisect.insort(times, t)
        if window == 0:
            del times[:-1]
        else:
            start = bisect.bisect_left(times, times[-1] - window)
            del times[: max(start, len(times) - MAX_HISTORY)]
        self.changes.states[pid] = {"history": per}

    def _facts(
        self, pid: str, profile: Profile, now_ms: int, event: Mapping[str, Any] | None = None
    ) -> Facts:
        return Facts(
            profile=profile,
            now_ms=now_ms,
            tz=self.stage.zone(profile),
            event=event,
            segments=frozenset(self.members.get(pid, ())),
            history=self.history.get(pid, {}),
        )

    # segments ----------------------------------------------------------------------------
    def _evaluate_segments(
        self, pid: str, profile: Profile, now: int, segs: Sequence[Segment], *, cause: str
    ) -> None:
        mine = self.members.setdefault(pid, {})
        facts = self._facts(pid, profile, now)
        for seg in segs:
            inside = seg.rule(facts)
            was = seg.id in mine
            if inside != was:
                if inside:
                    mine[seg.id] = now
                    self.changes.members[(pid, seg.id)] = now
                else:
                    del mine[seg.id]
                    self.changes.members[(pid, seg.id)] = None
                self._emit_segment(pid, profile, seg, entered=inside, now=now, cause=cause)
                facts = self._facts(pid, profile, now)  # later segments may read this one
            if seg.rule.deps.clock:
                key = (pid, "segment", seg.id, "")
                at = seg.rule.next_change(facts)
                if at is not None and at > now:
                    release = lateness_rule.release(at, self.lateness)
                    current = self._live.get(key)
                    if current is None or current.due_ms != release:
                        self._schedule(Timer(release, pid, "segment", seg.id, "", {"at": at}))
                elif key in self._live:
                    self._cancel(key)

    def _emit_segment(
        self, pid: str, profile: Profile, seg: Segment, *, entered: bool, now: int, cause: str
    ) -> None:
        verb = "entered" if entered else "exited"
        when = from_millis(now)
        self.changes.derived.append(
            derived_event(
                message_id=f"momently:{seg.id}:{pid}:{cause}:{verb}",
                name=SEGMENT_ENTERED if entered else SEGMENT_EXITED,
                user_id=profile.user_id,
                anonymous_id=profile.anonymous_id,
                at=when,
                received_at=when,
                properties={
                    "segment_id": seg.id,
                    "segment_version": seg.version,
                    "person_id": pid,
                    "cause": cause,
                },
            )
        )

    # cohorts -----------------------------------------------------------------------------
    def _cohort(
        self, flow: Flow, trig: CohortTrigger, pid: str, profile: Profile, ev: LoggedEvent, t: int
    ) -> None:
        area = _area(trig, profile, ev.body)
        if area is None:
            return
        members = self._cohorts.get((flow.id, area))
        if members is None:
            members = self.stage.state.cohort(self._conn, self.ws, flow.id, area)
            self._cohorts[(flow.id, area)] = members
        for other, (ts, _, _) in list(members.items()):
            if ts < t - trig.within_ms:
                del members[other]
                self.changes.cohorts[(flow.id, area, other)] = None
        current = members.get(pid)
        members[pid] = (t, ev.seq, 0) if current is None else (max(t, current[0]), current[1], current[2])
        self.changes.cohorts[(flow.id, area, pid)] = members[pid]
        if len(members) < trig.min_people:
            return
        for other, (ts, seq, fired) in sorted(members.items(), key=lambda kv: kv[1][1]):
            if fired:
                continue
            members[other] = (ts, seq, 1)
            self.changes.cohorts[(flow.id, area, other)] = members[other]
            who = self._resolve(other)
            self._occur(
                flow, who, profile if who == pid else self._profile(who), f"c{area}:{seq}", t, seq, None
            )

    # enrollments -------------------------------------------------------------------------
    def _occur(
        self,
        flow: Flow,
        pid: str,
        profile: Profile | None,
        occurrence: str,
        now: int,
        seq: int | None,
        event: Mapping[str, Any] | None,
        *,
        facts: Facts | None = None,
        late: bool = False,
    ) -> None:
        """``facts``, when given, are the person's at ``now`` with ``event``. An ``event``
        about a message makes this enrollment one link further down a chain (``domain.chain``)."""
        if facts is None and profile is not None:
            facts = self._facts(pid, profile, now, event)
        ok = facts is not None and flow.audience(facts)
        depth = depth_after(event)
        send_at = now if flow.delay is None else flow.delay.send_time(now, self.stage.zone(profile))
        self.candidates.append(
            _Candidate(
                flow,
                pid,
                chained(occurrence, depth),
                flow.trigger.kind,
                seq,
                now,
                ok,
                flow.id in self.c.paused,
                send_at,
                late=late,
                chain=depth,
            )
        )

    def finish(self, conn: Connection) -> Changes:
        """Decide every candidate in order (reentry needs the person's earlier enrollments)."""
        for c in self.candidates:
            c.person_id = self._resolve(c.person_id)
        pairs = {(c.flow.id, c.person_id) for c in self.candidates if c.flow.reentry.mode != "every_time"}
        last = self.stage.state.last_sends(conn, self.ws, pairs) if pairs else {}
        in_experiments = {c.person_id for c in self.candidates if c.flow.experiment is not None}
        assigner = (
            Assigner(self.stage.state, conn, self.ws, in_experiments, self.merged) if in_experiments else None
        )
        global_share = self.global_share
        seen: set[tuple[str, str, str]] = set()
        for c in self.candidates:
            key = (c.flow.id, c.person_id, c.occurrence)
            if key in seen:
                continue
            seen.add(key)
            d = decide(
                c.flow,
                now_ms=c.now_ms,
                audience_ok=c.audience_ok,
                paused=c.paused,
                last_sent_ms=last.get((c.flow.id, c.person_id)),
                late=c.late,
                chain=c.chain,
                send_at_ms=c.send_at_ms,
                global_control=global_share > 0
                and c.flow.tier == "B"
                and self._in_global_control(c, global_share),
            )
            if d.outcome == "send" and assigner is not None and c.flow.experiment is not None:
                d = self._experiment(c, d, assigner)
            if d.outcome == "send" or d.reason == HOLDOUT_REASON:
                last[(c.flow.id, c.person_id)] = c.now_ms
            if d.outcome == "send":
                dkey = f"{c.flow.id}:{c.person_id}:{c.occurrence}"
                at = d.at_ms if d.at_ms is not None else c.now_ms
                # a decision about the distant past (a replay, a new flow over old history) is
                # recorded but not sent: nobody wants last month's nudge. Counted from when it
                # was meant to go, so a delay never makes a message stale (a thank-you decided
                # in an outage 30 hours ago, due in 18 more, still goes)
                stale = self.clock_ms - at > self.stage.send_max_age_ms
                row = {
                    "key": dkey,
                    "flow_id": c.flow.id,
                    "flow_version": c.flow.version,
                    "person_id": c.person_id,
                    "occurrence": c.occurrence,
                    "trigger_seq": c.seq,
                    "variant": d.variant,
                    "channels": orjson.dumps(list(d.channels or c.flow.channels)).decode(),
                    "channel_index": 0,
                    "status": "expired" if stale else "pending",
                    "attempts": 0,
                    "next_attempt_ms": at,
                    "due_ms": at,
                    "created_ms": c.now_ms,
                    "updated_ms": c.now_ms,
                    "kind": "message",
                }
                self.changes.deliveries.append(row)
                if c.flow.follow_up is not None:
                    # sent later unless the goal is reached first (checked at send time); counted
                    # from the message's own send time, so after its delay
                    self.changes.deliveries.append(
                        {
                            **row,
                            "key": f"{dkey}:follow-up",
                            "channels": orjson.dumps([c.flow.follow_up.channel]).decode(),
                            "next_attempt_ms": at + c.flow.follow_up.after_ms,
                            "due_ms": at + c.flow.follow_up.after_ms,
                            "kind": "follow_up",
                        }
                    )
            self.changes.enrollments.append(
                Enrollment(
                    flow_id=c.flow.id,
                    person_id=c.person_id,
                    occurrence=c.occurrence,
                    flow_version=c.flow.version,
                    trigger_kind=c.kind,
                    trigger_seq=c.seq,
                    decided_ms=c.now_ms,
                    outcome=d.outcome,
                    reason=d.reason,
                    detail=d.detail(),
                )
            )
        if assigner is not None:
            self.changes.exposures.extend(assigner.new)
        return self.changes

    def _person_key(self, pid: str) -> str | None:
        profile = self._profile(pid)
        return None if profile is None else person_key(profile.user_id, profile.anonymous_ids, pid)

    def _in_global_control(self, c: _Candidate, share: float) -> bool:
        key = self._person_key(c.person_id)
        return key is not None and in_global_control(self.ws, key, share)

    def _experiment(self, c: _Candidate, d: Decision, assigner: Assigner) -> Decision:
        """A send in a flow with an experiment: running, the person's arm decides (and an
        ``Experiment Viewed`` records it); shipped, the shipped arm for everyone; stopped,
        the flow's own message."""
        exp = c.flow.experiment
        assert exp is not None
        state, shipped = assigner.state(exp)
        if state == "stopped":
            return d
        profile = self._profile(c.person_id)
        if state == "shipped":
            arm = exp.arm(shipped or "")
            if arm is None:  # shipped an arm a later version removed: the flow's own message
                return d
            return with_arm(d, arm, send_at_ms=self._arm_send_at(c, arm.delay, profile))
        key = self._person_key(c.person_id)
        if key is None or profile is None:
            return d
        arm_id = assigner.assign(c.flow, c.person_id, key, c.now_ms)
        arm = exp.arm(arm_id)
        out = with_arm(d, arm, send_at_ms=None if arm is None else self._arm_send_at(c, arm.delay, profile))
        self.changes.derived.append(
            viewed(
                self.ws,
                c.flow,
                profile,
                person_id=c.person_id,
                occurrence=c.occurrence,
                arm=arm_id,
                channel=out.channel if arm is not None else None,
                decided_ms=c.now_ms,
                send_at_ms=out.at_ms if out.at_ms is not None else c.send_at_ms,
            )
        )
        return out

    def _arm_send_at(self, c: _Candidate, delay: Delay | None, profile: Profile | None) -> int | None:
        """When an arm with its own delay sends; None: when the flow's would."""
        return None if delay is None else delay.send_time(c.now_ms, self.stage.zone(profile))


def _window_mark(flow_id: str, key: str) -> str:
    return f":{flow_id}\x1f{key}"


def _key_value(path: str | None, body: Mapping[str, Any]) -> str:
    if path is None:
        return ""
    value = _lookup(body, path)
    return "" if value is None else str(value)[:200]


def _lookup(body: Mapping[str, Any], path: str) -> Any:
    value: Any = body
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _area(trig: CohortTrigger, profile: Profile, body: Mapping[str, Any]) -> str | None:
    """The cohort area of one event: a geohash cell of the event's (or the person's) location,
    or a postal code read from the event, then the person's traits."""
    if trig.geohash is not None:
        context = body.get("context") or {}
        p = geo.point(context.get("location")) if isinstance(context, Mapping) else None
        if p is None:
            p = geo.point(profile.traits.get("location"))
        return f"g:{geo.geohash(p, trig.geohash)}" if p is not None else None
    path = trig.postal_code or "traits.address.postal_code"
    value = _lookup(body, path)
    if value is None and path.startswith("traits."):
        value = _lookup(profile.traits, path.removeprefix("traits."))
    if value is None or isinstance(value, dict | list) or str(value).strip() == "":
        return None
    return f"p:{str(value).strip().upper().replace(' ', '')}"
