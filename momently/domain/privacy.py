"""What a report may publish: small cells hidden, also where a difference would reveal them,
and optional Laplace noise on the counts that remain.

A report is a set of **cells** (a count and the number of distinct people behind it) tied by
**equations**: a total is the sum of its parts (triggered = eligible + each suppression
reason; the whole flow = the sum of its variants). The rules:

1. *Primary suppression.* A cell counting 1 to ``k - 1`` people is hidden. A zero is shown:
   it describes no one, and hiding the zeros every report has (no SMS delivery receipts on
   email, nobody sent in a holdout) would spread through every equation they are in.
2. *Complementary suppression.* A hidden cell whose equation has every other member
   published is recovered by subtraction (a total minus all but one of its parts). So no
   equation may have exactly one hidden member: while one does, a second member is hidden
   too: the equation's ``prefer`` (a cell the report can best spare) if it has one, else a
   never-printed part, else the smallest published non-zero part, else a zero, else the
   total. Hiding only ever grows, so this ends.

Some cells of an equation are never printed but follow from others ("sent but did not
click" is sent minus clicked). They are cells too (``derived``): a small one is hidden like
any other, which then hides one of the printed cells of its equation.

The guarantee is the standard one for tables: no hidden cell is the only unknown of a
published equation. Several equations combined (a two-way table of stages by variants) can
in rare patterns still bound a hidden cell more narrowly; docs/reports.md says so.

Noise (``noisy``) is ε-differential privacy for one count with sensitivity 1 (one
enrollment): Laplace noise of scale ``1/ε``, rounded, never below 0. It is drawn from the
generator the caller seeds once per report run.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar, cast

import numpy as np

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, slots=True)
class Cell:
    """One number of a report: ``value`` (what would be printed) over ``people`` distinct
    people; ``derived`` cells are never printed but follow from printed ones."""

    value: int
    people: int
    derived: bool = False


@dataclass(frozen=True, slots=True)
class Equation:
    """``total`` is the sum of ``parts``; ``prefer``: the member to hide first when one must
    be hidden to protect another."""

    total: Hashable
    parts: tuple[Hashable, ...]
    prefer: Hashable | None = None


def suppress(cells: Mapping[K, Cell], equations: Sequence[Equation], k: int) -> frozenset[K]:
    """The keys of the cells to hide: those of 1 to ``k - 1`` people, and enough others that
    no equation has a single hidden member. Equations may name keys missing from ``cells``
    (an empty part): those count as published zeros."""
    hidden: set[Hashable] = {key for key, cell in cells.items() if 0 < cell.people < k}
    changed = True
    while changed:
        changed = False
        for eq in equations:
            members = (eq.total, *eq.parts)
            if sum(1 for m in members if m in hidden) != 1 or not eq.parts:
                continue
            hidden.add(_complement(cells, eq, hidden))
            changed = True
    return frozenset(key for key in cells if key in hidden)


def _complement(cells: Mapping[K, Cell], eq: Equation, hidden: set[Hashable]) -> Hashable:
    """The member to hide with the one already hidden."""
    if eq.prefer is not None and eq.prefer not in hidden:
        return eq.prefer
    open_parts = [p for p in eq.parts if p not in hidden]
    if not open_parts:
        return eq.total
    lookup = cast(Mapping[Hashable, Cell], cells)

    def cost(key: Hashable) -> tuple[bool, bool, int, int]:
        cell = lookup.get(key)
        if cell is None:
            return (True, True, 0, 0)
        return (not cell.derived, cell.value == 0, cell.value, cell.people)

    return min(open_parts, key=cost)


def noisy(values: Mapping[K, int], epsilon: float, rng: np.random.Generator) -> dict[K, int]:
    """Each count plus Laplace(0, 1/ε) noise, rounded to a whole number, at least 0 (both are
    post-processing: they cost no privacy). Smaller ε: more noise, more privacy."""
    if not epsilon > 0:
        raise ValueError("epsilon must be positive")
    out: dict[K, int] = {}
    for key in sorted(values, key=repr):  # a fixed order: the same seed gives the same noise
        out[key] = max(0, round(values[key] + float(rng.laplace(0.0, 1.0 / epsilon))))
    return out
