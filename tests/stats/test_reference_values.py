"""Reference values from gbstats' own test suite (growthbook/growthbook, packages/stats/tests),
rounded to 5 decimals as they are there. These pin the numbers without gbstats installed."""

from __future__ import annotations

import math

import pytest

from momently.stats import Cuped, Estimate, Mean, Prior, Proportion, Sample, lift, posterior, sequential_lift
from momently.stats.bayesian import expected_losses

CONTROL = Mean(n=3407, sum=1396.87, sum_squares=52377.9767)
ARM = Mean(n=3461, sum=2422.7, sum_squares=134698.29)
CONTROL_3000 = Mean(n=3000, sum=1396.87, sum_squares=52377.9767)


def rounded(estimate: Estimate | None) -> tuple[float, float, float, float, float]:
    assert estimate is not None
    values = (estimate.lift, *estimate.ci, estimate.p_value, estimate.stddev)
    return tuple(round(v, 5) for v in values)  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("control", "arm", "scale", "expected"),
    [
        (CONTROL, ARM, "relative", (0.70732, -0.03526, 1.44989, 0.06191, 0.37879)),
        (CONTROL, ARM, "absolute", (0.29, 0.04538, 0.53462, 0.02016, 0.12478)),
        (Proportion(28, 14), Proportion(30, 16), "relative", (0.06667, -0.47767, 0.61101, 0.80707, 0.2717)),
    ],
)
def test_welch_t_test(control: Sample, arm: Sample, scale: str, expected: tuple[float, ...]) -> None:
    assert rounded(lift(control, arm, scale)) == expected  # type: ignore[arg-type]


def test_a_control_whose_sums_cannot_be_real_has_no_lift() -> None:
    # Given sums whose variance would be negative (two units cannot have these moments)
    control = Mean(n=2, sum=1396.87, sum_squares=52377.9767)
    # Then there is no lift, where gbstats answers its placeholder
    assert lift(control, ARM) is None
    assert posterior(control, ARM) is None


@pytest.mark.parametrize(
    ("control", "arm", "tuning", "expected"),
    [
        (CONTROL_3000, ARM, 1000.0, (0.50336, -0.55844, 1.56516, 1.0, 0.33341)),
        (Proportion(3000, 1396), Proportion(3461, 2422), 5000.0, (0.50386, 0.40098, 0.60675, 0.0, 0.03386)),
        (
            Cuped(CONTROL_3000, Mean(3000, 16.87, 527.9767), 1.0),
            Cuped(ARM, Mean(3461, 22.7, 1348.29), 1.0),
            5000.0,
            (0.50338, -0.50969, 1.51646, 1.0, 0.33341),
        ),
    ],
)
def test_sequential(control: Sample, arm: Sample, tuning: float, expected: tuple[float, ...]) -> None:
    assert rounded(sequential_lift(control, arm, tuning=tuning)) == expected


def test_sequential_interval_is_wider_than_fixed_horizon() -> None:
    fixed, always_valid = lift(CONTROL_3000, ARM), sequential_lift(CONTROL_3000, ARM)
    assert fixed is not None
    assert always_valid is not None
    assert always_valid.ci[0] < fixed.ci[0] < fixed.ci[1] < always_valid.ci[1]
    assert always_valid.p_value >= fixed.p_value


@pytest.mark.parametrize(
    ("control", "arm", "prior", "expected"),
    [
        # (lift, ci low, ci high, chance to win, loss of keeping control, loss of shipping)
        (
            Proportion(100, 49),
            Proportion(100, 51),
            Prior(),
            (0.04082, -0.24779, 0.32943, 0.60918, 0.0814, 0.04058),
        ),
        (
            Mean(10, 100, 1002.25),
            Mean(10, 105, 1111.5),
            Prior(),
            (0.05, -0.02, 0.12, 0.91923, 0.05131, 0.00131),
        ),
        (
            Mean(10, 100, 1002.25),
            Mean(10, 105, 1111.5),
            Prior(mean=0.1, stddev=math.sqrt(0.1), proper=True),
            (0.05063, -0.01893, 0.12019, 0.92315, 0.05186, 0.00123),
        ),
    ],
)
def test_bayesian(control: Sample, arm: Sample, prior: Prior, expected: tuple[float, ...]) -> None:
    result = posterior(control, arm, prior=prior)
    assert result is not None
    values = (
        *(result.lift, *result.ci),
        result.chance_to_win,
        result.expected_loss_control,
        result.expected_loss,
    )
    assert tuple(round(v, 5) for v in values) == expected


def test_inverse_metric_swaps_chance_and_losses() -> None:
    # Given a lower-is-better metric (time to resolution) that went up
    control, arm = Mean(10, 100, 1002.25), Mean(10, 105, 1111.5)
    higher, lower = posterior(control, arm), posterior(control, arm, inverse=True)
    assert higher is not None
    assert lower is not None
    # Then shipping it is the likely loss, not the likely win
    assert lower.chance_to_win == pytest.approx(1 - higher.chance_to_win)
    assert (lower.expected_loss, lower.expected_loss_control) == (
        higher.expected_loss_control,
        higher.expected_loss,
    )


@pytest.mark.parametrize(
    ("mu", "sigma", "expected"),
    [
        # a posterior that is sure of itself; gbstats' truncated-normal form once overflowed here
        (0.01, 4.5e-9, (0.0, 0.01)),
        (-0.01, 4.5e-9, (0.01, 0.0)),
        (0.1, 0.05, (0.0004245351308, 0.1004245351308)),
    ],
)
def test_expected_losses(mu: float, sigma: float, expected: tuple[float, float]) -> None:
    assert tuple(round(v, 10) for v in expected_losses(mu, sigma)) == pytest.approx(expected, abs=1e-10)
