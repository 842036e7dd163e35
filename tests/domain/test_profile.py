from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from momently.domain.profile import LoggedEvent, Profile, apply, merge


def ev(seq: int, type_: str = "track", name: str | None = None, ts: int = 1000, **body: Any) -> LoggedEvent:
    return LoggedEvent(
        seq=seq,
        type=type_,
        name=name,
        user_id=body.pop("userId", "u"),
        anonymous_id=body.pop("anonymousId", None),
        timestamp_ms=ts,
        body=body,
    )


def test_identify_sets_traits_addresses_and_timezone() -> None:
    p = apply(
        Profile("p"),
        ev(
            1,
            "identify",
            traits={"email": " Ada@X.io ", "phone": "+331234", "timezone": "Asia/Tokyo"},
            context={"timezone": "Europe/Paris"},
        ),
    )
    assert (p.email, p.phone, p.timezone) == ("ada@x.io", "+331234", "Asia/Tokyo")
    p = apply(p, ev(2, "identify", traits={"plan": "pro"}))
    assert p.traits == {"email": " Ada@X.io ", "phone": "+331234", "timezone": "Asia/Tokyo", "plan": "pro"}


def test_invalid_timezone_is_ignored() -> None:
    p = apply(Profile("p"), ev(1, context={"timezone": "Mars/Olympus"}, name="x"))
    assert p.timezone is None


def test_orders_use_revenue_then_total() -> None:
    p = Profile("p")
    p = apply(p, ev(1, name="Order Completed", ts=5, properties={"revenue": "19.90", "total": 25}))
    p = apply(p, ev(2, name="Order Completed", ts=9, properties={"total": 10}))
    p = apply(p, ev(3, name="Order Completed", ts=7, properties={"revenue": "n/a"}))
    assert (p.orders_count, p.revenue, p.last_order_ms) == (3, 29.9, 9)


def test_push_token_from_device_context() -> None:
    p = apply(Profile("p"), ev(1, "screen", context={"device": {"type": "ios", "token": "abc"}}))
    p = apply(p, ev(2, "screen", context={"device": {"type": "ios", "token": "abc"}}))
    assert p.push_tokens == (("ios", "abc"),)
    assert p.event_counts == {"$screen": 2}


events = st.lists(
    st.builds(
        lambda seq, name, ts: (seq, name, ts),
        st.integers(1, 10**6),
        st.sampled_from(["A", "B", "Order Completed"]),
        st.integers(0, 10**9),
    ),
    max_size=30,
)


@given(events, events)
def test_merge_equals_folding_both_histories(
    left: list[tuple[int, str, int]], right: list[tuple[int, str, int]]
) -> None:
    """Merging two people's profiles gives the same counts, revenue and seen-times as one
    person who did everything."""

    def fold(items: list[tuple[int, str, int]]) -> Profile:
        p = Profile("p")
        for seq, name, ts in items:
            p = apply(p, ev(seq, name=name, ts=ts, properties={"revenue": 2}))
        return p

    merged = merge(fold(left), fold(right))
    together = fold(left + right)
    assert merged.event_counts == together.event_counts
    assert merged.orders_count == together.orders_count
    assert merged.revenue == together.revenue
    assert (merged.first_seen_ms, merged.last_seen_ms) == (together.first_seen_ms, together.last_seen_ms)
