"""What each key may store about a person (domain.trust), as a table."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from momently.domain.credentials import KeyKind
from momently.domain.event import BatchDefaults, Event, normalize
from momently.domain.trust import Sender, screen, token_matches, user_token, writer_key

NOW = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
PUBLIC, SERVER = Sender(7, KeyKind.WRITE), Sender(9, KeyKind.SERVER)
CONSENT = ("email_opt_in", "sms_opt_in")


def event(raw: dict[str, Any]) -> Event:
    ev = normalize(raw, default_type=None, defaults=BatchDefaults(), received_at=NOW)
    assert isinstance(ev, Event)
    return ev


IDENTIFY = {
    "type": "identify",
    "userId": "ada",
    "traits": {"email": "e@x.io", "phone": "+1", "email_opt_in": True, "name": "Ada"},
    "context": {"userToken": "t", "momently": {"key": 1, "verified": True}, "device": {"token": "p"}},
}


@pytest.mark.parametrize(
    ("sender", "verified", "traits", "ignored"),
    [
        (PUBLIC, False, ["name"], ["context.device.token", "email", "email_opt_in", "phone"]),
        (PUBLIC, True, ["email", "email_opt_in", "name", "phone"], None),
        (SERVER, True, ["email", "email_opt_in", "name", "phone"], None),
    ],
)
def test_identify_keeps_what_the_sender_may_say(
    sender: Sender, verified: bool, traits: list[str], ignored: list[str] | None
) -> None:
    out = screen(event(IDENTIFY), sender, verified=verified, consent_traits=CONSENT)
    assert sorted(out.body["traits"]) == traits
    stamp = out.body["context"]["momently"]
    assert stamp["key"] == sender.key_id  # never the client's own stamp
    assert stamp["verified"] is verified
    assert sorted(stamp.get("ignored", [])) == sorted(ignored or [])
    assert "userToken" not in out.body["context"]
    assert orjson.loads(out.payload) == out.body  # what is stored is what was screened
    assert writer_key(out.body) == sender.key_id


def test_plain_track_from_a_server_key_is_left_alone() -> None:
    ev = event({"type": "track", "userId": "ada", "event": "Viewed", "context": {"device": {"token": "p"}}})
    assert screen(ev, SERVER, verified=True, consent_traits=CONSENT) is ev


def test_public_track_loses_only_a_push_token() -> None:
    ev = event({"type": "track", "userId": "ada", "event": "Viewed", "context": {"device": {"token": "p"}}})
    out = screen(ev, PUBLIC, verified=False, consent_traits=CONSENT)
    assert out.body["context"]["device"] == {}
    assert out.body["event"] == "Viewed"
    assert out.body["context"]["momently"]["ignored"] == ["context.device.token"]


def test_user_token_is_an_hmac_of_the_user_id() -> None:
    token = user_token("ids_secret", "ada")
    # what the documented backend snippet computes
    assert token == hmac.new(b"ids_secret", b"ada", hashlib.sha256).hexdigest()
    assert token_matches("ids_secret", "ada", token)
    assert not token_matches("ids_secret", "bob", token)
    assert not token_matches("ids_other", "ada", token)
    assert not token_matches("ids_secret", "ada", None)
