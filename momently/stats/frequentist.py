"""Fixed-horizon lift of an arm over control: Welch's t-test on the absolute or relative
difference, as gbstats' ``TwoSidedTTest``.

With control ``a`` and arm ``b`` (means ``m``, per-unit variances ``v``, sizes ``n``; for CUPED
``m`` is the adjusted mean and ``m°`` the raw one, otherwise ``m° = m``):

- absolute lift ``Δ = m_b - m_a`` with ``Var(Δ) = v_b / n_b + v_a / n_a``;
- relative lift ``Δ% = (m_b - m_a) / m°_a`` with the delta-method variance
  ``Var(Δ%) = v_b / (m°_a² n_b) + v_a m°_b² / (m°_a⁴ n_a)``;
- degrees of freedom (Welch-Satterthwaite, on the absolute scale for both):
  ``ν = (v_b/n_b + v_a/n_a)² / (v_b² / (n_b² (n_b - 1)) + v_a² / (n_a² (n_a - 1)))``;
- two-sided p-value ``p = 2 · P(T_ν > |Δ| / √Var)``;
- confidence interval ``Δ ± t_ν(1 - α/2) · √Var``.

A lift is undefined (``None``) when either arm has no variance (no units, one unit, everyone or
no one converted) and, for the relative lift, when control's raw mean is not positive or its
adjusted mean is 0: there is nothing to divide by. gbstats returns placeholder zeros there; a
report should say "not enough data" instead.

These p-values are only valid if the experiment is read once, at its planned end. A dashboard
that is watched every day needs ``momently.stats.sequential`` instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from scipy.stats import t as student_t

from momently.stats.cuped import pair
from momently.stats.samples import Moments, Sample

Scale = Literal["relative", "absolute"]
"""``relative``: ``(arm - control) / control`` (+0.12 is 12 % better); ``absolute``:
``arm - control`` in the metric's unit (+0.012 is 1.2 percentage points)."""

ALPHA = 0.05


@dataclass(frozen=True)
class Estimate:
    """A lift with its (1 - α) confidence interval and two-sided p-value against no effect."""

    lift: float
    ci: tuple[float, float]
    p_value: float
    stddev: float


def lift(control: Sample, arm: Sample, scale: Scale = "relative", alpha: float = ALPHA) -> Estimate | None:
    """The arm's lift over control with a Welch t confidence interval and p-value."""
    a, b = pair(control, arm)
    point_var = difference(a, b, scale)
    if point_var is None:
        return None
    point, variance = point_var
    sd = math.sqrt(variance)
    dof = welch_dof(a, b)
    width = float(student_t.ppf(1 - alpha / 2, dof)) * sd
    p = 2 * float(student_t.sf(abs(point) / sd, dof))
    if not math.isfinite(width):
        return None
    return Estimate(lift=point, ci=(point - width, point + width), p_value=min(p, 1.0), stddev=sd)


def difference(a: Moments, b: Moments, scale: Scale) -> tuple[float, float] | None:
    """The point estimate of the lift and its variance, or ``None`` when undefined (including
    when the numbers are too extreme for floating point)."""
    if not (a.varies and b.varies):
        return None
    if scale == "absolute":
        point, variance = b.mean - a.mean, b.variance / b.n + a.variance / a.n
    else:
        if a.unadjusted_mean <= 0 or a.mean == 0:
            return None
        base = a.unadjusted_mean
        try:
            point = (b.mean - a.mean) / base
            variance = b.variance / (base**2 * b.n) + a.variance * b.unadjusted_mean**2 / (base**4 * a.n)
        except (ZeroDivisionError, OverflowError):
            return None
    if not (math.isfinite(point) and math.isfinite(variance) and variance > 0):
        return None
    return point, variance


def welch_dof(a: Moments, b: Moments) -> float:
    """Welch-Satterthwaite degrees of freedom; only called when both arms vary (so n >= 2).
    Written with each arm's share of the variance, so tiny variances do not underflow."""
    var_b, var_a = b.variance / b.n, a.variance / a.n
    largest = max(var_b, var_a)
    share_b, share_a = var_b / largest, var_a / largest
    return (share_b + share_a) ** 2 / (share_b**2 / (b.n - 1) + share_a**2 / (a.n - 1))
