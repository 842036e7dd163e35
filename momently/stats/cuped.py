"""CUPED: variance reduction with a pre-exposure covariate, as gbstats' regression adjustment.

Units that spent a lot before exposure tend to spend a lot after, whatever arm they are in.
Subtracting the part of the outcome the covariate predicts removes that noise without biasing
the difference (the covariate was fixed before assignment, so its arm means differ only by
chance). For one comparison, control ``a`` against arm ``b``:

- ``θ = cov(post, pre) / var(pre)``, both estimated on the **pooled** units of ``a`` and ``b``
  (``n = n_a + n_b``; a pooled proportion uses ``p (1 - p)``, a pooled mean the sample
  variance; ``cov = (P_a + P_b - (S_post_a + S_post_b)(S_pre_a + S_pre_b) / n) / (n - 1)``);
- per arm, ``ȳ_adj = ȳ_post - θ · x̄_pre`` and
  ``var_adj = var(post) + θ² var(pre) - 2 θ cov(post, pre)`` (0 when ``n <= 1``).

θ is shared by both arms, so ``θ · (x̄_pre_b - x̄_pre_a)`` is all the adjustment changes in the
difference. When the pooled pre or post variance is 0, θ is 0 and the metric is analysed
unadjusted (gbstats does the same).
"""

from __future__ import annotations

import math

from momently.stats.samples import Cuped, Mean, Moments, Plain, Proportion, Sample, covariance, square


def theta(control: Cuped, arm: Cuped) -> float:
    """The regression coefficient of post on pre over both arms' units: 0 when the pooled
    variance is 0 (no adjustment), NaN when the sums overflow (nothing is defined)."""
    n = control.n + arm.n
    try:
        post = _pooled(control.post, arm.post, n)
        pre = _pooled(control.pre, arm.pre, n)
    except OverflowError:
        return math.nan  # sums beyond floating point: every statistic of the pair is undefined
    if pre.variance == 0 or post.variance == 0:
        return 0.0
    return covariance(n, post.sum, pre.sum, control.sum_products + arm.sum_products) / pre.variance


def adjusted(sample: Cuped, theta: float) -> Moments:
    """The arm's moments with the covariate's predictable part removed."""
    if theta == 0:
        return Moments.of(sample.post)
    variance = 0.0
    if sample.n > 1:
        variance = sample.post.variance + square(theta) * sample.pre.variance - 2 * theta * sample.covariance
    return Moments(
        n=sample.n,
        mean=sample.post.mean - theta * sample.pre.mean,
        unadjusted_mean=sample.post.mean,
        variance=variance,
    )


def pair(control: Sample, arm: Sample) -> tuple[Moments, Moments]:
    """The moments a comparison reads: plain samples as they are, CUPED samples adjusted with
    the θ of this pair. Both sides must be the same kind of metric."""
    if isinstance(control, Cuped) and isinstance(arm, Cuped):
        _same_kind(control.post, arm.post)
        _same_kind(control.pre, arm.pre)
        t = theta(control, arm)
        return adjusted(control, t), adjusted(arm, t)
    if isinstance(control, Cuped) or isinstance(arm, Cuped):
        raise TypeError("control and arm must both carry the covariate, or neither")
    _same_kind(control, arm)
    return Moments.of(control), Moments.of(arm)


def _pooled(a: Plain, b: Plain, n: int) -> Plain:
    if isinstance(a, Proportion) and isinstance(b, Proportion):
        return Proportion(n, a.conversions + b.conversions)
    if isinstance(a, Mean) and isinstance(b, Mean):
        total, squares = a.sum + b.sum, a.sum_squares + b.sum_squares
        if not (math.isfinite(total) and math.isfinite(squares)):
            raise OverflowError
        return Mean(n, total, squares)
    raise TypeError(
        f"control and arm must be the same kind of metric: {type(a).__name__} vs {type(b).__name__}"
    )


def _same_kind(a: Plain, b: Plain) -> None:
    if type(a) is not type(b):
        raise TypeError(
            f"control and arm must be the same kind of metric: {type(a).__name__} vs {type(b).__name__}"
        )
