"""Sufficient statistics of one arm for one metric, and the moments every test reads from them.

A report never needs the raw values: a proportion is ``(n, conversions)``, a mean is
``(n, sum, sum of squares)``, and a CUPED metric adds the pre-exposure covariate and the sum of
cross products. These are the numbers a single ``GROUP BY arm`` over the event log produces.

Variances follow GrowthBook's stats engine (gbstats) exactly, so the two agree to the last digit:

- proportion ``p = c / n``, ``var = p (1 - p)`` (the Bernoulli variance, no Bessel correction);
- mean ``x̄ = S / n``, ``var = (Q - S² / n) / (n - 1)`` (the sample variance, 0 when ``n <= 1``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Proportion:
    """``conversions`` of ``n`` units reached the goal (a micro-conversion rate)."""

    n: int
    conversions: int

    def __post_init__(self) -> None:
        if self.n < 0 or not 0 <= self.conversions <= self.n:
            raise ValueError(f"need 0 <= conversions <= n, got n={self.n}, conversions={self.conversions}")

    @property
    def sum(self) -> float:
        return float(self.conversions)

    @property
    def mean(self) -> float:
        return 0.0 if self.n == 0 else self.conversions / self.n

    @property
    def variance(self) -> float:
        return self.mean * (1 - self.mean)


@dataclass(frozen=True)
class Mean:
    """A per-unit value (revenue, time to resolution): ``n`` units, ``sum`` and ``sum_squares``
    of their values."""

    n: int
    sum: float
    sum_squares: float

    def __post_init__(self) -> None:
        if (
            self.n < 0
            or self.sum_squares < 0
            or not (math.isfinite(self.sum) and math.isfinite(self.sum_squares))
        ):
            raise ValueError(f"need n >= 0 and finite sums, sum_squares >= 0; got {self}")

    @property
    def mean(self) -> float:
        return 0.0 if self.n == 0 else self.sum / self.n

    @property
    def variance(self) -> float:
        if self.n <= 1:
            return 0.0
        return (self.sum_squares - square(self.sum) / self.n) / (self.n - 1)


Plain = Proportion | Mean


@dataclass(frozen=True)
class Cuped:
    """A metric (``post``) with its pre-exposure covariate (``pre``, usually the same metric
    measured before the unit was exposed) over the same ``n`` units; ``sum_products`` is
    ``Σ post_i · pre_i``. See ``momently.stats.cuped`` for the adjustment."""

    post: Plain
    pre: Plain
    sum_products: float

    def __post_init__(self) -> None:
        if self.post.n != self.pre.n:
            raise ValueError(f"post and pre must cover the same units: n={self.post.n} vs {self.pre.n}")
        if not math.isfinite(self.sum_products):
            raise ValueError("sum_products must be finite")

    @property
    def n(self) -> int:
        return self.post.n

    @property
    def covariance(self) -> float:
        """``(P - S_post · S_pre / n) / (n - 1)``, 0 when ``n <= 1``."""
        return covariance(self.n, self.post.sum, self.pre.sum, self.sum_products)


Sample = Proportion | Mean | Cuped


def square(x: float) -> float:
    """``x**2`` rounded as Python's ``pow`` rounds it, which is what gbstats uses: ``x * x`` can
    differ in the last bit, and ``Q - S² / n`` of a near-constant metric turns that bit into
    the difference between a tiny variance and none. Overflow gives ``inf``, not an error."""
    try:
        return x**2
    except OverflowError:
        return math.inf


def covariance(n: int, sum_x: float, sum_y: float, sum_products: float) -> float:
    if n <= 1:
        return 0.0
    return (sum_products - sum_x * sum_y / n) / (n - 1)


@dataclass(frozen=True)
class Moments:
    """What the tests read from an arm: its size, the mean being compared (CUPED-adjusted when
    there is a covariate), the raw mean (the denominator of a relative lift: the lift is
    relative to what control actually did) and the per-unit variance of the compared mean."""

    n: int
    mean: float
    unadjusted_mean: float
    variance: float

    @classmethod
    def of(cls, sample: Plain) -> Moments:
        return cls(sample.n, sample.mean, sample.mean, sample.variance)

    @property
    def varies(self) -> bool:
        """False when the arm carries no information about spread (no units, one unit, all
        converted or none): every test is then undefined, as in gbstats."""
        return self.variance > 0
