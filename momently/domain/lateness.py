"""Event time and allowed lateness: how flows decide on when things happened, not on the
order in which the events arrived.

Phones flush events minutes or days late, and a server's ``Order Completed`` often arrives
before the phone's ``Product Added``. The engine therefore reads each event at its event time
(``LoggedEvent.time_ms``) and holds every deadline it waits on (an absence window closing, a
stretch of inactivity ending, a segment's time-based change) for an **allowed lateness**
before acting on it, as stream processors hold a window open past its end:

- A deadline due at ``D`` is *released* at ``D + lateness``. Every event that **arrives** by
  then counts, whatever its place in the log: an order stamped before ``D`` that arrives
  within the lateness cancels the nudge.
- The decision is stamped at ``D``, the moment it is about, not at its release.
- An event that arrives after the release is too late for that deadline: the decision already
  taken stands (it updates the profile and segments, and starts its own timers, nothing more).
- A deadline that had already been released when the event that set it arrived (a cart
  abandoned an hour ago, flushed now) is recorded as suppressed with reason ``late_event``:
  the moment is gone, and a message now would contradict what the log already holds.

Because release compares a deadline with arrival times stored in the log, the same log gives
the same decisions live, after an outage, on replay and in a backtest. Live, a deadline is
released only once the clock has passed it by ``COMMIT_GRACE_MS`` too, so an event received
just before the release but still being committed is not overtaken.

The trade-off is speed: a deadline's message goes out ``lateness`` after the deadline. The
workspace default is ``DEFAULT_LATENESS_MS``; a tier A flow that must not wait sets
``lateness: 0s``.
"""

from __future__ import annotations

from typing import Final

DEFAULT_LATENESS_MS: Final = 5 * 60_000
MAX_LATENESS_MS: Final = 86_400_000
COMMIT_GRACE_MS: Final = 2_000  # ingest to commit, under load, with room to spare


def release(due_ms: int, lateness_ms: int) -> int:
    """When a deadline due at ``due_ms`` is acted on."""
    return due_ms + lateness_ms


def counts(arrival_ms: int, release_ms: int) -> bool:
    """Whether an event that arrived at ``arrival_ms`` is seen by a deadline released at
    ``release_ms``: events arriving by the release count, later ones do not."""
    return arrival_ms <= release_ms


def is_late(release_ms: int, set_at_arrival_ms: int) -> bool:
    """A deadline set by an event that arrived after the deadline's release."""
    return not counts(set_at_arrival_ms, release_ms)
