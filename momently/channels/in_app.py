"""The in-app channel: a card in the person's inbox, which the embeddable widget
(``/widget.js``) shows over a live server-sent-events stream. Everyone is reachable: the
card waits until the person next opens the app, or until it expires."""

from __future__ import annotations

from momently.channels.base import Outgoing, Result, Sent
from momently.clock import Clock
from momently.domain.profile import Profile
from momently.domain.timestamps import to_millis
from momently.store.inbox import Inbox

DEFAULT_EXPIRY_MS = 7 * 86_400_000


class InAppChannel:
    name = "in_app"

    def __init__(self, inbox: Inbox, clock: Clock) -> None:
        self.inbox = inbox
        self.clock = clock

    def address(self, workspace_id: str, profile: Profile) -> str | None:
        return profile.person_id

    def send(self, outgoing: Outgoing, address: str) -> Result:
        now = to_millis(self.clock.now())
        card_id = self.inbox.add(
            outgoing.workspace_id,
            address,
            delivery_key=outgoing.key,
            flow_id=outgoing.flow_id,
            content=outgoing.message.as_json(),
            now_ms=now,
            expires_ms=outgoing.expires_ms or now + DEFAULT_EXPIRY_MS,
        )
        return Sent(provider_id=f"card:{card_id}")
