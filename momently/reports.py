"""Per-flow KPIs from the log: the funnel, suppressions by reason, micro-conversion with its
interval, click-through, time to resolution, acknowledgement latency, the consent-aligned
personalisation rate and revenue after the send, per variant or experiment arm, with small
cells hidden (``domain.privacy``). Shared by ``momently report`` and ``GET /v1/reports/flows``.

Every number is counted over the enrollments decided in the window ``[since, until)`` and the
log events about their messages (store/reports.py says how they are found); docs/reports.md
defines each KPI.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from momently import alignment
from momently.domain.conditions import Facts, compile_condition
from momently.domain.durations import parse_duration
from momently.domain.privacy import Cell, Equation, noisy, suppress
from momently.domain.profile import Profile
from momently.domain.timestamps import format_timestamp, from_millis, to_millis
from momently.experiments.results import experiment_results
from momently.services import Services
from momently.stats import ArmResult, Proportion, wilson
from momently.store.definitions import UnknownDefinition
from momently.store.reports import ORDER_COMPLETED, Reports

UTC = ZoneInfo("UTC")
ALL = "all"  # the column of the whole flow
NO_VARIANT = "(none)"  # enrollments decided without a variant or arm (most suppressions)
FAST_MS = 300
MAX_EPSILON = 100.0
IN_APP = "in_app"
FUNNEL = ("triggered", "eligible", "sent", "delivered", "seen", "clicked", "converted")
# parts of ``sent`` that are printed, each with its never-printed complement
SUBSETS = ("delivered", "seen", "clicked", "converted", "personalised", "ordered", "handed")


class UnknownFlow(LookupError):
    pass


class InvalidReport(ValueError):
    """A malformed ``since`` or noise setting."""


def options_for(
    s: Services, workspace_id: str, *, since: str, epsilon: float | None = None, seed: int | None = None
) -> Options:
    """The report's window (``since`` ago until now, on the server's clock), with the
    workspace's ``reportMinCount``."""
    try:
        since_ms = parse_duration(since)
    except ValueError as exc:
        raise InvalidReport(f"since: {exc}") from None
    if epsilon is not None and not (0 < epsilon <= MAX_EPSILON):
        raise InvalidReport(f"noise epsilon must be above 0 and at most {MAX_EPSILON}")
    now = to_millis(s.clock.now())
    k = s.guardrails.get(workspace_id, fresh=True).report_min_count
    return Options(since_ms=now - since_ms, until_ms=now + 1, min_count=k, epsilon=epsilon, seed=seed)


@dataclass(frozen=True, slots=True)
class Options:
    since_ms: int
    until_ms: int
    min_count: int
    epsilon: float | None = None
    seed: int | None = None
    """the noise generator's seed; None (the default) draws one from the OS for each run"""


@dataclass(slots=True)
class _Message:
    """What the log says happened to one delivery."""

    group: str
    person: str
    trigger_kind: str
    received_ms: int | None
    sent_ms: int | None = None
    channel: str | None = None
    personalised: bool | None = None
    user_id: str | None = None
    anonymous_id: str | None = None
    suppressed: str | None = None
    suppressed_ms: int = -1
    delivered: bool = False
    seen_ms: int | None = None
    clicked: bool = False
    goal_ms: int | None = None
    revenue: float = 0.0
    ordered: bool = False
    aligned: bool = False


@dataclass(slots=True)
class _Counter:
    """Items and the distinct people behind them, per cell."""

    items: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    people: dict[tuple[str, str], set[str]] = field(default_factory=lambda: defaultdict(set))

    def add(self, group: str, metric: str, person: str) -> None:
        for g in (group, ALL):
            self.items[(g, metric)] += 1
            self.people[(g, metric)].add(person)

    def cells(self, derived: Iterable[str]) -> dict[tuple[str, str], Cell]:
        hidden_names = set(derived)
        return {
            key: Cell(self.items[key], len(self.people[key]), derived=key[1] in hidden_names)
            for key in self.items
        }


def workspace_report(
    s: Services, workspace_id: str, options: Options, *, flow_id: str | None = None
) -> dict[str, Any]:
    """The report of one flow, or of every flow with enrollments in the window."""
    store = Reports(s.db)
    if flow_id is not None:
        try:
            s.definitions.get(workspace_id, "flow", flow_id)
        except UnknownDefinition as exc:
            raise UnknownFlow(str(exc)) from None
        flows = [flow_id]
    else:
        flows = store.flows_with_activity(workspace_id, since_ms=options.since_ms, until_ms=options.until_ms)
    # one generator per run: every count of the report draws from it, in a fixed order
    rng = np.random.default_rng(options.seed) if options.epsilon is not None else None
    return {
        "workspace": workspace_id,
        "since": format_timestamp(from_millis(options.since_ms)),
        "until": format_timestamp(from_millis(options.until_ms)),
        "min_count": options.min_count,
        "noise": None if options.epsilon is None else {"mechanism": "laplace", "epsilon": options.epsilon},
        "flows": [flow_report(s, store, workspace_id, f, options, rng) for f in flows],
    }


def flow_report(
    s: Services,
    store: Reports,
    workspace_id: str,
    flow_id: str,
    options: Options,
    rng: np.random.Generator | None,
) -> dict[str, Any]:
    window = {"since_ms": options.since_ms, "until_ms": options.until_ms}
    try:
        body = s.definitions.get(workspace_id, "flow", flow_id).body
    except UnknownDefinition:
        body = {}
    goal = body.get("goal") if isinstance(body.get("goal"), dict) else None
    enrolled = store.enrollments(workspace_id, flow_id, **window)
    counter = _Counter()
    group_of: dict[tuple[str, str], str] = {}
    for e in enrolled:
        group = str(e.detail.get("arm") or e.detail.get("variant") or NO_VARIANT)
        group_of[(e.person_id, e.occurrence)] = group
        counter.add(group, "triggered", e.person_id)
        if e.outcome == "send":
            counter.add(group, "eligible", e.person_id)
        else:
            counter.add(group, f"enrollment:{e.reason or e.outcome}", e.person_id)
    kinds = {(e.person_id, e.occurrence): e.trigger_kind for e in enrolled if e.outcome == "send"}
    messages = _messages(s, store, workspace_id, flow_id, options, goal, group_of, kinds)
    for m in messages.values():
        _count_message(counter, m)
    # a stage nobody reached is a cell too (a published zero), not a missing one
    for g in {ALL, *(g for g, _ in list(counter.items))}:
        for name in ("triggered", "eligible", "sent", "not_sent", *SUBSETS, "aligned"):
            counter.items[(g, name)] += 0
    derived = [f"not_{name}" for name in SUBSETS] + ["not_aligned"]
    cells = counter.cells(derived)
    groups = sorted({g for g, _ in cells if g != ALL})
    # a column per variant or arm when there are several (with the suppressions decided
    # before any variant was chosen in a column of their own, so the columns add up); with
    # one, the flow's own column is the report and the others are not cells at all
    if len([g for g in groups if g != NO_VARIANT]) <= 1:
        groups = []
        cells = {key: cell for key, cell in cells.items() if key[0] == ALL}
    equations = _equations(cells, groups)
    hidden = suppress(cells, equations, options.min_count)
    published = {key: c.value for key, c in cells.items() if key not in hidden and not c.derived}
    if rng is not None and options.epsilon is not None:
        published = noisy(published, options.epsilon, rng)
    columns = [ALL, *groups]
    return {
        "flow": flow_id,
        "goal": goal,
        "groups": [_group(g, cells, published, hidden, messages, goal) for g in columns],
        "experiment": experiment_section(s, workspace_id, flow_id, options),
    }


def experiment_section(
    s: Services, workspace_id: str, flow_id: str, options: Options
) -> dict[str, Any] | None:
    """The flow's experiment over the report's exposure days: people per arm, the sample-ratio
    check, and per metric each arm against control (lift on the relative scale with its
    interval, Holm-adjusted p-value, chance to beat control), from the per-day sums
    (``momently.experiments.results``). Cohorts under the report's threshold are hidden. A flow
    without an experiment has none."""
    try:
        doc = s.definitions.get(workspace_id, "flow", flow_id).body
    except UnknownDefinition:
        return None
    if not isinstance(doc.get("experiment"), dict):
        return None
    result = experiment_results(
        s.outcomes.store,
        s.definitions,
        workspace_id,
        flow_id,
        now_ms=to_millis(s.clock.now()),
        since=from_millis(options.since_ms).date(),
        until=from_millis(options.until_ms).date(),
        k=options.min_count,
    )

    def arm(r: ArmResult | None) -> dict[str, Any] | None:
        if r is None:
            return None
        return {
            "n": r.arm_n,
            "mean": r.mean,
            "control_mean": r.control_mean,
            "lift": r.lift,
            "ci": list(r.ci) if r.ci is not None else None,
            "p": r.p_adjusted if r.p_adjusted is not None else r.p_value,
            "chance_to_win": r.chance_to_win,
        }

    return {
        "experiment": result.experiment_id,
        "control": result.control,
        "arms": list(result.arms),
        "exposures": result.exposures,
        "srm_p": result.srm_p,
        "metrics": {
            name: {"kind": m.metric.kind, "days": m.days, "arms": {a: arm(r) for a, r in m.results.items()}}
            for name, m in result.metrics.items()
        },
    }


def _messages(
    s: Services,
    store: Reports,
    workspace_id: str,
    flow_id: str,
    options: Options,
    goal: Mapping[str, Any] | None,
    group_of: Mapping[tuple[str, str], str],
    enrollment_kinds: Mapping[tuple[str, str], str],
) -> dict[str, _Message]:
    window = {"since_ms": options.since_ms, "until_ms": options.until_ms}
    messages: dict[str, _Message] = {}
    for d in store.deliveries(workspace_id, flow_id, **window):
        key = (d.person_id, d.occurrence)
        messages[d.key] = _Message(
            group=group_of.get(key, NO_VARIANT),
            person=d.person_id,
            trigger_kind=enrollment_kinds.get(key, ""),
            received_ms=d.trigger_received_ms,
        )
    for ev in store.message_events(workspace_id, flow_id, **window):
        m = messages.get(ev.delivery_key)
        if m is None:
            continue
        if ev.name == "Message Sent" and (m.sent_ms is None or ev.time_ms < m.sent_ms):
            m.sent_ms, m.channel, m.personalised = ev.time_ms, ev.channel, ev.personalised
            m.user_id, m.anonymous_id = ev.user_id, ev.anonymous_id
        elif ev.name == "Message Suppressed" and ev.time_ms >= m.suppressed_ms:
            m.suppressed, m.suppressed_ms = ev.reason or "unknown", ev.time_ms
        elif ev.name == "Message Delivered":
            m.delivered = True
        elif ev.name == "Message Seen" and (m.seen_ms is None or ev.time_ms < m.seen_ms):
            m.seen_ms = ev.time_ms
        elif ev.name == "Message Clicked":
            m.clicked = True
    _after_send(store, workspace_id, flow_id, options, goal, messages)
    _alignment(s, workspace_id, messages)
    return messages


def _after_send(
    store: Reports,
    workspace_id: str,
    flow_id: str,
    options: Options,
    goal: Mapping[str, Any] | None,
    messages: dict[str, _Message],
) -> None:
    """The goal (its first matching event) and the orders within the goal window after each
    send. Without a goal there is no window, so neither is counted."""
    if goal is None or not isinstance(goal.get("event"), str):
        return
    try:
        window_ms = parse_duration(str(goal.get("within", "1d")))
    except ValueError:
        return
    where = compile_condition(goal.get("where")) if goal.get("where") else None
    names = sorted({str(goal["event"]), ORDER_COMPLETED})
    rows = store.after_send(
        workspace_id,
        flow_id,
        since_ms=options.since_ms,
        until_ms=options.until_ms,
        names=names,
        window_ms=window_ms,
        with_body=where is not None,
    )
    for row in rows:
        m = messages.get(row.delivery_key)
        if m is None:
            continue
        if row.name == ORDER_COMPLETED:
            m.ordered = True
            m.revenue += row.revenue or 0.0
        if row.name != goal["event"]:
            continue
        if where is not None and not where(
            Facts(profile=Profile(person_id=m.person), now_ms=row.time_ms, tz=UTC, event=row.body)
        ):
            continue
        if m.goal_ms is None or row.time_ms < m.goal_ms:
            m.goal_ms = row.time_ms


def _alignment(s: Services, workspace_id: str, messages: Mapping[str, _Message]) -> None:
    """Each personalised send checked against the consent ledger as it stood then."""
    sends = [
        (
            key,
            alignment.Send(m.user_id, m.anonymous_id, m.sent_ms, m.channel or "", m.personalised, m.person),
        )
        for key, m in messages.items()
        if m.sent_ms is not None and m.personalised
    ]
    verdicts = alignment.aligned(s, workspace_id, [send for _, send in sends])
    for (key, _), ok in zip(sends, verdicts, strict=True):
        messages[key].aligned = ok


def _count_message(counter: _Counter, m: _Message) -> None:
    g, p = m.group, m.person
    if m.sent_ms is None:
        counter.add(g, f"message:{m.suppressed}" if m.suppressed else "not_sent", p)
        return
    counter.add(g, "sent", p)
    facts = {
        "delivered": m.delivered,
        "seen": m.seen_ms is not None,
        "clicked": m.clicked,
        "converted": m.goal_ms is not None,
        "personalised": bool(m.personalised),
        "ordered": m.ordered,
        "handed": _latency(m) is not None,
    }
    for name, yes in facts.items():
        counter.add(g, name if yes else f"not_{name}", p)
    if m.personalised:
        counter.add(g, "aligned" if m.aligned else "not_aligned", p)


def _latency(m: _Message) -> int | None:
    """Trigger received → handed to the channel (an in-app card: → shown), for messages
    answering an event at once; a deadline or a delay is not a latency."""
    if m.trigger_kind != "event" or m.received_ms is None or m.sent_ms is None:
        return None
    end = m.seen_ms if m.channel == IN_APP else m.sent_ms
    return None if end is None else max(0, end - m.received_ms)


def _equations(cells: Mapping[tuple[str, str], Cell], groups: list[str]) -> list[Equation]:
    """Which published cells add up to which: per column, and across the columns."""
    out: list[Equation] = []
    metrics = {m for _, m in cells}
    for g in [ALL, *groups]:
        of = sorted(m for m in metrics if (g, m) in cells)
        # eligible's equation first: hiding its spare cell (eligible) may already protect
        # the triggered equation's small cells too, sparing another one there
        out.append(
            Equation(
                (g, "eligible"),
                ((g, "sent"), (g, "not_sent"), *((g, m) for m in of if m.startswith("message:"))),
                # sent is the denominator of every rate: spare it, hide the stage before
                prefer=(g, "eligible"),
            )
        )
        enrollment_parts = tuple((g, m) for m in of if m.startswith("enrollment:"))
        out.append(Equation((g, "triggered"), ((g, "eligible"), *enrollment_parts)))
        for name in SUBSETS:
            out.append(Equation((g, "sent"), ((g, name), (g, f"not_{name}"))))
        out.append(Equation((g, "personalised"), ((g, "aligned"), (g, "not_aligned"))))
    if groups:
        for metric in metrics:
            out.append(Equation((ALL, metric), tuple((g, metric) for g in groups)))
    return out


def _group(
    group: str,
    cells: Mapping[tuple[str, str], Cell],
    published: Mapping[tuple[str, str], int],
    hidden: frozenset[tuple[str, str]],
    messages: Mapping[str, _Message],
    goal: Mapping[str, Any] | None,
) -> dict[str, Any]:
    def count(metric: str) -> int | None:
        key = (group, metric)
        if key in hidden:
            return None
        return published.get(key, 0)

    def shown(metric: str) -> bool:
        return (group, metric) not in hidden

    mine = [m for m in messages.values() if group == ALL or m.group == group]
    sent = [m for m in mine if m.sent_ms is not None]
    n_sent = count("sent")
    metrics = sorted({m for g, m in cells if g == group})
    out: dict[str, Any] = {
        "variant": group,
        "funnel": {name: count(name) for name in FUNNEL},
        "suppressed": {
            "enrollment": {m.split(":", 1)[1]: count(m) for m in metrics if m.startswith("enrollment:")},
            "message": {m.split(":", 1)[1]: count(m) for m in metrics if m.startswith("message:")},
            "not_sent": count("not_sent"),
        },
        "conversion": None,
        "ctr": _rate(count("clicked"), n_sent),
        "time_to_resolution_ms": None,
        "acknowledgement": None,
        "personalisation": None,
        "revenue": None,
        "hidden": sorted(m for g, m in hidden if g == group and not cells[(g, m)].derived),
    }
    converted = count("converted")
    if goal is not None and n_sent and converted is not None:
        sample = Proportion(n_sent, min(converted, n_sent))
        ci = wilson(sample)
        out["conversion"] = {"rate": sample.mean, "ci": list(ci) if ci else None}
    if goal is not None and shown("converted") and shown("sent"):
        times = [m.goal_ms - m.sent_ms for m in sent if m.goal_ms is not None and m.sent_ms is not None]
        if times:
            out["time_to_resolution_ms"] = _percentiles(times, (50, 90))
    if shown("handed"):
        latencies = [lat for m in sent if (lat := _latency(m)) is not None]
        if latencies:
            out["acknowledgement"] = {
                "n": count("handed"),
                **_percentiles(latencies, (50, 99)),
                "under_300ms": sum(1 for lat in latencies if lat < FAST_MS) / len(latencies),
                "to": "shown (in-app), handed to the channel (others)",
            }
    personalised, aligned = count("personalised"), count("aligned")
    if personalised is not None:
        out["personalisation"] = {
            "personalised": personalised,
            "aligned": aligned,
            "rate": _rate(aligned, personalised),
        }
    if goal is not None and shown("ordered") and shown("sent"):
        total = sum(m.revenue for m in sent)
        out["revenue"] = {
            "orders": count("ordered"),
            "total": round(total, 2),
            "per_send": round(total / len(sent), 4) if sent else None,
        }
    return out


def _rate(part: int | None, whole: int | None) -> float | None:
    if part is None or not whole:
        return None
    return min(part, whole) / whole


def _percentiles(values: list[int], which: tuple[int, ...]) -> dict[str, float]:
    points = np.percentile(np.asarray(values, dtype=float), which)
    return {f"p{q}": float(v) for q, v in zip(which, points, strict=True)}
