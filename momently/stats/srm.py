"""Sample-ratio mismatch: did the arms receive the share of units the experiment configured?

A split that is off (50/50 configured, 5,200 vs 4,800 observed) means assignment or exposure
logging is broken, and every lift computed from it is suspect. As gbstats' ``check_srm``:
Pearson's chi-square of the observed unit counts ``o_i`` against the expected
``e_i = w_i / Σw · Σo``, ``χ² = Σ (o_i - e_i)² / e_i`` with ``k - 1`` degrees of freedom, and
the p-value ``P(χ²_{k-1} > χ²)``. GrowthBook flags p < 0.001.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy.stats import chi2

SRM_THRESHOLD = 0.001


def srm_p_value(counts: Sequence[int], weights: Sequence[float]) -> float:
    """The p-value of the observed split under the configured weights (1.0 with no units yet).

    Raises ``ValueError`` unless there are at least two arms, one positive weight each.
    """
    if len(counts) != len(weights) or len(counts) < 2:
        raise ValueError("need one weight per arm and at least two arms")
    if any(not (w > 0 and math.isfinite(w)) for w in weights) or any(c < 0 for c in counts):
        raise ValueError("weights must be positive and counts non-negative")
    total = sum(counts)
    if total == 0:
        return 1.0
    weight_total = sum(weights)
    statistic = 0.0
    for observed, weight in zip(counts, weights, strict=True):
        expected = weight / weight_total * total
        statistic += (observed - expected) ** 2 / expected
    return float(chi2.sf(statistic, len(counts) - 1))
