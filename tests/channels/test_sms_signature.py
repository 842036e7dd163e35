"""The SMS callback signature, pinned against the official ``twilio`` library's validator:
what it signs, we accept, with or without the URL's default port."""

from __future__ import annotations

import pytest
from twilio.request_validator import RequestValidator

from momently.channels.sms import valid_signature

TOKEN = "test-auth-token"
PARAMS = {"MessageSid": "SM1", "MessageStatus": "delivered", "Body": "a b&c"}

CASES = [
    # (URL the provider signed, URL we know ourselves, accepted)
    ("https://sms.example.com/v1/sms/acme/status", "https://sms.example.com/v1/sms/acme/status", True),
    ("https://sms.example.com:443/v1/sms/acme/status", "https://sms.example.com/v1/sms/acme/status", True),
    ("https://sms.example.com/v1/sms/acme/status", "https://sms.example.com:443/v1/sms/acme/status", True),
    (
        "http://sms.example.com:80/v1/sms/acme/inbound?x=1",
        "http://sms.example.com/v1/sms/acme/inbound?x=1",
        True,
    ),
    ("https://sms.example.com:8443/v1/sms/acme/status", "https://sms.example.com/v1/sms/acme/status", False),
    ("https://sms.example.com:80/v1/sms/acme/status", "https://sms.example.com/v1/sms/acme/status", False),
    ("https://other.example.com/v1/sms/acme/status", "https://sms.example.com/v1/sms/acme/status", False),
]


@pytest.mark.parametrize(("signed", "ours", "accepted"), CASES)
def test_signatures_with_and_without_the_default_port(signed: str, ours: str, accepted: bool) -> None:
    given = RequestValidator(TOKEN).compute_signature(signed, PARAMS)
    assert RequestValidator(TOKEN).validate(signed, PARAMS, given)
    assert valid_signature(TOKEN, ours, PARAMS, given) is accepted


def test_a_wrong_token_or_no_signature_is_refused() -> None:
    url = "https://sms.example.com/v1/sms/acme/status"
    assert not valid_signature(TOKEN, url, PARAMS, RequestValidator("other").compute_signature(url, PARAMS))
    assert not valid_signature(TOKEN, url, PARAMS, None)
