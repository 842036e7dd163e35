from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from momently.domain.ratelimit import Bucket, take


def test_burst_then_throttle_then_refill() -> None:
    v = take(None, rate=10, burst=20, cost=20, now=0.0)
    assert v.allowed
    v = take(v.bucket, rate=10, burst=20, cost=5, now=0.0)
    assert v.allowed  # not in debt yet: admitted, bucket goes negative
    v2 = take(v.bucket, rate=10, burst=20, cost=1, now=0.0)
    assert not v2.allowed
    assert v2.retry_after == 1
    assert take(v2.bucket, rate=10, burst=20, cost=1, now=0.6).allowed


@given(st.lists(st.tuples(st.floats(0, 5), st.integers(1, 50)), max_size=80))
def test_admitted_events_never_exceed_burst_plus_rate_times_time_plus_one_request(
    requests: list[tuple[float, int]],
) -> None:
    """Over any run, what is admitted is bounded by burst + rate x elapsed + the last request's size."""
    rate, burst = 10.0, 20.0
    bucket: Bucket | None = None
    now = 0.0
    admitted = 0
    for gap, cost in requests:
        now += gap
        verdict = take(bucket, rate=rate, burst=burst, cost=cost, now=now)
        bucket = verdict.bucket
        if verdict.allowed:
            admitted += cost
            assert admitted <= burst + rate * now + cost


@given(st.lists(st.floats(0, 2), max_size=120), st.sampled_from([0.5, 2.0, 10.0]))
def test_strict_sends_never_exceed_the_provider_rate(gaps: list[float], rate: float) -> None:
    """A provider's send rate: in every window of T seconds at most burst + rate x T sends."""
    burst = max(1.0, rate)
    bucket: Bucket | None = None
    now, sent = 0.0, []
    for gap in gaps:
        now += gap
        v = take(bucket, rate=rate, burst=burst, cost=1, now=now, strict=True)
        bucket = v.bucket
        if v.allowed:
            sent.append(now)
        else:
            assert v.retry_after >= 1
    for i, start in enumerate(sent):
        in_window = [t for t in sent[i:] if t - start <= 1.0]
        assert len(in_window) <= burst + rate * 1.0 + 1e-9
