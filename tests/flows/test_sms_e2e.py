"""The SMS channel against a local Twilio-compatible HTTP API on 127.0.0.1, and the provider's
callbacks to us signed with the official ``twilio`` library's RequestValidator: delivery
status, STOP / START / HELP replies, and "1" recording the flow's goal."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from twilio.request_validator import RequestValidator

from momently.domain.definitions import Known, load, validate
from momently.domain.lint import sms_segments
from tests.flows.conftest import FlowEnv, make_env
from tests.flows.test_dispatch_e2e import dispatch, log_of
from tests.local_http import LocalServer, QuietHandler

SID, TOKEN = "AC" + "1" * 32, "test-auth-token"


class FakeProvider:
    """``POST /2010-04-01/Accounts/{sid}/Messages.json``: checks Basic auth, keeps the form,
    answers the next of ``script`` (status, JSON) or 201 with a fresh message sid."""

    def __init__(self) -> None:
        self.sent: list[dict[str, str]] = []
        self.keys: list[str | None] = []
        self.script: list[tuple[int, dict[str, Any]]] = []
        provider = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                expected = "Basic " + base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
                body = self.rfile.read(int(self.headers["content-length"]))
                if (
                    self.path != f"/2010-04-01/Accounts/{SID}/Messages.json"
                    or self.headers["authorization"] != expected
                ):
                    status, reply = 401, {"code": 20003, "message": "Authenticate"}
                elif provider.script:
                    status, reply = provider.script.pop(0)
                else:
                    form = dict(parse_qsl(body.decode()))
                    provider.sent.append(form)
                    provider.keys.append(self.headers.get("idempotency-key"))
                    status, reply = 201, {"sid": f"SM{len(provider.sent):032d}", "status": "queued"}
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.http = LocalServer(Handler)
        self.url = f"http://127.0.0.1:{self.http.port}"

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def provider() -> Iterator[FakeProvider]:
    p = FakeProvider()
    yield p
    p.close()


def sms_settings(provider: FakeProvider, tmp_path: Path) -> dict[str, Any]:
    return {
        "sms_account_sid": SID,
        "sms_auth_token": TOKEN,
        "sms_from": "+15550000000",
        "sms_base_url": provider.url,
        "console_path": str(tmp_path / "console.jsonl"),
        "dispatch_max_attempts": 2,
        "dispatch_backoff_seconds": 10,
    }


@pytest.fixture
def env(database_url: str, provider: FakeProvider, tmp_path: Path) -> Iterator[FlowEnv]:
    with make_env(database_url, **sms_settings(provider, tmp_path)) as e:
        yield e


ETA = """
id: eta
tier: A
trigger: {event: Parcel At Hub}
reentry: every_time
channels: [sms, console]
goal: {event: Delivery Confirmed, within: 1d}
message:
  variants:
    - id: main
      body: "Your parcel arrives tomorrow 9-11. Reply 1 to confirm."
      action: {label: Confirm, url: "https://shop.example/confirm", event: Delivery Confirmed}
"""


def at_hub(env: FlowEnv, user: str = "ada", phone: str = "+1 (555) 010-4477") -> None:
    env.send(
        {"type": "identify", "userId": user, "traits": {"phone": phone}},
        {"type": "track", "userId": user, "event": "Parcel At Hub"},
    )


def callback(env: FlowEnv, path: str, params: dict[str, str], *, sign_with: str = TOKEN) -> httpx.Response:
    url = f"{env.url}{path}"
    signature = RequestValidator(sign_with).compute_signature(url, params)
    return httpx.post(url, data=params, headers={"X-Twilio-Signature": signature})


def test_sms_is_sent_and_its_signed_status_callback_is_recorded(env: FlowEnv, provider: FakeProvider) -> None:
    env.flow("eta", ETA)
    at_hub(env)
    dispatch(env)
    [form] = provider.sent
    assert form["To"] == "+15550104477"  # normalized from the trait
    assert form["From"] == "+15550000000"
    assert form["Body"].startswith("Your parcel arrives tomorrow 9-11. Reply 1 to confirm.\nConfirm: ")
    assert form["StatusCallback"] == f"{env.url}/v1/sms/acme/status"
    [d] = env.services.outbox.list(env.workspace)
    assert provider.keys == [f"acme:{d.key}"]
    assert (d.status, d.provider_id) == ("sent", "SM" + "1".zfill(32))

    params = {"MessageSid": d.provider_id or "", "MessageStatus": "delivered", "AccountSid": SID}
    assert callback(env, "/v1/sms/acme/status", params).status_code == 204
    assert callback(env, "/v1/sms/acme/status", params).status_code == 204  # a provider retry
    forged = callback(env, "/v1/sms/acme/status", {**params, "MessageStatus": "failed"}, sign_with="wrong")
    assert forged.status_code == 403
    env.settle()
    [delivered] = log_of(env, "Message Delivered")
    assert delivered["provider_id"] == d.provider_id
    assert delivered["delivery_key"] == d.key
    assert log_of(env, "Message Failed") == []


def test_reply_1_records_the_goal_once_and_late_replies_are_refused(
    env: FlowEnv, provider: FakeProvider
) -> None:
    env.flow("eta", ETA)
    at_hub(env)
    dispatch(env)
    reply = {"From": "+15550104477", "To": "+15550000000", "Body": " 1 ", "MessageSid": "SMin1"}
    r = callback(env, "/v1/sms/acme/inbound", reply)
    assert r.status_code == 200
    assert "<Message>Thanks, done.</Message>" in r.text
    callback(env, "/v1/sms/acme/inbound", {**reply, "MessageSid": "SMin2"})  # said twice: counted once
    env.settle()
    [goal] = log_of(env, "Delivery Confirmed")
    assert goal["via"] == "sms_reply"
    assert goal["flow_id"] == "eta"
    assert [p["keyword"] for p in log_of(env, "Message Replied")] == ["action", "action"]
    env.advance(days=2)
    late = callback(env, "/v1/sms/acme/inbound", {**reply, "MessageSid": "SMin3"})
    assert "expired" in late.text


def test_stop_revokes_sms_even_for_transactional_and_start_restores_it(
    env: FlowEnv, provider: FakeProvider
) -> None:
    env.flow("eta", ETA)
    at_hub(env)
    dispatch(env)
    stop = {"From": "+15550104477", "To": "+15550000000", "Body": "Stop", "MessageSid": "SMstop"}
    r = callback(env, "/v1/sms/acme/inbound", stop)
    assert "unsubscribed" in r.text
    at_hub(env)
    dispatch(env)
    assert len(provider.sent) == 1  # no second SMS: the fallback channel took it
    latest = env.services.outbox.list(env.workspace)[0]
    assert (latest.status, latest.channel) == ("sent", "console")
    [fell_back] = [f for f in log_of(env, "Message Failed") if f.get("fallback")]
    assert fell_back["reason"] == "stop_contact"

    help_reply = callback(env, "/v1/sms/acme/inbound", {**stop, "Body": "HELP", "MessageSid": "SMhelp"})
    assert "Reply STOP to unsubscribe" in help_reply.text
    callback(env, "/v1/sms/acme/inbound", {**stop, "Body": "START", "MessageSid": "SMstart"})
    env.advance(seconds=1)
    at_hub(env)
    dispatch(env)
    assert len(provider.sent) == 2


def test_stop_from_an_unknown_number_holds_once_the_number_is_known(
    env: FlowEnv, provider: FakeProvider
) -> None:
    env.flow("eta", ETA)
    stop = {"From": "+15557778888", "To": "+15550000000", "Body": "UNSUBSCRIBE", "MessageSid": "SMx"}
    assert callback(env, "/v1/sms/acme/inbound", stop).status_code == 200
    at_hub(env, "bob", "+1 555 777 8888")
    dispatch(env)
    assert provider.sent == []


def test_provider_errors_retry_then_permanent_codes_fall_back(env: FlowEnv, provider: FakeProvider) -> None:
    env.flow("eta", ETA)
    provider.script = [(503, {"message": "busy"})]
    at_hub(env)
    dispatch(env)
    assert env.services.outbox.list(env.workspace)[0].last_error == "http_503"
    env.clock.advance(timedelta(seconds=11))
    dispatch(env)
    assert len(provider.sent) == 1
    provider.script = [(400, {"code": 21211, "message": "The 'To' number is not a valid phone number."})]
    at_hub(env, "cy", "+1555")
    dispatch(env)
    cy = env.services.outbox.list(env.workspace)[0]
    assert (cy.status, cy.channel) == ("sent", "console")
    assert any(f.get("reason") == "sms_21211" for f in log_of(env, "Message Failed"))


def test_a_signature_over_the_default_port_is_accepted(
    database_url: str, provider: FakeProvider, tmp_path: Path
) -> None:
    settings = sms_settings(provider, tmp_path)
    with make_env(database_url, public_url="https://sms.example.com", **settings) as env:
        params = {"MessageSid": "SMunknown", "MessageStatus": "delivered", "AccountSid": SID}
        for signed in ("https://sms.example.com:443", "https://sms.example.com"):
            signature = RequestValidator(TOKEN).compute_signature(f"{signed}/v1/sms/acme/status", params)
            r = httpx.post(
                f"{env.url}/v1/sms/acme/status", data=params, headers={"X-Twilio-Signature": signature}
            )
            assert r.status_code == 204, signed
        other = RequestValidator(TOKEN).compute_signature(
            "https://sms.example.com:8443/v1/sms/acme/status", params
        )
        r = httpx.post(f"{env.url}/v1/sms/acme/status", data=params, headers={"X-Twilio-Signature": other})
        assert r.status_code == 403
        # a signature header that is not even ASCII is refused like any other wrong one
        latin = {"X-Twilio-Signature": "é".encode("latin-1")}
        r = httpx.post(f"{env.url}/v1/sms/acme/status", data=params, headers=latin)
        assert r.status_code == 403


PROMO = """
id: promo
trigger: {event: Cart Viewed}
reentry: every_time
channels: [sms]
message:
  body: "Your cart is waiting."
"""


def test_a_handset_stop_wins_over_the_apps_opt_in_trait_until_start(
    env: FlowEnv, provider: FakeProvider
) -> None:
    env.flow("promo", PROMO)

    def viewed() -> None:  # the app sends its traits with every identify, as SDKs do
        env.send(
            {"type": "identify", "userId": "ada", "traits": {"phone": "+15550104477", "sms_opt_in": True}},
            {"type": "track", "userId": "ada", "event": "Cart Viewed"},
        )
        dispatch(env)
        env.advance(seconds=1)

    viewed()
    assert len(provider.sent) == 1
    reply = {"From": "+15550104477", "To": "+15550000000", "Body": "STOP", "MessageSid": "SMstop"}
    callback(env, "/v1/sms/acme/inbound", reply)
    env.advance(seconds=1)
    viewed()
    viewed()
    assert len(provider.sent) == 1  # the trait did not lift the STOP
    assert [s["reason"] for s in log_of(env, "Message Suppressed")] == ["stop_contact", "stop_contact"]
    callback(env, "/v1/sms/acme/inbound", {**reply, "Body": "START", "MessageSid": "SMstart"})
    env.advance(seconds=1)
    viewed()
    assert len(provider.sent) == 2


def test_a_body_the_lint_accepts_goes_out_in_at_most_three_segments(
    env: FlowEnv, provider: FakeProvider
) -> None:
    def flow(length: int) -> str:
        return ETA.replace("Your parcel arrives tomorrow 9-11. Reply 1 to confirm.", "a" * length)

    known = Known(events=frozenset({"Parcel At Hub", "Delivery Confirmed"}), link_base=f"{env.url}/a/acme")
    longest = max(n for n in range(100, 459) if not validate(load(flow(n), "f.yaml")[0], known))
    assert env.put("flow", "eta", flow(longest + 1)).status_code == 400  # the API lints the same way
    env.flow("eta", flow(longest))
    at_hub(env)
    dispatch(env)
    [form] = provider.sent
    assert form["Body"].startswith("a" * longest + "\nConfirm: " + env.url + "/a/acme/")
    assert sms_segments(form["Body"])[0] <= 3


def test_a_stop_sent_before_the_number_was_known_also_wins_over_the_trait(
    env: FlowEnv, provider: FakeProvider
) -> None:
    env.flow("promo", PROMO)
    stop = {"From": "+15550104477", "To": "+15550000000", "Body": "STOP", "MessageSid": "SMstop"}
    callback(env, "/v1/sms/acme/inbound", stop)  # nobody has this number yet
    env.advance(seconds=1)
    env.send({"type": "identify", "userId": "ada", "traits": {"phone": "+15550104477"}})
    env.advance(seconds=1)
    env.send(
        {"type": "identify", "userId": "ada", "traits": {"phone": "+15550104477", "sms_opt_in": True}},
        {"type": "track", "userId": "ada", "event": "Cart Viewed"},
    )
    dispatch(env)
    assert provider.sent == []
    assert [s["reason"] for s in log_of(env, "Message Suppressed")] == ["stop_contact"]
