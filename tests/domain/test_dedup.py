from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from momently.domain.dedup import DedupWindow, message_key

START = datetime(2026, 11, 1, tzinfo=UTC)


def test_keys_are_per_workspace() -> None:
    assert message_key("a", "m1") != message_key("b", "m1")
    assert message_key("a", "m1") == message_key("a", "m1")


@given(
    st.lists(st.tuples(st.integers(0, 20 * 24), st.sampled_from("abcdefgh")), max_size=60),
    st.booleans(),
)
def test_an_id_is_remembered_for_at_least_the_window(
    sightings: list[tuple[int, str]], in_groups: bool
) -> None:
    """Whatever the order of sightings and expiries, an id seen within the last 7 days is known,
    whether ids are added one by one or as a committed group (``add_all``)."""
    window = DedupWindow(timedelta(days=7))
    last_seen: dict[str, datetime] = {}
    by_hour: dict[int, list[str]] = {}
    for hours, mid in sightings:
        by_hour.setdefault(hours, []).append(mid)
    for hours, mids in sorted(by_hour.items()):
        now = START + timedelta(hours=hours)
        window.expire(now)
        for other, seen in last_seen.items():
            if now - seen <= timedelta(days=7):
                assert message_key("w", other) in window
        if in_groups:
            window.add_all([message_key("w", mid) for mid in mids], now)
        else:
            for mid in mids:
                window.add(message_key("w", mid), now)
        for mid in mids:
            last_seen[mid] = now


def test_old_ids_are_forgotten() -> None:
    window = DedupWindow(timedelta(days=7))
    window.add(message_key("w", "old"), START)
    window.expire(START + timedelta(days=10))
    assert message_key("w", "old") not in window
    assert len(window) == 0
