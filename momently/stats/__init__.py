"""Experiment statistics: pure functions of per-arm sufficient statistics, no I/O.

Numbers agree with GrowthBook's stats engine (gbstats), which the tests run side by side.
Formulas are in each module's docstring and in docs/statistics.md.

```
samples.py      Proportion, Mean, Cuped (with covariate) -> Moments
cuped.py        θ and the adjusted moments of a pair
frequentist.py  Welch t: absolute / relative lift, CI, p-value
sequential.py   always-valid CI and p-value (asymptotic confidence sequences)
bayesian.py     chance to beat control, expected loss
srm.py          sample-ratio mismatch p-value
holm.py         Holm-adjusted p-values
interval.py     Wilson interval of one proportion
privacy.py      hide cohorts smaller than k
analysis.py     analyse(): every arm against control, the shape a report prints
```
"""

from momently.stats.analysis import Analysis, ArmResult, Options, adjust, analyse, compare
from momently.stats.bayesian import FLAT, Posterior, Prior, posterior
from momently.stats.frequentist import Estimate, Scale, lift
from momently.stats.holm import holm
from momently.stats.interval import wilson
from momently.stats.privacy import MIN_COHORT, hide_small, reportable
from momently.stats.samples import Cuped, Mean, Proportion, Sample
from momently.stats.sequential import sequential_lift
from momently.stats.srm import SRM_THRESHOLD, srm_p_value

__all__ = [
    "FLAT",
    "MIN_COHORT",
    "SRM_THRESHOLD",
    "Analysis",
    "ArmResult",
    "Cuped",
    "Estimate",
    "Mean",
    "Options",
    "Posterior",
    "Prior",
    "Proportion",
    "Sample",
    "Scale",
    "adjust",
    "analyse",
    "compare",
    "hide_small",
    "holm",
    "lift",
    "posterior",
    "reportable",
    "sequential_lift",
    "srm_p_value",
    "wilson",
]
