"""What happened to one person after one experiment exposure: pure folding of log events into
an exposure's outcomes, and the metric values a report sums.

An *exposure* is the first ``Experiment Viewed`` of a person in an experiment (by log order;
later ones of the same person and experiment are ignored). Each event of the person is
placed against it by event time ``t`` (``LoggedEvent.time_ms``) and the exposure time ``x``:

- ``x - 30d <= t < x``: the **covariate** (CUPED): the person's own events and order revenue
  in the 30 days before exposure;
- ``x <= t``: **outcomes**, each the earliest time it happened (so a late event with an
  earlier timestamp moves it back), or a sum within its window:

  ==================  =========================================================  ==========
  metric              unit converts when                                          window
  ==================  =========================================================  ==========
  conversion          the flow's goal event, matching ``goal.where``              goal.within
  time_to_goal        seconds from exposure to the goal (converted units only)    goal.within
  revenue             sum of ``revenue`` (else ``total``) of ``Order Completed``  goal.within
  retention_30d/90d   any event of the person's own (not Momently's)              30d / 90d
  orders_30d/90d      an ``Order Completed``                                      30d / 90d
  unsubscribed        an ``Unsubscribed`` (the unsubscribe link)                  7d
  complained          a ``Message Replied`` with keyword ``stop`` / ``complaint`` 7d
  message_failed      a ``Message Failed`` of this flow                           7d
  ==================  =========================================================  ==========

A flow without a goal uses a 7-day window for revenue. Nothing here reads a clock: whether a
window has closed is the report's question (``experiments.results``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from momently.domain import trust
from momently.domain.experiments import EXPERIMENT_VIEWED
from momently.domain.flow import SYSTEM_EVENTS
from momently.domain.profile import LoggedEvent

DAY_MS: Final = 86_400_000
PRE_WINDOW_MS: Final = 30 * DAY_MS
GUARDRAIL_WINDOW_MS: Final = 7 * DAY_MS
DEFAULT_GOAL_WINDOW_MS: Final = 7 * DAY_MS
LONGEST_WINDOW_MS: Final = 90 * DAY_MS

ORDER: Final = "Order Completed"
COMPLAINT_KEYWORDS: Final = frozenset({"stop", "complaint"})
_NOT_ACTIVITY: Final = frozenset({*SYSTEM_EVENTS, EXPERIMENT_VIEWED})


@dataclass(frozen=True, slots=True)
class Exposure:
    """One person's first exposure to one experiment and everything measured since."""

    experiment_id: str
    person_id: str
    arm: str
    flow_id: str
    flow_version: int
    exposed_ms: int
    seq: int
    """the log position of the exposure: events before it were folded when it arrived"""
    goal_event: str | None
    window_ms: int
    """the goal's ``within`` (conversion, time to goal, revenue)"""
    converted_ms: int | None = None
    revenue: float = 0.0
    active_ms: int | None = None
    ordered_ms: int | None = None
    unsubscribed_ms: int | None = None
    complained_ms: int | None = None
    failed_ms: int | None = None
    pre_revenue: float = 0.0
    pre_events: int = 0

    @property
    def day(self) -> int:
        """The UTC day of exposure, as days since 1970-01-01: reports group by it."""
        return self.exposed_ms // DAY_MS


Kind = Literal["proportion", "mean"]
Covariate = Literal["events", "revenue"] | None


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    kind: Kind
    covariate: Covariate
    """pre-exposure value used for CUPED: own events or order revenue in the 30 days before"""
    window_ms: int | None
    """fixed window; None: the goal's ``within``"""
    inverse: bool = False
    """lower is better"""
    guardrail: bool = False


METRICS: Final = (
    Metric("conversion", "proportion", "events", None),
    Metric("time_to_goal", "mean", None, None, inverse=True),
    Metric("revenue", "mean", "revenue", None),
    Metric("retention_30d", "proportion", "events", 30 * DAY_MS),
    Metric("retention_90d", "proportion", "events", 90 * DAY_MS),
    Metric("orders_30d", "proportion", "revenue", 30 * DAY_MS),
    Metric("orders_90d", "proportion", "revenue", 90 * DAY_MS),
    Metric("unsubscribed", "proportion", None, GUARDRAIL_WINDOW_MS, inverse=True, guardrail=True),
    Metric("complained", "proportion", None, GUARDRAIL_WINDOW_MS, inverse=True, guardrail=True),
    Metric("message_failed", "proportion", None, GUARDRAIL_WINDOW_MS, inverse=True, guardrail=True),
)
METRIC_BY_NAME: Final = {m.name: m for m in METRICS}


@dataclass(frozen=True, slots=True)
class Value:
    """One exposure's contribution to one metric: whether it is a unit of it, its value and
    its covariate."""

    included: bool
    value: float
    covariate: float


def values(x: Exposure) -> dict[str, Value]:
    """The exposure's value for every metric (what ``experiment_stats`` sums)."""
    cov = {"events": float(x.pre_events), "revenue": x.pre_revenue, None: 0.0}

    def within(ms: int | None, window: int) -> float:
        return 1.0 if ms is not None and ms - x.exposed_ms <= window else 0.0

    out: dict[str, Value] = {}
    for m in METRICS:
        c = cov[m.covariate]
        window = m.window_ms if m.window_ms is not None else x.window_ms
        if m.name == "conversion":
            out[m.name] = Value(True, within(x.converted_ms, window), c)
        elif m.name == "time_to_goal":
            converted = x.converted_ms is not None
            seconds = (x.converted_ms - x.exposed_ms) / 1000 if x.converted_ms is not None else 0.0
            out[m.name] = Value(converted, seconds, c)
        elif m.name == "revenue":
            out[m.name] = Value(True, x.revenue, c)
        elif m.name.startswith("retention_"):
            out[m.name] = Value(True, within(x.active_ms, window), c)
        elif m.name.startswith("orders_"):
            out[m.name] = Value(True, within(x.ordered_ms, window), c)
        elif m.name == "unsubscribed":
            out[m.name] = Value(True, within(x.unsubscribed_ms, window), c)
        elif m.name == "complained":
            out[m.name] = Value(True, within(x.complained_ms, window), c)
        else:
            out[m.name] = Value(True, within(x.failed_ms, window), c)
    return out


def is_activity(ev: LoggedEvent) -> bool:
    """The person's own doing: not an event Momently appended or records about its messages,
    which the holdout could never have."""
    return ev.type in ("track", "page", "screen") and not ev.derived and ev.name not in _NOT_ACTIVITY


def order_amount(ev: LoggedEvent) -> float:
    """``revenue``, else ``total``, of an ``Order Completed``, as the profile counts it."""
    props = ev.body.get("properties")
    if not isinstance(props, dict):
        return 0.0
    for key in ("revenue", "total"):
        amount = _number(props.get(key))
        if amount is not None:
            return amount
    return 0.0


def observe(x: Exposure, ev: LoggedEvent, goal_hit: Callable[[LoggedEvent], bool]) -> Exposure:
    """The exposure after one more event of its person (any order of arrival gives the same
    result, up to float rounding of revenue sums). ``goal_hit`` says whether an event named
    as the goal matches its ``where``."""
    t = ev.time_ms
    if t < x.exposed_ms:
        if t < x.exposed_ms - PRE_WINDOW_MS:
            return x
        pre_events = x.pre_events + (1 if is_activity(ev) else 0)
        pre_revenue = x.pre_revenue + (order_amount(ev) if ev.name == ORDER else 0.0)
        if pre_events == x.pre_events and pre_revenue == x.pre_revenue:
            return x
        return dataclasses.replace(x, pre_events=pre_events, pre_revenue=pre_revenue)
    dt = t - x.exposed_ms
    if dt > LONGEST_WINDOW_MS:
        return x
    changes: dict[str, Any] = {}
    name = ev.name
    if name == x.goal_event and dt <= x.window_ms and _earlier(t, x.converted_ms) and goal_hit(ev):
        changes["converted_ms"] = t
    if name == ORDER:
        if dt <= x.window_ms:
            changes["revenue"] = x.revenue + order_amount(ev)
        if _earlier(t, x.ordered_ms):
            changes["ordered_ms"] = t
    if _earlier(t, x.active_ms) and is_activity(ev):
        changes["active_ms"] = t
    if dt <= GUARDRAIL_WINDOW_MS:
        props = ev.body.get("properties")
        props = props if isinstance(props, Mapping) else {}
        if name == "Unsubscribed" and _earlier(t, x.unsubscribed_ms):
            changes["unsubscribed_ms"] = t
        elif (
            name == "Message Replied"
            and str(props.get("keyword") or "").lower() in COMPLAINT_KEYWORDS
            and _earlier(t, x.complained_ms)
        ):
            changes["complained_ms"] = t
        elif name == "Message Failed" and props.get("flow_id") == x.flow_id and _earlier(t, x.failed_ms):
            changes["failed_ms"] = t
    return dataclasses.replace(x, **changes) if changes else x


def _earlier(t: int, current: int | None) -> bool:
    return current is None or t < current


def _number(v: object) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float) and math.isfinite(v):
        return float(v)
    if isinstance(v, str):
        try:
            f = float(v)
        except ValueError:
            return None
        return f if math.isfinite(f) else None
    return None


@dataclass(frozen=True, slots=True)
class Viewed:
    """The fields of an ``Experiment Viewed`` event Momently reads."""

    experiment_id: str
    arm: str
    flow_id: str
    flow_version: int
    person_id: str | None


def viewed(ev: LoggedEvent) -> Viewed | None:
    """The exposure an event records, or None when it is not a usable ``Experiment Viewed``.
    One sent with a public write key is not: a page could put anyone in any arm (the engine's
    own, a server key's and events appended to the log directly are)."""
    if ev.type != "track" or ev.name != EXPERIMENT_VIEWED or trust.from_public_key(ev.body):
        return None
    props = ev.body.get("properties")
    if not isinstance(props, dict):
        return None
    experiment, arm = props.get("experiment_id"), props.get("variation_id")
    flow = props.get("flow_id", experiment)
    if not (isinstance(experiment, str) and experiment and isinstance(arm, str) and arm):
        return None
    version = props.get("flow_version")
    person = props.get("person_id")
    return Viewed(
        experiment_id=experiment,
        arm=arm,
        flow_id=str(flow),
        flow_version=int(version) if isinstance(version, int) and not isinstance(version, bool) else 0,
        person_id=person if isinstance(person, str) and person else None,
    )


def delta(old: Exposure | None, new: Exposure) -> dict[str, tuple[int, float, float, float, float, float]]:
    """What the exposure's change adds to each metric's sums (n, sum, sum of squares, covariate
    sum, covariate sum of squares, sum of products); metrics it leaves alone are omitted."""
    after = values(new)
    before = values(old) if old is not None else None
    out: dict[str, tuple[int, float, float, float, float, float]] = {}
    for name, b in after.items():
        a = before[name] if before is not None else Value(False, 0.0, 0.0)
        if a == b:
            continue
        out[name] = (
            int(b.included) - int(a.included),
            _part(b, b.value) - _part(a, a.value),
            _part(b, b.value * b.value) - _part(a, a.value * a.value),
            _part(b, b.covariate) - _part(a, a.covariate),
            _part(b, b.covariate * b.covariate) - _part(a, a.covariate * a.covariate),
            _part(b, b.value * b.covariate) - _part(a, a.value * a.covariate),
        )
    return out


def _part(v: Value, x: float) -> float:
    return x if v.included else 0.0
