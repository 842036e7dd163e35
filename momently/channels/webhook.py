"""The webhook channel: a JSON POST signed per the Standard Webhooks spec (``webhook-id``,
``webhook-timestamp``, ``webhook-signature``), so receivers verify it with any Standard
Webhooks library. ``webhook-id`` is the delivery key: the same across retries, so a receiver
that de-duplicates on it never acts twice on one delivery.

The URL goes through the address guard (``channels.guarded_http``): only public addresses,
plus networks the operator opened, and the connection goes to the address that was checked,
so a flow cannot be pointed at the inside of the network, not even by a rebinding DNS name.
"""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import urllib3
from standardwebhooks import Webhook

from momently.channels.base import Failed, Outgoing, Result, Sent, retry_after_ms
from momently.channels.guarded_http import GuardedHttp, Refused
from momently.domain.profile import Profile

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class WebhookChannel:
    name = "webhook"

    def __init__(self, url: str | None, secret: str | None, *, http: GuardedHttp) -> None:
        """``http`` may be shared between channels (one per workspace and destination).
        urllib3 rather than httpx underneath: the dispatcher's hot path, where it spends
        about half the CPU per request (310 µs against 600 µs measured)."""
        self.url = url
        self.signer = Webhook(secret) if secret else None
        self.http = http

    def address(self, workspace_id: str, profile: Profile) -> str | None:
        return self.url

    def send(self, outgoing: Outgoing, address: str) -> Result:
        if self.signer is None:
            return Failed("webhook_secret_not_set", retryable=False)
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
            reply = self.http.post(address, body.encode(), headers)
        except Refused as exc:
            reason = "invalid_webhook_url" if exc.reason == "invalid_url" else exc.reason
            return Failed(reason, retryable=False)
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
