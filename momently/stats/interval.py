"""The confidence interval of one proportion (a flow's micro-conversion rate on its own, not
against a control): Wilson's score interval, as scipy's ``binomtest`` computes it.

Wilson rather than the normal approximation ``p ± z √(p(1-p)/n)``: that one collapses to a
zero-width interval at 0 % or 100 % and leaves [0, 1] for small ``n``, both common for a
flow's first days.
"""

from __future__ import annotations

from scipy.stats import binomtest

from momently.stats.frequentist import ALPHA
from momently.stats.samples import Proportion


def wilson(sample: Proportion, alpha: float = ALPHA) -> tuple[float, float] | None:
    """The (1 - α) Wilson score interval of ``sample``'s rate; ``None`` without units."""
    if sample.n == 0:
        return None
    ci = binomtest(sample.conversions, sample.n).proportion_ci(confidence_level=1 - alpha, method="wilson")
    return float(ci.low), float(ci.high)
