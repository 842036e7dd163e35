"""The email channel's message and SMTP settings, without a server."""

from __future__ import annotations

import pytest

from momently.channels.base import Outgoing
from momently.channels.email import SmtpConfigError, build_message, parse_smtp_url
from momently.domain.message import Rendered
from momently.domain.profile import Profile

OUT = Outgoing(
    key="acme:nudge:p1:e7",
    delivery_id=1,
    workspace_id="acme",
    flow_id="nudge",
    flow_version=1,
    occurrence="e7",
    profile=Profile(person_id="p1", user_id="ada"),
    message=Rendered(variant="main", title="Hi", body="Body"),
    trigger=None,
)


def test_message_ids_are_unique_at_the_from_domain() -> None:
    """The same delivery (same key, as on every other install) never gets the same Message-ID;
    the stable key travels in its own header."""
    first = build_message(OUT, "ada@example.com", "Acme <hello@acme.example>")
    second = build_message(OUT, "ada@example.com", "Acme <hello@acme.example>")
    assert first["Message-ID"] != second["Message-ID"]
    for msg in (first, second):
        assert msg["Message-ID"].startswith("<")
        assert msg["Message-ID"].endswith("@acme.example>")
        assert msg["X-Momently-Delivery"] == OUT.key


@pytest.mark.parametrize(
    ("url", "require_tls", "use_tls", "start_tls"),
    [
        ("smtp://u:p@mail.example:587", True, False, True),  # STARTTLS or nothing
        ("smtp://u:p@mail.example:587", False, False, None),  # upgrade when offered
        ("smtps://u:p@mail.example", True, True, False),
        ("smtp+insecure://127.0.0.1:2525", True, False, None),
    ],
)
def test_tls_is_required_unless_opted_out(
    url: str, require_tls: bool, use_tls: bool, start_tls: bool
) -> None:
    got = parse_smtp_url(url, require_tls=require_tls)
    assert (got["use_tls"], got["start_tls"]) == (use_tls, start_tls)


def test_a_bad_url_is_refused_without_echoing_its_password() -> None:
    with pytest.raises(SmtpConfigError) as info:
        parse_smtp_url("http://user:hunter2@mail.example")
    assert "hunter2" not in str(info.value)
