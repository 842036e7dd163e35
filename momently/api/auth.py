"""Resolving write keys and admin tokens to workspaces, with a short cache.

The cache keeps key lookups off the ingest hot path; a revoked key stops working within
``auth_cache_seconds``. Rate-limit buckets are kept here too because they are per workspace
and per process, and need the workspace's configured rate that the lookup returns.
"""

from __future__ import annotations

import base64
import binascii
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from momently.api.errors import ApiError
from momently.domain import ratelimit, trust
from momently.domain.credentials import INGEST_KINDS, KeyKind
from momently.store.workspaces import Workspaces


@dataclass(frozen=True, slots=True)
class Principal:
    workspace_id: str
    rate_limit: float | None
    key_id: int = 0
    kind: KeyKind = KeyKind.WRITE

    @property
    def sender(self) -> trust.Sender:
        return trust.Sender(self.key_id, self.kind)


@dataclass(frozen=True, slots=True)
class Person:
    """Who a widget or browser call is about, once its key (and token) allowed it."""

    user_id: str | None
    anonymous_id: str | None


class Authenticator:
    def __init__(self, workspaces: Workspaces, *, cache_seconds: float) -> None:
        self.workspaces = workspaces
        self.cache_seconds = cache_seconds
        self._cache: dict[tuple[str, tuple[KeyKind, ...]], tuple[Principal | None, float]] = {}
        self._buckets: dict[str, ratelimit.Bucket] = {}
        self._lock = threading.Lock()

    def resolve(self, secret: str, kinds: tuple[KeyKind, ...]) -> Principal | None:
        now = time.monotonic()
        cached = self._cache.get((secret, kinds))
        if cached is not None and cached[1] > now:
            return cached[0]
        principal: Principal | None = None
        key = self.workspaces.lookup(secret, kinds)
        if key is not None:
            ws = self.workspaces.get(key.workspace_id)
            principal = Principal(key.workspace_id, ws.rate_limit if ws else None, key.id, key.kind)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[(secret, kinds)] = (principal, now + self.cache_seconds)
        return principal

    def write_key(self, authorization: str | None, body_key: object) -> Principal:
        """The Segment rule: HTTP Basic with the write key as username, or ``writeKey`` in the body."""
        secret: str | None = None
        if authorization:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() == "basic":
                try:
                    secret = base64.b64decode(value.strip(), validate=True).decode().split(":", 1)[0]
                except (binascii.Error, UnicodeDecodeError):
                    raise ApiError(
                        401, "invalid_write_key", "the Authorization header is not valid Basic auth"
                    ) from None
            elif scheme.lower() == "bearer":
                secret = value.strip()
        if not secret and isinstance(body_key, str):
            secret = body_key
        if not secret:
            raise ApiError(
                401,
                "missing_write_key",
                "send the write key as the Basic auth username or as writeKey in the body",
            )
        principal = self.resolve(secret, INGEST_KINDS)
        if principal is None:
            raise ApiError(401, "invalid_write_key", "the write key is unknown or revoked")
        return principal

    def admin_token(self, authorization: str | None) -> Principal:
        scheme, _, value = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise ApiError(401, "missing_admin_token", "send an admin token as 'Authorization: Bearer mat_…'")
        principal = self.resolve(value.strip(), (KeyKind.ADMIN,))
        if principal is None:
            raise ApiError(401, "invalid_admin_token", "the admin token is unknown or revoked")
        return principal

    def identity_secret(self, workspace_id: str) -> str:
        return self.workspaces.identity_secret(workspace_id, now=datetime.now(UTC))

    def verified(self, principal: Principal, user_id: str | None, token: object) -> bool:
        """Whether a call may act for ``user_id``: always with a server key; with the public
        key only when ``token`` is the user token of ``user_id``."""
        if not principal.sender.public:
            return True
        if not user_id:
            return False
        return trust.token_matches(self.identity_secret(principal.workspace_id), user_id, token)

    def person(self, principal: Principal, user_id: object, anonymous_id: object, token: object) -> Person:
        """The person a browser-facing call (inbox, push subscriptions) may act for. A server
        key may name anyone. The public key must bring the user token of its userId; its
        anonymousId is then ignored, because an unverified event may have tied that id to
        anyone."""
        user = user_id if isinstance(user_id, str) and user_id else None
        anon = anonymous_id if isinstance(anonymous_id, str) and anonymous_id else None
        if not user and not anon:
            raise ApiError(400, "no_user_anon_id", "userId or anonymousId is required")
        if not principal.sender.public:
            return Person(user, anon)
        if not self.verified(principal, user, token):
            raise ApiError(
                403,
                "identity_unverified",
                "with the public write key, send userId with its userToken (HMAC-SHA256 of the userId "
                "with the workspace's identity secret, made by your backend), or call from your "
                "backend with a server key",
            )
        return Person(user, None)

    def charge(self, principal: Principal, events: int) -> None:
        """Apply the workspace's ingest rate limit (events per second, burst of two seconds)."""
        if principal.rate_limit is None:
            return
        rate = principal.rate_limit
        with self._lock:
            verdict = ratelimit.take(
                self._buckets.get(principal.workspace_id),
                rate=rate,
                burst=rate * 2,
                cost=events,
                now=time.monotonic(),
            )
            self._buckets[principal.workspace_id] = verdict.bucket
        if not verdict.allowed:
            raise ApiError(
                429,
                "rate_limited",
                f"workspace {principal.workspace_id} is over its rate of {rate:g} events/s",
                headers={"Retry-After": str(verdict.retry_after)},
            )
