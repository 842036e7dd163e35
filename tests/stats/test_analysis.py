"""The report-facing API: analyse(), Holm across arms and metrics, SRM, small-cohort hiding, and
input that must be refused or must not crash."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from momently.stats import (
    MIN_COHORT,
    ArmResult,
    Cuped,
    Mean,
    Options,
    Prior,
    Proportion,
    adjust,
    analyse,
    hide_small,
    holm,
    lift,
    posterior,
    sequential_lift,
    srm_p_value,
)

# ---- analyse -------------------------------------------------------------------------------


def test_analyse_gives_each_arm_against_control_and_the_split_check() -> None:
    # Given a 50/25/25 experiment where arm "b" converts better
    samples = {
        "control": Proportion(5000, 500),
        "a": Proportion(2500, 255),
        "b": Proportion(2500, 325),
    }
    # When it is analysed
    result = analyse(samples, "control", {"control": 2, "a": 1, "b": 1})
    # Then every non-control arm has a result, in order, and the split matches its weights
    assert [arm.arm for arm in result.arms] == ["a", "b"]
    assert result.srm_p == 1.0
    b = result.arms[1]
    assert b.lift == pytest.approx(0.3)
    assert b.mean == pytest.approx(0.13)
    assert b.control_mean == pytest.approx(0.1)
    assert b.ci is not None
    assert b.ci[0] > 0
    assert b.p_value is not None
    assert b.p_value < 0.001
    assert b.chance_to_win is not None
    assert b.chance_to_win > 0.999
    assert b.expected_loss is not None
    assert b.expected_loss < 1e-4
    assert (b.arm_n, b.control_n, b.n) == (2500, 5000, 2500)
    # the numbers docs/statistics.md shows for this experiment
    assert b.ci == pytest.approx((0.12947, 0.47053), abs=1e-5)
    assert b.p_value == pytest.approx(0.00057, abs=1e-5)
    assert b.chance_to_win == pytest.approx(0.9997, abs=1e-4)
    assert b.expected_loss == pytest.approx(6.2e-06, abs=1e-7)
    assert adjust(result.arms)[1].p_adjusted == pytest.approx(2 * b.p_value)


def test_analyse_flags_a_broken_split() -> None:
    samples = {"control": Proportion(5200, 520), "b": Proportion(4800, 480)}
    result = analyse(samples, "control", {"control": 1, "b": 1})
    # chi-square 16 on one degree of freedom: P = erfc(4 / sqrt 2)
    assert result.srm_p == pytest.approx(math.erfc(4 / math.sqrt(2)), rel=1e-9)


def test_sequential_option_widens_the_interval() -> None:
    samples = {"control": Proportion(5000, 500), "b": Proportion(5000, 560)}
    fixed = analyse(samples, "control", {"control": 1, "b": 1}).arms[0]
    watched = analyse(samples, "control", {"control": 1, "b": 1}, Options(sequential=True)).arms[0]
    assert fixed.ci is not None
    assert watched.ci is not None
    assert watched.ci[1] - watched.ci[0] > fixed.ci[1] - fixed.ci[0]
    assert watched.lift == fixed.lift


def test_an_arm_without_variation_reports_no_numbers() -> None:
    # Given a control where no one converted yet
    result = analyse(
        {"control": Proportion(40, 0), "b": Proportion(40, 3)}, "control", {"control": 1, "b": 1}
    ).arms[0]
    # Then nothing is claimed about the lift
    assert (result.lift, result.ci, result.p_value, result.chance_to_win, result.expected_loss) == (
        None,
        None,
        None,
        None,
        None,
    )
    assert result.mean == 3 / 40


@pytest.mark.parametrize(
    ("samples", "weights", "message"),
    [
        ({"b": Proportion(10, 1)}, {"b": 1}, "control arm"),
        ({"control": Proportion(10, 1), "b": Proportion(10, 1)}, {"control": 1}, "one weight per arm"),
        ({"control": Proportion(10, 1), "b": Proportion(10, 1)}, {"control": 1, "b": 0}, "positive"),
    ],
)
def test_analyse_refuses_incomplete_configuration(
    samples: dict[str, Proportion], weights: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        analyse(samples, "control", weights)


def test_control_and_arm_must_be_the_same_kind_of_metric() -> None:
    with pytest.raises(TypeError, match="same kind"):
        lift(Proportion(10, 1), Mean(10, 5.0, 9.0))
    with pytest.raises(TypeError, match="covariate"):
        lift(Cuped(Mean(10, 5.0, 9.0), Mean(10, 5.0, 9.0), 4.0), Mean(10, 5.0, 9.0))


@pytest.mark.parametrize(
    "build",
    [
        lambda: Proportion(10, 11),
        lambda: Proportion(-1, 0),
        lambda: Mean(10, 5.0, -1.0),
        lambda: Mean(10, math.inf, 1.0),
        lambda: Cuped(Proportion(10, 1), Proportion(11, 1), 1.0),
    ],
)
def test_impossible_sufficient_statistics_are_refused(build: object) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each message names its own field
        build()  # type: ignore[operator]


# ---- CUPED --------------------------------------------------------------------------------


def test_cuped_narrows_the_interval_when_the_covariate_predicts_the_outcome() -> None:
    # Given post = pre + noise in both arms (correlation about 0.9)
    def arm(n: int, pre_mean: float, lift: float) -> Cuped:
        pre_var, noise_var = 100.0, 25.0
        post_mean = pre_mean + lift
        pre = Mean(n, n * pre_mean, (n - 1) * pre_var + n * pre_mean**2)
        post = Mean(n, n * post_mean, (n - 1) * (pre_var + noise_var) + n * post_mean**2)
        return Cuped(post, pre, (n - 1) * pre_var + n * pre_mean * post_mean)

    control, treated = arm(2000, 50.0, 0.0), arm(2000, 50.0, 1.0)
    plain = lift(control.post, treated.post, "absolute")
    adjusted = lift(control, treated, "absolute")
    assert plain is not None
    assert adjusted is not None
    # Then the lift is the same and its interval is about sqrt(25 / 125) as wide
    assert adjusted.lift == pytest.approx(plain.lift)
    assert adjusted.stddev / plain.stddev == pytest.approx(math.sqrt(25 / 125), rel=0.01)


# ---- Holm ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "adjusted"),
    [
        ([0.001, 0.01, 0.03, 0.5], [0.004, 0.03, 0.06, 0.5]),
        ([0.5, 0.03, 0.001, 0.01], [0.5, 0.06, 0.004, 0.03]),
        # a later, larger p-value never gets a smaller adjusted value (0.02*2 < 0.015*3)
        ([0.01, 0.015, 0.02], [0.03, 0.03, 0.03]),
        ([0.4, 0.6], [0.8, 0.8]),
        ([0.04], [0.04]),
        ([], []),
    ],
)
def test_holm(raw: list[float], adjusted: list[float]) -> None:
    assert holm(raw) == pytest.approx(adjusted)


@settings(max_examples=200)
@given(st.lists(st.floats(0, 1), max_size=30))
def test_holm_is_between_raw_and_bonferroni_and_keeps_the_order(raw: list[float]) -> None:
    adjusted = holm(raw)
    for p, q in zip(raw, adjusted, strict=True):
        assert p <= q <= min(1.0, len(raw) * p) or q == pytest.approx(min(1.0, len(raw) * p))
    for i in range(len(raw)):
        for j in range(len(raw)):
            if raw[i] <= raw[j]:
                assert adjusted[i] <= adjusted[j]


def test_adjust_takes_the_family_across_metrics_and_skips_untested_arms() -> None:
    # Given two metrics of one experiment, one arm of which could not be tested
    weights = {"control": 1.0, "b": 1.0}
    conversion = analyse({"control": Proportion(4000, 400), "b": Proportion(4000, 470)}, "control", weights)
    revenue = analyse({"control": Proportion(4000, 0), "b": Proportion(4000, 2)}, "control", weights)
    # When Holm's correction is applied to everything the report shows
    results = adjust([*conversion.arms, *revenue.arms])
    # Then the tested arm is a family of one, and the untested one stays without a p-value
    tested, untested = results
    assert tested.p_adjusted == tested.p_value
    assert untested.p_value is None
    assert untested.p_adjusted is None


def test_adjust_multiplies_by_the_family_size() -> None:
    weights = {"control": 1.0, "a": 1.0, "b": 1.0}
    samples = {"control": Proportion(4000, 400), "a": Proportion(4000, 430), "b": Proportion(4000, 460)}
    arms = analyse(samples, "control", weights).arms
    adjusted = adjust(arms)
    p = [arm.p_value for arm in arms]
    assert [arm.p_adjusted for arm in adjusted] == pytest.approx(holm(p))  # type: ignore[arg-type]
    assert adjusted[1].p_adjusted == pytest.approx(2 * p[1])  # type: ignore[operator]


# ---- SRM ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("counts", "weights", "expected"),
    [
        ([5000, 5000], [1, 1], 1.0),
        ([5200, 4800], [0.5, 0.5], math.erfc(4 / math.sqrt(2))),
        # 60/40 configured and observed
        ([6000, 4000], [60, 40], 1.0),
        # three arms, chi-square (100² + 0 + 100²) / 1000 = 20 on 2 degrees of freedom: P = exp(-20 / 2)
        ([1100, 1000, 900], [1, 1, 1], math.exp(-10)),
        ([0, 0], [1, 1], 1.0),
    ],
)
def test_srm(counts: list[int], weights: list[float], expected: float) -> None:
    assert srm_p_value(counts, weights) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(("counts", "weights"), [([10], [1]), ([10, 10], [1]), ([10, 10], [1, -1])])
def test_srm_refuses_a_meaningless_configuration(counts: list[int], weights: list[float]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        srm_p_value(counts, weights)


# ---- privacy ------------------------------------------------------------------------------


def test_small_cohorts_are_hidden() -> None:
    cohorts = {"north": Proportion(9, 2), "south": Proportion(10, 2), "east": Proportion(0, 0)}
    assert hide_small(cohorts) == {"north": None, "south": Proportion(10, 2), "east": None}
    assert hide_small(cohorts, k=5) == {"north": Proportion(9, 2), "south": Proportion(10, 2), "east": None}
    assert MIN_COHORT == 10


def test_a_comparison_is_hidden_when_either_side_is_small() -> None:
    # Given an arm of 500 compared with a control of 8
    result = analyse(
        {"control": Proportion(8, 1), "b": Proportion(500, 60)}, "control", {"control": 1, "b": 60}
    ).arms[0]
    # Then the comparison rests on the 8 and is not shown
    assert hide_small({"b": result}) == {"b": None}
    assert isinstance(hide_small({"b": result}, k=8)["b"], ArmResult)


# ---- extreme input ------------------------------------------------------------------------

extreme = st.floats(allow_nan=False, allow_infinity=False)


@st.composite
def any_means(draw: st.DrawFn, n: int) -> Mean:
    return Mean(n, draw(extreme), draw(st.floats(0, allow_infinity=False)))


@st.composite
def any_samples(draw: st.DrawFn) -> Mean | Cuped:
    n = draw(st.integers(0, 10**9))
    if draw(st.booleans()):
        return draw(any_means(n))
    return Cuped(draw(any_means(n)), draw(any_means(n)), draw(extreme))


@settings(max_examples=300)
@given(any_samples(), any_samples(), st.sampled_from(["relative", "absolute"]), st.booleans())
def test_no_input_crashes_the_report(
    control: Mean | Cuped, arm: Mean | Cuped, scale: str, proper: bool
) -> None:
    if isinstance(control, Cuped) != isinstance(arm, Cuped):
        return
    # Whatever the sums, each answer is a finite number or None, never an exception
    for estimate in (lift(control, arm, scale), sequential_lift(control, arm, scale)):  # type: ignore[arg-type]
        if estimate is not None:
            assert all(math.isfinite(v) for v in (estimate.lift, *estimate.ci, estimate.stddev))
            assert 0 <= estimate.p_value <= 1
    result = posterior(control, arm, scale, Prior(proper=proper))  # type: ignore[arg-type]
    if result is not None:
        assert 0 <= result.chance_to_win <= 1
        assert 0 <= result.expected_loss < math.inf
