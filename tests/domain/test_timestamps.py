from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from momently.domain.timestamps import InvalidTimestamp, event_time, format_timestamp, parse_timestamp

T = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-11-23T10:00:00Z", T),
        ("2026-11-23T10:00:00+00:00", T),
        ("2026-11-23T11:00:00+01:00", T),
        ("2026-11-23T10:00:00.123Z", T + timedelta(milliseconds=123)),
        ("2026-11-23T10:00:00.123456Z", T + timedelta(microseconds=123456)),
        ("2026-11-23T10:00:00", T),  # no offset: UTC
        ("2026-11-23T05:00:00.5-0500", T + timedelta(milliseconds=500)),
    ],
)
def test_parse_accepts_client_forms(raw: str, expected: datetime) -> None:
    assert parse_timestamp(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "yesterday",
        1700000000,
        None,
        "2026-13-01T00:00:00Z",
        "0001-01-01T00:00:00+01:00",  # year 0 in UTC
        "9999-12-31T23:59:59-01:00",  # year 10000 in UTC
        [[["2026-11-23T10:00:00Z"]]],
    ],
)
def test_parse_rejects(raw: object) -> None:
    with pytest.raises(InvalidTimestamp):
        parse_timestamp(raw)


def test_format_is_utc_millis_z() -> None:
    assert format_timestamp(T + timedelta(microseconds=123456)) == "2026-11-23T10:00:00.123Z"


RECEIVED = T
SKEWED_CLIENT = T + timedelta(hours=2)  # the device clock runs two hours fast


@pytest.mark.parametrize(
    ("timestamp", "original", "sent_at", "expected"),
    [
        (T - timedelta(days=1), SKEWED_CLIENT, SKEWED_CLIENT, T - timedelta(days=1)),  # explicit wins
        (None, SKEWED_CLIENT - timedelta(seconds=30), SKEWED_CLIENT, T - timedelta(seconds=30)),  # corrected
        (None, T - timedelta(minutes=5), None, T - timedelta(minutes=5)),  # no sentAt: as given
        (None, None, SKEWED_CLIENT, T),  # nothing: receivedAt
    ],
    ids=["explicit", "skew-corrected", "original-only", "received"],
)
def test_event_time_rule(
    timestamp: datetime | None, original: datetime | None, sent_at: datetime | None, expected: datetime
) -> None:
    assert (
        event_time(timestamp=timestamp, original_timestamp=original, sent_at=sent_at, received_at=RECEIVED)
        == expected
    )


def test_a_skew_correction_out_of_the_calendar_falls_back_to_original_timestamp() -> None:
    original = datetime(1, 1, 1, tzinfo=UTC)
    at = event_time(
        timestamp=None,
        original_timestamp=original,
        sent_at=datetime(9999, 1, 1, tzinfo=UTC),
        received_at=RECEIVED,
    )
    assert at == original


def test_the_error_does_not_echo_a_long_value() -> None:
    with pytest.raises(InvalidTimestamp) as raised:
        parse_timestamp("x" * 10_000)
    assert len(str(raised.value)) < 200
