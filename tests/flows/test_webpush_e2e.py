"""Web push end to end: a browser subscription registered through the API, a decision sent
through the push channel to a local push service over HTTPS, which checks the VAPID JWT
(ES256 over the push service's origin) and decrypts the aes128gcm payload with the
subscription's own keys, as a real push service and browser would."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import http_ece
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID
from py_vapid import Vapid02

from momently.store.push import Subscription
from tests.flows.conftest import FlowEnv, make_env
from tests.local_http import LocalServer, QuietHandler


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


class PushService:
    """Accepts a push only with a valid VAPID JWT for its own origin, then decrypts it."""

    def __init__(self, tmp: Path, subject: str) -> None:
        self.browser_key = ec.generate_private_key(ec.SECP256R1())
        self.auth = b"0123456789abcdef"
        self.received: list[dict[str, Any]] = []
        self.answer = 201
        cert, key = self_signed(tmp)
        self.ca = cert
        service = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                scheme, _, params = self.headers["authorization"].partition(" ")
                assert scheme == "vapid"
                fields = dict(p.strip().split("=", 1) for p in params.split(","))
                service.check_jwt(fields["t"], fields["k"], subject)
                assert self.headers["content-encoding"] == "aes128gcm"
                assert int(self.headers["ttl"]) > 0
                clear = http_ece.decrypt(
                    body, private_key=service.browser_key, auth_secret=service.auth, version="aes128gcm"
                )
                service.received.append(json.loads(clear))
                self.send_response(service.answer)
                self.send_header("content-length", "0")
                self.end_headers()

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.http = LocalServer(Handler, tls=context)
        self.origin = f"https://127.0.0.1:{self.http.port}"

    def check_jwt(self, token: str, k: str, subject: str) -> None:
        head, claims, signature = token.split(".")
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64(k))
        raw = unb64(signature)
        der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
        public.verify(der, f"{head}.{claims}".encode(), ec.ECDSA(hashes.SHA256()))  # raises when forged
        body = json.loads(unb64(claims))
        assert json.loads(unb64(head))["alg"] == "ES256"
        assert body["aud"] == self.origin
        assert body["sub"] == subject
        assert body["exp"] > time.time()

    def subscription(self, path: str = "/push/abc") -> dict[str, Any]:
        point = self.browser_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {"endpoint": f"{self.origin}{path}", "keys": {"p256dh": b64(point), "auth": b64(self.auth)}}


SUBJECT = "mailto:ops@momently.test"


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PushService]:
    s = PushService(tmp_path, SUBJECT)
    monkeypatch.setenv("SSL_CERT_FILE", str(s.ca))  # trust the test push service's certificate
    yield s
    s.http.close()


def vapid_key() -> str:
    v = Vapid02()
    v.generate_keys()
    return b64(v.private_key.private_numbers().private_value.to_bytes(32, "big"))


# the test push service runs on loopback: opened explicitly, as nothing else would be
LOCAL_PUSH = {"push_hosts": ["127.0.0.1"], "push_allow_networks": ["127.0.0.1/32"]}


@pytest.fixture
def env(database_url: str, service: PushService) -> Iterator[FlowEnv]:
    with make_env(database_url, vapid_private_key=vapid_key(), vapid_subject=SUBJECT, **LOCAL_PUSH) as e:
        yield e


FLOW = """
id: back-in-stock
trigger: {event: Back In Stock}
channels: [push]
reentry: every_time
message:
  title: "{{ event.properties.product }} is back"
  body: "Get it before it is gone."
  action: {label: Buy now, url: "https://shop.example/p/{{ event.properties.sku }}"}
"""


def subscribe(env: FlowEnv, body: dict[str, Any]) -> httpx.Response:
    with httpx.Client(base_url=env.url, auth=(env.write_key, "")) as c:
        return c.post("/v1/push/subscriptions", json=body)


def test_push_reaches_a_subscription_made_before_login(env: FlowEnv, service: PushService) -> None:
    env.flow("back-in-stock", FLOW)
    assert subscribe(env, {"anonymousId": "anon-1", "subscription": service.subscription()}).json() == {
        "subscribed": True
    }
    env.send({"type": "identify", "userId": "ada", "anonymousId": "anon-1"})  # logs in later
    env.send(
        {
            "type": "track",
            "userId": "ada",
            "event": "Back In Stock",
            "properties": {"product": "Kettle", "sku": "k1"},
        }
    )
    env.services.dispatcher.run_until_idle()
    [got] = service.received
    assert got["title"] == "Kettle is back"
    assert got["body"] == "Get it before it is gone."
    assert got["url"].startswith(f"{env.url}/a/acme/")  # the one-tap link
    assert [d.status for d in env.services.outbox.list(env.workspace)] == ["sent"]


def test_gone_subscriptions_are_removed_and_bad_ones_refused(env: FlowEnv, service: PushService) -> None:
    env.flow("back-in-stock", FLOW)
    subscribe(env, {"userId": "ada", "subscription": service.subscription()})
    service.answer = 410
    env.send(
        {
            "type": "track",
            "userId": "ada",
            "event": "Back In Stock",
            "properties": {"product": "Pan", "sku": "p"},
        }
    )
    env.services.dispatcher.run_until_idle()
    [d] = env.services.outbox.list(env.workspace)
    assert (d.status, d.last_error) == ("dead", "subscription_gone")
    assert env.services.push.for_identities(env.workspace, [("user", "ada")]) == []
    bad = subscribe(env, {"userId": "ada", "subscription": {"endpoint": "http://insecure", "keys": {}}})
    assert (bad.status_code, bad.json()["code"]) == (400, "invalid_subscription")
    assert subscribe(env, {"subscription": service.subscription()}).json()["code"] == "no_user_anon_id"
    with httpx.Client(base_url=env.url) as c:
        assert c.post("/v1/push/subscriptions", json={"userId": "x"}).status_code == 401


def keys_of(service: PushService) -> dict[str, str]:
    return dict(service.subscription()["keys"])


@pytest.mark.parametrize("hosts", [None, ["127.0.0.1", "10.0.0.1", "169.254.169.254"]])
def test_endpoints_on_private_addresses_are_refused_at_registration(
    database_url: str, service: PushService, hosts: list[str] | None
) -> None:
    """Not a known push service: refused. Listed as a push host, yet on a private, loopback or
    link-local address: refused all the same."""
    extra = {"push_hosts": hosts} if hosts else {}
    with make_env(database_url, vapid_private_key=vapid_key(), vapid_subject=SUBJECT, **extra) as e:
        for endpoint in (
            f"{service.origin}/push/abc",
            "https://10.0.0.1/push",
            "https://169.254.169.254/latest/meta-data",
        ):
            r = subscribe(
                e, {"userId": "ada", "subscription": {"endpoint": endpoint, "keys": keys_of(service)}}
            )
            assert (r.status_code, r.json()["code"]) == (400, "push_endpoint_not_allowed"), endpoint
        assert e.services.push.for_identities(e.workspace, [("user", "ada")]) == []


@pytest.mark.parametrize(
    ("hosts", "reason"), [(None, "push_host_not_allowed"), (["127.0.0.1"], "push_address_not_allowed")]
)
def test_endpoints_on_private_addresses_are_refused_at_send(
    database_url: str, service: PushService, hosts: list[str] | None, reason: str
) -> None:
    """A subscription stored before the guard existed (or by any other way in) is checked
    again at send time, and the push service on loopback gets nothing."""
    extra = {"push_hosts": hosts} if hosts else {}
    with make_env(database_url, vapid_private_key=vapid_key(), vapid_subject=SUBJECT, **extra) as e:
        e.flow("back-in-stock", FLOW)
        e.send({"type": "identify", "userId": "ada"})
        for endpoint in (f"{service.origin}/push/abc", "https://10.0.0.1/p", "https://169.254.169.254/p"):
            k = keys_of(service)
            e.services.push.add(
                e.workspace, ("user", "ada"), Subscription(endpoint, k["p256dh"], k["auth"]), now_ms=0
            )
        e.send(
            {
                "type": "track",
                "userId": "ada",
                "event": "Back In Stock",
                "properties": {"product": "Pan", "sku": "p"},
            }
        )
        e.services.dispatcher.run_until_idle()
        [d] = e.services.outbox.list(e.workspace)
        assert (d.status, d.last_error) == ("dead", reason)
        assert service.received == []
