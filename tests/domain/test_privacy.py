"""The disclosure rules of reports: cells under k people hidden, and no hidden cell recoverable
by subtracting published cells from a published total."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from momently.domain.privacy import Cell, Equation, noisy, suppress


def test_a_small_part_hides_a_second_part_so_the_total_does_not_give_it_away() -> None:
    # Given triggered 30 = eligible 20 + audience_false 7 + reentry_once 3, k = 5
    cells = {
        "triggered": Cell(30, 30),
        "eligible": Cell(20, 20),
        "audience": Cell(7, 7),
        "reentry": Cell(3, 3),
    }
    eq = [Equation("triggered", ("eligible", "audience", "reentry"))]
    # When suppressed
    hidden = suppress(cells, eq, k=5)
    # Then reentry (3 people) is hidden, and so is the smallest other part
    assert hidden == {"reentry", "audience"}


def test_cells_at_k_are_shown_and_two_small_parts_protect_each_other() -> None:
    cells = {"t": Cell(24, 24), "a": Cell(10, 10), "b": Cell(9, 9), "c": Cell(5, 5)}
    assert suppress(cells, [Equation("t", ("a", "b", "c"))], k=10) == {"b", "c"}
    assert suppress(cells, [Equation("t", ("a", "b", "c"))], k=5) == frozenset()


def test_people_not_items_decide() -> None:
    # 40 enrollments of 3 people: still 3 people
    cells = {"t": Cell(50, 13), "a": Cell(40, 3), "b": Cell(10, 10)}
    assert suppress(cells, [Equation("t", ("a", "b"))], k=10) == {"a", "b"}


def test_zeros_are_shown_and_the_complement_is_a_non_zero_part() -> None:
    cells = {"t": Cell(30, 30), "small": Cell(2, 2), "zero": Cell(0, 0), "big": Cell(28, 28)}
    # a zero counts no one: shown; hiding it beside `small` would only pretend to protect it
    assert suppress(cells, [Equation("t", ("small", "zero", "big"))], k=1) == frozenset()
    assert suppress(cells, [Equation("t", ("small", "zero", "big"))], k=3) == {"small", "big"}


def test_a_never_printed_part_or_the_preferred_member_goes_first() -> None:
    cells = {"t": Cell(30, 30), "small": Cell(2, 2), "mid": Cell(8, 8), "rest": Cell(20, 20, derived=True)}
    assert suppress(cells, [Equation("t", ("small", "mid", "rest"))], k=3) == {"small", "rest"}
    preferring = [Equation("t", ("small", "mid", "rest"), prefer="t")]
    assert suppress(cells, preferring, k=3) == {"small", "t"}


def test_a_single_part_equal_to_its_total_hides_the_total() -> None:
    cells = {"t": Cell(4, 4), "only": Cell(4, 4)}
    assert suppress(cells, [Equation("t", ("only",))], k=5) == {"t", "only"}
    cells = {"t": Cell(40, 12), "only": Cell(4, 4, derived=True)}
    assert suppress(cells, [Equation("t", ("only",))], k=5) == {"t", "only"}


def test_suppression_spreads_through_linked_equations() -> None:
    # a two-way table: stage x variant, with the totals of both
    cells = {
        ("sent", "all"): Cell(40, 40),
        ("sent", "a"): Cell(20, 20),
        ("sent", "b"): Cell(20, 20),
        ("clicked", "all"): Cell(14, 14),
        ("clicked", "a"): Cell(12, 12),
        ("clicked", "b"): Cell(2, 2),
        ("not", "all"): Cell(26, 26, derived=True),
        ("not", "a"): Cell(8, 8, derived=True),
        ("not", "b"): Cell(18, 18, derived=True),
    }
    eqs = [Equation(("sent", v), (("clicked", v), ("not", v))) for v in ("all", "a", "b")]
    eqs += [Equation((m, "all"), ((m, "a"), (m, "b"))) for m in ("sent", "clicked", "not")]
    hidden = suppress(cells, eqs, k=10)
    assert ("clicked", "b") in hidden
    assert ("not", "a") in hidden
    assert_no_equation_has_one_hidden(cells, eqs, hidden)


def assert_no_equation_has_one_hidden(cells: dict, eqs: list[Equation], hidden: frozenset) -> None:  # type: ignore[type-arg]
    for eq in eqs:
        members = [m for m in (eq.total, *eq.parts) if m in cells]
        assert sum(1 for m in members if m in hidden) != 1, eq


@st.composite
def hierarchies(draw: st.DrawFn) -> tuple[dict[str, Cell], list[Equation], int]:
    """A total with parts, some parts totals of parts of their own (two levels), people as
    the values (each part a set of distinct people), and a threshold."""
    k = draw(st.integers(1, 15))
    cells: dict[str, Cell] = {}
    eqs: list[Equation] = []

    def node(name: str, depth: int) -> int:
        if depth < 2 and draw(st.booleans()):
            n = draw(st.integers(1, 4))
            values = [node(f"{name}.{i}", depth + 1) for i in range(n)]
            eqs.append(Equation(name, tuple(f"{name}.{i}" for i in range(n))))
            total = sum(values)
        else:
            total = draw(st.integers(0, 40))
        cells[name] = Cell(total, total, derived=draw(st.integers(0, 9)) == 0)
        return total

    node("t", 0)
    if not eqs:
        a, b = draw(st.integers(0, 40)), draw(st.integers(0, 40))
        cells.update({"t": Cell(a + b, a + b), "t.0": Cell(a, a), "t.1": Cell(b, b)})
        eqs.append(Equation("t", ("t.0", "t.1")))
    return cells, eqs, k


@settings(max_examples=300, deadline=None)
@given(hierarchies())
def test_no_small_cell_is_recoverable_from_a_published_total(case: tuple) -> None:  # type: ignore[type-arg]
    cells, eqs, k = case
    hidden = suppress(cells, eqs, k)
    # every cell of 1 to k - 1 people is hidden
    assert {key for key, c in cells.items() if 0 < c.people < k} <= hidden
    for eq in eqs:
        hidden_members = [m for m in (eq.total, *eq.parts) if m in hidden]
        # the attacker's subtraction: a published total minus every published part is the sum of
        # the hidden parts; it pins a cell down only when exactly one part is hidden
        if eq.total not in hidden:
            hidden_parts = [p for p in eq.parts if p in hidden]
            assert len(hidden_parts) != 1, (eq, hidden)
            remainder = cells[eq.total].value - sum(cells[p].value for p in eq.parts if p not in hidden)
            assert remainder == sum(cells[p].value for p in hidden_parts)
        # and a hidden total cannot be rebuilt from its parts when every part is published
        assert len(hidden_members) != 1, (eq, hidden)


@settings(max_examples=100, deadline=None)
@given(hierarchies())
def test_suppression_is_minimal_where_nothing_is_small(case: tuple) -> None:  # type: ignore[type-arg]
    cells, eqs, _ = case
    assert suppress(cells, eqs, 0) == frozenset()


def test_noise_is_laplace_seeded_and_never_negative() -> None:
    counts = {f"c{i}": 100 for i in range(2000)}
    a = noisy(counts, 0.5, np.random.default_rng(7))
    b = noisy(counts, 0.5, np.random.default_rng(7))
    c = noisy(counts, 0.5, np.random.default_rng(8))
    assert a == b
    assert a != c
    errors = np.array([v - 100 for v in a.values()])
    # Laplace(0, 1/ε = 2): mean absolute deviation 2, median 0
    assert abs(float(np.mean(np.abs(errors))) - 2.0) < 0.2
    assert abs(float(np.median(errors))) <= 1
    assert min(noisy({"z": 0}, 0.01, np.random.default_rng(1)).values()) >= 0
    with pytest.raises(ValueError, match="epsilon"):
        noisy(counts, 0, np.random.default_rng(1))
