"""Channels per workspace, end to end: two workspaces with their own SMS accounts and numbers
(one Twilio-compatible provider on 127.0.0.1 that checks each account's credentials) and their
own webhook destinations, configured through the admin API and the CLI. Each message leaves
through its own workspace's account and URL, a STOP to a number is recorded in the workspace
that number belongs to, and no secret is ever shown or stored in clear."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from momently.cli import main
from momently.domain.credentials import KeyKind
from momently.store.channel_config import new_key
from momently.store.schema import channel_configs
from tests.flows.conftest import FlowEnv, make_env
from tests.flows.test_dispatch_e2e import dispatch
from tests.local_http import LocalServer, QuietHandler
from tests.webhook_receiver import SECRET, Receiver

ACCOUNTS = {"AC" + "a" * 32: "token-of-acme-0001", "AC" + "b" * 32: "token-of-beta-0002"}
SID_A, SID_B = ACCOUNTS


class Provider:
    """Accepts a message for any of ``ACCOUNTS`` with that account's own credentials."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, str]]] = []
        provider = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                sid = self.path.split("/")[3]
                expected = "Basic " + base64.b64encode(f"{sid}:{ACCOUNTS.get(sid)}".encode()).decode()
                if sid not in ACCOUNTS or self.headers["authorization"] != expected:
                    status, reply = 401, {"code": 20003}
                else:
                    provider.sent.append((sid, dict(parse_qsl(body.decode()))))
                    status, reply = 201, {"sid": f"SM{len(provider.sent):032d}"}
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.http = LocalServer(Handler)
        self.url = f"http://127.0.0.1:{self.http.port}"


@pytest.fixture
def provider() -> Iterator[Provider]:
    p = Provider()
    yield p
    p.http.close()


@pytest.fixture
def receivers() -> Iterator[tuple[Receiver, Receiver]]:
    a, b = Receiver(), Receiver()
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> Iterator[FlowEnv]:
    with make_env(
        database_url,
        secrets_key=new_key(),
        webhook_allow_networks=["127.0.0.0/8"],
        console_path=str(tmp_path / "console.jsonl"),
    ) as e:
        yield e


def second_workspace(env: FlowEnv) -> FlowEnv:
    s, now = env.services, env.clock.now()
    ws = s.workspaces.create("beta", name="Beta", now=now)
    write = s.workspaces.issue_key(ws.id, KeyKind.SERVER, label="test", now=now)
    admin = s.workspaces.issue_key(ws.id, KeyKind.ADMIN, label="test", now=now)
    return FlowEnv(env.url, s, env.clock, ws.id, write.secret, admin.secret)


FLOWS = {
    "eta": """
id: eta
tier: A
trigger: {event: Parcel At Hub}
channels: [sms]
message: {body: "Your parcel arrives tomorrow."}
""",
    "crm": """
id: crm
tier: A
trigger: {event: Parcel At Hub}
channels: [webhook]
webhook: {destination: crm}
message: {body: "At the hub"}
""",
}


def configure(env: FlowEnv, channel: str, body: dict[str, Any], **params: str) -> httpx.Response:
    with env.admin() as c:
        return c.put(f"/v1/channels/{channel}", json=body, params=params)


def signed(env: FlowEnv, path: str, params: dict[str, str], token: str) -> httpx.Response:
    url = f"{env.url}{path}"
    signature = RequestValidator(token).compute_signature(url, params)
    return httpx.post(url, data=params, headers={"X-Twilio-Signature": signature})


def test_each_workspace_sends_through_its_own_account_and_destination_and_stop_is_routed_by_number(
    env: FlowEnv, provider: Provider, receivers: tuple[Receiver, Receiver]
) -> None:
    acme, beta = env, second_workspace(env)
    for ws, sid, number, receiver in (
        (acme, SID_A, "+15550000001", receivers[0]),
        (beta, SID_B, "+15550000002", receivers[1]),
    ):
        sms = {"account_sid": sid, "auth_token": ACCOUNTS[sid], "from": number, "base_url": provider.url}
        r = configure(ws, "sms", sms)
        assert r.status_code == 200, r.text
        assert ACCOUNTS[sid] not in r.text
        r = configure(ws, "webhook", {"url": receiver.url, "secret": SECRET}, destination="crm")
        assert r.status_code == 200, r.text
        assert SECRET not in r.text
        for flow_id, text in FLOWS.items():
            ws.flow(flow_id, text)
        ws.send(
            {"type": "identify", "userId": "ada", "traits": {"phone": "+1 555 010 4477"}},
            {"type": "track", "userId": "ada", "event": "Parcel At Hub"},
        )

    dispatch(acme)
    assert sorted((sid, form["From"]) for sid, form in provider.sent) == [
        (SID_A, "+15550000001"),
        (SID_B, "+15550000002"),
    ]
    for form in (form for _sid, form in provider.sent):
        workspace = "acme" if form["From"] == "+15550000001" else "beta"
        assert form["StatusCallback"].endswith(f"/v1/sms/{workspace}/status")
    assert [p["workspace"] for p in receivers[0].received] == ["acme"]
    assert [p["workspace"] for p in receivers[1].received] == ["beta"]

    # a STOP to beta's number: signed with beta's token, recorded in beta, not in acme
    stop = {"From": "+15550104477", "To": "+15550000002", "Body": "STOP", "MessageSid": "SMstop"}
    assert signed(acme, "/v1/sms/inbound", stop, ACCOUNTS[SID_A]).status_code == 403  # acme's token
    r = signed(acme, "/v1/sms/inbound", stop, ACCOUNTS[SID_B])
    assert r.status_code == 200
    assert "unsubscribed" in r.text
    unknown = signed(acme, "/v1/sms/inbound", {**stop, "To": "+15559999999"}, ACCOUNTS[SID_B])
    assert (unknown.status_code, unknown.json()["code"]) == (404, "number_not_configured")
    for ws, stopped in ((beta, True), (acme, False)):
        with ws.admin() as c:
            records = c.get("/v1/consent", params={"userId": "ada"}).json()["records"]
        assert any(rec["source"] == "sms_stop" for rec in records) is stopped, ws.workspace


def test_secrets_are_masked_in_api_and_cli_and_encrypted_in_the_table(
    env: FlowEnv, database_url: str
) -> None:
    sms = {"account_sid": SID_A, "auth_token": ACCOUNTS[SID_A], "from": "+15550000001"}
    assert configure(env, "sms", sms).status_code == 200
    smtp = {"smtp_url": "smtp://mailer:pa55word-xyz@127.0.0.1:587", "from": "hi@acme.example"}
    assert configure(env, "email", smtp).status_code == 200
    # an update that leaves the secret out (or sends back the mask) keeps it
    assert (
        configure(env, "sms", {**sms, "auth_token": "********", "numbers": ["+15550000009"]}).status_code
        == 200
    )
    with env.admin() as c:
        listed = c.get("/v1/channels").text
        one = c.get("/v1/channels/sms").json()
        assert c.get("/v1/channels/push").json()["code"] == "channel_not_configured"
        assert c.put("/v1/channels/fax", json={}).json()["code"] == "unknown_channel"
        bad = c.put("/v1/channels/webhook", json={"url": "ftp://x", "secret": "whsec_x"})
        assert (bad.status_code, bad.json()["code"]) == (400, "invalid_channel_config")
        # a workspace admin cannot point its SMS API at cloud metadata
        inside = c.put("/v1/channels/sms", json={**sms, "base_url": "http://169.254.169.254/latest"})
        assert (inside.status_code, inside.json()["code"]) == (400, "invalid_channel_config")
    for secret in (ACCOUNTS[SID_A], "pa55word-xyz"):
        assert secret not in listed
    assert one["auth_token"] == "********"
    assert one["numbers"] == ["+15550000001", "+15550000009"]  # the sender first
    assert "smtp://mailer:********@127.0.0.1:587" in listed
    # the stored secret still works: the SMS channel is built with the original token
    channel = env.services.channels.channels_for(env.workspace)["sms"]
    assert getattr(channel, "auth_token", None) == ACCOUNTS[SID_A]

    with env.services.db.read() as conn:
        rows = conn.execute(select(channel_configs.c.settings, channel_configs.c.secret)).all()
    stored = " ".join(f"{settings} {secret}" for settings, secret in rows)
    assert len(rows) == 2
    for secret in (ACCOUNTS[SID_A], "pa55word-xyz", "mailer"):
        assert secret not in stored

    out = CliRunner(env={"MOMENTLY_SECRETS_KEY": env.services.settings.secrets_key}).invoke(
        main,
        ["--database-url", database_url, "channels", "list", "--workspace", "acme"],
        catch_exceptions=False,
    )
    assert out.exit_code == 0, out.output
    assert "+15550000001" in out.output
    for secret in (ACCOUNTS[SID_A], "pa55word-xyz"):
        assert secret not in out.output


def test_a_number_receives_for_one_workspace_only(env: FlowEnv) -> None:
    beta = second_workspace(env)
    sms = {"account_sid": SID_A, "auth_token": ACCOUNTS[SID_A], "from": "+15550000001"}
    assert configure(env, "sms", sms).status_code == 200
    taken = configure(beta, "sms", {**sms, "account_sid": SID_B})
    assert (taken.status_code, taken.json()["code"]) == (409, "number_in_use")


def test_cli_sets_lists_and_removes(env: FlowEnv, database_url: str) -> None:
    runner = CliRunner(env={"MOMENTLY_SECRETS_KEY": env.services.settings.secrets_key})

    def run(*args: str) -> str:
        result = runner.invoke(
            main, ["--database-url", database_url, "channels", *args], catch_exceptions=False
        )
        assert result.exit_code == 0, result.output
        return result.output

    out = run(
        "set",
        "webhook",
        "--workspace",
        "acme",
        "--destination",
        "crm",
        "url=https://hooks.acme.example/m",
        f"secret={SECRET}",
    )
    assert SECRET not in out
    assert json.loads(out)["destination"] == "crm"
    assert "hooks.acme.example" in run("list", "--workspace", "acme")
    assert run("remove", "webhook", "--workspace", "acme", "--destination", "crm").strip() == "removed"
    assert json.loads(run("list", "--workspace", "acme")) == []
    bad = runner.invoke(
        main, ["--database-url", database_url, "channels", "set", "sms", "--workspace", "acme", "from=x"]
    )
    assert bad.exit_code != 0
    assert "sms needs 'account_sid'" in bad.output
