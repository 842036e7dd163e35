"""A Standard Webhooks receiver on 127.0.0.1 for tests that send through the webhook channel,
and the server settings that point the channel at it."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from standardwebhooks import Webhook

from tests.flows.conftest import FlowEnv, make_env
from tests.local_http import LocalServer, QuietHandler

SECRET = "whsec_" + base64.b64encode(b"momently-test-secret-0123456789ab").decode()


class Receiver:
    """A webhook endpoint on 127.0.0.1 that verifies every request's signature and answers
    with the next status of ``script`` (then 200), after the next delay of ``delays`` (then
    after ``delay`` seconds, at once by default). ``arrived`` holds each request's arrival on
    the monotonic clock."""

    def __init__(self) -> None:
        self.script: list[int] = []
        self.delays: list[float] = []
        self.received: list[dict[str, Any]] = []
        self.ids: list[str] = []
        self.hosts: list[str] = []  # the Host header of each request
        self.delay = 0.0
        self.arrived: list[float] = []
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                receiver.arrived.append(time.monotonic())
                body = self.rfile.read(int(self.headers["content-length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                payload = Webhook(SECRET).verify(body, headers)  # raises on a bad signature
                receiver.received.append(payload)
                receiver.ids.append(headers["webhook-id"])
                receiver.hosts.append(headers.get("host", ""))
                if receiver.delays:
                    time.sleep(receiver.delays.pop(0))
                elif receiver.delay:
                    time.sleep(receiver.delay)
                status = receiver.script.pop(0) if receiver.script else 200
                self.send_response(status)
                self.send_header("x-request-id", f"req-{len(receiver.received)}")
                if status == 429:
                    self.send_header("retry-after", "30")
                self.end_headers()

        self.http = LocalServer(Handler)
        self.url = f"http://127.0.0.1:{self.http.port}/hooks"

    def close(self) -> None:
        self.http.close()


@contextmanager
def webhook_env(database_url: str, receiver: Receiver, **overrides: Any) -> Iterator[FlowEnv]:
    """A live server on virtual time whose webhook channel posts to ``receiver``."""
    with make_env(
        database_url,
        webhook_url=receiver.url,
        webhook_secret=SECRET,
        webhook_allow_networks=["127.0.0.0/8"],
        **overrides,
    ) as env:
        yield env
