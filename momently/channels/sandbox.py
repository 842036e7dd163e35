"""The sandbox channel: stands in for a provider channel (email, SMS, push, webhook) where
nothing may leave the machine, as in flow tests (``momently flows test``). It reaches the
same people the real channel would (an email address, a phone number, a push subscription),
so a flow's fallback plays out as in production, and keeps each message it is handed."""

from __future__ import annotations

import threading
from collections.abc import Callable

from momently.channels.base import Outgoing, Result, Sent
from momently.domain.profile import Profile

Addresser = Callable[[str, Profile], str | None]


class SandboxChannel:
    def __init__(self, name: str, address: Addresser) -> None:
        self.name = name
        self._address = address
        self._lock = threading.Lock()
        self.sent: list[tuple[str, Outgoing]] = []  # (address, message), in order

    def address(self, workspace_id: str, profile: Profile) -> str | None:
        return self._address(workspace_id, profile)

    def send(self, outgoing: Outgoing, address: str) -> Result:
        with self._lock:
            self.sent.append((address, outgoing))
            return Sent(provider_id=f"sandbox-{self.name}-{len(self.sent)}")
