"""An experiment's results for a report: per arm and metric, the sufficient statistics as
``momently.stats`` inputs, every arm against control, the split check and small-cohort hiding.

It reads ``experiment_stats`` (one row per arm, exposure day and metric, kept by
``engine.experiment_projector``), so a report costs O(arms x days), not O(exposures).

**Open windows.** A unit that has not converted *yet* has not failed to convert until its
window has closed. By default (``open_windows="exclude"``) a metric counts only the exposure
days whose every window has closed: day ``d`` is counted once
``end of d + window + lateness <= now``, so a 30-day retention rate is over people exposed at
least 30 days ago and is final. ``open_windows="so_far"`` counts every exposure, an open window
as not converted so far (a rate that can only rise; use it to watch, not to decide). Exposure
counts and the sample-ratio check always use every exposure in the date range.

**Control** is the ``holdout`` arm when there is one, else the first configured arm.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from momently.domain.durations import parse_duration
from momently.domain.experiments import HOLDOUT, compile_experiment
from momently.domain.outcomes import DAY_MS, DEFAULT_GOAL_WINDOW_MS, METRICS, Metric
from momently.stats import (
    MIN_COHORT,
    Analysis,
    ArmResult,
    Cuped,
    Mean,
    Options,
    Proportion,
    Sample,
    adjust,
    analyse,
    srm_p_value,
)
from momently.store.definitions import Definitions, UnknownDefinition
from momently.store.experiment_outcomes import OutcomeStore, StatRow

OpenWindows = Literal["exclude", "so_far"]
DEFAULT_OPTIONS = Options()


@dataclass(frozen=True)
class MetricResult:
    metric: Metric
    samples: dict[str, Sample | None]
    """per arm; ``None`` when the arm has fewer than k units (hidden)"""
    results: dict[str, ArmResult | None]
    """per arm but control, against control, Holm-adjusted across the report; ``None`` when
    hidden or when the arm has no sample"""
    days: int
    """exposure days counted (those whose window has closed, unless ``so_far``)"""


@dataclass(frozen=True)
class Report:
    experiment_id: str
    flow_id: str
    control: str
    arms: tuple[str, ...]
    weights: dict[str, float] | None
    """configured shares (holdout included); ``None`` when the flow configures none"""
    exposures: dict[str, int | None]
    """people exposed per arm; ``None`` under k"""
    srm_p: float | None
    metrics: dict[str, MetricResult]


def experiment_results(
    store: OutcomeStore,
    definitions: Definitions,
    workspace_id: str,
    flow_id: str,
    *,
    now_ms: int,
    since: date | None = None,
    until: date | None = None,
    experiment_id: str | None = None,
    options: Options = DEFAULT_OPTIONS,
    k: int = MIN_COHORT,
    open_windows: OpenWindows = "exclude",
    lateness_ms: int = 0,
) -> Report:
    """The results of a flow's experiment over exposure days ``since``..``until`` (inclusive,
    UTC). ``experiment_id`` defaults to the flow's ``experiment.id``, else the flow id."""
    try:
        doc: dict[str, Any] = definitions.get(workspace_id, "flow", flow_id).body
    except UnknownDefinition:
        doc = {}
    block = doc.get("experiment") if isinstance(doc.get("experiment"), dict) else {}
    assert isinstance(block, dict)
    experiment = experiment_id or str(block.get("id") or flow_id)
    rows = store.stats(
        workspace_id,
        experiment,
        first_day=_day(since) if since is not None else None,
        last_day=_day(until) if until is not None else None,
    )
    return summarise(
        rows,
        experiment_id=experiment,
        flow_id=flow_id,
        weights=configured_weights(block, flow_id),
        goal_window_ms=_goal_window(doc),
        now_ms=now_ms,
        options=options,
        k=k,
        open_windows=open_windows,
        lateness_ms=lateness_ms,
    )


def summarise(
    rows: Iterable[StatRow],
    *,
    experiment_id: str,
    flow_id: str,
    weights: Mapping[str, float] | None,
    goal_window_ms: int,
    now_ms: int,
    options: Options = DEFAULT_OPTIONS,
    k: int = MIN_COHORT,
    open_windows: OpenWindows = "exclude",
    lateness_ms: int = 0,
) -> Report:
    """The report from statistics rows (pure: the part ``experiment_results`` does after its
    one query)."""
    rows = list(rows)
    arms = list(weights or {})
    for r in sorted(rows, key=lambda r: r.arm):
        if r.arm not in arms:
            arms.append(r.arm)
    control = HOLDOUT if HOLDOUT in arms else (arms[0] if arms else HOLDOUT)
    if control not in arms:
        arms.append(control)
    by_metric: dict[str, list[StatRow]] = {}
    for r in rows:
        by_metric.setdefault(r.metric, []).append(r)

    counts = {arm: 0 for arm in arms}
    for r in by_metric.get("conversion", []):
        counts[r.arm] += r.n
    known = weights is not None and set(weights) == set(arms)
    srm = srm_p_value([counts[a] for a in arms], [weights[a] for a in arms]) if known and weights else None
    analyse_weights = {a: (weights[a] if known and weights else 1.0) for a in arms}

    metrics: dict[str, MetricResult] = {}
    analyses: dict[str, Analysis] = {}
    for metric in METRICS:
        window = metric.window_ms if metric.window_ms is not None else goal_window_ms
        sums: dict[str, list[float]] = {arm: [0, 0.0, 0.0, 0.0, 0.0, 0.0] for arm in arms}
        days: set[int] = set()
        # a day is closed when its last exposure's window has: end of day + window + lateness
        last_closed = (now_ms - window - lateness_ms) // DAY_MS - 1
        for r in by_metric.get(metric.name, ()):
            if open_windows == "exclude" and r.day > last_closed:
                continue
            days.add(r.day)
            acc = sums[r.arm]
            acc[0] += r.n
            acc[1] += r.sum
            acc[2] += r.sum_squares
            acc[3] += r.cov_sum
            acc[4] += r.cov_sum_squares
            acc[5] += r.sum_products
        samples = {arm: _sample(metric, acc) for arm, acc in sums.items()}
        analyses[metric.name] = analyse(
            samples, control, analyse_weights, dataclasses.replace(options, inverse=metric.inverse)
        )
        metrics[metric.name] = MetricResult(
            metric=metric,
            samples={arm: (s if s.n >= k else None) for arm, s in samples.items()},
            results={},
            days=len(days),
        )
    shown = [(name, r) for name, a in analyses.items() for r in a.arms if r.n >= k]
    adjusted = dict(zip([(name, r.arm) for name, r in shown], adjust([r for _, r in shown]), strict=True))
    for name, result in metrics.items():
        result.results.update({arm: adjusted.get((name, arm)) for arm in arms if arm != control})
    return Report(
        experiment_id=experiment_id,
        flow_id=flow_id,
        control=control,
        arms=tuple(arms),
        weights=dict(weights) if weights is not None else None,
        exposures={arm: (n if n >= k else None) for arm, n in counts.items()},
        srm_p=srm,
        metrics=metrics,
    )


def configured_weights(block: Mapping[str, Any], flow_id: str = "") -> dict[str, float] | None:
    """Each arm's configured share of people, the holdout's included, from a flow's validated
    ``experiment`` block (``domain.experiments``): the arms split by weight what the holdout
    leaves. ``None`` when the block is not a valid experiment."""
    try:
        experiment = compile_experiment(block, flow_id)
    except (KeyError, TypeError, ValueError):
        return None
    total = sum(a.weight for a in experiment.arms)
    if not experiment.arms or total <= 0:
        return None
    out = {a.id: (1 - experiment.holdout) * a.weight / total for a in experiment.arms}
    if experiment.holdout > 0:
        out[HOLDOUT] = experiment.holdout
    return out


def _goal_window(doc: Mapping[str, Any]) -> int:
    goal = doc.get("goal")
    if isinstance(goal, Mapping) and "within" in goal:
        return parse_duration(goal["within"])
    return DEFAULT_GOAL_WINDOW_MS


def _sample(metric: Metric, acc: list[float]) -> Sample:
    n = int(acc[0])
    # sums moved by differences can end a rounding error below zero
    squares, cov_squares = max(acc[2], 0.0), max(acc[4], 0.0)
    post: Proportion | Mean
    if metric.kind == "proportion":
        post = Proportion(n, min(max(round(acc[1]), 0), n))
    else:
        post = Mean(n, acc[1], squares)
    if metric.covariate is None:
        return post
    return Cuped(post, Mean(n, acc[3], cov_squares), acc[5])


def _day(d: date) -> int:
    return (d - date(1970, 1, 1)).days
