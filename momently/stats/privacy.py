"""Small cohorts are not shown: a conversion rate over three people says what those three did.

A report hides any cohort (an arm, a segment of an arm, a comparison) resting on fewer than
``k`` units. A comparison rests on both of its cohorts, so ``ArmResult.n`` is the smaller of
arm and control. Hiding is not a full disclosure control: a hidden cell that can be recovered
as a total minus the visible cells is still disclosed, so reports should not print such totals
next to hidden cells.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, TypeVar

MIN_COHORT = 10


class Counted(Protocol):
    @property
    def n(self) -> int: ...


K = TypeVar("K")
C = TypeVar("C", bound=Counted)


def reportable(n: int, k: int = MIN_COHORT) -> bool:
    """Whether a cohort of ``n`` units may be shown."""
    return n >= k


def hide_small(cohorts: Mapping[K, C], k: int = MIN_COHORT) -> dict[K, C | None]:
    """The cohorts with every one of fewer than ``k`` units replaced by ``None``."""
    return {key: cohort if reportable(cohort.n, k) else None for key, cohort in cohorts.items()}
