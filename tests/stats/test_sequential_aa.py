"""An A/A simulation: two arms with the same true conversion rate, looked at every simulated day
for 30 days and called the first time the interval excludes no effect. Sequential intervals
keep that false positive rate at or under 5 %; the fixed-horizon interval, peeked at the same
way, does not (which is why the sequential one exists, and shows this test can fail)."""

from __future__ import annotations

import numpy as np

from momently.stats import Proportion
from momently.stats.frequentist import lift
from momently.stats.sequential import sequential_lift

RUNS = 1000
DAYS = 30
PER_DAY = 200  # people exposed per arm and day
RATE = 0.1


def _false_positive_rates() -> tuple[float, float]:
    rng = np.random.default_rng(20261201)
    daily = rng.binomial(PER_DAY, RATE, size=(RUNS, 2, DAYS)).cumsum(axis=2)
    sequential = peeking = 0
    for run in range(RUNS):
        seq_called = fixed_called = False
        for day in range(DAYS):
            n = PER_DAY * (day + 1)
            control = Proportion(n, int(daily[run, 0, day]))
            arm = Proportion(n, int(daily[run, 1, day]))
            s = sequential_lift(control, arm, scale="absolute")
            f = lift(control, arm, scale="absolute")
            seq_called = seq_called or (s is not None and not s.ci[0] <= 0 <= s.ci[1])
            fixed_called = fixed_called or (f is not None and not f.ci[0] <= 0 <= f.ci[1])
        sequential += seq_called
        peeking += fixed_called
    return sequential / RUNS, peeking / RUNS


def test_sequential_intervals_keep_false_positives_under_5_percent_when_peeking_daily() -> None:
    sequential, peeking = _false_positive_rates()
    assert sequential <= 0.05, sequential
    assert peeking > 0.10, peeking  # the naive daily peek is wrong about twice as often or more
