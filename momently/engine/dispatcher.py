"""The dispatcher: drains the deliveries outbox into channels.

For each claimed delivery it loads the person and the flow version that decided it, renders
the variant for the current channel of the plan and hands it over. Then, in one transaction,
it records the outcome on the row and appends what happened to the event log (``Message
Sent``, ``Message Failed``, ``Message Suppressed``), so funnels are queries over the log.

- Retryable failures (timeouts, 5xx, 429) are retried on the same channel with exponential
  backoff and full jitter, up to ``max_attempts``.
- A channel that cannot be used (not configured, no address for this person, a permanent
  failure, or retries exhausted) hands over to the next channel of the plan; when none is
  left the delivery is dead, with its reason (``momently deliveries list --failed``).
- Every claim has a lease and a fencing token. The lease is renewed while the batch runs (every
  third of its length), a send never starts on a lease with less than a third left, and
  outcomes are written only on rows the claim still holds: a dispatcher whose lease was taken
  over sends nothing more and writes nothing. One that dies mid-send leaves its lease to
  expire; the delivery is tried again with the same delivery key, which channels give
  providers as the idempotency key.
- Right before each send, the workspace's send marks (store.send_marks: the consent ledger's
  high-water mark, the policies, paused flows) are compared with the ones the batch was loaded
  under, re-read at most every ``recheck_ms``; when one moved, consent and kill switches are
  reloaded and the message checked again. A stop-contact acknowledged at T stops every send
  that would start after T + ``recheck_ms``, whatever the batch size or the channel's speed.
- A delayed message (a flow's ``delay``) waits in the outbox until its time; right before it is
  sent its ``cancel_if`` is evaluated on the person as they are then (profile, segments,
  history as the engine keeps them) and, when it holds, the message is suppressed with reason
  ``cancelled``. Consent, kill switches, quiet hours and caps are checked as for any message.
- The frequency-cap check is serialised per person (store.outbox.Outbox.lock_people) and a
  message that passes it is reserved before it is sent, so caps hold with any number of
  dispatchers.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from sqlalchemy import Connection

from momently.channels.base import Channel, Failed, Outgoing, Result, Sent
from momently.channels.registry import ChannelRegistry
from momently.clock import Clock
from momently.domain import consent, ratelimit
from momently.domain.actions import (
    LINK_NOT_ALLOWED,
    Action,
    Unsubscribe,
    link_hosts,
    link_ttl,
    redirect_allowed,
    sign,
    sign_unsubscribe,
)
from momently.domain.caps import Send
from momently.domain.conditions import Facts, compile_condition
from momently.domain.delays import CANCELLED, Delay, compile_delay
from momently.domain.durations import parse_duration
from momently.domain.event import Event, derived_event
from momently.domain.flow import MESSAGE_DECIDED
from momently.domain.guardrails import Defer, FlowRules, Go, plan
from momently.domain.guardrails import Policy as GuardrailPolicy
from momently.domain.message import (
    NotRendered,
    Rendered,
    generic_data,
    generic_variant,
    render,
    template_data,
)
from momently.domain.profile import Profile
from momently.domain.timestamps import from_millis, to_millis
from momently.engine.background import Background, LoopHealth
from momently.engine.channel_health import ChannelHealth
from momently.store.consent import ConsentLedger
from momently.store.database import Database
from momently.store.definitions import Definitions, UnknownDefinition
from momently.store.engine_state import EngineState
from momently.store.events import EventLog
from momently.store.guardrails import GuardrailPolicies
from momently.store.outbox import Delivery, Outbox
from momently.store.profiles import ProfileStore
from momently.store.send_marks import SendMarks, read_marks
from momently.store.workspaces import Workspaces

log = logging.getLogger(__name__)
UTC_ZONE = ZoneInfo("UTC")

MESSAGE_SENT = "Message Sent"
MESSAGE_FAILED = "Message Failed"
MESSAGE_SUPPRESSED = "Message Suppressed"
MESSAGE_DEFERRED = "Message Deferred"
HISTORY_MS = 8 * 86_400_000  # what caps may look back on: a week, plus a calendar day
PAUSED_RECHECK_MS = 3_000
GOAL_CHECK_AFTER_MS = 1_000  # a message sent within this of its decision is not checked for its goal


@dataclass(frozen=True, slots=True)
class ActionLinks:
    """Where one-tap links point (the public URL of this server) and the workspaces' keys."""

    base_url: str
    workspaces: Workspaces


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 5
    base_ms: int = 2_000
    cap_ms: int = 600_000

    def delay_ms(self, attempts: int, rng: random.Random) -> int:
        """Full jitter: uniform in [0, min(cap, base * 2^(attempts-1))], at least 1 s."""
        ceiling = min(self.cap_ms, self.base_ms * 2 ** max(0, attempts - 1))
        return max(1000, int(rng.uniform(0, ceiling)))


class Dispatcher:
    def __init__(
        self,
        db: Database,
        outbox: Outbox,
        events: EventLog,
        profiles: ProfileStore,
        definitions: Definitions,
        channels: Mapping[str, Channel] | ChannelRegistry,
        clock: Clock,
        *,
        retry: RetryPolicy = RetryPolicy(),
        links: ActionLinks | None = None,
        consent_ledger: ConsentLedger | None = None,
        rate_limits: Mapping[str, float] | None = None,
        guardrails: GuardrailPolicies | None = None,
        default_timezone: str = "UTC",
        engine_state: EngineState | None = None,
        max_age_ms: int = 86_400_000,
        lease_ms: int = 60_000,
        batch: int = 100,
        concurrency: int = 8,
        recheck_ms: int = 250,
        seed: int | None = None,
    ) -> None:
        self.db = db
        self.outbox = outbox
        self.events = events
        self.profiles = profiles
        self.definitions = definitions
        # per workspace: its own configuration, or the process-level channels
        self.channels = channels if isinstance(channels, ChannelRegistry) else ChannelRegistry(channels)
        self.clock = clock
        self.retry = retry
        self.links = links
        self.consent = consent_ledger
        self.rate_limits = dict(rate_limits or {})
        self.guardrails = guardrails
        self.default_timezone = default_timezone
        self.engine_state = engine_state  # segments and history for delays' cancel_if
        self.max_age_ms = max_age_ms
        self._buckets: dict[str, ratelimit.Bucket] = {}
        self._buckets_lock = threading.Lock()
        self.lease_ms = lease_ms
        self.batch = batch
        self.concurrency = concurrency
        self.recheck_ms = recheck_ms
        self._fresh_lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._flows: dict[tuple[str, str, int], dict[str, Any]] = {}  # versions never change
        self._delays: dict[tuple[str, str, int], Delay | None] = {}
        self._rng = random.Random(seed)
        # a failed round leaves its leases to expire, so the rows come back
        self._loop = Background("dispatcher", self.run_once, idle_seconds=0.5)
        self.channel_health = ChannelHealth()  # every send's outcome, for /healthz

    # driving -----------------------------------------------------------------------------
    def wake(self) -> None:
        self._loop.wake()

    def start(self, *, idle_poll_seconds: float = 0.5) -> None:
        self._loop.start(idle_poll_seconds)

    def stop(self) -> None:
        self._loop.stop()
        if self._executor is not None:
            self._executor.shutdown()
            self._executor = None

    def health(self) -> LoopHealth:
        return self._loop.health()

    def wait_idle(self, timeout: float) -> bool:
        """See ``Background.wait_idle``: for ``POST /v1/clock`` on a virtual clock."""
        return self._loop.wait_idle(timeout)

    def run_once(self) -> int:
        """Claim a batch, send its messages concurrently, then record every outcome (and its
        ``Message …`` event) in one transaction: one commit per batch, not per message."""
        now = to_millis(self.clock.now())
        claimed = self.outbox.claim(now_ms=now, lease_ms=self.lease_ms, limit=self.batch)
        if not claimed:
            return 0
        lease = _Lease(claimed[0].lease_token or "", {d.id for d in claimed}, now + self.lease_ms, now)
        context = self._load(claimed)
        go, outcomes = self._guard(claimed, context, lease)
        outcomes += self._send_all(go, context, lease)
        self._commit(lease, outcomes)
        return len(claimed)

    def _send_all(self, go: list[Delivery], context: _Context, lease: _Lease) -> list[_Outcome]:
        """Sends run on the pool; meanwhile this thread renews the batch's lease, so slow
        channels cannot make a batch outlive it."""
        if not go:
            return []
        futures = [self._pool().submit(self._deliver, d, context, lease) for d in go]
        pending = set(futures)
        while pending:
            _, pending = wait(pending, timeout=max(0.05, self.lease_ms / 3000))
            if pending:
                self._renew(lease)
        return [f.result() for f in futures]

    # the lease ---------------------------------------------------------------------------
    def _renew(self, lease: _Lease) -> None:
        """Extend the lease when a third of it has passed; rows another dispatcher took over
        (after this one stalled past the lease) drop out of ``lease.held``."""
        now = to_millis(self.clock.now())
        with lease.lock:
            if now - lease.renewed_ms < self.lease_ms // 3 or not lease.held:
                return
            try:
                held = self.outbox.renew(lease.token, sorted(lease.held), until_ms=now + self.lease_ms)
            except Exception:  # the database is away: the lease runs out, and sends stop
                log.exception("could not renew the dispatch lease")
                return
            lost = lease.held - held
            if lost:
                log.warning(
                    "dispatch lease lost for deliveries %s: taken over by another dispatcher", sorted(lost)
                )
            lease.held &= held
            lease.until_ms = now + self.lease_ms
            lease.renewed_ms = now

    def _may_start(self, lease: _Lease, d: Delivery) -> bool:
        """A send starts only on a row this claim still holds, with at least a third of the
        lease left (a renewal is due long before; less means renewals are failing)."""
        self._renew(lease)
        now = to_millis(self.clock.now())
        with lease.lock:
            return d.id in lease.held and lease.until_ms - now >= self.lease_ms // 3

    # consent and kill switches, fresh at the moment of sending ---------------------------
    def _refresh(self, ws: str, context: _Context) -> int:
        """The version of what ``context`` holds for ``ws``, after re-reading the send marks
        (at most every ``recheck_ms``) and reloading consent, policies and paused flows if
        one moved. The marks are re-read by whichever sending thread finds them stale; the
        others wait for it, so none sends on what it already knows is out of date."""
        if ws not in context.marks:
            return 0
        with self._fresh_lock:
            started = time.monotonic()
            if started - context.checked.get(ws, 0.0) < self.recheck_ms / 1000:
                return context.versions.get(ws, 0)
            with self.db.read() as conn:
                marks = read_marks(conn, ws)
                if marks != context.marks[ws]:
                    self._reload(conn, ws, context, context.marks[ws], marks)
                    context.marks[ws] = marks
                    context.versions[ws] = context.versions.get(ws, 0) + 1
            # a stop committed before the query started is in what it read
            context.checked[ws] = started
            return context.versions.get(ws, 0)

    def _reload(self, conn: Connection, ws: str, context: _Context, old: SendMarks, new: SendMarks) -> None:
        if self.consent is not None and (
            old.consent_seq != new.consent_seq or old.consent_policy != new.consent_policy
        ):
            context.policies[ws] = self.consent.policy_of(new.consent_policy)
            people = [p for (w, _), p in context.people.items() if w == ws]
            for pid, records in self.consent.for_profiles(conn, ws, people).items():
                context.records[(ws, pid)] = records
        if self.guardrails is not None and old.guardrails != new.guardrails:
            context.guardrails[ws] = self.guardrails.of_body(new.guardrails)
        if self.guardrails is not None and (old.paused_flows, old.flows_updated_ms) != (
            new.paused_flows,
            new.flows_updated_ms,
        ):
            context.paused_flows[ws] = self._paused_flows(conn, ws)

    def _paused_flows(self, conn: Connection, ws: str) -> set[str]:
        return {id_ for kind, id_, _v, status in self.definitions.states(conn, ws) if status == "paused"}

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self.concurrency, thread_name_prefix="momently-send"
            )
        return self._executor

    def _commit(self, lease: _Lease, outcomes: list[_Outcome]) -> None:
        """Outcomes are written only on rows the claim still holds (the fencing token): a
        dispatcher whose lease was taken over records nothing, the new holder does."""
        rows = [
            (
                o.delivery.id,
                o.values if o.values.get("status") == "sent" else {**o.values, "reserved_ms": None},
            )
            for o in outcomes
            if o.values is not None
        ]
        with self.db.write() as conn:
            written = self.outbox.finish_all(conn, lease.token, rows)
            by_workspace: dict[str, list[tuple[str, Event]]] = {}
            for o in outcomes:
                if o.delivery.id not in written:
                    if o.values is not None:
                        log.warning("delivery %d: lease taken over, outcome not recorded", o.delivery.id)
                    continue
                for ev in o.events:
                    by_workspace.setdefault(o.delivery.workspace_id, []).append((o.delivery.workspace_id, ev))
            for batch in by_workspace.values():
                self.events.append(conn, batch)

    def run_until_idle(self) -> int:
        total = 0
        while done := self.run_once():
            total += done
        return total

    # guardrails: one pass over the batch, in order, before anything is sent ----------------
    def _guard(
        self, claimed: list[Delivery], context: _Context, lease: _Lease
    ) -> tuple[list[Delivery], list[_Outcome]]:
        """Kill switches, quiet hours and frequency caps. Sequential, highest ``priority``
        first, and counting what this batch already let through, so two flows competing for
        the last place under a cap cannot both take it. Where caps apply, the check runs in
        one transaction holding each person's cap lock, reads what every dispatcher sent or
        reserved, and reserves what passes: another dispatcher checking the same person
        waits, then counts these."""
        if self.guardrails is None:
            return claimed, []
        now = to_millis(self.clock.now())
        go: list[Delivery] = []
        held: list[_Outcome] = []
        reserved: list[int] = []
        taken: dict[tuple[str, str], list[tuple[Send, int]]] = {}
        ranked: list[tuple[int, Delivery, dict[str, Any] | None]] = []
        for d in claimed:
            try:
                flow: dict[str, Any] | None = self._flow(d)
            except UnknownDefinition:
                flow = None
            ranked.append((-int(flow.get("priority", 0)) if flow else 0, d, flow))
        ranked.sort(key=lambda r: (r[0], r[1].next_attempt_ms, r[1].id))
        capped = sorted(ws for ws, p in context.guardrails.items() if p.caps)
        with self._cap_locks(capped) as conn:
            history = self._history(conn, capped, claimed, now) if conn is not None else {}
            for _, d, flow in ranked:
                profile = context.people.get((d.workspace_id, d.person_id))
                policy = context.guardrails.get(d.workspace_id)
                if profile is None or flow is None or policy is None or d.channel is None:
                    go.append(d)  # _deliver records why it cannot be sent
                    continue
                switch = _switch(policy, d, context.paused_flows.get(d.workspace_id, set()))
                if switch is not None:
                    held.append(self._paused(d, profile, switch, now, _max_age(flow, self.max_age_ms)))
                    continue
                rules = FlowRules.of(flow)
                cand = Send(now, d.channel, d.flow_id, rules.tags, rules.tier)
                key = (d.workspace_id, d.person_id)
                past = history.get(key, [])
                mine = taken.setdefault(key, [])
                tz = self._zone(profile)
                since = d.held_ms if d.held_ms is not None else now
                verdict = plan(policy, rules, cand, past + [s for s, _ in mine], tz, held_since_ms=since)
                if isinstance(verdict, Go):
                    go.append(d)
                    reserved.append(d.id)
                    mine.append((cand, rules.priority))
                    continue
                reason: str = verdict.reason
                if reason == "frequency_cap" and any(p > rules.priority for _, p in mine):
                    without = past + [s for s, p in mine if p <= rules.priority]
                    if isinstance(plan(policy, rules, cand, without, tz, held_since_ms=since), Go):
                        reason = "lower_priority"  # a more important flow took the place
                if isinstance(verdict, Defer):
                    held.append(
                        self._deferred(d, profile, verdict.until_ms, reason, verdict.detail, held_ms=since)
                    )
                else:
                    held.append(self._suppress(d, profile, reason, verdict.detail))
            if conn is not None:
                self.outbox.reserve(conn, lease.token, reserved, at_ms=now)
        return go, held

    @contextmanager
    def _cap_locks(self, workspaces: list[str]) -> Iterator[Connection | None]:
        """A write transaction for the cap check when any workspace of the batch has caps
        (none otherwise: no cost without caps)."""
        if not workspaces:
            yield None
            return
        with self.db.write() as conn:
            yield conn

    def _history(
        self, conn: Connection, workspaces: list[str], claimed: list[Delivery], now: int
    ) -> dict[tuple[str, str], list[Send]]:
        """What the batch's people were sent or are being sent (reserved by any dispatcher),
        read under their cap locks."""
        mine = {d.id for d in claimed}
        history: dict[tuple[str, str], list[Send]] = {}
        for ws in workspaces:
            people = sorted({d.person_id for d in claimed if d.workspace_id == ws})
            self.outbox.lock_people(conn, ws, people)
            for past in self.outbox.sent_since(conn, ws, people, since_ms=now - HISTORY_MS):
                if past.id not in mine:
                    history.setdefault((ws, past.person_id), []).append(self._as_send(past))
        return history

    def _zone(self, profile: Profile) -> ZoneInfo:
        try:
            return ZoneInfo(profile.timezone or self.default_timezone)
        except (ZoneInfoNotFoundError, ValueError):
            return ZoneInfo(self.default_timezone)

    def _as_send(self, d: Delivery) -> Send:
        try:
            flow = self._flow(d)
        except UnknownDefinition:
            flow = {}
        return Send(
            d.reserved_ms if d.status == "sending" and d.reserved_ms is not None else d.updated_ms,
            d.channel or "",
            d.flow_id,
            tuple(str(t) for t in flow.get("tags", ()) or ()),
            str(flow.get("tier", "B")),
        )

    def _deferred(
        self,
        d: Delivery,
        profile: Profile,
        until_ms: int,
        reason: str,
        detail: str,
        *,
        held_ms: int | None = None,
    ) -> _Outcome:
        values: dict[str, Any] = {
            "status": "pending",
            "attempts": max(0, d.attempts - 1),
            "next_attempt_ms": until_ms,
            "last_error": f"{reason}: {detail}",
            "lease_until_ms": None,
        }
        if held_ms is not None:  # a guardrail held it back: on_cap.max_delay counts from the first time
            values["held_ms"] = held_ms
        return self._record(
            d,
            profile,
            values,
            MESSAGE_DEFERRED,
            {"channel": d.channel, "reason": reason, "detail": detail, "until": until_ms},
        )

    def _paused(self, d: Delivery, profile: Profile, switch: str, now: int, max_age_ms: int) -> _Outcome:
        """A paused workspace, channel or flow: the message waits (checked again every few
        seconds) until it is resumed, or until it is too old to be worth sending."""
        if now - d.planned_ms > max_age_ms:  # from when it was meant to go: a delay is not age
            return self._record(
                d,
                profile,
                {"status": "expired", "last_error": f"paused: {switch}", "lease_until_ms": None},
                MESSAGE_SUPPRESSED,
                {"channel": d.channel, "reason": "paused", "detail": f"{switch}; expired while waiting"},
            )
        values = {
            "status": "pending",
            "attempts": max(0, d.attempts - 1),
            "next_attempt_ms": now + PAUSED_RECHECK_MS,
            "last_error": f"paused: {switch}",
            "lease_until_ms": None,
        }
        if (d.last_error or "").startswith("paused:"):  # the deferral was recorded already
            values["updated_ms"] = now
            return _Outcome(d, values, ())
        return self._record(
            d, profile, values, MESSAGE_DEFERRED, {"channel": d.channel, "reason": "paused", "detail": switch}
        )

    # one delivery ------------------------------------------------------------------------
    def _flow(self, d: Delivery) -> dict[str, Any]:
        key = (d.workspace_id, d.flow_id, d.flow_version)
        body = self._flows.get(key)
        if body is None:
            body = self.definitions.get(d.workspace_id, "flow", d.flow_id, d.flow_version).body
            self._flows[key] = body
        return body

    def _delay(self, d: Delivery, flow: dict[str, Any]) -> Delay | None:
        key = (d.workspace_id, d.flow_id, d.flow_version)
        if key not in self._delays:
            self._delays[key] = compile_delay(flow["delay"]) if "delay" in flow else None
        return self._delays[key]

    def _cancellable(self, claimed: list[Delivery]) -> set[str]:
        """The people of the batch whose message may be cancelled (its flow's delay has a
        ``cancel_if``): their segments and history are loaded with the batch."""
        people: set[str] = set()
        for d in claimed:
            try:
                delay = self._delay(d, self._flow(d))
            except UnknownDefinition:
                continue
            if delay is not None and delay.cancel_if is not None:
                people.add(d.person_id)
        return people

    def _load(self, claimed: list[Delivery]) -> _Context:
        """The people and trigger events of a whole batch, one query each per workspace."""
        people: dict[tuple[str, str], Profile] = {}
        triggers: dict[tuple[str, int], dict[str, Any]] = {}
        records: dict[tuple[str, str], list[consent.Record]] = {}
        policies: dict[str, consent.Policy] = {}
        guardrails: dict[str, GuardrailPolicy] = {}
        paused_flows: dict[str, set[str]] = {}
        marks: dict[str, SendMarks] = {}
        checked: dict[str, float] = {}
        standing: dict[tuple[str, str], _Standing] = {}
        for ws in {d.workspace_id for d in claimed}:
            mine = [d for d in claimed if d.workspace_id == ws]
            with self.db.read() as conn:
                if self.consent is not None or self.guardrails is not None:
                    # read before what they guard: a change in between is seen as a move
                    checked[ws] = time.monotonic()
                    marks[ws] = read_marks(conn, ws)
                loaded = self.profiles.load(conn, ws, {d.person_id for d in mine})
                if self.consent is not None:
                    # read at send time, not at decision time: a stop-contact that arrived
                    # while the message waited in the outbox still stops it; the policies
                    # are the ones read with the marks, not a cached copy
                    policies[ws] = self.consent.policy_of(marks[ws].consent_policy)
                    mine_records = self.consent.for_profiles(conn, ws, loaded.values())
                    records.update({(ws, pid): r for pid, r in mine_records.items()})
                if self.guardrails is not None:
                    guardrails[ws] = self.guardrails.of_body(marks[ws].guardrails)
                    paused_flows[ws] = self._paused_flows(conn, ws)
                cancellable = self._cancellable(mine) if self.engine_state is not None else set()
                if cancellable and self.engine_state is not None:
                    members = self.engine_state.members(conn, ws, cancellable)
                    states = self.engine_state.states(conn, ws, cancellable)
                    for pid in cancellable:
                        history = states.get(pid, {}).get("history", {})
                        standing[(ws, pid)] = _Standing(frozenset(members.get(pid, ())), history)
            people.update({(ws, pid): p for pid, p in loaded.items()})
            seqs = sorted({d.trigger_seq for d in mine if d.trigger_seq is not None})
            triggers.update({(ws, ev.seq): ev.body for ev in self.events.by_seqs(ws, seqs)})
        return _Context(
            people, triggers, records, policies, guardrails, paused_flows, marks, checked, standing
        )

    def _deliver(self, d: Delivery, context: _Context, lease: _Lease) -> _Outcome:
        """Prepare (consent, kill switches, render), then check the send marks: if anything
        moved since, prepare again on what was reloaded. Then the lease, then the send."""
        while True:
            version = context.versions.get(d.workspace_id, 0)
            ready = self._prepare(d, context)
            if isinstance(ready, _Outcome):
                return ready
            if self._refresh(d.workspace_id, context) == version:
                break
        profile, channel, rendered, personal, outgoing, address = ready
        wait_ms = self._throttle(channel.name)
        if wait_ms:
            return self._over_rate(d, profile, channel.name, wait_ms)
        if not self._may_start(lease, d):
            return _Outcome(d, None, ())  # whoever holds the row now sends it
        try:
            result: Result = channel.send(outgoing, address)
        except Exception as exc:  # a channel bug must not lose the delivery
            log.exception("channel %s raised", channel.name)
            result = Failed(f"channel_error: {type(exc).__name__}", retryable=True)
        self.channel_health.record(channel.name, result, to_millis(self.clock.now()))
        return self._result(d, profile, channel, rendered, personal, result)

    def _prepare(self, d: Delivery, context: _Context) -> _Outcome | _Ready:
        profile = context.people.get((d.workspace_id, d.person_id))
        if profile is None:
            return self._dead(d, None, "person_not_found", channel=d.channel)
        try:
            flow = self._flow(d)
        except UnknownDefinition:
            return self._dead(d, profile, "flow_not_found", channel=d.channel)
        guardrails = context.guardrails.get(d.workspace_id)
        switch = (
            _switch(guardrails, d, context.paused_flows.get(d.workspace_id, set())) if guardrails else None
        )
        if switch is not None:  # paused while the batch was under way
            now = to_millis(self.clock.now())
            return self._paused(d, profile, switch, now, _max_age(flow, self.max_age_ms))
        if self._may_have_reached_goal(d) and self._goal_reached(d, flow, profile):
            what = "the follow-up" if d.kind == "follow_up" else "the message went out"
            return self._suppress(d, profile, "goal_reached", f"the goal was reached before {what}")
        trigger = context.triggers.get((d.workspace_id, d.trigger_seq)) if d.trigger_seq is not None else None
        cancelled = self._cancelled(d, flow, profile, trigger, context)
        if cancelled is not None:
            return self._suppress(d, profile, CANCELLED, cancelled)
        name = d.channel
        channel = self.channels.channel(d.workspace_id, name, flow) if name is not None else None
        if channel is None:
            return self._next_channel(d, profile, "channel_not_configured")
        purpose = consent.purpose_of(str(flow.get("tier", "B")))
        policy = context.policies.get(d.workspace_id)
        personal = True
        if policy is not None:
            now_ms = to_millis(self.clock.now())
            records = context.records.get((d.workspace_id, d.person_id), [])
            verdict = consent.check(records, channel.name, purpose, policy, now_ms=now_ms)
            if not verdict.allowed and verdict.reason is not None:
                return self._next_channel(d, profile, verdict.reason, suppress=f"{channel.name}/{purpose}")
            # a receipt or an ETA is about the event itself, not personalisation
            if purpose != "transactional":
                personal = consent.check(
                    records, channel.name, "personalisation", policy, now_ms=now_ms
                ).allowed
        address = channel.address(d.workspace_id, profile)
        if address is None:
            return self._next_channel(d, profile, "no_address")
        raw_message = flow.get("message")
        message: dict[str, Any] = raw_message if isinstance(raw_message, dict) else {}
        if personal:
            rendered = render(message, d.variant, channel.name, template_data(profile, trigger))
        else:  # behaviour-based content only with consent: the generic variant, on traits alone
            variant = generic_variant(message) or d.variant
            rendered = render(message, variant, channel.name, generic_data(profile))
        if isinstance(rendered, NotRendered):
            return self._suppress(d, profile, rendered.reason, rendered.detail)
        if rendered.action_url and not redirect_allowed(rendered.action_url, link_hosts(message)):
            # a target from data on a host the flow did not declare: an open redirect on our domain
            detail = f"action link {rendered.action_url[:200]!r} is not on the flow's link hosts"
            return self._suppress(d, profile, LINK_NOT_ALLOWED, detail)
        rendered = self._with_action_link(d, flow, profile, rendered, channel.name)
        outgoing = Outgoing(
            key=f"{d.workspace_id}:{d.key}",
            delivery_id=d.id,
            workspace_id=d.workspace_id,
            flow_id=d.flow_id,
            flow_version=d.flow_version,
            occurrence=d.occurrence,
            profile=profile,
            message=rendered,
            trigger=trigger,
            unsubscribe_url=self._unsubscribe_url(d, profile, channel.name, purpose),
            expires_ms=_expiry(message, to_millis(self.clock.now())),
        )
        return profile, channel, rendered, personal, outgoing, address

    def _result(
        self,
        d: Delivery,
        profile: Profile,
        channel: Channel,
        rendered: Rendered,
        personal: bool,
        result: Result,
    ) -> _Outcome:
        if isinstance(result, Sent):
            return self._record(
                d,
                profile,
                {
                    "status": "sent",
                    "provider_id": result.provider_id,
                    "last_error": None,
                    "lease_until_ms": None,
                },
                MESSAGE_SENT,
                {
                    "channel": channel.name,
                    "provider_id": result.provider_id,
                    "variant": rendered.variant,
                    "personalised": personal,
                },
            )
        elif result.retryable and d.attempts < self.retry.max_attempts:
            now = to_millis(self.clock.now())
            retry_at = now + max(self.retry.delay_ms(d.attempts, self._rng), result.retry_after_ms or 0)
            return self._record(
                d,
                profile,
                {
                    "status": "pending",
                    "next_attempt_ms": retry_at,
                    "last_error": result.reason,
                    "lease_until_ms": None,
                },
                MESSAGE_FAILED,
                {"channel": channel.name, "reason": result.reason, "retry_at": retry_at, "final": False},
            )
        return self._next_channel(d, profile, result.reason)

    def _with_action_link(
        self, d: Delivery, flow: dict[str, Any], profile: Profile, rendered: Rendered, channel: str
    ) -> Rendered:
        """The call to action becomes a one-tap link that records the tap for this person
        (``Message Clicked``, and the action's declared event if it has one), then redirects
        to the action's own URL."""
        if self.links is None or not (rendered.action_url or rendered.action_label):
            return rendered
        action = Action(
            delivery_key=d.key,
            flow_id=d.flow_id,
            person_id=d.person_id,
            user_id=profile.user_id,
            anonymous_id=profile.anonymous_id,
            event=rendered.action_event,
            label=rendered.action_label,
            redirect=rendered.action_url,
            ttl_seconds=link_ttl(flow),
            flow_version=d.flow_version,
            variant=rendered.variant,
            channel=channel,
        )
        secret = self.links.workspaces.signing_key(d.workspace_id, now=self.clock.now())
        token = sign(secret, action, self.clock.now)
        return replace(rendered, action_url=f"{self.links.base_url}/a/{d.workspace_id}/{token}")

    def _throttle(self, channel: str) -> int:
        """The channel's provider send rate (``MOMENTLY_CHANNEL_RATE_LIMITS``): 0 to send now,
        else how long to wait. A token bucket with one second of burst."""
        rate = self.rate_limits.get(channel)
        if not rate:
            return 0
        with self._buckets_lock:
            verdict = ratelimit.take(
                self._buckets.get(channel),
                rate=rate,
                burst=max(1.0, rate),
                cost=1,
                now=self.clock.now().timestamp(),
                strict=True,
            )
            self._buckets[channel] = verdict.bucket
        return 0 if verdict.allowed else verdict.retry_after * 1000

    def _over_rate(self, d: Delivery, profile: Profile, channel: str, wait_ms: int) -> _Outcome:
        """Over the provider's rate: back in the queue, not counted as an attempt. One
        ``Message Deferred`` (``rate_limited``) the first time, not one per wait."""
        now = to_millis(self.clock.now())
        until = now + wait_ms + self._rng.randrange(0, 250)
        if (d.last_error or "").startswith("rate_limited"):
            values = {
                "status": "pending",
                "attempts": max(0, d.attempts - 1),
                "next_attempt_ms": until,
                "lease_until_ms": None,
                "updated_ms": now,
            }
            return _Outcome(d, values, ())
        return self._deferred(d, profile, until, "rate_limited", f"{channel} send rate")

    def _may_have_reached_goal(self, d: Delivery) -> bool:
        """Worth reading the log for the goal: a follow-up, or a message sent a while after
        its decision (a deadline that waited for late events, quiet hours, a cap, a retry)."""
        waited = to_millis(self.clock.now()) - d.created_ms
        return d.kind == "follow_up" or waited >= GOAL_CHECK_AFTER_MS

    def _goal_reached(self, d: Delivery, flow: dict[str, Any], profile: Profile) -> bool:
        """Did the person do what the flow asked (its goal event, matching its ``where``)
        since the decision? Looks at their latest events in the log."""
        goal = flow.get("goal")
        if not isinstance(goal, dict) or "event" not in goal:
            return False
        where = compile_condition(goal.get("where"))
        now = to_millis(self.clock.now())
        seqs = self.profiles.event_seqs(d.workspace_id, d.person_id, before_seq=None, limit=500)
        for ev in self.events.by_seqs(d.workspace_id, seqs):
            if (
                ev.name == goal["event"]
                and ev.time_ms >= d.created_ms
                and where(Facts(profile=profile, now_ms=now, tz=UTC_ZONE, event=ev.body))
            ):
                return True
        return False

    def _cancelled(
        self,
        d: Delivery,
        flow: dict[str, Any],
        profile: Profile,
        trigger: Mapping[str, Any] | None,
        context: _Context,
    ) -> str | None:
        """The detail of the suppression when the flow's ``delay.cancel_if`` holds now, for
        the message and its follow-up alike; else None. Evaluated like an audience, on the
        person as the engine knows them at this moment, with ``since: decision`` meaning
        after ``created_ms``."""
        delay = self._delay(d, flow)
        if delay is None or delay.cancel_if is None:
            return None
        standing = context.standing.get((d.workspace_id, d.person_id), _Standing())
        facts = Facts(
            profile=profile,
            now_ms=to_millis(self.clock.now()),
            tz=self._zone(profile),
            event=trigger,
            segments=standing.segments,
            history=standing.history,
            decided_ms=d.created_ms,
        )
        if not delay.cancel_if(facts):
            return None
        written = orjson.dumps(delay.cancel_spec, option=orjson.OPT_SORT_KEYS).decode()
        return f"delay.cancel_if held when the message was due: {written[:300]}"

    def _unsubscribe_url(self, d: Delivery, profile: Profile, channel: str, purpose: str) -> str | None:
        if self.links is None or purpose == "transactional":
            return None
        link = Unsubscribe(d.key, profile.user_id, profile.anonymous_id, channel, purpose)
        if link.user_id is None and link.anonymous_id is None:
            return None
        secret = self.links.workspaces.signing_key(d.workspace_id, now=self.clock.now())
        token = sign_unsubscribe(secret, link, self.clock.now)
        return f"{self.links.base_url}/u/{d.workspace_id}/{token}"

    def _next_channel(
        self, d: Delivery, profile: Profile, reason: str, *, suppress: str | None = None
    ) -> _Outcome:
        """Fall back to the next channel of the plan, or give up: dead when the last channel
        failed, suppressed (``suppress`` says what was missing) when a guardrail said no."""
        if d.channel_index + 1 < len(d.channels):
            return self._record(
                d,
                profile,
                {
                    "status": "pending",
                    "channel_index": d.channel_index + 1,
                    "attempts": 0,
                    "next_attempt_ms": to_millis(self.clock.now()),
                    "last_error": reason,
                    "lease_until_ms": None,
                },
                MESSAGE_FAILED,
                {
                    "channel": d.channel,
                    "reason": reason,
                    "fallback": d.channels[d.channel_index + 1],
                    "final": False,
                },
            )
        if suppress is not None:
            return self._suppress(d, profile, reason, suppress)
        return self._dead(d, profile, reason, channel=d.channel)

    def _dead(self, d: Delivery, profile: Profile | None, reason: str, *, channel: str | None) -> _Outcome:
        return self._record(
            d,
            profile,
            {"status": "dead", "last_error": reason, "lease_until_ms": None},
            MESSAGE_FAILED,
            {"channel": channel, "reason": reason, "final": True},
        )

    def _suppress(self, d: Delivery, profile: Profile, reason: str, detail: str) -> _Outcome:
        return self._record(
            d,
            profile,
            {"status": "suppressed", "last_error": f"{reason}: {detail}", "lease_until_ms": None},
            MESSAGE_SUPPRESSED,
            {"channel": d.channel, "reason": reason, "detail": detail},
        )

    def _record(
        self,
        d: Delivery,
        profile: Profile | None,
        values: dict[str, Any],
        event: str,
        properties: dict[str, Any],
    ) -> _Outcome:
        now = self.clock.now()
        values["updated_ms"] = to_millis(now)
        props = {
            "delivery_id": d.id,
            "delivery_key": d.key,
            "flow_id": d.flow_id,
            "flow_version": d.flow_version,
            "occurrence": d.occurrence,
            "attempt": d.attempts,
            **{k: v for k, v in properties.items() if v is not None},
        }
        ev = derived_event(
            # a deferred delivery can come back with the same attempt count: the time it was
            # put off to keeps each of its events distinct
            message_id=f"momently:delivery:{d.id}:{d.channel_index}:{d.attempts}:{values['status']}"
            + (f":{values['next_attempt_ms']}" if event == MESSAGE_DEFERRED else ""),
            name=event,
            user_id=profile.user_id if profile is not None else None,
            anonymous_id=profile.anonymous_id if profile is not None else None,
            at=now,
            received_at=now,
            properties=props,
        )
        if ev.user_id is None and ev.anonymous_id is None:
            return _Outcome(d, values, ())
        if d.updated_ms == d.created_ms and d.kind == "message":  # its first outcome
            return _Outcome(d, values, (self._decided(d, ev), ev))
        return _Outcome(d, values, (ev,))

    def _decided(self, d: Delivery, outcome: Event) -> Event:
        """``Message Decided``, the first step of every message funnel: timestamped at the
        decision, written with the delivery's first outcome (so the engine's own pass stays
        lean); a crash before that commit leaves the row unfinished, and the retry writes it."""
        return derived_event(
            message_id=f"momently:decided:{d.workspace_id}:{d.key}",
            name=MESSAGE_DECIDED,
            user_id=outcome.user_id,
            anonymous_id=outcome.anonymous_id,
            at=from_millis(d.created_ms),
            received_at=self.clock.now(),
            properties={
                "delivery_id": d.id,
                "delivery_key": d.key,
                "flow_id": d.flow_id,
                "flow_version": d.flow_version,
                "occurrence": d.occurrence,
                "variant": d.variant,
                "channels": d.channels,
            },
        )


def _max_age(flow: dict[str, Any], default_ms: int) -> int:
    """The flow's ``max_age`` (validated by ``flows validate``), else the server's."""
    try:
        return parse_duration(flow["max_age"]) if "max_age" in flow else default_ms
    except ValueError:
        return default_ms


def _expiry(message: dict[str, Any], now_ms: int) -> int | None:
    """``message.expires_in`` (validated by ``flows validate``) from the moment of sending."""
    try:
        return now_ms + parse_duration(message["expires_in"]) if "expires_in" in message else None
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class _Context:
    people: dict[tuple[str, str], Profile]
    triggers: dict[tuple[str, int], dict[str, Any]]
    records: dict[tuple[str, str], list[consent.Record]]
    policies: dict[str, consent.Policy]
    guardrails: dict[str, GuardrailPolicy]
    paused_flows: dict[str, set[str]]
    # what the above was loaded under, per workspace, and when the marks were last read
    marks: dict[str, SendMarks]
    checked: dict[str, float]
    standing: dict[tuple[str, str], _Standing] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Standing:
    """A person's segments and kept event history, read with the batch for ``cancel_if``."""

    segments: frozenset[str] = frozenset()
    history: Mapping[str, list[int]] = field(default_factory=dict)


@dataclass(slots=True)
class _Lease:
    """One claim: its fencing token, the rows it still holds and until when."""

    token: str
    held: set[int]
    until_ms: int
    renewed_ms: int
    lock: threading.Lock = field(default_factory=threading.Lock)


_Ready = tuple[Profile, Channel, Rendered, bool, Outgoing, str]


@dataclass(frozen=True, slots=True)
class _Outcome:
    """What to write for one delivery once its batch is done."""

    delivery: Delivery
    values: dict[str, Any] | None  # None: write nothing (the lease is gone; its next holder sends)
    events: tuple[Event, ...]


def _switch(policy: GuardrailPolicy, d: Delivery, paused_flows: set[str]) -> str | None:
    """The kill switch holding ``d``, if any."""
    if policy.paused:
        return "workspace"
    if d.channel in policy.paused_channels:
        return f"channel {d.channel}"
    if d.flow_id in paused_flows:
        return f"flow {d.flow_id}"
    return None
