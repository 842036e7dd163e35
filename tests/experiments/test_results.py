"""The report from statistics rows: weights, control, open windows, hiding."""

from __future__ import annotations

import pytest

from momently.domain.outcomes import DAY_MS
from momently.experiments.results import configured_weights, summarise
from momently.stats import Cuped, Mean, Proportion
from momently.store.experiment_outcomes import StatRow


@pytest.mark.parametrize(
    ("block", "weights"),
    [
        ({}, None),
        ({"arms": [{"id": "a"}, {"id": "b"}]}, {"a": 0.5, "b": 0.5}),
        (
            {"arms": [{"id": "a", "weight": 3}, {"id": "b"}], "holdout": "20%"},
            {"a": 0.6, "b": 0.2, "holdout": 0.2},
        ),
        ({"arms": [{"id": "a"}, {"id": "b"}], "holdout": "10%"}, {"a": 0.45, "b": 0.45, "holdout": 0.1}),
        ({"arms": [{"id": "a"}], "holdout": 0.5}, None),  # not a percentage: not a valid block
    ],
)
def test_configured_weights(block: dict[str, object], weights: dict[str, float] | None) -> None:
    got = configured_weights(block)
    if weights is None:
        assert got is None
    else:
        assert got == pytest.approx(weights)


def rows(arm: str, day: int, n: int, conversions: int) -> list[StatRow]:
    return [
        StatRow(arm, day, "conversion", n, conversions, conversions, 0, 0, 0),
        StatRow(arm, day, "retention_30d", n, conversions, conversions, 0, 0, 0),
    ]


def test_open_windows_are_left_out_until_they_close() -> None:
    # day 0 closed for everything by day 40; day 35's 30-day window is still open
    data = [*rows("a", 0, 20, 5), *rows("b", 0, 20, 8), *rows("a", 35, 20, 1), *rows("b", 35, 20, 1)]
    now = 40 * DAY_MS
    report = summarise(
        data, experiment_id="e", flow_id="f", weights=None, goal_window_ms=3_600_000, now_ms=now
    )
    assert report.control == "a"  # no holdout: the first arm
    assert report.srm_p is None  # nothing configured to check the split against
    assert report.exposures == {"a": 40, "b": 40}
    conversion, retention = report.metrics["conversion"], report.metrics["retention_30d"]
    assert conversion.days == 2
    assert conversion.samples["a"] == Cuped(Proportion(40, 6), _zero(40), 0.0)
    assert retention.days == 1
    assert retention.samples["a"] == Cuped(Proportion(20, 5), _zero(20), 0.0)
    so_far = summarise(
        data,
        experiment_id="e",
        flow_id="f",
        weights=None,
        goal_window_ms=3_600_000,
        now_ms=now,
        open_windows="so_far",
    )
    assert so_far.metrics["retention_30d"].samples["a"] == Cuped(Proportion(40, 6), _zero(40), 0.0)


def test_an_arm_under_k_is_hidden_everywhere() -> None:
    data = [*rows("holdout", 0, 50, 5), *rows("a", 0, 50, 9), *rows("b", 0, 9, 3)]
    report = summarise(
        data,
        experiment_id="e",
        flow_id="f",
        weights={"a": 0.25, "b": 0.25, "holdout": 0.5},
        goal_window_ms=3_600_000,
        now_ms=100 * DAY_MS,
    )
    assert report.control == "holdout"
    assert report.exposures == {"a": 50, "b": None, "holdout": 50}
    conversion = report.metrics["conversion"]
    assert conversion.samples["b"] is None
    assert conversion.results["b"] is None
    a = conversion.results["a"]
    assert a is not None
    assert a.lift == pytest.approx(0.8)
    assert report.srm_p is not None
    assert report.srm_p < 0.001


def _zero(n: int) -> Mean:
    """The covariate of people with no activity before exposure."""
    return Mean(n, 0.0, 0.0)
