"""Holm(-Bonferroni) adjusted p-values, for a family of tests read together (every arm of an
experiment against control, on every metric of its report).

With ``m`` p-values sorted ascending ``p_(1) <= … <= p_(m)``, the adjusted value of the i-th is
``p̃_(i) = min(1, max_{j <= i} (m - j + 1) · p_(j))``. Rejecting where ``p̃ < α`` keeps the chance
of *any* false positive in the family at most α, for any dependence between the tests, and
rejects at least as much as plain Bonferroni (``m · p``).
"""

from __future__ import annotations

from collections.abc import Sequence


def holm(p_values: Sequence[float]) -> tuple[float, ...]:
    """The adjusted p-values, in the order given."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return tuple(adjusted)
