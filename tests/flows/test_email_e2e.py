"""The email channel against a real SMTP server (aiosmtpd) on 127.0.0.1: headers, multipart
bodies, RFC 8058 one-click unsubscribe revoking consent, retries on 4xx, fallback on 5xx."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller

from tests.conftest import free_port
from tests.flows.conftest import FlowEnv, make_env
from tests.flows.test_dispatch_e2e import dispatch, log_of


class Mailbox:
    """An SMTP server that keeps what it accepts; ``script`` holds replies to give to the next
    DATA commands (then 250), ``refuse`` recipients it answers 550 for."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.script: list[str] = []
        self.refuse: set[str] = set()
        self.controller = Controller(self, hostname="127.0.0.1", port=free_port())
        self.controller.start()
        # no TLS here: the test server is opted out explicitly (smtp:// would require STARTTLS)
        self.url = f"smtp+insecure://127.0.0.1:{self.controller.port}"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address in self.refuse:
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.script:
            return self.script.pop(0)
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        self.messages.append(msg)
        return "250 Message accepted"

    def close(self) -> None:
        self.controller.stop()


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    m = Mailbox()
    yield m
    m.close()


@pytest.fixture
def env(database_url: str, mailbox: Mailbox, tmp_path: Path) -> Iterator[FlowEnv]:
    with make_env(
        database_url,
        smtp_url=mailbox.url,
        email_from="Acme <hello@acme.example>",
        console_path=str(tmp_path / "console.jsonl"),
        dispatch_max_attempts=2,
        dispatch_backoff_seconds=10,
    ) as e:
        yield e


NUDGE = """
id: nudge
trigger: {event: Cart Viewed}
reentry: every_time
channels: %s
message:
  variants:
    - id: main
      subject: "{{ traits.name | default: 'Hi' }}, your cart misses you"
      body: "You left {{ event.properties.item }} in your cart.\\n\\nIt is still there."
      action: {label: Finish checkout, url: "https://shop.example/cart"}
"""


def viewed(env: FlowEnv, user: str = "ada", **traits: Any) -> None:
    env.send(
        {"type": "identify", "userId": user, "traits": {"email": f"{user}@example.com", **traits}},
        {"type": "track", "userId": user, "event": "Cart Viewed", "properties": {"item": "a teapot"}},
    )


def test_email_arrives_multipart_with_one_click_unsubscribe_that_revokes_consent(
    env: FlowEnv, mailbox: Mailbox
) -> None:
    env.flow("nudge", NUDGE % "[email]")
    viewed(env, name="Ada", email_opt_in=True)
    dispatch(env)
    [msg] = mailbox.messages
    assert msg["From"] == "Acme <hello@acme.example>"
    assert msg["To"] == "ada@example.com"
    assert msg["Subject"] == "Ada, your cart misses you"
    assert msg["Message-ID"].endswith("@acme.example>")
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsubscribe = msg["List-Unsubscribe"].strip("<>")
    assert unsubscribe.startswith(f"{env.url}/u/acme/")
    assert msg.get_content_type() == "multipart/alternative"
    text = msg.get_body(("plain",))
    page = msg.get_body(("html",))
    assert text is not None
    assert page is not None
    text_body, html_body = text.get_content(), page.get_content()
    assert "You left a teapot in your cart." in text_body
    assert "Finish checkout: http" in text_body
    assert ">Finish checkout</a>" in html_body
    assert f"Unsubscribe: {unsubscribe}" in text_body
    [sent] = log_of(env, "Message Sent")
    assert sent["provider_id"] == msg["Message-ID"]

    # a link scanner's GET changes nothing; the mail client's one-click POST unsubscribes
    assert '<form method="post">' in httpx.get(unsubscribe).text
    with env.admin() as c:
        assert len(c.get("/v1/consent", params={"userId": "ada"}).json()["records"]) == 1
    for _ in range(2):  # twice: recorded once
        r = httpx.post(unsubscribe, data={"List-Unsubscribe": "One-Click"})
        assert r.status_code == 200
        assert "You are unsubscribed" in r.text
    env.settle()
    with env.admin() as c:
        got = c.get("/v1/consent", params={"userId": "ada"}).json()
    assert [(r["granted"], r["source"]) for r in got["records"]] == [
        (True, "identify"),
        (False, "unsubscribe_link"),
    ]
    assert got["current"]["email"]["marketing"]["reason"] == "consent_revoked"
    assert log_of(env, "Unsubscribed") == [
        {"channel": "email", "purpose": "marketing", "delivery_key": sent["delivery_key"]}
    ]

    viewed(env)
    dispatch(env)
    assert len(mailbox.messages) == 1
    assert env.services.outbox.list(env.workspace)[0].last_error == "consent_revoked: email/marketing"


def test_a_tampered_unsubscribe_link_is_refused(env: FlowEnv, mailbox: Mailbox) -> None:
    env.flow("nudge", NUDGE % "[email]")
    viewed(env, email_opt_in=True)
    dispatch(env)
    link = mailbox.messages[0]["List-Unsubscribe"].strip("<>")
    assert httpx.post(link[:-3] + "xyz").status_code == 400
    assert httpx.post(link.replace("/u/acme/", "/u/other/")).status_code == 404


def test_transactional_email_needs_no_opt_in_and_has_no_unsubscribe_header(
    env: FlowEnv, mailbox: Mailbox
) -> None:
    env.flow("nudge", (NUDGE % "[email]").replace("id: nudge", "id: nudge\ntier: A"))
    viewed(env)  # no email_opt_in
    dispatch(env)
    [msg] = mailbox.messages
    assert msg["List-Unsubscribe"] is None
    assert "Unsubscribe" not in msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def test_marketing_email_without_opt_in_falls_back_to_the_next_channel(
    env: FlowEnv, mailbox: Mailbox
) -> None:
    env.flow("nudge", NUDGE % "[email, console]")
    viewed(env)
    dispatch(env)
    assert mailbox.messages == []
    [d] = env.services.outbox.list(env.workspace)
    assert (d.status, d.channel) == ("sent", "console")
    [failed] = log_of(env, "Message Failed")
    assert failed["reason"] == "no_consent"
    assert failed["fallback"] == "console"


def test_smtp_4xx_is_retried_and_5xx_falls_back(env: FlowEnv, mailbox: Mailbox) -> None:
    env.flow("nudge", NUDGE % "[email, console]")
    mailbox.script = ["451 4.3.0 try again later"]
    viewed(env, email_opt_in=True)
    dispatch(env)
    [d] = env.services.outbox.list(env.workspace)
    assert (d.status, d.last_error) == ("pending", "smtp_451")
    env.clock.advance(timedelta(seconds=11))
    dispatch(env)
    assert len(mailbox.messages) == 1
    assert env.services.outbox.list(env.workspace)[0].status == "sent"

    mailbox.refuse.add("bob@example.com")
    viewed(env, "bob", email_opt_in=True)
    dispatch(env)
    bob = env.services.outbox.list(env.workspace)[0]
    assert (bob.status, bob.channel) == ("sent", "console")
    assert any(f.get("reason") == "smtp_550_recipient_refused" for f in log_of(env, "Message Failed"))


@pytest.mark.parametrize("require_tls", [True, False])
def test_smtp_without_starttls_is_refused_unless_tls_is_explicitly_not_required(
    database_url: str, mailbox: Mailbox, tmp_path: Path, require_tls: bool
) -> None:
    """Given a server that offers no STARTTLS and an smtp:// URL (with a password, it would go
    out in clear), nothing is sent unless TLS was explicitly not required."""
    plain = mailbox.url.replace("smtp+insecure://", "smtp://ops:s3cret@" if require_tls else "smtp://")
    with make_env(
        database_url,
        smtp_url=plain,
        smtp_require_tls=require_tls,
        email_from="Acme <hello@acme.example>",
        console_path=str(tmp_path / "console.jsonl"),
    ) as env:
        env.flow("nudge", NUDGE % "[email, console]")
        viewed(env, email_opt_in=True)
        dispatch(env)
        [d] = env.services.outbox.list(env.workspace)
        if require_tls:
            assert mailbox.messages == []
            assert (d.status, d.channel) == ("sent", "console")
            assert [f["reason"] for f in log_of(env, "Message Failed")] == ["smtp_tls_required"]
        else:
            assert (d.status, d.channel) == ("sent", "email")
            assert len(mailbox.messages) == 1
