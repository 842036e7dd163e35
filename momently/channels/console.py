"""The console channel: each message as one JSON line on standard output or appended to a
file. For local runs and the demo; every person is reachable."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import orjson

from momently.channels.base import Outgoing, Result, Sent
from momently.domain.profile import Profile


class ConsoleChannel:
    name = "console"

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()

    def address(self, workspace_id: str, profile: Profile) -> str | None:
        return profile.user_id or profile.person_id

    def send(self, outgoing: Outgoing, address: str) -> Result:
        line = orjson.dumps(
            {
                "deliveryKey": outgoing.key,
                "to": address,
                "flow": outgoing.flow_id,
                **outgoing.message.as_json(),
            }
        )
        with self._lock:
            if self.path is None:
                sys.stdout.buffer.write(line + b"\n")
                sys.stdout.flush()
            else:
                with self.path.open("ab") as f:
                    f.write(line + b"\n")
        return Sent(provider_id=None)
