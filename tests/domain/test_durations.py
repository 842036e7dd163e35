from __future__ import annotations

import pytest

from momently.domain.durations import MAX_MS, InvalidDuration, parse_duration, parse_offset


@pytest.mark.parametrize(
    ("text", "ms"),
    [("30m", 1_800_000), ("1h30m", 5_400_000), ("7d", 604_800_000), ("36525d", MAX_MS), ("005s", 5000)],
)
def test_durations_up_to_a_century(text: str, ms: int) -> None:
    assert parse_duration(text) == ms


@pytest.mark.parametrize(
    "text", ["36526d", "5219w", "99999999999999999999d", "1" * 5000 + "ms", "36525d1ms", "0s", "1y", 30]
)
def test_longer_than_a_century_or_not_a_duration_is_invalid(text: object) -> None:
    with pytest.raises(InvalidDuration):
        parse_duration(text)


@pytest.mark.parametrize(("text", "ms"), [("-1d", -86_400_000), ("0s", 0), ("-36525d", -MAX_MS)])
def test_offsets(text: str, ms: int) -> None:
    assert parse_offset(text) == ms


@pytest.mark.parametrize("text", ["-36526d", "99999999999999999999d", "-" + "9" * 5000 + "s"])
def test_offsets_longer_than_a_century_are_invalid(text: str) -> None:
    with pytest.raises(InvalidDuration):
        parse_offset(text)
