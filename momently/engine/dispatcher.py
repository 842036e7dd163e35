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
- A dispatcher that dies mid-send leaves its lease to expire; the delivery is tried again
  with the same delivery key, which channels give providers as the idempotency key.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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
from momently.store.consent import ConsentLedger
from momently.store.database import Database
from momently.store.definitions import Definitions, UnknownDefinition
from momently.store.events import EventLog
from momently.store.guardrails import GuardrailPolicies
from momently.store.outbox import Delivery, Outbox
from momently.store.profiles import ProfileStore
from momently.store.workspaces import Workspaces

log = logging.getLogger(__name__)
UTC_ZONE = ZoneInfo("UTC")

MESSAGE_SENT = "Message Sent"
MESSAGE_FAILED = "Message Failed"
MESSAGE_SUPPRESSED = "Message Suppressed"
MESSAGE_DEFERRED = "Message Deferred"
HISTORY_MS = 8 * 86_400_000  # what caps may look back on: a week, plus a calendar day
PAUSED_RECHECK_MS = 3_000


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
        max_age_ms: int = 86_400_000,
        lease_ms: int = 60_000,
        batch: int = 100,
        concurrency: int = 8,
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
        self.max_age_ms = max_age_ms
        self._buckets: dict[str, ratelimit.Bucket] = {}
        self._buckets_lock = threading.Lock()
        self.lease_ms = lease_ms
        self.batch = batch
        self.concurrency = concurrency
        self._executor: ThreadPoolExecutor | None = None
        self._flows: dict[tuple[str, str, int], dict[str, Any]] = {}  # versions never change
        self._rng = random.Random(seed)
        # a failed round leaves its leases to expire, so the rows come back
        self._loop = Background("dispatcher", self.run_once, idle_seconds=0.5)

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

    def run_once(self) -> int:
        """Claim a batch, send its messages concurrently, then record every outcome (and its
        ``Message …`` event) in one transaction: one commit per batch, not per message."""
        now = to_millis(self.clock.now())
        claimed = self.outbox.claim(now_ms=now, lease_ms=self.lease_ms, limit=self.batch)
        if not claimed:
            return 0
        context = self._load(claimed)
        go, outcomes = self._guard(claimed, context)
        if len(go) <= 1 or self.concurrency == 1:
            outcomes += [self._deliver(d, context) for d in go]
        else:
            outcomes += list(self._pool().map(lambda d: self._deliver(d, context), go))
        self._commit(outcomes)
        return len(claimed)

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self.concurrency, thread_name_prefix="momently-send"
            )
        return self._executor

    def _commit(self, outcomes: list[_Outcome]) -> None:
        with self.db.write() as conn:
            self.outbox.finish_all(conn, [(o.delivery.id, o.values) for o in outcomes])
            by_workspace: dict[str, list[tuple[str, Event]]] = {}
            for o in outcomes:
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
    def _guard(self, claimed: list[Delivery], context: _Context) -> tuple[list[Delivery], list[_Outcome]]:
        """Kill switches, quiet hours and frequency caps. Sequential, highest ``priority``
        first, and counting what this batch already let through, so two flows competing for
        the last place under a cap cannot both take it."""
        if self.guardrails is None:
            return claimed, []
        now = to_millis(self.clock.now())
        go: list[Delivery] = []
        held: list[_Outcome] = []
        taken: dict[tuple[str, str], list[tuple[Send, int]]] = {}
        ranked: list[tuple[int, Delivery, dict[str, Any] | None]] = []
        for d in claimed:
            try:
                flow: dict[str, Any] | None = self._flow(d)
            except UnknownDefinition:
                flow = None
            ranked.append((-int(flow.get("priority", 0)) if flow else 0, d, flow))
        ranked.sort(key=lambda r: (r[0], r[1].next_attempt_ms, r[1].id))
        for _, d, flow in ranked:
            profile = context.people.get((d.workspace_id, d.person_id))
            policy = context.guardrails.get(d.workspace_id)
            if profile is None or flow is None or policy is None or d.channel is None:
                go.append(d)  # _deliver records why it cannot be sent
                continue
            switch = (
                "workspace"
                if policy.paused
                else f"channel {d.channel}"
                if d.channel in policy.paused_channels
                else f"flow {d.flow_id}"
                if d.flow_id in context.paused_flows.get(d.workspace_id, ())
                else None
            )
            if switch is not None:
                held.append(self._paused(d, profile, switch, now, _max_age(flow, self.max_age_ms)))
                continue
            rules = FlowRules.of(flow)
            cand = Send(now, d.channel, d.flow_id, rules.tags, rules.tier)
            key = (d.workspace_id, d.person_id)
            past = context.history.get(key, [])
            mine = taken.setdefault(key, [])
            tz = self._zone(profile)
            verdict = plan(policy, rules, cand, past + [s for s, _ in mine], tz, decided_ms=d.created_ms)
            if isinstance(verdict, Go):
                go.append(d)
                mine.append((cand, rules.priority))
                continue
            reason: str = verdict.reason
            if reason == "frequency_cap" and any(p > rules.priority for _, p in mine):
                without = past + [s for s, p in mine if p <= rules.priority]
                if isinstance(plan(policy, rules, cand, without, tz, decided_ms=d.created_ms), Go):
                    reason = "lower_priority"  # a more important flow took the place
            if isinstance(verdict, Defer):
                held.append(self._deferred(d, profile, verdict.until_ms, reason, verdict.detail))
            else:
                held.append(self._suppress(d, profile, reason, verdict.detail))
        return go, held

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
            d.updated_ms,
            d.channel or "",
            d.flow_id,
            tuple(str(t) for t in flow.get("tags", ()) or ()),
            str(flow.get("tier", "B")),
        )

    def _deferred(self, d: Delivery, profile: Profile, until_ms: int, reason: str, detail: str) -> _Outcome:
        return self._record(
            d,
            profile,
            {
                "status": "pending",
                "attempts": max(0, d.attempts - 1),
                "next_attempt_ms": until_ms,
                "last_error": f"{reason}: {detail}",
                "lease_until_ms": None,
            },
            MESSAGE_DEFERRED,
            {"channel": d.channel, "reason": reason, "detail": detail, "until": until_ms},
        )

    def _paused(self, d: Delivery, profile: Profile, switch: str, now: int, max_age_ms: int) -> _Outcome:
        """A paused workspace, channel or flow: the message waits (checked again every few
        seconds) until it is resumed, or until it is too old to be worth sending."""
        if now - d.created_ms > max_age_ms:
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

    def _load(self, claimed: list[Delivery]) -> _Context:
        """The people and trigger events of a whole batch, one query each per workspace."""
        people: dict[tuple[str, str], Profile] = {}
        triggers: dict[tuple[str, int], dict[str, Any]] = {}
        records: dict[tuple[str, str], list[consent.Record]] = {}
        policies: dict[str, consent.Policy] = {}
        guardrails: dict[str, GuardrailPolicy] = {}
        paused_flows: dict[str, set[str]] = {}
        history: dict[tuple[str, str], list[Send]] = {}
        for ws in {d.workspace_id for d in claimed}:
            mine = [d for d in claimed if d.workspace_id == ws]
            with self.db.read() as conn:
                loaded = self.profiles.load(conn, ws, {d.person_id for d in mine})
                if self.consent is not None:
                    # read at send time, not at decision time: a stop-contact that arrived
                    # while the message waited in the outbox still stops it
                    policies[ws] = self.consent.policy(ws)
                    mine_records = self.consent.for_profiles(conn, ws, loaded.values())
                    records.update({(ws, pid): r for pid, r in mine_records.items()})
                if self.guardrails is not None:
                    guardrails[ws] = self.guardrails.get(ws)
                    paused_flows[ws] = {
                        id_
                        for kind, id_, _v, status in self.definitions.states(conn, ws)
                        if status == "paused"
                    }
                    if guardrails[ws].caps:
                        since = to_millis(self.clock.now()) - HISTORY_MS
                        for past in self.outbox.sent_since(conn, ws, list(loaded), since_ms=since):
                            history.setdefault((ws, past.person_id), []).append(self._as_send(past))
            people.update({(ws, pid): p for pid, p in loaded.items()})
            seqs = sorted({d.trigger_seq for d in mine if d.trigger_seq is not None})
            triggers.update({(ws, ev.seq): ev.body for ev in self.events.by_seqs(ws, seqs)})
        return _Context(people, triggers, records, policies, guardrails, paused_flows, history)

    def _deliver(self, d: Delivery, context: _Context) -> _Outcome:
        profile = context.people.get((d.workspace_id, d.person_id))
        if profile is None:
            return self._dead(d, None, "person_not_found", channel=d.channel)
        try:
            flow = self._flow(d)
        except UnknownDefinition:
            return self._dead(d, profile, "flow_not_found", channel=d.channel)
        if d.kind == "follow_up" and self._goal_reached(d, flow, profile):
            return self._suppress(d, profile, "goal_reached", "the goal was reached before the follow-up")
        trigger = context.triggers.get((d.workspace_id, d.trigger_seq)) if d.trigger_seq is not None else None
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
        wait_ms = self._throttle(channel.name)
        if wait_ms:
            return self._over_rate(d, profile, channel.name, wait_ms)
        try:
            result: Result = channel.send(outgoing, address)
        except Exception as exc:  # a channel bug must not lose the delivery
            log.exception("channel %s raised", channel.name)
            result = Failed(f"channel_error: {type(exc).__name__}", retryable=True)
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
    history: dict[tuple[str, str], list[Send]]


@dataclass(frozen=True, slots=True)
class _Outcome:
    """What to write for one delivery once its batch is done."""

    delivery: Delivery
    values: dict[str, Any]
    events: tuple[Event, ...]
