"""The webhook channel on its own, against a real receiver on 127.0.0.1: what each kind of
provider failure becomes (the dispatcher's retry and dead-letter rules act on these)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from momently.channels.base import Failed, Outgoing, Sent
from momently.channels.webhook import WebhookChannel
from momently.domain.message import Rendered
from momently.domain.profile import Profile
from tests.webhook_receiver import SECRET, Receiver

OUT = Outgoing(
    key="acme:tip:p1:e7",
    delivery_id=1,
    workspace_id="acme",
    flow_id="tip",
    flow_version=1,
    occurrence="e7",
    profile=Profile(person_id="p1", user_id="ada"),
    message=Rendered(variant="short", title="Hi", body="Body"),
    trigger=None,
)


@pytest.fixture
def channel() -> Iterator[WebhookChannel]:
    ch = WebhookChannel("unused", SECRET, timeout=0.3, allow_private=True)
    yield ch
    ch.close()


def test_a_2xx_is_sent_with_the_provider_request_id(channel: WebhookChannel, receiver: Receiver) -> None:
    assert channel.send(OUT, receiver.url) == Sent(provider_id="req-1")
    assert channel.send(OUT, receiver.url) == Sent(provider_id="req-2")  # the kept-alive connection
    assert receiver.ids == [OUT.key, OUT.key]  # signatures verified by the receiver


@pytest.mark.parametrize(
    ("status", "retryable"), [(500, True), (503, True), (429, True), (400, False), (302, False)]
)
def test_statuses(channel: WebhookChannel, receiver: Receiver, status: int, retryable: bool) -> None:
    """Redirects are not followed: a 302 is a failure like any other non-2xx."""
    receiver.script = [status]
    result = channel.send(OUT, receiver.url)
    assert isinstance(result, Failed)
    assert (result.reason, result.retryable) == (f"http_{status}", retryable)
    if status == 429:
        assert result.retry_after_ms == 30_000


def test_a_slow_receiver_is_a_retryable_timeout(channel: WebhookChannel, receiver: Receiver) -> None:
    receiver.delays = [1.0]
    assert channel.send(OUT, receiver.url) == Failed("timeout", retryable=True)


def test_a_refused_connection_is_retryable(channel: WebhookChannel) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = channel.send(OUT, f"http://127.0.0.1:{port}/hook")
    assert isinstance(result, Failed)
    assert result.retryable
    assert result.reason.startswith("connection_error: ")


def test_loopback_is_refused_unless_allowed(receiver: Receiver) -> None:
    ch = WebhookChannel("unused", SECRET)
    try:
        assert ch.send(OUT, receiver.url) == Failed("address_not_allowed", retryable=False)
        assert receiver.ids == []
    finally:
        ch.close()
