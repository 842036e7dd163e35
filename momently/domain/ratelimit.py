"""Per-workspace ingest rate limit: a token bucket refilled at ``rate`` events per second.

A request is admitted whenever the bucket is not in debt, and then pays for all its
events, so a batch larger than the bucket still passes once and the debt makes the next
requests wait. ``retry_after`` tells a throttled client how long until it may try again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Bucket:
    tokens: float
    updated: float  # monotonic seconds


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    bucket: Bucket
    retry_after: int  # whole seconds, 0 when allowed


def take(
    bucket: Bucket | None, *, rate: float, burst: float, cost: int, now: float, strict: bool = False
) -> Verdict:
    """``strict``: admit only when the whole cost is in the bucket (a provider's send rate,
    which must never be exceeded), instead of letting a request go into debt."""
    if rate <= 0:
        raise ValueError("rate must be positive")
    if bucket is None:
        bucket = Bucket(tokens=burst, updated=now)
    elapsed = max(0.0, now - bucket.updated)
    tokens = min(burst, bucket.tokens + elapsed * rate)
    if strict and tokens < cost:
        return Verdict(False, Bucket(tokens, now), max(1, math.ceil((cost - tokens) / rate)))
    if tokens < 0:
        wait = math.ceil(-tokens / rate)
        return Verdict(False, Bucket(tokens, now), max(1, wait))
    return Verdict(True, Bucket(tokens - cost, now), 0)
