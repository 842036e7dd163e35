"""The webhook channel: a JSON POST signed per the Standard Webhooks spec (``webhook-id``,
``webhook-timestamp``, ``webhook-signature``), so receivers verify it with any Standard
Webhooks library. ``webhook-id`` is the delivery key: the same across retries, so a receiver
that de-duplicates on it never acts twice on one delivery.

Private, loopback and link-local addresses are refused unless allowed in settings, so a flow
cannot be pointed at the inside of the network.
"""

from __future__ import annotations

import ipaddress
import socket
from datetime import UTC, datetime
from urllib.parse import urlsplit

import orjson
import urllib3
from standardwebhooks import Webhook

from momently.channels.base import Failed, Outgoing, Result, Sent, retry_after_ms
from momently.domain.profile import Profile

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class WebhookChannel:
    name = "webhook"

    def __init__(
        self, url: str | None, secret: str | None, *, timeout: float = 5.0, allow_private: bool = False
    ) -> None:
        self.url = url
        self.signer = Webhook(secret) if secret else None
        self.allow_private = allow_private
        # urllib3 rather than httpx here: the dispatcher's hot path, where it spends about
        # half the CPU per request (310 µs against 600 µs measured). Thread-safe; one
        # keep-alive connection per sending thread and host.
        self.http = urllib3.PoolManager(
            timeout=urllib3.Timeout(total=timeout), retries=False, maxsize=32, block=False
        )

    def address(self, workspace_id: str, profile: Profile) -> str | None:
        return self.url

    def close(self) -> None:
        self.http.clear()

    def send(self, outgoing: Outgoing, address: str) -> Result:
        if self.signer is None:
            return Failed("webhook_secret_not_set", retryable=False)
        refused = self._refused(address)
        if refused is not None:
            return Failed(refused, retryable=False)
        p = outgoing.profile
        body = orjson.dumps(
            {
                "type": "message",
                "deliveryKey": outgoing.key,
                "workspace": outgoing.workspace_id,
                "flow": outgoing.flow_id,
                "flowVersion": outgoing.flow_version,
                "occurrence": outgoing.occurrence,
                "person": {"personId": p.person_id, "userId": p.user_id, "email": p.email, "phone": p.phone},
                "message": outgoing.message.as_json(),
                "trigger": outgoing.trigger,
            }
        ).decode()
        now = datetime.now(UTC)
        headers = {
            "content-type": "application/json",
            "webhook-id": outgoing.key,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self.signer.sign(outgoing.key, now, body),
        }
        try:
            reply = self.http.request("POST", address, body=body.encode(), headers=headers, redirect=False)
        except urllib3.exceptions.NewConnectionError as exc:  # a subclass of the timeout error
            return Failed(f"connection_error: {type(exc).__name__}", retryable=True)
        except urllib3.exceptions.TimeoutError:
            return Failed("timeout", retryable=True)
        except urllib3.exceptions.HTTPError as exc:
            return Failed(f"connection_error: {type(exc).__name__}", retryable=True)
        if 200 <= reply.status < 300:
            return Sent(provider_id=reply.headers.get("x-request-id"))
        return Failed(
            f"http_{reply.status}",
            retryable=reply.status in RETRYABLE_STATUS,
            retry_after_ms=retry_after_ms(reply.headers.get("retry-after")),
        )

    def _refused(self, url: str) -> str | None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return "invalid_webhook_url"
        if self.allow_private:
            return None
        try:
            infos = socket.getaddrinfo(parts.hostname, parts.port or 443, proto=socket.IPPROTO_TCP)
        except OSError:
            return "webhook_host_not_found"
        for info in infos:
            ip = ipaddress.ip_address(info[4][0])
            if ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_multicast:
                return "address_not_allowed"
        return None
