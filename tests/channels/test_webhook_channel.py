"""The webhook channel on its own, against a real receiver on 127.0.0.1: what each kind of
provider failure becomes (the dispatcher's retry and dead-letter rules act on these)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from momently.channels.base import Failed, Outgoing, Sent
from momently.channels.guarded_http import GuardedHttp
from momently.channels.webhook import WebhookChannel
from momently.domain.addresses import AddressPolicy
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
    ch = WebhookChannel("unused", SECRET, http=GuardedHttp(AddressPolicy.of(["127.0.0.0/8"]), timeout=0.3))
    yield ch
    ch.http.close()


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
    ch = WebhookChannel("unused", SECRET, http=GuardedHttp(AddressPolicy()))
    try:
        assert ch.send(OUT, receiver.url) == Failed("address_not_allowed", retryable=False)
        assert receiver.ids == []
    finally:
        ch.http.close()


class RebindingDns:
    """A hostile name server: a public address to the first question, then ``then``."""

    def __init__(self, then: str) -> None:
        self.then = then
        self.questions: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.questions.append(host)
        return ["93.184.216.34"] if len(self.questions) == 1 else [self.then]


def test_a_name_that_rebinds_to_loopback_never_reaches_it(receiver: Receiver) -> None:
    """Given a name that resolves to a public address when checked and to 127.0.0.1 when
    connected to, the request goes to the checked address (or nowhere), never to 127.0.0.1."""
    dns = RebindingDns(then="127.0.0.1")
    http = GuardedHttp(AddressPolicy(), timeout=0.3, resolver=dns)
    ch = WebhookChannel("unused", SECRET, http=http)
    try:
        result = ch.send(OUT, receiver.url.replace("127.0.0.1", "hooks.rebind.test"))
        assert isinstance(result, Failed)  # the public address does not answer us
        assert dns.questions == ["hooks.rebind.test"]  # resolved once
        assert receiver.ids == []
        # the next send asks again, gets the private answer, and is refused before connecting
        assert ch.send(OUT, receiver.url.replace("127.0.0.1", "hooks.rebind.test")) == Failed(
            "address_not_allowed", retryable=False
        )
        assert receiver.ids == []
    finally:
        http.close()


def test_the_checked_address_is_used_with_the_name_kept_in_host(receiver: Receiver) -> None:
    port = receiver.url.split(":")[2].split("/")[0]
    http = GuardedHttp(AddressPolicy.of(["127.0.0.0/8"]), resolver=lambda host, port: ["127.0.0.1"])
    ch = WebhookChannel("unused", SECRET, http=http)
    try:
        assert isinstance(ch.send(OUT, f"http://hooks.example.test:{port}/hooks"), Sent)
        assert receiver.hosts == [f"hooks.example.test:{port}"]
    finally:
        http.close()


@pytest.mark.parametrize(
    "answer", [["100.64.0.7"], ["169.254.169.254"], ["10.1.2.3"], ["93.184.216.34", "192.168.1.1"]]
)
def test_non_public_answers_are_refused_before_connecting(answer: list[str]) -> None:
    http = GuardedHttp(AddressPolicy(), resolver=lambda host, port: answer)
    ch = WebhookChannel("unused", SECRET, http=http)
    assert ch.send(OUT, "https://hooks.example.test/x") == Failed("address_not_allowed", retryable=False)


def test_the_deprecated_private_switch_opens_loopback_but_never_metadata() -> None:
    from momently.settings import Settings

    networks = Settings(allow_private_webhooks=True).webhook_networks()
    policy = AddressPolicy.of(networks)
    assert policy.refused(["127.0.0.1"]) is None
    assert policy.refused(["169.254.169.254"]) == "address_not_allowed"
    assert AddressPolicy.of(Settings().webhook_networks()).refused(["127.0.0.1"]) == "address_not_allowed"
