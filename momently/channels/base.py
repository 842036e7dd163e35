"""The one interface every channel implements, and what a send can come back with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from momently.domain.message import Rendered
from momently.domain.profile import Profile


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One delivery attempt, as a channel sees it. ``key`` is stable across retries: channels
    hand it to the provider as the idempotency key, so a retry after a crash is not a second
    message."""

    key: str
    delivery_id: int
    workspace_id: str
    flow_id: str
    flow_version: int
    occurrence: str
    profile: Profile
    message: Rendered
    trigger: dict[str, Any] | None
    # signed one-click link that revokes this purpose on this channel (marketing messages)
    unsubscribe_url: str | None = None
    # when the message stops being worth showing (``message.expires_in``; in-app cards)
    expires_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Sent:
    provider_id: str | None = None


@dataclass(frozen=True, slots=True)
class Failed:
    """``retryable``: try the same channel again later (timeouts, 5xx, 429); otherwise move on
    to the next channel of the plan."""

    reason: str
    retryable: bool
    retry_after_ms: int | None = None  # the provider said when (HTTP 429/503 Retry-After)


def retry_after_ms(value: str | None) -> int | None:
    """An HTTP ``Retry-After`` in seconds (the HTTP-date form is rare from APIs; ignored)."""
    if value is None or not value.strip().isdigit():
        return None
    return int(value.strip()) * 1000


Result = Sent | Failed


class Channel(Protocol):
    name: str

    def address(self, workspace_id: str, profile: Profile) -> str | None:
        """Where this person is reached on this channel, or None when they cannot be."""
        ...

    def send(self, outgoing: Outgoing, address: str) -> Result: ...
