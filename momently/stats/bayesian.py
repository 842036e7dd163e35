"""Chance to beat control and expected loss, as gbstats' Bayesian engine
(``EffectBayesianABTest``).

The lift ``Δ`` (relative by default) and its variance ``V`` come from
``momently.stats.frequentist.difference``. The data's likelihood for the true lift is
``N(Δ, V)``; with a Gaussian prior ``N(μ₀, σ₀²)`` on the lift the posterior is normal with

- precision ``1/σ² = 1/V + 1/σ₀²`` and mean ``μ = (Δ/V + μ₀/σ₀²) · σ²``;
- with the default **improper (flat) prior** ``μ = Δ``, ``σ² = V`` (gbstats' default:
  ``prior_proper = False``; its proper prior is ``N(0, 0.1²)`` on the relative lift, and an
  absolute analysis rescales it by control's mean: ``N(0·|m_a|, 0.1² m_a²)``).

From ``X ~ N(μ, σ²)``, with ``φ``/``Φ`` the standard normal density/distribution and ``z = μ/σ``:

- chance to beat control ``P(X > 0) = Φ(z)`` (``P(X < 0)`` for a metric where lower is better);
- expected loss of shipping the arm ``E[max(0, -X)] = σ φ(z) - μ Φ(-z)``: how much is given up,
  on average, in the worlds where the arm is in fact worse;
- expected loss of keeping control ``E[max(0, X)] = σ φ(z) + μ Φ(z)``
  (the two swap for a lower-is-better metric);
- credible interval ``μ ± σ Φ⁻¹(1 - α/2)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy.stats import norm

from momently.stats.cuped import pair
from momently.stats.frequentist import ALPHA, Scale, difference
from momently.stats.samples import Sample, square


@dataclass(frozen=True)
class Prior:
    """A normal prior on the lift, expressed on the relative scale (as gbstats' metric
    settings: ``prior_mean``, ``prior_stddev``, ``prior_proper``)."""

    mean: float = 0.0
    stddev: float = 0.1
    proper: bool = False

    def __post_init__(self) -> None:
        if not self.stddev > 0:
            raise ValueError(f"a prior needs a positive stddev, got {self.stddev}")


FLAT = Prior()


@dataclass(frozen=True)
class Posterior:
    """What the Bayesian engine says about one arm."""

    lift: float
    stddev: float
    ci: tuple[float, float]
    chance_to_win: float
    expected_loss: float
    """loss from shipping the arm (in the lift's units)"""
    expected_loss_control: float
    """loss from keeping control instead"""


def posterior(
    control: Sample,
    arm: Sample,
    scale: Scale = "relative",
    prior: Prior = FLAT,
    inverse: bool = False,
    alpha: float = ALPHA,
) -> Posterior | None:
    """The posterior of the arm's lift; ``inverse`` for metrics where lower is better
    (time to resolution). ``None`` when the lift is undefined (see ``frequentist``), or when a
    proper prior is asked for on the absolute scale and control's mean is 0 (the relative prior
    cannot be rescaled; gbstats divides by zero there)."""
    a, b = pair(control, arm)
    point_var = difference(a, b, scale)
    if point_var is None:
        return None
    data_mean, data_variance = point_var
    if prior.proper:
        prior_mean, prior_variance = prior.mean, prior.stddev**2
        if scale == "absolute":
            prior_mean *= abs(a.unadjusted_mean)
            prior_variance *= square(a.unadjusted_mean)
        if prior_variance == 0:
            # a relative prior says nothing on the absolute scale of a zero baseline
            return None
        precision = 1 / data_variance + 1 / prior_variance
        mu = (data_mean / data_variance + prior_mean / prior_variance) / precision
        sigma = math.sqrt(1 / precision)
    else:
        mu, sigma = data_mean, math.sqrt(data_variance)
    if not (math.isfinite(mu) and 0 < sigma < math.inf):
        return None  # beyond floating point: a baseline or variance near 1e-308
    loss_arm, loss_control = expected_losses(mu, sigma)
    chance = float(norm.cdf(-mu / sigma if inverse else mu / sigma))
    if inverse:
        loss_arm, loss_control = loss_control, loss_arm
    half = sigma * float(norm.ppf(1 - alpha / 2))
    return Posterior(
        lift=mu,
        stddev=sigma,
        ci=(mu - half, mu + half),
        chance_to_win=chance,
        expected_loss=loss_arm,
        expected_loss_control=loss_control,
    )


def expected_losses(mu: float, sigma: float) -> tuple[float, float]:
    """``(E[max(0, -X)], E[max(0, X)])`` for ``X ~ N(mu, sigma²)``: the loss of shipping the arm
    and of keeping control. Closed form, so a posterior that is sure of itself (tiny ``sigma``)
    gives ``(0, mu)`` rather than overflowing, as a truncated-normal mean can."""
    z = mu / sigma
    density = float(norm.pdf(z))
    loss_arm = sigma * density - mu * float(norm.cdf(-z))
    loss_control = sigma * density + mu * float(norm.cdf(z))
    # the difference of two tiny terms can round below zero; a loss cannot be negative
    return max(loss_arm, 0.0), max(loss_control, 0.0)
