"""The push channel: Web Push (RFC 8030) with VAPID (RFC 8292) and aes128gcm payload
encryption (RFC 8291), through pywebpush, to every browser subscription registered for the
person (``POST /v1/push/subscriptions``).

A subscription the push service reports gone (404/410) is deleted; 429 and 5xx are retried.
Every request goes through the address guard (``channels.guarded_http``): only the known push
services' hosts, only public addresses, connected to the address that was checked. The same
check refuses an endpoint at registration (``endpoint_refused``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson
from py_vapid import Vapid02
from pywebpush import WebPushException, webpush

from momently.channels.base import Failed, Outgoing, Result, Sent
from momently.channels.guarded_http import GuardedHttp, Refused
from momently.domain.identity import Identity
from momently.domain.profile import Profile
from momently.store.push import PushSubscriptions

log = logging.getLogger(__name__)


def identities(profile: Profile) -> list[Identity]:
    ids: list[Identity] = [("anon", a) for a in profile.anonymous_ids]
    if profile.user_id:
        ids.insert(0, ("user", profile.user_id))
    return ids


def endpoint_refused(http: GuardedHttp, endpoint: str) -> str | None:
    """Why a subscription's endpoint may not be used (resolves its host), or None."""
    try:
        http.target(endpoint, schemes=("https",))
    except Refused as exc:
        return exc.reason
    return None


class _Reply:
    """What pywebpush reads of a ``requests`` response."""

    def __init__(self, status: int, reason: str | None, body: bytes, headers: Mapping[str, str]) -> None:
        self.status_code = status
        self.reason = reason or ""
        self.text = body.decode("utf-8", "replace")
        self.headers = dict(headers)


class _GuardedSession:
    """pywebpush's ``requests_session``: its one POST goes through the guard."""

    def __init__(self, http: GuardedHttp) -> None:
        self.http = http

    def post(self, url: str, *, data: bytes | None = None, headers: Mapping[str, Any], **_: Any) -> _Reply:
        if not url.startswith("https://"):
            raise Refused("invalid_url")
        reply = self.http.post(url, data or b"", {k: str(v) for k, v in headers.items()})
        return _Reply(reply.status, reply.reason, reply.data, reply.headers)


class WebPushChannel:
    name = "push"

    def __init__(
        self,
        subscriptions: PushSubscriptions,
        private_key: str,
        subject: str,
        *,
        http: GuardedHttp,
        timeout: float = 5.0,
        ttl: int = 3600,
    ) -> None:
        self.subscriptions = subscriptions
        self.session = _GuardedSession(http)
        self.vapid = Vapid02.from_string(private_key)
        self.subject = subject
        self.timeout = timeout
        self.ttl = ttl

    def address(self, workspace_id: str, profile: Profile) -> str | None:
        subs = self.subscriptions.for_identities(workspace_id, identities(profile))
        return f"{len(subs)} subscription(s)" if subs else None

    def send(self, outgoing: Outgoing, address: str) -> Result:
        subs = self.subscriptions.for_identities(outgoing.workspace_id, identities(outgoing.profile))
        m = outgoing.message
        data = orjson.dumps(
            {
                "title": m.title,
                "body": m.body,
                "url": m.action_url,
                "action": m.action_label,
                "key": outgoing.key,
            }
        ).decode()
        sent = 0
        failures: list[Failed] = []
        for sub in subs:
            try:
                webpush(
                    sub.info(),
                    data=data,
                    vapid_private_key=self.vapid,
                    vapid_claims={"sub": self.subject},
                    timeout=self.timeout,
                    ttl=self.ttl,
                    headers={"Topic": outgoing.flow_id[:32].replace("_", "-")},
                    requests_session=self.session,
                )
                sent += 1
            except Refused as exc:
                failures.append(Failed(f"push_{exc.reason}", retryable=False))
            except WebPushException as exc:
                status = exc.response.status_code if exc.response is not None else None
                if status in (404, 410):
                    self.subscriptions.remove(outgoing.workspace_id, sub.endpoint)
                    failures.append(Failed("subscription_gone", retryable=False))
                else:
                    failures.append(
                        Failed(
                            f"push_{status or 'error'}",
                            retryable=status is None or status == 429 or status >= 500,
                        )
                    )
            except Exception as exc:  # connection errors and timeouts from requests
                failures.append(Failed(f"connection_error: {type(exc).__name__}", retryable=True))
        if sent:
            return Sent(provider_id=f"{sent}/{len(subs)} subscriptions")
        if not failures:
            return Failed("no_subscription", retryable=False)
        retryable = [f for f in failures if f.retryable]
        return retryable[0] if retryable else failures[0]
