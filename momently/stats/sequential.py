"""Confidence intervals that stay valid however often the results are looked at, as gbstats'
sequential testing (``SequentialTwoSidedTTest``).

A fixed-horizon 95 % interval, checked every day and acted on the first time it excludes zero,
is wrong far more often than 5 % of the time. An asymptotic confidence sequence (Howard et al.;
the form used is eq. 9 of Waudby-Smith et al. 2023, arXiv:2103.06476) is wider, but holds
uniformly over time: the chance that it *ever* excludes the true lift is at most α.

With ``N = n_a + n_b`` units so far, ``Δ`` and ``Var(Δ)`` the lift and its variance from
``momently.stats.frequentist`` (absolute or relative), ``s² = N · Var(Δ)`` and the tuning
parameter ``η`` (the sample size at which the sequence is tightest; gbstats' default 5000):

- ``ρ = √((-2 ln α + ln(1 - 2 ln α)) / η)``
- half-width ``w = √s² · √(2 (N ρ² + 1) ln(√(N ρ² + 1) / α) / (N ρ)²)``, interval ``Δ ± w``
- always-valid p-value ``p = min(1, 1 / E)`` with the e-value
  ``ln E = ρ² (N Δ² / s²) / (2 (N ρ² + 1)) - ½ ln(N ρ² + 1)`` (computed in logs: large
  experiments overflow ``E`` itself).
"""

from __future__ import annotations

import math

from momently.stats.cuped import pair
from momently.stats.frequentist import ALPHA, Estimate, Scale, difference
from momently.stats.samples import Sample, square

TUNING = 5000.0


def sequential_lift(
    control: Sample,
    arm: Sample,
    scale: Scale = "relative",
    alpha: float = ALPHA,
    tuning: float = TUNING,
) -> Estimate | None:
    """The arm's lift over control with an always-valid interval and p-value."""
    a, b = pair(control, arm)
    point_var = difference(a, b, scale)
    if point_var is None:
        return None
    point, variance = point_var
    total = a.n + b.n
    rho = math.sqrt((-2 * math.log(alpha) + math.log(-2 * math.log(alpha) + 1)) / tuning)
    scaled_variance = variance * total
    spread = total * rho**2 + 1
    width = math.sqrt(scaled_variance) * math.sqrt(
        2 * spread * math.log(math.sqrt(spread) / alpha) / (total * rho) ** 2
    )
    log_evalue = rho**2 * (square(point) * total / variance) / (2 * spread) - 0.5 * math.log(spread)
    p = 1.0 if log_evalue <= 0 else math.exp(-log_evalue)
    if not math.isfinite(width):
        return None
    return Estimate(lift=point, ci=(point - width, point + width), p_value=p, stddev=math.sqrt(variance))
