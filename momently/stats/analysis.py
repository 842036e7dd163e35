"""One metric of one experiment: every arm against control, in the shape a report prints.

``analyse`` is the entry point for the report layer: it takes each arm's sufficient statistics
and the configured weights, and returns per arm the lift with its interval and p-value, the
chance to beat control, the expected loss, and for the experiment the sample-ratio-mismatch
p-value. ``adjust`` then applies Holm's correction across every arm and metric shown together.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from momently.stats.bayesian import FLAT, Prior, posterior
from momently.stats.frequentist import ALPHA, Estimate, Scale, lift
from momently.stats.holm import holm
from momently.stats.samples import Cuped, Sample
from momently.stats.sequential import TUNING, sequential_lift
from momently.stats.srm import srm_p_value


@dataclass(frozen=True)
class Options:
    """How an experiment is analysed; the defaults are GrowthBook's."""

    alpha: float = ALPHA
    scale: Scale = "relative"
    sequential: bool = False
    """always-valid intervals and p-values, for results that are watched while they run"""
    tuning: float = TUNING
    prior: Prior = FLAT
    inverse: bool = False
    """lower is better (time to resolution, latency)"""


@dataclass(frozen=True)
class ArmResult:
    """One arm against control on one metric. Every statistic is ``None`` when it is undefined
    (an arm without variation, a control mean of 0 for a relative lift)."""

    arm: str
    arm_n: int
    control_n: int
    mean: float
    """the arm's raw mean (conversion rate), before any CUPED adjustment"""
    control_mean: float
    estimate: Estimate | None
    """lift on ``Options.scale`` with its confidence interval and p-value (sequential if asked)"""
    chance_to_win: float | None
    expected_loss: float | None
    """expected loss of shipping the arm, on ``Options.scale``"""
    p_adjusted: float | None = None
    """Holm-adjusted p-value, once ``adjust`` has seen the whole family"""

    @property
    def n(self) -> int:
        """The smaller cohort this comparison rests on (what privacy thresholds apply to)."""
        return min(self.arm_n, self.control_n)

    @property
    def lift(self) -> float | None:
        return None if self.estimate is None else self.estimate.lift

    @property
    def ci(self) -> tuple[float, float] | None:
        return None if self.estimate is None else self.estimate.ci

    @property
    def p_value(self) -> float | None:
        return None if self.estimate is None else self.estimate.p_value


@dataclass(frozen=True)
class Analysis:
    """One metric of one experiment: the split check and every arm against control."""

    control: str
    srm_p: float
    arms: tuple[ArmResult, ...]


def compare(control: Sample, arm: Sample, options: Options = Options(), name: str = "") -> ArmResult:
    """One arm against control."""
    if options.sequential:
        estimate = sequential_lift(control, arm, options.scale, options.alpha, options.tuning)
    else:
        estimate = lift(control, arm, options.scale, options.alpha)
    bayes = posterior(control, arm, options.scale, options.prior, options.inverse, options.alpha)
    return ArmResult(
        arm=name,
        arm_n=arm.n,
        control_n=control.n,
        mean=_raw_mean(arm),
        control_mean=_raw_mean(control),
        estimate=estimate,
        chance_to_win=None if bayes is None else bayes.chance_to_win,
        expected_loss=None if bayes is None else bayes.expected_loss,
    )


def analyse(
    samples: Mapping[str, Sample],
    control: str,
    weights: Mapping[str, float],
    options: Options = Options(),
) -> Analysis:
    """Every arm in ``samples`` against ``samples[control]``; ``weights`` are the configured
    shares of traffic (any positive scale), one per arm including control."""
    if control not in samples:
        raise ValueError(f"control arm {control!r} has no sample")
    if set(weights) != set(samples):
        raise ValueError(
            f"need one weight per arm: weights for {sorted(weights)}, samples for {sorted(samples)}"
        )
    names = list(samples)
    srm = srm_p_value([samples[name].n for name in names], [weights[name] for name in names])
    arms = tuple(compare(samples[control], samples[name], options, name) for name in names if name != control)
    return Analysis(control=control, srm_p=srm, arms=arms)


def adjust(results: Sequence[ArmResult]) -> tuple[ArmResult, ...]:
    """The results with Holm-adjusted p-values, the family being every result given that has a
    p-value (pass all arms of all metrics a report shows at once). Undefined tests tested
    nothing and are not counted."""
    tested = [i for i, r in enumerate(results) if r.p_value is not None]
    adjusted = holm([results[i].p_value or 0.0 for i in tested])
    out = list(results)
    for i, p in zip(tested, adjusted, strict=True):
        out[i] = dataclasses.replace(results[i], p_adjusted=p)
    return tuple(out)


def _raw_mean(sample: Sample) -> float:
    return sample.post.mean if isinstance(sample, Cuped) else sample.mean
